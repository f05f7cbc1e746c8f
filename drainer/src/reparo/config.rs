//! Reparo's configuration: upstream's flags (single- or double-dash, `Reparo_` environment variables)
//! over upstream's `reparo.toml` keys (unknown keys are an error naming the key), over the defaults.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

use super::filter::{Filter, TableRule};
use super::ReparoError;
use crate::config::Security;
use crate::sink::mysql::{MysqlSinkConfig, MysqlTls};

/// The command line. Every value is optional so the TOML file can supply it; the flag wins.
#[derive(Debug, Parser, Default)]
#[command(
    name = "reparo",
    about = "Replays the drainer's file-sink output (binlog files) into MySQL/TiDB, or prints it",
    disable_version_flag = true,
    after_help = "Flags take one dash or two (-data-dir x, --data-dir=x); each can also come from the \
                  environment as Reparo_<FLAG> (upper case, '-' -> '_')."
)]
pub struct Flags {
    /// Print version information and exit.
    #[arg(short = 'V', action = ArgAction::SetTrue)]
    pub version: bool,
    /// Path of the TOML config file (required for dest-type mysql).
    #[arg(long, env = "Reparo_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the binlog files the drainer's file sink wrote.
    #[arg(long = "data-dir", env = "Reparo_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Replay from this local time ("2006-01-02 15:04:05").
    #[arg(long = "start-datetime", env = "Reparo_START_DATETIME")]
    pub start_datetime: Option<String>,
    /// Replay up to this local time ("2006-01-02 15:04:05").
    #[arg(long = "stop-datetime", env = "Reparo_STOP_DATETIME")]
    pub stop_datetime: Option<String>,
    /// Replay from this commit ts (0 = from the start).
    #[arg(long = "start-tso", env = "Reparo_START_TSO", allow_hyphen_values = true)]
    pub start_tso: Option<i64>,
    /// Replay up to this commit ts (0 = to the end).
    #[arg(long = "stop-tso", env = "Reparo_STOP_TSO", allow_hyphen_values = true)]
    pub stop_tso: Option<i64>,
    /// Rows per downstream transaction (default 20).
    #[arg(long = "txn-batch", env = "Reparo_TXN_BATCH")]
    pub txn_batch: Option<usize>,
    /// Parallel downstream connections (default 16).
    #[arg(short = 'c', long = "worker-count", env = "Reparo_WORKER_COUNT")]
    pub worker_count: Option<usize>,
    /// print (default), mysql or memory.
    #[arg(long = "dest-type", env = "Reparo_DEST_TYPE")]
    pub dest_type: Option<String>,
    /// Write with REPLACE/DELETE+REPLACE so replaying twice is harmless.
    #[arg(long = "safe-mode", env = "Reparo_SAFE_MODE", num_args = 0..=1, default_missing_value = "true")]
    pub safe_mode: Option<bool>,
    /// Log level: debug, info, warn, error.
    #[arg(short = 'L', long = "log-level", env = "Reparo_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log file (default: stderr).
    #[arg(long = "log-file", env = "Reparo_LOG_FILE")]
    pub log_file: Option<PathBuf>,
}

impl Flags {
    /// Parses Go-style (`-flag value`) or clap-style arguments.
    pub fn parse_from_args<I, S>(args: I) -> Result<Flags, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let cmd = Flags::command();
        let longs = pump::goflags::long_flags(&cmd);
        let longs: Vec<&str> = longs.iter().map(String::as_str).collect();
        let args = pump::goflags::normalize(args, &longs);
        let matches = cmd.try_get_matches_from(args)?;
        Flags::from_arg_matches(&matches)
    }
}

/// How long Reparo keeps retrying an unreachable or failing `[dest-db]` before it gives up.
pub const MYSQL_RETRY_FOR: Duration = Duration::from_secs(15);

/// `[dest-db]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DestDb {
    /// Host.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// User.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password.
    #[serde(default)]
    pub password: String,
    /// `[dest-db.security]` (ours; upstream's Reparo has no TLS): `ssl-ca`, `ssl-cert`, `ssl-key`
    /// as in the drainer's `[syncer.to.security]`. TLS is on when `ssl-ca` is set.
    #[serde(default)]
    pub security: Security,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    3306
}
fn default_user() -> String {
    "root".into()
}

impl Default for DestDb {
    fn default() -> Self {
        Self {
            host: default_host(),
            port: default_port(),
            user: default_user(),
            password: String::new(),
            security: Security::default(),
        }
    }
}

/// `{db-name, tbl-name}` in `[[replicate-do-table]]` and `[[replicate-ignore-table]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TomlTable {
    /// Schema name (or `~regex`).
    #[serde(rename = "db-name")]
    pub db_name: String,
    /// Table name (or `~regex`).
    #[serde(rename = "tbl-name")]
    pub tbl_name: String,
}

/// `reparo.toml`, upstream's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TomlConfig {
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    log_file: Option<PathBuf>,
    start_datetime: Option<String>,
    stop_datetime: Option<String>,
    start_tso: Option<i64>,
    stop_tso: Option<i64>,
    txn_batch: Option<usize>,
    worker_count: Option<usize>,
    dest_type: Option<String>,
    safe_mode: Option<bool>,
    dest_db: Option<DestDb>,
    #[serde(default)]
    replicate_do_db: Vec<String>,
    #[serde(default)]
    replicate_do_table: Vec<TomlTable>,
    #[serde(default)]
    replicate_ignore_db: Vec<String>,
    #[serde(default)]
    replicate_ignore_table: Vec<TomlTable>,
}

/// Where restored transactions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestType {
    /// Print every transaction to stdout.
    Print,
    /// Apply to `[dest-db]`.
    Mysql,
    /// Decode everything, keep nothing (upstream's test destination).
    Memory,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The binlog file directory.
    pub data_dir: PathBuf,
    /// Lowest commit ts replayed (0 = no bound).
    pub start_ts: i64,
    /// Highest commit ts replayed (0 = no bound).
    pub stop_ts: i64,
    /// Rows per downstream transaction.
    pub txn_batch: usize,
    /// Parallel downstream connections.
    pub worker_count: usize,
    /// Destination.
    pub dest_type: DestType,
    /// `[dest-db]`.
    pub dest_db: DestDb,
    /// `[dest-db.security]` resolved: TLS to the destination, `None` = plain TCP.
    pub dest_tls: Option<MysqlTls>,
    /// Safe mode.
    pub safe_mode: bool,
    /// Schema/table filter.
    pub filter: Filter,
    /// Log level.
    pub log_level: String,
    /// Log file.
    pub log_file: Option<PathBuf>,
}

/// `"2006-01-02 15:04:05"` in the local time zone as a TSO: `unix_ms << 18`.
pub fn datetime_to_tso(s: &str) -> Result<i64, ReparoError> {
    use chrono::TimeZone;
    let naive = chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S")
        .map_err(|e| ReparoError::Config(format!("bad datetime {s:?} (want \"2006-01-02 15:04:05\"): {e}")))?;
    let local = chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .ok_or_else(|| ReparoError::Config(format!("datetime {s:?} does not exist in the local time zone")))?;
    Ok(local.timestamp_millis() << 18)
}

impl Config {
    /// The MySQL sink settings for `dest-type = "mysql"`: `[dest-db]` (with its TLS), `safe-mode`,
    /// `txn-batch`, `worker-count`; no checkpoint (a replay is made idempotent by safe mode, as upstream) and no
    /// automatic safe mode at start.
    pub fn mysql_sink_config(&self) -> MysqlSinkConfig {
        MysqlSinkConfig {
            host: self.dest_db.host.clone(),
            port: self.dest_db.port,
            user: self.dest_db.user.clone(),
            password: self.dest_db.password.clone(),
            checkpoint: None,
            safe_mode: self.safe_mode,
            safe_mode_after_start: Duration::ZERO,
            txn_batch: self.txn_batch,
            worker_count: self.worker_count,
            retry_for: MYSQL_RETRY_FOR,
            tls: self.dest_tls.clone(),
            ..Default::default()
        }
    }

    /// Resolves flags over the TOML file (if `-config` is given) over the defaults.
    pub fn resolve(flags: Flags) -> Result<Config, ReparoError> {
        let toml_cfg = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ReparoError::Config(format!("reading {}: {e}", path.display())))?;
                toml::from_str::<TomlConfig>(&text)
                    .map_err(|e| ReparoError::Config(format!("{}: {}", path.display(), e.message())))?
            }
            None => TomlConfig::default(),
        };
        let data_dir = flags
            .data_dir
            .or(toml_cfg.data_dir)
            .ok_or_else(|| ReparoError::Config("data-dir is required".into()))?;
        let bound = |tso: Option<i64>, dt: Option<String>| -> Result<i64, ReparoError> {
            match (tso, dt.filter(|s| !s.is_empty())) {
                (Some(t), _) if t != 0 => Ok(t),
                (_, Some(dt)) => datetime_to_tso(&dt),
                _ => Ok(0),
            }
        };
        let start_ts = bound(flags.start_tso.or(toml_cfg.start_tso), flags.start_datetime.or(toml_cfg.start_datetime))?;
        let stop_ts = bound(flags.stop_tso.or(toml_cfg.stop_tso), flags.stop_datetime.or(toml_cfg.stop_datetime))?;
        if stop_ts != 0 && start_ts > stop_ts {
            return Err(ReparoError::Config(format!("start ts {start_ts} is after stop ts {stop_ts}")));
        }
        let dest_type = match flags.dest_type.or(toml_cfg.dest_type).as_deref().unwrap_or("print") {
            "print" => DestType::Print,
            "mysql" | "tidb" => DestType::Mysql,
            "memory" => DestType::Memory,
            other => return Err(ReparoError::Config(format!("unknown dest-type {other:?} (print, mysql, memory)"))),
        };
        if dest_type == DestType::Mysql && flags.config.is_none() && toml_cfg.dest_db.is_none() {
            return Err(ReparoError::Config("dest-type mysql needs -config with a [dest-db] section".into()));
        }
        let rules = |v: Vec<TomlTable>| -> Result<Vec<TableRule>, ReparoError> {
            v.into_iter().map(|t| TableRule::new(&t.db_name, &t.tbl_name)).collect()
        };
        let filter = Filter::new(
            &toml_cfg.replicate_do_db,
            rules(toml_cfg.replicate_do_table)?,
            &toml_cfg.replicate_ignore_db,
            rules(toml_cfg.replicate_ignore_table)?,
        )?;
        let txn_batch = flags.txn_batch.or(toml_cfg.txn_batch).unwrap_or(20);
        let worker_count = flags.worker_count.or(toml_cfg.worker_count).unwrap_or(16);
        if txn_batch == 0 || worker_count == 0 {
            return Err(ReparoError::Config("txn-batch and worker-count must be at least 1".into()));
        }
        let dest_db = toml_cfg.dest_db.unwrap_or_default();
        let dest_tls = crate::setup::tls_settings("[dest-db.security]", &dest_db.security).map_err(|(key, why)| {
            let key = if key.is_empty() { String::new() } else { format!(" {key}") };
            ReparoError::Config(format!("[dest-db.security]{key}: {why}"))
        })?;
        Ok(Config {
            data_dir,
            start_ts,
            stop_ts,
            txn_batch,
            worker_count,
            dest_type,
            dest_db,
            dest_tls,
            safe_mode: flags.safe_mode.or(toml_cfg.safe_mode).unwrap_or(false),
            filter,
            log_level: flags.log_level.or(toml_cfg.log_level).unwrap_or_else(|| "info".into()),
            log_file: flags.log_file.or(toml_cfg.log_file),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str]) -> Result<Config, ReparoError> {
        let mut v = vec!["reparo"];
        v.extend_from_slice(args);
        Config::resolve(Flags::parse_from_args(v).map_err(|e| ReparoError::Config(e.to_string()))?)
    }

    #[test]
    fn flags_take_one_or_two_dashes_and_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reparo.toml");
        std::fs::write(
            &path,
            r#"
data-dir = "from-file"
txn-batch = 7
dest-type = "mysql"
replicate-do-db = ["A"]
[[replicate-ignore-table]]
db-name = "a"
tbl-name = "~^tmp_"
[dest-db]
host = "h"
port = 3307
user = "u"
password = "p"
"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = resolve(&["-config", p, "-data-dir", "from-flag", "-c", "3", "--start-tso=5", "-safe-mode"]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("from-flag"));
        assert_eq!((c.txn_batch, c.worker_count, c.start_ts, c.stop_ts, c.safe_mode), (7, 3, 5, 0, true));
        assert_eq!(c.dest_type, DestType::Mysql);
        let want = DestDb { host: "h".into(), port: 3307, user: "u".into(), password: "p".into(), ..Default::default() };
        assert_eq!(c.dest_db, want);
        assert_eq!(c.dest_tls, None);
        assert!(c.filter.skip("b", "x"), "only db a is replicated");
        assert!(c.filter.skip("a", "tmp_1"));
        assert!(!c.filter.skip("a", "t"));
    }

    #[test]
    fn dest_db_security_turns_on_tls_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, "x").unwrap();
            p.to_str().unwrap().to_owned()
        };
        let (ca, cert, key) = (f("ca.pem"), f("c.pem"), f("k.pem"));
        let with = |security: &str| {
            let path = dir.path().join("r.toml");
            std::fs::write(&path, format!("data-dir = \"d\"\ndest-type = \"mysql\"\n[dest-db]\nport = 3307\n{security}")).unwrap();
            resolve(&["-config", path.to_str().unwrap()])
        };
        let c = with(&format!("[dest-db.security]\nssl-ca = {ca:?}\nssl-cert = {cert:?}\nssl-key = {key:?}\n")).unwrap();
        let want = MysqlTls { ca: ca.clone().into(), client: Some((cert.clone().into(), key.clone().into())) };
        assert_eq!(c.dest_tls.as_ref(), Some(&want));
        assert_eq!(c.mysql_sink_config().tls, Some(want));
        assert_eq!(c.mysql_sink_config().port, 3307);
        let c = with(&format!("[dest-db.security]\nssl-ca = {ca:?}\n")).unwrap();
        assert_eq!(c.dest_tls, Some(MysqlTls { ca: ca.clone().into(), client: None }));
        assert_eq!(with("").unwrap().dest_tls, None);
        let e = with("[dest-db.security]\nssl-ca = \"/no/such/ca.pem\"\n").unwrap_err().to_string();
        assert!(e.contains("[dest-db.security] ssl-ca") && e.contains("/no/such/ca.pem"), "{e}");
        let e = with(&format!("[dest-db.security]\nssl-ca = {ca:?}\nssl-key = {key:?}\n")).unwrap_err().to_string();
        assert!(e.contains("together"), "{e}");
        let e = with("[dest-db.security]\nssl-kay = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("ssl-kay"), "{e}");
    }

    #[test]
    fn the_example_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/reparo.toml");
        let c = resolve(&["-config", path.to_str().unwrap()]).unwrap();
        assert_eq!((c.dest_type, c.txn_batch, c.worker_count, c.dest_tls.clone()), (DestType::Mysql, 20, 16, None));
        // the commented [dest-db.security] block, uncommented, is the TLS section
        let text = std::fs::read_to_string(&path).unwrap().replace("# [dest-db.security]", "[dest-db.security]");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, text.replace("# ssl-ca = \"/path/to/ca.pem\"", "ssl-ca = \"/no/ca.pem\"")).unwrap();
        let e = resolve(&["-config", p.to_str().unwrap()]).unwrap_err().to_string();
        assert!(e.contains("[dest-db.security] ssl-ca") && e.contains("/no/ca.pem"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, "data-dir = \"x\"\ntxn-bacth = 3\n").unwrap();
        let err = resolve(&["-config", path.to_str().unwrap()]).unwrap_err().to_string();
        assert!(err.contains("txn-bacth"), "{err}");
        let err = resolve(&["-data-dir", "x", "-dest-type", "kafka"]).unwrap_err().to_string();
        assert!(err.contains("kafka"), "{err}");
        let err = resolve(&["-data-dir", "x", "-dest-type", "mysql"]).unwrap_err().to_string();
        assert!(err.contains("-config"), "{err}");
        let err = resolve(&[]).unwrap_err().to_string();
        assert!(err.contains("data-dir"), "{err}");
        let err = resolve(&["-data-dir", "x", "-start-datetime", "yesterday"]).unwrap_err().to_string();
        assert!(err.contains("yesterday"), "{err}");
    }

    #[test]
    fn datetimes_become_tsos() {
        use chrono::TimeZone;
        let want = chrono::Local.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap().timestamp_millis() << 18;
        let c = resolve(&["-data-dir", "x", "-stop-datetime", "2024-03-01 12:00:00"]).unwrap();
        assert_eq!(c.stop_ts, want);
        let c = resolve(&["-data-dir", "x", "-stop-datetime", "2024-03-01 12:00:00", "-stop-tso", "9"]).unwrap();
        assert_eq!(c.stop_ts, 9, "a tso wins over a datetime");
    }
}
