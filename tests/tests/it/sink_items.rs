//! Hand-built drainer items shared by the file-sink, Reparo and Kafka-sink tests: one table with a
//! column of most types, and a deterministic stream of inserts, updates, deletes and DDL.

use std::sync::Arc;

use drainer::txn::{
    Body, Column, Ddl, Item, MysqlTime, Row, RowChange, TableChanges, TableSchema, Time, UniqueKey, Value, mysql_type,
};

/// `db`.`t`: id INT PK, name VARCHAR(32), amount DECIMAL(10,2), price DOUBLE, created DATETIME,
/// data BLOB, big BIGINT UNSIGNED, note TEXT (nullable).
pub fn table() -> Arc<TableSchema> {
    let col = |id: i64, name: &str, tp: u8| Column { id, name: name.into(), tp, flen: 10, ..Default::default() };
    Arc::new(TableSchema {
        id: 100,
        schema: "db".into(),
        name: "t".into(),
        columns: vec![
            Column { primary_key: true, not_null: true, ..col(1, "id", mysql_type::LONG) },
            col(2, "name", mysql_type::VARCHAR),
            Column { decimal: 2, ..col(3, "amount", mysql_type::NEWDECIMAL) },
            col(4, "price", mysql_type::DOUBLE),
            col(5, "created", mysql_type::DATETIME),
            Column { binary: true, ..col(6, "data", mysql_type::BLOB) },
            Column { unsigned: true, ..col(7, "big", mysql_type::LONGLONG) },
            col(8, "note", mysql_type::BLOB),
        ],
        pk_is_handle: true,
        is_common_handle: false,
        unique_keys: vec![UniqueKey { name: "PRIMARY".into(), columns: vec![0] }],
    })
}

/// The SQL that creates [`table`] downstream.
pub const CREATE_TABLE: &str = "create table t (id int primary key, name varchar(32), amount decimal(10,2), \
    price double, created datetime, data blob, big bigint unsigned, note text)";

/// Row `id` at version `v`: every value derived from both.
pub fn row(id: i64, v: i64) -> Row {
    vec![
        Some(Value::Int(id)),
        Some(Value::Bytes(format!("name-{id}-{v} ü").into_bytes())),
        Some(Value::Decimal(format!("{}.{:02}", id * 10 + v, v % 100))),
        Some(Value::Float(id as f64 + v as f64 / 4.0)),
        Some(Value::Time(MysqlTime {
            time: Time {
                year: 2020 + (v % 5) as u16,
                month: 1 + (id % 12) as u8,
                day: 1 + (v % 28) as u8,
                hour: (id % 24) as u8,
                minute: (v % 60) as u8,
                second: 7,
                microsecond: 0,
            },
            tp: mysql_type::DATETIME, fsp: 0,
        })),
        Some(Value::Bytes(vec![0, 1, 255, (id % 256) as u8, (v % 256) as u8])),
        Some(Value::Uint(u64::MAX - id as u64 - v as u64)),
        if v % 2 == 0 { Some(Value::Null) } else { Some(Value::Bytes(format!("note {v}").into_bytes())) },
    ]
}

/// A DDL item.
pub fn ddl(commit_ts: i64, schema: &str, query: &str) -> Item {
    Item {
        start_ts: commit_ts - 1,
        commit_ts,
        schema_version: 1,
        body: Body::Ddl(Ddl { schema: schema.into(), table: "t".into(), query: query.into(), job_id: 1, table_after: None }),
    }
}

/// A DML item on [`table`].
pub fn dml(commit_ts: i64, rows: Vec<RowChange>) -> Item {
    Item { start_ts: commit_ts - 1, commit_ts, schema_version: 1, body: Body::Dml(vec![TableChanges { table: table(), rows }]) }
}

/// `n` DML transactions from commit ts `first_ts` on (step 10): transaction `i` inserts rows
/// `3i+1..3i+3`, then (from `i >= 1`) updates row `3i-2` to version `i` and deletes row `3i-1`.
/// Returns the items and the final expected rows `(id, version)`.
pub fn workload(first_ts: i64, n: i64) -> (Vec<Item>, Vec<(i64, i64)>) {
    let mut items = Vec::new();
    let mut live = std::collections::BTreeMap::new();
    for i in 0..n {
        let mut changes = Vec::new();
        for id in 3 * i + 1..=3 * i + 3 {
            changes.push(RowChange::Insert(row(id, 0)));
            live.insert(id, 0);
        }
        if i >= 1 {
            let up = 3 * i - 2;
            let old = live[&up];
            changes.push(RowChange::Update { old: row(up, old), new: row(up, i) });
            live.insert(up, i);
            let del = 3 * i - 1;
            changes.push(RowChange::Delete(row(del, live[&del])));
            live.remove(&del);
        }
        items.push(dml(first_ts + 10 * i, changes));
    }
    (items, live.into_iter().collect())
}
