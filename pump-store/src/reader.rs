//! Pull streams: per shard, a sequential scan of its log from a start found through the sparse
//! commit-ts index into a small reorder heap; a merge over the shards' heaps; a live tail driven by the
//! front's bell.
//!
//! Why the heaps are enough: in a shard, every Commit with commit_ts <= its releasable ts R lies before
//! the durable end E published with R (see `sorter` and `State::releasable`). So once a shard's cursor
//! has scanned up to E, every entry <= R is in its heap; the merge emits, in order, what is <= the
//! lowest such bound and <= the front's watermark. During a catch-up the sparse index's safe
//! watermarks give the same promise for a scanned prefix, so the merge can emit before the ends. A
//! heap only holds transactions committed above the watermark (in flight) plus at most a scan step.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::format::{self, FRAME_LEN, HEADER_LEN, Loc, RecordKind, RecordRef};
use crate::front::Front;
use crate::segment::seg_path;
use crate::state::Shared;
use crate::state::State;
use crate::error::StoreError;
use crate::record::{Committed, Kind};

/// Bytes read per `pread` when scanning.
const CHUNK: usize = 1 << 20;

pub(crate) fn pull(
    front: Arc<Front>,
    after: i64,
) -> impl futures::Stream<Item = Result<Committed, StoreError>> + Send + 'static {
    // Items travel in batches so a fast catch-up pays one wake-up per batch, not per binlog.
    let (tx, mut rx) = mpsc::channel::<Vec<Result<Committed, StoreError>>>(8);
    let dir = front.shards.first().map(|s| s.cfg.dir.clone()).unwrap_or_default();
    let spawned = std::thread::Builder::new().name("pump-store-pull".into()).spawn({
        let tx = tx.clone();
        move || Merge::new(front, after, tx).run()
    });
    if let Err(source) = spawned {
        let _ = tx.try_send(vec![Err(StoreError::Io { op: "spawn pull thread", path: dir, source })]);
    }
    drop(tx);
    let mut buf = std::collections::VecDeque::new();
    futures::stream::poll_fn(move |cx| loop {
        if let Some(item) = buf.pop_front() {
            return std::task::Poll::Ready(Some(item));
        }
        match rx.poll_recv(cx) {
            std::task::Poll::Ready(Some(batch)) => buf.extend(batch),
            std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
            std::task::Poll::Pending => return std::task::Poll::Pending,
        }
    })
}

/// Where a pull must start so that it sees every Commit or Fake with commit_ts > `after`.
fn start_pos(st: &State, after: i64) -> Loc {
    for (&seq, m) in &st.metas {
        if m.max_commit <= after {
            continue;
        }
        let mut off = HEADER_LEN as u64;
        for e in &m.index {
            if e.prefix_max_commit <= after {
                off = e.off;
            } else {
                break;
            }
        }
        return Loc { seq, off };
    }
    st.durable_end
}

struct Pending {
    commit_ts: i64,
    order: u64,
    item: Committed,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.commit_ts, self.order) == (o.commit_ts, o.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.commit_ts, self.order).cmp(&(o.commit_ts, o.order))
    }
}

/// A scan step ends at the first sparse-index entry past this many bytes, so a catch-up alternates
/// between shards and their heaps stay small.
const STEP: u64 = 1 << 20;

/// One shard's part of a pull: a sequential scan position and a heap of what it scanned.
struct Cursor {
    shared: Arc<Shared>,
    pos: Loc,
    /// Every Commit or Fake of this shard with commit_ts <= `bound` has been scanned (it is in the heap
    /// or was emitted).
    bound: i64,
    /// Prewrites seen by this scan whose Commit or Rollback has not been seen yet.
    prewrites: HashMap<i64, Bytes>,
    heap: BinaryHeap<Reverse<Pending>>,
    order: u64,
    file: Option<(u64, File)>,
    pfile: Option<(u64, File)>,
}

/// A pull over every shard: scans the shards (the one that lags most first) and emits, in commit_ts
/// order, whatever every shard has scanned up to and the front's watermark allows.
struct Merge {
    front: Arc<Front>,
    cursors: Vec<Cursor>,
    tx: mpsc::Sender<Vec<Result<Committed, StoreError>>>,
    /// Items emitted but not yet handed to the stream.
    out: Vec<Result<Committed, StoreError>>,
    /// Last commit_ts emitted (or the start).
    last: i64,
    /// The stream's consumer went away.
    gone: bool,
}

impl Merge {
    fn new(front: Arc<Front>, after: i64, tx: mpsc::Sender<Vec<Result<Committed, StoreError>>>) -> Merge {
        let gc_ts = front.gc_ts_max();
        if after < gc_ts {
            tracing::warn!(after, gc_ts, "pull starts below the gc ts; starting at the gc ts");
        }
        let last = after.max(gc_ts);
        let cursors = front
            .shards
            .iter()
            .map(|shared| Cursor {
                pos: start_pos(&shared.lock(), last),
                shared: shared.clone(),
                bound: last,
                prewrites: HashMap::new(),
                heap: BinaryHeap::new(),
                order: 0,
                file: None,
                pfile: None,
            })
            .collect();
        Merge { front, cursors, tx, out: Vec::new(), last, gone: false }
    }

    fn run(mut self) {
        let front = self.front.clone();
        loop {
            let ver = front.bell.version();
            let snap = front.snapshot();
            if let Err(err) = self.catch_up(&snap) {
                self.out.push(Err(err));
                let _ = self.flush();
                return;
            }
            if self.gone || !self.emit_upto(snap.watermark) || !self.flush() {
                return;
            }
            loop {
                if snap.closed || self.tx.is_closed() || front.closed() {
                    return;
                }
                if front.bell.wait_past(ver, Duration::from_millis(200)) {
                    break;
                }
            }
        }
    }

    /// Scans every shard to its end in `snap`, emitting as the shards' bounds allow.
    fn catch_up(&mut self, snap: &crate::front::Snapshot) -> Result<(), StoreError> {
        loop {
            for (i, c) in self.cursors.iter_mut().enumerate() {
                if c.pos >= snap.ends[i] {
                    c.bound = c.bound.max(snap.releasable[i]);
                }
            }
            let next = (0..self.cursors.len())
                .filter(|&i| self.cursors[i].pos < snap.ends[i])
                .min_by_key(|&i| self.cursors[i].bound);
            let Some(i) = next else { return Ok(()) };
            let last = self.last;
            self.cursors[i].scan(snap.ends[i], last)?;
            let bound = self.cursors.iter().map(|c| c.bound).min().unwrap_or(i64::MIN).min(snap.watermark);
            if !self.emit_upto(bound) {
                return Ok(());
            }
        }
    }

    /// Hands the emitted items to the stream; false once the stream is gone or the store closed. Never blocks
    /// forever on a consumer that stopped polling, so a closed store lets its readers go.
    fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let mut batch = std::mem::take(&mut self.out);
        loop {
            match self.tx.try_send(batch) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    if self.front.closed() {
                        return false;
                    }
                    batch = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Emits, in commit_ts order across the shards, every heap entry with commit_ts <= `bound`; false
    /// once the consumer is gone.
    fn emit_upto(&mut self, bound: i64) -> bool {
        loop {
            let mut best: Option<(usize, i64)> = None;
            for (i, c) in self.cursors.iter().enumerate() {
                if let Some(Reverse(p)) = c.heap.peek()
                    && p.commit_ts <= bound
                    && best.is_none_or(|(_, ts)| p.commit_ts < ts)
                {
                    best = Some((i, p.commit_ts));
                }
            }
            let Some((i, _)) = best else { return true };
            let Some(Reverse(p)) = self.cursors[i].heap.pop() else { return true };
            if p.commit_ts <= self.last {
                continue;
            }
            self.last = p.commit_ts;
            self.out.push(Ok(p.item));
            if self.out.len() >= 256 && !self.flush() {
                self.gone = true;
                return false;
            }
        }
    }
}

impl Cursor {
    /// Scans toward `e`, taking records into the heap (those with commit_ts <= `last` are dropped):
    /// stops at `e`, or at the first sparse-index entry after [`STEP`] bytes. Raises `bound` by every
    /// index entry passed (its safe watermark).
    fn scan(&mut self, e: Loc, last: i64) -> Result<(), StoreError> {
        let mut read = 0u64;
        while self.pos < e {
            let (seq, end, mut checkpoints) = {
                let st = self.shared.lock();
                let Some((&seq, m)) = st.metas.range(self.pos.seq..).next() else { return Ok(()) };
                if seq != self.pos.seq {
                    self.pos = Loc { seq, off: HEADER_LEN as u64 };
                }
                let end = if seq == e.seq { e.off } else { m.data_end };
                // Index entries inside the range to read: passing one raises the bound to its safe
                // watermark, which lets the merge emit during a long catch-up.
                let from = m.index.partition_point(|x| x.off < self.pos.off);
                let to = m.index.partition_point(|x| x.off < end);
                let cps: std::collections::VecDeque<(u64, i64)> =
                    m.index[from..to].iter().map(|x| (x.off, x.safe_watermark)).collect();
                (seq, end, cps)
            };
            if self.pos.off < end {
                let path = seg_path(&self.shared.cfg.dir, seq);
                if self.file.as_ref().is_none_or(|(s, _)| *s != seq) {
                    match File::open(&path) {
                        Ok(f) => self.file = Some((seq, f)),
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                            // Garbage-collected under us: everything in it is below the gc ts.
                            self.pos = Loc { seq: seq + 1, off: HEADER_LEN as u64 };
                            continue;
                        }
                        Err(source) => return Err(StoreError::Io { op: "open", path, source }),
                    }
                }
                let Some((_, file)) = self.file.take() else { continue };
                let start = self.pos.off;
                let mut stopped = None;
                let res = read_records(&file, &path, seq, start, end, |loc, r| {
                    let mut passed = false;
                    while checkpoints.front().is_some_and(|c| c.0 <= loc.off) {
                        let Some((_, safe)) = checkpoints.pop_front() else { break };
                        self.bound = self.bound.max(safe);
                        passed = true;
                    }
                    if passed && read + (loc.off - start) >= STEP {
                        stopped = Some(loc);
                        return false;
                    }
                    self.take(&r, last);
                    true
                });
                self.file = Some((seq, file));
                res?;
                if let Some(loc) = stopped {
                    self.pos = loc;
                    return Ok(());
                }
                read += end - start;
                self.pos.off = end;
            }
            if seq < e.seq {
                self.pos = Loc { seq: seq + 1, off: HEADER_LEN as u64 };
            }
        }
        Ok(())
    }

    fn take(&mut self, r: &RecordRef<'_>, last: i64) {
        match r.kind {
            RecordKind::Prewrite => {
                self.prewrites.insert(r.start_ts, Bytes::copy_from_slice(r.payload));
            }
            RecordKind::Rollback => {
                self.prewrites.remove(&r.start_ts);
            }
            RecordKind::Commit => {
                let p = self.prewrites.remove(&r.start_ts);
                if r.commit_ts > last {
                    let p = p.or_else(|| self.read_prewrite(r.prewrite_at, r.start_ts));
                    self.push(r, Kind::Commit, p);
                }
            }
            RecordKind::Fake => {
                if r.commit_ts > last {
                    self.push(r, Kind::Fake, None);
                }
            }
            RecordKind::Footer | RecordKind::Pad => {}
        }
    }

    fn push(&mut self, r: &RecordRef<'_>, kind: Kind, prewrite: Option<Bytes>) {
        self.order += 1;
        self.heap.push(Reverse(Pending {
            commit_ts: r.commit_ts,
            order: self.order,
            item: Committed {
                start_ts: r.start_ts,
                commit_ts: r.commit_ts,
                kind,
                payload: Bytes::copy_from_slice(r.payload),
                prewrite,
            },
        }));
    }

    /// Reads a Prewrite that lies before where this scan started, through the Commit's pointer.
    fn read_prewrite(&mut self, at: Loc, start_ts: i64) -> Option<Bytes> {
        if at.seq == 0 {
            return None;
        }
        let path = seg_path(&self.shared.cfg.dir, at.seq);
        if self.pfile.as_ref().is_none_or(|(s, _)| *s != at.seq) {
            match File::open(&path) {
                Ok(f) => self.pfile = Some((at.seq, f)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), start_ts, "matching prewrite not readable: {e}");
                    return None;
                }
            }
        }
        let (_, file) = self.pfile.as_ref()?;
        match read_one(file, at.off) {
            Ok(Some((kind, s, payload))) if kind == RecordKind::Prewrite && s == start_ts => Some(payload),
            other => {
                tracing::warn!(path = %path.display(), offset = at.off, start_ts, "matching prewrite not found: {other:?}");
                None
            }
        }
    }
}

/// Reads the one record at `off`: (kind, start_ts, payload).
fn read_one(file: &File, off: u64) -> std::io::Result<Option<(RecordKind, i64, Bytes)>> {
    let mut frame = [0u8; FRAME_LEN];
    file.read_exact_at(&mut frame, off)?;
    let Ok(Some(len)) = format::frame_body_len(&frame) else { return Ok(None) };
    let mut buf = vec![0u8; FRAME_LEN + len];
    file.read_exact_at(&mut buf, off)?;
    Ok(format::decode_record(&buf).ok().map(|(r, _)| (r.kind, r.start_ts, Bytes::copy_from_slice(r.payload))))
}

/// Calls `f` for every record in `[from, to)` of segment `seq` (pad records skipped), reading big chunks
/// sequentially, until `f` returns false. Bytes in that range were written and synced by us, so damage is an error.
pub(crate) fn read_records(
    file: &File,
    path: &Path,
    seq: u64,
    from: u64,
    to: u64,
    mut f: impl FnMut(Loc, RecordRef<'_>) -> bool,
) -> Result<(), StoreError> {
    let corrupt = |offset: u64, reason| StoreError::Corrupt { path: path.to_path_buf(), offset, reason };
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_off = from; // file offset of buf[0]
    let mut filled_to = from;
    loop {
        let mut consumed = 0usize;
        loop {
            let rest = &buf[consumed..];
            let len = match format::frame_body_len(rest) {
                Ok(None) => break,
                Ok(Some(len)) => len,
                Err(e) => return Err(corrupt(buf_off + consumed as u64, e)),
            };
            if rest.len() < FRAME_LEN + len {
                break;
            }
            let (r, used) = format::decode_record(rest).map_err(|e| corrupt(buf_off + consumed as u64, e))?;
            if r.kind == RecordKind::Pad {
                consumed += used;
                continue;
            }
            if !f(Loc { seq, off: buf_off + consumed as u64 }, r) {
                return Ok(());
            }
            consumed += used;
        }
        buf.drain(..consumed);
        buf_off += consumed as u64;
        if filled_to >= to {
            if !buf.is_empty() {
                return Err(corrupt(buf_off, format::DecodeError::Short { need: FRAME_LEN, have: buf.len() }));
            }
            return Ok(());
        }
        let need = match format::frame_body_len(&buf) {
            Ok(Some(len)) => (FRAME_LEN + len).saturating_sub(buf.len()),
            _ => 0,
        };
        let n = (CHUNK.max(need) as u64).min(to - filled_to) as usize;
        let old = buf.len();
        buf.resize(old + n, 0);
        file.read_exact_at(&mut buf[old..], filled_to)
            .map_err(|source| StoreError::Io { op: "read", path: path.to_path_buf(), source })?;
        filled_to += n as u64;
    }
}
