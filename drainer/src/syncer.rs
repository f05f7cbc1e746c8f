//! The pipeline behind the merge: translate, hand to the sink, save the checkpoint.
//!
//! ```text
//! merge task ──Vec<Pulled> (bounded)──▶ translate task ──Vec<Arc<Item>> (cache-binlog-count)──▶ sink task
//! ```
//!
//! Every queue is bounded in batches and every batch in items, and the sink's `write` is awaited, so
//! memory stays bounded whatever the lag. The sink task saves the checkpoint from
//! [`Sink::durable_ts`] every 3 s, right after a DDL (after a flush), and at shutdown (after a flush,
//! `consistent = true`). The saved schema version is the one in force at the saved commit ts, so a
//! restart never applies a DDL whose binlog was not yet durable.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::checkpoint::{CheckpointError, Savepoint, Store};
use crate::merge::{Merger, Pause, Source};
use crate::metrics::{metrics, ts_ms};
use crate::pumps::Pulled;
use crate::sink::{Sink, SinkError};
use crate::translate::{TranslateError, Translator};
use crate::txn::{Body, Item};

/// Items per batch the merge hands to the translator.
pub const MERGE_BATCH: usize = 256;
/// How often the checkpoint is saved.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(3);

/// State shared with the HTTP API and the heartbeat.
#[derive(Debug)]
pub struct Progress {
    /// The saved checkpoint ts.
    pub checkpoint_ts: AtomicI64,
    /// Unix ms of the last DML/DDL handed to the sink.
    pub last_sync_ms: AtomicI64,
}

impl Progress {
    /// Progress starting at checkpoint `ts`.
    pub fn new(ts: i64) -> Self {
        Progress { checkpoint_ts: AtomicI64::new(ts), last_sync_ms: AtomicI64::new(pump::tso::now_ms() as i64) }
    }

    /// The checkpoint ts.
    pub fn checkpoint(&self) -> i64 {
        self.checkpoint_ts.load(Ordering::Acquire)
    }
}

/// Runs the merge: adds new sources as the collector finds them, emits batches of merged binlogs.
/// Ends when `out` is closed or `stop` fires.
pub async fn run_merge(
    mut merger: Merger<Pulled>,
    mut sources: mpsc::UnboundedReceiver<Source<Pulled>>,
    out: mpsc::Sender<Vec<Pulled>>,
    latest: Arc<AtomicI64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch: Vec<Pulled> = Vec::with_capacity(MERGE_BATCH);
    let disorder = &metrics().disorder_binlog_count;
    let mut counted = 0;
    loop {
        while let Ok(src) = sources.try_recv() {
            tracing::info!(pump = src.id(), "merge source added");
            merger.add_source(src);
        }
        let pause = merger.fill(&mut batch, MERGE_BATCH);
        if merger.disorder() > counted {
            tracing::error!(dropped = merger.disorder() - counted, last = merger.last_ts(), "binlogs below the merged commit ts dropped");
            disorder.inc_by(merger.disorder() - counted);
            counted = merger.disorder();
        }
        if !batch.is_empty() {
            latest.store(merger.last_ts(), Ordering::Release);
            let full = std::mem::replace(&mut batch, Vec::with_capacity(MERGE_BATCH));
            tokio::select! {
                r = out.send(full) => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
        match pause {
            Pause::Full => {}
            Pause::Wait(id) => tokio::select! {
                _ = merger.wait(&id) => {}
                src = sources.recv() => if let Some(src) = src { merger.add_source(src) },
                _ = stop.changed() => return,
            },
            Pause::Idle => tokio::select! {
                _ = merger.wait_any() => {}
                src = sources.recv() => if let Some(src) = src { merger.add_source(src) },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            },
        }
    }
}

/// Runs the translator over merged batches. Ends when the input ends; an error stops it.
pub async fn run_translate(
    mut tr: Translator,
    mut input: mpsc::Receiver<Vec<Pulled>>,
    out: mpsc::Sender<Vec<Arc<Item>>>,
) -> Result<(), TranslateError> {
    let q = metrics().queue_size.with_label_values(&["syncer_input"]);
    while let Some(batch) = input.recv().await {
        let mut items = Vec::with_capacity(batch.len());
        for p in &batch {
            items.push(Arc::new(tr.translate(&p.binlog).await?));
        }
        if out.send(items).await.is_err() {
            return Ok(());
        }
        q.set((out.max_capacity() - out.capacity()) as i64);
    }
    Ok(())
}

/// Why the sink task stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The checkpoint could not be saved.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// The checkpoint writer: tracks which schema version is in force at each commit ts.
#[derive(Debug)]
pub struct Saver {
    store: Store,
    saved: Savepoint,
    /// (commit ts, schema version from then on), for written items not yet saved.
    versions: VecDeque<(i64, i64)>,
    last_version: i64,
}

impl Saver {
    /// A saver whose last saved state is `saved`.
    pub fn new(store: Store, saved: Savepoint) -> Self {
        Saver { store, last_version: saved.schema_version, saved, versions: VecDeque::new() }
    }

    /// Notes an item handed to the sink.
    pub fn written(&mut self, item: &Item) {
        if item.schema_version > self.last_version {
            self.last_version = item.schema_version;
            self.versions.push_back((item.commit_ts, item.schema_version));
        }
    }

    /// Saves `durable` if it moved (or always, when `consistent`).
    pub async fn save(&mut self, durable: i64, consistent: bool) -> Result<bool, CheckpointError> {
        if durable < self.saved.commit_ts || (durable == self.saved.commit_ts && !consistent) {
            return Ok(false);
        }
        let mut version = self.saved.schema_version;
        while let Some(&(ts, v)) = self.versions.front() {
            if ts > durable {
                break;
            }
            version = v;
            self.versions.pop_front();
        }
        let sp = Savepoint { consistent, commit_ts: durable, schema_version: version };
        self.store.save(&sp).await?;
        self.saved = sp;
        let m = metrics();
        m.checkpoint_tso.set(ts_ms(durable));
        m.checkpoint_delay_seconds.observe((pump::tso::now_ms() as i64 - ts_ms(durable)).max(0) as f64 / 1000.0);
        m.event.with_label_values(&["savepoint"]).inc();
        Ok(true)
    }

    /// The last saved savepoint.
    pub fn saved(&self) -> Savepoint {
        self.saved
    }
}

fn sink_error() {
    metrics().error_count.with_label_values(&["sink"]).inc();
}

/// Feeds the sink and saves checkpoints until the input ends or `stop` fires; then flushes and saves a
/// consistent checkpoint.
pub async fn run_sink<S: Sink>(
    mut sink: S,
    mut input: mpsc::Receiver<Vec<Arc<Item>>>,
    mut saver: Saver,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Result<Savepoint, SyncError> {
    let mut tick = tokio::time::interval(SAVE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let exec = &metrics().execute_duration_time;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tick.tick() => {
                if saver.save(sink.durable_ts(), false).await? {
                    progress.checkpoint_ts.store(saver.saved().commit_ts, Ordering::Release);
                }
            }
            batch = input.recv() => {
                let Some(batch) = batch else { break };
                for item in batch {
                    let ddl = matches!(item.body, Body::Ddl(_));
                    if !matches!(item.body, Body::Empty) {
                        progress.last_sync_ms.store(pump::tso::now_ms() as i64, Ordering::Release);
                    }
                    saver.written(&item);
                    let t = Instant::now();
                    sink.write(item).await.inspect_err(|_| sink_error())?;
                    exec.observe(t.elapsed().as_secs_f64());
                    if ddl {
                        let ts = sink.flush().await.inspect_err(|_| sink_error())?;
                        saver.save(ts, false).await?;
                        progress.checkpoint_ts.store(saver.saved().commit_ts, Ordering::Release);
                    }
                }
                if input.is_empty() {
                    sink.idle().await.inspect_err(|_| sink_error())?;
                }
            }
        }
    }
    let ts = sink.flush().await.inspect_err(|_| sink_error())?;
    saver.save(ts.max(saver.saved().commit_ts), true).await?;
    progress.checkpoint_ts.store(saver.saved().commit_ts, Ordering::Release);
    Ok(saver.saved())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::FileCheckpoint;

    fn item(ts: i64, v: i64) -> Item {
        Item { start_ts: ts - 1, commit_ts: ts, schema_version: v, body: Body::Empty }
    }

    #[tokio::test]
    async fn saved_schema_version_is_the_one_in_force_at_the_saved_ts() {
        let dir = tempfile::tempdir().unwrap();
        let file = FileCheckpoint::new(dir.path().join("savepoint"));
        let mut s = Saver::new(Store::File(file.clone()), Savepoint { commit_ts: 5, schema_version: 1, consistent: false });
        s.written(&item(10, 1));
        s.written(&item(20, 3));
        s.written(&item(30, 4));
        assert!(s.save(25, false).await.unwrap());
        assert_eq!(file.load().unwrap().unwrap(), Savepoint { consistent: false, commit_ts: 25, schema_version: 3 });
        assert!(!s.save(25, false).await.unwrap());
        assert!(!s.save(20, false).await.unwrap());
        assert!(s.save(30, true).await.unwrap());
        assert_eq!(file.load().unwrap().unwrap(), Savepoint { consistent: true, commit_ts: 30, schema_version: 4 });
    }
}
