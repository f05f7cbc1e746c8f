// Behaviour of the store through its public API, against real files in a temp dir; included by
// `tests/store.rs` once per shard count (`SHARDS`) and write path (`BACKEND`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use pump_store::{Committed, Kind, Record, Resolution, Resolver, Store, StoreConfig, StoreError};

fn cfg(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        stop_write_at_available_space: 0,
        shards: SHARDS,
        io_backend: BACKEND,
        ..StoreConfig::default()
    }
}

/// The directory holding the shard a record with `start_ts` goes to.
fn shard_dir(dir: &std::path::Path, start_ts: i64) -> std::path::PathBuf {
    if SHARDS == 1 { dir.to_path_buf() } else { dir.join(format!("shard-{}", pump_store::shard_of(start_ts, SHARDS))) }
}

/// A realistic TSO for "now" plus `logical`, so the timeout resolver considers it young.
fn tso(logical: i64) -> i64 {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    (ms << 18) + logical
}

fn p(start: i64, payload: &str) -> Record {
    Record { kind: Kind::Prewrite, start_ts: start, commit_ts: 0, payload: Bytes::from(payload.to_string()) }
}
fn c(start: i64, commit: i64, payload: &str) -> Record {
    Record { kind: Kind::Commit, start_ts: start, commit_ts: commit, payload: Bytes::from(payload.to_string()) }
}
fn fake(ts: i64) -> Record {
    Record { kind: Kind::Fake, start_ts: ts, commit_ts: ts, payload: Bytes::from(format!("fake{ts}")) }
}
fn rollback(start: i64) -> Record {
    Record { kind: Kind::Rollback, start_ts: start, commit_ts: 0, payload: Bytes::new() }
}

/// Takes `n` items from a pull, failing after a deadline.
async fn take(store: &Store, after: i64, n: usize) -> Vec<Committed> {
    let s = store.pull(after).take(n).map(|r| r.unwrap()).collect::<Vec<_>>();
    tokio::time::timeout(Duration::from_secs(10), s).await.expect("pull did not deliver in time")
}

/// Asserts the pull yields nothing more within a short wait after `after`.
async fn nothing_after(store: &Store, after: i64) {
    let mut s = Box::pin(store.pull(after));
    let got = tokio::time::timeout(Duration::from_millis(300), s.next()).await;
    assert!(got.is_err(), "unexpected item: {got:?}");
}

#[tokio::test]
async fn commits_are_released_in_commit_order_after_every_earlier_prewrite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let (s1, s2) = (tso(1), tso(2));
    store.append(p(s1, "p1")).await.unwrap();
    store.append(p(s2, "p2")).await.unwrap();
    store.append(c(s2, s2 + 20, "c2")).await.unwrap();
    assert_eq!(store.max_commit_ts(), 0, "txn 1 is still open");
    nothing_after(&store, 0).await;
    store.append(c(s1, s1 + 10, "c1")).await.unwrap();
    assert_eq!(store.max_commit_ts(), s2 + 20);
    let got = take(&store, 0, 2).await;
    assert_eq!(got[0].commit_ts, s1 + 10);
    assert_eq!(got[0].start_ts, s1);
    assert_eq!(got[0].payload, "c1");
    assert_eq!(got[0].prewrite.as_deref(), Some(&b"p1"[..]));
    assert_eq!(got[1].commit_ts, s2 + 20);
    assert_eq!(got[1].prewrite.as_deref(), Some(&b"p2"[..]));
    assert_eq!(got[0].kind, Kind::Commit);
    // Starting after the first one gives only the second.
    let got = take(&store, s1 + 10, 1).await;
    assert_eq!(got[0].commit_ts, s2 + 20);
    nothing_after(&store, s2 + 20).await;
}

#[tokio::test]
async fn rollbacks_are_skipped_and_fakes_pass_and_advance() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let s1 = tso(1);
    store.append(p(s1, "p1")).await.unwrap();
    store.append(fake(s1 + 5)).await.unwrap();
    assert_eq!(store.max_commit_ts(), 0);
    store.append(rollback(s1)).await.unwrap();
    assert_eq!(store.max_commit_ts(), s1 + 5);
    let got = take(&store, 0, 1).await;
    assert_eq!(got[0].kind, Kind::Fake);
    assert_eq!((got[0].start_ts, got[0].commit_ts), (s1 + 5, s1 + 5));
    assert_eq!(got[0].prewrite, None);
    nothing_after(&store, s1 + 5).await;
}

#[tokio::test]
async fn pull_tails_live_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let mut stream = Box::pin(store.pull(0));
    let s = tso(0);
    for i in 0..20 {
        store.append(p(s + 2 * i, "p")).await.unwrap();
        store.append(c(s + 2 * i, s + 2 * i + 1, "c")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(got.commit_ts, s + 2 * i + 1);
    }
}

#[tokio::test]
async fn below_the_space_threshold_a_prewrite_is_refused_by_upstreams_message_and_a_fake_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(StoreConfig { stop_write_at_available_space: u64::MAX, ..cfg(dir.path()) }).unwrap();
    let err = store.append(p(tso(1), "p")).await.unwrap_err();
    assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
    assert!(err.to_string().starts_with("no available space, available: "), "{err}");
    let f = tso(2);
    store.append(fake(f)).await.unwrap();
    assert_eq!(store.max_commit_ts(), f);
}

#[tokio::test]
async fn health_probe_is_accepted_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    store.append(p(0, "")).await.unwrap();
    assert_eq!(store.stats().appends, 0);
}

#[tokio::test]
async fn everything_survives_reopen_and_an_open_prewrite_still_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let b = tso(0);
    let (s1, s2, s3) = (b + 10, b + 20, b + 30);
    {
        let store = Store::open(cfg(dir.path())).unwrap();
        store.append(p(s1, "p1")).await.unwrap();
        store.append(c(s1, s1 + 1, "c1")).await.unwrap();
        store.append(p(s2, "p2")).await.unwrap();
        store.append(p(s3, "p3")).await.unwrap();
        store.append(c(s3, s3 + 1, "c3")).await.unwrap();
        assert_eq!(store.max_commit_ts(), s1 + 1);
        store.close().await;
    }
    let store = Store::open(cfg(dir.path())).unwrap();
    if SHARDS == 1 {
        assert_eq!(store.max_commit_ts(), s1 + 1);
    } else {
        // What idle shards released before the crash is not persisted: the shard holding p2 restarts
        // from its own watermark until p2 settles.
        assert!(store.max_commit_ts() <= s1 + 1);
    }
    assert_eq!(store.stats().pending_prewrites, 1);
    store.append(c(s2, s2 + 1, "c2")).await.unwrap();
    assert_eq!(store.max_commit_ts(), s3 + 1);
    let got = take(&store, 0, 3).await;
    let ts: Vec<i64> = got.iter().map(|g| g.commit_ts).collect();
    assert_eq!(ts, vec![s1 + 1, s2 + 1, s3 + 1]);
    assert_eq!(got[1].prewrite.as_deref(), Some(&b"p2"[..]));
    assert_eq!(store.get(s2).unwrap().unwrap().payload, "p2");
    assert_eq!(store.get(s3 + 1).unwrap().unwrap().payload, "c3");
    assert_eq!(store.get(12345).unwrap(), None);
}

#[tokio::test]
async fn closed_store_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let other = store.clone();
    store.close().await;
    assert!(matches!(other.append(fake(tso(1))).await, Err(StoreError::Closed)));
}

#[test]
fn a_second_open_of_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(cfg(dir.path())).unwrap();
    assert!(matches!(Store::open(cfg(dir.path())), Err(StoreError::Locked(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let base = tso(0);
    let mut tasks = Vec::new();
    for t in 0..64i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20i64 {
                store.append(fake(base + t * 100 + i + 1)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = store.stats();
    assert_eq!(st.appends, 64 * 20);
    assert!(st.fsyncs < st.appends / 2, "group commit did not batch: {st:?}");
    assert_eq!(st.fsyncs, st.batches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_writer_answers_at_once_and_closes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A linger far longer than the test: if it held an answer or the close, the timeouts would fire.
    let store = Store::open(StoreConfig { lead_linger: Duration::from_secs(60), ..cfg(dir.path()) }).unwrap();
    let base = tso(0);
    tokio::time::timeout(Duration::from_secs(20), async {
        for i in 0..10 {
            store.append(fake(base + i + 1)).await.unwrap();
        }
        let tasks: Vec<_> = (0..16i64)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..10 {
                        store.append(fake(base + 1000 + t * 100 + i)).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("appends were held by the linger");
    assert_eq!(store.stats().appends, 10 + 16 * 10);
    tokio::time::timeout(Duration::from_secs(20), store.clone().close()).await.expect("close was held by the linger");
    assert!(matches!(store.append(fake(base + 5000)).await, Err(StoreError::Closed)));
    drop(store);
    let store = Store::open(cfg(dir.path())).unwrap();
    assert_eq!(take(&store, 0, 170).await.len(), 170);
}

#[tokio::test]
async fn segments_rotate_and_reopen_reads_footers_and_pull_seeks() {
    let dir = tempfile::tempdir().unwrap();
    let small = StoreConfig { segment_size: 8 << 10, ..cfg(dir.path()) };
    let base = tso(0);
    let n = 400i64;
    // Interleave two open txns so commits are not in arrival order.
    {
        let store = Store::open(small.clone()).unwrap();
        for i in 0..n {
            let s = base + 10 * i;
            store.append(p(s, &format!("p{i}-{}", "x".repeat(100)))).await.unwrap();
            if i > 0 {
                let prev = base + 10 * (i - 1);
                store.append(c(prev, prev + 5, &format!("c{}", i - 1))).await.unwrap();
            }
        }
        let last = base + 10 * (n - 1);
        store.append(c(last, last + 5, &format!("c{}", n - 1))).await.unwrap();
        assert!(store.stats().segments > 5, "{:?}", store.stats());
        store.close().await;
    }
    let store = Store::open(small).unwrap();
    assert_eq!(store.max_commit_ts(), base + 10 * (n - 1) + 5);
    for start in [0i64, 1, 37, 200, 398] {
        let after = if start == 0 { 0 } else { base + 10 * start + 5 };
        let first = if start == 0 { 0 } else { start + 1 };
        let want = (n - first) as usize;
        let got = take(&store, after, want).await;
        for (k, g) in got.iter().enumerate() {
            let i = first + k as i64;
            assert_eq!(g.commit_ts, base + 10 * i + 5);
            assert_eq!(g.payload, format!("c{i}"));
            let pw = g.prewrite.as_ref().expect("prewrite joined");
            assert!(pw.starts_with(format!("p{i}-").as_bytes()));
        }
        nothing_after(&store, base + 10 * (n - 1) + 5).await;
    }
}

#[tokio::test]
async fn a_torn_tail_is_truncated_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let base = tso(0);
    {
        let store = Store::open(cfg(dir.path())).unwrap();
        for i in 1..=10 {
            store.append(fake(base + i)).await.unwrap();
        }
        store.close().await;
    }
    let seg = shard_dir(dir.path(), base + 10).join(pump_store::segment_file_name(1));
    let end = pump_store::format::scan_segment(&std::fs::read(&seg).unwrap()).valid_len;
    // Half of an 11th record, then garbage, where the records end (before the preallocated zeros).
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0x2a, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7], end).unwrap();
    drop(f);
    let store = Store::open(cfg(dir.path())).unwrap();
    assert_eq!(store.stats().torn_tail_truncations, 1);
    let image = std::fs::read(&seg).unwrap();
    assert_eq!(pump_store::format::scan_segment(&image).valid_len, end);
    assert!(image[end as usize..].iter().all(|&b| b == 0), "the torn bytes are gone");
    assert_eq!(store.max_commit_ts(), base + 10);
    store.append(fake(base + 11)).await.unwrap();
    let got = take(&store, 0, 11).await;
    assert_eq!(got.last().unwrap().commit_ts, base + 11);
}

#[tokio::test]
async fn an_old_unmatched_prewrite_stays_pending_until_settled_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    // start_ts 100 has physical time 0: far older than max-txn-timeout. It is never dropped for that.
    store.append(p(100, "old")).await.unwrap();
    let s = tso(0);
    store.append(fake(s)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(store.max_commit_ts(), 0, "the pending prewrite holds the watermark");
    assert_eq!(store.stats().pending_prewrites, 1);
    assert_eq!(store.pending().iter().map(|(ts, _)| *ts).collect::<Vec<_>>(), [100]);
    // Settling refuses what is not pending and a commit_ts not after start_ts.
    assert!(matches!(store.settle(99, Some(s)), Err(StoreError::NotPending { start_ts: 99 })));
    assert!(matches!(store.settle(100, Some(100)), Err(StoreError::BadCommitTs { .. })));
    // An operator who checked TiDB settles it as committed: served as its Commit, then the fake.
    store.settle(100, Some(101)).unwrap();
    let got = take(&store, 0, 2).await;
    assert_eq!((got[0].start_ts, got[0].commit_ts, got[0].kind), (100, 101, Kind::Commit));
    assert_eq!(got[0].prewrite.as_deref(), Some(&b"old"[..]));
    assert_eq!(got[1].commit_ts, s);
    assert_eq!(store.stats().pending_prewrites, 0);
    assert!(store.settle(100, None).is_err(), "settled once");
}

#[tokio::test]
async fn below_the_space_threshold_only_new_prewrites_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = tso(0);
    {
        let store = Store::open(cfg(dir.path())).unwrap();
        store.append(p(s, "held")).await.unwrap();
        store.append(p(s + 2, "held too")).await.unwrap();
        store.close().await;
    }
    // The same directory with a threshold no disk meets.
    let full = StoreConfig { stop_write_at_available_space: u64::MAX, ..cfg(dir.path()) };
    let store = Store::open(full).unwrap();
    assert!(matches!(store.append(p(s + 4, "new")).await, Err(StoreError::NoSpace { .. })));
    // The Prewrites already held still get their Commit and Rollback, and fakes still go in.
    store.append(c(s, s + 1, "c")).await.unwrap();
    store.append(rollback(s + 2)).await.unwrap();
    store.append(fake(s + 5)).await.unwrap();
    let got = take(&store, 0, 2).await;
    assert_eq!((got[0].start_ts, got[0].commit_ts), (s, s + 1));
    assert_eq!(got[1].commit_ts, s + 5);
}

struct CommitsAt(i64);
impl Resolver for CommitsAt {
    fn resolve(&self, _start_ts: i64, _prewrite: &[u8]) -> Resolution {
        Resolution::Committed(self.0)
    }
}

#[tokio::test]
async fn a_resolver_can_commit_a_prewrite_whose_commit_never_came() {
    let dir = tempfile::tempdir().unwrap();
    let s = tso(0);
    let store = Store::open_with_resolver(cfg(dir.path()), Arc::new(CommitsAt(s + 7))).unwrap();
    store.append(p(s, "p")).await.unwrap();
    let got = take(&store, 0, 1).await;
    assert_eq!((got[0].start_ts, got[0].commit_ts, got[0].kind), (s, s + 7, Kind::Commit));
    assert!(got[0].payload.is_empty());
    assert_eq!(got[0].prewrite.as_deref(), Some(&b"p"[..]));
}

#[tokio::test]
async fn gc_drops_old_sealed_segments_and_clamps_pulls() {
    let dir = tempfile::tempdir().unwrap();
    // Per shard: with more shards each holds fewer records, so segments are smaller to rotate as often.
    let seg_size = (4 << 10) / SHARDS as u64;
    let small = StoreConfig { segment_size: seg_size, max_txn_timeout: Duration::from_secs(1), ..cfg(dir.path()) };
    let store = Store::open(small.clone()).unwrap();
    let base = tso(0);
    let step = 1i64 << 18; // 1 ms of physical time per record
    for i in 1..=200 {
        store.append(fake(base + i * step)).await.unwrap();
    }
    // 2000 ms later than the data: still below the watermark? No: the watermark is base+200ms.
    let before = store.stats();
    let gc = base + 150 * step;
    store.gc(gc);
    assert_eq!(store.gc_ts(), gc);
    let after = store.stats();
    // Nothing is older than gc - 1 s of margin... the margin is 1000 ms > 150 ms of data: nothing removed.
    assert_eq!(after.segments, before.segments);
    // With a gc ts above everything but below the watermark nothing moves either (gc must be < watermark).
    store.gc(base + 300 * step);
    assert_eq!(store.gc_ts(), gc);
    store.close().await;

    // Now without margin trouble: records spread over 3 s of physical time.
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = StoreConfig { dir: dir2.path().to_path_buf(), ..small };
    let store = Store::open(cfg2.clone()).unwrap();
    let step = 10i64 << 18; // 10 ms per record
    for i in 1..=300 {
        store.append(fake(base + i * step)).await.unwrap();
    }
    let before = store.stats();
    let gc = base + 250 * step; // 2.5 s in; margin 1 s => segments whose max <= 1.5 s go
    store.gc(gc);
    let after = store.stats();
    assert!(after.segments < before.segments, "{before:?} {after:?}");
    assert!(after.disk_bytes < before.disk_bytes);
    // A pull from 0 is clamped to the gc ts.
    let got = take(&store, 0, 1).await;
    assert_eq!(got[0].commit_ts, base + 251 * step);
    store.close().await;
    let store = Store::open(cfg2).unwrap();
    assert_eq!(store.gc_ts(), gc);
    assert_eq!(store.stats().segments, after.segments);
}

#[tokio::test]
async fn a_long_catch_up_across_index_entries_keeps_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path())).unwrap();
    let base = tso(0);
    let n = 1500i64;
    let filler = "y".repeat(300);
    for k in 0..n {
        // Two txns whose Commits arrive in the reverse of their commit_ts order.
        let (a, b) = (base + 100 * k, base + 100 * k + 10);
        store.append(p(a, &format!("pa{k}{filler}"))).await.unwrap();
        store.append(p(b, &format!("pb{k}{filler}"))).await.unwrap();
        store.append(c(b, b + 30, &format!("cb{k}"))).await.unwrap();
        store.append(c(a, a + 20, &format!("ca{k}"))).await.unwrap();
    }
    store.close().await;
    let store = Store::open(cfg(dir.path())).unwrap();
    for after in [0, base + 100 * 700 + 20] {
        let first = if after == 0 { 0 } else { 1401 };
        let want = (2 * n - first) as usize;
        let got = take(&store, after, want).await;
        for (j, g) in got.iter().enumerate() {
            let idx = first + j as i64;
            let k = idx / 2;
            let (start, commit, name) = if idx % 2 == 0 {
                (base + 100 * k, base + 100 * k + 20, format!("ca{k}"))
            } else {
                (base + 100 * k + 10, base + 100 * k + 40, format!("cb{k}"))
            };
            assert_eq!((g.start_ts, g.commit_ts), (start, commit), "item {j}");
            assert_eq!(g.payload, name);
            assert!(g.prewrite.as_ref().unwrap().starts_with(if idx % 2 == 0 { b"pa" } else { b"pb" }));
        }
    }
}
