//! Logging through `tracing`: level from `-L`/`log-level`, output to `log-file` (appended) or stderr.

use std::sync::Mutex;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The level is not one of debug, info, warn, error, fatal.
    #[error("invalid log level {0:?} (expected debug, info, warn, error or fatal)")]
    Level(String),
    /// The log file could not be opened.
    #[error("opening log-file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Maps upstream's level names to a tracing level.
pub fn level(name: &str) -> Result<tracing::Level, LogError> {
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "debug" | "trace" => tracing::Level::DEBUG,
        "" | "info" => tracing::Level::INFO,
        "warn" | "warning" => tracing::Level::WARN,
        "error" | "fatal" | "panic" => tracing::Level::ERROR,
        _ => return Err(LogError::Level(name.into())),
    })
}

/// Installs the global subscriber. `RUST_LOG` refines the level when set.
pub fn init(level_name: &str, log_file: &str) -> Result<(), LogError> {
    let lvl = level(level_name)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(lvl.as_str().to_ascii_lowercase()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if log_file.is_empty() {
        let _ = builder.with_writer(std::io::stderr).try_init();
    } else {
        if let Some(dir) = std::path::Path::new(log_file).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LogError::File { path: log_file.into(), source })?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .map_err(|source| LogError::File { path: log_file.into(), source })?;
        let _ = builder.with_ansi(false).with_writer(Mutex::new(f)).try_init();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn upstream_level_names() {
        assert_eq!(super::level("fatal").unwrap(), tracing::Level::ERROR);
        assert_eq!(super::level("warn").unwrap(), tracing::Level::WARN);
        assert!(super::level("loud").is_err());
    }
}
