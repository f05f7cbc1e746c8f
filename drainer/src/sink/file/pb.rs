//! Translation of an [`Item`] into the file sink's `pb_binlog.Binlog` payload, byte for byte as
//! upstream's pb translator, and the datum codec subset its `value`/`changed_value` fields use.
//!
//! `value` is TiDB's `codec.EncodeValue` of the datum after upstream's `formatData`: text-like values
//! (time, decimal, JSON, TIME, strings, blobs) as `compactBytes`, enum/set/bit as `uvarint`, signed ints
//! as `varint`, unsigned as `uvarint`, floats with `floatFlag`, NULL as the nil flag.

use crate::proto::pb;
use crate::txn::{Body, Column, Ddl, Item, MysqlTime, RowChange, TableSchema, Value, format_duration, mysql_type};

/// Datum flags (`util/codec`) the file sink writes and Reparo reads.
pub mod flag {
    /// NULL.
    pub const NIL: u8 = 0;
    /// Zigzag-varint length + bytes.
    pub const COMPACT_BYTES: u8 = 2;
    /// 8 big-endian bytes of `uint64(v) ^ 1<<63`.
    pub const INT: u8 = 3;
    /// 8 big-endian bytes.
    pub const UINT: u8 = 4;
    /// Comparable float64 bits, 8 bytes big-endian.
    pub const FLOAT: u8 = 5;
    /// Zigzag varint.
    pub const VARINT: u8 = 8;
    /// LEB128 uvarint.
    pub const UVARINT: u8 = 9;
}

/// A datum as the file format carries it (after `formatData`).
#[derive(Debug, Clone, PartialEq)]
pub enum PbDatum {
    /// NULL.
    Null,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer (also enum index, set bits, bit value).
    Uint(u64),
    /// A float64.
    Float(f64),
    /// Bytes: strings, blobs, and the text of time, decimal, JSON and TIME values.
    Bytes(Vec<u8>),
}

/// A datum that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("bad datum: {0}")]
pub struct DatumError(pub String);

fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_varint(buf: &mut Vec<u8>, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

fn read_uvarint(buf: &[u8]) -> Result<(u64, usize), DatumError> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            break;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok((v, i + 1));
        }
    }
    Err(DatumError("truncated or overlong varint".into()))
}

impl PbDatum {
    /// Appends the `codec.EncodeValue` bytes.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            PbDatum::Null => buf.push(flag::NIL),
            PbDatum::Int(v) => {
                buf.push(flag::VARINT);
                put_varint(buf, *v);
            }
            PbDatum::Uint(v) => {
                buf.push(flag::UVARINT);
                put_uvarint(buf, *v);
            }
            PbDatum::Float(f) => {
                buf.push(flag::FLOAT);
                let mut u = f.to_bits();
                if *f >= 0.0 {
                    u |= 1 << 63;
                } else {
                    u = !u;
                }
                buf.extend_from_slice(&u.to_be_bytes());
            }
            PbDatum::Bytes(b) => {
                buf.push(flag::COMPACT_BYTES);
                put_varint(buf, b.len() as i64);
                buf.extend_from_slice(b);
            }
        }
    }

    /// Decodes one whole datum (`codec.DecodeOne` for the flags the file format uses); trailing bytes
    /// are an error.
    pub fn decode(buf: &[u8]) -> Result<PbDatum, DatumError> {
        let (&f, rest) = buf.split_first().ok_or_else(|| DatumError("empty value".into()))?;
        let fixed8 = |rest: &[u8]| -> Result<u64, DatumError> {
            let b: [u8; 8] = rest.try_into().map_err(|_| DatumError(format!("flag {f} wants 8 bytes, got {}", rest.len())))?;
            Ok(u64::from_be_bytes(b))
        };
        let whole = |n: usize| {
            if n == rest.len() { Ok(()) } else { Err(DatumError(format!("{} trailing bytes after flag {f}", rest.len() - n))) }
        };
        match f {
            flag::NIL => whole(0).map(|_| PbDatum::Null),
            flag::VARINT => {
                let (u, n) = read_uvarint(rest)?;
                whole(n)?;
                Ok(PbDatum::Int(((u >> 1) as i64) ^ -((u & 1) as i64)))
            }
            flag::UVARINT => {
                let (u, n) = read_uvarint(rest)?;
                whole(n)?;
                Ok(PbDatum::Uint(u))
            }
            flag::INT => Ok(PbDatum::Int((fixed8(rest)? ^ (1 << 63)) as i64)),
            flag::UINT => Ok(PbDatum::Uint(fixed8(rest)?)),
            flag::FLOAT => {
                let mut u = fixed8(rest)?;
                if u & (1 << 63) != 0 {
                    u &= !(1 << 63);
                } else {
                    u = !u;
                }
                Ok(PbDatum::Float(f64::from_bits(u)))
            }
            flag::COMPACT_BYTES => {
                let (z, n) = read_uvarint(rest)?;
                let len = ((z >> 1) as i64) ^ -((z & 1) as i64);
                let len = usize::try_from(len).map_err(|_| DatumError(format!("negative length {len}")))?;
                let body = &rest[n..];
                if body.len() != len {
                    return Err(DatumError(format!("compact bytes claim {len} bytes, {} present", body.len())));
                }
                Ok(PbDatum::Bytes(body.to_vec()))
            }
            other => Err(DatumError(format!("unsupported datum flag {other}"))),
        }
    }

    /// The encoded bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// A TIMESTAMP value (kept in UTC by the translator) in the drainer's local time zone, as upstream's
/// Kafka and pb translators print it; other values and the zero timestamp are returned unchanged.
pub fn timestamp_to_local(t: &MysqlTime) -> MysqlTime {
    use chrono::{Datelike, TimeZone, Timelike};
    if t.tp != mysql_type::TIMESTAMP || t.is_zero() {
        return *t;
    }
    let Some(naive) = chrono::NaiveDate::from_ymd_opt(i32::from(t.year), u32::from(t.month), u32::from(t.day))
        .and_then(|d| d.and_hms_micro_opt(u32::from(t.hour), u32::from(t.minute), u32::from(t.second), t.micro))
    else {
        return *t;
    };
    let local = chrono::Local.from_utc_datetime(&naive);
    MysqlTime {
        year: local.year() as u16,
        month: local.month() as u8,
        day: local.day() as u8,
        hour: local.hour() as u8,
        minute: local.minute() as u8,
        second: local.second() as u8,
        micro: t.micro,
        ..*t
    }
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
    Some(MysqlTime {
        year: u16::try_from(utc.year()).ok()?,
        month: utc.month() as u8,
        day: utc.day() as u8,
        hour: utc.hour() as u8,
        minute: utc.minute() as u8,
        second: utc.second() as u8,
        micro: utc.nanosecond() / 1000,
        tp: mysql_type::TIMESTAMP,
        fsp,
    })
}

/// A value as upstream's `formatData` leaves it for the pb translator.
pub fn datum_of(v: &Value) -> PbDatum {
    match v {
        Value::Null => PbDatum::Null,
        Value::Int(i) => PbDatum::Int(*i),
        Value::Uint(u) => PbDatum::Uint(*u),
        Value::Float(f) => PbDatum::Float(*f),
        Value::Decimal(s) | Value::Json(s) => PbDatum::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => PbDatum::Bytes(b.clone()),
        Value::Time(t) => PbDatum::Bytes(timestamp_to_local(t).to_string().into_bytes()),
        Value::Duration { nanos, fsp } => PbDatum::Bytes(format_duration(*nanos, *fsp).into_bytes()),
        Value::Enum { index, .. } => PbDatum::Uint(*index),
        Value::Set { bits, .. } => PbDatum::Uint(*bits),
        Value::Bit(b) => PbDatum::Uint(*b),
    }
}

fn column_bytes(col: &Column, value: Option<&Value>, changed: Option<&Value>) -> Vec<u8> {
    use prost::Message;
    let c = pb::Column {
        name: Some(col.name.clone()),
        tp: Some(vec![col.tp]),
        mysql_type: Some(col.type_name().to_string()),
        value: Some(datum_of(value.unwrap_or(&Value::Null)).to_bytes()),
        changed_value: changed.map(|v| datum_of(v).to_bytes()),
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
        let t = MysqlTime { year: 2021, month: 7, day: 9, hour: 23, minute: 59, second: 58, micro: 120_000, tp: mysql_type::TIMESTAMP, fsp: 3 };
        let text = timestamp_to_local(&t).to_string();
        let back = timestamp_from_local_text(&text).unwrap();
        assert_eq!((back.year, back.month, back.day, back.hour, back.minute, back.second, back.micro), (2021, 7, 9, 23, 59, 58, 120_000));
        assert_eq!((back.tp, back.fsp), (mysql_type::TIMESTAMP, 3));
        assert_eq!(timestamp_from_local_text("2021-07-09 23:59:58").unwrap().fsp, 0);
        assert_eq!(timestamp_from_local_text("0000-00-00 00:00:00"), None);
        assert_eq!(timestamp_from_local_text("not a time"), None);
    }

    #[test]
    fn datums_round_trip_and_match_go_bytes() {
        assert_eq!(PbDatum::Int(-1).to_bytes(), [8, 1]);
        assert_eq!(PbDatum::Int(300).to_bytes(), [8, 0xd8, 0x04]);
        assert_eq!(PbDatum::Uint(300).to_bytes(), [9, 0xac, 0x02]);
        assert_eq!(PbDatum::Bytes(b"ab".to_vec()).to_bytes(), [2, 4, b'a', b'b']);
        assert_eq!(PbDatum::Float(1.0).to_bytes(), [5, 0xbf, 0xf0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(PbDatum::Null.to_bytes(), [0]);
        for d in [
            PbDatum::Null,
            PbDatum::Int(i64::MIN),
            PbDatum::Int(i64::MAX),
            PbDatum::Uint(u64::MAX),
            PbDatum::Float(-2.5),
            PbDatum::Float(0.0),
            PbDatum::Bytes(vec![0; 200]),
        ] {
            assert_eq!(PbDatum::decode(&d.to_bytes()).unwrap(), d);
        }
        assert!(PbDatum::decode(&[2, 10, b'a']).unwrap_err().to_string().contains("claim 5 bytes"));
        assert!(PbDatum::decode(&[99]).is_err());
        assert!(PbDatum::decode(&[]).is_err());
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
