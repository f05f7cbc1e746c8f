//! `drainer.toml`: every key of upstream's drainer config with its default, parsed strictly, plus ours
//! (`[syncer] schema-source`).
//!
//! Parsing is two steps: the TOML tree is checked against the keys of [`Config`]'s own serde structs
//! (`pump::daemon::config_file::parse_strict`), naming the first unknown key, the file and the nearest
//! valid key; then serde fills [`Config`] (types checked there), and
//! [`Config::adjust`] applies upstream's derived defaults (environment for `[syncer.to]`, `pb` → `file`,
//! the file sink's directory) and validates.
//!
//! Sinks read their own keys from [`ToConfig`] (`[syncer.to]`) and [`CheckpointConfig`]
//! (`[syncer.to.checkpoint]`); the drainer core never interprets sink keys beyond the defaults.
//!
//! Precedence (see [`crate::flags`]): command-line flag > `BINLOG_SERVER_*` environment variable >
//! file > default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default listen address (upstream's flag default is the host's IP; we pick loopback).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8249";
/// Default `pd-urls`.
pub const DEFAULT_PD_URLS: &str = "http://127.0.0.1:2379";
/// Default `data-dir`.
pub const DEFAULT_DATA_DIR: &str = "data.drainer";
/// Default `ignore-schemas`.
pub const DEFAULT_IGNORE_SCHEMAS: &str = "INFORMATION_SCHEMA,PERFORMANCE_SCHEMA,mysql";

/// Default `ha-lease-ttl`, seconds: a killed active is replaced within about this long (see [`crate::ha`]).
pub const DEFAULT_LEASE_TTL: i64 = 3;

pub use pump::daemon::Security;
pub use pump::daemon::config_file::{ConfigError, invalid};

/// The drainer configuration, with upstream's keys and defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Listen address for the Cistern gRPC service and the HTTP API.
    pub addr: String,
    /// Address registered in etcd; defaults to `addr`.
    pub advertise_addr: String,
    /// Node id; default `hostname:port` of `addr`.
    pub node_id: String,
    /// Ours: the HA replication task this drainer belongs to (empty: a lone drainer, as upstream).
    /// See [`crate::ha`].
    pub task_name: String,
    /// Ours: seconds of the HA election lease (with `task-name`).
    pub ha_lease_ttl: i64,
    /// Data directory (holds `savepoint` for file/kafka sinks).
    pub data_dir: PathBuf,
    /// Seconds between scans of etcd for pumps.
    pub detect_interval: u64,
    /// PD (or plain etcd) endpoints, comma separated.
    pub pd_urls: String,
    /// Log file (empty: stderr).
    pub log_file: String,
    /// Log level: debug, info, warn, error, fatal.
    pub log_level: String,
    /// Flag-only: `-log-rotate` (hour, day; empty: never).
    #[serde(skip)]
    pub log_rotate: String,
    /// Where to start when there is no checkpoint; -1 = the current TSO.
    pub initial_commit_ts: i64,
    /// Minutes without anything to sync after which `/status` reports `Synced: true`.
    pub synced_check_time: u64,
    /// Compression between pump and drainer: "" or "gzip".
    pub compressor: String,
    /// TLS for gRPC, HTTP and etcd.
    pub security: Security,
    /// `[syncer]`.
    pub syncer: SyncerConfig,
    /// Flag-only (`-cache-binlog-count`): capacity of the syncer input queue, in batches.
    #[serde(skip)]
    pub cache_binlog_count: usize,
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
            node_id: String::new(),
            task_name: String::new(),
            ha_lease_ttl: DEFAULT_LEASE_TTL,
            data_dir: DEFAULT_DATA_DIR.into(),
            detect_interval: 5,
            pd_urls: DEFAULT_PD_URLS.into(),
            log_file: String::new(),
            log_level: "info".into(),
            log_rotate: String::new(),
            initial_commit_ts: -1,
            synced_check_time: 5,
            compressor: String::new(),
            security: Security::default(),
            syncer: SyncerConfig::default(),
            cache_binlog_count: 8,
            metrics_addr: String::new(),
            metrics_interval: 15,
        }
    }
}

/// A `{db-name, tbl-name}` pair of `[[syncer.replicate-do-table]]` / `[[syncer.ignore-table]]`. A name
/// starting with `~` is a regular expression.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TableName {
    /// Database name or `~regex`.
    pub db_name: String,
    /// Table name or `~regex`.
    pub tbl_name: String,
}

pub use crate::rules::{BinlogFilterRule, SchemaTable, TableMigrateRule};

/// `[syncer.relay]`: the relay log of the MySQL/TiDB sink (see [`crate::relay`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RelayConfig {
    /// Relay log directory ("" = off).
    pub log_dir: String,
    /// A relay file is rotated once it reaches this many bytes (0 or less: 10 MiB, as upstream).
    pub max_file_size: i64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self { log_dir: String::new(), max_file_size: 10 * 1024 * 1024 }
    }
}

/// `[syncer]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SyncerConfig {
    /// Ours: where table schemas come from, `http://host:port` of a TiDB status API.
    pub schema_source: String,
    /// Ours: MiB of binlogs the MySQL/TiDB sink holds queued (waiting for the downstream) before
    /// the drainer stops reading more from the pumps.
    pub memory_quota_mb: usize,
    /// sql_mode for the parser and the downstream session (unset: none).
    pub sql_mode: Option<String>,
    /// Commit timestamps whose transactions are skipped.
    pub ignore_txn_commit_ts: Vec<i64>,
    /// Comma-separated schemas to ignore.
    pub ignore_schemas: String,
    /// Tables to ignore.
    pub ignore_table: Vec<TableName>,
    /// Schemas to replicate (`~` = regex); empty = all.
    pub replicate_do_db: Vec<String>,
    /// Tables to replicate; empty = all.
    pub replicate_do_table: Vec<TableName>,
    /// Statements per downstream transaction.
    pub txn_batch: usize,
    /// Downstream concurrency (flag `-c`).
    pub worker_count: usize,
    /// Replicate DDL.
    pub sync_ddl: bool,
    /// Loopback control: mark what the MySQL/TiDB sink writes and drop upstream transactions that
    /// carry this channel's mark (see [`crate::loopback`]).
    pub loopback_control: bool,
    /// Channel id for loopback control (the same on both drainers of a bidirectional pair).
    pub channel_id: i64,
    /// mysql, tidb, file (alias pb), kafka, oracle.
    pub db_type: String,
    /// Split transactions across workers.
    pub enable_dispatch: Option<bool>,
    /// Negation of `enable-dispatch` (wins when set).
    pub disable_dispatch: Option<bool>,
    /// Causality detection between workers.
    pub enable_detect: Option<bool>,
    /// Negation of `enable-detect` (wins when set).
    pub disable_detect: Option<bool>,
    /// Safe mode: UPDATE as DELETE + REPLACE, INSERT as REPLACE.
    pub safe_mode: bool,
    /// Start from the schema at the checkpoint, folded from the DDL history page by page, instead of
    /// holding and replaying the whole history (see [`crate::schema::Snapshot`]).
    pub load_schema_snapshot: bool,
    /// Case-sensitive schema and table names in binlog-filter and table-migrate rules.
    pub case_sensitive: bool,
    /// Table routing rules.
    pub table_migrate_rule: Vec<TableMigrateRule>,
    /// Named binlog-filter rules.
    pub binlog_filter_rule: BTreeMap<String, BinlogFilterRule>,
    /// The relay log.
    pub relay: RelayConfig,
    /// `[syncer.to]`: the sink.
    pub to: ToConfig,
}

impl Default for SyncerConfig {
    fn default() -> Self {
        Self {
            schema_source: String::new(),
            memory_quota_mb: 256,
            sql_mode: None,
            ignore_txn_commit_ts: Vec::new(),
            ignore_schemas: DEFAULT_IGNORE_SCHEMAS.into(),
            ignore_table: Vec::new(),
            replicate_do_db: Vec::new(),
            replicate_do_table: Vec::new(),
            txn_batch: 20,
            worker_count: 16,
            sync_ddl: true,
            loopback_control: false,
            channel_id: 0,
            db_type: "mysql".into(),
            enable_dispatch: None,
            disable_dispatch: None,
            enable_detect: None,
            disable_detect: None,
            safe_mode: false,
            load_schema_snapshot: false,
            case_sensitive: false,
            table_migrate_rule: Vec::new(),
            binlog_filter_rule: BTreeMap::new(),
            relay: RelayConfig::default(),
            to: ToConfig::default(),
        }
    }
}

impl SyncerConfig {
    /// Whether transactions are split across workers (`disable-dispatch` wins over `enable-dispatch`).
    pub fn dispatch(&self) -> bool {
        match (self.disable_dispatch, self.enable_dispatch) {
            (Some(d), _) => !d,
            (None, Some(e)) => e,
            (None, None) => true,
        }
    }

    /// Whether causality detection is on (`disable-detect` wins over `enable-detect`).
    pub fn detect(&self) -> bool {
        match (self.disable_detect, self.enable_detect) {
            (Some(d), _) => !d,
            (None, Some(e)) => e,
            (None, None) => true,
        }
    }

    /// `ignore-schemas` split on commas, trimmed, empty entries dropped.
    pub fn ignore_schema_list(&self) -> Vec<String> {
        self.ignore_schemas.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
    }
}

/// `[syncer.to]`: the downstream. Which keys matter depends on `db-type`; each sink reads its own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ToConfig {
    /// MySQL/TiDB host (env `MYSQL_HOST`, else `localhost`).
    pub host: String,
    /// MySQL/TiDB user (env `MYSQL_USER`, else `root`).
    pub user: String,
    /// MySQL/TiDB password (env `MYSQL_PSWD` when empty).
    pub password: String,
    /// Encrypted password (`binlogctl -cmd encrypt`); overrides `password`.
    #[serde(rename = "encrypted_password")]
    pub encrypted_password: String,
    /// 1 = full columns, 2 = partial columns.
    pub sync_mode: i64,
    /// MySQL/TiDB port (env `MYSQL_PORT`, else 3306).
    pub port: u16,
    /// Read timeout of the MySQL/TiDB sink's round trips, a Go duration ("1m").
    pub read_timeout: String,
    /// Upstream's merge mode: rows applied as bulk DELETE and multi-row REPLACE (the MySQL/TiDB sink
    /// then uses safe mode's statement shapes).
    pub merge: bool,
    /// Session variables for the downstream connection.
    pub params: BTreeMap<String, String>,
    /// TLS to the downstream.
    pub security: Security,
    /// `[syncer.to.checkpoint]`.
    pub checkpoint: CheckpointConfig,
    /// File sink: directory of the binlog files (default: `data-dir`).
    pub dir: String,
    /// File sink (seed guide): output compression, "" or "gzip".
    pub compression: String,
    /// File sink: days to keep files (0 = forever).
    pub retention_time: i64,
    /// Flash (removed upstream): only the empty default is accepted.
    pub time_limit: String,
    /// Flash (removed upstream): only the empty default is accepted.
    pub size_limit: String,
    /// Kafka: ZooKeeper addresses to find the brokers in; not implemented, only empty is accepted.
    pub zookeeper_addrs: String,
    /// Kafka brokers (env `KAFKA_ADDRS`, else `127.0.0.1:9092`).
    pub kafka_addrs: String,
    /// Kafka protocol version.
    pub kafka_version: String,
    /// Kafka producer batch size in messages.
    pub kafka_max_messages: i64,
    /// Largest Kafka message in bytes.
    pub kafka_max_message_size: i64,
    /// Kafka client id.
    pub kafka_client_id: String,
    /// Kafka topic (default `<cluster id>_obinlog`).
    pub topic_name: String,
    /// Kafka (ours): `none` (upstream: everything to partition 0), `table` or `primary-key`.
    pub kafka_partition_by: String,
    /// Kafka (ours): partitions to create when the topic is missing and `kafka-partition-by` is set.
    pub kafka_partitions: i64,
    /// Kafka (ours): `protobuf` (upstream's `slave.binlog.Binlog`) or `canal-json`.
    pub kafka_format: String,
    /// Kafka (ours): the transactional producer (exactly-once); unset = on with `task-name`, else off.
    pub kafka_exactly_once: Option<bool>,
    /// Oracle (not supported): only empty is accepted.
    pub oracle_service_name: String,
    /// Oracle (not supported): only empty is accepted.
    pub oracle_connect_string: String,
}

impl Default for ToConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            user: String::new(),
            password: String::new(),
            encrypted_password: String::new(),
            sync_mode: 0,
            port: 0,
            read_timeout: "1m".into(),
            merge: false,
            params: BTreeMap::new(),
            security: Security::default(),
            checkpoint: CheckpointConfig::default(),
            dir: String::new(),
            compression: String::new(),
            retention_time: 0,
            time_limit: String::new(),
            size_limit: String::new(),
            zookeeper_addrs: String::new(),
            kafka_addrs: String::new(),
            kafka_version: "0.8.2.0".into(),
            kafka_max_messages: 1024,
            kafka_max_message_size: 1 << 30,
            kafka_client_id: String::new(),
            kafka_partition_by: String::new(),
            kafka_partitions: 0,
            kafka_format: String::new(),
            kafka_exactly_once: None,
            topic_name: String::new(),
            oracle_service_name: String::new(),
            oracle_connect_string: String::new(),
        }
    }
}

/// `[syncer.to.checkpoint]`: where a MySQL/TiDB checkpoint lives (defaults follow `[syncer.to]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckpointConfig {
    /// mysql, tidb, oracle; empty = follow `db-type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Checkpoint schema (default `tidb_binlog`).
    pub schema: String,
    /// Checkpoint table (default `checkpoint`).
    pub table: String,
    /// Host (default 127.0.0.1).
    pub host: String,
    /// User (default root).
    pub user: String,
    /// Password.
    pub password: String,
    /// Encrypted password; overrides `password`.
    #[serde(rename = "encrypted_password")]
    pub encrypted_password: String,
    /// Port (default 3306).
    pub port: u16,
    /// Oracle (not supported by us).
    pub oracle_service_name: String,
    /// Oracle (not supported by us).
    pub oracle_connect_string: String,
    /// TLS.
    pub security: Security,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            kind: String::new(),
            schema: "tidb_binlog".into(),
            table: "checkpoint".into(),
            host: String::new(),
            user: String::new(),
            password: String::new(),
            encrypted_password: String::new(),
            port: 0,
            oracle_service_name: String::new(),
            oracle_connect_string: String::new(),
            security: Security::default(),
        }
    }
}

/// The sink kinds drainer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbType {
    /// MySQL or MariaDB.
    Mysql,
    /// TiDB (MySQL protocol).
    Tidb,
    /// Local protobuf files (`file`, alias `pb`).
    File,
    /// Kafka.
    Kafka,
}

impl DbType {
    /// Parses a `db-type` value.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s {
            "mysql" => Ok(DbType::Mysql),
            "tidb" => Ok(DbType::Tidb),
            "file" | "pb" => Ok(DbType::File),
            "kafka" => Ok(DbType::Kafka),
            "flash" => Err(invalid("db-type", "\"flash\" is no longer supported")),
            "oracle" => Err(invalid("db-type", "\"oracle\" is not supported by this drainer")),
            other => Err(invalid(
                "db-type",
                format!("{other:?} is not one of mysql, tidb, file, pb, kafka"),
            )),
        }
    }

    /// Whether the drainer's `savepoint` file is the checkpoint (file and kafka sinks).
    pub fn uses_file_checkpoint(self) -> bool {
        matches!(self, DbType::File | DbType::Kafka)
    }
}

impl Config {
    /// Parses drainer.toml text (`path` only names the file in errors). Defaults fill missing keys;
    /// [`Config::adjust`] is not applied yet (flags come first).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        pump::daemon::config_file::parse_strict(text, path)
    }

    /// Reads and parses a drainer.toml.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        pump::daemon::config_file::read_strict(path)
    }

    /// The sink kind (`pb` is `file`).
    pub fn db_type(&self) -> Result<DbType, ConfigError> {
        DbType::parse(&self.syncer.db_type)
    }

    /// Applies upstream's derived defaults and validates. `env` reads an environment variable (so tests
    /// can pass their own).
    pub fn adjust(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let addr = self.addr.trim().trim_start_matches("http://").trim_start_matches("https://").to_owned();
        if addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
            return Err(invalid("addr", format!("{:?} is not host:port", self.addr)));
        }
        self.addr = addr;
        if self.advertise_addr.is_empty() {
            self.advertise_addr = self.addr.clone();
        }
        self.advertise_addr =
            self.advertise_addr.trim().trim_start_matches("http://").trim_start_matches("https://").to_owned();
        let adv_host = self.advertise_addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
        if adv_host.is_empty() || adv_host == "0.0.0.0" {
            return Err(invalid(
                "advertise-addr",
                format!("{:?}: the host must be an address others can reach (not empty or 0.0.0.0)", self.advertise_addr),
            ));
        }
        pump::etcd::parse_pd_urls(&self.pd_urls).map_err(|e| invalid("pd-urls", e.to_string()))?;
        if self.detect_interval == 0 {
            return Err(invalid("detect-interval", "must be greater than 0"));
        }
        if !matches!(self.compressor.as_str(), "" | "gzip") {
            return Err(invalid("compressor", format!("{:?}: only \"gzip\" is supported", self.compressor)));
        }
        if self.initial_commit_ts < -1 {
            return Err(invalid("initial-commit-ts", format!("{} (must be -1 or a TSO)", self.initial_commit_ts)));
        }
        if self.cache_binlog_count == 0 {
            return Err(invalid("cache-binlog-count", "must be greater than 0"));
        }
        let db = self.db_type()?;
        check_ha(self, db)?;
        if self.syncer.db_type == "pb" {
            self.syncer.db_type = "file".into();
        }
        if self.syncer.worker_count == 0 {
            return Err(invalid("worker-count", "must be greater than 0"));
        }
        if self.syncer.txn_batch == 0 {
            return Err(invalid("txn-batch", "must be greater than 0"));
        }
        if self.syncer.memory_quota_mb == 0 {
            return Err(invalid("memory-quota-mb", "must be greater than 0"));
        }
        let to = &mut self.syncer.to;
        match db {
            DbType::Mysql | DbType::Tidb => {
                if to.host.is_empty() {
                    to.host = env("MYSQL_HOST").unwrap_or_else(|| "localhost".into());
                }
                if to.port == 0 {
                    to.port = match env("MYSQL_PORT") {
                        Some(p) => p.parse().map_err(|_| invalid("syncer.to.port", format!("MYSQL_PORT={p:?}")))?,
                        None => 3306,
                    };
                }
                if to.user.is_empty() {
                    to.user = env("MYSQL_USER").unwrap_or_else(|| "root".into());
                }
                if to.password.is_empty() {
                    to.password = env("MYSQL_PSWD").unwrap_or_default();
                }
            }
            DbType::File => {
                if to.dir.is_empty() {
                    to.dir = self.data_dir.to_string_lossy().into_owned();
                }
            }
            DbType::Kafka => {
                if to.kafka_addrs.is_empty() {
                    to.kafka_addrs = env("KAFKA_ADDRS").unwrap_or_else(|| "127.0.0.1:9092".into());
                }
                if to.kafka_max_messages <= 0 {
                    to.kafka_max_messages = 1024;
                }
            }
        }
        if !matches!(to.compression.as_str(), "" | "gzip") {
            return Err(invalid("syncer.to.compression", format!("{:?}: only \"gzip\" is supported", to.compression)));
        }
        let ck = &mut to.checkpoint;
        if !matches!(ck.kind.as_str(), "" | "mysql" | "tidb") {
            return Err(invalid(
                "syncer.to.checkpoint.type",
                format!("{:?}: must be mysql or tidb (or empty to follow db-type)", ck.kind),
            ));
        }
        if ck.host.is_empty() {
            ck.host = "127.0.0.1".into();
        }
        if ck.port == 0 {
            ck.port = 3306;
        }
        if ck.user.is_empty() {
            ck.user = "root".into();
        }
        for (i, re) in self.syncer.replicate_do_db.iter().enumerate() {
            check_pattern("replicate-do-db", re).map_err(|r| invalid("replicate-do-db", format!("entry {i}: {r}")))?;
        }
        for t in self.syncer.replicate_do_table.iter().chain(&self.syncer.ignore_table) {
            check_pattern("db-name", &t.db_name).map_err(|r| invalid("syncer table filter", r))?;
            check_pattern("tbl-name", &t.tbl_name).map_err(|r| invalid("syncer table filter", r))?;
        }
        crate::rules::Rules::new(self.syncer.case_sensitive, &self.syncer.table_migrate_rule, &self.syncer.binlog_filter_rule).map_err(|e| match e {
            crate::rules::RuleError::UnknownEvent { .. } | crate::rules::RuleError::BadSql { .. } => {
                invalid("syncer.binlog-filter-rule", e.to_string())
            }
            _ => invalid("syncer.table-migrate-rule", e.to_string()),
        })?;
        self.refuse_unimplemented(db)?;
        if !self.syncer.schema_source.is_empty() {
            let s = &self.syncer.schema_source;
            if !(s.starts_with("http://") || s.starts_with("https://")) {
                return Err(invalid(
                    "schema-source",
                    format!("{s:?}: expected http://host:port of a TiDB status API"),
                ));
            }
        }
        Ok(())
    }

    /// Refuses, by name, every key upstream's drainer honours that this drainer does not implement:
    /// a config migrated from upstream must not start and then silently do something else.
    fn refuse_unimplemented(&self, db: DbType) -> Result<(), ConfigError> {
        let s = &self.syncer;
        let no = |key: &'static str, why: &str| Err(invalid(key, format!("is not supported by this drainer: {why}")));
        if !s.relay.log_dir.is_empty() && !matches!(db, DbType::Mysql | DbType::Tidb) {
            return no(
                "syncer.relay.log-dir",
                &format!(
                    "the relay log serves the mysql and tidb sinks (upstream ignores it for the others), not \
                     db-type {:?}; remove [syncer.relay] log-dir",
                    s.db_type
                ),
            );
        }
        let flash = [("syncer.to.time-limit", &s.to.time_limit), ("syncer.to.size-limit", &s.to.size_limit)];
        for (key, v) in flash {
            if !v.is_empty() {
                return no(key, "it configures the flash sink, which upstream removed; remove it");
            }
        }
        let oracle = [
            ("syncer.to.oracle-service-name", &s.to.oracle_service_name),
            ("syncer.to.oracle-connect-string", &s.to.oracle_connect_string),
            ("syncer.to.checkpoint.oracle-service-name", &s.to.checkpoint.oracle_service_name),
            ("syncer.to.checkpoint.oracle-connect-string", &s.to.checkpoint.oracle_connect_string),
        ];
        for (key, v) in oracle {
            if !v.is_empty() {
                return no(key, "Oracle is not supported; remove it");
            }
        }
        if !s.to.zookeeper_addrs.is_empty() {
            return no(
                "syncer.to.zookeeper-addrs",
                "finding the Kafka brokers through ZooKeeper is not implemented; list them in kafka-addrs instead",
            );
        }
        Ok(())
    }

    /// The file checkpoint's path, `<data-dir>/savepoint`.
    pub fn savepoint_path(&self) -> PathBuf {
        self.data_dir.join("savepoint")
    }
}

fn check_pattern(what: &str, p: &str) -> Result<(), String> {
    if let Some(re) = p.strip_prefix('~') {
        regex::Regex::new(re).map_err(|e| format!("{what} {p:?} is not a valid regular expression: {e}"))?;
    }
    Ok(())
}

/// Refuses HA settings that cannot work: a bad task name or lease, a sink whose checkpoint and output
/// a standby cannot take over, the relay log (replayed without PD, so without a lease).
pub(crate) fn check_ha(cfg: &Config, db: DbType) -> Result<(), ConfigError> {
    let task = &cfg.task_name;
    if task.is_empty() {
        return Ok(());
    }
    if task.len() > 64 || !task.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(invalid("task-name", format!("{task:?}: use 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.'")));
    }
    if !(1..=60).contains(&cfg.ha_lease_ttl) {
        return Err(invalid("ha-lease-ttl", format!("{} (must be 1 to 60 seconds)", cfg.ha_lease_ttl)));
    }
    match db {
        DbType::Mysql | DbType::Tidb => {}
        DbType::File => {
            return Err(invalid(
                "task-name",
                "db-type = \"file\" writes into this node's own directory, which a standby cannot take over; \
                 drainer HA supports db-type = \"mysql\" and \"tidb\"",
            ));
        }
        // Fenced by the transactional producer, which `task-name` turns on (`setup::kafka_config`).
        DbType::Kafka if cfg.syncer.to.kafka_exactly_once == Some(false) => {
            return Err(invalid(
                "syncer.to.kafka-exactly-once",
                "is false, but task-name (drainer HA) needs it: the transactional producer is what fences an old \
                 active drainer out of the topic",
            ));
        }
        DbType::Kafka => {}
    }
    if !cfg.syncer.relay.log_dir.is_empty() {
        return Err(invalid(
            "task-name",
            "[syncer.relay] log-dir: the relay log is replayed without PD, so without the election's lease; \
             turn one of them off",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("d.toml"))
    }

    #[test]
    fn defaults_match_upstream() {
        let c = parse("").unwrap();
        assert_eq!(c.detect_interval, 5);
        assert_eq!(c.data_dir, PathBuf::from("data.drainer"));
        assert_eq!(c.initial_commit_ts, -1);
        assert_eq!(c.synced_check_time, 5);
        assert_eq!(c.syncer.txn_batch, 20);
        assert_eq!(c.syncer.worker_count, 16);
        assert_eq!(c.syncer.memory_quota_mb, 256);
        assert!(c.syncer.sync_ddl);
        assert_eq!(c.syncer.db_type, "mysql");
        assert_eq!(c.syncer.ignore_schemas, DEFAULT_IGNORE_SCHEMAS);
        assert!(c.syncer.dispatch() && c.syncer.detect());
        assert_eq!(c.syncer.to.kafka_version, "0.8.2.0");
        assert_eq!(c.syncer.to.read_timeout, "1m");
        assert_eq!(c.syncer.to.checkpoint.schema, "tidb_binlog");
        assert_eq!(c.syncer.relay.max_file_size, 10485760);
        assert_eq!(c.cache_binlog_count, 8);
    }

    #[test]
    fn every_section_and_key_of_the_sample_parses() {
        let text = r#"
addr = "127.0.0.1:8249"
advertise-addr = "10.0.0.1:8249"
node-id = "d1"
data-dir = "dd"
detect-interval = 10
pd-urls = "http://127.0.0.1:2379"
log-file = "drainer.log"
log-level = "debug"
initial-commit-ts = 42
synced-check-time = 3
compressor = "gzip"
[security]
ssl-ca = "ca.pem"
ssl-cert = "c.pem"
ssl-key = "k.pem"
cert-allowed-cn = ["a"]
[syncer]
schema-source = "http://127.0.0.1:10080"
memory-quota-mb = 64
sql-mode = "STRICT_TRANS_TABLES"
ignore-txn-commit-ts = [1, 2]
ignore-schemas = "a,b"
replicate-do-db = ["~^b.*", "s1"]
txn-batch = 5
worker-count = 3
sync-ddl = false
loopback-control = false
channel-id = 1
db-type = "pb"
disable-dispatch = true
enable-detect = false
safe-mode = true
load-schema-snapshot = false
case-sensitive = true
[[syncer.replicate-do-table]]
db-name = "test"
tbl-name = "~^a.*"
[[syncer.ignore-table]]
db-name = "test"
tbl-name = "log"
[[syncer.table-migrate-rule]]
binlog-filter-rule = ["r1"]
source = { schema = "s", table = "t" }
target = { schema = "s2", table = "t2" }
[syncer.binlog-filter-rule.r1]
ignore-event = ["delete"]
ignore-sql = ["^DROP"]
[syncer.relay]
log-dir = ""
max-file-size = 100
[syncer.to]
host = "h"
user = "u"
password = "p"
encrypted_password = ""
sync-mode = 1
port = 3307
read-timeout = "1m"
merge = false
dir = "bin"
compression = ""
time-limit = ""
size-limit = ""
retention-time = 7
zookeeper-addrs = ""
kafka-addrs = "k:9092"
kafka-version = "2.0.0"
kafka-max-messages = 10
kafka-max-message-size = 100
kafka-client-id = "c"
topic-name = "t"
oracle-service-name = ""
oracle-connect-string = ""
[syncer.to.params]
time_zone = "+08:00"
[syncer.to.security]
ssl-ca = ""
[syncer.to.checkpoint]
type = ""
schema = "cs"
table = "ct"
host = "ch"
user = "cu"
password = "cp"
port = 3308
[syncer.to.checkpoint.security]
ssl-ca = ""
"#;
        let mut c = parse(text).unwrap();
        c.adjust(|_| None).unwrap();
        assert_eq!(c.syncer.db_type, "file");
        assert_eq!(c.syncer.replicate_do_table[0].tbl_name, "~^a.*");
        assert_eq!(c.syncer.ignore_table[0].tbl_name, "log");
        assert_eq!(c.syncer.to.params["time_zone"], "+08:00");
        assert_eq!(c.syncer.to.checkpoint.port, 3308);
        assert_eq!(c.syncer.binlog_filter_rule["r1"].ignore_event, ["delete"]);
        assert!(!c.syncer.dispatch() && !c.syncer.detect());
        assert_eq!(c.syncer.schema_source, "http://127.0.0.1:10080");
        assert_eq!(c.syncer.memory_quota_mb, 64);
        assert_eq!(c.syncer.ignore_txn_commit_ts, [1, 2]);
    }

    /// Keys upstream honours and this drainer does not implement stop the start, each named.
    #[test]
    fn unimplemented_keys_are_refused_by_name() {
        let cases = [
            ("[syncer]\ndb-type = \"kafka\"\n[syncer.relay]\nlog-dir = \"/r\"", "syncer.relay.log-dir"),
            ("[syncer.to]\ntime-limit = \"30s\"", "syncer.to.time-limit"),
            ("[syncer.to]\nsize-limit = \"100000\"", "syncer.to.size-limit"),
            ("[syncer.to]\noracle-service-name = \"x\"", "syncer.to.oracle-service-name"),
            ("[syncer.to.checkpoint]\noracle-connect-string = \"x\"", "syncer.to.checkpoint.oracle-connect-string"),
            ("[syncer]\ndb-type = \"kafka\"\n[syncer.to]\nzookeeper-addrs = \"z:2181\"", "syncer.to.zookeeper-addrs"),
        ];
        for (toml, key) in cases {
            let mut c = parse(toml).unwrap();
            let e = c.adjust(|_| None).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("not supported by this drainer"), "{toml}: {e}");
        }
        // Their defaults (and the default values written out) start.
        let mut c = parse("[syncer]\nloopback-control = false\nload-schema-snapshot = false\n[syncer.relay]\nlog-dir = \"\"\n[syncer.to]\nmerge = false\nread-timeout = \"1m\"").unwrap();
        c.adjust(|_| None).unwrap();
    }

    #[test]
    fn bad_filter_and_route_rules_are_errors_at_start() {
        let mut c = parse("[syncer]\n[[syncer.table-migrate-rule]]\nbinlog-filter-rule = [\"gone\"]\nsource = { schema = \"s\", table = \"t\" }").unwrap();
        let e = c.adjust(|_| None).unwrap_err().to_string();
        assert!(e.contains("syncer.table-migrate-rule") && e.contains("\"gone\""), "{e}");
        let mut c = parse("[syncer.binlog-filter-rule.r]\nignore-sql = [\"[unclosed\"]").unwrap();
        let e = c.adjust(|_| None).unwrap_err().to_string();
        assert!(e.contains("syncer.binlog-filter-rule.r") && e.contains("[unclosed"), "{e}");
        let mut c = parse("[syncer.binlog-filter-rule.r]\nignore-event = [\"deletes\"]").unwrap();
        let e = c.adjust(|_| None).unwrap_err().to_string();
        assert!(e.contains("\"deletes\""), "{e}");
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_nearest_valid_one() {
        let e = parse("detect-intervall = 3").unwrap_err().to_string();
        assert!(e.contains("unknown configuration options: detect-intervall"), "{e}");
        assert!(e.contains("did you mean \"detect-interval\""), "{e}");
        let e = parse("[syncer]\ntxn_batch = 3").unwrap_err().to_string();
        assert!(e.contains("syncer.txn_batch") && e.contains("\"syncer.txn-batch\""), "{e}");
        let e = parse("[syncer.to]\nkafka-adrs = \"x\"").unwrap_err().to_string();
        assert!(e.contains("syncer.to.kafka-adrs") && e.contains("\"syncer.to.kafka-addrs\""), "{e}");
        let e = parse("[[syncer.ignore-table]]\ndb-name = \"a\"\ntable = \"b\"").unwrap_err().to_string();
        assert!(e.contains("syncer.ignore-table.table"), "{e}");
        let e = parse("[syncer.binlog-filter-rule.x]\nignore-events = []").unwrap_err().to_string();
        assert!(e.contains("syncer.binlog-filter-rule.x.ignore-events"), "{e}");
        let e = parse("zzzzzzzzzzzzzz = 1").unwrap_err().to_string();
        assert!(e.contains("zzzzzzzzzzzzzz") && !e.contains("did you mean"), "{e}");
    }

    #[test]
    fn wrong_types_and_bad_values_are_named() {
        let e = parse("detect-interval = \"x\"").unwrap_err().to_string();
        assert!(e.contains("detect-interval"), "{e}");
        let mut c = parse("[syncer]\ndb-type = \"flash\"").unwrap();
        assert!(c.adjust(|_| None).unwrap_err().to_string().contains("no longer supported"));
        let mut c = parse("compressor = \"zstd\"").unwrap();
        assert!(c.adjust(|_| None).unwrap_err().to_string().contains("compressor"));
        let mut c = parse("[syncer]\nreplicate-do-db = [\"~(\"]").unwrap();
        assert!(c.adjust(|_| None).unwrap_err().to_string().contains("regular expression"));
        let mut c = parse("advertise-addr = \"0.0.0.0:8249\"").unwrap();
        assert!(c.adjust(|_| None).unwrap_err().to_string().contains("advertise-addr"));
        let mut c = parse("[syncer]\nschema-source = \"127.0.0.1:10080\"").unwrap();
        assert!(c.adjust(|_| None).unwrap_err().to_string().contains("schema-source"));
        let mut c = parse("[syncer]\nmemory-quota-mb = 0").unwrap();
        assert!(c.adjust(|_| None).unwrap_err().to_string().contains("memory-quota-mb"));
        let e = parse("[syncer]\nmemory-quota-mb = -1").unwrap_err().to_string();
        assert!(e.contains("memory-quota-mb"), "{e}");
    }

    #[test]
    fn sink_defaults_come_from_the_environment() {
        let mut c = parse("").unwrap();
        c.adjust(|k| match k {
            "MYSQL_HOST" => Some("db1".into()),
            "MYSQL_PORT" => Some("3310".into()),
            "MYSQL_PSWD" => Some("pw".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((c.syncer.to.host.as_str(), c.syncer.to.port), ("db1", 3310));
        assert_eq!((c.syncer.to.user.as_str(), c.syncer.to.password.as_str()), ("root", "pw"));
        let mut c = parse("data-dir = \"dd\"\n[syncer]\ndb-type = \"file\"").unwrap();
        c.adjust(|_| None).unwrap();
        assert_eq!(c.syncer.to.dir, "dd");
        let mut c = parse("[syncer]\ndb-type = \"kafka\"").unwrap();
        c.adjust(|k| (k == "KAFKA_ADDRS").then(|| "b:1".to_string())).unwrap();
        assert_eq!(c.syncer.to.kafka_addrs, "b:1");
        assert_eq!(c.advertise_addr, DEFAULT_ADDR);
    }

    #[test]
    fn deploy_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/drainer.toml");
        let mut c = Config::from_file(&path).unwrap();
        c.adjust(|_| None).unwrap();
        assert_eq!(c.detect_interval, 10);
        assert_eq!(c.syncer.db_type, "mysql");
    }

    fn ha_cfg(task: &str, db: &str) -> Config {
        let mut c = Config { task_name: task.into(), ..Config::default() };
        c.syncer.db_type = db.into();
        c
    }

    #[test]
    fn ha_settings_are_checked_by_name() {
        assert!(check_ha(&ha_cfg("", "file"), DbType::File).is_ok(), "no task: today's drainer");
        assert!(check_ha(&ha_cfg("t-1.a_b", "mysql"), DbType::Mysql).is_ok());
        assert!(check_ha(&ha_cfg("t", "tidb"), DbType::Tidb).is_ok());
        for (task, db, dbt, key) in [
            ("a/b", "mysql", DbType::Mysql, "task-name"),
            ("t", "file", DbType::File, "task-name"),
        ] {
            let e = check_ha(&ha_cfg(task, db), dbt).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        assert!(check_ha(&ha_cfg("t", "kafka"), DbType::Kafka).is_ok(), "kafka: fenced by its transactional producer");
        let mut c = ha_cfg("t", "kafka");
        c.syncer.to.kafka_exactly_once = Some(false);
        assert!(check_ha(&c, DbType::Kafka).unwrap_err().to_string().contains("kafka-exactly-once"));
        let mut c = ha_cfg("t", "mysql");
        c.ha_lease_ttl = 0;
        assert!(check_ha(&c, DbType::Mysql).unwrap_err().to_string().contains("ha-lease-ttl"));
        let mut c = ha_cfg("t", "mysql");
        c.syncer.relay.log_dir = "relay".into();
        assert!(check_ha(&c, DbType::Mysql).unwrap_err().to_string().contains("relay"));
    }
}
