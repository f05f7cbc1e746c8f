//! The front: one or more shards behind one store handle, with one global commit-ts order for readers.
//!
//! An append goes to shard `shard_of(start_ts)`, so a transaction's Prewrite, Commit and Rollback share
//! a shard (and its sorter, which matches them). Every shard keeps its own sorted watermark; the front's
//! watermark is the minimum over the shards of what each can release (`State::releasable`): an idle
//! shard (nothing queued, nothing unsettled) can release up to the largest commit ts the front has
//! acknowledged, because any transaction that reaches it later takes its commit ts later. Readers merge
//! the shards' committed streams up to that minimum (`reader`).
//!
//! Layout (FORMAT.md, "Directory layout"): one shard keeps its segments in the store directory itself
//! (layout 1, the only layout before shards); more than one shard write a `LAYOUT` file and keep shard
//! `i` in `shard-<i>/` (layout 2). The count on disk wins over the configured one: a transaction's
//! records must keep landing in the shard that holds its Prewrite.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::format::Loc;
use crate::resolver::{Resolver, WaitResolver};
use crate::store::{Shard, Shared};
use crate::{Committed, Kind, Record, StoreConfig, StoreError, StoreStats};

/// The file naming the layout of a sharded store directory.
pub(crate) const LAYOUT_FILE: &str = "LAYOUT";
/// The most shards `shards = 0` (automatic) picks.
pub const MAX_AUTO_SHARDS: usize = 8;
/// The most shards a store may have.
pub const MAX_SHARDS: usize = 256;

/// The shard count `shards = 0` stands for: the available cores, at most [`MAX_AUTO_SHARDS`].
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, MAX_AUTO_SHARDS)
}

/// The shard a record with this start_ts belongs to among `n` (part of the on-disk layout: FORMAT.md).
pub fn shard_of(start_ts: i64, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    // Fibonacci hashing: TSO start_ts values differ mostly in their low (logical) and middle bits.
    let h = (start_ts as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (h % n as u64) as usize
}

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
    fn gc_ts_min(&self) -> i64 {
        self.shards.iter().map(|s| s.lock().gc_ts).min().unwrap_or(0)
    }

    /// The highest GC ts of the shards: pulls start no lower.
    pub(crate) fn gc_ts_max(&self) -> i64 {
        self.shards.iter().map(|s| s.lock().gc_ts).max().unwrap_or(0)
    }
}

/// A handle to an open store: one or more shards (`StoreConfig::shards`) behind one commit-ts order.
/// Clone it freely; the store closes (flushing every queued append) when [`Store::close`] is called or
/// the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    shards: Arc<Vec<Shard>>,
    front: Arc<Front>,
    dir: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).field("shards", &self.shards.len()).finish()
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_path_buf(), source }
}

/// How many shards the directory holds: `None` for a fresh directory.
fn read_layout(dir: &Path) -> Result<Option<usize>, StoreError> {
    let path = dir.join(LAYOUT_FILE);
    let bad = |reason: String| StoreError::Layout { path: path.clone(), reason };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut lines = text.lines();
            match lines.next() {
                Some("pump-store layout 2") => {}
                Some(other) => return Err(bad(format!("unknown layout line {other:?} (expected \"pump-store layout 2\")"))),
                None => return Err(bad("empty file".into())),
            }
            let n = lines
                .next()
                .and_then(|l| l.strip_prefix("shards "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .ok_or_else(|| bad("second line must be \"shards <count>\"".into()))?;
            if !(1..=MAX_SHARDS).contains(&n) {
                return Err(bad(format!("shard count {n} outside 1..={MAX_SHARDS}")));
            }
            Ok(Some(n))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Layout 1: segments (or a GC ts) in the directory itself.
            let legacy = match fs::read_dir(dir) {
                Ok(entries) => entries.filter_map(|e| e.ok()).any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.ends_with(".seg") || name == "GC_TS"
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(io_err("read dir", dir)(e)),
            };
            Ok(legacy.then_some(1))
        }
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

fn write_layout(dir: &Path, n: usize) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{LAYOUT_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        io::Write::write_all(&mut f, format!("pump-store layout 2\nshards {n}\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(LAYOUT_FILE))?;
        File::open(dir)?.sync_all()
    };
    write().map_err(io_err("write layout", &dir.join(LAYOUT_FILE)))
}

/// The directories of the shards of the store in `dir`, creating the layout for a fresh directory.
fn shard_dirs(dir: &Path, want: usize) -> Result<Vec<PathBuf>, StoreError> {
    fs::create_dir_all(dir).map_err(io_err("create dir", dir))?;
    let want = if want == 0 { default_shards() } else { want.min(MAX_SHARDS) };
    let n = match read_layout(dir)? {
        Some(n) => {
            if n != want {
                tracing::warn!(
                    dir = %dir.display(),
                    on_disk = n,
                    configured = want,
                    "the store directory was written with {n} shard(s); keeping {n} (the count cannot change while it holds data)"
                );
            }
            if !dir.join(LAYOUT_FILE).exists() {
                return Ok(vec![dir.to_path_buf()]);
            }
            n
        }
        None if want == 1 => return Ok(vec![dir.to_path_buf()]),
        None => {
            write_layout(dir, want)?;
            want
        }
    };
    Ok((0..n).map(|i| dir.join(format!("shard-{i}"))).collect())
}

impl Store {
    /// Opens (creating if needed) the store in `cfg.dir` with the [`WaitResolver`] (an orphan Prewrite
    /// waits for its Commit, a Rollback or [`Store::settle`]).
    /// Recovers every shard from a crash (in parallel): truncates a torn or corrupt tail of its last
    /// segment (logged and counted), then replays the records its sorter had not released. Blocks
    /// while it reads.
    pub fn open(cfg: StoreConfig) -> Result<Store, StoreError> {
        Store::open_with_resolver(cfg, Arc::new(WaitResolver))
    }

    /// Like [`Store::open`] with a custom [`Resolver`] for unmatched Prewrites (shared by the shards).
    pub fn open_with_resolver(cfg: StoreConfig, resolver: Arc<dyn Resolver>) -> Result<Store, StoreError> {
        let dirs = shard_dirs(&cfg.dir, cfg.shards)?;
        let bell = Arc::new(Bell::default());
        let opened: Vec<Result<Shard, StoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = dirs
                .iter()
                .map(|d| {
                    let cfg = StoreConfig { dir: d.clone(), ..cfg.clone() };
                    let (resolver, bell) = (resolver.clone(), bell.clone());
                    s.spawn(move || Shard::open_with(cfg, resolver, bell))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(StoreError::Closed)))
                .collect()
        });
        let shards = opened.into_iter().collect::<Result<Vec<_>, _>>()?;
        for s in &shards {
            let w = s.shared().lock().sorter.watermark();
            bell.raise_seen(w);
        }
        let front = Front { shards: shards.iter().map(|s| s.shared().clone()).collect(), bell };
        Ok(Store { shards: Arc::new(shards), front: Arc::new(front), dir: cfg.dir })
    }

    /// How many shards the store has.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn route(&self, start_ts: i64) -> &Shard {
        &self.shards[shard_of(start_ts, self.shards.len())]
    }

    /// After an acknowledged Commit or Fake: idle shards may release up to its commit ts.
    fn acknowledged(&self, kind: Kind, commit_ts: i64) {
        if matches!(kind, Kind::Commit | Kind::Fake)
            && self.shards.len() > 1
            && self.front.bell.raise_seen(commit_ts)
        {
            self.front.bell.ring();
        }
    }

    /// Appends one binlog to its shard; resolves once it is durable (fdatasynced when `sync_log`).
    /// Concurrent appends to a shard share one write and one fdatasync, issued by the shard's background
    /// thread so that the caller's runtime never blocks on the disk. A record with start_ts == 0 and
    /// commit_ts == 0 is upstream's health probe: it is accepted and not stored.
    pub async fn append(&self, rec: Record) -> Result<(), StoreError> {
        let (kind, commit_ts) = (rec.kind, rec.commit_ts);
        self.route(rec.start_ts).append(rec).await?;
        self.acknowledged(kind, commit_ts);
        Ok(())
    }

    /// [`Store::append`] for threads outside an async runtime, and the fastest way in: when no write is
    /// in progress in its shard the calling thread writes and syncs its record itself (with every
    /// append queued meanwhile), otherwise it waits for the current leader's batch, or is handed the lead.
    pub fn append_blocking(&self, rec: Record) -> Result<(), StoreError> {
        let (kind, commit_ts) = (rec.kind, rec.commit_ts);
        self.route(rec.start_ts).append_blocking(rec)?;
        self.acknowledged(kind, commit_ts);
        Ok(())
    }

    /// The sorted watermark (upstream `maxCommitTS`): every committed transaction with a commit_ts at
    /// or below it is complete in the log. With shards: the minimum of what each shard can release.
    /// Never goes down while the store is open.
    pub fn max_commit_ts(&self) -> i64 {
        self.front.snapshot().watermark
    }

    /// Streams committed transactions and fake binlogs with `commit_ts > after_commit_ts` (clamped up to
    /// the GC ts) in strictly increasing commit_ts order across every shard, never beyond
    /// [`Store::max_commit_ts`]; then tails the log live. Rolled-back transactions are skipped. Ends
    /// when the store closes.
    pub fn pull(
        &self,
        after_commit_ts: i64,
    ) -> impl futures::Stream<Item = Result<Committed, StoreError>> + Send + 'static + use<> {
        crate::reader::pull(self.front.clone(), after_commit_ts)
    }

    /// Raises the GC ts to `ts` (persisted per shard) if it is above the current one and below the
    /// watermark (as upstream), then deletes, in every shard, sealed segments whose every ts is at or
    /// below `ts - max_txn_timeout` (in TSO units) and that hold nothing its sorter still waits for.
    pub fn gc(&self, ts: i64) {
        if ts <= self.front.gc_ts_min() || self.max_commit_ts() <= ts {
            return;
        }
        for s in self.shards.iter() {
            s.gc(ts);
        }
    }

    /// The GC ts (the lowest of the shards').
    pub fn gc_ts(&self) -> i64 {
        self.front.gc_ts_min()
    }

    /// Looks up a stored record by key (upstream `ts:` keys): a Prewrite by its start_ts, a Commit or
    /// Fake by its commit_ts. Scans only segments whose ts range holds `ts`, in every shard; meant for
    /// debugging.
    pub fn get(&self, ts: i64) -> Result<Option<Record>, StoreError> {
        for s in self.shards.iter() {
            if let Some(r) = s.get(ts)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Settles the pending Prewrite `start_ts` by hand (an operator who checked TiDB): a Commit at
    /// `commit_ts`, or with `None` a Rollback, written to its shard as a resolver would.
    pub fn settle(&self, start_ts: i64, commit_ts: Option<i64>) -> Result<(), StoreError> {
        self.shards[shard_of(start_ts, self.shards.len())].settle(start_ts, commit_ts)
    }

    /// Every unmatched Prewrite (start_ts, time since this process saw it), oldest start_ts first.
    pub fn pending(&self) -> Vec<(i64, Duration)> {
        let mut v: Vec<_> = self.shards.iter().flat_map(|s| s.pending()).collect();
        v.sort_unstable();
        v
    }

    /// Counters and gauges for metrics, summed over the shards (`max_commit_ts` is the front's
    /// watermark, `gc_ts` the lowest GC ts, `available_space` the lowest figure).
    pub fn stats(&self) -> StoreStats {
        let mut total = StoreStats { available_space: u64::MAX, gc_ts: i64::MAX, ..StoreStats::default() };
        for s in self.shards.iter() {
            let st = s.stats();
            total.appends += st.appends;
            total.batches += st.batches;
            total.fsyncs += st.fsyncs;
            total.bytes_written += st.bytes_written;
            total.segments += st.segments;
            total.disk_bytes += st.disk_bytes;
            total.torn_tail_truncations += st.torn_tail_truncations;
            total.write_errors += st.write_errors;
            total.pending_prewrites += st.pending_prewrites;
            total.gc_ts = total.gc_ts.min(st.gc_ts);
            total.available_space = total.available_space.min(st.available_space);
        }
        total.max_commit_ts = self.max_commit_ts();
        total
    }

    /// Flushes every queued append, stops the writers and ends every pull stream. Appends after this
    /// fail with [`StoreError::Closed`].
    pub async fn close(self) {
        futures::future::join_all(self.shards.iter().cloned().map(|s| s.close())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_spreads_consecutive_ts_and_is_stable() {
        let mut counts = [0usize; 4];
        let base = 446_000_000_000_000_000i64;
        for i in 0..4000 {
            counts[shard_of(base + i, 4)] += 1;
        }
        for c in counts {
            assert!((700..1300).contains(&c), "uneven routing: {counts:?}");
        }
        // The mapping is part of the on-disk layout: it must never change.
        assert_eq!(shard_of(446_000_000_000_000_000, 4), shard_of(446_000_000_000_000_000, 4));
        assert_eq!(
            (0..8).map(|i| shard_of(i, 4)).collect::<Vec<_>>(),
            vec![0, 1, 2, 0, 1, 3, 0, 2]
        );
        assert_eq!(shard_of(12345, 1), 0);
    }

    #[test]
    fn layout_file_is_strict() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LAYOUT_FILE), "pump-store layout 3\nshards 2\n").unwrap();
        let err = shard_dirs(dir.path(), 2).unwrap_err();
        assert!(err.to_string().contains("unknown layout line"), "{err}");
        fs::write(dir.path().join(LAYOUT_FILE), "pump-store layout 2\nshards 0\n").unwrap();
        assert!(shard_dirs(dir.path(), 2).is_err());
        fs::write(dir.path().join(LAYOUT_FILE), "pump-store layout 2\nshards 3\n").unwrap();
        let dirs = shard_dirs(dir.path(), 5).unwrap();
        assert_eq!(dirs, (0..3).map(|i| dir.path().join(format!("shard-{i}"))).collect::<Vec<_>>());
    }
}
