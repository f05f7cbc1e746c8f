//! The bytes on disk: segment header, record framing, sealed-segment footer and trailer.
//!
//! Every layout here is described byte by byte in `pump-store/FORMAT.md`; keep the two in step.
//! **Do not reorder, retype or remove fields**: bump [`VERSION`] and teach the decoder the old one instead.
//!
//! The functions here are pure (bytes in, values out) so recovery can be fuzzed without a filesystem:
//! [`scan_segment`] never panics on any input and never returns a record whose CRC does not match.

use std::fmt;

/// First 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TBRSSEG\0";
/// The segment format version this code writes (v2: pad records, a preallocated zero tail; FORMAT.md).
pub const VERSION: u32 = 2;
/// The oldest segment format version this code reads.
pub const MIN_VERSION: u32 = 1;
/// Size of the segment header in bytes.
pub const HEADER_LEN: usize = 32;
/// Size of the record frame (`len:u32 | crc:u32`) in front of every record body.
pub const FRAME_LEN: usize = 8;
/// Size of the fixed part of a record body (`kind | start_ts | commit_ts | p_seq | p_off`).
pub const BODY_FIXED_LEN: usize = 33;
/// Magic of the 16-byte trailer that ends a sealed segment.
pub const TRAILER_MAGIC: [u8; 8] = *b"TBRSEND\0";
/// Size of the trailer (`footer_offset:u64 | magic`).
pub const TRAILER_LEN: usize = 16;
/// Largest record body we accept (1 GiB); a bigger length field is treated as corruption.
pub const MAX_BODY_LEN: usize = 1 << 30;
/// The smallest encoded record (frame and fixed body, empty payload), hence the smallest pad record.
pub const MIN_RECORD_LEN: usize = FRAME_LEN + BODY_FIXED_LEN;

/// Kind byte of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A P-binlog.
    Prewrite,
    /// A C-binlog.
    Commit,
    /// A rollback of a prewritten transaction (upstream: a Rollback binlog with commit_ts 0).
    Rollback,
    /// A fake binlog (start_ts == commit_ts) that only advances the watermark.
    Fake,
    /// The footer of a sealed segment (its payload is a [`Footer`]).
    Footer,
    /// Padding up to an alignment boundary (v2): its payload is zeros and it carries nothing. Scans skip it.
    Pad,
}

impl RecordKind {
    /// The byte stored on disk.
    pub fn to_byte(self) -> u8 {
        match self {
            RecordKind::Prewrite => 1,
            RecordKind::Commit => 2,
            RecordKind::Rollback => 3,
            RecordKind::Fake => 4,
            RecordKind::Footer => 0x7f,
            RecordKind::Pad => 0x7e,
        }
    }

    /// Parses the kind byte.
    pub fn from_byte(b: u8) -> Option<RecordKind> {
        Some(match b {
            1 => RecordKind::Prewrite,
            2 => RecordKind::Commit,
            3 => RecordKind::Rollback,
            4 => RecordKind::Fake,
            0x7f => RecordKind::Footer,
            0x7e => RecordKind::Pad,
            _ => return None,
        })
    }
}

/// Where a record starts: segment sequence number and byte offset of its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Loc {
    /// Segment sequence number (starts at 1; 0 means "no location").
    pub seq: u64,
    /// Byte offset of the record frame inside the segment file.
    pub off: u64,
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version.
    pub version: u32,
    /// Sequence number of the segment (also its file name).
    pub seq: u64,
}

/// Encodes a segment header of the current [`VERSION`].
pub fn encode_header(seq: u64) -> [u8; HEADER_LEN] {
    encode_header_version(seq, VERSION)
}

/// Encodes a segment header claiming format `version` (tests write old segments with it).
pub fn encode_header_version(seq: u64, version: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    // 12..16 flags, 0
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    // 24..28 reserved, 0
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    Short {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The magic does not match.
    BadMagic,
    /// A version this code does not read.
    UnsupportedVersion(u32),
    /// The CRC does not match.
    BadCrc {
        /// CRC stored on disk.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// The length field is out of range.
    BadLength(u64),
    /// An unknown record kind byte.
    BadKind(u8),
    /// A footer whose fields contradict each other.
    BadFooter(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { need, have } => write!(f, "short read: need {need} bytes, have {have}"),
            DecodeError::BadMagic => write!(f, "bad magic"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            DecodeError::BadCrc { stored, computed } => {
                write!(f, "crc mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            DecodeError::BadLength(l) => write!(f, "record length {l} out of range"),
            DecodeError::BadKind(k) => write!(f, "unknown record kind {k}"),
            DecodeError::BadFooter(why) => write!(f, "bad footer: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes and checks a segment header.
pub fn decode_header(b: &[u8]) -> Result<SegmentHeader, DecodeError> {
    if b.len() < HEADER_LEN {
        return Err(DecodeError::Short { need: HEADER_LEN, have: b.len() });
    }
    if b[0..8] != SEGMENT_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let stored = u32_at(b, 28);
    let computed = crc32fast::hash(&b[0..28]);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    let version = u32_at(b, 8);
    if !(MIN_VERSION..=VERSION).contains(&version) {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    Ok(SegmentHeader { version, seq: u64_at(b, 16) })
}

/// One decoded record, borrowing its payload from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Kind.
    pub kind: RecordKind,
    /// start_ts (0 for a footer).
    pub start_ts: i64,
    /// commit_ts (0 for a prewrite, a TiDB rollback and a footer).
    pub commit_ts: i64,
    /// For a commit: where its prewrite record is (seq 0 if unknown).
    pub prewrite_at: Loc,
    /// The opaque payload.
    pub payload: &'a [u8],
}

/// Total encoded size of a record with this payload length.
pub fn encoded_len(payload_len: usize) -> usize {
    FRAME_LEN + BODY_FIXED_LEN + payload_len
}

/// Appends one framed record to `out`.
pub fn encode_record(out: &mut Vec<u8>, r: &RecordRef<'_>) {
    let body_len = BODY_FIXED_LEN + r.payload.len();
    let len = body_len as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // crc, patched below
    out.push(r.kind.to_byte());
    out.extend_from_slice(&r.start_ts.to_le_bytes());
    out.extend_from_slice(&r.commit_ts.to_le_bytes());
    out.extend_from_slice(&r.prewrite_at.seq.to_le_bytes());
    out.extend_from_slice(&r.prewrite_at.off.to_le_bytes());
    out.extend_from_slice(r.payload);
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start..start + 4]);
    h.update(&out[start + FRAME_LEN..]);
    let crc = h.finalize();
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// How many bytes of padding to put at `pos` so that the next record starts at a multiple of `align`:
/// 0 if `pos` is aligned, else the gap to the next boundary, or that gap plus `align` when the gap is too
/// small for a record ([`MIN_RECORD_LEN`]). So a pad is never longer than `align + MIN_RECORD_LEN - 1`.
pub fn pad_len(pos: u64, align: u64) -> usize {
    let gap = ((align - pos % align) % align) as usize;
    match gap {
        0 => 0,
        g if g < MIN_RECORD_LEN => g + align as usize,
        g => g,
    }
}

/// Appends a pad record of exactly `len` bytes (`len` ≥ [`MIN_RECORD_LEN`]; shorter is a no-op).
// Format: { len | crc | kind=Pad | 0:i64 | 0:i64 | 0:u64 | 0:u64 | zeros }
pub fn encode_pad(out: &mut Vec<u8>, len: usize) {
    if len < MIN_RECORD_LEN {
        return;
    }
    let zeros = vec![0u8; len - MIN_RECORD_LEN];
    encode_record(
        out,
        &RecordRef { kind: RecordKind::Pad, start_ts: 0, commit_ts: 0, prewrite_at: Loc::default(), payload: &zeros },
    );
}

/// The first block of a v2 segment: its header, then a pad record up to `align` bytes, so that the first
/// batch starts aligned.
pub fn encode_header_block(seq: u64, align: u64) -> Vec<u8> {
    let mut v = encode_header(seq).to_vec();
    let pad = pad_len(HEADER_LEN as u64, align);
    encode_pad(&mut v, pad);
    v
}

/// Reads the body length from a frame; `Ok(None)` if fewer than [`FRAME_LEN`] bytes are given.
pub fn frame_body_len(b: &[u8]) -> Result<Option<usize>, DecodeError> {
    if b.len() < FRAME_LEN {
        return Ok(None);
    }
    let len = u32_at(b, 0) as usize;
    if !(BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&len) {
        return Err(DecodeError::BadLength(len as u64));
    }
    Ok(Some(len))
}

/// Decodes the record at the start of `b`, returning it and its encoded length.
///
/// Checks the length range, the CRC (over the length field and the body) and the kind byte.
pub fn decode_record(b: &[u8]) -> Result<(RecordRef<'_>, usize), DecodeError> {
    let Some(len) = frame_body_len(b)? else {
        return Err(DecodeError::Short { need: FRAME_LEN, have: b.len() });
    };
    let total = FRAME_LEN + len;
    if b.len() < total {
        return Err(DecodeError::Short { need: total, have: b.len() });
    }
    let stored = u32_at(b, 4);
    let mut h = crc32fast::Hasher::new();
    h.update(&b[0..4]);
    h.update(&b[FRAME_LEN..total]);
    let computed = h.finalize();
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    let body = &b[FRAME_LEN..total];
    let kind = RecordKind::from_byte(body[0]).ok_or(DecodeError::BadKind(body[0]))?;
    Ok((
        RecordRef {
            kind,
            start_ts: i64_at(body, 1),
            commit_ts: i64_at(body, 9),
            prewrite_at: Loc { seq: u64_at(body, 17), off: u64_at(body, 25) },
            payload: &body[BODY_FIXED_LEN..],
        },
        total,
    ))
}

/// One entry of a segment's sparse commit-ts index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of a record frame in the segment.
    pub off: u64,
    /// Largest commit_ts of any Commit or Fake record before `off` in this segment (`i64::MIN` if none).
    pub prefix_max_commit: i64,
    /// A watermark all of whose Commits lie before `off` (the sorted watermark when the record at `off`
    /// was written; `i64::MIN` if unknown). A reader that has passed `off` may emit up to it.
    pub safe_watermark: i64,
}

/// The footer of a sealed segment: summary and sparse index, so opening and seeking need no scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// The sorted watermark (maxCommitTS) when the segment was sealed.
    pub seal_watermark: i64,
    /// Replay at open must start no later than this segment (the oldest unsorted record lives there).
    pub replay_from: u64,
    /// Smallest start_ts or commit_ts of any data record (`i64::MAX` if none).
    pub min_ts: i64,
    /// Largest start_ts or commit_ts of any data record (`i64::MIN` if none).
    pub max_ts: i64,
    /// Largest commit_ts of any Commit or Fake record (`i64::MIN` if none).
    pub max_commit: i64,
    /// Number of data records.
    pub records: u64,
    /// Offset where the footer record starts (= end of the data records).
    pub data_end: u64,
    /// Sparse index, ascending offsets.
    pub index: Vec<IndexEntry>,
}

const FOOTER_FIXED: usize = 8 * 7 + 4;
const INDEX_ENTRY_LEN: usize = 24;

impl Footer {
    /// Encodes the footer payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FOOTER_FIXED + INDEX_ENTRY_LEN * self.index.len());
        v.extend_from_slice(&self.seal_watermark.to_le_bytes());
        v.extend_from_slice(&self.replay_from.to_le_bytes());
        v.extend_from_slice(&self.min_ts.to_le_bytes());
        v.extend_from_slice(&self.max_ts.to_le_bytes());
        v.extend_from_slice(&self.max_commit.to_le_bytes());
        v.extend_from_slice(&self.records.to_le_bytes());
        v.extend_from_slice(&self.data_end.to_le_bytes());
        v.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        for e in &self.index {
            v.extend_from_slice(&e.off.to_le_bytes());
            v.extend_from_slice(&e.prefix_max_commit.to_le_bytes());
            v.extend_from_slice(&e.safe_watermark.to_le_bytes());
        }
        v
    }

    /// Decodes a footer payload.
    pub fn decode(b: &[u8]) -> Result<Footer, DecodeError> {
        if b.len() < FOOTER_FIXED {
            return Err(DecodeError::Short { need: FOOTER_FIXED, have: b.len() });
        }
        let n = u32_at(b, 56) as usize;
        let need = FOOTER_FIXED + n.saturating_mul(INDEX_ENTRY_LEN);
        if b.len() != need {
            return Err(DecodeError::BadFooter("index length does not match the payload size"));
        }
        let mut index = Vec::with_capacity(n);
        for i in 0..n {
            let at = FOOTER_FIXED + INDEX_ENTRY_LEN * i;
            index.push(IndexEntry {
                off: u64_at(b, at),
                prefix_max_commit: i64_at(b, at + 8),
                safe_watermark: i64_at(b, at + 16),
            });
        }
        let f = Footer {
            seal_watermark: i64_at(b, 0),
            replay_from: u64_at(b, 8),
            min_ts: i64_at(b, 16),
            max_ts: i64_at(b, 24),
            max_commit: i64_at(b, 32),
            records: u64_at(b, 40),
            data_end: u64_at(b, 48),
            index,
        };
        if f.data_end < HEADER_LEN as u64 {
            return Err(DecodeError::BadFooter("data end inside the header"));
        }
        if f.index.windows(2).any(|w| w[0].off >= w[1].off) || f.index.iter().any(|e| e.off >= f.data_end) {
            return Err(DecodeError::BadFooter("index offsets not ascending inside the data"));
        }
        Ok(f)
    }
}

/// Encodes the footer record plus trailer that seal a segment whose data ends at `footer.data_end`.
pub fn encode_seal(footer: &Footer) -> Vec<u8> {
    let payload = footer.encode();
    let mut out = Vec::with_capacity(encoded_len(payload.len()) + TRAILER_LEN);
    encode_record(
        &mut out,
        &RecordRef { kind: RecordKind::Footer, start_ts: 0, commit_ts: 0, prewrite_at: Loc::default(), payload: &payload },
    );
    out.extend_from_slice(&footer.data_end.to_le_bytes());
    out.extend_from_slice(&TRAILER_MAGIC);
    out
}

/// Reads the footer of a sealed segment from the whole file image `file` (or from its tail: pass
/// `file_len` and the last bytes, with `tail_start` the file offset of `tail[0]`).
pub fn decode_seal(tail: &[u8], tail_start: u64, file_len: u64) -> Result<Footer, DecodeError> {
    if file_len < (HEADER_LEN + TRAILER_LEN) as u64 || tail_start > file_len || (file_len - tail_start) as usize != tail.len()
    {
        return Err(DecodeError::Short { need: HEADER_LEN + TRAILER_LEN, have: tail.len() });
    }
    if tail.len() < TRAILER_LEN {
        return Err(DecodeError::Short { need: TRAILER_LEN, have: tail.len() });
    }
    let t = &tail[tail.len() - TRAILER_LEN..];
    if t[8..16] != TRAILER_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let footer_off = u64_at(t, 0);
    let footer_end = file_len - TRAILER_LEN as u64;
    if footer_off < HEADER_LEN as u64 || footer_off >= footer_end || footer_off < tail_start {
        return Err(DecodeError::BadFooter("footer offset out of range"));
    }
    let rec = &tail[(footer_off - tail_start) as usize..tail.len() - TRAILER_LEN];
    let (r, used) = decode_record(rec)?;
    if r.kind != RecordKind::Footer || used != rec.len() {
        return Err(DecodeError::BadFooter("trailer does not point at a footer record"));
    }
    let f = Footer::decode(r.payload)?;
    if f.data_end != footer_off {
        return Err(DecodeError::BadFooter("footer data end differs from its offset"));
    }
    Ok(f)
}

/// Why a segment scan stopped before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStop {
    /// Offset of the first byte not accepted.
    pub offset: u64,
    /// What was wrong there.
    pub reason: DecodeError,
}

/// The result of scanning a whole segment image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    /// The header, if it decoded.
    pub header: Result<SegmentHeader, DecodeError>,
    /// Every valid data record (not the pads), in file order, with its offset.
    pub records: Vec<(u64, RecordRef<'a>)>,
    /// Bytes that are valid data (header plus the records and pads); a writer resumes here.
    pub valid_len: u64,
    /// The footer, if the segment is sealed and its footer and trailer are intact right after the data.
    pub footer: Option<Footer>,
    /// Set when bytes after `valid_len` were not accepted (torn or corrupt tail), unless they are a valid seal.
    pub stop: Option<ScanStop>,
}

/// Scans a whole segment image: header, then records until the end, a footer, or the first invalid
/// byte (in a v2 segment the preallocated zero tail is such a stop: a zero length is out of range). Pad
/// records are skipped. Never panics; every returned record passed its CRC.
pub fn scan_segment(b: &[u8]) -> Scan<'_> {
    let header = decode_header(b);
    let mut scan = Scan { header: header.clone(), records: Vec::new(), valid_len: 0, footer: None, stop: None };
    if let Err(e) = header {
        scan.stop = Some(ScanStop { offset: 0, reason: e });
        return scan;
    }
    let mut off = HEADER_LEN;
    while off < b.len() {
        match decode_record(&b[off..]) {
            Ok((r, used)) if r.kind == RecordKind::Footer => {
                let _ = used;
                match decode_seal(&b[off..], off as u64, b.len() as u64) {
                    Ok(f) => scan.footer = Some(f),
                    Err(e) => scan.stop = Some(ScanStop { offset: off as u64, reason: e }),
                }
                scan.valid_len = off as u64;
                return scan;
            }
            Ok((r, used)) if r.kind == RecordKind::Pad => off += used,
            Ok((r, used)) => {
                scan.records.push((off as u64, r));
                off += used;
            }
            Err(e) => {
                scan.stop = Some(ScanStop { offset: off as u64, reason: e });
                scan.valid_len = off as u64;
                return scan;
            }
        }
    }
    scan.valid_len = off as u64;
    scan
}

/// The fuzz oracle: scans `b` as a segment image and panics if any invariant breaks: every returned
/// record re-encodes to exactly the bytes at its offset (so its CRC holds), records and pad records are
/// contiguous from the header to `valid_len`, and a reported footer decodes from the tail. A scan itself
/// never panics.
/// Used by `fuzz/` and by the stable regression test over a mutated corpus (feature `oracles`).
#[cfg(any(test, feature = "oracles"))]
pub fn check_scan_invariants(b: &[u8]) {
    let scan = scan_segment(b);
    if scan.header.is_err() {
        assert!(scan.records.is_empty() && scan.valid_len == 0 && scan.footer.is_none());
        return;
    }
    let mut next = HEADER_LEN as u64;
    let skip_pads = |mut at: u64| {
        while let Ok((r, used)) = decode_record(&b[at as usize..]) {
            if r.kind != RecordKind::Pad || at >= scan.valid_len {
                break;
            }
            at += used as u64;
        }
        at
    };
    for (off, r) in &scan.records {
        next = skip_pads(next);
        assert_eq!(*off, next, "records not contiguous");
        let mut enc = Vec::new();
        encode_record(&mut enc, r);
        let at = *off as usize;
        assert_eq!(&b[at..at + enc.len()], &enc[..], "returned record differs from its bytes");
        let (again, used) = decode_record(&b[at..]).expect("a returned record decodes again");
        assert_eq!((again, used), (*r, enc.len()));
        assert!(!matches!(r.kind, RecordKind::Footer | RecordKind::Pad), "footer or pad returned as data");
        next += enc.len() as u64;
    }
    next = skip_pads(next);
    assert_eq!(scan.valid_len, next, "valid_len is not the end of the last record");
    assert!(scan.valid_len as usize <= b.len());
    if let Some(f) = &scan.footer {
        assert_eq!(f.data_end, scan.valid_len);
        assert_eq!(decode_seal(&b[next as usize..], next, b.len() as u64).as_ref(), Ok(f));
        assert!(scan.stop.is_none());
    } else if (scan.valid_len as usize) < b.len() {
        assert!(scan.stop.is_some(), "bytes left over without a reason");
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    u64_at(b, at) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: RecordKind, s: i64, c: i64, p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_record(&mut v, &RecordRef { kind, start_ts: s, commit_ts: c, prewrite_at: Loc { seq: 3, off: 99 }, payload: p });
        v
    }

    #[test]
    fn record_round_trips_and_every_bit_flip_is_caught() {
        let v = rec(RecordKind::Commit, 5, 7, b"hello");
        let (r, used) = decode_record(&v).unwrap();
        assert_eq!(used, v.len());
        assert_eq!((r.kind, r.start_ts, r.commit_ts, r.payload), (RecordKind::Commit, 5, 7, &b"hello"[..]));
        assert_eq!(r.prewrite_at, Loc { seq: 3, off: 99 });
        for bit in 0..v.len() * 8 {
            let mut w = v.clone();
            w[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_record(&w).is_err(), "flip of bit {bit} not detected");
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header(42);
        assert_eq!(decode_header(&h).unwrap(), SegmentHeader { version: VERSION, seq: 42 });
        let mut bad = h;
        bad[17] ^= 1;
        assert!(matches!(decode_header(&bad), Err(DecodeError::BadCrc { .. })));
        assert!(matches!(decode_header(&h[..10]), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn pads_fill_to_the_boundary_within_their_bound_and_scans_skip_them() {
        for pos in 0..3 * 4096u64 {
            let pad = pad_len(pos, 4096);
            assert_eq!((pos + pad as u64) % 4096, 0, "pos {pos}");
            assert!(pad == 0 || (MIN_RECORD_LEN..4096 + MIN_RECORD_LEN).contains(&pad), "pos {pos}: pad {pad}");
        }
        let mut file = encode_header_block(1, 4096);
        assert_eq!(file.len(), 4096);
        file.extend(rec(RecordKind::Fake, 3, 3, b"f"));
        let pad = pad_len(file.len() as u64, 4096);
        encode_pad(&mut file, pad);
        file.extend(rec(RecordKind::Fake, 4, 4, b"g"));
        file.extend(vec![0u8; 8192]); // the preallocated tail
        let s = scan_segment(&file);
        let ts: Vec<i64> = s.records.iter().map(|(_, r)| r.commit_ts).collect();
        assert_eq!(ts, vec![3, 4]);
        assert_eq!(s.records[1].0, 8192);
        assert_eq!(s.valid_len, 8192 + rec(RecordKind::Fake, 4, 4, b"g").len() as u64);
        assert_eq!(s.stop.map(|st| st.reason), Some(DecodeError::BadLength(0)));
        check_scan_invariants(&file);
    }

    #[test]
    fn scan_stops_at_torn_tail_and_reads_a_seal() {
        let mut file = encode_header(1).to_vec();
        file.extend(rec(RecordKind::Prewrite, 1, 0, b"p"));
        file.extend(rec(RecordKind::Commit, 1, 2, b"c"));
        let data_end = file.len() as u64;
        let full = file.clone();
        file.extend(&rec(RecordKind::Fake, 3, 3, b"f")[..10]);
        let s = scan_segment(&file);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.valid_len, data_end);
        assert!(s.stop.is_some());

        let footer = Footer {
            seal_watermark: 2,
            replay_from: 1,
            min_ts: 1,
            max_ts: 2,
            max_commit: 2,
            records: 2,
            data_end,
            index: vec![IndexEntry { off: HEADER_LEN as u64, prefix_max_commit: i64::MIN, safe_watermark: 0 }],
        };
        let mut sealed = full;
        sealed.extend(encode_seal(&footer));
        let s = scan_segment(&sealed);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.footer.as_ref(), Some(&footer));
        assert_eq!(s.stop, None);
        assert_eq!(decode_seal(&sealed, 0, sealed.len() as u64).unwrap(), footer);
    }
}
