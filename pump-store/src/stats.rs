//! The store's counters and gauges.

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
