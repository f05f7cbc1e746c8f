//! The ack window: every produced, not yet acknowledged item, in write order, and the producer
//! context whose delivery callback releases them.
//!
//! Each message carries a number as its delivery opaque (no allocation, no channel per message):
//! the producer's epoch in the top 16 bits and the message's sequence number below. Sequence numbers
//! are given out in produce order ([`Window::reserve`]), so an item owns one contiguous run of them
//! and the callback finds it (the front item first, else by binary search). The writer produces an item's messages first and
//! then moves them into the window ([`Window::push`]), so a report that comes before its item is
//! kept aside and applied by the push. The callback (on the producer's polling thread) marks the
//! message acked, pops every finished item at the front (returning their budget in one release) and
//! publishes the last one's commit ts as the durable ts: at once when the window is then empty, else
//! at most once per [`PUBLISH_INTERVAL`] (a report comes per message, and waking the durable ts's
//! followers per message cost more than the rest of the callback); a release held back is published
//! by the next report or push.
//!
//! A failed delivery is recorded (the first one only) and wakes the sink's recovery task, which
//! starts a new epoch: callbacks of an older producer are then ignored, and every unacked item is
//! produced again, whole, by a new producer with the same sequence numbers.
//!
//! # Invariants
//! - Items are in the window in produce order, which is write order; their sequence runs ascend
//!   without gaps.
//! - The durable ts only moves to the commit ts of a popped item, and an item is popped only when
//!   every message of it and of every earlier item was acked in the current epoch.
//! - The published durable ts lags the released one only while the window is not empty, by at most
//!   [`PUBLISH_INTERVAL`] or until the next report.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};

/// How often, at most, the callback publishes the durable ts while items wait in the window.
pub(super) const PUBLISH_INTERVAL: Duration = Duration::from_millis(1);

const SEQ_BITS: u32 = 48;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// The delivery opaque of message `seq` produced in `epoch`.
pub(super) fn opaque(epoch: u16, seq: u64) -> usize {
    ((u64::from(epoch) << SEQ_BITS) | (seq & SEQ_MASK)) as usize
}

fn unpack(opaque: usize) -> (u16, u64) {
    let v = opaque as u64;
    ((v >> SEQ_BITS) as u16, v & SEQ_MASK)
}

/// One message of a pending item; kept until its item is released so a new producer can send it
/// again.
#[derive(Debug)]
pub(super) struct Msg {
    /// The partition it goes to.
    pub(super) partition: i32,
    /// Its record header, if any: the chunk header (`"i/n"`) when the transaction is chunked, or the
    /// resolved-ts header.
    pub(super) header: Option<(&'static str, String)>,
    /// The encoded message.
    pub(super) payload: Vec<u8>,
}

/// One written item waiting for its acks; holds its share of the unacked-bytes budget until released.
#[derive(Debug)]
struct Pending {
    commit_ts: i64,
    first_seq: u64,
    msgs: Vec<Msg>,
    /// Which messages of `msgs` were acked.
    acked: Acked,
    /// Messages not yet acked.
    remaining: usize,
    budget: Option<OwnedSemaphorePermit>,
}

/// Which messages of an item were acked: a bit each, the first 64 inline (most items have one
/// message: no allocation).
#[derive(Debug)]
struct Acked {
    low: u64,
    more: Vec<bool>,
}

impl Acked {
    fn new(n: usize) -> Self {
        Self { low: 0, more: if n > 64 { vec![false; n - 64] } else { Vec::new() } }
    }

    /// Marks message `k` acked; false when it already was.
    fn set(&mut self, k: usize) -> bool {
        if k < 64 {
            let bit = 1u64 << k;
            let new = self.low & bit == 0;
            self.low |= bit;
            new
        } else {
            !std::mem::replace(&mut self.more[k - 64], true)
        }
    }
}

/// A failed delivery: the item, the partition and the client's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) commit_ts: i64,
    pub(super) partition: i32,
    pub(super) reason: String,
}

#[derive(Debug, Default)]
struct Inner {
    epoch: u16,
    /// The next sequence number to reserve.
    next_seq: u64,
    /// The end of the last pushed item's run: reports at or past it belong to an item not yet pushed.
    pushed_end: u64,
    items: VecDeque<Pending>,
    /// Reports that came before their item was pushed: (sequence number, error).
    early: Vec<(u64, Option<String>)>,
    failure: Option<Failure>,
    /// The last released commit ts, and when the durable ts was last published.
    released: i64,
    published_at: Option<Instant>,
}

/// What the writer, the producer's callback and the recovery task share. See the module docs.
#[derive(Debug)]
pub(super) struct Window {
    inner: Mutex<Inner>,
    durable: watch::Sender<i64>,
    /// Woken when a delivery fails.
    pub(super) failed: Notify,
}

/// A message to produce again after a recovery, with its delivery opaque.
pub(super) type Resend = (usize, Msg);

impl Window {
    pub(super) fn new(durable: watch::Sender<i64>) -> Self {
        Self { inner: Mutex::default(), durable, failed: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The follower of the durable ts.
    pub(super) fn durable(&self) -> &watch::Sender<i64> {
        &self.durable
    }

    /// Reserves the sequence numbers of an item of `n` messages; returns their delivery opaques, in
    /// order. The caller produces the messages, then [`Window::push`]es the item, before reserving
    /// for the next one.
    pub(super) fn reserve(&self, n: usize) -> impl Iterator<Item = usize> + use<> {
        let mut g = self.lock();
        let first = g.next_seq;
        g.next_seq += n as u64;
        let epoch = g.epoch;
        (first..first + n as u64).map(move |seq| opaque(epoch, seq))
    }

    /// Adds the item whose messages were just produced with the opaques [`Window::reserve`] gave.
    /// An item without messages (everything already in the topic) is released at once, behind the
    /// items before it.
    pub(super) fn push(&self, commit_ts: i64, msgs: Vec<Msg>, budget: Option<OwnedSemaphorePermit>) {
        let mut g = self.lock();
        let first_seq = g.pushed_end;
        let n = msgs.len();
        g.pushed_end += n as u64;
        let mut p = Pending { commit_ts, first_seq, acked: Acked::new(n), remaining: n, msgs, budget };
        let mut failed = None;
        let end = g.pushed_end;
        g.early.retain(|(seq, error)| {
            if !(first_seq..end).contains(seq) {
                return true;
            }
            let k = (seq - first_seq) as usize;
            match error {
                Some(reason) => {
                    failed.get_or_insert(Failure { commit_ts, partition: p.msgs[k].partition, reason: reason.clone() });
                }
                None => {
                    if p.acked.set(k) {
                        p.remaining -= 1;
                    }
                }
            }
            false
        });
        g.items.push_back(p);
        let wake = failed.is_some() && g.failure.is_none();
        if wake {
            g.failure = failed;
        }
        let (publish, budget) = release_front(&mut g);
        drop(g);
        drop(budget);
        self.publish(publish);
        if wake {
            self.failed.notify_one();
        }
    }

    /// The producer's delivery report for the message behind `opaque`.
    pub(super) fn delivered(&self, opaque: usize, error: Option<String>) {
        let (epoch, seq) = unpack(opaque);
        let mut g = self.lock();
        if epoch != g.epoch {
            return; // A report of a producer that was replaced.
        }
        if seq >= g.pushed_end {
            g.early.push((seq, error));
            return;
        }
        // Reports come mostly in produce order: the front item is the usual one.
        let ends_before = |p: &Pending| p.first_seq + p.msgs.len() as u64 <= seq;
        let i = if g.items.front().is_some_and(|p| !ends_before(p)) { 0 } else { g.items.partition_point(ends_before) };
        let Some(p) = g.items.get_mut(i).filter(|p| p.first_seq <= seq) else { return };
        let k = (seq - p.first_seq) as usize;
        match error {
            Some(reason) => {
                let f = Failure { commit_ts: p.commit_ts, partition: p.msgs[k].partition, reason };
                if g.failure.is_none() {
                    g.failure = Some(f);
                    drop(g);
                    self.failed.notify_one();
                }
                return;
            }
            None => {
                if !p.acked.set(k) {
                    return; // a duplicate report
                }
                p.remaining -= 1;
            }
        }
        if i != 0 {
            return;
        }
        let (publish, budget) = release_front(&mut g);
        drop(g);
        drop(budget);
        self.publish(publish);
    }

    fn publish(&self, ts: Option<i64>) {
        if let Some(ts) = ts {
            self.advance_durable(ts);
        }
    }

    /// Moves the durable ts up to `ts` (never down), waking its followers only when it moved.
    pub(super) fn advance_durable(&self, ts: i64) {
        self.durable.send_if_modified(|d| {
            let moved = ts > *d;
            *d = (*d).max(ts);
            moved
        });
    }

    /// The first failure since the last [`Window::new_epoch`], if any.
    pub(super) fn failure(&self) -> Option<Failure> {
        self.lock().failure.clone()
    }

    /// Whether no item waits for acks.
    pub(super) fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Starts a new epoch (reports of older producers are ignored from now on), clears the failure
    /// and marks every message of each item that still waits for an ack as unacked, so the item is
    /// sent again whole and a chunk sequence is never cut. Returns those messages (copies, so they
    /// are produced without the lock) with their new opaques, in order.
    pub(super) fn new_epoch(&self) -> Vec<Resend> {
        let mut g = self.lock();
        g.epoch = g.epoch.wrapping_add(1);
        g.failure = None;
        g.early.clear();
        let epoch = g.epoch;
        let mut out = Vec::new();
        for p in g.items.iter_mut().filter(|p| p.remaining > 0) {
            p.acked = Acked::new(p.msgs.len());
            p.remaining = p.msgs.len();
            for (i, m) in p.msgs.iter().enumerate() {
                let copy = Msg { partition: m.partition, header: m.header.clone(), payload: m.payload.clone() };
                out.push((opaque(epoch, p.first_seq + i as u64), copy));
            }
        }
        out
    }
}

/// Pops every fully acked item at the front. Returns the commit ts to publish as the durable ts, if
/// it is time to (see the module docs), and the popped items' budget (to release after unlocking).
fn release_front(g: &mut Inner) -> (Option<i64>, Option<OwnedSemaphorePermit>) {
    let mut budget: Option<OwnedSemaphorePermit> = None;
    while g.items.front().is_some_and(|p| p.remaining == 0) {
        let Some(p) = g.items.pop_front() else { break };
        g.released = g.released.max(p.commit_ts);
        match (&mut budget, p.budget) {
            (Some(all), Some(b)) => all.merge(b),
            (all @ None, b) => *all = b,
            (Some(_), None) => {}
        }
    }
    let due = g.items.is_empty() || g.published_at.is_none_or(|at| at.elapsed() >= PUBLISH_INTERVAL);
    if g.released == 0 || !due {
        return (None, budget);
    }
    g.published_at = Some(Instant::now());
    (Some(g.released), budget)
}

/// The producer context: routes delivery reports of one epoch's producer to the window.
pub(super) struct AckContext {
    /// `None` for the transactional producer, whose commit reports the outcome instead.
    pub(super) window: Option<std::sync::Arc<Window>>,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        if let Some(w) = &self.window {
            w.delivered(opaque, result.as_ref().err().map(|(e, _)| e.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(n: usize) -> Vec<Msg> {
        (0..n).map(|i| Msg { partition: 0, header: None, payload: vec![i as u8] }).collect()
    }

    fn window() -> (Window, watch::Receiver<i64>) {
        let (tx, rx) = watch::channel(0);
        (Window::new(tx), rx)
    }

    /// Reserves, "produces" and pushes an item; returns its opaques.
    fn add(w: &Window, commit_ts: i64, n: usize) -> Vec<usize> {
        let ops = w.reserve(n).collect();
        w.push(commit_ts, msgs(n), None);
        ops
    }

    #[test]
    fn items_are_released_in_order_only_when_every_earlier_message_is_acked() {
        let (w, rx) = window();
        let a = add(&w, 10, 2);
        let b = add(&w, 20, 1);
        w.delivered(b[0], None);
        assert_eq!(*rx.borrow(), 0, "a later item's ack releases nothing");
        w.delivered(a[1], None);
        w.delivered(a[1], None); // a duplicate report counts once
        assert_eq!(*rx.borrow(), 0);
        w.delivered(a[0], None);
        assert_eq!(*rx.borrow(), 20, "both released at once");
        assert!(w.is_empty());
        // An item with no messages is released behind the ones before it.
        let c = add(&w, 30, 1);
        add(&w, 40, 0);
        assert_eq!(*rx.borrow(), 20);
        w.delivered(c[0], None);
        assert_eq!(*rx.borrow(), 40);
    }

    #[test]
    fn a_report_before_its_push_is_applied_by_the_push() {
        let (w, rx) = window();
        let a: Vec<usize> = w.reserve(2).collect();
        w.delivered(a[1], None);
        w.delivered(a[0], None);
        assert_eq!(*rx.borrow(), 0);
        w.push(10, msgs(2), None);
        assert_eq!(*rx.borrow(), 10);
        let b: Vec<usize> = w.reserve(1).collect();
        w.delivered(b[0], Some("refused".into()));
        w.push(20, msgs(1), None);
        assert_eq!(w.failure().map(|f| (f.commit_ts, f.reason)), Some((20, "refused".to_string())));
        assert_eq!(*rx.borrow(), 10);
    }

    #[test]
    fn a_failure_is_kept_and_a_new_epoch_resends_unacked_items_whole_and_ignores_old_reports() {
        let (w, rx) = window();
        let a = add(&w, 10, 1);
        let b = add(&w, 20, 2);
        w.delivered(a[0], None);
        w.delivered(b[0], None);
        w.delivered(b[1], Some("timed out".into()));
        w.delivered(b[1], Some("second".into()));
        assert_eq!(w.failure(), Some(Failure { commit_ts: 20, partition: 0, reason: "timed out".into() }));
        assert_eq!(*rx.borrow(), 10);
        let sent = w.new_epoch();
        assert_eq!(sent.iter().map(|(_, m)| m.payload.clone()).collect::<Vec<_>>(), [vec![0], vec![1]], "item 20 again, whole");
        assert_eq!(w.failure(), None);
        // The old producer's late success report counts for nothing.
        w.delivered(b[1], None);
        w.delivered(b[0], None);
        assert_eq!(*rx.borrow(), 10);
        w.delivered(sent[0].0, None);
        w.delivered(sent[1].0, None);
        assert_eq!(*rx.borrow(), 20);
        // New items continue after the re-sent ones.
        let c = add(&w, 30, 1);
        w.delivered(c[0], None);
        assert_eq!(*rx.borrow(), 30);
    }

    #[test]
    fn released_items_return_their_budget_and_a_held_back_release_is_published_by_a_later_report() {
        let (w, rx) = window();
        let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(10));
        let mut ops = Vec::new();
        for (ts, bytes) in [(10, 3), (20, 4), (30, 1), (40, 1)] {
            ops.push(w.reserve(1).next().unwrap());
            w.push(ts, msgs(1), Some(budget.clone().try_acquire_many_owned(bytes).unwrap()));
        }
        assert_eq!(budget.available_permits(), 1);
        w.delivered(ops[0], None);
        assert_eq!(*rx.borrow(), 10, "the first release is published");
        assert_eq!(budget.available_permits(), 4);
        w.delivered(ops[1], None); // may be held back: within PUBLISH_INTERVAL, items still wait
        assert_eq!(budget.available_permits(), 8, "released items return their budget at once");
        std::thread::sleep(PUBLISH_INTERVAL * 2);
        w.delivered(ops[2], None);
        assert_eq!(*rx.borrow(), 30, "the interval passed: the next report publishes");
        w.delivered(ops[3], None);
        assert_eq!(*rx.borrow(), 40, "an empty window publishes at once");
        assert_eq!(budget.available_permits(), 10);
    }

    #[test]
    fn an_item_of_more_than_64_messages_is_released_only_when_each_is_acked_once() {
        let (w, rx) = window();
        let ops = add(&w, 10, 70);
        for &op in &ops[..69] {
            w.delivered(op, None);
            w.delivered(op, None); // a duplicate counts once
        }
        assert_eq!(*rx.borrow(), 0, "one message (the 70th) is still unacked");
        w.delivered(ops[69], None);
        assert_eq!(*rx.borrow(), 10);
    }

    #[test]
    fn opaques_round_trip_and_epochs_wrap() {
        assert_eq!(unpack(opaque(7, 123_456)), (7, 123_456));
        assert_eq!(unpack(opaque(u16::MAX, SEQ_MASK)), (u16::MAX, SEQ_MASK));
        assert_eq!(u16::MAX.wrapping_add(1), 0);
    }
}
