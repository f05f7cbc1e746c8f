//! A **test double** of TiKV: the two calls of `tikvpb.Tikv` the pump's resolver makes
//! (`MvccGetByKey`, `KvCheckTxnStatus`), answered from what the test put in, in-process on loopback.
//! No TiKV runs here (none can be installed from the registries these machines reach), so the resolver's
//! TiKV path is tested against this double and the PD stand-in's one region
//! ([`crate::Pd::start_standin_with_tikv`]), never against a real TiKV.
//!
//! It checks what a real TiKV checks first: the request's region (id 2), epoch (1/1) and leader peer
//! (id 3 on store 1), as the stand-in PD describes them, and answers a region error otherwise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use pump::proto::tikvpb::tikv_server::{Tikv, TikvServer};
use pump::proto::tikvpb::{
    CheckTxnStatusRequest, CheckTxnStatusResponse, Context, MvccGetByKeyRequest, MvccGetByKeyResponse, MvccInfo, MvccWrite,
    Op, RegionError,
};
use tonic::{Request, Response, Status};

/// What the double knows and what it was asked.
#[derive(Debug, Default)]
pub struct State {
    /// Per raw key, its MVCC writes.
    pub writes: HashMap<Vec<u8>, Vec<MvccWrite>>,
    /// Per lock ts, the answer to `KvCheckTxnStatus`: (lock_ttl, commit_version); absent = (0, 0).
    pub txn_status: HashMap<u64, (u64, u64)>,
    /// Every `KvCheckTxnStatus` request received.
    pub status_asked: Vec<CheckTxnStatusRequest>,
    /// How many `MvccGetByKey` requests were received.
    pub mvcc_asked: usize,
}

impl State {
    /// Records that the transaction `start_ts` committed at `commit_ts` (a Put write on `key`).
    pub fn commit(&mut self, key: &[u8], start_ts: u64, commit_ts: u64) {
        let w = MvccWrite { r#type: Op::Put as i32, start_ts, commit_ts };
        self.writes.entry(key.to_vec()).or_default().push(w);
    }

    /// Records that the transaction `start_ts` was rolled back (a Rollback write on `key`).
    pub fn rollback(&mut self, key: &[u8], start_ts: u64) {
        let w = MvccWrite { r#type: Op::Rollback as i32, start_ts, commit_ts: start_ts };
        self.writes.entry(key.to_vec()).or_default().push(w);
    }
}

/// The double, serving until dropped.
pub struct TikvDouble {
    /// Where it listens (`127.0.0.1:P`).
    pub addr: SocketAddr,
    /// What it knows and was asked.
    pub state: Arc<Mutex<State>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[derive(Clone)]
struct Service(Arc<Mutex<State>>);

fn region_error(ctx: Option<&Context>) -> Option<RegionError> {
    let ok = ctx.is_some_and(|c| {
        c.region_id == 2
            && c.region_epoch.as_ref().is_some_and(|e| (e.conf_ver, e.version) == (1, 1))
            && c.peer.as_ref().is_some_and(|p| (p.id, p.store_id) == (3, 1))
    });
    (!ok).then(|| RegionError { message: format!("region context does not match region 2 / peer 3: {ctx:?}") })
}

#[tonic::async_trait]
impl Tikv for Service {
    async fn mvcc_get_by_key(&self, req: Request<MvccGetByKeyRequest>) -> Result<Response<MvccGetByKeyResponse>, Status> {
        let req = req.into_inner();
        let mut st = self.0.lock().unwrap();
        st.mvcc_asked += 1;
        if let Some(e) = region_error(req.context.as_ref()) {
            return Ok(Response::new(MvccGetByKeyResponse { region_error: Some(e), ..Default::default() }));
        }
        let writes = st.writes.get(&req.key).cloned().unwrap_or_default();
        Ok(Response::new(MvccGetByKeyResponse { info: Some(MvccInfo { lock: None, writes }), ..Default::default() }))
    }

    async fn kv_check_txn_status(
        &self,
        req: Request<CheckTxnStatusRequest>,
    ) -> Result<Response<CheckTxnStatusResponse>, Status> {
        let req = req.into_inner();
        let mut st = self.0.lock().unwrap();
        if let Some(e) = region_error(req.context.as_ref()) {
            return Ok(Response::new(CheckTxnStatusResponse { region_error: Some(e), ..Default::default() }));
        }
        let (lock_ttl, commit_version) = st.txn_status.get(&req.lock_ts).copied().unwrap_or((0, 0));
        st.status_asked.push(req);
        Ok(Response::new(CheckTxnStatusResponse { lock_ttl, commit_version, ..Default::default() }))
    }
}

impl TikvDouble {
    /// Starts the double on a free loopback port, on the current tokio runtime.
    pub async fn start() -> Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{}", crate::free_port()).parse()?;
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let svc = TikvServer::new(Service(state.clone()));
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_shutdown(addr, async {
                    let _ = stopped.await;
                })
                .await;
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "the TiKV double did not start on {addr}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(Self { addr, state, _stop: stop })
    }
}
