//! A consumed transaction (`slave.binlog.Binlog`) back into an [`Item`]: the inverse of
//! [`super::translate`], used by `binlog-consumer --apply` and the relay log's replay.
//!
//! The message carries each table's column names, `mysql_type` names, primary-key flags and unique
//! keys, so the [`TableSchema`] is rebuilt from it (the MySQL sink itself writes by the downstream's
//! keys). Values come back as the Kafka translator wrote them: DECIMAL text → [`Value::Decimal`],
//! TIMESTAMP text (in the producer's local time zone) → [`Value::Time`] in UTC, JSON bytes →
//! [`Value::Json`], BIT bytes → [`Value::Bit`], ENUM/SET indexes as integers, everything else as the
//! number or the text/bytes sent.

use std::sync::Arc;

use crate::proto::slave;
use crate::txn::{Body, Column, Ddl, Item, MysqlTime, Row, RowChange, TableChanges, TableSchema, UniqueKey, Value, mysql_type};

/// Why a consumed transaction cannot become an item.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UntranslateError {
    /// A value does not fit its column type.
    #[error("commit ts {commit_ts}, `{schema}`.`{table}` column {column}: {why}")]
    Value {
        /// The transaction.
        commit_ts: i64,
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column name.
        column: String,
        /// What is wrong.
        why: String,
    },
    /// A unique key names a column the table does not have.
    #[error("commit ts {commit_ts}, `{schema}`.`{table}`: key {key} names unknown column {column}")]
    Key {
        /// The transaction.
        commit_ts: i64,
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Key name.
        key: String,
        /// Column name.
        column: String,
    },
}

/// The column type byte and binary flag for a `mysql_type` name (the inverse of
/// [`Column::type_name`]); unknown names are treated as CHAR.
pub fn type_of(name: &str) -> (u8, bool) {
    use mysql_type::*;
    match name {
        "tinyint" => (TINY, false),
        "smallint" => (SHORT, false),
        "mediumint" => (INT24, false),
        "int" => (LONG, false),
        "bigint" => (LONGLONG, false),
        "float" => (FLOAT, false),
        "double" => (DOUBLE, false),
        "decimal" => (NEWDECIMAL, false),
        "null" => (NULL, false),
        "timestamp" => (TIMESTAMP, false),
        "date" => (DATE, false),
        "time" => (DURATION, false),
        "datetime" => (DATETIME, false),
        "year" => (YEAR, false),
        "varchar" => (VARCHAR, false),
        "varbinary" => (VARCHAR, true),
        "var_string" => (VAR_STRING, false),
        "binary" => (STRING, true),
        "bit" => (BIT, false),
        "json" => (JSON, false),
        "enum" => (ENUM, false),
        "set" => (SET, false),
        "tinytext" => (TINY_BLOB, false),
        "tinyblob" => (TINY_BLOB, true),
        "mediumtext" => (MEDIUM_BLOB, false),
        "mediumblob" => (MEDIUM_BLOB, true),
        "longtext" => (LONG_BLOB, false),
        "longblob" => (LONG_BLOB, true),
        "text" => (BLOB, false),
        "blob" => (BLOB, true),
        "geometry" => (GEOMETRY, true),
        _ => (STRING, false),
    }
}

/// Local-time TIMESTAMP text (as the Kafka translator writes it) as a UTC [`MysqlTime`]; `None` for
/// text that is not a valid local date-time (the zero timestamp among them), which is then sent as is.
fn timestamp_from_local(text: &str, fsp: i32) -> Option<MysqlTime> {
    let t = crate::sink::file::pb::timestamp_from_local_text(text.trim())?;
    Some(MysqlTime { fsp: fsp.clamp(0, 6) as u8, ..t })
}

fn value_of(col: &Column, c: &slave::Column) -> Result<Value, String> {
    use mysql_type::*;
    if c.is_null() {
        return Ok(Value::Null);
    }
    if let Some(i) = c.int64_value {
        return Ok(Value::Int(i));
    }
    if let Some(u) = c.uint64_value {
        return Ok(Value::Uint(u));
    }
    if let Some(f) = c.double_value {
        return Ok(Value::Float(f));
    }
    if let Some(s) = &c.string_value {
        return Ok(match col.tp {
            DECIMAL | NEWDECIMAL => Value::Decimal(s.clone()),
            TIMESTAMP => match timestamp_from_local(s, col.decimal) {
                Some(t) => Value::Time(t),
                None => Value::Bytes(s.clone().into_bytes()),
            },
            _ => Value::Bytes(s.clone().into_bytes()),
        });
    }
    if let Some(b) = &c.bytes_value {
        return Ok(match col.tp {
            JSON => Value::Json(String::from_utf8(b.clone()).map_err(|_| "JSON text is not UTF-8".to_string())?),
            BIT => {
                if b.len() > 8 {
                    return Err(format!("BIT value of {} bytes (at most 8)", b.len()));
                }
                Value::Bit(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
            }
            _ => Value::Bytes(b.clone()),
        });
    }
    Ok(Value::Null)
}

fn table_schema(commit_ts: i64, t: &slave::Table) -> Result<TableSchema, UntranslateError> {
    let columns: Vec<Column> = t
        .column_info
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (tp, binary) = type_of(c.mysql_type());
            Column {
                id: i as i64,
                name: c.name().to_string(),
                tp,
                binary,
                primary_key: c.is_primary_key(),
                flen: c.flen(),
                decimal: c.decimal(),
                ..Default::default()
            }
        })
        .collect();
    let mut schema = TableSchema {
        schema: t.schema_name().to_string(),
        name: t.table_name().to_string(),
        columns,
        ..Default::default()
    };
    for k in &t.unique_keys {
        let mut cols = Vec::with_capacity(k.column_names.len());
        for name in &k.column_names {
            let i = schema.column_index(name).ok_or_else(|| UntranslateError::Key {
                commit_ts,
                schema: schema.schema.clone(),
                table: schema.name.clone(),
                key: k.name().to_string(),
                column: name.clone(),
            })?;
            cols.push(i);
        }
        schema.unique_keys.push(UniqueKey { name: k.name().to_string(), columns: cols });
    }
    Ok(schema)
}

fn row_of(commit_ts: i64, table: &TableSchema, r: &slave::Row) -> Result<Row, UntranslateError> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, col)| {
            let v = match r.columns.get(i) {
                Some(c) => value_of(col, c).map_err(|why| UntranslateError::Value {
                    commit_ts,
                    schema: table.schema.clone(),
                    table: table.name.clone(),
                    column: col.name.clone(),
                    why,
                })?,
                None => Value::Null,
            };
            Ok(Some(v))
        })
        .collect()
}

/// The item a consumed transaction holds; `None` when it carries no change.
pub fn to_item(binlog: &slave::Binlog) -> Result<Option<Item>, UntranslateError> {
    let commit_ts = binlog.commit_ts();
    let item = |body| Item { start_ts: 0, commit_ts, schema_version: 0, body };
    if let Some(d) = &binlog.ddl_data {
        let query = String::from_utf8_lossy(d.ddl_query()).trim().to_string();
        if query.is_empty() {
            return Ok(None);
        }
        let ddl =
            Ddl { schema: d.schema_name().to_string(), table: d.table_name().to_string(), query, job_id: 0, table_after: None };
        return Ok(Some(item(Body::Ddl(ddl))));
    }
    let mut tables = Vec::new();
    for t in binlog.dml_data.iter().flat_map(|d| &d.tables) {
        if t.mutations.is_empty() {
            continue;
        }
        let schema = Arc::new(table_schema(commit_ts, t)?);
        let mut rows = Vec::with_capacity(t.mutations.len());
        for m in &t.mutations {
            let row = row_of(commit_ts, &schema, &m.row)?;
            rows.push(match (m.r#type(), &m.change_row) {
                (slave::MutationType::Insert, _) => RowChange::Insert(row),
                (slave::MutationType::Delete, _) => RowChange::Delete(row),
                (slave::MutationType::Update, Some(old)) => {
                    RowChange::Update { old: row_of(commit_ts, &schema, old)?, new: row }
                }
                // An update without its old row: write the new row (as REPLACE would).
                (slave::MutationType::Update, None) => RowChange::Insert(row),
            });
        }
        tables.push(TableChanges { table: schema, rows });
    }
    if tables.is_empty() {
        return Ok(None);
    }
    Ok(Some(item(Body::Dml(tables))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::kafka::translate::to_secondary;
    use crate::txn::Time;
    use crate::txn::fixtures::{dml_item, insert_update_delete};

    #[test]
    fn round_trips_what_the_kafka_sink_writes() {
        let col = |name: &str, tp: u8| Column { name: name.into(), tp, ..Default::default() };
        let table = Arc::new(TableSchema {
            schema: "s".into(),
            name: "t".into(),
            columns: vec![
                Column { primary_key: true, unsigned: true, ..col("a", mysql_type::LONGLONG) },
                Column { binary: true, ..col("b", mysql_type::BLOB) },
                Column { decimal: 2, ..col("c", mysql_type::NEWDECIMAL) },
                Column { elems: vec!["x".into(), "y".into()], ..col("e", mysql_type::ENUM) },
                col("j", mysql_type::JSON),
                Column { flen: 12, ..col("bit", mysql_type::BIT) },
                col("n", mysql_type::VARCHAR),
            ],
            unique_keys: vec![UniqueKey { name: "PRIMARY".into(), columns: vec![0] }],
            ..Default::default()
        });
        let row = |a: u64| {
            vec![
                Some(Value::Uint(a)),
                Some(Value::Bytes(vec![0, 255])),
                Some(Value::Decimal("-1.50".into())),
                Some(Value::Enum { index: 2, name: "y".into() }),
                Some(Value::Json("{\"k\": 1}".into())),
                Some(Value::Bit(0x0abc)),
                Some(Value::Null),
            ]
        };
        let item = dml_item(&table, row);
        let back = to_item(&to_secondary(&item).unwrap()).unwrap().unwrap();
        assert_eq!(back.commit_ts, 42);
        let Body::Dml(tables) = back.body else { panic!("dml") };
        let want = |a: u64| {
            let mut r = row(a);
            r[3] = Some(Value::Uint(2));
            r
        };
        assert_eq!(tables[0].rows, insert_update_delete(want));
        let t = &tables[0].table;
        assert_eq!((t.schema.as_str(), t.name.as_str()), ("s", "t"));
        assert_eq!(t.unique_keys, table.unique_keys);
        assert!(t.columns[0].primary_key && t.columns[1].binary && !t.columns[6].binary);
        let types: Vec<u8> = t.columns.iter().map(|c| c.tp).collect();
        assert_eq!(types, table.columns.iter().map(|c| c.tp).collect::<Vec<_>>());

        let ddl = Item {
            body: Body::Ddl(Ddl {
                schema: "s".into(),
                table: "t".into(),
                query: "create table t (a int)".into(),
                job_id: 3,
                table_after: None,
            }),
            ..item
        };
        let Body::Ddl(d) = to_item(&to_secondary(&ddl).unwrap()).unwrap().unwrap().body else { panic!("ddl") };
        assert_eq!((d.schema.as_str(), d.table.as_str(), d.query.as_str()), ("s", "t", "create table t (a int)"));
    }

    #[test]
    fn timestamps_come_back_to_utc() {
        let utc = MysqlTime {
            time: Time { year: 2021, month: 6, day: 1, hour: 12, minute: 30, second: 5, microsecond: 250_000 },
            tp: mysql_type::TIMESTAMP, fsp: 3,
        };
        let local = crate::sink::file::pb::timestamp_to_local(&utc);
        assert_eq!(timestamp_from_local(&local.to_string(), 3), Some(utc));
        assert!(timestamp_from_local("0000-00-00 00:00:00", 0).is_none());
    }
}
