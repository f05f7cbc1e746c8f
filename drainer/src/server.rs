//! The drainer process: registry entry and heartbeat, the HTTP API and `binlog.Cistern` on one port,
//! and the tasks of the pipeline ([`crate::pumps`], [`crate::syncer`]).
//!
//! Life cycle: connect etcd (cluster id, TSO) → choose the start ts ([`crate::checkpoint::start_ts`])
//! → load the DDL history → listen → register `online` (maxCommitTS = checkpoint) → run until a stop
//! signal (→ `paused`), `PUT /state/<id>/pause` (→ `pausing` → `paused`), `/close` (→ `closing` →
//! `offline`), or a fatal error (→ `paused`, error returned). On the way out the sink is flushed, a
//! consistent checkpoint saved, and the final state written with it.
//!
//! With `task-name` ([`crate::ha`]) the drainer first stands by until elected; from the sink on, the
//! above is one *term*. A lost lease or a fencing refusal ends the term (no final flush) and the
//! drainer stands by again in the same process; anything else ends it as above.
//!
//! HTTP (same port as gRPC, which requests with `content-type: application/grpc` reach):
//! `GET /status` `{"PumpPos":{id:ts},"Synced":bool,"LastTS":ts,"TsMap":""}`, `GET /commit_ts`,
//! `PUT /state/{id}/{pause|close}`, `GET /metrics`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use pump::node::{NodeKind, NodeState, NodeStatus, Registry};
use pump::proto::cistern_server::{Cistern, CisternServer};
use pump::proto::{DumpBinlogReq, DumpBinlogResp, DumpDdlJobsReq, DumpDdlJobsResp, NotifyReq, NotifyResp};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::checkpoint::{Savepoint, start_ts};
use crate::config::Config;
use crate::ha::Fence;
use crate::merge::Merger;
use crate::metrics::metrics;
use crate::pumps::{Collector, CollectorParts, PumpPositions, ReaderConfig};
use crate::sink::{Sink, SinkError};
use crate::syncer::{Progress, Saver, run_merge, run_sink, run_translate};
use crate::translate::Translator;

/// Why the drainer stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DrainerError {
    /// Bad configuration discovered at start.
    #[error("{0}")]
    Config(String),
    /// etcd could not be reached.
    #[error(transparent)]
    Etcd(#[from] pump::etcd::ConnectError),
    /// Cluster id / TSO.
    #[error(transparent)]
    Pd(#[from] pump::pd::PdError),
    /// The node registry.
    #[error(transparent)]
    Registry(#[from] pump::node::RegistryError),
    /// The checkpoint file.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The sink.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Loading schemas.
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
    /// Translating a binlog.
    #[error(transparent)]
    Translate(#[from] crate::translate::TranslateError),
    /// A pump reader.
    #[error(transparent)]
    Reader(#[from] crate::pumps::ReaderError),
    /// The syncer.
    #[error(transparent)]
    Sync(#[from] crate::syncer::SyncError),
    /// Listening on `addr`.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Drainer HA: the election.
    #[error(transparent)]
    Ha(#[from] crate::ha::HaError),
    /// Drainer HA: this active drainer's lease was not kept alive; it stops so a standby can take over.
    #[error("drainer HA: the election lease of task {0} was lost; stopping so that a standby takes over")]
    LostLease(String),
    /// The heartbeat failed 20 times in a row.
    #[error("heartbeat to etcd failed 20 times in a row: {0}")]
    Heartbeat(String),
}

/// How the drainer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The state written to etcd.
    pub state: NodeState,
    /// The final checkpoint.
    pub checkpoint: Savepoint,
}

/// Actions requested over HTTP.
#[derive(Debug)]
enum Action {
    Pause,
    Close,
}

#[derive(Clone)]
struct Http {
    node_id: String,
    progress: Arc<Progress>,
    positions: Arc<PumpPositions>,
    synced_check: Duration,
    actions: mpsc::Sender<(Action, oneshot::Sender<Result<(), String>>)>,
}

fn json(v: serde_json::Value) -> Response {
    let body = serde_json::to_string_pretty(&v).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn status(State(h): State<Http>) -> Response {
    let idle_ms = pump::tso::now_ms() as i64 - h.progress.last_sync_ms.load(Ordering::Acquire);
    let synced = idle_ms >= h.synced_check.as_millis() as i64;
    json(serde_json::json!({
        "PumpPos": h.positions.snapshot(),
        "Synced": synced,
        "LastTS": h.progress.checkpoint(),
        "TsMap": "",
    }))
}

async fn commit_ts(State(h): State<Http>) -> Response {
    json(serde_json::json!({
        "message": "get drainer's latest ts success!",
        "code": 200,
        "data": {"ts": h.progress.checkpoint()},
    }))
}

async fn state(State(h): State<Http>, Path((id, action)): Path<(String, String)>) -> Response {
    let fail = |msg: String| json(serde_json::json!({"message": msg, "code": 3, "data": null}));
    if id != h.node_id {
        return fail(format!("invalid nodeID {id}, this drainer's nodeID is {}", h.node_id));
    }
    let a = match action.as_str() {
        "pause" => Action::Pause,
        "close" => Action::Close,
        other => return fail(format!("invalid action {other}")),
    };
    let (tx, rx) = oneshot::channel();
    if h.actions.send((a, tx)).await.is_err() {
        return fail("drainer is shutting down".into());
    }
    match rx.await {
        Ok(Ok(())) => json(serde_json::json!({"message": format!("apply action {action} success!"), "code": 200, "data": null})),
        Ok(Err(e)) => fail(e),
        Err(_) => fail("drainer is shutting down".into()),
    }
}

async fn metrics_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics().render()).into_response()
}

/// `binlog.Cistern`: only `Notify` does something (rescan pumps now).
#[derive(Debug, Clone)]
struct CisternSvc {
    notify: Arc<Notify>,
}

#[tonic::async_trait]
impl Cistern for CisternSvc {
    type DumpBinlogStream = futures::stream::Empty<Result<DumpBinlogResp, tonic::Status>>;

    async fn dump_binlog(
        &self,
        _req: tonic::Request<DumpBinlogReq>,
    ) -> Result<tonic::Response<Self::DumpBinlogStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("DumpBinlog is not supported"))
    }

    async fn dump_ddl_jobs(
        &self,
        _req: tonic::Request<DumpDdlJobsReq>,
    ) -> Result<tonic::Response<DumpDdlJobsResp>, tonic::Status> {
        Err(tonic::Status::unimplemented("DumpDDLJobs is not supported"))
    }

    async fn notify(&self, _req: tonic::Request<NotifyReq>) -> Result<tonic::Response<NotifyResp>, tonic::Status> {
        self.notify.notify_one();
        Ok(tonic::Response::new(NotifyResp {}))
    }
}

fn reader_tls(cfg: &Config) -> Result<Option<tonic::transport::ClientTlsConfig>, DrainerError> {
    let s = &cfg.security;
    if !s.enabled() {
        return Ok(None);
    }
    let read = |what: &str, p: &str| {
        std::fs::read(p).map_err(|e| DrainerError::Config(format!("reading {what} {p}: {e}")))
    };
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read("ssl-ca", &s.ssl_ca)?));
    if !s.ssl_cert.is_empty() {
        tls = tls.identity(tonic::transport::Identity::from_pem(read("ssl-cert", &s.ssl_cert)?, read("ssl-key", &s.ssl_key)?));
    }
    Ok(Some(tls))
}

fn server_tls(cfg: &Config) -> Result<Option<pump::daemon::serve::Tls>, DrainerError> {
    pump::daemon::serve::Tls::from_security(&cfg.security).map_err(|e| DrainerError::Config(format!("[security]: {e}")))
}

fn etcd_config(cfg: &Config) -> Result<pump::etcd::EtcdConfig, DrainerError> {
    let mut e = pump::etcd::EtcdConfig::from_pd_urls(&cfg.pd_urls)?;
    let opt = |s: &str| (!s.is_empty()).then(|| std::path::PathBuf::from(s));
    e.ssl_ca = opt(&cfg.security.ssl_ca);
    e.ssl_cert = opt(&cfg.security.ssl_cert);
    e.ssl_key = opt(&cfg.security.ssl_key);
    e.request_timeout = Some(Duration::from_secs(10));
    Ok(e)
}

/// Runs a drainer with `sink` until `stop` resolves (→ `paused`), an HTTP pause/close, or an error.
/// `cfg` must have been [`Config::adjust`]ed.
pub async fn run<S, F>(cfg: Config, sink: S, stop: F) -> Result<Exit, DrainerError>
where
    S: Sink + 'static,
    F: Future<Output = ()> + Send,
{
    let mut sink = Some(sink);
    let make = move |_, _| {
        let s = sink.take();
        // Without `task-name` there is one term, so one sink.
        async move { s.ok_or_else(|| SinkError::new("sink", "the sink was already used by an earlier term")) }
    };
    run_with(cfg, make, stop).await
}

/// As [`run`], with the sink built by `make` once the cluster id is known (the MySQL checkpoint's row
/// key and the Kafka topic's default name need it) and, with `task-name`, once this drainer is the
/// task's active one (then `make` gets the fencing token; see [`crate::ha`]). With `task-name`, `make`
/// is called again each time this drainer becomes the active one anew (after losing the lease and
/// standing by).
pub async fn run_with<S, M, MF, F>(cfg: Config, make: M, stop: F) -> Result<Exit, DrainerError>
where
    S: Sink + 'static,
    M: FnMut(u64, Option<Fence>) -> MF,
    MF: Future<Output = Result<S, SinkError>>,
    F: Future<Output = ()> + Send,
{
    let db_type = cfg.db_type().map_err(|e| DrainerError::Config(e.to_string()))?;
    let pd_cfg = etcd_config(&cfg)?;
    let pd = pump::pd::PdClient::connect(&pd_cfg).await?;
    let client = pump::etcd::connect(&pd_cfg).await?;
    let cluster_id = pd.cluster_id();
    let now_ts = pd.get_ts().await? as i64;
    let started = Instant::now();
    let node_id = pump::node::drainer_node_id((!cfg.node_id.is_empty()).then_some(cfg.node_id.as_str()), &cfg.addr)
        .map_err(|e| DrainerError::Config(e.to_string()))?;
    let task = (!cfg.task_name.is_empty()).then(|| cfg.task_name.clone());

    let listener = tokio::net::TcpListener::bind(&cfg.addr)
        .await
        .map_err(|source| DrainerError::Listen { addr: cfg.addr.clone(), source })?;
    let registry = Registry::new(client.clone());
    let mut me = NodeStatus::new(node_id.clone(), cfg.advertise_addr.clone(), NodeState::Online);
    me.update_ts = now_ts;
    me.task = task.clone();

    let progress = Arc::new(Progress::new(0));
    let positions = Arc::new(PumpPositions::default());
    let notify = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (action_tx, mut action_rx) = mpsc::channel(4);

    // HTTP + gRPC on one port (a standby answers too: binlogctl pauses and closes it as any drainer).
    let http = Http {
        node_id: node_id.clone(),
        progress: progress.clone(),
        positions: positions.clone(),
        synced_check: Duration::from_secs(cfg.synced_check_time * 60),
        actions: action_tx,
    };
    let grpc = tonic::service::Routes::new(CisternServer::new(CisternSvc { notify: notify.clone() })).into_axum_router();
    let api = Router::new()
        .route("/status", get(status))
        .route("/commit_ts", get(commit_ts))
        .route("/state/{id}/{action}", put(state))
        .route("/metrics", get(metrics_text))
        .with_state(http);
    let mut server_stop = stop_rx.clone();
    let server = match server_tls(&cfg)? {
        // With `[security]`: TLS with client certificates and `cert-allowed-cn`, as the pump.
        Some(tls) => tokio::spawn(async move {
            let app = pump::daemon::serve::App { grpc, http: api };
            tokio::select! {
                _ = pump::daemon::serve::serve_tcp(listener, Some(tls), app) => {}
                _ = server_stop.changed() => {}
            }
            // Requests in flight (the pause/close that asked for the stop) finish on their own tasks.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }),
        None => tokio::spawn(async move {
            let app = api.merge(grpc);
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = server_stop.changed().await;
                })
                .await;
        }),
    };
    tokio::pin!(stop);
    let push = pump::daemon::push::spawn(
        &cfg.metrics_addr,
        Duration::from_secs(cfg.metrics_interval),
        &node_id,
        || metrics().render(),
    );
    let mut make = make;

    // One pass per term as the task's active drainer (without `task-name`: one pass). A drainer whose
    // lease was lost, or that a newer active fenced out, drops its pipeline and stands by again.
    let outcome: Result<Exit, DrainerError> = 'terms: loop {
        // Drainer HA: stand by until elected.
        let mut lease = None;
        let mut fence = None;
        if let Some(task) = &task {
            me.state = NodeState::Online;
            let waited =
                stand_by(&cfg, task, &client, &registry, &mut me, &progress, &mut action_rx, stop.as_mut(), now_ts).await;
            match waited {
                Err(e) => break 'terms Err(e),
                Ok(Standby::Elected(l, token)) => {
                    tracing::info!(task, token, "elected the task's active drainer");
                    lease = Some(l);
                    fence = Some(Fence { task: task.clone(), token });
                }
                Ok(Standby::Stopped(state, reply)) => {
                    me.state = state;
                    let reg = registry.update_node(NodeKind::Drainer, &me).await;
                    if let Some(tx) = reply {
                        let _ = tx.send(reg.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                    }
                    tracing::info!(%state, "standby drainer stopped");
                    let checkpoint = Savepoint { consistent: false, commit_ts: me.max_commit_ts, schema_version: 0 };
                    break 'terms reg.map(|_| Exit { state, checkpoint }).map_err(DrainerError::from);
                }
            }
        }
        let lost = lease.as_ref().map(|l: &crate::ha::Lease| l.lost.clone());

        let mut sink = match make(cluster_id, fence).await {
            Ok(s) => s,
            Err(e) => {
                let e = DrainerError::from(e);
                if let Some(l) = lease.take() {
                    l.revoke(&client).await;
                    if crate::ha::is_fenced(&e) {
                        // A newer active holds the downstream, or it could not be fenced: let another
                        // drainer of the task (or this one, later) try.
                        tracing::warn!(error = %e, "drainer HA: taking over the downstream failed; standing by again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue 'terms;
                    }
                    me.state = NodeState::Paused;
                    let _ = registry.update_node(NodeKind::Drainer, &me).await;
                }
                break 'terms Err(e);
            }
        };
        let mut store =
            crate::setup::checkpoint_store(&cfg, cluster_id).map_err(|e| DrainerError::Config(e.to_string()))?;
        let saved = store.load().await?;
        let sink_ts = sink.load_checkpoint().await?;
        let start =
            start_ts(sink_ts, saved.as_ref(), db_type.uses_file_checkpoint() || sink_ts.is_none(), cfg.initial_commit_ts, || now_ts);
        let schema_version = saved.filter(|s| s.commit_ts == start).map(|s| s.schema_version).unwrap_or(0);
        tracing::info!(node_id, cluster_id, start, schema_version, ?sink_ts, "drainer starting");

        let mut translator = Translator::new(&cfg.syncer, db_type).map_err(|e| DrainerError::Config(e.to_string()))?;
        translator.init(schema_version, start).await?;

        progress.checkpoint_ts.store(start, Ordering::Release);
        me.max_commit_ts = start;
        me.update_ts = pump::tso::advance(now_ts as u64, started.elapsed()) as i64;
        if task.is_some() {
            me.role = Some(crate::ha::ROLE_ACTIVE.into());
        }
        registry.update_node(NodeKind::Drainer, &me).await?;

        // Pipeline, stopped through `term_stop` (the HTTP server stays up across terms).
        let (term_stop_tx, term_stop) = watch::channel(false);
        let merger = Merger::new(start);
        let latest = Arc::new(AtomicI64::new(start));
        let (src_tx, src_rx) = mpsc::unbounded_channel();
        let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
        let collector = Collector::new(CollectorParts {
            registry: registry.clone(),
            cfg: ReaderConfig { cluster_id, tls: reader_tls(&cfg)?, gzip: cfg.compressor == "gzip" },
            detect_interval: Duration::from_secs(cfg.detect_interval),
            sources: src_tx,
            merge_wake: merger.waker(),
            latest: latest.clone(),
            positions: positions.clone(),
            notify: notify.clone(),
            fatal: fatal_tx,
            tso: Some(pd.clone()),
        });
        let collector = tokio::spawn(collector.run());
        let (merged_tx, merged_rx) = mpsc::channel(4);
        let merge = tokio::spawn(run_merge(merger, src_rx, merged_tx, latest, term_stop.clone()));
        let (items_tx, items_rx) = mpsc::channel(cfg.cache_binlog_count);
        let mut translate = tokio::spawn(run_translate(translator, merged_rx, items_tx));
        let saver = Saver::new(store, saved.unwrap_or(Savepoint { consistent: false, commit_ts: start, schema_version }));
        let mut sink_task = tokio::spawn(run_sink(sink, items_rx, saver, progress.clone(), term_stop.clone()));

        // Heartbeat.
        let (hb_err_tx, mut hb_err_rx) = mpsc::channel::<String>(1);
        let heartbeat = {
            let (registry, progress, me, mut stop) = (registry.clone(), progress.clone(), me.clone(), term_stop.clone());
            tokio::spawn(async move {
                let mut me = me;
                let base = started;
                let mut fails = 0;
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => return,
                    }
                    me.max_commit_ts = progress.checkpoint();
                    me.update_ts = pump::tso::advance(now_ts as u64, base.elapsed()) as i64;
                    match registry.update_node(NodeKind::Drainer, &me).await {
                        Ok(()) => fails = 0,
                        Err(e) => {
                            fails += 1;
                            tracing::warn!(error = %e, fails, "drainer heartbeat failed");
                            if fails >= 20 {
                                let _ = hb_err_tx.send(e.to_string()).await;
                                return;
                            }
                        }
                    }
                }
            })
        };

        // Wait for the reason to stop.
        let mut reply: Option<oneshot::Sender<Result<(), String>>> = None;
        let mut failure: Option<DrainerError> = None;
        let mut final_state = NodeState::Paused;
        let mut sink_done: Option<Result<Savepoint, DrainerError>> = None;
        let lease_lost = async {
            match lost {
                Some(mut l) => {
                    let _ = l.wait_for(|lost| *lost).await.is_ok();
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = lease_lost => failure = Some(DrainerError::LostLease(cfg.task_name.clone())),
            _ = &mut stop => tracing::info!("stop requested; pausing"),
            a = action_rx.recv() => if let Some((a, tx)) = a {
                let (transient, fin) = match a {
                    Action::Pause => (NodeState::Pausing, NodeState::Paused),
                    Action::Close => (NodeState::Closing, NodeState::Offline),
                };
                me.state = transient;
                me.max_commit_ts = progress.checkpoint();
                match registry.update_node(NodeKind::Drainer, &me).await {
                    Ok(()) => { final_state = fin; reply = Some(tx); }
                    Err(e) => { let _ = tx.send(Err(e.to_string())); }
                }
            },
            e = fatal_rx.recv() => if let Some(e) = e { failure = Some(e.into()) },
            r = &mut translate => {
                failure = match r {
                    Ok(Err(e)) => Some(e.into()),
                    _ => None,
                }
            },
            r = &mut sink_task => {
                sink_done = Some(match r {
                    Ok(r) => r.map_err(DrainerError::from),
                    Err(e) => Err(DrainerError::Config(format!("sink task panicked: {e}"))),
                });
            },
            e = hb_err_rx.recv() => failure = Some(DrainerError::Heartbeat(e.unwrap_or_default())),
        }

        // Drainer HA: a lost lease or a fencing refusal means another drainer is (or is about to be)
        // the task's active one. Stop this term without a final flush (the MySQL checkpoint is
        // committed with the data, so the next active resumes exactly; the fence refuses any late
        // write), drop its state and stand by again.
        // The sink reports a refusal from its background task as text, so a failure in HA mode is
        // also taken as a lost term when the lease turns out lost within a TTL: a fencing refusal
        // means a newer active was elected, so this lease has expired on the server.
        let failed = failure.as_ref().or(sink_done.as_ref().and_then(|r| r.as_ref().err()));
        let lost_term = match (&lease, failed) {
            (Some(_), Some(DrainerError::LostLease(_))) => true,
            (Some(_), Some(e)) if crate::ha::is_fenced(e) => true,
            (Some(l), Some(_)) => {
                let mut lost = l.lost.clone();
                let ttl = Duration::from_secs(cfg.ha_lease_ttl as u64 + 1);
                matches!(tokio::time::timeout(ttl, lost.wait_for(|l| *l)).await, Ok(Ok(_)))
            }
            _ => false,
        };
        let _ = term_stop_tx.send(true);
        heartbeat.abort();
        collector.abort();
        merge.abort();
        translate.abort();
        if lost_term {
            let why = match (&failure, &sink_done) {
                (Some(e), _) | (None, Some(Err(e))) => e.to_string(),
                _ => String::new(),
            };
            tracing::warn!(task = cfg.task_name, reason = why, "drainer HA: no longer the task's active drainer; standing by");
            if sink_done.is_none() {
                sink_task.abort();
                let _ = sink_task.await;
            }
            let _ = heartbeat.await;
            // Not revoked: it has expired on the server (or is about to), and etcd may be unreachable.
            drop(lease.take());
            me.state = NodeState::Online;
            me.role = Some(crate::ha::ROLE_STANDBY.into());
            me.max_commit_ts = progress.checkpoint();
            if let Err(e) = registry.update_node(NodeKind::Drainer, &me).await {
                tracing::warn!(error = %e, "registering as a standby failed; the standby's heartbeat retries");
            }
            continue 'terms;
        }
        if let Some(e) = &failure {
            tracing::error!(error = %e, "drainer stopping on error");
        }
        let sink_result = match sink_done {
            Some(r) => r,
            None => match sink_task.await {
                Ok(r) => r.map_err(DrainerError::from),
                Err(e) => Err(DrainerError::Config(format!("sink task panicked: {e}"))),
            },
        };
        let saved = match sink_result {
            Ok(sp) => Some(sp),
            Err(e) => {
                failure.get_or_insert(e);
                None
            }
        };
        let cp = saved.unwrap_or(Savepoint { consistent: false, commit_ts: progress.checkpoint(), schema_version: 0 });
        me.state = final_state;
        me.max_commit_ts = cp.commit_ts;
        let reg = registry.update_node(NodeKind::Drainer, &me).await;
        if let Some(l) = lease {
            // After the final checkpoint: a standby takes over now rather than when the lease expires.
            l.revoke(&client).await;
        }
        if let Some(tx) = reply {
            let _ = tx.send(reg.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
        break 'terms match failure {
            Some(e) => Err(e),
            None => reg.map_err(DrainerError::from).map(|()| {
                tracing::info!(state = %final_state, checkpoint = cp.commit_ts, "drainer stopped");
                Exit { state: final_state, checkpoint: cp }
            }),
        };
    };

    let _ = stop_tx.send(true);
    if let Some(p) = push {
        p.abort();
    }
    // After the reply: graceful shutdown waits for the request that asked for it.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    outcome
}

/// Whether `lease` is already known lost.
fn lost_now(lease: &crate::ha::Lease) -> bool {
    *lease.lost.borrow()
}

/// How a standby's wait ended.
enum Standby {
    /// Elected: the lease to keep and the fencing token.
    Elected(crate::ha::Lease, i64),
    /// Stopped before being elected: the final state, and the HTTP request to answer.
    Stopped(NodeState, Option<oneshot::Sender<Result<(), String>>>),
}

/// Drainer HA: registers this drainer as a standby of `task` and campaigns until elected, a stop
/// signal, or a pause/close request. Meanwhile the heartbeat reports the active drainer's checkpoint.
/// etcd failures (a PD restart) are retried with a new lease.
#[allow(clippy::too_many_arguments)]
async fn stand_by<F: Future<Output = ()>>(
    cfg: &Config,
    task: &str,
    client: &etcd_client::Client,
    registry: &Registry,
    me: &mut NodeStatus,
    progress: &Progress,
    actions: &mut mpsc::Receiver<(Action, oneshot::Sender<Result<(), String>>)>,
    mut stop: std::pin::Pin<&mut F>,
    now_ts: i64,
) -> Result<Standby, DrainerError> {
    me.role = Some(crate::ha::ROLE_STANDBY.into());
    let node_id = me.node_id.clone();
    let base = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let lease = tokio::select! {
            l = crate::ha::Lease::grant(client, task, cfg.ha_lease_ttl) => l,
            _ = &mut stop => return Ok(Standby::Stopped(NodeState::Paused, None)),
        };
        let lease = match lease {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "drainer HA: retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut lost = lease.lost.clone();
        let campaign = crate::ha::campaign(client, task, &node_id, lease.id);
        tokio::pin!(campaign);
        tracing::info!(task, lease = lease.id, "standing by: campaigning for the task");
        loop {
            tokio::select! {
                r = &mut campaign => match r {
                    Ok(token) if !lost_now(&lease) => return Ok(Standby::Elected(lease, token)),
                    Ok(_) => {
                        tracing::warn!(task, "elected with a lease that is already lost; campaigning again");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "drainer HA: campaign failed; campaigning again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                },
                _ = async { lost.wait_for(|l| *l).await.is_ok() } => {
                    tracing::warn!(task, "drainer HA: the standby's lease was lost; campaigning again");
                    break;
                }
                _ = tick.tick() => {
                    if let Some(ts) = crate::ha::active_checkpoint(registry, task).await {
                        me.max_commit_ts = ts;
                    }
                    progress.checkpoint_ts.store(me.max_commit_ts, Ordering::Release);
                    me.update_ts = pump::tso::advance(now_ts as u64, base.elapsed()) as i64;
                    if let Err(e) = registry.update_node(NodeKind::Drainer, me).await {
                        tracing::warn!(error = %e, "standby heartbeat failed");
                    }
                }
                _ = &mut stop => {
                    lease.revoke(client).await;
                    return Ok(Standby::Stopped(NodeState::Paused, None));
                }
                a = actions.recv() => if let Some((a, tx)) = a {
                    lease.revoke(client).await;
                    let fin = match a {
                        Action::Pause => NodeState::Paused,
                        Action::Close => NodeState::Offline,
                    };
                    return Ok(Standby::Stopped(fin, Some(tx)));
                },
            }
        }
        lease.revoke(client).await;
    }
}
