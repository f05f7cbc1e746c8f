//! Segment files: their names (`{seq:016}.seg`), listing a directory's segments, reading a sealed
//! segment's footer from its tail, scanning a segment in bounded memory, and `SegMeta`, what the store
//! keeps in memory about each segment (its summary and sparse index). The bytes are `format`'s.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{StoreError, io_err};
use crate::format::{self, Footer, HEADER_LEN, IndexEntry, RecordKind, RecordRef, TRAILER_LEN};

/// The file-name suffix of a segment.
const SUFFIX: &str = ".seg";

/// The file name of segment `seq`: its sequence number in 16 zero-padded digits, then `.seg`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:016}{SUFFIX}")
}

/// The sequence number a segment file name stands for, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SUFFIX)?;
    if stem.len() != 16 {
        return None;
    }
    stem.parse().ok()
}

/// The file name of segment `seq`.
pub(crate) fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(file_name(seq))
}

/// A new sparse-index entry is added at the first record at least this far past the previous entry.
pub(crate) const INDEX_EVERY: u64 = 64 << 10;

/// What the store knows about one segment without reading it.
#[derive(Debug, Clone)]
pub(crate) struct SegMeta {
    pub(crate) sealed: bool,
    /// End of the data records: the footer's offset when sealed, the durable end when active.
    pub(crate) data_end: u64,
    pub(crate) file_len: u64,
    /// Smallest lookup key: start_ts of a Prewrite, commit_ts of a Commit or Fake.
    pub(crate) min_ts: i64,
    /// Largest start_ts or commit_ts.
    pub(crate) max_ts: i64,
    pub(crate) max_commit: i64,
    pub(crate) records: u64,
    pub(crate) index: Vec<IndexEntry>,
    /// From the footer: (watermark at seal, replay_from).
    pub(crate) seal: Option<(i64, u64)>,
}

impl SegMeta {
    /// An active segment without records, whose first record goes at `data_start`.
    pub(crate) fn new(data_start: u64) -> SegMeta {
        SegMeta {
            sealed: false,
            data_end: data_start,
            file_len: data_start,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            max_commit: i64::MIN,
            records: 0,
            index: Vec::new(),
            seal: None,
        }
    }

    pub(crate) fn from_footer(f: &Footer, file_len: u64) -> SegMeta {
        SegMeta {
            sealed: true,
            data_end: f.data_end,
            file_len,
            min_ts: f.min_ts,
            max_ts: f.max_ts,
            max_commit: f.max_commit,
            records: f.records,
            index: f.index.clone(),
            seal: Some((f.seal_watermark, f.replay_from)),
        }
    }

    /// Accounts for a durable record of `len` bytes at `off`.
    /// `safe_watermark`: every Commit at or below it lies before `off`.
    pub(crate) fn observe(&mut self, off: u64, kind: RecordKind, start_ts: i64, commit_ts: i64, len: u64, safe_watermark: i64) {
        if self.index.last().is_none_or(|e| off - e.off >= INDEX_EVERY) {
            self.index.push(IndexEntry { off, prefix_max_commit: self.max_commit, safe_watermark });
        }
        match kind {
            RecordKind::Prewrite => self.min_ts = self.min_ts.min(start_ts),
            RecordKind::Commit | RecordKind::Fake => {
                self.min_ts = self.min_ts.min(commit_ts);
                self.max_commit = self.max_commit.max(commit_ts);
            }
            RecordKind::Rollback | RecordKind::Footer | RecordKind::Pad => {}
        }
        self.max_ts = self.max_ts.max(start_ts).max(commit_ts);
        self.records += 1;
        self.data_end = off + len;
    }

    pub(crate) fn footer(&self, seal_watermark: i64, replay_from: u64) -> Footer {
        Footer {
            seal_watermark,
            replay_from,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            max_commit: self.max_commit,
            records: self.records,
            data_end: self.data_end,
            index: self.index.clone(),
        }
    }
}

pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read dir", dir))? {
        let entry = entry.map_err(io_err("read dir", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_name(name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Reads the footer of a sealed segment from its tail, without scanning it.
pub(crate) fn read_seal(path: &Path) -> Result<(Footer, u64), StoreError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let corrupt = |offset: u64, reason| StoreError::Corrupt { path: path.to_path_buf(), offset, reason };
    if len < (HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(corrupt(0, format::DecodeError::Short { need: HEADER_LEN + TRAILER_LEN, have: len as usize }));
    }
    let mut trailer = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut trailer, len - TRAILER_LEN as u64).map_err(io_err("read", path))?;
    if trailer[8..] != format::TRAILER_MAGIC {
        return Err(corrupt(len - TRAILER_LEN as u64, format::DecodeError::BadMagic));
    }
    let mut off_b = [0u8; 8];
    off_b.copy_from_slice(&trailer[..8]);
    let footer_off = u64::from_le_bytes(off_b);
    if footer_off < HEADER_LEN as u64 || footer_off >= len - TRAILER_LEN as u64 {
        return Err(corrupt(len - TRAILER_LEN as u64, format::DecodeError::BadFooter("footer offset out of range")));
    }
    let mut tail = vec![0u8; (len - footer_off) as usize];
    file.read_exact_at(&mut tail, footer_off).map_err(io_err("read", path))?;
    let footer = format::decode_seal(&tail, footer_off, len).map_err(|e| corrupt(footer_off, e))?;
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0).map_err(io_err("read", path))?;
    format::decode_header(&header).map_err(|e| corrupt(0, e))?;
    Ok((footer, len))
}

/// What [`scan_file`] found: the same answer as [`format::scan_segment`] on the whole file, read in chunks.
pub(crate) struct FileScan {
    pub(crate) header: Result<format::SegmentHeader, format::DecodeError>,
    pub(crate) valid_len: u64,
    pub(crate) footer: Option<Footer>,
    pub(crate) stop: Option<format::ScanStop>,
    pub(crate) file_len: u64,
}

/// Scans a segment file in 1 MiB chunks (bounded memory), calling `f` for every valid data record.
/// Agrees with [`format::scan_segment`] on the whole image; `recovery_check` cross-checks the two.
pub(crate) fn scan_file(path: &Path, mut f: impl FnMut(u64, &RecordRef<'_>)) -> Result<FileScan, StoreError> {
    const CHUNK: usize = 1 << 20;
    let file = File::open(path).map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let read = |buf: &mut [u8], at: u64| file.read_exact_at(buf, at).map_err(io_err("read", path));
    let mut scan = FileScan {
        header: Err(format::DecodeError::Short { need: HEADER_LEN, have: len as usize }),
        valid_len: 0,
        footer: None,
        stop: None,
        file_len: len,
    };
    let mut header = vec![0u8; (len as usize).min(HEADER_LEN)];
    read(&mut header, 0)?;
    scan.header = format::decode_header(&header);
    if let Err(e) = &scan.header {
        scan.stop = Some(format::ScanStop { offset: 0, reason: e.clone() });
        return Ok(scan);
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_off = HEADER_LEN as u64;
    let mut filled = HEADER_LEN as u64;
    loop {
        let mut consumed = 0usize;
        let mut bad = None;
        let mut footer_at = None;
        loop {
            match format::decode_record(&buf[consumed..]) {
                Ok((r, _)) if r.kind == RecordKind::Footer => {
                    footer_at = Some(buf_off + consumed as u64);
                    break;
                }
                Ok((r, used)) if r.kind == RecordKind::Pad => consumed += used,
                Ok((r, used)) => {
                    f(buf_off + consumed as u64, &r);
                    consumed += used;
                }
                Err(format::DecodeError::Short { .. }) => break,
                Err(e) => {
                    bad = Some((buf_off + consumed as u64, e));
                    break;
                }
            }
        }
        if let Some(off) = footer_at {
            let mut tail = vec![0u8; (len - off) as usize];
            read(&mut tail, off)?;
            match format::decode_seal(&tail, off, len) {
                Ok(foot) => scan.footer = Some(foot),
                Err(e) => scan.stop = Some(format::ScanStop { offset: off, reason: e }),
            }
            scan.valid_len = off;
            return Ok(scan);
        }
        if let Some((off, e)) = bad {
            scan.valid_len = off;
            scan.stop = Some(format::ScanStop { offset: off, reason: e });
            return Ok(scan);
        }
        buf.drain(..consumed);
        buf_off += consumed as u64;
        if filled >= len {
            scan.valid_len = buf_off;
            if !buf.is_empty() {
                let reason = format::decode_record(&buf).err().unwrap_or(format::DecodeError::Short { need: format::FRAME_LEN, have: 0 });
                scan.stop = Some(format::ScanStop { offset: buf_off, reason });
            }
            return Ok(scan);
        }
        let need = match format::frame_body_len(&buf) {
            Ok(Some(l)) => (format::FRAME_LEN + l).saturating_sub(buf.len()),
            _ => 0,
        };
        let n = (CHUNK.max(need) as u64).min(len - filled) as usize;
        let old = buf.len();
        buf.resize(old + n, 0);
        read(&mut buf[old..], filled)?;
        filled += n as u64;
    }
}

/// Fsyncs a directory (after creating, renaming or removing an entry in it).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync dir", dir))
}
