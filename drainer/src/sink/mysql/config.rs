//! [`MysqlSinkConfig`]: how to reach and write the downstream, and [`MysqlTls`].

use std::time::Duration;

use super::CheckpointCfg;

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
    pub fence: Option<super::fence::Fence>,
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
