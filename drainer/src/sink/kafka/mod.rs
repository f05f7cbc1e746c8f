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
//! - **Exactly-once** (`kafka-exactly-once`, [`KafkaConfig::transactional_id`]; `exactly_once`): each
//!   run of queued items is one Kafka transaction, the checkpoint is read `read_committed`, and a
//!   newer producer with the same `transactional.id` (a new active drainer of an HA task) fences this
//!   one ([`KafkaSinkError::Fenced`]). It replaces the ack window and the recovery task below.
//! - **Partitioning** by table, primary key or column values (`kafka-partition-by`, `kafka-partitions`:
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
//! `write` encodes the item into its messages (per partition, in the topic's format), takes their
//! bytes from the unacked-bytes budget, hands them to the producer (librdkafka queues them and sends
//! them from its own threads) and moves the item into the **ack window** (`window`): the producer's
//! delivery callback (librdkafka's polling thread) releases items in write order and publishes the
//! durable ts once per report that released any. So the durable ts advances without new writes, and
//! no task wakes up per item or per message (a queue to an encoder task, and a wake-up per item, cost
//! more than the encoding). A **recovery task** starts a new producer after a failed delivery; a
//! **resolver task** sends the last resolved ts once items stop. An item that cannot be encoded
//! (over the message limit and not chunkable) fails its `write`. Exactly-once queues the messages to
//! a **transaction task** instead (`exactly_once`).
//!
//! # Invariants
//! - `durable_ts` is the highest commit ts whose messages, and every earlier item's, are acked (an ack
//!   window released strictly in order, as upstream's Successes channel).
//! - At most `max_pending_bytes` of queued and unacked message bytes (upstream: 90 MiB; one larger
//!   item takes the whole budget): `write` waits beyond it.
//! - Produce order is write order: `write` produces an item's messages and pushes it into the window
//!   under the producer lock; a recovery holds that lock while it re-sends.
//! - A delivery error rebuilds the producer and re-sends every unacked item (at most three times
//!   without progress); then, or on any other error, the tasks stop and `write`/`flush` return it.
//!
//! # Modules
//! `config` (settings, formats, partitioning, the message size limit), `error`, `admin` (topic
//! creation and configs, the producer's settings), `checkpoint` (the topic's last commit ts per
//! partition, record headers), `partition` (which partition a change goes to), `pipeline` (an item's
//! messages, producing them, the recovery and resolver tasks), `window` (the ack window),
//! `exactly_once` (the transaction task with a transactional producer).

mod admin;
pub mod canal;
mod checkpoint;
mod config;
mod error;
mod exactly_once;
mod partition;
mod pipeline;
pub mod translate;
pub mod untranslate;
mod window;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};

pub use admin::{ensure_topic, topic_max_message_bytes};
pub use checkpoint::{chunk_of, is_resolved, last_commit_ts};
pub use config::{Format, KafkaConfig, Partitioning};
pub use error::KafkaSinkError;

use admin::make_producer;
use config::MessageLimit;
use pipeline::{Encoded, Encoders, Producing, Recovery, Shared, budget_size, item_messages, produce_item, resolve_loop, resolves};
use window::Window;

use crate::sink::{Sink, SinkError};
use crate::txn::Item;

/// The record header that marks a chunk of a split transaction: ASCII `"<index>/<count>"`, index
/// from 0. Messages without it are whole transactions.
pub const CHUNK_HEADER: &str = "tidb-binlog-chunk";

/// The record header of a resolved-ts message (ours, with `kafka-partition-by` or canal-json): ASCII commit ts
/// `R`. The message is a `Binlog` with commit ts `R` and no data; in its partition every message of a
/// transaction with commit ts ≤ `R` comes before it.
pub const RESOLVED_HEADER: &str = "tidb-binlog-resolved";

/// The Kafka sink. See the module docs.
pub struct KafkaSink {
    shared: Arc<Shared>,
    /// The encoders with their per-table caches (`write` encodes).
    encoders: Encoders,
    /// Exactly-once: the queue to the transaction task.
    to_transactions: Option<mpsc::Sender<Encoded>>,
    /// The highest commit ts written.
    last_written: i64,
    /// Per partition: the last commit ts the topic held at start (`write` skips items at or below).
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

impl KafkaSink {
    /// Connects, creates the topic if missing, reads the topic's last commit ts per partition, and
    /// starts the producer and recovery tasks (needs a Tokio runtime). While no broker answers it retries
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
        let partitions = partition::written_partitions(&cfg, partitions);
        let limit = MessageLimit::new(&cfg, topic_max_message_bytes(&cfg).await?);
        let window = Arc::new(Window::new(watch::channel(0).0));
        let exactly_once = cfg.transactional_id.is_some();
        let producer = Arc::new(make_producer(&cfg, &limit, (!exactly_once).then_some(&window))?);
        if exactly_once {
            // Before the checkpoint is read: fences older producers and settles what they left open.
            exactly_once::init(&producer, &cfg).await?;
        }
        let topic_ts = last_commit_ts(&cfg, partitions)?;
        tracing::info!(topic = %cfg.topic, partitions, ?topic_ts, payload_limit = limit.payload, exactly_once, "kafka sink: connected");
        let budget = Arc::new(Semaphore::new(budget_size(&cfg)));
        let shared = Arc::new(Shared {
            budget,
            cfg,
            limit,
            partitions,
            producer: tokio::sync::Mutex::new(Producing::new(producer)),
            window,
            failure: std::sync::Mutex::new(None),
            stopped: AtomicBool::new(false),
        });
        let mut tasks = Vec::new();
        let to_transactions = if exactly_once {
            let (tx, queue) = mpsc::channel(exactly_once::QUEUE_ITEMS);
            tasks.push(tokio::spawn(exactly_once::produce_loop(shared.clone(), topic_ts.clone(), queue)));
            Some(tx)
        } else {
            tasks.push(tokio::spawn(Recovery::new(shared.clone()).run()));
            if resolves(&shared) {
                tasks.push(tokio::spawn(resolve_loop(shared.clone(), topic_ts.clone())));
            }
            None
        };
        Ok(Self { shared, encoders: Encoders::default(), to_transactions, last_written: 0, topic_ts, tasks })
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

    /// Encodes `item` and produces its messages (exactly-once: queues them for the transaction task);
    /// waits while too many bytes are unacked. An item that cannot be encoded or produced stops the
    /// sink with its error.
    pub async fn send(&mut self, item: Arc<Item>) -> Result<(), KafkaSinkError> {
        self.check()?;
        let msgs = match item_messages(&self.shared, &mut self.encoders, &self.topic_ts, &item) {
            Ok(msgs) => msgs,
            Err(e) => {
                // Nothing after an item that was not sent may be sent.
                self.shared.fail(e);
                return self.check();
            }
        };
        let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
        // An item larger than the whole budget takes all of it.
        let want = bytes.min(budget_size(&self.shared.cfg)) as u32;
        let budget = if want == 0 {
            None
        } else {
            match self.shared.budget.clone().acquire_many_owned(want).await {
                Ok(permit) => Some(permit),
                Err(_) => {
                    // Closed: the sink stopped.
                    self.check()?;
                    return Err(KafkaSinkError::Stopped);
                }
            }
        };
        let commit_ts = item.commit_ts;
        let encoded = Encoded { commit_ts, msgs, budget };
        match &self.to_transactions {
            Some(queue) => {
                if queue.send(encoded).await.is_err() {
                    self.check()?;
                    return Err(KafkaSinkError::Stopped);
                }
            }
            None => {
                let mut p = self.shared.producer.lock().await;
                // A recovery that gave up stops the sink while holding the lock.
                self.check()?;
                if let Err(e) = produce_item(&self.shared, &mut p, &self.topic_ts, encoded).await {
                    drop(p);
                    self.shared.fail(e);
                    return self.check();
                }
            }
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
            self.shared.window.advance_durable(ts);
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
