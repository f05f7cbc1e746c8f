//! The io_uring backend: one ring per store, used only by the current group-commit leader. A batch is a
//! write linked to an fdatasync (`IOSQE_IO_LINK`), submitted and awaited with one `io_uring_enter`.
//! Every operation borrows the leader's buffer and is waited for before `write_batch` returns.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, opcode, squeue, types};

use super::{BatchIo, BatchIoError};

const WRITE: u64 = 1;
const SYNC: u64 = 2;
/// The largest write one entry carries (its length is a u32); longer batches are split.
const MAX_WRITE: usize = 1 << 30;

pub(crate) struct UringIo {
    ring: IoUring,
}

impl std::fmt::Debug for UringIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringIo").finish_non_exhaustive()
    }
}

impl UringIo {
    pub(crate) fn new() -> io::Result<UringIo> {
        Ok(UringIo { ring: IoUring::new(8)? })
    }

    /// Submits the queued entries and waits until `want` completions are ready. Retries interrupted
    /// waits: the entries may already be in the kernel, so returning early would leave them running on
    /// a buffer the caller is about to reuse.
    fn submit_wait(&mut self, want: usize) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => {
                    if self.ring.completion().len() >= want {
                        return Ok(());
                    }
                }
                // EINTR, EAGAIN, EBUSY: nothing is lost, wait again.
                Err(e) if matches!(e.raw_os_error(), Some(4 | 11 | 16)) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `buf` at `off`, linked to an fdatasync when `sync`; returns (bytes written, sync result).
    fn write_linked(&mut self, fd: types::Fd, buf: &[u8], off: u64, sync: bool) -> Result<(usize, Option<i32>), BatchIoError> {
        let len = buf.len().min(MAX_WRITE);
        let mut write = opcode::Write::new(fd, buf.as_ptr(), len as u32).offset(off).build().user_data(WRITE);
        if sync {
            write = write.flags(squeue::Flags::IO_LINK);
        }
        let fsync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(SYNC);
        {
            let mut sq = self.ring.submission();
            // SAFETY: `buf` and the file behind `fd` are borrowed for this whole call, and the call does
            // not return while either operation may still run: `submit_wait` returns Ok only once both
            // completions are in the queue, and Err only when `io_uring_enter` itself failed (anything
            // but an interrupt), which poisons the store, so no later batch reuses the buffer. The ring
            // has room for both entries because every call leaves it empty.
            unsafe {
                sq.push(&write).map_err(|_| ("write", io::Error::other("io_uring submission queue full")))?;
                if sync {
                    sq.push(&fsync).map_err(|_| ("write", io::Error::other("io_uring submission queue full")))?;
                }
            }
        }
        let want = if sync { 2 } else { 1 };
        self.submit_wait(want).map_err(|e| ("write", e))?;
        let (mut written, mut synced) = (None, None);
        for cqe in self.ring.completion() {
            match cqe.user_data() {
                WRITE => written = Some(cqe.result()),
                SYNC => synced = Some(cqe.result()),
                _ => {}
            }
        }
        let written = match written {
            Some(n) if n >= 0 => n as usize,
            Some(e) => return Err(("write", io::Error::from_raw_os_error(-e))),
            None => return Err(("write", io::Error::other("io_uring lost a write completion"))),
        };
        Ok((written, synced))
    }
}

impl BatchIo for UringIo {
    fn write_batch(&mut self, file: &File, buf: &[u8], off: u64, sync: bool) -> Result<(), BatchIoError> {
        let fd = types::Fd(file.as_raw_fd());
        let mut done = 0usize;
        loop {
            let (n, synced) = self.write_linked(fd, &buf[done..], off + done as u64, sync)?;
            if n == 0 && done < buf.len() {
                return Err(("write", io::Error::new(io::ErrorKind::WriteZero, "io_uring write wrote nothing")));
            }
            done += n;
            if done == buf.len() {
                return match synced {
                    // A short write cancels the linked sync (-ECANCELED); only a full one counts.
                    Some(r) if r < 0 => Err(("fdatasync", io::Error::from_raw_os_error(-r))),
                    _ => Ok(()),
                };
            }
            // Short write: the linked sync was cancelled; write the rest (and sync after it).
        }
    }
}
