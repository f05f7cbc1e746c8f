//! The old row format binlog rows use (`tablecodec.EncodeOldRow`): datums `colID, value, colID, value,
//! ...` with the column id as an int datum; a row without columns is the single byte `0x00`.
//!
//! Shapes inside a `TableMutation`:
//! - inserted row: the handle datums (`codec.EncodeValue`: one int, or the clustered PK datums) then
//!   the row;
//! - updated row: old row then new row (a column's first occurrence is old, its second new);
//! - deleted row: the row (with `(-1, handle)` for tables with an implicit row id).

use std::collections::HashSet;

use super::codec::{CodecError, Datum, Handle, Reader, encode_value};

/// Appends an old-format row; no columns gives `0x00`.
pub fn encode_row(buf: &mut Vec<u8>, cols: &[(i64, Datum)]) {
    if cols.is_empty() {
        buf.push(0x00);
        return;
    }
    for (id, d) in cols {
        encode_value(buf, &Datum::I64(*id));
        encode_value(buf, d);
    }
}

/// Decodes a whole old-format row into `(column id, datum)` pairs in their order. `0x00` (and an
/// empty slice) is a row without columns.
pub fn decode_row(b: &[u8]) -> Result<Vec<(i64, Datum)>, CodecError> {
    if b == [0x00] {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(b, 0);
    let mut cols = Vec::new();
    while !r.is_empty() {
        cols.push(read_pair(&mut r)?);
    }
    Ok(cols)
}

/// An inserted row: the handle datums in front, then the row.
pub fn encode_insert_row(handle: &Handle, cols: &[(i64, Datum)]) -> Vec<u8> {
    let mut buf = Vec::new();
    for d in handle.datums() {
        encode_value(&mut buf, &d);
    }
    encode_row(&mut buf, cols);
    buf
}

/// Splits an inserted row into its `handle_len` handle datums (1 for an int handle, the PK column
/// count for a clustered table) and its columns.
pub fn decode_insert_row(b: &[u8], handle_len: usize) -> Result<(Vec<Datum>, Vec<(i64, Datum)>), CodecError> {
    let mut r = Reader::new(b, 0);
    let mut handle = Vec::with_capacity(handle_len);
    for _ in 0..handle_len {
        handle.push(r.datum()?);
    }
    let rest_at = r.offset();
    let cols = decode_row(r.remaining()).map_err(|e| shift(e, rest_at))?;
    Ok((handle, cols))
}

/// An updated row: old row then new row.
pub fn encode_update_row(old: &[(i64, Datum)], new: &[(i64, Datum)]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_row(&mut buf, old);
    encode_row(&mut buf, new);
    buf
}

/// Splits an updated row into old and new columns: a column id's first occurrence is old, its second
/// new (drainer `DecodeOldAndNewRow`); a `0x00` alone stands for an empty half.
pub fn decode_update_row(b: &[u8]) -> Result<(Vec<(i64, Datum)>, Vec<(i64, Datum)>), CodecError> {
    let mut r = Reader::new(b, 0);
    let (mut old, mut new) = (Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    let mut in_new = false;
    while !r.is_empty() {
        if r.remaining()[0] == 0x00 {
            // An empty half: allowed as the whole old row or the whole new row.
            let at = r.offset();
            if !in_new && old.is_empty() {
                r.datum()?;
                in_new = true;
                continue;
            }
            if new.is_empty() && r.remaining().len() == 1 {
                r.datum()?;
                break;
            }
            return Err(CodecError::BadRow { offset: at, reason: "NULL where a column id is expected".into() });
        }
        let (id, d) = read_pair(&mut r)?;
        if !in_new && !seen.insert(id) {
            in_new = true;
        }
        if in_new { new.push((id, d)) } else { old.push((id, d)) }
    }
    Ok((old, new))
}

/// Reads one `colID, value` pair.
fn read_pair(r: &mut Reader<'_>) -> Result<(i64, Datum), CodecError> {
    let at = r.offset();
    let id = match r.datum()? {
        Datum::I64(id) => id,
        Datum::U64(id) => id as i64,
        other => {
            return Err(CodecError::BadRow {
                offset: at,
                reason: format!("column id is a {} datum, not an int", other.kind()),
            });
        }
    };
    let value_at = r.offset();
    let value = r.datum().map_err(|e| match e {
        CodecError::Empty { .. } => CodecError::BadRow { offset: value_at, reason: format!("column {id} has no value") },
        e => e,
    })?;
    Ok((id, value))
}

fn shift(e: CodecError, by: usize) -> CodecError {
    use CodecError as E;
    match e {
        E::Truncated { flag, offset, need, have } => E::Truncated { flag, offset: offset + by, need, have },
        E::Empty { offset } => E::Empty { offset: offset + by },
        E::UnknownFlag { flag, offset } => E::UnknownFlag { flag, offset: offset + by },
        E::VarintOverflow { flag, offset } => E::VarintOverflow { flag, offset: offset + by },
        E::BadBytesGroup { offset, marker } => E::BadBytesGroup { offset: offset + by, marker },
        E::BadLength { flag, offset, len } => E::BadLength { flag, offset: offset + by, len },
        E::BadDecimal { offset, reason } => E::BadDecimal { offset: offset + by, reason },
        E::BadJson { offset, reason } => E::BadJson { offset: offset + by, reason },
        E::BadRow { offset, reason } => E::BadRow { offset: offset + by, reason },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_golden_bytes() {
        let mut b = Vec::new();
        encode_row(&mut b, &[(1, Datum::I64(5)), (2, Datum::Bytes(b"ab".to_vec())), (3, Datum::Null)]);
        // (varint 1)(varint 5)(varint 2)(compact "ab")(varint 3)(nil)
        assert_eq!(b, [0x08, 0x02, 0x08, 0x0a, 0x08, 0x04, 0x02, 0x04, b'a', b'b', 0x08, 0x06, 0x00]);
        assert_eq!(decode_row(&b).unwrap(), [(1, Datum::I64(5)), (2, Datum::Bytes(b"ab".to_vec())), (3, Datum::Null)]);
    }

    #[test]
    fn empty_row_is_one_nil_byte() {
        let mut b = Vec::new();
        encode_row(&mut b, &[]);
        assert_eq!(b, [0x00]);
        assert!(decode_row(&b).unwrap().is_empty());
        assert!(decode_row(&[]).unwrap().is_empty());
        assert!(decode_row(&[0x00, 0x00]).is_err());
        assert!(decode_update_row(&[0x00, 0x00, 0x00]).is_err());
    }

    #[test]
    fn insert_row_has_handle_in_front() {
        let b = encode_insert_row(&Handle::Int(-3), &[(2, Datum::U64(9))]);
        assert_eq!(b, [0x08, 0x05, 0x08, 0x04, 0x09, 0x09]);
        let (h, cols) = decode_insert_row(&b, 1).unwrap();
        assert_eq!(h, [Datum::I64(-3)]);
        assert_eq!(cols, [(2, Datum::U64(9))]);
        let common = Handle::Common(vec![Datum::Bytes(b"k".to_vec()), Datum::I64(1)]);
        let b = encode_insert_row(&common, &[]);
        assert_eq!(b, [0x02, 0x02, b'k', 0x08, 0x02, 0x00]);
        assert_eq!(decode_insert_row(&b, 2).unwrap(), (common.datums(), vec![]));
    }

    #[test]
    fn update_row_splits_on_the_repeated_id() {
        let old = [(1, Datum::I64(1)), (2, Datum::Null), (-1, Datum::I64(77))];
        let new = [(1, Datum::I64(1)), (2, Datum::Bytes(b"x".to_vec())), (-1, Datum::I64(77))];
        let b = encode_update_row(&old, &new);
        assert_eq!(decode_update_row(&b).unwrap(), (old.to_vec(), new.to_vec()));
        assert_eq!(decode_update_row(&[0x00, 0x00]).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn bad_rows_name_the_offset() {
        // A bytes datum where a column id belongs.
        assert_eq!(
            decode_row(&[0x02, 0x00, 0x00]).unwrap_err(),
            CodecError::BadRow { offset: 0, reason: "column id is a bytes datum, not an int".into() }
        );
        assert_eq!(
            decode_row(&[0x08, 0x02, 0x08, 0x04, 0x00]).unwrap_err(),
            CodecError::BadRow { offset: 4, reason: "column id is a null datum, not an int".into() }
        );
        // A column id without a value.
        assert!(matches!(decode_row(&[0x08, 0x02]).unwrap_err(), CodecError::BadRow { offset: 2, .. }));
        // Errors inside the row of an insert are offset from the start of the whole insert.
        let e = decode_insert_row(&[0x08, 0x02, 0x08, 0x02, 0x63], 1).unwrap_err();
        assert_eq!(e, CodecError::UnknownFlag { flag: 0x63, offset: 4 });
    }
}
