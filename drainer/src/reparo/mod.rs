//! Reparo: replays the file sink's binlog files into a destination (print, MySQL/TiDB, memory).
//!
//! Algorithm (as upstream): list the files; start at the last file whose first commit ts is ≤ the
//! start ts and stop before the first file whose first commit ts is > the stop ts; read records in
//! order, keep `start ≤ commit_ts ≤ stop` (stop 0 = no end); drop filtered schemas/tables; hand each
//! remaining transaction to the destination, which is a [`Sink`]: reparo's MySQL destination is the
//! drainer's MySQL sink, so both write SQL the same way.
//!
//! # Invariants
//! - Records are applied in file order, which is commit-ts order; reading stops at the first record
//!   past the stop ts.
//! - A damaged record stops the replay with an error naming the file and the record's offset; nothing
//!   after it is applied.

pub mod config;
pub mod filter;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sink::file::binlogfile::{self, BinlogFileError, RecordReader};
use crate::sink::file::decode;
use crate::sink::{Sink, SinkError};

pub use config::{Config, DestType, Flags};

/// A failure of Reparo.
#[derive(Debug, thiserror::Error)]
pub enum ReparoError {
    /// Bad flags or config file.
    #[error("config: {0}")]
    Config(String),
    /// A binlog file cannot be listed or read.
    #[error(transparent)]
    File(#[from] BinlogFileError),
    /// A record's content cannot be decoded.
    #[error("{path}: record at offset {offset}: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Record start.
        offset: u64,
        /// What is wrong.
        #[source]
        source: decode::DecodeError,
    },
    /// The destination failed.
    #[error("{0}")]
    Sink(#[from] SinkError),
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Files opened.
    pub files: usize,
    /// Records read in the ts range.
    pub records: u64,
    /// Transactions handed to the destination.
    pub applied: u64,
    /// Commit ts of the last transaction applied (0 if none).
    pub last_ts: i64,
}

/// The first commit ts of a file: from its name when it carries one, else from its first record
/// (`None` for an empty file).
fn first_ts(path: &Path, from_name: Option<i64>) -> Result<Option<i64>, ReparoError> {
    if from_name.is_some() {
        return Ok(from_name);
    }
    Ok(RecordReader::open(path)?.next_binlog()?.map(|(_, b)| b.commit_ts()))
}

/// The files to read for `[start, stop]`, in order.
pub fn select_files(dir: &Path, start: i64, stop: i64) -> Result<Vec<PathBuf>, ReparoError> {
    let files = binlogfile::list_files(dir)?;
    let mut firsts = Vec::with_capacity(files.len());
    for (path, name) in files {
        let ts = first_ts(&path, name.first_ts)?;
        firsts.push((path, ts));
    }
    let begin = firsts.iter().rposition(|(_, ts)| ts.is_some_and(|t| t <= start)).unwrap_or(0);
    let mut out = Vec::new();
    for (path, ts) in firsts.into_iter().skip(begin) {
        if stop > 0 && ts.is_some_and(|t| t > stop) {
            break;
        }
        out.push(path);
    }
    Ok(out)
}

/// Replays `cfg.data_dir` into `dest`.
pub async fn replay<S: Sink>(cfg: &Config, dest: &mut S) -> Result<Summary, ReparoError> {
    let mut summary = Summary::default();
    'files: for path in select_files(&cfg.data_dir, cfg.start_ts, cfg.stop_ts)? {
        summary.files += 1;
        tracing::info!(file = %path.display(), "reparo: reading");
        let mut reader = RecordReader::open(&path)?;
        while let Some((offset, binlog)) = reader.next_binlog()? {
            let ts = binlog.commit_ts();
            if ts < cfg.start_ts {
                continue;
            }
            if cfg.stop_ts > 0 && ts > cfg.stop_ts {
                break 'files;
            }
            summary.records += 1;
            let item = decode::to_item(&binlog, &|db, t| cfg.filter.skip(db, t))
                .map_err(|source| ReparoError::Decode { path: path.clone(), offset, source })?;
            if let Some(item) = item {
                dest.write(Arc::new(item)).await?;
                summary.applied += 1;
                summary.last_ts = ts;
            }
        }
    }
    dest.flush().await?;
    Ok(summary)
}
