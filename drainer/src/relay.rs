//! `[syncer.relay]`: the relay log, as upstream (`drainer/relay`).
//!
//! With `log-dir` set, the MySQL/TiDB sink is wrapped in [`Relayed`]: every transaction is written to
//! the relay log before the sink gets it, as a secondary binlog (`slave.binlog.Binlog`, the Kafka
//! sink's message) in the file sink's record framing (`magic | length | payload | crc32c`, files
//! `binlog-%016d-<time>`, see `drainer/FORMAT.md`), and files whose transactions the downstream has
//! all made durable are removed (never the newest). A file is rotated once it reaches
//! `max-file-size` bytes.
//!
//! When the drainer cannot reach PD at start and the downstream's checkpoint is not `consistent` (the
//! last run did not stop cleanly), [`replay`] applies every relayed transaction after the checkpoint
//! in safe mode and saves a consistent checkpoint, so the downstream can be brought to a consistent
//! state after the upstream cluster is lost; the drainer then exits with the PD error, as upstream.
//!
//! # Durability
//! A record is handed to the OS (one `write`) before the sink sees the transaction, so it survives a
//! crash of the drainer process; it is fsynced when its file is rotated or closed, as upstream's
//! binlogger (not per record).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;

use crate::sink::file::binlogfile::{self, BinlogFileError, RecordReader};
use crate::proto::slave;
use crate::sink::{Sink, SinkError};
use crate::txn::Item;

/// Upstream's default `max-file-size`.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// A relay log failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The relay directory cannot be created or written.
    #[error("[syncer.relay] log-dir {}: {source} (it must be a directory the drainer can create and write)", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing, syncing or removing a relay file failed.
    #[error("relay log {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading the relay files failed, or a record in the middle of them is corrupt.
    #[error("relay log: {0}")]
    File(#[from] BinlogFileError),
    /// A record is not a secondary binlog.
    #[error("relay log {} offset {offset}: not a secondary binlog: {source}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The record's offset.
        offset: u64,
        /// The protobuf error.
        source: prost::DecodeError,
    },
}

/// The writer side: appends records, rotates and removes files.
#[derive(Debug)]
pub struct RelayLog {
    dir: PathBuf,
    max_file_size: u64,
    file: File,
    path: PathBuf,
    index: u64,
    offset: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RelayError + '_ {
    move |source| RelayError::Io { path: path.to_path_buf(), source }
}

impl RelayLog {
    /// Opens the relay log in `dir` (created if missing; an unwritable directory is an error naming
    /// it). A torn tail left in the newest file by a crash is cut off; writing goes to a new file.
    pub fn open(dir: &Path, max_file_size: u64) -> Result<RelayLog, RelayError> {
        let dir_err = |source| RelayError::Dir { dir: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let files = binlogfile::list_files(dir)?;
        if let Some((last, _)) = files.last() {
            repair_tail(last)?;
        }
        let index = files.last().map(|(_, n)| n.index + 1).unwrap_or(0);
        let path = dir.join(binlogfile::file_name(index, chrono::Local::now().naive_local()));
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(dir_err)?;
        let max_file_size = if max_file_size == 0 { DEFAULT_MAX_FILE_SIZE } else { max_file_size };
        Ok(RelayLog { dir: dir.to_path_buf(), max_file_size, file, path, index, offset: 0 })
    }

    /// Appends one record (a secondary binlog); returns the index of the file holding it.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, RelayError> {
        let mut buf = Vec::with_capacity(payload.len() + 16);
        binlogfile::encode_record(payload, &mut buf);
        self.file.write_all(&buf).map_err(io(&self.path))?;
        let index = self.index;
        self.offset += buf.len() as u64;
        if self.offset >= self.max_file_size {
            self.rotate()?;
        }
        Ok(index)
    }

    fn rotate(&mut self) -> Result<(), RelayError> {
        self.file.sync_all().map_err(io(&self.path))?;
        self.index += 1;
        self.path = self.dir.join(binlogfile::file_name(self.index, chrono::Local::now().naive_local()));
        self.file = OpenOptions::new().create(true).append(true).open(&self.path).map_err(io(&self.path))?;
        self.offset = 0;
        Ok(())
    }

    /// Removes every file before file `index` (the newest is always kept).
    pub fn gc(&mut self, index: u64) -> Result<(), RelayError> {
        for (path, name) in binlogfile::list_files(&self.dir)? {
            if name.index < index && name.index < self.index {
                std::fs::remove_file(&path).map_err(io(&path))?;
                tracing::info!(file = %path.display(), "relay log file removed: the downstream has applied it");
            }
        }
        Ok(())
    }

    /// Fsyncs the current file.
    pub fn sync(&mut self) -> Result<(), RelayError> {
        self.file.sync_all().map_err(io(&self.path))
    }
}

/// Cuts a torn or corrupt tail off `path` (a crash while a record was written).
fn repair_tail(path: &Path) -> Result<(), RelayError> {
    let mut r = RecordReader::open(path)?;
    loop {
        match r.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(BinlogFileError::Io { path, source }) => return Err(RelayError::Io { path, source }),
            Err(e) => {
                let good = r.offset();
                tracing::warn!(file = %path.display(), offset = good, reason = %e, "relay log: cutting off a torn tail");
                let f = OpenOptions::new().write(true).open(path).map_err(io(path))?;
                f.set_len(good).map_err(io(path))?;
                return f.sync_all().map_err(io(path));
            }
        }
    }
}

/// Reads every relayed transaction in order. A torn tail of the newest file ends the log; damage
/// anywhere else is an error.
#[derive(Debug)]
pub struct RelayReader {
    files: VecDeque<PathBuf>,
    current: Option<RecordReader>,
}

impl RelayReader {
    /// The relay log in `dir`.
    pub fn open(dir: &Path) -> Result<RelayReader, RelayError> {
        let files = binlogfile::list_files(dir).map_err(|e| match e {
            BinlogFileError::Io { source, .. } => RelayError::Dir { dir: dir.to_path_buf(), source },
            e => e.into(),
        })?;
        Ok(RelayReader { files: files.into_iter().map(|(p, _)| p).collect(), current: None })
    }

    /// The next transaction, `None` at the end.
    pub fn next_binlog(&mut self) -> Result<Option<slave::Binlog>, RelayError> {
        loop {
            if self.current.is_none() {
                let Some(p) = self.files.pop_front() else { return Ok(None) };
                self.current = Some(RecordReader::open(&p)?);
            }
            let r = self.current.as_mut().expect("set above");
            match r.next_record() {
                Ok(Some((offset, payload))) => {
                    let b = slave::Binlog::decode(payload.as_slice())
                        .map_err(|source| RelayError::Decode { path: r.path().to_path_buf(), offset, source })?;
                    return Ok(Some(b));
                }
                Ok(None) => self.current = None,
                Err(e @ BinlogFileError::Io { .. }) => return Err(e.into()),
                Err(e) if self.files.is_empty() => {
                    tracing::warn!(error = %e, "relay log ends with a torn record; it was never applied");
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A sink whose transactions go to the relay log first (see the module docs).
#[derive(Debug)]
pub struct Relayed<S> {
    inner: S,
    log: RelayLog,
    /// (commit ts, file index) of relayed items not yet durable downstream.
    pending: VecDeque<(i64, u64)>,
}

impl<S: Sink> Relayed<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, log: RelayLog) -> Self {
        Relayed { inner, log, pending: VecDeque::new() }
    }

    /// Removes the files whose transactions are all durable downstream.
    fn gc(&mut self) -> Result<(), SinkError> {
        let durable = self.inner.durable_ts();
        let mut file = None;
        while let Some(&(ts, f)) = self.pending.front() {
            if ts > durable {
                break;
            }
            file = Some(f);
            self.pending.pop_front();
        }
        // The file of the first item still pending, else of the last one applied, is still needed
        // by nothing before it.
        let keep = self.pending.front().map(|&(_, f)| f).or(file);
        match keep {
            Some(f) => self.log.gc(f).map_err(|e| SinkError::new("relay", e)),
            None => Ok(()),
        }
    }
}

impl<S: Sink> Sink for Relayed<S> {
    async fn load_checkpoint(&mut self) -> Result<Option<i64>, SinkError> {
        self.inner.load_checkpoint().await
    }

    async fn write(&mut self, item: Arc<Item>) -> Result<(), SinkError> {
        if let Some(b) = crate::sink::kafka::translate::to_secondary(&item) {
            let f = self.log.append(&b.encode_to_vec()).map_err(|e| SinkError::new("relay", e))?;
            self.pending.push_back((item.commit_ts, f));
        }
        self.inner.write(item).await?;
        if self.pending.len() > 1024 {
            self.gc()?;
        }
        Ok(())
    }

    fn durable_ts(&self) -> i64 {
        self.inner.durable_ts()
    }

    async fn flush(&mut self) -> Result<i64, SinkError> {
        let ts = self.inner.flush().await?;
        self.log.sync().map_err(|e| SinkError::new("relay", e))?;
        self.gc()?;
        Ok(ts)
    }

    async fn idle(&mut self) -> Result<(), SinkError> {
        self.inner.idle().await?;
        self.gc()
    }
}

/// What [`replay`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// The checkpoint was consistent (or there was none): nothing to do.
    NotNeeded,
    /// Transactions after the checkpoint were applied; the checkpoint is now this ts, consistent.
    Applied {
        /// Transactions applied.
        txns: u64,
        /// The new checkpoint.
        ts: i64,
    },
}

/// Applies the relay log in `dir` to `sink` after its checkpoint `checkpoint` (everything is
/// written; the sink skips what it already holds) and flushes. `sink` must be in safe mode.
pub async fn replay<S: Sink>(dir: &Path, sink: &mut S, checkpoint: i64) -> Result<(u64, i64), SinkError> {
    let mut r = RelayReader::open(dir).map_err(|e| SinkError::new("relay", e))?;
    let mut n = 0;
    while let Some(b) = r.next_binlog().map_err(|e| SinkError::new("relay", e))? {
        if b.commit_ts() <= checkpoint {
            continue;
        }
        let item = crate::sink::kafka::untranslate::to_item(&b).map_err(|e| SinkError::new("relay", e))?;
        if let Some(item) = item {
            sink.write(Arc::new(item)).await?;
            n += 1;
        }
    }
    let ts = sink.flush().await?;
    Ok((n, ts))
}

/// Why the relay log could not be replayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The sink settings are wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Reading the checkpoint or applying failed.
    #[error(transparent)]
    Mysql(#[from] crate::sink::mysql::MysqlError),
    /// Applying failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The checkpoint table holds several clusters' rows: without PD the cluster is unknown.
    #[error(
        "the checkpoint table holds the checkpoints of clusters {clusters:?}; without PD this drainer cannot \
         tell which one is its own, so the relay log is not replayed"
    )]
    Ambiguous {
        /// The cluster ids found.
        clusters: Vec<u64>,
    },
}

/// The relay log replay of a MySQL/TiDB drainer that cannot reach PD (see the module docs): when the
/// downstream's checkpoint is not consistent, applies `[syncer.relay] log-dir` after it in safe mode
/// and saves a consistent checkpoint.
pub async fn replay_mysql(cfg: &crate::config::Config) -> Result<Replayed, ReplayError> {
    use crate::sink::mysql::MysqlSink;
    let mut mc = crate::setup::mysql_config(cfg, 0)?;
    let stored = MysqlSink::stored_checkpoints(&mc).await?;
    let (cluster_id, consistent) = match stored.as_slice() {
        [] => return Ok(Replayed::NotNeeded),
        [one] => *one,
        many => return Err(ReplayError::Ambiguous { clusters: many.iter().map(|c| c.0).collect() }),
    };
    if consistent {
        return Ok(Replayed::NotNeeded);
    }
    if let Some(ck) = mc.checkpoint.as_mut() {
        ck.cluster_id = cluster_id;
    }
    mc.safe_mode = true;
    // What the replay writes is this drainer's own earlier output: upstream does not mark it.
    mc.loopback = None;
    let mut sink = MysqlSink::connect(mc).await?;
    let checkpoint = sink.load_checkpoint().await?.unwrap_or(0);
    tracing::info!(cluster_id, checkpoint, dir = %cfg.syncer.relay.log_dir, "the checkpoint is not consistent: replaying the relay log in safe mode");
    let (txns, _) = replay(Path::new(&cfg.syncer.relay.log_dir), &mut sink, checkpoint).await?;
    let ts = sink.close().await?;
    tracing::info!(txns, ts, "relay log replayed; the checkpoint is consistent");
    Ok(Replayed::Applied { txns, ts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{Body, Ddl};

    fn ddl(ts: i64, q: &str) -> Item {
        Item {
            start_ts: ts - 1,
            commit_ts: ts,
            schema_version: 1,
            body: Body::Ddl(Ddl { schema: "d".into(), table: "t".into(), query: q.into(), job_id: 1, table_after: None }),
        }
    }

    #[test]
    fn records_roll_over_files_read_back_in_order_and_a_torn_tail_is_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RelayLog::open(dir.path(), 200).unwrap();
        let mut files = Vec::new();
        for ts in 1..=10 {
            let b = crate::sink::kafka::translate::to_secondary(&ddl(ts, &format!("create table t{ts} (id int)"))).unwrap();
            files.push(log.append(&b.encode_to_vec()).unwrap());
        }
        assert!(files.last().unwrap() > &0, "rotated: {files:?}");
        drop(log);
        let read = |dir: &Path| {
            let mut r = RelayReader::open(dir).unwrap();
            let mut ts = Vec::new();
            while let Some(b) = r.next_binlog().unwrap() {
                ts.push(b.commit_ts());
            }
            ts
        };
        assert_eq!(read(dir.path()), (1..=10).collect::<Vec<_>>());
        // A crash mid-record in the newest file: the reader stops there, a reopen repairs it.
        let newest = binlogfile::list_files(dir.path()).unwrap().last().unwrap().0.clone();
        let mut f = OpenOptions::new().append(true).open(&newest).unwrap();
        f.write_all(&[0x04, 0x05, 0x1b]).unwrap();
        drop(f);
        assert_eq!(read(dir.path()).len(), 10);
        let mut log = RelayLog::open(dir.path(), 200).unwrap();
        let b = crate::sink::kafka::translate::to_secondary(&ddl(11, "drop table t1")).unwrap();
        log.append(&b.encode_to_vec()).unwrap();
        assert_eq!(read(dir.path()), (1..=11).collect::<Vec<_>>());
        // GC keeps the newest file and everything from the given index on.
        let before = binlogfile::list_files(dir.path()).unwrap().len();
        log.gc(u64::MAX).unwrap();
        let after = binlogfile::list_files(dir.path()).unwrap();
        assert!(after.len() == 1 && before > 1, "{before} -> {after:?}");
    }

    #[test]
    fn an_unwritable_dir_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let e = RelayLog::open(&file.join("relay"), 0).unwrap_err().to_string();
        assert!(e.contains("log-dir") && e.contains("not-a-dir"), "{e}");
    }
}
