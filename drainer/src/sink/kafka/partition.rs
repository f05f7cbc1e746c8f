//! Which partition a change goes to (`kafka-partition-by`).

use std::hash::{Hash, Hasher};

use super::{Partitioning, translate};
use crate::proto::slave;
use crate::txn::{Body, Item, RowChange, TableChanges, Value};

fn hash_of(v: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn value_key(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(v) => crate::txn::value_text(v),
    }
}


pub(super) fn partition_of_table(partitions: i32, t: &TableChanges) -> i32 {
    (hash_of(&(&t.table.schema, &t.table.name)) % partitions as u64) as i32
}

pub(super) fn partition_of_row(partitions: i32, t: &TableChanges, r: &RowChange) -> i32 {
    let row = match r {
        RowChange::Insert(r) | RowChange::Delete(r) => r,
        RowChange::Update { new, .. } => new,
    };
    let pk: Vec<usize> = match t.table.unique_keys.iter().find(|k| k.is_primary()) {
        Some(k) => k.columns.clone(),
        None => t.table.columns.iter().enumerate().filter(|(_, c)| c.primary_key).map(|(i, _)| i).collect(),
    };
    if pk.is_empty() {
        return partition_of_table(partitions, t);
    }
    let key: Vec<String> = pk.iter().map(|&i| value_key(row.get(i).unwrap_or(&None))).collect();
    (hash_of(&(&t.table.schema, &t.table.name, key)) % partitions as u64) as i32
}

/// The messages (partition, binlog) for `item`.
pub(super) fn messages(partitioning: Partitioning, partitions: i32, item: &Item) -> Vec<(i32, slave::Binlog)> {
    let Some(binlog) = translate::to_secondary(item) else { return Vec::new() };
    if partitions <= 1 || partitioning == Partitioning::Single {
        return vec![(0, binlog)];
    }
    let Body::Dml(tables) = &item.body else {
        return (0..partitions).map(|p| (p, binlog.clone())).collect();
    };
    let mut by_part: Vec<Vec<slave::Table>> = vec![Vec::new(); partitions as usize];
    for t in tables.iter().filter(|t| !t.rows.is_empty()) {
        match partitioning {
            Partitioning::PrimaryKey => {
                let mut parts: Vec<Option<TableChanges>> = vec![None; partitions as usize];
                for r in &t.rows {
                    let p = partition_of_row(partitions, t, r) as usize;
                    parts[p].get_or_insert_with(|| TableChanges { table: t.table.clone(), rows: Vec::new() }).rows.push(r.clone());
                }
                for (p, tc) in parts.into_iter().enumerate() {
                    if let Some(tc) = tc {
                        by_part[p].push(translate::table_message(&tc));
                    }
                }
            }
            _ => by_part[partition_of_table(partitions, t) as usize].push(translate::table_message(t)),
        }
    }
    by_part
        .into_iter()
        .enumerate()
        .filter(|(_, ts)| !ts.is_empty())
        .map(|(p, ts)| (p as i32, translate::dml_binlog(item.commit_ts, ts)))
        .collect()
}
