//! `binlog-consumer --apply`: the MySQL sink's settings from a `mysql://` URL and the consumer's
//! checkpoint row. Turning a message back into an item is [`crate::sink::kafka::untranslate`].

use std::time::Duration;

use crate::sink::mysql::{CheckpointCfg, MysqlSinkConfig};

/// A bad `--apply` URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A bad `--apply` URL.
    #[error("--apply {url:?}: {why} (want mysql://user[:password]@host[:port])")]
    Url {
        /// The URL, password removed.
        url: String,
        /// What is wrong.
        why: String,
    },
}

/// The checkpoint row key for a topic: the cluster id of `<clusterID>_obinlog`, else a stable hash
/// of the topic name, so consumers of different topics keep separate checkpoints.
pub fn checkpoint_id(topic: &str) -> u64 {
    if let Some(id) = topic.strip_suffix("_obinlog").and_then(|p| p.parse::<u64>().ok()) {
        return id;
    }
    // FNV-1a, 63 bits (the column is BIGINT UNSIGNED; keep it printable as i64 too).
    topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)) >> 1
}

/// The table (in schema `tidb_binlog`) where an applying consumer keeps its checkpoint.
pub const CHECKPOINT_TABLE: &str = "consumer_checkpoint";

/// The URL with its password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((auth, rest)) = url.rsplit_once('@') else { return url.into() };
    let (scheme, cred) = auth.split_once("://").unwrap_or(("", auth));
    match cred.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{rest}"),
        None => url.into(),
    }
}

/// MySQL sink settings for `--apply=mysql://user[:password]@host[:port]`: exactly-once through the
/// checkpoint row `tidb_binlog.consumer_checkpoint` keyed by [`checkpoint_id`] of `topic`.
pub fn sink_config(url: &str, topic: &str) -> Result<MysqlSinkConfig, ApplyError> {
    let shown = redact(url);
    let bad = |why: String| ApplyError::Url { url: shown.clone(), why };
    if !url.starts_with("mysql://") {
        return Err(bad("not a mysql:// URL".into()));
    }
    let opts = mysql_async::Opts::from_url(url).map_err(|e| bad(e.to_string()))?;
    Ok(MysqlSinkConfig {
        host: opts.ip_or_hostname().to_string(),
        port: opts.tcp_port(),
        user: opts.user().unwrap_or("root").to_string(),
        password: opts.pass().unwrap_or("").to_string(),
        safe_mode: false,
        safe_mode_after_start: Duration::ZERO,
        checkpoint: Some(CheckpointCfg {
            schema: "tidb_binlog".into(),
            table: CHECKPOINT_TABLE.into(),
            cluster_id: checkpoint_id(topic),
        }),
        retry_for: Duration::from_secs(30),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_checkpoint_ids() {
        let c = sink_config("mysql://u:secret@db.example:3307", "7_obinlog").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.user.as_str(), c.password.as_str()), ("db.example", 3307, "u", "secret"));
        assert_eq!(c.checkpoint.unwrap().cluster_id, 7);
        let c = sink_config("mysql://root@127.0.0.1:4000", "mine").unwrap();
        assert_eq!((c.port, c.password.as_str()), (4000, ""));
        assert_eq!(c.checkpoint.unwrap().cluster_id, checkpoint_id("mine"));
        assert_ne!(checkpoint_id("mine"), checkpoint_id("yours"));
        let err = sink_config("postgres://u:secret@h", "t").unwrap_err().to_string();
        assert!(err.contains("postgres://u:***@h"), "{err}");
        assert!(err.contains("mysql://") && !err.contains("secret"), "{err}");
    }
}
