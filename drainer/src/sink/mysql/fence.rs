//! Fencing for drainer HA ([`crate::ha`]): at most one drainer of a task writes the downstream.
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS `tidb_binlog`.`ha_fence`(task VARCHAR(64) PRIMARY KEY, token BIGINT NOT NULL)
//! ```
//! A new active drainer first kills the sessions still holding the sink's named locks (an older
//! active, frozen or cut off from etcd, may hold them with a transaction open), then raises its task's
//! row to its token, only upward (`UPDATE .. WHERE token < ours`); a row already above ours means a
//! newer active exists, and this drainer refuses to start.
//!
//! Every downstream transaction (data, checkpoint, the statement before a DDL) begins with
//! [`check_sql`]: a locking read of the row that fails with an error when the token is not ours,
//! which stops the rest of the transaction's packet and rolls it back. The read takes a shared lock
//! (`LOCK IN SHARE MODE`; TiDB, which has no shared row locks, `FOR UPDATE`), so parallel transactions
//! of one drainer do not wait for each other, while the new active's raise waits for transactions
//! that already checked and every transaction after the raise sees the new token.
//!
//! A DDL cannot share a transaction (MySQL commits before it): it is checked in a transaction just
//! before it is sent, which leaves a window of one round trip in which a takeover can pass between
//! the check and the DDL. Replaying a DDL is what a restarted drainer does anyway (ignorable errors).

use mysql_async::Conn;
use mysql_async::prelude::*;

use super::checkpoint::CheckpointCfg;
use super::session::{lock_name, open_retrying};
use super::{MysqlError, MysqlSinkConfig, sql};
use crate::txn::quote_ident;

/// What the sink needs to fence an older active out: the task and this active's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The task name.
    pub task: String,
    /// This active's token (its leader key's create revision).
    pub token: i64,
}

/// The error the check raises: "Subquery returns more than 1 row" (MySQL, MariaDB and TiDB; see
/// [`check_sql`]). The sink's own statements carry no subqueries, so this code means the check.
const FENCED_CODE: u16 = 1242;

fn table_q(ck: &CheckpointCfg) -> String {
    format!("{}.{}", quote_ident(&ck.schema), quote_ident("ha_fence"))
}

fn quoted(s: &str) -> String {
    let mut q = String::new();
    sql::push_quoted(&mut q, s, sql::Dialect::default());
    q
}

/// The statement every fenced transaction starts with. It reads the task's row under a lock; when
/// the token is not ours, a scalar subquery correlated with the row returns two rows, which the server
/// refuses with error 1242, so nothing after it in the packet runs and the transaction never commits.
/// (SQL has no portable "raise an error" expression outside stored programs. An invalid REGEXP
/// pattern was used first: MariaDB 10.11 answers it with NULL, no error, so nothing was refused.)
pub(super) fn check_sql(ck: &CheckpointCfg, f: &Fence, tidb: bool) -> String {
    format!(
        "SELECT f.token FROM {} f WHERE f.task = {} AND \
         (SELECT 1 FROM (SELECT 1 AS o UNION ALL SELECT 2) x WHERE f.token <> {}) IS NULL {}",
        table_q(ck),
        quoted(&f.task),
        f.token,
        if tidb { "FOR UPDATE" } else { "LOCK IN SHARE MODE" }
    )
}

/// Whether the downstream refused a transaction because its fencing check failed.
pub(super) fn is_fenced(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == FENCED_CODE)
}

/// Makes this drainer the only writer of `f.task`: creates the tables, ends an older active's
/// sessions, raises the token. Runs on its own connection, before the sink takes its named locks.
pub(super) async fn take_over(cfg: &MysqlSinkConfig, ck: &CheckpointCfg, f: &Fence) -> Result<(), MysqlError> {
    let err = |why: String| MysqlError::Fence { task: f.task.clone(), token: f.token, why };
    let plain = MysqlSinkConfig { checkpoint: None, fence: None, ..cfg.clone() };
    let (mut conn, _) = open_retrying(&plain).await?;
    let table = table_q(ck);
    conn.query_drop(format!(
        "{}; CREATE TABLE IF NOT EXISTS {table}(task VARCHAR(64) PRIMARY KEY, token BIGINT NOT NULL); \
         INSERT IGNORE INTO {table} VALUES ({}, 0)",
        ck.create_sql(),
        quoted(&f.task)
    ))
    .await
    .map_err(|e| err(format!("creating {table}: {e}")))?;
    let stored: Option<Option<i64>> =
        conn.query_first(ck.max_workers_sql()).await.map_err(|e| err(format!("reading the worker count: {e}")))?;
    let workers = (stored.flatten().unwrap_or(0).max(0) as usize).max(cfg.worker_count).max(1);
    conn.query_drop("SET SESSION innodb_lock_wait_timeout = 2").await.map_err(|e| err(e.to_string()))?;
    for attempt in 1.. {
        kill_lock_holders(&mut conn, ck, workers).await.map_err(|e| err(format!("ending an older drainer's sessions: {e}")))?;
        let raise = format!(
            "UPDATE {table} SET token = {t} WHERE task = {q} AND token < {t}",
            t = f.token,
            q = quoted(&f.task)
        );
        match conn.query_drop(raise).await {
            Ok(()) => break,
            // An older active's transaction holds the row: end its session again and retry.
            Err(mysql_async::Error::Server(s)) if matches!(s.code, 1205 | 1213) && attempt < 30 => continue,
            Err(e) => return Err(err(format!("raising the token: {e}"))),
        }
    }
    let now: Option<i64> = conn
        .query_first(format!("SELECT token FROM {table} WHERE task = {}", quoted(&f.task)))
        .await
        .map_err(|e| err(format!("reading the token back: {e}")))?;
    match now {
        Some(t) if t == f.token => {}
        Some(t) => return Err(err(format!("a newer active drainer holds token {t}"))),
        None => return Err(err("the task's row is missing".into())),
    }
    let _ = conn.disconnect().await;
    tracing::info!(task = %f.task, token = f.token, "downstream fenced: this drainer is the task's only writer");
    Ok(())
}

/// Kills every session that holds one of the sink's named locks for workers `0..workers`.
async fn kill_lock_holders(conn: &mut Conn, ck: &CheckpointCfg, workers: usize) -> Result<(), mysql_async::Error> {
    let me: Option<u64> = conn.query_first("SELECT CONNECTION_ID()").await?;
    for w in 0..workers {
        let holder: Option<Option<u64>> = conn.query_first(format!("SELECT IS_USED_LOCK({})", quoted(&lock_name(ck, w)))).await?;
        if let Some(Some(id)) = holder
            && Some(id) != me
        {
            tracing::warn!(session = id, worker = w, "ending a session of an older drainer of this task");
            match conn.query_drop(format!("KILL {id}")).await {
                // Already gone.
                Err(mysql_async::Error::Server(s)) if s.code == 1094 => {}
                r => r?,
            }
        }
    }
    Ok(())
}
