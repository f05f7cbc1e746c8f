//! The pump command line: upstream's flags, single- or double-dash (through [`crate::goflags`]), each
//! also readable from `PUMP_<NAME>` (upper case, `-` → `_`).
//!
//! Precedence: an explicit flag, then its environment variable, then the config file, then the default.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use super::config::{ByteSize, Config, ConfigError, GcSpec};

/// Pump's flags. Every value is optional so that only the ones given override the config file.
#[derive(Debug, Parser, Default)]
#[command(name = "pump", about = "TiDB-Binlog Pump: stores TiDB's binlogs and serves them to Drainer", disable_version_flag = true)]
pub struct Flags {
    /// Print the version and exit.
    #[arg(short = 'V', action = clap::ArgAction::SetTrue)]
    pub version: bool,
    /// Path of the configuration file (pump.toml).
    #[arg(long = "config", env = "PUMP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Node id (used only if <data-dir>/.node does not exist yet).
    #[arg(long = "node-id", env = "PUMP_NODE_ID")]
    pub node_id: Option<String>,
    /// Address to listen on for gRPC and HTTP.
    #[arg(long = "addr", env = "PUMP_ADDR")]
    pub addr: Option<String>,
    /// Address registered in etcd, through which TiDB and Drainer reach this pump.
    #[arg(long = "advertise-addr", env = "PUMP_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Unix socket to serve gRPC on as well.
    #[arg(long = "socket", env = "PUMP_SOCKET")]
    pub socket: Option<String>,
    /// PD (or plain etcd) endpoints, comma separated.
    #[arg(long = "pd-urls", env = "PUMP_PD_URLS")]
    pub pd_urls: Option<String>,
    /// Data directory.
    #[arg(long = "data-dir", env = "PUMP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds between heartbeats.
    #[arg(long = "heartbeat-interval", env = "PUMP_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<u64>,
    /// Retention: days (integer) or a duration such as 36h.
    #[arg(long = "gc", env = "PUMP_GC")]
    pub gc: Option<String>,
    /// Log level: debug, info, warn, error, fatal.
    #[arg(short = 'L', env = "PUMP_L")]
    pub log_level: Option<String>,
    /// Log file (default: stderr).
    #[arg(long = "log-file", env = "PUMP_LOG_FILE")]
    pub log_file: Option<String>,
    /// Seconds of idleness before a fake binlog is written (config key gen-binlog-interval).
    #[arg(long = "fake-binlog-interval", env = "PUMP_FAKE_BINLOG_INTERVAL")]
    pub fake_binlog_interval: Option<u64>,
    /// Largest gRPC message accepted, in bytes.
    #[arg(long = "max-message-size", env = "PUMP_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<String>,
    /// Prometheus push gateway address.
    #[arg(long = "metrics-addr", env = "PUMP_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Seconds between pushes to the gateway.
    #[arg(long = "metrics-interval", env = "PUMP_METRICS_INTERVAL")]
    pub metrics_interval: Option<u64>,
    /// Accepted for compatibility; pprof endpoints are not served.
    #[arg(long = "enable-debug", num_args = 0..=1, default_missing_value = "true", hide = true)]
    pub enable_debug: Option<bool>,
    /// Switch the log file every `hour` or `day`.
    #[arg(long = "log-rotate")]
    pub log_rotate: Option<String>,
    /// Deprecated upstream; accepted and ignored.
    #[arg(long = "binlog-file-size", hide = true)]
    pub binlog_file_size: Option<String>,
    /// Deprecated upstream; accepted and ignored.
    #[arg(long = "enable-binlog-slice", num_args = 0..=1, default_missing_value = "true", hide = true)]
    pub enable_binlog_slice: Option<bool>,
    /// Deprecated upstream; accepted and ignored.
    #[arg(long = "binlog-slice-size", hide = true)]
    pub binlog_slice_size: Option<String>,
    /// Deprecated upstream; accepted and ignored.
    #[arg(long = "enable-tolerant", num_args = 0..=1, default_missing_value = "true", hide = true)]
    pub enable_tolerant: Option<bool>,
}

pub use crate::daemon::config_file::FlagsError;

/// What the command line asks for.
pub type Command = crate::daemon::config_file::Command<Config>;

impl Flags {
    /// Parses a command line (program name first), accepting `-flag` as well as `--flag`.
    pub fn parse_args<I, S>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        crate::daemon::config_file::parse_flags(args)
    }

    /// Lays these flags over `cfg` (flags win).
    pub fn apply(&self, cfg: &mut Config) -> Result<(), ConfigError> {
        fn set<T: Clone>(dst: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *dst = v.clone();
            }
        }
        set(&mut cfg.node_id, &self.node_id);
        set(&mut cfg.addr, &self.addr);
        set(&mut cfg.advertise_addr, &self.advertise_addr);
        set(&mut cfg.socket, &self.socket);
        set(&mut cfg.pd_urls, &self.pd_urls);
        set(&mut cfg.data_dir, &self.data_dir);
        set(&mut cfg.heartbeat_interval, &self.heartbeat_interval);
        set(&mut cfg.log_level, &self.log_level);
        set(&mut cfg.log_file, &self.log_file);
        set(&mut cfg.log_rotate, &self.log_rotate);
        set(&mut cfg.gen_binlog_interval, &self.fake_binlog_interval);
        set(&mut cfg.metrics_addr, &self.metrics_addr);
        set(&mut cfg.metrics_interval, &self.metrics_interval);
        if let Some(gc) = &self.gc {
            cfg.gc = GcSpec::parse(gc)?;
        }
        if let Some(m) = &self.max_message_size {
            let n = ByteSize::parse(m).map_err(|reason| ConfigError::Invalid { key: "max-message-size", reason })?;
            cfg.max_message_size = n.0;
        }
        Ok(())
    }
}

/// Turns a command line into what to do: read the config file (if any), lay the flags over it, validate.
pub fn load<I, S>(args: I) -> Result<Command, FlagsError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let flags = Flags::parse_args(args)?;
    if flags.version {
        return Ok(Command::Version);
    }
    let mut cfg = match &flags.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    flags.apply(&mut cfg)?;
    cfg.validate()?;
    Ok(Command::Run(Box::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn run(args: &[&str]) -> Config {
        match load(args.iter().copied()).unwrap() {
            Command::Run(c) => *c,
            Command::Version => panic!("not a run"),
        }
    }

    #[test]
    fn single_and_double_dash_and_short_flags() {
        let c = run(&["pump", "-addr", "127.0.0.1:1", "--data-dir=/x", "-L", "debug", "-gc=2", "-pd-urls=http://e:1"]);
        assert_eq!(c.addr, "127.0.0.1:1");
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.gc.0.as_secs(), 2 * 86_400);
        assert_eq!(c.pd_urls, "http://e:1");
        assert!(matches!(load(["pump", "-V"]).unwrap(), Command::Version));
        let c = run(&["pump", "-enable-tolerant", "-log-rotate", "day", "-fake-binlog-interval", "1"]);
        assert_eq!((c.gen_binlog_interval, c.log_rotate.as_str()), (1, "day"));
    }

    #[test]
    fn flags_override_the_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "addr = \"127.0.0.1:7000\"\nheartbeat-interval = 9\nnode-id = \"from-file\"").unwrap();
        let p = f.path().to_str().unwrap();
        let c = run(&["pump", "-config", p, "-heartbeat-interval", "4"]);
        assert_eq!((c.addr.as_str(), c.heartbeat_interval, c.node_id.as_str()), ("127.0.0.1:7000", 4, "from-file"));
    }

    #[test]
    fn unknown_flag_and_bad_file_are_errors() {
        assert!(load(["pump", "-nope"]).is_err());
        let e = load(["pump", "-config", "/nonexistent/pump.toml"]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/pump.toml"), "{e}");
    }
}
