//! TEMPORARY in-memory stand-in for `pump-store` with its announced API, until the crate lands.
//! Not durable. Replaced by `pub use pump_store::{...}`.
#![allow(missing_docs, dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub sync_log: bool,
    pub segment_size: u64,
    pub max_txn_timeout: Duration,
    pub stop_write_at_available_space: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            sync_log: true,
            segment_size: 512 << 20,
            max_txn_timeout: Duration::from_secs(600),
            stop_write_at_available_space: 10 << 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prewrite,
    Commit,
    Rollback,
    Fake,
}

#[derive(Debug, Clone)]
pub struct Record {
    pub kind: Kind,
    pub start_ts: i64,
    pub commit_ts: i64,
    pub payload: Bytes,
}

#[derive(Debug, Clone)]
pub struct Committed {
    pub start_ts: i64,
    pub commit_ts: i64,
    pub kind: Kind,
    pub payload: Bytes,
    pub prewrite: Option<Bytes>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

#[derive(Default)]
struct Inner {
    prewrites: HashMap<i64, Bytes>,
    committed: BTreeMap<i64, Committed>,
    max_commit: i64,
    gc_ts: i64,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    pub fn open(_cfg: StoreConfig) -> Result<Store, StoreError> {
        tracing::warn!("storage is an in-memory stand-in until pump-store lands: binlogs do not survive a restart");
        Ok(Store { inner: Arc::default() })
    }

    pub async fn append(&self, r: Record) -> Result<(), StoreError> {
        let mut g = self.inner.lock().unwrap();
        match r.kind {
            Kind::Prewrite => {
                g.prewrites.insert(r.start_ts, r.payload);
            }
            Kind::Rollback => {
                g.prewrites.remove(&r.start_ts);
            }
            Kind::Commit | Kind::Fake => {
                let prewrite = g.prewrites.get(&r.start_ts).cloned();
                g.committed.insert(
                    r.commit_ts,
                    Committed { start_ts: r.start_ts, commit_ts: r.commit_ts, kind: r.kind, payload: r.payload, prewrite },
                );
                g.max_commit = g.max_commit.max(r.commit_ts);
            }
        }
        Ok(())
    }

    pub fn max_commit_ts(&self) -> i64 {
        self.inner.lock().unwrap().max_commit
    }

    pub fn gc_ts(&self) -> i64 {
        self.inner.lock().unwrap().gc_ts
    }

    pub fn gc(&self, ts: i64) -> Result<(), StoreError> {
        let mut g = self.inner.lock().unwrap();
        g.gc_ts = g.gc_ts.max(ts);
        g.committed.retain(|k, _| *k > ts);
        Ok(())
    }

    pub fn get(&self, ts: i64) -> Result<Option<Bytes>, StoreError> {
        let g = self.inner.lock().unwrap();
        Ok(g.committed.get(&ts).map(|c| c.payload.clone()).or_else(|| g.prewrites.get(&ts).cloned()))
    }

    pub fn pull(&self, after: i64) -> impl Stream<Item = Result<Committed, StoreError>> + Send + 'static {
        let inner = self.inner.clone();
        futures::stream::unfold((inner, after), |(inner, last)| async move {
            loop {
                let next = {
                    let g = inner.lock().unwrap();
                    g.committed.range(last + 1..).next().map(|(_, c)| c.clone())
                };
                match next {
                    Some(c) => {
                        let ts = c.commit_ts;
                        return Some((Ok(c), (inner, ts)));
                    }
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    }
}
