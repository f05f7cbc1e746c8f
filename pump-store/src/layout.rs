//! What a store directory holds besides segments (FORMAT.md, "Directory layout"): one shard keeps its
//! segments in the store directory itself (layout 1, the only layout before shards); more than one shard
//! write a `LAYOUT` file and keep shard `i` in `shard-<i>/` (layout 2). The count on disk wins over the
//! configured one: a transaction's records must keep landing in the shard that holds its Prewrite
//! ([`shard_of`]). Each shard directory has a `LOCK` file and a `GC_TS` file.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{LayoutError, StoreError, io_err};
use crate::segment;

/// The file naming the layout of a sharded store directory.
pub(crate) const LAYOUT_FILE: &str = "LAYOUT";
/// The most shards `shards = 0` (automatic) picks.
pub const MAX_AUTO_SHARDS: usize = 8;
/// The most shards a store may have.
pub const MAX_SHARDS: usize = 256;

/// The shard count `shards = 0` stands for: the available cores, at most [`MAX_AUTO_SHARDS`].
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, MAX_AUTO_SHARDS)
}

/// The shard a record with this start_ts belongs to among `n` (part of the on-disk layout: FORMAT.md).
pub fn shard_of(start_ts: i64, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    // Fibonacci hashing: TSO start_ts values differ mostly in their low (logical) and middle bits.
    let h = (start_ts as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (h % n as u64) as usize
}

/// Name of the lock file inside a shard directory.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// Name of the file that persists a shard's GC ts.
pub(crate) const GC_TS_FILE: &str = "GC_TS";

/// How many shards the directory holds: `None` for a fresh directory.
fn read_layout(dir: &Path) -> Result<Option<usize>, StoreError> {
    let path = dir.join(LAYOUT_FILE);
    let bad = |reason: LayoutError| StoreError::Layout { path: path.clone(), reason };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut lines = text.lines();
            match lines.next() {
                Some("pump-store layout 2") => {}
                Some(other) => return Err(bad(LayoutError::UnknownLayout(other.to_string()))),
                None => return Err(bad(LayoutError::Empty)),
            }
            let n = lines
                .next()
                .and_then(|l| l.strip_prefix("shards "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .ok_or_else(|| bad(LayoutError::BadShardLine))?;
            if !(1..=MAX_SHARDS).contains(&n) {
                return Err(bad(LayoutError::ShardCount { count: n, max: MAX_SHARDS }));
            }
            Ok(Some(n))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Layout 1: segments (or a GC ts) in the directory itself.
            let legacy = match fs::read_dir(dir) {
                Ok(entries) => entries.filter_map(|e| e.ok()).any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    segment::parse_name(&name).is_some() || name == GC_TS_FILE
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(io_err("read dir", dir)(e)),
            };
            Ok(legacy.then_some(1))
        }
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

fn write_layout(dir: &Path, n: usize) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{LAYOUT_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        io::Write::write_all(&mut f, format!("pump-store layout 2\nshards {n}\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(LAYOUT_FILE))?;
        File::open(dir)?.sync_all()
    };
    write().map_err(io_err("write layout", &dir.join(LAYOUT_FILE)))
}

/// The directories of the shards of the store in `dir`, creating the layout for a fresh directory.
pub(crate) fn shard_dirs(dir: &Path, want: usize) -> Result<Vec<PathBuf>, StoreError> {
    fs::create_dir_all(dir).map_err(io_err("create dir", dir))?;
    let want = if want == 0 { default_shards() } else { want.min(MAX_SHARDS) };
    let n = match read_layout(dir)? {
        Some(n) => {
            if n != want {
                tracing::warn!(
                    dir = %dir.display(),
                    on_disk = n,
                    configured = want,
                    "the store directory was written with {n} shard(s); keeping {n} (the count cannot change while it holds data)"
                );
            }
            if !dir.join(LAYOUT_FILE).exists() {
                return Ok(vec![dir.to_path_buf()]);
            }
            n
        }
        None if want == 1 => return Ok(vec![dir.to_path_buf()]),
        None => {
            write_layout(dir, want)?;
            want
        }
    };
    Ok((0..n).map(|i| dir.join(format!("shard-{i}"))).collect())
}

pub(crate) fn read_gc_ts(dir: &Path) -> Result<i64, StoreError> {
    let path = dir.join(GC_TS_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<i64>().map_err(|e| StoreError::Io {
            op: "parse gc ts",
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

pub(crate) fn write_gc_ts(dir: &Path, ts: i64) -> io::Result<()> {
    let tmp = dir.join(format!("{GC_TS_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    io::Write::write_all(&mut f, format!("{ts}\n").as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(GC_TS_FILE))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_spreads_consecutive_ts_and_is_stable() {
        let mut counts = [0usize; 4];
        let base = 446_000_000_000_000_000i64;
        for i in 0..4000 {
            counts[shard_of(base + i, 4)] += 1;
        }
        for c in counts {
            assert!((700..1300).contains(&c), "uneven routing: {counts:?}");
        }
        // The mapping is part of the on-disk layout: it must never change.
        assert_eq!(shard_of(446_000_000_000_000_000, 4), shard_of(446_000_000_000_000_000, 4));
        assert_eq!(
            (0..8).map(|i| shard_of(i, 4)).collect::<Vec<_>>(),
            vec![0, 1, 2, 0, 1, 3, 0, 2]
        );
        assert_eq!(shard_of(12345, 1), 0);
    }

    #[test]
    fn layout_file_is_strict() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LAYOUT_FILE), "pump-store layout 3\nshards 2\n").unwrap();
        let err = shard_dirs(dir.path(), 2).unwrap_err();
        assert!(err.to_string().contains("unknown layout line"), "{err}");
        fs::write(dir.path().join(LAYOUT_FILE), "pump-store layout 2\nshards 0\n").unwrap();
        assert!(shard_dirs(dir.path(), 2).is_err());
        fs::write(dir.path().join(LAYOUT_FILE), "pump-store layout 2\nshards 3\n").unwrap();
        let dirs = shard_dirs(dir.path(), 5).unwrap();
        assert_eq!(dirs, (0..3).map(|i| dir.path().join(format!("shard-{i}"))).collect::<Vec<_>>());
    }
}

