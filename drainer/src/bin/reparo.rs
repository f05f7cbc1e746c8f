//! `reparo`: replays the drainer's file-sink output into MySQL/TiDB (`-dest-type mysql`) or prints it.
//! Flags are upstream's (single- or double-dash, `Reparo_` environment variables); see
//! `drainer::reparo::config`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use drainer::reparo::{self, Config, DestType, Flags};
use drainer::sink::mysql::MysqlSink;

fn main() -> ExitCode {
    let flags = match Flags::parse_from_args(std::env::args_os()) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if flags.version {
        println!("Release Version: {}", env!("CARGO_PKG_VERSION"));
        println!("Binary: reparo (tidb-binlog-rs)");
        return ExitCode::SUCCESS;
    }
    let cfg = match Config::resolve(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reparo: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_log(&cfg) {
        eprintln!("reparo: error: {e:#}");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reparo: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&cfg)) {
        Ok(s) => {
            tracing::info!(files = s.files, records = s.records, applied = s.applied, last_ts = s.last_ts, "reparo: done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("reparo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The pump's and drainer's logging: upstream's level names (`debug` `info` `warn` `error`
/// `fatal`; `RUST_LOG` refines), into `log-file` or stderr.
fn init_log(cfg: &Config) -> anyhow::Result<()> {
    let file = cfg.log_file.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    pump::daemon::logging::init(&cfg.log_level, &file, pump::daemon::logging::Rotate::Never)?;
    Ok(())
}

async fn run(cfg: &Config) -> anyhow::Result<reparo::Summary> {
    Ok(match cfg.dest_type {
        DestType::Print => {
            let mut dest = drainer::sink::print::PrintSink::new(std::io::BufWriter::new(std::io::stdout()));
            reparo::replay(cfg, &mut dest).await?
        }
        DestType::Memory => reparo::replay(cfg, &mut drainer::sink::print::MemorySink::default()).await?,
        DestType::Mysql => {
            use anyhow::Context as _;
            let db = format!("[dest-db] {}:{}", cfg.dest_db.host, cfg.dest_db.port);
            let mut dest = MysqlSink::connect(cfg.mysql_sink_config()).await.with_context(|| db.clone())?;
            let summary = reparo::replay(cfg, &mut dest).await.with_context(|| db.clone())?;
            dest.close().await.with_context(|| db.clone())?;
            summary
        }
    })
}
