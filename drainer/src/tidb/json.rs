//! TiDB binary JSON (not MySQL's): a type code byte and a little-endian value.
//!
//! Format: Object/Array `u32 count, u32 totalSize` then `count` key entries (object only:
//! `u32 keyOff, u16 keyLen`), `count` value entries (`u8 type, u32 offsetOrInlinedLiteral`), keys,
//! values; offsets are relative to the container's first byte and object keys are sorted bytewise.
//! Literal 1 byte (0 null, 1 true, 2 false); Int64/Uint64/Float64 8 bytes; String `uvarint len` +
//! UTF-8; Opaque `u8 mysqlType, uvarint len, bytes`; Date/Datetime/Timestamp 8 bytes of packed time;
//! Duration `i64 nanos, u32 fsp`.

use base64::Engine as _;

use super::ground::{CodecError, put_uvarint, read_uvarint};
use super::time::{Duration, Time};

/// Type code of an object.
pub const OBJECT: u8 = 0x01;
/// Type code of an array.
pub const ARRAY: u8 = 0x03;
/// Type code of a literal (null, true, false).
pub const LITERAL: u8 = 0x04;
/// Type code of an int64.
pub const INT64: u8 = 0x09;
/// Type code of a uint64.
pub const UINT64: u8 = 0x0a;
/// Type code of a float64.
pub const FLOAT64: u8 = 0x0b;
/// Type code of a string.
pub const STRING: u8 = 0x0c;
/// Type code of an opaque value.
pub const OPAQUE: u8 = 0x0d;
/// Type code of a date.
pub const DATE: u8 = 0x0e;
/// Type code of a datetime.
pub const DATETIME: u8 = 0x0f;
/// Type code of a timestamp.
pub const TIMESTAMP: u8 = 0x10;
/// Type code of a duration.
pub const DURATION: u8 = 0x11;

const LITERAL_NULL: u8 = 0;
const LITERAL_TRUE: u8 = 1;
const LITERAL_FALSE: u8 = 2;
const HEADER: usize = 8;
const KEY_ENTRY: usize = 6;
const VALUE_ENTRY: usize = 5;
/// Deepest nesting accepted when decoding (TiDB's limit is 100).
const MAX_DEPTH: usize = 100;

/// A validated TiDB binary JSON value: its type code and value bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Json {
    type_code: u8,
    value: Vec<u8>,
}

/// A parsed JSON tree, the common form between binary, `serde_json` and text.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Vec<u8>),
    Opaque(u8, Vec<u8>),
    Time(u8, u64),
    Duration(i64, u32),
    Array(Vec<Node>),
    Object(Vec<(Vec<u8>, Node)>),
}

impl Json {
    /// Validates `value` as binary JSON of `type_code`; `offset` is where the type code sits, for errors.
    pub fn from_raw(type_code: u8, value: Vec<u8>, offset: usize) -> Result<Json, CodecError> {
        let mut with_code = Vec::with_capacity(value.len() + 1);
        with_code.push(type_code);
        with_code.extend_from_slice(&value);
        let used = peek_len(&with_code, offset)?;
        if used != with_code.len() {
            return Err(bad(offset + used, format!("{} bytes after the value", with_code.len() - used)));
        }
        parse(type_code, &value, offset + 1, 0, &mut budget(&value))?;
        Ok(Json { type_code, value })
    }

    /// The JSON literal `null`.
    pub fn null() -> Json {
        Json { type_code: LITERAL, value: vec![LITERAL_NULL] }
    }

    /// The type code byte.
    pub fn type_code(&self) -> u8 {
        self.type_code
    }

    /// The value bytes after the type code.
    pub fn value_bytes(&self) -> &[u8] {
        &self.value
    }

    /// Encodes a `serde_json` value (integers that fit i64 become Int64, other integers Uint64).
    pub fn from_serde(v: &serde_json::Value) -> Result<Json, CodecError> {
        let node = from_serde(v)?;
        let mut value = Vec::new();
        let type_code = encode(&node, &mut value)?;
        Ok(Json { type_code, value })
    }

    /// Parses JSON text.
    pub fn parse_text(text: &str) -> Result<Json, CodecError> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| CodecError::BadValue { what: "json text".into(), reason: e.to_string() })?;
        Json::from_serde(&v)
    }

    /// The value as `serde_json` (opaque, date and time values become their text strings).
    pub fn to_serde(&self) -> serde_json::Value {
        match parse(self.type_code, &self.value, 0, 0, &mut budget(&self.value)) {
            Ok(n) => to_serde(&n),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// The text TiDB prints for it (`BinaryJSON.MarshalJSON`): `", "` between elements, `": "` after
    /// keys, floats without exponent get `.0`, `<`, `>`, `&` escaped as `\u003c`...
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let Ok(n) = parse(self.type_code, &self.value, 0, 0, &mut budget(&self.value)) {
            write_text(&n, &mut s);
        }
        s
    }
}

fn bad(offset: usize, reason: impl Into<String>) -> CodecError {
    CodecError::BadJson { offset, reason: reason.into() }
}

/// Bytes taken by a binary JSON value, type code included (`PeekBytesAsJSON`); `buf` starts at the
/// type code, `offset` is its position for errors.
pub(crate) fn peek_len(buf: &[u8], offset: usize) -> Result<usize, CodecError> {
    let Some(&tc) = buf.first() else {
        return Err(CodecError::Truncated { flag: super::codec::JSON_FLAG, offset, need: 1, have: 0 });
    };
    let v = &buf[1..];
    let need = |n: usize| -> Result<usize, CodecError> {
        if v.len() < n {
            Err(CodecError::Truncated { flag: super::codec::JSON_FLAG, offset: offset + 1, need: n, have: v.len() })
        } else {
            Ok(1 + n)
        }
    };
    match tc {
        OBJECT | ARRAY => {
            need(HEADER)?;
            let total = u32_le(v, 4) as usize;
            need(total)
        }
        LITERAL => need(1),
        INT64 | UINT64 | FLOAT64 | DATE | DATETIME | TIMESTAMP => need(8),
        DURATION => need(12),
        STRING => {
            let (len, n) = read_uvarint(v).ok_or_else(|| bad(offset + 1, "bad string length"))?;
            need(n.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(usize::MAX - 1))
        }
        OPAQUE => {
            let rest = v.get(1..).ok_or_else(|| bad(offset + 1, "opaque truncated"))?;
            let (len, n) = read_uvarint(rest).ok_or_else(|| bad(offset + 2, "bad opaque length"))?;
            need((1 + n).saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(usize::MAX - 1))
        }
        _ => Err(bad(offset, format!("unknown type code {tc:#04x}"))),
    }
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn fixed<'a>(v: &'a [u8], n: usize, base: usize, what: &str) -> Result<&'a [u8], CodecError> {
    v.get(..n).ok_or_else(|| bad(base, format!("{what} needs {n} bytes, {} left", v.len())))
}

/// Parses value bytes `v` of type `tc`; `base` is the offset of `v[0]` for errors.
fn parse(tc: u8, v: &[u8], base: usize, depth: usize, budget: &mut usize) -> Result<Node, CodecError> {
    if depth > MAX_DEPTH {
        return Err(bad(base, "nested too deeply"));
    }
    if *budget == 0 {
        return Err(bad(base, "values overlap"));
    }
    *budget -= 1;
    Ok(match tc {
        LITERAL => match fixed(v, 1, base, "literal")?[0] {
            LITERAL_NULL => Node::Null,
            LITERAL_TRUE => Node::Bool(true),
            LITERAL_FALSE => Node::Bool(false),
            x => return Err(bad(base, format!("unknown literal {x:#04x}"))),
        },
        INT64 => Node::I64(u64_le(fixed(v, 8, base, "int64")?, 0) as i64),
        UINT64 => Node::U64(u64_le(fixed(v, 8, base, "uint64")?, 0)),
        FLOAT64 => Node::F64(f64::from_bits(u64_le(fixed(v, 8, base, "float64")?, 0))),
        DATE | DATETIME | TIMESTAMP => {
            let p = u64_le(fixed(v, 8, base, "time")?, 0);
            Time::from_packed(p).map_err(|e| bad(base, e.to_string()))?;
            Node::Time(tc, p)
        }
        DURATION => {
            let b = fixed(v, 12, base, "duration")?;
            Node::Duration(u64_le(b, 0) as i64, u32_le(b, 8))
        }
        STRING => {
            let (len, n) = read_uvarint(v).ok_or_else(|| bad(base, "bad string length"))?;
            let s = usize::try_from(len).ok().and_then(|l| v.get(n..n.checked_add(l)?));
            let s = s.ok_or_else(|| bad(base, format!("string of {len} bytes truncated")))?;
            Node::Str(s.to_vec())
        }
        OPAQUE => {
            let t = fixed(v, 1, base, "opaque")?[0];
            let (len, n) = read_uvarint(&v[1..]).ok_or_else(|| bad(base + 1, "bad opaque length"))?;
            let s = usize::try_from(len).ok().and_then(|l| v.get(1 + n..(1 + n).checked_add(l)?));
            let s = s.ok_or_else(|| bad(base, format!("opaque of {len} bytes truncated")))?;
            Node::Opaque(t, s.to_vec())
        }
        OBJECT | ARRAY => parse_container(tc, v, base, depth, budget)?,
        _ => return Err(bad(base.saturating_sub(1), format!("unknown type code {tc:#04x}"))),
    })
}

fn parse_container(tc: u8, v: &[u8], base: usize, depth: usize, budget: &mut usize) -> Result<Node, CodecError> {
    fixed(v, HEADER, base, "container header")?;
    let count = u32_le(v, 0) as usize;
    let total = u32_le(v, 4) as usize;
    if total > v.len() {
        return Err(bad(base + 4, format!("size {total} beyond the {} bytes there", v.len())));
    }
    let v = &v[..total];
    let is_obj = tc == OBJECT;
    let entries = if is_obj { KEY_ENTRY + VALUE_ENTRY } else { VALUE_ENTRY };
    let entries_end = count.checked_mul(entries).and_then(|n| n.checked_add(HEADER));
    if entries_end.is_none_or(|e| e > total) {
        return Err(bad(base, format!("{count} entries do not fit in {total} bytes")));
    }
    let val_entries = HEADER + if is_obj { count * KEY_ENTRY } else { 0 };
    let mut vals = Vec::with_capacity(count);
    for i in 0..count {
        let e = val_entries + i * VALUE_ENTRY;
        let vt = v[e];
        let field = u32_le(v, e + 1) as usize;
        let node = if vt == LITERAL {
            parse(LITERAL, &v[e + 1..e + 2], base + e + 1, depth + 1, budget)?
        } else {
            let child = v.get(field..).filter(|_| field >= HEADER).ok_or_else(|| {
                bad(base + e + 1, format!("value offset {field} outside the container of {total} bytes"))
            })?;
            parse(vt, child, base + field, depth + 1, budget)?
        };
        vals.push(node);
    }
    if !is_obj {
        return Ok(Node::Array(vals));
    }
    let mut out = Vec::with_capacity(count);
    for (i, val) in vals.into_iter().enumerate() {
        let e = HEADER + i * KEY_ENTRY;
        let off = u32_le(v, e) as usize;
        let len = usize::from(u16::from_le_bytes([v[e + 4], v[e + 5]]));
        let key = v.get(off..off + len).ok_or_else(|| bad(base + e, format!("key at {off}+{len} outside the object")))?;
        out.push((key.to_vec(), val));
    }
    Ok(Node::Object(out))
}

/// How many nodes a value of these bytes may hold: every non-literal node takes bytes of its own, so
/// more visits mean values overlap (a crafted DAG that would take exponential time to walk).
fn budget(v: &[u8]) -> usize {
    v.len() + 1
}

fn type_code(n: &Node) -> u8 {
    match n {
        Node::Null | Node::Bool(_) => LITERAL,
        Node::I64(_) => INT64,
        Node::U64(_) => UINT64,
        Node::F64(_) => FLOAT64,
        Node::Str(_) => STRING,
        Node::Opaque(..) => OPAQUE,
        Node::Time(tc, _) => *tc,
        Node::Duration(..) => DURATION,
        Node::Array(_) => ARRAY,
        Node::Object(_) => OBJECT,
    }
}

/// Appends the value bytes of `n` to `out` and returns its type code.
fn encode(n: &Node, out: &mut Vec<u8>) -> Result<u8, CodecError> {
    match n {
        Node::Null => out.push(LITERAL_NULL),
        Node::Bool(b) => out.push(if *b { LITERAL_TRUE } else { LITERAL_FALSE }),
        Node::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Node::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Node::F64(x) => out.extend_from_slice(&x.to_bits().to_le_bytes()),
        Node::Str(s) => {
            put_uvarint(out, s.len() as u64);
            out.extend_from_slice(s);
        }
        Node::Opaque(t, s) => {
            out.push(*t);
            put_uvarint(out, s.len() as u64);
            out.extend_from_slice(s);
        }
        Node::Time(_, p) => out.extend_from_slice(&p.to_le_bytes()),
        Node::Duration(ns, fsp) => {
            out.extend_from_slice(&ns.to_le_bytes());
            out.extend_from_slice(&fsp.to_le_bytes());
        }
        Node::Array(items) => encode_container(None, items.iter(), out)?,
        Node::Object(fields) => {
            let mut sorted: Vec<&(Vec<u8>, Node)> = fields.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, _) in &sorted {
                if k.len() > usize::from(u16::MAX) {
                    return Err(CodecError::BadValue { what: "json object key".into(), reason: "longer than 65535 bytes".into() });
                }
            }
            let keys: Vec<&[u8]> = sorted.iter().map(|(k, _)| k.as_slice()).collect();
            encode_container(Some(&keys), sorted.iter().map(|(_, v)| v), out)?;
        }
    }
    Ok(type_code(n))
}

fn encode_container<'a>(
    keys: Option<&[&[u8]]>,
    vals: impl ExactSizeIterator<Item = &'a Node>,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let count = vals.len();
    let start = out.len();
    let key_entries = keys.map_or(0, |k| k.len() * KEY_ENTRY);
    let mut buf = vec![0u8; HEADER + key_entries + count * VALUE_ENTRY];
    buf[0..4].copy_from_slice(&(count as u32).to_le_bytes());
    if let Some(keys) = keys {
        for (i, k) in keys.iter().enumerate() {
            let off = buf.len() as u32;
            let e = HEADER + i * KEY_ENTRY;
            buf[e..e + 4].copy_from_slice(&off.to_le_bytes());
            buf[e + 4..e + 6].copy_from_slice(&(k.len() as u16).to_le_bytes());
            buf.extend_from_slice(k);
        }
    }
    let val_entries = HEADER + key_entries;
    for (i, v) in vals.enumerate() {
        let e = val_entries + i * VALUE_ENTRY;
        let tc = type_code(v);
        buf[e] = tc;
        if tc == LITERAL {
            let mut lit = Vec::new();
            encode(v, &mut lit)?;
            buf[e + 1] = lit[0];
        } else {
            let off = u32::try_from(buf.len()).map_err(|_| too_big())?;
            buf[e + 1..e + 5].copy_from_slice(&off.to_le_bytes());
            encode(v, &mut buf)?;
        }
    }
    let total = u32::try_from(buf.len()).map_err(|_| too_big())?;
    buf[4..8].copy_from_slice(&total.to_le_bytes());
    out.truncate(start);
    out.extend_from_slice(&buf);
    Ok(())
}

fn too_big() -> CodecError {
    CodecError::BadValue { what: "json".into(), reason: "larger than 4 GiB".into() }
}

fn from_serde(v: &serde_json::Value) -> Result<Node, CodecError> {
    use serde_json::Value as V;
    Ok(match v {
        V::Null => Node::Null,
        V::Bool(b) => Node::Bool(*b),
        V::Number(n) => {
            if let Some(i) = n.as_i64() {
                Node::I64(i)
            } else if let Some(u) = n.as_u64() {
                Node::U64(u)
            } else {
                Node::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        V::String(s) => Node::Str(s.as_bytes().to_vec()),
        V::Array(a) => Node::Array(a.iter().map(from_serde).collect::<Result<_, _>>()?),
        V::Object(o) => {
            Node::Object(o.iter().map(|(k, v)| Ok((k.as_bytes().to_vec(), from_serde(v)?))).collect::<Result<_, _>>()?)
        }
    })
}

fn scalar_text(n: &Node) -> Option<String> {
    Some(match n {
        Node::Opaque(t, b) => format!("base64:type{t}:{}", base64::engine::general_purpose::STANDARD.encode(b)),
        Node::Time(tc, p) => {
            let t = Time::from_packed(*p).unwrap_or_default();
            if *tc == DATE { t.date_string() } else { t.datetime_string(6) }
        }
        Node::Duration(ns, fsp) => Duration { nanos: *ns, fsp: (*fsp).min(6) as u8 }.to_string(),
        _ => return None,
    })
}

fn to_serde(n: &Node) -> serde_json::Value {
    use serde_json::Value as V;
    match n {
        Node::Null => V::Null,
        Node::Bool(b) => V::Bool(*b),
        Node::I64(i) => V::from(*i),
        Node::U64(u) => V::from(*u),
        Node::F64(f) => serde_json::Number::from_f64(*f).map_or(V::Null, V::Number),
        Node::Str(s) => V::String(String::from_utf8_lossy(s).into_owned()),
        Node::Array(a) => V::Array(a.iter().map(to_serde).collect()),
        Node::Object(o) => {
            V::Object(o.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), to_serde(v))).collect())
        }
        other => V::String(scalar_text(other).unwrap_or_default()),
    }
}

fn write_text(n: &Node, s: &mut String) {
    match n {
        Node::Null => s.push_str("null"),
        Node::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
        Node::I64(i) => s.push_str(&i.to_string()),
        Node::U64(u) => s.push_str(&u.to_string()),
        Node::F64(f) => s.push_str(&float_text(*f)),
        Node::Str(b) => quote(b, s),
        Node::Array(a) => {
            s.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write_text(v, s);
            }
            s.push(']');
        }
        Node::Object(o) => {
            s.push('{');
            for (i, (k, v)) in o.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                quote(k, s);
                s.push_str(": ");
                write_text(v, s);
            }
            s.push('}');
        }
        other => quote(scalar_text(other).unwrap_or_default().as_bytes(), s),
    }
}

/// A float as TiDB prints it: shortest digits, exponent form below 1e-6 or from 1e21 (`1e+21`,
/// `1e-7`), and `.0` appended to integral values without exponent.
pub fn float_text(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && (abs < 1e-6 || abs >= 1e21) {
        let e = format!("{f:e}");
        let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        if exp < 0 { format!("{mant}e-{}", -exp) } else { format!("{mant}e+{exp:02}") }
    } else {
        let mut t = format!("{f}");
        if !t.contains('.') && f.is_finite() {
            t.push_str(".0");
        }
        t
    }
}

/// Appends `b` as a JSON string the way Go's encoder with HTML escaping does.
fn quote(b: &[u8], s: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    s.push('"');
    for c in String::from_utf8_lossy(b).chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\u{2028}' => s.push_str("\\u2028"),
            '\u{2029}' => s.push_str("\\u2029"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                let x = c as usize;
                s.push_str("\\u00");
                s.push(HEX[x >> 4] as char);
                s.push(HEX[x & 0xF] as char);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's worked example: `{"a":1,"b":[true,"x"]}`.
    const EXAMPLE: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x00, // count 2, size 60
        0x1e, 0x00, 0x00, 0x00, 0x01, 0x00, 0x1f, 0x00, 0x00, 0x00, 0x01, 0x00, // keys at 30, 31
        0x09, 0x20, 0x00, 0x00, 0x00, 0x03, 0x28, 0x00, 0x00, 0x00, // int at 32, array at 40
        0x61, 0x62, // "a" "b"
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 1
        0x02, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, // array: count 2, size 20
        0x04, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x12, 0x00, 0x00, 0x00, // true inlined, string at 18
        0x01, 0x78, // "x"
    ];

    #[test]
    fn spec_example_encodes_and_decodes() {
        let j = Json::parse_text(r#"{"b":[true,"x"],"a":1}"#).unwrap();
        assert_eq!(j.type_code(), OBJECT);
        assert_eq!(j.value_bytes(), &EXAMPLE[..]);
        let back = Json::from_raw(OBJECT, EXAMPLE.to_vec(), 0).unwrap();
        assert_eq!(back.to_text(), r#"{"a": 1, "b": [true, "x"]}"#);
        let mut with_code = vec![OBJECT];
        with_code.extend_from_slice(&EXAMPLE);
        with_code.push(0xAA);
        assert_eq!(peek_len(&with_code, 0).unwrap(), 61);
    }

    #[test]
    fn scalars() {
        let check = |text: &str, tc: u8, bytes: &[u8], shown: &str| {
            let j = Json::parse_text(text).unwrap();
            assert_eq!((j.type_code(), j.value_bytes()), (tc, bytes), "{text}");
            assert_eq!(j.to_text(), shown);
            assert_eq!(Json::from_raw(tc, bytes.to_vec(), 0).unwrap(), j);
        };
        check("null", LITERAL, &[0], "null");
        check("true", LITERAL, &[1], "true");
        check("false", LITERAL, &[2], "false");
        check("-2", INT64, &(-2i64).to_le_bytes(), "-2");
        check("18446744073709551615", UINT64, &u64::MAX.to_le_bytes(), "18446744073709551615");
        check("1.5", FLOAT64, &1.5f64.to_bits().to_le_bytes(), "1.5");
        check("1e0", FLOAT64, &1.0f64.to_bits().to_le_bytes(), "1.0");
        check(r#""<a&b>""#, STRING, &[5, b'<', b'a', b'&', b'b', b'>'], r#""\u003ca\u0026b\u003e""#);
        check("[]", ARRAY, &[0, 0, 0, 0, 8, 0, 0, 0], "[]");
        check("{}", OBJECT, &[0, 0, 0, 0, 8, 0, 0, 0], "{}");
    }

    #[test]
    fn float_text_like_go() {
        assert_eq!(float_text(1e21), "1e+21");
        assert_eq!(float_text(1e-7), "1e-7");
        assert_eq!(float_text(1.5e-10), "1.5e-10");
        assert_eq!(float_text(100.0), "100.0");
        assert_eq!(float_text(-0.25), "-0.25");
        assert_eq!(float_text(0.0), "0.0");
    }

    #[test]
    fn opaque_time_and_duration_values() {
        let opaque = [0xfc, 3, b'a', b'b', b'c'];
        let j = Json::from_raw(OPAQUE, opaque.to_vec(), 0).unwrap();
        assert_eq!(j.to_text(), "\"base64:type252:YWJj\"");
        let t = Time { year: 2024, month: 1, day: 2, ..Time::default() }.to_packed();
        assert_eq!(Json::from_raw(DATE, t.to_le_bytes().to_vec(), 0).unwrap().to_text(), "\"2024-01-02\"");
        let mut d = 3_600_000_000_000i64.to_le_bytes().to_vec();
        d.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(Json::from_raw(DURATION, d, 0).unwrap().to_text(), "\"01:00:00\"");
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(Json::from_raw(LITERAL, vec![7], 0).is_err());
        assert!(Json::from_raw(0x02, vec![], 0).is_err());
        assert!(Json::from_raw(INT64, vec![1, 2], 0).is_err());
        let mut bad_size = EXAMPLE.to_vec();
        bad_size[4] = 0xff;
        assert!(Json::from_raw(OBJECT, bad_size, 5).is_err());
        let mut bad_off = EXAMPLE.to_vec();
        bad_off[21] = 0x70;
        assert!(Json::from_raw(OBJECT, bad_off, 0).is_err());
        assert!(Json::from_raw(STRING, vec![5, b'a'], 0).is_err());
        // Trailing bytes after a complete value.
        assert!(Json::from_raw(INT64, vec![0; 9], 0).is_err());
    }

    #[test]
    fn nested_round_trip_through_serde() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"z":{"k":[1,-2,3.25,null,{"":"é"}]},"a\"b":[[],{}],"n":18446744073709551615}"#).unwrap();
        let j = Json::from_serde(&v).unwrap();
        let back = Json::from_raw(j.type_code(), j.value_bytes().to_vec(), 0).unwrap();
        assert_eq!(back.to_serde(), v);
        assert_eq!(
            back.to_text(),
            r#"{"a\"b": [[], {}], "n": 18446744073709551615, "z": {"k": [1, -2, 3.25, null, {"": "é"}]}}"#
        );
    }
}
