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

#[cfg(test)]
mod crash_tests;
mod bell;
mod commit;
mod config;
mod core;
mod error;
pub mod format;
mod front;
mod io;
mod layout;
mod pipeline;
mod reader;
mod record;
#[cfg(feature = "oracles")]
pub mod recovery_check;
mod recovery;
mod resolver;
mod segment;
mod shard;
mod sorter;
mod state;
mod stats;
mod store;
mod writer;

pub use config::StoreConfig;
pub use error::{LayoutError, StoreError};
pub use format::DecodeError;
pub use io::{IoBackend, probe_device};
pub use layout::{MAX_AUTO_SHARDS, MAX_SHARDS, default_shards, shard_of};
pub use record::{Committed, Kind, Record};
pub use resolver::{Resolution, Resolver, WaitResolver};
pub use segment::file_name as segment_file_name;
pub use stats::StoreStats;
pub use store::Store;
