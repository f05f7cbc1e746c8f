//! One shard: a segment log with its own directory, group-commit queue, sorter, resolver thread, GC
//! and stats. [`crate::Store`] is the front over one or more of them.

use std::fs::{self, File};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bell::Bell;
use crate::core::Core;
use crate::config::StoreConfig;
use crate::error::{StoreError, io_err};
use crate::format::{self, BODY_FIXED_LEN, HEADER_LEN, MAX_BODY_LEN, RecordKind};
use crate::io::{BatchIo, Device, IoBackend, StdIo, UringDevice};
use crate::layout::write_gc_ts;
use crate::pipeline;
use crate::record::{Kind, Record, to_record};
use crate::recovery::recover;
use crate::resolver::{Resolution, Resolver};
use crate::segment::seg_path;
use crate::state::{Shared, available_space};
use crate::stats::StoreStats;

/// A Prewrite waits this long before the resolver is first asked about it (upstream: 1 s).
const RESOLVE_AFTER: Duration = Duration::from_secs(1);

/// How a shard's batches reach the disk.
pub(crate) enum Backend {
    /// The group-commit leader writes each batch through this (`writer`).
    Std(Arc<dyn BatchIo>),
    /// The shard's pipeline thread keeps batches in flight on this device (`pipeline`).
    Uring(Box<dyn Device>),
}

/// The backend `cfg` asks for: io_uring where configured and available (else, with a warning, std).
fn backend_for(cfg: &StoreConfig) -> Backend {
    match cfg.io_backend {
        IoBackend::Std => Backend::Std(Arc::new(StdIo)),
        IoBackend::Uring => match UringDevice::new(cfg.io_depth.max(1)) {
            Ok(d) => Backend::Uring(Box::new(d)),
            Err(e) => {
                tracing::warn!(dir = %cfg.dir.display(), "io_uring unavailable ({e}); using the std backend");
                Backend::Std(Arc::new(StdIo))
            }
        },
    }
}

/// A handle to one open shard. Clones share it; the shard closes (flushing every queued append) when
/// [`Shard::close`] is called or the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Shard {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("dir", &self.inner.shared.cfg.dir).finish()
    }
}

struct Inner {
    core: Arc<Core>,
    /// `core.shared`.
    shared: Arc<Shared>,
    background: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.core.commit.close());
        if let Some(w) = self.background.take() {
            let _ = w.join();
        }
        self.shared.mark_closed();
    }
}

impl Shard {
    /// Opens (creating if needed) the shard in `cfg.dir` with the [`crate::WaitResolver`] and a bell
    /// of its own (tests).
    #[cfg(test)]
    pub(crate) fn open(cfg: StoreConfig) -> Result<Shard, StoreError> {
        Shard::open_with(cfg, Arc::new(crate::resolver::WaitResolver), Arc::new(Bell::default()))
    }

    /// Opens (creating if needed) the shard in `cfg.dir`, ringing `bell` when readers may have
    /// something new. Recovers from a crash: truncates a torn or corrupt tail of the last segment
    /// (logged and counted), then replays the records the sorter had not released. Blocks while it reads.
    pub(crate) fn open_with(cfg: StoreConfig, resolver: Arc<dyn Resolver>, bell: Arc<Bell>) -> Result<Shard, StoreError> {
        let backend = backend_for(&cfg);
        Shard::open_with_backend(cfg, resolver, bell, backend)
    }

    /// [`Shard::open_with`] with the backend given (tests inject faults through it).
    pub(crate) fn open_with_backend(
        cfg: StoreConfig,
        resolver: Arc<dyn Resolver>,
        bell: Arc<Bell>,
        backend: Backend,
    ) -> Result<Shard, StoreError> {
        // Seals and the batches of the std path go through `io`; the pipeline writes its batches itself.
        let (io, device) = match backend {
            Backend::Std(io) => (io, None),
            Backend::Uring(dev) => (Arc::new(StdIo) as Arc<dyn BatchIo>, Some(dev)),
        };
        let rec = recover(&cfg, device.is_some(), io)?;
        let shared = Arc::new(Shared {
            avail: AtomicU64::new(available_space(&cfg.dir)),
            cfg,
            state: Mutex::new(rec.state),
            bell,
            counters: rec.counters,
            poisoned: Mutex::new(None),
        });
        let core = Arc::new(Core::new(shared.clone(), rec.writer, device.is_some()));
        // An active segment of an older format is sealed: new records go into one of this format.
        if let Some(w) = core.writer().as_mut()
            && w.version < format::VERSION
        {
            w.rotate(&shared)?;
        }
        let bg = core.clone();
        let spawned = match device {
            Some(dev) => std::thread::Builder::new().name("pump-store-uring".into()).spawn(move || pipeline::run(bg, dev)),
            None => std::thread::Builder::new().name("pump-store-commit".into()).spawn(move || bg.commit.background(&*bg)),
        };
        let background = spawned.map_err(io_err("spawn commit thread", &shared.cfg.dir))?;
        let inner = Arc::new(Inner { core, shared: shared.clone(), background: Some(background) });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("pump-store-resolver".into())
            .spawn(move || resolve_loop(weak, resolver))
            .map_err(io_err("spawn resolver thread", &shared.cfg.dir))?;
        Ok(Shard { inner })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Appends one binlog; resolves once it is durable (fdatasynced when `sync_log`). Concurrent appends
    /// share one write and one fdatasync, issued by the store's background thread so that the caller's
    /// runtime never blocks on the disk. A record with start_ts == 0 and commit_ts == 0 is upstream's
    /// health probe: it is accepted and not stored.
    pub(crate) async fn append(&self, rec: Record) -> Result<(), StoreError> {
        let Some(rec) = self.admit(rec, true)? else { return Ok(()) };
        self.inner.core.commit.append_task(rec)?.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Shard::append`] for threads outside an async runtime, and the fastest way in: when no write is
    /// in progress the calling thread writes and syncs its record itself (with every append queued
    /// meanwhile), otherwise it waits for the current leader's batch, or is handed the lead.
    pub(crate) fn append_blocking(&self, rec: Record) -> Result<(), StoreError> {
        self.append_blocking_inner(rec, true)
    }

    fn append_blocking_inner(&self, rec: Record, check_space: bool) -> Result<(), StoreError> {
        match self.admit(rec, check_space)? {
            None => Ok(()),
            Some(rec) => self.inner.core.commit.append_thread(&*self.inner.core, rec),
        }
    }

    /// Checks `rec` before it is queued; `None` for a health probe. `check_space` is false for the
    /// resolver's own records, which must get through to unblock the sorter.
    fn admit(&self, rec: Record, check_space: bool) -> Result<Option<Record>, StoreError> {
        if rec.start_ts == 0 && rec.commit_ts == 0 {
            return Ok(None);
        }
        if rec.payload.len() > MAX_BODY_LEN - BODY_FIXED_LEN {
            return Err(StoreError::TooLarge(rec.payload.len()));
        }
        let shared = &self.inner.shared;
        if let Some(why) = shared.poisoned() {
            return Err(StoreError::Poisoned(why));
        }
        // Only a new Prewrite is refused below the threshold: Commits, Rollbacks and fakes settle what
        // is stored, and refusing them would strand the Prewrites already held.
        if check_space && rec.kind == Kind::Prewrite {
            let available = shared.avail.load(Ordering::Relaxed);
            let threshold = shared.cfg.stop_write_at_available_space;
            if available <= threshold {
                return Err(StoreError::NoSpace { available, threshold });
            }
        }
        Ok(Some(rec))
    }

    /// The sorted watermark (upstream `maxCommitTS`): every committed transaction with a commit_ts at
    /// or below it is complete in the log.
    #[cfg(test)]
    pub(crate) fn max_commit_ts(&self) -> i64 {
        self.inner.shared.lock().sorter.watermark()
    }

    /// Raises the GC ts to `ts` (persisted) if it is above the current one and below this shard's
    /// releasable ts (the front checked its global watermark), then deletes sealed segments whose every
    /// ts is at or below `ts - max_txn_timeout` (in TSO units) and that hold nothing the sorter still
    /// waits for.
    pub(crate) fn gc(&self, ts: i64) {
        let shared = &self.inner.shared;
        let victims = {
            let mut st = shared.lock();
            if ts <= st.gc_ts || st.floor.max(st.sorter.watermark()) <= ts {
                return;
            }
            st.gc_ts = ts;
            if let Err(e) = write_gc_ts(&shared.cfg.dir, ts) {
                tracing::error!("persisting gc ts {ts}: {e}");
            }
            let margin = (shared.cfg.max_txn_timeout.as_millis() as i64) << 18;
            let threshold = ts.saturating_sub(margin);
            let active = st.durable_end.seq;
            let keep_from = st.sorter.oldest_seq().unwrap_or(active).min(active);
            let victims: Vec<u64> = st
                .metas
                .range(..keep_from)
                .filter(|(_, m)| m.sealed && m.max_ts <= threshold)
                .map(|(s, _)| *s)
                .collect();
            for s in &victims {
                st.metas.remove(s);
            }
            victims
        };
        for seq in victims {
            let path = seg_path(&shared.cfg.dir, seq);
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "gc removed segment"),
                Err(e) => tracing::error!(path = %path.display(), "gc could not remove segment: {e}"),
            }
        }
    }

    /// Looks up a stored record by key (upstream `ts:` keys): a Prewrite by its start_ts, a Commit or
    /// Fake by its commit_ts. Scans only segments whose ts range holds `ts`; meant for debugging.
    pub(crate) fn get(&self, ts: i64) -> Result<Option<Record>, StoreError> {
        let shared = &self.inner.shared;
        let candidates: Vec<(u64, u64)> = {
            let st = shared.lock();
            st.metas
                .iter()
                .filter(|(_, m)| m.min_ts <= ts && ts <= m.max_ts)
                .map(|(s, m)| (*s, m.data_end))
                .collect()
        };
        for (seq, end) in candidates {
            let path = seg_path(&shared.cfg.dir, seq);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("open", &path)(e)),
            };
            let mut found = None;
            crate::reader::read_records(&file, &path, seq, HEADER_LEN as u64, end, |_, r| {
                let hit = match r.kind {
                    RecordKind::Prewrite => r.start_ts == ts,
                    RecordKind::Commit | RecordKind::Fake => r.commit_ts == ts,
                    _ => false,
                };
                if hit {
                    found = Some(to_record(&r));
                }
                found.is_none()
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Counters and gauges for metrics (`max_commit_ts` is this shard's sorter watermark).
    pub(crate) fn stats(&self) -> StoreStats {
        let shared = &self.inner.shared;
        let c = &shared.counters;
        let st = shared.lock();
        StoreStats {
            appends: c.appends.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            segments: st.metas.len() as u64,
            disk_bytes: st.metas.values().map(|m| m.file_len).sum(),
            torn_tail_truncations: c.truncations.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
            pending_prewrites: st.sorter.pending_len() as u64,
            max_commit_ts: st.sorter.watermark(),
            gc_ts: st.gc_ts,
            available_space: shared.avail.load(Ordering::Relaxed),
        }
    }

    /// Writes the outcome of the pending Prewrite `start_ts`: a Commit at `commit_ts` (empty payload)
    /// or, with `None`, a Rollback. Refused unless that Prewrite is pending here and unmatched. Bypasses
    /// the free-space check: it only ever releases what is stored.
    pub(crate) fn settle(&self, start_ts: i64, commit_ts: Option<i64>) -> Result<(), StoreError> {
        if !self.inner.shared.lock().sorter.is_unmatched(start_ts) {
            return Err(StoreError::NotPending { start_ts });
        }
        if let Some(c) = commit_ts
            && c <= start_ts
        {
            return Err(StoreError::BadCommitTs { start_ts, commit_ts: c });
        }
        let rec = match commit_ts {
            Some(commit_ts) => Record { kind: Kind::Commit, start_ts, commit_ts, payload: Bytes::new() },
            None => Record { kind: Kind::Rollback, start_ts, commit_ts: 0, payload: Bytes::new() },
        };
        self.append_blocking_inner(rec, false)
    }

    /// Unmatched Prewrites: (start_ts, how long since this process saw it).
    pub(crate) fn pending(&self) -> Vec<(i64, Duration)> {
        let now = Instant::now();
        self.inner.shared.lock().sorter.unmatched().into_iter().map(|(ts, at)| (ts, now.duration_since(at))).collect()
    }

    /// Flushes every queued append, stops the writer and ends every pull stream. Appends after this
    /// fail with [`StoreError::Closed`].
    pub(crate) async fn close(self) {
        let _ = self.inner.core.commit.close().await;
    }
}

/// Asks the resolver about Prewrites the sorter is stuck on and writes what it learns as records.
fn resolve_loop(inner: Weak<Inner>, resolver: Arc<dyn Resolver>) {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let Some(inner) = inner.upgrade() else { return };
        let store = Shard { inner };
        let due = {
            let mut st = store.inner.shared.lock();
            if st.closed {
                return;
            }
            st.sorter.due_for_resolve(Instant::now(), RESOLVE_AFTER)
        };
        for start_ts in due {
            let prewrite = match store.get(start_ts) {
                Ok(Some(r)) if r.kind == Kind::Prewrite => r.payload,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(start_ts, "resolver could not read the prewrite: {e}");
                    continue;
                }
            };
            let settled = match resolver.resolve(start_ts, &prewrite) {
                Resolution::Unknown => continue,
                Resolution::Committed(commit_ts) => {
                    tracing::info!(start_ts, commit_ts, "resolver: prewrite committed; writing its commit");
                    Some(commit_ts)
                }
                Resolution::RolledBack => {
                    tracing::info!(start_ts, "resolver: prewrite rolled back");
                    None
                }
            };
            if let Err(e) = store.settle(start_ts, settled) {
                tracing::error!(start_ts, "resolver could not write its resolution: {e}");
            }
        }
        // The handle drops here; if it was the last one the store closes.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::io::disk::FaultIo;

    fn cfg(dir: &Path) -> StoreConfig {
        StoreConfig { dir: dir.to_path_buf(), stop_write_at_available_space: 0, ..StoreConfig::default() }
    }

    fn fake(ts: i64) -> Record {
        Record { kind: Kind::Fake, start_ts: ts, commit_ts: ts, payload: Bytes::from_static(b"f") }
    }

    /// A shard on the std backend over a fault-injecting disk.
    fn open_faulty(cfg: StoreConfig) -> (Shard, Arc<FaultIo>) {
        let io = Arc::new(FaultIo::default());
        let backend = Backend::Std(io.clone());
        (Shard::open_with_backend(cfg, Arc::new(crate::WaitResolver), Arc::new(Bell::default()), backend).unwrap(), io)
    }

    #[test]
    fn after_a_failed_write_the_store_refuses_writes_until_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = open_faulty(cfg(dir.path()));
        store.append_blocking(fake(10)).unwrap();
        disk.fail_next_write();
        let err = store.append_blocking(fake(11)).unwrap_err();
        assert!(matches!(err, StoreError::Io { op: "write", .. }), "{err}");
        let err = store.append_blocking(fake(12)).unwrap_err();
        assert!(matches!(err, StoreError::Poisoned(_)), "{err}");
        assert_eq!(store.stats().write_errors, 1);
        assert_eq!(store.max_commit_ts(), 10, "a failed write never advances the watermark");
        drop(store);
        let store = Shard::open(cfg(dir.path())).unwrap();
        store.append_blocking(fake(13)).unwrap();
        assert_eq!(store.max_commit_ts(), 13);
        assert_eq!(store.get(10).unwrap().map(|r| r.commit_ts), Some(10));
    }

    #[test]
    fn concurrent_appenders_across_a_failed_write_lose_no_acknowledged_record() {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = open_faulty(StoreConfig { segment_size: 16 << 10, ..cfg(dir.path()) });
        let next = Arc::new(AtomicU64::new(100));
        let (tx, rx) = std::sync::mpsc::channel();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, next, tx) = (store.clone(), next.clone(), tx.clone());
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    loop {
                        let ts = next.fetch_add(1, Ordering::SeqCst) as i64;
                        let rec = Record { kind: Kind::Fake, start_ts: ts, commit_ts: ts, payload: Bytes::from(vec![7u8; 200]) };
                        match store.append_blocking(rec) {
                            Ok(()) => {
                                acked.push(ts);
                                let _ = tx.send(());
                            }
                            Err(first) => {
                                // Once one append failed, every later one is refused.
                                let again = store.append_blocking(fake(ts + 1_000_000)).unwrap_err();
                                assert!(matches!(again, StoreError::Poisoned(_)), "{again}");
                                return (acked, first);
                            }
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        for _ in 0..300 {
            rx.recv().unwrap();
        }
        disk.fail_next_write();
        let mut acked = Vec::new();
        let mut io_errors = 0;
        for t in threads {
            let (a, first) = t.join().unwrap();
            acked.extend(a);
            // The failed write is the batch's own or, when the batch rotated, the old segment's footer.
            if matches!(first, StoreError::Io { op: "write" | "write footer", .. }) {
                io_errors += 1;
            } else {
                assert!(matches!(first, StoreError::Poisoned(_)), "{first}");
            }
        }
        assert!(io_errors >= 1, "the failed batch's appenders see the write error");
        assert_eq!(store.stats().write_errors, 1);
        assert!(acked.len() >= 300);
        drop(store);
        let store = Shard::open(cfg(dir.path())).unwrap();
        for ts in acked {
            let got = store.get(ts).unwrap();
            assert_eq!(got.map(|r| r.payload.len()), Some(200), "acknowledged record {ts} lost");
        }
    }

    #[test]
    fn the_io_uring_backend_stores_what_the_std_backend_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Shard::open(StoreConfig {
            io_backend: crate::IoBackend::Uring,
            segment_size: 32 << 10,
            ..cfg(dir.path())
        })
        .unwrap();
        let next = Arc::new(AtomicU64::new(1));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (store, next) = (store.clone(), next.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let ts = next.fetch_add(1, Ordering::SeqCst) as i64;
                        let rec = Record { kind: Kind::Fake, start_ts: ts, commit_ts: ts, payload: Bytes::from(vec![ts as u8; 300]) };
                        store.append_blocking(rec).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(store.stats().segments > 1, "rotation happened under the io_uring backend");
        drop(store);
        let store = Shard::open(cfg(dir.path())).unwrap();
        for ts in 1..=400i64 {
            assert_eq!(store.get(ts).unwrap().map(|r| r.payload), Some(Bytes::from(vec![ts as u8; 300])), "ts {ts}");
        }
    }

    #[test]
    fn a_lone_writer_writes_one_batch_per_append_from_its_own_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = open_faulty(cfg(dir.path()));
        for ts in 1..=20 {
            store.append_blocking(fake(ts)).unwrap();
        }
        let st = store.stats();
        assert_eq!((st.appends, st.batches, st.fsyncs), (20, 20, 20));
        assert_eq!(store.max_commit_ts(), 20);
        let me = std::thread::current().id();
        assert_eq!(disk.last_writer(), Some(me), "the appender wrote its own batch");
        assert_eq!(disk.syncs(), 20, "one fdatasync per batch, counted at the disk");
        // An async append is written by the store's background thread, never on the runtime's worker.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(store.append(fake(21))).unwrap();
        assert_ne!(disk.last_writer(), Some(me));
        assert_eq!(store.max_commit_ts(), 21);
    }

    #[test]
    fn close_releases_the_directory_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Shard::open(cfg(dir.path())).unwrap();
        let keep = store.clone();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(store.close());
        let again = Shard::open(cfg(dir.path())).unwrap();
        drop(keep);
        again.append_blocking(fake(5)).unwrap();
    }
}

