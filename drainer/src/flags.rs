//! The drainer command line: upstream's flags, single- or double-dash (through [`pump::goflags`]), each
//! also readable from `BINLOG_SERVER_<NAME>` (upper case, `-` → `_`), plus ours (`-schema-source`).
//!
//! Precedence: an explicit flag, then its environment variable, then the config file, then the default.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use crate::config::Config;

/// Drainer's flags. Every value is optional so that only the ones given override the config file.
#[derive(Debug, Parser, Default)]
#[command(
    name = "drainer",
    about = "TiDB-Binlog Drainer: merges binlogs from every pump and replicates them downstream",
    disable_version_flag = true
)]
pub struct Flags {
    /// Print the version and exit.
    #[arg(short = 'V', action = clap::ArgAction::SetTrue)]
    pub version: bool,
    /// Path of the configuration file (drainer.toml).
    #[arg(long = "config", env = "BINLOG_SERVER_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on for gRPC (Cistern) and HTTP.
    #[arg(long = "addr", env = "BINLOG_SERVER_ADDR")]
    pub addr: Option<String>,
    /// Address registered in etcd.
    #[arg(long = "advertise-addr", env = "BINLOG_SERVER_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Data directory (the savepoint of file/kafka sinks).
    #[arg(long = "data-dir", env = "BINLOG_SERVER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds between scans of etcd for pumps.
    #[arg(long = "detect-interval", env = "BINLOG_SERVER_DETECT_INTERVAL")]
    pub detect_interval: Option<u64>,
    /// PD (or plain etcd) endpoints, comma separated.
    #[arg(long = "pd-urls", env = "BINLOG_SERVER_PD_URLS")]
    pub pd_urls: Option<String>,
    /// Log level: debug, info, warn, error, fatal.
    #[arg(short = 'L', env = "BINLOG_SERVER_L")]
    pub log_level: Option<String>,
    /// Log file (default: stderr).
    #[arg(long = "log-file", env = "BINLOG_SERVER_LOG_FILE")]
    pub log_file: Option<String>,
    /// Node id (default hostname:port).
    #[arg(long = "node-id", env = "BINLOG_SERVER_NODE_ID")]
    pub node_id: Option<String>,
    /// Ours: the HA replication task this drainer belongs to (drainer.toml `task-name`).
    #[arg(long = "task-name", env = "BINLOG_SERVER_TASK_NAME")]
    pub task_name: Option<String>,
    /// Ours: seconds of the HA election lease (drainer.toml `ha-lease-ttl`).
    #[arg(long = "ha-lease-ttl", env = "BINLOG_SERVER_HA_LEASE_TTL")]
    pub ha_lease_ttl: Option<i64>,
    /// Where to start without a checkpoint; -1 = now.
    #[arg(long = "initial-commit-ts", env = "BINLOG_SERVER_INITIAL_COMMIT_TS", allow_negative_numbers = true)]
    pub initial_commit_ts: Option<i64>,
    /// Statements per downstream transaction.
    #[arg(long = "txn-batch", env = "BINLOG_SERVER_TXN_BATCH")]
    pub txn_batch: Option<usize>,
    /// Downstream concurrency.
    #[arg(short = 'c', env = "BINLOG_SERVER_C")]
    pub worker_count: Option<usize>,
    /// Sink: mysql, tidb, file (pb), kafka.
    #[arg(long = "dest-db-type", env = "BINLOG_SERVER_DEST_DB_TYPE")]
    pub dest_db_type: Option<String>,
    /// Schemas to ignore, comma separated.
    #[arg(long = "ignore-schemas", env = "BINLOG_SERVER_IGNORE_SCHEMAS")]
    pub ignore_schemas: Option<String>,
    /// Safe mode.
    #[arg(long = "safe-mode", env = "BINLOG_SERVER_SAFE_MODE", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub safe_mode: Option<bool>,
    /// Split transactions across workers.
    #[arg(long = "enable-dispatch", env = "BINLOG_SERVER_ENABLE_DISPATCH", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_dispatch: Option<bool>,
    /// Do not split transactions across workers.
    #[arg(long = "disable-dispatch", env = "BINLOG_SERVER_DISABLE_DISPATCH", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub disable_dispatch: Option<bool>,
    /// Causality detection.
    #[arg(long = "enable-detect", env = "BINLOG_SERVER_ENABLE_DETECT", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_detect: Option<bool>,
    /// No causality detection.
    #[arg(long = "disable-detect", env = "BINLOG_SERVER_DISABLE_DETECT", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub disable_detect: Option<bool>,
    /// Minutes without work after which /status says Synced.
    #[arg(long = "synced-check-time", env = "BINLOG_SERVER_SYNCED_CHECK_TIME")]
    pub synced_check_time: Option<u64>,
    /// Compression between pump and drainer ("gzip").
    #[arg(long = "compressor", env = "BINLOG_SERVER_COMPRESSOR")]
    pub compressor: Option<String>,
    /// Capacity of the syncer input queue (batches of binlogs).
    #[arg(long = "cache-binlog-count", env = "BINLOG_SERVER_CACHE_BINLOG_COUNT")]
    pub cache_binlog_count: Option<usize>,
    /// Prometheus push gateway address.
    #[arg(long = "metrics-addr", env = "BINLOG_SERVER_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Seconds between pushes to the gateway.
    #[arg(long = "metrics-interval", env = "BINLOG_SERVER_METRICS_INTERVAL")]
    pub metrics_interval: Option<u64>,
    /// Ours: TiDB status API URL to learn schemas from (`[syncer] schema-source`).
    #[arg(long = "schema-source", env = "BINLOG_SERVER_SCHEMA_SOURCE")]
    pub schema_source: Option<String>,
    /// Switch the log file every `hour` or `day`.
    #[arg(long = "log-rotate")]
    pub log_rotate: Option<String>,
}

pub use pump::daemon::config_file::FlagsError;

/// What the command line asks for.
pub type Command = pump::daemon::config_file::Command<Config>;

impl Flags {
    /// Parses a command line (program name first), accepting `-flag` as well as `--flag`.
    pub fn parse_args<I, S>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        pump::daemon::config_file::parse_flags(args)
    }

    /// Lays these flags over `cfg` (flags win).
    pub fn apply(&self, cfg: &mut Config) {
        fn set<T: Clone>(dst: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *dst = v.clone();
            }
        }
        set(&mut cfg.addr, &self.addr);
        set(&mut cfg.advertise_addr, &self.advertise_addr);
        set(&mut cfg.data_dir, &self.data_dir);
        set(&mut cfg.detect_interval, &self.detect_interval);
        set(&mut cfg.pd_urls, &self.pd_urls);
        set(&mut cfg.log_level, &self.log_level);
        set(&mut cfg.log_file, &self.log_file);
        set(&mut cfg.log_rotate, &self.log_rotate);
        set(&mut cfg.node_id, &self.node_id);
        set(&mut cfg.task_name, &self.task_name);
        set(&mut cfg.ha_lease_ttl, &self.ha_lease_ttl);
        set(&mut cfg.initial_commit_ts, &self.initial_commit_ts);
        set(&mut cfg.syncer.txn_batch, &self.txn_batch);
        set(&mut cfg.syncer.worker_count, &self.worker_count);
        set(&mut cfg.syncer.db_type, &self.dest_db_type);
        set(&mut cfg.syncer.ignore_schemas, &self.ignore_schemas);
        set(&mut cfg.syncer.safe_mode, &self.safe_mode);
        set(&mut cfg.syncer.schema_source, &self.schema_source);
        set(&mut cfg.synced_check_time, &self.synced_check_time);
        set(&mut cfg.compressor, &self.compressor);
        set(&mut cfg.cache_binlog_count, &self.cache_binlog_count);
        set(&mut cfg.metrics_addr, &self.metrics_addr);
        set(&mut cfg.metrics_interval, &self.metrics_interval);
        if self.enable_dispatch.is_some() {
            cfg.syncer.enable_dispatch = self.enable_dispatch;
        }
        if self.disable_dispatch.is_some() {
            cfg.syncer.disable_dispatch = self.disable_dispatch;
        }
        if self.enable_detect.is_some() {
            cfg.syncer.enable_detect = self.enable_detect;
        }
        if self.disable_detect.is_some() {
            cfg.syncer.disable_detect = self.disable_detect;
        }
    }
}

/// Turns a command line into what to do: read the config file (if any), lay the flags over it, apply
/// derived defaults and validate.
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
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    flags.apply(&mut cfg);
    cfg.adjust(|k| std::env::var(k).ok())?;
    Ok(Command::Run(Box::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse_args(std::iter::once("drainer").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn single_and_double_dash_flags_override_the_file() {
        let f = flags(&[
            "-addr", "127.0.0.1:9", "--pd-urls=http://e:1", "-initial-commit-ts", "-1", "-c", "4", "-L", "debug",
            "-dest-db-type", "file", "-safe-mode", "-disable-dispatch=false", "-schema-source", "http://t:10080",
            "-txn-batch", "7", "-detect-interval", "2", "-node-id", "n1", "-data-dir", "dd", "-log-rotate", "hour",
        ]);
        let mut cfg = Config::parse("addr = \"1.2.3.4:5\"\ninitial-commit-ts = 99\n[syncer]\ntxn-batch = 3", "x".as_ref())
            .unwrap();
        flags_apply(&f, &mut cfg);
        assert_eq!(cfg.addr, "127.0.0.1:9");
        assert_eq!(cfg.pd_urls, "http://e:1");
        assert_eq!(cfg.initial_commit_ts, -1);
        assert_eq!(cfg.syncer.worker_count, 4);
        assert_eq!((cfg.log_level.as_str(), cfg.log_rotate.as_str()), ("debug", "hour"));
        assert_eq!(cfg.syncer.db_type, "file");
        assert!(cfg.syncer.safe_mode);
        assert!(cfg.syncer.dispatch());
        assert_eq!(cfg.syncer.schema_source, "http://t:10080");
        assert_eq!((cfg.syncer.txn_batch, cfg.detect_interval), (7, 2));
        assert_eq!((cfg.node_id.as_str(), cfg.data_dir.to_str().unwrap()), ("n1", "dd"));
    }

    fn flags_apply(f: &Flags, cfg: &mut Config) {
        f.apply(cfg)
    }

    #[test]
    fn version_flag() {
        assert!(matches!(load(["drainer", "-V"]).unwrap(), Command::Version));
    }

    #[test]
    fn unknown_config_key_fails_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.toml");
        std::fs::write(&p, "[syncer]\ndb_type = \"file\"\n").unwrap();
        let e = load(["drainer".to_string(), "-config".into(), p.to_string_lossy().into_owned()]).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("syncer.db_type") && e.contains("did you mean \"syncer.db-type\""), "{e}");
    }
}
