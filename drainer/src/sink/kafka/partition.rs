//! Which partition a change goes to (`kafka-partition-by`).
//!
//! The hash is FNV-1a (64 bits) over the parts' UTF-8 bytes, each followed by the byte 0xFF (which
//! UTF-8 never contains), taken modulo the partition count: fixed, so a key maps to the same partition
//! across restarts and upgrades of the drainer (a standard-library hasher may change between Rust
//! releases). Values are hashed as their text (`crate::txn::value_text`); NULL and a missing value
//! as the empty string.

use super::{KafkaConfig, Partitioning};
use crate::txn::{RowChange, TableChanges, Value};

/// FNV-1a (64 bits), fed part by part, each part terminated by 0xFF.
struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Self(Self::OFFSET)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn part(&mut self, part: &str) -> &mut Self {
        self.bytes(part.as_bytes());
        self.bytes(&[0xff]);
        self
    }

    /// A value's part: its text (hashed as it is written, not built); NULL and a missing value as the
    /// empty string.
    fn value(&mut self, v: Option<&Option<Value>>) -> &mut Self {
        if let Some(Some(v)) = v
            && !matches!(v, Value::Null)
        {
            // Hashing cannot fail.
            let _ = crate::txn::write_value_text(self, v);
        }
        self.part("")
    }
}

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

/// FNV-1a over `parts`, each terminated by 0xFF.
#[cfg(test)]
fn stable_hash<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h = Fnv::new();
    for part in parts {
        h.part(part);
    }
    h.0
}

fn modulo(h: u64, partitions: i32) -> i32 {
    (h % partitions.max(1) as u64) as i32
}

/// By `schema.table`.
pub(super) fn partition_of_table(partitions: i32, t: &TableChanges) -> i32 {
    modulo(Fnv::new().part(&t.table.schema).part(&t.table.name).0, partitions)
}

/// The row whose values route a change: the new row of an update.
fn routed_row(r: &RowChange) -> &crate::txn::Row {
    match r {
        RowChange::Insert(r) | RowChange::Delete(r) => r,
        RowChange::Update { new, .. } => new,
    }
}

/// By primary-key values (the table for a table without one).
fn partition_of_pk(partitions: i32, t: &TableChanges, r: &RowChange) -> i32 {
    let row = routed_row(r);
    let mut h = Fnv::new();
    h.part(&t.table.schema).part(&t.table.name);
    match t.table.unique_keys.iter().find(|k| k.is_primary()) {
        Some(k) if k.columns.is_empty() => return partition_of_table(partitions, t),
        Some(k) => k.columns.iter().for_each(|&i| {
            h.value(row.get(i));
        }),
        None => {
            let mut pk = t.table.columns.iter().enumerate().filter(|(_, c)| c.primary_key).peekable();
            if pk.peek().is_none() {
                return partition_of_table(partitions, t);
            }
            pk.for_each(|(i, _)| {
                h.value(row.get(i));
            });
        }
    }
    modulo(h.0, partitions)
}

/// By the values of `columns` (matched case-insensitively, as MySQL names): the same values go to the
/// same partition whatever the table; a table lacking one of the columns goes by the table.
fn partition_of_columns(partitions: i32, columns: &[String], t: &TableChanges, r: &RowChange) -> i32 {
    let idx: Option<Vec<usize>> =
        columns.iter().map(|name| t.table.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name))).collect();
    let Some(idx) = idx.filter(|i| !i.is_empty()) else {
        return partition_of_table(partitions, t);
    };
    let row = routed_row(r);
    let mut h = Fnv::new();
    for i in idx {
        h.value(row.get(i));
    }
    modulo(h.0, partitions)
}

/// The partition of one row change under the sink's partitioning.
pub(super) fn partition_of_change(cfg: &KafkaConfig, partitions: i32, t: &TableChanges, r: &RowChange) -> i32 {
    match cfg.partitioning {
        _ if partitions <= 1 => 0,
        Partitioning::Single => 0,
        Partitioning::Table => partition_of_table(partitions, t),
        Partitioning::PrimaryKey => partition_of_pk(partitions, t, r),
        Partitioning::Columns => partition_of_columns(partitions, &cfg.partition_columns, t, r),
    }
}

/// A partition's row changes of one table: all of them (the table goes to one partition), or those
/// picked by key, in transaction order.
pub(super) enum Rows<'a> {
    All(&'a [RowChange]),
    Picked(Vec<&'a RowChange>),
}

impl<'a> Rows<'a> {
    pub(super) fn iter(&self) -> impl Iterator<Item = &'a RowChange> + '_ {
        let (all, picked) = match self {
            Rows::All(rows) => (Some(rows.iter()), None),
            Rows::Picked(rows) => (None, Some(rows.iter().copied())),
        };
        all.into_iter().flatten().chain(picked.into_iter().flatten())
    }
}

/// One partition's share of a table's changes in a transaction.
pub(super) type Share<'a> = (&'a TableChanges, Rows<'a>);

/// How many of the topic's `partitions` the sink writes to: all of them when it partitions, else
/// partition 0 only.
pub(super) fn written_partitions(cfg: &KafkaConfig, partitions: i32) -> i32 {
    if partitions <= 1 || cfg.partitioning == Partitioning::Single { 1 } else { partitions }
}

/// The row changes of `tables` per partition (`partitions` entries; one when the sink does not
/// partition), each grouped by table in transaction order; tables without rows are left out.
pub(super) fn split<'a>(cfg: &KafkaConfig, partitions: i32, tables: &'a [TableChanges]) -> Vec<Vec<Share<'a>>> {
    let written = written_partitions(cfg, partitions);
    let single = written == 1;
    let mut by_part: Vec<Vec<Share<'a>>> = (0..written).map(|_| Vec::new()).collect();
    for t in tables.iter().filter(|t| !t.rows.is_empty()) {
        match cfg.partitioning {
            _ if single => by_part[0].push((t, Rows::All(&t.rows))),
            Partitioning::Single | Partitioning::Table => by_part[partition_of_table(partitions, t) as usize].push((t, Rows::All(&t.rows))),
            Partitioning::PrimaryKey | Partitioning::Columns => {
                for r in &t.rows {
                    let part = &mut by_part[partition_of_change(cfg, partitions, t, r) as usize];
                    match part.last_mut() {
                        Some((last, Rows::Picked(rows))) if std::ptr::eq(*last, t) => rows.push(r),
                        _ => part.push((t, Rows::Picked(vec![r]))),
                    }
                }
            }
        }
    }
    by_part
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::txn::{Column, TableSchema, UniqueKey};

    fn table(schema: &str, name: &str, cols: &[&str]) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: 1,
            schema: schema.into(),
            name: name.into(),
            columns: cols.iter().enumerate().map(|(i, c)| Column { id: i as i64 + 1, name: (*c).into(), primary_key: i == 0, ..Default::default() }).collect(),
            pk_is_handle: true,
            is_common_handle: false,
            unique_keys: vec![UniqueKey { name: "PRIMARY".into(), columns: vec![0] }],
        })
    }

    fn change(t: &Arc<TableSchema>, values: &[i64]) -> (TableChanges, RowChange) {
        let row = values.iter().map(|v| Some(Value::Int(*v))).collect();
        (TableChanges { table: t.clone(), rows: Vec::new() }, RowChange::Insert(row))
    }

    #[test]
    fn the_hash_is_fixed() {
        // FNV-1a of "a\xff": a change here moves every key to another partition.
        assert_eq!(stable_hash(["a"]), 0x089b_c907_b544_c769);
        assert_ne!(stable_hash(["ab", "c"]), stable_hash(["a", "bc"]), "parts are delimited");
    }

    /// The documented mapping (drainer/FORMAT.md): FNV-1a of schema, table and the key values' text
    /// (by table: schema and table; by column: the values only), modulo the partition count.
    #[test]
    fn partitions_follow_the_documented_hash_of_the_key_text() {
        let t = table("db", "orders", &["id", "name"]);
        let mut cfg = KafkaConfig::new("k:1", "t");
        for id in [-3i64, 0, 7, 1 << 40] {
            let (tc, r) = change(&t, &[id, 5]);
            cfg.partitioning = Partitioning::PrimaryKey;
            assert_eq!(partition_of_change(&cfg, 7, &tc, &r) as u64, stable_hash(["db", "orders", &id.to_string()]) % 7);
            cfg.partitioning = Partitioning::Table;
            assert_eq!(partition_of_change(&cfg, 7, &tc, &r) as u64, stable_hash(["db", "orders"]) % 7);
            cfg.partitioning = Partitioning::Columns;
            cfg.partition_columns = vec!["name".into(), "id".into()];
            assert_eq!(partition_of_change(&cfg, 7, &tc, &r) as u64, stable_hash(["5", &id.to_string()]) % 7);
        }
        // NULL and a missing value hash as the empty string.
        let (tc, _) = change(&t, &[1]);
        cfg.partitioning = Partitioning::PrimaryKey;
        let null = RowChange::Insert(vec![Some(Value::Null)]);
        let missing = RowChange::Insert(vec![]);
        let want = stable_hash(["db", "orders", ""]) % 7;
        assert_eq!((partition_of_change(&cfg, 7, &tc, &null) as u64, partition_of_change(&cfg, 7, &tc, &missing) as u64), (want, want));
        // Other types hash as their text too (written into the hash piece by piece).
        for v in [Value::Bytes("ü-x".as_bytes().to_vec()), Value::Bytes(vec![b'a', 0xff]), Value::Decimal("-1.50".into()), Value::Uint(u64::MAX)] {
            let r = RowChange::Insert(vec![Some(v.clone())]);
            assert_eq!(partition_of_change(&cfg, 7, &tc, &r) as u64, stable_hash(["db", "orders", &crate::txn::value_text(&v)]) % 7, "{v:?}");
        }
    }

    #[test]
    fn columns_route_by_value_across_tables_and_fall_back_to_the_table() {
        let mut cfg = KafkaConfig::new("k:1", "t");
        cfg.partitioning = Partitioning::Columns;
        cfg.partition_columns = vec!["Tenant".into()];
        let a = table("db", "a", &["id", "tenant", "x"]);
        let b = table("db2", "b", &["id", "x", "TENANT"]);
        let no = table("db", "no_tenant", &["id", "x"]);
        let parts = 16;
        let mut seen = std::collections::HashSet::new();
        for tenant in 0..50 {
            let (ta, ra) = change(&a, &[tenant * 7, tenant, 1]);
            let (tb, rb) = change(&b, &[tenant * 3, 2, tenant]);
            let pa = partition_of_change(&cfg, parts, &ta, &ra);
            assert_eq!(pa, partition_of_change(&cfg, parts, &tb, &rb), "tenant {tenant}: one partition whatever the table");
            seen.insert(pa);
        }
        assert!(seen.len() > 8, "values spread: {seen:?}");
        for id in 0..20 {
            let (t, r) = change(&no, &[id, id]);
            assert_eq!(partition_of_change(&cfg, parts, &t, &r), partition_of_table(parts, &t), "no such column: by table");
        }
        // An update goes by its new values.
        let (ta, _) = change(&a, &[1, 5, 0]);
        let up = RowChange::Update { old: vec![Some(Value::Int(1)), Some(Value::Int(4)), None], new: vec![Some(Value::Int(1)), Some(Value::Int(5)), None] };
        let (_, r5) = change(&a, &[9, 5, 9]);
        assert_eq!(partition_of_change(&cfg, parts, &ta, &up), partition_of_change(&cfg, parts, &ta, &r5));
    }
}
