//! `pump.toml`: every key of upstream's pump config with its default, parsed strictly.
//!
//! Parsing is two steps: the TOML tree is checked against the keys of [`Config`]'s own serde structs
//! (`crate::daemon::config_file::parse_strict`), naming the first unknown key with the nearest valid
//! one; then serde fills [`Config`] (types and values checked there).
//! Precedence (see [`super::flags`]): command-line flag > `PUMP_*` environment variable > file > default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default listen address (upstream's flag default is the host's IP; we pick loopback).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8250";
/// Default `pd-urls`.
pub const DEFAULT_PD_URLS: &str = "http://127.0.0.1:2379";
/// Default `data-dir`.
pub const DEFAULT_DATA_DIR: &str = "data.pump";
/// Default `stop-write-at-available-space`: 10 GiB.
pub const DEFAULT_STOP_WRITE_SPACE: u64 = 10 << 30;
/// Default `-max-message-size`: Go's `MaxInt64 - 4 MiB`, i.e. no practical limit.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = (i64::MAX as u64) - (4 << 20);

use crate::daemon::Security;
pub use crate::daemon::config_file::ConfigError;
use crate::daemon::config_file::parse_go_duration;

/// The pump configuration, with upstream's keys and defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Listen address for gRPC and HTTP (`host:port`, `http://` allowed).
    pub addr: String,
    /// Address registered in etcd; defaults to `addr`.
    pub advertise_addr: String,
    /// Unix socket to serve gRPC on as well (empty: none).
    pub socket: String,
    /// PD (or plain etcd) endpoints, comma separated.
    pub pd_urls: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Seconds between heartbeats to etcd.
    pub heartbeat_interval: u64,
    /// How long to keep binlogs: an integer is days, a string a Go duration.
    pub gc: GcSpec,
    /// Ours: keep binlogs past `gc` until every non-offline drainer has consumed them (the 2.1-era rule
    /// upstream dropped in v3.0.1). Off by default, as upstream: GC goes by time, and a drainer behind the
    /// GC ts is a warning, `binlog_pump_drainer_behind_gc_count` and an alert.
    pub gc_waits_for_drainers: bool,
    /// Seconds of idleness after which a fake binlog is written.
    pub gen_binlog_interval: u64,
    /// Node id (used only if `<data-dir>/.node` does not exist).
    pub node_id: String,
    /// Log file (empty: stderr).
    pub log_file: String,
    /// Log level: debug, info, warn, error, fatal.
    pub log_level: String,
    /// TLS.
    pub security: Security,
    /// Storage options.
    pub storage: Storage,
    /// Our extension: where to learn the fate of a Prewrite whose Commit never came.
    pub resolver: ResolverConfig,
    /// Flag-only: `-log-rotate` (hour, day; empty: never).
    #[serde(skip)]
    pub log_rotate: String,
    /// Flag-only: the largest gRPC message accepted, in bytes.
    #[serde(skip)]
    pub max_message_size: u64,
    /// Flag-only: Prometheus push gateway address (empty: no push).
    #[serde(skip)]
    pub metrics_addr: String,
    /// Flag-only: seconds between pushes to the gateway.
    #[serde(skip)]
    pub metrics_interval: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR.into(),
            advertise_addr: String::new(),
            socket: String::new(),
            pd_urls: DEFAULT_PD_URLS.into(),
            data_dir: DEFAULT_DATA_DIR.into(),
            heartbeat_interval: 2,
            gc: GcSpec::default(),
            gc_waits_for_drainers: false,
            gen_binlog_interval: 3,
            node_id: String::new(),
            log_file: String::new(),
            log_level: "info".into(),
            security: Security::default(),
            storage: Storage::default(),
            resolver: ResolverConfig::default(),
            log_rotate: String::new(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            metrics_addr: String::new(),
            metrics_interval: 15,
        }
    }
}

/// `[resolver]` (ours; upstream always asks TiKV through PD): the sources of truth asked about a
/// Prewrite whose Commit never came (`pump::server::resolver`). Until one answers, such a Prewrite waits
/// for its Commit, a Rollback or an operator's `binlogctl -cmd settle-prewrite`; it is never dropped.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ResolverConfig {
    /// Ask TiKV through PD (`MvccGetByKey`, then `KvCheckTxnStatus` past max-txn-timeout), as upstream
    /// does (default true).
    pub tikv: bool,
    /// TiDB status API URLs (`http://tidb:10080`; `https://` with `[security]`), asked in order after TiKV.
    pub tidb_status_urls: Vec<String>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self { tikv: true, tidb_status_urls: Vec::new() }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// fdatasync every write before acknowledging it.
    #[serde(rename = "sync-log")]
    pub sync_log: bool,
    /// Upstream's kv channel capacity; accepted, not used by our store.
    pub kv_chan_cap: u64,
    /// Seconds after which a write is logged as slow.
    pub slow_write_threshold: f64,
    /// Refuse non-fake writes when the disk has no more than this many bytes free.
    #[serde(rename = "stop-write-at-available-space")]
    pub stop_write_at_available_space: ByteSize,
    /// Our extension (no upstream equivalent): how many shards (segment logs, each with its own group
    /// commit) a fresh store directory gets (default 1: on one device one log measured faster than
    /// two, bench/RESULTS.md "Shards and linger on a quiet machine"); 0 = the available cores, at
    /// most 8. An existing directory keeps the count it was written with (`pump-store/FORMAT.md`).
    pub shards: usize,
    /// Upstream's leveldb options; accepted and checked for type, not used by our store.
    pub kv: KvOptions,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            sync_log: true,
            kv_chan_cap: 1 << 20,
            slow_write_threshold: 1.0,
            stop_write_at_available_space: ByteSize(DEFAULT_STOP_WRITE_SPACE),
            shards: 1,
            kv: KvOptions::default(),
        }
    }
}

/// `[storage.kv]`: upstream's goleveldb options. Our store has no leveldb, so these are parsed and
/// ignored; they exist so that an upstream pump.toml loads unchanged.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
#[allow(missing_docs)]
pub struct KvOptions {
    pub block_cache_capacity: u64,
    pub block_restart_interval: u64,
    pub block_size: u64,
    #[serde(rename = "compaction-L0-trigger")]
    pub compaction_l0_trigger: u64,
    pub compaction_table_size: u64,
    pub compaction_total_size: u64,
    pub compaction_total_size_multiplier: f64,
    pub write_buffer: u64,
    #[serde(rename = "write-L0-pause-trigger")]
    pub write_l0_pause_trigger: u64,
    #[serde(rename = "write-L0-slowdown-trigger")]
    pub write_l0_slowdown_trigger: u64,
}

impl Default for KvOptions {
    fn default() -> Self {
        Self {
            block_cache_capacity: 8 << 20,
            block_restart_interval: 16,
            block_size: 4096,
            compaction_l0_trigger: 8,
            compaction_table_size: 64 << 20,
            compaction_total_size: 512 << 20,
            compaction_total_size_multiplier: 8.0,
            write_buffer: 64 << 20,
            write_l0_pause_trigger: 24,
            write_l0_slowdown_trigger: 17,
        }
    }
}

/// The `gc` retention: an integer number of days or a Go duration string (`"36h"`, `"1h30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSpec(pub Duration);

impl Default for GcSpec {
    fn default() -> Self {
        GcSpec(Duration::from_secs(7 * 86_400))
    }
}

impl GcSpec {
    /// Parses the flag form: digits are days, anything else a Go duration.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        let d = if let Ok(days) = s.parse::<u64>() {
            Duration::from_secs(days.saturating_mul(86_400))
        } else {
            parse_go_duration(s).map_err(|reason| ConfigError::Invalid { key: "gc", reason })?
        };
        if d.is_zero() {
            return Err(ConfigError::Invalid { key: "gc", reason: format!("{s:?} must be greater than 0") });
        }
        Ok(GcSpec(d))
    }
}

impl<'de> Deserialize<'de> for GcSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Days(i64),
            Text(String),
        }
        let s = match Raw::deserialize(d)? {
            Raw::Days(n) if n <= 0 => return Err(serde::de::Error::custom(format!("gc = {n}: must be greater than 0"))),
            Raw::Days(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        GcSpec::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A byte count written as an integer or a humanized string (`"10 GiB"`, `"500MB"`, `"1k"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses go-humanize style sizes: SI units (kB = 1000) and IEC units (KiB = 1024), case-insensitive.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = (&t[..split], t[split..].trim().to_ascii_lowercase());
        let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size like \"10 GiB\""))?;
        let mult: f64 = match unit.as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "ki" | "kib" => 1024.0,
            "m" | "mb" => 1e6,
            "mi" | "mib" => 1024f64.powi(2),
            "g" | "gb" => 1e9,
            "gi" | "gib" => 1024f64.powi(3),
            "t" | "tb" => 1e12,
            "ti" | "tib" => 1024f64.powi(4),
            "p" | "pb" => 1e15,
            "pi" | "pib" => 1024f64.powi(5),
            _ => return Err(format!("{s:?}: unknown size unit {unit:?}")),
        };
        Ok(ByteSize((n * mult) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Config {
    /// Parses pump.toml text (`path` only names the file in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        crate::daemon::config_file::parse_strict(text, path)
    }

    /// Reads and parses a pump.toml file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        crate::daemon::config_file::read_strict(path)
    }

    /// Checks values and fills derived defaults (`advertise-addr` from `addr`); run after flags are applied.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.addr = strip_scheme(&self.addr).to_owned();
        if self.addr.is_empty() {
            self.addr = DEFAULT_ADDR.into();
        }
        split_host_port(&self.addr).map_err(|reason| ConfigError::Invalid { key: "addr", reason })?;
        if self.advertise_addr.is_empty() {
            self.advertise_addr = self.addr.clone();
        }
        self.advertise_addr = strip_scheme(&self.advertise_addr).to_owned();
        let (host, _) = split_host_port(&self.advertise_addr)
            .map_err(|reason| ConfigError::Invalid { key: "advertise-addr", reason })?;
        if host.is_empty() || host == "0.0.0.0" || host == "[::]" || host == "::" {
            return Err(ConfigError::Invalid {
                key: "advertise-addr",
                reason: format!(
                    "{:?} has no reachable host; set advertise-addr to an address other nodes can dial",
                    self.advertise_addr
                ),
            });
        }
        crate::etcd::parse_pd_urls(&self.pd_urls)
            .map_err(|e| ConfigError::Invalid { key: "pd-urls", reason: e.to_string() })?;
        if self.heartbeat_interval == 0 {
            return Err(ConfigError::Invalid { key: "heartbeat-interval", reason: "must be at least 1 (second)".into() });
        }
        if self.gen_binlog_interval == 0 {
            return Err(ConfigError::Invalid { key: "gen-binlog-interval", reason: "must be at least 1 (second)".into() });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid { key: "data-dir", reason: "must not be empty".into() });
        }
        let s = &self.security;
        if !s.enabled() && (!s.ssl_cert.is_empty() || !s.ssl_key.is_empty()) {
            return Err(ConfigError::Invalid { key: "security", reason: "ssl-cert/ssl-key need ssl-ca".into() });
        }
        if s.enabled() && (s.ssl_cert.is_empty() || s.ssl_key.is_empty()) {
            return Err(ConfigError::Invalid { key: "security", reason: "ssl-ca needs ssl-cert and ssl-key".into() });
        }
        Ok(())
    }
}

/// `addr` without an `http://` or `https://` prefix.
pub fn strip_scheme(addr: &str) -> &str {
    let a = addr.trim();
    a.strip_prefix("http://").or_else(|| a.strip_prefix("https://")).unwrap_or(a).trim_end_matches('/')
}

/// Splits `host:port`, checking the port.
pub fn split_host_port(addr: &str) -> Result<(&str, u16), String> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} is not host:port"))?;
    let port = port.parse::<u16>().map_err(|_| format!("{addr:?}: port is not a number 0-65535"))?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("pump.toml"))
    }

    #[test]
    fn defaults_match_upstream() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.addr, "127.0.0.1:8250");
        assert_eq!(c.pd_urls, "http://127.0.0.1:2379");
        assert_eq!(c.data_dir, PathBuf::from("data.pump"));
        assert_eq!((c.heartbeat_interval, c.gen_binlog_interval), (2, 3));
        assert_eq!(c.gc.0, Duration::from_secs(7 * 86_400));
        assert!(c.storage.sync_log);
        assert_eq!(c.storage.kv_chan_cap, 1_048_576);
        assert_eq!(c.storage.stop_write_at_available_space.0, 10 * 1024 * 1024 * 1024);
        assert_eq!(c.storage.kv.compaction_l0_trigger, 8);
        assert_eq!(c.log_level, "info");
    }

    #[test]
    fn every_key_parses() {
        let c = parse(
            r#"
            addr = "0.0.0.0:9000"
            advertise-addr = "10.0.0.1:9000"
            socket = "/tmp/p.sock"
            pd-urls = "http://a:2379,http://b:2379"
            data-dir = "/d"
            heartbeat-interval = 5
            gc = "36h"
            gen-binlog-interval = 1
            node-id = "p1"
            log-file = "/l"
            log-level = "debug"
            [security]
            ssl-ca = "ca"
            ssl-cert = "c"
            ssl-key = "k"
            cert-allowed-cn = ["tidb", "drainer"]
            [storage]
            sync-log = false
            kv_chan_cap = 10
            slow_write_threshold = 0.5
            stop-write-at-available-space = "1 gib"
            shards = 3
            [storage.kv]
            block-cache-capacity = 1
            block-restart-interval = 2
            block-size = 3
            compaction-L0-trigger = 4
            compaction-table-size = 5
            compaction-total-size = 6
            compaction-total-size-multiplier = 7.5
            write-buffer = 8
            write-L0-pause-trigger = 9
            write-L0-slowdown-trigger = 10
            "#,
        )
        .unwrap();
        assert_eq!(c.gc.0, Duration::from_secs(36 * 3600));
        assert_eq!(c.security.cert_allowed_cn, ["tidb", "drainer"]);
        assert_eq!(c.storage.stop_write_at_available_space.0, 1 << 30);
        assert!(!c.storage.sync_log);
        assert_eq!(c.storage.shards, 3);
        assert_eq!(c.storage.kv.write_l0_slowdown_trigger, 10);
        assert_eq!(c.node_id, "p1");
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let e = parse("adr = \"x:1\"").unwrap_err().to_string();
        assert!(e.contains("unknown configuration options: adr") && e.contains("did you mean \"addr\""), "{e}");
        let e = parse("[storage]\nsync_log = true").unwrap_err().to_string();
        assert!(e.contains("storage.sync_log") && e.contains("\"storage.sync-log\""), "{e}");
        let e = parse("[storage.kv]\ncompaction-l0-trigger = 1").unwrap_err().to_string();
        assert!(e.contains("\"storage.kv.compaction-L0-trigger\""), "{e}");
        let e = parse("[nothing]\nx = 1").unwrap_err().to_string();
        assert!(e.contains("unknown configuration options: nothing") && !e.contains("did you mean"), "{e}");
        // A section name used as a plain key is unknown too.
        assert!(parse("storage = 1").is_err());
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(parse("gc = 0").unwrap_err().to_string().contains("greater than 0"));
        assert!(parse("gc = \"7 days\"").unwrap_err().to_string().contains("not a duration"));
        assert!(parse("heartbeat-interval = \"2\"").is_err());
        assert!(parse("[storage]\nstop-write-at-available-space = \"10 parsecs\"").is_err());
        assert!(parse("addr = ").is_err());
    }

    #[test]
    fn go_durations_and_sizes() {
        assert_eq!(GcSpec::parse("3").unwrap().0, Duration::from_secs(3 * 86_400));
        assert!(GcSpec::parse("0").is_err());
        assert_eq!(ByteSize::parse("10 GiB").unwrap().0, 10 << 30);
        assert_eq!(ByteSize::parse("10 gib").unwrap().0, 10 << 30);
        assert_eq!(ByteSize::parse("500MB").unwrap().0, 500_000_000);
        assert_eq!(ByteSize::parse("1024").unwrap().0, 1024);
    }

    #[test]
    fn validate_derives_advertise_and_rejects_wildcards() {
        let mut c = Config { addr: "http://127.0.0.1:8250".into(), ..Config::default() };
        c.validate().unwrap();
        assert_eq!((c.addr.as_str(), c.advertise_addr.as_str()), ("127.0.0.1:8250", "127.0.0.1:8250"));
        let mut c = Config { addr: "0.0.0.0:8250".into(), ..Config::default() };
        assert!(c.validate().unwrap_err().to_string().contains("advertise-addr"));
        let mut c = Config { addr: "0.0.0.0:8250".into(), advertise_addr: "10.1.1.1:8250".into(), ..Config::default() };
        c.validate().unwrap();
        let mut c = Config { pd_urls: "nope".into(), ..Config::default() };
        assert!(c.validate().unwrap_err().to_string().contains("pd-urls"));
    }

    #[test]
    fn deploy_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/pump.toml");
        let mut c = Config::from_file(&path).unwrap();
        c.validate().unwrap();
        assert_eq!(c.addr, "192.168.0.11:8250");
        assert_eq!(c.gc.0, Duration::from_secs(7 * 86_400));
        assert!(c.storage.sync_log);
        assert_eq!(c.storage.stop_write_at_available_space.0, 10 << 30);
    }
}
