//! The store's errors.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::DecodeError;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A segment that must be intact (not the torn tail of the last one) fails to decode.
    #[error("corrupt segment {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: DecodeError,
    },
    /// Another process holds the directory's lock.
    #[error("store directory {0} is locked by another process")]
    Locked(PathBuf),
    /// An earlier write or fsync failed (the error it gave); the store refuses writes until it is
    /// reopened.
    #[error("store refuses writes after an earlier write failure (reopen to recover): {0}")]
    Poisoned(#[source] Arc<StoreError>),
    /// The filesystem is below `stop-write-at-available-space` (upstream's message).
    #[error("no available space, available: {available}, StopWriteAtAvailableSpace: {threshold}")]
    NoSpace {
        /// Bytes available.
        available: u64,
        /// The configured threshold.
        threshold: u64,
    },
    /// A payload larger than the format allows.
    #[error("record of {0} bytes is larger than the 1 GiB limit")]
    TooLarge(usize),
    /// Settling a transaction whose Prewrite is not pending here (unknown, or already matched).
    #[error("no pending prewrite with start_ts {start_ts} in this store")]
    NotPending {
        /// The start_ts asked for.
        start_ts: i64,
    },
    /// Settling with a commit_ts that is not after the start_ts.
    #[error("commit_ts {commit_ts} is not after start_ts {start_ts}")]
    BadCommitTs {
        /// The transaction.
        start_ts: i64,
        /// The commit_ts given.
        commit_ts: i64,
    },
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// The directory's `LAYOUT` file is not one this code reads.
    #[error("store layout {path}: {reason}")]
    Layout {
        /// The layout file.
        path: PathBuf,
        /// What is wrong.
        reason: LayoutError,
    },
}

/// What is wrong with a `LAYOUT` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The file is empty.
    #[error("empty file")]
    Empty,
    /// The first line names a layout this code does not read (the line found).
    #[error("unknown layout line {0:?} (expected \"pump-store layout 2\")")]
    UnknownLayout(String),
    /// The second line is not `shards <count>`.
    #[error("second line must be \"shards <count>\"")]
    BadShardLine,
    /// The shard count is outside `1..=max`.
    #[error("shard count {count} outside 1..={max}")]
    ShardCount {
        /// The count found.
        count: usize,
        /// The most shards a store may have.
        max: usize,
    },
}

pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_path_buf(), source }
}
