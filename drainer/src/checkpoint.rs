//! The drainer checkpoint: `<data-dir>/savepoint`, TOML, written atomically (temp file, fsync, rename,
//! fsync of the directory):
//!
//! ```toml
//! consistent = false
//! commitTS = 412518831548007863
//! schema-version = 1234
//! ```
//!
//! It is the checkpoint of the file and kafka sinks (upstream's file checkpoint). For sinks that keep
//! their own checkpoint downstream ([`crate::sink::Sink::load_checkpoint`] returns `Some`), the sink's
//! value is the truth for the commit ts; the file is still written and keeps the schema version.
//! `consistent` is true only when written at a clean shutdown.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One saved checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Savepoint {
    /// Written at a clean shutdown.
    #[serde(default)]
    pub consistent: bool,
    /// Everything with commit ts ≤ this has been applied downstream.
    #[serde(rename = "commitTS", default)]
    pub commit_ts: i64,
    /// The schema version the drainer had applied.
    #[serde(rename = "schema-version", default)]
    pub schema_version: i64,
}

/// Why reading or writing the savepoint failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O on the file.
    #[error("{op} checkpoint file {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not the expected TOML.
    #[error("checkpoint file {} is not a savepoint (TOML with commitTS): {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
}

/// The savepoint file.
#[derive(Debug, Clone)]
pub struct FileCheckpoint {
    path: PathBuf,
}

impl FileCheckpoint {
    /// The checkpoint at `path` (usually `<data-dir>/savepoint`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileCheckpoint { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the savepoint; `None` if the file does not exist.
    pub fn load(&self) -> Result<Option<Savepoint>, CheckpointError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Io { op: "reading", path: self.path.clone(), source }),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e: toml::de::Error| CheckpointError::Parse { path: self.path.clone(), message: e.to_string() })
    }

    /// Writes the savepoint atomically and durably.
    pub fn save(&self, sp: &Savepoint) -> Result<(), CheckpointError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { op, path, source }
        };
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("creating directory of", &self.path))?;
        let text = format!(
            "consistent = {}\ncommitTS = {}\nschema-version = {}\n",
            sp.consistent, sp.commit_ts, sp.schema_version
        );
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
            f.write_all(text.as_bytes()).map_err(io("writing", &tmp))?;
            f.sync_all().map_err(io("syncing", &tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io("renaming into", &self.path))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Where to start: the sink's own checkpoint if it has one, else the savepoint file (when it is the
/// checkpoint for this sink), else `initial-commit-ts` (-1 = `now()`, the current TSO). A zero commit ts
/// counts as "none", as upstream.
pub fn start_ts(sink_ts: Option<i64>, file: Option<&Savepoint>, file_is_truth: bool, initial: i64, now: impl FnOnce() -> i64) -> i64 {
    if let Some(ts) = sink_ts.filter(|&t| t > 0) {
        return ts;
    }
    if file_is_truth && let Some(sp) = file.filter(|sp| sp.commit_ts > 0) {
        return sp.commit_ts;
    }
    if initial == -1 { now() } else { initial }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_upstream_files() {
        let dir = tempfile::tempdir().unwrap();
        let cp = FileCheckpoint::new(dir.path().join("savepoint"));
        assert_eq!(cp.load().unwrap(), None);
        let sp = Savepoint { consistent: true, commit_ts: 412518831548007863, schema_version: 1234 };
        cp.save(&sp).unwrap();
        assert_eq!(cp.load().unwrap(), Some(sp));
        let text = std::fs::read_to_string(cp.path()).unwrap();
        assert!(text.contains("commitTS = 412518831548007863\n"), "{text}");
        // binlogctl generate_meta writes only commitTS
        std::fs::write(cp.path(), "commitTS = 7\n").unwrap();
        assert_eq!(cp.load().unwrap(), Some(Savepoint { consistent: false, commit_ts: 7, schema_version: 0 }));
        std::fs::write(cp.path(), "commitTS = \"x\"\n").unwrap();
        let e = cp.load().unwrap_err().to_string();
        assert!(e.contains("savepoint") && e.contains("commitTS"), "{e}");
    }

    #[test]
    fn start_ts_precedence() {
        let sp = Savepoint { commit_ts: 50, ..Default::default() };
        assert_eq!(start_ts(Some(70), Some(&sp), true, 10, || 99), 70);
        assert_eq!(start_ts(None, Some(&sp), true, 10, || 99), 50);
        assert_eq!(start_ts(None, Some(&sp), false, 10, || 99), 10);
        assert_eq!(start_ts(Some(0), None, true, -1, || 99), 99);
        assert_eq!(start_ts(None, Some(&Savepoint::default()), true, 0, || 99), 0);
    }
}
