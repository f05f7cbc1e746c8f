//! The downstream checkpoint: upstream's `tidb_binlog.checkpoint` row, plus our per-worker rows.
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS `tidb_binlog`.`checkpoint`(clusterID BIGINT UNSIGNED PRIMARY KEY, checkPoint MEDIUMTEXT)
//! -- ours, only written when a batch is applied by several connections at once:
//! CREATE TABLE IF NOT EXISTS `tidb_binlog`.`checkpoint_workers`(clusterID BIGINT UNSIGNED, worker INT,
//!     workerCount INT, commitTS BIGINT, PRIMARY KEY(clusterID, worker))
//! ```
//! The upstream row holds upstream's JSON
//! `{"consistent":false,"commitTS":..,"ts-map":{},"schema-version":..}`; its `commitTS` is a ts up to
//! which everything is applied. A worker row `(w, n, T)` says: every row change that hashes to worker
//! `w` of `n` in items with commit ts ≤ `T` is applied (see the `sink::mysql` module docs).

use std::fmt::Write as _;

use mysql_async::Conn;
use mysql_async::prelude::*;

use crate::txn::quote_ident;

/// Where the checkpoint lives (`[syncer.to.checkpoint]` `schema`, `table`; the PD cluster id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointCfg {
    /// Default `tidb_binlog`.
    pub schema: String,
    /// Default `checkpoint`.
    pub table: String,
    /// The upstream cluster id: the row key.
    pub cluster_id: u64,
}

impl Default for CheckpointCfg {
    fn default() -> Self {
        CheckpointCfg { schema: "tidb_binlog".into(), table: "checkpoint".into(), cluster_id: 0 }
    }
}

impl CheckpointCfg {
    fn table_q(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    fn workers_q(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&format!("{}_workers", self.table)))
    }

    /// Statements that create the schema and both tables.
    pub(crate) fn create_sql(&self) -> String {
        format!(
            "CREATE SCHEMA IF NOT EXISTS {}; \
             CREATE TABLE IF NOT EXISTS {}(clusterID BIGINT UNSIGNED PRIMARY KEY, checkPoint MEDIUMTEXT); \
             CREATE TABLE IF NOT EXISTS {}(clusterID BIGINT UNSIGNED, worker INT, workerCount INT, \
             commitTS BIGINT, PRIMARY KEY(clusterID, worker))",
            quote_ident(&self.schema),
            self.table_q(),
            self.workers_q()
        )
    }

    /// `REPLACE INTO <checkpoint> VALUES(<cluster>, '<json>')`.
    pub(crate) fn global_sql(&self, commit_ts: i64, schema_version: i64, consistent: bool) -> String {
        // Upstream's key order; numbers and fixed keys never hold a quote or backslash.
        format!(
            r#"REPLACE INTO {} VALUES({}, '{{"consistent":{consistent},"commitTS":{commit_ts},"ts-map":{{}},"schema-version":{schema_version}}}')"#,
            self.table_q(),
            self.cluster_id
        )
    }

    /// `REPLACE INTO <checkpoint>_workers VALUES(<cluster>, w, n, ts)`.
    #[cfg(test)]
    pub(crate) fn worker_sql(&self, worker: usize, count: usize, commit_ts: i64) -> String {
        self.workers_sql([worker], count, commit_ts)
    }

    /// `REPLACE INTO <checkpoint>_workers VALUES(<cluster>, w1, n, ts),(<cluster>, w2, n, ts),..`.
    pub(crate) fn workers_sql(&self, workers: impl IntoIterator<Item = usize>, count: usize, commit_ts: i64) -> String {
        let mut s = format!("REPLACE INTO {} VALUES", self.workers_q());
        for (i, w) in workers.into_iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "({}, {w}, {count}, {commit_ts})", self.cluster_id);
        }
        s
    }

    /// `SELECT MAX(workerCount)` of the worker rows.
    pub(crate) fn max_workers_sql(&self) -> String {
        format!("SELECT MAX(workerCount) FROM {} WHERE clusterID = {}", self.workers_q(), self.cluster_id)
    }

    /// Reads what is applied.
    pub(crate) async fn load(&self, conn: &mut Conn) -> Result<Applied, LoadError> {
        let row: Option<String> = conn
            .query_first(format!("SELECT checkPoint FROM {} WHERE clusterID = {}", self.table_q(), self.cluster_id))
            .await?;
        let (mut global, mut schema_version, mut found) = (0, 0, false);
        if let Some(text) = row {
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| LoadError::Json(format!("{text:?}: {e}")))?;
            global = v
                .get("commitTS")
                .and_then(|t| t.as_i64())
                .ok_or_else(|| LoadError::Json(format!("{text:?}: no commitTS")))?;
            schema_version = v.get("schema-version").and_then(|t| t.as_i64()).unwrap_or(0);
            found = true;
        }
        let rows: Vec<(i64, i64, i64)> = conn
            .query(format!(
                "SELECT worker, workerCount, commitTS FROM {} WHERE clusterID = {}",
                self.workers_q(),
                self.cluster_id
            ))
            .await?;
        Ok(Applied::from_rows(global, schema_version, found || !rows.is_empty(), &rows))
    }
}

/// Reading the checkpoint failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("{0}")]
    Sql(#[from] mysql_async::Error),
    #[error("the checkPoint column is not upstream's JSON: {0}")]
    Json(String),
}

/// What the downstream says is applied (the checkpoint rows, decoded).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Applied {
    /// Everything with commit ts ≤ this is applied.
    pub global: i64,
    /// Upstream's schema-version in the row.
    pub schema_version: i64,
    /// Any checkpoint row exists.
    pub found: bool,
    /// Worker count of the worker rows ahead of `global` (0 = none are).
    pub worker_n: usize,
    /// Per worker (len `worker_n`): its changes with commit ts ≤ this are applied.
    pub workers: Vec<i64>,
}

impl Applied {
    /// Decodes worker rows `(worker, workerCount, commitTS)`: only rows ahead of `global` matter; they
    /// all come from the last parallel batch, so they share one worker count (the newest row's).
    pub fn from_rows(global: i64, schema_version: i64, found: bool, rows: &[(i64, i64, i64)]) -> Self {
        let ahead: Vec<_> = rows.iter().filter(|r| r.2 > global && r.1 > 0 && r.0 >= 0 && r.0 < r.1).collect();
        let Some(newest) = ahead.iter().max_by_key(|r| r.2) else {
            return Applied { global, schema_version, found, worker_n: 0, workers: vec![] };
        };
        let n = newest.1 as usize;
        let mut workers = vec![global; n];
        for r in ahead.iter().filter(|r| r.1 as usize == n) {
            workers[r.0 as usize] = r.2;
        }
        Applied { global, schema_version, found, worker_n: n, workers }
    }

    /// Whether the row change of the item at `commit_ts` whose first causality key hashes to `hash`
    /// is already applied.
    pub fn skip(&self, commit_ts: i64, hash: u64) -> bool {
        commit_ts <= self.global
            || (self.worker_n > 0 && commit_ts <= self.workers[(hash % self.worker_n as u64) as usize])
    }

    /// The ts the upstream must resume after: everything ≤ it is applied.
    pub fn resume(&self) -> i64 {
        self.workers.iter().copied().min().unwrap_or(self.global).max(self.global)
    }

    /// The highest ts anything may be applied up to; items ≤ it are replayed through the filter.
    pub fn max(&self) -> i64 {
        self.workers.iter().copied().max().unwrap_or(self.global).max(self.global)
    }

    /// Everything ≤ `ts` is now applied (a single-connection commit wrote the upstream row).
    pub fn advance(&mut self, ts: i64) {
        self.global = self.global.max(ts);
        if self.workers.iter().all(|&w| w <= self.global) {
            self.worker_n = 0;
            self.workers.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_rows_ahead_of_the_global_row_drive_the_filter() {
        let a = Applied::from_rows(100, 0, true, &[(0, 2, 150), (1, 2, 120), (0, 4, 90), (3, 4, 99)]);
        assert_eq!((a.worker_n, a.workers.clone()), (2, vec![150, 120]));
        assert_eq!(a.resume(), 120);
        assert_eq!(a.max(), 150);
        assert!(a.skip(100, 1));
        assert!(a.skip(130, 0), "worker 0 applied up to 150");
        assert!(!a.skip(130, 1), "worker 1 only up to 120");
        let mut a = a;
        a.advance(150);
        assert_eq!((a.worker_n, a.resume(), a.max()), (0, 150, 150));
        let none = Applied::from_rows(7, 0, true, &[(0, 2, 5)]);
        assert_eq!((none.worker_n, none.resume()), (0, 7));
    }

    #[test]
    fn global_row_is_upstreams_json() {
        let c = CheckpointCfg { cluster_id: 42, ..Default::default() };
        assert_eq!(
            c.global_sql(5, 3, false),
            r#"REPLACE INTO `tidb_binlog`.`checkpoint` VALUES(42, '{"consistent":false,"commitTS":5,"ts-map":{},"schema-version":3}')"#
        );
        assert_eq!(c.worker_sql(1, 4, 9), "REPLACE INTO `tidb_binlog`.`checkpoint_workers` VALUES(42, 1, 4, 9)");
        assert_eq!(
            c.workers_sql([1, 3], 4, 9),
            "REPLACE INTO `tidb_binlog`.`checkpoint_workers` VALUES(42, 1, 4, 9),(42, 3, 4, 9)"
        );
    }
}
