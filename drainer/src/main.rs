//! The `drainer` binary: flags and drainer.toml → [`drainer::server::run_with`] and the sink `db-type` names.
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use drainer::config::{Config, DbType};
use drainer::flags::{self, Command, FlagsError};
use drainer::relay::{RelayLog, Relayed};
use drainer::server::DrainerError;
use drainer::sink::SinkError;
use drainer::sink::file::FileSink;
use drainer::sink::kafka::KafkaSink;
use drainer::sink::mysql::MysqlSink;
use drainer::setup;

fn init_logging(cfg: &Config) -> Result<()> {
    use pump::daemon::logging::{Rotate, init};
    Rotate::parse(&cfg.log_rotate).and_then(|rotate| init(&cfg.log_level, &cfg.log_file, rotate))?;
    Ok(())
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Runs the drainer with one sink until a signal, an HTTP pause/close, or an error.
async fn drive<S, M, MF>(cfg: Config, make: M) -> Result<()>
where
    S: drainer::sink::Sink + 'static,
    M: FnMut(u64, Option<drainer::ha::Fence>) -> MF,
    MF: std::future::Future<Output = Result<S, SinkError>>,
{
    let exit = drainer::server::run_with(cfg, make, stop_signal()).await?;
    tracing::info!(state = %exit.state, checkpoint = exit.checkpoint.commit_ts, "drainer exited");
    Ok(())
}

async fn run(cfg: Config) -> Result<()> {
    match cfg.db_type()? {
        DbType::File => {
            let fc = setup::file_config(&cfg)?;
            drive(cfg, move |_, _| {
                let fc = fc.clone();
                async move { FileSink::open(fc).map_err(|e| SinkError::new("file", e)) }
            })
            .await
        }
        DbType::Kafka => {
            setup::kafka_config(&cfg, 0)?; // refuse a bad config before touching etcd
            let c = cfg.clone();
            drive(cfg, move |cluster_id, _| {
                let kc = setup::kafka_config(&c, cluster_id);
                async move { KafkaSink::connect(kc.map_err(|e| SinkError::new("kafka", e))?).await.map_err(|e| SinkError::new("kafka", e)) }
            })
            .await
        }
        DbType::Mysql | DbType::Tidb => {
            setup::mysql_config(&cfg, 0)?; // refuse a bad config before touching etcd
            let relay = &cfg.syncer.relay;
            if relay.log_dir.is_empty() {
                let c = cfg.clone();
                return drive(cfg, move |cluster_id, fence| {
                    let mc = setup::mysql_config(&c, cluster_id);
                    async move {
                        let mut mc = mc.map_err(|e| SinkError::new("mysql", e))?;
                        mc.fence = fence; // drainer HA (`task-name`): every transaction checks the token
                        MysqlSink::connect(mc).await.map_err(|e| SinkError::new("mysql", e))
                    }
                })
                .await;
            }
            // Opened now so a bad directory is named at start.
            let log = RelayLog::open(Path::new(&relay.log_dir), relay.max_file_size.max(0) as u64)?;
            let c = cfg.clone();
            // `task-name` with the relay log is refused by the config check (`drainer::ha`).
            let mut log = Some(log);
            let r = drive(cfg.clone(), move |cluster_id, _| {
                let (mc, log) = (setup::mysql_config(&c, cluster_id), log.take());
                async move {
                    let log = log.ok_or_else(|| SinkError::new("mysql", "the relay log is opened once (no drainer HA with it)"))?;
                    let sink = MysqlSink::connect(mc.map_err(|e| SinkError::new("mysql", e))?).await.map_err(|e| SinkError::new("mysql", e))?;
                    Ok(Relayed::new(sink, log))
                }
            })
            .await;
            let pd_lost = r.as_ref().err().and_then(|e| e.downcast_ref::<DrainerError>()).is_some_and(|e| {
                matches!(e, DrainerError::Pd(_) | DrainerError::Etcd(_))
            });
            if pd_lost {
                // Upstream: without PD, bring the downstream to a consistent state from the relay log,
                // then stop with the PD error.
                match drainer::relay::replay_mysql(&cfg).await {
                    Ok(done) => tracing::info!(?done, "relay log replay finished"),
                    Err(e) => return r.map_err(|pd| pd.context(format!("and replaying the relay log failed: {e}"))),
                }
            }
            r
        }
    }
}

fn main() -> ExitCode {
    let cfg = match flags::load(std::env::args_os()) {
        Ok(Command::Version) => {
            println!("drainer (tidb-binlog-rs) {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(cfg)) => *cfg,
        Err(FlagsError::Clap(e)) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
        Err(e) => {
            eprintln!("drainer: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&cfg) {
        eprintln!("drainer: {e:#}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drainer: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("drainer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
