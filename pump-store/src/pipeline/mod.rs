//! The io_uring write path of a shard ([`crate::IoBackend::Uring`]): one thread per shard owns the
//! active segment's `O_DIRECT` descriptor and a [`Device`], and keeps up to `io_depth` batches in
//! flight at consecutive [`ALIGN`]ed offsets of the preallocated segment.
//!
//! Appenders queue as for the std backend (`commit`) but never lead: they wake this thread, which takes
//! whatever is queued as the next batch as long as fewer than `io_depth` are in flight, encodes it into
//! an aligned buffer (records, then a pad record up to the next boundary) and submits it as one durable
//! write (`RWF_DSYNC`). Completions arrive in any order; a batch is published (sorter, readers) and its
//! appenders answered only when it and every batch submitted before it have completed, so an
//! acknowledged record never follows a write that might not be on disk.
//!
//! Invariants: batches are placed and submitted in queue order, at increasing offsets with no gap, so
//! on disk the log can only have holes where a write was still in flight; batch N is published after
//! batch N-1; after any failed write the store is poisoned: every batch in flight and queued is answered
//! with an error, and nothing is published any more (even a write that completes later). Rotation
//! (seal, next segment) waits until nothing is in flight.
//!
//! Space: every batch ends on an [`ALIGN`] boundary, so a batch takes at least 4 KiB on disk and its pad
//! is at most `ALIGN + MIN_RECORD_LEN - 1` bytes (FORMAT.md). With one appender at a time that is one
//! 4 KiB block per append, whatever its size.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::commit::{GroupCommit, Parked, Queued};
use crate::core::Core;
use crate::record::Record;
use crate::format::{self, MIN_RECORD_LEN};
use crate::io::{ALIGN, AlignedBuf, Completion, Device, WriteOp};
use crate::segment::seg_path;
use crate::state::Shared;
use crate::writer::{Encoded, Writer};
use crate::error::StoreError;

/// Buffers kept for reuse are dropped above this size, so one huge batch does not pin its memory.
const KEEP_BUF: usize = 4 << 20;

/// One batch submitted and not yet published.
struct InFlight {
    token: u64,
    enc: Encoded,
    batch: Vec<Queued<Record>>,
    /// Set by the completion.
    done: Option<std::io::Result<()>>,
}

struct Pipeline {
    dev: Box<dyn Device>,
    /// The active segment opened for direct writes.
    dio: File,
    in_flight: VecDeque<InFlight>,
    pool: Vec<AlignedBuf>,
    next_token: u64,
}

/// The shard's pipeline thread: runs until the store is closed and every queued append is answered,
/// then releases the active file and the directory lock (as `commit::background` does for std).
pub(crate) fn run(core: Arc<Core>, dev: Box<dyn Device>) {
    let (shared, gc) = (&*core.shared, &core.commit);
    let depth = shared.cfg.io_depth.max(1);
    gc.set_waker(dev.waker());
    let mut guard = core.writer();
    let mut p = None;
    if let Some(w) = guard.as_mut() {
        match open_dio(shared, w) {
            Ok(dio) => p = Some(Pipeline { dev, dio, in_flight: VecDeque::new(), pool: Vec::new(), next_token: 0 }),
            Err(e) => drop(shared.poison(e)),
        }
    }
    let mut last_space = Instant::now();
    let mut done = Vec::new();
    loop {
        // Submit what is queued, while there is room in flight.
        let mut q = gc.queue();
        while !q.pending.is_empty() {
            let (Some(w), Some(p), None) = (guard.as_mut(), p.as_mut(), shared.poisoned()) else {
                // Without a failure, the writer is gone: the shard is closing.
                let why = shared.poisoned();
                let items: Vec<Queued<Record>> = q.pending.drain(..).collect();
                drop(q);
                for item in items {
                    item.waiter.complete(Err(why.clone().map_or(StoreError::Closed, StoreError::Poisoned)));
                }
                q = gc.queue();
                continue;
            };
            if p.in_flight.len() >= depth {
                break;
            }
            let next = GroupCommit::peek_batch_bytes(&q, shared.cfg.max_batch_bytes) + ALIGN as usize + MIN_RECORD_LEN;
            if w.needs_rotation(&shared.cfg, next as u64) {
                if !p.in_flight.is_empty() {
                    break;
                }
                drop(q);
                let rotated = w.rotate(shared).and_then(|()| open_dio(shared, w));
                match rotated {
                    Ok(dio) => p.dio = dio,
                    Err(e) => drop(shared.poison(e)),
                }
                q = gc.queue();
                continue;
            }
            let batch = GroupCommit::take_batch(&mut q, shared.cfg.max_batch_bytes);
            drop(q);
            w.make_room(&shared.cfg, next as u64);
            p.submit(shared, w, batch);
            q = gc.queue();
        }
        let Some(pl) = p.as_mut().filter(|p| !p.in_flight.is_empty()) else {
            if q.closed && q.pending.is_empty() {
                break;
            }
            q.parked = Parked::Condvar;
            let (mut q, _) = gc.cv.wait_timeout(q, Duration::from_secs(1)).unwrap_or_else(|e| e.into_inner());
            q.parked = Parked::No;
            drop(q);
            refresh_space(shared, &mut last_space);
            continue;
        };
        // Appenders must wake the device wait only if this thread could take their append at once.
        q.parked = if q.pending.is_empty() { Parked::Device } else { Parked::No };
        drop(q);
        let res = pl.dev.wait(&mut done);
        gc.queue().parked = Parked::No;
        match res {
            Ok(()) => {
                for c in done.drain(..) {
                    pl.complete(c);
                }
                if let Some(w) = guard.as_mut() {
                    pl.publish_ready(shared, w);
                }
            }
            Err(e) => {
                done.clear();
                let why = shared.poison(StoreError::Io { op: "io_uring wait", path: shared.cfg.dir.clone(), source: e });
                pl.fail_all(&why);
            }
        }
        refresh_space(shared, &mut last_space);
    }
    // Nobody may lead again: the queue is closed and empty. Wait for stray writes (after a failure)
    // before the buffers go, then release the file and the lock.
    drop(p);
    drop(guard.take());
    drop(guard);
    shared.mark_closed();
    gc.exited();
}

fn refresh_space(shared: &Shared, last: &mut Instant) {
    if last.elapsed() >= Duration::from_secs(1) {
        shared.refresh_space();
        *last = Instant::now();
    }
}

fn open_dio(shared: &Shared, w: &Writer) -> Result<File, StoreError> {
    let path = seg_path(&shared.cfg.dir, w.seq);
    let (file, direct) =
        crate::io::open_direct(&path).map_err(|source| StoreError::Io { op: "open for direct writes", path: path.clone(), source })?;
    if !direct {
        tracing::warn!(path = %path.display(), "O_DIRECT not supported here; the io_uring path writes through the page cache");
    }
    Ok(file)
}

impl Pipeline {
    /// Encodes `batch` at the end of the log into an aligned buffer and submits it.
    fn submit(&mut self, shared: &Shared, w: &mut Writer, batch: Vec<Queued<Record>>) {
        let mut buf = self.pool.pop().unwrap_or_default();
        let bytes: usize = batch.iter().map(|q| format::encoded_len(q.rec.payload.len())).sum();
        let out = buf.begin(bytes + ALIGN as usize + MIN_RECORD_LEN);
        let enc = w.encode(shared, batch.iter().map(|q| &q.rec), out, ALIGN);
        buf.finish();
        let token = self.next_token;
        self.next_token += 1;
        let op = WriteOp { token, buf, off: enc.start, dsync: shared.cfg.sync_log };
        match self.dev.submit(&self.dio, op) {
            Ok(()) => self.in_flight.push_back(InFlight { token, enc, batch, done: None }),
            Err((op, source)) => {
                let path = seg_path(&shared.cfg.dir, enc.seq);
                let (kind, msg) = (source.kind(), source.to_string());
                let why = shared.poison(StoreError::Io { op: "submit write", path: path.clone(), source });
                self.keep(op.buf);
                for item in batch {
                    let source = std::io::Error::new(kind, msg.clone());
                    item.waiter.complete(Err(StoreError::Io { op: "write", path: path.clone(), source }));
                }
                self.fail_all(&why);
            }
        }
    }

    fn keep(&mut self, buf: AlignedBuf) {
        if buf.capacity() <= KEEP_BUF && self.pool.len() < 64 {
            self.pool.push(buf);
        }
    }

    /// Notes a completion (its batch may not be publishable yet).
    fn complete(&mut self, c: Completion) {
        let Completion { token, buf, result } = c;
        self.keep(buf);
        if let Some(f) = self.in_flight.iter_mut().find(|f| f.token == token) {
            f.done = Some(result);
        }
    }

    /// Publishes and answers, in order, every batch at the front whose write and every earlier one
    /// succeeded; at the first failed one, poisons the store and fails everything still in flight.
    fn publish_ready(&mut self, shared: &Shared, w: &mut Writer) {
        while let Some(front) = self.in_flight.front() {
            match &front.done {
                None => break,
                Some(Ok(())) => {
                    let Some(f) = self.in_flight.pop_front() else { return };
                    w.publish(shared, &f.enc);
                    for item in f.batch {
                        item.waiter.complete(Ok(()));
                    }
                }
                Some(Err(e)) => {
                    let path = seg_path(&shared.cfg.dir, front.enc.seq);
                    let (kind, msg) = (e.kind(), e.to_string());
                    let why = shared.poison(StoreError::Io {
                        op: "write",
                        path: path.clone(),
                        source: std::io::Error::new(kind, msg.clone()),
                    });
                    let Some(f) = self.in_flight.pop_front() else { return };
                    for item in f.batch {
                        let source = std::io::Error::new(kind, msg.clone());
                        item.waiter.complete(Err(StoreError::Io { op: "write", path: path.clone(), source }));
                    }
                    self.fail_all(&why);
                    return;
                }
            }
        }
        // A failure behind a publishable prefix: the prefix went out above; nothing after it may.
        if let Some(failed) = self.in_flight.iter().find_map(|f| f.done.as_ref().and_then(|d| d.as_ref().err())) {
            let source = std::io::Error::new(failed.kind(), failed.to_string());
            let path = seg_path(&shared.cfg.dir, w.seq);
            let why = shared.poison(StoreError::Io { op: "write behind the durable end", path, source });
            self.fail_all(&why);
        }
    }

    /// Answers every batch in flight with [`StoreError::Poisoned`] and forgets them (their writes may
    /// still complete; nothing is published after this).
    fn fail_all(&mut self, why: &Arc<StoreError>) {
        for f in self.in_flight.drain(..) {
            for item in f.batch {
                item.waiter.complete(Err(StoreError::Poisoned(why.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests;
