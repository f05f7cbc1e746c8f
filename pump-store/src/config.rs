//! The store's configuration.

use std::path::PathBuf;
use std::time::Duration;

use crate::io::IoBackend;

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
