//! TiDB's datum codec (`util/codec`): one flag byte, then a payload whose shape the flag fixes.
//!
//! [`encode_value`] is the non-comparable encoding used inside rows (ints as varints, strings as
//! compact bytes); [`encode_key`] is the comparable one used in TiKV keys (fixed-width ints,
//! memcomparable bytes). [`decode_one`] reads either.
//!
//! Format (flag: payload):
//! `0 nil` · `1 bytes: 8-byte groups + marker 0xFF-pad` · `2 compactBytes: zigzag varint len + bytes` ·
//! `3 int: 8 BE of v^1<<63` · `4 uint: 8 BE` · `5 float: 8 BE of order-preserving bits` ·
//! `6 decimal: u8 precision, u8 frac, decimal2bin` · `7 duration: like int, nanoseconds` ·
//! `8 varint: zigzag LEB128` · `9 uvarint: LEB128` · `10 json: type code + binary JSON` · `250 max`.

use super::decimal::Decimal;
pub use super::ground::{CodecError, put_uvarint, put_varint, read_uvarint};
use super::json::Json;

/// Flag of a NULL datum.
pub const NIL_FLAG: u8 = 0;
/// Flag of memcomparable bytes (keys only).
pub const BYTES_FLAG: u8 = 1;
/// Flag of length-prefixed bytes (rows).
pub const COMPACT_BYTES_FLAG: u8 = 2;
/// Flag of a fixed-width comparable int64.
pub const INT_FLAG: u8 = 3;
/// Flag of a fixed-width uint64.
pub const UINT_FLAG: u8 = 4;
/// Flag of a float64.
pub const FLOAT_FLAG: u8 = 5;
/// Flag of a decimal.
pub const DECIMAL_FLAG: u8 = 6;
/// Flag of a duration (nanoseconds, int-style).
pub const DURATION_FLAG: u8 = 7;
/// Flag of a zigzag varint int64.
pub const VARINT_FLAG: u8 = 8;
/// Flag of a LEB128 uint64.
pub const UVARINT_FLAG: u8 = 9;
/// Flag of a binary JSON value.
pub const JSON_FLAG: u8 = 10;
/// Flag of the max datum.
pub const MAX_FLAG: u8 = 250;

const SIGN_MASK: u64 = 1 << 63;
const GROUP_SIZE: usize = 8;
const MARKER: u8 = 0xFF;

/// One decoded datum: what a flag and its payload carry (values after `flatten`).
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// NULL (flag 0).
    Null,
    /// A signed int (flags 3 and 8).
    I64(i64),
    /// An unsigned int (flags 4 and 9): unsigned columns, packed time, enum, set, bit.
    U64(u64),
    /// A float64 (flag 5); FLOAT columns are widened to it.
    F64(f64),
    /// Bytes (flags 1 and 2): strings and blobs.
    Bytes(Vec<u8>),
    /// A decimal with its precision and frac (flag 6).
    Decimal(Decimal),
    /// A duration in nanoseconds (flag 7; rows carry TIME as [`Datum::I64`] instead).
    Duration(i64),
    /// A binary JSON value (flag 10).
    Json(Json),
    /// The max datum (flag 250), never in rows.
    Max,
}

impl Datum {
    /// A short description for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Datum::Null => "null",
            Datum::I64(_) => "int64",
            Datum::U64(_) => "uint64",
            Datum::F64(_) => "float64",
            Datum::Bytes(_) => "bytes",
            Datum::Decimal(_) => "decimal",
            Datum::Duration(_) => "duration",
            Datum::Json(_) => "json",
            Datum::Max => "max",
        }
    }

    /// The value as an int64 (ints reinterpret uint64 bits), if it is an integer datum.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Datum::I64(v) | Datum::Duration(v) => Some(v),
            Datum::U64(v) => Some(v as i64),
            _ => None,
        }
    }
}

/// The row handle of a TiKV record: an int (int PK as handle or implicit `_tidb_rowid`) or the
/// clustered primary key's datums in index column order.
#[derive(Debug, Clone, PartialEq)]
pub enum Handle {
    /// An int handle.
    Int(i64),
    /// A clustered (common) handle: the PK column datums, flattened.
    Common(Vec<Datum>),
}

impl Handle {
    /// The datums `codec.EncodeValue` writes in front of an inserted row.
    pub fn datums(&self) -> Vec<Datum> {
        match self {
            Handle::Int(h) => vec![Datum::I64(*h)],
            Handle::Common(d) => d.clone(),
        }
    }
}

/// The TiKV record key of a row: `t` + comparable int table id + `_r` + the handle (8 comparable
/// bytes for an int handle, comparable datums for a common handle). TiDB uses the first mutated
/// row's key as a transaction's `prewrite_key`.
pub fn record_key(table_id: i64, handle: &Handle) -> Vec<u8> {
    let mut k = Vec::with_capacity(19);
    k.push(b't');
    k.extend_from_slice(&((table_id as u64) ^ SIGN_MASK).to_be_bytes());
    k.extend_from_slice(b"_r");
    match handle {
        Handle::Int(h) => k.extend_from_slice(&((*h as u64) ^ SIGN_MASK).to_be_bytes()),
        Handle::Common(ds) => {
            for d in ds {
                encode_key(&mut k, d);
            }
        }
    }
    k
}

/// Appends `d` in the non-comparable encoding (`codec.EncodeValue`), as rows carry it.
pub fn encode_value(buf: &mut Vec<u8>, d: &Datum) {
    match d {
        Datum::Null => buf.push(NIL_FLAG),
        Datum::I64(v) => {
            buf.push(VARINT_FLAG);
            put_varint(buf, *v);
        }
        Datum::U64(v) => {
            buf.push(UVARINT_FLAG);
            put_uvarint(buf, *v);
        }
        Datum::F64(f) => {
            buf.push(FLOAT_FLAG);
            buf.extend_from_slice(&float_to_comparable(*f).to_be_bytes());
        }
        Datum::Bytes(b) => {
            buf.push(COMPACT_BYTES_FLAG);
            put_varint(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
        Datum::Decimal(dec) => encode_decimal(buf, dec),
        Datum::Duration(n) => {
            buf.push(DURATION_FLAG);
            buf.extend_from_slice(&((*n as u64) ^ SIGN_MASK).to_be_bytes());
        }
        Datum::Json(j) => {
            buf.push(JSON_FLAG);
            buf.push(j.type_code());
            buf.extend_from_slice(j.value_bytes());
        }
        Datum::Max => buf.push(MAX_FLAG),
    }
}

/// Appends `d` in the comparable encoding (`codec.EncodeKey`), as TiKV keys carry it.
pub fn encode_key(buf: &mut Vec<u8>, d: &Datum) {
    match d {
        Datum::I64(v) => {
            buf.push(INT_FLAG);
            buf.extend_from_slice(&((*v as u64) ^ SIGN_MASK).to_be_bytes());
        }
        Datum::U64(v) => {
            buf.push(UINT_FLAG);
            buf.extend_from_slice(&v.to_be_bytes());
        }
        Datum::Bytes(b) => {
            buf.push(BYTES_FLAG);
            put_memcomparable(buf, b);
        }
        other => encode_value(buf, other),
    }
}

fn encode_decimal(buf: &mut Vec<u8>, dec: &Decimal) {
    buf.push(DECIMAL_FLAG);
    buf.push(dec.precision());
    buf.push(dec.frac());
    buf.extend_from_slice(&dec.to_bin());
}

/// Decodes the first datum of `buf` and returns it with the rest.
pub fn decode_one(buf: &[u8]) -> Result<(Datum, &[u8]), CodecError> {
    let mut r = Reader::new(buf, 0);
    let d = r.datum()?;
    Ok((d, &buf[r.pos..]))
}

fn float_to_comparable(f: f64) -> u64 {
    let u = f.to_bits();
    if f >= 0.0 { u | SIGN_MASK } else { !u }
}

fn float_from_comparable(u: u64) -> f64 {
    let bits = if u & SIGN_MASK != 0 { u & !SIGN_MASK } else { !u };
    f64::from_bits(bits)
}

fn put_memcomparable(buf: &mut Vec<u8>, data: &[u8]) {
    let mut i = 0;
    loop {
        let remain = data.len() - i;
        if remain >= GROUP_SIZE {
            buf.extend_from_slice(&data[i..i + GROUP_SIZE]);
            buf.push(MARKER);
            i += GROUP_SIZE;
        } else {
            let pad = GROUP_SIZE - remain;
            buf.extend_from_slice(&data[i..]);
            buf.extend(std::iter::repeat_n(0u8, pad));
            buf.push(MARKER - pad as u8);
            return;
        }
    }
}

/// A cursor over encoded bytes that reports offsets relative to the caller's slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pub(crate) pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn take(&mut self, flag: u8, n: usize) -> Result<&'a [u8], CodecError> {
        let have = self.buf.len() - self.pos;
        if have < n {
            return Err(CodecError::Truncated { flag, offset: self.offset(), need: n, have });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u64_be(&mut self, flag: u8) -> Result<u64, CodecError> {
        let b = self.take(flag, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn uvarint(&mut self, flag: u8) -> Result<u64, CodecError> {
        let offset = self.offset();
        match read_uvarint(self.remaining()) {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None if self.remaining().len() < 10 && self.remaining().iter().all(|b| b & 0x80 != 0) => {
                Err(CodecError::Truncated { flag, offset, need: self.remaining().len() + 1, have: self.remaining().len() })
            }
            None => Err(CodecError::VarintOverflow { flag, offset }),
        }
    }

    fn varint(&mut self, flag: u8) -> Result<i64, CodecError> {
        let u = self.uvarint(flag)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// Reads one datum.
    pub(crate) fn datum(&mut self) -> Result<Datum, CodecError> {
        let offset = self.offset();
        let Some(&flag) = self.buf.get(self.pos) else {
            return Err(CodecError::Empty { offset });
        };
        self.pos += 1;
        Ok(match flag {
            NIL_FLAG => Datum::Null,
            BYTES_FLAG => Datum::Bytes(self.memcomparable()?),
            COMPACT_BYTES_FLAG => {
                let len_off = self.offset();
                let n = self.varint(flag)?;
                if n < 0 || n as u64 > (self.buf.len() - self.pos) as u64 {
                    if n >= 0 {
                        let have = self.buf.len() - self.pos;
                        return Err(CodecError::Truncated { flag, offset: self.offset(), need: n as usize, have });
                    }
                    return Err(CodecError::BadLength { flag, offset: len_off, len: n });
                }
                Datum::Bytes(self.take(flag, n as usize)?.to_vec())
            }
            INT_FLAG => Datum::I64((self.u64_be(flag)? ^ SIGN_MASK) as i64),
            UINT_FLAG => Datum::U64(self.u64_be(flag)?),
            FLOAT_FLAG => Datum::F64(float_from_comparable(self.u64_be(flag)?)),
            DECIMAL_FLAG => {
                let head = self.take(flag, 2)?;
                let (precision, frac) = (head[0], head[1]);
                let start = self.offset();
                let size = Decimal::bin_size(precision, frac)
                    .map_err(|reason| CodecError::BadDecimal { offset: start - 2, reason })?;
                let bin = self.take(flag, size)?;
                let dec = Decimal::from_bin(bin, precision, frac)
                    .map_err(|reason| CodecError::BadDecimal { offset: start, reason })?;
                Datum::Decimal(dec)
            }
            DURATION_FLAG => Datum::Duration((self.u64_be(flag)? ^ SIGN_MASK) as i64),
            VARINT_FLAG => Datum::I64(self.varint(flag)?),
            UVARINT_FLAG => Datum::U64(self.uvarint(flag)?),
            JSON_FLAG => {
                let start = self.offset();
                let len = super::json::peek_len(self.remaining(), start)?;
                let raw = self.take(flag, len)?;
                Datum::Json(Json::from_raw(raw[0], raw[1..].to_vec(), start)?)
            }
            MAX_FLAG => Datum::Max,
            _ => return Err(CodecError::UnknownFlag { flag, offset }),
        })
    }

    fn memcomparable(&mut self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        loop {
            let offset = self.offset();
            let group = self.take(BYTES_FLAG, GROUP_SIZE + 1)?;
            let marker = group[GROUP_SIZE];
            let pad = usize::from(MARKER - marker);
            if pad > GROUP_SIZE {
                return Err(CodecError::BadBytesGroup { offset, marker });
            }
            let real = GROUP_SIZE - pad;
            out.extend_from_slice(&group[..real]);
            if pad != 0 {
                if group[real..GROUP_SIZE].iter().any(|&b| b != 0) {
                    return Err(CodecError::BadBytesGroup { offset, marker });
                }
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(d: &Datum) -> Vec<u8> {
        let mut b = Vec::new();
        encode_value(&mut b, d);
        b
    }

    fn key(d: &Datum) -> Vec<u8> {
        let mut b = Vec::new();
        encode_key(&mut b, d);
        b
    }

    fn dec(b: &[u8]) -> Datum {
        let (d, rest) = decode_one(b).unwrap();
        assert!(rest.is_empty(), "trailing bytes after {d:?}");
        d
    }

    // Golden vectors derived by hand from the flag table in upstream-interfaces.md §3.

    #[test]
    fn nil_is_flag_zero() {
        assert_eq!(enc(&Datum::Null), [0x00]);
        assert_eq!(dec(&[0x00]), Datum::Null);
    }

    #[test]
    fn varint_is_zigzag_leb128() {
        // 1 -> zigzag 2; -1 -> 1; 64 -> 128 = 0x80 0x01; -65 -> 129 = 0x81 0x01.
        assert_eq!(enc(&Datum::I64(1)), [0x08, 0x02]);
        assert_eq!(enc(&Datum::I64(-1)), [0x08, 0x01]);
        assert_eq!(enc(&Datum::I64(64)), [0x08, 0x80, 0x01]);
        assert_eq!(enc(&Datum::I64(-65)), [0x08, 0x81, 0x01]);
        assert_eq!(dec(&[0x08, 0x81, 0x01]), Datum::I64(-65));
        let max = enc(&Datum::I64(i64::MIN));
        assert_eq!(max, [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(dec(&max), Datum::I64(i64::MIN));
    }

    #[test]
    fn uvarint_is_leb128() {
        assert_eq!(enc(&Datum::U64(300)), [0x09, 0xac, 0x02]);
        assert_eq!(dec(&[0x09, 0x7f]), Datum::U64(127));
        let m = enc(&Datum::U64(u64::MAX));
        assert_eq!(m.len(), 11);
        assert_eq!(dec(&m), Datum::U64(u64::MAX));
    }

    #[test]
    fn int_and_uint_flags_are_fixed_width_big_endian() {
        assert_eq!(key(&Datum::I64(1)), [0x03, 0x80, 0, 0, 0, 0, 0, 0, 0x01]);
        assert_eq!(key(&Datum::I64(-1)), [0x03, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(key(&Datum::U64(258)), [0x04, 0, 0, 0, 0, 0, 0, 0x01, 0x02]);
        assert_eq!(dec(&[0x03, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Datum::I64(-1));
        assert_eq!(dec(&[0x04, 0, 0, 0, 0, 0, 0, 0x01, 0x02]), Datum::U64(258));
    }

    #[test]
    fn float_flag_orders_bits() {
        // 1.0 = 0x3FF0000000000000 -> sign bit set: 0xBFF0...
        assert_eq!(enc(&Datum::F64(1.0)), [0x05, 0xbf, 0xf0, 0, 0, 0, 0, 0, 0]);
        // -1.0 = 0xBFF0... -> inverted: 0x400F_FFFF_FFFF_FFFF
        assert_eq!(enc(&Datum::F64(-1.0)), [0x05, 0x40, 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(dec(&[0x05, 0x40, 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Datum::F64(-1.0));
        assert_eq!(dec(&enc(&Datum::F64(0.0))), Datum::F64(0.0));
    }

    #[test]
    fn compact_bytes_are_varint_length_then_bytes() {
        assert_eq!(enc(&Datum::Bytes(b"abc".to_vec())), [0x02, 0x06, b'a', b'b', b'c']);
        assert_eq!(enc(&Datum::Bytes(vec![])), [0x02, 0x00]);
        assert_eq!(dec(&[0x02, 0x06, b'a', b'b', b'c']), Datum::Bytes(b"abc".to_vec()));
    }

    #[test]
    fn memcomparable_bytes_groups() {
        assert_eq!(key(&Datum::Bytes(b"abc".to_vec())), [0x01, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0xfa]);
        let eight = key(&Datum::Bytes(b"12345678".to_vec()));
        assert_eq!(eight, [&[0x01][..], b"12345678", &[0xff], &[0; 8], &[0xf7]].concat());
        assert_eq!(dec(&eight), Datum::Bytes(b"12345678".to_vec()));
        assert_eq!(dec(&key(&Datum::Bytes(vec![]))), Datum::Bytes(vec![]));
        // Non-zero padding is refused, naming the group's offset.
        let bad = [0x01, b'a', 0, 0, 0, 0, 0, 0, 1, 0xf8];
        assert_eq!(decode_one(&bad).unwrap_err(), CodecError::BadBytesGroup { offset: 1, marker: 0xf8 });
        let bad_marker = [0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        assert!(matches!(decode_one(&bad_marker), Err(CodecError::BadBytesGroup { .. })));
    }

    #[test]
    fn duration_flag_is_int_style() {
        assert_eq!(enc(&Datum::Duration(5)), [0x07, 0x80, 0, 0, 0, 0, 0, 0, 0x05]);
        assert_eq!(dec(&[0x07, 0x80, 0, 0, 0, 0, 0, 0, 0x05]), Datum::Duration(5));
    }

    #[test]
    fn decimal_datum_carries_precision_and_frac() {
        let d = Decimal::parse("12.34", 10, 2).unwrap();
        assert_eq!(enc(&Datum::Decimal(d.clone())), [0x06, 0x0a, 0x02, 0x80, 0x00, 0x00, 0x0c, 0x22]);
        assert_eq!(dec(&[0x06, 0x0a, 0x02, 0x80, 0x00, 0x00, 0x0c, 0x22]), Datum::Decimal(d));
    }

    #[test]
    fn max_flag() {
        assert_eq!(enc(&Datum::Max), [250]);
        assert_eq!(dec(&[250]), Datum::Max);
    }

    #[test]
    fn errors_name_flag_and_offset() {
        assert_eq!(decode_one(&[]).unwrap_err(), CodecError::Empty { offset: 0 });
        assert_eq!(decode_one(&[0x63]).unwrap_err(), CodecError::UnknownFlag { flag: 0x63, offset: 0 });
        assert_eq!(
            decode_one(&[0x03, 1, 2]).unwrap_err(),
            CodecError::Truncated { flag: 3, offset: 1, need: 8, have: 2 }
        );
        assert_eq!(
            decode_one(&[0x02, 0x0a, b'x']).unwrap_err(),
            CodecError::Truncated { flag: 2, offset: 2, need: 5, have: 1 }
        );
        assert!(matches!(decode_one(&[0x02, 0x03]), Err(CodecError::BadLength { flag: 2, len: -2, .. })));
        assert!(matches!(decode_one(&[0x09, 0xff, 0xff]), Err(CodecError::Truncated { flag: 9, .. })));
        assert!(matches!(decode_one(&[0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(CodecError::VarintOverflow { flag: 9, offset: 1 })));
        let e = decode_one(&[0x06, 0x00, 0x00]).unwrap_err();
        assert!(matches!(e, CodecError::BadDecimal { offset: 1, .. }), "{e:?}");
    }

    #[test]
    fn record_key_of_int_handle() {
        let k = record_key(5, &Handle::Int(1));
        let want: Vec<u8> = [&b"t"[..], &[0x80, 0, 0, 0, 0, 0, 0, 5], b"_r", &[0x80, 0, 0, 0, 0, 0, 0, 1]].concat();
        assert_eq!(k, want);
        let c = record_key(5, &Handle::Common(vec![Datum::Bytes(b"a".to_vec()), Datum::I64(2)]));
        assert_eq!(&c[11..], &[0x01, b'a', 0, 0, 0, 0, 0, 0, 0, 0xf8, 0x03, 0x80, 0, 0, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn decode_one_returns_the_rest() {
        let mut b = enc(&Datum::I64(7));
        encode_value(&mut b, &Datum::Bytes(b"x".to_vec()));
        let (d, rest) = decode_one(&b).unwrap();
        assert_eq!(d, Datum::I64(7));
        assert_eq!(dec(rest), Datum::Bytes(b"x".to_vec()));
    }
}
