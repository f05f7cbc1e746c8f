//! The merge: many per-pump streams, each in increasing commit ts, into one strictly increasing stream.
//!
//! # Hand-over
//! Each pump reader owns a [`SourceSender`]: it pushes whole *batches* (`Vec<T>`) into a bounded
//! single-producer queue, so there is one queue operation per batch, not per binlog. The [`Merger`]
//! keeps each source's current batch and a *loser tree* (tournament tree) over the sources' heads keyed
//! by commit ts: emitting one item takes the winner's head and replays its leaf-to-root path, exactly
//! ⌈log2 k⌉ comparisons with no swaps of whole entries (a binary heap's sift-down does up to twice that).
//! Each internal node keeps the losing leaf *and its key*, so the nodes a replay visits are known before
//! any comparison (their loads overlap) and each level is a select, not a branch the CPU must predict:
//! merged pumps interleave at random. A source that runs out of queued items leaves the tree (its key
//! becomes "none") until refilled; refills, new and removed sources rebuild the tree in O(k), once per
//! batch, not per item. The consumer takes items in batches ([`Merger::fill`]): the refill and
//! excluded-source checks run once per batch or when a source runs dry, not once per item.
//!
//! # Rules
//! - An item is emitted only when every *included* source has a head, and it is the minimum of them:
//!   each pump streams in increasing commit ts, so nothing smaller can still come from any source.
//! - Commit ts strictly increases: an item equal to the last emitted one is a duplicate and dropped
//!   ([`Merger::duplicates`]); a smaller one is disorder, dropped and counted ([`Merger::disorder`]).
//! - Fake binlogs (start ts = commit ts) are ordinary items here; they keep every source producing, so
//!   the minimum keeps moving when a pump is idle.
//! - A source whose queue is closed (its reader ended: the pump went offline) is removed once drained.
//!
//! # Paused and dead pumps
//! Upstream blocks the whole merge on a source until it yields an item, so a paused pump stalls the
//! drainer until it is online (or offline) again. We do better where it is safe. A reader may mark its
//! source *excludable up to a bound* ([`SourceSender::set_exclude_upto`]) when the pump is `paused` in
//! etcd with a pause record equal to its registered `maxCommitTS` (written by a pump that paused holding
//! no open Prewrite: `pump::node::Registry::set_pause_record`) **and** the reader has received everything
//! up to that `maxCommitTS`. The bound
//! is a TSO taken *before* the etcd read that showed the pump paused: a resumed pump registers `online`
//! before it accepts a prewrite, and a new transaction's commit ts is allocated after its prewrite, so
//! everything the pump can carry after resuming has a commit ts above the bound. While its queue is
//! empty, such a source does not hold back items up to the bound; an item above the bound still waits
//! for it (and the collector refreshes the bound every `detect-interval`). The bound is set only after
//! the last batch is queued (release/acquire), so a skipped source never hides a queued item. When the
//! pump comes back the reader clears the bound and the source is required again. A pump that is
//! `online` in etcd but silent (crashed, unreachable) still blocks the merge, as upstream: skipping it
//! could reorder its binlogs behind later ones. So does a `paused` pump without a pause record (it
//! paused with open Prewrites, or an operator set it paused by hand, or it is upstream's pump): a
//! transaction prewritten before the pause and committed after could carry a commit ts below any bound,
//! so it is waited for, as upstream. Disorder (a binlog below the merge position) is counted, logged
//! and alerted on (`binlog_drainer_disorder_binlog`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::{Notify, mpsc};

/// Something the merge can order.
pub trait Ordered {
    /// The commit ts.
    fn commit_ts(&self) -> i64;
}

impl Ordered for i64 {
    fn commit_ts(&self) -> i64 {
        *self
    }
}

/// Shared between a source's reader and the merger.
#[derive(Debug, Default)]
struct SourceCtl {
    /// 0: required. Otherwise: skippable while empty, for items with commit ts ≤ this.
    exclude_upto: AtomicI64,
}

/// The producer side of one source: the pump reader holds it.
#[derive(Debug)]
pub struct SourceSender<T> {
    tx: mpsc::Sender<Vec<T>>,
    ctl: Arc<SourceCtl>,
    wake: Arc<Notify>,
}

/// The merger went away (drainer shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the merge has stopped")]
pub struct MergeClosed;

impl<T> SourceSender<T> {
    /// Queues one batch (waits while the queue is full: backpressure). Empty batches are not sent.
    pub async fn send(&self, batch: Vec<T>) -> Result<(), MergeClosed> {
        if batch.is_empty() {
            return Ok(());
        }
        self.tx.send(batch).await.map_err(|_| MergeClosed)
    }

    /// Marks the source as skippable while it has nothing queued, for items with commit ts ≤ `upto`
    /// (see the module docs for when a reader may do this); `None` makes it required again.
    pub fn set_exclude_upto(&self, upto: Option<i64>) {
        let v = upto.unwrap_or(0).max(0);
        if self.ctl.exclude_upto.swap(v, Ordering::AcqRel) != v {
            self.wake.notify_one();
        }
    }

    /// The current exclusion bound, if any.
    pub fn exclude_upto(&self) -> Option<i64> {
        Some(self.ctl.exclude_upto.load(Ordering::Acquire)).filter(|&v| v > 0)
    }
}

/// A new source for the merger: its id (the pump's node id) and queue.
#[derive(Debug)]
pub struct Source<T> {
    id: String,
    rx: mpsc::Receiver<Vec<T>>,
    ctl: Arc<SourceCtl>,
}

impl<T> Source<T> {
    /// The source's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Creates a source: the sender for its reader and the receiving end for [`Merger::add_source`].
/// `capacity` is the queue length in batches; `wake` is the merger's [`Merger::waker`].
pub fn source<T>(id: impl Into<String>, capacity: usize, wake: Arc<Notify>) -> (SourceSender<T>, Source<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let ctl = Arc::new(SourceCtl::default());
    (SourceSender { tx, ctl: ctl.clone(), wake }, Source { id: id.into(), rx, ctl })
}

struct Slot<T> {
    id: String,
    rx: mpsc::Receiver<Vec<T>>,
    ctl: Arc<SourceCtl>,
}

/// Why [`Merger::fill`] stopped adding items.
#[derive(Debug, PartialEq)]
pub enum Pause {
    /// The output reached the requested number of items; call again for more.
    Full,
    /// Source (by id) has no queued item and is required: wait for it ([`Merger::wait`]).
    Wait(String),
    /// No source is required right now (none, or all excluded and drained).
    Idle,
}

enum Refill {
    Got,
    Excluded(i64),
    Closed,
    Pending,
}

/// A match result kept at an internal node of the loser tree: the losing leaf and its key (kept here so
/// a replay reads one node per level, at addresses known before any comparison).
#[derive(Clone, Copy, Debug)]
struct Node {
    key: i64,
    leaf: usize,
}

/// The k-way merge. Single consumer; see the module docs for the rules.
pub struct Merger<T> {
    slots: Vec<Option<Slot<T>>>,
    /// Per slot: the current batch, consumed from the front (empty for a removed slot).
    bufs: Vec<std::vec::IntoIter<T>>,
    /// Per leaf (slot index; the tree has a power-of-two number of leaves): the head's commit ts, or
    /// [`NO_HEAD`] when the slot has no queued item, is empty or does not exist.
    keys: Vec<i64>,
    /// Internal nodes `1..keys.len()` of the loser tree.
    losers: Vec<Node>,
    /// The leaf with the smallest key.
    winner: usize,
    /// Slots with no head in the tree.
    waiting: Vec<usize>,
    last_ts: i64,
    disorder: u64,
    duplicates: u64,
    wake: Arc<Notify>,
}

/// The key of a leaf without a head: loses every match (ties between leaves go either way; equal
/// commit ts are deduplicated anyway).
const NO_HEAD: i64 = i64::MAX;

impl<T> std::fmt::Debug for Merger<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.slots.iter().flatten().map(|s| s.id.as_str()).collect();
        f.debug_struct("Merger").field("sources", &ids).field("last_ts", &self.last_ts).finish()
    }
}

impl<T: Ordered> Merger<T> {
    /// A merger that emits only items with commit ts greater than `last_ts` (the checkpoint).
    pub fn new(last_ts: i64) -> Self {
        Merger {
            slots: Vec::new(),
            bufs: Vec::new(),
            keys: vec![NO_HEAD],
            losers: vec![Node { key: NO_HEAD, leaf: 0 }],
            winner: 0,
            waiting: Vec::new(),
            last_ts,
            disorder: 0,
            duplicates: 0,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The notifier sources must be created with ([`source`]).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The commit ts of the last emitted item (initially the checkpoint).
    pub fn last_ts(&self) -> i64 {
        self.last_ts
    }

    /// Items dropped because they were below the last emitted ts.
    pub fn disorder(&self) -> u64 {
        self.disorder
    }

    /// Items dropped because they equalled the last emitted ts.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Ids of the current sources.
    pub fn source_ids(&self) -> Vec<String> {
        self.slots.iter().flatten().map(|s| s.id.clone()).collect()
    }

    /// Adds a source; from now on nothing is emitted until it has a head (or is excluded).
    pub fn add_source(&mut self, src: Source<T>) {
        let slot = Slot { id: src.id, rx: src.rx, ctl: src.ctl };
        let idx = match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.bufs.push(Vec::new().into_iter());
                self.slots.len() - 1
            }
        };
        self.waiting.push(idx);
        if self.slots.len() > self.keys.len() {
            self.rebuild();
        }
    }

    /// Recomputes the whole tree from `keys` (growing it to fit every slot): O(k).
    fn rebuild(&mut self) {
        let cap = self.slots.len().max(1).next_power_of_two();
        self.keys.resize(cap, NO_HEAD);
        self.losers = vec![Node { key: NO_HEAD, leaf: 0 }; cap];
        // winners[n] for the internal nodes and leaves of a 1-based implicit tree
        let mut winners = vec![0usize; 2 * cap];
        for (leaf, w) in winners[cap..].iter_mut().enumerate() {
            *w = leaf;
        }
        for n in (1..cap).rev() {
            let (a, b) = (winners[2 * n], winners[2 * n + 1]);
            let (w, l) = if self.keys[b] < self.keys[a] { (b, a) } else { (a, b) };
            winners[n] = w;
            self.losers[n] = Node { key: self.keys[l], leaf: l };
        }
        self.winner = if cap == 1 { 0 } else { winners[1] };
    }

    /// The winner's key changed to `kw`: replay its matches from its leaf to the root; returns the new
    /// winner's key. The nodes on the path are known up front, so their loads do not wait on the
    /// comparisons, and each level is a select rather than a branch the CPU must guess (merged pumps
    /// interleave unpredictably).
    #[inline]
    fn replay_winner(&mut self, mut kw: i64) -> i64 {
        let losers = &mut self.losers;
        let mut w = self.winner;
        let mut n = (losers.len() + w) >> 1;
        while n > 0 {
            let node = losers[n];
            let lose = node.key < kw;
            losers[n] = if lose { Node { key: kw, leaf: w } } else { node };
            w = if lose { node.leaf } else { w };
            kw = if lose { node.key } else { kw };
            n >>= 1;
        }
        self.winner = w;
        kw
    }

    /// Gives slot `idx` (not in the tree) a head if it has or can take a queued item; the caller
    /// rebuilds the tree after a [`Refill::Got`].
    fn refill(&mut self, idx: usize) -> Refill {
        let Some(slot) = self.slots[idx].as_mut() else { return Refill::Closed };
        let buf = &mut self.bufs[idx];
        if buf.as_slice().is_empty() {
            // Read the flag before polling: a reader sets it only after queueing its last batch.
            let bound = slot.ctl.exclude_upto.load(Ordering::Acquire);
            match slot.rx.try_recv() {
                Ok(batch) => *buf = batch.into_iter(),
                Err(mpsc::error::TryRecvError::Empty) if bound > 0 => return Refill::Excluded(bound),
                Err(mpsc::error::TryRecvError::Empty) => return Refill::Pending,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.slots[idx] = None;
                    return Refill::Closed;
                }
            }
        }
        match buf.as_slice().first() {
            Some(head) => {
                self.keys[idx] = head.commit_ts();
                Refill::Got
            }
            None => Refill::Pending,
        }
    }

    /// Appends the next items in commit-ts order to `out` until it holds `max` items (then
    /// [`Pause::Full`]) or a required source has nothing queued ([`Pause::Wait`]) or no source is
    /// required ([`Pause::Idle`]). Never blocks.
    pub fn fill(&mut self, out: &mut Vec<T>, max: usize) -> Pause {
        loop {
            if out.len() >= max {
                return Pause::Full;
            }
            // The lowest bound among excluded sources: nothing above it may pass them.
            let mut bound: Option<(i64, usize)> = None;
            if !self.waiting.is_empty() {
                let mut refilled = false;
                let mut pending = None;
                let mut i = 0;
                while i < self.waiting.len() {
                    let idx = self.waiting[i];
                    match self.refill(idx) {
                        Refill::Got => {
                            refilled = true;
                            self.waiting.swap_remove(i);
                        }
                        Refill::Closed => {
                            self.waiting.swap_remove(i);
                        }
                        Refill::Excluded(b) => {
                            if bound.is_none_or(|(cur, _)| b < cur) {
                                bound = Some((b, idx));
                            }
                            i += 1;
                        }
                        Refill::Pending => {
                            pending = Some(idx);
                            break;
                        }
                    }
                }
                if refilled {
                    self.rebuild();
                }
                if let Some(idx) = pending {
                    return Pause::Wait(self.slot_id(idx));
                }
            }
            // Emit until a source runs dry (it must be refilled before anything else passes it).
            let limit = bound.map_or(NO_HEAD - 1, |(b, _)| b);
            let mut kw = self.keys[self.winner];
            let mut dry = false;
            while out.len() < max && kw <= limit {
                let w = self.winner;
                let buf = &mut self.bufs[w];
                let Some(item) = buf.next() else {
                    // unreachable by construction (a key is set only with a head); heal, don't panic
                    self.keys[w] = NO_HEAD;
                    self.waiting.push(w);
                    self.rebuild();
                    dry = true;
                    break;
                };
                // The same source's next head replaces the winner's key; one leaf-to-root replay.
                let next = buf.as_slice().first().map_or(NO_HEAD, Ordered::commit_ts);
                self.keys[w] = next;
                let new_kw = self.replay_winner(next);
                if kw > self.last_ts {
                    self.last_ts = kw;
                    out.push(item);
                } else if kw == self.last_ts {
                    self.duplicates += 1;
                } else {
                    self.disorder += 1;
                }
                if next == NO_HEAD {
                    // the source ran dry: refill it before anything else may pass it
                    self.waiting.push(w);
                    dry = true;
                    break;
                }
                kw = new_kw;
            }
            if dry {
                continue;
            }
            if out.len() >= max {
                return Pause::Full;
            }
            // The smallest head is above the bound of an excluded source, or there is no head at all.
            return match bound {
                Some((_, ex)) => Pause::Wait(self.slot_id(ex)),
                None => Pause::Idle,
            };
        }
    }

    fn slot_id(&self, idx: usize) -> String {
        self.slots[idx].as_ref().map(|s| s.id.clone()).unwrap_or_default()
    }

    /// Waits until the source `id` (from [`Pause::Wait`]) has a batch, or anything else changes (a
    /// source's excludable flag, [`Merger::waker`] notified). Returns at once if `id` is gone.
    pub async fn wait(&mut self, id: &str) {
        let Some(idx) = self.slots.iter().position(|s| s.as_ref().is_some_and(|s| s.id == id)) else { return };
        let wake = self.wake.clone();
        let Some(slot) = self.slots[idx].as_mut() else { return };
        let buf = &mut self.bufs[idx];
        tokio::select! {
            batch = slot.rx.recv() => match batch {
                Some(b) if buf.as_slice().is_empty() => *buf = b.into_iter(),
                Some(b) => {
                    let mut all: Vec<T> = std::mem::take(buf).collect();
                    all.extend(b);
                    *buf = all.into_iter();
                }
                None => {} // closed: the next refill removes it
            },
            _ = wake.notified() => {}
        }
    }

    /// Waits for any change: a flag flip or a [`Merger::waker`] notification.
    pub async fn wait_any(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Everything the merge emits now, taken `max` at a time.
    fn drain_by(m: &mut Merger<i64>, max: usize) -> (Vec<i64>, Pause) {
        let mut out = Vec::new();
        loop {
            let upto = out.len() + max;
            match m.fill(&mut out, upto) {
                Pause::Full => {}
                other => return (out, other),
            }
        }
    }

    fn drain(m: &mut Merger<i64>) -> (Vec<i64>, Pause) {
        drain_by(m, 2)
    }

    #[tokio::test]
    async fn merges_in_order_and_waits_for_every_source() {
        let mut m = Merger::new(0);
        let (a, sa) = source("a", 4, m.waker());
        let (b, sb) = source("b", 4, m.waker());
        m.add_source(sa);
        m.add_source(sb);
        a.send(vec![1, 4, 6]).await.unwrap();
        let (out, step) = drain(&mut m);
        assert!(out.is_empty());
        assert_eq!(step, Pause::Wait("b".into()));
        b.send(vec![2, 3, 7]).await.unwrap();
        let (out, step) = drain(&mut m);
        assert_eq!(out, [1, 2, 3, 4, 6]);
        assert_eq!(step, Pause::Wait("a".into()));
        drop(a); // pump a offline: its reader ends
        let (out, step) = drain(&mut m);
        assert_eq!(out, [7]);
        assert_eq!(step, Pause::Wait("b".into()));
        assert_eq!(m.source_ids(), ["b"]);
    }

    #[tokio::test]
    async fn equal_ts_is_deduplicated_and_lower_ts_is_disorder() {
        let mut m = Merger::new(5);
        let (a, sa) = source("a", 4, m.waker());
        let (b, sb) = source("b", 4, m.waker());
        m.add_source(sa);
        m.add_source(sb);
        a.send(vec![3, 6, 8, 8]).await.unwrap();
        b.send(vec![5, 6, 9]).await.unwrap();
        drop((a, b));
        let (out, step) = drain(&mut m);
        assert_eq!(out, [6, 8, 9]);
        assert_eq!(step, Pause::Idle);
        assert_eq!(m.duplicates(), 3); // 5 (= checkpoint), 6, 8
        assert_eq!(m.disorder(), 1); // 3
    }

    #[tokio::test]
    async fn an_excludable_source_is_skipped_only_when_drained() {
        let mut m = Merger::new(0);
        let (a, sa) = source("a", 4, m.waker());
        let (p, sp) = source("paused", 4, m.waker());
        m.add_source(sa);
        m.add_source(sp);
        p.send(vec![2, 10]).await.unwrap();
        p.set_exclude_upto(Some(100)); // paused, everything up to its maxCommitTS (10) queued
        a.send(vec![1, 3, 11, 12]).await.unwrap();
        let (out, step) = drain(&mut m);
        // 10 is still queued, so 11 waits for nothing but a's next item.
        assert_eq!(out, [1, 2, 3, 10, 11, 12]);
        assert_eq!(step, Pause::Wait("a".into()));
        // Above the bound the paused source is required again.
        a.send(vec![99, 101]).await.unwrap();
        let (out, step) = drain(&mut m);
        assert_eq!(out, [99]);
        assert_eq!(step, Pause::Wait("paused".into()));
        p.set_exclude_upto(Some(200)); // a fresher bound from the next scan
        let (out, step) = drain(&mut m);
        assert_eq!(out, [101]);
        assert_eq!(step, Pause::Wait("a".into()));
        // Back online: required again, the merge waits for it.
        p.set_exclude_upto(None);
        a.send(vec![120]).await.unwrap();
        let (out, step) = drain(&mut m);
        assert!(out.is_empty());
        assert_eq!(step, Pause::Wait("paused".into()));
        p.send(vec![150]).await.unwrap();
        let (out, step) = drain(&mut m);
        assert_eq!(out, [120]);
        assert_eq!(step, Pause::Wait("a".into()));
    }

    #[tokio::test]
    async fn a_required_source_that_stays_silent_blocks_the_merge() {
        let mut m = Merger::new(0);
        let (a, sa) = source("a", 4, m.waker());
        let (_silent, ss) = source::<i64>("silent", 4, m.waker());
        assert_eq!(_silent.exclude_upto(), None);
        m.add_source(sa);
        m.add_source(ss);
        a.send(vec![1, 2, 3]).await.unwrap();
        let (out, step) = drain(&mut m);
        assert!(out.is_empty());
        assert_eq!(step, Pause::Wait("silent".into()));
    }

    #[tokio::test]
    async fn wait_returns_when_the_awaited_source_sends_or_a_flag_flips() {
        let mut m = Merger::new(0);
        let mut out = Vec::new();
        let (a, sa) = source("a", 4, m.waker());
        m.add_source(sa);
        assert_eq!(m.fill(&mut out, 1), Pause::Wait("a".into()));
        let h = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            a.set_exclude_upto(Some(10));
            a
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), m.wait("a")).await.unwrap();
        let a = h.await.unwrap();
        assert_eq!(m.fill(&mut out, 1), Pause::Wait("a".into()), "excluded but nothing else to emit: wait on it");
        a.set_exclude_upto(None);
        let h = tokio::spawn(async move {
            a.send(vec![4]).await.unwrap();
            a
        });
        assert_eq!(m.fill(&mut out, 1), Pause::Wait("a".into()));
        tokio::time::timeout(std::time::Duration::from_secs(5), m.wait("a")).await.unwrap();
        let _a = h.await.unwrap();
        assert_eq!(m.fill(&mut out, 1), Pause::Full);
        assert_eq!(out, [4]);
    }

    proptest! {
        #[test]
        fn output_is_the_sorted_dedup_union(
            streams in proptest::collection::vec(proptest::collection::btree_set(1i64..500, 0..60), 1..12),
            batch in 1usize..7,
            start in 0i64..50,
            max in 1usize..9,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut m = Merger::new(start);
                let mut senders = Vec::new();
                for (i, _) in streams.iter().enumerate() {
                    let (tx, rx) = source(format!("s{i}"), 1024, m.waker());
                    m.add_source(rx);
                    senders.push(tx);
                }
                for (tx, s) in senders.iter().zip(&streams) {
                    let v: Vec<i64> = s.iter().copied().collect();
                    for chunk in v.chunks(batch) {
                        tx.send(chunk.to_vec()).await.unwrap();
                    }
                }
                drop(senders);
                let (out, step) = drain_by(&mut m, max);
                prop_assert_eq!(step, Pause::Idle);
                let want: std::collections::BTreeSet<i64> =
                    streams.iter().flatten().copied().filter(|&x| x > start).collect();
                prop_assert_eq!(out, want.into_iter().collect::<Vec<_>>());
                Ok(())
            })?;
        }
    }
}
