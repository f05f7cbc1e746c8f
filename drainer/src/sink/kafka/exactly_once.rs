//! Exactly-once (`kafka-exactly-once`, ours): the transaction task, with a transactional producer.
//!
//! Each run of items that keep coming (none more than [`RUN_LINGER`] after the last, up to
//! `max_pending_bytes` of messages or [`RUN_MAX_TIME`]) is one Kafka transaction: `begin_transaction`, the run's messages
//! and the resolved-ts messages that are due, `commit_transaction`. The durable ts moves to the run's
//! last commit ts only once the commit has returned. A `read_committed` reader (the sink's own
//! checkpoint read at start, the binlog consumer) therefore sees whole runs or nothing: a transaction
//! left open by a killed drainer is aborted when the next producer with the same `transactional.id`
//! calls `init_transactions` (before the sink reads its checkpoint), and the new run starts after the
//! last committed item.
//!
//! Failures:
//! - **abortable** (a message not delivered in time, a broker restart): the transaction is aborted and
//!   the run's messages go again in a new one, at most [`MAX_ATTEMPTS`] times in a row;
//! - **fenced** (`ProducerFenced`, `InvalidProducerEpoch`, librdkafka's fatal `_FENCED`): a newer
//!   producer with the same `transactional.id` started (a new active drainer of the HA task); the sink
//!   stops with [`KafkaSinkError::Fenced`] and produces nothing more;
//! - anything else fatal: the sink stops with it.
//!
//! # Invariants
//! - Messages are produced only inside the open transaction; at most one transaction is open, and
//!   runs are committed in write order.
//! - The durable ts never passes a commit ts whose transaction has not committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::admin::{Producer, ensure_topic};
use super::error::kerr;
use super::pipeline::{Encoded, RESOLVED_INTERVAL, Shared, produce, resolved_messages, resolves};
use super::window::Msg;
use super::{KafkaConfig, KafkaSinkError};

/// Encoded items the transaction task may hold queued ahead of it (their bytes are in the budget).
pub(super) const QUEUE_ITEMS: usize = 256;

/// Items the transaction task takes from its queue at once.
const QUEUE_BATCH: usize = 64;

/// How long, at most, the transaction task adds items to one transaction before committing it.
pub(super) const RUN_MAX_TIME: Duration = Duration::from_millis(200);

/// How long an open transaction waits for the next item before it commits.
pub(super) const RUN_LINGER: Duration = Duration::from_millis(5);

/// Commits of one run tried in a row (each after an abort or a retriable error) before the sink fails.
pub(super) const MAX_ATTEMPTS: u32 = 4;

/// Whether `code` says a newer producer with our `transactional.id` took over.
fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(code, RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
}

/// The fencing error, if the producer has been fenced (librdkafka raises it as its fatal error).
fn fenced(producer: &Producer, cfg: &KafkaConfig, e: Option<&KafkaError>) -> Option<KafkaSinkError> {
    let reason = match producer.client().fatal_error() {
        Some((code, reason)) if is_fencing(code) => format!("{code}: {reason}"),
        _ => e.filter(|e| e.rdkafka_error_code().is_some_and(is_fencing))?.to_string(),
    };
    Some(KafkaSinkError::Fenced { transactional_id: cfg.transactional_id.clone().unwrap_or_default(), reason })
}

/// A transactional call's error as the sink reports it: fencing by name, a transaction timeout the
/// brokers refuse with the setting to change.
fn txn_error(producer: &Producer, cfg: &KafkaConfig, what: String, e: KafkaError) -> KafkaSinkError {
    if let Some(f) = fenced(producer, cfg, Some(&e)) {
        return f;
    }
    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidTransactionTimeout) {
        let what = format!(
            "{what}: transaction.timeout.ms {} is over the brokers' transaction.max.timeout.ms",
            cfg.transaction_timeout.as_millis()
        );
        return kerr(what)(e);
    }
    kerr(what)(e)
}

/// Runs a blocking producer call off the runtime's threads.
async fn blocking<T: Send + 'static>(producer: &Arc<Producer>, f: impl FnOnce(&Producer) -> T + Send + 'static) -> T {
    let p = producer.clone();
    match tokio::task::spawn_blocking(move || f(&p)).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// `init_transactions`: fences every older producer with our `transactional.id` and aborts the
/// transaction it left open (waits for it to be settled). Called before the checkpoint is read.
pub(super) async fn init(producer: &Arc<Producer>, cfg: &KafkaConfig) -> Result<(), KafkaSinkError> {
    let timeout = cfg.transaction_timeout.max(Duration::from_secs(10));
    let r = blocking(producer, move |p| p.init_transactions(timeout)).await;
    r.map_err(|e| txn_error(producer, cfg, "initializing transactions".into(), e))?;
    tracing::info!(transactional_id = cfg.transactional_id.as_deref().unwrap_or_default(), "kafka sink: exactly-once producer ready");
    Ok(())
}

/// One transaction's worth of items: the messages produced in it, kept to be sent again after an
/// abort, and their share of the budget, released when the run ends.
#[derive(Default)]
struct Run {
    msgs: Vec<Msg>,
    bytes: usize,
    budget: Vec<OwnedSemaphorePermit>,
    /// The highest commit ts of the run's items (0: none).
    last_ts: i64,
    open: bool,
}

impl Run {
    /// Produces `msgs` inside the run's transaction (begun on the first message).
    async fn send(&mut self, shared: &Shared, producer: &Arc<Producer>, msgs: Vec<Msg>, ts: i64) -> Result<(), KafkaSinkError> {
        if msgs.is_empty() {
            return Ok(());
        }
        if !self.open {
            producer.begin_transaction().map_err(|e| txn_error(producer, &shared.cfg, "beginning a transaction".into(), e))?;
            self.open = true;
        }
        for m in &msgs {
            if let Err(e) = produce(producer, &shared.cfg.topic, m, 0, ts).await {
                return Err(fenced(producer, &shared.cfg, None).unwrap_or(e));
            }
        }
        self.bytes += msgs.iter().map(|m| m.payload.len()).sum::<usize>();
        self.msgs.extend(msgs);
        Ok(())
    }

    /// Commits the run's transaction; after an abortable error, aborts it and sends the run again in a
    /// new one.
    async fn commit(&mut self, shared: &Shared, producer: &Arc<Producer>) -> Result<(), KafkaSinkError> {
        if !self.open {
            return Ok(());
        }
        let cfg = &shared.cfg;
        let timeout = cfg.transaction_timeout.max(Duration::from_secs(10));
        let mut attempt = 1;
        loop {
            let e = match blocking(producer, move |p| p.commit_transaction(timeout)).await {
                Ok(()) => {
                    self.open = false;
                    return Ok(());
                }
                Err(e) => e,
            };
            if let Some(f) = fenced(producer, cfg, Some(&e)) {
                return Err(f);
            }
            let (abort, retry) = match &e {
                KafkaError::Transaction(t) => (t.txn_requires_abort(), t.is_retriable()),
                KafkaError::Flush(_) => (false, true),
                _ => (false, false),
            };
            if !(abort || retry) {
                return Err(txn_error(producer, cfg, format!("committing the transaction up to commit ts {}", self.last_ts), e));
            }
            if attempt >= MAX_ATTEMPTS {
                return Err(KafkaSinkError::Delivery { commit_ts: self.last_ts, topic: cfg.topic.clone(), partition: -1, reason: e.to_string() });
            }
            attempt += 1;
            if !abort {
                tracing::warn!(error = %e, commit_ts = self.last_ts, attempt, "kafka sink: committing again");
                continue;
            }
            tracing::warn!(error = %e, commit_ts = self.last_ts, messages = self.msgs.len(), attempt, "kafka sink: transaction failed; aborting it and sending it again");
            blocking(producer, move |p| p.abort_transaction(timeout))
                .await
                .map_err(|e| txn_error(producer, cfg, "aborting a failed transaction".into(), e))?;
            if let Err(e) = ensure_topic(cfg, shared.partitions).await {
                tracing::warn!(error = %e, "kafka sink: topic check failed");
            }
            producer.begin_transaction().map_err(|e| txn_error(producer, cfg, "beginning a transaction".into(), e))?;
            for m in &self.msgs {
                if let Err(e) = produce(producer, &cfg.topic, m, 0, self.last_ts).await {
                    return Err(fenced(producer, cfg, None).unwrap_or(e));
                }
            }
        }
    }
}

/// Waits for queued items (moved into `batch`, at most [`QUEUE_BATCH`]) or, when a resolved ts is
/// `owed`, for its interval since `resolved_at` to pass (`Some(0)`); `None` once the sink was dropped.
async fn next_batch(queue: &mut mpsc::Receiver<Encoded>, batch: &mut Vec<Encoded>, owed: bool, resolved_at: Instant) -> Option<usize> {
    let n = tokio::select! {
        n = queue.recv_many(batch, QUEUE_BATCH) => n,
        _ = tokio::time::sleep_until((resolved_at + RESOLVED_INTERVAL).into()), if owed => 0,
    };
    (n > 0 || owed).then_some(n)
}

/// The transaction task: produces the queued items' messages in Kafka transactions (see the module
/// docs) and the resolved-ts messages.
pub(super) async fn produce_loop(shared: Arc<Shared>, topic_ts: HashMap<i32, i64>, mut queue: mpsc::Receiver<Encoded>) {
    let producer = shared.producer.lock().await.producer.clone();
    let mut batch = Vec::with_capacity(QUEUE_BATCH);
    let resolves = resolves(&shared);
    let max_bytes = shared.cfg.max_pending_bytes.max(1);
    let (mut written, mut resolved, mut resolved_at) = (0i64, 0i64, Instant::now());
    loop {
        let owed = resolves && written > resolved;
        let Some(n) = next_batch(&mut queue, &mut batch, owed, resolved_at).await else {
            return; // The sink was dropped.
        };
        let started = Instant::now();
        let mut run = Run::default();
        let r: Result<(), KafkaSinkError> = async {
            loop {
                for item in batch.drain(..) {
                    written = written.max(item.commit_ts);
                    run.last_ts = run.last_ts.max(item.commit_ts);
                    run.budget.extend(item.budget);
                    run.send(&shared, &producer, item.msgs, item.commit_ts).await?;
                }
                if run.bytes >= max_bytes || started.elapsed() >= RUN_MAX_TIME {
                    break;
                }
                // The transaction stays open while items keep coming: a commit costs round trips to
                // the coordinator, so committing whenever the queue is momentarily empty made runs
                // of a few items and capped throughput at ~8k transactions/s.
                let linger = RUN_LINGER.min(RUN_MAX_TIME.saturating_sub(started.elapsed()));
                match tokio::time::timeout(linger, queue.recv_many(&mut batch, QUEUE_BATCH)).await {
                    Ok(n) if n > 0 => {}
                    _ => break, // nothing within the linger, or the sink was dropped
                }
            }
            if resolves && written > resolved && (n == 0 || resolved_at.elapsed() >= RESOLVED_INTERVAL) {
                run.send(&shared, &producer, resolved_messages(&shared, &topic_ts, written), written).await?;
                (resolved, resolved_at) = (written, Instant::now());
            }
            run.commit(&shared, &producer).await
        }
        .await;
        if let Err(e) = r {
            shared.fail(e);
            return;
        }
        if run.last_ts > 0 {
            shared.window.advance_durable(run.last_ts); // after the commit
        }
    }
}
