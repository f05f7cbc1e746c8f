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
//!
//! # Files
//! This file is the sink's face ([`MysqlSink`]: connect, queue, flush, close). `config` holds
//! [`MysqlSinkConfig`], `error` [`MysqlError`] and the classification of the driver's errors,
//! `session` opening a connection (TLS, session variables, named lock, backoff), `coordinator` the
//! task that batches and applies, `batch` the split of a batch into slots, parts and packets, `sql`
//! the statement text, `table` the downstream's table info, `checkpoint` the checkpoint rows, `fence`
//! drainer HA's fencing.

mod batch;
mod checkpoint;
mod config;
mod coordinator;
mod error;
mod fence;
mod session;
mod sql;
mod table;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mysql_async::Conn;
use mysql_async::prelude::*;
use tokio::sync::{Semaphore, mpsc, oneshot};

pub use self::checkpoint::CheckpointCfg;
pub use self::config::{MysqlSinkConfig, MysqlTls};
pub use self::error::MysqlError;
pub use self::fence::Fence;

use self::checkpoint::Applied;
use self::coordinator::Coordinator;
use self::error::{Fail, server_code};
use self::session::{lock_name, open, open_retrying, take_lock, time_zone};
use super::{Sink, SinkError};
use crate::txn::{Body, Item, Value, quote_ident};

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
