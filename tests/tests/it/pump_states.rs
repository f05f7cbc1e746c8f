//! Pump state transitions with the real binary: SIGTERM and binlogctl pause → paused and exit; restart
//! keeps node id and data; binlogctl offline waits for every non-offline drainer, then offline and exit.

use std::time::Duration;

use pump::node::{NodeKind, NodeState, NodeStatus};

use crate::ctl_util::Env;
use crate::pump_util::{cluster_id, commit, http, prewrite, pull_until, start_pump, start_pump_on, tso, wait_state, write};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn sigterm_pauses_and_exits() {
    let env = Env::start();
    let url = env.url();
    let mut pump = start_pump(&url, &env.cluster.dir().join("pump"), &[]);
    pump.proc.signal(libc::SIGTERM);
    assert!(pump.wait_exit_ok(Duration::from_secs(20)), "{}", pump.proc.log_tail());
    let n = env.node(NodeKind::Pump, &pump.node_id);
    assert_eq!(n.state, NodeState::Paused, "{n:?}");
}

#[test]
fn binlogctl_pause_then_restart_keeps_id_and_data_then_offline() {
    let env = Env::start();
    let url = env.url();
    let dir = env.cluster.dir().join("pump");
    let port = tests::free_port();
    let mut pump = start_pump_on(&url, &dir, port, &["-node-id", "pump-a"]);
    assert_eq!(pump.node_id, "pump-a");
    let rt = rt();
    let (cid, start, commit_ts) = rt.block_on(async {
        let cid = cluster_id(&url).await;
        let tso = tso(&url).await;
        let mut c = pump.client().await;
        let s = tso.get_ts().await.unwrap() as i64;
        write(&mut c, cid, prewrite(s, b"kept")).await.unwrap();
        let ct = tso.get_ts().await.unwrap() as i64;
        write(&mut c, cid, commit(s, ct)).await.unwrap();
        (cid, s, ct)
    });

    env.ctl(&["-cmd", "pause-pump", "-node-id", "pump-a"]).ok();
    assert!(pump.wait_exit_ok(Duration::from_secs(20)), "{}", pump.proc.log_tail());
    let paused = env.node(NodeKind::Pump, "pump-a");
    assert_eq!(paused.state, NodeState::Paused);
    assert!(paused.max_commit_ts >= commit_ts, "{paused:?}");

    // Restart with a different -node-id: the id pinned in <data-dir>/.node wins; the binlog is still there.
    let mut pump = start_pump_on(&url, &dir, port, &["-node-id", "pump-b"]);
    assert_eq!(pump.node_id, "pump-a");
    assert_eq!(env.node(NodeKind::Pump, "pump-a").state, NodeState::Online);
    rt.block_on(async {
        let mut c = pump.client().await;
        let got = pull_until(&mut c, cid, 0, |g| g.iter().any(|b| b.commit_ts() == commit_ts)).await;
        let b = got.iter().find(|b| b.commit_ts() == commit_ts).unwrap();
        assert_eq!((b.start_ts(), b.prewrite_value()), (start, &b"kept"[..]));
    });

    // A non-offline drainer that has not consumed our binlogs holds the pump in closing.
    let mut drainer = NodeStatus::new("d1", "127.0.0.1:1", NodeState::Online);
    drainer.max_commit_ts = 1;
    env.put_node(NodeKind::Drainer, &drainer);
    env.ctl(&["-cmd", "offline-pump", "-node-id", "pump-a"]).ok();
    rt.block_on(wait_state(&url, "pump-a", NodeState::Closing, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_secs(2));
    assert!(pump.proc.is_running(), "a closing pump waits for drainers\n{}", pump.proc.log_tail());
    assert_eq!(env.node(NodeKind::Pump, "pump-a").state, NodeState::Closing);
    // A second action is refused while closing.
    let (_, text) = http("PUT", &pump.addr, "/state/pump-a/pause").unwrap();
    assert!(text.contains("\"code\": 3"), "{text}");

    // The drainer catches up: the pump goes offline and exits.
    drainer.max_commit_ts = i64::MAX;
    env.put_node(NodeKind::Drainer, &drainer);
    assert!(pump.wait_exit_ok(Duration::from_secs(20)), "{}", pump.proc.log_tail());
    assert_eq!(env.node(NodeKind::Pump, "pump-a").state, NodeState::Offline);
}

#[test]
fn close_over_http_ignores_offline_drainers() {
    let env = Env::start();
    let url = env.url();
    let mut offline = NodeStatus::new("gone", "127.0.0.1:1", NodeState::Offline);
    offline.max_commit_ts = 1;
    env.put_node(NodeKind::Drainer, &offline);
    let mut pump = start_pump(&url, &env.cluster.dir().join("pump"), &[]);
    let (code, text) = http("PUT", &pump.addr, &format!("/state/{}/close", pump.node_id)).unwrap();
    assert_eq!(code, 200);
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!((r["code"].as_i64(), r["message"].as_str()), (Some(200), Some("apply action close success!")));
    assert!(pump.wait_exit_ok(Duration::from_secs(20)), "{}", pump.proc.log_tail());
    assert_eq!(env.node(NodeKind::Pump, &pump.node_id).state, NodeState::Offline);
}

/// Pausing waits for the commits of prewrites it already accepted: a transaction whose P is on the pump
/// when `pause-pump` arrives still gets its C in, and the paused pump's registered max commit ts covers
/// it, so a drainer that goes on without the paused pump never passes that transaction.
#[test]
fn pausing_waits_for_commits_of_accepted_prewrites() {
    let env = Env::start();
    let url = env.url();
    let mut pump = start_pump(&url, &env.cluster.dir().join("pump"), &["-node-id", "pump-p"]);
    let rt = rt();
    rt.block_on(async {
        let cid = cluster_id(&url).await;
        let tso = tso(&url).await;
        let mut c = pump.client().await;
        let s = tso.get_ts().await.unwrap() as i64;
        write(&mut c, cid, prewrite(s, b"in flight")).await.unwrap();
        let (code, _) = http("PUT", &pump.addr, "/state/pump-p/pause").unwrap();
        assert_eq!(code, 200);
        wait_state(&url, "pump-p", NodeState::Pausing, Duration::from_secs(10)).await;
        // New prewrites are refused while pausing; the pending commit is accepted.
        let s2 = tso.get_ts().await.unwrap() as i64;
        assert!(write(&mut c, cid, prewrite(s2, b"new")).await.is_err(), "a prewrite while pausing is refused");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ct = tso.get_ts().await.unwrap() as i64;
        write(&mut c, cid, commit(s, ct)).await.unwrap();
        let paused = wait_state(&url, "pump-p", NodeState::Paused, Duration::from_secs(20)).await;
        assert!(paused.max_commit_ts >= ct, "the paused pump's max commit ts {} covers the late commit {ct}", paused.max_commit_ts);
    });
    assert!(pump.wait_exit_ok(Duration::from_secs(20)), "{}", pump.proc.log_tail());
}
