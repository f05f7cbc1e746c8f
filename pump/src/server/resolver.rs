//! Finding out what happened to a transaction whose C-binlog never came: TiDB's status API
//! (`GET <url>/mvcc/hex/<primary key>`), configured by `[resolver] tidb-status-urls` (ours).
//!
//! TiDB answers with the MVCC state of the P-binlog's `prewrite_key` (the transaction's primary key):
//! `{"key":…, "region_id":…, "value":{"info":{"lock":{…}, "writes":[{"type":…, "start_ts":…,
//! "commit_ts":…}, …]}}}` (kvproto's `MvccInfo` as JSON; `type` is kvrpcpb `Op`, omitted for `Put`).
//! The verdict, as upstream's pump reads TiKV's `MvccGetByKey`:
//! - a write with our `start_ts` that is not a Rollback, with `commit_ts > start_ts`: committed there;
//! - a Rollback write with our `start_ts`: rolled back;
//! - anything else (a lock still held, no record, no TiDB reachable): not known; the Prewrite stays
//!   pending and is asked about again a second later. Nothing is decided on a timer: an operator settles
//!   a transaction TiDB cannot answer for (`binlogctl -cmd settle-prewrite`).
//!
//! Without `tidb-status-urls` the pump waits ([`pump_store::WaitResolver`]). Upstream's other source,
//! TiKV's `MvccGetByKey` and lock status through PD, is not implemented: no TiKV runs here to test it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use pump_store::{Resolution, Resolver};
use serde::Deserialize;

use crate::proto::Binlog;

/// `Op::Rollback` in kvrpcpb.
const OP_ROLLBACK: i64 = 3;

#[derive(Debug, Default, Deserialize)]
struct MvccKv {
    #[serde(default)]
    value: Option<MvccResponse>,
}

#[derive(Debug, Default, Deserialize)]
struct MvccResponse {
    #[serde(default)]
    info: Option<MvccInfo>,
    #[serde(default)]
    error: String,
}

#[derive(Debug, Default, Deserialize)]
struct MvccInfo {
    /// Committed and rolled-back versions; a lock (a transaction still running) needs no look: it
    /// means "not known yet", as no record does.
    #[serde(default)]
    writes: Vec<MvccEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct MvccEntry {
    #[serde(default, rename = "type")]
    op: i64,
    #[serde(default)]
    start_ts: u64,
    #[serde(default)]
    commit_ts: u64,
}

/// What TiDB's MVCC answer says about the transaction that started at `start_ts`.
fn verdict(body: &str, start_ts: i64) -> Result<Resolution, String> {
    let kv: MvccKv = serde_json::from_str(body).map_err(|e| format!("not TiDB's MVCC JSON: {e}"))?;
    let resp = kv.value.unwrap_or_default();
    if !resp.error.is_empty() {
        return Err(format!("TiDB reports: {}", resp.error));
    }
    let info = resp.info.unwrap_or_default();
    for w in &info.writes {
        if w.start_ts as i64 != start_ts {
            continue;
        }
        if w.op == OP_ROLLBACK {
            return Ok(Resolution::RolledBack);
        }
        if w.commit_ts as i64 > start_ts {
            return Ok(Resolution::Committed(w.commit_ts as i64));
        }
    }
    Ok(Resolution::Unknown)
}

/// Asks TiDB's status API; see the module doc.
#[derive(Debug)]
pub struct TidbStatusResolver {
    urls: Vec<String>,
    client: reqwest::Client,
    rt: tokio::runtime::Handle,
    queries: prometheus::IntCounter,
    last_warn: std::sync::Mutex<Option<Instant>>,
}

impl TidbStatusResolver {
    /// A resolver over `urls` (each `http(s)://host:port`), running its requests on `rt`; `queries`
    /// counts the requests made (`binlog_pump_storage_query_tikv_count`, upstream's name).
    pub fn new(urls: Vec<String>, client: reqwest::Client, rt: tokio::runtime::Handle, queries: prometheus::IntCounter) -> Arc<Self> {
        Arc::new(Self { urls, client, rt, queries, last_warn: std::sync::Mutex::new(None) })
    }

    fn warn(&self, start_ts: i64, msg: &str) {
        let mut last = self.last_warn.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(start_ts, "resolver: {msg}");
        }
    }
}

impl Resolver for TidbStatusResolver {
    fn resolve(&self, start_ts: i64, prewrite: &[u8]) -> Resolution {
        let key = match Binlog::decode(prewrite) {
            Ok(b) if !b.prewrite_key().is_empty() => hex::encode(b.prewrite_key()),
            Ok(_) => {
                self.warn(start_ts, "the P-binlog has no prewrite_key to ask TiDB about");
                return Resolution::Unknown;
            }
            Err(e) => {
                self.warn(start_ts, &format!("the stored P-binlog does not decode: {e}"));
                return Resolution::Unknown;
            }
        };
        for url in &self.urls {
            self.queries.inc();
            let get = self.client.get(format!("{}/mvcc/hex/{key}", url.trim_end_matches('/'))).timeout(Duration::from_secs(5));
            let body = self.rt.block_on(async {
                let r = get.send().await.map_err(|e| e.to_string())?;
                let r = r.error_for_status().map_err(|e| e.to_string())?;
                r.text().await.map_err(|e| e.to_string())
            });
            match body.and_then(|b| verdict(&b, start_ts)) {
                Ok(v) => return v,
                Err(e) => self.warn(start_ts, &format!("TiDB status API {url}: {e}")),
            }
        }
        Resolution::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tidbs_mvcc_json() {
        let committed = r#"{"key":"7480","region_id":2,"value":{"info":{"writes":[
            {"start_ts":90,"commit_ts":95},{"type":3,"start_ts":80,"commit_ts":80}]}}}"#;
        assert_eq!(verdict(committed, 90), Ok(Resolution::Committed(95)));
        assert_eq!(verdict(committed, 80), Ok(Resolution::RolledBack));
        assert_eq!(verdict(committed, 70), Ok(Resolution::Unknown));
        let locked = r#"{"key":"7480","value":{"info":{"lock":{"type":0,"start_ts":100,"primary":"dA=="}}}}"#;
        assert_eq!(verdict(locked, 100), Ok(Resolution::Unknown));
        assert_eq!(verdict(r#"{"key":"7480","value":{"info":{}}}"#, 100), Ok(Resolution::Unknown));
        assert!(verdict(r#"{"value":{"error":"region not found"}}"#, 1).unwrap_err().contains("region not found"));
        assert!(verdict("<html>", 1).is_err());
    }
}
