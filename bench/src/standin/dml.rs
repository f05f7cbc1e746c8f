//! The DML workload: each worker plans row operations, runs them in the upstream with locking reads
//! of every touched row's images, and builds the P-binlog's mutations from them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use prost::Message;
use pump::proto::{Binlog, BinlogType, MutationType, PrewriteValue, TableMutation};
use drainer::tidb::codec::{Datum, Handle, record_key};
use drainer::tidb::model::{EXTRA_HANDLE_ID, flag, tp};
use drainer::tidb::row::{encode_insert_row, encode_row, encode_update_row};
use drainer::tidb::value::{Value, flatten, is_string_type};
use rand::rngs::SmallRng;
use rand::Rng;

use super::commit::commit_with_binlog;
use super::ddl::run_ddl_step;
use super::tables::{self, Kind};
use super::{Ctx, UNSIGNED_BASE, WorkTable};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Op {
    Insert,
    Update,
    Delete,
}

#[derive(Debug)]
pub(super) enum TxnError {
    /// Rolled back upstream, nothing written: retryable.
    Aborted(anyhow::Error),
    /// A binlog or commit failure.
    Fatal(anyhow::Error),
}

pub(super) async fn worker(ctx: Arc<Ctx>, mut rng: SmallRng, base_txns: u64) {
    let mut conn = match ctx.pool.get_conn().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "worker cannot connect to the upstream");
            ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut n: u64 = 0;
    while !ctx.stop.load(Ordering::Relaxed) {
        if let Some(limit) = ctx.cfg.txns
            && ctx.counters.txns.load(Ordering::Relaxed) - base_txns >= limit
        {
            break;
        }
        pace(&ctx).await;
        n += 1;
        // Tables are picked under the DDL lock, so a transaction never sees a schema mid-change.
        let guard = ctx.ddl_lock.read().await;
        let ops = plan_ops(&ctx, &mut rng, n);
        if ops.is_empty() {
            drop(guard);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let large = ctx.cfg.large_row_every > 0 && rng.random_ratio(1, ctx.cfg.large_row_every.min(u64::from(u32::MAX)) as u32);
        let r = dml_txn(&ctx, &mut conn, &mut rng, ops, large.then_some(ctx.cfg.large_row_bytes)).await;
        drop(guard);
        if let Err(e) = r {
            match e {
                TxnError::Aborted(e) => {
                    tracing::debug!(error = %e, "transaction aborted");
                    ctx.counters.aborted.fetch_add(1, Ordering::Relaxed);
                }
                TxnError::Fatal(e) => {
                    tracing::warn!(error = %e, "transaction failed");
                    ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A connection in a bad state is replaced.
            if conn.query_drop("SELECT 1").await.is_err() {
                match ctx.pool.get_conn().await {
                    Ok(c) => conn = c,
                    Err(_) => return,
                }
            }
        }
        let done = ctx.counters.txns.load(Ordering::Relaxed) - base_txns;
        if ctx.cfg.ddl_every > 0 && done > 0 && done % ctx.cfg.ddl_every == 0 {
            let step = {
                let mut s = ctx.ddl_step.lock().unwrap_or_else(|e| e.into_inner());
                if *s >= done / ctx.cfg.ddl_every {
                    None
                } else {
                    *s = done / ctx.cfg.ddl_every;
                    Some(*s)
                }
            };
            if let Some(step) = step {
                run_ddl_step(&ctx, step - 1).await;
            }
        }
    }
}

/// Waits for this transaction's slot under `--rate`.
async fn pace(ctx: &Ctx) {
    if ctx.cfg.rate <= 0.0 {
        return;
    }
    let gap = Duration::from_secs_f64(1.0 / ctx.cfg.rate);
    let at = {
        let mut next = ctx.next_slot.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if *next < now {
            *next = now;
        }
        let at = *next;
        *next += gap;
        at
    };
    tokio::time::sleep_until(at.into()).await;
}

fn plan_ops(ctx: &Ctx, rng: &mut SmallRng, n: u64) -> Vec<(Arc<WorkTable>, Op)> {
    let tables = match ctx.tables.read() {
        Ok(t) => t.clone(),
        Err(_) => return Vec::new(),
    };
    if tables.is_empty() {
        return Vec::new();
    }
    let cfg = &ctx.cfg;
    let large_txn = cfg.large_txn_every > 0 && n % cfg.large_txn_every == 0;
    let count = if large_txn { cfg.large_txn_rows.max(1) } else { rng.random_range(1..=cfg.rows_per_txn.max(1)) };
    let total = cfg.mix.insert + cfg.mix.update + cfg.mix.delete;
    (0..count)
        .map(|_| {
            let t = tables[rng.random_range(0..tables.len())].clone();
            let r = rng.random_range(0..total.max(1));
            let op = if large_txn || r < cfg.mix.insert {
                Op::Insert
            } else if r < cfg.mix.insert + cfg.mix.update {
                Op::Update
            } else {
                Op::Delete
            };
            (t, op)
        })
        .collect()
}

fn q(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The WHERE clause and handle of key number `n` of a table.
fn key_of(t: &WorkTable, n: i64) -> (String, Handle, Vec<(String, String)>) {
    match t.kind {
        Kind::Types => (format!("`id` = {n}"), Handle::Int(n), vec![("id".into(), n.to_string())]),
        Kind::Unsigned => {
            let id = UNSIGNED_BASE + n as u64;
            (
                format!("`id` = {id}"),
                Handle::Int(id as i64),
                vec![("id".into(), id.to_string()), ("name".into(), format!("'name{n}'"))],
            )
        }
        Kind::Composite => {
            let a = format!("k{n:08}");
            let b = n % 1000;
            (
                format!("`a` = '{a}' AND `b` = {b}"),
                Handle::Common(vec![Datum::Bytes(a.clone().into_bytes()), Datum::I64(b)]),
                vec![("a".into(), format!("'{a}'")), ("b".into(), b.to_string()), ("u".into(), n.to_string())],
            )
        }
        Kind::NoPk => (format!("`k` = {n}"), Handle::Int(n), vec![("k".into(), n.to_string())]),
    }
}

/// Columns a workload update may change: not keys, not unique.
fn updatable(t: &WorkTable, col: &drainer::tidb::model::ColumnInfo) -> bool {
    let f = col.field_type.flag;
    f & (flag::PRI_KEY | flag::UNIQUE_KEY) == 0 && !(t.kind == Kind::NoPk && col.name.l == "k")
}

/// Reads one row (all writable columns) with a locking read and turns it into datums. A locking
/// read sees the latest committed version. A plain read would see the transaction's REPEATABLE READ
/// snapshot: after an UPDATE that changed nothing (every value already equal) InnoDB keeps no
/// version of its own, so it would return the row as of the snapshot, older than the locked
/// version the UPDATE applied to, and the binlog's new row would undo a concurrent transaction's
/// committed change (seen as a rare "databases differ" in the fault tests).
async fn read_row(conn: &mut Conn, t: &WorkTable, where_: &str) -> Result<Option<Vec<(i64, Datum)>>, TxnError> {
    let cols = t.info.writable_columns();
    // FLOAT over the text protocol comes back rounded to 6 significant digits; as DOUBLE it is exact.
    let list: Vec<String> = cols
        .iter()
        .map(|c| if c.field_type.tp == tp::FLOAT { format!("CAST({} AS DOUBLE)", q(&c.name.o)) } else { q(&c.name.o) })
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{} WHERE {where_} LIMIT 1 FOR UPDATE",
        list.join(", "),
        q(&t.db),
        q(&t.info.name.o)
    );
    let row: Option<mysql_async::Row> = conn.query_first(sql).await.map_err(aborted)?;
    let Some(row) = row else { return Ok(None) };
    let mut out = Vec::with_capacity(cols.len());
    for (i, c) in cols.iter().enumerate() {
        let v = row.as_ref(i).ok_or_else(|| TxnError::Fatal(anyhow!("column {} missing from the result", c.name.o)))?;
        let d = to_datum(v, &c.field_type)
            .with_context(|| format!("column {} of {}.{}", c.name.o, t.db, t.info.name.o))
            .map_err(TxnError::Fatal)?;
        out.push((c.id, d));
    }
    Ok(Some(out))
}

/// A value MariaDB returned over the text protocol, as TiDB's flattened datum.
fn to_datum(v: &mysql_async::Value, ft: &drainer::tidb::model::FieldType) -> Result<Datum> {
    let b = match v {
        mysql_async::Value::NULL => return Ok(Datum::Null),
        mysql_async::Value::Bytes(b) => b,
        other => bail!("unexpected binary-protocol value {other:?}"),
    };
    let val = if is_string_type(ft.tp) {
        Value::Bytes(b.clone())
    } else if ft.tp == tp::BIT {
        let n = (((ft.flen + 7) / 8).clamp(1, 8)) as usize;
        let mut out = vec![0u8; n.saturating_sub(b.len())];
        out.extend_from_slice(&b[b.len().saturating_sub(n)..]);
        Value::Bit(out)
    } else {
        Value::from_text(Some(std::str::from_utf8(b)?), ft)?
    };
    Ok(flatten(&val))
}

/// Row columns as an insert carries them: without the int handle column, without the integer
/// columns of a clustered key (they never need restored data).
fn insert_columns(t: &WorkTable, row: &[(i64, Datum)]) -> Vec<(i64, Datum)> {
    let skip: Vec<i64> = t
        .info
        .cols
        .iter()
        .filter(|c| {
            c.field_type.is_pri_key()
                && (t.info.pk_is_handle || (t.info.is_common_handle && !is_string_type(c.field_type.tp)))
        })
        .map(|c| c.id)
        .collect();
    row.iter().filter(|(id, _)| !skip.contains(id)).cloned().collect()
}

fn with_row_id(t: &WorkTable, mut row: Vec<(i64, Datum)>, h: &Handle) -> Vec<(i64, Datum)> {
    if t.info.has_implicit_row_id()
        && let Handle::Int(id) = h
    {
        row.push((EXTRA_HANDLE_ID, Datum::I64(*id)));
    }
    row
}

#[derive(Default)]
struct MutationBuilder {
    order: Vec<i64>,
    by_table: BTreeMap<i64, TableMutation>,
    first_key: Option<Vec<u8>>,
}

impl MutationBuilder {
    fn entry(&mut self, t: &WorkTable, h: &Handle) -> &mut TableMutation {
        if self.first_key.is_none() {
            self.first_key = Some(record_key(t.info.id, h));
        }
        let id = t.info.id;
        if !self.by_table.contains_key(&id) {
            self.order.push(id);
        }
        self.by_table.entry(id).or_insert_with(|| TableMutation { table_id: Some(id), ..TableMutation::default() })
    }

    fn into_value(mut self, schema_version: i64) -> (Vec<u8>, Vec<u8>) {
        let mutations: Vec<TableMutation> = self.order.iter().filter_map(|id| self.by_table.remove(id)).collect();
        let pv = PrewriteValue { schema_version: Some(schema_version), mutations };
        (self.first_key.unwrap_or_default(), pv.encode_to_vec())
    }
}

/// Sorts an upstream error: deadlock, lock wait timeout and duplicate key roll the transaction back
/// and are retried; anything else is a failure (a bug in the generated SQL, a lost connection).
fn aborted(e: mysql_async::Error) -> TxnError {
    match &e {
        mysql_async::Error::Server(s) if matches!(s.code, 1205 | 1213 | 1062) => TxnError::Aborted(e.into()),
        _ => TxnError::Fatal(e.into()),
    }
}

/// Runs one DML transaction upstream and writes its binlogs; on any error the upstream transaction
/// is rolled back before returning (so it holds no locks). Returns the number of row changes.
pub(super) async fn dml_txn(
    ctx: &Arc<Ctx>,
    conn: &mut Conn,
    rng: &mut SmallRng,
    ops: Vec<(Arc<WorkTable>, Op)>,
    large: Option<usize>,
) -> Result<usize, TxnError> {
    let r = dml_txn_inner(ctx, conn, rng, ops, large).await;
    if r.is_err() {
        let _ = conn.query_drop("ROLLBACK").await;
    }
    r
}

async fn dml_txn_inner(
    ctx: &Arc<Ctx>,
    conn: &mut Conn,
    rng: &mut SmallRng,
    ops: Vec<(Arc<WorkTable>, Op)>,
    large: Option<usize>,
) -> Result<usize, TxnError> {
    let schema_version = ctx.catalog.read().map(|c| c.version()).unwrap_or(0);
    let start_ts = ctx.tso.get_ts().await.map_err(|e| TxnError::Fatal(e.into()))?;
    conn.query_drop("START TRANSACTION").await.map_err(aborted)?;
    let mut m = MutationBuilder::default();
    let (mut ins, mut upd, mut del) = (0u64, 0u64, 0u64);
    let mut large = large;
    for (t, op) in ops {
        let cols = t.info.writable_columns();
        match op {
            Op::Insert => {
                let n = t.next.fetch_add(1, Ordering::Relaxed);
                let (where_, h, keys) = key_of(&t, n);
                let mut names = Vec::new();
                let mut vals = Vec::new();
                for c in &cols {
                    names.push(q(&c.name.o));
                    match keys.iter().find(|(k, _)| *k == c.name.l) {
                        Some((_, v)) => vals.push(v.clone()),
                        None => {
                            let big = if c.field_type.tp == tp::MEDIUM_BLOB { large.take() } else { None };
                            vals.push(tables::random_literal(rng, &c.field_type, !c.field_type.is_not_null(), big));
                        }
                    }
                }
                let sql = format!(
                    "INSERT INTO {}.{} ({}) VALUES ({})",
                    q(&t.db),
                    q(&t.info.name.o),
                    names.join(", "),
                    vals.join(", ")
                );
                conn.query_drop(sql).await.map_err(aborted)?;
                let row = read_row(conn, &t, &where_).await?.ok_or_else(|| TxnError::Fatal(anyhow!("inserted row not found")))?;
                let bytes = encode_insert_row(&h, &insert_columns(&t, &row));
                let e = m.entry(&t, &h);
                e.inserted_rows.push(bytes);
                e.sequence.push(MutationType::Insert as i32);
                ins += 1;
            }
            Op::Update | Op::Delete => {
                let top = t.next.load(Ordering::Relaxed).max(1);
                let n = rng.random_range(0..top);
                let (where_, h, _) = key_of(&t, n);
                let Some(old) = read_row(conn, &t, &where_).await? else { continue };
                if op == Op::Delete {
                    let sql = format!("DELETE FROM {}.{} WHERE {where_} LIMIT 1", q(&t.db), q(&t.info.name.o));
                    conn.query_drop(sql).await.map_err(aborted)?;
                    let mut bytes = Vec::new();
                    encode_row(&mut bytes, &with_row_id(&t, old, &h));
                    let e = m.entry(&t, &h);
                    e.deleted_rows.push(bytes);
                    e.sequence.push(MutationType::DeleteRow as i32);
                    del += 1;
                } else {
                    let candidates: Vec<_> = cols.iter().filter(|c| updatable(&t, c)).collect();
                    if candidates.is_empty() {
                        continue;
                    }
                    let k = rng.random_range(1..=candidates.len().min(3));
                    let mut sets = Vec::new();
                    for _ in 0..k {
                        let c = candidates[rng.random_range(0..candidates.len())];
                        let big = if c.field_type.tp == tp::MEDIUM_BLOB { large.take() } else { None };
                        sets.push(format!(
                            "{} = {}",
                            q(&c.name.o),
                            tables::random_literal(rng, &c.field_type, !c.field_type.is_not_null(), big)
                        ));
                    }
                    let sql = format!("UPDATE {}.{} SET {} WHERE {where_} LIMIT 1", q(&t.db), q(&t.info.name.o), sets.join(", "));
                    conn.query_drop(sql).await.map_err(aborted)?;
                        let new = read_row(conn, &t, &where_).await?.ok_or_else(|| TxnError::Fatal(anyhow!("updated row not found")))?;
                    let bytes = encode_update_row(&with_row_id(&t, old, &h), &with_row_id(&t, new, &h));
                    let e = m.entry(&t, &h);
                    e.updated_rows.push(bytes);
                    e.sequence.push(MutationType::Update as i32);
                    upd += 1;
                }
            }
        }
    }
    let changes = (ins + upd + del) as usize;
    if changes == 0 {
        conn.query_drop("ROLLBACK").await.map_err(aborted)?;
        return Ok(0);
    }
    let (prewrite_key, prewrite_value) = m.into_value(schema_version);
    let p = Binlog {
        tp: Some(BinlogType::Prewrite as i32),
        start_ts: Some(start_ts as i64),
        commit_ts: Some(0),
        prewrite_key: Some(prewrite_key),
        prewrite_value: Some(prewrite_value),
        ddl_query: None,
        ddl_job_id: Some(0),
        ddl_schema_state: Some(0),
    };
    let commit_ts = commit_with_binlog(ctx, conn, p).await?;
    let c = &ctx.counters;
    c.txns.fetch_add(1, Ordering::Relaxed);
    c.inserted.fetch_add(ins, Ordering::Relaxed);
    c.updated.fetch_add(upd, Ordering::Relaxed);
    c.deleted.fetch_add(del, Ordering::Relaxed);
    let _ = commit_ts;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::*;

    /// A transaction's image of a row it updated without changing any value is the latest
    /// committed row, not its older REPEATABLE READ snapshot (which would make the binlog undo a
    /// concurrent transaction's change).
    #[test]
    fn the_image_after_an_update_that_changed_nothing_is_the_latest_committed_row() {
        let dir = tempfile::tempdir().unwrap();
        let db = ::tests::MariaDb::start(&dir.path().join("db")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut a = Conn::from_url(db.url()).await.unwrap();
            a.query_drop(format!("CREATE DATABASE s; {}", tables::create_sql("s", "t", Kind::Types))).await.unwrap();
            a.query_drop("INSERT INTO s.t (id, c_dec, c_tiny) VALUES (1, 1.5, 7), (2, 0, 0)").await.unwrap();
            let t = WorkTable {
                db: "s".into(),
                info: tables::table_info(102, "t", Kind::Types),
                kind: Kind::Types,
                next: Arc::new(AtomicI64::new(3)),
            };
            let dec = t.info.cols.iter().find(|c| c.name.l == "c_dec").unwrap().id;
            let dec_of = |row: &[(i64, Datum)]| row.iter().find(|(id, _)| *id == dec).map(|(_, d)| format!("{d:?}"));

            let mut b = Conn::from_url(db.url()).await.unwrap();
            b.query_drop("BEGIN").await.unwrap();
            // b's snapshot is taken here, by a plain read of another row, before a's change commits
            b.query_drop("SELECT * FROM s.t WHERE id = 2").await.unwrap();
            a.query_drop("UPDATE s.t SET c_dec = 2.5 WHERE id = 1").await.unwrap();
            let old = read_row(&mut b, &t, "`id` = 1").await.unwrap().unwrap();
            assert!(dec_of(&old).unwrap().contains("int_digits: \"2\""), "the locked row is a's: {:?}", dec_of(&old));
            b.query_drop("UPDATE s.t SET c_tiny = 7 WHERE id = 1").await.unwrap();
            let new = read_row(&mut b, &t, "`id` = 1").await.unwrap().unwrap();
            assert_eq!(dec_of(&new), dec_of(&old), "the image must hold a's committed c_dec");
            assert_eq!(new, old);
            b.query_drop("COMMIT").await.unwrap();
        });
    }
}
