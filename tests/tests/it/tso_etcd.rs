//! The TSO allocator on a real etcd: strictly increasing and linearizable across allocators (as
//! separate processes would be), across etcd restarts, batched, and refusing a PD endpoint.

use std::sync::Arc;
use std::time::Instant;

use pump::tso::{self, EtcdTso, TSO_KEY, TsoError, TsoSource};
use tests::Cluster;

async fn start() -> Cluster {
    tokio::task::spawn_blocking(|| Cluster::builder().etcd().start().unwrap()).await.unwrap()
}

async fn client(url: &str) -> etcd_client::Client {
    etcd_client::Client::connect([url], None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_allocators_interleave_strictly_increasing() {
    let cluster = start().await;
    let url = cluster.etcd().url();
    let a = EtcdTso::new(client(&url).await);
    let b = EtcdTso::new(client(&url).await);
    let mut last = 0;
    for i in 0..50 {
        // Each allocator caches the key's revision; the other one moved it in between.
        let ts = if i % 3 == 0 { b.get_ts().await.unwrap() } else { a.get_ts().await.unwrap() };
        assert!(ts > last, "ts {ts} after {last} at step {i}");
        last = ts;
    }
    let stored: u64 = client(&url).await.get(TSO_KEY, None).await.unwrap().kvs()[0].value_str().unwrap().parse().unwrap();
    assert_eq!(stored, last, "the key holds the last ts handed out");
    assert!(tso::physical_ms(last) <= tso::now_ms() + 1000, "ts tracks the wall clock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_unique_linearizable_and_batched() {
    let cluster = start().await;
    let url = cluster.etcd().url();
    let allocs = [EtcdTso::new(client(&url).await), EtcdTso::new(client(&url).await)];
    let origin = Instant::now();
    // Every op records when it started and ended (relative to `origin`) and what it got.
    let ops = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let tso = allocs[t % 2].clone();
        let ops = ops.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..250 {
                let start = origin.elapsed();
                let ts = tso.get_ts().await.unwrap();
                mine.push((start, origin.elapsed(), ts));
            }
            ops.lock().unwrap().extend(mine);
        }));
    }
    // And a burst of 2000 requests queued at once on one allocator.
    let burst: Vec<_> = (0..2000).map(|_| allocs[0].get_ts()).collect();
    let burst_start = origin.elapsed();
    let got = futures::future::join_all(burst).await;
    let burst_end = origin.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    let mut ops = Arc::try_unwrap(ops).unwrap().into_inner().unwrap();
    ops.extend(got.into_iter().map(|r| (burst_start, burst_end, r.unwrap())));
    assert_eq!(ops.len(), 4000);

    let mut all: Vec<u64> = ops.iter().map(|o| o.2).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 4000, "every ts is unique");

    // Linearizability: an op's ts exceeds the ts of every op that ended before it started.
    let mut by_end = ops.clone();
    by_end.sort_by_key(|o| o.1);
    let mut prefix_max = Vec::with_capacity(by_end.len());
    let mut m = 0;
    for o in &by_end {
        m = m.max(o.2);
        prefix_max.push(m);
    }
    for (start, _, ts) in &ops {
        let ended_before = by_end.partition_point(|o| o.1 < *start);
        if ended_before > 0 {
            assert!(*ts > prefix_max[ended_before - 1], "ts {ts} is not above an earlier finished ts");
        }
    }

    // Batching: far fewer etcd writes than ts handed out.
    let resp = client(&url).await.get(TSO_KEY, None).await.unwrap();
    let writes = resp.kvs()[0].version();
    assert!(writes < 4000 / 2, "{writes} CAS rounds for 4000 ts: requests were not batched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_survives_etcd_restart_and_stays_above_a_future_stored_value() {
    let mut cluster = start().await;
    let url = cluster.etcd().url();
    let a = EtcdTso::new(client(&url).await);
    let before = a.get_ts().await.unwrap();
    let mut etcd = cluster.etcd.take().unwrap();
    let etcd = tokio::task::spawn_blocking(move || {
        etcd.restart().unwrap();
        etcd
    })
    .await
    .unwrap();
    let b = EtcdTso::new(client(&etcd.url()).await);
    let after = b.get_ts().await.unwrap();
    assert!(after > before);
    // The allocator that lived through the restart reconnects and stays above everything handed out.
    let mut again = a.get_ts().await;
    for _ in 0..50 {
        if again.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        again = a.get_ts().await;
    }
    assert!(again.unwrap() > after);

    // A stored value ahead of the clock (another host's clock, or ours went back) still wins.
    let ahead = tso::compose(tso::now_ms() + 3_600_000, 7);
    client(&etcd.url()).await.put(TSO_KEY, ahead.to_string(), None).await.unwrap();
    assert_eq!(b.get_ts().await.unwrap(), ahead + 1);
    assert_eq!(b.get_ts().await.unwrap(), ahead + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_reports_cluster_id_refuses_pd_and_bad_values() {
    let cluster = start().await;
    let url = cluster.etcd().url();
    let mut c = client(&url).await;
    let header_id = c.status().await.unwrap().header().unwrap().cluster_id();
    let src = TsoSource::connect(c.clone(), &url).await.unwrap();
    assert_eq!(src.cluster_id(), header_id);
    assert_eq!(tso::cluster_id(&c).await.unwrap(), header_id);
    assert!(src.get_ts().await.unwrap() > 0);

    c.put(TSO_KEY, "not-a-number", None).await.unwrap();
    let fresh = EtcdTso::new(client(&url).await);
    let err = fresh.get_ts().await.unwrap_err();
    assert!(matches!(err, TsoError::BadValue { .. }), "{err}");
    assert!(err.to_string().contains("not-a-number"), "{err}");

    c.put(tso::PD_CLUSTER_ID_KEY, "123", None).await.unwrap();
    let err = TsoSource::connect(c.clone(), &url).await.unwrap_err();
    assert!(matches!(err, TsoError::PdNotSupported { .. }), "{err}");
    assert!(err.to_string().contains("only a plain etcd is supported"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_is_linearizable_with_another_process() {
    let cluster = start().await;
    let url = cluster.etcd().url();
    let a = EtcdTso::new(client(&url).await);
    let dir = cluster.dir().join("meta");
    let mut last = a.get_ts().await.unwrap();
    for _ in 0..3 {
        // binlogctl generate_meta is a separate process with its own allocator.
        let (url, dir2) = (url.clone(), dir.clone());
        let meta = tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(tests::our_binary("binlogctl"))
                .args(["-pd-urls", &url, "-cmd", "generate_meta", "-data-dir"])
                .arg(&dir2)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = std::fs::read_to_string(dir2.join("savepoint")).unwrap();
            text.lines().next().unwrap().strip_prefix("commitTS = ").unwrap().parse::<u64>().unwrap()
        })
        .await
        .unwrap();
        assert!(meta > last, "the other process's ts {meta} is not above {last}");
        let mine = a.get_ts().await.unwrap();
        assert!(mine > meta, "ts {mine} is not above the other process's {meta}");
        last = mine;
    }
}
