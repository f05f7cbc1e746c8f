//! What pump needs to know about a `binlog.Binlog`: its kind on write, the fake binlog it generates,
//! and the C-binlog joined with its P-binlog that it serves.

use prost::Message;

use crate::proto::{Binlog, BinlogType};

/// What a written payload is, as pump classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `start_ts == 0 && commit_ts == 0`: a health probe, stored nowhere.
    Probe,
    /// A Prewrite (P-binlog), keyed by start ts.
    Prewrite,
    /// A Commit (C-binlog).
    Commit,
    /// A Rollback of a transaction (commit ts 0 from TiDB).
    Rollback,
    /// A fake binlog (`start_ts > 0 && start_ts == commit_ts`): advances the watermark.
    Fake,
}

/// A decoded write: kind and timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The kind.
    pub kind: WriteKind,
    /// `start_ts`.
    pub start_ts: i64,
    /// `commit_ts`.
    pub commit_ts: i64,
    /// The raw `tp` was Prewrite (also true for a probe, whose empty payload decodes to Prewrite).
    pub is_prewrite_type: bool,
}

/// The fields of a `binlog.Binlog` that routing a write needs, as the full decode would give them
/// (`None` for a field that is absent; the last occurrence wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// `tp` (field 1) as its raw enum number.
    pub tp: Option<i32>,
    /// `start_ts` (field 2).
    pub start_ts: Option<i64>,
    /// `commit_ts` (field 3).
    pub commit_ts: Option<i64>,
}

/// Why a payload is not a `binlog.Binlog`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid binlog.Binlog at byte {offset}: {what}")]
pub struct HeaderError {
    /// Where the bad item starts.
    pub offset: usize,
    /// What is wrong.
    pub what: &'static str,
}

/// How deep unknown groups may nest (prost's recursion limit).
const MAX_GROUP_DEPTH: u32 = 100;

/// A read position in a payload.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn err(&self, offset: usize, what: &'static str) -> HeaderError {
        HeaderError { offset, what }
    }

    fn varint(&mut self) -> Result<u64, HeaderError> {
        let start = self.pos;
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else { return Err(self.err(start, "truncated varint")) };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(self.err(start, "varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err(start, "varint overflows 64 bits"))
    }

    /// A field key: (field number, wire type).
    fn key(&mut self) -> Result<(u32, u8), HeaderError> {
        let start = self.pos;
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| self.err(start, "field key out of range"))?;
        let wire = (key & 7) as u8;
        if wire > 5 {
            return Err(self.err(start, "invalid wire type"));
        }
        if key >> 3 == 0 {
            return Err(self.err(start, "field number 0"));
        }
        Ok((key >> 3, wire))
    }

    fn advance(&mut self, start: usize, n: u64) -> Result<(), HeaderError> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(start, "field runs past the end of the payload"));
        }
        self.pos += n as usize;
        Ok(())
    }

    /// Skips the value of a field with this wire type (a group up to its end key); `key_at` is where
    /// the field's key starts.
    fn skip(&mut self, key_at: usize, field: u32, wire: u8, depth: u32) -> Result<(), HeaderError> {
        let start = self.pos;
        if depth == 0 {
            return Err(self.err(key_at, "groups nested too deep"));
        }
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(start, 8),
            5 => self.advance(start, 4),
            2 => {
                let n = self.varint()?;
                self.advance(start, n)
            }
            3 => loop {
                let at = self.pos;
                let (f, w) = self.key()?;
                if w == 4 {
                    return if f == field { Ok(()) } else { Err(self.err(at, "end of a group that was not started")) };
                }
                self.skip(at, f, w, depth - 1)?;
            },
            _ => Err(self.err(key_at, "end of a group that was not started")),
        }
    }
}

/// Reads `tp`, `start_ts` and `commit_ts` of an encoded `binlog.Binlog` without copying its bytes
/// fields. Accepts exactly what the full decode accepts (every field checked for its wire type and
/// length, unknown fields skipped) and gives the same values; a bad payload gives an error naming
/// the byte offset, never a panic.
pub fn decode_header(payload: &[u8]) -> Result<Header, HeaderError> {
    let mut c = Cursor { buf: payload, pos: 0 };
    let mut h = Header::default();
    while c.pos < payload.len() {
        let at = c.pos;
        let (field, wire) = c.key()?;
        match field {
            // tp, start_ts, commit_ts, ddl_job_id, ddl_schema_state: varints.
            1 | 2 | 3 | 7 | 8 => {
                if wire != 0 {
                    return Err(c.err(at, "wrong wire type for a varint field"));
                }
                let v = c.varint()?;
                match field {
                    1 => h.tp = Some(v as i32),
                    2 => h.start_ts = Some(v as i64),
                    3 => h.commit_ts = Some(v as i64),
                    _ => {}
                }
            }
            // prewrite_key, prewrite_value, ddl_query: bytes, skipped.
            4..=6 => {
                if wire != 2 {
                    return Err(c.err(at, "wrong wire type for a bytes field"));
                }
                c.skip(at, field, wire, MAX_GROUP_DEPTH)?;
            }
            _ => c.skip(at, field, wire, MAX_GROUP_DEPTH)?,
        }
    }
    Ok(h)
}

/// Routes a WriteBinlog payload from its header ([`decode_header`]): the bytes are stored as they
/// came, so nothing else needs decoding.
pub fn classify(payload: &[u8]) -> Result<Classified, HeaderError> {
    let h = decode_header(payload)?;
    let (start_ts, commit_ts) = (h.start_ts.unwrap_or(0), h.commit_ts.unwrap_or(0));
    let tp = BinlogType::try_from(h.tp.unwrap_or(0)).unwrap_or(BinlogType::Prewrite);
    let is_prewrite_type = tp == BinlogType::Prewrite;
    let kind = if start_ts == 0 && commit_ts == 0 {
        WriteKind::Probe
    } else if start_ts > 0 && start_ts == commit_ts {
        WriteKind::Fake
    } else {
        match tp {
            BinlogType::Prewrite => WriteKind::Prewrite,
            BinlogType::Commit | BinlogType::PostDdl => WriteKind::Commit,
            BinlogType::Rollback => WriteKind::Rollback,
            BinlogType::PreDdl => WriteKind::Prewrite,
        }
    };
    Ok(Classified { kind, start_ts, commit_ts, is_prewrite_type })
}

/// A fake binlog with both timestamps `ts`, encoded as Go does (every non-nullable field written).
pub fn fake_binlog(ts: i64) -> Vec<u8> {
    Binlog {
        tp: Some(BinlogType::Rollback as i32),
        start_ts: Some(ts),
        commit_ts: Some(ts),
        ddl_job_id: Some(0),
        ddl_schema_state: Some(0),
        ..Binlog::default()
    }
    .encode_to_vec()
}

/// The C-binlog `commit` with the P-binlog's `prewrite_value`, `ddl_query`, `ddl_job_id` and
/// `ddl_schema_state` (and `start_ts`) copied in, re-encoded: what PullBinlogs serves. `commit_ts` is
/// the stored record's; an empty `commit` is a Commit the resolver (or an operator) wrote for a
/// transaction whose C-binlog never came, served exactly as TiDB's C-binlog would have been:
/// `tp = Commit`, that `commit_ts`, the P-binlog's `prewrite_key`.
pub fn join(commit: &[u8], prewrite: &[u8], commit_ts: i64) -> Result<Vec<u8>, prost::DecodeError> {
    let p = Binlog::decode(prewrite)?;
    let mut c = if commit.is_empty() {
        Binlog {
            tp: Some(BinlogType::Commit as i32),
            commit_ts: Some(commit_ts),
            prewrite_key: p.prewrite_key.clone(),
            ..Binlog::default()
        }
    } else {
        Binlog::decode(commit)?
    };
    c.start_ts = Some(p.start_ts());
    c.ddl_job_id = Some(p.ddl_job_id());
    c.ddl_schema_state = Some(p.ddl_schema_state());
    c.prewrite_value = p.prewrite_value;
    c.ddl_query = p.ddl_query;
    if c.commit_ts.is_none() {
        c.commit_ts = Some(0);
    }
    Ok(c.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(b: Binlog) -> Vec<u8> {
        b.encode_to_vec()
    }

    #[test]
    fn kinds() {
        assert_eq!(classify(&[]).unwrap().kind, WriteKind::Probe);
        assert!(classify(&[]).unwrap().is_prewrite_type);
        let p = enc(Binlog { tp: Some(0), start_ts: Some(5), ..Default::default() });
        assert_eq!(classify(&p).unwrap().kind, WriteKind::Prewrite);
        let c = enc(Binlog { tp: Some(1), start_ts: Some(5), commit_ts: Some(6), ..Default::default() });
        assert_eq!(classify(&c).unwrap(), Classified { kind: WriteKind::Commit, start_ts: 5, commit_ts: 6, is_prewrite_type: false });
        let r = enc(Binlog { tp: Some(2), start_ts: Some(5), commit_ts: Some(0), ..Default::default() });
        assert_eq!(classify(&r).unwrap().kind, WriteKind::Rollback);
        assert_eq!(classify(&fake_binlog(9)).unwrap().kind, WriteKind::Fake);
        assert!(classify(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn header_errors_name_the_offset() {
        let bad: &[(&[u8], usize, &str)] = &[
            (&[0x08], 1, "truncated varint"),
            (&[0x08, 0x01, 0x10, 0xff], 3, "truncated varint"),
            (&[0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], 1, "overflows 64 bits"),
            (&[0x00], 0, "field number 0"),
            (&[0x0e], 0, "invalid wire type"),
            (&[0x12, 0x01, 0x00], 0, "wrong wire type for a varint field"),
            (&[0x28, 0x01], 0, "wrong wire type for a bytes field"),
            (&[0x2a, 0x05, 0x01], 1, "runs past the end"),
            (&[0x4a, 0x80, 0x01], 1, "runs past the end"),
            (&[0x4b, 0x54], 1, "end of a group that was not started"),
            (&[0x4c], 0, "end of a group that was not started"),
            (&[0xf8, 0xff, 0xff, 0xff, 0x1f], 0, "field key out of range"),
        ];
        for (bytes, offset, what) in bad {
            let e = decode_header(bytes).unwrap_err();
            assert_eq!(e.offset, *offset, "{bytes:x?}: {e}");
            assert!(e.to_string().contains(what), "{bytes:x?}: {e}");
            assert!(Binlog::decode(*bytes).is_err(), "prost accepts {bytes:x?}");
        }
        // Unknown fields of every wire type, groups included, are skipped.
        let ok = [0x08, 0x01, 0x49, 0, 0, 0, 0, 0, 0, 0, 0, 0x55, 0, 0, 0, 0, 0x4b, 0x50, 0x07, 0x4c, 0x10, 0x05];
        assert_eq!(decode_header(&ok).unwrap(), Header { tp: Some(1), start_ts: Some(5), commit_ts: None });
        assert!(Binlog::decode(&ok[..]).is_ok());
        // Groups nested past the recursion limit.
        let deep: Vec<u8> = std::iter::repeat_n(0x4b, 101).chain(std::iter::repeat_n(0x4c, 101)).collect();
        assert!(decode_header(&deep).unwrap_err().to_string().contains("nested too deep"));
        assert!(Binlog::decode(deep.as_slice()).is_err());
    }

    fn binlog() -> impl Strategy<Value = Binlog> {
        let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
        (
            proptest::option::of(prop_oneof![0..5i32, any::<i32>()]),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
            bytes(),
            bytes(),
            bytes(),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i32>()),
        )
            .prop_map(|(tp, start_ts, commit_ts, prewrite_key, prewrite_value, ddl_query, ddl_job_id, ddl_schema_state)| Binlog {
                tp,
                start_ts,
                commit_ts,
                prewrite_key,
                prewrite_value,
                ddl_query,
                ddl_job_id,
                ddl_schema_state,
            })
    }

    /// The header decoder against prost's full decode: same verdict, same fields.
    fn agrees(bytes: &[u8]) -> Result<(), TestCaseError> {
        match (decode_header(bytes), Binlog::decode(bytes)) {
            (Ok(h), Ok(b)) => prop_assert_eq!(h, Header { tp: b.tp, start_ts: b.start_ts, commit_ts: b.commit_ts }),
            (Err(_), Err(_)) => {}
            (h, b) => prop_assert!(false, "{bytes:x?}: header {h:?}, prost {b:?}"),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn header_equals_full_decode(b in binlog()) {
            let bytes = b.encode_to_vec();
            prop_assert_eq!(decode_header(&bytes).unwrap(), Header { tp: b.tp, start_ts: b.start_ts, commit_ts: b.commit_ts });
            agrees(&bytes)?;
        }

        #[test]
        fn header_agrees_with_prost_on_damaged_payloads(b in binlog(), cut in any::<prop::sample::Index>(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
            let mut bytes = b.encode_to_vec();
            agrees(&bytes[..cut.index(bytes.len() + 1)])?;
            for (at, v) in flips {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = v;
                }
            }
            agrees(&bytes)?;
        }

        #[test]
        fn header_agrees_with_prost_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            agrees(&bytes)?;
        }
    }

    #[test]
    fn join_copies_prewrite_fields() {
        let p = enc(Binlog {
            tp: Some(0),
            start_ts: Some(5),
            prewrite_key: Some(b"k".to_vec()),
            prewrite_value: Some(b"rows".to_vec()),
            ddl_query: Some(b"create table t (a int)".to_vec()),
            ddl_job_id: Some(12),
            ddl_schema_state: Some(1),
            ..Default::default()
        });
        let c = enc(Binlog { tp: Some(1), start_ts: Some(5), commit_ts: Some(6), prewrite_key: Some(b"k".to_vec()), ..Default::default() });
        let j = Binlog::decode(join(&c, &p, 6).unwrap().as_slice()).unwrap();
        assert_eq!(j.tp(), BinlogType::Commit);
        assert_eq!((j.start_ts(), j.commit_ts()), (5, 6));
        assert_eq!(j.prewrite_value(), b"rows");
        assert_eq!(j.ddl_query(), b"create table t (a int)");
        assert_eq!((j.ddl_job_id(), j.ddl_schema_state()), (12, 1));
        assert_eq!(j.prewrite_key(), b"k");
        // A resolved Commit (empty payload) is served as TiDB's C-binlog: same bytes as the real one.
        assert_eq!(join(&[], &p, 6).unwrap(), join(&c, &p, 6).unwrap());
    }
}
