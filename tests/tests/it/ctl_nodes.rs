//! binlogctl against a real etcd: listing nodes, editing states (with the data-loss guard), and
//! pause/offline requests. Node JSON is written straight into etcd and a loopback stand-in answers the
//! nodes' HTTP API, until the real pump and drainer processes land.

use pump::node::{NodeKind, NodeState, NodeStatus};

use crate::ctl_util::{Env, FakeNode, dead_addr};

fn node(id: &str, host: &str, state: NodeState, commit_ts: i64) -> NodeStatus {
    let mut n = NodeStatus::new(id, host, state);
    n.max_commit_ts = commit_ts;
    // 2018-12-25 06:23:37 UTC, the seed guide's example time.
    n.update_ts = 1_545_719_017_000i64 << 18;
    n
}

#[test]
fn lists_nodes_in_upstream_shape_hides_offline_and_prints_json() {
    let env = Env::start();
    let p1 = node("p1", "127.0.0.1:8250", NodeState::Online, 403051525690884099);
    let p2 = node("p2", "127.0.0.1:8251", NodeState::Offline, 5);
    let d1 = node("d1", "127.0.0.1:8249", NodeState::Paused, 7);
    env.put_node(NodeKind::Pump, &p1);
    env.put_node(NodeKind::Pump, &p2);
    env.put_node(NodeKind::Drainer, &d1);

    let run = env.ctl(&["-cmd", "pumps", "-time-zone", "Asia/Shanghai"]);
    run.ok();
    assert_eq!(
        run.stdout,
        "pump: {NodeID: p1, Addr: 127.0.0.1:8250, State: online, MaxCommitTS: 403051525690884099, \
         UpdateTime: 2018-12-25 14:23:37 +0800 CST}\n"
    );
    // pumps is the default command; double-dash and Go bool spelling both work.
    let run = env.ctl(&["--show-offline-nodes", "--time-zone=UTC"]);
    run.ok();
    assert_eq!(run.stdout.lines().count(), 2, "{run:?}");
    assert!(run.stdout.contains("NodeID: p2, Addr: 127.0.0.1:8251, State: offline, MaxCommitTS: 5"), "{run:?}");

    let run = env.ctl(&["-cmd", "drainers", "-json"]);
    run.ok();
    let got: Vec<NodeStatus> = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(got, vec![d1]);
    let run = env.ctl(&["-cmd=pumps", "-json", "-show-offline-nodes=true"]);
    let got: Vec<NodeStatus> = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(got, vec![p1, p2]);

    // An empty kind says so on stderr and succeeds with no output.
    let empty = Env::start();
    let run = empty.ctl(&["-cmd", "drainers"]);
    run.ok();
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("no drainer registered"), "{run:?}");
}

#[test]
fn update_rewrites_only_the_state_and_refuses_data_loss_without_force() {
    let env = Env::start();
    let pump_alive = FakeNode::start(200);
    let p1 = node("p1", &dead_addr(), NodeState::Paused, 100);
    let p2 = node("p2", &pump_alive.addr, NodeState::Paused, 100);
    let d1 = node("d1", &dead_addr(), NodeState::Online, 90);
    env.put_node(NodeKind::Pump, &p1);
    env.put_node(NodeKind::Pump, &p2);
    env.put_node(NodeKind::Drainer, &d1);

    // Pump offline while d1 has not consumed up to p1's max commit ts: refused, etcd untouched.
    let run = env.ctl(&["-cmd", "update-pump", "-node-id", "p1", "-state", "offline"]);
    run.failed(1, "refusing to set pump p1 to offline");
    assert!(run.stdout.contains("DATA LOSS RISK: drainer d1 (online) has consumed up to ts 90"), "{run:?}");
    assert!(run.stdout.contains("what offline means"), "{run:?}");
    assert_eq!(env.node(NodeKind::Pump, "p1"), p1);
    // With -force it is applied, and only the state changes.
    env.ctl(&["-cmd", "update-pump", "-node-id", "p1", "-state", "offline", "-force"]).ok();
    let mut want = p1.clone();
    want.state = NodeState::Offline;
    assert_eq!(env.node(NodeKind::Pump, "p1"), want);

    // Paused is fine.
    let run = env.ctl(&["--cmd", "update-drainer", "--node-id", "d1", "--state", "paused"]);
    assert!(run.ok().stdout.contains("updated drainer d1 in etcd: state online -> paused"), "{run:?}");
    assert_eq!(env.node(NodeKind::Drainer, "d1").state, NodeState::Paused);

    // Online for a pump that does not answer: refused. For one that answers: applied with a note.
    env.ctl(&["-cmd", "update-pump", "-node-id", "p1", "-state", "online"]).failed(1, "refusing");
    let run = env.ctl(&["-cmd", "update-pump", "-node-id", "p2", "-state", "online"]);
    assert!(run.ok().stdout.contains("note: pump p2 is running"), "{run:?}");
    assert_eq!(env.node(NodeKind::Pump, "p2").state, NodeState::Online);
    assert!(pump_alive.requests().contains(&"GET /status".to_string()));

    // -json: one object scripts can parse, refusal included (exit 1, etcd untouched).
    // A running drainer behind p2 set offline by hand: refused (offline-drainer stops it cleanly).
    let drainer_alive = FakeNode::start(200);
    env.put_node(NodeKind::Drainer, &node("d2", &drainer_alive.addr, NodeState::Online, 90));
    let run = env.ctl(&["-cmd", "update-drainer", "-node-id", "d2", "-state", "offline", "-json"]);
    run.failed(1, "data-loss risk");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    assert_eq!((v["node_id"].as_str(), v["from"].as_str(), v["to"].as_str()), (Some("d2"), Some("online"), Some("offline")));
    assert_eq!(v["applied"], serde_json::json!(false));
    assert_eq!(v["findings"][0]["severity"], "data_loss_risk", "{v}");
    assert_eq!(env.node(NodeKind::Drainer, "d2").state, NodeState::Online);
    // A dead drainer set offline (upstream's runbook): applied, saying what it gives up.
    let run = env.ctl(&["-cmd", "update-drainer", "-node-id", "d1", "-state", "offline"]);
    assert!(run.ok().stdout.contains("consumed only up to ts 90"), "{run:?}");
    assert_eq!(env.node(NodeKind::Drainer, "d1").state, NodeState::Offline);

    // Same state: nothing to do.
    assert!(env.ctl(&["-cmd", "update-pump", "-node-id", "p2", "-state", "online"]).ok().stdout.contains("already online"));
}

#[test]
fn bad_node_ids_states_and_flags_fail_clearly() {
    let env = Env::start();
    env.put_node(NodeKind::Pump, &node("p1", "127.0.0.1:1", NodeState::Online, 1));
    env.put_node(NodeKind::Pump, &node("p2", "127.0.0.1:1", NodeState::Online, 1));

    let run = env.ctl(&["-cmd", "update-pump", "-node-id", "nope", "-state", "paused"]);
    run.failed(1, "pump \"nope\" not found in etcd");
    assert!(run.stderr.contains("registered pumps: p1, p2"), "{run:?}");
    env.ctl(&["-cmd", "pause-drainer", "-node-id", "p1"]).failed(1, "registered drainers: none");
    env.ctl(&["-cmd", "offline-pump"]).failed(1, "-node-id is required");
    env.ctl(&["-cmd", "update-pump", "-node-id", "p1"]).failed(1, "-state is required");
    env.ctl(&["-cmd", "update-pump", "-node-id", "p1", "-state", "gone"]).failed(1, "unknown node state \"gone\"");
    env.ctl(&["-cmd", "pumpz"]).failed(2, "invalid value 'pumpz'");
    env.ctl(&["-bogus-flag"]).failed(2, "-bogus-flag");
    env.ctl(&["-show-offline-nodes=maybe"]).failed(2, "maybe");
    crate::ctl_util::ctl(&["-pd-urls", "http://127.0.0.1"], &[]).failed(1, "missing :port");
    crate::ctl_util::ctl(&["-pd-urls", &format!("http://{}", dead_addr())], &[]).failed(1, "etcd list");
    env.ctl(&["-ssl-cert", "/x.pem"]).failed(1, "need -ssl-ca");
    env.ctl(&["-ssl-ca", "/nonexistent/ca.pem"]).failed(1, "/nonexistent/ca.pem");
    env.ctl(&["-time-zone", "Mars/Base"]).failed(1, "Mars/Base");
    // Nothing was changed by any of that.
    assert_eq!(env.node(NodeKind::Pump, "p1").state, NodeState::Online);
}

#[test]
fn pause_and_offline_put_to_the_nodes_state_api() {
    let env = Env::start();
    let pump_api = FakeNode::start(200);
    let drainer_api = FakeNode::start(200);
    let refusing = FakeNode::start(3);
    env.put_node(NodeKind::Pump, &node("p1", &pump_api.addr, NodeState::Online, 1));
    env.put_node(NodeKind::Pump, &node("p-refuses", &refusing.addr, NodeState::Paused, 1));
    env.put_node(NodeKind::Pump, &node("p-dead", &dead_addr(), NodeState::Online, 1));
    env.put_node(NodeKind::Drainer, &node("d1", &drainer_api.addr, NodeState::Online, 1));
    env.put_node(NodeKind::Drainer, &node("d2", &dead_addr(), NodeState::Paused, 1));

    let run = env.ctl(&["-cmd", "pause-pump", "-node-id", "p1"]);
    assert!(run.ok().stdout.contains("pump p1: apply action pause success!"), "{run:?}");
    let run = env.ctl(&["-cmd", "offline-pump", "-node-id", "p1", "-json"]);
    let v: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    assert_eq!((v["node_id"].as_str(), v["action"].as_str()), (Some("p1"), Some("close")), "{v}");
    assert_eq!(v["message"], "apply action close success!", "{v}");
    assert_eq!(pump_api.requests(), ["PUT /state/p1/pause", "PUT /state/p1/close"]);

    let run = env.ctl(&["-cmd", "offline-drainer", "-node-id", "d1"]);
    assert!(run.ok().stdout.contains("drainer d1: apply action close success!"), "{run:?}");
    env.ctl(&["--cmd=pause-drainer", "--node-id=d1"]).ok();
    assert_eq!(drainer_api.requests(), ["PUT /state/d1/close", "PUT /state/d1/pause"]);

    // The node's refusal (code 3) is an error with its message.
    env.ctl(&["-cmd", "pause-pump", "-node-id", "p-refuses"]).failed(1, "pump p-refuses refused pause: node is not online (code 3)");
    // A node that does not answer: error that suggests the etcd edit.
    let run = env.ctl(&["-cmd", "offline-pump", "-node-id", "p-dead"]);
    run.failed(1, "does not answer");
    assert!(run.stderr.contains("-cmd update-pump -state offline"), "{run:?}");
    // offline-pump notes drainers that will keep the pump closing.
    assert!(run.stdout.contains("drainer d2 is paused"), "{run:?}");
    // binlogctl itself never edits etcd for pause/offline.
    assert_eq!(env.node(NodeKind::Pump, "p1").state, NodeState::Online);
}

#[test]
fn offline_with_wait_follows_the_node_to_its_final_state() {
    let env = Env::start();
    let api = FakeNode::start(200);
    let mut p1 = node("p1", &api.addr, NodeState::Online, 100);
    env.put_node(NodeKind::Pump, &p1);
    env.put_node(NodeKind::Drainer, &node("d1", &dead_addr(), NodeState::Online, 90));

    let url = env.url();
    let child = std::process::Command::new(tests::our_binary("binlogctl"))
        .args(["-pd-urls", &url, "-cmd", "offline-pump", "-node-id", "p1", "-wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Play the pump: once asked, go closing, then offline.
    tests::wait_until("the close request", std::time::Duration::from_secs(20), || !api.requests().is_empty()).unwrap();
    p1.state = NodeState::Closing;
    env.put_node(NodeKind::Pump, &p1);
    p1.state = NodeState::Offline;
    env.put_node(NodeKind::Pump, &p1);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.trim_end().ends_with("pump p1: offline"), "{stdout}");

    // A node that never reaches the state: the wait times out with an error naming where it is.
    env.put_node(NodeKind::Drainer, &node("d2", &api.addr, NodeState::Online, 1));
    env.ctl(&["-cmd", "pause-drainer", "-node-id", "d2", "-wait", "-wait-timeout", "1s"])
        .failed(1, "timed out after 1s waiting for drainer d2 to become paused; it is online");
}
