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
//! - **Partitioning** by table or primary key ([`Partitioning`]); order is kept per partition.
//! - **Topic creation** through the admin API when the topic is missing (at start, and again when
//!   deliveries stall, e.g. after a broker lost its topics).
//!
//! # Invariants
//! - `durable_ts` is the highest commit ts whose messages, and every earlier item's, are acked (an ack
//!   window released strictly in order, as upstream's Successes channel).
//! - At most `max_pending_bytes` of unacked message bytes (upstream: 90 MiB): `write` waits beyond it.
//! - Any delivery error is fatal, as upstream; a message unacked for `ack_timeout` is an error.

pub mod translate;

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::proto::slave;
use crate::sink::{Sink, SinkError};
use crate::txn::{Body, Item, RowChange, TableChanges, Value};

/// The record header that marks a chunk of a split transaction: ASCII `"<index>/<count>"`, index
/// from 0. Messages without it are whole transactions.
pub const CHUNK_HEADER: &str = "tidb-binlog-chunk";

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
            partitioning: Partitioning::Single,
            partitions: 1,
            max_pending_bytes: 90 << 20,
            ack_timeout: Duration::from_secs(30),
            idempotent: true,
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

/// One written item waiting for its acks.
struct Pending {
    commit_ts: i64,
    bytes: usize,
    msgs: Vec<Msg>,
}

/// One message of a pending item; kept until acked so it can be sent again by a new producer.
struct Msg {
    partition: i32,
    /// The chunk header value (`"i/n"`) when the transaction is chunked.
    chunk: Option<String>,
    payload: Vec<u8>,
    /// `None` once acked.
    ack: Option<DeliveryFuture>,
}

/// The Kafka sink. See the module docs.
pub struct KafkaSink {
    cfg: KafkaConfig,
    producer: FutureProducer,
    partitions: i32,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    durable_ts: i64,
    /// Per partition: the last commit ts the topic held at start (items at or below are skipped).
    topic_ts: HashMap<i32, i64>,
    last_topic_check: Instant,
    /// Producer rebuilds since the window last advanced.
    rebuilds: u32,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.cfg.topic)
            .field("partitions", &self.partitions)
            .field("pending", &self.pending.len())
            .field("durable_ts", &self.durable_ts)
            .finish()
    }
}

/// Creates `topic` with `partitions` partitions if the brokers do not have it; returns its partition
/// count.
pub async fn ensure_topic(cfg: &KafkaConfig, partitions: i32) -> Result<i32, KafkaSinkError> {
    if let Some(n) = topic_partitions(cfg)? {
        return Ok(n);
    }
    let admin: AdminClient<DefaultClientContext> = cfg.common().create().map_err(kerr("admin client"))?;
    let topic = NewTopic::new(&cfg.topic, partitions, TopicReplication::Fixed(1));
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
    let md = consumer
        .fetch_metadata(Some(&cfg.topic), Duration::from_secs(10))
        .map_err(kerr(format!("metadata of {}", cfg.topic)))?;
    Ok(md.topics().iter().find(|t| t.name() == cfg.topic).and_then(|t| {
        if t.error().is_some() || t.partitions().is_empty() { None } else { Some(t.partitions().len() as i32) }
    }))
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
        // Some brokers (Tansu) report the last batch's base offset + 1 as the high watermark: start
        // there and read forward to the end of the partition.
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
                    let b = slave::Binlog::decode(payload).map_err(|e| KafkaSinkError::Topic {
                        topic: cfg.topic.clone(),
                        reason: format!("message at {p}/{} is not a slave.binlog.Binlog: {e}", m.offset()),
                    })?;
                    let complete = chunk_of(m.headers()).is_none_or(|(i, n)| i + 1 == n);
                    last = Some((m.offset(), b.commit_ts(), complete));
                }
            }
        }
        let Some((_, commit_ts, complete)) = last else { continue };
        let ts = if complete { commit_ts } else { commit_ts - 1 };
        out.insert(p, ts);
    }
    Ok(out)
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

fn make_producer(cfg: &KafkaConfig) -> Result<FutureProducer, KafkaSinkError> {
    let limit = cfg.message_limit();
    let mut pc = cfg.common();
    pc.set("acks", "all")
        .set("enable.idempotence", if cfg.idempotent { "true" } else { "false" })
        .set("message.max.bytes", (limit + 4096).to_string())
        .set("batch.num.messages", cfg.max_messages.max(1).to_string())
        .set("linger.ms", "5")
        .set("message.timeout.ms", cfg.ack_timeout.as_millis().max(1000).to_string())
        .set("queue.buffering.max.kbytes", "2097151")
        .set("queue.buffering.max.messages", "1000000");
    pc.create().map_err(kerr("producer"))
}

fn hash_of(v: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn value_key(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(v) => crate::reparo::print::value_text(v),
    }
}

impl KafkaSink {
    /// Connects, creates the topic if missing, and reads the topic's last commit ts per partition.
    pub async fn connect(cfg: KafkaConfig) -> Result<Self, KafkaSinkError> {
        let want = if cfg.partitioning == Partitioning::Single { 1 } else { cfg.partitions.max(1) };
        let partitions = ensure_topic(&cfg, want).await?;
        let partitions = if cfg.partitioning == Partitioning::Single { 1 } else { partitions };
        let producer = make_producer(&cfg)?;
        let topic_ts = last_commit_ts(&cfg, partitions)?;
        tracing::info!(topic = %cfg.topic, partitions, ?topic_ts, "kafka sink: connected");
        Ok(Self {
            cfg,
            producer,
            partitions,
            pending: VecDeque::new(),
            pending_bytes: 0,
            durable_ts: 0,
            topic_ts,
            last_topic_check: Instant::now(),
            rebuilds: 0,
        })
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.cfg.topic
    }

    fn partition_of_table(&self, t: &TableChanges) -> i32 {
        (hash_of(&(&t.table.schema, &t.table.name)) % self.partitions as u64) as i32
    }

    fn partition_of_row(&self, t: &TableChanges, r: &RowChange) -> i32 {
        let row = match r {
            RowChange::Insert(r) | RowChange::Delete(r) => r,
            RowChange::Update { new, .. } => new,
        };
        let pk: Vec<usize> = match t.table.unique_keys.iter().find(|k| k.is_primary()) {
            Some(k) => k.columns.clone(),
            None => t.table.columns.iter().enumerate().filter(|(_, c)| c.primary_key).map(|(i, _)| i).collect(),
        };
        if pk.is_empty() {
            return self.partition_of_table(t);
        }
        let key: Vec<String> = pk.iter().map(|&i| value_key(row.get(i).unwrap_or(&None))).collect();
        (hash_of(&(&t.table.schema, &t.table.name, key)) % self.partitions as u64) as i32
    }

    /// The messages (partition, binlog) for `item`.
    fn messages(&self, item: &Item) -> Vec<(i32, slave::Binlog)> {
        let Some(binlog) = translate::to_secondary(item) else { return Vec::new() };
        if self.partitions <= 1 || self.cfg.partitioning == Partitioning::Single {
            return vec![(0, binlog)];
        }
        let Body::Dml(tables) = &item.body else {
            return (0..self.partitions).map(|p| (p, binlog.clone())).collect();
        };
        let mut by_part: Vec<Vec<slave::Table>> = vec![Vec::new(); self.partitions as usize];
        for t in tables.iter().filter(|t| !t.rows.is_empty()) {
            match self.cfg.partitioning {
                Partitioning::PrimaryKey => {
                    let mut parts: Vec<Option<TableChanges>> = vec![None; self.partitions as usize];
                    for r in &t.rows {
                        let p = self.partition_of_row(t, r) as usize;
                        parts[p].get_or_insert_with(|| TableChanges { table: t.table.clone(), rows: Vec::new() }).rows.push(r.clone());
                    }
                    for (p, tc) in parts.into_iter().enumerate() {
                        if let Some(tc) = tc {
                            by_part[p].push(translate::table_message(&tc));
                        }
                    }
                }
                _ => by_part[self.partition_of_table(t) as usize].push(translate::table_message(t)),
            }
        }
        by_part
            .into_iter()
            .enumerate()
            .filter(|(_, ts)| !ts.is_empty())
            .map(|(p, ts)| (p as i32, translate::dml_binlog(item.commit_ts, ts)))
            .collect()
    }

    /// Queues `item`'s messages; waits while too many bytes are unacked.
    pub async fn send(&mut self, item: &Item) -> Result<(), KafkaSinkError> {
        let mut msgs = Vec::new();
        for (p, binlog) in self.messages(item) {
            if self.topic_ts.get(&p).is_some_and(|&ts| item.commit_ts <= ts) {
                continue; // the topic already holds it (restart)
            }
            let chunks = translate::encode_chunks(&binlog, self.cfg.message_limit())?;
            let n = chunks.len();
            for (i, payload) in chunks.into_iter().enumerate() {
                let chunk = (n > 1).then(|| format!("{i}/{n}"));
                msgs.push(Msg { partition: p, chunk, payload, ack: None });
            }
        }
        let bytes = msgs.iter().map(|m| m.payload.len()).sum();
        for i in 0..msgs.len() {
            let fut = self.produce(&msgs[i], item.commit_ts).await?;
            msgs[i].ack = Some(fut);
        }
        self.pending.push_back(Pending { commit_ts: item.commit_ts, bytes, msgs });
        self.pending_bytes += bytes;
        self.collect_done().await?;
        while self.pending_bytes > self.cfg.max_pending_bytes {
            self.wait_front().await?;
        }
        Ok(())
    }

    /// Hands one message to the producer, waiting while its queue is full.
    async fn produce(&mut self, m: &Msg, commit_ts: i64) -> Result<DeliveryFuture, KafkaSinkError> {
        let topic = self.cfg.topic.clone();
        loop {
            let mut record: FutureRecord<'_, (), Vec<u8>> = FutureRecord::to(&topic).partition(m.partition).payload(&m.payload);
            if let Some(tag) = &m.chunk {
                record = record.headers(OwnedHeaders::new().insert(Header { key: CHUNK_HEADER, value: Some(tag.as_bytes()) }));
            }
            match self.producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(kerr(format!("producing commit ts {commit_ts}"))(e)),
            }
        }
    }

    /// Releases every finished item at the front of the window without waiting.
    async fn collect_done(&mut self) -> Result<(), KafkaSinkError> {
        loop {
            let Some(front) = self.pending.front_mut() else { return Ok(()) };
            let commit_ts = front.commit_ts;
            let mut failed = None;
            for m in front.msgs.iter_mut() {
                let Some(fut) = m.ack.as_mut() else { continue };
                match fut.now_or_never() {
                    None => return Ok(()),
                    Some(r) => match delivery_error(r) {
                        None => m.ack = None,
                        Some(reason) => {
                            failed = Some((m.partition, reason));
                            break;
                        }
                    },
                }
            }
            match failed {
                Some((p, reason)) => self.recover(commit_ts, p, reason).await?,
                None => self.release_front(),
            }
        }
    }

    fn release_front(&mut self) {
        if let Some(done) = self.pending.pop_front() {
            self.pending_bytes -= done.bytes;
            self.durable_ts = self.durable_ts.max(done.commit_ts);
            self.rebuilds = 0;
        }
    }

    /// After a failed delivery: a new producer sends every unacked message again, in order (the
    /// brokers may have restarted and lost the topic or the producer id). Gives up after three
    /// rebuilds without progress. A message whose ack was lost may then be in the topic twice;
    /// consumers drop a commit ts at or below the last one they saw.
    async fn recover(&mut self, commit_ts: i64, partition: i32, reason: String) -> Result<(), KafkaSinkError> {
        if self.rebuilds >= 3 {
            return Err(KafkaSinkError::Delivery { commit_ts, topic: self.cfg.topic.clone(), partition, reason });
        }
        self.rebuilds += 1;
        tracing::warn!(commit_ts, partition, %reason, attempt = self.rebuilds, "kafka sink: delivery failed; new producer, sending unacked messages again");
        self.producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        self.producer = make_producer(&self.cfg)?;
        if let Err(e) = ensure_topic(&self.cfg, self.partitions).await {
            tracing::warn!(error = %e, "kafka sink: topic check failed");
        }
        let mut pending = std::mem::take(&mut self.pending);
        let result = async {
            // A transaction with any unacked message is sent whole again, so a chunk sequence is
            // never cut in the middle.
            for item in pending.iter_mut().filter(|i| i.msgs.iter().any(|m| m.ack.is_some())) {
                for m in item.msgs.iter_mut() {
                    m.ack = Some(self.produce(m, item.commit_ts).await?);
                }
            }
            Ok(())
        }
        .await;
        self.pending = pending;
        result
    }

    /// Waits for the front item's acks.
    async fn wait_front(&mut self) -> Result<(), KafkaSinkError> {
        loop {
            let Some(front) = self.pending.front_mut() else { return Ok(()) };
            let commit_ts = front.commit_ts;
            let next = front.msgs.iter_mut().find(|m| m.ack.is_some());
            let Some(m) = next else {
                self.release_front();
                return Ok(());
            };
            let partition = m.partition;
            let fut = m.ack.as_mut().expect("found above");
            match tokio::time::timeout(Duration::from_secs(2), fut).await {
                Ok(r) => match delivery_error(r) {
                    None => m.ack = None,
                    Some(reason) => self.recover(commit_ts, partition, reason).await?,
                },
                Err(_) => {
                    // Still waiting: make sure the topic exists (a broker may have lost it).
                    if self.last_topic_check.elapsed() > Duration::from_secs(2) {
                        self.last_topic_check = Instant::now();
                        if let Err(e) = ensure_topic(&self.cfg, self.partitions).await {
                            tracing::warn!(error = %e, "kafka sink: deliveries stall and the topic check failed");
                        }
                    }
                }
            }
        }
    }

    /// Waits until every queued message is acked.
    pub async fn flush_all(&mut self) -> Result<i64, KafkaSinkError> {
        while !self.pending.is_empty() {
            self.wait_front().await?;
        }
        Ok(self.durable_ts)
    }
}

fn delivery_error<T, M>(
    r: Result<Result<T, (rdkafka::error::KafkaError, M)>, futures::channel::oneshot::Canceled>,
) -> Option<String> {
    match r {
        Ok(Ok(_)) => None,
        Ok(Err((e, _))) => Some(e.to_string()),
        Err(_) => Some("the producer was dropped".to_string()),
    }
}

impl Sink for KafkaSink {
    async fn load_checkpoint(&mut self) -> Result<Option<i64>, SinkError> {
        // The lowest partition's last ts: every partition holds everything up to it.
        let ts = if self.topic_ts.len() as i32 == self.partitions { self.topic_ts.values().min().copied() } else { None };
        if let Some(ts) = ts {
            self.durable_ts = self.durable_ts.max(ts);
        }
        Ok(ts)
    }

    async fn write(&mut self, item: Arc<Item>) -> Result<(), SinkError> {
        self.send(&item).await.map_err(|e| SinkError::new("kafka", e))
    }

    fn durable_ts(&self) -> i64 {
        self.durable_ts
    }

    async fn flush(&mut self) -> Result<i64, SinkError> {
        let ts = self.flush_all().await.map_err(|e| SinkError::new("kafka", e))?;
        self.producer.flush(Duration::from_secs(1)).ok();
        Ok(ts)
    }
}
