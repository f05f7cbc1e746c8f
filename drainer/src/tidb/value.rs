//! Column values: [`unflatten`] turns a row [`Datum`] into a [`Value`] with the column's
//! [`FieldType`]; [`flatten`] is the reverse (`tablecodec.flatten`). [`Value::from_text`] parses the
//! text MySQL prints (and TiDB stores as defaults); [`Value::sql_text`] prints it back.
//!
//! | column | datum | value |
//! |---|---|---|
//! | signed ints | I64 | Int |
//! | unsigned ints | U64 (I64 for an int handle, reinterpreted) | Uint |
//! | YEAR | I64 | Year |
//! | FLOAT / DOUBLE | F64 | Float32 / Float64 |
//! | DECIMAL | Decimal | Decimal |
//! | strings, blobs | Bytes | Bytes |
//! | DATE / DATETIME / TIMESTAMP | U64 packed (TIMESTAMP in UTC) | Date / DateTime / Timestamp |
//! | TIME | I64 nanoseconds | Duration |
//! | ENUM / SET / BIT | U64 | Enum / Set / Bit |
//! | JSON | Json | Json |

use base64::Engine as _;

use super::codec::{CodecError, Datum};
use super::decimal::Decimal;
use super::json::Json;
use super::model::{ColumnInfo, FieldType, tp};
use super::time::{Duration, Time};

/// A typed column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    Uint(u64),
    /// FLOAT.
    Float32(f32),
    /// DOUBLE.
    Float64(f64),
    /// DECIMAL with its (precision, frac).
    Decimal(Decimal),
    /// CHAR/VARCHAR/TEXT/BLOB/BINARY bytes (the column's charset).
    Bytes(Vec<u8>),
    /// DATE.
    Date(Time),
    /// DATETIME with its fsp.
    DateTime(Time, u8),
    /// TIMESTAMP in UTC with its fsp.
    Timestamp(Time, u8),
    /// TIME.
    Duration(Duration),
    /// YEAR (0 for the zero year).
    Year(i64),
    /// ENUM: 1-based index (0 = the empty value) and its element.
    Enum(u64, String),
    /// SET: bitmask and its comma-joined elements.
    Set(u64, String),
    /// BIT: big-endian bytes, `(flen+7)/8` of them.
    Bit(Vec<u8>),
    /// JSON.
    Json(Json),
}

fn fsp_of(ft: &FieldType) -> u8 {
    ft.decimal.clamp(0, 6) as u8
}

fn mismatch(ft: &FieldType, d: &Datum) -> CodecError {
    CodecError::TypeMismatch { tp: ft.tp, datum: d.kind().to_owned() }
}

/// Whether `tp` is an integer type (not YEAR, not BIT).
pub fn is_integer_type(t: u8) -> bool {
    matches!(t, tp::TINY | tp::SHORT | tp::INT24 | tp::LONG | tp::LONGLONG)
}

/// Whether `tp` is a string or blob type.
pub fn is_string_type(t: u8) -> bool {
    matches!(
        t,
        tp::VARCHAR | tp::VAR_STRING | tp::STRING | tp::TINY_BLOB | tp::MEDIUM_BLOB | tp::LONG_BLOB | tp::BLOB
    )
}

/// The column value of a row datum (`tablecodec.Unflatten`, plus drainer's unsigned handle fix-up).
/// TIMESTAMP stays in UTC.
pub fn unflatten(d: &Datum, ft: &FieldType) -> Result<Value, CodecError> {
    if *d == Datum::Null {
        return Ok(Value::Null);
    }
    let int_bits = || match *d {
        Datum::I64(v) => Some(v as u64),
        Datum::U64(v) => Some(v),
        _ => None,
    };
    let t = ft.tp;
    Ok(match t {
        _ if is_integer_type(t) => {
            let bits = int_bits().ok_or_else(|| mismatch(ft, d))?;
            if ft.is_unsigned() { Value::Uint(bits) } else { Value::Int(bits as i64) }
        }
        tp::YEAR => Value::Year(int_bits().ok_or_else(|| mismatch(ft, d))? as i64),
        tp::FLOAT | tp::DOUBLE => {
            let f = match *d {
                Datum::F64(f) => f,
                _ => return Err(mismatch(ft, d)),
            };
            if t == tp::FLOAT { Value::Float32(f as f32) } else { Value::Float64(f) }
        }
        tp::NEWDECIMAL | tp::DECIMAL => match d {
            Datum::Decimal(x) => Value::Decimal(x.clone()),
            _ => return Err(mismatch(ft, d)),
        },
        tp::DATE | tp::NEWDATE | tp::DATETIME | tp::TIMESTAMP => {
            let time = Time::from_packed(int_bits().ok_or_else(|| mismatch(ft, d))?)?;
            match t {
                tp::DATETIME => Value::DateTime(time, fsp_of(ft)),
                tp::TIMESTAMP => Value::Timestamp(time, fsp_of(ft)),
                _ => Value::Date(time),
            }
        }
        tp::DURATION => match *d {
            Datum::I64(n) | Datum::Duration(n) => Value::Duration(Duration { nanos: n, fsp: fsp_of(ft) }),
            _ => return Err(mismatch(ft, d)),
        },
        tp::ENUM => {
            let idx = int_bits().ok_or_else(|| mismatch(ft, d))?;
            let name = usize::try_from(idx).ok().and_then(|i| i.checked_sub(1)).and_then(|i| ft.elems().get(i));
            match name {
                Some(n) => Value::Enum(idx, n.clone()),
                // An index outside the elements is the empty enum, as TiDB's ParseEnumValue fallback.
                None => Value::Enum(0, String::new()),
            }
        }
        tp::SET => {
            let bits = int_bits().ok_or_else(|| mismatch(ft, d))?;
            Value::Set(bits, set_names(bits, ft.elems())?)
        }
        tp::BIT => match d {
            Datum::Bytes(b) => Value::Bit(b.clone()),
            _ => Value::Bit(bit_bytes(int_bits().ok_or_else(|| mismatch(ft, d))?, ft.flen)),
        },
        tp::JSON => match d {
            Datum::Json(j) => Value::Json(j.clone()),
            _ => return Err(mismatch(ft, d)),
        },
        _ => match d {
            Datum::Bytes(b) => Value::Bytes(b.clone()),
            _ => return Err(mismatch(ft, d)),
        },
    })
}

/// The row datum of a column value (`tablecodec.flatten`). TIMESTAMP must already be UTC.
pub fn flatten(v: &Value) -> Datum {
    match v {
        Value::Null => Datum::Null,
        Value::Int(i) | Value::Year(i) => Datum::I64(*i),
        Value::Uint(u) | Value::Enum(u, _) | Value::Set(u, _) => Datum::U64(*u),
        Value::Float32(f) => Datum::F64(f64::from(*f)),
        Value::Float64(f) => Datum::F64(*f),
        Value::Decimal(d) => Datum::Decimal(d.clone()),
        Value::Bytes(b) => Datum::Bytes(b.clone()),
        Value::Date(t) | Value::DateTime(t, _) | Value::Timestamp(t, _) => Datum::U64(t.to_packed()),
        Value::Duration(d) => Datum::I64(d.nanos),
        Value::Bit(b) => Datum::U64(b.iter().rev().take(8).rev().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))),
        Value::Json(j) => Datum::Json(j.clone()),
    }
}

fn bit_bytes(v: u64, flen: i64) -> Vec<u8> {
    let n = if flen <= 0 { 8 } else { (((flen + 7) / 8) as usize).min(8) };
    v.to_be_bytes()[8 - n..].to_vec()
}

fn set_names(bits: u64, elems: &[String]) -> Result<String, CodecError> {
    if elems.len() < 64 && bits >> elems.len() != 0 {
        return Err(CodecError::BadValue {
            what: format!("set value {bits:#x}"),
            reason: format!("bits beyond the {} elements", elems.len()),
        });
    }
    let names: Vec<&str> =
        elems.iter().enumerate().filter(|(i, _)| bits & (1u64 << i) != 0).map(|(_, e)| e.as_str()).collect();
    Ok(names.join(","))
}

impl Value {
    /// Parses the text MySQL prints for a value of type `ft` (also TiDB's default strings).
    /// `None` text is NULL.
    pub fn from_text(text: Option<&str>, ft: &FieldType) -> Result<Value, CodecError> {
        let Some(s) = text else { return Ok(Value::Null) };
        let bad = |reason: &str| CodecError::BadValue { what: format!("{s:?} for type {}", ft.tp), reason: reason.into() };
        let t = ft.tp;
        Ok(match t {
            _ if is_integer_type(t) => {
                if ft.is_unsigned() {
                    Value::Uint(s.trim().parse().map_err(|_| bad("not an unsigned integer"))?)
                } else {
                    Value::Int(s.trim().parse().map_err(|_| bad("not an integer"))?)
                }
            }
            tp::YEAR => Value::Year(s.trim().parse().map_err(|_| bad("not a year"))?),
            tp::FLOAT => Value::Float32(s.trim().parse().map_err(|_| bad("not a float"))?),
            tp::DOUBLE => Value::Float64(s.trim().parse().map_err(|_| bad("not a double"))?),
            tp::NEWDECIMAL | tp::DECIMAL => {
                if ft.flen > 0 && ft.decimal >= 0 {
                    Value::Decimal(Decimal::parse(s, ft.flen as u8, ft.decimal as u8)?)
                } else {
                    Value::Decimal(Decimal::from_text(s)?)
                }
            }
            tp::DATE | tp::NEWDATE => Value::Date(Time::parse(s)?),
            tp::DATETIME => Value::DateTime(Time::parse(s)?, fsp_of(ft)),
            tp::TIMESTAMP => Value::Timestamp(Time::parse(s)?, fsp_of(ft)),
            tp::DURATION => Value::Duration(Duration::parse(s, fsp_of(ft))?),
            tp::ENUM => {
                if s.is_empty() {
                    Value::Enum(0, String::new())
                } else {
                    let i = ft.elems().iter().position(|e| e.eq_ignore_ascii_case(s)).ok_or_else(|| bad("not an element"))?;
                    Value::Enum(i as u64 + 1, ft.elems()[i].clone())
                }
            }
            tp::SET => {
                let mut bits = 0u64;
                for part in s.split(',').filter(|p| !p.is_empty()) {
                    let i = ft.elems().iter().position(|e| e.eq_ignore_ascii_case(part)).ok_or_else(|| bad("not an element"))?;
                    bits |= 1 << i.min(63);
                }
                Value::Set(bits, set_names(bits, ft.elems())?)
            }
            tp::BIT => {
                let n = if ft.flen <= 0 { 8 } else { (((ft.flen + 7) / 8) as usize).min(8) };
                let raw = s.as_bytes();
                let mut b = vec![0u8; n.saturating_sub(raw.len())];
                b.extend_from_slice(&raw[raw.len().saturating_sub(n)..]);
                Value::Bit(b)
            }
            tp::JSON => Value::Json(Json::parse_text(s)?),
            _ => Value::Bytes(s.as_bytes().to_vec()),
        })
    }

    /// The value's text as MySQL prints it (`None` for NULL; bytes as they are, lossily UTF-8).
    pub fn sql_text(&self) -> Option<String> {
        Some(match self {
            Value::Null => return None,
            Value::Int(i) | Value::Year(i) => i.to_string(),
            Value::Uint(u) => u.to_string(),
            Value::Float32(f) => f.to_string(),
            Value::Float64(f) => f.to_string(),
            Value::Decimal(d) => d.to_string(),
            Value::Bytes(b) | Value::Bit(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Date(t) => t.date_string(),
            Value::DateTime(t, fsp) | Value::Timestamp(t, fsp) => t.datetime_string(i32::from(*fsp)),
            Value::Duration(d) => d.to_string(),
            Value::Enum(_, name) => name.clone(),
            Value::Set(_, names) => names.clone(),
            Value::Json(j) => j.to_text(),
        })
    }

    /// The zero value of a NOT NULL column (`table.GetZeroValue`): 0, empty, zero time, the first ENUM
    /// element.
    pub fn zero(ft: &FieldType) -> Value {
        match ft.tp {
            t if is_integer_type(t) => {
                if ft.is_unsigned() {
                    Value::Uint(0)
                } else {
                    Value::Int(0)
                }
            }
            tp::YEAR => Value::Year(0),
            tp::FLOAT => Value::Float32(0.0),
            tp::DOUBLE => Value::Float64(0.0),
            tp::NEWDECIMAL | tp::DECIMAL => Value::Decimal(Decimal::zero(ft.flen, ft.decimal)),
            tp::DATE | tp::NEWDATE => Value::Date(Time::default()),
            tp::DATETIME => Value::DateTime(Time::default(), fsp_of(ft)),
            tp::TIMESTAMP => Value::Timestamp(Time::default(), fsp_of(ft)),
            tp::DURATION => Value::Duration(Duration { nanos: 0, fsp: fsp_of(ft) }),
            tp::ENUM => match ft.elems().first() {
                Some(e) => Value::Enum(1, e.clone()),
                None => Value::Enum(0, String::new()),
            },
            tp::SET => Value::Set(0, String::new()),
            tp::BIT => Value::Bit(bit_bytes(0, ft.flen)),
            tp::JSON => Value::Json(Json::null()),
            _ => Value::Bytes(Vec::new()),
        }
    }

    /// What a row that lacks column `col` means for it (drainer `getDefaultOrZeroValue`): its
    /// `origin_default` (BIT from `origin_default_bit`), else NULL if nullable, else the zero value.
    pub fn default_for_missing(col: &ColumnInfo) -> Result<Value, CodecError> {
        let ft = &col.field_type;
        if ft.tp == tp::BIT
            && let Some(b64) = &col.origin_default_bit
        {
            let b = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| CodecError::BadValue {
                what: format!("origin_default_bit of column {}", col.name.o),
                reason: e.to_string(),
            })?;
            return Ok(Value::Bit(b));
        }
        match &col.origin_default {
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => return Value::from_text(Some(s), ft),
            other => return Value::from_text(Some(&other.to_string()), ft),
        }
        if ft.is_not_null() { Ok(Value::zero(ft)) } else { Ok(Value::Null) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tidb::model::flag;

    fn ft(t: u8, f: u64, flen: i64, dec: i64) -> FieldType {
        FieldType::new(t, f, flen, dec)
    }

    fn round(v: Value, ft: &FieldType) {
        let d = flatten(&v);
        assert_eq!(unflatten(&d, ft).unwrap(), v, "{ft:?}");
        let text = v.sql_text();
        assert_eq!(Value::from_text(text.as_deref(), ft).unwrap(), v, "text {text:?}");
    }

    #[test]
    fn every_type_round_trips_through_datum_and_text() {
        round(Value::Int(-5), &ft(tp::LONG, 0, 11, 0));
        round(Value::Uint(u64::MAX), &ft(tp::LONGLONG, flag::UNSIGNED, 20, 0));
        round(Value::Year(2024), &ft(tp::YEAR, 0, 4, 0));
        round(Value::Float32(1.5), &ft(tp::FLOAT, 0, 12, -1));
        round(Value::Float64(-2.25), &ft(tp::DOUBLE, 0, 22, -1));
        round(Value::Decimal(Decimal::parse("-3.50", 10, 2).unwrap()), &ft(tp::NEWDECIMAL, 0, 10, 2));
        round(Value::Bytes(b"hi".to_vec()), &ft(tp::VARCHAR, 0, 10, 0));
        let t = Time { year: 2020, month: 2, day: 29, hour: 23, minute: 59, second: 58, microsecond: 123000 };
        round(Value::Date(Time { year: 2020, month: 2, day: 29, ..Time::default() }), &ft(tp::DATE, 0, 10, 0));
        round(Value::DateTime(t, 3), &ft(tp::DATETIME, 0, 19, 3));
        round(Value::Timestamp(Time { microsecond: 0, ..t }, 0), &ft(tp::TIMESTAMP, 0, 19, 0));
        round(Value::Duration(Duration { nanos: -1_000_000_000, fsp: 0 }), &ft(tp::DURATION, 0, 10, 0));
        let mut e = ft(tp::ENUM, 0, -1, 0);
        e.elems = Some(vec!["a".into(), "b".into()]);
        round(Value::Enum(2, "b".into()), &e);
        let mut s = ft(tp::SET, 0, -1, 0);
        s.elems = Some(vec!["x".into(), "y".into(), "z".into()]);
        round(Value::Set(5, "x,z".into()), &s);
        round(Value::Bit(vec![0x01, 0x02]), &ft(tp::BIT, 0, 10, 0));
        round(Value::Json(Json::parse_text(r#"{"k": [1, "v"]}"#).unwrap()), &ft(tp::JSON, 0, 0, 0));
        round(Value::Null, &ft(tp::LONG, 0, 11, 0));
    }

    #[test]
    fn flatten_gives_the_spec_datum_kinds() {
        let t = Time { year: 2024, month: 1, day: 2, hour: 3, minute: 4, second: 5, microsecond: 6 };
        assert_eq!(flatten(&Value::DateTime(t, 6)), Datum::U64(0x19B2443105000006));
        assert_eq!(flatten(&Value::Duration(Duration { nanos: 7, fsp: 0 })), Datum::I64(7));
        assert_eq!(flatten(&Value::Enum(2, "b".into())), Datum::U64(2));
        assert_eq!(flatten(&Value::Bit(vec![1, 0])), Datum::U64(256));
        assert_eq!(flatten(&Value::Float32(0.5)), Datum::F64(0.5));
        assert_eq!(flatten(&Value::Year(1999)), Datum::I64(1999));
    }

    #[test]
    fn unsigned_handle_is_reinterpreted() {
        let f = ft(tp::LONGLONG, flag::UNSIGNED | flag::PRI_KEY, 20, 0);
        assert_eq!(unflatten(&Datum::I64(-1), &f).unwrap(), Value::Uint(u64::MAX));
    }

    #[test]
    fn bad_enum_is_empty_and_bad_set_is_an_error() {
        let mut e = ft(tp::ENUM, 0, -1, 0);
        e.elems = Some(vec!["a".into()]);
        assert_eq!(unflatten(&Datum::U64(9), &e).unwrap(), Value::Enum(0, String::new()));
        let mut s = ft(tp::SET, 0, -1, 0);
        s.elems = Some(vec!["a".into()]);
        assert!(unflatten(&Datum::U64(2), &s).is_err());
    }

    #[test]
    fn mismatched_datums_name_the_type() {
        let e = unflatten(&Datum::Bytes(vec![]), &ft(tp::LONG, 0, 11, 0)).unwrap_err();
        assert_eq!(e, CodecError::TypeMismatch { tp: tp::LONG, datum: "bytes".into() });
        assert!(unflatten(&Datum::U64(u64::MAX), &ft(tp::DATETIME, 0, 19, 0)).is_err());
    }

    #[test]
    fn missing_columns_take_origin_default_null_or_zero() {
        let mut c = ColumnInfo { field_type: ft(tp::LONG, flag::NOT_NULL, 11, 0), ..ColumnInfo::default() };
        assert_eq!(Value::default_for_missing(&c).unwrap(), Value::Int(0));
        c.origin_default = serde_json::Value::String("7".into());
        assert_eq!(Value::default_for_missing(&c).unwrap(), Value::Int(7));
        let nullable = ColumnInfo { field_type: ft(tp::VARCHAR, 0, 5, 0), ..ColumnInfo::default() };
        assert_eq!(Value::default_for_missing(&nullable).unwrap(), Value::Null);
        let mut e = ft(tp::ENUM, flag::NOT_NULL, -1, 0);
        e.elems = Some(vec!["p".into(), "q".into()]);
        let ec = ColumnInfo { field_type: e, ..ColumnInfo::default() };
        assert_eq!(Value::default_for_missing(&ec).unwrap(), Value::Enum(1, "p".into()));
        let bit = ColumnInfo {
            field_type: ft(tp::BIT, 0, 3, 0),
            origin_default: serde_json::Value::String("\u{5}".into()),
            origin_default_bit: Some("BQ==".into()),
            ..ColumnInfo::default()
        };
        assert_eq!(Value::default_for_missing(&bit).unwrap(), Value::Bit(vec![5]));
    }
}
