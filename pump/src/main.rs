//! The `pump` binary: parses flags and pump.toml, sets up logging, runs the server.
use std::process::ExitCode;

use pump::server::flags::{Command, load};

fn main() -> ExitCode {
    let cmd = match load(std::env::args_os()) {
        Ok(c) => c,
        Err(pump::server::flags::FlagsError::Clap(e)) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
        Err(e) => {
            eprintln!("pump: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match cmd {
        Command::Version => {
            print!("{}", pump::server::version_text());
            return ExitCode::SUCCESS;
        }
        Command::Run(cfg) => cfg,
    };
    let logging = pump::daemon::logging::Rotate::parse(&cfg.log_rotate)
        .and_then(|rotate| pump::daemon::logging::init(&cfg.log_level, &cfg.log_file, rotate));
    if let Err(e) = logging {
        eprintln!("pump: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pump: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(pump::server::run(*cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("pump exits: {e:#}");
            eprintln!("pump: {e:#}");
            ExitCode::FAILURE
        }
    }
}
