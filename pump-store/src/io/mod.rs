//! The narrow I/O seam under the active segment: how one group-commit batch is written and made
//! durable. Two backends: plain std calls (`pwrite` + `fdatasync`, the default) and io_uring (the write
//! and the fdatasync linked in one submission, one system call per batch).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

#[allow(unsafe_code)]
mod uring;

/// Which system calls write a batch. `Std` is the default: the bench (`bench/RESULTS.md`) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// `pwrite` of the whole batch, then `fdatasync`.
    #[default]
    Std,
    /// io_uring: a write linked to an fdatasync, submitted and awaited with one `io_uring_enter`.
    Uring,
}

/// A failed batch write: which operation failed and the OS error.
pub(crate) type BatchIoError = (&'static str, io::Error);

/// Writes a batch at an offset of the active segment and, if asked, makes it durable.
pub(crate) trait BatchIo: Send + std::fmt::Debug {
    /// Writes all of `buf` at `off` of `file`, then (with `sync`) fdatasyncs it.
    fn write_batch(&mut self, file: &File, buf: &[u8], off: u64, sync: bool) -> Result<(), BatchIoError>;
}

/// Opens the backend `kind`.
pub(crate) fn open(kind: IoBackend) -> io::Result<Box<dyn BatchIo>> {
    Ok(match kind {
        IoBackend::Std => Box::new(StdIo),
        IoBackend::Uring => Box::new(uring::UringIo::new()?),
    })
}

/// The std backend.
#[derive(Debug)]
pub(crate) struct StdIo;

impl BatchIo for StdIo {
    fn write_batch(&mut self, file: &File, buf: &[u8], off: u64, sync: bool) -> Result<(), BatchIoError> {
        file.write_all_at(buf, off).map_err(|e| ("write", e))?;
        if sync {
            file.sync_data().map_err(|e| ("fdatasync", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: IoBackend) {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.path().join("f")).unwrap();
        let mut io = open(kind).unwrap();
        let a: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        io.write_batch(&file, &a, 0, true).unwrap();
        io.write_batch(&file, b"tail", a.len() as u64, false).unwrap();
        io.write_batch(&file, b"XY", 10, true).unwrap();
        let got = std::fs::read(dir.path().join("f")).unwrap();
        let mut want = a.clone();
        want.extend_from_slice(b"tail");
        want[10..12].copy_from_slice(b"XY");
        assert_eq!(got, want);
        // A file opened read-only: the write fails and is reported as the write.
        let ro = File::open(dir.path().join("f")).unwrap();
        let (op, _) = io.write_batch(&ro, b"no", 0, true).unwrap_err();
        assert_eq!(op, "write");
    }

    #[test]
    fn std_backend_writes_at_offsets_and_reports_failures() {
        check(IoBackend::Std);
    }

    #[test]
    fn uring_backend_writes_at_offsets_and_reports_failures() {
        check(IoBackend::Uring);
    }
}
