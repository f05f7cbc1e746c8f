//! The bell readers wait on: shards ring it after publishing durable records.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// What the front's shards share: a version counter readers wait on (shards ring it after publishing
/// new durable records) and the largest commit ts known to be allocated. Ringing is an atomic add, plus
/// a lock and a notify only while a reader waits, so appenders do not contend on it.
#[derive(Debug)]
pub(crate) struct Bell {
    version: AtomicU64,
    /// Readers inside `wait_past`.
    waiters: AtomicU64,
    lock: Mutex<()>,
    cv: Condvar,
    /// The largest commit ts known to be allocated: of a Commit or Fake acknowledged through the front,
    /// or a shard's watermark.
    seen: AtomicI64,
}

impl Default for Bell {
    fn default() -> Bell {
        Bell {
            version: AtomicU64::new(0),
            waiters: AtomicU64::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            seen: AtomicI64::new(i64::MIN),
        }
    }
}

impl Bell {
    pub(crate) fn seen(&self) -> i64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Raises `seen` to `ts` (an acknowledged commit ts); true if it moved.
    pub(crate) fn raise_seen(&self, ts: i64) -> bool {
        self.seen.fetch_max(ts, Ordering::SeqCst) < ts
    }

    pub(crate) fn ring(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        // A waiter registers before it checks the version, under the lock it waits with: either it sees
        // the new version, or it is waiting when this notify comes.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.cv.notify_all();
        }
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the version to move past `seen`; true if it did.
    pub(crate) fn wait_past(&self, seen: u64, timeout: Duration) -> bool {
        let g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let (g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |_| self.version.load(Ordering::SeqCst) == seen)
            .unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(g);
        self.version() != seen
    }
}
