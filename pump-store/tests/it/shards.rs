//! Shards behind the front: the on-disk layouts, a model of the watermark and the pull (proptest),
//! concurrent writers read back in one commit-ts order, and a catch-up that alternates between shards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;
use pump_store::{Committed, IoBackend, Kind, Record, Store, StoreConfig, StoreError};

fn cfg(dir: &std::path::Path, shards: usize) -> StoreConfig {
    StoreConfig { dir: dir.to_path_buf(), stop_write_at_available_space: 0, shards, ..StoreConfig::default() }
}

fn cfg_with(dir: &std::path::Path, shards: usize, io_backend: IoBackend) -> StoreConfig {
    StoreConfig { io_backend, ..cfg(dir, shards) }
}

/// A realistic TSO for "now", so the timeout resolver considers it young.
fn tso_now() -> i64 {
    (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64) << 18
}

fn rec(kind: Kind, start_ts: i64, commit_ts: i64, payload: String) -> Record {
    Record { kind, start_ts, commit_ts, payload: Bytes::from(payload) }
}

/// Pulls from `after` until an item with commit_ts `last` arrives (or fails after a deadline).
fn pull_until(store: &Store, after: i64, last: i64) -> Vec<Committed> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut s = Box::pin(store.pull(after));
        let mut got = Vec::new();
        if last <= after {
            return got;
        }
        loop {
            let item = tokio::time::timeout(Duration::from_secs(20), s.next())
                .await
                .expect("pull stalled")
                .expect("pull ended")
                .unwrap();
            let ts = item.commit_ts;
            got.push(item);
            if ts >= last {
                return got;
            }
        }
    })
}

#[test]
fn an_unsharded_directory_opens_as_one_shard_whatever_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let base = tso_now();
    {
        let store = Store::open(cfg(dir.path(), 1)).unwrap();
        for i in 1..=50 {
            store.append_blocking(rec(Kind::Prewrite, base + 10 * i, 0, format!("p{i}"))).unwrap();
            store.append_blocking(rec(Kind::Commit, base + 10 * i, base + 10 * i + 1, format!("c{i}"))).unwrap();
        }
    }
    // Layout 1: the segments are in the directory itself, no LAYOUT file.
    assert!(dir.path().join(pump_store::segment_file_name(1)).exists());
    assert!(!dir.path().join("LAYOUT").exists());
    let store = Store::open(cfg(dir.path(), 4)).unwrap();
    assert_eq!(store.shard_count(), 1, "the directory keeps the layout it was written with");
    assert!(!dir.path().join("shard-0").exists());
    assert_eq!(store.max_commit_ts(), base + 501);
    let got = pull_until(&store, 0, base + 501);
    assert_eq!(got.len(), 50);
    assert_eq!(got[49].prewrite.as_deref(), Some(&b"p50"[..]));
    store.append_blocking(rec(Kind::Fake, base + 600, base + 600, "f".into())).unwrap();
    assert_eq!(store.max_commit_ts(), base + 600);
}

#[test]
fn a_sharded_directory_keeps_its_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let base = tso_now();
    {
        let store = Store::open(cfg(dir.path(), 3)).unwrap();
        assert_eq!(store.shard_count(), 3);
        for i in 1..=30 {
            store.append_blocking(rec(Kind::Prewrite, base + 10 * i, 0, format!("p{i}"))).unwrap();
        }
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("LAYOUT")).unwrap(), "pump-store layout 2\nshards 3\n");
    for i in 0..3 {
        assert!(dir.path().join(format!("shard-{i}")).join(pump_store::segment_file_name(1)).exists());
    }
    // Reopened with another count, every Commit still finds its Prewrite's shard.
    for shards in [1, 5] {
        let store = Store::open(cfg(dir.path(), shards)).unwrap();
        assert_eq!(store.shard_count(), 3);
        assert_eq!(store.stats().pending_prewrites, 30 - if shards == 1 { 0 } else { 15 });
        let range = if shards == 1 { 1..=15 } else { 16..=30 };
        for i in range {
            store.append_blocking(rec(Kind::Commit, base + 10 * i, base + 10 * i + 1, format!("c{i}"))).unwrap();
        }
    }
    let store = Store::open(cfg(dir.path(), 3)).unwrap();
    assert_eq!(store.stats().pending_prewrites, 0);
    assert_eq!(store.max_commit_ts(), base + 301);
    let got = pull_until(&store, 0, base + 301);
    let ts: Vec<i64> = got.iter().map(|g| g.commit_ts).collect();
    assert_eq!(ts, (1..=30).map(|i| base + 10 * i + 1).collect::<Vec<_>>());
    for (k, g) in got.iter().enumerate() {
        assert_eq!(g.prewrite.as_deref(), Some(format!("p{}", k + 1).as_bytes()));
    }
}

#[test]
fn a_damaged_layout_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("LAYOUT"), "pump-store layout 9\nshards 2\n").unwrap();
    let err = Store::open(cfg(dir.path(), 2)).unwrap_err();
    assert!(matches!(err, StoreError::Layout { .. }), "{err}");
    assert!(err.to_string().contains("LAYOUT"), "{err}");
}

/// One step of the model.
#[derive(Debug, Clone)]
enum Op {
    /// Start a transaction: its Prewrite.
    Begin,
    /// Commit the open transaction at this index (modulo the open ones).
    Commit(usize),
    /// Roll back the open transaction at this index.
    Rollback(usize),
    Fake,
    /// Close and reopen the store.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Begin),
        4 => any::<usize>().prop_map(Op::Commit),
        1 => any::<usize>().prop_map(Op::Rollback),
        2 => Just(Op::Fake),
        1 => Just(Op::Reopen),
    ]
}

/// Runs `ops` sequentially (each append acknowledged before the next, timestamps from one TSO) against
/// a store with `shards` shards and checks, after every step, that the watermark never passes the
/// upstream definition (the largest commit ts before the first unsettled Prewrite, in arrival order),
/// never goes down while open, and reaches it once nothing is open; at the end, a pull yields exactly
/// the committed transactions and fakes, in commit-ts order, each joined with its Prewrite.
fn run_model(shards: usize, backend: IoBackend, ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(cfg_with(dir.path(), shards, backend)).unwrap();
    let mut tso = tso_now();
    let mut next = || {
        tso += 1;
        tso
    };
    // Arrival order: (start_ts, Some(commit) | None for a prewrite).
    let mut arrivals: Vec<(Kind, i64, i64)> = Vec::new();
    let mut open: Vec<i64> = Vec::new();
    let mut settled: BTreeMap<i64, bool> = BTreeMap::new(); // start_ts -> settled
    let mut want: Vec<(i64, i64, Kind)> = Vec::new(); // (commit_ts, start_ts, kind)
    let mut last_wm = i64::MIN;
    for op in ops {
        match op {
            Op::Begin => {
                let s = next();
                store.append_blocking(rec(Kind::Prewrite, s, 0, format!("p{s}"))).unwrap();
                open.push(s);
                settled.insert(s, false);
                arrivals.push((Kind::Prewrite, s, 0));
            }
            Op::Commit(i) | Op::Rollback(i) if !open.is_empty() => {
                let s = open.remove(i % open.len());
                settled.insert(s, true);
                if matches!(op, Op::Commit(_)) {
                    let c = next();
                    store.append_blocking(rec(Kind::Commit, s, c, format!("c{s}"))).unwrap();
                    arrivals.push((Kind::Commit, s, c));
                    want.push((c, s, Kind::Commit));
                } else {
                    store.append_blocking(rec(Kind::Rollback, s, 0, String::new())).unwrap();
                }
            }
            Op::Commit(_) | Op::Rollback(_) => {}
            Op::Fake => {
                let f = next();
                store.append_blocking(rec(Kind::Fake, f, f, format!("f{f}"))).unwrap();
                arrivals.push((Kind::Fake, f, f));
                want.push((f, f, Kind::Fake));
            }
            Op::Reopen => {
                drop(store);
                store = Store::open(cfg_with(dir.path(), shards, backend)).unwrap();
                last_wm = i64::MIN;
            }
        }
        // Upstream's watermark: commits before the first unsettled prewrite.
        let mut model = 0i64;
        for &(kind, s, c) in &arrivals {
            match kind {
                Kind::Prewrite if !settled[&s] => break,
                Kind::Commit | Kind::Fake => model = model.max(c),
                _ => {}
            }
        }
        let wm = store.max_commit_ts();
        assert!(wm <= model, "watermark {wm} passed the model's {model} after {op:?}");
        assert!(wm >= last_wm, "watermark went down from {last_wm} to {wm}");
        last_wm = wm;
        if open.is_empty() && !matches!(op, Op::Reopen) {
            assert_eq!(wm, model, "nothing is open after {op:?}");
        }
    }
    // Settle everything, then read it all back.
    for s in std::mem::take(&mut open) {
        let c = next();
        store.append_blocking(rec(Kind::Commit, s, c, format!("c{s}"))).unwrap();
        want.push((c, s, Kind::Commit));
    }
    let end = next();
    store.append_blocking(rec(Kind::Fake, end, end, format!("f{end}"))).unwrap();
    want.push((end, end, Kind::Fake));
    assert_eq!(store.max_commit_ts(), end);
    want.sort_by_key(|w| (w.0, w.1));
    let got = pull_until(&store, 0, end);
    let got_keys: Vec<(i64, i64, Kind)> = got.iter().map(|g| (g.commit_ts, g.start_ts, g.kind)).collect();
    assert_eq!(got_keys, want);
    for g in &got {
        if g.kind == Kind::Commit {
            assert_eq!(g.prewrite.as_deref(), Some(format!("p{}", g.start_ts).as_bytes()));
            assert_eq!(g.payload, format!("c{}", g.start_ts));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_sharded_store_follows_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run_model(4, IoBackend::Std, &ops);
    }

    #[test]
    fn one_shard_follows_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run_model(1, IoBackend::Std, &ops);
    }

    #[test]
    fn the_sharded_store_follows_the_model_on_io_uring(ops in prop::collection::vec(op(), 1..60)) {
        run_model(4, IoBackend::Uring, &ops);
    }

    #[test]
    fn one_shard_follows_the_model_on_io_uring(ops in prop::collection::vec(op(), 1..60)) {
        run_model(1, IoBackend::Uring, &ops);
    }
}

/// Concurrent transactions over shared TSO: whatever the interleaving, a live pull gives every
/// acknowledged Commit exactly once, in strictly increasing commit ts, joined with its Prewrite.
#[test]
fn concurrent_writers_are_read_back_in_one_commit_order_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig { sync_log: false, ..cfg(dir.path(), 4) }).unwrap();
    let tso = Arc::new(AtomicI64::new(tso_now()));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let reader = {
        let store = store.clone();
        rt.spawn(async move {
            let mut s = Box::pin(store.pull(0));
            let mut got = Vec::new();
            while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(20), s.next()).await {
                let item = item.unwrap();
                let stop = item.kind == Kind::Fake && item.payload == "end";
                got.push(item);
                if stop {
                    break;
                }
            }
            got
        })
    };
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (store, tso) = (store.clone(), tso.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..60 {
                    let s = tso.fetch_add(1, Ordering::SeqCst) + 1;
                    store.append_blocking(rec(Kind::Prewrite, s, 0, format!("p{s}"))).unwrap();
                    if (w + i) % 7 == 0 {
                        store.append_blocking(rec(Kind::Rollback, s, 0, String::new())).unwrap();
                        continue;
                    }
                    let c = tso.fetch_add(1, Ordering::SeqCst) + 1;
                    store.append_blocking(rec(Kind::Commit, s, c, format!("c{s}"))).unwrap();
                    acked.push((c, s));
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<(i64, i64)> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let end = tso.fetch_add(1, Ordering::SeqCst) + 1;
    store.append_blocking(rec(Kind::Fake, end, end, "end".into())).unwrap();
    let got = rt.block_on(reader).unwrap();
    assert_eq!(got.last().map(|g| g.commit_ts), Some(end), "the pull did not reach the end");
    acked.sort();
    let commits: Vec<(i64, i64)> =
        got.iter().filter(|g| g.kind == Kind::Commit).map(|g| (g.commit_ts, g.start_ts)).collect();
    assert_eq!(commits.len(), acked.len());
    assert_eq!(commits, acked);
    for w in got.windows(2) {
        assert!(w[0].commit_ts < w[1].commit_ts, "out of order: {} then {}", w[0].commit_ts, w[1].commit_ts);
    }
    for g in got.iter().filter(|g| g.kind == Kind::Commit) {
        assert_eq!(g.prewrite.as_deref(), Some(format!("p{}", g.start_ts).as_bytes()));
    }
    let per_shard = std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count();
    assert_eq!(per_shard, 4);
}

/// A catch-up over several MiB per shard: the merge scans the shards in steps and still emits one
/// order, and a pull from the middle starts at the right place in every shard.
#[test]
fn a_long_catch_up_alternates_between_shards_and_keeps_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let small = StoreConfig { sync_log: false, segment_size: 1 << 20, ..cfg(dir.path(), 3) };
    let base = tso_now();
    let n = 9000i64;
    let filler = "z".repeat(1000);
    {
        let store = Store::open(small.clone()).unwrap();
        for k in 0..n {
            // Pairs whose Commits arrive in the reverse of their commit-ts order.
            let (a, b) = (base + 100 * k, base + 100 * k + 10);
            store.append_blocking(rec(Kind::Prewrite, a, 0, format!("pa{k}"))).unwrap();
            store.append_blocking(rec(Kind::Prewrite, b, 0, format!("pb{k}"))).unwrap();
            store.append_blocking(rec(Kind::Commit, b, b + 30, format!("cb{k}{filler}"))).unwrap();
            store.append_blocking(rec(Kind::Commit, a, a + 20, format!("ca{k}{filler}"))).unwrap();
        }
        assert!(store.stats().disk_bytes > 9 << 20, "{:?}", store.stats());
    }
    let store = Store::open(small).unwrap();
    let last = base + 100 * (n - 1) + 40;
    for (after, first) in [(0, 0i64), (base + 100 * 4000 + 20, 8001)] {
        let got = pull_until(&store, after, last);
        assert_eq!(got.len() as i64, 2 * n - first);
        for (j, g) in got.iter().enumerate() {
            let idx = first + j as i64;
            let k = idx / 2;
            let (start, commit) = if idx % 2 == 0 { (base + 100 * k, base + 100 * k + 20) } else { (base + 100 * k + 10, base + 100 * k + 40) };
            assert_eq!((g.start_ts, g.commit_ts), (start, commit), "item {j}");
            assert!(g.prewrite.as_ref().unwrap().starts_with(if idx % 2 == 0 { b"pa" } else { b"pb" }));
        }
    }
}
