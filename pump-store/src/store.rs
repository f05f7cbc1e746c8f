//! One shard: a segment log with its own directory, group-commit queue, sorter, resolver thread, GC
//! and stats. [`crate::Store`] is the front over one or more of them.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::commit::{self, Queue};
use crate::format::{
    self, BODY_FIXED_LEN, Footer, HEADER_LEN, IndexEntry, Loc, MAX_BODY_LEN, RecordKind, RecordRef, TRAILER_LEN,
};
use crate::io::{BatchIo, Device, IoBackend, StdIo, UringDevice, Wake};
use crate::pipeline;
use crate::writer::{Writer, create_segment};
use crate::resolver::{Resolution, Resolver};
use crate::front::Bell;
use crate::sorter::Sorter;
use crate::{Kind, Record, StoreConfig, StoreError, StoreStats};

/// A new sparse-index entry is added at the first record at least this far past the previous entry.
pub(crate) const INDEX_EVERY: u64 = 64 << 10;
/// Name of the lock file inside the store directory.
const LOCK_FILE: &str = "LOCK";
/// Name of the file that persists the GC ts.
const GC_TS_FILE: &str = "GC_TS";
/// A Prewrite waits this long before the resolver is first asked about it (upstream: 1 s).
const RESOLVE_AFTER: Duration = Duration::from_secs(1);

/// The file name of segment `seq`.
pub(crate) fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.seg"))
}

pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_path_buf(), source }
}

/// What the store knows about one segment without reading it.
#[derive(Debug, Clone)]
pub(crate) struct SegMeta {
    pub(crate) sealed: bool,
    /// End of the data records: the footer's offset when sealed, the durable end when active.
    pub(crate) data_end: u64,
    pub(crate) file_len: u64,
    /// Smallest lookup key: start_ts of a Prewrite, commit_ts of a Commit or Fake.
    pub(crate) min_ts: i64,
    /// Largest start_ts or commit_ts.
    pub(crate) max_ts: i64,
    pub(crate) max_commit: i64,
    pub(crate) records: u64,
    pub(crate) index: Vec<IndexEntry>,
    /// From the footer: (watermark at seal, replay_from).
    pub(crate) seal: Option<(i64, u64)>,
}

impl SegMeta {
    /// An active segment without records, whose first record goes at `data_start`.
    pub(crate) fn new(data_start: u64) -> SegMeta {
        SegMeta {
            sealed: false,
            data_end: data_start,
            file_len: data_start,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            max_commit: i64::MIN,
            records: 0,
            index: Vec::new(),
            seal: None,
        }
    }

    fn from_footer(f: &Footer, file_len: u64) -> SegMeta {
        SegMeta {
            sealed: true,
            data_end: f.data_end,
            file_len,
            min_ts: f.min_ts,
            max_ts: f.max_ts,
            max_commit: f.max_commit,
            records: f.records,
            index: f.index.clone(),
            seal: Some((f.seal_watermark, f.replay_from)),
        }
    }

    /// Accounts for a durable record of `len` bytes at `off`.
    /// `safe_watermark`: every Commit at or below it lies before `off`.
    pub(crate) fn observe(&mut self, off: u64, kind: RecordKind, start_ts: i64, commit_ts: i64, len: u64, safe_watermark: i64) {
        if self.index.last().is_none_or(|e| off - e.off >= INDEX_EVERY) {
            self.index.push(IndexEntry { off, prefix_max_commit: self.max_commit, safe_watermark });
        }
        match kind {
            RecordKind::Prewrite => self.min_ts = self.min_ts.min(start_ts),
            RecordKind::Commit | RecordKind::Fake => {
                self.min_ts = self.min_ts.min(commit_ts);
                self.max_commit = self.max_commit.max(commit_ts);
            }
            RecordKind::Rollback | RecordKind::Footer | RecordKind::Pad => {}
        }
        self.max_ts = self.max_ts.max(start_ts).max(commit_ts);
        self.records += 1;
        self.data_end = off + len;
    }

    pub(crate) fn footer(&self, seal_watermark: i64, replay_from: u64) -> Footer {
        Footer {
            seal_watermark,
            replay_from,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            max_commit: self.max_commit,
            records: self.records,
            data_end: self.data_end,
            index: self.index.clone(),
        }
    }
}

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
    truncations: AtomicU64,
    write_errors: AtomicU64,
}

/// State shared by the handle, the writer, the resolver and the readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: StoreConfig,
    pub(crate) state: Mutex<State>,
    /// Rung (after the state lock is released) whenever readers may have something new.
    pub(crate) bell: Arc<Bell>,
    pub(crate) counters: Counters,
    poisoned: Mutex<Option<String>>,
    avail: AtomicU64,
    /// The group-commit queue (see `commit`).
    pub(crate) queue: Mutex<Queue>,
    /// Wakes the background thread (lead handed to it, close) or the idle pipeline thread.
    pub(crate) queue_cv: Condvar,
    /// The active segment; only the leader (std) or the pipeline thread (io_uring) touches it. `None`
    /// once closed.
    pub(crate) writer: Mutex<Option<Writer>>,
    /// Batches go through the io_uring pipeline thread (`pipeline`) instead of a leader.
    pub(crate) pipelined: bool,
    /// Wakes the pipeline thread while it waits on its device (set by that thread).
    waker: OnceLock<Arc<dyn Wake>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state is still the best we have.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses every later write until the store is reopened (the first reason is kept).
    pub(crate) fn poison(&self, why: String) {
        tracing::error!(dir = %self.cfg.dir.display(), "pump-store refuses writes until reopened: {why}");
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        let mut p = self.poisoned.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none() {
            *p = Some(why);
        }
    }

    /// Why the store refuses writes, if it does.
    pub(crate) fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_waker(&self, w: Arc<dyn Wake>) {
        let _ = self.waker.set(w);
    }

    /// Wakes the pipeline thread from its device wait.
    pub(crate) fn wake_device(&self) {
        if let Some(w) = self.waker.get() {
            w.wake();
        }
    }

    pub(crate) fn refresh_space(&self) {
        self.avail.store(available_space(&self.cfg.dir), Ordering::Relaxed);
    }
}

fn available_space(dir: &Path) -> u64 {
    match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "statvfs failed, not enforcing the space limit: {e}");
            u64::MAX
        }
    }
}

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
    shared: Arc<Shared>,
    background: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(commit::close(&self.shared));
        if let Some(w) = self.background.take() {
            let _ = w.join();
        }
        self.shared.lock().closed = true;
        self.shared.bell.ring();
    }
}

impl Shard {
    /// Opens (creating if needed) the shard in `cfg.dir` with the [`crate::WaitResolver`] and a bell
    /// of its own (tests).
    #[cfg(test)]
    pub(crate) fn open(cfg: StoreConfig) -> Result<Shard, StoreError> {
        Shard::open_with(cfg, Arc::new(crate::WaitResolver), Arc::new(Bell::default()))
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
        let shared = Arc::new(recover(cfg, bell, device.is_some(), io)?);
        // An active segment of an older format is sealed: new records go into one of this format.
        if let Some(w) = shared.writer.lock().unwrap_or_else(|e| e.into_inner()).as_mut()
            && w.version < format::VERSION
        {
            w.rotate(&shared)?;
        }
        let bg_shared = shared.clone();
        let spawned = match device {
            Some(dev) => {
                std::thread::Builder::new().name("pump-store-uring".into()).spawn(move || pipeline::run(bg_shared, dev))
            }
            None => std::thread::Builder::new().name("pump-store-commit".into()).spawn(move || commit::background(bg_shared)),
        };
        let background = spawned.map_err(io_err("spawn commit thread", &shared.cfg.dir))?;
        let inner = Arc::new(Inner { shared: shared.clone(), background: Some(background) });
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
        commit::append_task(&self.inner.shared, rec)?.await.map_err(|_| StoreError::Closed)?
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
            Some(rec) => commit::append_thread(&self.inner.shared, rec),
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
        let _ = commit::close(&self.inner.shared).await;
    }
}

pub(crate) fn to_record(r: &RecordRef<'_>) -> Record {
    let kind = match r.kind {
        RecordKind::Prewrite => Kind::Prewrite,
        RecordKind::Commit => Kind::Commit,
        RecordKind::Rollback | RecordKind::Footer | RecordKind::Pad => Kind::Rollback,
        RecordKind::Fake => Kind::Fake,
    };
    Record { kind, start_ts: r.start_ts, commit_ts: r.commit_ts, payload: Bytes::copy_from_slice(r.payload) }
}

pub(crate) fn record_kind(k: Kind) -> RecordKind {
    match k {
        Kind::Prewrite => RecordKind::Prewrite,
        Kind::Commit => RecordKind::Commit,
        Kind::Rollback => RecordKind::Rollback,
        Kind::Fake => RecordKind::Fake,
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

fn read_gc_ts(dir: &Path) -> Result<i64, StoreError> {
    let path = dir.join(GC_TS_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<i64>().map_err(|e| StoreError::Io {
            op: "parse gc ts",
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

fn write_gc_ts(dir: &Path, ts: i64) -> io::Result<()> {
    let tmp = dir.join(format!("{GC_TS_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    io::Write::write_all(&mut f, format!("{ts}\n").as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(GC_TS_FILE))?;
    File::open(dir)?.sync_all()
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read dir", dir))? {
        let entry = entry.map_err(io_err("read dir", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".seg")
            && stem.len() == 16
            && let Ok(seq) = stem.parse::<u64>()
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Reads the footer of a sealed segment from its tail, without scanning it.
fn read_seal(path: &Path) -> Result<(Footer, u64), StoreError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let corrupt = |offset: u64, reason| StoreError::Corrupt { path: path.to_path_buf(), offset, reason };
    if len < (HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(corrupt(0, format::DecodeError::Short { need: HEADER_LEN + TRAILER_LEN, have: len as usize }));
    }
    let mut trailer = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut trailer, len - TRAILER_LEN as u64).map_err(io_err("read", path))?;
    if trailer[8..] != format::TRAILER_MAGIC {
        return Err(corrupt(len - TRAILER_LEN as u64, format::DecodeError::BadMagic));
    }
    let mut off_b = [0u8; 8];
    off_b.copy_from_slice(&trailer[..8]);
    let footer_off = u64::from_le_bytes(off_b);
    if footer_off < HEADER_LEN as u64 || footer_off >= len - TRAILER_LEN as u64 {
        return Err(corrupt(len - TRAILER_LEN as u64, format::DecodeError::BadFooter("footer offset out of range")));
    }
    let mut tail = vec![0u8; (len - footer_off) as usize];
    file.read_exact_at(&mut tail, footer_off).map_err(io_err("read", path))?;
    let footer = format::decode_seal(&tail, footer_off, len).map_err(|e| corrupt(footer_off, e))?;
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0).map_err(io_err("read", path))?;
    format::decode_header(&header).map_err(|e| corrupt(0, e))?;
    Ok((footer, len))
}

/// What [`scan_file`] found: the same answer as [`format::scan_segment`] on the whole file, read in chunks.
struct FileScan {
    header: Result<format::SegmentHeader, format::DecodeError>,
    valid_len: u64,
    footer: Option<Footer>,
    stop: Option<format::ScanStop>,
    file_len: u64,
}

/// Scans a segment file in 1 MiB chunks (bounded memory), calling `f` for every valid data record.
/// Agrees with [`format::scan_segment`] on the whole image; `recovery_check` cross-checks the two.
fn scan_file(path: &Path, mut f: impl FnMut(u64, &RecordRef<'_>)) -> Result<FileScan, StoreError> {
    const CHUNK: usize = 1 << 20;
    let file = File::open(path).map_err(io_err("open", path))?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let read = |buf: &mut [u8], at: u64| file.read_exact_at(buf, at).map_err(io_err("read", path));
    let mut scan = FileScan {
        header: Err(format::DecodeError::Short { need: HEADER_LEN, have: len as usize }),
        valid_len: 0,
        footer: None,
        stop: None,
        file_len: len,
    };
    let mut header = vec![0u8; (len as usize).min(HEADER_LEN)];
    read(&mut header, 0)?;
    scan.header = format::decode_header(&header);
    if let Err(e) = &scan.header {
        scan.stop = Some(format::ScanStop { offset: 0, reason: e.clone() });
        return Ok(scan);
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_off = HEADER_LEN as u64;
    let mut filled = HEADER_LEN as u64;
    loop {
        let mut consumed = 0usize;
        let mut bad = None;
        let mut footer_at = None;
        loop {
            match format::decode_record(&buf[consumed..]) {
                Ok((r, _)) if r.kind == RecordKind::Footer => {
                    footer_at = Some(buf_off + consumed as u64);
                    break;
                }
                Ok((r, used)) if r.kind == RecordKind::Pad => consumed += used,
                Ok((r, used)) => {
                    f(buf_off + consumed as u64, &r);
                    consumed += used;
                }
                Err(format::DecodeError::Short { .. }) => break,
                Err(e) => {
                    bad = Some((buf_off + consumed as u64, e));
                    break;
                }
            }
        }
        if let Some(off) = footer_at {
            let mut tail = vec![0u8; (len - off) as usize];
            read(&mut tail, off)?;
            match format::decode_seal(&tail, off, len) {
                Ok(foot) => scan.footer = Some(foot),
                Err(e) => scan.stop = Some(format::ScanStop { offset: off, reason: e }),
            }
            scan.valid_len = off;
            return Ok(scan);
        }
        if let Some((off, e)) = bad {
            scan.valid_len = off;
            scan.stop = Some(format::ScanStop { offset: off, reason: e });
            return Ok(scan);
        }
        buf.drain(..consumed);
        buf_off += consumed as u64;
        if filled >= len {
            scan.valid_len = buf_off;
            if !buf.is_empty() {
                let reason = format::decode_record(&buf).err().unwrap_or(format::DecodeError::Short { need: format::FRAME_LEN, have: 0 });
                scan.stop = Some(format::ScanStop { offset: buf_off, reason });
            }
            return Ok(scan);
        }
        let need = match format::frame_body_len(&buf) {
            Ok(Some(l)) => (format::FRAME_LEN + l).saturating_sub(buf.len()),
            _ => 0,
        };
        let n = (CHUNK.max(need) as u64).min(len - filled) as usize;
        let old = buf.len();
        buf.resize(old + n, 0);
        read(&mut buf[old..], filled)?;
        filled += n as u64;
    }
}

/// The active segment as recovery leaves it.
struct Active {
    seq: u64,
    file: File,
    version: u32,
    /// Where the next record goes (end of the valid records and pads).
    len: u64,
    /// The file's length (preallocated).
    room: u64,
}

impl Active {
    fn create(cfg: &StoreConfig, seq: u64, metas: &mut BTreeMap<u64, SegMeta>) -> Result<Active, StoreError> {
        let (file, len, room) = create_segment(cfg, seq)?;
        let mut m = SegMeta::new(len);
        m.file_len = room;
        metas.insert(seq, m);
        Ok(Active { seq, file, version: format::VERSION, len, room })
    }
}

/// Bytes past the end of the records that recovery reads to tell a clean preallocated tail (zeros)
/// from a torn or damaged one.
const TAIL_CHECK: u64 = 1 << 20;

/// Whether `len` bytes at `off` of `file` (at most [`TAIL_CHECK`]) are all zero.
fn zeros_at(file: &File, path: &Path, off: u64, len: u64) -> Result<bool, StoreError> {
    let mut buf = vec![0u8; len.min(TAIL_CHECK) as usize];
    file.read_exact_at(&mut buf, off).map_err(io_err("read", path))?;
    Ok(buf.iter().all(|&b| b == 0))
}

/// Opens the directory and rebuilds the in-memory state; returns it with the writer for the active
/// segment. `pipelined`: batches will go through the io_uring pipeline (which needs the active segment's
/// end aligned).
fn recover(cfg: StoreConfig, bell: Arc<Bell>, pipelined: bool, io: Arc<dyn BatchIo>) -> Result<Shared, StoreError> {
    let dir = cfg.dir.clone();
    fs::create_dir_all(&dir).map_err(io_err("create dir", &dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir)),
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
    }
    let gc_ts = read_gc_ts(&dir)?;
    let counters = Counters::default();
    let mut metas = BTreeMap::new();
    let seqs = list_segments(&dir)?;
    let active = match seqs.split_last() {
        None => Active::create(&cfg, 1, &mut metas)?,
        Some((&last, sealed)) => {
            for &seq in sealed {
                let path = seg_path(&dir, seq);
                match read_seal(&path) {
                    Ok((f, len)) => {
                        metas.insert(seq, SegMeta::from_footer(&f, len));
                    }
                    Err(seal_err) => {
                        // Not sealed: only acceptable if every byte is a valid record.
                        let mut m = SegMeta::new(HEADER_LEN as u64);
                        let scan = scan_file(&path, |off, r| {
                            let len = format::encoded_len(r.payload.len()) as u64;
                            m.observe(off, r.kind, r.start_ts, r.commit_ts, len, i64::MIN);
                        })?;
                        if let Some(stop) = scan.stop {
                            return Err(StoreError::Corrupt { path, offset: stop.offset, reason: stop.reason });
                        }
                        tracing::warn!(path = %path.display(), "segment is not sealed ({seal_err}); scanned it");
                        m.sealed = true;
                        m.data_end = scan.valid_len;
                        m.file_len = scan.file_len;
                        metas.insert(seq, m);
                    }
                }
            }
            let path = seg_path(&dir, last);
            let scan = scan_file(&path, |_, _| {})?;
            match &scan.header {
                Ok(h) if h.seq != last => {
                    return Err(StoreError::Corrupt {
                        path,
                        offset: 16,
                        reason: format::DecodeError::BadFooter("segment header names another sequence number"),
                    });
                }
                Ok(h) if scan.footer.is_none() => recover_active(&cfg, &counters, &path, last, h.version, &scan, pipelined)?,
                Ok(_) => {
                    if let Some(f) = &scan.footer {
                        metas.insert(last, SegMeta::from_footer(f, scan.file_len));
                    }
                    Active::create(&cfg, last + 1, &mut metas)?
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), offset = 0, "segment header torn ({e}); starting the segment afresh");
                    counters.truncations.fetch_add(1, Ordering::Relaxed);
                    Active::create(&cfg, last, &mut metas)?
                }
            }
        }
    };
    // A recovered active segment's meta is rebuilt during the replay, which knows the watermarks.
    metas.entry(active.seq).or_insert_with(|| SegMeta::new(active.len));
    finish(cfg, bell, lock, gc_ts, counters, metas, active, pipelined, io)
}

/// The last segment, not sealed: keeps its valid records and cuts everything after them (a torn
/// batch, the zeros of its preallocation, and whatever a crash left behind a hole, so no stale byte
/// can ever follow new records); then, in format v2, pads it to the io_uring path's alignment and
/// preallocates it again.
fn recover_active(
    cfg: &StoreConfig,
    counters: &Counters,
    path: &Path,
    seq: u64,
    version: u32,
    scan: &FileScan,
    pipelined: bool,
) -> Result<Active, StoreError> {
    let mut len = scan.valid_len;
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err("open", path))?;
    if let Some(stop) = &scan.stop {
        // A v2 segment normally ends in the zeros of its preallocation: not worth a warning.
        let clean = version >= 2
            && stop.reason == format::DecodeError::BadLength(0)
            && zeros_at(&file, path, len, scan.file_len - len)?;
        if clean {
            tracing::debug!(path = %path.display(), offset = len, "end of records; cutting the preallocated tail");
        } else {
            tracing::warn!(
                path = %path.display(),
                offset = stop.offset,
                dropped_bytes = scan.file_len - len,
                "truncating torn or corrupt tail: {}",
                stop.reason
            );
            counters.truncations.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut room = scan.file_len;
    let mut changed = false;
    if scan.file_len > len {
        file.set_len(len).map_err(io_err("truncate", path))?;
        room = len;
        changed = true;
    }
    if version >= 2 {
        let pad = format::pad_len(len, crate::io::ALIGN);
        if pipelined && pad > 0 {
            let mut v = Vec::with_capacity(pad);
            format::encode_pad(&mut v, pad);
            file.write_all_at(&v, len).map_err(io_err("write pad", path))?;
            len += pad as u64;
            room = room.max(len);
            changed = true;
        }
        let want = crate::writer::prealloc_target(len, cfg.segment_size);
        if cfg.preallocate && room < want {
            room = crate::writer::preallocate(&file, path, room, want);
            changed = true;
        }
    }
    if changed {
        file.sync_all().map_err(io_err("fsync", path))?;
    }
    Ok(Active { seq, file, version, len, room })
}

#[allow(clippy::too_many_arguments)]
fn finish(
    cfg: StoreConfig,
    bell: Arc<Bell>,
    lock: File,
    gc_ts: i64,
    counters: Counters,
    mut metas: BTreeMap<u64, SegMeta>,
    active: Active,
    pipelined: bool,
    io: Arc<dyn BatchIo>,
) -> Result<Shared, StoreError> {
    let dir = cfg.dir.clone();
    // Replay: from the last footer's replay_from (the oldest record its sorter had not released), with
    // the watermark it had then.
    let (w0, from) = metas
        .values()
        .rev()
        .find_map(|m| m.seal)
        .unwrap_or((0, metas.keys().next().copied().unwrap_or(active.seq)));
    let mut sorter = Sorter::new(w0);
    let now = Instant::now();
    let replay: Vec<u64> = metas.range(from..).map(|(s, _)| *s).collect();
    for seq in replay {
        let rebuild = seq == active.seq && metas.get(&seq).is_some_and(|m| !m.sealed);
        let mut m = SegMeta::new(active.len);
        let path = seg_path(&dir, seq);
        scan_file(&path, |off, r| {
            let safe = sorter.watermark();
            feed(&mut sorter, Loc { seq, off }, r.kind, r.start_ts, r.commit_ts, now);
            sorter.drain();
            if rebuild {
                m.observe(off, r.kind, r.start_ts, r.commit_ts, format::encoded_len(r.payload.len()) as u64, safe);
            }
        })?;
        if rebuild {
            m.data_end = active.len;
            m.file_len = active.room;
            metas.insert(seq, m);
        }
    }
    sorter.drain();
    let state = State {
        sorter,
        metas,
        durable_end: Loc { seq: active.seq, off: active.len },
        gc_ts,
        closed: false,
        floor: i64::MIN,
    };
    let writer = Writer::new(active.file, active.seq, active.version, active.len, active.room, lock, io);
    Ok(Shared {
        avail: AtomicU64::new(available_space(&dir)),
        cfg,
        state: Mutex::new(state),
        bell,
        counters,
        poisoned: Mutex::new(None),
        queue: Mutex::new(Queue::default()),
        queue_cv: Condvar::new(),
        writer: Mutex::new(Some(writer)),
        pipelined,
        waker: OnceLock::new(),
    })
}

/// Fsyncs a directory (after creating, renaming or removing an entry in it).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync dir", dir))
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
            if matches!(first, StoreError::Io { op: "write", .. }) {
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
