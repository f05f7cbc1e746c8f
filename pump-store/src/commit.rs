//! Group commit with a leader/follower barrier.
//!
//! Every append joins one queue. The first appender that finds nobody writing becomes the *leader*: it
//! takes every queued append (up to `max_batch_bytes`), writes them with one `pwrite` and one
//! `fdatasync` from its own thread, hands the lead to the next queued thread if more appends arrived
//! meanwhile, and then wakes the followers of its batch. A lone writer therefore never waits and never
//! switches threads. Async appenders cannot block their runtime's worker, so when one of them finds no
//! leader it hands the lead to the store's background thread instead (which also refreshes the free-space
//! figure and performs the close). After a batch that leaves the queue empty, the background thread keeps
//! the lead for up to `lead_linger`, yielding its core, so that the async appenders it just answered can
//! queue again without having to wake it.
//!
//! With the io_uring backend nobody leads: the shard's pipeline thread (`pipeline`) takes the batches,
//! and appenders only queue and wake it (`Queue::parked` says how).
//!
//! Invariants: at most one leader at a time (`Queue::leader`); `leader == false` implies an empty queue;
//! records are written in queue order; an append is answered only after its batch is durable or failed.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::io::Wake as WakeDevice;

/// How to tell one appender its result.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// A thread blocked in `append_blocking`; it may be handed the lead.
    Thread(Arc<Slot>),
    /// An async caller; it is only ever told its result.
    Task(oneshot::Sender<Result<(), StoreError>>),
}

impl Waiter {
    /// Tells the appender its result.
    pub(crate) fn complete(self, res: Result<(), StoreError>) {
        match self {
            Waiter::Thread(slot) => slot.set(SlotState::Done(res)),
            Waiter::Task(tx) => {
                let _ = tx.send(res);
            }
        }
    }
}

/// Where a blocked appender waits.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
enum SlotState {
    #[default]
    Waiting,
    /// The previous leader handed this thread the lead; its record is still queued.
    Lead,
    Done(Result<(), StoreError>),
}

/// What a waiting appender is woken for.
pub(crate) enum Wake {
    Lead,
    Done(Result<(), StoreError>),
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, s: SlotState) {
        *self.lock() = s;
        self.cv.notify_one();
    }

    pub(crate) fn wait(&self) -> Wake {
        let mut st = self.lock();
        loop {
            match std::mem::take(&mut *st) {
                SlotState::Waiting => st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                SlotState::Lead => return Wake::Lead,
                SlotState::Done(r) => return Wake::Done(r),
            }
        }
    }
}

/// One queued append.
#[derive(Debug)]
pub(crate) struct Queued<T> {
    pub(crate) rec: T,
    pub(crate) waiter: Waiter,
}

/// Where the pipeline thread (io_uring backend) waits, so an appender knows how to wake it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parked {
    /// Running, or waiting for a completion it needs anyway (no wake-up needed).
    #[default]
    No,
    /// Idle on `GroupCommit::cv`.
    Condvar,
    /// In its device's wait, with room for another batch in flight.
    Device,
}

/// The commit queue, behind `GroupCommit::queue`.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    pub(crate) pending: VecDeque<Queued<T>>,
    /// How to wake the pipeline thread (io_uring backend; always `No` with std).
    pub(crate) parked: Parked,
    /// Somebody is leading (writing, or handed the lead and about to).
    leader: bool,
    /// The lead was handed to the background thread.
    kick: bool,
    /// No new appends are taken.
    pub(crate) closed: bool,
    /// The background thread has finished: the active file and the directory lock are released.
    exited: bool,
    close_waiters: Vec<oneshot::Sender<()>>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            pending: VecDeque::new(),
            parked: Parked::No,
            leader: false,
            kick: false,
            closed: false,
            exited: false,
            close_waiters: Vec::new(),
        }
    }
}

/// How a batch ended, for every append in it.
#[derive(Debug, Clone)]
pub(crate) enum BatchResult {
    Ok,
    Poisoned(Arc<StoreError>),
    Io { op: &'static str, path: std::path::PathBuf, kind: std::io::ErrorKind, msg: String },
    Closed,
}

impl BatchResult {
    fn to_result(&self) -> Result<(), StoreError> {
        match self {
            BatchResult::Ok => Ok(()),
            BatchResult::Poisoned(why) => Err(StoreError::Poisoned(why.clone())),
            BatchResult::Io { op, path, kind, msg } => {
                Err(StoreError::Io { op, path: path.clone(), source: std::io::Error::new(*kind, msg.clone()) })
            }
            BatchResult::Closed => Err(StoreError::Closed),
        }
    }
}

/// What a queued append carries: its size decides how many go into one batch.
pub(crate) trait Item: Send + 'static {
    /// Bytes it takes in a batch.
    fn size(&self) -> usize;
}

/// Who writes the batches: the shard (its active segment) for its leaders and its background thread.
pub(crate) trait Leader<T> {
    /// Writes one batch (never empty) and makes it durable; how it ended, for every append in it.
    fn write(&self, batch: &[Queued<T>]) -> BatchResult;
    /// The background thread is idle (about once a second).
    fn tick(&self);
    /// The queue is closed and drained: release the writer (the file and the directory lock).
    fn release(&self);
}

/// The group-commit queue with its leader/follower barrier, generic over what it queues.
#[derive(Debug)]
pub(crate) struct GroupCommit<T> {
    queue: Mutex<Queue<T>>,
    /// Wakes the background thread (lead handed to it, close) or the idle pipeline thread.
    pub(crate) cv: Condvar,
    /// Batches go through a pipeline thread instead of a leader.
    pipelined: bool,
    /// Wakes the pipeline thread while it waits on its device (set by that thread).
    waker: OnceLock<Arc<dyn WakeDevice>>,
    /// Upper bound of bytes taken into one batch.
    pub(crate) max_batch_bytes: usize,
    lead_linger: Duration,
}

impl<T: Item> GroupCommit<T> {
    pub(crate) fn new(pipelined: bool, max_batch_bytes: usize, lead_linger: Duration) -> GroupCommit<T> {
        GroupCommit {
            queue: Mutex::new(Queue::default()),
            cv: Condvar::new(),
            pipelined,
            waker: OnceLock::new(),
            max_batch_bytes,
            lead_linger,
        }
    }

    pub(crate) fn queue(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets what wakes the pipeline thread from its device wait.
    pub(crate) fn set_waker(&self, w: Arc<dyn WakeDevice>) {
        let _ = self.waker.set(w);
    }

    /// Wakes the pipeline thread as `how` says (called after releasing the queue lock).
    fn unpark(&self, how: Parked) {
        match how {
            Parked::No => {}
            Parked::Condvar => self.cv.notify_all(),
            Parked::Device => {
                if let Some(w) = self.waker.get() {
                    w.wake();
                }
            }
        }
    }

    /// Appends from a thread that may block: leads if nobody is writing, else waits as a follower (and
    /// leads if handed the lead). Returns once the record is durable or failed. With the io_uring backend it
    /// only queues, wakes the pipeline thread and waits.
    pub(crate) fn append_thread(&self, leader: &impl Leader<T>, rec: T) -> Result<(), StoreError> {
        let slot = Arc::new(Slot::default());
        {
            let mut q = self.queue();
            if q.closed {
                return Err(StoreError::Closed);
            }
            q.pending.push_back(Queued { rec, waiter: Waiter::Thread(slot.clone()) });
            if self.pipelined {
                let how = std::mem::take(&mut q.parked);
                drop(q);
                self.unpark(how);
                return match slot.wait() {
                    Wake::Done(r) => r,
                    // Nobody hands the lead on in pipelined mode; answer rather than hang if that broke.
                    Wake::Lead => Err(StoreError::Closed),
                };
            }
            if q.leader {
                drop(q);
                match slot.wait() {
                    Wake::Done(r) => return r,
                    Wake::Lead => {}
                }
            } else {
                q.leader = true;
            }
        }
        self.lead(leader, Some(&slot))
    }

    /// Queues an append from an async caller; the receiver resolves once it is durable or failed.
    pub(crate) fn append_task(&self, rec: T) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let mut q = self.queue();
        if q.closed {
            return Err(StoreError::Closed);
        }
        q.pending.push_back(Queued { rec, waiter: Waiter::Task(tx) });
        if self.pipelined {
            let how = std::mem::take(&mut q.parked);
            drop(q);
            self.unpark(how);
            return Ok(rx);
        }
        if !q.leader {
            q.leader = true;
            q.kick = true;
            self.cv.notify_all();
        }
        Ok(rx)
    }

    /// Stops taking appends and asks the background thread to finish once the queue is drained.
    /// The receiver resolves when the file and the directory lock are released.
    pub(crate) fn close(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut q = self.queue();
        q.closed = true;
        if q.exited {
            let _ = tx.send(());
        } else {
            q.close_waiters.push(tx);
        }
        let how = std::mem::take(&mut q.parked);
        drop(q);
        self.cv.notify_all();
        self.unpark(how);
        rx
    }

    /// The encoded size of the batch [`take_batch`] would take now.
    pub(crate) fn peek_batch_bytes(q: &Queue<T>, max: usize) -> usize {
        let mut bytes = 0usize;
        for item in &q.pending {
            if bytes >= max {
                break;
            }
            bytes += item.rec.size();
        }
        bytes
    }

    /// Takes the next batch off the queue: at least one append, then more while under `max` bytes.
    pub(crate) fn take_batch(q: &mut Queue<T>, max: usize) -> Vec<Queued<T>> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while bytes < max {
            let Some(item) = q.pending.pop_front() else { break };
            bytes += item.rec.size();
            batch.push(item);
        }
        batch
    }

    /// Passes the lead on (the caller holds it and is done): to the first queued blocking appender, else to
    /// the background thread; or gives it up when nothing is queued.
    fn pass_lead(&self, q: &mut Queue<T>) {
        if q.pending.is_empty() {
            q.leader = false;
            if q.closed {
                self.cv.notify_all();
            }
            return;
        }
        for item in &q.pending {
            if let Waiter::Thread(slot) = &item.waiter {
                slot.set(SlotState::Lead);
                return;
            }
        }
        q.kick = true;
        self.cv.notify_all();
    }

    /// Writes batches as the leader. With `own` (a blocking appender), until its own record is written,
    /// then passes the lead on and returns its result; without (the background thread), until the queue is
    /// empty, then gives the lead up.
    fn lead(&self, leader: &impl Leader<T>, own: Option<&Arc<Slot>>) -> Result<(), StoreError> {
        let mut wrote = false;
        loop {
            let mut batch = Self::take_batch(&mut self.queue(), self.max_batch_bytes);
            if batch.is_empty() && own.is_none() && wrote {
                batch = self.linger();
            }
            wrote = true;
            let res = if batch.is_empty() {
                BatchResult::Ok
            } else {
                leader.write(&batch)
            };
            let mine = own.and_then(|o| {
                batch.iter().position(|b| matches!(&b.waiter, Waiter::Thread(s) if Arc::ptr_eq(s, o)))
            });
            // With `own`, the batch is never empty before its record was taken (it is queued and only the
            // leader takes from the queue); stop anyway rather than spin if that were ever broken.
            let done = batch.is_empty() || mine.is_some();
            if done {
                // Hand the lead on before waking the followers, so the next batch starts at once.
                self.pass_lead(&mut self.queue());
            }
            let mut own_res = if own.is_some() && mine.is_none() { Err(StoreError::Closed) } else { Ok(()) };
            for (i, item) in batch.into_iter().enumerate() {
                if Some(i) == mine {
                    own_res = res.to_result();
                } else {
                    item.waiter.complete(res.to_result());
                }
            }
            if done {
                return own_res;
            }
        }
    }

    /// The background thread found the queue empty right after a batch: the async appenders it just answered
    /// are about to append again, but each must first be polled by its runtime. Rather than give the lead up,
    /// sleep, and need a wake-up and a free core when the next append comes, keep the lead for up to
    /// `lead_linger`, yielding the core, and take the queue once it has stopped growing for one yield.
    /// Returns an empty batch if nothing came (or the store is closing).
    fn linger(&self) -> Vec<Queued<T>> {
        let until = Instant::now() + self.lead_linger;
        let mut seen = 0usize;
        loop {
            std::thread::yield_now();
            let mut q = self.queue();
            let len = q.pending.len();
            let expired = Instant::now() >= until;
            if (len > 0 && len == seen) || expired || q.closed {
                return Self::take_batch(&mut q, self.max_batch_bytes);
            }
            seen = len;
        }
    }

    /// The background thread: leads for async appenders, refreshes the free-space figure every second, and
    /// on close drains the queue, then releases the active file and the directory lock.
    pub(crate) fn background(&self, leader: &impl Leader<T>) {
        let mut last_space = Instant::now();
        let mut q = self.queue();
        loop {
            if q.kick {
                q.kick = false;
                drop(q);
                let _ = self.lead(leader, None);
                q = self.queue();
                continue;
            }
            if q.closed && !q.leader {
                if q.pending.is_empty() {
                    break;
                }
                q.leader = true;
                q.kick = true;
                continue;
            }
            if last_space.elapsed() >= Duration::from_secs(1) {
                drop(q);
                leader.tick();
                last_space = Instant::now();
                q = self.queue();
                continue;
            }
            q = self.cv.wait_timeout(q, Duration::from_secs(1)).map(|r| r.0).unwrap_or_else(|e| e.into_inner().0);
        }
        // Nobody may lead again: the queue is closed and empty.
        q.leader = true;
        drop(q);
        leader.release();
        self.exited();
    }

    /// The writer has been released (background or pipeline thread at close): marks the shard closed and
    /// answers the `close` callers.
    pub(crate) fn exited(&self) {
        let mut q = self.queue();
        q.leader = true;
        q.exited = true;
        for tx in q.close_waiters.drain(..) {
            let _ = tx.send(());
        }
    }
}
