//! P/C matching and the sorted watermark `maxCommitTS` (upstream `sorter.go`, spec §6).
//!
//! Items enter a FIFO in durable log order. The front is popped while it is a Commit/Fake (raising the
//! watermark to its commit_ts) or a Prewrite that has been matched by a Commit or Rollback. An unmatched
//! Prewrite at the front blocks everything behind it until it is matched or resolved. So a commit_ts is
//! released only after every Prewrite that arrived before it is settled; a transaction whose Prewrite
//! arrives later took its commit_ts later, so everything `<= watermark` is complete in the log.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::format::{Loc, RecordKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Prewrite { start_ts: i64, seq: u64 },
    Commit { commit_ts: i64, seq: u64 },
}

#[derive(Debug, Clone)]
struct Pending {
    loc: Loc,
    matched: bool,
    /// How many Prewrite items with this start_ts are still queued (a retried write can duplicate one).
    queued: u32,
    arrived: Instant,
    last_resolve: Option<Instant>,
}

/// The sorter state. Owned by the store under its lock; pure logic, no I/O.
#[derive(Debug, Default)]
pub(crate) struct Sorter {
    queue: VecDeque<Item>,
    pending: HashMap<i64, Pending>,
    watermark: i64,
}

impl Sorter {
    /// A sorter whose watermark starts at `watermark`.
    pub(crate) fn new(watermark: i64) -> Sorter {
        Sorter { watermark, ..Default::default() }
    }

    /// The sorted watermark.
    pub(crate) fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Where the prewrite of `start_ts` is, if it is still waiting for its commit.
    pub(crate) fn prewrite_loc(&self, start_ts: i64) -> Option<Loc> {
        self.pending.get(&start_ts).map(|p| p.loc)
    }

    /// Queues a Prewrite stored at `loc`.
    pub(crate) fn prewrite(&mut self, start_ts: i64, loc: Loc, now: Instant) {
        let p = self.pending.entry(start_ts).or_insert(Pending {
            loc,
            matched: false,
            queued: 0,
            arrived: now,
            last_resolve: None,
        });
        p.queued += 1;
        p.loc = loc;
        self.queue.push_back(Item::Prewrite { start_ts, seq: loc.seq });
    }

    /// Queues a Commit (or a Fake, whose start_ts equals its commit_ts) stored in segment `seq`.
    pub(crate) fn commit(&mut self, start_ts: i64, commit_ts: i64, seq: u64) {
        if let Some(p) = self.pending.get_mut(&start_ts) {
            p.matched = true;
        }
        self.queue.push_back(Item::Commit { commit_ts, seq });
    }

    /// Records a Rollback: the prewrite is settled without a commit.
    pub(crate) fn rollback(&mut self, start_ts: i64) {
        if let Some(p) = self.pending.get_mut(&start_ts) {
            p.matched = true;
        }
    }

    /// Pops everything that can be released; returns true if the watermark moved.
    pub(crate) fn drain(&mut self) -> bool {
        let before = self.watermark;
        while let Some(front) = self.queue.front().copied() {
            match front {
                Item::Commit { commit_ts, .. } => {
                    self.watermark = self.watermark.max(commit_ts);
                }
                Item::Prewrite { start_ts, .. } => {
                    let Some(p) = self.pending.get_mut(&start_ts) else {
                        // Cannot happen (every queued prewrite has an entry); do not block forever on it.
                        self.queue.pop_front();
                        continue;
                    };
                    if !p.matched {
                        break;
                    }
                    p.queued -= 1;
                    if p.queued == 0 {
                        self.pending.remove(&start_ts);
                    }
                }
            }
            self.queue.pop_front();
        }
        self.watermark != before
    }

    /// The segment holding the oldest item not yet released (replay at open must start there).
    pub(crate) fn oldest_seq(&self) -> Option<u64> {
        self.queue.front().map(|i| match *i {
            Item::Prewrite { seq, .. } | Item::Commit { seq, .. } => seq,
        })
    }

    /// Unmatched prewrites that have waited at least `min_wait` and were not asked about within the last
    /// `min_wait`, but only while the front of the queue is blocked on an unmatched prewrite. Marks them
    /// as asked.
    pub(crate) fn due_for_resolve(&mut self, now: Instant, min_wait: std::time::Duration) -> Vec<i64> {
        match self.queue.front() {
            Some(Item::Prewrite { start_ts, .. }) if self.pending.get(start_ts).is_some_and(|p| !p.matched) => {}
            _ => return Vec::new(),
        }
        let mut due = Vec::new();
        for (ts, p) in self.pending.iter_mut() {
            if p.matched || now.duration_since(p.arrived) < min_wait {
                continue;
            }
            if p.last_resolve.is_some_and(|t| now.duration_since(t) < min_wait) {
                continue;
            }
            p.last_resolve = Some(now);
            due.push(*ts);
        }
        due.sort_unstable();
        due
    }

    /// Nothing is waiting to be released: every item fed so far is settled and drained.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the Prewrite `start_ts` is pending and unmatched.
    pub(crate) fn is_unmatched(&self, start_ts: i64) -> bool {
        self.pending.get(&start_ts).is_some_and(|p| !p.matched)
    }

    /// Unmatched Prewrites with the time each arrived.
    pub(crate) fn unmatched(&self) -> Vec<(i64, Instant)> {
        let mut v: Vec<_> = self.pending.iter().filter(|(_, p)| !p.matched).map(|(ts, p)| (*ts, p.arrived)).collect();
        v.sort_unstable();
        v
    }

    /// Number of prewrites waiting for their commit.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.values().filter(|p| !p.matched).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(off: u64) -> Loc {
        Loc { seq: 1, off }
    }

    #[test]
    fn commit_waits_for_every_earlier_prewrite() {
        let now = Instant::now();
        let mut s = Sorter::new(0);
        s.prewrite(10, loc(1), now);
        s.prewrite(20, loc(2), now);
        s.commit(20, 25, 1);
        assert!(!s.drain());
        assert_eq!(s.watermark(), 0, "txn 10 is unsettled, so 25 cannot be released");
        s.commit(10, 30, 1);
        assert!(s.drain());
        assert_eq!(s.watermark(), 30);
        assert_eq!(s.pending_len(), 0);
        assert_eq!(s.oldest_seq(), None);
    }

    #[test]
    fn rollback_releases_and_fake_advances() {
        let now = Instant::now();
        let mut s = Sorter::new(5);
        s.prewrite(10, loc(1), now);
        s.commit(40, 40, 1); // fake
        s.drain();
        assert_eq!(s.watermark(), 5);
        s.rollback(10);
        s.drain();
        assert_eq!(s.watermark(), 40);
    }

    #[test]
    fn watermark_never_goes_back() {
        let mut s = Sorter::new(0);
        s.commit(1, 50, 1);
        s.commit(2, 30, 1);
        s.drain();
        assert_eq!(s.watermark(), 50);
    }

    #[test]
    fn duplicate_prewrite_is_settled_by_one_commit() {
        let now = Instant::now();
        let mut s = Sorter::new(0);
        s.prewrite(10, loc(1), now);
        s.prewrite(10, loc(2), now);
        assert_eq!(s.prewrite_loc(10), Some(loc(2)));
        s.commit(10, 11, 1);
        s.drain();
        assert_eq!(s.watermark(), 11);
        assert_eq!(s.prewrite_loc(10), None);
    }

    #[test]
    fn resolve_only_when_front_blocked_and_old_enough() {
        let t0 = Instant::now();
        let wait = std::time::Duration::from_secs(1);
        let mut s = Sorter::new(0);
        s.prewrite(10, loc(1), t0);
        s.prewrite(20, loc(2), t0);
        assert!(s.due_for_resolve(t0, wait).is_empty());
        let t1 = t0 + wait;
        assert_eq!(s.due_for_resolve(t1, wait), vec![10, 20]);
        assert!(s.due_for_resolve(t1, wait).is_empty(), "asked at most once per wait");
        s.commit(10, 15, 1);
        s.drain();
        assert_eq!(s.due_for_resolve(t1 + wait, wait), vec![20]);
    }
}

/// Feeds one durable record to the sorter.
pub(crate) fn feed(sorter: &mut Sorter, loc: Loc, kind: RecordKind, start_ts: i64, commit_ts: i64, now: Instant) {
    match kind {
        RecordKind::Prewrite => sorter.prewrite(start_ts, loc, now),
        RecordKind::Commit | RecordKind::Fake => sorter.commit(start_ts, commit_ts, loc.seq),
        RecordKind::Rollback => sorter.rollback(start_ts),
        RecordKind::Footer | RecordKind::Pad => {}
    }
}
