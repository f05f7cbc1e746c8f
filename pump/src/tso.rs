//! Timestamps (TSO) and the cluster id when the registry is a plain etcd instead of PD.
//!
//! A ts is `physical_ms << 18 | logical` ([`compose`], [`physical_ms`], [`to_rough_time`]). The cluster
//! id is etcd's cluster id from any response header ([`cluster_id`]).
//!
//! # The allocator ([`EtcdTso`])
//! The last ts handed out is kept at the etcd key [`TSO_KEY`] as decimal ASCII. One allocation round is
//! one etcd transaction: `If ModRevision(key) == R Then Put(key, last') Else Get(key)`, where `R` is the
//! revision this process last saw and `last'` the top of the new block. Every request waiting in this
//! process when a round starts is served by that round (like PD batches TSO requests), so throughput is
//! one etcd write per batch, not per ts.
//!
//! **Invariant (linearizable):** a ts returned to any caller is greater than every ts returned, by any
//! process, before that request started. Why: a returned ts is ≤ the value committed by its round's
//! CAS; a request only joins a round that starts after the request arrived; that round's CAS succeeds
//! only against the latest revision of the key, so its block starts above every committed value,
//! including those of other processes and of earlier runs. A round whose outcome is unknown (timeout)
//! returns an error and forgets its cached revision; its block is never handed out.
//!
//! [`TsoSource`] is the seam where a PD-backed source will go; for now a PD endpoint is detected (it
//! has the key `/pd/cluster_id`) and refused with a clear error.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{mpsc, oneshot};

/// The etcd key that holds the last allocated ts.
pub const TSO_KEY: &str = "/tidb-binlog/v1/tso";
/// The key PD keeps its cluster id under; its presence means the endpoint is a PD, not a plain etcd.
pub const PD_CLUSTER_ID_KEY: &str = "/pd/cluster_id";
/// Bits of the logical part of a ts.
pub const LOGICAL_BITS: u32 = 18;
/// Most requests served by one allocation round.
pub const MAX_BATCH: usize = 1 << 14;
/// CAS attempts per round before giving up (only under heavy contention from other processes). Losers
/// back off for a random, growing time (up to 32 ms), so 256 attempts span seconds, not microseconds.
const MAX_CAS_ATTEMPTS: usize = 256;

/// Makes a ts from a physical time in ms and a logical counter (`oracle.ComposeTS`).
pub fn compose(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | (logical & ((1 << LOGICAL_BITS) - 1))
}

/// The physical part of a ts, in ms since the Unix epoch.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// The logical part of a ts.
pub fn logical(ts: u64) -> u64 {
    ts & ((1 << LOGICAL_BITS) - 1)
}

/// The wall-clock time a ts stands for (ms precision).
pub fn to_rough_time(ts: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(physical_ms(ts))
}

/// `ts` moved forward by `elapsed` of wall time, logical part kept: the approximate ts a node reports
/// between real allocations (upstream's heartbeat `updateTS`: last TSO plus elapsed ms << 18).
pub fn advance(ts: u64, elapsed: Duration) -> u64 {
    compose(physical_ms(ts) + elapsed.as_millis() as u64, logical(ts))
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Why a ts or the cluster id could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TsoError {
    /// etcd refused or could not be reached.
    #[error("etcd {op} of {key}: {source}")]
    Etcd {
        /// What was attempted.
        op: &'static str,
        /// The key.
        key: &'static str,
        /// The client error (shared by every request of a failed round).
        source: Arc<etcd_client::Error>,
    },
    /// The TSO key holds something that is not a decimal ts.
    #[error("the value at {key} is {value:?}, not a decimal timestamp")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What it holds.
        value: String,
    },
    /// Other processes kept winning the CAS.
    #[error("gave up allocating a ts after {attempts} compare-and-swap conflicts on {key}")]
    Contended {
        /// The key.
        key: &'static str,
        /// How many attempts were made.
        attempts: usize,
    },
    /// The endpoint is a PD.
    #[error(
        "pd-urls {endpoints} points at a PD (it has {PD_CLUSTER_ID_KEY}); only a plain etcd is supported as \
         the registry and TSO so far"
    )]
    PdNotSupported {
        /// The endpoints.
        endpoints: String,
    },
    /// The allocator task is gone (its runtime shut down).
    #[error("the TSO allocator task has stopped")]
    Stopped,
    /// A response carried no header.
    #[error("etcd response without a header")]
    NoHeader,
}

fn etcd(op: &'static str, key: &'static str) -> impl FnOnce(etcd_client::Error) -> TsoError {
    move |e| TsoError::Etcd { op, key, source: Arc::new(e) }
}

/// The cluster id: etcd's cluster id from a response header.
pub async fn cluster_id(client: &Client) -> Result<u64, TsoError> {
    let resp = client.kv_client().get(TSO_KEY, None).await.map_err(etcd("get", TSO_KEY))?;
    resp.header().map(|h| h.cluster_id()).ok_or(TsoError::NoHeader)
}

/// Whether the endpoint behind `client` is a PD (its etcd holds [`PD_CLUSTER_ID_KEY`]).
pub async fn is_pd(client: &Client) -> Result<bool, TsoError> {
    let resp = client
        .kv_client()
        .get(PD_CLUSTER_ID_KEY, Some(etcd_client::GetOptions::new().with_count_only()))
        .await
        .map_err(etcd("get", PD_CLUSTER_ID_KEY))?;
    Ok(resp.count() > 0)
}

/// Where timestamps and the cluster id come from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TsoSource {
    /// A plain etcd: cluster id from headers, ts from [`EtcdTso`].
    Etcd {
        /// The allocator.
        tso: EtcdTso,
        /// etcd's cluster id.
        cluster_id: u64,
    },
}

impl TsoSource {
    /// Picks the source for the endpoint behind `client`; `endpoints` names it in errors. A PD is
    /// refused for now. Must be called inside a tokio runtime (it spawns the allocator task).
    pub async fn connect(client: Client, endpoints: &str) -> Result<Self, TsoError> {
        if is_pd(&client).await? {
            return Err(TsoError::PdNotSupported { endpoints: endpoints.into() });
        }
        let cluster_id = cluster_id(&client).await?;
        Ok(TsoSource::Etcd { tso: EtcdTso::new(client), cluster_id })
    }

    /// A fresh ts, linearizable across processes.
    pub async fn get_ts(&self) -> Result<u64, TsoError> {
        match self {
            TsoSource::Etcd { tso, .. } => tso.get_ts().await,
        }
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> u64 {
        match self {
            TsoSource::Etcd { cluster_id, .. } => *cluster_id,
        }
    }
}

type Reply = oneshot::Sender<Result<u64, TsoError>>;

/// The batching TSO allocator over etcd (cheap to clone; all clones share one background task).
#[derive(Debug, Clone)]
pub struct EtcdTso {
    tx: mpsc::UnboundedSender<Reply>,
}

impl EtcdTso {
    /// Starts the allocator task on the current tokio runtime.
    pub fn new(client: Client) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client, rx));
        Self { tx }
    }

    /// A fresh ts, greater than every ts any caller got before this call started.
    pub async fn get_ts(&self) -> Result<u64, TsoError> {
        let (reply, wait) = oneshot::channel();
        self.tx.send(reply).map_err(|_| TsoError::Stopped)?;
        wait.await.map_err(|_| TsoError::Stopped)?
    }
}

/// The last allocated ts and the key's mod revision as this process last saw them.
#[derive(Debug, Clone, Copy)]
struct Seen {
    last: u64,
    revision: i64,
}

async fn run(client: Client, mut rx: mpsc::UnboundedReceiver<Reply>) {
    let mut seen: Option<Seen> = None;
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        // Only requests already queued join this round; later ones wait for the next round.
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        match allocate(&client, &mut seen, batch.len() as u64).await {
            Ok(start) => {
                for (i, reply) in batch.drain(..).enumerate() {
                    let _ = reply.send(Ok(start + i as u64));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "TSO allocation round failed");
                for reply in batch.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn parse_value(v: &[u8]) -> Result<u64, TsoError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| TsoError::BadValue { key: TSO_KEY, value: String::from_utf8_lossy(v).into_owned() })
}

/// One round: allocates `n` consecutive ts and returns the first.
async fn allocate(client: &Client, seen: &mut Option<Seen>, n: u64) -> Result<u64, TsoError> {
    let mut kv = client.kv_client();
    for attempt in 0..MAX_CAS_ATTEMPTS {
        if attempt > 0 {
            // Processes that lost the same race would otherwise retry in lockstep and lose again.
            let cap_us = 500u64 << attempt.min(6);
            tokio::time::sleep(Duration::from_micros(rand::random_range(0..cap_us))).await;
        }
        let cur = match *seen {
            Some(s) => s,
            None => {
                let resp = kv.get(TSO_KEY, None).await.map_err(etcd("get", TSO_KEY))?;
                match resp.kvs().first() {
                    Some(kv) => Seen { last: parse_value(kv.value())?, revision: kv.mod_revision() },
                    None => Seen { last: 0, revision: 0 },
                }
            }
        };
        let start = cur.last.saturating_add(1).max(compose(now_ms(), 0));
        let top = start + n - 1;
        let txn = Txn::new()
            .when([Compare::mod_revision(TSO_KEY, CompareOp::Equal, cur.revision)])
            .and_then([TxnOp::put(TSO_KEY, top.to_string(), None)])
            .or_else([TxnOp::get(TSO_KEY, None)]);
        let resp = match kv.txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                // The put may or may not have happened: re-read before the next round.
                *seen = None;
                return Err(etcd("txn", TSO_KEY)(e));
            }
        };
        if resp.succeeded() {
            let revision = resp.header().map(|h| h.revision()).ok_or(TsoError::NoHeader)?;
            *seen = Some(Seen { last: top, revision });
            return Ok(start);
        }
        // Someone else moved the key: learn its value from the Else branch and retry.
        *seen = None;
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(g) = op {
                *seen = Some(match g.kvs().first() {
                    Some(kv) => Seen { last: parse_value(kv.value())?, revision: kv.mod_revision() },
                    None => Seen { last: 0, revision: 0 },
                });
            }
        }
    }
    Err(TsoError::Contended { key: TSO_KEY, attempts: MAX_CAS_ATTEMPTS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_and_split() {
        let ts = compose(1_700_000_000_123, 5);
        assert_eq!(physical_ms(ts), 1_700_000_000_123);
        assert_eq!(logical(ts), 5);
        assert_eq!(ts, (1_700_000_000_123 << 18) | 5);
        assert_eq!(to_rough_time(ts), UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert_eq!(advance(ts, Duration::from_secs(2)), compose(1_700_000_002_123, 5));
        // Upstream's example ts from the registry JSON: 412518831548007863 is in Oct 2019.
        let secs = physical_ms(412518831548007863) / 1000;
        assert_eq!(secs, 1_573_634_458);
    }

    #[test]
    fn stored_value_must_be_decimal() {
        assert_eq!(parse_value(b"42").unwrap(), 42);
        assert!(matches!(parse_value(b"x42"), Err(TsoError::BadValue { .. })));
    }
}
