//! The real `pump` under bad conditions: kill -9 under concurrent load loses no acknowledged binlog;
//! oversize messages and a full disk are refused with clear errors; a dead drainer never stops the
//! pump, a live one is notified (Cistern.Notify) when the pump comes online.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pump::node::{NodeKind, NodeState, NodeStatus};
use pump::proto::cistern_server::{Cistern, CisternServer};
use pump::proto::{DumpBinlogReq, DumpBinlogResp, DumpDdlJobsReq, DumpDdlJobsResp, NotifyReq, NotifyResp};

use crate::ctl_util::Env;
use crate::pump_util::{cluster_id, commit, node, prewrite, pull_until, start_pump, start_pump_on, tso, write};

/// A Rollback binlog as TiDB sends it (commit ts 0).
fn rollback(start_ts: i64) -> Vec<u8> {
    use prost::Message;
    let b = pump::proto::Binlog {
        tp: Some(pump::proto::BinlogType::Rollback as i32),
        start_ts: Some(start_ts),
        commit_ts: Some(0),
        ..pump::proto::Binlog::default()
    };
    b.encode_to_vec()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_binlog() {
    let env = Env::start();
    let url = env.url();
    let dir = env.cluster.dir().join("pump");
    let port = tests::free_port();
    let mut pump = start_pump_on(&url, &dir, port, &[]);
    let rt = rt();
    // start_ts -> (commit_ts, P acknowledged, C acknowledged)
    let txns: Arc<Mutex<BTreeMap<i64, (i64, bool, bool)>>> = Arc::default();
    let cid = rt.block_on(cluster_id(&url));
    rt.block_on(async {
        let tso = tso(&url).await;
        let mut writers = Vec::new();
        for _ in 0..8 {
            let (tso, txns, mut c) = (tso.clone(), txns.clone(), pump.client().await);
            writers.push(tokio::spawn(async move {
                loop {
                    let s = tso.get_ts().await.unwrap() as i64;
                    let ct = tso.get_ts().await.unwrap() as i64;
                    txns.lock().unwrap().insert(s, (ct, false, false));
                    if write(&mut c, cid, prewrite(s, &s.to_be_bytes())).await.is_err() {
                        return;
                    }
                    txns.lock().unwrap().get_mut(&s).unwrap().1 = true;
                    if write(&mut c, cid, commit(s, ct)).await.is_err() {
                        return;
                    }
                    txns.lock().unwrap().get_mut(&s).unwrap().2 = true;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        pump.proc.kill();
        for w in writers {
            w.await.unwrap();
        }
    });
    let txns = txns.lock().unwrap().clone();
    let acked = txns.values().filter(|t| t.2).count();
    assert!(acked > 8, "the load wrote too little to mean anything: {acked}");

    let mut pump = start_pump_on(&url, &dir, port, &[]);
    rt.block_on(async {
        let mut c = pump.client().await;
        // TiDB keeps retrying a C-binlog whose write failed; do the same so no Prewrite stays open.
        for (s, (ct, p, done)) in &txns {
            if *p && !done {
                write(&mut c, cid, commit(*s, *ct)).await.unwrap();
            } else if !p {
                // In doubt: the Prewrite may be stored although its ack was lost with the kill (group
                // commit makes that likely). TiDB's client rolls such a Prewrite back (pump::client);
                // otherwise it holds the stream for max-txn-timeout.
                write(&mut c, cid, rollback(*s)).await.unwrap();
            }
        }
        let last = txns.values().filter(|t| t.1).map(|t| t.0).max().unwrap();
        let got = pull_until(&mut c, cid, 0, |g| g.last().is_some_and(|b| b.commit_ts() >= last)).await;
        let pulled: BTreeMap<i64, Vec<u8>> =
            got.iter().filter(|b| b.start_ts() != b.commit_ts()).map(|b| (b.start_ts(), b.prewrite_value().to_vec())).collect();
        for (s, (ct, _, c_acked)) in &txns {
            if *c_acked {
                let v = pulled.get(s).unwrap_or_else(|| panic!("acknowledged txn {s} (commit {ct}) lost"));
                assert_eq!(v, &s.to_be_bytes().to_vec(), "txn {s} came back with its own prewrite value");
            }
        }
    });
    assert!(pump.proc.is_running());
}

#[test]
fn oversize_messages_and_a_full_disk_are_refused_clearly() {
    let env = Env::start();
    let url = env.url();
    let cfg = env.cluster.dir().join("pump.toml");
    // More free space required than any disk has: every real binlog is refused, fakes still go in.
    std::fs::write(&cfg, "[storage]\nstop-write-at-available-space = \"1000 PiB\"\n").unwrap();
    let mut pump =
        start_pump(&url, &env.cluster.dir().join("pump"), &["-config", cfg.to_str().unwrap(), "-max-message-size", "4096"]);
    let rt = rt();
    rt.block_on(async {
        let cid = cluster_id(&url).await;
        let mut c = pump.client().await;
        let err = write(&mut c, cid, prewrite(100, &[7u8; 10_000])).await.unwrap_err();
        assert!(err.to_lowercase().contains("message") && err.contains("4096"), "{err}");
        let err = write(&mut c, cid, prewrite(100, b"small")).await.unwrap_err();
        assert!(err.contains("no available space") && err.contains("StopWriteAtAvailableSpace"), "{err}");
        // The probe and fake binlogs are still accepted: the watermark keeps moving.
        write(&mut c, cid, Vec::new()).await.unwrap();
        let first = node(&url, NodeKind::Pump, &pump.node_id).await.unwrap().max_commit_ts;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let later = node(&url, NodeKind::Pump, &pump.node_id).await.unwrap().max_commit_ts;
        assert!(later > first, "fake binlogs advance maxCommitTS with a full disk: {first} -> {later}");
    });
    assert!(pump.proc.is_running(), "{}", pump.proc.log_tail());
}

#[derive(Clone, Default)]
struct CountingDrainer {
    notified: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Cistern for CountingDrainer {
    type DumpBinlogStream = futures::stream::Empty<Result<DumpBinlogResp, tonic::Status>>;
    async fn dump_binlog(
        &self,
        _: tonic::Request<DumpBinlogReq>,
    ) -> Result<tonic::Response<Self::DumpBinlogStream>, tonic::Status> {
        Ok(tonic::Response::new(futures::stream::empty()))
    }
    async fn dump_ddl_jobs(&self, _: tonic::Request<DumpDdlJobsReq>) -> Result<tonic::Response<DumpDdlJobsResp>, tonic::Status> {
        Ok(tonic::Response::new(DumpDdlJobsResp::default()))
    }
    async fn notify(&self, _: tonic::Request<NotifyReq>) -> Result<tonic::Response<NotifyResp>, tonic::Status> {
        self.notified.fetch_add(1, Ordering::SeqCst);
        Ok(tonic::Response::new(NotifyResp {}))
    }
}

#[test]
fn online_drainers_are_notified_and_dead_ones_do_not_matter() {
    let env = Env::start();
    let url = env.url();
    let rt = rt();
    let drainer = CountingDrainer::default();
    let port = tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let svc = CisternServer::new(drainer.clone());
    let sock = addr.parse().unwrap();
    rt.spawn(async move { tonic::transport::Server::builder().add_service(svc).serve(sock).await.unwrap() });
    tests::wait_until("the stand-in drainer to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).is_ok()
    })
    .unwrap();
    env.put_node(NodeKind::Drainer, &NodeStatus::new("live", &addr, NodeState::Online));
    env.put_node(NodeKind::Drainer, &NodeStatus::new("dead", "127.0.0.1:1", NodeState::Online));
    env.put_node(NodeKind::Drainer, &NodeStatus::new("resting", &addr, NodeState::Paused));

    let mut pump = start_pump(&url, &env.cluster.dir().join("pump"), &[]);
    tests::wait_until("the live drainer to be notified", Duration::from_secs(20), || {
        drainer.notified.load(Ordering::SeqCst) >= 1
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", pump.proc.log_tail()));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(drainer.notified.load(Ordering::SeqCst), 1, "one Notify; the paused drainer is not asked");
    assert!(pump.proc.is_running(), "a dead drainer never stops the pump\n{}", pump.proc.log_tail());
}
