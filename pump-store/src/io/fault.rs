//! A test [`Device`] for crash and failure tests of the io_uring write path: it applies a write to the
//! real file only when it completes it, completes pending writes in a random order (seeded), fails the
//! n-th write on request, and "crashes" after a given number of completions. After the crash every
//! wait fails (which poisons the store, so nothing else is written) and [`FaultHandle::crash`] tells what
//! never reached the file (the writes in flight) and what reached it without being durable (writes
//! submitted without dsync), so a test can build any disk image a real crash could have left.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{AlignedBuf, Completion, Device, Wake, WriteOp};

/// What to inject.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    /// Seeds the completion order.
    pub(crate) seed: u64,
    /// Crash when this many writes have completed (the next one does not happen).
    pub(crate) crash_after: Option<usize>,
    /// The write submitted n-th (from 1) completes with an I/O error and writes nothing.
    pub(crate) fail_write: Option<usize>,
}

/// A write as it would land on disk.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub(crate) path: PathBuf,
    pub(crate) off: u64,
    pub(crate) bytes: Vec<u8>,
}

/// What a crash left undecided: each of these may be on disk fully, partly or not at all.
#[derive(Debug, Clone, Default)]
pub(crate) struct Crash {
    /// Writes submitted and never completed.
    pub(crate) in_flight: Vec<Written>,
    /// Writes completed without dsync (only with `sync_log = false`).
    pub(crate) not_durable: Vec<Written>,
}

struct Pending {
    token: u64,
    file: File,
    path: PathBuf,
    buf: AlignedBuf,
    off: u64,
    dsync: bool,
    fail: bool,
}

struct State {
    faults: Faults,
    rng: u64,
    pending: Vec<Pending>,
    submitted: usize,
    completed: usize,
    woken: bool,
    crash: Option<Crash>,
    not_durable: Vec<Written>,
}

struct Inner {
    st: Mutex<State>,
    cv: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The device; see the module doc.
pub(crate) struct FaultDevice(Arc<Inner>);

/// The test's side of a [`FaultDevice`].
#[derive(Clone)]
pub(crate) struct FaultHandle(Arc<Inner>);

impl FaultDevice {
    pub(crate) fn new(faults: Faults) -> (FaultDevice, FaultHandle) {
        let rng = faults.seed | 1;
        let inner = Arc::new(Inner {
            st: Mutex::new(State {
                faults,
                rng,
                pending: Vec::new(),
                submitted: 0,
                completed: 0,
                woken: false,
                crash: None,
                not_durable: Vec::new(),
            }),
            cv: Condvar::new(),
        });
        (FaultDevice(inner.clone()), FaultHandle(inner))
    }
}

impl FaultHandle {
    /// What the crash left undecided, once it happened.
    pub(crate) fn crash(&self) -> Option<Crash> {
        self.0.lock().crash.clone()
    }

    /// Writes completed so far.
    pub(crate) fn completed(&self) -> usize {
        self.0.lock().completed
    }
}

fn written(p: &Pending) -> Written {
    Written { path: p.path.clone(), off: p.off, bytes: p.buf.data().to_vec() }
}

impl State {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

impl Device for FaultDevice {
    fn submit(&mut self, file: &File, op: WriteOp) -> Result<(), (Box<WriteOp>, io::Error)> {
        let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let (file, path) = match (file.try_clone(), path) {
            (Ok(f), Ok(p)) => (f, p),
            (Err(e), _) | (_, Err(e)) => return Err((Box::new(op), e)),
        };
        let mut st = self.0.lock();
        st.submitted += 1;
        let fail = st.faults.fail_write == Some(st.submitted);
        st.pending.push(Pending { token: op.token, file, path, buf: op.buf, off: op.off, dsync: op.dsync, fail });
        Ok(())
    }

    fn wait(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        let mut st = self.0.lock();
        loop {
            if st.crash.is_some() {
                return Err(io::Error::other("simulated crash"));
            }
            if !st.pending.is_empty() {
                let n = 1 + (st.next() % st.pending.len().min(3) as u64) as usize;
                for _ in 0..n {
                    if st.faults.crash_after == Some(st.completed) {
                        let in_flight = st.pending.iter().map(written).collect();
                        let not_durable = std::mem::take(&mut st.not_durable);
                        st.crash = Some(Crash { in_flight, not_durable });
                        return Err(io::Error::other("simulated crash"));
                    }
                    let i = (st.next() % st.pending.len() as u64) as usize;
                    let p = st.pending.swap_remove(i);
                    let result = if p.fail {
                        Err(io::Error::other("injected write failure"))
                    } else {
                        p.file.write_all_at(p.buf.data(), p.off)
                    };
                    st.completed += 1;
                    if result.is_ok() && !p.dsync {
                        let w = written(&p);
                        st.not_durable.push(w);
                    }
                    out.push(Completion { token: p.token, buf: p.buf, result });
                    if st.pending.is_empty() {
                        break;
                    }
                }
                return Ok(());
            }
            if st.woken {
                st.woken = false;
                return Ok(());
            }
            st = self.0.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn waker(&self) -> Arc<dyn Wake> {
        Arc::new(FaultWaker(self.0.clone()))
    }
}

struct FaultWaker(Arc<Inner>);

impl std::fmt::Debug for FaultWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultWaker")
    }
}

impl Wake for FaultWaker {
    fn wake(&self) {
        self.0.lock().woken = true;
        self.0.cv.notify_all();
    }
}
