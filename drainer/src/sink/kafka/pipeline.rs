//! The encoder task (items → messages → producer → ack window, resolved-ts messages) and the
//! recovery task (a new producer after a failed delivery).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _};
use tokio::sync::{Semaphore, mpsc};

use super::admin::{Producer, ensure_topic, make_producer};
use super::config::MessageLimit;
use super::error::kerr;
use super::partition::{split, written_partitions};
use super::window::{Failure, Msg, Window};
use super::{CHUNK_HEADER, Format, KafkaConfig, KafkaSinkError, RESOLVED_HEADER, canal, translate};
use crate::proto::slave;
use crate::txn::{Body, Item, TableChanges};

/// How often, at most, the encoder sends resolved-ts messages while items flow.
pub(super) const RESOLVED_INTERVAL: Duration = Duration::from_millis(1000);

/// Items the encoder task may hold queued ahead of it (each is already in the caller's memory).
pub(super) const ENCODE_QUEUE: usize = 256;

/// Items the encoder task takes from its queue at once.
pub(super) const ENCODE_BATCH: usize = 64;

/// What the sink, its encoder task and its recovery task share.
pub(super) struct Shared {
    pub(super) cfg: KafkaConfig,
    pub(super) limit: MessageLimit,
    pub(super) partitions: i32,
    /// The encoder holds the lock while it produces an item's messages and pushes the item into the
    /// window, so a recovery that holds it sees every produced item in the window.
    pub(super) producer: tokio::sync::Mutex<Arc<Producer>>,
    /// Produced items waiting for acks; publishes the durable ts (also woken, unchanged, when a task
    /// fails).
    pub(super) window: Arc<Window>,
    /// The error that stopped a task, until the sink returns it.
    pub(super) failure: std::sync::Mutex<Option<KafkaSinkError>>,
    pub(super) stopped: AtomicBool,
}

impl Shared {
    pub(super) fn fail(&self, e: KafkaSinkError) {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
        self.stopped.store(true, Ordering::Release);
        self.window.durable().send_modify(|_| {});
    }

    /// Moves the durable ts up to `ts` (exactly-once: after a commit).
    pub(super) fn publish_durable(&self, ts: i64) {
        self.window.durable().send_if_modified(|d| {
            let moved = ts > *d;
            *d = (*d).max(ts);
            moved
        });
    }
}

/// Hands one message to the producer, waiting while its queue is full.
pub(super) async fn produce(producer: &Producer, topic: &str, m: &Msg, opaque: usize, commit_ts: i64) -> Result<(), KafkaSinkError> {
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

/// Whether the sink sends resolved-ts messages: with several partitions, or canal-json.
pub(super) fn resolves(shared: &Shared) -> bool {
    written_partitions(&shared.cfg, shared.partitions) > 1 || shared.cfg.format == Format::CanalJson
}

/// Waits for queued items (moved into `batch`, at most [`ENCODE_BATCH`]) or, when a resolved ts is
/// `owed`, for its interval since `resolved_at` to pass (`Some(0)`); `None` once the sink was dropped.
pub(super) async fn next_batch(items: &mut mpsc::Receiver<Arc<Item>>, batch: &mut Vec<Arc<Item>>, owed: bool, resolved_at: Instant) -> Option<usize> {
    let n = tokio::select! {
        n = items.recv_many(batch, ENCODE_BATCH) => n,
        _ = tokio::time::sleep_until((resolved_at + RESOLVED_INTERVAL).into()), if owed => 0,
    };
    (n > 0 || owed).then_some(n)
}

/// The encoder task: translates and encodes each item, takes its bytes from the budget (waiting while
/// too many are unacked), produces its messages and queues it for the ack task, in write order.
pub(super) async fn encode_loop(shared: Arc<Shared>, topic_ts: HashMap<i32, i64>, mut items: mpsc::Receiver<Arc<Item>>, budget: Arc<Semaphore>) {
    let mut encoders = Encoders::default();
    // Taking items in runs frees the writer's queue slots in runs too: one wake-up of a waiting writer
    // per run instead of a cross-thread wake-up per item.
    let mut batch = Vec::with_capacity(ENCODE_BATCH);
    // Resolved ts: with several partitions or canal-json, the last written commit ts goes to every
    // partition at most once per interval, and once more when the items stop.
    let resolves = resolves(&shared);
    let (mut written, mut resolved, mut resolved_at) = (0i64, 0i64, Instant::now());
    loop {
        let owed = resolves && written > resolved;
        let Some(n) = next_batch(&mut items, &mut batch, owed, resolved_at).await else {
            return; // The sink was dropped.
        };
        for item in batch.drain(..) {
            written = written.max(item.commit_ts);
            if let Err(e) = encode_item(&shared, &mut encoders, &topic_ts, &item, &budget).await {
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

/// A resolved-ts message for `ts` to every partition that does not already hold a later ts.
pub(super) fn resolved_messages(shared: &Shared, topic_ts: &HashMap<i32, i64>, ts: i64) -> Vec<Msg> {
    let payload = match shared.cfg.format {
        Format::Protobuf => slave::Binlog { r#type: Some(slave::BinlogType::Dml as i32), commit_ts: Some(ts), ..Default::default() }.encode_to_vec(),
        Format::CanalJson => canal::watermark_message(ts),
    };
    (0..shared.partitions)
        .filter(|p| topic_ts.get(p).is_none_or(|&held| ts > held))
        .map(|p| Msg { partition: p, header: Some((RESOLVED_HEADER, ts.to_string())), payload: payload.clone() })
        .collect()
}

/// Sends a resolved-ts message for `ts` to every partition that does not already hold a later ts.
async fn send_resolved(shared: &Shared, topic_ts: &HashMap<i32, i64>, ts: i64) -> Result<(), KafkaSinkError> {
    let msgs = resolved_messages(shared, topic_ts, ts);
    let producer = shared.producer.lock().await;
    let opaques = shared.window.reserve(msgs.len());
    for (m, op) in msgs.iter().zip(opaques) {
        produce(&producer, &shared.cfg.topic, m, op, ts).await?;
    }
    shared.window.push(ts, msgs, None);
    Ok(())
}

/// Encodes `binlog` for partition `p`, in chunks when over `limit`.
fn push_chunks(msgs: &mut Vec<Msg>, p: i32, binlog: &slave::Binlog, limit: &MessageLimit) -> Result<(), KafkaSinkError> {
    let chunks = translate::encode_chunks(binlog, limit.payload, &limit.bound)?;
    push_run(msgs, p, chunks);
    Ok(())
}

/// Adds one partition's messages of a transaction, marked with the chunk header `"i/n"` when there
/// are several, so a reader can tell whether the transaction is complete in the partition.
fn push_run(msgs: &mut Vec<Msg>, p: i32, payloads: Vec<Vec<u8>>) {
    let n = payloads.len();
    for (i, payload) in payloads.into_iter().enumerate() {
        let header = (n > 1).then(|| (CHUNK_HEADER, format!("{i}/{n}")));
        msgs.push(Msg { partition: p, header, payload });
    }
}

/// `payload`, or the error naming `what` when it is over the topic's message limit (a canal-json
/// message cannot be chunked).
fn fits(payload: Vec<u8>, commit_ts: i64, what: &str, limit: &MessageLimit) -> Result<Vec<u8>, KafkaSinkError> {
    if payload.len() <= limit.payload {
        return Ok(payload);
    }
    Err(translate::TooLarge { commit_ts, what: what.to_string(), size: payload.len(), limit: limit.payload, bound: limit.bound.clone() }.into())
}

/// The encoder task's encoders, with their per-table caches.
#[derive(Default, Debug)]
pub(super) struct Encoders {
    protobuf: translate::Encoder,
    canal: canal::Writer,
}

/// The messages of `item`, leaving out partitions that already hold it (a restart): in protobuf one
/// binlog per partition holding the partition's row changes (in chunks when over the message limit),
/// in canal-json one message per row change; a DDL goes to every partition.
pub(super) fn item_messages(shared: &Shared, enc: &mut Encoders, topic_ts: &HashMap<i32, i64>, item: &Item) -> Result<Vec<Msg>, KafkaSinkError> {
    let limit = &shared.limit;
    let held = |p: i32| topic_ts.get(&p).is_some_and(|&ts| item.commit_ts <= ts); // restart
    let ts = item.commit_ts;
    let mut msgs = Vec::new();
    match &item.body {
        Body::Dml(tables) => {
            for (p, share) in split(&shared.cfg, shared.partitions, tables).iter().enumerate() {
                let p = p as i32;
                if share.is_empty() || held(p) {
                    continue;
                }
                match shared.cfg.format {
                    Format::Protobuf => {
                        let payload = enc.protobuf.dml_rows(ts, share.iter().map(|(t, rows)| (&t.table, rows.iter())));
                        if payload.len() <= limit.payload {
                            msgs.push(Msg { partition: p, header: None, payload });
                        } else {
                            let tables = share
                                .iter()
                                .map(|(t, rows)| translate::table_message(&TableChanges { table: t.table.clone(), rows: rows.iter().cloned().collect() }))
                                .collect();
                            push_chunks(&mut msgs, p, &translate::dml_binlog(ts, tables), limit)?;
                        }
                    }
                    Format::CanalJson => {
                        let mut payloads = Vec::new();
                        for (t, rows) in share {
                            for r in rows.iter() {
                                payloads.push(fits(enc.canal.row_message(ts, t, r), ts, "one row", limit)?);
                            }
                        }
                        push_run(&mut msgs, p, payloads);
                    }
                }
            }
        }
        Body::Ddl(ddl) => {
            // Encoded once (unless every partition holds it), sent to every partition.
            let parts: Vec<i32> = (0..written_partitions(&shared.cfg, shared.partitions)).filter(|&p| !held(p)).collect();
            if parts.is_empty() {
                return Ok(msgs);
            }
            let payloads = match shared.cfg.format {
                Format::Protobuf => match translate::to_secondary(item) {
                    Some(binlog) => translate::encode_chunks(&binlog, limit.payload, &limit.bound)?,
                    None => Vec::new(),
                },
                Format::CanalJson => vec![fits(canal::ddl_message(ts, ddl), ts, "the DDL", limit)?],
            };
            for p in parts {
                push_run(&mut msgs, p, payloads.clone());
            }
        }
        Body::Empty => {}
    }
    Ok(msgs)
}

async fn encode_item(
    shared: &Shared,
    encoders: &mut Encoders,
    topic_ts: &HashMap<i32, i64>,
    item: &Item,
    budget: &Arc<Semaphore>,
) -> Result<(), KafkaSinkError> {
    let msgs = item_messages(shared, encoders, topic_ts, item)?;
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
    for (m, op) in msgs.iter().zip(opaques) {
        produce(&producer, &shared.cfg.topic, m, op, item.commit_ts).await?;
    }
    shared.window.push(item.commit_ts, msgs, permit);
    Ok(())
}

pub(super) fn budget_size(cfg: &KafkaConfig) -> usize {
    cfg.max_pending_bytes.clamp(1, u32::MAX as usize)
}

/// The recovery task: after a failed delivery, a new producer sends every unacked item again;
/// while deliveries stall, it checks that the topic still exists.
pub(super) struct Recovery {
    shared: Arc<Shared>,
    /// Producer rebuilds since the durable ts last moved.
    rebuilds: u32,
    durable_at_rebuild: i64,
}

impl Recovery {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, rebuilds: 0, durable_at_rebuild: 0 }
    }

    pub(super) async fn run(mut self) {
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
        *producer = Arc::new(make_producer(&shared.cfg, &shared.limit, Some(&shared.window))?);
        if let Err(e) = ensure_topic(&shared.cfg, shared.partitions).await {
            tracing::warn!(error = %e, "kafka sink: topic check failed");
        }
        for (op, m) in &resend {
            produce(&producer, &shared.cfg.topic, m, *op, f.commit_ts).await?;
        }
        Ok(())
    }
}
