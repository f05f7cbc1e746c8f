//! binlogctl against a live cluster: real etcd, real `pump` and `drainer` processes (drainer with the
//! file sink, which needs no downstream; the pumps only carry their fake binlogs, so no schema source is
//! needed). Every command's output is checked against etcd and the processes themselves.

use std::path::Path;
use std::time::Duration;

use pump::node::{NodeKind, NodeState, NodeStatus};
use tests::nodes::Node;
use tests::wait_until;

use crate::ctl_util::{Env, Run};
use crate::pump_util::http;

/// Starts a pump with 1 s heartbeats and fake binlogs, so its maxCommitTS moves every second.
fn pump(env: &Env, id: &str) -> Node {
    let dir = env.cluster.dir().join(id);
    std::fs::create_dir_all(&dir).unwrap();
    // Tests must not depend on the machine's free disk: stop writing only below 1 MiB.
    let cfg = dir.join("pump.toml");
    std::fs::write(&cfg, "[storage]\nstop-write-at-available-space = \"1 MiB\"\n").unwrap();
    let extra = [format!("-config={}", cfg.display()), "-heartbeat-interval=1".into(), "-fake-binlog-interval=1".into()];
    Node::pump(&dir, &env.url(), id, &extra).unwrap()
}

/// Starts a drainer with the file sink (`<dir>/data` is both its data dir and the sink's).
fn drainer(env: &Env, id: &str) -> Node {
    let dir = env.cluster.dir().join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("drainer.toml");
    std::fs::write(&cfg, "detect-interval = 1\n[syncer]\ndb-type = \"file\"\n").unwrap();
    Node::drainer(&dir, &env.url(), id, &[format!("-config={}", cfg.display())]).unwrap()
}

/// The drainer's checkpoint from its own API (`GET /commit_ts`).
fn commit_ts(d: &Node) -> i64 {
    let (code, body) = http("GET", &d.addr(), "/commit_ts").expect("drainer answers /commit_ts");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["ts"].as_i64().unwrap_or_else(|| panic!("no data.ts: {body}"))
}

/// The drainer's `/status` JSON.
fn drainer_status(d: &Node) -> serde_json::Value {
    let (code, body) = http("GET", &d.addr(), "/status").expect("drainer answers /status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until the node's process has exited by itself (binlogctl asked it to stop).
fn wait_exit(n: &mut Node) {
    // Signal 0 delivers nothing: this only waits.
    assert!(n.signal_and_wait(0, Duration::from_secs(20)), "{} {} did not exit\n{}", n.kind.name(), n.node_id, log(n));
}

fn log(n: &Node) -> String {
    std::fs::read_to_string(n.log()).unwrap_or_default()
}

/// Waits until `f` holds, with the log of `n` on failure.
fn wait_for(what: &str, n: &Node, f: impl FnMut() -> bool) {
    if let Err(e) = wait_until(what, Duration::from_secs(20), f) {
        panic!("{e}\n{}", log(n));
    }
}

/// The node's `maxCommitTS` in etcd.
fn etcd_ts(env: &Env, kind: NodeKind, id: &str) -> i64 {
    env.node(kind, id).max_commit_ts
}

/// Waits until a live drainer's checkpoint has moved past `after`.
fn wait_advance(env: &Env, d: &Node, after: i64) -> i64 {
    let mut now = 0;
    wait_for(&format!("drainer {} to advance past {after}", d.node_id), d, || {
        now = etcd_ts(env, NodeKind::Drainer, &d.node_id);
        now > after
    });
    now
}

fn savepoint_ts(dir: &Path) -> i64 {
    let text = std::fs::read_to_string(dir.join("savepoint")).unwrap();
    let line = text.lines().find(|l| l.starts_with("commitTS")).unwrap_or_else(|| panic!("{text}"));
    line.split('=').nth(1).unwrap().trim().parse().unwrap()
}

fn json_nodes(run: &Run) -> Vec<NodeStatus> {
    serde_json::from_str(&run.ok().stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// One `pump: {NodeID: .., Addr: .., State: .., MaxCommitTS: .., UpdateTime: ..}` line as key → value.
fn parse_line(kind: &str, line: &str) -> std::collections::HashMap<String, String> {
    let inner = line
        .strip_prefix(&format!("{kind}: {{"))
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a {kind} line: {line:?}"));
    inner
        .split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once(": ").unwrap_or_else(|| panic!("{kv:?} in {line:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Runs `-cmd <kind>s` (text, then JSON) and checks every live node against etcd read just before and
/// just after: same id, address and state, and a maxCommitTS in between (it only grows).
fn check_listing(env: &Env, kind: NodeKind, nodes: &[&Node]) {
    let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
    let read = || ids.iter().map(|id| etcd_ts(env, kind, id)).collect::<Vec<_>>();
    let before = read();
    let text = env.ctl(&["-cmd", &format!("{}s", kind.name()), "-time-zone", "UTC"]);
    let json = env.ctl(&["-cmd", &format!("{}s", kind.name()), "-json"]);
    let after = read();
    let lines: Vec<_> = text.ok().stdout.lines().map(|l| parse_line(kind.name(), l)).collect();
    let listed = json_nodes(&json);
    assert_eq!(lines.len(), nodes.len(), "{text:?}");
    assert_eq!(listed.len(), nodes.len(), "{json:?}");
    for (i, n) in nodes.iter().enumerate() {
        let l = lines.iter().find(|l| l["NodeID"] == n.node_id).unwrap_or_else(|| panic!("{} missing: {text:?}", n.node_id));
        assert_eq!((l["Addr"].as_str(), l["State"].as_str()), (n.addr().as_str(), "online"), "{text:?}");
        let ts: i64 = l["MaxCommitTS"].parse().unwrap();
        assert!(before[i] <= ts && ts <= after[i] && ts > 0, "{} {ts} not in [{}, {}]", n.node_id, before[i], after[i]);
        assert!(l["UpdateTime"].ends_with("+0000 UTC"), "{text:?}");
        let j = listed.iter().find(|j| j.node_id == n.node_id).unwrap_or_else(|| panic!("{} missing: {json:?}", n.node_id));
        assert_eq!((j.host.as_str(), j.state), (n.addr().as_str(), NodeState::Online));
        assert!(before[i] <= j.max_commit_ts && j.max_commit_ts <= after[i], "{j:?} not in [{}, {}]", before[i], after[i]);
        assert!(pump::tso::physical_ms(j.update_ts as u64) + 5_000 >= pump::tso::now_ms(), "fresh heartbeat: {j:?}");
    }
}

#[test]
fn pumps_and_drainers_list_the_live_processes() {
    let env = Env::start();
    let p1 = pump(&env, "p1");
    let p2 = pump(&env, "p2");
    let d = drainer(&env, "d1");
    let start = etcd_ts(&env, NodeKind::Drainer, "d1");
    wait_advance(&env, &d, start);
    check_listing(&env, NodeKind::Pump, &[&p1, &p2]);
    check_listing(&env, NodeKind::Drainer, &[&d]);
    // What etcd shows for the drainer is a checkpoint it has reached (its own API may be further on).
    let listed = json_nodes(&env.ctl(&["-cmd", "drainers", "-json"]));
    assert!(listed[0].max_commit_ts <= commit_ts(&d), "{listed:?}");
}

#[test]
fn pause_and_offline_drainer_stop_the_process_with_its_final_checkpoint() {
    let env = Env::start();
    let _p = pump(&env, "p1");
    let mut d = drainer(&env, "d1");
    let data = d.dir.join("data");
    let start = etcd_ts(&env, NodeKind::Drainer, "d1");
    wait_advance(&env, &d, start);

    // Bad ids and flags against the live cluster: clear errors, non-zero exits, nothing touched.
    let run = env.ctl(&["-cmd", "pause-drainer", "-node-id", "nope"]);
    run.failed(1, "drainer \"nope\" not found in etcd");
    assert!(run.stderr.contains("registered drainers: d1"), "{run:?}");
    env.ctl(&["-cmd", "offline-pump", "-node-id", "d1"]).failed(1, "registered pumps: p1");
    env.ctl(&["-cmd", "offline-drainer"]).failed(1, "-node-id is required");
    env.ctl(&["-cmd", "offline-drainer", "-nodeid", "d1"]).failed(2, "flag provided but not defined: -nodeid");
    env.ctl(&["-cmd", "offline-drainers", "-node-id", "d1"]).failed(2, "invalid value 'offline-drainers'");
    assert!(d.is_running());
    assert_eq!(env.node(NodeKind::Drainer, "d1").state, NodeState::Online);

    // pause-drainer: the process exits, paused, with the checkpoint it saved.
    let run = env.ctl(&["-cmd", "pause-drainer", "-node-id", "d1"]);
    assert!(run.ok().stdout.contains("drainer d1: apply action pause success!"), "{run:?}");
    wait_exit(&mut d);
    let paused = env.node(NodeKind::Drainer, "d1");
    assert_eq!(paused.state, NodeState::Paused, "{paused:?}");
    assert_eq!(paused.max_commit_ts, savepoint_ts(&data), "etcd shows the saved checkpoint");
    assert!(paused.max_commit_ts > start);
    // Nothing answers now: a second request fails and says how to fix the state by hand.
    let run = env.ctl(&["-cmd", "pause-drainer", "-node-id", "d1"]);
    run.failed(1, "does not answer");
    assert!(run.stderr.contains("-cmd update-drainer -state paused"), "{run:?}");
    let l = parse_line("drainer", env.ctl(&["-cmd", "drainers"]).ok().stdout.trim());
    assert_eq!((l["State"].as_str(), l["MaxCommitTS"].clone()), ("paused", paused.max_commit_ts.to_string()));

    // Restarted, it resumes from that checkpoint and moves on.
    d.restart().unwrap();
    assert!(commit_ts(&d) >= paused.max_commit_ts);
    wait_advance(&env, &d, paused.max_commit_ts);

    // offline-drainer -wait: follows the node to offline; the process exits; the checkpoint is final.
    let run = env.ctl(&["--cmd=offline-drainer", "--node-id=d1", "--wait", "--wait-timeout=20s"]);
    let out = &run.ok().stdout;
    assert!(out.contains("drainer d1: apply action close success!"), "{run:?}");
    assert!(out.trim_end().ends_with("drainer d1: offline"), "{run:?}");
    wait_exit(&mut d);
    let offline = env.node(NodeKind::Drainer, "d1");
    assert_eq!(offline.state, NodeState::Offline);
    assert_eq!(offline.max_commit_ts, savepoint_ts(&data));
    assert!(offline.max_commit_ts > paused.max_commit_ts);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(env.node(NodeKind::Drainer, "d1"), offline, "nothing rewrites an offline drainer");
    // Listed only with -show-offline-nodes.
    let run = env.ctl(&["-cmd", "drainers"]);
    assert_eq!(run.ok().stdout, "", "{run:?}");
    assert!(run.stderr.contains("offline nodes hidden"), "{run:?}");
    let l = parse_line("drainer", env.ctl(&["-cmd", "drainers", "-show-offline-nodes"]).ok().stdout.trim());
    assert_eq!((l["State"].as_str(), l["MaxCommitTS"].clone()), ("offline", offline.max_commit_ts.to_string()));
}

#[test]
fn update_refuses_data_loss_between_live_nodes_and_a_dead_drainer_goes_offline_saying_what_it_gives_up() {
    let env = Env::start();
    let mut p = pump(&env, "p1");
    let mut d = drainer(&env, "d1");
    let start = etcd_ts(&env, NodeKind::Drainer, "d1");
    wait_advance(&env, &d, start);

    // A running drainer: the edit is applied with a note that its heartbeat undoes it, which it does.
    let run = env.ctl(&["-cmd", "update-drainer", "-node-id", "d1", "-state", "paused"]);
    let out = &run.ok().stdout;
    assert!(out.contains("note: drainer d1 is running"), "{run:?}");
    assert!(out.contains("updated drainer d1 in etcd: state online -> paused"), "{run:?}");
    wait_for("the drainer's heartbeat to rewrite online", &d, || env.node(NodeKind::Drainer, "d1").state == NodeState::Online);

    // Stop the drainer, let the pump move on, stop the pump: the pump holds binlogs the drainer lacks.
    env.ctl(&["-cmd", "pause-drainer", "-node-id", "d1"]).ok();
    wait_exit(&mut d);
    let drainer_at = env.node(NodeKind::Drainer, "d1");
    wait_for("the pump to move past the drainer", &p, || etcd_ts(&env, NodeKind::Pump, "p1") > drainer_at.max_commit_ts);
    env.ctl(&["-cmd", "pause-pump", "-node-id", "p1"]).ok();
    wait_exit(&mut p);
    let pump_at = env.node(NodeKind::Pump, "p1");
    assert_eq!(pump_at.state, NodeState::Paused);
    let (c, m) = (drainer_at.max_commit_ts, pump_at.max_commit_ts);

    let run = env.ctl(&["-cmd", "update-pump", "-node-id", "p1", "-state", "offline"]);
    run.failed(1, "refusing to set pump p1 to offline");
    let want = format!("DATA LOSS RISK: drainer d1 (paused) has consumed up to ts {c} but pump p1 holds binlogs up to ts {m}");
    assert!(run.stdout.contains(&want), "{run:?}");
    let run = env.ctl(&["-cmd", "update-pump", "-node-id", "p1", "-state", "online"]);
    run.failed(1, "refusing to set pump p1 to online");
    assert!(run.stdout.contains(&format!("pump p1 does not answer at {}", p.addr())), "{run:?}");
    assert_eq!(env.node(NodeKind::Drainer, "d1"), drainer_at, "refused edits change nothing");
    assert_eq!(env.node(NodeKind::Pump, "p1"), pump_at, "refused edits change nothing");

    // The dead drainer set offline (upstream's runbook): applied, saying what it gives up, and only the
    // state changes; then the pump has no drainer to wait for.
    let run = env.ctl(&["--cmd", "update-drainer", "--node-id", "d1", "--state", "offline"]);
    let want = format!("note: pump p1 (paused) holds binlogs up to ts {m} but drainer d1 has consumed only up to ts {c}");
    assert!(run.ok().stdout.contains(&want), "{run:?}");
    assert_eq!(env.node(NodeKind::Drainer, "d1"), NodeStatus { state: NodeState::Offline, ..drainer_at });
    let run = env.ctl(&["-cmd", "update-pump", "-node-id", "p1", "-state", "offline"]);
    assert!(!run.ok().stdout.contains("DATA LOSS"), "{run:?}");
    assert_eq!(env.node(NodeKind::Pump, "p1"), NodeStatus { state: NodeState::Offline, ..pump_at });
}

#[test]
fn status_reports_the_live_cluster_as_it_is() {
    let env = Env::start();
    let _p1 = pump(&env, "p1");
    let mut p2 = pump(&env, "p2");
    let mut d = drainer(&env, "d1");
    let start = etcd_ts(&env, NodeKind::Drainer, "d1");
    let t = wait_advance(&env, &d, start);
    wait_advance(&env, &d, t);
    let status = || {
        let run = env.ctl(&["-cmd", "status", "-json"]);
        serde_json::from_str::<serde_json::Value>(&run.ok().stdout).unwrap()
    };
    let problems = |v: &serde_json::Value| v["drainers"][0]["problems"].as_array().unwrap().clone();

    // Healthy: every node answers, small lags, the drainer is the GC holder and nothing blocks it.
    let v = status();
    for p in v["pumps"].as_array().unwrap() {
        assert_eq!((p["state"].as_str(), p["answers"].as_bool()), (Some("online"), Some(true)), "{v:#}");
        assert!(p["lagSeconds"].as_i64().unwrap() <= 3 && p["heartbeatAgeSeconds"].as_i64().unwrap() <= 3, "{v:#}");
    }
    let dv = &v["drainers"][0];
    assert_eq!((dv["answers"].as_bool(), problems(&v).len()), (Some(true), 0), "{v:#}");
    assert!(dv["lagSeconds"].as_i64().unwrap() <= 8, "{v:#}");
    let pos = dv["pumpPos"].as_object().unwrap();
    assert!(pos.contains_key("p1") && pos.contains_key("p2"), "{v:#}");
    assert_eq!(v["gcHeldBy"]["nodeId"], "d1");
    assert_eq!(v["gcHeldBy"]["commitTS"], dv["maxCommitTS"]);
    let text = env.ctl(&["-cmd", "status"]).ok().stdout.clone();
    assert!(text.contains("drainer d1: advancing, nothing blocks it"), "{text}");
    assert!(text.contains("pump GC: held back by drainer d1 (online)"), "{text}");

    // A pump paused after the drainer received its binlogs: the drainer goes on without it, and status
    // does not blame it.
    env.ctl(&["-cmd", "pause-pump", "-node-id", "p2"]).ok();
    wait_exit(&mut p2);
    let m2 = etcd_ts(&env, NodeKind::Pump, "p2");
    wait_advance(&env, &d, m2);
    let v = status();
    assert_eq!((v["pumps"][1]["state"].as_str(), v["pumps"][1]["answers"].as_bool()), (Some("paused"), Some(false)));
    assert_eq!(v["pumps"][1]["cleanPause"], serde_json::json!(true), "an idle pump pauses cleanly: {v:#}");
    assert!(problems(&v).is_empty(), "{v:#}");

    // The drainer paused: status says so, and it holds back GC.
    env.ctl(&["-cmd", "pause-drainer", "-node-id", "d1"]).ok();
    wait_exit(&mut d);
    let c = etcd_ts(&env, NodeKind::Drainer, "d1");
    let v = status();
    let why = problems(&v);
    assert!(why[0].as_str().unwrap().starts_with("drainer is paused"), "{v:#}");
    assert!(why[1].as_str().unwrap().starts_with("drainer does not answer"), "{v:#}");
    assert_eq!((v["gcHeldBy"]["nodeId"].as_str(), v["gcHeldBy"]["state"].as_str()), (Some("d1"), Some("paused")));
    assert_eq!(v["gcHeldBy"]["commitTS"].as_i64(), Some(c));

    // p2 runs again and pauses while the drainer is down: it now holds binlogs the drainer never got.
    p2.restart().unwrap();
    wait_for("p2 to move past the drainer", &p2, || etcd_ts(&env, NodeKind::Pump, "p2") > c);
    env.ctl(&["-cmd", "pause-pump", "-node-id", "p2"]).ok();
    wait_exit(&mut p2);
    let m2 = etcd_ts(&env, NodeKind::Pump, "p2");
    // The restarted drainer really stalls below p2's binlogs, and status names p2 as the reason.
    d.restart().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let stalled = commit_ts(&d);
    assert!(stalled < m2, "the drainer cannot pass a paused pump's binlogs it has not received\n{}", log(&d));
    let v = status();
    let why = problems(&v);
    assert_eq!(why.len(), 1, "{v:#}");
    let why = why[0].as_str().unwrap();
    assert!(why.starts_with(&format!("waits for pump p2, which is paused: it holds binlogs up to ts {m2}")), "{why}");
    assert_eq!(commit_ts(&d), stalled, "still stalled");
    let text = env.ctl(&["-cmd", "status"]).ok().stdout.clone();
    assert!(text.contains("drainer d1: not advancing because\n  - waits for pump p2, which is paused"), "{text}");

    // Start p2 as status says: the drainer gets the rest and passes it.
    p2.restart().unwrap();
    wait_advance(&env, &d, m2);
    assert!(problems(&status()).is_empty());
}

#[test]
fn generate_meta_savepoint_is_where_a_started_drainer_begins() {
    let env = Env::start();
    let data = env.cluster.dir().join("d1").join("data");
    let run = env.ctl(&["-cmd", "generate_meta", "-data-dir", data.to_str().unwrap()]);
    let ts = savepoint_ts(&data);
    assert!(run.ok().stdout.contains(&format!("meta: {{CommitTS: {ts}}}")), "{run:?}");
    // With no pump nothing moves it: the drainer sits exactly at the savepoint (a drainer without it
    // would start at a fresh TSO, above it).
    let d = drainer(&env, "d1");
    assert_eq!(commit_ts(&d), ts);
    assert_eq!(etcd_ts(&env, NodeKind::Drainer, "d1"), ts);
    assert_eq!(drainer_status(&d)["LastTS"].as_i64(), Some(ts));
    // A pump comes up: the drainer pulls from the savepoint on and advances.
    let _p = pump(&env, "p1");
    wait_advance(&env, &d, ts);
}

#[test]
fn offline_pump_waits_for_the_real_drainer_then_goes_offline() {
    let env = Env::start();
    let mut p = pump(&env, "p1");
    let mut d = drainer(&env, "d1");
    let start = etcd_ts(&env, NodeKind::Drainer, "d1");
    wait_advance(&env, &d, start);

    // With the drainer paused the pump cannot go offline: it stays closing, running, and both binlogctl
    // and status say what it waits for.
    env.ctl(&["-cmd", "pause-drainer", "-node-id", "d1"]).ok();
    wait_exit(&mut d);
    let run = env.ctl(&["-cmd", "offline-pump", "-node-id", "p1"]);
    assert!(run.ok().stdout.contains("note: drainer d1 is paused: pump p1 stays closing"), "{run:?}");
    wait_for("the pump to be closing", &p, || env.node(NodeKind::Pump, "p1").state == NodeState::Closing);
    std::thread::sleep(Duration::from_secs(2));
    assert!(p.is_running(), "a closing pump waits for the paused drainer\n{}", log(&p));
    let closing = env.node(NodeKind::Pump, "p1");
    assert_eq!(closing.state, NodeState::Closing);
    let run = env.ctl(&["-cmd", "status", "-json"]);
    let v: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap();
    let why = v["pumps"][0]["problems"][0].as_str().unwrap_or_default().to_owned();
    assert!(why.starts_with("closing: waits for drainer d1 (paused)"), "{v:#}");
    // A closing pump that answers still serves its binlogs: it is not why the drainer stands still.
    let dwhy = v["drainers"][0]["problems"].as_array().unwrap();
    assert!(dwhy.iter().all(|w| !w.as_str().unwrap().contains("pump p1")), "{v:#}");

    // The drainer runs again: it consumes the pump's binlogs, and the pump goes offline and exits.
    d.restart().unwrap();
    wait_exit(&mut p);
    let offline = env.node(NodeKind::Pump, "p1");
    assert_eq!(offline.state, NodeState::Offline, "{offline:?}");
    assert!(etcd_ts(&env, NodeKind::Drainer, "d1") >= closing.max_commit_ts, "the drainer consumed what the pump held");
    // Nothing is left to pull, and status says so; the offline pump is listed only on request.
    let run = env.ctl(&["-cmd", "status", "-json"]);
    let v: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(v["pumps"][0]["answers"], serde_json::Value::Null, "offline nodes are not probed");
    assert_eq!(v["drainers"][0]["problems"][0], "no pump is online: there is nothing to pull");
    assert_eq!(env.ctl(&["-cmd", "pumps"]).ok().stdout, "");
    let l = parse_line("pump", env.ctl(&["-cmd", "pumps", "-show-offline-nodes"]).ok().stdout.trim());
    assert_eq!((l["NodeID"].as_str(), l["State"].as_str()), ("p1", "offline"));
}
