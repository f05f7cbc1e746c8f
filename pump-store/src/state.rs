//! What a shard knows in memory, behind its one lock (`State`), and its counters.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use crate::format::Loc;
use crate::segment::SegMeta;
use crate::sorter::Sorter;

/// Everything behind the store's one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) sorter: Sorter,
    pub(crate) metas: BTreeMap<u64, SegMeta>,
    /// End of the durable log; every record before it is readable, and every Commit with
    /// commit_ts <= the sorter's watermark lies before it.
    pub(crate) durable_end: Loc,
    pub(crate) gc_ts: i64,
    pub(crate) closed: bool,
    /// A releasable ts the front established while this shard was idle (see [`State::releasable`]);
    /// never below what it was. Not persisted.
    pub(crate) floor: i64,
}

impl State {
    /// The largest ts at or below which every transaction routed to this shard is complete in its log
    /// (before `durable_end`): the sorter's watermark, or more. `seen` is a commit ts the front knows
    /// was allocated before this call.
    ///
    /// Why `seen` may become the floor when the sorter is idle (everything fed to it is durable and
    /// settled): a transaction with commit ts <= `seen` took its commit ts before now, hence after its
    /// Prewrite was acknowledged, so that Prewrite was fed to this sorter before now; idle means it is
    /// settled, and its Commit is durable and drained. Appends queued but not yet fed are not
    /// acknowledged Prewrites: their transactions commit above `seen` (a queued Commit keeps its
    /// Prewrite unsettled, so the sorter is not idle).
    pub(crate) fn releasable(&mut self, seen: i64) -> i64 {
        if self.sorter.is_idle() {
            self.floor = self.floor.max(seen);
        }
        self.floor.max(self.sorter.watermark())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) truncations: AtomicU64,
    pub(crate) write_errors: AtomicU64,
}

