//! Pump's storage: a durable, fsync-batched, CRC-checked segment log with a commit-ts index.
//!
//! [`Store::append`] writes a binlog record and resolves once it is durable. Appends are group-committed
//! with a leader/follower barrier: the first appender that finds no write in progress takes every queued
//! append and writes them with one `write` and one `fdatasync` from its own thread, then wakes the
//! others (a lone writer never waits for a batch to fill; async appends are led by a background thread). A sorter matches each Commit with the Prewrites before it
//! and keeps the sorted watermark [`Store::max_commit_ts`] (upstream `maxCommitTS`, spec §6).
//! [`Store::pull`] streams committed transactions in strictly increasing commit_ts order, each joined with
//! its Prewrite's bytes, reading the log sequentially and tailing it live.
//!
//! A store has one or more shards ([`StoreConfig::shards`]), each a segment log of its own with its own
//! group commit and sorter; an append goes to shard [`shard_of`]`(start_ts)`, so a transaction stays in one
//! shard. The watermark is the minimum of what the shards can release, and a pull merges the shards'
//! streams into one commit_ts order.
//!
//! Two write paths ([`IoBackend`]): `Std`, the leader/follower group commit above, one batch in flight;
//! and `Uring`, a pipeline thread per shard that keeps up to [`StoreConfig::io_depth`] batches in flight
//! as aligned `O_DIRECT` + `RWF_DSYNC` writes and acknowledges each once it and every earlier one are
//! durable. Segments are preallocated ahead of the writes, so a durable write does not grow the file.
//!
//! The on-disk format is documented in `FORMAT.md` beside this crate; [`format`] holds its codec.
#![warn(missing_docs)]
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

mod commit;
#[cfg(test)]
mod crash_tests;
pub mod format;
mod front;
mod io;
mod pipeline;
mod reader;
pub mod recovery_check;
mod resolver;
mod sorter;
mod store;
mod writer;

pub use format::DecodeError;
pub use io::{IoBackend, probe_device};
pub use resolver::{Resolution, Resolver, WaitResolver};
pub use front::{MAX_AUTO_SHARDS, MAX_SHARDS, Store, default_shards, shard_of};

/// Store configuration. `Default` gives upstream's defaults.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory that holds the segments (created if missing; locked while open).
    pub dir: PathBuf,
    /// `[storage] sync-log`: fdatasync every batch before acknowledging it (default true).
    pub sync_log: bool,
    /// A segment is sealed and a new one started once it reaches this many bytes (default 512 MiB).
    /// A segment can exceed it by one batch; records never span segments.
    pub segment_size: u64,
    /// Upstream's max-txn-timeout (600 s): GC keeps this much below the GC ts for transactions still
    /// running; the pump warns about a Prewrite pending longer than this (it is never dropped for it).
    pub max_txn_timeout: Duration,
    /// `[storage] stop-write-at-available-space`: refuse new Prewrites while the filesystem has at most
    /// this many bytes available (default 10 GiB); Commits, Rollbacks and fakes still go in.
    pub stop_write_at_available_space: u64,
    /// Upper bound of bytes taken into one group-commit batch (default 8 MiB).
    pub max_batch_bytes: usize,
    /// How long the background thread, which writes the batches of async appenders
    /// ([`Store::append`]), keeps the lead after a batch while the queue is empty, yielding its core,
    /// before it sleeps (default zero: sleep at once). Answered appenders that append again in
    /// that time need no wake-up of the writer (measured in `bench`'s `store`, `bench/RESULTS.md`).
    /// Std backend only: the io_uring pipeline's thread takes queued appends as they come.
    pub lead_linger: Duration,
    /// How a batch is written and synced (default [`IoBackend::Std`]).
    pub io_backend: IoBackend,
    /// [`IoBackend::Uring`]: how many batches may be in flight at once per shard (default 16).
    pub io_depth: usize,
    /// Preallocate the active segment ahead of its writes (`fallocate`, in steps of at least 4 MiB and
    /// then doubling, up to `segment_size`), so that a durable write does not grow the file (default
    /// true; where the filesystem cannot, segments grow as they are written, as in format v1).
    pub preallocate: bool,
    /// How many shards a *fresh* directory gets (default 1; 0 = [`default_shards`], the available
    /// cores up to [`MAX_AUTO_SHARDS`]). Each shard is a segment log of its own with its own group
    /// commit; an existing directory keeps the count it was written with (FORMAT.md).
    pub shards: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dir: PathBuf::from("data.pump/store"),
            sync_log: true,
            segment_size: 512 << 20,
            max_txn_timeout: Duration::from_secs(600),
            stop_write_at_available_space: 10 << 30,
            max_batch_bytes: 8 << 20,
            lead_linger: Duration::from_micros(0),
            io_backend: IoBackend::Std,
            io_depth: 16,
            preallocate: true,
            shards: 1,
        }
    }
}

/// The kind of a stored binlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A P-binlog (its payload carries the prewrite value).
    Prewrite,
    /// A C-binlog.
    Commit,
    /// A rollback of a prewritten transaction; it settles the Prewrite and is never pulled.
    Rollback,
    /// A fake binlog (start_ts == commit_ts): advances the watermark, is pulled, and is accepted even
    /// below the disk-space threshold.
    Fake,
}

/// One binlog to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Kind.
    pub kind: Kind,
    /// Transaction start ts.
    pub start_ts: i64,
    /// Commit ts (0 for Prewrite and for TiDB's Rollback).
    pub commit_ts: i64,
    /// The encoded `binlog.Binlog`; opaque to the store.
    pub payload: Bytes,
}

/// A committed transaction (or a fake binlog) as served by [`Store::pull`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Transaction start ts.
    pub start_ts: i64,
    /// Commit ts.
    pub commit_ts: i64,
    /// [`Kind::Commit`] or [`Kind::Fake`].
    pub kind: Kind,
    /// The Commit (or Fake) record's payload. Empty for a Commit synthesized from a
    /// [`Resolution::Committed`].
    pub payload: Bytes,
    /// The matching Prewrite record's payload; `None` for a Fake, or when the Prewrite is gone (never
    /// written, or garbage-collected).
    pub prewrite: Option<Bytes>,
}

/// Counters and gauges for metrics; see [`Store::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Appends acknowledged since open.
    pub appends: u64,
    /// Group-commit batches written since open.
    pub batches: u64,
    /// fdatasync calls since open.
    pub fsyncs: u64,
    /// Bytes written to segments since open (records, headers, footers).
    pub bytes_written: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// Bytes of all segment files on disk.
    pub disk_bytes: u64,
    /// Torn or corrupt tails truncated at open.
    pub torn_tail_truncations: u64,
    /// Write or fsync failures (the store refuses writes after the first one).
    pub write_errors: u64,
    /// Prewrites still waiting for their Commit.
    pub pending_prewrites: u64,
    /// The sorted watermark.
    pub max_commit_ts: i64,
    /// The GC ts.
    pub gc_ts: i64,
    /// Bytes available on the store's filesystem at the last check.
    pub available_space: u64,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
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
    /// An earlier write or fsync failed; the store refuses writes until it is reopened.
    #[error("store refuses writes after an earlier write failure (reopen to recover): {0}")]
    Poisoned(String),
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
        reason: String,
    },
}
