//! pump-store side by side with its baselines, in one process run.
//!
//! `store [SECONDS_PER_CASE] [ROUNDS] [DIR]` (defaults: 2 s, 3 rounds, `target/bench-store`). Each
//! case runs every system once per round, in turn, and reports medians over the rounds. `store 0` runs
//! only the catch-up and open comparisons.
//!
//! * Durable appends, for 1, 8 and 64 concurrent writer threads × 256 B, 1 KiB and 16 KiB payloads:
//!   - ours: `Store::append_blocking` (group commit: one write + one fdatasync per batch);
//!   - `std_fsync_each`: a std file behind a mutex, write + fdatasync per append (the naive strawman);
//!   - `raft_engine`: `Engine::write(batch, sync = true)` with one `put` per append (its own group commit);
//!   - `device_raw`: one thread writing + fdatasyncing batches of the size ours averaged, the device's
//!     durable bandwidth at that batch size.
//! * Catch-up read: pulling 128 MiB of 1 KiB committed binlogs from the page cache vs reading the same
//!   segment files with plain 1 MiB `read`s.
//! * Open (recovery) time of that store vs reading its files once.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bench::Comparison;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use pump_store::{Kind, Record, Store, StoreConfig};

/// What one system did in one case.
struct Run {
    ops: u64,
    bytes: u64,
    secs: f64,
    hist: Histogram<u64>,
}

impl Run {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs / (1 << 20) as f64
    }
    fn p(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64
    }
}

/// Runs `writers` threads calling `op` until `dur` has passed; latency in µs.
fn drive(writers: usize, dur: Duration, payload: usize, op: Arc<dyn Fn(usize, u64) -> Result<()> + Send + Sync>) -> Result<Run> {
    let start = Instant::now();
    let deadline = start + dur;
    let mut handles = Vec::new();
    for w in 0..writers {
        let op = op.clone();
        handles.push(std::thread::spawn(move || -> Result<(u64, Histogram<u64>)> {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(w, n)?;
                h.record(t.elapsed().as_micros().max(1) as u64)?;
                n += 1;
            }
            Ok((n, h))
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut ops = 0;
    for h in handles {
        let (n, hh) = h.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
        ops += n;
        hist.add(hh)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Run { ops, bytes: ops * payload as u64, secs, hist })
}

fn now_ts() -> i64 {
    (SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0) as i64) << 18
}

fn store_cfg(dir: &Path) -> StoreConfig {
    StoreConfig { dir: dir.to_path_buf(), stop_write_at_available_space: 0, ..StoreConfig::default() }
}

fn run_ours(dir: &Path, writers: usize, payload: usize, dur: Duration) -> Result<(Run, f64)> {
    let store = Store::open(store_cfg(dir))?;
    let ts = Arc::new(AtomicI64::new(now_ts()));
    let body = Bytes::from(vec![0x5au8; payload]);
    let s = store.clone();
    let run = drive(writers, dur, payload, Arc::new(move |_, _| {
        let t = ts.fetch_add(1, Ordering::Relaxed) + 1;
        s.append_blocking(Record { kind: Kind::Fake, start_ts: t, commit_ts: t, payload: body.clone() })?;
        Ok(())
    }))?;
    let st = store.stats();
    let avg_batch = st.bytes_written as f64 / st.batches.max(1) as f64;
    Ok((run, avg_batch))
}

fn run_std_fsync_each(dir: &Path, writers: usize, payload: usize, dur: Duration) -> Result<Run> {
    let file = Arc::new(Mutex::new(OpenOptions::new().create(true).append(true).open(dir.join("log"))?));
    let body = vec![0x5au8; payload + 16];
    drive(writers, dur, payload, Arc::new(move |_, _| {
        let mut f = file.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        f.write_all(&body)?;
        f.sync_data()?;
        Ok(())
    }))
}

fn run_raft_engine(dir: &Path, writers: usize, payload: usize, dur: Duration) -> Result<Run> {
    let cfg = raft_engine::Config {
        dir: dir.to_string_lossy().into_owned(),
        batch_compression_threshold: raft_engine::ReadableSize(0),
        ..Default::default()
    };
    let engine = Arc::new(raft_engine::Engine::open(cfg)?);
    let body = vec![0x5au8; payload];
    let seq = Arc::new(AtomicU64::new(0));
    drive(writers, dur, payload, Arc::new(move |w, _| {
        let mut b = raft_engine::LogBatch::default();
        let k = seq.fetch_add(1, Ordering::Relaxed);
        b.put(w as u64 + 1, k.to_be_bytes().to_vec(), body.clone())?;
        engine.write(&mut b, true)?;
        Ok(())
    }))
}

/// One thread writing `batch`-byte chunks, each followed by fdatasync: the device's durable bandwidth.
fn run_device_raw(dir: &Path, batch: usize, dur: Duration) -> Result<Run> {
    let mut f = OpenOptions::new().create(true).append(true).open(dir.join("raw"))?;
    let buf = vec![0xa5u8; batch.max(1)];
    let start = Instant::now();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut ops = 0u64;
    while start.elapsed() < dur {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
        ops += 1;
    }
    Ok(Run { ops, bytes: ops * buf.len() as u64, secs: start.elapsed().as_secs_f64(), hist })
}

fn fresh(root: &Path, name: &str) -> Result<PathBuf> {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Medians over the rounds of one system in one case.
#[derive(Default)]
struct Medians {
    ops: Vec<f64>,
    mibs: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    p999: Vec<f64>,
}

impl Medians {
    fn add(&mut self, r: &Run) {
        self.ops.push(r.ops_per_sec());
        self.mibs.push(r.mib_per_sec());
        self.p50.push(r.p(0.5));
        self.p99.push(r.p(0.99));
        self.p999.push(r.p(0.999));
    }
    fn ops(&self) -> f64 {
        median(self.ops.clone())
    }
    fn mibs(&self) -> f64 {
        median(self.mibs.clone())
    }
    fn p99(&self) -> f64 {
        median(self.p99.clone())
    }
}

fn appends(root: &Path, dur: Duration, rounds: usize) -> Result<()> {
    println!("# durable appends: {} s per system, case and round; medians of {rounds} rounds", dur.as_secs_f64());
    for &payload in &[256usize, 1024, 16384] {
        for &writers in &[1usize, 8, 64] {
            let case = format!("store_append_{writers}w_{payload}B");
            let (mut ours, mut naive, mut raft, mut device) =
                (Medians::default(), Medians::default(), Medians::default(), Medians::default());
            let mut batches = Vec::new();
            for _ in 0..rounds {
                let (o, avg_batch) = run_ours(&fresh(root, "ours")?, writers, payload, dur)?;
                ours.add(&o);
                batches.push(avg_batch);
                naive.add(&run_std_fsync_each(&fresh(root, "std")?, writers, payload, dur)?);
                raft.add(&run_raft_engine(&fresh(root, "raft")?, writers, payload, dur)?);
                device.add(&run_device_raw(&fresh(root, "raw")?, avg_batch as usize, dur)?);
            }
            println!(
                "{case}: ours {:.0}/s p50 {:.0} p99 {:.0} p999 {:.0} µs (avg batch {:.0} B) | std_fsync_each {:.0}/s p99 {:.0} | raft_engine {:.0}/s p99 {:.0} | device_raw {:.2} MiB/s fdatasync p99 {:.0} µs",
                ours.ops(), median(ours.p50.clone()), ours.p99(), median(ours.p999.clone()), median(batches),
                naive.ops(), naive.p99(), raft.ops(), raft.p99(), device.mibs(), device.p99()
            );
            Comparison::higher_is_better(&format!("{case}_ops"), ours.ops(), naive.ops(), "std_fsync_each", "appends/s").print();
            Comparison::higher_is_better(&format!("{case}_ops"), ours.ops(), raft.ops(), "raft_engine", "appends/s").print();
            Comparison::lower_is_better(&format!("{case}_p99"), ours.p99(), raft.p99(), "raft_engine", "µs").print();
            Comparison::lower_is_better(&format!("{case}_p99"), ours.p99(), naive.p99(), "std_fsync_each", "µs").print();
            Comparison::lower_is_better(&format!("{case}_p99"), ours.p99(), device.p99(), "device_raw_fdatasync", "µs").print();
            // Durable payload bandwidth against the raw device at ours' batch size.
            Comparison::higher_is_better(&format!("{case}_mibs"), ours.mibs(), device.mibs(), "device_raw", "MiB/s (ours: payload)").print();
        }
    }
    Ok(())
}

fn catch_up(root: &Path) -> Result<()> {
    let dir = fresh(root, "catchup")?;
    let total: usize = 128 << 20;
    let payload = 1024usize;
    let n = total / payload;
    {
        let store = Store::open(StoreConfig { sync_log: false, segment_size: 64 << 20, ..store_cfg(&dir) })?;
        let base = now_ts();
        let body = Bytes::from(vec![0x33u8; payload]);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        rt.block_on(async {
            let mut futs = Vec::new();
            for i in 0..n as i64 {
                let s = store.clone();
                let body = body.clone();
                futs.push(async move {
                    s.append(Record { kind: Kind::Fake, start_ts: base + i + 1, commit_ts: base + i + 1, payload: body }).await
                });
                if futs.len() == 4096 {
                    for r in futures::future::join_all(std::mem::take(&mut futs)).await {
                        r?;
                    }
                }
            }
            for r in futures::future::join_all(futs).await {
                r?;
            }
            anyhow::Ok(())
        })?;
        rt.block_on(store.close());
    }
    // Baseline: read every segment file sequentially, 1 MiB at a time (page cache is hot from writing).
    let raw = || -> Result<(u64, f64)> {
        let t = Instant::now();
        let mut bytes = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "seg") {
                let mut f = File::open(&p)?;
                loop {
                    let k = f.read(&mut buf)?;
                    if k == 0 {
                        break;
                    }
                    bytes += k as u64;
                }
            }
        }
        Ok((bytes, t.elapsed().as_secs_f64()))
    };
    let _ = raw()?; // warm
    let (raw_bytes, raw_secs) = raw()?;
    let t = Instant::now();
    let store = Store::open(store_cfg(&dir))?;
    let open_secs = t.elapsed().as_secs_f64();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let t = Instant::now();
    let got = rt.block_on(async {
        let mut s = Box::pin(store.pull(0).take(n));
        let mut k = 0usize;
        let mut bytes = 0u64;
        while let Some(r) = s.next().await {
            bytes += r?.payload.len() as u64;
            k += 1;
        }
        anyhow::Ok((k, bytes))
    })?;
    let pull_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(got.0 == n, "pulled {} of {n}", got.0);
    let mib = |b: u64, s: f64| b as f64 / s / (1 << 20) as f64;
    println!(
        "# catch-up: pulled {} binlogs ({} MiB payload) in {pull_secs:.2} s; raw read of {} MiB in {raw_secs:.2} s; open {open_secs:.3} s",
        got.0, got.1 >> 20, raw_bytes >> 20
    );
    Comparison::higher_is_better("store_catch_up_1KiB", mib(got.1, pull_secs), mib(raw_bytes, raw_secs), "raw_read_1MiB", "MiB/s").print();
    Comparison::lower_is_better("store_open_128MiB", open_secs * 1000.0, raw_secs * 1000.0, "raw_read_1MiB", "ms").print();
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().map(|s| s.parse()).transpose().context("SECONDS_PER_CASE")?.unwrap_or(2.0);
    let rounds: usize = args.next().map(|s| s.parse()).transpose().context("ROUNDS")?.unwrap_or(3);
    let root = match args.next() {
        Some(d) => PathBuf::from(d),
        None => std::env::current_dir()?.join("target").join("bench-store"),
    };
    std::fs::create_dir_all(&root)?;
    if secs > 0.0 {
        appends(&root, Duration::from_secs_f64(secs), rounds)?;
    }
    catch_up(&root)?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
