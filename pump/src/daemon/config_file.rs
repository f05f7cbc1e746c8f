//! A daemon's config file and command line, loaded the way upstream's binaries do; shared by `pump`
//! and `drainer`.
//!
//! - A TOML key the daemon does not know is an error naming the key and, when one is close, the
//!   nearest valid key (upstream: "contained unknown configuration options").
//! - `-flag`, `-flag=v`, `--flag` and `--flag=v` all work ([`crate::goflags`]).
//!
//! Known keys are dotted paths: `"a.b"` is a key, `"a."` a section, `*` in a section name matches
//! any name (e.g. `"syncer.to.params.*"`), and arrays of tables are checked item by item.
//! [`parse_strict`] and [`read_strict`] take them from the config type itself ([`known_keys`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

mod known_keys;
pub use known_keys::known_keys;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not TOML, or a value has the wrong type.
    #[error("config file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A key the daemon does not know.
    #[error(
        "config file {}: contained unknown configuration options: {key}{}",
        path.display(),
        suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default()
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// The nearest valid key, if one is close.
        suggestion: Option<String>,
    },
    /// A value is out of range or malformed.
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// The key (or flag) name.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A [`ConfigError::Invalid`].
pub fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

/// What a command line asks for.
#[derive(Debug)]
pub enum Command<C> {
    /// `-V`: print the version.
    Version,
    /// Run with this (validated) configuration.
    Run(Box<C>),
}

/// Why a command line could not be turned into a config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlagsError {
    /// clap refused the arguments (this includes `--help`).
    #[error("{0}")]
    Clap(#[from] clap::Error),
    /// The config file or a value is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Parses a command line (program name first), accepting `-flag` as well as `--flag`.
pub fn parse_flags<P, I, S>(args: I) -> Result<P, clap::Error>
where
    P: clap::Parser,
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let cmd = P::command();
    let longs = crate::goflags::long_flags(&cmd);
    let longs: Vec<&str> = longs.iter().map(String::as_str).collect();
    P::try_parse_from(crate::goflags::normalize(args, &longs))
}

/// Parses config `text` strictly against the keys of `T` itself ([`known_keys`]); `path` only names
/// the file in errors.
pub fn parse_strict<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    parse_toml(&known_keys::<T>(), text, path)
}

/// Reads and parses a config file strictly against the keys of `T` itself ([`known_keys`]).
pub fn read_strict<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    read_toml(&known_keys::<T>(), path)
}

/// Parses config `text` strictly against `known` (`path` only names the file in errors).
pub fn parse_toml<T: DeserializeOwned>(known: &[impl AsRef<str>], text: &str, path: &Path) -> Result<T, ConfigError> {
    let parse_err = |e: toml::de::Error| ConfigError::Parse { path: path.into(), message: e.to_string() };
    let table: toml::Table = toml::from_str(text).map_err(parse_err)?;
    check_table(known, &table, "", "", path)?;
    toml::from_str(text).map_err(parse_err)
}

/// Reads and parses a config file strictly against `known`.
pub fn read_toml<T: DeserializeOwned>(known: &[impl AsRef<str>], path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse_toml(known, &text, path)
}

/// Levenshtein distance, for suggesting the nearest key.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known key nearest to `key` (dotted), if it is close enough to be a likely typo.
pub fn suggest(known: &[impl AsRef<str>], key: &str) -> Option<String> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    known
        .iter()
        .map(AsRef::as_ref)
        .filter(|k| !k.contains('*'))
        .map(|k| k.trim_end_matches('.'))
        .map(|k| (edit_distance(&norm(key), &norm(k)), k))
        .filter(|(d, k)| *d <= 3.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_owned())
}

/// Checks every key of `table` (at dotted `prefix`, `*` for free names) against `known`; `shown` is
/// the same prefix with the real names, for the error.
fn check_table(
    known: &[impl AsRef<str>],
    table: &toml::Table,
    prefix: &str,
    shown: &str,
    path: &Path,
) -> Result<(), ConfigError> {
    let is_known = |k: &str| known.iter().any(|x| x.as_ref() == k);
    for (k, v) in table {
        let (full, full_shown) = (format!("{prefix}{k}"), format!("{shown}{k}"));
        let wild = format!("{prefix}*");
        let section = if is_known(&format!("{full}.")) {
            Some(full.clone())
        } else if is_known(&format!("{wild}.")) {
            Some(wild.clone())
        } else {
            None
        };
        if let Some(sec) = section {
            match v {
                toml::Value::Table(t) => {
                    check_table(known, t, &format!("{sec}."), &format!("{full_shown}."), path)?;
                    continue;
                }
                toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                    for item in items {
                        if let toml::Value::Table(t) = item {
                            check_table(known, t, &format!("{sec}."), &format!("{full_shown}."), path)?;
                        }
                    }
                    continue;
                }
                // a section given a plain value: serde reports the type error
                _ => continue,
            }
        }
        if is_known(&full) || is_known(&wild) {
            continue;
        }
        return Err(ConfigError::UnknownKey { path: path.into(), suggestion: suggest(known, &full_shown), key: full_shown });
    }
    Ok(())
}

/// Parses a Go `time.ParseDuration` string: a sequence of decimal numbers with units ns, us, µs, ms,
/// s, m, h (e.g. `"1h30m"`, `"1.5h"`, `"300ms"`).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like \"24h\" or \"1h30m\"");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let secs = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[u_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["addr", "log-level", "storage.", "storage.sync-log", "params.", "params.*.", "params.*.v", "list.", "list.name"];

    fn check(text: &str) -> Result<(), ConfigError> {
        parse_toml::<toml::Table>(KNOWN, text, Path::new("x.toml")).map(|_| ())
    }

    #[test]
    fn unknown_keys_are_named_with_the_nearest_known_one() {
        assert!(check("addr = \"a\"\n[storage]\nsync-log = true\n[params.any]\nv = 1\n[[list]]\nname = \"n\"\n").is_ok());
        let e = check("[storage]\nsync-logg = true\n").unwrap_err().to_string();
        assert!(e.contains("storage.sync-logg") && e.contains("did you mean \"storage.sync-log\""), "{e}");
        let e = check("[[list]]\nnam = 1\n").unwrap_err().to_string();
        assert!(e.contains("list.nam"), "{e}");
        let e = check("completely-unrelated-key = 1\n").unwrap_err().to_string();
        assert!(e.contains("completely-unrelated-key") && !e.contains("did you mean"), "{e}");
        assert!(matches!(check("addr = "), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_go_duration("300ms").unwrap(), Duration::from_millis(300));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("h").is_err());
    }
}
