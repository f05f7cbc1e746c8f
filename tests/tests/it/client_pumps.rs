//! The pump client TiDB embeds (`pump::client`) against in-test gRPC pumps registered in a real etcd:
//! P and C on the same pump, range and hash selection, fail-over when a pump dies, following the
//! registry, the probe that revives a pump, ignore-error, no pump registered.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use pump::client::{ClientConfig, ClientError, PumpsClient, Strategy, WriteOutcome};
use pump::node::{NodeKind, NodeState, NodeStatus, Registry};
use pump::proto::pump_server::{Pump, PumpServer};
use pump::proto::{Binlog, BinlogType, PullBinlogReq, PullBinlogResp, WriteBinlogReq, WriteBinlogResp};
use tests::Cluster;
use tonic::{Request, Response, Status};

/// What an in-test pump saw.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    /// Decoded binlogs, in arrival order (probes excluded).
    pub binlogs: Arc<Mutex<Vec<Binlog>>>,
    /// Empty-payload probes.
    pub probes: Arc<AtomicUsize>,
    /// When set, every write is refused with an errmsg (as a paused pump refuses P-binlogs).
    pub refuse: Arc<AtomicBool>,
    /// When set, P-binlogs are stored and then the call fails (a pump that crashed after its fsync,
    /// before the reply).
    pub store_then_fail: Arc<AtomicBool>,
    dead: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl Pump for Recorder {
    async fn write_binlog(&self, req: Request<WriteBinlogReq>) -> Result<Response<WriteBinlogResp>, Status> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(Status::unavailable("pump is down"));
        }
        let req = req.into_inner();
        if req.payload.is_empty() {
            self.probes.fetch_add(1, Ordering::SeqCst);
        }
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Status::unknown("no online: paused"));
        }
        if !req.payload.is_empty() {
            let b = Binlog::decode(&req.payload[..]).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let prewrite = b.tp() == BinlogType::Prewrite;
            self.binlogs.lock().unwrap().push(b);
            if prewrite && self.store_then_fail.load(Ordering::SeqCst) {
                return Err(Status::unavailable("connection reset after the write"));
            }
        }
        Ok(Response::new(WriteBinlogResp { errmsg: String::new() }))
    }

    type PullBinlogsStream = tonic::codegen::tokio_stream::Empty<Result<PullBinlogResp, Status>>;

    async fn pull_binlogs(&self, _: Request<PullBinlogReq>) -> Result<Response<Self::PullBinlogsStream>, Status> {
        Ok(Response::new(tonic::codegen::tokio_stream::empty()))
    }
}

/// A gRPC pump on a loopback port that records what it is sent.
pub(crate) struct FakePump {
    pub node_id: String,
    pub addr: String,
    pub rec: Recorder,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakePump {
    pub async fn start(node_id: &str) -> FakePump {
        let port = tests::free_port();
        let addr = format!("127.0.0.1:{port}");
        let rec = Recorder::default();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = PumpServer::new(rec.clone());
        let sock = addr.parse().unwrap();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_shutdown(sock, async {
                    let _ = rx.await;
                })
                .await;
        });
        // Wait until it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(Instant::now() < deadline, "fake pump {node_id} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        FakePump { node_id: node_id.into(), addr, rec, stop: Some(stop), task }
    }

    /// Registers it online in etcd.
    pub async fn register(&self, reg: &Registry) {
        reg.update_node(NodeKind::Pump, &NodeStatus::new(&self.node_id, &self.addr, NodeState::Online)).await.unwrap();
    }

    /// Stops answering at once and closes its port (its registry entry stays `online`, as for a
    /// crashed pump).
    pub fn kill(&mut self) {
        self.rec.dead.store(true, Ordering::SeqCst);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }

    pub fn binlogs(&self) -> Vec<Binlog> {
        self.rec.binlogs.lock().unwrap().clone()
    }
}

impl Drop for FakePump {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start ts of every P-binlog and every C/Rollback binlog on a pump.
pub(crate) fn p_and_c(b: &[Binlog]) -> (Vec<i64>, Vec<i64>) {
    let p = b.iter().filter(|b| b.tp() == BinlogType::Prewrite).map(|b| b.start_ts()).collect();
    let c = b.iter().filter(|b| b.tp() != BinlogType::Prewrite).map(|b| b.start_ts()).collect();
    (p, c)
}

fn prewrite(start_ts: i64) -> Binlog {
    Binlog {
        tp: Some(BinlogType::Prewrite as i32),
        start_ts: Some(start_ts),
        commit_ts: Some(0),
        prewrite_key: Some(b"k".to_vec()),
        prewrite_value: Some(vec![8, 1]),
        ddl_query: None,
        ddl_job_id: Some(0),
        ddl_schema_state: Some(0),
    }
}

fn fast() -> ClientConfig {
    ClientConfig {
        write_timeout: Duration::from_secs(2),
        retry_interval: Duration::from_millis(20),
        commit_retry_interval: Duration::from_millis(50),
        commit_retry_for: Duration::from_secs(2),
        detect_interval: Duration::from_millis(200),
        ..ClientConfig::default()
    }
}

async fn setup(n: usize) -> (Cluster, Registry, Vec<FakePump>) {
    let cluster = tokio::task::spawn_blocking(|| Cluster::builder().pd().start().unwrap()).await.unwrap();
    let client = etcd_client::Client::connect([cluster.pd().url().as_str()], None).await.unwrap();
    let reg = Registry::new(client);
    let mut pumps = Vec::new();
    for i in 0..n {
        let p = FakePump::start(&format!("pump-{i}")).await;
        p.register(&reg).await;
        pumps.push(p);
    }
    (cluster, reg, pumps)
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_spreads_transactions_and_keeps_p_and_c_together() {
    let (_cluster, reg, pumps) = setup(3).await;
    let client = PumpsClient::connect(reg, 7, fast()).await.unwrap();
    for ts in 1..=30 {
        let out = client.write_txn(prewrite(ts), ts + 1000).await.unwrap();
        assert!(matches!(out, WriteOutcome::Written { .. }));
    }
    let mut total = 0;
    for p in &pumps {
        let (ps, cs) = p_and_c(&p.binlogs());
        assert_eq!(ps.len(), 10, "round-robin gives each of 3 pumps 10 of 30 P-binlogs, {} got {ps:?}", p.node_id);
        assert_eq!(ps, cs, "{}: every P has its C on the same pump, in order", p.node_id);
        for b in p.binlogs().iter().filter(|b| b.tp() == BinlogType::Commit) {
            assert_eq!(b.commit_ts(), b.start_ts() + 1000);
            assert_eq!(b.prewrite_value, None, "the C-binlog drops prewrite_value");
            assert_eq!(b.prewrite_key(), b"k", "the C-binlog keeps the P-binlog's fields");
        }
        total += ps.len();
    }
    assert_eq!(total, 30);
    assert!(client.pump_of(5).is_none(), "the start_ts -> pump record is dropped after the C-binlog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_picks_by_start_ts_and_rollback_follows_its_prewrite() {
    let (_cluster, reg, pumps) = setup(3).await;
    let client = PumpsClient::connect(reg, 7, ClientConfig { strategy: Strategy::Hash, ..fast() }).await.unwrap();
    for ts in [3i64, 4, 5, 6] {
        client.write_txn(prewrite(ts), 0).await.unwrap();
    }
    // Usable pumps sorted by node id: pump-0, pump-1, pump-2; index = start_ts % 3.
    assert_eq!(p_and_c(&pumps[0].binlogs()).0, [3, 6]);
    assert_eq!(p_and_c(&pumps[1].binlogs()).0, [4]);
    assert_eq!(p_and_c(&pumps[2].binlogs()).0, [5]);
    for p in &pumps {
        assert!(p.binlogs().iter().filter(|b| b.tp() != BinlogType::Prewrite).all(|b| b.tp() == BinlogType::Rollback));
        let (ps, cs) = p_and_c(&p.binlogs());
        assert_eq!(ps, cs);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pump_is_skipped_and_revived_by_the_probe() {
    let (_cluster, reg, mut pumps) = setup(3).await;
    let client = PumpsClient::connect(reg, 7, fast()).await.unwrap();
    client.write_txn(prewrite(1), 2).await.unwrap();
    pumps[1].kill();
    let before: usize = pumps.iter().map(|p| p.binlogs().len()).sum();
    for ts in 10..70 {
        let out = client.write_txn(prewrite(ts), ts + 1).await.unwrap();
        assert_ne!(out, WriteOutcome::Written { node_id: "pump-1".into() });
    }
    let after0 = p_and_c(&pumps[0].binlogs());
    let after2 = p_and_c(&pumps[2].binlogs());
    assert_eq!(after0.0, after0.1);
    assert_eq!(after2.0, after2.1);
    let written: usize = pumps.iter().map(|p| p.binlogs().len()).sum::<usize>() - before;
    assert_eq!(written, 120, "60 transactions, P and C each, all on the survivors");
    assert!(!client.pumps().iter().find(|p| p.node_id == "pump-1").unwrap().usable, "after >10 errors pump-1 is not used");

    // A pump that refuses (as a paused one does) becomes unusable; once it answers, the probe
    // (an empty WriteBinlog) makes it usable again.
    pumps[2].rec.refuse.store(true, Ordering::SeqCst);
    for ts in 100..130 {
        client.write_txn(prewrite(ts), ts + 1).await.unwrap();
    }
    wait_for("pump-2 to be unusable", || !client.pumps().iter().find(|p| p.node_id == "pump-2").unwrap().usable).await;
    pumps[2].rec.refuse.store(false, Ordering::SeqCst);
    wait_for("the probe to revive pump-2", || client.pumps().iter().find(|p| p.node_id == "pump-2").unwrap().usable).await;
    // Revived by an empty-payload probe, or by the Rollbacks the client sends for the refused (and so
    // possibly stored) P-binlogs: either is a successful call to pump-2.
    let rollbacks = pumps[2].binlogs().iter().filter(|b| b.tp() == BinlogType::Rollback).count();
    assert!(pumps[2].rec.probes.load(Ordering::SeqCst) > 0 || rollbacks > 0, "revived by a successful call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_the_registry() {
    let (_cluster, reg, pumps) = setup(1).await;
    let client = PumpsClient::connect(reg.clone(), 7, fast()).await.unwrap();
    let late = FakePump::start("pump-late").await;
    late.register(&reg).await;
    wait_for("the new pump to be seen", || client.pumps().len() == 2).await;
    // Pause the first pump in etcd: no more P-binlogs go there.
    let mut st = NodeStatus::new(&pumps[0].node_id, &pumps[0].addr, NodeState::Paused);
    st.max_commit_ts = 1;
    reg.update(NodeKind::Pump, &st).await.unwrap();
    wait_for("pump-0 to be unusable", || !client.pumps().iter().find(|p| p.node_id == "pump-0").unwrap().usable).await;
    for ts in 1..=5 {
        client.write_txn(prewrite(ts), ts + 1).await.unwrap();
    }
    assert_eq!(p_and_c(&late.binlogs()).0, [1, 2, 3, 4, 5]);
    assert!(pumps[0].binlogs().is_empty());
    // Deleting the key removes the pump.
    etcd_client::Client::connect([_cluster.pd().url().as_str()], None)
        .await
        .unwrap()
        .delete(NodeKind::Pump.key("pump-late"), None)
        .await
        .unwrap();
    wait_for("pump-late to be removed", || client.pumps().len() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pump_and_ignore_error() {
    let (_cluster, reg, mut pumps) = setup(0).await;
    let err = PumpsClient::connect(reg.clone(), 7, fast()).await.unwrap_err();
    assert!(matches!(err, ClientError::NoPumpFound));
    assert_eq!(err.to_string(), "no pump found in pd");

    let p = FakePump::start("only").await;
    p.register(&reg).await;
    pumps.push(p);
    let cfg = ClientConfig { write_timeout: Duration::from_millis(300), ..fast() };
    let strict = PumpsClient::connect(reg.clone(), 7, cfg.clone()).await.unwrap();
    let lenient = PumpsClient::connect(reg, 7, ClientConfig { ignore_error: true, ..cfg }).await.unwrap();
    pumps[0].kill();
    let err = strict.write_binlog(&prewrite(1)).await.unwrap_err();
    assert!(matches!(err, ClientError::WriteFailed { .. }), "{err}");
    assert!(err.to_string().contains("only"), "the error names the pump: {err}");
    assert_eq!(lenient.write_binlog(&prewrite(2)).await.unwrap(), WriteOutcome::Skipped);
    assert!(lenient.is_disabled());
    assert_eq!(lenient.write_binlog(&prewrite(3)).await.unwrap(), WriteOutcome::Skipped, "binlog stays off");
}

/// A pump that stored a P-binlog but failed the call gets a Rollback for it once the transaction's
/// own pump has the C-binlog: its orphan Prewrite never holds its watermark back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_prewrite_left_by_a_failed_call_is_rolled_back() {
    let (_cluster, reg, pumps) = setup(2).await;
    let client = PumpsClient::connect(reg, 1, ClientConfig { strategy: Strategy::Hash, ..fast() }).await.unwrap();
    // hash: start_ts 100 goes to usable[100 % 2] first: pump-0, which stores it and fails.
    pumps[0].rec.store_then_fail.store(true, Ordering::SeqCst);
    let out = client.write_txn(prewrite(100), 101).await.unwrap();
    assert_eq!(out, WriteOutcome::Written { node_id: "pump-1".into() });
    assert_eq!(p_and_c(&pumps[1].binlogs()), (vec![100], vec![100]), "P and C on the pump that acknowledged");
    pumps[0].rec.store_then_fail.store(false, Ordering::SeqCst);
    wait_for("a Rollback for 100 on pump-0", || {
        pumps[0].binlogs().iter().any(|b| b.tp() == BinlogType::Rollback && b.start_ts() == 100)
    })
    .await;
    let on0: Vec<(BinlogType, i64)> = pumps[0].binlogs().iter().map(|b| (b.tp(), b.start_ts())).collect();
    assert_eq!(on0, [(BinlogType::Prewrite, 100), (BinlogType::Rollback, 100)], "no Commit ever goes to pump-0");
}

/// TiDB's `binlog-socket`: the local client writes to the real pump's unix socket (pump `-socket`),
/// without the registry; the binlogs are then pulled over the pump's TCP port.
#[test]
fn binlog_socket_writes_to_the_local_pump_over_its_unix_socket() {
    use crate::pump_util::{cluster_id, pull_until, start_pump, tso};
    let cluster = Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    let sock = cluster.dir().join("pump.sock");
    let pump = start_pump(&url, &cluster.dir().join("pump"), &["-socket", sock.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let cid = cluster_id(&url).await;
        let tso = tso(&url).await;
        for socket in [format!("unix://{}", sock.display()), sock.display().to_string()] {
            let client = PumpsClient::local(cid, fast(), &socket);
            let start = tso.get_ts().await.unwrap() as i64;
            let commit = tso.get_ts().await.unwrap() as i64;
            let out = client.write_txn(prewrite(start), commit).await.unwrap();
            assert_eq!(out, WriteOutcome::Written { node_id: pump::client::LOCAL_PUMP_ID.into() });
            let mut c = pump.client().await;
            let got = pull_until(&mut c, cid, start, |g| g.iter().any(|b| b.commit_ts() == commit)).await;
            let txn = got.iter().find(|b| b.commit_ts() == commit).unwrap();
            assert_eq!((txn.start_ts(), txn.tp(), txn.prewrite_value()), (start, BinlogType::Commit, &[8u8, 1][..]));
        }

        // A socket nobody serves: the write fails with an error naming the local pump, no panic.
        let dead = PumpsClient::local(cid, ClientConfig { write_timeout: Duration::from_millis(300), ..fast() }, "/nonexistent/pump.sock");
        let start = tso.get_ts().await.unwrap() as i64;
        let err = dead.write_txn(prewrite(start), 0).await.unwrap_err().to_string();
        assert!(err.contains(pump::client::LOCAL_PUMP_ID), "{err}");
    });
}
