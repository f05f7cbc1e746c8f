//! The MySQL/TiDB sink (`db-type = "mysql"` / `"tidb"`), also Reparo's loader.
//!
//! [`MysqlSink::connect`] opens the downstream, creates and reads the checkpoint, and starts one
//! background task (the *coordinator*) that owns the downstream connections. [`Sink::write`] queues
//! an item (waiting while the queued items exceed the memory quota); the coordinator takes everything
//! queued so far as one *batch* (no timers: while a batch runs, the next one accumulates), splits it
//! into `worker-count` hash *slots* by key hash, runs the slots on `k` of the connections (slot `s`
//! on connection `s % k`; `k` grows with the batch's changes, an insert counting less than an update
//! or delete: `conn_rows`, `conn_inserts`), and applies each connection's part as one downstream
//! transaction of multi-row INSERT/REPLACE, merged DELETE, UPDATE … LIMIT 1 statements sent several
//! per packet; long runs of inserts into one table go as binary-protocol prepared multi-row INSERTs
//! instead (`prepared_params`), which the server applies without parsing values. A batch runs in a
//! task of its own while the coordinator builds the SQL of the next one; the next one starts only
//! after it committed.
//!
//! # Exactly-once
//! With a checkpoint configured, every downstream transaction carries the checkpoint of what it
//! applies, so a crash at any point neither loses nor repeats a row change:
//! - a batch applied by one connection ends with upstream's row
//!   `REPLACE INTO tidb_binlog.checkpoint VALUES(<cluster>, '{"commitTS": <batch max ts>, ..}')`;
//! - a batch split over several connections: each part ends with the worker rows
//!   `(cluster, w, n, <batch max ts>)` in `tidb_binlog.checkpoint_workers` of every slot `w` it
//!   carries (the slots without a change in this batch too); the first part also moves
//!   upstream's row to the previous batch's ts (a batch starts only after the previous one committed,
//!   and the coordinator writes upstream's row on its own when it goes idle or on flush).
//!   A row change goes to slot `stable_hash(first causality key) % n`, which depends only on the
//!   change, so after a crash the rows say exactly which changes of the interrupted batch are in:
//!   [`MysqlSink::load_checkpoint`] returns the lowest worker ts, and items up to the highest are
//!   replayed on one connection, skipping the changes whose worker already committed them.
//! - After a lost connection the same rows are re-read, so a retried COMMIT whose first attempt
//!   did succeed is not applied twice.
//! - DDL cannot share a transaction in MySQL (it commits implicitly): pending DML is committed
//!   first, the DDL runs, then upstream's row moves to the DDL's ts in its own transaction. A crash
//!   between the two re-runs the DDL, and the "already exists / does not exist" errors ignored as
//!   upstream does make that harmless for CREATE/DROP/ADD/RENAME; a DDL that is not idempotent
//!   (e.g. `ALTER TABLE .. AUTO_INCREMENT`-style rewrites are, TRUNCATE is as no DML follows it yet)
//!   is the only window.
//! - It is not exactly-once when the downstream tables are not transactional (MyISAM) or without a
//!   checkpoint (`checkpoint: None`, Reparo): then upstream's safe mode is the tool, and
//!   `safe_mode_after_start` forces it for the first minutes after a start, as upstream does.
//!   With a checkpoint that automatic safe mode is off: replays are filtered exactly instead.
//!
//! # TLS
//! With [`MysqlTls`] (`[syncer.to.security]`) every connection uses rustls (ring), trusting only the
//! given CA; handshake and certificate failures are fatal at once ([`MysqlError::Tls`], naming the
//! server) instead of being retried like an outage.
//!
//! # Time zone
//! TIMESTAMP values arrive in UTC. Without `time_zone` in `params` the session zone is set to
//! `'+00:00'` and UTC text is sent (exact). With one, the session uses it and each TIMESTAMP literal
//! is converted by the server (`CONVERT_TZ`), so its zone rules apply (ambiguous DST hours are
//! ambiguous there too). `SYSTEM`/`Local` are rejected, as upstream.

mod batch;
mod checkpoint;
mod fence;
mod sql;
mod table;

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use tokio::sync::{Semaphore, mpsc, oneshot};

pub use checkpoint::CheckpointCfg;

use self::batch::{GroupPlan, Packet, PartPlan, Plans, Settings};
use self::checkpoint::Applied;
use self::sql::{Dialect, TablePlan};
use super::{Sink, SinkError};
use crate::txn::{Body, Ddl, Item, Value, quote_ident};

/// How to reach and write the downstream (`[syncer.to]`, `[syncer]` keys), shared by the drainer and
/// Reparo.
#[derive(Debug, Clone)]
pub struct MysqlSinkConfig {
    /// Host (`[syncer.to] host`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password (already decrypted).
    pub password: String,
    /// `[syncer.to.params]`: session variables (`time_zone` among them, see the module docs).
    pub params: Vec<(String, String)>,
    /// `[syncer] sql-mode`: the session's sql_mode when set.
    pub sql_mode: Option<String>,
    /// `safe-mode`: INSERT → REPLACE, UPDATE → DELETE + REPLACE.
    pub safe_mode: bool,
    /// Upstream forces safe mode this long after a start; used only without a checkpoint.
    pub safe_mode_after_start: Duration,
    /// `txn-batch` (20): with `worker-count`, sizes a batch (see `batch_rows`).
    pub txn_batch: usize,
    /// `worker-count` (16): connections a batch is split over.
    pub worker_count: usize,
    /// `disable-dispatch`: one downstream transaction per upstream transaction, one connection.
    pub disable_dispatch: bool,
    /// `disable-detect`: no causality detection (conflicting rows may then reorder across workers).
    pub disable_detect: bool,
    /// Set the TiDB session variables upstream sets (`db-type = "tidb"`); unknown ones are ignored.
    pub tidb: bool,
    /// Where the checkpoint lives; `None` keeps none (Reparo).
    pub checkpoint: Option<CheckpointCfg>,
    /// Row changes per batch; 0 = `txn_batch × worker_count × 32`.
    pub batch_rows: usize,
    /// Updates and deletes per connection: a batch of `u` updates and deletes and `i` inserts is
    /// spread over `ceil(u / conn_rows + i / conn_inserts)` of the `worker_count` connections.
    /// 0 = `txn_batch × 32` for TiDB (every connection busy, as upstream: TiDB scales with
    /// connections), `txn_batch × 128` for MySQL (4 connections for a full default batch: updates
    /// and deletes gain from parallel sessions; see bench/RESULTS.md).
    pub conn_rows: usize,
    /// Inserts per connection (see `conn_rows`). 0 = `conn_rows` when that is set, else
    /// `txn_batch × 32` for TiDB and `txn_batch × 512` for MySQL (one connection for a full default
    /// batch: sessions inserting into one MySQL/MariaDB table contend for its last pages).
    pub conn_inserts: usize,
    /// Parameters per prepared multi-row INSERT: runs of at least `prepared_params / columns`
    /// inserts (at most 1,024 rows) into one table are sent as binary-protocol prepared statements,
    /// which the server applies without parsing the values (see bench/RESULTS.md); 0 = text only.
    pub prepared_params: usize,
    /// Bytes of queued items `write` accepts before it waits (backpressure).
    pub memory_quota: usize,
    /// How long the downstream may keep failing (connection errors, deadlocks) before the sink gives up.
    pub retry_for: Duration,
    /// `[syncer.to.security]`: TLS to the downstream; `None` = plain TCP.
    pub tls: Option<MysqlTls>,
    /// `[syncer.to] sync-mode = 2` (partial columns): columns the downstream table lacks are left
    /// out of statements, and `STRICT_TRANS_TABLES` is removed from the session's sql_mode (so
    /// downstream columns the rows do not carry take their implicit defaults).
    pub partial_columns: bool,
    /// `loopback-control` with this `channel-id`: every downstream transaction first updates this
    /// sink's row of the mark table (see [`crate::loopback`]); the table and rows are created at start.
    pub loopback: Option<i64>,
    /// `[syncer.to] read-timeout` (`1m`): the longest one round trip (a packet of a transaction, a
    /// DDL, a checkpoint write) may wait for the downstream's reply; then the connection is dropped
    /// and the work retried on a new one, as the Go driver's `readTimeout` makes upstream do.
    pub read_timeout: Duration,
    /// Drainer HA ([`crate::ha`]): this active drainer's task and fencing token; every downstream
    /// transaction checks it (module `fence`). Needs `checkpoint`.
    pub fence: Option<crate::ha::Fence>,
}

/// TLS to the downstream (`[syncer.to.security]` `ssl-ca`, `ssl-cert`, `ssl-key`). The server's
/// certificate must chain to `ca` (only: the built-in web roots are not trusted) and name `host`;
/// with `client` the sink also presents that certificate and key (users created `REQUIRE X509`).
/// The files are read at every connect, so renewed certificates apply on the next reconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlTls {
    /// PEM CA certificate(s).
    pub ca: std::path::PathBuf,
    /// PEM client certificate chain and private key.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Default for MysqlSinkConfig {
    fn default() -> Self {
        MysqlSinkConfig {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "root".into(),
            password: String::new(),
            params: vec![],
            sql_mode: None,
            safe_mode: false,
            safe_mode_after_start: Duration::from_secs(300),
            txn_batch: 20,
            worker_count: 16,
            disable_dispatch: false,
            disable_detect: false,
            tidb: false,
            checkpoint: Some(CheckpointCfg::default()),
            batch_rows: 0,
            conn_rows: 0,
            conn_inserts: 0,
            prepared_params: 4096,
            memory_quota: 256 << 20,
            retry_for: Duration::from_secs(600),
            tls: None,
            partial_columns: false,
            loopback: None,
            read_timeout: Duration::from_secs(60),
            fence: None,
        }
    }
}

/// MySQL sink errors.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// Bad configuration.
    #[error("config: {0}")]
    Config(String),
    /// The downstream refused the login.
    #[error("the downstream {addr} refused user {user:?}: {message} (check [syncer.to] user and password)")]
    Auth {
        /// host:port.
        addr: String,
        /// User name.
        user: String,
        /// Server message.
        message: String,
    },
    /// The TLS handshake with the downstream failed (or its files are unreadable).
    #[error(
        "TLS to the downstream {addr} failed: {why} (check [syncer.to.security] ssl-ca/ssl-cert/ssl-key and that \
         the server's certificate is signed by that CA and names the host)"
    )]
    Tls {
        /// host:port.
        addr: String,
        /// The driver's error, with its causes.
        why: String,
    },
    /// A query failed.
    #[error("{what}: {source}")]
    Query {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },
    /// A table the items write to does not exist downstream.
    #[error("table {table} does not exist in the downstream (create it, or its database, there first)")]
    NoTable {
        /// `` `db`.`t` ``.
        table: String,
    },
    /// A value cannot be written.
    #[error("txn at commit ts {commit_ts}, table {table}: {why}")]
    BadValue {
        /// The item's commit ts.
        commit_ts: i64,
        /// The table.
        table: String,
        /// Why.
        why: String,
    },
    /// The downstream rejected row changes (type mismatch, missing column, ...).
    #[error("the downstream rejected txns with commit ts {first}..={last}: {source}")]
    Rejected {
        /// Lowest commit ts in the failed transaction.
        first: i64,
        /// Highest.
        last: i64,
        /// The server's error.
        #[source]
        source: mysql_async::Error,
    },
    /// The downstream rejected a DDL.
    #[error(
        "the downstream rejected the DDL at commit ts {commit_ts} ({query}): {message}; \
         to skip it, add {commit_ts} to [syncer] ignore-txn-commit-ts"
    )]
    DdlRejected {
        /// The DDL's commit ts.
        commit_ts: i64,
        /// The DDL text.
        query: String,
        /// Server message.
        message: String,
    },
    /// The downstream kept failing for longer than `retry_for`.
    #[error("the downstream {addr} kept failing for {secs}s, giving up: {last}")]
    Unavailable {
        /// host:port.
        addr: String,
        /// Seconds spent retrying.
        secs: u64,
        /// The last error.
        last: String,
    },
    /// Drainer HA: taking over the downstream failed, or a newer active drainer fenced this one out.
    #[error("drainer HA, task {task} with token {token}: {why}")]
    Fence {
        /// The task.
        task: String,
        /// This drainer's token.
        token: i64,
        /// What happened.
        why: String,
    },
    /// Another sink holds this sink's named lock.
    #[error(
        "another MySQL sink holds lock {lock:?} (is a second drainer for this cluster writing to this downstream?)"
    )]
    Busy {
        /// The lock name.
        lock: String,
    },
    /// The checkpoint row is unreadable.
    #[error("checkpoint {table}: {why}")]
    Checkpoint {
        /// The table.
        table: String,
        /// Why.
        why: String,
    },
    /// The sink stopped after an earlier error.
    #[error("stopped: {0}")]
    Stopped(String),
    /// A bug.
    #[error("internal: {0}")]
    Internal(String),
}

impl MysqlError {
    fn query(what: impl Into<String>, source: mysql_async::Error) -> Self {
        MysqlError::Query { what: what.into(), source }
    }
}

/// Errors worth retrying: the connection, deadlocks, lock waits, a server going down.
fn retryable(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => {
            matches!(s.code, 1040 | 1053 | 1205 | 1213 | 1317 | 1927 | 2006 | 2013 | 8002 | 9007)
        }
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        _ => false,
    }
}

/// A connect error that retrying cannot fix when TLS is on: the handshake or certificate
/// verification failed, a certificate/key file is missing or malformed, or the server has no TLS.
fn tls_failure(e: &mysql_async::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Tls(_)) => true,
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => {
            matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::NotFound | ErrorKind::PermissionDenied)
        }
        mysql_async::Error::Driver(d) => matches!(
            d,
            mysql_async::DriverError::NoClientSslFlagFromServer | mysql_async::DriverError::NoKeyFound
        ),
        _ => false,
    }
}

/// An error with its causes, `a: b: c` (rustls' reason sits below the driver's io error).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// Errors that say the cached downstream table info may be stale (someone changed the table by
/// hand): unknown column, column count, value for a generated column, no such table. The batch is
/// retried once after re-reading the table.
fn stale_shape(code: u16) -> bool {
    matches!(code, 1054 | 1136 | 1146 | 1906 | 3105)
}

/// The server will not run a prepared statement: too many prepared statements server-wide
/// (`max_prepared_stmt_count`), a statement the protocol does not support, too many placeholders.
fn prepare_refused(code: u16) -> bool {
    matches!(code, 1295 | 1390 | 1461)
}

/// Upstream's ignorable DDL errors: database/table/column/index already exists or does not exist.
fn ignorable_ddl_error(code: u16) -> bool {
    matches!(code, 1007 | 1008 | 1049 | 1050 | 1051 | 1054 | 1060 | 1061 | 1091 | 1146 | 1176 | 1831)
}

enum Fail {
    Retry(mysql_async::Error),
    Fatal(MysqlError),
}

impl From<MysqlError> for Fail {
    fn from(e: MysqlError) -> Self {
        Fail::Fatal(e)
    }
}

/// A session's facts learned at connect.
#[derive(Debug, Clone, Copy)]
struct Session {
    dialect: Dialect,
    max_packet: usize,
}

fn addr(cfg: &MysqlSinkConfig) -> String {
    format!("{}:{}", cfg.host, cfg.port)
}

fn time_zone(cfg: &MysqlSinkConfig) -> Result<Option<String>, MysqlError> {
    let Some((_, v)) = cfg.params.iter().find(|(k, _)| k.eq_ignore_ascii_case("time_zone")) else {
        return Ok(None);
    };
    let v = v.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
    if v.eq_ignore_ascii_case("SYSTEM") || v.eq_ignore_ascii_case("Local") {
        return Err(MysqlError::Config(format!("[syncer.to.params] time_zone = {v:?} is not allowed; name a zone")));
    }
    Ok(Some(v))
}

fn is_utc(zone: &str) -> bool {
    matches!(zone, "+00:00" | "-00:00" | "+0:00" | "UTC" | "utc" | "Etc/UTC" | "GMT")
}

/// The named lock connection `worker` holds while it lives (so a restarted sink waits until every
/// connection of a crashed one has finished its last transaction before reading the checkpoint).
fn lock_name(ck: &CheckpointCfg, worker: usize) -> String {
    let name = format!("{}.{}:{}:{worker}", ck.schema, ck.table, ck.cluster_id);
    let cut = name.char_indices().rev().nth(63).map_or(0, |(i, _)| i);
    name[cut..].to_string()
}

/// Takes (or, with `release`, takes and drops) the named lock; waits up to 60 s.
async fn take_lock(conn: &mut Conn, name: &str, release: bool) -> Result<(), Fail> {
    let mut q = String::new();
    sql::push_quoted(&mut q, name, Dialect::default());
    match conn.query_first::<Option<i64>, _>(format!("SELECT GET_LOCK({q}, 60)")).await {
        Ok(Some(Some(1))) => {}
        Ok(_) => {
            return Err(Fail::Fatal(MysqlError::Busy { lock: name.to_string() }));
        }
        Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
        Err(e) => {
            return Err(Fail::Fatal(MysqlError::query(format!("taking lock {name}"), e)));
        }
    }
    if release && let Err(e) = conn.query_drop(format!("DO RELEASE_LOCK({q})")).await {
        return Err(if retryable(&e) { Fail::Retry(e) } else { Fail::Fatal(MysqlError::query("releasing a lock", e)) });
    }
    Ok(())
}

/// Prepared statements a connection keeps (least recently used ones are closed).
const STMT_CACHE: usize = 32;

/// Opens one session for connection `worker`: login, time zone, sql_mode, params, TiDB variables,
/// and (with a checkpoint) the connection's named lock.
async fn open(cfg: &MysqlSinkConfig, worker: usize) -> Result<(Conn, Session), Fail> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(cfg.host.clone())
        .tcp_port(cfg.port)
        .user(Some(cfg.user.clone()))
        .pass(Some(cfg.password.clone()))
        .prefer_socket(false)
        .tcp_nodelay(true)
        // the prepared multi-row INSERTs: one statement per table and column set in use
        .stmt_cache_size(STMT_CACHE);
    let opts = match &cfg.tls {
        None => opts,
        Some(t) => {
            let mut ssl =
                mysql_async::SslOpts::default().with_root_certs(vec![t.ca.clone().into()]).with_disable_built_in_roots(true);
            if let Some((cert, key)) = &t.client {
                ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(cert.clone().into(), key.clone().into())));
            }
            opts.ssl_opts(ssl)
        }
    };
    let mut conn = match Conn::new(opts).await {
        Ok(c) => c,
        Err(mysql_async::Error::Server(s)) if matches!(s.code, 1044 | 1045 | 1698) => {
            return Err(Fail::Fatal(MysqlError::Auth { addr: addr(cfg), user: cfg.user.clone(), message: s.message }));
        }
        Err(e) if cfg.tls.is_some() && tls_failure(&e) => {
            return Err(Fail::Fatal(MysqlError::Tls { addr: addr(cfg), why: error_chain(&e) }));
        }
        Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
        Err(e) => {
            return Err(Fail::Fatal(MysqlError::query(format!("connecting to {}", addr(cfg)), e)));
        }
    };
    let zone = time_zone(cfg)?;
    let mut setup = Vec::new();
    let mut q = String::new();
    sql::push_quoted(&mut q, zone.as_deref().unwrap_or("+00:00"), Dialect::default());
    setup.push(format!("SET SESSION time_zone = {q}"));
    if let Some(mode) = &cfg.sql_mode {
        let mut q = String::new();
        sql::push_quoted(&mut q, mode, Dialect::default());
        setup.push(format!("SET SESSION sql_mode = {q}"));
    }
    for (k, v) in cfg.params.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("time_zone")) {
        if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Fail::Fatal(MysqlError::Config(format!("[syncer.to.params] {k:?} is not a variable name"))));
        }
        let v = v.trim().trim_matches('\'');
        let val = if v.parse::<f64>().is_ok() {
            v.to_string()
        } else {
            let mut q = String::new();
            sql::push_quoted(&mut q, v, Dialect::default());
            q
        };
        setup.push(format!("SET SESSION {k} = {val}"));
    }
    for st in &setup {
        if let Err(e) = conn.query_drop(st).await {
            if retryable(&e) {
                return Err(Fail::Retry(e));
            }
            return Err(Fail::Fatal(MysqlError::Config(format!("{st}: {e}"))));
        }
    }
    if cfg.tidb {
        for st in [
            "SET SESSION allow_auto_random_explicit_insert = 1",
            "SET SESSION tidb_txn_mode = 'optimistic'",
            "SET SESSION tidb_placement_mode = 'ignore'",
        ] {
            match conn.query_drop(st).await {
                Ok(()) => {}
                Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
                Err(_) => {} // unknown to this server: ignored, as upstream
            }
        }
    }
    let facts: Option<(String, u64)> = match conn.query_first("SELECT @@SESSION.sql_mode, @@max_allowed_packet").await {
        Ok(r) => r,
        Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
        Err(e) => {
            return Err(Fail::Fatal(MysqlError::query("reading the session's sql_mode", e)));
        }
    };
    let (mut mode, max_packet) = facts.unwrap_or_default();
    if cfg.partial_columns {
        let kept: Vec<&str> =
            mode.split(',').filter(|m| !m.trim().eq_ignore_ascii_case("STRICT_TRANS_TABLES")).collect();
        let kept = kept.join(",");
        if kept != mode {
            let mut q = String::new();
            sql::push_quoted(&mut q, &kept, Dialect::default());
            match conn.query_drop(format!("SET SESSION sql_mode = {q}")).await {
                Ok(()) => mode = kept,
                Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
                Err(e) => return Err(Fail::Fatal(MysqlError::query("removing STRICT_TRANS_TABLES (sync-mode = 2)", e))),
            }
        }
    }
    if let Some(ck) = &cfg.checkpoint {
        take_lock(&mut conn, &lock_name(ck, worker), false).await?;
    }
    let dialect = Dialect {
        backslash_escapes: !mode.to_ascii_uppercase().contains("NO_BACKSLASH_ESCAPES"),
        convert_timestamps: zone.as_deref().is_some_and(|z| !is_utc(z)),
    };
    Ok((conn, Session { dialect, max_packet: max_packet.max(1 << 20) as usize }))
}

/// Retries with backoff while the downstream is unavailable, up to `cfg.retry_for` since `since`.
async fn backoff(
    cfg: &MysqlSinkConfig,
    since: &mut Option<(Instant, u32)>,
    e: &mysql_async::Error,
) -> Result<(), MysqlError> {
    let (start, n) = since.get_or_insert((Instant::now(), 0));
    let waited = start.elapsed();
    if waited >= cfg.retry_for {
        return Err(MysqlError::Unavailable { addr: addr(cfg), secs: waited.as_secs(), last: e.to_string() });
    }
    let pause = Duration::from_millis(100u64 << (*n).min(5)).min(Duration::from_secs(3));
    *n += 1;
    tracing::warn!(target: "drainer::sink::mysql", error = %e, retry_in = ?pause, "downstream failed, retrying");
    tokio::time::sleep(pause).await;
    Ok(())
}

async fn open_retrying(cfg: &MysqlSinkConfig) -> Result<(Conn, Session), MysqlError> {
    let mut since = None;
    loop {
        match open(cfg, 0).await {
            Ok(c) => return Ok(c),
            Err(Fail::Fatal(e)) => return Err(e),
            Err(Fail::Retry(e)) => backoff(cfg, &mut since, &e).await?,
        }
    }
}

enum Msg {
    Item(Arc<Item>, tokio::sync::OwnedSemaphorePermit),
    Flush { consistent: bool, reply: oneshot::Sender<Result<i64, String>> },
}

#[derive(Debug, Default)]
struct Shared {
    durable: AtomicI64,
    error: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, e: &MysqlError) {
        let mut g = self.error.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert_with(|| e.to_string());
    }

    fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The MySQL/TiDB sink; see the module docs.
#[derive(Debug)]
pub struct MysqlSink {
    tx: Option<mpsc::UnboundedSender<Msg>>,
    quota: Arc<Semaphore>,
    quota_units: u32,
    shared: Arc<Shared>,
    resume: Option<i64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MysqlSink {
    /// Connects (retrying while the downstream is unreachable, up to `retry_for`), creates and reads
    /// the checkpoint, and starts applying. Must run inside a Tokio runtime.
    pub async fn connect(cfg: MysqlSinkConfig) -> Result<MysqlSink, MysqlError> {
        if cfg.worker_count == 0 || cfg.txn_batch == 0 {
            return Err(MysqlError::Config("worker-count and txn-batch must be at least 1".into()));
        }
        time_zone(&cfg)?;
        match (&cfg.fence, &cfg.checkpoint) {
            (Some(f), Some(ck)) => fence::take_over(&cfg, ck, f).await?,
            (Some(_), None) => return Err(MysqlError::Config("drainer HA fencing needs the checkpoint table".into())),
            _ => {}
        }
        let (mut conn, session) = open_retrying(&cfg).await?;
        if let Some(channel) = cfg.loopback {
            let sql = format!("{};{}", crate::loopback::CREATE_SQL, crate::loopback::init_sql(cfg.worker_count, channel));
            conn.query_drop(sql).await.map_err(|e| MysqlError::query("creating the loopback mark table retl._drainer_repl_mark", e))?;
        }
        let mut applied = Applied::default();
        if let Some(ck) = &cfg.checkpoint {
            let tq = format!("{}.{}", quote_ident(&ck.schema), quote_ident(&ck.table));
            conn.query_drop(ck.create_sql())
                .await
                .map_err(|e| MysqlError::Checkpoint { table: tq.clone(), why: format!("creating it: {e}") })?;
            // Wait until every connection of an earlier run has ended (its last transaction is
            // committed or rolled back) before reading what is applied.
            let stored_n: Option<Option<i64>> = conn
                .query_first(ck.max_workers_sql())
                .await
                .map_err(|e| MysqlError::Checkpoint { table: tq.clone(), why: e.to_string() })?;
            let n = (stored_n.flatten().unwrap_or(0).max(0) as usize).max(cfg.worker_count);
            for w in 1..n {
                match take_lock(&mut conn, &lock_name(ck, w), true).await {
                    Ok(()) => {}
                    Err(Fail::Fatal(e)) => return Err(e),
                    Err(Fail::Retry(e)) => {
                        return Err(MysqlError::query("waiting for an earlier run's connections", e));
                    }
                }
            }
            applied = ck
                .load(&mut conn)
                .await
                .map_err(|e| MysqlError::Checkpoint { table: tq.clone(), why: e.to_string() })?;
        }
        let resume = (cfg.checkpoint.is_some() && applied.found && applied.resume() > 0).then(|| applied.resume());
        let shared = Arc::new(Shared::default());
        shared.durable.store(resume.unwrap_or(0), Ordering::SeqCst);
        let quota_units = (cfg.memory_quota >> 10).clamp(1, u32::MAX as usize >> 4) as u32;
        let quota = Arc::new(Semaphore::new(quota_units as usize));
        let (tx, rx) = mpsc::unbounded_channel();
        let workers = if cfg.disable_dispatch { 1 } else { cfg.worker_count };
        let mut conns: Vec<Option<Conn>> = (0..workers).map(|_| None).collect();
        conns[0] = Some(conn);
        // Open the other connections now, in parallel, rather than one by one inside the first
        // batch; one that fails for a retryable reason is opened when first needed.
        let rest = futures::future::join_all((1..workers).map(|w| open(&cfg, w))).await;
        for (w, r) in rest.into_iter().enumerate() {
            match r {
                Ok((c, _)) => conns[w + 1] = Some(c),
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Retry(_)) => {}
            }
        }
        let coord = Coordinator {
            started: Instant::now(),
            durable: resume.unwrap_or(0),
            global_written: applied.global,
            schema_version: applied.schema_version,
            applied,
            cfg,
            session,
            conns,
            cache: table::Cache::default(),
            shared: shared.clone(),
            since: None,
            inflight: None,
            text_only: false,
        };
        let task = tokio::spawn(coord.run(rx));
        Ok(MysqlSink { tx: Some(tx), quota, quota_units, shared, resume, task: Some(task) })
    }

    /// Every checkpoint row stored in `cfg`'s checkpoint table: `(cluster id, consistent)`; empty when
    /// the table does not exist. For the relay log replay, which runs without PD (so without the
    /// cluster id).
    pub async fn stored_checkpoints(cfg: &MysqlSinkConfig) -> Result<Vec<(u64, bool)>, MysqlError> {
        let Some(ck) = cfg.checkpoint.clone() else { return Ok(Vec::new()) };
        let plain = MysqlSinkConfig { checkpoint: None, ..cfg.clone() };
        let (mut conn, _) = open_retrying(&plain).await?;
        let table = format!("{}.{}", quote_ident(&ck.schema), quote_ident(&ck.table));
        let rows: Vec<(u64, String)> = match conn.query(format!("SELECT clusterID, checkPoint FROM {table}")).await {
            Ok(r) => r,
            Err(e) if server_code(&e) == Some(1146) => Vec::new(),
            Err(e) => return Err(MysqlError::Checkpoint { table, why: e.to_string() }),
        };
        let _ = conn.disconnect().await;
        rows.into_iter()
            .map(|(id, text)| {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| MysqlError::Checkpoint { table: table.clone(), why: format!("{text:?}: {e}") })?;
                Ok((id, v.get("consistent").and_then(|c| c.as_bool()).unwrap_or(false)))
            })
            .collect()
    }

    /// Flushes, writes the checkpoint with `consistent = true` (a clean shutdown) and stops.
    pub async fn close(mut self) -> Result<i64, SinkError> {
        let ts = self.flush_inner(true).await?;
        self.tx.take();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        Ok(ts)
    }

    fn stopped(&self) -> SinkError {
        SinkError::new(
            "mysql",
            MysqlError::Stopped(self.shared.error().unwrap_or_else(|| "the sink task ended".into())),
        )
    }

    async fn flush_inner(&mut self, consistent: bool) -> Result<i64, SinkError> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        tx.send(Msg::Flush { consistent, reply }).map_err(|_| self.stopped())?;
        match rx.await {
            Ok(Ok(ts)) => Ok(ts),
            Ok(Err(e)) => Err(SinkError::new("mysql", MysqlError::Stopped(e))),
            Err(_) => Err(self.stopped()),
        }
    }
}

impl Drop for MysqlSink {
    fn drop(&mut self) {
        // Dropping the sender ends the coordinator after what is queued; abort instead so that a
        // dropped sink stops at once (a crash, as far as the downstream can tell).
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Approximate bytes an item holds.
fn item_bytes(item: &Item) -> usize {
    fn value(v: &Option<Value>) -> usize {
        24 + match v {
            Some(Value::Bytes(b)) => b.len(),
            Some(Value::Decimal(s) | Value::Json(s)) => s.len(),
            Some(Value::Enum { name, .. }) => name.len(),
            Some(Value::Set { names, .. }) => names.len(),
            _ => 0,
        }
    }
    let mut n = 128;
    match &item.body {
        Body::Dml(ts) => {
            for t in ts {
                for r in &t.rows {
                    n += match r {
                        crate::txn::RowChange::Insert(r) | crate::txn::RowChange::Delete(r) => {
                            r.iter().map(value).sum::<usize>()
                        }
                        crate::txn::RowChange::Update { old, new } => {
                            old.iter().map(value).sum::<usize>() + new.iter().map(value).sum::<usize>()
                        }
                    };
                }
            }
        }
        Body::Ddl(d) => n += d.query.len(),
        Body::Empty => {}
    }
    n
}

impl Sink for MysqlSink {
    async fn load_checkpoint(&mut self) -> Result<Option<i64>, SinkError> {
        Ok(self.resume)
    }

    async fn write(&mut self, item: Arc<Item>) -> Result<(), SinkError> {
        if self.shared.error().is_some() {
            return Err(self.stopped());
        }
        let units = ((item_bytes(&item) >> 10) as u32).clamp(1, self.quota_units);
        let permit = self.quota.clone().acquire_many_owned(units).await.map_err(|_| self.stopped())?;
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        tx.send(Msg::Item(item, permit)).map_err(|_| self.stopped())
    }

    fn durable_ts(&self) -> i64 {
        self.shared.durable.load(Ordering::SeqCst)
    }

    async fn flush(&mut self) -> Result<i64, SinkError> {
        self.flush_inner(false).await
    }
}

/// The background task that owns the connections and applies batches.
struct Coordinator {
    cfg: MysqlSinkConfig,
    session: Session,
    conns: Vec<Option<Conn>>,
    cache: table::Cache,
    applied: Applied,
    shared: Arc<Shared>,
    started: Instant,
    durable: i64,
    global_written: i64,
    schema_version: i64,
    since: Option<(Instant, u32)>,
    /// The batch running while the next one is built.
    inflight: Option<InFlight>,
    /// The downstream refused a prepared statement: every statement is text from then on.
    text_only: bool,
}

type Queued = (Arc<Item>, tokio::sync::OwnedSemaphorePermit);

/// Each part's connection (by index) and what became of it and its transactions.
type PartResults = Vec<(usize, (Option<Conn>, Result<(), mysql_async::Error>))>;

/// A batch applied by its own task (which owns the connections it uses meanwhile).
struct InFlight {
    /// Its items, held until it committed (their memory quota too).
    items: Vec<Queued>,
    first: i64,
    max_ts: i64,
    schema_version: i64,
    global_ts: Option<i64>,
    task: AbortOnDrop,
}

/// Aborts the batch task when the coordinator is dropped (a dropped sink stops at once: the
/// downstream rolls back what its connections did not commit).
struct AbortOnDrop(tokio::task::JoinHandle<PartResults>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Coordinator {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let cap = self.batch_rows();
        let mut next: Option<Msg> = None;
        loop {
            let msg = match next.take() {
                Some(m) => m,
                None => match rx.try_recv() {
                    Ok(m) => m,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        if let Err(e) = self.settle().await {
                            self.die(e, &mut rx);
                        }
                        return;
                    }
                    Err(mpsc::error::TryRecvError::Empty) if self.inflight.is_some() => {
                        // Nothing to prepare meanwhile: wait for the batch in flight, then look again.
                        if let Err(e) = self.settle().await {
                            self.die(e, &mut rx);
                            return;
                        }
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        // Idle: bring upstream's checkpoint row up to date.
                        if let Err(e) = self.write_global(false).await {
                            self.die(e, &mut rx);
                            return;
                        }
                        match rx.recv().await {
                            Some(m) => m,
                            None => break,
                        }
                    }
                },
            };
            let res = match msg {
                Msg::Flush { consistent, reply } => {
                    let r = match self.settle().await {
                        Ok(_) => self.write_global(consistent).await.map(|()| self.durable),
                        Err(e) => Err(e),
                    };
                    let failed = r.as_ref().err().map(|e| e.to_string());
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                    match failed {
                        Some(m) => Err(MysqlError::Stopped(m)),
                        None => Ok(()),
                    }
                }
                Msg::Item(item, permit) => {
                    if let Body::Ddl(ddl) = &item.body {
                        let ddl = ddl.clone();
                        let r = match self.settle().await {
                            Ok(_) => self.apply_ddl(&item, &ddl).await,
                            Err(e) => Err(e),
                        };
                        drop(permit);
                        r
                    } else {
                        let mut batch: Vec<Queued> = vec![(item, permit)];
                        let mut rows = row_count(&batch[0].0);
                        while rows < cap {
                            match rx.try_recv() {
                                Ok(Msg::Item(it, p)) if !matches!(it.body, Body::Ddl(_)) => {
                                    rows += row_count(&it);
                                    batch.push((it, p));
                                }
                                Ok(other) => {
                                    next = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.apply_batch(batch).await
                    }
                }
            };
            if let Err(e) = res {
                self.die(e, &mut rx);
                return;
            }
        }
    }

    fn die(&mut self, e: MysqlError, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        tracing::error!(target: "drainer::sink::mysql", error = %e, "mysql sink stopped");
        self.shared.fail(&e);
        rx.close();
        while let Ok(m) = rx.try_recv() {
            if let Msg::Flush { reply, .. } = m {
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }

    fn batch_rows(&self) -> usize {
        if self.cfg.batch_rows > 0 {
            self.cfg.batch_rows
        } else {
            (self.cfg.txn_batch * self.cfg.worker_count * 32).max(64)
        }
    }

    /// Updates and deletes per connection before a batch is spread over another one (see `conn_rows`).
    fn conn_rows(&self) -> usize {
        match self.cfg.conn_rows {
            0 if self.cfg.tidb => (self.cfg.txn_batch * 32).max(64),
            0 => (self.cfg.txn_batch * 128).max(64),
            n => n,
        }
    }

    /// Inserts per connection before a batch is spread over another one (see `conn_inserts`).
    fn conn_inserts(&self) -> usize {
        match (self.cfg.conn_inserts, self.cfg.conn_rows) {
            (0, 0) if self.cfg.tidb => (self.cfg.txn_batch * 32).max(64),
            (0, 0) => (self.cfg.txn_batch * 512).max(64),
            (0, n) | (n, _) => n,
        }
    }

    fn safe(&self) -> bool {
        self.cfg.safe_mode || (self.cfg.checkpoint.is_none() && self.started.elapsed() < self.cfg.safe_mode_after_start)
    }

    async fn conn(&mut self, w: usize) -> Result<&mut Conn, Fail> {
        if self.conns[w].is_none() {
            let (c, s) = open(&self.cfg, w).await?;
            self.session = s;
            self.conns[w] = Some(c);
        }
        Ok(self.conns[w].as_mut().expect("just connected"))
    }

    fn mark_durable(&mut self, ts: i64) {
        if ts > self.durable {
            self.durable = ts;
            self.shared.durable.store(ts, Ordering::SeqCst);
        }
    }

    /// Handles a retryable failure: waits, drops broken connections, and re-reads the checkpoint,
    /// retrying until that read succeeds: a batch is never retried on a guess of what committed.
    async fn recover(&mut self, mut e: mysql_async::Error) -> Result<(), MysqlError> {
        loop {
            backoff(&self.cfg, &mut self.since, &e).await?;
            for c in &mut self.conns {
                if c.as_ref().is_some_and(|c| c.is_disconnected()) {
                    *c = None;
                }
            }
            let Some(ck) = self.cfg.checkpoint.clone() else { return Ok(()) };
            match self.reload(&ck).await {
                Ok(()) => return Ok(()),
                Err(Fail::Fatal(f)) => return Err(f),
                Err(Fail::Retry(r)) => e = r,
            }
        }
    }

    /// Opens every connection (each waits for its predecessor's session to end), then reads what is
    /// applied.
    async fn reload(&mut self, ck: &CheckpointCfg) -> Result<(), Fail> {
        for w in 0..self.conns.len() {
            self.conn(w).await?;
        }
        let conn = self.conns[0].as_mut().expect("connected above");
        match ck.load(conn).await {
            Ok(a) => {
                self.global_written = a.global;
                self.applied = a;
                Ok(())
            }
            Err(checkpoint::LoadError::Sql(e)) if retryable(&e) => {
                self.conns[0] = None;
                Err(Fail::Retry(e))
            }
            Err(e) => Err(Fail::Fatal(MysqlError::Checkpoint { table: ck.table.clone(), why: e.to_string() })),
        }
    }

    /// Reads the downstream definition of every table `items` write that is not cached yet.
    async fn fetch_tables(&mut self, items: &[Queued]) -> Result<(), Fail> {
        let mut seen = std::collections::HashSet::new();
        for (item, _) in items {
            let Body::Dml(tables) = &item.body else {
                continue;
            };
            for tc in tables {
                let (schema, name) = (&tc.table.schema, &tc.table.name);
                if !seen.insert(Arc::as_ptr(&tc.table) as usize) || self.cache.peek(schema, name).is_some() {
                    continue;
                }
                self.conn(0).await?;
                let conn = self.conns[0].as_mut().expect("connected");
                match self.cache.get(conn, schema, name).await {
                    Ok(_) => {}
                    Err(MysqlError::Query { source, .. }) if retryable(&source) => return Err(Fail::Retry(source)),
                    Err(e) => return Err(Fail::Fatal(e)),
                }
            }
        }
        Ok(())
    }

    /// The table plans for `items` from the cache; `None` when a table is not cached.
    fn plans(&self, items: &[Queued]) -> Option<(Plans, Vec<TablePlan>)> {
        let mut plans = Plans::new();
        let mut list = Vec::new();
        for (item, _) in items {
            let Body::Dml(tables) = &item.body else {
                continue;
            };
            for tc in tables {
                let key = Arc::as_ptr(&tc.table) as usize;
                if plans.contains_key(&key) {
                    continue;
                }
                let down = self.cache.peek(&tc.table.schema, &tc.table.name)?;
                plans.insert(key, (list.len(), tc.table.clone()));
                list.push(table::plan(&tc.table, &down, self.cfg.partial_columns));
            }
        }
        Some((plans, list))
    }

    /// Builds `items` into batches, as if everything in flight had committed (when it does not,
    /// [`Coordinator::settle`] says so and the batches are discarded). `None` when a table is not
    /// cached.
    fn build(&self, items: &[Queued], force_safe: bool) -> Option<Result<Vec<GroupPlan>, MysqlError>> {
        let (plans, list) = self.plans(items)?;
        let settings = Settings {
            workers: self.conns.len(),
            detect: !self.cfg.disable_detect,
            per_txn: self.cfg.disable_dispatch,
            safe: force_safe || self.safe(),
            batch_rows: self.batch_rows(),
            conn_rows: self.conn_rows(),
            conn_inserts: self.conn_inserts(),
            stmt_bytes: (self.session.max_packet / 4).clamp(64 << 10, 1 << 20),
            packet_bytes: (self.session.max_packet / 2).clamp(256 << 10, 8 << 20),
            prepared_params: if self.text_only { 0 } else { self.cfg.prepared_params },
            dialect: self.session.dialect,
            mark: self.cfg.loopback,
            fence: self.fence_sql(),
        };
        let arcs: Vec<Arc<Item>> = items.iter().map(|(i, _)| i.clone()).collect();
        let ck = self.cfg.checkpoint.as_ref();
        let (durable, schema_version) = match &self.inflight {
            Some(f) => (f.max_ts, self.schema_version.max(f.schema_version)),
            None => (self.durable, self.schema_version),
        };
        Some(batch::build(&arcs, &plans, &list, &settings, ck.map(|c| (c, &self.applied)), durable, schema_version))
    }

    /// Applies a batch: builds it while the previous one runs, then starts it and returns without
    /// waiting for it (the next batch is built meanwhile). Batches still run one after another.
    async fn apply_batch(&mut self, mut items: Vec<Queued>) -> Result<(), MysqlError> {
        while !items.is_empty() {
            if self.inflight.is_none() {
                match self.fetch_tables(&items).await {
                    Ok(()) => {}
                    Err(Fail::Fatal(e)) => return Err(e),
                    Err(Fail::Retry(e)) => {
                        self.recover(e).await?;
                        continue;
                    }
                }
            }
            let groups = match self.build(&items, false) {
                None => {
                    // A table to read first: needs a connection, so wait for the batch in flight.
                    self.settle().await?;
                    continue;
                }
                Some(Err(e)) => {
                    self.settle().await?;
                    return Err(e);
                }
                Some(Ok(groups)) => groups,
            };
            let mut valid = true;
            for g in groups {
                if !self.settle().await? {
                    // What was built assumed the batch in flight would commit: build again.
                    valid = false;
                    break;
                }
                let taken: Vec<Queued> = items.drain(..g.n_items).collect();
                self.launch(g, taken).await?;
            }
            if valid {
                break;
            }
        }
        Ok(())
    }

    /// Starts `g` on its connections in a task of its own; [`Coordinator::settle`] collects it.
    async fn launch(&mut self, g: GroupPlan, items: Vec<Queued>) -> Result<(), MysqlError> {
        debug_assert!(self.inflight.is_none());
        for p in &g.parts {
            if let Err(f) = self.conn(p.worker).await {
                return self.apply_items(items, Some(f)).await;
            }
        }
        let conns = self.take_conns(&g.parts);
        let first = items.first().map_or(0, |(i, _)| i.commit_ts);
        let GroupPlan { max_ts, schema_version, global_ts, parts, .. } = g;
        let task = tokio::spawn(run_parts(parts, conns, self.cfg.read_timeout));
        self.inflight = Some(InFlight { items, first, max_ts, schema_version, global_ts, task: AbortOnDrop(task) });
        // Let the task send its first packets before this task goes on building the next batch.
        tokio::task::yield_now().await;
        Ok(())
    }

    /// Waits for the batch in flight. When it committed, records that and returns true; when it
    /// failed, recovers, applies its items again (retrying as [`Coordinator::apply_items`] does) and
    /// returns false: anything built meanwhile must be built again.
    async fn settle(&mut self) -> Result<bool, MysqlError> {
        let Some(mut f) = self.inflight.take() else {
            return Ok(true);
        };
        let results = match (&mut f.task.0).await {
            Ok(r) => r,
            Err(e) => return Err(MysqlError::Internal(format!("a batch task ended: {e}"))),
        };
        match self.absorb(results, f.first, f.max_ts) {
            None => {
                self.committed(f.max_ts, f.schema_version, f.global_ts);
                self.since = None;
                Ok(true)
            }
            Some(fail) => {
                let items = std::mem::take(&mut f.items);
                self.apply_items(items, Some(fail)).await?;
                Ok(false)
            }
        }
    }

    /// The fencing check every transaction starts with, in HA mode.
    fn fence_sql(&self) -> Option<String> {
        let (f, ck) = (self.cfg.fence.as_ref()?, self.cfg.checkpoint.as_ref()?);
        Some(fence::check_sql(ck, f, self.cfg.tidb))
    }

    /// A failed fencing check, as the error that stops this drainer.
    fn fenced(&self) -> MysqlError {
        let (task, token) = self.cfg.fence.as_ref().map(|f| (f.task.clone(), f.token)).unwrap_or_default();
        MysqlError::Fence { task, token, why: "a newer active drainer took over: the downstream's fencing check refused our transaction".into() }
    }

    /// Records that a batch committed.
    fn committed(&mut self, max_ts: i64, schema_version: i64, global_ts: Option<i64>) {
        self.schema_version = self.schema_version.max(schema_version);
        if let Some(ts) = global_ts {
            self.global_written = self.global_written.max(ts);
        }
        self.applied.advance(max_ts);
        self.mark_durable(max_ts);
    }

    /// Takes the (open) connection of every part, for the parts' run.
    fn take_conns(&mut self, parts: &[PartPlan]) -> Vec<Conn> {
        parts.iter().map(|p| self.conns[p.worker].take().expect("connected before")).collect()
    }

    /// Puts the connections of a finished batch back; the failure to act on, if a part failed.
    fn absorb(&mut self, results: PartResults, first: i64, last: i64) -> Option<Fail> {
        let mut fail: Option<Fail> = None;
        for (w, (conn, r)) in results {
            self.conns[w] = conn;
            if let Err(e) = r {
                let f = if fence::is_fenced(&e) && self.cfg.fence.is_some() {
                    Fail::Fatal(self.fenced())
                } else if retryable(&e) {
                    Fail::Retry(e)
                } else {
                    Fail::Fatal(MysqlError::Rejected { first, last, source: e })
                };
                if !matches!(fail, Some(Fail::Fatal(_))) {
                    fail = Some(f);
                }
            }
        }
        fail
    }

    /// Applies `items` one batch at a time, waiting for each, after handling `fail` (how their
    /// first attempt failed): retries lost connections and deadlocks from the re-read checkpoint,
    /// and re-reads a table the downstream rejected the rows of for their shape, once.
    async fn apply_items(&mut self, mut items: Vec<Queued>, mut fail: Option<Fail>) -> Result<(), MysqlError> {
        debug_assert!(self.inflight.is_none());
        let mut force_safe = false;
        let mut refreshed = false;
        loop {
            match fail.take() {
                None => {}
                Some(Fail::Fatal(e @ MysqlError::Rejected { .. })) if !refreshed && rejected_with(&e, stale_shape) => {
                    // The downstream table changed under the cache: re-read it and retry once
                    // (what committed is re-read from the checkpoint, as after a lost connection).
                    tracing::info!(target: "drainer::sink::mysql", error = %e, "downstream table changed; re-reading its definition and retrying");
                    refreshed = true;
                    self.cache.clear();
                    self.reread_checkpoint().await?;
                    force_safe = self.cfg.checkpoint.is_none();
                }
                Some(Fail::Fatal(e @ MysqlError::Rejected { .. })) if !self.text_only && rejected_with(&e, prepare_refused) => {
                    // Text statements do the same: switch to them and retry from the checkpoint.
                    tracing::warn!(target: "drainer::sink::mysql", error = %e, "the downstream refused a prepared INSERT; writing text statements from now on");
                    self.text_only = true;
                    self.reread_checkpoint().await?;
                    force_safe = self.cfg.checkpoint.is_none();
                }
                Some(Fail::Fatal(e)) => return Err(e),
                Some(Fail::Retry(e)) => {
                    self.recover(e).await?;
                    // Without a checkpoint a retried transaction may already be in: replay it in safe mode.
                    force_safe = self.cfg.checkpoint.is_none();
                }
            }
            match self.try_batch(&mut items, force_safe).await {
                Ok(()) => {
                    self.since = None;
                    return Ok(());
                }
                Err(f) => fail = Some(f),
            }
        }
    }

    /// Re-reads what committed from the checkpoint (if one is kept) before a batch is retried,
    /// recovering the connection when that read fails for a retryable reason.
    async fn reread_checkpoint(&mut self) -> Result<(), MysqlError> {
        if let Some(ck) = self.cfg.checkpoint.clone() {
            match self.reload(&ck).await {
                Ok(()) => {}
                Err(Fail::Fatal(f)) => return Err(f),
                Err(Fail::Retry(r)) => self.recover(r).await?,
            }
        }
        Ok(())
    }

    /// Applies `items` batch by batch, waiting for each; committed items are removed from the front.
    async fn try_batch(&mut self, items: &mut Vec<Queued>, force_safe: bool) -> Result<(), Fail> {
        self.fetch_tables(items).await?;
        let groups = match self.build(items, force_safe) {
            Some(r) => r?,
            None => return Err(Fail::Fatal(MysqlError::Internal("a table's definition was not cached".into()))),
        };
        for g in groups {
            let first = items.first().map_or(0, |(i, _)| i.commit_ts);
            for p in &g.parts {
                self.conn(p.worker).await?;
            }
            let conns = self.take_conns(&g.parts);
            let results = run_parts(g.parts, conns, self.cfg.read_timeout).await;
            if let Some(f) = self.absorb(results, first, g.max_ts) {
                return Err(f);
            }
            items.drain(..g.n_items);
            self.committed(g.max_ts, g.schema_version, g.global_ts);
        }
        Ok(())
    }

    /// Writes upstream's checkpoint row when it lags `durable` (or to mark a clean shutdown).
    async fn write_global(&mut self, consistent: bool) -> Result<(), MysqlError> {
        let Some(ck) = self.cfg.checkpoint.clone() else {
            return Ok(());
        };
        if self.global_written >= self.durable && !consistent {
            return Ok(());
        }
        let mut mark = self.fence_sql().map(|f| format!("{f};")).unwrap_or_default();
        mark.push_str(&self.cfg.loopback.map(|c| format!("{};", crate::loopback::mark_sql(0, c))).unwrap_or_default());
        let sql = format!("BEGIN;{mark}{};COMMIT", ck.global_sql(self.durable, self.schema_version, consistent));
        loop {
            let limit = self.cfg.read_timeout;
            let r = match self.conn(0).await {
                Ok(c) => timed(limit, c.query_drop(&sql)).await.map_err(|e| {
                    if fence::is_fenced(&e) && self.cfg.fence.is_some() {
                        Fail::Fatal(self.fenced())
                    } else if retryable(&e) {
                        Fail::Retry(e)
                    } else {
                        Fail::Fatal(MysqlError::query("writing the checkpoint", e))
                    }
                }),
                Err(f) => Err(f),
            };
            match r {
                Ok(()) => {
                    self.since = None;
                    self.global_written = self.durable;
                    return Ok(());
                }
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Retry(e)) => {
                    self.conns[0] = None;
                    backoff(&self.cfg, &mut self.since, &e).await?;
                }
            }
        }
    }

    async fn apply_ddl(&mut self, item: &Item, ddl: &Ddl) -> Result<(), MysqlError> {
        if self.cfg.checkpoint.is_some() && item.commit_ts <= self.applied.global {
            self.mark_durable(item.commit_ts);
            return Ok(());
        }
        // Pending DML was applied before this message was taken (batches never span a DDL).
        self.write_global(false).await?;
        loop {
            match self.try_ddl(item, ddl).await {
                Ok(()) => break,
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Retry(e)) => {
                    self.conns[0] = None;
                    backoff(&self.cfg, &mut self.since, &e).await?;
                }
            }
        }
        self.since = None;
        self.cache.clear();
        self.schema_version = self.schema_version.max(item.schema_version);
        self.mark_durable(item.commit_ts);
        self.applied.advance(item.commit_ts);
        self.write_global(false).await
    }

    async fn try_ddl(&mut self, item: &Item, ddl: &Ddl) -> Result<(), Fail> {
        let limit = self.cfg.read_timeout;
        let (fence_check, fenced) = (self.fence_sql(), self.fenced());
        let conn = self.conn(0).await?;
        let lower = ddl.query.trim_start().to_ascii_lowercase();
        let creates_db = lower.starts_with("create database") || lower.starts_with("create schema");
        let rejected = |e: &mysql_async::Error| {
            let message = match e {
                mysql_async::Error::Server(s) => format!("error {}: {}", s.code, s.message),
                e => e.to_string(),
            };
            MysqlError::DdlRejected { commit_ts: item.commit_ts, query: ddl.query.clone(), message }
        };
        if !ddl.schema.is_empty()
            && !creates_db
            && let Err(e) = conn.query_drop(format!("USE {}", quote_ident(&ddl.schema))).await
        {
            if retryable(&e) {
                return Err(Fail::Retry(e));
            }
            // Replaying a DROP after its database is gone is fine; anything else is not.
            if server_code(&e) == Some(1049) && lower.starts_with("drop") {
                tracing::info!(target: "drainer::sink::mysql", commit_ts = item.commit_ts, query = %ddl.query, "ignoring DDL: database already gone");
                return Ok(());
            }
            return Err(Fail::Fatal(rejected(&e)));
        }
        if let Some(check) = fence_check {
            // The check's lock lasts until the DDL's implicit commit (module `fence`).
            match timed(limit, conn.query_drop(format!("BEGIN;{check}"))).await {
                Ok(()) => {}
                Err(e) if fence::is_fenced(&e) => return Err(Fail::Fatal(fenced)),
                Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
                Err(e) => return Err(Fail::Fatal(MysqlError::query("checking the HA fence before a DDL", e))),
            }
        }
        let t = std::time::Instant::now();
        let r = timed(limit, conn.query_drop(&ddl.query)).await;
        crate::metrics::metrics().query_duration_time.with_label_values(&["ddl"]).observe(t.elapsed().as_secs_f64());
        match r {
            Ok(()) => Ok(()),
            Err(e) if retryable(&e) => Err(Fail::Retry(e)),
            Err(e) if server_code(&e).is_some_and(ignorable_ddl_error) => {
                tracing::info!(target: "drainer::sink::mysql", commit_ts = item.commit_ts, query = %ddl.query, error = %e, "ignoring DDL error, as upstream");
                Ok(())
            }
            Err(e) => Err(Fail::Fatal(rejected(&e))),
        }
    }
}

/// The downstream rejected a batch with a server error whose code `code` accepts.
fn rejected_with(e: &MysqlError, code: fn(u16) -> bool) -> bool {
    matches!(e, MysqlError::Rejected { source, .. } if server_code(source).is_some_and(code))
}

fn row_count(item: &Item) -> usize {
    match &item.body {
        Body::Dml(t) => t.iter().map(|t| t.rows.len()).sum::<usize>().max(1),
        _ => 1,
    }
}

/// Runs every part on its connection, concurrently: each part's connection index, the connection
/// (`None` when it broke) and how its transactions went.
async fn run_parts(parts: Vec<PartPlan>, conns: Vec<Conn>, limit: Duration) -> PartResults {
    let workers: Vec<usize> = parts.iter().map(|p| p.worker).collect();
    let results = futures::future::join_all(parts.into_iter().zip(conns).map(|(p, c)| run_part(c, p, limit))).await;
    workers.into_iter().zip(results).collect()
}

/// Runs one part's transactions on its connection; rolls back on error. Returns the connection
/// (`None` when it broke).
/// `fut` (one round trip to the downstream), or a retryable I/O error after `limit`.
async fn timed<T>(limit: Duration, fut: impl Future<Output = Result<T, mysql_async::Error>>) -> Result<T, mysql_async::Error> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(limit)),
    }
}

/// The error of a round trip that exceeded `read-timeout` (an I/O error, so it is retried on a new
/// connection).
fn timed_out(limit: Duration) -> mysql_async::Error {
    let why = format!("no reply from the downstream within read-timeout ({}s)", limit.as_secs_f64());
    mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, why)))
}

async fn run_part(mut conn: Conn, p: PartPlan, limit: Duration) -> (Option<Conn>, Result<(), mysql_async::Error>) {
    let dml = crate::metrics::metrics().query_duration_time.with_label_values(&["dml"]);
    for txn in p.txns {
        for packet in txn.packets {
            let t = std::time::Instant::now();
            let r = match packet {
                Packet::Text(sql) => tokio::time::timeout(limit, conn.query_drop(sql)).await,
                Packet::Prepared { sql, params } => {
                    tokio::time::timeout(limit, conn.exec_drop(sql, mysql_async::Params::Positional(params))).await
                }
            };
            // Timed out: the connection's state is unknown, so it is dropped (the server rolls its
            // transaction back) and the batch retried on a new one.
            let Ok(r) = r else { return (None, Err(timed_out(limit))) };
            dml.observe(t.elapsed().as_secs_f64());
            if let Err(e) = r {
                tracing::warn!(target: "drainer::sink::mysql", worker = p.worker, commit_ts = txn.ts, error = %e, "downstream transaction failed");
                if e.is_fatal() || conn.is_disconnected() {
                    return (None, Err(e));
                }
                if conn.query_drop("ROLLBACK").await.is_err() {
                    return (None, Err(e));
                }
                return (Some(conn), Err(e));
            }
        }
    }
    (Some(conn), Ok(()))
}
