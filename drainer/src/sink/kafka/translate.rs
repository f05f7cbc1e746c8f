//! [`Item`] → `slave.binlog.Binlog` (the "secondary binlog"), as upstream's Kafka translator, and the
//! split of one oversized transaction into ordered chunks that are each a valid `Binlog`.

use prost::Message;

use crate::proto::slave;
use crate::sink::file::pb::timestamp_to_local;
use crate::txn::{Body, Column, Item, Row, RowChange, TableChanges, TableSchema, Value, format_duration};

/// A transaction that cannot be made to fit `kafka-max-message-size`.
#[derive(Debug, thiserror::Error)]
#[error("commit ts {commit_ts}: {what} needs {size} bytes, over kafka-max-message-size {limit}")]
pub struct TooLarge {
    /// The transaction.
    pub commit_ts: i64,
    /// What does not fit (a DDL, one row of a table).
    pub what: String,
    /// Its encoded size.
    pub size: usize,
    /// The limit.
    pub limit: usize,
}

/// A column value as upstream's `DatumToColumn` maps it (see the table in the spec §9.2).
pub fn column_value(col: &Column, v: Option<&Value>) -> slave::Column {
    let mut c = slave::Column::default();
    let Some(v) = v.filter(|v| !matches!(v, Value::Null)) else {
        c.is_null = Some(true);
        return c;
    };
    let name = col.type_name();
    let text = |s: String| slave::Column { string_value: Some(s), ..Default::default() };
    let bytes = |b: Vec<u8>| slave::Column { bytes_value: Some(b), ..Default::default() };
    match v {
        Value::Null => unreachable!("filtered above"),
        Value::Int(i) => match name {
            "year" | "date" | "datetime" | "timestamp" | "time" => text(i.to_string()),
            "bigint" | "int" | "smallint" | "tinyint" | "mediumint" if col.unsigned => {
                slave::Column { uint64_value: Some(*i as u64), ..Default::default() }
            }
            _ => slave::Column { int64_value: Some(*i), ..Default::default() },
        },
        Value::Uint(u) => {
            if col.unsigned || name == "enum" || name == "set" || name == "bit" {
                slave::Column { uint64_value: Some(*u), ..Default::default() }
            } else {
                slave::Column { int64_value: Some(*u as i64), ..Default::default() }
            }
        }
        Value::Float(f) => slave::Column { double_value: Some(*f), ..Default::default() },
        Value::Decimal(s) => text(s.clone()),
        Value::Json(s) => bytes(s.clone().into_bytes()),
        Value::Bytes(b) => {
            if col.binary || name.ends_with("blob") || name.ends_with("binary") || name == "json" || name == "bit" {
                bytes(b.clone())
            } else {
                // Text types: Go strings may hold any bytes; a prost `string` must be UTF-8.
                text(String::from_utf8_lossy(b).into_owned())
            }
        }
        Value::Time(t) => text(timestamp_to_local(t).to_string()),
        Value::Duration { nanos, fsp } => text(format_duration(*nanos, *fsp)),
        Value::Enum { index, .. } => slave::Column { uint64_value: Some(*index), ..Default::default() },
        Value::Set { bits, .. } => slave::Column { uint64_value: Some(*bits), ..Default::default() },
        Value::Bit(b) => {
            let n = (((col.flen.max(1) + 7) / 8) as usize).min(8);
            bytes(b.to_be_bytes()[8 - n..].to_vec())
        }
    }
}

fn row(table: &TableSchema, r: &Row) -> slave::Row {
    slave::Row {
        columns: table.columns.iter().enumerate().map(|(i, c)| column_value(c, r.get(i).and_then(Option::as_ref))).collect(),
    }
}

fn mutation(table: &TableSchema, change: &RowChange) -> slave::TableMutation {
    let (tp, r, old) = match change {
        RowChange::Insert(r) => (slave::MutationType::Insert, r, None),
        RowChange::Delete(r) => (slave::MutationType::Delete, r, None),
        RowChange::Update { old, new } => (slave::MutationType::Update, new, Some(old)),
    };
    slave::TableMutation { r#type: tp as i32, row: row(table, r), change_row: old.map(|o| row(table, o)) }
}

/// The `Table` message without mutations: names, every column's info, unique keys.
pub fn table_header(table: &TableSchema) -> slave::Table {
    let column_info = table
        .columns
        .iter()
        .map(|c| slave::ColumnInfo {
            name: Some(c.name.clone()),
            mysql_type: Some(c.type_name().to_string()),
            is_primary_key: Some(c.primary_key),
            flen: Some(c.flen),
            decimal: Some(c.decimal),
        })
        .collect();
    let mut unique_keys = Vec::new();
    let has_primary = table.unique_keys.iter().any(|k| k.is_primary());
    if table.pk_is_handle && !has_primary {
        if let Some(pk) = table.columns.iter().find(|c| c.primary_key) {
            unique_keys.push(slave::Key { name: Some("PRIMARY".into()), column_names: vec![pk.name.clone()] });
        }
    }
    for k in &table.unique_keys {
        let column_names = k.columns.iter().filter_map(|&i| table.columns.get(i)).map(|c| c.name.clone()).collect();
        unique_keys.push(slave::Key { name: Some(k.name.clone()), column_names });
    }
    slave::Table {
        schema_name: Some(table.schema.clone()),
        table_name: Some(table.name.clone()),
        column_info,
        mutations: Vec::new(),
        unique_keys,
    }
}

/// The `Table` for one table mutation.
pub fn table_message(changes: &TableChanges) -> slave::Table {
    let mut t = table_header(&changes.table);
    t.mutations = changes.rows.iter().map(|r| mutation(&changes.table, r)).collect();
    t
}

/// The secondary binlog for `item`, or `None` when it carries nothing to send.
pub fn to_secondary(item: &Item) -> Option<slave::Binlog> {
    match &item.body {
        Body::Empty => None,
        Body::Ddl(d) => Some(slave::Binlog {
            r#type: Some(slave::BinlogType::Ddl as i32),
            commit_ts: Some(item.commit_ts),
            dml_data: None,
            ddl_data: Some(slave::DdlData {
                schema_name: Some(d.schema.clone()),
                table_name: Some(d.table.clone()),
                ddl_query: Some(d.query.clone().into_bytes()),
            }),
        }),
        Body::Dml(tables) => {
            if tables.iter().all(|t| t.rows.is_empty()) {
                return None;
            }
            Some(dml_binlog(item.commit_ts, tables.iter().filter(|t| !t.rows.is_empty()).map(table_message).collect()))
        }
    }
}

/// A DML binlog holding `tables`.
pub fn dml_binlog(commit_ts: i64, tables: Vec<slave::Table>) -> slave::Binlog {
    slave::Binlog {
        r#type: Some(slave::BinlogType::Dml as i32),
        commit_ts: Some(commit_ts),
        dml_data: Some(slave::DmlData { tables }),
        ddl_data: None,
    }
}

/// Bytes a length-delimited field of `len` bytes takes (tag + length varint + body).
fn field_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

/// Encodes `binlog` as one message, or — when it is over `limit` bytes — as ordered chunks, each a
/// valid DML `Binlog` with the same commit ts carrying a run of the mutations (a table split over
/// chunks repeats its header). A DDL, or one mutation with its table header, over the limit is an
/// error.
pub fn encode_chunks(binlog: &slave::Binlog, limit: usize) -> Result<Vec<Vec<u8>>, TooLarge> {
    let commit_ts = binlog.commit_ts();
    let whole = binlog.encoded_len();
    if whole <= limit {
        return Ok(vec![binlog.encode_to_vec()]);
    }
    let Some(dml) = &binlog.dml_data else {
        return Err(TooLarge { commit_ts, what: "the DDL".into(), size: whole, limit });
    };
    // Fixed part of every chunk: type + commit ts (≤ 13 bytes) and the dml_data wrapper (≤ 11).
    let base = dml_binlog(commit_ts, Vec::new()).encoded_len() + 11;
    let mut chunks = Vec::new();
    let mut cur: Vec<slave::Table> = Vec::new();
    let mut cur_len = base;
    for table in &dml.tables {
        let mut header = table.clone();
        header.mutations.clear();
        let header_len = header.encoded_len();
        let mut open = false; // whether `cur`'s last table is this table
        for m in &table.mutations {
            let m_len = field_len(m.encoded_len());
            let need_table = if open { 0 } else { field_len(header_len + 10) };
            if cur_len + need_table + m_len > limit && !cur.is_empty() {
                chunks.push(dml_binlog(commit_ts, std::mem::take(&mut cur)).encode_to_vec());
                cur_len = base;
                open = false;
            }
            if !open {
                let need = field_len(header_len + 10) + m_len;
                if base + need > limit {
                    return Err(TooLarge {
                        commit_ts,
                        what: format!("one row of `{}`.`{}`", table.schema_name(), table.table_name()),
                        size: base + need,
                        limit,
                    });
                }
                cur.push(header.clone());
                cur_len += field_len(header_len + 10);
                open = true;
            }
            cur.last_mut().expect("pushed above").mutations.push(m.clone());
            cur_len += m_len;
        }
    }
    if !cur.is_empty() {
        chunks.push(dml_binlog(commit_ts, cur).encode_to_vec());
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{MysqlTime, UniqueKey, mysql_type};
    use std::sync::Arc;

    fn table() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            schema: "s".into(),
            name: "t".into(),
            columns: vec![
                Column { name: "id".into(), tp: mysql_type::LONGLONG, unsigned: true, primary_key: true, flen: 20, ..Default::default() },
                Column { name: "v".into(), tp: mysql_type::VARCHAR, flen: 10, ..Default::default() },
                Column { name: "b".into(), tp: mysql_type::BIT, flen: 12, ..Default::default() },
                Column { name: "ts".into(), tp: mysql_type::TIMESTAMP, ..Default::default() },
                Column { name: "y".into(), tp: mysql_type::YEAR, ..Default::default() },
                Column { name: "u".into(), tp: mysql_type::VARCHAR, ..Default::default() },
            ],
            pk_is_handle: true,
            unique_keys: vec![UniqueKey { name: "uk_v".into(), columns: vec![1] }],
            ..Default::default()
        })
    }

    fn row(id: u64, v: &str) -> Row {
        vec![
            Some(Value::Uint(id)),
            Some(Value::Bytes(v.as_bytes().to_vec())),
            Some(Value::Bit(0x0102)),
            Some(Value::Time(MysqlTime { year: 2020, month: 1, day: 2, hour: 3, tp: mysql_type::TIMESTAMP, ..Default::default() })),
            Some(Value::Int(2024)),
            None,
        ]
    }

    #[test]
    fn values_info_keys_and_update_halves_follow_upstream() {
        let item = Item {
            start_ts: 1,
            commit_ts: 7,
            schema_version: 1,
            body: Body::Dml(vec![TableChanges { table: table(), rows: vec![RowChange::Update { old: row(1, "a"), new: row(1, "b") }] }]),
        };
        let b = to_secondary(&item).unwrap();
        assert_eq!((b.r#type(), b.commit_ts()), (slave::BinlogType::Dml, 7));
        let t = &b.dml_data.as_ref().unwrap().tables[0];
        assert_eq!(t.column_info[0].mysql_type(), "bigint");
        assert!(t.column_info[0].is_primary_key());
        assert_eq!(t.column_info[1].flen(), 10);
        let keys: Vec<(&str, Vec<String>)> = t.unique_keys.iter().map(|k| (k.name(), k.column_names.clone())).collect();
        assert_eq!(keys, vec![("PRIMARY", vec!["id".to_string()]), ("uk_v", vec!["v".to_string()])]);
        let m = &t.mutations[0];
        assert_eq!(m.r#type(), slave::MutationType::Update);
        let new = &m.row.columns;
        let old = &m.change_row.as_ref().unwrap().columns;
        assert_eq!((new[1].string_value(), old[1].string_value()), ("b", "a"), "row = new, change_row = old");
        assert_eq!(new[0].uint64_value, Some(1));
        assert_eq!(new[2].bytes_value(), &[0x01, 0x02], "bit: (flen+7)/8 big-endian bytes");
        assert_eq!(new[4].string_value(), "2024", "year as text");
        assert_eq!(new[5].is_null, Some(true), "a column the row does not carry is NULL");
        assert!(new[3].string_value().starts_with("20"), "{:?}", new[3]);
    }

    #[test]
    fn oversized_transactions_split_into_valid_ordered_chunks() {
        let rows: Vec<RowChange> = (0..50).map(|i| RowChange::Insert(row(i, &"x".repeat(40)))).collect();
        let item = Item {
            start_ts: 1,
            commit_ts: 9,
            schema_version: 1,
            body: Body::Dml(vec![
                TableChanges { table: table(), rows: rows[..20].to_vec() },
                TableChanges { table: table(), rows: rows[20..].to_vec() },
            ]),
        };
        let b = to_secondary(&item).unwrap();
        let whole = b.encode_to_vec();
        assert_eq!(encode_chunks(&b, whole.len()).unwrap(), vec![whole.clone()]);
        let limit = 1000;
        let chunks = encode_chunks(&b, limit).unwrap();
        assert!(chunks.len() > 3, "{}", chunks.len());
        let mut ids = Vec::new();
        for c in &chunks {
            assert!(c.len() <= limit, "{} > {limit}", c.len());
            let part = slave::Binlog::decode(c.as_slice()).unwrap();
            assert_eq!(part.commit_ts(), 9);
            for t in &part.dml_data.unwrap().tables {
                assert_eq!(t.column_info.len(), 6, "every chunk repeats the table header");
                ids.extend(t.mutations.iter().map(|m| m.row.columns[0].uint64_value()));
            }
        }
        assert_eq!(ids, (0..50).collect::<Vec<u64>>(), "all rows, in order");
        let err = encode_chunks(&b, 200).unwrap_err().to_string();
        assert!(err.contains("one row of `s`.`t`") && err.contains("commit ts 9"), "{err}");
    }
}
