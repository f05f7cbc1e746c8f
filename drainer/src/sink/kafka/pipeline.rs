//! An item's messages ([`item_messages`], encoded by the writer), producing them into the ack
//! window ([`produce_item`], resolved-ts messages), and the resolver and recovery tasks (the last
//! resolved ts once items stop; a new producer after a failed delivery).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::admin::{Producer, ensure_topic, make_producer};
use super::config::MessageLimit;
use super::error::kerr;
use super::partition::{split, written_partitions};
use super::window::{Failure, Msg, Window};
use super::{CHUNK_HEADER, Format, KafkaConfig, KafkaSinkError, RESOLVED_HEADER, canal, translate};
use crate::proto::slave;
use crate::txn::{Body, Item, TableChanges};

/// How often, at most, resolved-ts messages are sent while items flow.
pub(super) const RESOLVED_INTERVAL: Duration = Duration::from_millis(1000);

/// One written item's messages, on their way to the producer.
#[derive(Debug)]
pub(super) struct Encoded {
    pub(super) commit_ts: i64,
    /// Empty when the item carries nothing to send (or every partition already holds it): it still
    /// passes through the window (or the transaction), so the durable ts reaches it in order.
    pub(super) msgs: Vec<Msg>,
    /// Its share of the unacked-bytes budget, held until its messages are acked (exactly-once: until
    /// its transaction commits).
    pub(super) budget: Option<OwnedSemaphorePermit>,
}

/// The producer and what is produced with it, behind [`Shared::producer`]'s lock.
pub(super) struct Producing {
    pub(super) producer: Arc<Producer>,
    /// The highest commit ts produced.
    written: i64,
    /// The last resolved ts sent, and when.
    resolved: i64,
    resolved_at: Instant,
}

impl Producing {
    pub(super) fn new(producer: Arc<Producer>) -> Self {
        Self { producer, written: 0, resolved: 0, resolved_at: Instant::now() }
    }
}

/// What the sink, its tasks (recovery, resolver; exactly-once: the transaction task) and the
/// producer's delivery callback share.
pub(super) struct Shared {
    pub(super) cfg: KafkaConfig,
    pub(super) limit: MessageLimit,
    pub(super) partitions: i32,
    /// The writer holds the lock while it produces an item's messages and pushes the item into the
    /// window, so a recovery that holds it sees every produced item in the window.
    pub(super) producer: tokio::sync::Mutex<Producing>,
    /// Produced items waiting for acks; publishes the durable ts (also woken, unchanged, when a task
    /// fails).
    pub(super) window: Arc<Window>,
    /// Unacked (or uncommitted) message bytes, queued ones included: the writer takes an item's share
    /// before queueing it. Closed when the sink stops, so a waiting writer wakes.
    pub(super) budget: Arc<Semaphore>,
    /// The error that stopped a task, until the sink returns it.
    pub(super) failure: std::sync::Mutex<Option<KafkaSinkError>>,
    pub(super) stopped: AtomicBool,
}

impl Shared {
    pub(super) fn fail(&self, e: KafkaSinkError) {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
        self.stopped.store(true, Ordering::Release);
        self.budget.close();
        self.window.durable().send_modify(|_| {});
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

/// Produces one item's messages and moves it into the ack window, then sends the resolved-ts
/// messages when they are due ([`RESOLVED_INTERVAL`]). The caller holds the producer lock.
pub(super) async fn produce_item(shared: &Shared, p: &mut Producing, topic_ts: &HashMap<i32, i64>, item: Encoded) -> Result<(), KafkaSinkError> {
    let ts = item.commit_ts;
    produce_into_window(shared, &p.producer, item).await?;
    p.written = p.written.max(ts);
    if resolves(shared) && p.resolved_at.elapsed() >= RESOLVED_INTERVAL {
        send_resolved(shared, p, topic_ts).await?;
    }
    Ok(())
}

/// The resolver task (with several partitions or canal-json): once items stop, sends the resolved ts
/// of the last one within [`RESOLVED_INTERVAL`] of the previous resolved ts (while items flow,
/// [`produce_item`] sends them).
pub(super) async fn resolve_loop(shared: Arc<Shared>, topic_ts: HashMap<i32, i64>) {
    loop {
        let wait = {
            let p = shared.producer.lock().await;
            if p.written > p.resolved { (p.resolved_at + RESOLVED_INTERVAL).saturating_duration_since(Instant::now()) } else { RESOLVED_INTERVAL }
        };
        tokio::time::sleep(wait).await;
        let mut p = shared.producer.lock().await;
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        if p.resolved_at.elapsed() >= RESOLVED_INTERVAL
            && let Err(e) = send_resolved(&shared, &mut p, &topic_ts).await
        {
            shared.fail(e);
            return;
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

/// Sends the resolved ts (the last produced commit ts) to every partition that does not already
/// hold a later ts, unless it was sent already.
async fn send_resolved(shared: &Shared, p: &mut Producing, topic_ts: &HashMap<i32, i64>) -> Result<(), KafkaSinkError> {
    let ts = p.written;
    if ts <= p.resolved {
        return Ok(());
    }
    let msgs = resolved_messages(shared, topic_ts, ts);
    produce_into_window(shared, &p.producer, Encoded { commit_ts: ts, msgs, budget: None }).await?;
    (p.resolved, p.resolved_at) = (ts, Instant::now());
    Ok(())
}

/// Produces `item`'s messages with their delivery opaques and moves it into the ack window.
async fn produce_into_window(shared: &Shared, producer: &Producer, item: Encoded) -> Result<(), KafkaSinkError> {
    let opaques = shared.window.reserve(item.msgs.len());
    for (m, op) in item.msgs.iter().zip(opaques) {
        produce(producer, &shared.cfg.topic, m, op, item.commit_ts).await?;
    }
    shared.window.push(item.commit_ts, item.msgs, item.budget);
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

/// The writer's encoders, with their per-table caches.
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
        // Holding the producer stops the writer between items.
        let mut p = shared.producer.lock().await;
        let resend = shared.window.new_epoch();
        p.producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        p.producer = Arc::new(make_producer(&shared.cfg, &shared.limit, Some(&shared.window))?);
        if let Err(e) = ensure_topic(&shared.cfg, shared.partitions).await {
            tracing::warn!(error = %e, "kafka sink: topic check failed");
        }
        for (op, m) in &resend {
            produce(&p.producer, &shared.cfg.topic, m, *op, f.commit_ts).await?;
        }
        Ok(())
    }
}
