//! The front: one or more shards behind one store handle, as readers see them: one global commit-ts order.
//!
//! An append goes to shard `shard_of(start_ts)`, so a transaction's Prewrite, Commit and Rollback share
//! a shard (and its sorter, which matches them). Every shard keeps its own sorted watermark; the front's
//! watermark is the minimum over the shards of what each can release (`State::releasable`): an idle
//! shard (nothing queued, nothing unsettled) can release up to the largest commit ts the front has
//! acknowledged, because any transaction that reaches it later takes its commit ts later. Readers merge
//! the shards' committed streams up to that minimum (`reader`).

use std::sync::Arc;

use crate::bell::Bell;
use crate::format::Loc;
use crate::state::Shared;

/// What readers need of the front.
#[derive(Debug)]
pub(crate) struct Front {
    pub(crate) shards: Vec<Arc<Shared>>,
    pub(crate) bell: Arc<Bell>,
}

/// The global watermark and, per shard, what it can release and the durable end that holds it.
pub(crate) struct Snapshot {
    pub(crate) watermark: i64,
    pub(crate) releasable: Vec<i64>,
    pub(crate) ends: Vec<Loc>,
    pub(crate) closed: bool,
}

impl Front {
    /// Every transaction with commit ts <= `watermark` is complete in its shard before that shard's
    /// `ends[i]`; the same holds per shard for `releasable[i]`.
    pub(crate) fn snapshot(&self) -> Snapshot {
        // Read before the shards: a commit ts acknowledged before an idle shard is looked at.
        let seen = self.bell.seen();
        let mut snap = Snapshot {
            watermark: i64::MAX,
            releasable: Vec::with_capacity(self.shards.len()),
            ends: Vec::with_capacity(self.shards.len()),
            closed: false,
        };
        for sh in &self.shards {
            let mut st = sh.lock();
            let r = st.releasable(seen);
            snap.watermark = snap.watermark.min(r);
            snap.releasable.push(r);
            snap.ends.push(st.durable_end);
            snap.closed |= st.closed;
        }
        snap
    }

    pub(crate) fn closed(&self) -> bool {
        self.shards.iter().any(|s| s.lock().closed)
    }

    /// The lowest GC ts of the shards (a GC interrupted by a crash may have raised only some).
    pub(crate) fn gc_ts_min(&self) -> i64 {
        self.shards.iter().map(|s| s.lock().gc_ts).min().unwrap_or(0)
    }

    /// The highest GC ts of the shards: pulls start no lower.
    pub(crate) fn gc_ts_max(&self) -> i64 {
        self.shards.iter().map(|s| s.lock().gc_ts).max().unwrap_or(0)
    }
}
