//! The Pump server (feature `server`): config and flags, the gRPC `binlog.Pump` service and the HTTP
//! API on one port, the etcd registration and state machine, fake binlogs, GC and metrics.
//!
//! # Layout
//! - [`config`]: pump.toml keys and defaults, strict parsing.
//! - [`flags`]: the command line (Go-style flags, `PUMP_*` environment).
//! - [`binlogs`]: classifying written binlogs, fake binlogs, joining C with P.
//! - [`metrics`]: Prometheus metrics with upstream's names.
//! - [`core`]: the running pump: store, registration, states, heartbeat, fake binlogs, GC.
//! - [`grpc`]: `binlog.Pump` (WriteBinlog, PullBinlogs).
//! - [`http`]: the HTTP API.
//! - [`notify`]: `Cistern.Notify` to online drainers at start.
//!
//! The listener, TLS, logging, config-file loading and the Pushgateway push are [`crate::daemon`]'s.

pub mod binlogs;
pub mod config;
pub mod core;
pub mod flags;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod resolver;
pub mod store;

/// The release version printed by `-V`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`None` outside a git checkout).
pub const GIT_HASH: &str = env!("PUMP_GIT_HASH");

/// The text `-V` prints.
pub fn version_text() -> String {
    format!("Release Version: v{VERSION}\nGit Commit Hash: {GIT_HASH}\nBuild With: Rust (tidb-binlog-rs pump)\n")
}

use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UnixListener};

use self::config::Config;
use self::core::{Core, Stop};
use crate::daemon::{Security, push, serve};
use crate::etcd::EtcdConfig;
use crate::node::{NodeKind, NodeState, Registry};
use crate::proto::pump_server::PumpServer;
use crate::pd::PdClient;

fn opt_path(s: &str) -> Option<std::path::PathBuf> {
    (!s.is_empty()).then(|| s.into())
}

/// The etcd connection settings for `cfg` (TLS from `[security]`).
pub fn etcd_config(cfg: &Config) -> Result<EtcdConfig, crate::etcd::ConnectError> {
    Ok(EtcdConfig {
        endpoints: crate::etcd::parse_pd_urls(&cfg.pd_urls)?,
        ssl_ca: opt_path(&cfg.security.ssl_ca),
        ssl_cert: opt_path(&cfg.security.ssl_cert),
        ssl_key: opt_path(&cfg.security.ssl_key),
        connect_timeout: Some(Duration::from_secs(5)),
        request_timeout: Some(Duration::from_secs(10)),
    })
}

/// The store's folder inside `data-dir` (beside `.node`).
pub const STORE_DIR: &str = "store";

/// The store settings for `cfg`.
pub fn store_config(cfg: &Config) -> store::StoreConfig {
    store::StoreConfig {
        dir: cfg.data_dir.join(STORE_DIR),
        sync_log: cfg.storage.sync_log,
        stop_write_at_available_space: cfg.storage.stop_write_at_available_space.0,
        shards: cfg.storage.shards,
        ..store::StoreConfig::default()
    }
}

async fn signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// The HTTP client for TiDB's status API: `[security]`'s CA and client certificate when set.
fn status_api_client(sec: &Security) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(5));
    if !sec.ssl_ca.is_empty() {
        let read = |p: &str| std::fs::read(p).with_context(|| format!("reading [security] file {p}"));
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&read(&sec.ssl_ca)?)?);
        if !sec.ssl_cert.is_empty() {
            let mut pem = read(&sec.ssl_cert)?;
            pem.extend(read(&sec.ssl_key)?);
            b = b.identity(reqwest::Identity::from_pem(&pem)?);
        }
    }
    Ok(b.build()?)
}

/// Runs the pump until it is paused or closed (by HTTP or a signal); returns after writing its final
/// state to etcd.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    tracing::info!(version = VERSION, git = GIT_HASH, ?cfg, "pump starting");
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data-dir {}", cfg.data_dir.display()))?;
    let node_id = crate::node::pump_node_id(&cfg.data_dir, Some(&cfg.node_id), &cfg.addr)?;

    let pd_cfg = etcd_config(&cfg)?;
    let pd = PdClient::connect(&pd_cfg).await?;
    let registry = Registry::new(crate::etcd::connect(&pd_cfg).await?);
    let first_ts = pd.get_ts().await.context("getting a ts from PD")?;
    let metrics = metrics::Metrics::new().context("registering metrics")?;
    let resolver: std::sync::Arc<dyn pump_store::Resolver> = if !cfg.resolver.tikv && cfg.resolver.tidb_status_urls.is_empty() {
        std::sync::Arc::new(pump_store::WaitResolver)
    } else {
        let client = status_api_client(&cfg.security)?;
        let rt = tokio::runtime::Handle::current();
        let tikv = cfg.resolver.tikv.then(|| (pd.clone(), store_config(&cfg).max_txn_timeout));
        resolver::SourceResolver::new(tikv, cfg.resolver.tidb_status_urls.clone(), client, rt, metrics.query_tikv.clone())
    };
    let store = store::Store::open_with_resolver(store_config(&cfg), resolver)
        .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;

    let listener = TcpListener::bind(&cfg.addr).await.with_context(|| format!("listening on addr {}", cfg.addr))?;
    let tls = serve::Tls::from_security(&cfg.security)?;
    let max_msg = usize::try_from(cfg.max_message_size).unwrap_or(usize::MAX);
    let (core, mut stop_rx) = Core::new(cfg, node_id.clone(), registry.clone(), pd, store, metrics, first_ts);
    core.refresh_metrics();

    let pump_svc = PumpServer::new(grpc::PumpService::new(core.clone()))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(usize::MAX)
        // A drainer with `compressor = "gzip"` asks for gzip; others get plain responses.
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let app = serve::App {
        grpc: tonic::service::Routes::new(pump_svc).into_axum_router(),
        http: http::router(core.clone()),
    };
    let mut tasks = vec![tokio::spawn(serve::serve_tcp(listener, tls, app.clone()))];
    if !core.cfg.socket.is_empty() {
        let path = std::path::Path::new(&core.cfg.socket);
        if path.exists() {
            let _ = std::fs::remove_file(path);
        }
        let ul = UnixListener::bind(path).with_context(|| format!("listening on socket {}", path.display()))?;
        tasks.push(tokio::spawn(serve::serve_unix(ul, app)));
    }

    let prev = registry.get(NodeKind::Pump, &node_id).await?.map(|s| s.state);
    // A pause record from an earlier clean pause no longer holds once we accept writes again.
    registry.set_pause_record(&node_id, None).await.context("removing this pump's pause record in etcd")?;
    core.publish().await.context("registering in etcd")?;
    tracing::info!(node_id, previous = ?prev, addr = %core.cfg.addr, advertise = %core.cfg.advertise_addr, "pump online");
    if prev.is_none_or(|s| s == NodeState::Offline) {
        tokio::spawn(notify::notify_drainers(core.clone()));
    }
    let heartbeat = tokio::spawn(core.clone().heartbeat_loop());
    tasks.push(tokio::spawn(core.clone().fake_loop()));
    tasks.push(tokio::spawn(core.clone().gc_loop()));
    tasks.push(tokio::spawn(core.clone().metrics_loop()));
    let push_core = core.clone();
    let push_every = Duration::from_secs(core.cfg.metrics_interval);
    if let Some(t) = push::spawn(&core.cfg.metrics_addr, push_every, &node_id, move || push_core.metrics.render()) {
        tasks.push(t);
    }

    tokio::select! {
        sig = signal() => {
            tracing::info!(signal = sig, "got a signal; pausing");
            if let Err(e) = core.request_stop(Stop::Pause) {
                tracing::info!("{e}");
            }
        }
        _ = stop_rx.wait_for(Option::is_some) => {}
    }
    let stop = stop_rx.borrow().unwrap_or(Stop::Pause);
    if let Err(e) = core.publish().await {
        tracing::warn!(error = %e, state = %core.state(), "recording the state in etcd");
    }
    let mut settled = false;
    let end = match stop {
        Stop::Pause => {
            // Commits of prewrites already accepted still come in while pausing (only new
            // Prewrites are refused); wait for them so the registered max commit ts covers them.
            tokio::select! {
                s = core.wait_prewrites_settled(Duration::from_secs(30)) => settled = s,
                sig = signal() => tracing::warn!(signal = sig, "signal while pausing: pausing now"),
            }
            NodeState::Paused
        }
        Stop::Close => {
            tokio::select! {
                _ = core.wait_safe_to_offline() => NodeState::Offline,
                sig = signal() => {
                    tracing::warn!(signal = sig, "signal while closing: stopping as paused, not offline");
                    NodeState::Paused
                }
            }
        }
    };
    for t in &tasks {
        t.abort();
    }
    core.store.clone().close().await;
    core.publish_final(end).await.with_context(|| format!("recording state {end} in etcd"))?;
    if end == NodeState::Paused {
        // Only a pump that holds no open Prewrite may be passed by drainers while paused: up to its
        // registered max commit ts nothing it holds can commit later. Otherwise drainers wait for it.
        let record = settled.then(|| core.status().max_commit_ts);
        if record.is_none() {
            tracing::warn!("paused with open prewrites (or interrupted): drainers wait for this pump until it is back");
        }
        core.registry
            .set_pause_record(&core.node_id, record)
            .await
            .context("recording this pump's pause record in etcd")?;
    }
    heartbeat.abort();
    tracing::info!(state = %end, "pump stopped");
    Ok(())
}
