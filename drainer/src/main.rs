//! The `drainer` binary: flags and drainer.toml → [`drainer::server::run`] with the sink `db-type` names.
use std::process::ExitCode;

use anyhow::{Context, Result};
use drainer::config::{Config, DbType};
use drainer::flags::{self, Command, FlagsError};

fn init_logging(cfg: &Config) -> Result<()> {
    let level = match cfg.log_level.to_ascii_lowercase().as_str() {
        "fatal" => "error".to_owned(),
        "warning" => "warn".to_owned(),
        other => other.to_owned(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    if cfg.log_file.is_empty() {
        builder.with_writer(std::io::stderr).init();
    } else {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.log_file)
            .with_context(|| format!("opening log file {}", cfg.log_file))?;
        builder.with_writer(std::sync::Mutex::new(f)).init();
    }
    Ok(())
}

#[allow(dead_code)] // until the first sink is wired below
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
#[allow(dead_code)] // until the first sink is wired below
async fn drive<S: drainer::sink::Sink + 'static>(cfg: Config, sink: S) -> Result<()> {
    let exit = drainer::server::run(cfg, sink, stop_signal()).await?;
    tracing::info!(state = %exit.state, checkpoint = exit.checkpoint.commit_ts, "drainer exited");
    Ok(())
}

async fn run(cfg: Config) -> Result<()> {
    match cfg.db_type()? {
        DbType::Mysql | DbType::Tidb | DbType::File | DbType::Kafka => {
            anyhow::bail!("db-type {:?}: this sink is not part of this build yet", cfg.syncer.db_type)
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
