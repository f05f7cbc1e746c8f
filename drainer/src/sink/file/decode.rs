//! Turns a file-sink record (`pb_binlog.Binlog`) back into an [`Item`] for a sink: the inverse of
//! [`super::pb`], used by Reparo.
//!
//! The record carries no keys and no full table definition, so each [`TableSchema`] is built from the
//! event's own columns (name, type byte, `mysql_type`) with no unique keys; the MySQL loader finds
//! keys in the downstream's `information_schema`. Values follow upstream Reparo's formatting by the
//! type byte: time, decimal, strings and JSON come back as text, enum/set/bit as integers.

use std::sync::Arc;

use prost::Message;

use crate::proto::pb;
use super::pb::{decode_datum, timestamp_from_local_text};
use crate::tidb::codec::Datum;
use crate::txn::{Body, Column, Ddl, Item, Row, RowChange, TableChanges, TableSchema, Value, mysql_type};

/// Why a record cannot be turned into an item.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A `row` element is not a `pb_binlog.column`.
    #[error("event {event} (`{schema}`.`{table}`): column {index} is not a pb_binlog.column: {source}")]
    Column {
        /// Event index in the record.
        event: usize,
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column position in the event.
        index: usize,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
    /// A value cannot be decoded.
    #[error("event {event} (`{schema}`.`{table}`): column {column}: {reason}")]
    Value {
        /// Event index in the record.
        event: usize,
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column name.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// Neither DML nor DDL content.
    #[error("record has neither DML events nor a DDL query")]
    Empty,
}

/// Splits `` use `db`; <ddl> `` into the schema and the statement (trailing `;` removed).
pub fn split_use(query: &str) -> (String, String) {
    let q = query.trim();
    let trimmed_end = |s: &str| s.trim().trim_end_matches(';').trim_end().to_string();
    let lower = q.to_ascii_lowercase();
    if lower.starts_with("use ") || lower.starts_with("use\t") || lower.starts_with("use`") {
        let rest = q[3..].trim_start();
        let (db, after) = if let Some(inner) = rest.strip_prefix('`') {
            // `name` with `` as an escaped backtick.
            let mut name = String::new();
            let mut chars = inner.char_indices().peekable();
            let mut end = inner.len();
            while let Some((i, c)) = chars.next() {
                if c == '`' {
                    if matches!(chars.peek(), Some((_, '`'))) {
                        name.push('`');
                        chars.next();
                        continue;
                    }
                    end = i + 1;
                    break;
                }
                name.push(c);
            }
            (name, &inner[end..])
        } else {
            let end = rest.find([';', ' ', '\t', '\n']).unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        let after = after.trim_start();
        let after = after.strip_prefix(';').unwrap_or(after);
        (db, trimmed_end(after))
    } else {
        (String::new(), trimmed_end(q))
    }
}

/// A best-effort (schema, table) a DDL statement touches, for filtering: the name after
/// `TABLE [IF [NOT] EXISTS]`, `INDEX ... ON`, `VIEW`, or for schema statements the database name.
pub fn ddl_target(default_db: &str, stmt: &str) -> (String, String) {
    let words = ident_words(stmt);
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let after = |i: usize| -> Option<&String> {
        let mut j = i + 1;
        while j < lower.len() && matches!(lower[j].as_str(), "if" | "not" | "exists") {
            j += 1;
        }
        words.get(j)
    };
    let qualified = |name: &str| -> (String, String) {
        match name.split_once('.') {
            Some((db, t)) => (db.to_string(), t.to_string()),
            None => (default_db.to_string(), name.to_string()),
        }
    };
    for (i, w) in lower.iter().enumerate() {
        match w.as_str() {
            "database" | "schema" if i <= 2 => {
                return (after(i).cloned().unwrap_or_default(), String::new());
            }
            "table" | "view" => {
                if let Some(n) = after(i) {
                    return qualified(n);
                }
            }
            "on" if lower.iter().take(i).any(|w| w == "index") => {
                if let Some(n) = words.get(i + 1) {
                    return qualified(n);
                }
            }
            _ => {}
        }
    }
    (default_db.to_string(), String::new())
}

/// Splits a statement into words, unquoting `` `ident` `` (a quoted name keeps its dots as
/// `db.table` only when written `` `db`.`table` ``).
fn ident_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                while let Some(c) = chars.next() {
                    if c == '`' {
                        if chars.peek() == Some(&'`') {
                            chars.next();
                            cur.push('`');
                            continue;
                        }
                        break;
                    }
                    cur.push(c);
                }
            }
            c if c.is_whitespace() || c == '(' || c == ';' || c == ',' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                if c == '(' {
                    break;
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn is_binary_type(mysql_type: &str) -> bool {
    matches!(mysql_type, "binary" | "varbinary" | "blob" | "tinyblob" | "mediumblob" | "longblob")
}

/// Upstream Reparo's `formatValue` by type byte, into our [`Value`].
fn value_of(tp: u8, d: Datum) -> Result<Value, String> {
    use mysql_type::*;
    Ok(match (tp, d) {
        (_, Datum::Null) => Value::Null,
        (DECIMAL | NEWDECIMAL, Datum::Bytes(b)) => {
            Value::Decimal(String::from_utf8(b).map_err(|_| "decimal text is not UTF-8".to_string())?)
        }
        (JSON, Datum::Bytes(b)) => Value::Json(String::from_utf8(b).map_err(|_| "json text is not UTF-8".to_string())?),
        (BIT, Datum::U64(u)) => Value::Bit(u),
        (BIT, Datum::I64(i)) => Value::Bit(i as u64),
        (_, Datum::I64(i)) => Value::Int(i),
        (_, Datum::U64(u)) => Value::Uint(u),
        (_, Datum::F64(f)) => Value::Float(f),
        // TIMESTAMP text is local time of the writing drainer: back to UTC, as the MySQL sink expects.
        (TIMESTAMP, Datum::Bytes(b)) => match std::str::from_utf8(&b).ok().and_then(timestamp_from_local_text) {
            Some(t) => Value::Time(t),
            None => Value::Bytes(b),
        },
        // Other time, duration and string types: the text as written.
        (_, Datum::Bytes(b)) => Value::Bytes(b),
        (_, other) => return Err(format!("a {} datum, which the file format does not carry", other.kind())),
    })
}

/// The item a record holds, with the events of tables `skip(schema, table)` names dropped (and a DDL
/// it names). `None` when nothing is left.
pub fn to_item(binlog: &pb::Binlog, skip: &dyn Fn(&str, &str) -> bool) -> Result<Option<Item>, DecodeError> {
    let commit_ts = binlog.commit_ts();
    if binlog.tp() == pb::BinlogType::Ddl {
        let query = String::from_utf8_lossy(binlog.ddl_query());
        let (schema, stmt) = split_use(&query);
        let (db, table) = ddl_target(&schema, &stmt);
        if skip(&db, &table) {
            return Ok(None);
        }
        let ddl = Ddl { schema, table, query: stmt, job_id: 0, table_after: None };
        return Ok(Some(Item { start_ts: 0, commit_ts, schema_version: 0, body: Body::Ddl(ddl) }));
    }
    let Some(dml) = &binlog.dml_data else { return Err(DecodeError::Empty) };
    let mut tables: Vec<TableChanges> = Vec::new();
    for (ei, ev) in dml.events.iter().enumerate() {
        let (schema, table) = (ev.schema_name(), ev.table_name());
        if skip(schema, table) {
            continue;
        }
        let mut columns = Vec::with_capacity(ev.row.len());
        let mut values: Row = Vec::with_capacity(ev.row.len());
        let mut changed: Row = Vec::with_capacity(ev.row.len());
        for (ci, raw) in ev.row.iter().enumerate() {
            let col = pb::Column::decode(raw.as_slice()).map_err(|source| DecodeError::Column {
                event: ei,
                schema: schema.into(),
                table: table.into(),
                index: ci,
                source,
            })?;
            let tp = col.tp().first().copied().unwrap_or(mysql_type::NULL);
            let bad = |reason: String| DecodeError::Value {
                event: ei,
                schema: schema.into(),
                table: table.into(),
                column: col.name().into(),
                reason,
            };
            let decode = |bytes: &[u8]| {
                decode_datum(bytes).map_err(|e| bad(e.to_string())).and_then(|d| value_of(tp, d).map_err(bad))
            };
            values.push(Some(decode(col.value())?));
            changed.push(match &col.changed_value {
                Some(c) => Some(decode(c)?),
                None => None,
            });
            columns.push(Column {
                id: ci as i64,
                name: col.name().to_string(),
                tp,
                binary: is_binary_type(col.mysql_type()),
                ..Default::default()
            });
        }
        let change = match ev.tp() {
            pb::EventType::Insert => RowChange::Insert(values),
            pb::EventType::Delete => RowChange::Delete(values),
            pb::EventType::Update => RowChange::Update { old: values, new: changed },
        };
        let schema_def = TableSchema { schema: schema.into(), name: table.into(), columns, ..Default::default() };
        match tables.last_mut() {
            Some(last) if *last.table == schema_def => last.rows.push(change),
            _ => tables.push(TableChanges { table: Arc::new(schema_def), rows: vec![change] }),
        }
    }
    if tables.is_empty() {
        return Ok(None);
    }
    Ok(Some(Item { start_ts: 0, commit_ts, schema_version: 0, body: Body::Dml(tables) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::file::pb::to_pb;
    use crate::txn::fixtures::{dml_item, insert_update_delete};

    #[test]
    fn use_prefix_is_split_off() {
        assert_eq!(split_use("use `d``b`; create table t (a int);"), ("d`b".into(), "create table t (a int)".into()));
        assert_eq!(split_use("USE db;drop table t;"), ("db".into(), "drop table t".into()));
        assert_eq!(split_use("create database x;"), (String::new(), "create database x".into()));
    }

    #[test]
    fn ddl_targets() {
        assert_eq!(ddl_target("d", "create table if not exists `T` (a int)"), ("d".into(), "T".into()));
        assert_eq!(ddl_target("d", "alter table x.y add c int"), ("x".into(), "y".into()));
        assert_eq!(ddl_target("d", "create index i on t2 (a)"), ("d".into(), "t2".into()));
        assert_eq!(ddl_target("", "create database if not exists z"), ("z".into(), String::new()));
        assert_eq!(ddl_target("d", "drop schema d"), ("d".into(), String::new()));
    }

    #[test]
    fn round_trips_what_the_file_sink_writes() {
        let table = Arc::new(TableSchema {
            schema: "s".into(),
            name: "t".into(),
            columns: vec![
                Column { name: "a".into(), tp: mysql_type::LONGLONG, unsigned: true, ..Default::default() },
                Column { name: "b".into(), tp: mysql_type::BLOB, binary: true, ..Default::default() },
                Column { name: "c".into(), tp: mysql_type::NEWDECIMAL, ..Default::default() },
                Column { name: "e".into(), tp: mysql_type::ENUM, ..Default::default() },
            ],
            ..Default::default()
        });
        let row = |a: u64| {
            vec![
                Some(Value::Uint(a)),
                Some(Value::Bytes(vec![0, 255])),
                Some(Value::Decimal("-1.50".into())),
                Some(Value::Enum { index: 2, name: "y".into() }),
            ]
        };
        let item = dml_item(&table, row);
        let back = to_item(&to_pb(&item).unwrap(), &|_, _| false).unwrap().unwrap();
        let Body::Dml(tables) = back.body else { panic!("dml") };
        assert_eq!(tables.len(), 1, "same table, same columns: one TableChanges");
        let want_row = |a: u64| {
            vec![
                Some(Value::Uint(a)),
                Some(Value::Bytes(vec![0, 255])),
                Some(Value::Decimal("-1.50".into())),
                Some(Value::Uint(2)),
            ]
        };
        assert_eq!(tables[0].rows, insert_update_delete(want_row));
        assert!(tables[0].table.columns[1].binary);
        assert_eq!(back.commit_ts, 42);
        assert_eq!(to_item(&to_pb(&item).unwrap(), &|db, _| db == "s").unwrap(), None);
    }
}
