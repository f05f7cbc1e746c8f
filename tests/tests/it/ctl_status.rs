//! binlogctl -cmd status against a real etcd, with loopback stand-ins for the nodes' HTTP API: who holds
//! back pump GC, why a drainer stalls, which pump its merge waits for.

use pump::node::{NodeKind, NodeState, NodeStatus};
use pump::tso;

use crate::ctl_util::{Env, FakeNode, dead_addr};

#[test]
fn status_names_the_gc_holder_and_why_drainers_stall() {
    let env = Env::start();
    let api = FakeNode::start(200);
    let now = tso::now_ms() as i64;
    let mk = |id: &str, host: &str, state, commit_ms: i64| {
        let mut n = NodeStatus::new(id, host, state);
        n.max_commit_ts = commit_ms << 18;
        n.update_ts = now << 18;
        n
    };
    env.put_node(NodeKind::Pump, &mk("p1", &api.addr, NodeState::Online, now - 2_000));
    env.put_node(NodeKind::Pump, &mk("p2", &dead_addr(), NodeState::Paused, now - 120_000));
    env.put_node(NodeKind::Pump, &mk("p-old", &dead_addr(), NodeState::Offline, 1));
    env.put_node(NodeKind::Drainer, &mk("d1", &api.addr, NodeState::Online, now - 125_000));
    env.put_node(NodeKind::Drainer, &mk("d2", &dead_addr(), NodeState::Paused, now - 600_000));

    let run = env.ctl(&["-cmd", "status", "-time-zone", "UTC"]);
    let out = &run.ok().stdout;
    assert!(out.contains("pump GC: held back by drainer d2 (paused)"), "{out}");
    assert!(out.contains("drainer d1: not advancing because"), "{out}");
    assert!(out.contains("waits for pump p2, which is paused"), "{out}");
    assert!(out.contains("drainer is paused"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("pump") && l.contains("p-old") && l.contains("offline")), "{out}");

    let run = env.ctl(&["-cmd", "status", "-json"]);
    let v: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(v["gcHeldBy"]["nodeId"], "d2");
    assert_eq!(v["pumps"][0]["nodeId"], "p-old");
    assert_eq!(v["pumps"][1]["answers"], true);
    assert_eq!(v["pumps"][2]["answers"], false);
    assert!(v["drainers"][0]["lagSeconds"].as_i64().unwrap() >= 125);
}

#[test]
fn status_names_the_pump_a_drainer_merge_waits_for() {
    let env = Env::start();
    let now = tso::now_ms() as i64;
    let pumps = [FakeNode::start(200), FakeNode::start(200)];
    let drainer_status = serde_json::json!({
        "PumpPos": {"p1": (now - 1_000) << 18, "p2": (now - 300_000) << 18},
        "Synced": false, "LastTS": (now - 300_000) << 18, "TsMap": ""
    });
    let drainer = FakeNode::with_status(200, &drainer_status.to_string());
    for (i, api) in pumps.iter().enumerate() {
        let mut n = NodeStatus::new(format!("p{}", i + 1), &api.addr, NodeState::Online);
        n.max_commit_ts = (now - 1_000) << 18;
        n.update_ts = now << 18;
        env.put_node(NodeKind::Pump, &n);
    }
    let mut d = NodeStatus::new("d1", &drainer.addr, NodeState::Online);
    d.max_commit_ts = (now - 300_000) << 18;
    d.update_ts = now << 18;
    env.put_node(NodeKind::Drainer, &d);

    let run = env.ctl(&["-cmd", "status"]);
    let out = &run.ok().stdout;
    assert!(out.contains("its merge waits for pump p2: received up to ts"), "{out}");
    assert!(out.contains("299s behind pump p1") || out.contains("300s behind pump p1"), "{out}");
    let run = env.ctl(&["-cmd", "status", "-json"]);
    let v: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(v["drainers"][0]["pumpPos"]["p2"].as_i64().unwrap(), (now - 300_000) << 18);
}
