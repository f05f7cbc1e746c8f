//! PD: the cluster id and every timestamp come from PD (a real pd-server when one is installed, else
//! the PD stand-in: `tests::pd`), through `pump::pd::PdClient`, in the pump, the drainer and binlogctl.
//! Each ts we hand out is checked against two taken just before and after through an independent path
//! (`tests::pd::raw_ts`: one plain `Tso` request on a stream of its own), and the cluster id against the
//! one PD keeps in its etcd.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pump::etcd::EtcdConfig;
use pump::node::{NodeKind, NodeState};
use pump::pd::{PdClient, PdOptions};
use tests::nodes::{Node, node_status};
use tests::pd::{raw_ts, stored_cluster_id};
use tests::{Cluster, Etcd, Pd, free_port, our_binary, wait_until};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn cfg(urls: &str) -> EtcdConfig {
    EtcdConfig::from_pd_urls(urls).unwrap()
}

#[test]
fn many_callers_share_requests_and_every_ts_lies_between_two_independent_ones() {
    let cluster = Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    rt().block_on(async {
        let pd = PdClient::connect(&cfg(&url)).await.unwrap();
        let (raw_id, before) = raw_ts(&url).await.unwrap();
        assert_eq!(pd.cluster_id(), raw_id);
        assert_eq!(stored_cluster_id(&url).await.unwrap(), raw_id, "the id PD keeps at /pd/cluster_id");
        let calls: Vec<_> = (0..2000).map(|_| pd.get_ts()).collect();
        let got: Vec<u64> = futures::future::try_join_all(calls).await.unwrap();
        let (_, after) = raw_ts(&url).await.unwrap();
        let unique: HashSet<_> = got.iter().copied().collect();
        assert_eq!(unique.len(), got.len(), "every caller gets its own ts");
        assert!(got.iter().all(|&t| before < t && t < after), "all within ({before}, {after})");
        // One caller's successive calls increase.
        let mut last = 0;
        for _ in 0..50 {
            let t = pd.get_ts().await.unwrap();
            assert!(t > last);
            last = t;
        }
    });
}

#[test]
fn the_pump_and_the_drainer_use_pds_cluster_id_and_clock() {
    let cluster = Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    let rt = rt();
    let (cluster_id, before) = rt.block_on(raw_ts(&url)).unwrap();
    let root = cluster.dir();
    let pump = Node::pump(&root.join("pump"), &url, "pd-pump", &["-fake-binlog-interval=1".into()]).unwrap();
    let drainer_cfg = root.join("drainer.toml");
    std::fs::write(&drainer_cfg, "[syncer]\ndb-type = \"file\"\n").unwrap();
    // No -initial-commit-ts: the default -1 starts at PD's ts now.
    let drainer =
        Node::drainer(&root.join("drainer"), &url, "pd-drainer", &[format!("-config={}", drainer_cfg.display())]).unwrap();
    let savepoint = root.join("drainer/data/savepoint");
    wait_until("the drainer's savepoint", Duration::from_secs(30), || savepoint.exists()).unwrap();
    let first_checkpoint: u64 = std::fs::read_to_string(&savepoint)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("commitTS = ").map(|v| v.trim().parse().unwrap()))
        .unwrap();
    // Fake binlogs move the pump's registered max commit ts.
    wait_until("a fake binlog in the pump's registration", Duration::from_secs(30), || {
        node_status(&url, NodeKind::Pump, "pd-pump").unwrap().is_some_and(|n| n.max_commit_ts as u64 > before)
    })
    .unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&crate::pump_util::http("GET", &pump.addr(), "/status").unwrap().1).unwrap();
    let pump_status_ts = status["CommitTS"].as_u64().unwrap();
    let pump_reg = node_status(&url, NodeKind::Pump, "pd-pump").unwrap().unwrap();
    let drainer_reg = node_status(&url, NodeKind::Drainer, "pd-drainer").unwrap().unwrap();
    let (_, after) = rt.block_on(raw_ts(&url)).unwrap();
    for (what, ts) in [
        ("the drainer's start (initial-commit-ts -1)", first_checkpoint),
        ("the pump's fake binlog", pump_reg.max_commit_ts as u64),
        ("the pump's /status CommitTS", pump_status_ts),
        ("the drainer's registered checkpoint", drainer_reg.max_commit_ts as u64),
    ] {
        assert!(before < ts && ts < after, "{what}: {before} < {ts} < {after}");
    }
    assert_eq!(pump_reg.state, NodeState::Online);
    // The registry lives in PD's own etcd, at upstream's keys.
    let raw = rt.block_on(async {
        let mut c = etcd_client::Client::connect([url.as_str()], None).await.unwrap();
        c.get("/tidb-binlog/v1/pumps/pd-pump", None).await.unwrap().kvs()[0].value().to_vec()
    });
    let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(json["nodeId"], "pd-pump");
    // The pump accepts PD's cluster id and refuses any other.
    rt.block_on(async {
        let mut c = pump::proto::pump_client::PumpClient::connect(format!("http://{}", pump.addr())).await.unwrap();
        let req = |id| pump::proto::WriteBinlogReq { cluster_id: id, payload: Default::default() };
        assert_eq!(c.write_binlog(req(cluster_id)).await.unwrap().into_inner().errmsg, "");
        let err = c.write_binlog(req(cluster_id ^ 1)).await.map(|r| r.into_inner().errmsg);
        let msg = match err {
            Ok(m) => m,
            Err(s) => s.message().to_owned(),
        };
        assert!(msg.contains("cluster ID are mismatch"), "{msg}");
    });
    drop(drainer);
}

#[test]
fn a_pd_restart_is_waited_out_and_an_outage_past_the_bound_names_pd() {
    let mut cluster = Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    let rt = rt();
    let opts = PdOptions { retry_for: Duration::from_secs(3), attempt_timeout: Duration::from_secs(1) };
    let short = rt.block_on(PdClient::connect_with(&cfg(&url), opts)).unwrap();
    let pd = rt.block_on(PdClient::connect(&cfg(&url))).unwrap();
    let t1 = rt.block_on(pd.get_ts()).unwrap();
    let member = cluster.pd.as_mut().unwrap();
    member.kill();
    let err = rt.block_on(short.get_ts()).unwrap_err().to_string();
    assert!(err.contains("PD unreachable at") && err.contains(&url), "the error names PD and the endpoint: {err}");
    // Down, then back within the bound (30 s by default): the waiting call succeeds, above everything before.
    let waiting = rt.spawn({
        let pd = pd.clone();
        async move { pd.get_ts().await }
    });
    std::thread::sleep(Duration::from_millis(1200));
    member.restart().unwrap();
    let t2 = rt.block_on(waiting).unwrap().unwrap();
    assert!(t2 > t1, "{t2} after {t1}");
    let (_, t3) = rt.block_on(raw_ts(&url)).unwrap();
    assert!(t3 > t2);
}

#[test]
fn killing_the_pd_leader_of_three_moves_the_clock_on_without_going_back() {
    if tests::pd::real_pd().unwrap().is_none() {
        eprintln!("SKIPPED: needs a real pd-server (three members); none is installed (see tests::pd)");
        return;
    }
    let dir = tempfile::Builder::new().prefix("tbrs-pd3-").tempdir().unwrap();
    let mut members = Pd::start_members(dir.path(), 3).unwrap();
    let urls = members.iter().map(|m| m.url()).collect::<Vec<_>>().join(",");
    let rt = rt();
    let pd = rt.block_on(PdClient::connect(&cfg(&urls))).unwrap();
    // Callers keep asking the whole time; each checks its own sequence increases.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (pd, stop) = (pd.clone(), stop.clone());
        callers.push(rt.spawn(async move {
            let (mut last, mut n, mut slowest) = (0u64, 0u64, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let ts = pd.get_ts().await?;
                slowest = slowest.max(t.elapsed());
                anyhow::ensure!(ts > last, "ts went back: {ts} after {last}");
                (last, n) = (ts, n + 1);
            }
            anyhow::Ok((n, slowest))
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    let leader = pd.leader();
    let i = members.iter().position(|m| m.url() == leader).expect("the leader is a member");
    let before_kill = rt.block_on(pd.get_ts()).unwrap();
    members[i].kill();
    let killed_at = Instant::now();
    wait_until("another leader", Duration::from_secs(30), || {
        rt.block_on(pd.get_ts()).is_ok() && pd.leader() != leader
    })
    .unwrap();
    let failover = killed_at.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in callers {
        let (n, slowest) = rt.block_on(c).unwrap().unwrap();
        assert!(n > 0);
        eprintln!("caller: {n} ts, slowest call {slowest:?}");
    }
    let after = rt.block_on(pd.get_ts()).unwrap();
    assert!(after > before_kill);
    eprintln!("leader {leader} killed; {} serves after {failover:?}", pd.leader());
    // The killed member rejoins as a follower.
    members[i].restart_no_wait().unwrap();
}

#[test]
fn a_plain_etcd_a_dead_endpoint_and_a_bad_url_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&dir.path().join("etcd")).unwrap();
    let rt = rt();
    let err = rt.block_on(PdClient::connect(&cfg(&etcd.url()))).unwrap_err().to_string();
    assert!(err.contains(&format!("{} is not a PD", etcd.url())), "{err}");

    // The daemons say the same and exit.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(our_binary("pump"))
            .args(args)
            .arg("-data-dir")
            .arg(dir.path().join("pump"))
            .arg(format!("-addr=127.0.0.1:{}", free_port()))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["-pd-urls", &etcd.url()]);
    assert!(err.contains("is not a PD"), "{err}");
    let err = run(&["-pd-urls", "grpc://127.0.0.1:1"]);
    assert!(err.contains("bad pd-urls entry \"grpc://127.0.0.1:1\""), "{err}");

    let dead = format!("http://127.0.0.1:{}", free_port());
    let t = Instant::now();
    let opts = PdOptions { retry_for: Duration::from_secs(2), ..PdOptions::default() };
    let err = rt.block_on(PdClient::connect_with(&cfg(&dead), opts)).unwrap_err().to_string();
    assert!(err.contains(&format!("PD unreachable at {dead}")) && t.elapsed() < Duration::from_secs(10), "{err}");
    let err = run(&["-pd-urls", &dead]);
    assert!(err.contains(&format!("PD unreachable at {dead}")), "{err}");
}
