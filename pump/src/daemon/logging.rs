//! Logging through `tracing`: level from `-L`/`log-level`, output to `log-file` (appended) or stderr,
//! and `-log-rotate hour|day`: at the first line of a new hour or day (local time) the file is renamed to
//! `<log-file>.<YYYY-MM-DD-HH>` or `<log-file>.<YYYY-MM-DD>` (the period it holds) and a new one started,
//! so `log-file` is always the current log. Shared by pump and drainer.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Local};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The level is not one of debug, info, warn, error, fatal.
    #[error("invalid log level {0:?} (expected debug, info, warn, error or fatal)")]
    Level(String),
    /// `-log-rotate` is not hour or day.
    #[error("invalid -log-rotate {0:?} (expected hour or day)")]
    Rotate(String),
    /// The log file could not be opened.
    #[error("opening log-file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
}

/// Maps upstream's level names to a tracing level.
pub fn level(name: &str) -> Result<tracing::Level, LogError> {
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "debug" | "trace" => tracing::Level::DEBUG,
        "" | "info" => tracing::Level::INFO,
        "warn" | "warning" => tracing::Level::WARN,
        "error" | "fatal" | "panic" => tracing::Level::ERROR,
        _ => return Err(LogError::Level(name.into())),
    })
}

/// How often the log file is switched (`-log-rotate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotate {
    /// One file forever (the flag unset or empty).
    #[default]
    Never,
    /// A new file every hour.
    Hour,
    /// A new file every day.
    Day,
}

impl Rotate {
    /// Parses the flag's value: "", "hour" or "day" (any case).
    pub fn parse(s: &str) -> Result<Self, LogError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" => Ok(Rotate::Never),
            "hour" => Ok(Rotate::Hour),
            "day" => Ok(Rotate::Day),
            _ => Err(LogError::Rotate(s.into())),
        }
    }

    /// The suffix naming the period `t` falls in (empty for [`Rotate::Never`]).
    fn period(self, t: &DateTime<Local>) -> String {
        match self {
            Rotate::Never => String::new(),
            Rotate::Hour => t.format("%Y-%m-%d-%H").to_string(),
            Rotate::Day => t.format("%Y-%m-%d").to_string(),
        }
    }
}

/// An append-only log file that switches to a new file when the period changes.
pub struct RotatingFile {
    path: PathBuf,
    rotate: Rotate,
    clock: Box<dyn Fn() -> DateTime<Local> + Send>,
    file: File,
    /// The period the open file holds.
    period: String,
}

impl RotatingFile {
    /// Opens (appends to) `path`, rotating by the wall clock.
    pub fn open(path: &Path, rotate: Rotate) -> io::Result<Self> {
        Self::with_clock(path, rotate, Box::new(Local::now))
    }

    /// Like [`RotatingFile::open`] with a given clock (tests). The existing file's period is taken from
    /// its modification time, so a restart in a later period rotates it before the first new line.
    pub fn with_clock(path: &Path, rotate: Rotate, clock: Box<dyn Fn() -> DateTime<Local> + Send>) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let modified = file.metadata().and_then(|m| m.modified()).map(DateTime::<Local>::from).unwrap_or_else(|_| clock());
        let period = rotate.period(&modified);
        Ok(RotatingFile { path: path.to_owned(), rotate, clock, file, period })
    }

    /// Renames the open file after its period and starts a new one, if the period changed.
    fn roll(&mut self) -> io::Result<()> {
        if self.rotate == Rotate::Never {
            return Ok(());
        }
        let now = self.rotate.period(&(self.clock)());
        if now == self.period {
            return Ok(());
        }
        let mut old = self.path.clone().into_os_string();
        old.push(".");
        old.push(&self.period);
        let old = PathBuf::from(old);
        // Never overwrite an earlier file of the same period (a clock step back): append a counter.
        let mut target = old.clone();
        let mut n = 1;
        while target.exists() {
            let mut t = old.clone().into_os_string();
            t.push(format!(".{n}"));
            target = PathBuf::from(t);
            n += 1;
        }
        std::fs::rename(&self.path, &target)?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.period = now;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.roll() {
            // Keep logging into the current file rather than losing lines.
            let _ = writeln!(self.file, "log rotation of {} failed: {e}", self.path.display());
            self.period = self.rotate.period(&(self.clock)());
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A `MakeWriter` over a shared [`RotatingFile`].
#[derive(Clone)]
struct Shared(Arc<Mutex<RotatingFile>>);

struct Guard<'a>(std::sync::MutexGuard<'a, RotatingFile>);

impl Write for Guard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Shared {
    type Writer = Guard<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        Guard(self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Installs the global subscriber: `level_name` (upstream's names; `RUST_LOG` refines it when set),
/// into `log_file` (empty: stderr) rotated per `rotate`.
pub fn init(level_name: &str, log_file: &str, rotate: Rotate) -> Result<(), LogError> {
    let lvl = level(level_name)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(lvl.as_str().to_ascii_lowercase()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if log_file.is_empty() {
        let _ = builder.with_writer(std::io::stderr).try_init();
    } else {
        let f = RotatingFile::open(Path::new(log_file), rotate)
            .map_err(|source| LogError::File { path: log_file.into(), source })?;
        let _ = builder.with_ansi(false).with_writer(Shared(Arc::new(Mutex::new(f)))).try_init();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn upstream_level_names() {
        assert_eq!(super::level("fatal").unwrap(), tracing::Level::ERROR);
        assert_eq!(super::level("warn").unwrap(), tracing::Level::WARN);
        assert!(super::level("loud").is_err());
    }

    #[test]
    fn rotate_values() {
        assert_eq!(Rotate::parse("").unwrap(), Rotate::Never);
        assert_eq!(Rotate::parse("Hour").unwrap(), Rotate::Hour);
        assert_eq!(Rotate::parse("day").unwrap(), Rotate::Day);
        let e = Rotate::parse("week").unwrap_err().to_string();
        assert!(e.contains("-log-rotate") && e.contains("week"), "{e}");
    }

    /// A clock the test moves.
    fn clock() -> (Arc<Mutex<DateTime<Local>>>, Box<dyn Fn() -> DateTime<Local> + Send>) {
        let now = Arc::new(Mutex::new(Local.with_ymd_and_hms(2026, 11, 27, 9, 30, 0).unwrap()));
        let c = now.clone();
        (now, Box::new(move || *c.lock().unwrap()))
    }

    #[test]
    fn hourly_rotation_renames_the_full_hour_and_keeps_the_path_current() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/pump.log");
        let (now, c) = clock();
        let mut f = RotatingFile::with_clock(&path, Rotate::Hour, c).unwrap();
        // A fresh file's period comes from its mtime (the real clock); align it with the test clock.
        f.period = Rotate::Hour.period(&now.lock().unwrap());
        writeln!(f, "nine a").unwrap();
        *now.lock().unwrap() += chrono::Duration::minutes(20);
        writeln!(f, "nine b").unwrap();
        *now.lock().unwrap() += chrono::Duration::minutes(20); // 10:10
        writeln!(f, "ten").unwrap();
        let nine = dir.path().join("logs/pump.log.2026-11-27-09");
        assert_eq!(std::fs::read_to_string(&nine).unwrap(), "nine a\nnine b\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ten\n");
        // Back to 09 (clock step): the 09 file is not overwritten.
        *now.lock().unwrap() -= chrono::Duration::minutes(30);
        writeln!(f, "nine again").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("logs/pump.log.2026-11-27-10")).unwrap(), "ten\n");
        *now.lock().unwrap() += chrono::Duration::hours(1);
        writeln!(f, "ten again").unwrap();
        assert_eq!(std::fs::read_to_string(&nine).unwrap(), "nine a\nnine b\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("logs/pump.log.2026-11-27-09.1")).unwrap(), "nine again\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ten again\n");
    }

    #[test]
    fn daily_rotation_and_never() {
        let dir = tempfile::tempdir().unwrap();
        let (now, c) = clock();
        let path = dir.path().join("d.log");
        let mut f = RotatingFile::with_clock(&path, Rotate::Day, c).unwrap();
        f.period = Rotate::Day.period(&now.lock().unwrap());
        writeln!(f, "a").unwrap();
        *now.lock().unwrap() += chrono::Duration::hours(5); // same day
        writeln!(f, "b").unwrap();
        *now.lock().unwrap() += chrono::Duration::hours(24);
        writeln!(f, "c").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("d.log.2026-11-27")).unwrap(), "a\nb\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c\n");

        let (now, c) = clock();
        let path = dir.path().join("n.log");
        let mut f = RotatingFile::with_clock(&path, Rotate::Never, c).unwrap();
        writeln!(f, "a").unwrap();
        *now.lock().unwrap() += chrono::Duration::days(3);
        writeln!(f, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3, "d.log, its day file, n.log");
    }
}
