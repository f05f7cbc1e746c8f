//! Opening a shard's directory after a clean close or a crash: take the directory lock, read the
//! sealed segments' footers, cut the active segment right after its last valid record, and replay what
//! the sorter had not released, so the shard starts where the durable log ends.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::config::StoreConfig;
use crate::error::{StoreError, io_err};
use crate::format::{self, HEADER_LEN, Loc};
use crate::io::BatchIo;
use crate::layout::{LOCK_FILE, read_gc_ts};
use crate::segment::{FileScan, SegMeta, list_segments, read_seal, scan_file, seg_path};
use crate::state::{Counters, State};
use crate::sorter::{Sorter, feed};
use crate::writer::{Writer, create_segment};

/// What recovery rebuilt: the shard's state and counters, and the writer of its active segment.
pub(crate) struct Recovered {
    pub(crate) state: State,
    pub(crate) counters: Counters,
    pub(crate) writer: Writer,
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
pub(crate) fn recover(cfg: &StoreConfig, pipelined: bool, io: Arc<dyn BatchIo>) -> Result<Recovered, StoreError> {
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
        None => Active::create(cfg, 1, &mut metas)?,
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
                Ok(h) if scan.footer.is_none() => recover_active(cfg, &counters, &path, last, h.version, &scan, pipelined)?,
                Ok(_) => {
                    if let Some(f) = &scan.footer {
                        metas.insert(last, SegMeta::from_footer(f, scan.file_len));
                    }
                    Active::create(cfg, last + 1, &mut metas)?
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), offset = 0, "segment header torn ({e}); starting the segment afresh");
                    counters.truncations.fetch_add(1, Ordering::Relaxed);
                    Active::create(cfg, last, &mut metas)?
                }
            }
        }
    };
    // A recovered active segment's meta is rebuilt during the replay, which knows the watermarks.
    metas.entry(active.seq).or_insert_with(|| SegMeta::new(active.len));
    finish(cfg, lock, gc_ts, counters, metas, active, io)
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
    cfg: &StoreConfig,
    lock: File,
    gc_ts: i64,
    counters: Counters,
    mut metas: BTreeMap<u64, SegMeta>,
    active: Active,
    io: Arc<dyn BatchIo>,
) -> Result<Recovered, StoreError> {
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
    Ok(Recovered { state, counters, writer })
}
