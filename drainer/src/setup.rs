//! Each sink's settings from drainer.toml: what the `drainer` binary builds its sink from.
//!
//! Every sink module takes its own plain config struct; this module is the one place that knows how
//! `[syncer]` / `[syncer.to]` / `[syncer.to.checkpoint]` keys map onto them, with upstream's defaults and
//! the refusals our design needs (a checkpoint on a different server than the data cannot be written in
//! the data's transaction, so it is refused rather than silently losing exactly-once).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, ConfigError, DbType, Security, invalid};
use crate::sink::file::FileSinkConfig;
use crate::sink::kafka::{Format, KafkaConfig, Partitioning};
use crate::sink::mysql::{CheckpointCfg, MysqlSinkConfig, MysqlTls};

/// A password from `password` / `encrypted_password` (the latter wins, as upstream).
fn password(key: &'static str, plain: &str, encrypted: &str) -> Result<String, ConfigError> {
    if encrypted.is_empty() {
        return Ok(plain.to_owned());
    }
    pump::encrypt::decrypt(encrypted).map_err(|e| invalid(key, format!("cannot be decrypted: {e}")))
}

/// The file sink (`db-type = "file"` / `"pb"`): `[syncer.to] dir` (default `data-dir`), `compression`,
/// `retention-time`.
pub fn file_config(cfg: &Config) -> Result<FileSinkConfig, ConfigError> {
    let to = &cfg.syncer.to;
    let dir = if to.dir.is_empty() { cfg.data_dir.clone() } else { PathBuf::from(&to.dir) };
    if to.retention_time < 0 {
        return Err(invalid("syncer.to.retention-time", format!("{} days (must be 0 or more)", to.retention_time)));
    }
    let mut c = FileSinkConfig::new(dir);
    c.retention_days = to.retention_time as u64;
    c.gzip = to.compression == "gzip"; // other values are refused by `Config::validate`
    Ok(c)
}

/// The Kafka sink: `kafka-addrs`, `kafka-version`, `kafka-max-messages`, `kafka-max-message-size`,
/// `kafka-client-id`, `topic-name` (default `<cluster id>_obinlog`), and ours: `kafka-partition-by`
/// (`none`, `table`, `primary-key`, `column:<name>[,<name>..]`), `kafka-partitions`, `kafka-format`
/// (`protobuf`, `canal-json`) and `kafka-exactly-once` (default: on with `task-name`, where it is
/// required; the `transactional.id` is [`KafkaConfig::transactional_id`] of the cluster id and the task
/// name, or the node id without a task).
pub fn kafka_config(cfg: &Config, cluster_id: u64) -> Result<KafkaConfig, ConfigError> {
    let to = &cfg.syncer.to;
    if to.kafka_addrs.trim().is_empty() {
        return Err(invalid("syncer.to.kafka-addrs", "is empty"));
    }
    let topic =
        if to.topic_name.is_empty() { KafkaConfig::default_topic(cluster_id) } else { to.topic_name.clone() };
    let mut k = KafkaConfig::new(to.kafka_addrs.clone(), topic);
    if !to.kafka_version.is_empty() {
        k.version = to.kafka_version.clone();
    }
    if to.kafka_max_messages > 0 {
        k.max_messages = to.kafka_max_messages as usize;
    }
    if to.kafka_max_message_size < 0 {
        return Err(invalid("syncer.to.kafka-max-message-size", format!("{} (must be positive)", to.kafka_max_message_size)));
    }
    if to.kafka_max_message_size > 0 {
        k.max_message_size = to.kafka_max_message_size as usize;
    }
    if !to.kafka_client_id.is_empty() {
        k.client_id = to.kafka_client_id.clone();
    }
    k.format = match to.kafka_format.as_str() {
        "" | "protobuf" => Format::Protobuf,
        "canal-json" => Format::CanalJson,
        other => return Err(invalid("syncer.to.kafka-format", format!("{other:?} is not one of protobuf, canal-json"))),
    };
    k.partitioning = match to.kafka_partition_by.as_str() {
        "" | "none" => Partitioning::Single,
        "table" => Partitioning::Table,
        "primary-key" => Partitioning::PrimaryKey,
        other if other.starts_with("column:") => {
            let cols: Vec<String> = other["column:".len()..].split(',').map(|c| c.trim().to_string()).collect();
            if cols.iter().any(String::is_empty) {
                return Err(invalid(
                    "syncer.to.kafka-partition-by",
                    format!("{other:?} names an empty column; write column:<name> or column:<name>,<name>"),
                ));
            }
            k.partition_columns = cols;
            Partitioning::Columns
        }
        other => {
            return Err(invalid(
                "syncer.to.kafka-partition-by",
                format!("{other:?} is not one of none, table, primary-key, column:<name>[,<name>..]"),
            ));
        }
    };
    match to.kafka_partitions {
        0 => {}
        n if n < 0 || n > i64::from(i32::MAX) => {
            return Err(invalid("syncer.to.kafka-partitions", format!("{n} (must be between 1 and {})", i32::MAX)));
        }
        _ if k.partitioning == Partitioning::Single => {
            return Err(invalid("syncer.to.kafka-partitions", "needs kafka-partition-by = \"table\", \"primary-key\" or \"column:<name>\""));
        }
        n => k.partitions = n as i32,
    }
    let task = (!cfg.task_name.is_empty()).then_some(cfg.task_name.as_str());
    match (to.kafka_exactly_once, task) {
        (Some(false), Some(_)) => {
            return Err(invalid(
                "syncer.to.kafka-exactly-once",
                "is false, but task-name (drainer HA) needs it: the transactional producer is what fences an old \
                 active drainer out of the topic",
            ));
        }
        (Some(false), None) | (None, None) => {}
        (Some(true), _) | (None, Some(_)) => {
            let node_id = pump::node::drainer_node_id(Some(cfg.node_id.as_str()), &cfg.addr)
                .map_err(|e| invalid("node-id", e.to_string()))?;
            k.transactional_id = Some(KafkaConfig::transactional_id(cluster_id, task, &node_id));
        }
    }
    Ok(k)
}

/// The MySQL/TiDB sink: `[syncer.to]` connection and params, `[syncer]` batching and safe mode, and the
/// checkpoint table, which is written in the same transaction as the data it covers.
///
/// `[syncer.to.checkpoint]` with an explicit `type` names its own server (upstream's defaults
/// 127.0.0.1:3306, root); we accept it only when that is the downstream itself, because a checkpoint
/// on another server cannot commit atomically with the rows. `schema` and `table` always apply.
pub fn mysql_config(cfg: &Config, cluster_id: u64) -> Result<MysqlSinkConfig, ConfigError> {
    let db = cfg.db_type()?;
    let s = &cfg.syncer;
    let to = &s.to;
    let tls = mysql_tls(&to.security)?;
    let partial_columns = match to.sync_mode {
        0 | 1 => false,
        2 => true,
        n => return Err(invalid("syncer.to.sync-mode", format!("{n} (must be 1, full columns, or 2, partial columns)"))),
    };
    let ck = &to.checkpoint;
    if !ck.kind.is_empty() {
        let same_host = |a: &str, b: &str| a == b || (is_local(a) && is_local(b));
        if !same_host(&ck.host, &to.host) || ck.port != to.port {
            return Err(invalid(
                "syncer.to.checkpoint",
                format!(
                    "the checkpoint is at {}:{} but the data goes to {}:{}; this drainer writes the checkpoint in the \
                     data's own transaction (exactly-once), so it must live on the downstream: leave [syncer.to.checkpoint] \
                     type empty (or point host/port at the downstream)",
                    ck.host, ck.port, to.host, to.port
                ),
            ));
        }
    }
    let read_timeout = pump::daemon::config_file::parse_go_duration(&to.read_timeout)
        .map_err(|why| invalid("syncer.to.read-timeout", why))?;
    if read_timeout.is_zero() {
        return Err(invalid("syncer.to.read-timeout", "must be greater than 0"));
    }
    let params = to.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(MysqlSinkConfig {
        host: to.host.clone(),
        port: to.port,
        user: to.user.clone(),
        password: password("syncer.to.encrypted_password", &to.password, &to.encrypted_password)?,
        params,
        sql_mode: s.sql_mode.clone().filter(|m| !m.is_empty()),
        // `merge`: upstream's merge mode applies a batch's rows as a bulk DELETE then multi-row
        // REPLACEs; the batch builder already merges runs of statements, so it is safe mode's shapes
        // (the end state is the same; changes of one key are not collapsed first).
        safe_mode: s.safe_mode || to.merge,
        safe_mode_after_start: Duration::from_secs(300),
        txn_batch: s.txn_batch,
        worker_count: s.worker_count,
        disable_dispatch: !s.dispatch(),
        disable_detect: !s.detect(),
        tidb: db == DbType::Tidb,
        checkpoint: Some(CheckpointCfg { schema: ck.schema.clone(), table: ck.table.clone(), cluster_id }),
        tls,
        partial_columns,
        memory_quota: s.memory_quota_mb << 20,
        loopback: s.loopback_control.then_some(s.channel_id),
        read_timeout,
        ..MysqlSinkConfig::default()
    })
}

/// Where the drainer keeps its checkpoint: a MySQL/TiDB row for the file and kafka sinks with
/// `[syncer.to.checkpoint] type = "mysql"`/`"tidb"` (host, port, user, password or
/// encrypted_password, schema, table, `[syncer.to.checkpoint.security]`; upstream's defaults), else
/// `<data-dir>/savepoint` (the MySQL/TiDB sinks write theirs in the downstream themselves).
pub fn checkpoint_store(cfg: &Config, cluster_id: u64) -> Result<crate::checkpoint::Store, ConfigError> {
    use crate::checkpoint::{FileCheckpoint, MysqlStore, MysqlStoreConfig, Store};
    let ck = &cfg.syncer.to.checkpoint;
    if !(cfg.db_type()?.uses_file_checkpoint() && matches!(ck.kind.as_str(), "mysql" | "tidb")) {
        return Ok(Store::File(FileCheckpoint::new(cfg.savepoint_path())));
    }
    let tls = tls_settings("[syncer.to.checkpoint.security]", &ck.security).map_err(|(key, why)| {
        let key = match key {
            "ssl-ca" => "syncer.to.checkpoint.security.ssl-ca",
            "ssl-cert" => "syncer.to.checkpoint.security.ssl-cert",
            "ssl-key" => "syncer.to.checkpoint.security.ssl-key",
            _ => "syncer.to.checkpoint.security",
        };
        invalid(key, why)
    })?;
    Ok(Store::Mysql(Box::new(MysqlStore::new(MysqlStoreConfig {
        host: ck.host.clone(),
        port: ck.port,
        user: ck.user.clone(),
        password: password("syncer.to.checkpoint.encrypted_password", &ck.password, &ck.encrypted_password)?,
        tls,
        schema: ck.schema.clone(),
        table: ck.table.clone(),
        cluster_id,
    }))))
}

/// `[syncer.to.security]` as the sink's TLS settings (see [`tls_settings`]).
fn mysql_tls(sec: &Security) -> Result<Option<MysqlTls>, ConfigError> {
    tls_settings("[syncer.to.security]", sec).map_err(|(key, why)| {
        let key = match key {
            "ssl-ca" => "syncer.to.security.ssl-ca",
            "ssl-cert" => "syncer.to.security.ssl-cert",
            "ssl-key" => "syncer.to.security.ssl-key",
            _ => "syncer.to.security",
        };
        invalid(key, why)
    })
}

/// A `security` table (`[syncer.to.security]`, Reparo's `[dest-db.security]`) as the MySQL sink's
/// TLS settings: on when `ssl-ca` is set; `ssl-cert` and `ssl-key` go together. Files are checked
/// readable here so a typo is named at start. The error is `(key within the table, why)`, the key
/// empty when it concerns the table as a whole; `section` only names the table in a warning.
pub fn tls_settings(section: &str, sec: &Security) -> Result<Option<MysqlTls>, (&'static str, String)> {
    if !sec.enabled() {
        if !sec.ssl_cert.is_empty() || !sec.ssl_key.is_empty() {
            return Err(("ssl-ca", "is empty but ssl-cert/ssl-key are set (TLS needs the CA)".into()));
        }
        return Ok(None);
    }
    let readable = |key: &'static str, path: &str| -> Result<PathBuf, (&'static str, String)> {
        std::fs::File::open(path).map_err(|e| (key, format!("{path}: {e}")))?;
        Ok(PathBuf::from(path))
    };
    let ca = readable("ssl-ca", &sec.ssl_ca)?;
    let client = match (sec.ssl_cert.is_empty(), sec.ssl_key.is_empty()) {
        (true, true) => None,
        (false, false) => Some((readable("ssl-cert", &sec.ssl_cert)?, readable("ssl-key", &sec.ssl_key)?)),
        _ => return Err(("", "ssl-cert and ssl-key must be set together".into())),
    };
    if !sec.cert_allowed_cn.is_empty() {
        tracing::warn!("{section} cert-allowed-cn is unused: the downstream is checked against ssl-ca and its host name");
    }
    Ok(Some(MysqlTls { ca, client }))
}

fn is_local(h: &str) -> bool {
    matches!(h, "127.0.0.1" | "localhost" | "::1" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(toml: &str) -> Config {
        let mut c = Config::parse(toml, Path::new("drainer.toml")).unwrap();
        c.adjust(|_| None).unwrap();
        c
    }

    #[test]
    fn mysql_maps_keys_and_checkpoint_follows_the_downstream() {
        let c = cfg(r#"
[syncer]
db-type = "tidb"
txn-batch = 7
worker-count = 3
disable-dispatch = true
safe-mode = true
sql-mode = "STRICT_TRANS_TABLES"
[syncer.to]
host = "10.0.0.5"
port = 4000
user = "u"
password = "p"
[syncer.to.params]
time_zone = "Asia/Shanghai"
[syncer.to.checkpoint]
schema = "ck"
table = "t"
"#);
        let m = mysql_config(&c, 42).unwrap();
        assert_eq!((m.host.as_str(), m.port, m.user.as_str(), m.password.as_str()), ("10.0.0.5", 4000, "u", "p"));
        assert_eq!((m.txn_batch, m.worker_count, m.disable_dispatch, m.disable_detect), (7, 3, true, false));
        assert!(m.safe_mode && m.tidb);
        assert_eq!(m.sql_mode.as_deref(), Some("STRICT_TRANS_TABLES"));
        assert_eq!(m.params, vec![("time_zone".to_owned(), "Asia/Shanghai".to_owned())]);
        assert!(!m.partial_columns);
        let ck = m.checkpoint.unwrap();
        assert_eq!((ck.schema.as_str(), ck.table.as_str(), ck.cluster_id), ("ck", "t", 42));
    }

    #[test]
    fn mysql_merge_applies_rows_as_delete_and_replace() {
        assert!(!mysql_config(&cfg(""), 1).unwrap().safe_mode);
        assert!(mysql_config(&cfg("[syncer.to]\nmerge = true\n"), 1).unwrap().safe_mode);
    }

    #[test]
    fn mysql_read_timeout_is_a_go_duration() {
        assert_eq!(mysql_config(&cfg(""), 1).unwrap().read_timeout, Duration::from_secs(60));
        assert_eq!(mysql_config(&cfg("[syncer.to]\nread-timeout = \"1m30s\"\n"), 1).unwrap().read_timeout, Duration::from_secs(90));
        for bad in ["\"90\"", "\"0s\"", "\"soon\""] {
            let e = mysql_config(&cfg(&format!("[syncer.to]\nread-timeout = {bad}\n")), 1).unwrap_err().to_string();
            assert!(e.contains("read-timeout"), "{bad}: {e}");
        }
    }

    #[test]
    fn mysql_sync_mode_2_is_partial_columns_and_others_are_refused() {
        assert!(mysql_config(&cfg("[syncer.to]\nsync-mode = 2\n"), 1).unwrap().partial_columns);
        assert!(!mysql_config(&cfg("[syncer.to]\nsync-mode = 1\n"), 1).unwrap().partial_columns);
        let e = mysql_config(&cfg("[syncer.to]\nsync-mode = 3\n"), 1).unwrap_err().to_string();
        assert!(e.contains("sync-mode") && e.contains('3'), "{e}");
    }

    #[test]
    fn mysql_refuses_a_checkpoint_on_another_server() {
        let c = cfg("[syncer.to]\nhost = \"10.0.0.5\"\n[syncer.to.checkpoint]\ntype = \"mysql\"\nhost = \"10.0.0.6\"\n");
        let e = mysql_config(&c, 1).unwrap_err().to_string();
        assert!(e.contains("10.0.0.6:3306") && e.contains("10.0.0.5:3306"), "{e}");
        // Pointing at the downstream itself is fine; localhost and 127.0.0.1 are the same place.
        let c = cfg("[syncer.to]\nhost = \"localhost\"\n[syncer.to.checkpoint]\ntype = \"mysql\"\n");
        assert!(mysql_config(&c, 1).is_ok());
    }

    #[test]
    fn mysql_decrypts_encrypted_password_and_names_a_bad_one() {
        let enc = pump::encrypt::encrypt("secret").unwrap();
        let c = cfg(&format!("[syncer.to]\npassword = \"plain\"\nencrypted_password = \"{enc}\"\n"));
        assert_eq!(mysql_config(&c, 1).unwrap().password, "secret");
        let c = cfg("[syncer.to]\nencrypted_password = \"not base64!\"\n");
        let e = mysql_config(&c, 1).unwrap_err().to_string();
        assert!(e.contains("encrypted_password"), "{e}");
    }

    #[test]
    fn mysql_tls_maps_security_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, "x").unwrap();
            p.to_str().unwrap().to_owned()
        };
        let (ca, cert, key) = (f("ca.pem"), f("c.pem"), f("k.pem"));
        assert_eq!(mysql_config(&cfg(""), 1).unwrap().tls, None);
        let c = cfg(&format!("[syncer.to.security]\nssl-ca = {ca:?}\n"));
        assert_eq!(mysql_config(&c, 1).unwrap().tls, Some(MysqlTls { ca: ca.clone().into(), client: None }));
        let c = cfg(&format!("[syncer.to.security]\nssl-ca = {ca:?}\nssl-cert = {cert:?}\nssl-key = {key:?}\n"));
        let t = mysql_config(&c, 1).unwrap().tls.unwrap();
        assert_eq!(t.client, Some((cert.clone().into(), key.clone().into())));
        let c = cfg(&format!("[syncer.to.security]\nssl-ca = {ca:?}\nssl-cert = {cert:?}\n"));
        let e = mysql_config(&c, 1).unwrap_err().to_string();
        assert!(e.contains("together"), "{e}");
        let c = cfg("[syncer.to.security]\nssl-ca = \"/no/such/ca.pem\"\n");
        let e = mysql_config(&c, 1).unwrap_err().to_string();
        assert!(e.contains("ssl-ca") && e.contains("/no/such/ca.pem"), "{e}");
    }

    #[test]
    fn kafka_defaults_topic_to_cluster_id_and_maps_keys() {
        let c = cfg("[syncer]\ndb-type = \"kafka\"\n[syncer.to]\nkafka-addrs = \"b1:9092,b2:9092\"\nkafka-max-messages = 9\nkafka-client-id = \"me\"\n");
        let k = kafka_config(&c, 6_789).unwrap();
        assert_eq!((k.addrs.as_str(), k.topic.as_str(), k.max_messages, k.client_id.as_str()), ("b1:9092,b2:9092", "6789_obinlog", 9, "me"));
        let c = cfg("[syncer]\ndb-type = \"kafka\"\n[syncer.to]\ntopic-name = \"t1\"\n");
        assert_eq!(kafka_config(&c, 1).unwrap().topic, "t1");
        assert_eq!(kafka_config(&c, 1).unwrap().partitioning, Partitioning::Single);
    }

    #[test]
    fn kafka_partition_keys_map_or_are_refused_by_name() {
        let k = |extra: &str| kafka_config(&cfg(&format!("[syncer]\ndb-type = \"kafka\"\n[syncer.to]\n{extra}")), 1);
        let c = k("kafka-partition-by = \"primary-key\"\nkafka-partitions = 8\n").unwrap();
        assert_eq!((c.partitioning, c.partitions), (Partitioning::PrimaryKey, 8));
        assert_eq!(k("kafka-partition-by = \"table\"\n").unwrap().partitioning, Partitioning::Table);
        assert_eq!(k("").unwrap().format, Format::Protobuf);
        assert_eq!(k("kafka-format = \"canal-json\"\n").unwrap().format, Format::CanalJson);
        let e = k("kafka-format = \"avro\"\n").unwrap_err().to_string();
        assert!(e.contains("kafka-format") && e.contains("\"avro\""), "{e}");
        assert_eq!(k("kafka-partition-by = \"none\"\n").unwrap().partitioning, Partitioning::Single);
        let e = k("kafka-partition-by = \"row\"\n").unwrap_err().to_string();
        assert!(e.contains("kafka-partition-by") && e.contains("\"row\""), "{e}");
        let e = k("kafka-partitions = 4\n").unwrap_err().to_string();
        assert!(e.contains("kafka-partitions") && e.contains("kafka-partition-by"), "{e}");
        let e = k("kafka-partition-by = \"table\"\nkafka-partitions = -1\n").unwrap_err().to_string();
        assert!(e.contains("kafka-partitions") && e.contains("-1"), "{e}");
        let c = k("kafka-partition-by = \"column:tenant, region\"\nkafka-partitions = 6\n").unwrap();
        assert_eq!((c.partitioning, c.partition_columns, c.partitions), (Partitioning::Columns, vec!["tenant".to_string(), "region".to_string()], 6));
        for bad in ["column:", "column:a,,b", "column"] {
            let e = k(&format!("kafka-partition-by = {bad:?}\n")).unwrap_err().to_string();
            assert!(e.contains("kafka-partition-by") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn kafka_exactly_once_is_on_with_a_task_and_refused_off_with_one() {
        let k = |top: &str, to: &str| kafka_config(&cfg(&format!("{top}addr = \"h:8249\"\n[syncer]\ndb-type = \"kafka\"\n[syncer.to]\n{to}")), 42);
        assert_eq!(k("", "").unwrap().transactional_id, None, "a lone drainer keeps upstream's producer");
        assert_eq!(k("", "kafka-exactly-once = true\n").unwrap().transactional_id.as_deref(), Some(format!("tidb-binlog-42-node-{}", pump::node::default_node_id("h:8249").unwrap()).as_str()), "the default node id: hostname:port");
        assert_eq!(k("node-id = \"d1\"\n", "kafka-exactly-once = true\n").unwrap().transactional_id.as_deref(), Some("tidb-binlog-42-node-d1"));
        // Every drainer of the task shares the id, whatever its node id.
        assert_eq!(k("task-name = \"t1\"\nnode-id = \"d1\"\n", "").unwrap().transactional_id.as_deref(), Some("tidb-binlog-42-task-t1"));
        assert_eq!(k("task-name = \"t1\"\n", "").unwrap().transactional_id.as_deref(), Some("tidb-binlog-42-task-t1"));
        // Refused when the config is checked (`drainer::ha`), and here too.
        let text = "task-name = \"t1\"\n[syncer]\ndb-type = \"kafka\"\n[syncer.to]\nkafka-addrs = \"k:9092\"\nkafka-exactly-once = false\n";
        let mut c = Config::parse(text, Path::new("drainer.toml")).unwrap();
        let e = kafka_config(&c, 42).unwrap_err().to_string();
        assert!(e.contains("kafka-exactly-once") && e.contains("task-name"), "{e}");
        let e = c.adjust(|_| None).unwrap_err().to_string();
        assert!(e.contains("kafka-exactly-once") && e.contains("task-name"), "{e}");
    }

    #[test]
    fn file_dir_defaults_to_data_dir() {
        let c = cfg("data-dir = \"/var/d\"\n[syncer]\ndb-type = \"file\"\n[syncer.to]\nretention-time = 3\n");
        let f = file_config(&c).unwrap();
        assert_eq!((f.dir.as_path(), f.retention_days), (Path::new("/var/d"), 3));
        let c = cfg("[syncer]\ndb-type = \"pb\"\n[syncer.to]\ndir = \"/x\"\n");
        assert_eq!(file_config(&c).unwrap().dir, PathBuf::from("/x"));
    }
}
