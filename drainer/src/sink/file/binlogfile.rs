//! The file sink's on-disk format, shared by the file sink (writer) and Reparo (reader): file names,
//! listing, and the record framing `magic | length | payload | crc32c`. Byte-level description in
//! `drainer/FORMAT.md`.
//!
//! # Invariants
//! - A record is `magic:u32le = 0x1C1B0504, length:u64le, payload[length], crc32c(payload):u32le`.
//! - Files are named `binlog-%016d-<yyyymmddhhmmss>` with contiguous indexes starting at 0.
//! - Readers never trust a length before checking it against what the file still holds, and every
//!   error names the file and the byte offset of the record it is about.
//! - A file written with `[syncer.to] compression = "gzip"` is a multi-member gzip stream whose
//!   decompressed bytes are exactly such records (each member holds whole records); [`RecordReader`]
//!   detects it by the gzip magic and then reports offsets in the decompressed stream.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The first two bytes of a gzip member.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether the file at `path` starts with a gzip member (false for an empty file).
pub fn is_gzip(path: &Path) -> Result<bool, BinlogFileError> {
    let mut head = [0u8; 2];
    let mut f = File::open(path).map_err(|source| BinlogFileError::Io { path: path.to_path_buf(), source })?;
    let n = read_full(&mut f, &mut head).map_err(|source| BinlogFileError::Io { path: path.to_path_buf(), source })?;
    Ok(n == 2 && head == GZIP_MAGIC)
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The record magic, `471532804`.
pub const MAGIC: u32 = 0x1C1B_0504;
/// Bytes before the payload: magic (4) and length (8).
pub const HEADER_LEN: u64 = 12;
/// Bytes after the payload: the CRC-32C (4).
pub const TRAILER_LEN: u64 = 4;
/// Upstream's rotation threshold: a new file once the offset reaches 512 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 512 * 1024 * 1024;
/// The largest payload a reader accepts (upstream caps a Kafka message at 1 GiB; a record is one
/// transaction, so anything larger is corruption).
pub const MAX_PAYLOAD: u64 = 1 << 30;

/// A failure reading or naming binlog files.
#[derive(Debug, thiserror::Error)]
pub enum BinlogFileError {
    /// An I/O error on a file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The bytes at a record start are not the magic.
    #[error("{path}: bad magic {found:#010x} at offset {offset} (want {MAGIC:#010x})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Record start.
        offset: u64,
        /// What was there.
        found: u32,
    },
    /// The file ends inside a record.
    #[error("{path}: short record at offset {offset}: need {need} bytes, file has {have}")]
    Short {
        /// The file.
        path: PathBuf,
        /// Record start.
        offset: u64,
        /// Bytes the record needs from its start.
        need: u64,
        /// Bytes left in the file from the record start.
        have: u64,
    },
    /// A length field larger than [`MAX_PAYLOAD`].
    #[error("{path}: record at offset {offset} claims {len} payload bytes (more than {MAX_PAYLOAD})")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Record start.
        offset: u64,
        /// The claimed length.
        len: u64,
    },
    /// The payload does not match its CRC.
    #[error("{path}: crc mismatch at offset {offset}: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// The file.
        path: PathBuf,
        /// Record start.
        offset: u64,
        /// CRC in the file.
        stored: u32,
        /// CRC of the payload read.
        computed: u32,
    },
    /// A payload that is not a `pb_binlog.Binlog`.
    #[error("{path}: record at offset {offset} is not a pb_binlog.Binlog: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Record start.
        offset: u64,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
    /// File indexes are not contiguous.
    #[error("{dir}: binlog files are not contiguous: expected index {expected}, found {found}")]
    Gap {
        /// The directory.
        dir: PathBuf,
        /// The index that should come next.
        expected: u64,
        /// The file that came instead.
        found: String,
    },
}

/// Appends one framed record holding `payload` to `out`.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + (HEADER_LEN + TRAILER_LEN) as usize);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
}

/// The file name for index `index` created at local time `created` (`20060102150405` layout).
pub fn file_name(index: u64, created: chrono::NaiveDateTime) -> String {
    format!("binlog-{index:016}-{}", created.format("%Y%m%d%H%M%S"))
}

/// What a binlog file name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedName {
    /// The file's index.
    pub index: u64,
    /// The first commit ts, when the name carries it (`binlog-<idx>-<x>-<ts>`), else `None`.
    pub first_ts: Option<i64>,
}

/// Parses a binlog file name: `binlog-<idx>`, `binlog-<idx>-<datetime>` or `binlog-<idx>-<x>-<ts>`,
/// each with an optional `.ext`. Names ending `checkpoint`, `.lock` or `.tmp`, and names that do not
/// start with `binlog-`, give `None`.
pub fn parse_name(name: &str) -> Option<ParsedName> {
    if name.ends_with("checkpoint") || name.ends_with(".lock") || name.ends_with(".tmp") {
        return None;
    }
    let stem = name.strip_prefix("binlog-")?;
    let stem = stem.split_once('.').map_or(stem, |(s, _)| s);
    let parts: Vec<&str> = stem.split('-').collect();
    let index = parts.first()?.parse::<u64>().ok()?;
    match parts.len() {
        1 | 2 => Some(ParsedName { index, first_ts: None }),
        3 => Some(ParsedName { index, first_ts: Some(parts[2].parse().ok()?) }),
        _ => None,
    }
}

/// The binlog files in `dir`, sorted by index, with contiguous indexes checked.
pub fn list_files(dir: &Path) -> Result<Vec<(PathBuf, ParsedName)>, BinlogFileError> {
    let io_err = |source| BinlogFileError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        let Some(parsed) = name.to_str().and_then(parse_name) else { continue };
        if entry.file_type().map_err(io_err)?.is_file() {
            files.push((entry.path(), parsed));
        }
    }
    files.sort_by_key(|(_, p)| p.index);
    for pair in files.windows(2) {
        if pair[1].1.index != pair[0].1.index + 1 {
            return Err(BinlogFileError::Gap {
                dir: dir.to_path_buf(),
                expected: pair[0].1.index + 1,
                found: pair[1].0.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            });
        }
    }
    Ok(files)
}

/// Reads the records of one file in order (plain or gzip-compressed, detected from its first bytes).
pub struct RecordReader {
    path: PathBuf,
    src: Box<dyn Read + Send>,
    /// Offset of the next record (in the decompressed stream for a gzip file).
    offset: u64,
    /// Bytes the stream holds, when known (plain files).
    len: Option<u64>,
    gzip: bool,
}

impl std::fmt::Debug for RecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader").field("path", &self.path).field("offset", &self.offset).field("gzip", &self.gzip).finish()
    }
}

impl RecordReader {
    /// Opens `path` for reading from its start.
    pub fn open(path: &Path) -> Result<Self, BinlogFileError> {
        let io_err = |source| BinlogFileError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut buffered = BufReader::with_capacity(1 << 20, file);
        // The first fill of a file holds its first two bytes unless the file is shorter.
        let gzip = buffered.fill_buf().map_err(io_err)?.starts_with(&GZIP_MAGIC);
        if gzip {
            let src = Box::new(BufReader::with_capacity(1 << 20, flate2::bufread::MultiGzDecoder::new(buffered)));
            Ok(Self { path: path.to_path_buf(), src, offset: 0, len: None, gzip })
        } else {
            Ok(Self { path: path.to_path_buf(), src: Box::new(buffered), offset: 0, len: Some(len), gzip })
        }
    }

    /// Reads the records held in `bytes` (already decompressed); errors name `path`.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Self {
        let len = bytes.len() as u64;
        Self { path: path.to_path_buf(), src: Box::new(io::Cursor::new(bytes)), offset: 0, len: Some(len), gzip: false }
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the next record (for a gzip file: in the decompressed stream).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the file is gzip-compressed.
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    /// The next record's start offset and payload, or `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<(u64, Vec<u8>)>, BinlogFileError> {
        let start = self.offset;
        let left = self.len.map(|l| l - start);
        if left == Some(0) {
            return Ok(None);
        }
        let path = self.path.clone();
        let short = |need, have| BinlogFileError::Short { path, offset: start, need, have };
        if let Some(left) = left
            && left < HEADER_LEN
        {
            return Err(short(HEADER_LEN, left));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        let got = self.read_full(&mut header, start)?;
        if got == 0 {
            return Ok(None); // a compressed stream's clean end
        }
        if got < header.len() {
            return Err(short(HEADER_LEN, got as u64));
        }
        let magic = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        if magic != MAGIC {
            return Err(BinlogFileError::BadMagic { path: self.path.clone(), offset: start, found: magic });
        }
        let len = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
        if len > MAX_PAYLOAD {
            return Err(BinlogFileError::TooLarge { path: self.path.clone(), offset: start, len });
        }
        let need = HEADER_LEN + len + TRAILER_LEN;
        if let Some(left) = left
            && left < need
        {
            return Err(short(need, left));
        }
        // Never allocate a claimed length up front: a compressed stream's end is not known.
        let mut payload = Vec::with_capacity(len.min(1 << 20) as usize);
        let got = (&mut self.src).take(len).read_to_end(&mut payload).map_err(|e| self.io_error(e, start))?;
        let mut crc = [0u8; 4];
        let got_crc = if got as u64 == len { self.read_full(&mut crc, start)? } else { 0 };
        if (got as u64) < len || got_crc < crc.len() {
            return Err(short(need, HEADER_LEN + got as u64 + got_crc as u64));
        }
        let stored = u32::from_le_bytes(crc);
        let computed = crc32c::crc32c(&payload);
        if stored != computed {
            return Err(BinlogFileError::Crc { path: self.path.clone(), offset: start, stored, computed });
        }
        self.offset = start + need;
        Ok(Some((start, payload)))
    }

    /// The next record decoded as a `pb_binlog.Binlog`, with its offset.
    pub fn next_binlog(&mut self) -> Result<Option<(u64, crate::proto::pb::Binlog)>, BinlogFileError> {
        use prost::Message;
        let Some((offset, payload)) = self.next_record()? else { return Ok(None) };
        let binlog = crate::proto::pb::Binlog::decode(payload.as_slice())
            .map_err(|source| BinlogFileError::Decode { path: self.path.clone(), offset, source })?;
        Ok(Some((offset, binlog)))
    }

    fn read_full(&mut self, buf: &mut [u8], record: u64) -> Result<usize, BinlogFileError> {
        read_full(&mut self.src, buf).map_err(|e| self.io_error(e, record))
    }

    fn io_error(&self, source: io::Error, record: u64) -> BinlogFileError {
        let what = if self.gzip { "decompressing" } else { "reading" };
        BinlogFileError::Io {
            path: self.path.clone(),
            source: io::Error::new(source.kind(), format!("{what} record at offset {record}: {source}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_golden_bytes() {
        let mut out = Vec::new();
        encode_record(b"abc", &mut out);
        let mut want = vec![0x04, 0x05, 0x1b, 0x1c, 3, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', b'c'];
        // CRC-32C("abc") = 0x364b3fb7 (RFC 3720 check values use the same polynomial).
        want.extend_from_slice(&0x364b_3fb7u32.to_le_bytes());
        assert_eq!(out, want);
    }

    #[test]
    fn names_format_and_parse() {
        let t = chrono::NaiveDate::from_ymd_opt(2019, 1, 1).unwrap().and_hms_opt(1, 1, 1).unwrap();
        assert_eq!(file_name(0, t), "binlog-0000000000000000-20190101010101");
        assert_eq!(parse_name("binlog-0000000000000007-20190101010101"), Some(ParsedName { index: 7, first_ts: None }));
        assert_eq!(parse_name("binlog-0000000000000003"), Some(ParsedName { index: 3, first_ts: None }));
        assert_eq!(
            parse_name("binlog-0000000000000002-20190101010101-4123.tar"),
            Some(ParsedName { index: 2, first_ts: Some(4123) })
        );
        for ignored in ["binlog-0000000000000001.tmp", ".lock", "savepoint", "binlog.checkpoint", "x-1", "binlog-x"] {
            assert_eq!(parse_name(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn reader_names_file_and_offset_of_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("binlog-0000000000000000-20190101010101");
        let mut bytes = Vec::new();
        encode_record(b"first", &mut bytes);
        let second = bytes.len() as u64;
        encode_record(b"second", &mut bytes);
        std::fs::write(&path, &bytes).unwrap();

        let mut r = RecordReader::open(&path).unwrap();
        assert_eq!(r.next_record().unwrap(), Some((0, b"first".to_vec())));
        assert_eq!(r.next_record().unwrap(), Some((second, b"second".to_vec())));
        assert_eq!(r.next_record().unwrap(), None);

        // Flip a payload byte of the second record: CRC error at its offset.
        let mut bad = bytes.clone();
        bad[second as usize + 13] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let mut r = RecordReader::open(&path).unwrap();
        r.next_record().unwrap();
        let err = r.next_record().unwrap_err().to_string();
        assert!(err.contains("crc mismatch at offset 21") && err.contains("binlog-0000000000000000"), "{err}");

        // Bad magic.
        let mut bad = bytes.clone();
        bad[second as usize] = 0;
        std::fs::write(&path, &bad).unwrap();
        let mut r = RecordReader::open(&path).unwrap();
        r.next_record().unwrap();
        let err = r.next_record().unwrap_err().to_string();
        assert!(err.contains("bad magic") && err.contains("offset 21"), "{err}");

        // Torn tail.
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let mut r = RecordReader::open(&path).unwrap();
        r.next_record().unwrap();
        let err = r.next_record().unwrap_err().to_string();
        assert!(err.contains("short record at offset 21: need 22 bytes, file has 20"), "{err}");
    }

    #[test]
    fn listing_sorts_and_refuses_gaps() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["binlog-0000000000000001-20200101000000", "binlog-0000000000000000-20200101000000", ".lock", "savepoint"]
        {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let files = list_files(dir.path()).unwrap();
        assert_eq!(files.iter().map(|(_, p)| p.index).collect::<Vec<_>>(), vec![0, 1]);
        std::fs::write(dir.path().join("binlog-0000000000000003-20200101000000"), b"").unwrap();
        let err = list_files(dir.path()).unwrap_err().to_string();
        assert!(err.contains("expected index 2"), "{err}");
    }
}
