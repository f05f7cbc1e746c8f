//! The PD client: the cluster id, the leader and timestamps from PD's `pdpb.PD` gRPC service, shared by
//! the pump, the drainer, binlogctl and the TiDB stand-in.
//!
//! `pd-urls` means PD, as upstream: the same endpoints serve `pdpb.PD` (this module) and PD's embedded
//! etcd (the node registry, [`crate::etcd`]). [`PdClient::connect`] asks the endpoints for `GetMembers`
//! until one answers: its header carries the cluster id, its `leader` the member that serves timestamps.
//! An endpoint that does not know the `pdpb.PD` service (a plain etcd) is refused by name.
//!
//! # Timestamps
//! One background task owns a `Tso` bidi stream to the leader. Every caller waiting when a request is
//! sent shares it: one `TsoRequest{count: n}` serves n callers (PD's own client batches the same way).
//! PD answers with the *last* ts of the block; the block is `last - (n-1) .. last` in logical steps.
//! Only one request is in flight, so a caller that arrives while one is out joins the next request,
//! which PD answers after the caller arrived: **a returned ts is greater than every ts PD handed to
//! anyone before the call started** (PD's own guarantee, kept through the batching).
//!
//! A broken stream, a leader change or a PD restart is retried: the task asks every known endpoint
//! (the configured ones and the members PD last listed) for the leader again, reconnects and resends,
//! for up to [`PdOptions::retry_for`]; then the callers waiting get [`PdError::Unavailable`], naming PD
//! and the endpoints, and the next caller starts a new round of retries. A resent request is harmless:
//! the block of a lost response is never handed out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::etcd::{self, EtcdConfig};
use crate::proto::pdpb::pd_client::PdClient as PdRpc;
use crate::proto::metapb::{Peer, RegionEpoch};
use crate::proto::pdpb::{
    ErrorType, GetMembersRequest, GetMembersResponse, GetRegionRequest, GetStoreRequest, RequestHeader, TsoRequest, TsoResponse,
};
use crate::tso;

/// Most callers served by one `TsoRequest` (PD's own client caps its batches at 10 000).
pub const MAX_BATCH: usize = 10_000;

/// How long the client keeps trying, and how long one attempt may take.
#[derive(Debug, Clone)]
pub struct PdOptions {
    /// How long a caller's request is retried across reconnects (and how long `connect` tries) before
    /// [`PdError::Unavailable`]. Default 30 s: a kill -9 of a 3-member PD's leader took 12.6 s here
    /// until the new leader served (etcd's election, then the old leader's lease).
    pub retry_for: Duration,
    /// Timeout of one connect, `GetMembers` or TSO round trip. Default 3 s.
    pub attempt_timeout: Duration,
}

impl Default for PdOptions {
    fn default() -> Self {
        Self { retry_for: Duration::from_secs(30), attempt_timeout: Duration::from_secs(3) }
    }
}

/// Why PD could not give what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PdError {
    /// `pd-urls` or its TLS files are wrong.
    #[error(transparent)]
    Config(Arc<etcd::ConnectError>),
    /// The endpoint answers gRPC but has no `pdpb.PD` service: a plain etcd, or something else.
    #[error(
        "{endpoint} is not a PD: it does not serve pdpb.PD ({message}); pd-urls must list PD's client URLs, \
         not a plain etcd"
    )]
    NotPd {
        /// The endpoint.
        endpoint: String,
        /// What it answered.
        message: String,
    },
    /// A connection to the endpoint could not be made.
    #[error("connecting to PD at {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        source: Arc<tonic::transport::Error>,
    },
    /// An RPC failed.
    #[error("PD at {endpoint}: {op}: {}: {}", source.code(), source.message())]
    Rpc {
        /// The endpoint.
        endpoint: String,
        /// The RPC.
        op: &'static str,
        /// The status.
        source: Arc<tonic::Status>,
    },
    /// A round trip took longer than [`PdOptions::attempt_timeout`].
    #[error("PD at {endpoint}: {op} timed out after {after:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The RPC.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// PD answered with an error in its response header (not leader, not bootstrapped, ...).
    #[error("PD at {endpoint}: {op}: {kind:?}: {message}")]
    Server {
        /// The endpoint.
        endpoint: String,
        /// The RPC.
        op: &'static str,
        /// PD's error type.
        kind: ErrorType,
        /// PD's message.
        message: String,
    },
    /// The endpoint belongs to another cluster than the one this client joined.
    #[error("PD at {endpoint} has cluster id {got}, but this process joined cluster {want}")]
    ClusterIdMismatch {
        /// The endpoint.
        endpoint: String,
        /// The cluster id it reports.
        got: u64,
        /// The cluster id found first.
        want: u64,
    },
    /// PD has no leader (an election is under way) or listed a leader without client URLs.
    #[error("PD at {endpoint} reports no leader")]
    NoLeader {
        /// The endpoint asked.
        endpoint: String,
    },
    /// A TSO response does not fit its request.
    #[error("PD at {endpoint} answered a TSO request for {asked} timestamps with {got} (logical {logical})")]
    BadTso {
        /// The endpoint.
        endpoint: String,
        /// How many were asked for.
        asked: u32,
        /// How many it says it gave.
        got: u32,
        /// The last logical it gave.
        logical: i64,
    },
    /// Every attempt failed for the whole retry bound.
    #[error("PD unreachable at {endpoints} for {waited:?}; last error: {last}")]
    Unavailable {
        /// Every endpoint tried.
        endpoints: String,
        /// How long it was tried.
        waited: Duration,
        /// The last error seen.
        last: Box<PdError>,
    },
    /// The client's task is gone (its runtime shut down).
    #[error("the PD client task has stopped")]
    Stopped,
}

impl PdError {
    /// Errors that no retry can fix: the configuration is wrong.
    fn is_final(&self) -> bool {
        matches!(self, PdError::Config(_) | PdError::NotPd { .. } | PdError::ClusterIdMismatch { .. })
    }
}

type Reply = oneshot::Sender<Result<u64, PdError>>;

/// A client of one PD cluster (cheap to clone; clones share one connection and one TSO task).
#[derive(Debug, Clone)]
pub struct PdClient {
    cluster_id: u64,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Reply>,
}

#[derive(Debug)]
struct Shared {
    /// How endpoints are dialled (TLS or not).
    dial: Dial,
    opts: PdOptions,
    /// The configured endpoints, as dialled.
    configured: Vec<String>,
    /// The configured endpoints and the members' client URLs PD last listed (deduplicated).
    known: Mutex<Vec<String>>,
    /// The leader's client URL as last learned.
    leader: Mutex<String>,
}

#[derive(Debug, Clone)]
struct Dial {
    tls: Option<ClientTlsConfig>,
}

impl Dial {
    fn from_config(cfg: &EtcdConfig) -> Result<Self, PdError> {
        let config = |e| PdError::Config(Arc::new(e));
        let Some(ca) = &cfg.ssl_ca else {
            if cfg.ssl_cert.is_some() || cfg.ssl_key.is_some() {
                return Err(config(etcd::ConnectError::HalfIdentity));
            }
            return Ok(Self { tls: None });
        };
        let read = |what, p: &std::path::Path| {
            std::fs::read(p).map_err(|source| config(etcd::ConnectError::ReadTls { what, path: p.into(), source }))
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("ssl-ca", ca)?));
        match (&cfg.ssl_cert, &cfg.ssl_key) {
            (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read("ssl-cert", c)?, read("ssl-key", k)?)),
            (None, None) => {}
            _ => return Err(config(etcd::ConnectError::HalfIdentity)),
        }
        Ok(Self { tls: Some(tls) })
    }

    /// A URL PD listed (`http://h:p`) as this client dials it (`https` with TLS).
    fn url(&self, raw: &str) -> String {
        let bare = raw.strip_prefix("http://").or_else(|| raw.strip_prefix("https://")).unwrap_or(raw);
        format!("{}://{bare}", if self.tls.is_some() { "https" } else { "http" })
    }

    async fn channel(&self, url: &str, timeout: Duration) -> Result<Channel, PdError> {
        let connect = |source| PdError::Connect { endpoint: url.to_owned(), source: Arc::new(source) };
        let mut ep = Endpoint::from_shared(url.to_owned())
            .map_err(connect)?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(timeout);
        if let Some(tls) = &self.tls {
            ep = ep.tls_config(tls.clone()).map_err(connect)?;
        }
        match tokio::time::timeout(timeout, ep.connect()).await {
            Ok(r) => r.map_err(connect),
            Err(_) => Err(PdError::Timeout { endpoint: url.to_owned(), op: "connect", after: timeout }),
        }
    }
}

/// Header check shared by every response: PD's own error, then the cluster id.
fn check_header(
    endpoint: &str,
    op: &'static str,
    header: Option<&crate::proto::pdpb::ResponseHeader>,
    want: Option<u64>,
) -> Result<u64, PdError> {
    let h = header.cloned().unwrap_or_default();
    if let Some(e) = h.error.filter(|e| e.r#type() != ErrorType::Ok) {
        return Err(PdError::Server { endpoint: endpoint.into(), op, kind: e.r#type(), message: e.message });
    }
    match want {
        Some(want) if h.cluster_id != want => {
            Err(PdError::ClusterIdMismatch { endpoint: endpoint.into(), got: h.cluster_id, want })
        }
        _ => Ok(h.cluster_id),
    }
}

fn rpc(endpoint: &str, op: &'static str) -> impl FnOnce(tonic::Status) -> PdError {
    move |s| {
        if s.code() == Code::Unimplemented {
            PdError::NotPd { endpoint: endpoint.into(), message: s.message().into() }
        } else {
            PdError::Rpc { endpoint: endpoint.into(), op, source: Arc::new(s) }
        }
    }
}

/// One `GetMembers` call to `url`: the cluster id, the leader's URL (as dialled) and every member's.
async fn members(dial: &Dial, url: &str, want: Option<u64>, timeout: Duration) -> Result<(u64, String, Vec<String>), PdError> {
    let ch = dial.channel(url, timeout).await?;
    let req = GetMembersRequest { header: Some(RequestHeader { cluster_id: want.unwrap_or(0), sender_id: 0 }) };
    let resp: GetMembersResponse = match tokio::time::timeout(timeout, PdRpc::new(ch).get_members(req)).await {
        Ok(r) => r.map_err(rpc(url, "GetMembers"))?.into_inner(),
        Err(_) => return Err(PdError::Timeout { endpoint: url.into(), op: "GetMembers", after: timeout }),
    };
    let id = check_header(url, "GetMembers", resp.header.as_ref(), want)?;
    let leader = resp
        .leader
        .as_ref()
        .and_then(|l| l.client_urls.first())
        .map(|u| dial.url(u))
        .ok_or_else(|| PdError::NoLeader { endpoint: url.into() })?;
    let all = resp.members.iter().flat_map(|m| m.client_urls.iter().map(|u| dial.url(u))).collect();
    Ok((id, leader, all))
}

/// Where a key lives, as PD knows it: its region, the region's leader peer and that peer's store.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRegion {
    /// The region's id.
    pub region_id: u64,
    /// The region's epoch (TiKV refuses a request that names an old one).
    pub epoch: Option<RegionEpoch>,
    /// The leader peer.
    pub leader: Peer,
    /// The leader's store address (`host:port`, TiKV's gRPC).
    pub store_addr: String,
}

/// `key` in the form PD keys regions by: TiDB's memcomparable bytes encoding (groups of 8 bytes, each
/// padded with zeros and followed by 0xFF minus the pad count; a key whose length is a multiple of 8 gets
/// one more, all-pad group).
pub fn region_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((key.len() / 8 + 1) * 9);
    let mut groups = key.chunks(8);
    loop {
        let group = groups.next().unwrap_or(&[]);
        out.extend_from_slice(group);
        let pad = 8 - group.len();
        out.extend(std::iter::repeat_n(0u8, pad));
        out.push(0xFF - pad as u8);
        if pad > 0 {
            return out;
        }
    }
}

impl PdClient {
    /// The region holding TiDB key `key` and its leader's store (`None`: PD knows no region or no leader
    /// for it, e.g. no TiKV has joined). One attempt at PD's leader; errors name PD and the endpoint.
    pub async fn locate_key(&self, key: &[u8]) -> Result<Option<KeyRegion>, PdError> {
        let shared = &self.shared;
        shared.discover(Some(self.cluster_id)).await?;
        let ep = shared.leader.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let timeout = shared.opts.attempt_timeout;
        let mut client = PdRpc::new(shared.dial.channel(&ep, timeout).await?);
        let header = Some(RequestHeader { cluster_id: self.cluster_id, sender_id: 0 });
        let req = GetRegionRequest { header, region_key: region_key(key) };
        let r = match tokio::time::timeout(timeout, client.get_region(req)).await {
            Ok(r) => r.map_err(rpc(&ep, "GetRegion"))?.into_inner(),
            Err(_) => return Err(PdError::Timeout { endpoint: ep, op: "GetRegion", after: timeout }),
        };
        check_header(&ep, "GetRegion", r.header.as_ref(), Some(self.cluster_id))?;
        let (Some(region), Some(leader)) = (r.region, r.leader) else { return Ok(None) };
        if leader.store_id == 0 {
            return Ok(None);
        }
        let req = GetStoreRequest { header, store_id: leader.store_id };
        let s = match tokio::time::timeout(timeout, client.get_store(req)).await {
            Ok(r) => r.map_err(rpc(&ep, "GetStore"))?.into_inner(),
            Err(_) => return Err(PdError::Timeout { endpoint: ep, op: "GetStore", after: timeout }),
        };
        check_header(&ep, "GetStore", s.header.as_ref(), Some(self.cluster_id))?;
        let Some(store) = s.store.filter(|s| !s.address.is_empty()) else { return Ok(None) };
        Ok(Some(KeyRegion { region_id: region.id, epoch: region.region_epoch, leader, store_addr: store.address }))
    }

    /// A channel to a TiKV store at `addr` (`host:port`), with PD's TLS settings (the cluster's
    /// components share one CA).
    pub async fn store_channel(&self, addr: &str) -> Result<Channel, PdError> {
        let url = self.shared.dial.url(addr);
        self.shared.dial.channel(&url, self.shared.opts.attempt_timeout).await
    }
}

impl PdClient {
    /// Connects to the PD at `cfg`'s endpoints (`pd-urls` and the `[security]` files), with default
    /// options. Must be called inside a tokio runtime (it spawns the TSO task).
    pub async fn connect(cfg: &EtcdConfig) -> Result<Self, PdError> {
        Self::connect_with(cfg, PdOptions::default()).await
    }

    /// [`PdClient::connect`] with explicit retry bounds.
    pub async fn connect_with(cfg: &EtcdConfig, opts: PdOptions) -> Result<Self, PdError> {
        let dial = Dial::from_config(cfg)?;
        let configured: Vec<String> = etcd::dial_endpoints(cfg)
            .map_err(|e| PdError::Config(Arc::new(e)))?
            .iter()
            .map(|u| dial.url(u))
            .collect();
        let shared = Arc::new(Shared {
            dial,
            opts,
            known: Mutex::new(configured.clone()),
            configured,
            leader: Mutex::new(String::new()),
        });
        let cluster_id = shared.discover(None).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(shared.clone(), cluster_id, rx));
        Ok(Self { cluster_id, shared, tx })
    }

    /// The cluster id PD reported (what TiDB puts in every `WriteBinlogReq`).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The leader's client URL as last learned.
    pub fn leader(&self) -> String {
        self.shared.leader.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A fresh ts from PD, greater than every ts PD handed out before this call started.
    pub async fn get_ts(&self) -> Result<u64, PdError> {
        let (reply, wait) = oneshot::channel();
        self.tx.send(reply).map_err(|_| PdError::Stopped)?;
        wait.await.map_err(|_| PdError::Stopped)?
    }
}

impl Shared {
    fn endpoints(&self) -> String {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).join(",")
    }

    /// Finds the leader through any known endpoint, retrying for `retry_for`; returns the cluster id.
    async fn discover(&self, want: Option<u64>) -> Result<u64, PdError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let urls = self.known.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut last = None;
            for url in &urls {
                match members(&self.dial, url, want, self.opts.attempt_timeout).await {
                    Ok((id, leader, all)) => {
                        let mut known = self.configured.clone();
                        for u in all {
                            if !known.contains(&u) {
                                known.push(u);
                            }
                        }
                        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = known;
                        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = leader;
                        return Ok(id);
                    }
                    Err(e) if e.is_final() => return Err(e),
                    Err(e) => last = Some(e),
                }
            }
            let last = last.unwrap_or(PdError::Stopped);
            if start.elapsed() + pause > self.opts.retry_for {
                return Err(PdError::Unavailable { endpoints: self.endpoints(), waited: start.elapsed(), last: Box::new(last) });
            }
            tracing::warn!(error = %last, "PD not reachable yet; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// An open `Tso` stream to the leader.
struct TsoStream {
    endpoint: String,
    send: mpsc::Sender<TsoRequest>,
    recv: Recv,
}

/// The response side of a `Tso` call. PD (grpc-go) sends the response headers only with its first
/// answer, so the call is started in a task and awaited after the first request went out.
enum Recv {
    Starting(tokio::task::JoinHandle<Result<tonic::Response<tonic::Streaming<TsoResponse>>, tonic::Status>>),
    Open(Box<tonic::Streaming<TsoResponse>>),
}

async fn open_stream(shared: &Shared, cluster_id: u64) -> Result<TsoStream, PdError> {
    shared.discover(Some(cluster_id)).await?;
    let endpoint = shared.leader.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ch = shared.dial.channel(&endpoint, shared.opts.attempt_timeout).await?;
    let (send, rx) = mpsc::channel(4);
    let mut client = PdRpc::new(ch);
    let call = tokio::spawn(async move { client.tso(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    Ok(TsoStream { endpoint, send, recv: Recv::Starting(call) })
}

/// One round trip on `s` for `n` timestamps; returns the first of the block and the step between two.
async fn round_trip(s: &mut TsoStream, cluster_id: u64, n: u32, timeout: Duration) -> Result<(u64, u64), PdError> {
    let req = TsoRequest { header: Some(RequestHeader { cluster_id, sender_id: 0 }), count: n, dc_location: String::new() };
    let ep = s.endpoint.clone();
    let closed = |what: &str| PdError::Rpc { endpoint: ep.clone(), op: "Tso", source: Arc::new(tonic::Status::unavailable(what)) };
    if s.send.send(req).await.is_err() {
        return Err(closed("stream closed"));
    }
    let answer = async {
        if let Recv::Starting(call) = &mut s.recv {
            let opened = call.await.map_err(|_| closed("the call task ended"))?;
            s.recv = Recv::Open(Box::new(opened.map_err(rpc(&ep, "Tso"))?.into_inner()));
        }
        let Recv::Open(recv) = &mut s.recv else { unreachable!("opened above") };
        recv.message().await.map_err(rpc(&ep, "Tso"))?.ok_or_else(|| closed("stream ended"))
    };
    let resp = match tokio::time::timeout(timeout, answer).await {
        Err(_) => return Err(PdError::Timeout { endpoint: ep, op: "Tso", after: timeout }),
        Ok(r) => r?,
    };
    check_header(&ep, "Tso", resp.header.as_ref(), Some(cluster_id))?;
    let t = resp.timestamp.unwrap_or_default();
    let step = 1i64 << t.suffix_bits.min(17);
    let first_logical = t.logical - (i64::from(n) - 1) * step;
    if resp.count != n || t.physical <= 0 || first_logical < 0 || t.logical >= 1 << tso::LOGICAL_BITS {
        return Err(PdError::BadTso { endpoint: ep, asked: n, got: resp.count, logical: t.logical });
    }
    Ok((tso::compose(t.physical as u64, first_logical as u64), step as u64))
}

async fn run(shared: Arc<Shared>, cluster_id: u64, mut rx: mpsc::UnboundedReceiver<Reply>) {
    let mut stream: Option<TsoStream> = None;
    let mut batch: Vec<Reply> = Vec::new();
    while let Some(first) = rx.recv().await {
        // Only callers already waiting join this request; later ones wait for the next.
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let n = batch.len() as u32;
        let start = Instant::now();
        let mut pause = Duration::from_millis(50);
        let outcome = loop {
            let attempt = async {
                if stream.is_none() {
                    stream = Some(open_stream(&shared, cluster_id).await?);
                }
                let s = stream.as_mut().expect("opened above");
                round_trip(s, cluster_id, n, shared.opts.attempt_timeout).await
            }
            .await;
            match attempt {
                Ok(first) => break Ok(first),
                Err(e) => {
                    stream = None;
                    if e.is_final() {
                        break Err(e);
                    }
                    if start.elapsed() + pause > shared.opts.retry_for {
                        break Err(match e {
                            PdError::Unavailable { .. } => e,
                            e => PdError::Unavailable {
                                endpoints: shared.endpoints(),
                                waited: start.elapsed(),
                                last: Box::new(e),
                            },
                        });
                    }
                    tracing::warn!(error = %e, "TSO request failed; finding PD's leader again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        };
        match outcome {
            Ok((first, step)) => {
                for (i, reply) in batch.drain(..).enumerate() {
                    let _ = reply.send(Ok(first + i as u64 * step));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "TSO request failed for good");
                for reply in batch.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::region_key;

    #[test]
    fn region_keys_are_memcomparable_groups_of_eight() {
        assert_eq!(region_key(b""), [0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
        assert_eq!(region_key(&[1, 2, 3]), [1, 2, 3, 0, 0, 0, 0, 0, 0xFA]);
        let eight = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(region_key(&eight), [1, 2, 3, 4, 5, 6, 7, 8, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
        let nine = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(region_key(&nine), [1, 2, 3, 4, 5, 6, 7, 8, 0xFF, 9, 0, 0, 0, 0, 0, 0, 0, 0xF8]);
    }
}
