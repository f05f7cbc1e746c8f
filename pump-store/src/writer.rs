//! The active segment of a shard and what happens to a batch of appends in it: placing (encoding the
//! records with their prewrite pointers, and for the io_uring path a pad to the next alignment
//! boundary), publishing once durable (sorter, segment summary, durable end, the readers' bell,
//! counters), the std backend's write (one `pwrite` + one `fdatasync`), and rotation (seal, truncate,
//! next preallocated segment). Whoever holds `Shared::writer` drives it: the group-commit leader (std)
//! or the shard's pipeline thread (io_uring).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::commit::{BatchResult, Queued};
use crate::format::{self, Loc, RecordKind, RecordRef};
use crate::io::{ALIGN, BatchIo};
use crate::config::StoreConfig;
use crate::error::{StoreError, io_err};
use crate::record::{Record, record_kind};
use crate::segment::{SegMeta, seg_path, sync_dir};
use crate::state::Shared;
use crate::sorter::feed;

/// The active segment: owns its file (read-write, buffered) and the directory lock (released when the
/// store closes, so a closed store can be reopened at once).
#[derive(Debug)]
pub(crate) struct Writer {
    file: File,
    pub(crate) seq: u64,
    /// Format version of the active segment (an older one is sealed at open).
    pub(crate) version: u32,
    /// Where the next batch goes. With batches in flight (io_uring) it is ahead of the durable end.
    pub(crate) len: u64,
    /// Where this segment's first record goes (after the header block).
    data_start: u64,
    /// The file's length: a write that ends below it never grows the file (preallocated).
    room: u64,
    /// Prewrites placed but not yet published, so a Commit in a later batch can point at them.
    unpublished: HashMap<i64, Loc>,
    /// The std backend's batch buffer.
    buf: Vec<u8>,
    /// How batches and seals reach the disk ([`crate::io::StdIo`], or a fault-injecting disk in tests).
    io: Arc<dyn BatchIo>,
    _lock: File,
}

/// One record of a placed batch, as the sorter and the segment summary need it.
#[derive(Debug)]
struct Placed {
    off: u64,
    kind: RecordKind,
    start_ts: i64,
    commit_ts: i64,
    len: u64,
}

/// A batch placed in the active segment and not yet published.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) seq: u64,
    /// Offset of its first byte.
    pub(crate) start: u64,
    /// Offset after its last byte (its pad included).
    pub(crate) end: u64,
    placed: Vec<Placed>,
}

/// Where the first record of a segment of format `version` goes: after the 4 KiB header block (v2) or
/// right after the header (v1).
pub(crate) fn data_start(version: u32) -> u64 {
    if version >= 2 { format::encode_header_block(0, ALIGN).len() as u64 } else { format::HEADER_LEN as u64 }
}

/// A segment is preallocated ahead of its writes in steps: at least this much more each time, and
/// twice its length once that is more, never past `segment_size`. Few `fallocate` calls per segment
/// (about 8 for 512 MiB), and an idle or small store does not hold a whole segment of disk.
pub(crate) const PREALLOC_STEP: u64 = 4 << 20;

/// How far to preallocate a segment whose writes need to reach `end`.
pub(crate) fn prealloc_target(end: u64, segment_size: u64) -> u64 {
    end.saturating_mul(2).max(end + PREALLOC_STEP).min(segment_size).max(end)
}

/// Creates segment `seq` (v2): header block, a first preallocated step when configured, synced with its
/// directory entry. Returns the file, its data start and its length.
pub(crate) fn create_segment(cfg: &StoreConfig, seq: u64) -> Result<(File, u64, u64), StoreError> {
    let path = seg_path(&cfg.dir, seq);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io_err("create", &path))?;
    let head = format::encode_header_block(seq, ALIGN);
    file.write_all_at(&head, 0).map_err(io_err("write header", &path))?;
    let len = head.len() as u64;
    let room = if cfg.preallocate { preallocate(&file, &path, len, prealloc_target(len, cfg.segment_size)) } else { len };
    file.sync_all().map_err(io_err("fsync", &path))?;
    sync_dir(&cfg.dir)?;
    Ok((file, len, room))
}

/// Extends `file` (now `len` bytes) to `to` bytes of allocated blocks that read as zeros (`fallocate`),
/// so that writes below `to` never grow the file; returns its length. Best effort: where the filesystem
/// cannot (or is full), the file stays as it is and writes grow it, as in format v1.
pub(crate) fn preallocate(file: &File, path: &Path, len: u64, to: u64) -> u64 {
    if to <= len {
        return len;
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, to) {
        Ok(()) => to,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot preallocate {to} bytes ({e}); writes will grow the file");
            len
        }
    }
}

/// How a batch whose write (or the rotation before it) failed with `e` ends: the store is poisoned
/// with `e`; the batch's appenders get the I/O error itself, later appends `Poisoned` with it.
fn failed(shared: &Shared, e: StoreError) -> BatchResult {
    let own = match &e {
        StoreError::Io { op, path, source } => Some(BatchResult::Io { op, path: path.clone(), kind: source.kind(), msg: source.to_string() }),
        _ => None,
    };
    let why = shared.poison(e);
    own.unwrap_or(BatchResult::Poisoned(why))
}

impl Writer {
    pub(crate) fn new(file: File, seq: u64, version: u32, len: u64, room: u64, lock: File, io: Arc<dyn BatchIo>) -> Writer {
        Writer {
            file,
            seq,
            version,
            len,
            data_start: data_start(version),
            room: room.max(len),
            unpublished: HashMap::new(),
            buf: Vec::new(),
            io,
            _lock: lock,
        }
    }

    /// Whether the active segment must be sealed before a batch of about `next` bytes goes in: it holds
    /// records and the batch would take it past `segment_size`. (So only a segment whose one batch is
    /// larger than `segment_size` exceeds it.)
    pub(crate) fn needs_rotation(&self, cfg: &StoreConfig, next: u64) -> bool {
        self.len > self.data_start && self.len + next > cfg.segment_size
    }

    /// Makes sure a batch of about `next` bytes at `len` lands in preallocated space, so its write does
    /// not grow the file: preallocates the next step if not (a metadata operation; with writes in
    /// flight, the filesystem lets them finish first).
    pub(crate) fn make_room(&mut self, cfg: &StoreConfig, next: u64) {
        if cfg.preallocate && self.len + next > self.room {
            let path = seg_path(&cfg.dir, self.seq);
            self.room = preallocate(&self.file, &path, self.room, prealloc_target(self.len + next, cfg.segment_size));
        }
    }

    /// Places `recs` at the end of the log: appends their records to `out` (then, with `align > 1`, a pad
    /// record up to the next multiple of `align`) and advances `len`. Nothing is published yet.
    pub(crate) fn encode<'a>(
        &mut self,
        shared: &Shared,
        recs: impl Iterator<Item = &'a Record>,
        out: &mut Vec<u8>,
        align: u64,
    ) -> Encoded {
        let start = self.len;
        let base = out.len();
        let mut placed = Vec::new();
        {
            let st = shared.lock();
            for rec in recs {
                let off = start + (out.len() - base) as u64;
                let kind = record_kind(rec.kind);
                let prewrite_at = if kind == RecordKind::Commit {
                    self.unpublished.get(&rec.start_ts).copied().or_else(|| st.sorter.prewrite_loc(rec.start_ts)).unwrap_or_default()
                } else {
                    Loc::default()
                };
                let before = out.len();
                format::encode_record(
                    out,
                    &RecordRef { kind, start_ts: rec.start_ts, commit_ts: rec.commit_ts, prewrite_at, payload: &rec.payload },
                );
                if kind == RecordKind::Prewrite {
                    self.unpublished.insert(rec.start_ts, Loc { seq: self.seq, off });
                }
                placed.push(Placed { off, kind, start_ts: rec.start_ts, commit_ts: rec.commit_ts, len: (out.len() - before) as u64 });
            }
        }
        if align > 1 {
            let pad = format::pad_len(start + (out.len() - base) as u64, align);
            format::encode_pad(out, pad);
        }
        self.len = start + (out.len() - base) as u64;
        Encoded { seq: self.seq, start, end: self.len, placed }
    }

    /// Makes a durable batch visible: feeds its records to the sorter, adds them to the segment summary
    /// (sparse index), moves the durable end past it, wakes the readers and counts it.
    pub(crate) fn publish(&mut self, shared: &Shared, enc: &Encoded) {
        {
            let mut guard = shared.lock();
            let st = &mut *guard;
            let now = Instant::now();
            // Raise the floor while the sorter is still idle, before this batch's Prewrites arrive.
            st.releasable(shared.bell.seen());
            // The watermark published with the durable end where this batch starts.
            let safe = st.sorter.watermark();
            for p in &enc.placed {
                let loc = Loc { seq: enc.seq, off: p.off };
                feed(&mut st.sorter, loc, p.kind, p.start_ts, p.commit_ts, now);
                if let Some(m) = st.metas.get_mut(&enc.seq) {
                    m.observe(p.off, p.kind, p.start_ts, p.commit_ts, p.len, safe);
                }
                if p.kind == RecordKind::Prewrite && self.unpublished.get(&p.start_ts) == Some(&loc) {
                    self.unpublished.remove(&p.start_ts);
                }
            }
            if let Some(m) = st.metas.get_mut(&enc.seq) {
                m.data_end = enc.end;
                m.file_len = self.room.max(enc.end);
            }
            st.durable_end = Loc { seq: enc.seq, off: enc.end };
            st.sorter.drain();
            shared.bell.raise_seen(st.sorter.watermark());
        }
        self.room = self.room.max(enc.end);
        shared.bell.ring();
        let c = &shared.counters;
        c.appends.fetch_add(enc.placed.len() as u64, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        if shared.cfg.sync_log {
            c.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        c.bytes_written.fetch_add(enc.end - enc.start, Ordering::Relaxed);
    }

    /// The std backend: writes one batch with one `pwrite` and (with `sync_log`) one `fdatasync`, then
    /// publishes it. A failure poisons the store.
    pub(crate) fn write_batch(&mut self, shared: &Shared, batch: &[Queued<Record>]) -> BatchResult {
        if let Some(why) = shared.poisoned() {
            return BatchResult::Poisoned(why);
        }
        let bytes: usize = batch.iter().map(|q| format::encoded_len(q.rec.payload.len())).sum();
        if self.needs_rotation(&shared.cfg, bytes as u64)
            && let Err(e) = self.rotate(shared)
        {
            return failed(shared, e);
        }
        self.make_room(&shared.cfg, bytes as u64);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let enc = self.encode(shared, batch.iter().map(|q| &q.rec), &mut buf, 1);
        let path = seg_path(&shared.cfg.dir, self.seq);
        let mut res = self.io.write_at(&self.file, &path, &buf, enc.start).map_err(|e| ("write", e));
        if res.is_ok() && shared.cfg.sync_log {
            res = self.io.sync(&self.file, &path, false).map_err(|e| ("fdatasync", e));
        }
        self.buf = buf;
        if let Err((op, source)) = res {
            return failed(shared, StoreError::Io { op, path, source });
        }
        self.publish(shared, &enc);
        BatchResult::Ok
    }

    /// Seals the active segment (footer + trailer, the preallocated tail cut off, fsynced) and starts the
    /// next one. Everything placed must be published (nothing in flight).
    pub(crate) fn rotate(&mut self, shared: &Shared) -> Result<(), StoreError> {
        let path = seg_path(&shared.cfg.dir, self.seq);
        let footer = {
            let st = shared.lock();
            let meta = st.metas.get(&self.seq).cloned().unwrap_or_else(|| SegMeta::new(self.data_start));
            meta.footer(st.sorter.watermark(), st.sorter.oldest_seq().unwrap_or(self.seq + 1))
        };
        let seal = format::encode_seal(&footer);
        let sealed_len = self.len + seal.len() as u64;
        self.io.write_at(&self.file, &path, &seal, self.len).map_err(io_err("write footer", &path))?;
        // A sealed segment ends with its trailer: drop the rest of the preallocation (same fsync).
        self.file.set_len(sealed_len).map_err(io_err("truncate", &path))?;
        self.io.sync(&self.file, &path, true).map_err(io_err("fsync", &path))?;
        let next = self.seq + 1;
        let (file, start, room) = create_segment(&shared.cfg, next)?;
        {
            let mut st = shared.lock();
            if let Some(m) = st.metas.get_mut(&self.seq) {
                m.sealed = true;
                m.file_len = sealed_len;
                m.seal = Some((footer.seal_watermark, footer.replay_from));
            }
            let mut m = SegMeta::new(start);
            m.file_len = room;
            st.metas.insert(next, m);
            st.durable_end = Loc { seq: next, off: start };
        }
        shared.bell.ring();
        shared.counters.bytes_written.fetch_add(seal.len() as u64 + start, Ordering::Relaxed);
        self.file = file;
        self.seq = next;
        self.version = format::VERSION;
        self.len = start;
        self.data_start = start;
        self.room = room;
        self.unpublished.clear();
        Ok(())
    }
}
