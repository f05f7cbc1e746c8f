//! The drainer checkpoint: `<data-dir>/savepoint`, TOML, written atomically (temp file, fsync, rename,
//! fsync of the directory):
//!
//! ```toml
//! consistent = false
//! commitTS = 412518831548007863
//! schema-version = 1234
//! ```
//!
//! It is the checkpoint of the file and kafka sinks (upstream's file checkpoint), unless
//! `[syncer.to.checkpoint] type` is `mysql`/`tidb`: then it is upstream's row in that MySQL
//! ([`MysqlStore`]). For sinks that keep
//! their own checkpoint downstream ([`crate::sink::Sink::load_checkpoint`] returns `Some`), the sink's
//! value is the truth for the commit ts; the file is still written and keeps the schema version.
//! `consistent` is true only when written at a clean shutdown.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One saved checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Savepoint {
    /// Written at a clean shutdown.
    #[serde(default)]
    pub consistent: bool,
    /// Everything with commit ts ≤ this has been applied downstream.
    #[serde(rename = "commitTS", default)]
    pub commit_ts: i64,
    /// The schema version the drainer had applied.
    #[serde(rename = "schema-version", default)]
    pub schema_version: i64,
}

/// Why reading or writing the savepoint failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O on the file.
    #[error("{op} checkpoint file {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The MySQL checkpoint could not be read or written.
    #[error("{op} the checkpoint MySQL {addr}: {source}")]
    Mysql {
        /// host:port.
        addr: String,
        /// What was being done.
        op: &'static str,
        /// The driver's error.
        source: mysql_async::Error,
    },
    /// The MySQL checkpoint row is not upstream's JSON.
    #[error("checkpoint {table} holds {text:?}, not a checkpoint: {message}")]
    Json {
        /// The table.
        table: String,
        /// The row's text.
        text: String,
        /// What is wrong.
        message: String,
    },
    /// The file is not the expected TOML.
    #[error("checkpoint file {} is not a savepoint (TOML with commitTS): {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
}

/// The savepoint file.
#[derive(Debug, Clone)]
pub struct FileCheckpoint {
    path: PathBuf,
}

impl FileCheckpoint {
    /// The checkpoint at `path` (usually `<data-dir>/savepoint`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileCheckpoint { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the savepoint; `None` if the file does not exist.
    pub fn load(&self) -> Result<Option<Savepoint>, CheckpointError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Io { op: "reading", path: self.path.clone(), source }),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e: toml::de::Error| CheckpointError::Parse { path: self.path.clone(), message: e.to_string() })
    }

    /// Writes the savepoint atomically and durably.
    pub fn save(&self, sp: &Savepoint) -> Result<(), CheckpointError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { op, path, source }
        };
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("creating directory of", &self.path))?;
        let text = format!(
            "consistent = {}\ncommitTS = {}\nschema-version = {}\n",
            sp.consistent, sp.commit_ts, sp.schema_version
        );
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
            f.write_all(text.as_bytes()).map_err(io("writing", &tmp))?;
            f.sync_all().map_err(io("syncing", &tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io("renaming into", &self.path))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// `[syncer.to.checkpoint]` of type mysql/tidb for the file and kafka sinks (upstream #786): the
/// drainer's checkpoint as upstream's row `<schema>.<table>(clusterID, checkPoint)` in another MySQL,
/// instead of `<data-dir>/savepoint`.
#[derive(Debug)]
pub struct MysqlStore {
    opts: mysql_async::Opts,
    addr: String,
    schema: String,
    table: String,
    cluster_id: u64,
    conn: Option<mysql_async::Conn>,
}

/// Where the MySQL checkpoint is and how to reach it.
#[derive(Debug, Clone)]
pub struct MysqlStoreConfig {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password (decrypted).
    pub password: String,
    /// TLS: the CA and an optional client certificate and key.
    pub tls: Option<crate::sink::mysql::MysqlTls>,
    /// Schema (default `tidb_binlog`).
    pub schema: String,
    /// Table (default `checkpoint`).
    pub table: String,
    /// The row key: PD's cluster id.
    pub cluster_id: u64,
}

fn mysql_err<'a>(addr: &'a str, op: &'static str) -> impl FnOnce(mysql_async::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Mysql { addr: addr.to_owned(), op, source }
}

impl MysqlStore {
    /// A store for `cfg`; nothing is connected until the first load or save.
    pub fn new(cfg: MysqlStoreConfig) -> Self {
        let mut opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(cfg.host.clone())
            .tcp_port(cfg.port)
            .user(Some(cfg.user.clone()))
            .pass(Some(cfg.password.clone()))
            .prefer_socket(false);
        if let Some(t) = &cfg.tls {
            let mut ssl =
                mysql_async::SslOpts::default().with_root_certs(vec![t.ca.clone().into()]).with_disable_built_in_roots(true);
            if let Some((cert, key)) = &t.client {
                ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(cert.clone().into(), key.clone().into())));
            }
            opts = opts.ssl_opts(ssl);
        }
        MysqlStore {
            opts: opts.into(),
            addr: format!("{}:{}", cfg.host, cfg.port),
            schema: cfg.schema,
            table: cfg.table,
            cluster_id: cfg.cluster_id,
            conn: None,
        }
    }

    fn table_q(&self) -> String {
        format!("{}.{}", crate::txn::quote_ident(&self.schema), crate::txn::quote_ident(&self.table))
    }

    async fn conn(&mut self) -> Result<&mut mysql_async::Conn, CheckpointError> {
        use mysql_async::prelude::Queryable;
        if self.conn.is_none() {
            let mut c = mysql_async::Conn::new(self.opts.clone()).await.map_err(mysql_err(&self.addr, "connecting to"))?;
            let create = format!(
                "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE IF NOT EXISTS {}(clusterID BIGINT UNSIGNED PRIMARY KEY, checkPoint MEDIUMTEXT)",
                crate::txn::quote_ident(&self.schema),
                self.table_q()
            );
            c.query_drop(create).await.map_err(mysql_err(&self.addr, "creating the checkpoint table on"))?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Up to 5 tries, 1 s apart, as upstream; a failed try drops the connection.
    async fn retry<T>(
        &mut self,
        mut f: impl for<'c> FnMut(&'c mut mysql_async::Conn, String) -> futures::future::BoxFuture<'c, Result<T, mysql_async::Error>>,
        op: &'static str,
    ) -> Result<T, CheckpointError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let table = self.table_q();
            let r = match self.conn().await {
                Ok(c) => f(c, table).await.map_err(mysql_err(&self.addr, op)),
                Err(e) => Err(e),
            };
            match r {
                Ok(v) => return Ok(v),
                Err(e) if tries >= 5 => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, tries, "checkpoint: retrying");
                    self.conn = None;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn load(&mut self) -> Result<Option<Savepoint>, CheckpointError> {
        use mysql_async::prelude::Queryable;
        let id = self.cluster_id;
        let text: Option<String> = self
            .retry(
                move |c, table| Box::pin(async move { c.query_first(format!("SELECT checkPoint FROM {table} WHERE clusterID = {id}")).await }),
                "reading the checkpoint from",
            )
            .await?;
        let Some(text) = text else { return Ok(None) };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CheckpointError::Json { table: self.table_q(), text: text.clone(), message: e.to_string() })?;
        let commit_ts = v.get("commitTS").and_then(|t| t.as_i64()).ok_or_else(|| CheckpointError::Json {
            table: self.table_q(),
            text: text.clone(),
            message: "no commitTS".into(),
        })?;
        Ok(Some(Savepoint {
            consistent: v.get("consistent").and_then(|c| c.as_bool()).unwrap_or(false),
            commit_ts,
            schema_version: v.get("schema-version").and_then(|t| t.as_i64()).unwrap_or(0),
        }))
    }

    async fn save(&mut self, sp: &Savepoint) -> Result<(), CheckpointError> {
        use mysql_async::prelude::Queryable;
        let (id, sp) = (self.cluster_id, *sp);
        self.retry(
            move |c, table| {
                let sql = format!(
                    r#"REPLACE INTO {table} VALUES({id}, '{{"consistent":{},"commitTS":{},"ts-map":{{}},"schema-version":{}}}')"#,
                    sp.consistent, sp.commit_ts, sp.schema_version
                );
                Box::pin(async move { c.query_drop(sql).await })
            },
            "saving the checkpoint to",
        )
        .await
    }
}

/// Where the drainer keeps its checkpoint: `<data-dir>/savepoint`, or (file/kafka sinks with
/// `[syncer.to.checkpoint] type = "mysql"`) a MySQL row.
#[derive(Debug)]
pub enum Store {
    /// The savepoint file.
    File(FileCheckpoint),
    /// A row in MySQL/TiDB.
    Mysql(Box<MysqlStore>),
}

impl Store {
    /// Reads the checkpoint; `None` when there is none yet.
    pub async fn load(&mut self) -> Result<Option<Savepoint>, CheckpointError> {
        match self {
            Store::File(f) => f.load(),
            Store::Mysql(m) => m.load().await,
        }
    }

    /// Saves the checkpoint.
    pub async fn save(&mut self, sp: &Savepoint) -> Result<(), CheckpointError> {
        match self {
            Store::File(f) => f.save(sp),
            Store::Mysql(m) => m.save(sp).await,
        }
    }
}

/// Where to start: the sink's own checkpoint if it has one, else the savepoint file (when it is the
/// checkpoint for this sink), else `initial-commit-ts` (-1 = `now()`, the current TSO). A zero commit ts
/// counts as "none", as upstream.
pub fn start_ts(sink_ts: Option<i64>, file: Option<&Savepoint>, file_is_truth: bool, initial: i64, now: impl FnOnce() -> i64) -> i64 {
    if let Some(ts) = sink_ts.filter(|&t| t > 0) {
        return ts;
    }
    if file_is_truth && let Some(sp) = file.filter(|sp| sp.commit_ts > 0) {
        return sp.commit_ts;
    }
    if initial == -1 { now() } else { initial }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_upstream_files() {
        let dir = tempfile::tempdir().unwrap();
        let cp = FileCheckpoint::new(dir.path().join("savepoint"));
        assert_eq!(cp.load().unwrap(), None);
        let sp = Savepoint { consistent: true, commit_ts: 412518831548007863, schema_version: 1234 };
        cp.save(&sp).unwrap();
        assert_eq!(cp.load().unwrap(), Some(sp));
        let text = std::fs::read_to_string(cp.path()).unwrap();
        assert!(text.contains("commitTS = 412518831548007863\n"), "{text}");
        // binlogctl generate_meta writes only commitTS
        std::fs::write(cp.path(), "commitTS = 7\n").unwrap();
        assert_eq!(cp.load().unwrap(), Some(Savepoint { consistent: false, commit_ts: 7, schema_version: 0 }));
        std::fs::write(cp.path(), "commitTS = \"x\"\n").unwrap();
        let e = cp.load().unwrap_err().to_string();
        assert!(e.contains("savepoint") && e.contains("commitTS"), "{e}");
    }

    #[test]
    fn start_ts_precedence() {
        let sp = Savepoint { commit_ts: 50, ..Default::default() };
        assert_eq!(start_ts(Some(70), Some(&sp), true, 10, || 99), 70);
        assert_eq!(start_ts(None, Some(&sp), true, 10, || 99), 50);
        assert_eq!(start_ts(None, Some(&sp), false, 10, || 99), 10);
        assert_eq!(start_ts(Some(0), None, true, -1, || 99), 99);
        assert_eq!(start_ts(None, Some(&Savepoint::default()), true, 0, || 99), 0);
    }
}
