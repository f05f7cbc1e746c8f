//! The real `pump` binary against a real etcd: writes and pulls over gRPC, fake binlogs, the cluster-id
//! check, the probe, bad payloads, the HTTP API, and registration JSON.

use std::time::Duration;

use pump::node::{NodeKind, NodeState};
use pump::proto::BinlogType;
use tests::Cluster;

use crate::pump_util::{cluster_id, commit, http, node, prewrite, pull_until, start_pump, tso, write};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn written_transactions_are_pulled_back_joined_and_in_order() {
    let cluster = Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    let pump = start_pump(&url, &cluster.dir().join("pump"), &[]);
    rt().block_on(async {
        let cid = cluster_id(&url).await;
        let tso = tso(&url).await;
        let mut c = pump.client().await;
        // Two interleaved transactions: P1, P2, C2, C1.
        let s1 = tso.get_ts().await.unwrap() as i64;
        let s2 = tso.get_ts().await.unwrap() as i64;
        write(&mut c, cid, prewrite(s1, b"rows-1")).await.unwrap();
        write(&mut c, cid, prewrite(s2, b"rows-2")).await.unwrap();
        let c2 = tso.get_ts().await.unwrap() as i64;
        write(&mut c, cid, commit(s2, c2)).await.unwrap();
        let c1 = tso.get_ts().await.unwrap() as i64;
        write(&mut c, cid, commit(s1, c1)).await.unwrap();

        let got = pull_until(&mut c, cid, 0, |g| g.iter().any(|b| b.commit_ts() == c1)).await;
        let ts: Vec<i64> = got.iter().map(|b| b.commit_ts()).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {ts:?}");
        let real: Vec<_> = got.iter().filter(|b| b.start_ts() != b.commit_ts()).collect();
        assert_eq!(real.len(), 2, "{got:?}");
        assert_eq!((real[0].start_ts(), real[0].commit_ts(), real[0].prewrite_value()), (s2, c2, &b"rows-2"[..]));
        assert_eq!((real[1].start_ts(), real[1].commit_ts(), real[1].prewrite_value()), (s1, c1, &b"rows-1"[..]));
        assert!(real.iter().all(|b| b.tp() == BinlogType::Commit && b.prewrite_key() == b"t\x80pk"));
        // Every other entity is a fake binlog.
        assert!(got.iter().filter(|b| b.start_ts() == b.commit_ts()).all(|b| b.tp() == BinlogType::Rollback));

        // startFrom.offset is the last commit ts already received: from c2 only C1 (and later) come.
        let again = pull_until(&mut c, cid, c2, |g| g.iter().any(|b| b.commit_ts() == c1)).await;
        assert!(again.iter().all(|b| b.commit_ts() > c2), "{again:?}");
        assert_eq!(again.iter().filter(|b| b.start_ts() != b.commit_ts()).count(), 1);
    });
}

#[test]
fn idle_pump_writes_fake_binlogs_and_heartbeats_its_watermark() {
    let cluster = Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    let pump = start_pump(&url, &cluster.dir().join("pump"), &[]);
    rt().block_on(async {
        let first = node(&url, NodeKind::Pump, &pump.node_id).await.unwrap();
        assert_eq!(first.host, pump.addr);
        assert_eq!(first.state, NodeState::Online);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let later = node(&url, NodeKind::Pump, &pump.node_id).await.unwrap();
        assert!(later.max_commit_ts > first.max_commit_ts, "{first:?} then {later:?}");
        assert!(later.update_ts > first.update_ts, "{first:?} then {later:?}");
        // updateTS is a TSO near now.
        let now_ms = pump::tso::now_ms();
        let ms = pump::tso::physical_ms(later.update_ts as u64);
        assert!(ms.abs_diff(now_ms) < 10_000, "updateTS {ms} vs now {now_ms}");

        let cid = cluster_id(&url).await;
        let mut c = pump.client().await;
        let fakes = pull_until(&mut c, cid, 0, |g| g.len() >= 2).await;
        for f in &fakes {
            assert_eq!(f.tp(), BinlogType::Rollback);
            assert_eq!(f.start_ts(), f.commit_ts());
            assert!(f.commit_ts() > 0);
        }
    });
}

#[test]
fn cluster_id_probe_and_bad_payloads() {
    let cluster = Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    let mut pump = start_pump(&url, &cluster.dir().join("pump"), &[]);
    rt().block_on(async {
        let cid = cluster_id(&url).await;
        let mut c = pump.client().await;
        let err = write(&mut c, cid ^ 1, prewrite(10, b"x")).await.unwrap_err();
        assert!(err.contains("cluster ID are mismatch"), "{err}");
        // The empty payload is the health probe.
        write(&mut c, cid, Vec::new()).await.unwrap();
        let err = write(&mut c, cid, vec![0xff, 0xff, 0xff]).await.unwrap_err();
        assert!(err.contains("unmarshal binlog"), "{err}");
        // A pull with the wrong cluster id is refused too.
        let req = pump::proto::PullBinlogReq { cluster_id: cid ^ 1, start_from: None };
        let err = c.pull_binlogs(req).await.unwrap_err();
        assert!(err.message().contains("cluster ID are mismatch"), "{err:?}");
    });
    assert!(pump.proc.is_running(), "bad input must not kill the pump\n{}", pump.proc.log_tail());
}

#[test]
fn http_api_answers_with_upstream_shapes() {
    let cluster = Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    let pump = start_pump(&url, &cluster.dir().join("pump"), &[]);

    let (code, body) = http("GET", &pump.addr, "/status").unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let me = &v["status"][&pump.node_id];
    assert_eq!(me["nodeId"], pump.node_id.as_str());
    assert_eq!(me["host"], pump.addr.as_str());
    assert_eq!(me["state"], "online");
    assert!(v["CommitTS"].as_i64().unwrap() > 0, "{v}");
    assert_eq!(v["Checkpoint"], serde_json::json!({}));
    assert_eq!(v["ErrMsg"], "");

    assert_eq!(http("GET", &pump.addr, "/drainers").unwrap(), (200, "[]".to_string()));

    let (code, text) = http("GET", &pump.addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    for name in ["binlog_pump_storage_max_commit_ts", "binlog_pump_storage_storage_size_bytes{type=\"available\"}"] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }

    let (code, text) = http("POST", &pump.addr, "/debug/gc/trigger").unwrap();
    assert_eq!(code, 200);
    assert!(text == "trigger gc success\n" || text == "gc is working\n", "{text:?}");

    // Refusals of the state API: code 3, HTTP 200, the pump keeps running.
    let (code, text) = http("PUT", &pump.addr, "/state/someone-else/pause").unwrap();
    assert_eq!(code, 200);
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["code"], 3, "{r}");
    let (_, text) = http("PUT", &pump.addr, &format!("/state/{}/explode", pump.node_id)).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["code"], 3, "{r}");
    assert!(r["data"].is_null());

    let (code, text) = http("GET", &pump.addr, "/debug/binlog/notanumber").unwrap();
    assert_eq!(code, 400, "{text}");
}
