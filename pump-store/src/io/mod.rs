//! The narrow I/O seam under the io_uring write path (`pipeline`): a [`Device`] takes positioned,
//! durable writes of whole batches, keeps several in flight and completes them in any order; an
//! [`AlignedBuf`] is the memory one such write reads from. Implementations: `uring` (io_uring, the
//! only `unsafe` of the crate) and, in tests, `fault` (completes out of order, fails or "crashes" on
//! demand). The std path's seam is [`BatchIo`] (`batch`): `pwrite` + `fdatasync`, or in tests `disk`, a
//! written-vs-durable disk that can crash.

use std::fs::File;
use std::io;
use std::sync::Arc;

mod batch;
#[cfg(test)]
pub(crate) mod disk;
#[cfg(test)]
pub(crate) mod fault;
#[allow(unsafe_code)]
mod uring;

pub(crate) use batch::{BatchIo, StdIo};
pub(crate) use uring::UringDevice;

/// Which write path a shard uses. The default is the one that measured best (`bench/RESULTS.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// The portable path: the group-commit leader writes a batch with one `pwrite` and one
    /// `fdatasync`; one batch in flight.
    #[default]
    Std,
    /// io_uring: a writer thread per shard keeps up to [`crate::StoreConfig::io_depth`] batches in flight
    /// as `O_DIRECT` writes with `RWF_DSYNC`, each padded to [`ALIGN`], and acknowledges a batch once it
    /// and every earlier one are durable. Falls back to `Std` (with a warning) where io_uring is
    /// unavailable.
    Uring,
}

/// Alignment of every batch the io_uring path writes (offset and length): the page size, which covers
/// `O_DIRECT`'s requirements on common devices and the 4 KiB physical sector of this one, so that a
/// write never shares a physical sector with an acknowledged one.
pub(crate) const ALIGN: u64 = 4096;

/// A byte buffer whose contents start at an [`ALIGN`]-aligned address, as `O_DIRECT` requires. Safe
/// code only: a `Vec` with spare room, used from the first aligned byte on.
#[derive(Debug, Default)]
pub(crate) struct AlignedBuf {
    v: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    /// Empties the buffer and makes room for `len` bytes; returns the `Vec` to append them to (bytes
    /// appended beyond `len` may move the buffer, which [`AlignedBuf::finish`] repairs by copying).
    pub(crate) fn begin(&mut self, len: usize) -> &mut Vec<u8> {
        self.v.clear();
        self.v.reserve(len + ALIGN as usize);
        self.start = misalignment(&self.v);
        self.v.resize(self.start, 0);
        &mut self.v
    }

    /// Makes sure the contents still start at an aligned address (copies them if the `Vec` moved).
    pub(crate) fn finish(&mut self) {
        if misalignment(&self.v) == self.start {
            return;
        }
        let data = self.v.split_off(self.start);
        self.begin(data.len()).extend_from_slice(&data);
    }

    /// The contents (aligned).
    pub(crate) fn data(&self) -> &[u8] {
        &self.v[self.start..]
    }

    /// Bytes of memory held.
    pub(crate) fn capacity(&self) -> usize {
        self.v.capacity()
    }
}

/// How many bytes from the start of `v`'s allocation to the first [`ALIGN`]-aligned address.
fn misalignment(v: &[u8]) -> usize {
    let addr = v.as_ptr() as usize;
    ((ALIGN as usize) - addr % (ALIGN as usize)) % (ALIGN as usize)
}

/// One positioned write handed to a [`Device`]; the device owns the buffer until it completes.
#[derive(Debug)]
pub(crate) struct WriteOp {
    /// Comes back with the completion.
    pub(crate) token: u64,
    /// The bytes to write (all of `buf.data()`).
    pub(crate) buf: AlignedBuf,
    /// File offset.
    pub(crate) off: u64,
    /// Durable before completing (`RWF_DSYNC`); false only with `sync_log = false`.
    pub(crate) dsync: bool,
}

/// A finished [`WriteOp`]: its buffer back, and whether every byte was written (and, with `dsync`, is
/// durable).
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) token: u64,
    pub(crate) buf: AlignedBuf,
    pub(crate) result: io::Result<()>,
}

/// Wakes a thread blocked in [`Device::wait`] from another thread.
pub(crate) trait Wake: Send + Sync + std::fmt::Debug {
    fn wake(&self);
}

/// Takes durable writes and completes them in any order, several in flight.
pub(crate) trait Device: Send {
    /// Queues `op` on `file` (it reaches the kernel at the next [`Device::wait`] at the latest). On
    /// error the op comes back unsubmitted.
    fn submit(&mut self, file: &File, op: WriteOp) -> Result<(), (Box<WriteOp>, io::Error)>;
    /// Submits what is queued, then blocks until at least one write completes or [`Device::waker`] is
    /// woken; appends the completions to `out`. An error means the device is unusable: the writes still
    /// in flight may or may not happen, and their buffers stay with the device until it is dropped.
    fn wait(&mut self, out: &mut Vec<Completion>) -> io::Result<()>;
    /// What wakes a `wait` (from any thread).
    fn waker(&self) -> Arc<dyn Wake>;
}

/// Opens `path` for the io_uring path's writes: `O_DIRECT` where the filesystem supports it, else
/// buffered (still correct, since every write carries `RWF_DSYNC`; slower, as buffered writes to one file
/// do not overlap). Returns the file and whether it is direct.
pub(crate) fn open_direct(path: &std::path::Path) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = rustix::fs::OFlags::DIRECT.bits() as i32;
    match std::fs::OpenOptions::new().write(true).custom_flags(direct).open(path) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
            Ok((std::fs::OpenOptions::new().write(true).open(path)?, false))
        }
        Err(e) => Err(e),
    }
}

/// Measures the device as the io_uring path uses it, without the store (for `bench`): `depth` writes of
/// `block` bytes (a multiple of 4096) in flight, `O_DIRECT` with `RWF_DSYNC`, at consecutive offsets of
/// the existing file `path` (overwritten, wrapping around at its end), for `dur`. Returns each write's
/// latency, in completion order.
pub fn probe_device(path: &std::path::Path, block: usize, depth: usize, dur: std::time::Duration) -> io::Result<Vec<std::time::Duration>> {
    use std::time::Instant;
    if block == 0 || !block.is_multiple_of(ALIGN as usize) || depth == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "block must be a positive multiple of 4096, depth positive"));
    }
    let (file, _) = open_direct(path)?;
    let size = file.metadata()?.len() / block as u64 * block as u64;
    if size < (block * depth) as u64 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "file too small for the writes in flight"));
    }
    let mut dev = UringDevice::new(depth)?;
    let mut started = std::collections::HashMap::new();
    let mut latencies = Vec::new();
    let mut free: Vec<AlignedBuf> = (0..depth)
        .map(|_| {
            let mut b = AlignedBuf::default();
            let v = b.begin(block);
            v.resize(v.len() + block, 0xa5);
            b.finish();
            b
        })
        .collect();
    let (mut off, mut token, mut in_flight) = (0u64, 0u64, 0usize);
    let mut done = Vec::new();
    let start = Instant::now();
    loop {
        while start.elapsed() < dur {
            let Some(buf) = free.pop() else { break };
            started.insert(token, Instant::now());
            dev.submit(&file, WriteOp { token, buf, off, dsync: true }).map_err(|(_, e)| e)?;
            token += 1;
            in_flight += 1;
            off = (off + block as u64) % size;
        }
        if in_flight == 0 {
            return Ok(latencies);
        }
        dev.wait(&mut done)?;
        for c in done.drain(..) {
            c.result?;
            in_flight -= 1;
            if let Some(t) = started.remove(&c.token) {
                latencies.push(t.elapsed());
            }
            free.push(c.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_stay_aligned_even_when_they_grow() {
        let mut b = AlignedBuf::default();
        b.begin(10).extend_from_slice(&[7u8; 10]);
        b.finish();
        assert_eq!(b.data(), &[7u8; 10]);
        assert_eq!(b.data().as_ptr() as usize % ALIGN as usize, 0);
        // Far more than announced: the Vec moves, finish() realigns by copying.
        let v = b.begin(1);
        for i in 0..100_000u32 {
            v.push(i as u8);
        }
        b.finish();
        assert_eq!(b.data().len(), 100_000);
        assert_eq!(b.data()[99_999], (99_999u32) as u8);
        assert_eq!(b.data().as_ptr() as usize % ALIGN as usize, 0);
    }

    /// A device writes at offsets, completes every op exactly once, and reports a failed write.
    fn check(mut dev: Box<dyn Device>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0u8; 64 << 10]).unwrap();
        let (file, _) = open_direct(&path).unwrap();
        let mut want = vec![0u8; 64 << 10];
        for t in 0..8u64 {
            let mut buf = AlignedBuf::default();
            buf.begin(ALIGN as usize).extend((0..ALIGN).map(|i| (i as u8) ^ (t as u8)));
            buf.finish();
            let off = t * 2 * ALIGN;
            want[off as usize..(off + ALIGN) as usize].copy_from_slice(buf.data());
            dev.submit(&file, WriteOp { token: t, buf, off, dsync: t % 2 == 0 }).unwrap();
        }
        let mut done = Vec::new();
        while done.len() < 8 {
            dev.wait(&mut done).unwrap();
        }
        let mut tokens: Vec<u64> = done.iter().map(|c| c.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, (0..8).collect::<Vec<_>>());
        assert!(done.iter().all(|c| c.result.is_ok()));
        assert_eq!(std::fs::read(&path).unwrap(), want);
        // A woken wait returns without a completion.
        dev.waker().wake();
        let mut none = Vec::new();
        dev.wait(&mut none).unwrap();
        assert!(none.is_empty());
        // A file opened read-only: the write completes with an error.
        let ro = File::open(&path).unwrap();
        let mut buf = AlignedBuf::default();
        buf.begin(ALIGN as usize).extend_from_slice(&[1u8; ALIGN as usize]);
        buf.finish();
        dev.submit(&ro, WriteOp { token: 99, buf, off: 0, dsync: true }).unwrap();
        let mut failed = Vec::new();
        while failed.is_empty() {
            dev.wait(&mut failed).unwrap();
        }
        assert_eq!(failed[0].token, 99);
        assert!(failed[0].result.is_err());
    }

    #[test]
    fn the_device_probe_writes_in_place_and_times_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0u8; 256 << 10]).unwrap();
        let lat = probe_device(&path, 8192, 4, std::time::Duration::from_millis(50)).unwrap();
        assert!(!lat.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 256 << 10, "the file never grows");
        assert!(probe_device(&path, 1000, 4, std::time::Duration::ZERO).is_err());
    }

    #[test]
    fn uring_device_writes_at_offsets_and_reports_failures() {
        check(Box::new(UringDevice::new(8).unwrap()));
    }

    #[test]
    fn fault_device_writes_at_offsets_and_reports_failures() {
        check(Box::new(fault::FaultDevice::new(fault::Faults::default()).0));
    }
}
