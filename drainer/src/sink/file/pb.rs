//! Translation of an [`Item`] into the file sink's `pb_binlog.Binlog` payload, byte for byte as
//! upstream's pb translator. The `value`/`changed_value` datums use [`crate::tidb::codec`].
//!
//! `value` is TiDB's `codec.EncodeValue` of the datum after upstream's `formatData`: text-like values
//! (time, decimal, JSON, TIME, strings, blobs) as `compactBytes`, enum/set/bit as `uvarint`, signed ints
//! as `varint`, unsigned as `uvarint`, floats with `floatFlag`, NULL as the nil flag.

use crate::proto::pb;
use crate::tidb::codec::{CodecError, Datum, decode_one, encode_value};
use crate::txn::{Body, Column, Ddl, Item, MysqlTime, RowChange, TableSchema, Time, Value, format_duration, mysql_type};

/// A datum in a `value` that is not one whole datum of the kinds the file format carries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatumError {
    /// The bytes do not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Bytes follow the datum.
    #[error("{extra} trailing bytes after the datum")]
    Trailing {
        /// How many.
        extra: usize,
    },
    /// A kind the file format never carries (decimal, duration, JSON or max datum).
    #[error("a {kind} datum, which the file format does not carry")]
    Unsupported {
        /// The datum's kind.
        kind: &'static str,
    },
}

/// Decodes one whole `value` datum (`codec.DecodeOne`): NULL, ints, floats or bytes.
pub fn decode_datum(buf: &[u8]) -> Result<Datum, DatumError> {
    let (d, rest) = decode_one(buf)?;
    if !rest.is_empty() {
        return Err(DatumError::Trailing { extra: rest.len() });
    }
    match d {
        Datum::Null | Datum::I64(_) | Datum::U64(_) | Datum::F64(_) | Datum::Bytes(_) => Ok(d),
        other => Err(DatumError::Unsupported { kind: other.kind() }),
    }
}

/// The `codec.EncodeValue` bytes of `d`.
pub fn datum_bytes(d: &Datum) -> Vec<u8> {
    let mut v = Vec::new();
    encode_value(&mut v, d);
    v
}

/// A TIMESTAMP value (kept in UTC by the translator) in the drainer's local time zone, as upstream's
/// Kafka and pb translators print it; other values and the zero timestamp are returned unchanged.
pub fn timestamp_to_local(t: &MysqlTime) -> MysqlTime {
    use chrono::{Datelike, TimeZone, Timelike};
    if t.tp != mysql_type::TIMESTAMP || t.is_zero() {
        return *t;
    }
    let c = &t.time;
    let Some(naive) = chrono::NaiveDate::from_ymd_opt(i32::from(c.year), u32::from(c.month), u32::from(c.day))
        .and_then(|d| d.and_hms_micro_opt(u32::from(c.hour), u32::from(c.minute), u32::from(c.second), c.microsecond))
    else {
        return *t;
    };
    let local = chrono::Local.from_utc_datetime(&naive);
    let time = Time {
        year: local.year() as u16,
        month: local.month() as u8,
        day: local.day() as u8,
        hour: local.hour() as u8,
        minute: local.minute() as u8,
        second: local.second() as u8,
        microsecond: c.microsecond,
    };
    MysqlTime { time, ..*t }
}

/// The inverse of [`timestamp_to_local`] for Reparo: TIMESTAMP text as the pb translator wrote it
/// (`YYYY-MM-DD HH:MM:SS[.ffffff]` in the writing drainer's local time zone, which Reparo assumes is
/// its own) back to a UTC [`MysqlTime`]. `None` for text that is not such a time (the zero timestamp
/// among them), or a local time the zone skips.
pub fn timestamp_from_local_text(text: &str) -> Option<MysqlTime> {
    use chrono::{Datelike, TimeZone, Timelike};
    let (fmt, fsp) = match text.split_once('.') {
        Some((_, frac)) => ("%Y-%m-%d %H:%M:%S%.f", frac.len().min(6) as u8),
        None => ("%Y-%m-%d %H:%M:%S", 0),
    };
    let naive = chrono::NaiveDateTime::parse_from_str(text, fmt).ok()?;
    // A repeated local hour (DST end) is ambiguous in the text itself; take the earlier instant.
    let utc = chrono::Local.from_local_datetime(&naive).earliest()?.naive_utc();
    let time = Time {
        year: u16::try_from(utc.year()).ok()?,
        month: utc.month() as u8,
        day: utc.day() as u8,
        hour: utc.hour() as u8,
        minute: utc.minute() as u8,
        second: utc.second() as u8,
        microsecond: utc.nanosecond() / 1000,
    };
    Some(MysqlTime { time, tp: mysql_type::TIMESTAMP, fsp })
}

/// A value as upstream's `formatData` leaves it for the pb translator.
pub fn datum_of(v: &Value) -> Datum {
    match v {
        Value::Null => Datum::Null,
        Value::Int(i) => Datum::I64(*i),
        Value::Uint(u) => Datum::U64(*u),
        Value::Float(f) => Datum::F64(*f),
        Value::Decimal(s) | Value::Json(s) => Datum::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => Datum::Bytes(b.clone()),
        Value::Time(t) => Datum::Bytes(timestamp_to_local(t).to_string().into_bytes()),
        Value::Duration { nanos, fsp } => Datum::Bytes(format_duration(*nanos, *fsp).into_bytes()),
        Value::Enum { index, .. } => Datum::U64(*index),
        Value::Set { bits, .. } => Datum::U64(*bits),
        Value::Bit(b) => Datum::U64(*b),
    }
}

fn column_bytes(col: &Column, value: Option<&Value>, changed: Option<&Value>) -> Vec<u8> {
    use prost::Message;
    let c = pb::Column {
        name: Some(col.name.clone()),
        tp: Some(vec![col.tp]),
        mysql_type: Some(col.type_name().to_string()),
        value: Some(datum_bytes(&datum_of(value.unwrap_or(&Value::Null)))),
        changed_value: changed.map(|v| datum_bytes(&datum_of(v))),
    };
    c.encode_to_vec()
}

fn event(table: &TableSchema, change: &RowChange) -> pb::Event {
    let (tp, row) = match change {
        // Insert: every column (an absent one, e.g. a virtual generated column, as NULL).
        RowChange::Insert(row) => (
            pb::EventType::Insert,
            table.columns.iter().enumerate().map(|(i, c)| column_bytes(c, row.get(i).and_then(Option::as_ref), None)).collect(),
        ),
        // Delete: the columns the row carries.
        RowChange::Delete(row) => (
            pb::EventType::Delete,
            table
                .columns
                .iter()
                .zip(row)
                .filter_map(|(c, v)| v.as_ref().map(|v| column_bytes(c, Some(v), None)))
                .collect(),
        ),
        // Update: the writable columns the new row carries; value = old, changed_value = new.
        RowChange::Update { old, new } => (
            pb::EventType::Update,
            table
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.generated)
                .filter_map(|(i, c)| {
                    let n = new.get(i)?.as_ref()?;
                    Some(column_bytes(c, old.get(i).and_then(Option::as_ref), Some(n)))
                })
                .collect(),
        ),
    };
    pb::Event {
        schema_name: Some(table.schema.clone()),
        table_name: Some(table.name.clone()),
        tp: Some(tp as i32),
        row,
    }
}

/// The `ddl_query` upstream writes: `` use `db`; <query>; ``, `<query>;` for CREATE DATABASE, and the
/// query unchanged when the DDL has no schema.
pub fn ddl_query(ddl: &Ddl) -> String {
    let head: String = ddl.query.trim_start().chars().take(24).collect::<String>().to_ascii_lowercase();
    let words: Vec<&str> = head.split_whitespace().collect();
    let create_db = words.len() >= 2 && words[0] == "create" && (words[1] == "database" || words[1] == "schema");
    if create_db {
        format!("{};", ddl.query)
    } else if ddl.schema.is_empty() {
        ddl.query.clone()
    } else {
        format!("use {}; {};", crate::txn::quote_ident(&ddl.schema), ddl.query)
    }
}

/// The `pb_binlog.Binlog` for `item`, or `None` when it carries nothing to write (fake binlogs,
/// transactions whose every change was filtered out).
pub fn to_pb(item: &Item) -> Option<pb::Binlog> {
    match &item.body {
        Body::Empty => None,
        Body::Ddl(ddl) => Some(pb::Binlog {
            tp: Some(pb::BinlogType::Ddl as i32),
            commit_ts: Some(item.commit_ts),
            dml_data: None,
            ddl_query: Some(ddl_query(ddl).into_bytes()),
        }),
        Body::Dml(tables) => {
            let events: Vec<pb::Event> =
                tables.iter().flat_map(|t| t.rows.iter().map(|r| event(&t.table, r))).collect();
            if events.is_empty() {
                return None;
            }
            Some(pb::Binlog {
                tp: Some(pb::BinlogType::Dml as i32),
                commit_ts: Some(item.commit_ts),
                dml_data: Some(pb::DmlData { events }),
                ddl_query: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn timestamp_text_reads_back_to_the_utc_value() {
        let t = MysqlTime {
            time: Time { year: 2021, month: 7, day: 9, hour: 23, minute: 59, second: 58, microsecond: 120_000 },
            tp: mysql_type::TIMESTAMP, fsp: 3,
        };
        let text = timestamp_to_local(&t).to_string();
        let back = timestamp_from_local_text(&text).unwrap();
        assert_eq!(back.time, t.time);
        assert_eq!((back.tp, back.fsp), (mysql_type::TIMESTAMP, 3));
        assert_eq!(timestamp_from_local_text("2021-07-09 23:59:58").unwrap().fsp, 0);
        assert_eq!(timestamp_from_local_text("0000-00-00 00:00:00"), None);
        assert_eq!(timestamp_from_local_text("not a time"), None);
    }

    #[test]
    fn datums_round_trip_and_match_go_bytes() {
        assert_eq!(datum_bytes(&Datum::I64(-1)), [8, 1]);
        assert_eq!(datum_bytes(&Datum::I64(300)), [8, 0xd8, 0x04]);
        assert_eq!(datum_bytes(&Datum::U64(300)), [9, 0xac, 0x02]);
        assert_eq!(datum_bytes(&Datum::Bytes(b"ab".to_vec())), [2, 4, b'a', b'b']);
        assert_eq!(datum_bytes(&Datum::F64(1.0)), [5, 0xbf, 0xf0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(datum_bytes(&Datum::Null), [0]);
        for d in [
            Datum::Null,
            Datum::I64(i64::MIN),
            Datum::I64(i64::MAX),
            Datum::U64(u64::MAX),
            Datum::F64(-2.5),
            Datum::F64(0.0),
            Datum::Bytes(vec![0; 200]),
        ] {
            assert_eq!(decode_datum(&datum_bytes(&d)).unwrap(), d);
        }
        // Fixed-width ints (flags 3 and 4), as other writers may use.
        assert_eq!(decode_datum(&[3, 0x80, 0, 0, 0, 0, 0, 0, 5]).unwrap(), Datum::I64(5));
        assert!(matches!(decode_datum(&[2, 10, b'a']), Err(DatumError::Codec(CodecError::Truncated { .. }))));
        assert!(matches!(decode_datum(&[8, 1, 0]), Err(DatumError::Trailing { extra: 1 })));
        assert!(matches!(decode_datum(&[7, 0x80, 0, 0, 0, 0, 0, 0, 5]), Err(DatumError::Unsupported { .. })));
        assert!(decode_datum(&[99]).is_err());
        assert!(decode_datum(&[]).is_err());
    }

    #[test]
    fn ddl_queries_get_upstream_prefix() {
        let d = |schema: &str, query: &str| Ddl {
            schema: schema.into(),
            table: String::new(),
            query: query.into(),
            job_id: 1,
            table_after: None,
        };
        assert_eq!(ddl_query(&d("db", "create table t (a int)")), "use `db`; create table t (a int);");
        assert_eq!(ddl_query(&d("db", "CREATE DATABASE db")), "CREATE DATABASE db;");
        assert_eq!(ddl_query(&d("", "drop table x.y")), "drop table x.y");
    }

    #[test]
    fn update_carries_old_then_new_and_skips_generated() {
        let table = Arc::new(TableSchema {
            schema: "s".into(),
            name: "t".into(),
            columns: vec![
                Column { name: "a".into(), tp: mysql_type::LONG, ..Default::default() },
                Column { name: "g".into(), tp: mysql_type::LONG, generated: true, ..Default::default() },
                Column { name: "b".into(), tp: mysql_type::VARCHAR, ..Default::default() },
            ],
            ..Default::default()
        });
        let item = Item {
            start_ts: 1,
            commit_ts: 2,
            schema_version: 3,
            body: Body::Dml(vec![crate::txn::TableChanges {
                table,
                rows: vec![RowChange::Update {
                    old: vec![Some(Value::Int(1)), Some(Value::Int(9)), Some(Value::Bytes(b"x".to_vec()))],
                    new: vec![Some(Value::Int(1)), Some(Value::Int(9)), None],
                }],
            }]),
        };
        let b = to_pb(&item).unwrap();
        let ev = &b.dml_data.unwrap().events[0];
        assert_eq!(ev.tp(), pb::EventType::Update);
        assert_eq!(ev.row.len(), 1, "generated and absent columns are left out");
        use prost::Message;
        let c = pb::Column::decode(ev.row[0].as_slice()).unwrap();
        assert_eq!((c.name(), c.value(), c.changed_value()), ("a", &[8u8, 2][..], &[8u8, 2][..]));
    }
}
