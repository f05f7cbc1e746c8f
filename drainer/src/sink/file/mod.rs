//! The file sink (`db-type = "file"`, alias `"pb"`): one framed `pb_binlog.Binlog` record per
//! transaction in `binlog-%016d-<yyyymmddhhmmss>` files, as upstream, for Reparo to replay.
//!
//! # Invariants
//! - The directory is held with an exclusive lock on `<dir>/.lock` for the sink's lifetime.
//! - Records are appended in commit-ts order; a file is rotated once its size reaches
//!   `max_file_size` (512 MiB by default), after the record that crossed it.
//! - `durable_ts` only covers records that have been fsynced (on `flush`, on rotation, and at most
//!   `sync_interval` after a write).
//! - On open, a torn or corrupt tail of the newest file (a crash mid-write) is truncated, logged with
//!   file, offset and reason; the last commit ts the files hold is the sink's own checkpoint
//!   ([`Sink::load_checkpoint`]) and items at or below it are not written twice.
//! - Retention GC removes files whose mtime is older than `retention-time` days, never the newest.
//! - With `compression = "gzip"` a file is a sequence of gzip members, each holding whole records
//!   (a member ends at every fsync and once it holds [`GZIP_MEMBER_RAW`] bytes), so `zcat` of a file
//!   gives the uncompressed format. A torn member is cut off like a torn record. A file is never
//!   mixed: if the newest file's format differs from the configured one, a new file is started.
//!
//! File I/O is synchronous inside the async methods: one `write` per transaction into a buffered
//! writer, handed to the OS whenever the drainer's input is momentarily drained ([`Sink::idle`]) or
//! the buffer fills, and an `fsync` at most once per `sync_interval`.

pub mod binlogfile;
pub mod decode;
pub mod pb;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prost::Message;

use binlogfile::{BinlogFileError, RecordReader};
use crate::sink::{Sink, SinkError};
use crate::txn::Item;

/// How the file sink is set up.
#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    /// The directory (`[syncer.to] dir`, default the drainer's `data-dir`).
    pub dir: PathBuf,
    /// Rotate once a file reaches this many bytes (upstream: 512 MiB).
    pub max_file_size: u64,
    /// `retention-time` in days; 0 keeps files forever.
    pub retention_days: u64,
    /// The longest a written record waits for its fsync while writes continue.
    pub sync_interval: Duration,
    /// `[syncer.to] compression = "gzip"`: write gzip members instead of plain records.
    pub gzip: bool,
}

/// A gzip member is finished once it holds this many uncompressed bytes (and at every fsync): it
/// bounds what a repair or a reader holds in memory for one member.
pub const GZIP_MEMBER_RAW: u64 = 4 << 20;

impl FileSinkConfig {
    /// Upstream's defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_file_size: binlogfile::DEFAULT_MAX_FILE_SIZE,
            retention_days: 0,
            sync_interval: Duration::from_secs(1),
            gzip: false,
        }
    }
}

/// A failure of the file sink.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    /// An I/O error on a file or the directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the directory.
    #[error("{path} is locked by another process (is another drainer writing to this directory?)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// Existing files cannot be listed or read.
    #[error(transparent)]
    Format(#[from] BinlogFileError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FileSinkError + '_ {
    move |source| FileSinkError::Io { path: path.to_path_buf(), source }
}

/// The file sink. See the module docs.
#[derive(Debug)]
pub struct FileSink {
    cfg: FileSinkConfig,
    _lock: File,
    out: BufWriter<File>,
    path: PathBuf,
    index: u64,
    offset: u64,
    /// Commit ts of the last record in the files at open (0 if none).
    files_ts: i64,
    /// Highest commit ts accepted so far.
    written_ts: i64,
    durable_ts: i64,
    /// Records written since the last fsync.
    dirty: bool,
    last_sync: Instant,
    last_gc: Instant,
    buf: Vec<u8>,
    /// The open gzip member (compression on, records written since it started).
    gz: Option<flate2::write::GzEncoder<Vec<u8>>>,
    /// Uncompressed bytes in the open gzip member.
    member_raw: u64,
}

impl FileSink {
    /// Opens (creating) the directory, takes its lock, repairs a torn tail of the newest file and
    /// continues appending to it, or starts `binlog-0000000000000000-<now>`.
    pub fn open(cfg: FileSinkConfig) -> Result<Self, FileSinkError> {
        std::fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let lock_path = cfg.dir.join(".lock");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(FileSinkError::Locked { path: lock_path }),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }

        let files = binlogfile::list_files(&cfg.dir)?;
        let (mut path, mut index, mut offset, files_ts) = match files.last() {
            None => {
                let path = cfg.dir.join(binlogfile::file_name(0, chrono::Local::now().naive_local()));
                (path, 0, 0, 0)
            }
            Some((path, name)) => {
                let (good_end, mut last_ts) = scan_and_repair(path)?;
                if last_ts == 0 && files.len() >= 2 {
                    last_ts = last_commit_ts(&files[files.len() - 2].0)?;
                }
                (path.clone(), name.index, good_end, last_ts)
            }
        };
        if offset > 0 && binlogfile::is_gzip(&path)? != cfg.gzip {
            index += 1;
            path = cfg.dir.join(binlogfile::file_name(index, chrono::Local::now().naive_local()));
            offset = 0;
            tracing::info!(file = %path.display(), gzip = cfg.gzip, "file sink: compression changed, starting a new file");
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        if offset == 0 {
            sync_dir(&cfg.dir)?;
        }
        let mut sink = Self {
            _lock: lock,
            out: BufWriter::with_capacity(256 * 1024, file),
            path,
            index,
            offset,
            files_ts,
            written_ts: files_ts,
            durable_ts: files_ts,
            dirty: false,
            last_sync: Instant::now(),
            last_gc: Instant::now(),
            buf: Vec::new(),
            gz: None,
            member_raw: 0,
            cfg,
        };
        sink.gc()?;
        Ok(sink)
    }

    /// The file currently appended to.
    pub fn current_file(&self) -> &Path {
        &self.path
    }

    /// Appends `item` (if it carries anything) without waiting for an fsync.
    pub fn append(&mut self, item: &Item) -> Result<(), FileSinkError> {
        if item.commit_ts <= self.files_ts {
            tracing::debug!(commit_ts = item.commit_ts, "file sink: already in the files, skipped");
            return Ok(());
        }
        if let Some(binlog) = pb::to_pb(item) {
            self.buf.clear();
            let payload = binlog.encode_to_vec();
            binlogfile::encode_record(&payload, &mut self.buf);
            let t = Instant::now();
            let written = if self.cfg.gzip {
                self.write_compressed()?
            } else {
                self.out.write_all(&self.buf).map_err(io_err(&self.path))?;
                self.buf.len() as u64
            };
            let m = crate::metrics::metrics();
            m.binlogfile_write_duration.with_label_values(&["write"]).observe(t.elapsed().as_secs_f64());
            m.binlogfile_write_size.with_label_values(&["local"]).observe(written as f64);
            self.offset += written;
            self.dirty = true;
        }
        self.written_ts = self.written_ts.max(item.commit_ts);
        if !self.dirty {
            self.durable_ts = self.written_ts;
        }
        if self.offset >= self.cfg.max_file_size {
            self.rotate()?;
        } else if self.dirty && self.last_sync.elapsed() >= self.cfg.sync_interval {
            self.sync()?;
        }
        if self.cfg.retention_days > 0 && self.last_gc.elapsed() >= Duration::from_secs(3600) {
            self.gc()?;
        }
        Ok(())
    }

    /// Adds the record in `buf` to the open gzip member (starting one if needed) and writes what the
    /// compressor has produced; returns the file bytes written.
    fn write_compressed(&mut self) -> Result<u64, FileSinkError> {
        let enc = self.gz.get_or_insert_with(|| flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        enc.write_all(&self.buf).map_err(io_err(&self.path))?;
        self.member_raw += self.buf.len() as u64;
        if self.member_raw >= GZIP_MEMBER_RAW {
            return self.finish_member();
        }
        let produced = std::mem::take(enc.get_mut());
        self.out.write_all(&produced).map_err(io_err(&self.path))?;
        Ok(produced.len() as u64)
    }

    /// Ends the open gzip member, if any, writing its tail; returns the file bytes written.
    fn finish_member(&mut self) -> Result<u64, FileSinkError> {
        let Some(enc) = self.gz.take() else { return Ok(0) };
        self.member_raw = 0;
        let tail = enc.finish().map_err(io_err(&self.path))?;
        self.out.write_all(&tail).map_err(io_err(&self.path))?;
        Ok(tail.len() as u64)
    }

    /// Hands buffered records to the OS without an fsync, so readers of the file see them (for a
    /// compressed file: what the compressor has produced so far).
    pub fn write_out(&mut self) -> Result<(), FileSinkError> {
        self.out.flush().map_err(io_err(&self.path))
    }

    /// Flushes and fsyncs the current file; everything written is then durable.
    pub fn sync(&mut self) -> Result<i64, FileSinkError> {
        if self.dirty {
            self.offset += self.finish_member()?;
            let t = Instant::now();
            self.out.flush().map_err(io_err(&self.path))?;
            self.out.get_ref().sync_data().map_err(io_err(&self.path))?;
            crate::metrics::metrics()
                .binlogfile_write_duration
                .with_label_values(&["sync"])
                .observe(t.elapsed().as_secs_f64());
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        self.durable_ts = self.written_ts;
        Ok(self.durable_ts)
    }

    fn rotate(&mut self) -> Result<(), FileSinkError> {
        self.dirty = true; // always fsync a file before leaving it
        self.sync()?;
        self.index += 1;
        self.path = self.cfg.dir.join(binlogfile::file_name(self.index, chrono::Local::now().naive_local()));
        let file = OpenOptions::new().create_new(true).append(true).open(&self.path).map_err(io_err(&self.path))?;
        sync_dir(&self.cfg.dir)?;
        self.out = BufWriter::with_capacity(256 * 1024, file);
        self.offset = 0;
        tracing::info!(file = %self.path.display(), "file sink: rotated");
        if self.cfg.retention_days > 0 {
            self.gc()?;
        }
        Ok(())
    }

    /// Removes files older than `retention_days` (by mtime), never the current one.
    fn gc(&mut self) -> Result<(), FileSinkError> {
        self.last_gc = Instant::now();
        if self.cfg.retention_days == 0 {
            return Ok(());
        }
        let keep = Duration::from_secs(self.cfg.retention_days * 24 * 3600);
        let now = SystemTime::now();
        for (path, _) in binlogfile::list_files(&self.cfg.dir)? {
            if path == self.path {
                continue;
            }
            let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).map_err(io_err(&path))?;
            if now.duration_since(mtime).unwrap_or_default() > keep {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                tracing::info!(file = %path.display(), "file sink: removed by retention-time");
            }
        }
        Ok(())
    }
}

/// Reads the newest file to its last good record (for a gzip file: its last whole, good member),
/// truncating anything after it (a torn write), and returns the good length and the last record's
/// commit ts (0 if it holds none).
fn scan_and_repair(path: &Path) -> Result<(u64, i64), FileSinkError> {
    if binlogfile::is_gzip(path)? {
        return scan_and_repair_gzip(path);
    }
    let mut r = RecordReader::open(path)?;
    let mut last_ts = 0;
    loop {
        match r.next_binlog() {
            Ok(Some((_, b))) => last_ts = b.commit_ts(),
            Ok(None) => return Ok((r.offset(), last_ts)),
            Err(e @ BinlogFileError::Io { .. }) => return Err(e.into()),
            Err(e) => {
                truncate_tail(path, r.offset(), &e)?;
                return Ok((r.offset(), last_ts));
            }
        }
    }
}

fn scan_and_repair_gzip(path: &Path) -> Result<(u64, i64), FileSinkError> {
    use std::io::{BufRead, Read, Seek};
    let file = File::open(path).map_err(io_err(path))?;
    let mut input = io::BufReader::new(file);
    let (mut good, mut last_ts) = (0u64, 0i64);
    loop {
        if input.fill_buf().map_err(io_err(path))?.is_empty() {
            return Ok((good, last_ts));
        }
        let mut raw = Vec::new();
        // A decoder over `&mut input` consumes exactly one member, so the position after it is the
        // member's end.
        let member = flate2::bufread::GzDecoder::new(&mut input).read_to_end(&mut raw);
        let bad: Option<String> = match member {
            Err(e) => Some(format!("gzip member at offset {good}: {e}")),
            Ok(_) => {
                let mut records = RecordReader::from_bytes(path, raw);
                let mut member_last = last_ts;
                let mut bad = None;
                loop {
                    match records.next_binlog() {
                        Ok(Some((_, b))) => member_last = b.commit_ts(),
                        Ok(None) => break,
                        Err(e) => {
                            bad = Some(format!("gzip member at offset {good}: {e}"));
                            break;
                        }
                    }
                }
                if bad.is_none() {
                    last_ts = member_last;
                }
                bad
            }
        };
        if let Some(reason) = bad {
            truncate_tail(path, good, &reason)?;
            return Ok((good, last_ts));
        }
        good = input.stream_position().map_err(io_err(path))?;
    }
}

fn truncate_tail(path: &Path, good: u64, reason: &dyn std::fmt::Display) -> Result<(), FileSinkError> {
    tracing::warn!(file = %path.display(), offset = good, reason = %reason, "file sink: truncating a torn tail");
    crate::metrics::metrics().binlogfile_corruption.inc();
    let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
    f.set_len(good).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(())
}

fn last_commit_ts(path: &Path) -> Result<i64, FileSinkError> {
    let mut r = RecordReader::open(path)?;
    let mut last = 0;
    while let Some((_, b)) = r.next_binlog()? {
        last = b.commit_ts();
    }
    Ok(last)
}

fn sync_dir(dir: &Path) -> Result<(), FileSinkError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

impl Sink for FileSink {
    async fn load_checkpoint(&mut self) -> Result<Option<i64>, SinkError> {
        Ok((self.files_ts > 0).then_some(self.files_ts))
    }

    async fn write(&mut self, item: Arc<Item>) -> Result<(), SinkError> {
        self.append(&item).map_err(|e| SinkError::new("file", format!("commit ts {}: {e}", item.commit_ts)))
    }

    fn durable_ts(&self) -> i64 {
        self.durable_ts
    }

    async fn flush(&mut self) -> Result<i64, SinkError> {
        self.sync().map_err(|e| SinkError::new("file", e))
    }

    async fn idle(&mut self) -> Result<(), SinkError> {
        self.write_out().map_err(|e| SinkError::new("file", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{Body, Column, Ddl, RowChange, TableChanges, TableSchema, Value, mysql_type};

    fn table() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: 1,
            schema: "s".into(),
            name: "t".into(),
            columns: vec![
                Column { name: "id".into(), tp: mysql_type::LONG, primary_key: true, ..Default::default() },
                Column { name: "v".into(), tp: mysql_type::VARCHAR, ..Default::default() },
            ],
            ..Default::default()
        })
    }

    fn insert(ts: i64, id: i64) -> Item {
        Item {
            start_ts: ts - 1,
            commit_ts: ts,
            schema_version: 1,
            body: Body::Dml(vec![TableChanges {
                table: table(),
                rows: vec![RowChange::Insert(vec![Some(Value::Int(id)), Some(Value::Bytes(b"ab".to_vec()))])],
            }]),
        }
    }

    /// The exact bytes of one file-sink record for a one-row insert, built by hand from §9.3.
    #[test]
    fn golden_insert_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::open(FileSinkConfig::new(dir.path())).unwrap();
        sink.append(&insert(9, 1)).unwrap();
        sink.sync().unwrap();
        let bytes = std::fs::read(sink.current_file()).unwrap();

        // column id: name "id", tp [3], mysql_type "int", value varint(1) = [08 02]
        let col_id: &[u8] = &[0x0a, 2, b'i', b'd', 0x12, 1, 3, 0x1a, 3, b'i', b'n', b't', 0x22, 2, 8, 2];
        // column v: name "v", tp [15], mysql_type "varchar", value compactBytes("ab") = [02 04 'a' 'b']
        let col_v: &[u8] =
            &[0x0a, 1, b'v', 0x12, 1, 15, 0x1a, 7, b'v', b'a', b'r', b'c', b'h', b'a', b'r', 0x22, 4, 2, 4, b'a', b'b'];
        let mut event = vec![0x0a, 1, b's', 0x12, 1, b't', 0x18, 0, 0x22, col_id.len() as u8];
        event.extend_from_slice(col_id);
        event.extend_from_slice(&[0x22, col_v.len() as u8]);
        event.extend_from_slice(col_v);
        let mut payload = vec![0x08, 0, 0x10, 9, 0x1a, (event.len() + 2) as u8, 0x0a, event.len() as u8];
        payload.extend_from_slice(&event);

        let mut want = vec![0x04, 0x05, 0x1b, 0x1c];
        want.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        want.extend_from_slice(&payload);
        want.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        assert_eq!(bytes, want);
        let name = sink.current_file().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("binlog-0000000000000000-") && name.len() == 38, "{name}");
    }

    #[tokio::test]
    async fn durable_ts_follows_fsync_and_empty_items() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = FileSinkConfig::new(dir.path());
        cfg.sync_interval = Duration::from_secs(3600);
        let mut sink = FileSink::open(cfg).unwrap();
        let empty = |ts| Item { start_ts: 0, commit_ts: ts, schema_version: 0, body: Body::Empty };
        sink.write(Arc::new(empty(5))).await.unwrap();
        assert_eq!(sink.durable_ts(), 5, "an empty item with nothing pending is durable at once");
        sink.write(Arc::new(insert(7, 1))).await.unwrap();
        sink.write(Arc::new(empty(8))).await.unwrap();
        assert_eq!(sink.durable_ts(), 5, "not fsynced yet");
        assert_eq!(sink.flush().await.unwrap(), 8);
    }

    #[test]
    fn rotates_locks_resumes_and_repairs_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = FileSinkConfig::new(dir.path());
        cfg.max_file_size = 100;
        let mut sink = FileSink::open(cfg.clone()).unwrap();
        assert!(matches!(FileSink::open(cfg.clone()), Err(FileSinkError::Locked { .. })));
        for ts in 1..=6 {
            sink.append(&insert(ts * 10, ts)).unwrap();
        }
        let ddl = Ddl { schema: "s".into(), table: "t".into(), query: "alter table t add c int".into(), job_id: 3, table_after: None };
        sink.append(&Item { start_ts: 0, commit_ts: 70, schema_version: 2, body: Body::Ddl(ddl) }).unwrap();
        sink.sync().unwrap();
        drop(sink);
        let files = binlogfile::list_files(dir.path()).unwrap();
        assert!(files.len() >= 3, "{files:?}");

        // Tear the newest non-empty file's last record.
        let (last, _) = files.iter().rev().find(|(p, _)| std::fs::metadata(p).unwrap().len() > 0).unwrap().clone();
        let len = std::fs::metadata(&last).unwrap().len();
        OpenOptions::new().write(true).open(&last).unwrap().set_len(len - 3).unwrap();
        // Remove the (empty) files after it so it is the newest.
        for (p, _) in &files {
            if p > &last {
                std::fs::remove_file(p).unwrap();
            }
        }
        let mut sink = FileSink::open(cfg).unwrap();
        assert_eq!(sink.files_ts, 60, "the torn DDL record at ts 70 is gone; 60 is the last whole record");
        sink.append(&insert(60, 6)).unwrap(); // already there: skipped
        sink.append(&insert(80, 8)).unwrap();
        sink.sync().unwrap();
        drop(sink);

        let mut seen = Vec::new();
        for (p, _) in binlogfile::list_files(dir.path()).unwrap() {
            let mut r = RecordReader::open(&p).unwrap();
            while let Some((_, b)) = r.next_binlog().unwrap() {
                seen.push(b.commit_ts());
            }
        }
        assert_eq!(seen, vec![10, 20, 30, 40, 50, 60, 80]);
    }

    fn read_all(dir: &Path) -> Vec<i64> {
        let mut seen = Vec::new();
        for (p, _) in binlogfile::list_files(dir).unwrap() {
            let mut r = RecordReader::open(&p).unwrap();
            while let Some((_, b)) = r.next_binlog().unwrap() {
                seen.push(b.commit_ts());
            }
        }
        seen
    }

    #[test]
    fn gzip_files_decompress_to_the_plain_format_and_repair_a_torn_member() {
        use std::io::Read;
        let (plain, packed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut gz_cfg = FileSinkConfig::new(packed.path());
        gz_cfg.gzip = true;
        let mut a = FileSink::open(FileSinkConfig::new(plain.path())).unwrap();
        let mut b = FileSink::open(gz_cfg.clone()).unwrap();
        for ts in 1..=9 {
            a.append(&insert(ts * 10, ts)).unwrap();
            b.append(&insert(ts * 10, ts)).unwrap();
            if ts % 3 == 0 {
                b.sync().unwrap(); // one member per fsync: three members
            }
        }
        a.sync().unwrap();
        drop((a, b));
        let plain_bytes = std::fs::read(binlogfile::list_files(plain.path()).unwrap()[0].0.clone()).unwrap();
        let gz_path = binlogfile::list_files(packed.path()).unwrap()[0].0.clone();
        let gz_bytes = std::fs::read(&gz_path).unwrap();
        assert_eq!(gz_bytes[..2], binlogfile::GZIP_MAGIC);
        let mut unpacked = Vec::new();
        flate2::read::MultiGzDecoder::new(gz_bytes.as_slice()).read_to_end(&mut unpacked).unwrap();
        assert_eq!(unpacked, plain_bytes, "zcat of the gzip file is the plain file");
        assert_eq!(read_all(packed.path()), (1..=9).map(|t| t * 10).collect::<Vec<_>>());

        // A torn last member: the reader names the file; the sink cuts the member off on open.
        OpenOptions::new().write(true).open(&gz_path).unwrap().set_len(gz_bytes.len() as u64 - 5).unwrap();
        let mut r = RecordReader::open(&gz_path).unwrap();
        let err = loop {
            match r.next_binlog() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a torn member must not read as a clean end"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains(&gz_path.display().to_string()), "{err}");
        let mut b = FileSink::open(gz_cfg).unwrap();
        assert_eq!(b.files_ts, 60, "the member holding 70..90 was torn; 60 ends the last whole one");
        b.append(&insert(70, 7)).unwrap();
        b.sync().unwrap();
        drop(b);
        assert_eq!(read_all(packed.path()), vec![10, 20, 30, 40, 50, 60, 70]);
    }

    #[test]
    fn a_compression_change_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = FileSinkConfig::new(dir.path());
        let mut sink = FileSink::open(cfg.clone()).unwrap();
        sink.append(&insert(10, 1)).unwrap();
        sink.sync().unwrap();
        drop(sink);
        cfg.gzip = true;
        let mut sink = FileSink::open(cfg.clone()).unwrap();
        assert!(sink.current_file().file_name().unwrap().to_string_lossy().starts_with("binlog-0000000000000001-"));
        sink.append(&insert(10, 1)).unwrap(); // already in the plain file: skipped
        sink.append(&insert(20, 2)).unwrap();
        sink.sync().unwrap();
        drop(sink);
        cfg.gzip = false;
        let mut sink = FileSink::open(cfg).unwrap();
        assert_eq!(sink.files_ts, 20);
        sink.append(&insert(30, 3)).unwrap();
        sink.sync().unwrap();
        drop(sink);
        let files = binlogfile::list_files(dir.path()).unwrap();
        let kinds: Vec<bool> = files.iter().map(|(p, _)| binlogfile::is_gzip(p).unwrap()).collect();
        assert_eq!(kinds, [false, true, false]);
        assert_eq!(read_all(dir.path()), vec![10, 20, 30]);
    }

    #[test]
    fn retention_removes_old_files_but_never_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("binlog-0000000000000000-20000101000000");
        std::fs::write(&old, b"").unwrap();
        let f = File::options().write(true).open(&old).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3 * 24 * 3600)).unwrap();
        let newest = dir.path().join("binlog-0000000000000001-20000101000000");
        std::fs::write(&newest, b"").unwrap();
        File::options().write(true).open(&newest).unwrap().set_modified(SystemTime::now() - Duration::from_secs(9 * 24 * 3600)).unwrap();
        let mut cfg = FileSinkConfig::new(dir.path());
        cfg.retention_days = 2;
        let sink = FileSink::open(cfg).unwrap();
        assert!(!old.exists());
        assert!(newest.exists(), "the newest file is never removed");
        assert_eq!(sink.current_file(), newest);
    }
}
