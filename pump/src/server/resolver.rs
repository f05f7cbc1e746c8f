//! Finding out what happened to a transaction whose C-binlog never came, from two sources of truth,
//! asked in this order about the P-binlog's `prewrite_key` (the transaction's primary key):
//! - **TiKV through PD**, as upstream's pump does (`[resolver] tikv`, ours, default on): PD's `GetRegion`
//!   and `GetStore` find the key's region leader, TiKV's `MvccGetByKey` gives its MVCC history; a
//!   transaction older than `max-txn-timeout` (600 s) that left no record is then asked about with
//!   `KvCheckTxnStatus` (TiKV rolls back a lock whose TTL ran out, or records a rollback where no lock
//!   is, and answers committed / rolled back / still locked);
//! - **TiDB's status API** (`GET <url>/mvcc/hex/<primary key>`, `[resolver] tidb-status-urls`, ours),
//!   which answers the same MVCC question as JSON: `{"key":…, "region_id":…, "value":{"info":{"lock":{…},
//!   "writes":[{"type":…, "start_ts":…, "commit_ts":…}, …]}}}` (`type` is kvrpcpb `Op`, omitted for `Put`).
//!
//! The verdict from an MVCC history, as upstream's pump reads it:
//! - a write with our `start_ts` that is not a Rollback, with `commit_ts > start_ts`: committed there;
//! - a Rollback write with our `start_ts`: rolled back;
//! - anything else (a lock still held, no record, no source reachable): not known; the Prewrite stays
//!   pending and is asked about again a second later. Nothing is decided on a timer: an operator settles
//!   a transaction no source can answer for (`binlogctl -cmd settle-prewrite`).
//!
//! With neither source the pump waits ([`pump_store::WaitResolver`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use pump_store::{Resolution, Resolver};
use serde::Deserialize;

use crate::pd::PdClient;
use crate::proto::Binlog;
use crate::proto::tikvpb::tikv_client::TikvClient;
use crate::proto::tikvpb::{CheckTxnStatusRequest, Context, MvccGetByKeyRequest};

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
    Ok(decide(info.writes.iter().map(|w| (w.op, w.start_ts, w.commit_ts)), start_ts))
}

/// The verdict from a key's MVCC writes `(op, start_ts, commit_ts)` about the transaction that started
/// at `start_ts` (see the module doc).
fn decide(writes: impl IntoIterator<Item = (i64, u64, u64)>, start_ts: i64) -> Resolution {
    for (op, start, commit) in writes {
        if start as i64 != start_ts {
            continue;
        }
        if op == OP_ROLLBACK {
            return Resolution::RolledBack;
        }
        if commit as i64 > start_ts {
            return Resolution::Committed(commit as i64);
        }
    }
    Resolution::Unknown
}

/// Asks TiKV, through PD, what became of the transaction that started at `start_ts` whose primary key
/// is `key`; `Err` says why TiKV could not tell (the Prewrite then stays pending).
async fn ask_tikv(pd: &PdClient, key: &[u8], start_ts: i64, max_txn_timeout: Duration) -> Result<Resolution, String> {
    let loc = pd
        .locate_key(key)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("PD knows no region leader for the key (has a TiKV joined?)")?;
    let addr = loc.store_addr.clone();
    let tikv = |what: &str, e: &dyn std::fmt::Display| format!("TiKV at {addr}: {what}: {e}");
    let mut kv = TikvClient::new(pd.store_channel(&addr).await.map_err(|e| e.to_string())?);
    let context = Some(Context { region_id: loc.region_id, region_epoch: loc.epoch, peer: Some(loc.leader) });
    let req = MvccGetByKeyRequest { context: context.clone(), key: key.to_vec() };
    let r = match tokio::time::timeout(Duration::from_secs(5), kv.mvcc_get_by_key(req)).await {
        Ok(r) => r.map_err(|e| tikv("MvccGetByKey", &e))?.into_inner(),
        Err(_) => return Err(tikv("MvccGetByKey", &"timed out after 5 s")),
    };
    if let Some(e) = r.region_error {
        return Err(tikv("MvccGetByKey: region error", &e.message));
    }
    if !r.error.is_empty() {
        return Err(tikv("MvccGetByKey", &r.error));
    }
    let info = r.info.unwrap_or_default();
    let v = decide(info.writes.iter().map(|w| (i64::from(w.r#type), w.start_ts, w.commit_ts)), start_ts);
    if v != Resolution::Unknown {
        return Ok(v);
    }
    // No record yet: the transaction may still be running. Past max-txn-timeout TiKV decides.
    let now = pd.get_ts().await.map_err(|e| e.to_string())?;
    let age = crate::tso::physical_ms(now).saturating_sub(crate::tso::physical_ms(start_ts as u64));
    if Duration::from_millis(age) < max_txn_timeout {
        return Ok(Resolution::Unknown);
    }
    let req = CheckTxnStatusRequest {
        context,
        primary_key: key.to_vec(),
        lock_ts: start_ts as u64,
        caller_start_ts: 0,
        current_ts: now,
        rollback_if_not_exist: true,
    };
    let r = match tokio::time::timeout(Duration::from_secs(5), kv.kv_check_txn_status(req)).await {
        Ok(r) => r.map_err(|e| tikv("KvCheckTxnStatus", &e))?.into_inner(),
        Err(_) => return Err(tikv("KvCheckTxnStatus", &"timed out after 5 s")),
    };
    if let Some(e) = r.region_error {
        return Err(tikv("KvCheckTxnStatus: region error", &e.message));
    }
    if let Some(e) = r.error {
        return Err(tikv("KvCheckTxnStatus", &format!("{e:?}")));
    }
    Ok(if r.lock_ttl > 0 {
        Resolution::Unknown
    } else if r.commit_version > 0 {
        Resolution::Committed(r.commit_version as i64)
    } else {
        Resolution::RolledBack
    })
}

/// Asks TiKV through PD, then TiDB's status APIs; see the module doc.
#[derive(Debug)]
pub struct SourceResolver {
    /// PD, when TiKV is asked (`[resolver] tikv`), and the store's `max_txn_timeout`.
    tikv: Option<(PdClient, Duration)>,
    tidb_urls: Vec<String>,
    client: reqwest::Client,
    rt: tokio::runtime::Handle,
    queries: prometheus::IntCounter,
    last_warn: std::sync::Mutex<Option<Instant>>,
}

impl SourceResolver {
    /// A resolver asking TiKV through `tikv`'s PD (with its `max_txn_timeout`) and then `tidb_urls` (each
    /// `http(s)://host:port`), running its requests on `rt`; `queries` counts the questions asked
    /// (`binlog_pump_storage_query_tikv_count`, upstream's name).
    pub fn new(
        tikv: Option<(PdClient, Duration)>,
        tidb_urls: Vec<String>,
        client: reqwest::Client,
        rt: tokio::runtime::Handle,
        queries: prometheus::IntCounter,
    ) -> Arc<Self> {
        Arc::new(Self { tikv, tidb_urls, client, rt, queries, last_warn: std::sync::Mutex::new(None) })
    }

    fn warn(&self, start_ts: i64, msg: &str) {
        let mut last = self.last_warn.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(start_ts, "resolver: {msg}");
        }
    }
}

impl Resolver for SourceResolver {
    fn resolve(&self, start_ts: i64, prewrite: &[u8]) -> Resolution {
        let key = match Binlog::decode(prewrite) {
            Ok(b) if !b.prewrite_key().is_empty() => b.prewrite_key().to_vec(),
            Ok(_) => {
                self.warn(start_ts, "the P-binlog has no prewrite_key to ask about");
                return Resolution::Unknown;
            }
            Err(e) => {
                self.warn(start_ts, &format!("the stored P-binlog does not decode: {e}"));
                return Resolution::Unknown;
            }
        };
        if let Some((pd, max_txn_timeout)) = &self.tikv {
            self.queries.inc();
            match self.rt.block_on(ask_tikv(pd, &key, start_ts, *max_txn_timeout)) {
                Ok(Resolution::Unknown) => {}
                Ok(v) => return v,
                Err(e) => self.warn(start_ts, &format!("asking TiKV: {e}")),
            }
        }
        let hex_key = hex::encode(&key);
        for url in &self.tidb_urls {
            self.queries.inc();
            let get = self.client.get(format!("{}/mvcc/hex/{hex_key}", url.trim_end_matches('/'))).timeout(Duration::from_secs(5));
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
