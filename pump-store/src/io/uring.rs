//! The io_uring [`Device`]: one ring per shard, owned by the shard's pipeline thread. A write is an
//! `IORING_OP_WRITE` at an offset with `RWF_DSYNC`; it owns its [`AlignedBuf`] (kept in `in_flight`)
//! until its completion is reaped. Wake-ups from other threads arrive as a completed read of an
//! eventfd that stays armed in the ring, so the thread waits for completions and for new work in one
//! `io_uring_enter`.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use io_uring::{IoUring, opcode, types};

use super::{AlignedBuf, Completion, Device, Wake, WriteOp};

/// `user_data` of the eventfd read; write tokens are below it.
const WAKE_TOKEN: u64 = u64::MAX;

/// Wakes the ring's waiter by making its eventfd readable.
#[derive(Debug)]
struct EventFdWaker(OwnedFd);

impl Wake for EventFdWaker {
    fn wake(&self) {
        // A failed write could only mean the counter is saturated, which already wakes the reader.
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
}

pub(crate) struct UringDevice {
    ring: IoUring,
    /// Buffers of the writes the kernel may still be reading, by token. A buffer leaves only with its
    /// completion (or, if the ring fails, never: see `Drop`).
    in_flight: HashMap<u64, AlignedBuf>,
    waker: Arc<EventFdWaker>,
    /// Where the armed eventfd read puts the counter; boxed so its address stays put.
    wake_buf: Box<[u8; 8]>,
    wake_armed: bool,
    /// Entries pushed but not yet handed to the kernel.
    unsubmitted: usize,
    /// The ring failed: the kernel state is unknown, so no buffer may be freed any more.
    broken: bool,
}

impl std::fmt::Debug for UringDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringDevice").field("in_flight", &self.in_flight.len()).finish_non_exhaustive()
    }
}

impl UringDevice {
    /// A ring for up to `depth` writes in flight (plus the eventfd read).
    pub(crate) fn new(depth: usize) -> io::Result<UringDevice> {
        let entries = (depth + 2).next_power_of_two() as u32;
        let ring = IoUring::builder().setup_cqsize(entries * 2).build(entries)?;
        let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        Ok(UringDevice {
            ring,
            in_flight: HashMap::new(),
            waker: Arc::new(EventFdWaker(efd)),
            wake_buf: Box::new([0; 8]),
            wake_armed: false,
            unsubmitted: 0,
            broken: false,
        })
    }

    /// Hands queued entries to the kernel and waits for `want` completions; retries interrupted waits
    /// (nothing is lost by one: entries already taken by the kernel are not resubmitted).
    fn enter(&mut self, want: usize) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(n) => {
                    self.unsubmitted = self.unsubmitted.saturating_sub(n);
                    if self.ring.completion().len() >= want || want == 0 {
                        return Ok(());
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::ResourceBusy) => {
                    // EAGAIN / EBUSY: the completion queue is full; reaping below makes room.
                    if self.ring.completion().len() >= want.max(1) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Pushes `e`; if the submission queue is full, hands it to the kernel first.
    fn push(&mut self, e: &io_uring::squeue::Entry) -> io::Result<()> {
        for _ in 0..2 {
            // SAFETY: the entry points at memory that stays valid until its completion is reaped: a
            // write's buffer is moved into `self.in_flight` by the caller right after this push and
            // only leaves it with the completion (or never, see `Drop`); the eventfd read targets
            // `self.wake_buf`, a heap allocation owned by `self` and kept until the read completed or
            // `Drop` gave up on the ring. The file descriptor is only read by the kernel at submission.
            let pushed = unsafe { self.ring.submission().push(e) }.is_ok();
            if pushed {
                self.unsubmitted += 1;
                return Ok(());
            }
            self.enter(0)?;
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        if self.wake_armed {
            return Ok(());
        }
        let read = opcode::Read::new(types::Fd(self.waker.0.as_fd().as_raw_fd()), self.wake_buf.as_mut_ptr(), 8)
            .build()
            .user_data(WAKE_TOKEN);
        self.push(&read)?;
        self.wake_armed = true;
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        let cqes: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (token, res) in cqes {
            if token == WAKE_TOKEN {
                self.wake_armed = false;
                continue;
            }
            let Some(buf) = self.in_flight.remove(&token) else { continue };
            let result = if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else if res as usize != buf.data().len() {
                Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write: {res} of {} bytes", buf.data().len())))
            } else {
                Ok(())
            };
            out.push(Completion { token, buf, result });
        }
    }
}

impl Device for UringDevice {
    fn submit(&mut self, file: &File, op: WriteOp) -> Result<(), (Box<WriteOp>, io::Error)> {
        let data = op.buf.data();
        let Ok(len) = u32::try_from(data.len()) else {
            return Err((Box::new(op), io::Error::new(io::ErrorKind::InvalidInput, "write of 4 GiB or more")));
        };
        let flags = if op.dsync { rustix::io::ReadWriteFlags::DSYNC.bits() as i32 } else { 0 };
        let write = opcode::Write::new(types::Fd(file.as_raw_fd()), data.as_ptr(), len)
            .offset(op.off)
            .rw_flags(flags)
            .build()
            .user_data(op.token);
        if self.broken || op.token == WAKE_TOKEN || self.in_flight.contains_key(&op.token) {
            return Err((Box::new(op), io::Error::other("io_uring device is broken or the token is in use")));
        }
        if let Err(e) = self.push(&write) {
            return Err((Box::new(op), e));
        }
        // The buffer's heap memory does not move when `op.buf` moves into the map.
        self.in_flight.insert(op.token, op.buf);
        Ok(())
    }

    fn wait(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("io_uring device failed earlier"));
        }
        let res = self.arm_wake().and_then(|()| self.enter(1));
        if let Err(e) = res {
            self.broken = true;
            return Err(e);
        }
        self.reap(out);
        Ok(())
    }

    fn waker(&self) -> Arc<dyn Wake> {
        self.waker.clone()
    }
}

impl Drop for UringDevice {
    /// Waits for every write still in flight (and the eventfd read) before the buffers are freed; if
    /// the ring cannot be waited on, leaks them rather than let the kernel read freed memory.
    fn drop(&mut self) {
        if self.wake_armed {
            self.waker.wake();
        }
        let mut sink = Vec::new();
        while !self.broken && (self.wake_armed || !self.in_flight.is_empty()) {
            match self.enter(1) {
                Ok(()) => self.reap(&mut sink),
                Err(_) => self.broken = true,
            }
            sink.clear();
        }
        if self.broken {
            std::mem::forget(std::mem::take(&mut self.in_flight));
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new([0; 8])));
        }
    }
}
