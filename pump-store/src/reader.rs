//! Pull streams: a sequential scan of the log from a start found through the sparse commit-ts index,
//! a small reorder heap, and a live tail driven by the writer's notifications.
//!
//! Why the heap is enough: every Commit with commit_ts <= the watermark W lies before the durable end E
//! published with W (see `sorter`). So once the reader has scanned up to E, every heap entry <= W can be
//! emitted in order; entries above W wait for a later watermark. The heap only ever holds transactions
//! committed above the watermark, i.e. the ones in flight.

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
use crate::store::{Shared, State, seg_path};
use crate::{Committed, Kind, StoreError};

/// Bytes read per `pread` when scanning.
const CHUNK: usize = 1 << 20;

pub(crate) fn pull(
    shared: Arc<Shared>,
    after: i64,
) -> impl futures::Stream<Item = Result<Committed, StoreError>> + Send + 'static {
    // Items travel in batches so a fast catch-up pays one wake-up per batch, not per binlog.
    let (tx, mut rx) = mpsc::channel::<Vec<Result<Committed, StoreError>>>(8);
    let dir = shared.cfg.dir.clone();
    let spawned = std::thread::Builder::new().name("pump-store-pull".into()).spawn({
        let tx = tx.clone();
        move || Reader::new(shared, after, tx).run()
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

struct Reader {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Vec<Result<Committed, StoreError>>>,
    /// Items emitted but not yet handed to the stream.
    out: Vec<Result<Committed, StoreError>>,
    after: i64,
    /// Last commit_ts emitted (or the start).
    last: i64,
    pos: Loc,
    /// Prewrites seen by this scan whose Commit or Rollback has not been seen yet.
    prewrites: HashMap<i64, Bytes>,
    heap: BinaryHeap<Reverse<Pending>>,
    order: u64,
    /// The stream's consumer went away.
    gone: bool,
    file: Option<(u64, File)>,
    pfile: Option<(u64, File)>,
}

impl Reader {
    fn new(shared: Arc<Shared>, after: i64, tx: mpsc::Sender<Vec<Result<Committed, StoreError>>>) -> Reader {
        Reader {
            shared,
            tx,
            out: Vec::new(),
            after,
            last: after,
            pos: Loc::default(),
            prewrites: HashMap::new(),
            heap: BinaryHeap::new(),
            order: 0,
            gone: false,
            file: None,
            pfile: None,
        }
    }

    fn run(mut self) {
        let shared = self.shared.clone();
        let (mut w, mut e, mut ver) = {
            let st = shared.lock();
            if self.after < st.gc_ts {
                tracing::warn!(after = self.after, gc_ts = st.gc_ts, "pull starts below the gc ts; starting at the gc ts");
            }
            self.last = self.after.max(st.gc_ts);
            self.pos = start_pos(&st, self.last);
            (st.sorter.watermark(), st.durable_end, st.version)
        };
        loop {
            if let Err(err) = self.read_until(e) {
                self.out.push(Err(err));
                let _ = self.flush();
                return;
            }
            if self.gone || !self.emit_upto(w) || !self.flush() {
                return;
            }
            let mut st = shared.lock();
            loop {
                if st.closed || self.tx.is_closed() {
                    return;
                }
                if st.version != ver {
                    break;
                }
                st = shared.cv.wait_timeout(st, Duration::from_millis(200)).map(|r| r.0).unwrap_or_else(|e| e.into_inner().0);
            }
            w = st.sorter.watermark();
            e = st.durable_end;
            ver = st.version;
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
                    if self.shared.lock().closed {
                        return false;
                    }
                    batch = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Emits, in order, every heap entry with commit_ts <= `bound`; false once the consumer is gone.
    fn emit_upto(&mut self, bound: i64) -> bool {
        while self.heap.peek().is_some_and(|p| p.0.commit_ts <= bound) {
            let Some(Reverse(p)) = self.heap.pop() else { break };
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
        true
    }

    fn read_until(&mut self, e: Loc) -> Result<(), StoreError> {
        while self.pos < e && !self.gone {
            let (seq, end, mut checkpoints) = {
                let st = self.shared.lock();
                let Some((&seq, m)) = st.metas.range(self.pos.seq..).next() else { return Ok(()) };
                if seq != self.pos.seq {
                    self.pos = Loc { seq, off: HEADER_LEN as u64 };
                }
                let end = if seq == e.seq { e.off } else { m.data_end };
                // Index entries inside the range to read: passing one lets the heap drain up to its
                // safe watermark, which keeps the heap small during a long catch-up.
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
                let res = read_records(&file, &path, seq, self.pos.off, end, |loc, r| {
                    while checkpoints.front().is_some_and(|c| c.0 <= loc.off) {
                        let Some((_, safe)) = checkpoints.pop_front() else { break };
                        if !self.emit_upto(safe) {
                            return false;
                        }
                    }
                    self.take(&r);
                    true
                });
                self.file = Some((seq, file));
                res?;
                self.pos.off = end;
            }
            if seq < e.seq {
                self.pos = Loc { seq: seq + 1, off: HEADER_LEN as u64 };
            }
        }
        Ok(())
    }

    fn take(&mut self, r: &RecordRef<'_>) {
        match r.kind {
            RecordKind::Prewrite => {
                self.prewrites.insert(r.start_ts, Bytes::copy_from_slice(r.payload));
            }
            RecordKind::Rollback => {
                self.prewrites.remove(&r.start_ts);
            }
            RecordKind::Commit => {
                let p = self.prewrites.remove(&r.start_ts);
                if r.commit_ts > self.last {
                    let p = p.or_else(|| self.read_prewrite(r.prewrite_at, r.start_ts));
                    self.push(r, Kind::Commit, p);
                }
            }
            RecordKind::Fake => {
                if r.commit_ts > self.last {
                    self.push(r, Kind::Fake, None);
                }
            }
            RecordKind::Footer => {}
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

/// Calls `f` for every record in `[from, to)` of segment `seq`, reading big chunks sequentially, until
/// `f` returns false. Bytes in that range were written and synced by us, so damage is an error.
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
