//! The PD stand-in: what the tests run where a real `pd-server` cannot be installed (the Go module proxy
//! here refuses `github.com/tikv/pd`, so CI has none; a pd-server built by hand into the tools cache is
//! used instead whenever it is there, see [`crate::Pd`]).
//!
//! Like PD, it serves on one port both `pdpb.PD` (`GetMembers`, `Tso`: `pump/proto/pdpb.proto`) and the
//! etcd v3 API: every call that is not `/pdpb.PD/*` is forwarded unchanged, over HTTP/2, to a real etcd
//! behind it (KV, Watch, Lease, ... stream through both ways). So the pump, drainer, binlogctl and the
//! TiDB stand-in see one endpoint, as with PD.
//!
//! What it keeps as PD does, in that etcd: the cluster id at `/pd/cluster_id` (8 bytes, big-endian;
//! random and non-zero when the stand-in first starts) and the TSO window at `/pd/<id>/timestamp` (8
//! bytes, big-endian physical ms). A ts is never handed out at or above the saved window, and a restart
//! starts above it, so timestamps never go back across restarts. A request carrying another cluster id
//! is refused, as PD refuses it. One member, always the leader; no HTTP API.
//!
//! Regions (`GetRegion`, `GetStore`, which the pump's resolver asks to find TiKV): with `tikv` set, one
//! store (id 1) at that address holds one region (id 2) over the whole key space, its leader peer (id 3)
//! on that store; without it both answer `NOT_BOOTSTRAPPED`, as PD does before a TiKV joins.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use futures::Stream;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pump::proto::pdpb::pd_server::{Pd as PdService, PdServer};
use pump::proto::metapb::{Peer, Region, RegionEpoch, Store};
use pump::proto::pdpb::{
    Error as PdError, ErrorType, GetMembersRequest, GetMembersResponse, GetRegionRequest, GetRegionResponse, GetStoreRequest,
    GetStoreResponse, Member, ResponseHeader, Timestamp, TsoRequest, TsoResponse,
};
use pump::tso::{self, LOGICAL_BITS};
use tokio::sync::Mutex;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// PD's key for the cluster id.
pub const CLUSTER_ID_KEY: &str = "/pd/cluster_id";
/// How far ahead of the last ts the saved window is moved (PD's default `tso-save-interval` is 3 s).
const WINDOW: u64 = 3_000;

/// What the stand-in needs to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen (`127.0.0.1:P`); also the client URL it advertises.
    pub listen: SocketAddr,
    /// The etcd behind it (`http://127.0.0.1:E`).
    pub etcd: String,
    /// `(ca, cert, key)` PEM files: serve TLS and require client certificates signed by `ca`.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)>,
    /// The one TiKV store's address (`host:port`), if any (see the module doc).
    pub tikv: Option<String>,
}

struct Clock {
    physical: u64,
    logical: u64,
    /// Saved to etcd: no ts at or above `window` ms is handed out until a larger window is saved.
    window: u64,
}

/// The gRPC service (a handle on the shared state).
#[derive(Clone)]
struct Service(Arc<Standin>);

impl std::ops::Deref for Service {
    type Target = Standin;
    fn deref(&self) -> &Standin {
        &self.0
    }
}

struct Standin {
    cluster_id: u64,
    url: String,
    etcd: etcd_client::Client,
    ts_key: String,
    clock: Mutex<Clock>,
    tikv: Option<String>,
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

async fn cluster_id(etcd: &mut etcd_client::Client) -> Result<u64> {
    let fresh: u64 = rand::random_range(1..u64::MAX);
    let txn = Txn::new()
        .when([Compare::create_revision(CLUSTER_ID_KEY, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(CLUSTER_ID_KEY, fresh.to_be_bytes().to_vec(), None)])
        .or_else([TxnOp::get(CLUSTER_ID_KEY, None)]);
    let resp = etcd.txn(txn).await.context("reading /pd/cluster_id")?;
    if resp.succeeded() {
        return Ok(fresh);
    }
    for op in resp.op_responses() {
        if let etcd_client::TxnOpResponse::Get(g) = op
            && let Some(id) = g.kvs().first().and_then(|kv| be_u64(kv.value()))
        {
            return Ok(id);
        }
    }
    anyhow::bail!("{CLUSTER_ID_KEY} holds no 8-byte cluster id")
}

impl Standin {
    async fn new(opts: &Options) -> Result<Self> {
        let mut etcd = etcd_client::Client::connect([opts.etcd.as_str()], None)
            .await
            .with_context(|| format!("connecting to the etcd behind the PD stand-in at {}", opts.etcd))?;
        let cluster_id = cluster_id(&mut etcd).await?;
        let ts_key = format!("/pd/{cluster_id}/timestamp");
        let saved = etcd.get(ts_key.as_str(), None).await?.kvs().first().and_then(|kv| be_u64(kv.value())).unwrap_or(0);
        let physical = tso::now_ms().max(saved + 1);
        let window = physical + WINDOW;
        etcd.put(ts_key.as_str(), window.to_be_bytes().to_vec(), None).await.context("saving the TSO window")?;
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        Ok(Self {
            cluster_id,
            url: format!("{scheme}://{}", opts.listen),
            etcd,
            ts_key,
            clock: Mutex::new(Clock { physical, logical: 0, window }),
            tikv: opts.tikv.clone(),
        })
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader { cluster_id: self.cluster_id, error: None })
    }

    /// The header PD sends before any TiKV joined.
    fn not_bootstrapped(&self) -> Option<ResponseHeader> {
        let error = PdError { r#type: ErrorType::NotBootstrapped as i32, message: "TiKV cluster not bootstrapped".into() };
        Some(ResponseHeader { cluster_id: self.cluster_id, error: Some(error) })
    }

    fn check(&self, got: Option<u64>) -> Result<(), Status> {
        match got {
            Some(id) if id != self.cluster_id => Err(Status::failed_precondition(format!(
                "mismatch cluster id, need {} but got {id}",
                self.cluster_id
            ))),
            _ => Ok(()),
        }
    }

    /// `n` timestamps: the last one's physical and logical, as PD answers.
    async fn allocate(&self, n: u32) -> Result<(u64, u64), Status> {
        let n = u64::from(n.max(1));
        if n >= 1 << LOGICAL_BITS {
            return Err(Status::invalid_argument(format!("tso count {n} too large")));
        }
        loop {
            let mut c = self.clock.lock().await;
            let now = tso::now_ms();
            if now > c.physical {
                c.physical = now;
                c.logical = 0;
            }
            if c.logical + n >= 1 << LOGICAL_BITS {
                c.physical += 1;
                c.logical = 0;
            }
            if c.physical + 1 >= c.window {
                let window = c.physical + WINDOW;
                let mut kv = self.etcd.kv_client();
                kv.put(self.ts_key.as_str(), window.to_be_bytes().to_vec(), None)
                    .await
                    .map_err(|e| Status::unavailable(format!("saving the TSO window: {e}")))?;
                c.window = window;
            }
            if c.physical > tso::now_ms() + 1 {
                // Logical overflow moved us ahead of the clock: wait for it, as PD does.
                drop(c);
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            c.logical += n;
            return Ok((c.physical, c.logical));
        }
    }
}

#[tonic::async_trait]
impl PdService for Service {
    async fn get_members(&self, req: Request<GetMembersRequest>) -> Result<Response<GetMembersResponse>, Status> {
        let got = req.into_inner().header.map(|h| h.cluster_id).filter(|&id| id != 0);
        self.check(got)?;
        let me = Member {
            name: "pd-standin".into(),
            member_id: 1,
            client_urls: vec![self.url.clone()],
            peer_urls: vec![self.url.clone()],
            ..Member::default()
        };
        Ok(Response::new(GetMembersResponse {
            header: self.header(),
            members: vec![me.clone()],
            leader: Some(me.clone()),
            etcd_leader: Some(me),
        }))
    }

    async fn get_store(&self, req: Request<GetStoreRequest>) -> Result<Response<GetStoreResponse>, Status> {
        let req = req.into_inner();
        self.check(req.header.map(|h| h.cluster_id).filter(|&id| id != 0))?;
        let Some(addr) = &self.tikv else {
            return Ok(Response::new(GetStoreResponse { header: self.not_bootstrapped(), store: None }));
        };
        if req.store_id != 1 {
            return Err(Status::not_found(format!("invalid store ID {}, not found", req.store_id)));
        }
        Ok(Response::new(GetStoreResponse { header: self.header(), store: Some(Store { id: 1, address: addr.clone() }) }))
    }

    async fn get_region(&self, req: Request<GetRegionRequest>) -> Result<Response<GetRegionResponse>, Status> {
        self.check(req.into_inner().header.map(|h| h.cluster_id).filter(|&id| id != 0))?;
        if self.tikv.is_none() {
            return Ok(Response::new(GetRegionResponse { header: self.not_bootstrapped(), region: None, leader: None }));
        }
        let leader = Peer { id: 3, store_id: 1 };
        let region = Region {
            id: 2,
            start_key: Vec::new(),
            end_key: Vec::new(),
            region_epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
            peers: vec![leader.clone()],
        };
        Ok(Response::new(GetRegionResponse { header: self.header(), region: Some(region), leader: Some(leader) }))
    }

    type TsoStream = Pin<Box<dyn Stream<Item = Result<TsoResponse, Status>> + Send>>;

    async fn tso(&self, req: Request<Streaming<TsoRequest>>) -> Result<Response<Self::TsoStream>, Status> {
        let mut reqs = req.into_inner();
        let me = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(r) = reqs.message().await.transpose() {
                let reply = match r {
                    Ok(r) => match me.check(r.header.map(|h| h.cluster_id)) {
                        Ok(()) => me.allocate(r.count).await.map(|(physical, logical)| TsoResponse {
                            header: me.header(),
                            count: r.count,
                            timestamp: Some(Timestamp { physical: physical as i64, logical: logical as i64, suffix_bits: 0 }),
                        }),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                let stop = reply.is_err();
                if tx.send(reply).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// Forwards one HTTP/2 request (an etcd gRPC call) to `etcd` and streams the answer back.
async fn forward(
    client: HttpClient<HttpConnector, Body>,
    etcd: Arc<str>,
    mut req: axum::http::Request<Body>,
) -> Result<axum::http::Response<Body>, std::convert::Infallible> {
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    match format!("{etcd}{path}").parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return Ok(grpc_error(format!("bad path {path}"))),
    }
    match client.request(req).await {
        Ok(resp) => Ok(resp.map(Body::new)),
        Err(e) => Ok(grpc_error(format!("the etcd behind the PD stand-in ({etcd}) is unreachable: {e}"))),
    }
}

/// A gRPC `UNAVAILABLE` answer (trailers-only).
fn grpc_error(msg: String) -> axum::http::Response<Body> {
    Status::unavailable(msg).into_http()
}

/// Serves until the process is killed.
pub async fn serve(opts: Options) -> Result<()> {
    let standin = Arc::new(Standin::new(&opts).await?);
    let etcd: Arc<str> = opts.etcd.trim_end_matches('/').into();
    let client: HttpClient<HttpConnector, Body> = HttpClient::builder(TokioExecutor::new()).http2_only(true).build_http();
    let proxy = tower::service_fn(move |req| forward(client.clone(), etcd.clone(), req));
    let router = axum::Router::new()
        .route_service("/pdpb.PD/{*method}", PdServer::new(Service(standin.clone())))
        .fallback_service(proxy);
    let mut server = Server::builder();
    if let Some((ca, cert, key)) = &opts.tls {
        let read = |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(read(cert)?, read(key)?))
            .client_ca_root(Certificate::from_pem(read(ca)?));
        server = server.tls_config(tls)?;
    }
    tracing::info!(listen = %opts.listen, cluster_id = standin.cluster_id, etcd = %opts.etcd, "PD stand-in serving");
    server
        .add_routes(tonic::service::Routes::from(router))
        .serve(opts.listen)
        .await
        .with_context(|| format!("serving on {}", opts.listen))
}
