//! Pump discovery and one reader per pump.
//!
//! The [`Collector`] lists `/tidb-binlog/v1/pumps/*` every `detect-interval` seconds, on every etcd
//! watch event and on `Cistern.Notify`. A pump it has not seen and that is not `offline` gets a reader
//! starting at the merge's latest commit ts, and a new merge source. Known pumps get their new status.
//!
//! A reader ([`run_reader`]) calls `PullBinlogs(clusterID, startFrom.offset = last)` and pushes the
//! binlogs in batches (whatever arrived together, up to [`MAX_BATCH`] items) to its merge source. On an
//! error it waits (1 s, doubling up to 5 s) and pulls again from the last commit ts received. By etcd
//! state: `online`, `pausing`, `closing` → pull; `paused` → pull only while behind the pump's registered
//! `maxCommitTS`, and once caught up let the merge skip it up to the TSO the collector took before the
//! scan that saw it paused (see [`crate::merge`]); `offline` → the
//! reader ends, which removes the source once the merge has drained it. A payload that is not a binlog is
//! fatal, as upstream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use prost::Message;
use pump::node::{NodeKind, NodeState, NodeStatus, Registry};
use pump::proto::pump_client::PumpClient;
use pump::proto::{Binlog, Pos, PullBinlogReq};
use tokio::sync::{Notify, mpsc, watch};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::merge::{self, Ordered, Source, SourceSender};
use crate::metrics::{metrics, ts_ms};

/// Largest batch a reader hands to the merge at once.
pub const MAX_BATCH: usize = 512;
/// Batches a source may queue before its reader waits.
pub const SOURCE_QUEUE: usize = 8;
/// Stop filling a batch beyond this many payload bytes.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// One binlog pulled from a pump.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The decoded binlog (the C-binlog with the P-binlog's fields copied in).
    pub binlog: Binlog,
    /// Its payload size.
    pub size: usize,
}

impl Pulled {
    /// Whether this is a pump's fake binlog (start ts = commit ts).
    pub fn is_fake(&self) -> bool {
        self.binlog.start_ts() == self.binlog.commit_ts()
    }
}

impl Ordered for Pulled {
    fn commit_ts(&self) -> i64 {
        self.binlog.commit_ts()
    }
}

/// A reader failure that stops the drainer.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// A payload is not a `binlog.Binlog`.
    #[error("pump {pump}: payload after commit ts {after} is not a binlog: {source}")]
    Unmarshal {
        /// Pump node id.
        pump: String,
        /// The last commit ts received before it.
        after: i64,
        /// The protobuf error.
        source: prost::DecodeError,
    },
}

/// The latest commit ts received from each pump (`/status` `PumpPos`).
#[derive(Debug, Default)]
pub struct PumpPositions(Mutex<HashMap<String, i64>>);

impl PumpPositions {
    /// Records the latest ts of `pump`.
    pub fn set(&self, pump: &str, ts: i64) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(pump.to_owned(), ts);
        }
    }

    /// A copy of every position.
    pub fn snapshot(&self) -> HashMap<String, i64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn remove(&self, pump: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(pump);
        }
    }
}

/// What a reader knows of its pump: the etcd status, and for a status read by a full scan, a TSO taken
/// before that read (0 for statuses from watch events): the bound up to which a paused pump may be
/// skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct PumpView {
    /// The pump's status in etcd.
    pub status: NodeStatus,
    /// A TSO taken before the read that returned `status` (0 if unknown).
    pub safe_ts: i64,
    /// The pump is `paused` with a pause record equal to its registered max commit ts: it paused
    /// holding no open Prewrite, so nothing it holds can commit above that later
    /// (`Registry::set_pause_record`). Only then may the merge go on without it.
    pub clean_pause: bool,
}

/// How readers connect.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// The cluster id sent with every pull.
    pub cluster_id: u64,
    /// TLS to pumps (from `[security]`), if on.
    pub tls: Option<ClientTlsConfig>,
    /// `compressor = "gzip"`: ask pumps to gzip PullBinlogs responses.
    pub gzip: bool,
}

async fn connect(host: &str, cfg: &ReaderConfig) -> Result<PumpClient<Channel>, tonic::transport::Error> {
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let bare = host.trim_start_matches("http://").trim_start_matches("https://");
    let mut ep = Endpoint::from_shared(format!("{scheme}://{bare}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    if let Some(tls) = &cfg.tls {
        ep = ep.tls_config(tls.clone())?;
    }
    let ch = ep.connect().await?;
    let client = PumpClient::new(ch).max_decoding_message_size(usize::MAX);
    Ok(if cfg.gzip { client.accept_compressed(tonic::codec::CompressionEncoding::Gzip) } else { client })
}

enum SessionEnd {
    /// The status changed in a way that needs re-evaluation.
    StatusChanged,
    /// The stream broke or could not start.
    Error(String),
    /// The merge is gone.
    MergeClosed,
    /// Fatal.
    Fatal(ReaderError),
}

/// Pulls from one pump until it goes offline or the merge stops. `status` carries the pump's etcd
/// status; `last` starts at the commit ts to pull after.
pub async fn run_reader(
    mut status: watch::Receiver<PumpView>,
    mut last: i64,
    out: SourceSender<Pulled>,
    cfg: ReaderConfig,
    positions: Arc<PumpPositions>,
) -> Result<(), ReaderError> {
    let id = status.borrow().status.node_id.clone();
    let mut backoff = Duration::from_secs(1);
    loop {
        let view = status.borrow_and_update().clone();
        let st = view.status;
        match st.state {
            NodeState::Offline => {
                tracing::info!(pump = %id, last, "pump is offline; its reader stops");
                return Ok(());
            }
            NodeState::Paused if last >= st.max_commit_ts && view.clean_pause => {
                // A view from a watch event carries no bound: keep the last one until the next scan.
                if view.safe_ts > 0 {
                    out.set_exclude_upto(Some(view.safe_ts));
                }
                if status.changed().await.is_err() {
                    return Ok(());
                }
                continue;
            }
            // Paused without a pause record (open Prewrites at pause, or set paused by hand): it is
            // waited for as upstream does, like a pump that is online.
            _ => out.set_exclude_upto(None),
        }
        match session(&st, &mut status, &mut last, &out, &cfg, &positions).await {
            SessionEnd::StatusChanged => backoff = Duration::from_secs(1),
            SessionEnd::MergeClosed => return Ok(()),
            SessionEnd::Fatal(e) => return Err(e),
            SessionEnd::Error(e) => {
                tracing::warn!(pump = %id, host = %st.host, last, error = %e, "pulling binlogs failed; retrying");
                crate::metrics::metrics().error_count.with_label_values(&["pull_binlog"]).inc();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    r = status.changed() => if r.is_err() { return Ok(()) },
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn session(
    st: &NodeStatus,
    status: &mut watch::Receiver<PumpView>,
    last: &mut i64,
    out: &SourceSender<Pulled>,
    cfg: &ReaderConfig,
    positions: &PumpPositions,
) -> SessionEnd {
    let id = st.node_id.as_str();
    let mut client = match connect(&st.host, cfg).await {
        Ok(c) => c,
        Err(e) => return SessionEnd::Error(format!("connect: {e}")),
    };
    let req = PullBinlogReq { cluster_id: cfg.cluster_id, start_from: Some(Pos { suffix: 0, offset: *last }) };
    let mut stream = match client.pull_binlogs(req).await {
        Ok(r) => r.into_inner(),
        Err(e) => return SessionEnd::Error(format!("PullBinlogs: {e}")),
    };
    let m = metrics();
    let size_h = m.read_binlog_size.with_label_values(&[id]);
    let reach_h = m.binlog_reach_duration_time.with_label_values(&[id]);
    let pos_g = m.pump_position.with_label_values(&[id]);
    let paused_target = (st.state == NodeState::Paused).then_some(st.max_commit_ts);
    loop {
        let first = tokio::select! {
            msg = stream.next() => msg,
            r = status.changed() => {
                if r.is_err() { return SessionEnd::MergeClosed; }
                let new = status.borrow().status.clone();
                // Keep the stream unless the state changed (a heartbeat only moves maxCommitTS/updateTS).
                if new.state != st.state || new.host != st.host || paused_target.is_some() {
                    return SessionEnd::StatusChanged;
                }
                continue;
            }
        };
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut next = first;
        loop {
            match next {
                None => {
                    if !batch.is_empty() && out.send(batch).await.is_err() {
                        return SessionEnd::MergeClosed;
                    }
                    return SessionEnd::Error("stream ended".into());
                }
                Some(Err(e)) => {
                    if !batch.is_empty() && out.send(batch).await.is_err() {
                        return SessionEnd::MergeClosed;
                    }
                    return SessionEnd::Error(format!("receive: {e}"));
                }
                Some(Ok(resp)) => {
                    let payload = resp.entity.map(|e| e.payload).unwrap_or_default();
                    let binlog = match Binlog::decode(payload.as_slice()) {
                        Ok(b) => b,
                        Err(source) => {
                            metrics().error_count.with_label_values(&["unmarshal_binlog"]).inc();
                            return SessionEnd::Fatal(ReaderError::Unmarshal { pump: id.into(), after: *last, source });
                        }
                    };
                    let ts = binlog.commit_ts();
                    if ts <= *last {
                        tracing::warn!(pump = %id, ts, last = *last, "pump sent a binlog out of order");
                    }
                    *last = (*last).max(ts);
                    size_h.observe(payload.len() as f64);
                    bytes += payload.len();
                    batch.push(Pulled { binlog, size: payload.len() });
                }
            }
            if batch.len() >= MAX_BATCH || bytes >= MAX_BATCH_BYTES {
                break;
            }
            match stream.next().now_or_never() {
                Some(n) => next = n,
                None => break,
            }
        }
        let now_ms = pump::tso::now_ms() as i64;
        reach_h.observe((now_ms - ts_ms(*last)).max(0) as f64 / 1000.0);
        pos_g.set(ts_ms(*last));
        positions.set(id, *last);
        if out.send(batch).await.is_err() {
            return SessionEnd::MergeClosed;
        }
        if let Some(target) = paused_target
            && *last >= target
        {
            return SessionEnd::StatusChanged;
        }
    }
}

/// Finds pumps in etcd and runs their readers, feeding new sources to the merge.
pub struct Collector {
    registry: Registry,
    cfg: ReaderConfig,
    detect_interval: Duration,
    /// New merge sources go here (the merge task adds them).
    sources: mpsc::UnboundedSender<Source<Pulled>>,
    merge_wake: Arc<Notify>,
    /// The merge's latest emitted commit ts: where a new pump's reader starts.
    latest: Arc<AtomicI64>,
    positions: Arc<PumpPositions>,
    /// `Cistern.Notify` pokes this.
    notify: Arc<Notify>,
    readers: HashMap<String, watch::Sender<PumpView>>,
    fatal: mpsc::UnboundedSender<ReaderError>,
    tso: Option<pump::pd::PdClient>,
    /// Pumps' pause records as of the last scan.
    pause_records: std::collections::BTreeMap<String, i64>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").field("pumps", &self.readers.keys().collect::<Vec<_>>()).finish()
    }
}

/// Everything the collector shares with the rest of the drainer.
#[derive(Debug)]
pub struct CollectorParts {
    /// etcd registry.
    pub registry: Registry,
    /// Reader connection settings.
    pub cfg: ReaderConfig,
    /// `detect-interval`.
    pub detect_interval: Duration,
    /// Where new merge sources go.
    pub sources: mpsc::UnboundedSender<Source<Pulled>>,
    /// The merger's waker.
    pub merge_wake: Arc<Notify>,
    /// The merge's latest emitted ts.
    pub latest: Arc<AtomicI64>,
    /// Pump positions for `/status`.
    pub positions: Arc<PumpPositions>,
    /// Poked by `Cistern.Notify`.
    pub notify: Arc<Notify>,
    /// Fatal reader errors go here.
    pub fatal: mpsc::UnboundedSender<ReaderError>,
    /// The TSO, for the bound up to which paused pumps may be skipped (none: never skipped).
    pub tso: Option<pump::pd::PdClient>,
}

impl Collector {
    /// A collector with no pumps yet.
    pub fn new(p: CollectorParts) -> Self {
        Collector {
            registry: p.registry,
            cfg: p.cfg,
            detect_interval: p.detect_interval,
            sources: p.sources,
            merge_wake: p.merge_wake,
            latest: p.latest,
            positions: p.positions,
            notify: p.notify,
            readers: HashMap::new(),
            fatal: p.fatal,
            tso: p.tso,
            pause_records: Default::default(),
        }
    }

    /// Applies one pump status.
    fn apply(&mut self, st: NodeStatus, safe_ts: i64) {
        let clean_pause =
            st.state == NodeState::Paused && self.pause_records.get(&st.node_id) == Some(&st.max_commit_ts);
        let view = PumpView { status: st.clone(), safe_ts, clean_pause };
        if let Some(tx) = self.readers.get(&st.node_id) {
            if tx.is_closed() {
                // the reader ended (offline); forget it so a later online starts a new one
                self.readers.remove(&st.node_id);
                self.positions.remove(&st.node_id);
            } else {
                tx.send_if_modified(|cur| {
                    let changed = *cur != view;
                    *cur = view;
                    changed
                });
                return;
            }
        }
        if st.state == NodeState::Offline {
            return;
        }
        let start = self.latest.load(Ordering::Acquire);
        tracing::info!(pump = %st.node_id, host = %st.host, state = %st.state, start, "new pump; pulling");
        let (tx, rx) = watch::channel(view);
        let (sender, source) = merge::source(st.node_id.clone(), SOURCE_QUEUE, self.merge_wake.clone());
        if self.sources.send(source).is_err() {
            return;
        }
        self.merge_wake.notify_one();
        let (cfg, positions, fatal) = (self.cfg.clone(), self.positions.clone(), self.fatal.clone());
        tokio::spawn(async move {
            if let Err(e) = run_reader(rx, start, sender, cfg, positions).await {
                let _ = fatal.send(e);
            }
        });
        self.readers.insert(st.node_id, tx);
    }

    async fn scan(&mut self) -> Option<i64> {
        // The TSO first, then the read: a pump seen paused cannot commit anything at or below it later.
        let safe_ts = match &self.tso {
            Some(t) => t.get_ts().await.map(|t| t as i64).unwrap_or(0),
            None => 0,
        };
        match self.registry.pause_records().await {
            Ok(r) => self.pause_records = r,
            Err(e) => {
                // Without the records no paused pump may be passed this round.
                tracing::warn!(error = %e, "reading pumps' pause records in etcd failed");
                self.pause_records.clear();
            }
        }
        match self.registry.list_with_revision(NodeKind::Pump).await {
            Ok((pumps, rev)) => {
                for st in pumps {
                    self.apply(st, safe_ts);
                }
                Some(rev)
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing pumps in etcd failed");
                None
            }
        }
    }

    /// Runs until the merge goes away.
    pub async fn run(mut self) {
        let mut watch = None;
        loop {
            if let Some(rev) = self.scan().await
                && watch.is_none()
            {
                watch = self.registry.watch(NodeKind::Pump, rev + 1).await.ok();
            }
            if self.sources.is_closed() {
                return;
            }
            let sleep = tokio::time::sleep(self.detect_interval);
            tokio::select! {
                _ = sleep => {}
                _ = self.notify.notified() => {}
                ev = async {
                    match watch.as_mut() {
                        Some(w) => w.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match ev {
                        Ok(Some(events)) => {
                            for e in events {
                                if let pump::node::NodeEvent::Put(st) = e {
                                    self.apply(st, 0);
                                }
                            }
                        }
                        _ => watch = None,
                    }
                }
            }
        }
    }
}
