//! Pump GC end to end with the real binary: `POST /debug/gc/trigger` deletes sealed segments older than
//! `gc` (less upstream's 10-minute margin), by time as upstream (a drainer behind is named, counted in
//! `binlog_pump_drainer_behind_gc_count` and misses them), or with `gc-waits-for-drainers` never what a
//! non-offline drainer has not consumed yet; a pull from before the GC ts starts at it.
//!
//! The old data is written beforehand into the pump's store directory with the `pump-store` library (as
//! an earlier run of the pump would have left it, but two hours in the past and in small segments), then
//! the pump is started on it.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use pump::node::{NodeKind, NodeState, NodeStatus, Registry};
use pump_store::{Kind, Record, Store, StoreConfig};
use tests::{Cluster, wait_until};

use crate::pump_util::{cluster_id, commit, http, prewrite, pull_until, start_pump};

/// Every `*.seg` file under `dir`, recursively (one directory per shard).
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(segments(&p));
        } else if p.extension().is_some_and(|x| x == "seg") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The value of metric `name` (a plain gauge) in the pump's `/metrics`.
fn metric(addr: &str, name: &str) -> Option<f64> {
    let (_, text) = http("GET", addr, "/metrics")?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn with_gc_waits_for_drainers_gc_deletes_old_segments_but_never_what_a_drainer_still_needs() {
    gc_with_a_lagging_drainer(true);
}

#[test]
fn by_default_gc_goes_by_time_and_names_the_drainer_behind_it() {
    gc_with_a_lagging_drainer(false);
}

fn gc_with_a_lagging_drainer(waits: bool) {
    let cluster = Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    let data_dir = cluster.dir().join("pump");
    let store_dir = data_dir.join(pump::server::STORE_DIR);

    // 200 transactions of 2 KiB, two hours old, in 64 KiB segments: many sealed segments.
    let old_ms = pump::tso::now_ms() - 2 * 3600 * 1000;
    let ts = |i: i64| pump::tso::compose(old_ms, 0) as i64 + i * 10;
    let (first_commit, last_commit) = (ts(0) + 1, ts(199) + 1);
    {
        let cfg = StoreConfig { dir: store_dir.clone(), segment_size: 64 << 10, shards: 1, ..StoreConfig::default() };
        let store = Store::open(cfg).unwrap();
        for i in 0..200 {
            let (start, commit_ts) = (ts(i), ts(i) + 1);
            let p = Record { kind: Kind::Prewrite, start_ts: start, commit_ts: 0, payload: Bytes::from(prewrite(start, &[7u8; 2048])) };
            store.append_blocking(p).unwrap();
            let c = Record { kind: Kind::Commit, start_ts: start, commit_ts, payload: Bytes::from(commit(start, commit_ts)) };
            store.append_blocking(c).unwrap();
        }
    }
    let before = segments(&store_dir);
    assert!(before.len() >= 6, "expected many sealed segments, got {before:?}");

    // A drainer that has consumed only up to the first old transaction.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let registry = rt.block_on(async { Registry::new(etcd_client::Client::connect([url.as_str()], None).await.unwrap()) });
    let mut drainer = NodeStatus::new("gc-test-drainer", "127.0.0.1:1", NodeState::Online);
    drainer.max_commit_ts = first_commit;
    rt.block_on(registry.create(NodeKind::Drainer, &drainer)).unwrap();

    let toml = cluster.dir().join("pump-gc.toml");
    std::fs::write(&toml, format!("gc-waits-for-drainers = {waits}\n[storage]\nstop-write-at-available-space = \"1 MiB\"\n")).unwrap();
    let pump = start_pump(&url, &data_dir, &["-gc", "1h", "-config", toml.to_str().unwrap()]);
    let cid = rt.block_on(cluster_id(&url));

    if !waits {
        // By time: the lagging drainer does not hold GC; it is named and counted.
        let mut after = Vec::new();
        wait_until("old segments deleted past the lagging drainer", Duration::from_secs(30), || {
            let _ = http("POST", &pump.addr, "/debug/gc/trigger");
            std::thread::sleep(Duration::from_millis(200));
            after = segments(&store_dir);
            after.len() < before.len()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", pump.proc.log_tail()));
        assert_eq!(metric(&pump.addr, "binlog_pump_drainer_behind_gc_count"), Some(1.0));
        let log = std::fs::read_to_string(data_dir.with_extension("log")).unwrap();
        assert!(
            log.lines().any(|l| l.contains("behind the GC ts") && l.contains("gc-test-drainer")),
            "the pump names the drainer behind the GC ts"
        );
        return;
    }

    // GC is held at the drainer's checkpoint: the GC ts becomes its maxCommitTS and no old segment goes.
    // The pump's own first round may still run ("gc is working"): trigger until ours is the one that runs.
    wait_until("a triggered GC round", Duration::from_secs(20), || {
        http("POST", &pump.addr, "/debug/gc/trigger").is_some_and(|(code, text)| code == 200 && text == "trigger gc success\n")
    })
    .unwrap();
    let held_ms = pump::tso::physical_ms(first_commit as u64) as f64;
    wait_until("GC ts at the drainer's checkpoint", Duration::from_secs(20), || {
        metric(&pump.addr, "binlog_pump_storage_gc_ts") == Some(held_ms)
    })
    .unwrap();
    let log = std::fs::read_to_string(data_dir.with_extension("log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("GC held back") && l.contains("gc-test-drainer")),
        "the pump names the drainer that holds GC back"
    );
    let held = segments(&store_dir);
    assert!(before.iter().all(|s| held.contains(s)), "GC removed data a drainer still needs: {before:?} -> {held:?}");
    let all = rt.block_on(async {
        let mut c = pump.client().await;
        pull_until(&mut c, cid, first_commit, |g| g.iter().any(|b| b.commit_ts() == last_commit)).await
    });
    let real: Vec<i64> = all.iter().filter(|b| b.start_ts() != b.commit_ts()).map(|b| b.commit_ts()).collect();
    assert_eq!(real.len(), 199, "everything after the drainer's checkpoint is still served");

    // The drainer catches up: now only `gc` (1 h) and the 10-minute margin hold data back.
    drainer.max_commit_ts = pump::tso::compose(pump::tso::now_ms(), 0) as i64;
    rt.block_on(registry.update(NodeKind::Drainer, &drainer)).unwrap();
    // (A round right after start may still see the old data as the pump's newest and skip: the GC ts
    // must stay below the watermark. Trigger until the pump's fake binlogs have moved it.)
    let mut after = Vec::new();
    let deleted = wait_until("old segments deleted", Duration::from_secs(20), || {
        let _ = http("POST", &pump.addr, "/debug/gc/trigger");
        std::thread::sleep(Duration::from_millis(200));
        after = segments(&store_dir);
        after.len() < before.len()
    });
    if let Err(e) = deleted {
        let gc = ["gc_ts", "done_gc_ts", "max_commit_ts"].map(|m| metric(&pump.addr, &format!("binlog_pump_storage_{m}")));
        panic!("{e}: gc ts metrics {gc:?}, segments {after:?}\n{}", pump.proc.log_tail());
    }
    let gc_ms = metric(&pump.addr, "binlog_pump_storage_gc_ts").unwrap();
    let now_ms = pump::tso::now_ms() as f64;
    assert!((now_ms - 3600e3 - 60e3..=now_ms - 3600e3).contains(&gc_ms), "GC ts is now - gc: {gc_ms} vs now {now_ms}");
    // Every sealed old segment is gone; at most the segment that was active when the pump opened remains.
    let kept_old: Vec<_> = before.iter().filter(|s| after.contains(s)).collect();
    assert!(kept_old.len() <= 1, "sealed old segments survived GC: {kept_old:?} (after {after:?})");

    // A pull from before the GC ts starts at it: no old transaction is served any more.
    let gc_ts = pump::tso::compose(gc_ms as u64, 0) as i64;
    let got = rt.block_on(async {
        let mut c = pump.client().await;
        pull_until(&mut c, cid, 0, |g| g.len() >= 3).await
    });
    assert!(got.iter().all(|b| b.commit_ts() >= gc_ts), "pulled below the GC ts: {:?}", got.iter().map(|b| b.commit_ts()).collect::<Vec<_>>());
    drop(pump);
}
