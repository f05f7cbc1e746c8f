//! How a node picks its id. Pump: `<data-dir>/.node` if present, else the configured `node-id`, else
//! `hostname:port` of its listen address; the chosen id is written back to `.node` so it survives a
//! config change. Drainer: the configured `node-id`, else `hostname:port`.

use std::path::{Path, PathBuf};

/// The file in a pump's data dir that pins its node id.
pub const NODE_ID_FILE: &str = ".node";

/// Why a node id could not be determined.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeIdError {
    /// The listen address has no `:port`.
    #[error("cannot derive a node id from address {addr:?}: expected host:port")]
    BadAddr {
        /// The address as given.
        addr: String,
    },
    /// Reading or writing `<data-dir>/.node` failed.
    #[error("node id file {}: {source}", path.display())]
    File {
        /// The `.node` file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// `hostname:port`, the id a node gets when none is configured; `addr` is its listen address
/// (`host:port`, optionally with an `http://` scheme).
pub fn default_node_id(addr: &str) -> Result<String, NodeIdError> {
    let bare = addr.strip_prefix("http://").or_else(|| addr.strip_prefix("https://")).unwrap_or(addr);
    let port = bare
        .rsplit_once(':')
        .map(|(_, p)| p.trim_end_matches('/'))
        .filter(|p| p.parse::<u16>().is_ok())
        .ok_or_else(|| NodeIdError::BadAddr { addr: addr.into() })?;
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    Ok(format!("{host}:{port}"))
}

/// A drainer's id: `configured` if non-empty, else [`default_node_id`] of `addr`.
pub fn drainer_node_id(configured: Option<&str>, addr: &str) -> Result<String, NodeIdError> {
    match configured.map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => Ok(id.to_owned()),
        None => default_node_id(addr),
    }
}

/// A pump's id: from `<data_dir>/.node`, else `configured`, else [`default_node_id`] of `addr`;
/// a newly chosen id is written to `<data_dir>/.node` (creating `data_dir`).
pub fn pump_node_id(data_dir: &Path, configured: Option<&str>, addr: &str) -> Result<String, NodeIdError> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(NodeIdError::File { path, source }),
    }
    let id = drainer_node_id(configured, addr)?;
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let tmp = data_dir.join(".node.tmp");
        std::fs::write(&tmp, &id)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|source| NodeIdError::File { path: path.clone(), source })?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_id_is_hostname_and_port() {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        assert_eq!(default_node_id("0.0.0.0:8250").unwrap(), format!("{host}:8250"));
        assert_eq!(default_node_id("http://127.0.0.1:8249").unwrap(), format!("{host}:8249"));
        assert!(matches!(default_node_id("nohost"), Err(NodeIdError::BadAddr { .. })));
    }

    #[test]
    fn pump_id_file_wins_and_is_written_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // No file: the configured id is used and pinned.
        assert_eq!(pump_node_id(&data, Some("p-1"), "0.0.0.0:8250").unwrap(), "p-1");
        assert_eq!(std::fs::read_to_string(data.join(".node")).unwrap(), "p-1");
        // The file wins over a changed config.
        assert_eq!(pump_node_id(&data, Some("p-2"), "0.0.0.0:8250").unwrap(), "p-1");
        // Generated ids are pinned too.
        let other = dir.path().join("other");
        let id = pump_node_id(&other, None, "127.0.0.1:18250").unwrap();
        assert!(id.ends_with(":18250"), "{id}");
        assert_eq!(std::fs::read_to_string(other.join(".node")).unwrap(), id);
    }

    #[test]
    fn drainer_id_prefers_config() {
        assert_eq!(drainer_node_id(Some(" d1 "), "x:1").unwrap(), "d1");
        assert!(drainer_node_id(Some(""), "x:1").unwrap().ends_with(":1"));
    }
}
