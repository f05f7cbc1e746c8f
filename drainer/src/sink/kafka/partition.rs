//! Which partition a change goes to (`kafka-partition-by`).
//!
//! The hash is FNV-1a (64 bits) over the parts' UTF-8 bytes, each followed by the byte 0xFF (which
//! UTF-8 never contains), taken modulo the partition count: fixed, so a key maps to the same partition
//! across restarts and upgrades of the drainer (a standard-library hasher may change between Rust
//! releases). Values are hashed as their text (`crate::txn::value_text`); NULL and a missing value
//! as the empty string.

use super::{KafkaConfig, Partitioning};
use crate::txn::{RowChange, TableChanges, Value};

/// FNV-1a over `parts`, each terminated by 0xFF.
fn stable_hash<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

fn value_key(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(v) => crate::txn::value_text(v),
    }
}

fn modulo(h: u64, partitions: i32) -> i32 {
    (h % partitions.max(1) as u64) as i32
}

/// By `schema.table`.
pub(super) fn partition_of_table(partitions: i32, t: &TableChanges) -> i32 {
    modulo(stable_hash([t.table.schema.as_str(), t.table.name.as_str()]), partitions)
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
    let pk: Vec<usize> = match t.table.unique_keys.iter().find(|k| k.is_primary()) {
        Some(k) => k.columns.clone(),
        None => t.table.columns.iter().enumerate().filter(|(_, c)| c.primary_key).map(|(i, _)| i).collect(),
    };
    if pk.is_empty() {
        return partition_of_table(partitions, t);
    }
    let row = routed_row(r);
    let key: Vec<String> = pk.iter().map(|&i| value_key(row.get(i).unwrap_or(&None))).collect();
    let parts = [t.table.schema.as_str(), t.table.name.as_str()].into_iter().chain(key.iter().map(String::as_str));
    modulo(stable_hash(parts), partitions)
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
    let key: Vec<String> = idx.iter().map(|&i| value_key(row.get(i).unwrap_or(&None))).collect();
    modulo(stable_hash(key.iter().map(String::as_str)), partitions)
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

/// One partition's share of a table's changes in a transaction, in transaction order.
pub(super) type Share<'a> = (&'a TableChanges, Vec<&'a RowChange>);

/// The row changes of `tables` per partition (`partitions` entries; one when the sink does not
/// partition), each grouped by table in transaction order; tables without rows are left out.
pub(super) fn split<'a>(cfg: &KafkaConfig, partitions: i32, tables: &'a [TableChanges]) -> Vec<Vec<Share<'a>>> {
    let single = partitions <= 1 || cfg.partitioning == Partitioning::Single;
    let mut by_part: Vec<Vec<Share<'a>>> = (0..if single { 1 } else { partitions }).map(|_| Vec::new()).collect();
    for t in tables.iter().filter(|t| !t.rows.is_empty()) {
        match cfg.partitioning {
            _ if single => by_part[0].push((t, t.rows.iter().collect())),
            Partitioning::Single | Partitioning::Table => by_part[partition_of_table(partitions, t) as usize].push((t, t.rows.iter().collect())),
            Partitioning::PrimaryKey | Partitioning::Columns => {
                for r in &t.rows {
                    let part = &mut by_part[partition_of_change(cfg, partitions, t, r) as usize];
                    match part.last_mut() {
                        Some((last, rows)) if std::ptr::eq(*last, t) => rows.push(r),
                        _ => part.push((t, vec![r])),
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
