//! The running pump: its store, its registration in etcd and its state machine, and the background
//! loops (heartbeat, fake binlogs, GC, disk space).
//!
//! # States
//! `online` at start. `pause` (HTTP, SIGINT, SIGTERM) → `pausing` → `paused`, then the process exits.
//! `close` (HTTP) → `closing`, wait until every non-offline drainer's `maxCommitTS` reaches our max
//! commit ts (writing a fake binlog every second so that their merges move on) → `offline`, exit.
//! An action is accepted only while `online`.
//!
//! **Invariant:** etcd writes of our status are serialized (`publish_lock`); once the final state
//! (`paused`/`offline`) is written, no heartbeat writes again.
//! **Invariant:** a Prewrite is stored only while `online`; Commits, Rollbacks and fakes are stored in
//! any state until the process exits, so a transaction whose P was accepted can always finish.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use super::store::{Kind, Record, Store};
use tokio::sync::watch;

use super::binlogs::{self, WriteKind};
use super::config::Config;
use super::metrics::Metrics;
use crate::node::{NodeKind, NodeState, NodeStatus, Registry};
use crate::pd::{PdClient, PdError};
use crate::tso;

/// What a `pause`/`close` request or a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// → pausing → paused.
    Pause,
    /// → closing → offline.
    Close,
}

/// Why a write was refused; the text is what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Wrong cluster id.
    #[error("cluster ID are mismatch, {got} vs {want}")]
    ClusterId {
        /// From the request.
        got: u64,
        /// Ours.
        want: u64,
    },
    /// The payload is not a `binlog.Binlog`.
    #[error("unmarshal binlog payload: {0}")]
    Decode(#[from] binlogs::HeaderError),
    /// A Prewrite (or probe) while not online.
    #[error("no online: {0}")]
    NotOnline(NodeState),
    /// The store refused (e.g. `no available space, ...` below `stop-write-at-available-space`) or failed.
    #[error("{0}")]
    Store(String),
}

/// upstream's `maxTxnTimeoutSecond`: a Prewrite pending longer than this is warned about (never dropped).
pub const MAX_TXN_TIMEOUT_SECS: i64 = 600;

/// A Prewrite waiting for its Commit (`/status` `PendingPrewrites`, ours).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingPrewrite {
    /// Its start_ts.
    #[serde(rename = "startTS")]
    pub start_ts: i64,
    /// Seconds since its start_ts's physical time.
    #[serde(rename = "ageSeconds")]
    pub age_seconds: i64,
}

/// The pump's shared state (one per process, behind an `Arc`).
pub struct Core {
    /// The validated config.
    pub cfg: Config,
    /// Our node id.
    pub node_id: String,
    /// The cluster id every request must carry.
    pub cluster_id: u64,
    /// The etcd registry.
    pub registry: Registry,
    /// Where timestamps come from.
    pub pd: PdClient,
    /// The binlog store.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
    state: Mutex<NodeState>,
    publish_lock: tokio::sync::Mutex<bool>,
    last_tso: Mutex<(u64, Instant)>,
    wrote: AtomicBool,
    gc_running: AtomicBool,
    pending_warned: Mutex<Option<Instant>>,
    seen_write_errors: AtomicU64,
    stop_tx: watch::Sender<Option<Stop>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Core({})", self.node_id)
    }
}

impl Core {
    /// Assembles the core; `first_ts` is a fresh ts from the TSO.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Config,
        node_id: String,
        registry: Registry,
        pd: PdClient,
        store: Store,
        metrics: Metrics,
        first_ts: u64,
    ) -> (Arc<Self>, watch::Receiver<Option<Stop>>) {
        let (stop_tx, stop_rx) = watch::channel(None);
        let core = Core {
            cluster_id: pd.cluster_id(),
            cfg,
            node_id,
            registry,
            pd,
            store,
            metrics,
            state: Mutex::new(NodeState::Online),
            publish_lock: tokio::sync::Mutex::new(false),
            last_tso: Mutex::new((first_ts, Instant::now())),
            wrote: AtomicBool::new(false),
            gc_running: AtomicBool::new(false),
            pending_warned: Mutex::new(None),
            seen_write_errors: AtomicU64::new(0),
            stop_tx,
        };
        (Arc::new(core), stop_rx)
    }

    /// The current state.
    pub fn state(&self) -> NodeState {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state_mem(&self, s: NodeState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// An approximate current ts: the last TSO ts plus the wall time since (upstream's `updateTS`).
    pub fn approx_ts(&self) -> u64 {
        let (ts, at) = *self.last_tso.lock().unwrap_or_else(|e| e.into_inner());
        tso::advance(ts, at.elapsed())
    }

    /// A fresh ts from the TSO (also refreshes the base of [`Core::approx_ts`]).
    pub async fn fresh_ts(&self) -> Result<u64, PdError> {
        let ts = self.pd.get_ts().await?;
        *self.last_tso.lock().unwrap_or_else(|e| e.into_inner()) = (ts, Instant::now());
        Ok(ts)
    }

    /// Our status as registered in etcd.
    pub fn status(&self) -> NodeStatus {
        let mut st = NodeStatus::new(&self.node_id, &self.cfg.advertise_addr, self.state());
        st.max_commit_ts = self.store.max_commit_ts();
        st.update_ts = self.approx_ts() as i64;
        st
    }

    /// Writes our status to etcd (create or update). Returns false if the final state was already
    /// written and this write was skipped.
    pub async fn publish(&self) -> Result<bool, crate::node::RegistryError> {
        let done = self.publish_lock.lock().await;
        if *done {
            return Ok(false);
        }
        let st = self.status();
        self.metrics.max_commit_ts.set(tso::physical_ms(st.max_commit_ts.max(0) as u64) as i64);
        self.registry.update_node(NodeKind::Pump, &st).await?;
        Ok(true)
    }

    /// Records `state` and writes it to etcd as the last write of this process.
    pub async fn publish_final(&self, state: NodeState) -> Result<(), crate::node::RegistryError> {
        let mut done = self.publish_lock.lock().await;
        self.set_state_mem(state);
        let st = self.status();
        self.registry.update_node(NodeKind::Pump, &st).await?;
        *done = true;
        Ok(())
    }

    /// Moves to `state` and writes it to etcd.
    pub async fn set_state(&self, state: NodeState) -> Result<(), crate::node::RegistryError> {
        self.set_state_mem(state);
        self.publish().await.map(|_| ())
    }

    /// Asks the pump to pause or close. Accepted only while online; the state moves to pausing or
    /// closing at once, the rest happens in [`super::run`].
    pub fn request_stop(&self, stop: Stop) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *st != NodeState::Online {
            return Err(format!("node {} is {}, not online; only an online pump can be paused or closed", self.node_id, *st));
        }
        *st = match stop {
            Stop::Pause => NodeState::Pausing,
            Stop::Close => NodeState::Closing,
        };
        drop(st);
        self.stop_tx.send_replace(Some(stop));
        Ok(())
    }

    /// The WriteBinlog path: checks, then a durable append.
    pub async fn write_binlog(&self, cluster_id: u64, payload: Bytes) -> Result<(), WriteError> {
        if cluster_id != self.cluster_id {
            return Err(WriteError::ClusterId { got: cluster_id, want: self.cluster_id });
        }
        let b = binlogs::classify(&payload)?;
        if b.is_prewrite_type {
            let st = self.state();
            if st != NodeState::Online {
                return Err(WriteError::NotOnline(st));
            }
        }
        let kind = match b.kind {
            WriteKind::Probe => return Ok(()),
            WriteKind::Prewrite => Kind::Prewrite,
            WriteKind::Commit => Kind::Commit,
            WriteKind::Rollback => Kind::Rollback,
            WriteKind::Fake => Kind::Fake,
        };
        self.append(kind, b.start_ts, b.commit_ts, payload).await?;
        if kind != Kind::Fake {
            self.wrote.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn append(&self, kind: Kind, start_ts: i64, commit_ts: i64, payload: Bytes) -> Result<(), WriteError> {
        let started = Instant::now();
        let size = payload.len();
        let res = self.store.append(Record { kind, start_ts, commit_ts, payload }).await;
        let took = started.elapsed();
        let m = self.metrics.write_path();
        m.duration.observe(took.as_secs_f64());
        m.size.observe(size as f64);
        if took.as_secs_f64() > self.cfg.storage.slow_write_threshold {
            tracing::warn!(?took, size, start_ts, commit_ts, "slow write");
        }
        res.map_err(|e| {
            self.metrics.storage_errors.with_label_values(&["write_binlog"]).inc();
            WriteError::Store(e.to_string())
        })
    }

    /// Writes a fake binlog with a fresh ts and returns the ts.
    pub async fn write_fake(&self) -> Result<i64, WriteError> {
        let ts = self.fresh_ts().await.map_err(|e| WriteError::Store(format!("getting a ts: {e}")))? as i64;
        self.append(Kind::Fake, ts, ts, Bytes::from(binlogs::fake_binlog(ts))).await?;
        Ok(ts)
    }

    /// Every `gen-binlog-interval`: a fake binlog if nothing was written since the last tick.
    pub async fn fake_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.cfg.gen_binlog_interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if self.wrote.swap(false, Ordering::Relaxed) {
                continue;
            }
            if let Err(e) = self.write_fake().await {
                tracing::warn!(error = %e, "writing a fake binlog");
            }
        }
    }

    /// Every `heartbeat-interval`: our status to etcd.
    pub async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.cfg.heartbeat_interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.publish().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "heartbeat to etcd failed"),
            }
        }
    }

    /// Every Prewrite waiting for its Commit, oldest start_ts first, with its age from start_ts.
    pub fn pending_prewrites(&self) -> Vec<PendingPrewrite> {
        let now = tso::now_ms() as i64;
        self.store
            .pending()
            .into_iter()
            .map(|(start_ts, _)| PendingPrewrite {
                start_ts,
                age_seconds: (now - tso::physical_ms(start_ts.max(0) as u64) as i64).max(0) / 1000,
            })
            .collect()
    }

    /// Every second: storage gauges and counters from the store and the file system.
    pub async fn metrics_loop(self: Arc<Self>) {
        loop {
            self.refresh_metrics();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Copies the store's stats and the data dir's file system usage into the metrics.
    pub fn refresh_metrics(&self) {
        let st = self.store.stats();
        let m = &self.metrics;
        m.max_commit_ts.set(tso::physical_ms(st.max_commit_ts.max(0) as u64) as i64);
        m.done_gc_ts.set(tso::physical_ms(st.gc_ts.max(0) as u64) as i64);
        let pending = self.pending_prewrites();
        m.pending_prewrites.set(pending.len() as i64);
        let oldest = pending.first().map_or(0, |p| p.age_seconds);
        m.oldest_pending_prewrite.set(oldest);
        if oldest > MAX_TXN_TIMEOUT_SECS {
            let mut last = self.pending_warned.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                *last = Some(Instant::now());
                let p = &pending[0];
                tracing::warn!(
                    start_ts = p.start_ts,
                    age_seconds = p.age_seconds,
                    pending = pending.len(),
                    "a prewrite has waited longer than max-txn-timeout for its commit; replication through this \
                     pump holds until it is settled: check the transaction in TiDB, then run binlogctl -cmd \
                     settle-prewrite -node-id <this pump> -start-ts {} with -commit-ts N or -rollback",
                    p.start_ts
                );
            }
        }
        let seen = self.seen_write_errors.swap(st.write_errors, Ordering::Relaxed);
        m.storage_errors.with_label_values(&["write_binlog_batch"]).inc_by(st.write_errors.saturating_sub(seen));
        match rustix::fs::statvfs(&self.cfg.data_dir) {
            Ok(s) => {
                let available = s.f_bavail.saturating_mul(s.f_frsize);
                let capacity = s.f_blocks.saturating_mul(s.f_frsize);
                m.storage_size.with_label_values(&["available"]).set(available as i64);
                m.storage_size.with_label_values(&["capacity"]).set(capacity as i64);
            }
            Err(e) => tracing::warn!(error = %e, dir = %self.cfg.data_dir.display(), "statvfs of data-dir"),
        }
    }

    /// The GC ts for now: `now - gc`, as upstream since v3.0.1; with `gc-waits-for-drainers` (ours) never
    /// above what every non-offline drainer has consumed. Returns `None` when there is nothing to
    /// collect. (The store keeps a further `max_txn_timeout`, 10 minutes, below it, as upstream.)
    pub async fn gc_target(&self) -> Option<i64> {
        let keep = self.cfg.gc.0;
        let by_time = tso::compose(tso::now_ms().saturating_sub(keep.as_millis() as u64), 0) as i64;
        let drainers = match self.registry.list(NodeKind::Drainer).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "GC: listing drainers failed; skipping this round");
                return None;
            }
        };
        let live: Vec<&NodeStatus> = drainers.iter().filter(|d| d.state != NodeState::Offline).collect();
        let behind: Vec<&&NodeStatus> = live.iter().filter(|d| d.max_commit_ts < by_time).collect();
        self.metrics.drainers_behind_gc.set(behind.len() as i64);
        let waits = self.cfg.gc_waits_for_drainers;
        for d in &behind {
            let behind_ms = tso::now_ms().saturating_sub(tso::physical_ms(d.max_commit_ts.max(0) as u64));
            let (behind_hours, gc_hours) =
                (format!("{:.1}", behind_ms as f64 / 3_600_000.0), format!("{:.1}", keep.as_secs_f64() / 3600.0));
            if waits {
                // Data older than `gc` stays on disk for this drainer: say who, so an operator can tell a
                // lagging drainer from a dead one.
                tracing::warn!(
                    drainer = %d.node_id, state = %d.state, max_commit_ts = d.max_commit_ts, behind_hours, gc_hours,
                    "GC held back (gc-waits-for-drainers): a drainer that is not offline has not consumed binlogs \
                     older than gc; if it is gone for good, set it offline with binlogctl so the pump can free disk space"
                );
            } else {
                tracing::warn!(
                    drainer = %d.node_id, state = %d.state, max_commit_ts = d.max_commit_ts, behind_hours, gc_hours,
                    "a drainer that is not offline is behind the GC ts: binlogs older than gc are deleted before it \
                     consumed them, so its downstream will miss them; set gc-waits-for-drainers = true to keep \
                     them (the disk then grows), or set the drainer offline with binlogctl if it is gone"
                );
            }
        }
        let consumed = live.iter().map(|d| d.max_commit_ts).min();
        let target = if waits { consumed.map_or(by_time, |c| c.min(by_time)) } else { by_time };
        let (done, max) = (self.store.gc_ts(), self.store.max_commit_ts());
        tracing::debug!(target, by_time, ?consumed, waits, done, max, "GC round");
        (target > done && max > target).then_some(target)
    }

    /// One GC round; false if a round is already running.
    pub async fn gc_once(self: &Arc<Self>) -> bool {
        if self.gc_running.swap(true, Ordering::AcqRel) {
            return false;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Some(ts) = me.gc_target().await {
                me.metrics.gc_ts.set(tso::physical_ms(ts as u64) as i64);
                tracing::info!(gc_ts = ts, "GC");
                let store = me.store.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || store.gc(ts)).await {
                    tracing::warn!(error = %e, "GC task failed");
                }
            }
            me.gc_running.store(false, Ordering::Release);
        });
        true
    }

    /// Every hour: a GC round.
    pub async fn gc_loop(self: Arc<Self>) {
        loop {
            self.gc_once().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }

    /// Pausing: waits until every Prewrite accepted before the pause has its Commit or Rollback (a
    /// fake binlog appended now is released only then), at most `limit`. Without this a paused pump
    /// could hold a transaction's P while TiDB's C is still on its way, and a drainer that goes on
    /// without the paused pump would pass that transaction's commit ts before it arrives. Returns
    /// whether everything settled.
    pub async fn wait_prewrites_settled(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let target = loop {
            match self.write_fake().await {
                Ok(ts) => break ts,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "pausing: writing a fake binlog failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pausing: could not write a fake binlog; pausing without waiting");
                    return false;
                }
            }
        };
        while self.store.max_commit_ts() < target {
            if tokio::time::Instant::now() >= deadline {
                let pending = self.store.stats().pending_prewrites;
                tracing::warn!(
                    pending,
                    ?limit,
                    "pausing with prewrites whose commit has not arrived; drainers will get those transactions only \
                     after this pump is back online"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Closing: waits until every non-offline drainer has consumed everything we stored, writing a
    /// fake binlog every second so that their merges (and checkpoints) move past our last binlog.
    pub async fn wait_safe_to_offline(&self) {
        let target = loop {
            match self.write_fake().await {
                Ok(ts) => break ts.max(self.store.max_commit_ts()),
                Err(e) => {
                    tracing::warn!(error = %e, "closing: writing a fake binlog failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        while self.store.max_commit_ts() < target {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(target, "closing: waiting for every non-offline drainer to reach our max commit ts");
        loop {
            match self.registry.list(NodeKind::Drainer).await {
                Ok(drainers) => {
                    let behind: Vec<_> = drainers
                        .iter()
                        .filter(|d| d.state != NodeState::Offline && d.max_commit_ts < target)
                        .map(|d| format!("{} ({}, at {})", d.node_id, d.state, d.max_commit_ts))
                        .collect();
                    if behind.is_empty() {
                        return;
                    }
                    tracing::info!(?behind, target, "closing: drainers still behind");
                }
                Err(e) => tracing::warn!(error = %e, "closing: listing drainers failed"),
            }
            if let Err(e) = self.write_fake().await {
                tracing::warn!(error = %e, "closing: writing a fake binlog failed");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
