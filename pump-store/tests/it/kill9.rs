//! A writer process killed with SIGKILL at random moments: every append it saw acknowledged must be
//! there after reopening, every time.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use pump_store::{IoBackend, Kind, Record, Store, StoreConfig};

const DIR_ENV: &str = "PUMP_STORE_KILL9_DIR";
/// `threads`: the child appends from blocking threads (leader/follower path); else from async tasks.
const MODE_ENV: &str = "PUMP_STORE_KILL9_MODE";
/// How many shards the child's store has.
const SHARDS_ENV: &str = "PUMP_STORE_KILL9_SHARDS";
/// `uring`: the child writes through the io_uring pipeline.
const BACKEND_ENV: &str = "PUMP_STORE_KILL9_BACKEND";
/// How many concurrent appenders the child runs.
const WRITERS_ENV: &str = "PUMP_STORE_KILL9_WRITERS";

fn cfg(dir: &std::path::Path, shards: usize, io_backend: IoBackend) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        stop_write_at_available_space: 0,
        segment_size: 64 << 10,
        shards,
        io_backend,
        ..StoreConfig::default()
    }
}

fn child_shards() -> usize {
    std::env::var(SHARDS_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

fn child_backend() -> IoBackend {
    if std::env::var(BACKEND_ENV).is_ok_and(|b| b == "uring") { IoBackend::Uring } else { IoBackend::Std }
}

fn child_writers() -> u8 {
    std::env::var(WRITERS_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or(8)
}

/// The child, which a test becomes when its parent started it with `PUMP_STORE_KILL9_DIR` set:
/// appends from `PUMP_STORE_KILL9_WRITERS` (default 8) concurrent tasks (or threads) forever, printing
/// `ACK <ts>` after each acknowledgement, until the parent kills it.
fn kill9_child(dir: &str) -> ! {
    if std::env::var(MODE_ENV).is_ok_and(|m| m == "threads") {
        let store = Store::open(cfg(std::path::Path::new(dir), child_shards(), child_backend())).unwrap();
        let now = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64) << 18;
        let next = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(store.max_commit_ts().max(now)));
        let threads: Vec<_> = (0..child_writers())
            .map(|t| {
                let store = store.clone();
                let next = next.clone();
                std::thread::spawn(move || {
                    loop {
                        let ts = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        let payload = Bytes::from(vec![t; 100 + (ts % 900) as usize]);
                        store.append_blocking(Record { kind: Kind::Fake, start_ts: ts, commit_ts: ts, payload }).unwrap();
                        println!("ACK {ts}");
                    }
                })
            })
            .collect();
        // The threads never end; the parent kills this process.
        for t in threads {
            let _ = t.join();
        }
        unreachable!("the appenders never return");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let store = Store::open(cfg(std::path::Path::new(dir), child_shards(), child_backend())).unwrap();
        let now = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64) << 18;
        let next = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(store.max_commit_ts().max(now)));
        let mut tasks = Vec::new();
        for t in 0..child_writers() {
            let store = store.clone();
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let ts = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    let payload = Bytes::from(vec![t; 100 + (ts % 900) as usize]);
                    store.append(Record { kind: Kind::Fake, start_ts: ts, commit_ts: ts, payload }).await.unwrap();
                    println!("ACK {ts}");
                }
            }));
        }
        // The tasks never end; the parent kills this process.
        futures::future::join_all(tasks).await;
    });
    unreachable!("the appenders never return");
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_record() {
    kill9_loop("kill9::kill_9_at_random_moments_loses_no_acknowledged_record", 1, IoBackend::Std, 8);
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_record_across_four_shards() {
    kill9_loop("kill9::kill_9_at_random_moments_loses_no_acknowledged_record_across_four_shards", 4, IoBackend::Std, 8);
}

#[test]
fn kill_9_with_64_writers_on_the_io_uring_pipeline_loses_no_acknowledged_record() {
    kill9_loop("kill9::kill_9_with_64_writers_on_the_io_uring_pipeline_loses_no_acknowledged_record", 1, IoBackend::Uring, 64);
}

#[test]
fn kill_9_with_64_writers_on_the_io_uring_pipeline_across_four_shards() {
    kill9_loop("kill9::kill_9_with_64_writers_on_the_io_uring_pipeline_across_four_shards", 4, IoBackend::Uring, 64);
}

/// Runs the test `name` (this one) as a child 8 times, killing it with SIGKILL at a random moment
/// each time; in the child, becomes [`kill9_child`].
fn kill9_loop(name: &str, shards: usize, backend: IoBackend, writers: u8) {
    if let Ok(dir) = std::env::var(DIR_ENV) {
        kill9_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashSet<i64> = HashSet::new();
    let mut seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    for round in 0..8 {
        let mode = if round % 2 == 0 { "tasks" } else { "threads" };
        let mut child = Command::new(&exe)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .env(MODE_ENV, mode)
            .env(SHARDS_ENV, shards.to_string())
            .env(BACKEND_ENV, if backend == IoBackend::Uring { "uring" } else { "std" })
            .env(WRITERS_ENV, writers.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ts) = line.strip_prefix("ACK ").and_then(|t| t.parse::<i64>().ok()) {
                    let _ = tx.send(ts);
                }
            }
        });
        // Wait for the first acknowledgement, then a random 20..300 ms more.
        let first = rx.recv_timeout(Duration::from_secs(30)).expect("child never acknowledged an append");
        acked.insert(first);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(20 + seed % 280));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(rx.try_iter());

        // Reopened with the std backend: the pipeline's segments are plain v2 segments.
        let store = Store::open(cfg(dir.path(), shards, IoBackend::Std)).unwrap();
        assert_eq!(store.shard_count(), shards);
        let wm = store.max_commit_ts();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let found: HashSet<i64> = rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut s = Box::pin(store.pull(0));
            let mut seen = HashSet::new();
            while let Some(item) = tokio::time::timeout_at(deadline.into(), s.next()).await.expect("pull stalled") {
                let item = item.unwrap();
                assert_eq!(item.payload.len(), 100 + (item.commit_ts % 900) as usize, "damaged payload");
                seen.insert(item.commit_ts);
                if item.commit_ts == wm {
                    break;
                }
            }
            seen
        });
        // Fakes from concurrent appenders can reach the log out of ts order (a ts is taken before the
        // append is queued); the pull's strictly increasing order skips the late ones, so look those up.
        let missing: Vec<i64> = acked
            .difference(&found)
            .copied()
            .filter(|&ts| {
                let rec = store.get(ts).unwrap();
                rec.is_none_or(|r| r.payload.len() != 100 + (ts % 900) as usize)
            })
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "round {round} ({mode}, {shards} shards, {backend:?}): acknowledged but lost: {missing:?} ({} acked)",
            acked.len()
        );
        drop(store);
    }
}
