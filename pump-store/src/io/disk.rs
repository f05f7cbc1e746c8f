//! A written-vs-durable disk for crash tests of the std write path (redb's `crash_consistency`): a
//! [`BatchIo`] that writes through to the real file but remembers, per file, every write not yet made
//! durable (the bytes it replaced and the file's length before it). A sync of a file makes its writes
//! durable. [`FaultIo::crash`] then does what a power cut may do to the page cache: each write that
//! was never synced is kept whole, dropped, or kept in some of its 4 KiB pages only (holes), and every
//! later write or sync fails.
//!
//! Model, and what it leaves out: only the batches and seals go through here. Creating a segment (its
//! header, its preallocation, its directory entry), cutting a sealed segment's preallocated tail and
//! recovery's own truncation and pad are each fsynced in place before anything is acknowledged, so the
//! model takes them as durable when they happen. A dropped write's pages get their old bytes back
//! (zeros, in a preallocated segment); a dropped write that had grown the file shrinks it again.
//!
//! Test hooks for the std path live here too: [`FaultIo::fail_next_write`] and the thread that wrote
//! the last batch ([`FaultIo::last_writer`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread::ThreadId;

use super::batch::BatchIo;

/// Page granularity of a partly kept write.
const PAGE: u64 = 4096;

/// A write not yet durable, and how to take it back.
#[derive(Debug)]
struct Undo {
    off: u64,
    /// The bytes it replaced (within the file's length then).
    old: Vec<u8>,
    len: u64,
    /// The file's length before the write.
    old_len: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Per file, its writes since its last sync, oldest first.
    undo: HashMap<PathBuf, Vec<Undo>>,
    /// Every write in the order it was made: (file, offset, bytes).
    log: Vec<(PathBuf, u64, Vec<u8>)>,
    /// Operations (writes and syncs) so far.
    ops: usize,
    /// The operation (counted from 1) at which the crash happens.
    crash_at: Option<usize>,
    crashed: bool,
    fail_next_write: bool,
    last_writer: Option<ThreadId>,
    syncs: usize,
}

/// See the module doc.
#[derive(Debug, Default)]
pub(crate) struct FaultIo {
    st: Mutex<State>,
}

impl FaultIo {
    /// A disk that crashes at its `crash_at`-th operation (a write or a sync, from 1): that write
    /// happens only in part, that sync does not happen, and both fail, as does everything after.
    pub(crate) fn crashing_at(crash_at: Option<usize>) -> FaultIo {
        FaultIo { st: Mutex::new(State { crash_at, ..State::default() }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next write fails as if the disk had failed (and writes nothing).
    pub(crate) fn fail_next_write(&self) {
        self.lock().fail_next_write = true;
    }

    /// The thread that made the last write.
    pub(crate) fn last_writer(&self) -> Option<ThreadId> {
        self.lock().last_writer
    }

    /// Syncs made so far.
    pub(crate) fn syncs(&self) -> usize {
        self.lock().syncs
    }

    /// Every write made, in order: (file, offset, bytes).
    pub(crate) fn writes(&self) -> Vec<(PathBuf, u64, Vec<u8>)> {
        self.lock().log.clone()
    }

    /// Crashes now (if it has not yet) and leaves on disk only what a crash could leave: every write
    /// not made durable is kept, dropped or kept in some of its pages, as `rng` decides. Call it once
    /// the store that wrote through this disk is closed. Returns whether any written byte was lost.
    pub(crate) fn crash(&self, rng: &mut impl FnMut() -> u64) -> io::Result<bool> {
        let mut st = self.lock();
        st.crashed = true;
        let mut lost = false;
        for (path, undos) in std::mem::take(&mut st.undo) {
            let file = OpenOptions::new().write(true).open(&path)?;
            // Newest first, so each write's old bytes are those before it.
            for u in undos.iter().rev() {
                let choice = rng() % 3;
                let end = u.off + u.len;
                let mut dropped_all = true;
                let mut page = u.off / PAGE * PAGE;
                while page < end {
                    let (a, b) = (page.max(u.off), (page + PAGE).min(end));
                    let keep = choice == 0 || (choice == 2 && rng() % 2 == 0);
                    if keep {
                        dropped_all = false;
                    } else {
                        lost = true;
                        let mut old = vec![0u8; (b - a) as usize];
                        let have = u.old.len() as u64;
                        let (oa, ob) = ((a - u.off).min(have), (b - u.off).min(have));
                        old[..(ob - oa) as usize].copy_from_slice(&u.old[oa as usize..ob as usize]);
                        file.write_all_at(&old, a)?;
                    }
                    page += PAGE;
                }
                if dropped_all && file.metadata()?.len() <= end && u.old_len < end {
                    file.set_len(u.old_len)?;
                }
            }
        }
        Ok(lost)
    }

    /// Counts an operation and tells whether it runs normally, is the crash, or comes after it.
    fn next_op(st: &mut State) -> Op {
        if st.crashed {
            return Op::Dead;
        }
        st.ops += 1;
        if st.crash_at == Some(st.ops) {
            st.crashed = true;
            return Op::Crash;
        }
        Op::Normal
    }
}

enum Op {
    Normal,
    Crash,
    Dead,
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash")
}

impl BatchIo for FaultIo {
    fn write_at(&self, file: &File, path: &Path, buf: &[u8], off: u64) -> io::Result<()> {
        let mut st = self.lock();
        let op = Self::next_op(&mut st);
        if matches!(op, Op::Dead) {
            return Err(crashed());
        }
        if std::mem::take(&mut st.fail_next_write) {
            return Err(io::Error::other("injected write failure"));
        }
        st.last_writer = Some(std::thread::current().id());
        // The crashing write reaches the page cache only in part.
        let crash = matches!(op, Op::Crash);
        let buf = if crash { &buf[..buf.len() / 2] } else { buf };
        let old_len = file.metadata()?.len();
        let have = old_len.saturating_sub(off).min(buf.len() as u64) as usize;
        let mut old = vec![0u8; have];
        file.read_exact_at(&mut old, off)?;
        file.write_all_at(buf, off)?;
        st.undo.entry(path.to_path_buf()).or_default().push(Undo { off, old, len: buf.len() as u64, old_len });
        st.log.push((path.to_path_buf(), off, buf.to_vec()));
        if crash { Err(crashed()) } else { Ok(()) }
    }

    fn sync(&self, _file: &File, path: &Path, _all: bool) -> io::Result<()> {
        let mut st = self.lock();
        if !matches!(Self::next_op(&mut st), Op::Normal) {
            return Err(crashed());
        }
        st.syncs += 1;
        st.undo.remove(path);
        Ok(())
    }
}
