//! What a shard knows in memory, behind its one lock (`State`), its counters, and `Shared`, what its
//! writer, appenders, resolver and readers share.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::bell::Bell;
use crate::config::StoreConfig;
use crate::error::StoreError;

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


/// What every part of a shard shares: its configuration, its state, its bell, its counters, and
/// whether an earlier write failure poisoned it.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: StoreConfig,
    pub(crate) state: Mutex<State>,
    /// Rung (after the state lock is released) whenever readers may have something new.
    pub(crate) bell: Arc<Bell>,
    pub(crate) counters: Counters,
    /// The write failure that poisoned the shard, if one did.
    pub(crate) poisoned: Mutex<Option<Arc<StoreError>>>,
    pub(crate) avail: AtomicU64,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state is still the best we have.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses every later write until the store is reopened (the first reason is kept).
    /// Returns the reason kept.
    pub(crate) fn poison(&self, why: StoreError) -> Arc<StoreError> {
        tracing::error!(dir = %self.cfg.dir.display(), "pump-store refuses writes until reopened: {why}");
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        let mut p = self.poisoned.lock().unwrap_or_else(|e| e.into_inner());
        p.get_or_insert_with(|| Arc::new(why)).clone()
    }

    /// Why the store refuses writes, if it does.
    pub(crate) fn poisoned(&self) -> Option<Arc<StoreError>> {
        self.poisoned.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Marks the shard closed (its writer is gone) and wakes the readers.
    pub(crate) fn mark_closed(&self) {
        self.lock().closed = true;
        self.bell.ring();
    }

    pub(crate) fn refresh_space(&self) {
        self.avail.store(available_space(&self.cfg.dir), Ordering::Relaxed);
    }
}

pub(crate) fn available_space(dir: &Path) -> u64 {
    match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "statvfs failed, not enforcing the space limit: {e}");
            u64::MAX
        }
    }
}

