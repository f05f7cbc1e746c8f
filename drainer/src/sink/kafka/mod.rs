//! The Kafka sink (`db-type = "kafka"`): one `slave.binlog.Binlog` message per transaction, as
//! upstream, to topic `topic-name` (default `<clusterID>_obinlog`), partition 0.
//!
//! Beyond upstream:
//! - **Idempotent producer** (`enable.idempotence`, acks=all): retries never duplicate or reorder.
//! - **Checkpoint from the topic** ([`Sink::load_checkpoint`]): the last message of each partition gives
//!   the last commit ts the topic holds, so a restarted drainer neither loses nor re-sends a
//!   transaction; the sink also skips items at or below it.
//! - **Chunks**: a transaction over `kafka-max-message-size` is split into ordered chunks, each a valid
//!   `Binlog` with the same commit ts, marked with the record header [`CHUNK_HEADER`] (`"<i>/<n>"`);
//!   [`crate::consumer`] reassembles them. Format in `drainer/FORMAT.md`.
//! - **Partitioning** by table or primary key (`kafka-partition-by`, `kafka-partitions`:
//!   [`Partitioning`]); order is kept per partition, and every partition gets a **resolved-ts**
//!   message ([`RESOLVED_HEADER`]) at most once a second while items flow and when they stop.
//! - **canal-json** (`kafka-format`: [`Format`], [`canal`]): Canal's flat JSON as TiCDC writes it,
//!   for consumers that are not ours.
//! - **Topic creation** through the admin API when the topic is missing (at start, and again when
//!   deliveries stall, e.g. after a broker lost its topics).
//!
//! - **Brokers down at start**: `connect` retries for `connect_timeout` (2 minutes), logging each
//!   failure, then fails naming `kafka-addrs`.
//! - **The topic's `max.message.bytes`** (read at start) caps the message size when it is below
//!   `kafka-max-message-size`: larger transactions are chunked to it rather than refused by the broker.
//!
//! # Pipeline
//! `write` only queues the item (bounded). An **encoder task** translates and encodes it, takes its
//! bytes from the unacked-bytes budget, produces its messages and moves them into the **ack window**
//! (`window`): the producer's delivery callback (librdkafka's polling thread) releases items in
//! write order and publishes the durable ts once per report that released any. So encoding overlaps
//! the caller's work and the broker round trips, the durable ts advances without new writes, and no
//! task wakes up per message. A **recovery task** starts a new producer after a failed delivery.
//!
//! # Invariants
//! - `durable_ts` is the highest commit ts whose messages, and every earlier item's, are acked (an ack
//!   window released strictly in order, as upstream's Successes channel).
//! - At most `max_pending_bytes` of unacked message bytes (upstream: 90 MiB; one larger item takes the
//!   whole budget) plus `ENCODE_QUEUE` queued items: `write` waits beyond it.
//! - Produce order is write order: the encoder produces an item's messages and pushes it into the
//!   window under the producer lock; a recovery holds that lock while it re-sends.
//! - A delivery error rebuilds the producer and re-sends every unacked item (at most three times
//!   without progress); then, or on any other error, the tasks stop and `write`/`flush` return it.

pub mod canal;
pub mod translate;
pub mod untranslate;
mod window;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{Semaphore, mpsc, watch};

use window::{AckContext, Failure, Msg, Window};

use crate::proto::slave;
use crate::sink::{Sink, SinkError};
use crate::txn::{Body, Item, RowChange, TableChanges, Value};

/// The record header that marks a chunk of a split transaction: ASCII `"<index>/<count>"`, index
/// from 0. Messages without it are whole transactions.
pub const CHUNK_HEADER: &str = "tidb-binlog-chunk";

/// The record header of a resolved-ts message (ours, with `kafka-partition-by` or canal-json): ASCII commit ts
/// `R`. The message is a `Binlog` with commit ts `R` and no data; in its partition every message of a
/// transaction with commit ts ≤ `R` comes before it.
pub const RESOLVED_HEADER: &str = "tidb-binlog-resolved";

/// How often, at most, the encoder sends resolved-ts messages while items flow.
const RESOLVED_INTERVAL: Duration = Duration::from_millis(1000);

/// librdkafka's ceiling for `message.max.bytes`.
const RDKAFKA_MAX_MESSAGE: usize = 1_000_000_000;

/// How messages are spread over partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// Everything to partition 0 (upstream). Total commit-ts order.
    Single,
    /// By `schema.table`: a table's changes stay in commit-ts order in one partition; a transaction
    /// touching several tables becomes one message per partition, each with the transaction's commit
    /// ts. DDL goes to every partition.
    Table,
    /// By primary-key values (tables without a PK fall back to the table): one key's changes stay in
    /// order in one partition. DDL goes to every partition.
    PrimaryKey,
}

/// The message format (`kafka-format`, ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Upstream's `slave.binlog.Binlog` protobuf, one message per transaction (and partition).
    Protobuf,
    /// Canal's flat JSON as TiCDC writes it, one message per row change or DDL ([`canal`]).
    CanalJson,
}

impl Format {
    /// The name `kafka-format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Protobuf => "protobuf",
            Format::CanalJson => "canal-json",
        }
    }
}

/// The Kafka sink's settings (upstream keys in `[syncer.to]`, plus ours).
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `kafka-addrs`: comma-separated `host:port` list.
    pub addrs: String,
    /// `kafka-version` (default `0.8.2.0`): the broker version assumed if version probing fails.
    pub version: String,
    /// `kafka-max-messages` (default 1024): messages per produce batch.
    pub max_messages: usize,
    /// `kafka-max-message-size` (default 1 GiB): larger transactions are chunked.
    pub max_message_size: usize,
    /// `kafka-client-id` (default `tidb_binlog`).
    pub client_id: String,
    /// `topic-name`, or `<clusterID>_obinlog`.
    pub topic: String,
    /// `kafka-format` (ours; default [`Format::Protobuf`]).
    pub format: Format,
    /// Partitioning (ours; default [`Partitioning::Single`]).
    pub partitioning: Partitioning,
    /// Partitions to create when the topic is missing (1 for [`Partitioning::Single`]).
    pub partitions: i32,
    /// Unacked bytes before `write` waits (upstream: 90 MiB).
    pub max_pending_bytes: usize,
    /// How long a message may stay unacked before the sink fails (upstream: 30 s).
    pub ack_timeout: Duration,
    /// Idempotent producer (ours; default true).
    pub idempotent: bool,
    /// How long [`KafkaSink::connect`] retries while no broker answers (ours; default 2 minutes).
    pub connect_timeout: Duration,
}

impl KafkaConfig {
    /// Upstream's defaults for the given brokers and topic.
    pub fn new(addrs: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            addrs: addrs.into(),
            version: "0.8.2.0".into(),
            max_messages: 1024,
            max_message_size: 1 << 30,
            client_id: "tidb_binlog".into(),
            topic: topic.into(),
            format: Format::Protobuf,
            partitioning: Partitioning::Single,
            partitions: 1,
            max_pending_bytes: 90 << 20,
            ack_timeout: Duration::from_secs(30),
            idempotent: true,
            connect_timeout: Duration::from_secs(120),
        }
    }

    /// Upstream's default topic name for a cluster: `<clusterID>_obinlog`.
    pub fn default_topic(cluster_id: u64) -> String {
        format!("{cluster_id}_obinlog")
    }

    /// The message size limit actually used (librdkafka caps it at 10^9 bytes).
    pub fn message_limit(&self) -> usize {
        self.max_message_size.clamp(1024, RDKAFKA_MAX_MESSAGE - 4096)
    }

    fn common(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addrs)
            .set("client.id", &self.client_id)
            .set("broker.version.fallback", &self.version)
            .set("socket.keepalive.enable", "true");
        c
    }
}

/// A failure of the Kafka sink.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// A client could not be created or a request failed.
    #[error("kafka {what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A message was not delivered.
    #[error("delivering commit ts {commit_ts} to {topic}/{partition}: {reason}")]
    Delivery {
        /// The transaction.
        commit_ts: i64,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Why.
        reason: String,
    },
    /// A transaction cannot be made to fit the message size.
    #[error(transparent)]
    TooLarge(#[from] translate::TooLarge),
    /// The sink's tasks stopped after an error that was already returned.
    #[error("the sink stopped after an earlier error")]
    Stopped,
    /// No broker of `kafka-addrs` answered (at start, after retrying for `connect_timeout`).
    #[error("kafka brokers {addrs} unreachable: {source}")]
    Unreachable {
        /// The brokers tried (`kafka-addrs`).
        addrs: String,
        /// The last client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The topic has fewer partitions than the partitioning needs, or none.
    #[error("topic {topic}: {reason}")]
    Topic {
        /// Topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
}

fn kerr(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaSinkError {
    let what = what.into();
    move |source| KafkaSinkError::Kafka { what, source }
}

/// Items the encoder task may hold queued ahead of it (each is already in the caller's memory).
const ENCODE_QUEUE: usize = 256;

/// Items the encoder task takes from its queue at once.
const ENCODE_BATCH: usize = 64;

type Producer = ThreadedProducer<AckContext>;

/// What the sink, its encoder task and its recovery task share.
struct Shared {
    cfg: KafkaConfig,
    limit: MessageLimit,
    partitions: i32,
    /// The encoder holds the lock while it produces an item's messages and pushes the item into the
    /// window, so a recovery that holds it sees every produced item in the window.
    producer: tokio::sync::Mutex<Producer>,
    /// Produced items waiting for acks; publishes the durable ts (also woken, unchanged, when a task
    /// fails).
    window: Arc<Window>,
    /// The error that stopped a task, until the sink returns it.
    failure: std::sync::Mutex<Option<KafkaSinkError>>,
    stopped: AtomicBool,
}

impl Shared {
    fn fail(&self, e: KafkaSinkError) {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
        self.stopped.store(true, Ordering::Release);
        self.window.durable().send_modify(|_| {});
    }
}

/// The Kafka sink. See the module docs.
pub struct KafkaSink {
    shared: Arc<Shared>,
    to_encoder: mpsc::Sender<Arc<Item>>,
    /// The highest commit ts written.
    last_written: i64,
    /// Per partition: the last commit ts the topic held at start (the encoder skips items at or below).
    topic_ts: HashMap<i32, i64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.shared.cfg.topic)
            .field("partitions", &self.shared.partitions)
            .field("last_written", &self.last_written)
            .field("durable_ts", &self.durable_ts())
            .finish()
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}


/// Creates `topic` with `partitions` partitions if the brokers do not have it; returns its partition
/// count.
pub async fn ensure_topic(cfg: &KafkaConfig, partitions: i32) -> Result<i32, KafkaSinkError> {
    if let Some(n) = topic_partitions(cfg)? {
        return Ok(n);
    }
    let admin: AdminClient<DefaultClientContext> = cfg.common().create().map_err(kerr("admin client"))?;
    let topic = NewTopic::new(&cfg.topic, partitions, TopicReplication::Fixed(-1)); // the brokers' default.replication.factor
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&topic], &opts).await.map_err(kerr(format!("creating topic {}", cfg.topic)))?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic = %cfg.topic, partitions, "kafka sink: created topic"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(KafkaSinkError::Topic { topic: t, reason: format!("create failed: {code}") });
            }
        }
    }
    for _ in 0..50 {
        if let Some(n) = topic_partitions(cfg)? {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(KafkaSinkError::Topic { topic: cfg.topic.clone(), reason: "created but not visible in metadata".into() })
}

/// The topic's partition count, or `None` when the brokers do not know it.
fn topic_partitions(cfg: &KafkaConfig) -> Result<Option<i32>, KafkaSinkError> {
    let consumer: BaseConsumer = cfg.common().create().map_err(kerr("metadata client"))?;
    let md = consumer.fetch_metadata(Some(&cfg.topic), Duration::from_secs(10)).map_err(|e| {
        if unreachable(&e) {
            KafkaSinkError::Unreachable { addrs: cfg.addrs.clone(), source: e }
        } else {
            kerr(format!("metadata of {}", cfg.topic))(e)
        }
    })?;
    Ok(md.topics().iter().find(|t| t.name() == cfg.topic).and_then(|t| {
        if t.error().is_some() || t.partitions().is_empty() { None } else { Some(t.partitions().len() as i32) }
    }))
}

/// Whether `e` says that no broker answered (as opposed to a broker refusing the request).
fn unreachable(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(e.rdkafka_error_code(), Some(C::BrokerTransportFailure | C::AllBrokersDown | C::OperationTimedOut | C::Resolve))
}

/// Bytes a record batch may add around one message: the v2 batch header (61), the record's own
/// framing (at most 21) and the chunk header, with room to spare.
const RECORD_OVERHEAD: usize = 256;

/// The topic's `max.message.bytes` (the broker's `message.max.bytes` when the topic does not set it),
/// or `None` when the brokers do not say.
pub async fn topic_max_message_bytes(cfg: &KafkaConfig) -> Result<Option<usize>, KafkaSinkError> {
    let admin: AdminClient<DefaultClientContext> = cfg.common().create().map_err(kerr("admin client"))?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let res = admin
        .describe_configs([&ResourceSpecifier::Topic(&cfg.topic)], &opts)
        .await
        .map_err(kerr(format!("configs of topic {}", cfg.topic)))?;
    let value = res.into_iter().find_map(|r| r.ok()).and_then(|r| r.get("max.message.bytes").and_then(|e| e.value.clone()));
    Ok(value.and_then(|v| v.parse().ok()))
}

/// The largest payload the sink sends and what sets it.
#[derive(Debug, Clone)]
struct MessageLimit {
    /// Payload bytes per message: larger transactions are chunked.
    payload: usize,
    /// `kafka-max-message-size`, or the topic's `max.message.bytes` when that is smaller.
    bound: String,
    /// The topic's `max.message.bytes`, when known: a produce batch must not exceed it.
    topic_max: Option<usize>,
}

impl MessageLimit {
    fn new(cfg: &KafkaConfig, topic_max: Option<usize>) -> Self {
        let own = cfg.message_limit();
        match topic_max {
            Some(t) if t.saturating_sub(RECORD_OVERHEAD) < own => Self {
                payload: t.saturating_sub(RECORD_OVERHEAD).max(1),
                bound: format!("max.message.bytes {t} of topic {} less {RECORD_OVERHEAD} bytes of record overhead", cfg.topic),
                topic_max,
            },
            _ => Self { payload: own, bound: "kafka-max-message-size".into(), topic_max },
        }
    }
}

/// What the topic's partitions hold last: per partition, the commit ts of the last whole transaction
/// (a trailing incomplete chunk sequence counts as its commit ts − 1, so it is sent again).
pub fn last_commit_ts(cfg: &KafkaConfig, partitions: i32) -> Result<HashMap<i32, i64>, KafkaSinkError> {
    let mut c = cfg.common();
    c.set("group.id", format!("tidb-binlog-checkpoint-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = c.create().map_err(kerr("checkpoint consumer"))?;
    let mut out = HashMap::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(&cfg.topic, p, Duration::from_secs(10))
            .map_err(kerr(format!("watermarks of {}/{p}", cfg.topic)))?;
        if high <= low {
            continue;
        }
        // Start at the high watermark − 1 and read forward to the end of the partition: the last
        // offset may hold a control record, and some Kafka-protocol brokers report the last batch's
        // base offset + 1 as the high watermark.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&cfg.topic, p, Offset::Offset(high - 1)).map_err(kerr("assign"))?;
        consumer.assign(&tpl).map_err(kerr("assign"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last: Option<(i64, i64, bool)> = None; // (offset, commit ts, complete)
        loop {
            if Instant::now() > deadline {
                return Err(KafkaSinkError::Topic {
                    topic: cfg.topic.clone(),
                    reason: format!("could not read to the end of partition {p} (from offset {})", high - 1),
                });
            }
            match consumer.poll(Duration::from_millis(1000)) {
                None if last.is_some() => break,
                None => continue,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) if last.is_some() => break,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => continue,
                Some(Err(e)) => return Err(kerr(format!("reading {}/{p}", cfg.topic))(e)),
                Some(Ok(m)) => {
                    let payload = m.payload().unwrap_or_default();
                    let ts = match cfg.format {
                        Format::Protobuf => slave::Binlog::decode(payload).map(|b| b.commit_ts()).map_err(|e| e.to_string()),
                        Format::CanalJson => canal::message_ts(payload).ok_or_else(|| "no _tidb.commitTs".to_string()),
                    };
                    let ts = ts.map_err(|e| KafkaSinkError::Topic {
                        topic: cfg.topic.clone(),
                        reason: format!("message at {p}/{} is not {}: {e}", m.offset(), cfg.format.name()),
                    })?;
                    let complete = chunk_of(m.headers()).is_none_or(|(i, n)| i + 1 == n);
                    last = Some((m.offset(), ts, complete));
                }
            }
        }
        let Some((_, commit_ts, complete)) = last else { continue };
        let ts = if complete { commit_ts } else { commit_ts - 1 };
        out.insert(p, ts);
    }
    Ok(out)
}

/// Whether a message is a resolved-ts message ([`RESOLVED_HEADER`]).
pub fn is_resolved<H: Headers>(headers: Option<&H>) -> bool {
    headers.is_some_and(|h| h.iter().any(|h| h.key == RESOLVED_HEADER))
}

/// The chunk header of a message, if it has one: `(index, count)`.
pub fn chunk_of<H: Headers>(headers: Option<&H>) -> Option<(u32, u32)> {
    let h = headers?;
    h.iter().find(|h| h.key == CHUNK_HEADER).and_then(|h| {
        let v = std::str::from_utf8(h.value?).ok()?;
        let (i, n) = v.split_once('/')?;
        Some((i.parse().ok()?, n.parse().ok()?))
    })
}

fn make_producer(cfg: &KafkaConfig, limit: &MessageLimit, window: &Arc<Window>) -> Result<Producer, KafkaSinkError> {
    let mut pc = cfg.common();
    // A produce batch must fit the topic's max.message.bytes as a whole; one message always fits
    // (its payload is at most the limit), so only batches of several are capped.
    if let Some(t) = limit.topic_max {
        pc.set("batch.size", t.saturating_sub(RECORD_OVERHEAD).clamp(1, 1_000_000).to_string());
    }
    pc.set("acks", "all")
        .set("enable.idempotence", if cfg.idempotent { "true" } else { "false" })
        .set("message.max.bytes", (limit.payload + 4096).clamp(1000, RDKAFKA_MAX_MESSAGE).to_string())
        .set("batch.num.messages", cfg.max_messages.max(1).to_string())
        .set("linger.ms", "5")
        .set("message.timeout.ms", cfg.ack_timeout.as_millis().max(1000).to_string())
        .set("queue.buffering.max.kbytes", "2097151")
        .set("queue.buffering.max.messages", "1000000");
    pc.create_with_context(AckContext { window: window.clone() }).map_err(kerr("producer"))
}

fn hash_of(v: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn value_key(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(v) => crate::txn::value_text(v),
    }
}


fn partition_of_table(partitions: i32, t: &TableChanges) -> i32 {
    (hash_of(&(&t.table.schema, &t.table.name)) % partitions as u64) as i32
}

fn partition_of_row(partitions: i32, t: &TableChanges, r: &RowChange) -> i32 {
    let row = match r {
        RowChange::Insert(r) | RowChange::Delete(r) => r,
        RowChange::Update { new, .. } => new,
    };
    let pk: Vec<usize> = match t.table.unique_keys.iter().find(|k| k.is_primary()) {
        Some(k) => k.columns.clone(),
        None => t.table.columns.iter().enumerate().filter(|(_, c)| c.primary_key).map(|(i, _)| i).collect(),
    };
    if pk.is_empty() {
        return partition_of_table(partitions, t);
    }
    let key: Vec<String> = pk.iter().map(|&i| value_key(row.get(i).unwrap_or(&None))).collect();
    (hash_of(&(&t.table.schema, &t.table.name, key)) % partitions as u64) as i32
}

/// The messages (partition, binlog) for `item`.
fn messages(partitioning: Partitioning, partitions: i32, item: &Item) -> Vec<(i32, slave::Binlog)> {
    let Some(binlog) = translate::to_secondary(item) else { return Vec::new() };
    if partitions <= 1 || partitioning == Partitioning::Single {
        return vec![(0, binlog)];
    }
    let Body::Dml(tables) = &item.body else {
        return (0..partitions).map(|p| (p, binlog.clone())).collect();
    };
    let mut by_part: Vec<Vec<slave::Table>> = vec![Vec::new(); partitions as usize];
    for t in tables.iter().filter(|t| !t.rows.is_empty()) {
        match partitioning {
            Partitioning::PrimaryKey => {
                let mut parts: Vec<Option<TableChanges>> = vec![None; partitions as usize];
                for r in &t.rows {
                    let p = partition_of_row(partitions, t, r) as usize;
                    parts[p].get_or_insert_with(|| TableChanges { table: t.table.clone(), rows: Vec::new() }).rows.push(r.clone());
                }
                for (p, tc) in parts.into_iter().enumerate() {
                    if let Some(tc) = tc {
                        by_part[p].push(translate::table_message(&tc));
                    }
                }
            }
            _ => by_part[partition_of_table(partitions, t) as usize].push(translate::table_message(t)),
        }
    }
    by_part
        .into_iter()
        .enumerate()
        .filter(|(_, ts)| !ts.is_empty())
        .map(|(p, ts)| (p as i32, translate::dml_binlog(item.commit_ts, ts)))
        .collect()
}

/// Hands one message to the producer, waiting while its queue is full.
async fn produce(producer: &Producer, topic: &str, m: &Msg, opaque: usize, commit_ts: i64) -> Result<(), KafkaSinkError> {
    loop {
        let mut record: BaseRecord<'_, (), Vec<u8>, usize> = BaseRecord::with_opaque_to(topic, opaque).partition(m.partition).payload(&m.payload);
        if let Some((key, value)) = &m.header {
            record = record.headers(OwnedHeaders::new().insert(Header { key, value: Some(value.as_bytes()) }));
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((e, _)) => return Err(kerr(format!("producing commit ts {commit_ts}"))(e)),
        }
    }
}

/// The encoder task: translates and encodes each item, takes its bytes from the budget (waiting while
/// too many are unacked), produces its messages and queues it for the ack task, in write order.
async fn encode_loop(shared: Arc<Shared>, topic_ts: HashMap<i32, i64>, mut items: mpsc::Receiver<Arc<Item>>, budget: Arc<Semaphore>) {
    let mut encoder = translate::Encoder::default();
    // Taking items in runs frees the writer's queue slots in runs too: one wake-up of a waiting writer
    // per run instead of a cross-thread wake-up per item.
    let mut batch = Vec::with_capacity(ENCODE_BATCH);
    // Resolved ts: with several partitions or canal-json, the last written commit ts goes to every
    // partition at most once per interval, and once more when the items stop.
    let resolves = (shared.partitions > 1 && shared.cfg.partitioning != Partitioning::Single) || shared.cfg.format == Format::CanalJson;
    let (mut written, mut resolved, mut resolved_at) = (0i64, 0i64, Instant::now());
    loop {
        let owed = resolves && written > resolved;
        let n = tokio::select! {
            n = items.recv_many(&mut batch, ENCODE_BATCH) => n,
            _ = tokio::time::sleep_until((resolved_at + RESOLVED_INTERVAL).into()), if owed => 0,
        };
        if n == 0 && !owed {
            return; // The sink was dropped.
        }
        for item in batch.drain(..) {
            written = written.max(item.commit_ts);
            if let Err(e) = encode_item(&shared, &mut encoder, &topic_ts, &item, &budget).await {
                shared.fail(e);
                return;
            }
        }
        if resolves && written > resolved && (n == 0 || resolved_at.elapsed() >= RESOLVED_INTERVAL) {
            if let Err(e) = send_resolved(&shared, &topic_ts, written).await {
                shared.fail(e);
                return;
            }
            (resolved, resolved_at) = (written, Instant::now());
        }
    }
}

/// The canal-json messages of `item` (one per row change, DDL to every partition), each partition's
/// run marked with the chunk header so its completeness can be read back.
fn canal_messages(shared: &Shared, item: &Item, held: &impl Fn(i32) -> bool, msgs: &mut Vec<Msg>) -> Result<(), KafkaSinkError> {
    let parts = shared.partitions.max(1);
    let mut by_part: Vec<Vec<Vec<u8>>> = vec![Vec::new(); parts as usize];
    match &item.body {
        Body::Dml(tables) => {
            for t in tables {
                for r in &t.rows {
                    let p = match shared.cfg.partitioning {
                        _ if parts <= 1 => 0,
                        Partitioning::Single => 0,
                        Partitioning::Table => partition_of_table(parts, t),
                        Partitioning::PrimaryKey => partition_of_row(parts, t, r),
                    };
                    by_part[p as usize].push(canal::row_message(item.commit_ts, t, r));
                }
            }
        }
        Body::Ddl(ddl) => {
            let m = canal::ddl_message(item.commit_ts, ddl);
            by_part.iter_mut().for_each(|v| v.push(m.clone()));
        }
        Body::Empty => {}
    }
    let limit = &shared.limit;
    for (p, payloads) in by_part.into_iter().enumerate() {
        let (p, n) = (p as i32, payloads.len());
        if held(p) {
            continue;
        }
        for (i, payload) in payloads.into_iter().enumerate() {
            if payload.len() > limit.payload {
                let what = if matches!(item.body, Body::Ddl(_)) { "the DDL".to_string() } else { "one row".to_string() };
                return Err(translate::TooLarge { commit_ts: item.commit_ts, what, size: payload.len(), limit: limit.payload, bound: limit.bound.clone() }.into());
            }
            let header = (n > 1).then(|| (CHUNK_HEADER, format!("{i}/{n}")));
            msgs.push(Msg { partition: p, header, payload });
        }
    }
    Ok(())
}

/// Sends a resolved-ts message for `ts` to every partition that does not already hold a later ts.
async fn send_resolved(shared: &Shared, topic_ts: &HashMap<i32, i64>, ts: i64) -> Result<(), KafkaSinkError> {
    let payload = match shared.cfg.format {
        Format::Protobuf => slave::Binlog { r#type: Some(slave::BinlogType::Dml as i32), commit_ts: Some(ts), ..Default::default() }.encode_to_vec(),
        Format::CanalJson => canal::watermark_message(ts),
    };
    let msgs: Vec<Msg> = (0..shared.partitions)
        .filter(|p| topic_ts.get(p).is_none_or(|&held| ts > held))
        .map(|p| Msg { partition: p, header: Some((RESOLVED_HEADER, ts.to_string())), payload: payload.clone() })
        .collect();
    let producer = shared.producer.lock().await;
    let opaques = shared.window.reserve(msgs.len());
    for (m, &op) in msgs.iter().zip(&opaques) {
        produce(&producer, &shared.cfg.topic, m, op, ts).await?;
    }
    shared.window.push(ts, msgs, None);
    Ok(())
}

/// Encodes `binlog` for partition `p`, in chunks when over `limit`.
fn push_chunks(msgs: &mut Vec<Msg>, p: i32, binlog: &slave::Binlog, limit: &MessageLimit) -> Result<(), KafkaSinkError> {
    let chunks = translate::encode_chunks(binlog, limit.payload, &limit.bound)?;
    let n = chunks.len();
    for (i, payload) in chunks.into_iter().enumerate() {
        let header = (n > 1).then(|| (CHUNK_HEADER, format!("{i}/{n}")));
        msgs.push(Msg { partition: p, header, payload });
    }
    Ok(())
}

async fn encode_item(
    shared: &Shared,
    encoder: &mut translate::Encoder,
    topic_ts: &HashMap<i32, i64>,
    item: &Item,
    budget: &Arc<Semaphore>,
) -> Result<(), KafkaSinkError> {
    let limit = &shared.limit;
    let held = |p: i32| topic_ts.get(&p).is_some_and(|&ts| item.commit_ts <= ts); // restart
    let single = shared.partitions <= 1 || shared.cfg.partitioning == Partitioning::Single;
    let mut msgs = Vec::new();
    match &item.body {
        _ if shared.cfg.format == Format::CanalJson => canal_messages(shared, item, &held, &mut msgs)?,
        // The common case, encoded directly; chunked through the message when over the limit.
        Body::Dml(tables) if single && !held(0) && tables.iter().any(|t| !t.rows.is_empty()) => {
            let payload = encoder.dml(item.commit_ts, tables);
            if payload.len() <= limit.payload {
                msgs.push(Msg { partition: 0, header: None, payload });
            } else if let Some(binlog) = translate::to_secondary(item) {
                push_chunks(&mut msgs, 0, &binlog, limit)?;
            }
        }
        _ => {
            for (p, binlog) in messages(shared.cfg.partitioning, shared.partitions, item) {
                if !held(p) {
                    push_chunks(&mut msgs, p, &binlog, limit)?;
                }
            }
        }
    }
    let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
    // An item larger than the whole budget takes all of it.
    let want = bytes.min(budget_size(&shared.cfg)) as u32;
    let permit = if want == 0 {
        None
    } else {
        Some(budget.clone().acquire_many_owned(want).await.map_err(|_| KafkaSinkError::Stopped)?)
    };
    let producer = shared.producer.lock().await;
    let opaques = shared.window.reserve(msgs.len());
    for (m, &op) in msgs.iter().zip(&opaques) {
        produce(&producer, &shared.cfg.topic, m, op, item.commit_ts).await?;
    }
    shared.window.push(item.commit_ts, msgs, permit);
    Ok(())
}

fn budget_size(cfg: &KafkaConfig) -> usize {
    cfg.max_pending_bytes.clamp(1, u32::MAX as usize)
}

/// The recovery task: after a failed delivery, a new producer sends every unacked item again;
/// while deliveries stall, it checks that the topic still exists.
struct Recovery {
    shared: Arc<Shared>,
    /// Producer rebuilds since the durable ts last moved.
    rebuilds: u32,
    durable_at_rebuild: i64,
}

impl Recovery {
    async fn run(mut self) {
        let mut durable = self.shared.window.durable().subscribe();
        let mut last = *durable.borrow_and_update();
        let mut since = Instant::now();
        loop {
            tokio::select! {
                _ = self.shared.window.failed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            if self.shared.stopped.load(Ordering::Acquire) {
                return;
            }
            if let Some(f) = self.shared.window.failure() {
                if let Err(e) = self.recover(f).await {
                    self.shared.fail(e);
                    return;
                }
                continue;
            }
            // Deliveries stall: make sure the topic exists (someone may have deleted it).
            let now = *durable.borrow_and_update();
            if now != last || self.shared.window.is_empty() {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() > Duration::from_secs(2)
                && let Err(e) = ensure_topic(&self.shared.cfg, self.shared.partitions).await
            {
                tracing::warn!(error = %e, "kafka sink: deliveries stall and the topic check failed");
            }
        }
    }

    /// A new producer sends every unacked item again, whole, in order (the brokers may have lost the
    /// producer id, or a message timed out). Gives up after three rebuilds without progress. A
    /// message whose ack was lost may then be in the topic twice; consumers drop a commit ts at or
    /// below the last one they saw.
    async fn recover(&mut self, f: Failure) -> Result<(), KafkaSinkError> {
        let shared = self.shared.clone();
        let durable = *shared.window.durable().borrow();
        if durable != self.durable_at_rebuild {
            (self.rebuilds, self.durable_at_rebuild) = (0, durable);
        }
        if self.rebuilds >= 3 {
            return Err(KafkaSinkError::Delivery { commit_ts: f.commit_ts, topic: shared.cfg.topic.clone(), partition: f.partition, reason: f.reason });
        }
        self.rebuilds += 1;
        tracing::warn!(commit_ts = f.commit_ts, partition = f.partition, reason = %f.reason, attempt = self.rebuilds, "kafka sink: delivery failed; new producer, sending unacked messages again");
        // Holding the producer stops the encoder between items.
        let mut producer = shared.producer.lock().await;
        let resend = shared.window.new_epoch();
        producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        *producer = make_producer(&shared.cfg, &shared.limit, &shared.window)?;
        if let Err(e) = ensure_topic(&shared.cfg, shared.partitions).await {
            tracing::warn!(error = %e, "kafka sink: topic check failed");
        }
        for (op, m) in &resend {
            produce(&producer, &shared.cfg.topic, m, *op, f.commit_ts).await?;
        }
        Ok(())
    }
}

impl KafkaSink {
    /// Connects, creates the topic if missing, reads the topic's last commit ts per partition, and
    /// starts the encoder and ack tasks (needs a Tokio runtime). While no broker answers it retries
    /// (logging each failure) for up to `connect_timeout`, then returns
    /// [`KafkaSinkError::Unreachable`] naming the brokers.
    pub async fn connect(cfg: KafkaConfig) -> Result<Self, KafkaSinkError> {
        let deadline = Instant::now() + cfg.connect_timeout;
        let mut backoff = Duration::from_millis(500);
        loop {
            match Self::try_connect(cfg.clone()).await {
                Err(e @ KafkaSinkError::Unreachable { .. }) if Instant::now() + backoff < deadline => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "kafka sink: no broker answers; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                r => return r,
            }
        }
    }

    async fn try_connect(cfg: KafkaConfig) -> Result<Self, KafkaSinkError> {
        let want = if cfg.partitioning == Partitioning::Single { 1 } else { cfg.partitions.max(1) };
        let partitions = ensure_topic(&cfg, want).await?;
        let partitions = if cfg.partitioning == Partitioning::Single { 1 } else { partitions };
        let limit = MessageLimit::new(&cfg, topic_max_message_bytes(&cfg).await?);
        let window = Arc::new(Window::new(watch::channel(0).0));
        let producer = make_producer(&cfg, &limit, &window)?;
        let topic_ts = last_commit_ts(&cfg, partitions)?;
        tracing::info!(topic = %cfg.topic, partitions, ?topic_ts, payload_limit = limit.payload, "kafka sink: connected");
        let budget = Arc::new(Semaphore::new(budget_size(&cfg)));
        let shared = Arc::new(Shared {
            cfg,
            limit,
            partitions,
            producer: tokio::sync::Mutex::new(producer),
            window,
            failure: std::sync::Mutex::new(None),
            stopped: AtomicBool::new(false),
        });
        let (to_encoder, items) = mpsc::channel(ENCODE_QUEUE);
        let recovery = Recovery { shared: shared.clone(), rebuilds: 0, durable_at_rebuild: 0 };
        let tasks = vec![tokio::spawn(encode_loop(shared.clone(), topic_ts.clone(), items, budget)), tokio::spawn(recovery.run())];
        Ok(Self { shared, to_encoder, last_written: 0, topic_ts, tasks })
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.shared.cfg.topic
    }

    /// Follows [`Sink::durable_ts`] as the ack task publishes it (for benches and monitors).
    pub fn durable_watch(&self) -> watch::Receiver<i64> {
        self.shared.window.durable().subscribe()
    }

    /// The error that stopped the sink's tasks (once; later calls say the sink stopped).
    fn check(&self) -> Result<(), KafkaSinkError> {
        if !self.shared.stopped.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.shared.failure.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(e) => Err(e),
            None => Err(KafkaSinkError::Stopped),
        }
    }

    /// Queues `item` for the encoder task; waits while its queue is full or too many bytes are unacked.
    pub async fn send(&mut self, item: Arc<Item>) -> Result<(), KafkaSinkError> {
        self.check()?;
        let commit_ts = item.commit_ts;
        if self.to_encoder.send(item).await.is_err() {
            self.check()?;
            return Err(KafkaSinkError::Stopped);
        }
        self.last_written = self.last_written.max(commit_ts);
        Ok(())
    }

    /// Waits until every queued message is acked.
    pub async fn flush_all(&mut self) -> Result<i64, KafkaSinkError> {
        let mut durable = self.shared.window.durable().subscribe();
        loop {
            self.check()?;
            let ts = *durable.borrow_and_update();
            if ts >= self.last_written {
                return Ok(ts);
            }
            // The sender lives in `shared`, which we hold: this never fails.
            let _ = durable.changed().await;
        }
    }
}

impl Sink for KafkaSink {
    async fn load_checkpoint(&mut self) -> Result<Option<i64>, SinkError> {
        // The lowest partition's last ts: every partition holds everything up to it.
        let ts = if self.topic_ts.len() as i32 == self.shared.partitions { self.topic_ts.values().min().copied() } else { None };
        if let Some(ts) = ts {
            self.shared.window.durable().send_if_modified(|d| {
                let moved = ts > *d;
                *d = (*d).max(ts);
                moved
            });
        }
        Ok(ts)
    }

    async fn write(&mut self, item: Arc<Item>) -> Result<(), SinkError> {
        self.send(item).await.map_err(|e| SinkError::new("kafka", e))
    }

    fn durable_ts(&self) -> i64 {
        *self.shared.window.durable().borrow()
    }

    async fn flush(&mut self) -> Result<i64, SinkError> {
        self.flush_all().await.map_err(|e| SinkError::new("kafka", e))
    }
}
