//! The pump client TiDB embeds (TiDB `tidb-binlog/pump_client`): finds pumps in etcd and follows
//! them, picks one per transaction (`range` or `hash`), writes the P-binlog and then the C/Rollback
//! binlog to the same pump, retries and fails over, and probes unavailable pumps.
//!
//! # Behaviour (upstream-interfaces.md §7)
//! - Discovery: list `/tidb-binlog/v1/pumps` (none is an error: `no pump found in pd`), then watch from
//!   that revision. A PUT adds a pump or sets its availability from its state (`online` = available);
//!   a DELETE removes it.
//! - Usable pump: state `online` and at most [`MAX_ERR_NUM`] consecutive errors; a success resets the
//!   count.
//! - `range`: round-robin over usable pumps; `hash`: `usable[(start_ts + retry) % len]`.
//! - P-binlog: on error choose again with `retry + 1` after [`ClientConfig::retry_interval`]; a
//!   `ResourceExhausted` status is not retried; give up when `elapsed > write_timeout` and
//!   `retry > usable pumps`, then try every online pump once. Success records `start_ts -> pump`.
//! - C/Rollback binlog: to the pump of its P-binlog, retried every [`ClientConfig::commit_retry_interval`]
//!   for up to [`ClientConfig::commit_retry_for`]; the record is dropped afterwards.
//! - Beyond upstream: a P-binlog write that failed on a pump in a way that may still have stored it (a
//!   timeout, a broken call) before it succeeded on another leaves an orphan Prewrite there, which would
//!   hold that pump's watermark (and every drainer) until the pump gives it up after `max-txn-timeout`
//!   (upstream asks TiKV instead). Once the transaction's C/Rollback is written, the client sends a
//!   Rollback for that start_ts to each such pump in the background, retried like a C-binlog.
//! - Detector: every [`ClientConfig::detect_interval`] an empty `WriteBinlog` to each online pump that
//!   is marked unusable; success makes it usable again.
//! - `ignore_error`: a failed P-binlog is reported as [`WriteOutcome::Skipped`] and the client stops
//!   writing binlogs altogether, as TiDB does.
//! - `binlog-socket` ([`PumpsClient::local`]): every binlog goes to the one pump serving gRPC on that
//!   unix socket (pump's `socket`), without the registry, as TiDB's local pump client does.
//!
//! **Invariant:** a C/Rollback binlog goes to the pump that acknowledged its P-binlog, never to another
//! one (while that pump is known; after a restart of the client the strategy picks again).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use prost::bytes::Bytes;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::node::{NodeEvent, NodeKind, NodeState, NodeStatus, Registry, RegistryError};
use crate::proto::pump_client::PumpClient;
use crate::proto::{Binlog, BinlogType, WriteBinlogReq};

/// Consecutive errors after which a pump is no longer used for P-binlogs.
pub const MAX_ERR_NUM: u64 = 10;

/// The node id the client gives the pump behind `binlog-socket` ([`PumpsClient::local`]).
pub const LOCAL_PUMP_ID: &str = "local";

/// How the pump of a P-binlog is chosen (TiDB `[binlog] strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Round-robin over usable pumps (the default).
    #[default]
    Range,
    /// `usable[(start_ts + retry) % len]`.
    Hash,
}

impl Strategy {
    /// Parses `range` or `hash`; anything else is `range`, as TiDB does.
    pub fn parse(s: &str) -> Strategy {
        if s.eq_ignore_ascii_case("hash") { Strategy::Hash } else { Strategy::Range }
    }
}

/// Client settings (TiDB `[binlog]` plus upstream's fixed intervals, here adjustable for tests).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `write-timeout`: per-call timeout and the P-binlog retry budget (default 15 s).
    pub write_timeout: Duration,
    /// `ignore-error`: a failed P-binlog stops binlog writing instead of failing the transaction.
    pub ignore_error: bool,
    /// `strategy`.
    pub strategy: Strategy,
    /// Pause between P-binlog attempts (100 ms).
    pub retry_interval: Duration,
    /// Pause between C-binlog attempts (1 s).
    pub commit_retry_interval: Duration,
    /// How long a C-binlog is retried (10 min).
    pub commit_retry_for: Duration,
    /// Period of the probe of unusable pumps (30 s).
    pub detect_interval: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            write_timeout: Duration::from_secs(15),
            ignore_error: false,
            strategy: Strategy::Range,
            retry_interval: Duration::from_millis(100),
            commit_retry_interval: Duration::from_secs(1),
            commit_retry_for: Duration::from_secs(600),
            detect_interval: Duration::from_secs(30),
        }
    }
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Reading or watching the registry failed.
    #[error("pump registry: {0}")]
    Registry(#[from] RegistryError),
    /// The registry holds no pump.
    #[error("no pump found in pd")]
    NoPumpFound,
    /// No pump is usable for this binlog.
    #[error("no available pump to write binlog (start_ts {start_ts})")]
    NoAvailablePump {
        /// The binlog's start ts.
        start_ts: i64,
    },
    /// Every attempt failed; the last error is given.
    #[error("write {tp:?} binlog start_ts {start_ts} failed after {attempts} attempts, last to pump {node_id}: {last}")]
    WriteFailed {
        /// P or C.
        tp: BinlogType,
        /// The binlog's start ts.
        start_ts: i64,
        /// Attempts made.
        attempts: usize,
        /// The pump of the last attempt.
        node_id: String,
        /// The last error.
        last: String,
    },
    /// A pump refused with `ResourceExhausted` (not retried).
    #[error("pump {node_id} refused binlog start_ts {start_ts}: {message}")]
    ResourceExhausted {
        /// The pump.
        node_id: String,
        /// The binlog's start ts.
        start_ts: i64,
        /// Its message.
        message: String,
    },
}

/// What became of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written to this pump.
    Written {
        /// The pump's node id.
        node_id: String,
    },
    /// Not written because binlog writing is off (`ignore_error` after a failure).
    Skipped,
}

/// A pump as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PumpView {
    /// Node id.
    pub node_id: String,
    /// `host:port`.
    pub addr: String,
    /// Registry state.
    pub state: NodeState,
    /// Whether it is used for new P-binlogs.
    pub usable: bool,
    /// Consecutive errors.
    pub err_num: u64,
}

struct PumpEntry {
    status: NodeStatus,
    channel: Option<Channel>,
    err_num: u64,
    /// Availability from state changes and probes (`IsAvaliable` upstream).
    available: bool,
}

impl PumpEntry {
    fn new(status: NodeStatus) -> Self {
        let available = status.state == NodeState::Online;
        PumpEntry { status, channel: None, err_num: 0, available }
    }

    fn usable(&self) -> bool {
        self.available && self.status.state == NodeState::Online && self.err_num <= MAX_ERR_NUM
    }

    fn client(&mut self, timeout: Duration) -> Result<PumpClient<Channel>, String> {
        if self.channel.is_none() {
            self.channel = Some(match self.status.host.strip_prefix("unix://") {
                Some(path) => {
                    // The URI is not used for the connection; every connection dials the socket.
                    let ep = Endpoint::from_static("http://localhost").connect_timeout(timeout).timeout(timeout);
                    let path = std::path::PathBuf::from(path);
                    ep.connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(&path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    }))
                }
                None => Endpoint::from_shared(format!("http://{}", self.status.host))
                    .map_err(|e| format!("bad pump address {:?}: {e}", self.status.host))?
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .connect_lazy(),
            });
        }
        let channel = self.channel.clone().ok_or_else(|| "no channel".to_owned())?;
        Ok(PumpClient::new(channel).max_decoding_message_size(usize::MAX))
    }
}

struct Inner {
    cluster_id: u64,
    cfg: ClientConfig,
    pumps: Mutex<BTreeMap<String, PumpEntry>>,
    /// start_ts of a written P-binlog -> node id of its pump.
    ts_map: Mutex<HashMap<i64, String>>,
    /// start_ts -> other pumps whose P-binlog write failed in a way that may still have stored it
    /// (a timeout, a broken connection). They get a Rollback once the transaction's own pump has its
    /// C/Rollback, so an orphan Prewrite never holds their watermark back.
    in_doubt: Mutex<HashMap<i64, Vec<String>>>,
    cursor: AtomicUsize,
    disabled: AtomicBool,
}

/// The pump client (cheap to clone). Dropping the last clone stops its watch and probe tasks.
#[derive(Clone)]
pub struct PumpsClient {
    inner: Arc<Inner>,
    _tasks: Arc<Tasks>,
}

struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl std::fmt::Debug for PumpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PumpsClient(cluster {}, {} pumps)", self.inner.cluster_id, self.pumps().len())
    }
}

impl PumpsClient {
    /// Lists the pumps in the registry, starts following it and probing unusable pumps. Fails with
    /// [`ClientError::NoPumpFound`] when none is registered.
    pub async fn connect(registry: Registry, cluster_id: u64, cfg: ClientConfig) -> Result<Self, ClientError> {
        let (nodes, rev) = registry.list_with_revision(NodeKind::Pump).await?;
        if nodes.is_empty() {
            return Err(ClientError::NoPumpFound);
        }
        let client = Self::with_pumps(cluster_id, cfg, nodes, false);
        let watch = tokio::spawn(follow(Arc::downgrade(&client.inner), registry, rev + 1));
        let probe = tokio::spawn(detect(Arc::downgrade(&client.inner)));
        Ok(PumpsClient { inner: client.inner, _tasks: Arc::new(Tasks(vec![watch, probe])) })
    }

    /// A client over a fixed set of pumps, without registry (tests, tools). With `probe` the
    /// detector runs.
    pub fn with_pumps(cluster_id: u64, cfg: ClientConfig, nodes: Vec<NodeStatus>, probe: bool) -> Self {
        let pumps = nodes.into_iter().map(|n| (n.node_id.clone(), PumpEntry::new(n))).collect();
        let inner = Arc::new(Inner {
            cluster_id,
            cfg,
            pumps: Mutex::new(pumps),
            ts_map: Mutex::new(HashMap::new()),
            in_doubt: Mutex::new(HashMap::new()),
            cursor: AtomicUsize::new(0),
            disabled: AtomicBool::new(false),
        });
        let tasks = if probe { vec![tokio::spawn(detect(Arc::downgrade(&inner)))] } else { Vec::new() };
        PumpsClient { inner, _tasks: Arc::new(Tasks(tasks)) }
    }

    /// A client that writes every binlog to the pump serving gRPC on the unix socket `socket` (TiDB
    /// `[binlog] binlog-socket`; a path, or `unix://` + path), without the registry. The pump is
    /// probed like any other when it fails.
    pub fn local(cluster_id: u64, cfg: ClientConfig, socket: &str) -> Self {
        let path = socket.strip_prefix("unix://").or_else(|| socket.strip_prefix("unix:")).unwrap_or(socket);
        let status = NodeStatus::new(LOCAL_PUMP_ID, format!("unix://{path}"), NodeState::Online);
        Self::with_pumps(cluster_id, cfg, vec![status], true)
    }

    /// The cluster id sent with every request.
    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    /// Every known pump, by node id.
    pub fn pumps(&self) -> Vec<PumpView> {
        let pumps = self.inner.pumps.lock().unwrap_or_else(|e| e.into_inner());
        pumps
            .values()
            .map(|p| PumpView {
                node_id: p.status.node_id.clone(),
                addr: p.status.host.clone(),
                state: p.status.state,
                usable: p.usable(),
                err_num: p.err_num,
            })
            .collect()
    }

    /// Whether binlog writing stopped after a failure with `ignore_error`.
    pub fn is_disabled(&self) -> bool {
        self.inner.disabled.load(Ordering::SeqCst)
    }

    /// The pump holding the P-binlog of `start_ts`, while its C-binlog is not yet written.
    pub fn pump_of(&self, start_ts: i64) -> Option<String> {
        self.inner.ts_map.lock().unwrap_or_else(|e| e.into_inner()).get(&start_ts).cloned()
    }

    /// Writes a binlog: a Prewrite with failover, a Commit/Rollback to its P-binlog's pump.
    pub async fn write_binlog(&self, binlog: &Binlog) -> Result<WriteOutcome, ClientError> {
        if self.is_disabled() {
            return Ok(WriteOutcome::Skipped);
        }
        if binlog.tp() == BinlogType::Prewrite {
            match self.write_prewrite(binlog).await {
                Ok(node_id) => Ok(WriteOutcome::Written { node_id }),
                Err(e) if self.inner.cfg.ignore_error => {
                    tracing::error!(error = %e, "write prewrite binlog failed; ignore-error is set, binlog writing stops");
                    self.inner.disabled.store(true, Ordering::SeqCst);
                    Ok(WriteOutcome::Skipped)
                }
                Err(e) => Err(e),
            }
        } else {
            self.write_commit(binlog).await.map(|node_id| WriteOutcome::Written { node_id })
        }
    }

    /// Writes the binlog of a whole transaction: P, then C to the same pump (`commit_ts == 0` gives a
    /// Rollback). Returns the pump.
    pub async fn write_txn(&self, mut prewrite: Binlog, commit_ts: i64) -> Result<WriteOutcome, ClientError> {
        let out = self.write_binlog(&prewrite).await?;
        if out == WriteOutcome::Skipped {
            return Ok(out);
        }
        prewrite.prewrite_value = None;
        if commit_ts == 0 {
            prewrite.set_tp(BinlogType::Rollback);
        } else {
            prewrite.set_tp(BinlogType::Commit);
            prewrite.commit_ts = Some(commit_ts);
        }
        self.write_binlog(&prewrite).await
    }

    fn select(&self, start_ts: i64, retry: usize) -> Option<String> {
        let pumps = self.inner.pumps.lock().unwrap_or_else(|e| e.into_inner());
        let usable: Vec<&String> = pumps.iter().filter(|(_, p)| p.usable()).map(|(id, _)| id).collect();
        if usable.is_empty() {
            return None;
        }
        let i = match self.inner.cfg.strategy {
            Strategy::Range => self.inner.cursor.fetch_add(1, Ordering::Relaxed),
            Strategy::Hash => (start_ts as u64).wrapping_add(retry as u64) as usize,
        };
        Some(usable[i % usable.len()].clone())
    }

    async fn write_prewrite(&self, binlog: &Binlog) -> Result<String, ClientError> {
        let start_ts = binlog.start_ts();
        let payload = Bytes::from(binlog.encode_to_vec());
        let begin = Instant::now();
        let mut retry = 0usize;
        let mut last = None;
        let mut doubtful: Vec<String> = Vec::new();
        loop {
            let Some(node_id) = self.select(start_ts, retry) else { break };
            match self.send(&node_id, payload.clone()).await {
                Ok(()) => {
                    self.record_in_doubt(start_ts, &node_id, doubtful);
                    self.record(start_ts, &node_id);
                    return Ok(node_id);
                }
                Err(SendError::ResourceExhausted(message)) => {
                    return Err(ClientError::ResourceExhausted { node_id, start_ts, message });
                }
                Err(e) => {
                    tracing::warn!(pump = %node_id, start_ts, error = %e, retry, "write prewrite binlog failed");
                    if e.may_have_stored() && !doubtful.contains(&node_id) {
                        doubtful.push(node_id.clone());
                    }
                    last = Some((node_id, e.to_string()));
                }
            }
            let usable = self.pumps().iter().filter(|p| p.usable).count();
            if begin.elapsed() > self.inner.cfg.write_timeout && retry > usable {
                break;
            }
            tokio::time::sleep(self.inner.cfg.retry_interval).await;
            retry += 1;
        }
        // Last resort: every online pump once, usable or not.
        let online: Vec<String> =
            self.pumps().into_iter().filter(|p| p.state == NodeState::Online).map(|p| p.node_id).collect();
        for node_id in online {
            match self.send(&node_id, payload.clone()).await {
                Ok(()) => {
                    self.record_in_doubt(start_ts, &node_id, doubtful);
                    self.record(start_ts, &node_id);
                    return Ok(node_id);
                }
                Err(e) => {
                    if e.may_have_stored() && !doubtful.contains(&node_id) {
                        doubtful.push(node_id.clone());
                    }
                    last = Some((node_id, e.to_string()))
                }
            }
            retry += 1;
        }
        match last {
            Some((node_id, last)) => {
                Err(ClientError::WriteFailed { tp: BinlogType::Prewrite, start_ts, attempts: retry, node_id, last })
            }
            None => Err(ClientError::NoAvailablePump { start_ts }),
        }
    }

    async fn write_commit(&self, binlog: &Binlog) -> Result<String, ClientError> {
        let start_ts = binlog.start_ts();
        let node_id = match self.pump_of(start_ts) {
            Some(id) => id,
            None => self.select(start_ts, 0).ok_or(ClientError::NoAvailablePump { start_ts })?,
        };
        let payload = Bytes::from(binlog.encode_to_vec());
        let begin = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.send(&node_id, payload.clone()).await {
                Ok(()) => {
                    self.inner.ts_map.lock().unwrap_or_else(|e| e.into_inner()).remove(&start_ts);
                    self.settle_in_doubt(start_ts);
                    return Ok(node_id);
                }
                Err(e) => {
                    if begin.elapsed() >= self.inner.cfg.commit_retry_for {
                        self.inner.ts_map.lock().unwrap_or_else(|e| e.into_inner()).remove(&start_ts);
                        self.settle_in_doubt(start_ts);
                        return Err(ClientError::WriteFailed {
                            tp: binlog.tp(),
                            start_ts,
                            attempts,
                            node_id,
                            last: e.to_string(),
                        });
                    }
                    tracing::warn!(pump = %node_id, start_ts, error = %e, "write commit binlog failed, retrying the same pump");
                    tokio::time::sleep(self.inner.cfg.commit_retry_interval).await;
                }
            }
        }
    }

    fn record_in_doubt(&self, start_ts: i64, written_to: &str, mut doubtful: Vec<String>) {
        doubtful.retain(|n| n != written_to);
        if !doubtful.is_empty() {
            self.inner.in_doubt.lock().unwrap_or_else(|e| e.into_inner()).insert(start_ts, doubtful);
        }
    }

    /// Sends a Rollback for `start_ts` to every pump that may hold an orphan copy of its P-binlog,
    /// in the background, retried like a C-binlog. A Rollback for a Prewrite a pump never stored is a
    /// no-op there.
    fn settle_in_doubt(&self, start_ts: i64) {
        let Some(pumps) = self.inner.in_doubt.lock().unwrap_or_else(|e| e.into_inner()).remove(&start_ts) else {
            return;
        };
        let rollback = Binlog {
            tp: Some(BinlogType::Rollback as i32),
            start_ts: Some(start_ts),
            commit_ts: Some(0),
            ..Binlog::default()
        }
        .encode_to_vec();
        let rollback = Bytes::from(rollback);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            for node_id in pumps {
                let begin = Instant::now();
                loop {
                    match send(&inner, &node_id, rollback.clone()).await {
                        Ok(()) => {
                            tracing::info!(pump = %node_id, start_ts, "rolled back a possibly orphaned prewrite binlog");
                            break;
                        }
                        Err(SendError::Gone(_)) => break,
                        Err(e) if begin.elapsed() >= inner.cfg.commit_retry_for => {
                            tracing::warn!(pump = %node_id, start_ts, error = %e, "giving up rolling back a possibly orphaned prewrite binlog");
                            break;
                        }
                        Err(_) => tokio::time::sleep(inner.cfg.commit_retry_interval).await,
                    }
                }
            }
        });
    }

    fn record(&self, start_ts: i64, node_id: &str) {
        self.inner.ts_map.lock().unwrap_or_else(|e| e.into_inner()).insert(start_ts, node_id.to_owned());
    }

    async fn send(&self, node_id: &str, payload: Bytes) -> Result<(), SendError> {
        send(&self.inner, node_id, payload).await
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("pump {0} is no longer registered")]
    Gone(String),
    #[error("{0}")]
    Address(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("grpc {code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    #[error("pump answered errmsg {0:?}")]
    Refused(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl SendError {
    /// Whether the pump may have stored the binlog despite the error (the request may have reached
    /// it: a timeout or a broken call), as opposed to a definite refusal or no request at all.
    fn may_have_stored(&self) -> bool {
        matches!(self, SendError::Timeout(_) | SendError::Status { .. })
    }
}

async fn send(inner: &Inner, node_id: &str, payload: Bytes) -> Result<(), SendError> {
    let timeout = inner.cfg.write_timeout;
    let mut client = {
        let mut pumps = inner.pumps.lock().unwrap_or_else(|e| e.into_inner());
        let p = pumps.get_mut(node_id).ok_or_else(|| SendError::Gone(node_id.into()))?;
        p.client(timeout).map_err(SendError::Address)?
    };
    let req = WriteBinlogReq { cluster_id: inner.cluster_id, payload };
    let res = match tokio::time::timeout(timeout, client.write_binlog(req)).await {
        Err(_) => Err(SendError::Timeout(timeout)),
        Ok(Err(s)) if s.code() == tonic::Code::ResourceExhausted => {
            Err(SendError::ResourceExhausted(s.message().to_owned()))
        }
        Ok(Err(s)) => Err(SendError::Status { code: s.code(), message: s.message().to_owned() }),
        Ok(Ok(resp)) if !resp.get_ref().errmsg.is_empty() => Err(SendError::Refused(resp.into_inner().errmsg)),
        Ok(Ok(_)) => Ok(()),
    };
    let mut pumps = inner.pumps.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pumps.get_mut(node_id) {
        match &res {
            Ok(()) => p.err_num = 0,
            Err(e) => {
                p.err_num += 1;
                if matches!(e, SendError::Status { code: tonic::Code::Unavailable, .. } | SendError::Timeout(_)) {
                    // Reset the connection, as TiDB does on `Unavailable`.
                    p.channel = None;
                }
            }
        }
    }
    res
}

/// Applies registry changes until the client is dropped; re-lists when the watch ends.
async fn follow(inner: std::sync::Weak<Inner>, registry: Registry, mut from: i64) {
    loop {
        let mut watch = match registry.watch(NodeKind::Pump, from).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "watch pumps failed, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            match watch.next().await {
                Ok(Some(events)) => {
                    let Some(inner) = inner.upgrade() else { return };
                    apply(&inner, events);
                }
                Ok(None) | Err(_) => break,
            }
        }
        if inner.upgrade().is_none() {
            return;
        }
        // The watch ended (compaction or error): list again, replace the set, watch from there.
        match registry.list_with_revision(NodeKind::Pump).await {
            Ok((nodes, rev)) => {
                let Some(inner) = inner.upgrade() else { return };
                apply(&inner, nodes.into_iter().map(NodeEvent::Put).collect());
                from = rev + 1;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

fn apply(inner: &Inner, events: Vec<NodeEvent>) {
    let mut pumps = inner.pumps.lock().unwrap_or_else(|e| e.into_inner());
    for ev in events {
        match ev {
            NodeEvent::Put(status) => match pumps.get_mut(&status.node_id) {
                Some(p) => {
                    if p.status.state != status.state {
                        p.available = status.state == NodeState::Online;
                        if p.available {
                            p.err_num = 0;
                        }
                    }
                    if p.status.host != status.host {
                        p.channel = None;
                    }
                    p.status = status;
                }
                None => {
                    tracing::info!(pump = %status.node_id, state = %status.state.as_str(), "pump found");
                    pumps.insert(status.node_id.clone(), PumpEntry::new(status));
                }
            },
            NodeEvent::Delete { node_id } => {
                pumps.remove(&node_id);
            }
        }
    }
}

/// Probes online pumps that are not usable with an empty `WriteBinlog`; success makes them usable.
async fn detect(inner: std::sync::Weak<Inner>) {
    loop {
        let interval = match inner.upgrade() {
            Some(i) => i.cfg.detect_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(strong) = inner.upgrade() else { return };
        let targets: Vec<String> = {
            let pumps = strong.pumps.lock().unwrap_or_else(|e| e.into_inner());
            pumps.iter().filter(|(_, p)| p.status.state == NodeState::Online && !p.usable()).map(|(id, _)| id.clone()).collect()
        };
        for node_id in targets {
            if send(&strong, &node_id, Bytes::new()).await.is_ok() {
                let mut pumps = strong.pumps.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(p) = pumps.get_mut(&node_id) {
                    tracing::info!(pump = %node_id, "pump answers the probe again, usable");
                    p.available = true;
                    p.err_num = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, state: NodeState) -> NodeStatus {
        NodeStatus::new(id, format!("127.0.0.1:{}", 1 + id.len()), state)
    }

    #[tokio::test]
    async fn range_round_robins_over_usable_pumps() {
        let c = PumpsClient::with_pumps(
            1,
            ClientConfig::default(),
            vec![node("a", NodeState::Online), node("b", NodeState::Paused), node("c", NodeState::Online)],
            false,
        );
        let picks: Vec<String> = (0..4).map(|_| c.select(7, 0).unwrap()).collect();
        assert_eq!(picks, ["a", "c", "a", "c"]);
    }

    #[tokio::test]
    async fn hash_uses_start_ts_plus_retry() {
        let cfg = ClientConfig { strategy: Strategy::Hash, ..ClientConfig::default() };
        let c = PumpsClient::with_pumps(1, cfg, vec![node("a", NodeState::Online), node("b", NodeState::Online), node("c", NodeState::Online)], false);
        assert_eq!(c.select(4, 0).unwrap(), "b");
        assert_eq!(c.select(4, 1).unwrap(), "c");
        assert_eq!(c.select(4, 2).unwrap(), "a");
    }

    #[tokio::test]
    async fn registry_events_add_toggle_and_remove() {
        let c = PumpsClient::with_pumps(1, ClientConfig::default(), vec![node("a", NodeState::Online)], false);
        apply(&c.inner, vec![NodeEvent::Put(node("b", NodeState::Online)), NodeEvent::Put(node("a", NodeState::Paused))]);
        let v = c.pumps();
        assert_eq!(v.iter().map(|p| (p.node_id.as_str(), p.usable)).collect::<Vec<_>>(), [("a", false), ("b", true)]);
        apply(&c.inner, vec![NodeEvent::Delete { node_id: "b".into() }, NodeEvent::Put(node("a", NodeState::Online))]);
        let v = c.pumps();
        assert_eq!(v.iter().map(|p| (p.node_id.as_str(), p.usable)).collect::<Vec<_>>(), [("a", true)]);
    }

    #[test]
    fn strategy_falls_back_to_range() {
        assert_eq!(Strategy::parse("hash"), Strategy::Hash);
        assert_eq!(Strategy::parse("score"), Strategy::Range);
    }
}
