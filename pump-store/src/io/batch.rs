//! The narrow I/O seam under the std write path (`writer`): a [`BatchIo`] writes a placed batch (or a
//! seal) at its offset and makes a file durable. [`StdIo`] is `pwrite` + `fdatasync`/`fsync`; in tests,
//! `io::disk::FaultIo` keeps what was written apart from what was made durable and can crash.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How the active segment's batches and seal reach the disk.
pub(crate) trait BatchIo: Send + Sync + std::fmt::Debug {
    /// Writes all of `buf` at `off` of `file` (`path` names it).
    fn write_at(&self, file: &File, path: &Path, buf: &[u8], off: u64) -> io::Result<()>;
    /// Makes every byte written to `file` so far durable: `fdatasync`, or with `all` `fsync`.
    fn sync(&self, file: &File, path: &Path, all: bool) -> io::Result<()>;
}

/// The real thing.
#[derive(Debug, Default)]
pub(crate) struct StdIo;

impl BatchIo for StdIo {
    fn write_at(&self, file: &File, _path: &Path, buf: &[u8], off: u64) -> io::Result<()> {
        file.write_all_at(buf, off)
    }

    fn sync(&self, file: &File, _path: &Path, all: bool) -> io::Result<()> {
        if all { file.sync_all() } else { file.sync_data() }
    }
}
