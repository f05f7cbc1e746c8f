//! Turning queued items into downstream transactions: causality, dispatch to workers, statement
//! merging and packing into multi-statement packets, with the checkpoint statements each
//! transaction must carry.

use std::collections::HashMap;
use std::sync::Arc;

use super::MysqlError;
use super::checkpoint::{Applied, CheckpointCfg};
use super::sql::{Dialect, Lits, TablePlan, param, stable_hash};
use crate::txn::{Body, Item, RowChange, Value};

/// Rows per prepared INSERT at most (the parameter budget may allow fewer).
const MAX_PREPARED_ROWS: usize = 1024;
/// Runs shorter than this (or than what the parameter budget allows, if less) stay text: the
/// statement sizes used are the largest, its half, its quarter, .. down to this, so a connection
/// prepares a few statements per table.
const MIN_PREPARED_ROWS: usize = 64;

/// What the build needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Connections a batch may be split over (1 = no dispatch).
    pub workers: usize,
    /// Causality detection (conflicting keys never go to different workers in one batch).
    pub detect: bool,
    /// One downstream transaction per upstream transaction (`disable-dispatch`).
    pub per_txn: bool,
    /// INSERT → REPLACE, UPDATE → DELETE + REPLACE.
    pub safe: bool,
    /// Row changes per batch.
    pub batch_rows: usize,
    /// Updates and deletes per connection, and inserts per connection: a batch runs on
    /// `ceil(others / conn_rows + inserts / conn_inserts)` connections (at most `workers`), each
    /// carrying several hash slots.
    pub conn_rows: usize,
    /// See `conn_rows`.
    pub conn_inserts: usize,
    /// Bytes per statement (multi-row INSERT, merged DELETE).
    pub stmt_bytes: usize,
    /// Bytes per multi-statement packet.
    pub packet_bytes: usize,
    /// Parameters per prepared multi-row INSERT (0 = every statement is text): a run of inserts
    /// into one table is sent in prepared statements of `min(prepared_params / columns, 1024)`
    /// rows or halves of that down to 64, the rest of the run as text.
    pub prepared_params: usize,
    /// Literal formatting.
    pub dialect: Dialect,
    /// `loopback-control`: the channel id whose mark every transaction updates first.
    pub mark: Option<i64>,
    /// Drainer HA: the fencing check every transaction starts with (module `fence`).
    pub fence: Option<String>,
}

/// One row change, formatted.
#[derive(Debug)]
pub(crate) enum Op {
    Insert(Lits),
    Update(Lits, Lits),
    Delete(Lits),
}

#[derive(Debug)]
struct Change<'a> {
    plan: usize,
    ts: i64,
    op: Op,
    /// The upstream row of the change (the new row of an update): what an insert, or the REPLACE of
    /// a safe-mode update, binds as prepared-statement parameters.
    row: Row<'a>,
}

/// An upstream row's values.
type Row<'a> = &'a [Option<Value>];

/// One round trip of a downstream transaction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Packet {
    /// Statements separated by `;`, sent as one multi-statement query.
    Text(String),
    /// A prepared multi-row INSERT/REPLACE and its parameters, row after row.
    Prepared { sql: String, params: Vec<mysql_async::Value> },
}

/// One downstream transaction: packets sent in order (the first begins it, the last commits it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TxnSql {
    pub packets: Vec<Packet>,
    /// The highest commit ts it covers.
    pub ts: i64,
}

/// What one connection runs for a batch.
#[derive(Debug, Clone)]
pub(crate) struct PartPlan {
    /// The connection.
    pub worker: usize,
    pub txns: Vec<TxnSql>,
}

/// One batch: applied by `parts` in parallel; done when all parts committed.
#[derive(Debug, Clone)]
pub(crate) struct GroupPlan {
    /// How many of the input items (from the front) it covers.
    pub n_items: usize,
    /// Its highest commit ts.
    pub max_ts: i64,
    /// The highest schema version of its items.
    pub schema_version: i64,
    /// Non-empty parts.
    pub parts: Vec<PartPlan>,
    /// The ts it writes into upstream's checkpoint row, if it writes it.
    pub global_ts: Option<i64>,
}

/// Table plans keyed by the item's `Arc<TableSchema>` address.
pub(crate) type Plans = HashMap<usize, (usize, Arc<crate::txn::TableSchema>)>;

/// Splits `items` (none is a DDL) into batches.
///
/// `prev_durable` is the ts everything before `items` is durable at; `applied` the checkpoint state
/// (`None`: no checkpoint is kept).
pub(crate) fn build(
    items: &[Arc<Item>],
    plans: &Plans,
    table_plans: &[TablePlan],
    s: &Settings,
    ckpt: Option<(&CheckpointCfg, &Applied)>,
    mut prev_durable: i64,
    mut schema_version: i64,
) -> Result<Vec<GroupPlan>, MysqlError> {
    let n = s.workers.max(1);
    let mut groups = Vec::new();
    let mut g = Builder::new(n);
    for item in items {
        let changes = item_changes(item, plans, table_plans, s.dialect, ckpt.map(|c| c.1))?;
        let recovering = ckpt.is_some_and(|(_, a)| item.commit_ts <= a.max());
        if g.items > 0 && (g.rows + changes.len() > s.batch_rows.max(1)) {
            groups.push(g.finish(table_plans, s, ckpt.map(|c| c.0), &mut prev_durable, &mut schema_version)?);
            g = Builder::new(n);
        }
        let single = n == 1 || s.per_txn || recovering;
        if single {
            if !g.single && g.rows > 0 {
                groups.push(g.finish(table_plans, s, ckpt.map(|c| c.0), &mut prev_durable, &mut schema_version)?);
                g = Builder::new(n);
            }
            g.single = true;
        } else if !g.place(&changes, s.detect) {
            if g.rows > 0 {
                groups.push(g.finish(table_plans, s, ckpt.map(|c| c.0), &mut prev_durable, &mut schema_version)?);
                g = Builder::new(n);
            }
            if !g.place(&changes, s.detect) {
                // The item conflicts with itself across workers: apply this batch on one connection.
                g.single = true;
            }
        }
        if g.single {
            g.changes.extend(changes.into_iter().map(|(_, _, c)| (0, c)));
        } else {
            g.changes.extend(changes.into_iter().map(|(hash, _, c)| ((hash % n as u64) as usize, c)));
        }
        g.items += 1;
        g.rows = g.changes.len();
        g.max_ts = g.max_ts.max(item.commit_ts);
        g.schema_version = g.schema_version.max(item.schema_version);
        if g.items > 0 && g.rows >= s.batch_rows.max(1) {
            groups.push(g.finish(table_plans, s, ckpt.map(|c| c.0), &mut prev_durable, &mut schema_version)?);
            g = Builder::new(n);
        }
    }
    if g.items > 0 {
        groups.push(g.finish(table_plans, s, ckpt.map(|c| c.0), &mut prev_durable, &mut schema_version)?);
    }
    Ok(groups)
}

/// The item's row changes not yet applied: `(worker hash, causality keys, change)`.
fn item_changes<'a>(
    item: &'a Item,
    plans: &Plans,
    table_plans: &[TablePlan],
    d: Dialect,
    applied: Option<&Applied>,
) -> Result<Vec<(u64, Vec<String>, Change<'a>)>, MysqlError> {
    let Body::Dml(tables) = &item.body else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for tc in tables {
        let Some(&(pi, _)) = plans.get(&(Arc::as_ptr(&tc.table) as usize)) else {
            return Err(MysqlError::Internal(format!("no plan for table {}", tc.table.quoted_name())));
        };
        let plan = &table_plans[pi];
        let bad = |e: String| MysqlError::BadValue { commit_ts: item.commit_ts, table: plan.quoted.clone(), why: e };
        for rc in &tc.rows {
            let mut keys = Vec::new();
            let (op, row) = match rc {
                RowChange::Insert(r) => {
                    let l = plan.lits(r, d).map_err(bad)?;
                    plan.causality_keys(&l, &mut keys);
                    (Op::Insert(l), r)
                }
                RowChange::Delete(r) => {
                    let l = plan.lits(r, d).map_err(bad)?;
                    plan.causality_keys(&l, &mut keys);
                    (Op::Delete(l), r)
                }
                RowChange::Update { old, new } => {
                    let o = plan.lits(old, d).map_err(bad)?;
                    let n = plan.lits(new, d).map_err(bad)?;
                    plan.causality_keys(&o, &mut keys);
                    plan.causality_keys(&n, &mut keys);
                    (Op::Update(o, n), new)
                }
            };
            let hash = stable_hash(&keys[0]);
            if applied.is_some_and(|a| a.skip(item.commit_ts, hash)) {
                continue;
            }
            out.push((hash, keys, Change { plan: pi, ts: item.commit_ts, op, row }));
        }
    }
    Ok(out)
}

struct Builder<'a> {
    /// Hash slots (`worker-count`).
    n: usize,
    single: bool,
    /// The batch's changes in order, each with its hash slot.
    changes: Vec<(usize, Change<'a>)>,
    keys: HashMap<String, usize>,
    items: usize,
    rows: usize,
    max_ts: i64,
    schema_version: i64,
}

impl<'a> Builder<'a> {
    fn new(n: usize) -> Self {
        Builder {
            n,
            single: false,
            changes: Vec::new(),
            keys: HashMap::new(),
            items: 0,
            rows: 0,
            max_ts: 0,
            schema_version: 0,
        }
    }

    /// Assigns each change to `hash % n`; false (and nothing recorded) when a key is already
    /// assigned to another worker in this batch. Rewrites the first tuple field to the worker.
    fn place(&mut self, changes: &[(u64, Vec<String>, Change<'_>)], detect: bool) -> bool {
        if self.single {
            return true;
        }
        let mut added: HashMap<&str, usize> = HashMap::new();
        for (hash, keys, _) in changes {
            let w = (*hash % self.n as u64) as usize;
            if detect {
                for k in keys {
                    let owner = self.keys.get(k.as_str()).or_else(|| added.get(k.as_str())).copied();
                    if owner.is_some_and(|o| o != w) {
                        return false;
                    }
                    added.insert(k, w);
                }
            }
        }
        let added: Vec<(String, usize)> = added.into_iter().map(|(k, w)| (k.to_string(), w)).collect();
        self.keys.extend(added);
        true
    }

    fn finish(
        self,
        plans: &[TablePlan],
        s: &Settings,
        ckpt: Option<&CheckpointCfg>,
        prev_durable: &mut i64,
        schema_version: &mut i64,
    ) -> Result<GroupPlan, MysqlError> {
        *schema_version = (*schema_version).max(self.schema_version);
        let sv = *schema_version;
        // Slot `s` runs on connection `s % k`; each connection keeps its changes in batch order.
        let k = if self.single { 1 } else { connections(&self.changes, s).clamp(1, self.n) };
        let mut conns: Vec<Vec<Change<'a>>> = (0..k).map(|_| Vec::new()).collect();
        for (slot, c) in self.changes {
            conns[slot % k].push(c);
        }
        let busy: Vec<(usize, Vec<Change<'_>>)> = conns.into_iter().enumerate().filter(|(_, p)| !p.is_empty()).collect();
        let parallel = busy.len() > 1;
        let mut parts = Vec::new();
        for (i, (w, changes)) in busy.into_iter().enumerate() {
            let mut txns = Vec::new();
            if s.per_txn {
                // One downstream transaction per upstream transaction, each with its checkpoint.
                let mut start = 0;
                while start < changes.len() {
                    let ts = changes[start].ts;
                    let end = start + changes[start..].iter().take_while(|c| c.ts == ts).count();
                    let ck: Vec<String> = ckpt.map(|c| c.global_sql(ts, sv, false)).into_iter().collect();
                    let stmts = statements(&changes[start..end], plans, s)?;
                    txns.push(pack(mark(s, w), stmts, ck, ts, s.packet_bytes));
                    start = end;
                }
            } else {
                let mut ck = Vec::new();
                if let Some(c) = ckpt {
                    if parallel {
                        // Every slot this connection carries is applied up to the batch's ts (the
                        // slots without a change in it too: earlier batches committed before it).
                        ck.push(c.workers_sql((w..self.n).step_by(k), self.n, self.max_ts));
                        if i == 0 && *prev_durable > 0 {
                            ck.push(c.global_sql(*prev_durable, sv, false));
                        }
                    } else {
                        ck.push(c.global_sql(self.max_ts, sv, false));
                    }
                }
                let stmts = statements(&changes, plans, s)?;
                txns.push(pack(mark(s, w), stmts, ck, self.max_ts, s.packet_bytes));
            }
            parts.push(PartPlan { worker: w, txns });
        }
        let global_ts = match (ckpt, parts.is_empty(), parallel) {
            (None, _, _) | (_, true, _) => None,
            (Some(_), false, false) => Some(self.max_ts),
            (Some(_), false, true) => (*prev_durable > 0).then_some(*prev_durable),
        };
        *prev_durable = self.max_ts;
        Ok(GroupPlan { n_items: self.items, max_ts: self.max_ts, schema_version: sv, parts, global_ts })
    }
}

/// `ceil(others / conn_rows + inserts / conn_inserts)` for a batch's changes.
fn connections(changes: &[(usize, Change<'_>)], s: &Settings) -> usize {
    let inserts = changes.iter().filter(|(_, c)| matches!(c.op, Op::Insert(_))).count();
    let others = changes.len() - inserts;
    let (r, i) = (s.conn_rows.max(1), s.conn_inserts.max(1));
    (others * i + inserts * r).div_ceil(r * i)
}

/// The loopback mark update of connection `w`'s transactions, when `loopback-control` is on.
/// Preceded by the HA fencing check, when there is one.
fn mark(s: &Settings, w: usize) -> Option<String> {
    let mark = s.mark.map(|channel| crate::loopback::mark_sql(w, channel));
    match (&s.fence, mark) {
        (Some(f), Some(m)) => Some(format!("{f};{m}")),
        (Some(f), None) => Some(f.clone()),
        (None, m) => m,
    }
}

/// Packs statements (then the checkpoint statements) into `BEGIN; ..; COMMIT` packets, the loopback
/// mark first when there is one; a prepared statement is a packet of its own.
fn pack(mark: Option<String>, stmts: Vec<Packet>, ckpt: Vec<String>, ts: i64, packet_bytes: usize) -> TxnSql {
    let mut packets = Vec::new();
    let mut cur = String::from("BEGIN");
    if let Some(m) = mark {
        cur.push(';');
        cur.push_str(&m);
    }
    for st in stmts.into_iter().chain(ckpt.into_iter().map(Packet::Text)) {
        let st = match st {
            Packet::Text(st) => st,
            prepared @ Packet::Prepared { .. } => {
                if !cur.is_empty() {
                    packets.push(Packet::Text(std::mem::take(&mut cur)));
                }
                packets.push(prepared);
                continue;
            }
        };
        if cur.len() + st.len() + 1 > packet_bytes && !cur.is_empty() {
            packets.push(Packet::Text(std::mem::take(&mut cur)));
        }
        if !cur.is_empty() {
            cur.push(';');
        }
        cur.push_str(&st);
    }
    if !cur.is_empty() {
        cur.push(';');
    }
    cur.push_str("COMMIT");
    packets.push(Packet::Text(cur));
    TxnSql { packets, ts }
}

enum Open<'a> {
    None,
    Insert { plan: usize, mask: Vec<bool>, replace: bool, rows: Vec<(&'a Lits, Row<'a>)> },
    Delete { plan: usize, key: usize, rows: Vec<&'a Lits> },
}

/// The statements for a run of changes, in order; consecutive inserts into one table with the same
/// columns share multi-row INSERT/REPLACEs (prepared ones for long runs), consecutive deletes by
/// the same unique key share one DELETE.
fn statements(changes: &[Change<'_>], plans: &[TablePlan], s: &Settings) -> Result<Vec<Packet>, MysqlError> {
    let mut out = Vec::new();
    let mut open = Open::None;
    for ch in changes {
        let plan = &plans[ch.plan];
        let bad = |e: String| MysqlError::BadValue { commit_ts: ch.ts, table: plan.quoted.clone(), why: e };
        match &ch.op {
            Op::Insert(row) => insert(&mut out, &mut open, ch.plan, plans, (row, ch.row), s.safe, s),
            Op::Delete(row) => delete(&mut out, &mut open, ch.plan, plans, row, s).map_err(bad)?,
            // A row with columns not carried cannot be re-inserted whole: it stays an UPDATE.
            Op::Update(old, new) if s.safe && new.iter().zip(&plan.cols).all(|(l, c)| l.is_some() || !c.write) => {
                delete(&mut out, &mut open, ch.plan, plans, old, s).map_err(bad)?;
                insert(&mut out, &mut open, ch.plan, plans, (new, ch.row), true, s);
            }
            Op::Update(old, new) => {
                close(&mut out, &mut open, plans, s);
                let mut sql = String::new();
                if plan.push_update(&mut sql, old, new).map_err(bad)? {
                    out.push(Packet::Text(sql));
                }
            }
        }
    }
    close(&mut out, &mut open, plans, s);
    Ok(out)
}

fn insert<'a>(
    out: &mut Vec<Packet>,
    open: &mut Open<'a>,
    pi: usize,
    plans: &[TablePlan],
    row: (&'a Lits, Row<'a>),
    replace: bool,
    s: &Settings,
) {
    let mask = TablePlan::mask(row.0);
    if let Open::Insert { plan: p, mask: m, replace: r, rows } = open
        && *p == pi
        && *m == mask
        && *r == replace
    {
        rows.push(row);
        return;
    }
    let prev = std::mem::replace(open, Open::Insert { plan: pi, mask, replace, rows: vec![row] });
    flush_open(out, prev, plans, s);
}

fn delete<'a>(
    out: &mut Vec<Packet>,
    open: &mut Open<'a>,
    pi: usize,
    plans: &[TablePlan],
    row: &'a Lits,
    s: &Settings,
) -> Result<(), String> {
    let plan = &plans[pi];
    let Some(key) = plan.usable_key(row) else {
        close(out, open, plans, s);
        let mut sql = String::new();
        plan.push_delete(&mut sql, row)?;
        out.push(Packet::Text(sql));
        return Ok(());
    };
    if let Open::Delete { plan: p, key: k, rows } = open
        && *p == pi
        && *k == key
        && rows.len() * 32 < s.stmt_bytes
    {
        rows.push(row);
        return Ok(());
    }
    let prev = std::mem::replace(open, Open::Delete { plan: pi, key, rows: vec![row] });
    flush_open(out, prev, plans, s);
    Ok(())
}

fn close(out: &mut Vec<Packet>, open: &mut Open<'_>, plans: &[TablePlan], s: &Settings) {
    let prev = std::mem::replace(open, Open::None);
    flush_open(out, prev, plans, s);
}

fn flush_open(out: &mut Vec<Packet>, open: Open<'_>, plans: &[TablePlan], s: &Settings) {
    match open {
        Open::None => {}
        Open::Insert { plan, mask, replace, rows } => {
            let p = &plans[plan];
            let cols = mask.iter().filter(|m| **m).count().max(1);
            let most = if s.prepared_params == 0 { 0 } else { (s.prepared_params / cols).clamp(1, MAX_PREPARED_ROWS) };
            let least = most.min(MIN_PREPARED_ROWS);
            let mut per = most;
            let mut rest = &rows[..];
            let mut text = Vec::new();
            while per > 0 && rest.len() >= least {
                while per > rest.len() {
                    per /= 2;
                }
                if per < least {
                    break;
                }
                let (chunk, tail) = rest.split_at(per);
                match prepared(p, &mask, replace, chunk, s) {
                    Some(packet) => {
                        // rows kept as text before this chunk go first: the run keeps its order
                        insert_text(out, p, &mask, replace, &text, s.stmt_bytes);
                        text.clear();
                        out.push(packet);
                    }
                    None => text.extend_from_slice(chunk),
                }
                rest = tail;
            }
            text.extend_from_slice(rest);
            insert_text(out, p, &mask, replace, &text, s.stmt_bytes);
        }
        Open::Delete { plan, key, rows } => {
            let p = &plans[plan];
            let mut sql = String::new();
            if rows.len() == 1 {
                // a usable key exists, so this cannot fail
                if p.push_delete(&mut sql, rows[0]).is_ok() {
                    out.push(Packet::Text(sql));
                }
            } else {
                p.push_delete_many(&mut sql, key, &rows);
                out.push(Packet::Text(sql));
            }
        }
    }
}

/// Multi-row INSERT/REPLACE text statements of about `stmt_bytes` each (at least one row).
fn insert_text(out: &mut Vec<Packet>, p: &TablePlan, mask: &[bool], replace: bool, rows: &[(&Lits, Row<'_>)], stmt_bytes: usize) {
    let mut sql = String::new();
    for (lits, _) in rows {
        if !sql.is_empty() && sql.len() >= stmt_bytes {
            out.push(Packet::Text(std::mem::take(&mut sql)));
        }
        if sql.is_empty() {
            p.push_insert_head(&mut sql, mask, replace);
        } else {
            sql.push(',');
        }
        TablePlan::push_values(&mut sql, lits);
    }
    if !sql.is_empty() {
        out.push(Packet::Text(sql));
    }
}

/// One prepared INSERT/REPLACE for `rows`; `None` when the rows are better sent as text (over
/// `stmt_bytes`, or a value that must be written as a literal).
fn prepared(p: &TablePlan, mask: &[bool], replace: bool, rows: &[(&Lits, Row<'_>)], s: &Settings) -> Option<Packet> {
    let bytes: usize = rows.iter().map(|(l, _)| l.iter().flatten().map(|x| x.len() + 1).sum::<usize>()).sum();
    if bytes > s.stmt_bytes {
        return None;
    }
    let mut params = Vec::with_capacity(rows.len() * mask.len());
    for (_, row) in rows {
        for (c, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
            // a written column has a value (NULL included): its literal was made from it
            let v = row.get(c)?.as_ref()?;
            params.push(param(v, s.dialect)?);
        }
    }
    Some(Packet::Prepared { sql: p.insert_marks(mask, replace, rows.len()), params })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::mysql::sql::{PlanCol, quoted_col};
    use crate::txn::{Column, TableChanges, TableSchema, Value};

    fn setup() -> (Arc<TableSchema>, Plans, Vec<TablePlan>) {
        let col = |n: &str| Column { name: n.into(), ..Default::default() };
        let t = Arc::new(TableSchema {
            schema: "d".into(),
            name: "t".into(),
            columns: vec![col("id"), col("v")],
            ..Default::default()
        });
        let pc = |n: &str| PlanCol { quoted: quoted_col(n), write: true, binary: false };
        let plan = TablePlan { quoted: "`d`.`t`".into(), cols: vec![pc("id"), pc("v")], keys: vec![vec![0]] };
        let mut plans = Plans::new();
        plans.insert(Arc::as_ptr(&t) as usize, (0, t.clone()));
        (t, plans, vec![plan])
    }

    fn row(id: i64) -> Vec<Option<Value>> {
        vec![Some(Value::Int(id)), Some(Value::Int(id * 10))]
    }

    fn item(t: &Arc<TableSchema>, ts: i64, rows: Vec<RowChange>) -> Arc<Item> {
        Arc::new(Item {
            start_ts: ts - 1,
            commit_ts: ts,
            schema_version: 1,
            body: Body::Dml(vec![TableChanges { table: t.clone(), rows }]),
        })
    }

    fn settings(workers: usize) -> Settings {
        Settings {
            workers,
            detect: true,
            per_txn: false,
            safe: false,
            batch_rows: 1000,
            conn_rows: 1,
            conn_inserts: 1,
            stmt_bytes: 1 << 20,
            packet_bytes: 1 << 20,
            prepared_params: 0,
            dialect: Dialect::default(),
            mark: None,
            fence: None,
        }
    }

    /// Packets as text, each prepared one as `<sql> <- [params]`, joined by `\n` between packets.
    fn joined(packets: &[Packet]) -> String {
        packets
            .iter()
            .map(|p| match p {
                Packet::Text(s) => s.clone(),
                Packet::Prepared { sql, params } => format!("{sql} <- {params:?}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The worker (of `n`) a row with this id hashes to.
    fn worker_of(plans: &[TablePlan], id: i64, n: u64) -> u64 {
        let lits = plans[0].lits(&row(id), Dialect::default()).unwrap();
        let mut keys = vec![];
        plans[0].causality_keys(&lits, &mut keys);
        stable_hash(&keys[0]) % n
    }

    fn all_sql(g: &GroupPlan) -> String {
        g.parts
            .iter()
            .flat_map(|p| p.txns.iter().map(|t| joined(&t.packets)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn inserts_spread_over_workers_each_part_with_its_worker_row() {
        let (t, plans, list) = setup();
        let ck = CheckpointCfg { cluster_id: 1, ..Default::default() };
        let items = vec![item(&t, 10, (1..=40).map(|i| RowChange::Insert(row(i))).collect())];
        let gs = build(&items, &plans, &list, &settings(4), Some((&ck, &Applied::default())), 5, 0).unwrap();
        assert_eq!(gs.len(), 1);
        let g = &gs[0];
        assert!(g.parts.len() > 1, "40 keys over 4 workers");
        assert_eq!(g.global_ts, Some(5), "the first part moves upstream's row to the previous batch");
        let mut rows = 0;
        for p in &g.parts {
            assert_eq!(p.txns.len(), 1);
            let sql = &joined(&p.txns[0].packets);
            assert!(sql.starts_with("BEGIN;INSERT INTO `d`.`t` (`id`,`v`) VALUES ("), "{sql}");
            assert!(sql.contains(&ck.worker_sql(p.worker, 4, 10)), "{sql}");
            assert!(sql.ends_with(";COMMIT"));
            assert_eq!(sql.matches("INSERT").count(), 1, "one multi-row INSERT per part");
            rows += sql.matches("),(").count() + 1;
        }
        assert_eq!(rows, 40);
        assert_eq!(all_sql(g).matches(&ck.global_sql(5, 1, false)).count(), 1);

        // one worker: upstream's row at the batch's ts, in the same transaction
        let gs = build(&items, &plans, &list, &settings(1), Some((&ck, &Applied::default())), 5, 0).unwrap();
        assert_eq!((gs[0].parts.len(), gs[0].global_ts), (1, Some(10)));
        assert!(all_sql(&gs[0]).ends_with(&format!("{};COMMIT", ck.global_sql(10, 1, false))));
    }

    #[test]
    fn small_batches_run_on_fewer_connections_each_with_the_rows_of_its_slots() {
        let (t, plans, list) = setup();
        let ck = CheckpointCfg { cluster_id: 1, ..Default::default() };
        let items = vec![item(&t, 10, (1..=40).map(|i| RowChange::Insert(row(i))).collect())];
        let has = |sql: &str, i: i64| sql.contains(&format!("({i},{})", i * 10));
        let mut s = settings(4);
        s.conn_inserts = 20; // 40 inserts: 2 connections carrying 2 of the 4 slots each
        let gs = build(&items, &plans, &list, &s, Some((&ck, &Applied::default())), 5, 0).unwrap();
        let g = &gs[0];
        assert_eq!(g.parts.iter().map(|p| p.worker).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(g.global_ts, Some(5));
        for p in &g.parts {
            let sql = joined(&p.txns[0].packets);
            assert!(sql.contains(&ck.workers_sql([p.worker, p.worker + 2], 4, 10)), "{sql}");
            assert_eq!(sql.matches("INSERT").count(), 1, "one multi-row INSERT per connection");
            for i in 1..=40 {
                assert_eq!(has(&sql, i), worker_of(&list, i, 4) as usize % 2 == p.worker, "row {i}: {sql}");
            }
        }
        // A crash after connection 1 committed (its slots' rows are in): the replay applies exactly
        // connection 0's rows, on one connection.
        let applied = Applied::from_rows(5, 0, true, &[(1, 4, 10), (3, 4, 10)]);
        assert_eq!((applied.resume(), applied.max()), (5, 10));
        let gs = build(&items, &plans, &list, &s, Some((&ck, &applied)), 5, 0).unwrap();
        assert_eq!((gs[0].parts.len(), gs[0].global_ts), (1, Some(10)));
        let sql = all_sql(&gs[0]);
        for i in 1..=40 {
            assert_eq!(has(&sql, i), worker_of(&list, i, 4) % 2 == 0, "row {i}: {sql}");
        }
        // A batch within one connection's share: upstream's row at its ts, no worker rows.
        s.conn_inserts = 40;
        let gs = build(&items, &plans, &list, &s, Some((&ck, &Applied::default())), 5, 0).unwrap();
        assert_eq!((gs[0].parts.len(), gs[0].global_ts), (1, Some(10)));
        assert!(!all_sql(&gs[0]).contains("checkpoint_workers"));
    }

    #[test]
    fn an_insert_takes_less_of_a_connection_than_an_update_or_delete() {
        let (t, plans, list) = setup();
        let mut s = settings(8);
        (s.conn_rows, s.conn_inserts) = (10, 40);
        let parts = |rows: Vec<RowChange>| build(&[item(&t, 10, rows)], &plans, &list, &s, None, 0, 0).unwrap()[0].parts.len();
        assert_eq!(parts((1..=40).map(|i| RowChange::Insert(row(i))).collect()), 1);
        assert_eq!(parts((1..=41).map(|i| RowChange::Insert(row(i))).collect()), 2);
        // 20 inserts (half a connection) and 20 deletes (two): 3 connections
        let mixed = (1..=40).map(|i| if i % 2 == 0 { RowChange::Insert(row(i)) } else { RowChange::Delete(row(i)) }).collect();
        assert_eq!(parts(mixed), 3);
        assert_eq!(parts((1..=40).map(|i| RowChange::Delete(row(i))).collect()), 4);
    }

    #[test]
    fn a_key_owned_by_another_worker_ends_the_batch_and_a_self_conflict_runs_on_one_connection() {
        let (t, plans, list) = setup();
        let w1 = worker_of(&list, 1, 4);
        let y = (2..200).find(|&y| worker_of(&list, y, 4) != w1).unwrap();
        let move_y_to_1 = RowChange::Update { old: row(y), new: row(1) };
        let items = vec![item(&t, 10, vec![RowChange::Delete(row(1))]), item(&t, 20, vec![move_y_to_1])];
        let gs = build(&items, &plans, &list, &settings(4), None, 0, 0).unwrap();
        assert_eq!(gs.iter().map(|g| g.n_items).collect::<Vec<_>>(), vec![1, 1], "conflict on key 1 splits the batch");
        let mut s = settings(4);
        s.detect = false;
        let gs = build(&items, &plans, &list, &s, None, 0, 0).unwrap();
        assert_eq!(gs.len(), 1, "without detection they share a batch");

        let items = vec![item(&t, 10, vec![RowChange::Delete(row(1)), RowChange::Update { old: row(y), new: row(1) }])];
        let gs = build(&items, &plans, &list, &settings(4), None, 0, 0).unwrap();
        assert_eq!(gs.len(), 1);
        assert_eq!(gs[0].parts.len(), 1, "a txn conflicting with itself runs in order on one connection");
        let sql = all_sql(&gs[0]);
        assert!(sql.find("DELETE").unwrap() < sql.find("UPDATE").unwrap(), "{sql}");
    }

    #[test]
    fn a_replay_skips_what_a_worker_committed_and_runs_on_one_connection() {
        let (t, plans, list) = setup();
        let ck = CheckpointCfg::default();
        let w1 = worker_of(&list, 1, 4) as i64;
        let y = (2..200).find(|&y| worker_of(&list, y, 4) as i64 != w1).unwrap();
        // worker w1 committed its part of the batch ending at 10; the others did not
        let applied = Applied::from_rows(5, 0, true, &[(w1, 4, 10)]);
        let items = vec![
            item(&t, 10, vec![RowChange::Insert(row(1)), RowChange::Insert(row(y))]),
            item(&t, 20, vec![RowChange::Insert(row(1000))]),
        ];
        let gs = build(&items, &plans, &list, &settings(4), Some((&ck, &applied)), 5, 0).unwrap();
        assert_eq!(gs[0].parts.len(), 1);
        let sql = all_sql(&gs[0]);
        assert!(!sql.contains("(1,10)") && sql.contains(&format!("({y},{})", y * 10)), "{sql}");
        assert_eq!(gs[0].global_ts, Some(gs[0].max_ts));
    }

    /// With `loopback-control` every transaction of every mode begins with its connection's mark.
    #[test]
    fn loopback_marks_every_transaction_first() {
        let (t, plans, list) = setup();
        let ck = CheckpointCfg { cluster_id: 1, ..Default::default() };
        let items = vec![item(&t, 10, (1..=40).map(|i| RowChange::Insert(row(i))).collect()), item(&t, 11, vec![RowChange::Delete(row(1))])];
        for per_txn in [false, true] {
            let s = Settings { mark: Some(3), per_txn, ..settings(4) };
            let gs = build(&items, &plans, &list, &s, Some((&ck, &Applied::default())), 5, 0).unwrap();
            let mut txns = 0;
            for p in gs.iter().flat_map(|g| &g.parts) {
                for txn in &p.txns {
                    let sql = joined(&txn.packets);
                    let want = format!("BEGIN;{};", crate::loopback::mark_sql(p.worker, 3));
                    assert!(sql.starts_with(&want), "{sql}");
                    assert_eq!(sql.matches("_drainer_repl_mark").count(), 1, "{sql}");
                    txns += 1;
                }
            }
            assert!(txns >= 2, "per_txn {per_txn}: {txns}");
        }
    }

    #[test]
    fn per_txn_mode_and_safe_mode_shapes() {
        let (t, plans, list) = setup();
        let ck = CheckpointCfg::default();
        let items = vec![
            item(&t, 10, vec![RowChange::Insert(row(1)), RowChange::Insert(row(2))]),
            item(
                &t,
                20,
                vec![
                    RowChange::Delete(row(1)),
                    RowChange::Delete(row(2)),
                    RowChange::Update { old: row(3), new: row(4) },
                ],
            ),
        ];
        let mut s = settings(1);
        s.per_txn = true;
        let gs = build(&items, &plans, &list, &s, Some((&ck, &Applied::default())), 0, 0).unwrap();
        let txns = &gs[0].parts[0].txns;
        assert_eq!(txns.len(), 2, "one downstream txn per upstream txn");
        assert!(joined(&txns[0].packets[..1]).ends_with(&format!("{};COMMIT", ck.global_sql(10, 1, false))));
        assert_eq!(
            joined(&txns[1].packets[..1]),
            format!(
                "BEGIN;DELETE FROM `d`.`t` WHERE `id` IN (1,2) LIMIT 2;UPDATE `d`.`t` SET `id` = 4,`v` = 40 WHERE `id` = 3 LIMIT 1;{};COMMIT",
                ck.global_sql(20, 1, false)
            )
        );
        s.safe = true;
        let gs = build(&items, &plans, &list, &s, None, 0, 0).unwrap();
        let txns = &gs[0].parts[0].txns;
        assert_eq!(joined(&txns[0].packets[..1]), "BEGIN;REPLACE INTO `d`.`t` (`id`,`v`) VALUES (1,10),(2,20);COMMIT");
        assert_eq!(
            joined(&txns[1].packets[..1]),
            "BEGIN;DELETE FROM `d`.`t` WHERE `id` IN (1,2,3) LIMIT 3;REPLACE INTO `d`.`t` (`id`,`v`) VALUES (4,40);COMMIT"
        );
    }
    #[test]
    fn long_insert_runs_go_as_prepared_statements_and_the_rest_as_text() {
        use mysql_async::Value as M;
        let (t, plans, list) = setup();
        let ck = CheckpointCfg::default();
        let mut s = settings(1);
        s.prepared_params = 4; // 2 columns: 2 rows per prepared INSERT
        let items = vec![
            item(&t, 10, (1..=5).map(|i| RowChange::Insert(row(i))).collect()),
            item(&t, 20, vec![RowChange::Delete(row(1)), RowChange::Insert(row(9))]),
        ];
        let gs = build(&items, &plans, &list, &s, Some((&ck, &Applied::default())), 0, 0).unwrap();
        let p = &gs[0].parts[0].txns[0].packets;
        let marks = "INSERT INTO `d`.`t` (`id`,`v`) VALUES (?,?),(?,?)";
        let want = vec![
            Packet::Text("BEGIN".into()),
            Packet::Prepared { sql: marks.into(), params: vec![M::Int(1), M::Int(10), M::Int(2), M::Int(20)] },
            Packet::Prepared { sql: marks.into(), params: vec![M::Int(3), M::Int(30), M::Int(4), M::Int(40)] },
            Packet::Text(format!(
                "INSERT INTO `d`.`t` (`id`,`v`) VALUES (5,50);DELETE FROM `d`.`t` WHERE `id` = 1 LIMIT 1;INSERT INTO `d`.`t` (`id`,`v`) VALUES (9,90);{};COMMIT",
                ck.global_sql(20, 1, false)
            )),
        ];
        assert_eq!(*p, want, "{}", joined(p));

        // safe mode: REPLACE, with the new rows of updates in the run
        s.safe = true;
        let items = vec![item(
            &t,
            10,
            vec![RowChange::Insert(row(1)), RowChange::Update { old: row(2), new: row(3) }, RowChange::Insert(row(4))],
        )];
        let gs = build(&items, &plans, &list, &s, None, 0, 0).unwrap();
        let got = joined(&gs[0].parts[0].txns[0].packets);
        assert_eq!(
            got,
            "BEGIN;INSERT INTO `d`.`t` (`id`,`v`) VALUES (1,10);DELETE FROM `d`.`t` WHERE `id` = 2 LIMIT 1\n\
             REPLACE INTO `d`.`t` (`id`,`v`) VALUES (?,?),(?,?) <- [Int(3), Int(30), Int(4), Int(40)]\nCOMMIT"
                .replace("INSERT INTO `d`.`t` (`id`,`v`) VALUES (1,10)", "REPLACE INTO `d`.`t` (`id`,`v`) VALUES (1,10)")
        );
    }

    #[test]
    fn a_run_is_cut_into_halving_statement_sizes_down_to_64_rows() {
        let (t, plans, list) = setup();
        let mut s = settings(1);
        s.prepared_params = 512; // 2 columns: 256 rows at most
        let items = vec![item(&t, 10, (1..=400).map(|i| RowChange::Insert(row(i))).collect())];
        let gs = build(&items, &plans, &list, &s, None, 0, 0).unwrap();
        let p = &gs[0].parts[0].txns[0].packets;
        let sizes: Vec<usize> = p
            .iter()
            .filter_map(|p| match p {
                Packet::Prepared { params, sql } => {
                    assert_eq!(sql.matches('?').count(), params.len());
                    Some(params.len() / 2)
                }
                Packet::Text(_) => None,
            })
            .collect();
        assert_eq!(sizes, vec![256, 128], "then 16 rows (< 64) as text");
        let Packet::Text(tail) = p.last().unwrap() else { panic!() };
        assert_eq!(tail.matches("),(").count() + 1, 16, "{tail}");
        assert!(tail.contains("(385,3850),") && tail.ends_with("(400,4000);COMMIT"), "{tail}");
    }

    #[test]
    fn rows_a_parameter_cannot_carry_or_over_the_statement_size_stay_text() {
        use crate::txn::{MysqlTime, Time, mysql_type};
        let (t, plans, list) = setup();
        let ts = |sec: u8| {
            Some(Value::Time(MysqlTime {
                time: Time { year: 2020, month: 1, day: 1, hour: 0, minute: 0, second: sec, microsecond: 0 },
                tp: mysql_type::TIMESTAMP, fsp: 0,
            }))
        };
        let rows: Vec<RowChange> = (1..=4).map(|i| RowChange::Insert(vec![Some(Value::Int(i)), ts(i as u8)])).collect();
        let items = vec![item(&t, 10, rows)];
        let mut s = settings(1);
        s.prepared_params = 4;
        let gs = build(&items, &plans, &list, &s, None, 0, 0).unwrap();
        let p = &gs[0].parts[0].txns[0].packets;
        assert_eq!(p.iter().filter(|p| matches!(p, Packet::Prepared { .. })).count(), 2, "{}", joined(p));
        let Packet::Prepared { params, .. } = &p[1] else { panic!("{}", joined(p)) };
        assert_eq!(params[1], mysql_async::Value::Bytes(b"2020-01-01 00:00:01".to_vec()), "UTC text, as its literal");
        // a session zone other than UTC: the server converts TIMESTAMPs, so literals it is
        s.dialect.convert_timestamps = true;
        let gs = build(&items, &plans, &list, &s, None, 0, 0).unwrap();
        let got = joined(&gs[0].parts[0].txns[0].packets);
        assert!(!got.contains('?') && got.matches("CONVERT_TZ").count() == 4, "{got}");
        // rows 1-2 must stay literals, rows 3-4 (NULL there) can be parameters: the run keeps its order
        let rows: Vec<RowChange> = (1..=4)
            .map(|i| RowChange::Insert(vec![Some(Value::Int(i)), if i <= 2 { ts(i as u8) } else { Some(Value::Null) }]))
            .collect();
        let mixed = vec![item(&t, 10, rows)];
        let gs = build(&mixed, &plans, &list, &s, None, 0, 0).unwrap();
        let p = &gs[0].parts[0].txns[0].packets;
        assert_eq!(p.len(), 3, "{}", joined(p));
        let Packet::Text(first) = &p[0] else { panic!("{}", joined(p)) };
        assert!(first.contains("(1,CONVERT_TZ(") && first.contains("(2,CONVERT_TZ("), "{first}");
        let Packet::Prepared { params, .. } = &p[1] else { panic!("{}", joined(p)) };
        use mysql_async::Value as M;
        assert_eq!(*params, vec![M::Int(3), M::NULL, M::Int(4), M::NULL]);
        // statements stay within stmt_bytes
        s.dialect.convert_timestamps = false;
        s.stmt_bytes = 20;
        let gs = build(&items, &plans, &list, &s, None, 0, 0).unwrap();
        let got = joined(&gs[0].parts[0].txns[0].packets);
        assert!(!got.contains('?') && got.matches("INSERT").count() == 4, "{got}");
    }
}
