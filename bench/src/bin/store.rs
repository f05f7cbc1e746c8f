//! pump-store side by side with its baselines, in one process run.
//!
//! `store [SECONDS_PER_CASE] [ROUNDS] [DIR]` (defaults: 2 s, 3 rounds, `target/bench-store`). Each
//! case runs every system once per round, in turn, and reports medians over the rounds. `store 0` runs
//! only the catch-up, open and recovery comparisons. `STORE_CASE=16w_1024B` runs only the append cases
//! whose name contains it (and then no catch-up or recovery, unless `STORE_CATCHUP=1` asks for the
//! catch-up). `STORE_URING=0` leaves the io_uring backend out; `STORE_SHARDS` sets the sharded store's
//! shard count. `STORE_RUNTIMES=0` leaves the runtime shards out; `STORE_GLOMMIO_IO_MEMORY` sets
//! glommio's `io_memory` (bytes; default: glommio's own). `STORE_ASYNC=1` adds `ours_async` and
//! `ours_async_sharded`: the store through `Store::append` from tokio tasks (the pump server's path), with
//! one shard and with `STORE_SHARDS`; with `STORE_LINGER_US=n` also both with `StoreConfig::lead_linger`
//! = n µs. `STORE_OVERWRITE_MIB=n` adds `device_overwrite`: device_raw
//! overwriting an n MiB file written and synced beforehand, instead of appending to a growing one.
//!
//! `STORE_PIPELINE=1` runs only issue 25's comparison instead (`pipeline_appends`): the io_uring
//! pipeline (`ours_uring`), the std backend on preallocated segments (`ours_std`), the std backend
//! growing its file as before preallocation (`ours_std_growing`: the store before issue 25),
//! `raft_engine`, and the device doing what fio's best job did (`device_uring`: `io_depth` writes of
//! ours_uring's average batch in flight, `O_DIRECT` + `RWF_DSYNC`, on a file written beforehand;
//! `device_uring_qd1`: the same one at a time, for the 1-writer cases), at 1/16/64 writers × 256 B,
//! 1 KiB and 16 KiB, plus 16 writers × 256 KiB (bandwidth). `STORE_CASE` filters these too.
//!
//! * Durable appends, for 1, 16 and 64 concurrent writer threads × 256 B, 1 KiB and 16 KiB payloads:
//!   - ours: `Store::append_blocking` (leader/follower group commit: one write + one fdatasync per batch,
//!     issued by the first waiting appender);
//!   - `std_group_commit`: the strawman, a plain std writer thread fed by a channel that writes every
//!     queued append with one write + one fdatasync and answers each over a channel of its own;
//!   - `raft_engine`: `Engine::write(batch, sync = true)` with one `put` per append (its own group commit);
//!   - `device_raw`: one thread writing + fdatasyncing batches of the size ours averaged, the device's
//!     durable bandwidth at that batch size.
//!   - `ours_uring`: the same store with `IoBackend::Uring` (write linked to fdatasync, one syscall);
//!   - `ours_sharded`: the same store with `STORE_SHARDS` shards (default: the available cores, at most
//!     8), each its own segment log with its own group commit, appends routed by start_ts;
//!   - runtime shards (`glommio`, `monoio`, `std_thread`): thread-per-core shards as the design
//!     card drew them: `STORE_SHARDS` runtime threads, each owning one log file; writer `w` sends each
//!     append to shard `w % shards` over a channel and blocks on its answer; the shard takes every
//!     queued append, writes them with one write + one fdatasync through the runtime's io_uring file
//!     API (glommio `BufferedFile`, monoio `File`) and answers each. `std_thread` runs the same loop on
//!     a plain thread with blocking `write` + `fdatasync`, so the runtime is the only difference.
//! * Catch-up read: pulling 128 MiB of 1 KiB committed binlogs from the page cache vs reading the same
//!   segment files with plain 1 MiB `read`s, from one shard and from `STORE_SHARDS` shards (merged).
//! * Open (recovery) time of that store vs reading its files once.
//! * Recovery of a 2 GiB log (1 KiB binlogs, default 512 MiB segments): `Store::open` vs reading every
//!   file once, and vs raft-engine reopening 2 GiB of 1 KiB entries; the same 2 GiB written into
//!   `STORE_SHARDS` shards, opened (shards in parallel) vs reading its segment files once.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bench::Comparison;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use pump_store::{IoBackend, Kind, Record, Store, StoreConfig};

/// The shard count of `ours_sharded`: `STORE_SHARDS`, else the default for this machine.
fn bench_shards() -> usize {
    std::env::var("STORE_SHARDS").ok().and_then(|s| s.parse().ok()).unwrap_or_else(pump_store::default_shards)
}

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
            let mut h = new_hist()?;
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
    let mut per_writer = Vec::new();
    for h in handles {
        per_writer.push(h.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??);
    }
    merged(per_writer, payload, start.elapsed().as_secs_f64())
}

/// A latency histogram in µs, up to a minute.
fn new_hist() -> Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?)
}

/// One run from every writer's (appends, latencies) over `secs`.
fn merged(per_writer: Vec<(u64, Histogram<u64>)>, payload: usize, secs: f64) -> Result<Run> {
    let mut hist = new_hist()?;
    let mut ops = 0;
    for (n, h) in per_writer {
        ops += n;
        hist.add(h)?;
    }
    Ok(Run { ops, bytes: ops * payload as u64, secs, hist })
}

fn now_ts() -> i64 {
    (SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0) as i64) << 18
}

fn store_cfg(dir: &Path) -> StoreConfig {
    StoreConfig { dir: dir.to_path_buf(), stop_write_at_available_space: 0, ..StoreConfig::default() }
}

fn run_ours(dir: &Path, writers: usize, payload: usize, dur: Duration, io_backend: IoBackend, shards: usize) -> Result<(Run, f64)> {
    let (run, st) = run_ours_cfg(StoreConfig { io_backend, shards, ..store_cfg(dir) }, writers, payload, dur)?;
    Ok((run, st.bytes_written as f64 / st.batches.max(1) as f64))
}

/// `writers` threads appending `payload`-byte fakes to a store opened with `cfg` for `dur`; the run and
/// the store's counters after it.
fn run_ours_cfg(cfg: StoreConfig, writers: usize, payload: usize, dur: Duration) -> Result<(Run, pump_store::StoreStats)> {
    let shards = cfg.shards.max(1);
    let store = Store::open(cfg)?;
    anyhow::ensure!(store.shard_count() == shards, "asked for {shards} shards, got {}", store.shard_count());
    let ts = Arc::new(AtomicI64::new(now_ts()));
    let body = Bytes::from(vec![0x5au8; payload]);
    let s = store.clone();
    let run = drive(writers, dur, payload, Arc::new(move |_, _| {
        let t = ts.fetch_add(1, Ordering::Relaxed) + 1;
        s.append_blocking(Record { kind: Kind::Fake, start_ts: t, commit_ts: t, payload: body.clone() })?;
        Ok(())
    }))?;
    Ok((run, store.stats()))
}

/// Ours through the async API, as the pump server calls it: `writers` tokio tasks on a 2-worker
/// runtime, each awaiting `Store::append` in a loop (a blocked task is led by the store's background
/// thread, not by an appender).
fn run_ours_async(cfg: StoreConfig, writers: usize, payload: usize, dur: Duration) -> Result<Run> {
    let store = Store::open(cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let ts = Arc::new(AtomicI64::new(now_ts()));
    let body = Bytes::from(vec![0x5au8; payload]);
    let start = Instant::now();
    let deadline = start + dur;
    let per_task = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (s, ts, body) = (store.clone(), ts.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut h = new_hist()?;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let t = ts.fetch_add(1, Ordering::Relaxed) + 1;
                    s.append(Record { kind: Kind::Fake, start_ts: t, commit_ts: t, payload: body.clone() }).await?;
                    h.record(t0.elapsed().as_micros().max(1) as u64)?;
                    n += 1;
                }
                anyhow::Ok((n, h))
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await??);
        }
        anyhow::Ok(out)
    })?;
    let secs = start.elapsed().as_secs_f64();
    if std::env::var("STORE_VERBOSE").is_ok_and(|v| v == "1") {
        let st = store.stats();
        eprintln!("ours_async {writers} w × {payload} B, {} shard(s): {} appends in {} batches", store.shard_count(), st.appends, st.batches);
    }
    rt.block_on(store.close());
    merged(per_task, payload, secs)
}

/// A request to the strawman's writer thread: the record and where to say it is durable.
type GroupReq = (Bytes, mpsc::SyncSender<std::io::Result<()>>);

/// The strawman: a plain std thread that takes every queued record, writes them with one `write` and
/// one `fdatasync`, and answers each caller over its own channel.
fn run_std_group_commit(dir: &Path, writers: usize, payload: usize, dur: Duration) -> Result<Run> {
    let mut file = OpenOptions::new().create(true).append(true).open(dir.join("log"))?;
    let (tx, rx) = mpsc::channel::<GroupReq>();
    let writer = std::thread::spawn(move || {
        let mut buf = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut bytes = first.0.len();
            let mut batch = vec![first];
            while bytes < 8 << 20
                && let Ok(more) = rx.try_recv()
            {
                bytes += more.0.len();
                batch.push(more);
            }
            buf.clear();
            for (rec, _) in &batch {
                buf.extend_from_slice(&(rec.len() as u64).to_le_bytes());
                buf.extend_from_slice(&0u64.to_le_bytes()); // a 16-byte frame, as ours has
                buf.extend_from_slice(rec);
            }
            let res = file.write_all(&buf).and_then(|()| file.sync_data());
            for (_, reply) in batch {
                let _ = reply.send(res.as_ref().map(|_| ()).map_err(|e| std::io::Error::new(e.kind(), e.to_string())));
            }
        }
    });
    let body = Bytes::from(vec![0x5au8; payload]);
    let run = drive(writers, dur, payload, Arc::new(move |_, _| {
        let (rtx, rrx) = mpsc::sync_channel(1);
        tx.send((body.clone(), rtx))?;
        rrx.recv()??;
        Ok(())
    }));
    // `drive` dropped the last sender with the closure: the writer ends.
    writer.join().map_err(|_| anyhow::anyhow!("strawman writer panicked"))?;
    run
}

/// Which io_uring runtime drives the runtime shards.
#[derive(Clone, Copy, Debug)]
enum Runtime {
    Glommio,
    Monoio,
    /// The same loop on a plain std thread (`futures::executor::block_on`, blocking `write` +
    /// `fdatasync`): isolates what the runtime and its io_uring file API change.
    Std,
}

/// The 16-byte frame + payload of every request in `batch`, as the strawman writes them.
fn frame_batch(batch: &[GroupReq], buf: &mut Vec<u8>) {
    buf.clear();
    for (rec, _) in batch {
        buf.extend_from_slice(&(rec.len() as u64).to_le_bytes());
        buf.extend_from_slice(&0u64.to_le_bytes());
        buf.extend_from_slice(rec);
    }
}

/// Takes the first request and every one already queued behind it (up to 8 MiB); `None` once closed.
async fn next_batch(rx: &mut futures::channel::mpsc::UnboundedReceiver<GroupReq>) -> Option<Vec<GroupReq>> {
    let first = rx.next().await?;
    let mut bytes = first.0.len();
    let mut batch = vec![first];
    while bytes < 8 << 20
        && let Ok(more) = rx.try_recv()
    {
        bytes += more.0.len();
        batch.push(more);
    }
    Some(batch)
}

fn answer(batch: Vec<GroupReq>, res: &std::io::Result<()>) {
    for (_, reply) in batch {
        let _ = reply.send(res.as_ref().map(|_| ()).map_err(|e| std::io::Error::new(e.kind(), e.to_string())));
    }
}

/// One glommio executor thread owning `path`: batches queued appends into one `write_at` + one
/// `fdatasync` through glommio's io_uring `BufferedFile` and answers each writer. Sends the startup
/// result on `ready` first.
fn spawn_glommio_shard(
    path: PathBuf,
    mut rx: futures::channel::mpsc::UnboundedReceiver<GroupReq>,
    ready: mpsc::SyncSender<std::io::Result<()>>,
    io_memory: Option<usize>,
) -> Result<std::thread::JoinHandle<()>> {
    let mut builder = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).name("glommio-shard");
    if let Some(m) = io_memory {
        builder = builder.io_memory(m);
    }
    let handle = builder
        .spawn(move || async move {
            let file = match glommio::io::BufferedFile::create(&path).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = ready.send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            let mut pos = 0u64;
            let mut buf = Vec::new();
            while let Some(batch) = next_batch(&mut rx).await {
                frame_batch(&batch, &mut buf);
                let len = buf.len();
                let res = async {
                    let n = file.write_at(std::mem::take(&mut buf), pos).await?;
                    if n != len {
                        return Err(glommio::GlommioError::<()>::IoError(std::io::Error::other(format!("short write {n} of {len}"))));
                    }
                    file.fdatasync().await
                }
                .await
                .map_err(|e| std::io::Error::other(e.to_string()));
                pos += len as u64;
                answer(batch, &res);
            }
            let _ = file.close().await;
        })
        .map_err(|e| anyhow::anyhow!("glommio executor: {e}"))?;
    Ok(std::thread::spawn(move || {
        let _ = handle.join();
    }))
}

/// One monoio (io_uring driver) runtime thread owning `path`: the same loop as the glommio shard,
/// through monoio's `File::write_all_at` + `sync_data`.
fn spawn_monoio_shard(
    path: PathBuf,
    mut rx: futures::channel::mpsc::UnboundedReceiver<GroupReq>,
    ready: mpsc::SyncSender<std::io::Result<()>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut rt = match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        rt.block_on(async move {
            let file = match monoio::fs::File::create(&path).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            let mut pos = 0u64;
            let mut buf = Vec::new();
            while let Some(batch) = next_batch(&mut rx).await {
                frame_batch(&batch, &mut buf);
                let len = buf.len() as u64;
                let (res, back) = file.write_all_at(std::mem::take(&mut buf), pos).await;
                buf = back;
                let res = match res {
                    Ok(()) => file.sync_data().await,
                    Err(e) => Err(e),
                };
                pos += len;
                answer(batch, &res);
            }
            let _ = file.close().await;
        });
    })
}

/// One plain std thread owning `path`: the same loop with blocking `write_all` + `sync_data`.
fn spawn_std_shard(
    path: PathBuf,
    mut rx: futures::channel::mpsc::UnboundedReceiver<GroupReq>,
    ready: mpsc::SyncSender<std::io::Result<()>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let mut buf = Vec::new();
        while let Some(batch) = futures::executor::block_on(next_batch(&mut rx)) {
            frame_batch(&batch, &mut buf);
            let res = file.write_all(&buf).and_then(|()| file.sync_data());
            answer(batch, &res);
        }
    })
}

/// Thread-per-core shards on an io_uring runtime: `shards` runtime threads, each owning a log file;
/// writer `w` sends its appends to shard `w % shards` and blocks on the answer.
fn run_runtime_shards(dir: &Path, writers: usize, payload: usize, dur: Duration, runtime: Runtime, shards: usize, io_memory: Option<usize>) -> Result<Run> {
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for i in 0..shards {
        let (tx, rx) = futures::channel::mpsc::unbounded::<GroupReq>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let path = dir.join(format!("shard-{i}.log"));
        threads.push(match runtime {
            Runtime::Glommio => spawn_glommio_shard(path, rx, ready_tx, io_memory)?,
            Runtime::Monoio => spawn_monoio_shard(path, rx, ready_tx),
            Runtime::Std => spawn_std_shard(path, rx, ready_tx),
        });
        ready_rx.recv().map_err(|_| anyhow::anyhow!("{runtime:?} shard {i} ended before starting"))?.with_context(|| format!("{runtime:?} shard {i}"))?;
        senders.push(tx);
    }
    let body = Bytes::from(vec![0x5au8; payload]);
    let run = drive(writers, dur, payload, Arc::new(move |w, _| {
        let (rtx, rrx) = mpsc::sync_channel(1);
        senders[w % senders.len()].unbounded_send((body.clone(), rtx)).map_err(|_| anyhow::anyhow!("shard gone"))?;
        rrx.recv()??;
        Ok(())
    }));
    // `drive` dropped the senders with the closure: every shard's loop ends.
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("{runtime:?} shard thread panicked"))?;
    }
    run
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
    timed_loop(dur, buf.len(), || {
        f.write_all(&buf)?;
        Ok(f.sync_data()?)
    })
}

/// Calls `op` (which writes `len` bytes) back to back on this thread for `dur`, timing each call.
fn timed_loop(dur: Duration, len: usize, mut op: impl FnMut() -> Result<()>) -> Result<Run> {
    let start = Instant::now();
    let mut hist = new_hist()?;
    let mut ops = 0u64;
    while start.elapsed() < dur {
        let t = Instant::now();
        op()?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
        ops += 1;
    }
    Ok(Run { ops, bytes: ops * len as u64, secs: start.elapsed().as_secs_f64(), hist })
}

/// `run_device_raw`, but overwriting a file that was written and synced beforehand (`size` bytes,
/// wrapping around), so no fdatasync has to commit a file-size change or a block allocation to the
/// filesystem journal: what a preallocated, pre-zeroed (or recycled) log file would see.
fn run_device_overwrite(dir: &Path, batch: usize, size: u64, dur: Duration) -> Result<Run> {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join("overwrite"))?;
    let chunk = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        f.write_all_at(&chunk, at)?;
        at += chunk.len() as u64;
    }
    f.sync_all()?;
    let buf = vec![0xa5u8; batch.max(1)];
    let mut pos = 0u64;
    timed_loop(dur, buf.len(), || {
        if pos + buf.len() as u64 > size {
            pos = 0;
        }
        f.write_all_at(&buf, pos)?;
        f.sync_data()?;
        pos += buf.len() as u64;
        Ok(())
    })
}

/// A `size`-byte file of zeros under `root`, written and synced once (the device baselines overwrite it,
/// as a preallocated, written-ahead log would be).
fn prewritten(root: &Path, size: u64) -> Result<PathBuf> {
    use std::os::unix::fs::FileExt;
    let path = root.join("prewritten");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
        return Ok(path);
    }
    let f = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        f.write_all_at(&chunk, at)?;
        at += chunk.len() as u64;
    }
    f.sync_all()?;
    Ok(path)
}

/// The device baseline of the io_uring path (what fio's best job in issue 25 did): `depth` writes of
/// `block` bytes in flight, `O_DIRECT` with `RWF_DSYNC`, at consecutive offsets of the pre-written file
/// `path`, through `pump_store::probe_device` (the store's own io_uring device, without the store).
fn run_device_uring(path: &Path, block: usize, depth: usize, dur: Duration) -> Result<Run> {
    let start = Instant::now();
    let lat = pump_store::probe_device(path, block, depth, dur)?;
    let secs = start.elapsed().as_secs_f64();
    let mut hist = new_hist()?;
    for l in &lat {
        hist.record(l.as_micros().max(1) as u64)?;
    }
    let ops = lat.len() as u64;
    Ok(Run { ops, bytes: ops * block as u64, secs, hist })
}

/// Issue 25's comparison (`STORE_PIPELINE=1`, see the module doc); medians of `rounds`.
fn pipeline_appends(root: &Path, dur: Duration, rounds: usize) -> Result<()> {
    let depth = StoreConfig::default().io_depth;
    println!("# issue 25: durable appends, io_uring pipeline (io_depth {depth}) vs std vs raft-engine vs device; {} s per system, case and round; medians of {rounds} rounds", dur.as_secs_f64());
    let file = prewritten(root, 1 << 30)?;
    let cases = [(1usize, 256usize), (16, 256), (64, 256), (1, 1024), (16, 1024), (64, 1024), (1, 16384), (16, 16384), (64, 16384), (16, 256 << 10)];
    for (writers, payload) in cases {
        let case = format!("store_pipeline_{writers}w_{payload}B");
        if std::env::var("STORE_CASE").is_ok_and(|f| !case.contains(&f)) {
            continue;
        }
        let (mut uring, mut std_pre, mut growing, mut raft, mut dev, mut dev1) =
            (Medians::default(), Medians::default(), Medians::default(), Medians::default(), Medians::default(), Medians::default());
        let (mut uring_batch, mut uring_disk, mut std_disk, mut blocks) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (r, st) = run_ours_cfg(StoreConfig { io_backend: IoBackend::Uring, ..store_cfg(&fresh(root, "uring")?) }, writers, payload, dur)?;
            uring.add(&r);
            uring_batch.push(st.bytes_written as f64 / st.batches.max(1) as f64);
            uring_disk.push(st.bytes_written as f64 / st.appends.max(1) as f64);
            let (r, st) = run_ours_cfg(StoreConfig { io_backend: IoBackend::Std, ..store_cfg(&fresh(root, "std")?) }, writers, payload, dur)?;
            std_pre.add(&r);
            std_disk.push(st.bytes_written as f64 / st.appends.max(1) as f64);
            let growing_cfg = StoreConfig { io_backend: IoBackend::Std, preallocate: false, ..store_cfg(&fresh(root, "growing")?) };
            growing.add(&run_ours_cfg(growing_cfg, writers, payload, dur)?.0);
            raft.add(&run_raft_engine(&fresh(root, "raft")?, writers, payload, dur)?);
            let block = (*uring_batch.last().unwrap_or(&4096.0) as usize).div_ceil(4096).max(1) * 4096;
            blocks.push(block as f64);
            dev.add(&run_device_uring(&file, block, depth, dur)?);
            if writers == 1 {
                dev1.add(&run_device_uring(&file, block, 1, dur)?);
            }
            for d in ["uring", "std", "growing", "raft"] {
                let _ = std::fs::remove_dir_all(root.join(d));
            }
        }
        println!(
            "{case}: ours_uring {:.0}/s p50 {:.0} p99 {:.0} µs, {:.1} MiB/s, batch {:.0} B, disk {:.0} B/append | ours_std {:.0}/s p99 {:.0}, disk {:.0} B/append | ours_std_growing {:.0}/s p99 {:.0} | raft_engine {:.0}/s p99 {:.0} | device_uring({depth} × {:.0} B) {:.0} writes/s {:.1} MiB/s p99 {:.0}{}",
            uring.ops(), median(uring.p50.clone()), uring.p99(), uring.mibs(), median(uring_batch), median(uring_disk),
            std_pre.ops(), std_pre.p99(), median(std_disk),
            growing.ops(), growing.p99(),
            raft.ops(), raft.p99(),
            median(blocks.clone()), dev.ops(), dev.mibs(), dev.p99(),
            if writers == 1 { format!(" | device_uring_qd1 {:.0} writes/s p50 {:.0} p99 {:.0} µs", dev1.ops(), median(dev1.p50.clone()), dev1.p99()) } else { String::new() }
        );
        Comparison::higher_is_better(&format!("{case}_uring_ops"), uring.ops(), growing.ops(), "ours_std_growing", "appends/s").print();
        Comparison::lower_is_better(&format!("{case}_uring_p99"), uring.p99(), growing.p99(), "ours_std_growing", "µs").print();
        Comparison::higher_is_better(&format!("{case}_uring_ops"), uring.ops(), std_pre.ops(), "ours_std", "appends/s").print();
        Comparison::lower_is_better(&format!("{case}_uring_p99"), uring.p99(), std_pre.p99(), "ours_std", "µs").print();
        Comparison::higher_is_better(&format!("{case}_uring_ops"), uring.ops(), raft.ops(), "raft_engine", "appends/s").print();
        Comparison::higher_is_better(&format!("{case}_std_ops"), std_pre.ops(), growing.ops(), "ours_std_growing", "appends/s").print();
        // Durable payload bandwidth against the device writing whole blocks of the same batch size.
        Comparison::higher_is_better(&format!("{case}_uring_mibs"), uring.mibs(), dev.mibs(), "device_uring", "MiB/s (ours: payload)").print();
        if writers == 1 {
            Comparison::lower_is_better(&format!("{case}_uring_p99"), uring.p99(), dev1.p99(), "device_uring_qd1", "µs").print();
        }
    }
    Ok(())
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
        for &writers in &[1usize, 16, 64] {
            let case = format!("store_append_{writers}w_{payload}B");
            if std::env::var("STORE_CASE").is_ok_and(|f| !case.contains(&f)) {
                continue;
            }
            let (mut ours, mut uring, mut straw, mut raft, mut device) =
                (Medians::default(), Medians::default(), Medians::default(), Medians::default(), Medians::default());
            let mut sharded = Medians::default();
            let shards = bench_shards();
            let runtimes = !std::env::var("STORE_RUNTIMES").is_ok_and(|v| v == "0");
            let glommio_mem = std::env::var("STORE_GLOMMIO_IO_MEMORY").ok().and_then(|v| v.parse().ok());
            let (mut rt_glommio, mut rt_monoio, mut rt_std) = (Medians::default(), Medians::default(), Medians::default());
            let asynchronous = std::env::var("STORE_ASYNC").is_ok_and(|v| v == "1");
            let (mut async1, mut async_sharded) = (Medians::default(), Medians::default());
            let linger: Option<u64> = std::env::var("STORE_LINGER_US").ok().and_then(|v| v.parse().ok());
            let (mut linger1, mut linger_sharded) = (Medians::default(), Medians::default());
            let overwrite_mib: Option<u64> = std::env::var("STORE_OVERWRITE_MIB").ok().and_then(|v| v.parse().ok());
            let mut overwrite = Medians::default();
            let mut batches = Vec::new();
            for _ in 0..rounds {
                let (o, avg_batch) = run_ours(&fresh(root, "ours")?, writers, payload, dur, IoBackend::Std, 1)?;
                ours.add(&o);
                if asynchronous {
                    async1.add(&run_ours_async(StoreConfig { shards: 1, ..store_cfg(&fresh(root, "ours-async")?) }, writers, payload, dur)?);
                    async_sharded.add(&run_ours_async(StoreConfig { shards, ..store_cfg(&fresh(root, "ours-async-sharded")?) }, writers, payload, dur)?);
                    if let Some(us) = linger {
                        let lead_linger = Duration::from_micros(us);
                        linger1.add(&run_ours_async(StoreConfig { shards: 1, lead_linger, ..store_cfg(&fresh(root, "ours-linger")?) }, writers, payload, dur)?);
                        linger_sharded.add(&run_ours_async(StoreConfig { shards, lead_linger, ..store_cfg(&fresh(root, "ours-linger-sharded")?) }, writers, payload, dur)?);
                    }
                }
                sharded.add(&run_ours(&fresh(root, "ours-sharded")?, writers, payload, dur, IoBackend::Std, shards)?.0);
                if std::env::var("STORE_URING").is_ok_and(|v| v == "0") {
                    uring.add(&Run { ops: 0, bytes: 0, secs: 1.0, hist: new_hist()? });
                } else {
                    uring.add(&run_ours(&fresh(root, "ours-uring")?, writers, payload, dur, IoBackend::Uring, 1)?.0);
                }
                batches.push(avg_batch);
                straw.add(&run_std_group_commit(&fresh(root, "std")?, writers, payload, dur)?);
                raft.add(&run_raft_engine(&fresh(root, "raft")?, writers, payload, dur)?);
                device.add(&run_device_raw(&fresh(root, "raw")?, avg_batch as usize, dur)?);
                if let Some(mib) = overwrite_mib {
                    overwrite.add(&run_device_overwrite(&fresh(root, "overwrite")?, avg_batch as usize, mib << 20, dur)?);
                    let _ = std::fs::remove_dir_all(root.join("overwrite"));
                }
                if runtimes {
                    rt_glommio.add(&run_runtime_shards(&fresh(root, "glommio")?, writers, payload, dur, Runtime::Glommio, shards, glommio_mem)?);
                    rt_monoio.add(&run_runtime_shards(&fresh(root, "monoio")?, writers, payload, dur, Runtime::Monoio, shards, None)?);
                    rt_std.add(&run_runtime_shards(&fresh(root, "std-shards")?, writers, payload, dur, Runtime::Std, shards, None)?);
                }
            }
            println!(
                "{case}: ours {:.0}/s p50 {:.0} p99 {:.0} p999 {:.0} µs (avg batch {:.0} B) | ours_sharded({shards}) {:.0}/s p50 {:.0} p99 {:.0} | ours_uring {:.0}/s p99 {:.0} | std_group_commit {:.0}/s p99 {:.0} | raft_engine {:.0}/s p50 {:.0} p99 {:.0} | device_raw {:.2} MiB/s fdatasync p99 {:.0} µs",
                ours.ops(), median(ours.p50.clone()), ours.p99(), median(ours.p999.clone()), median(batches),
                sharded.ops(), median(sharded.p50.clone()), sharded.p99(),
                uring.ops(), uring.p99(), straw.ops(), straw.p99(), raft.ops(), median(raft.p50.clone()), raft.p99(), device.mibs(), device.p99()
            );
            Comparison::higher_is_better(&format!("{case}_ops"), ours.ops(), straw.ops(), "std_group_commit", "appends/s").print();
            Comparison::higher_is_better(&format!("{case}_uring_ops"), uring.ops(), ours.ops(), "ours_std", "appends/s").print();
            Comparison::lower_is_better(&format!("{case}_uring_p99"), uring.p99(), ours.p99(), "ours_std", "µs").print();
            Comparison::higher_is_better(&format!("{case}_ops"), ours.ops(), raft.ops(), "raft_engine", "appends/s").print();
            Comparison::higher_is_better(&format!("{case}_sharded{shards}_ops"), sharded.ops(), raft.ops(), "raft_engine", "appends/s").print();
            Comparison::lower_is_better(&format!("{case}_sharded{shards}_p99"), sharded.p99(), raft.p99(), "raft_engine", "µs").print();
            Comparison::higher_is_better(&format!("{case}_sharded{shards}_ops"), sharded.ops(), ours.ops(), "ours_1_shard", "appends/s").print();
            Comparison::lower_is_better(&format!("{case}_sharded{shards}_p99"), sharded.p99(), ours.p99(), "ours_1_shard", "µs").print();
            Comparison::lower_is_better(&format!("{case}_p99"), ours.p99(), raft.p99(), "raft_engine", "µs").print();
            Comparison::lower_is_better(&format!("{case}_p99"), ours.p99(), straw.p99(), "std_group_commit", "µs").print();
            Comparison::lower_is_better(&format!("{case}_p99"), ours.p99(), device.p99(), "device_raw_fdatasync", "µs").print();
            if overwrite_mib.is_some() {
                println!(
                    "{case}: device_overwrite {:.2} MiB/s {:.0} syncs/s fdatasync p50 {:.0} p99 {:.0} µs | device_raw (appending) {:.2} MiB/s {:.0} syncs/s p50 {:.0} p99 {:.0} µs",
                    overwrite.mibs(), overwrite.ops(), median(overwrite.p50.clone()), overwrite.p99(),
                    device.mibs(), device.ops(), median(device.p50.clone()), device.p99()
                );
                Comparison::higher_is_better(&format!("{case}_device_overwrite_syncs"), overwrite.ops(), device.ops(), "device_raw_appending", "syncs/s").print();
                Comparison::lower_is_better(&format!("{case}_device_overwrite_p99"), overwrite.p99(), device.p99(), "device_raw_appending", "µs").print();
            }
            if asynchronous {
                println!(
                    "{case}: ours_async {:.0}/s p50 {:.0} p99 {:.0} | ours_async_sharded({shards}) {:.0}/s p50 {:.0} p99 {:.0} µs",
                    async1.ops(), median(async1.p50.clone()), async1.p99(), async_sharded.ops(), median(async_sharded.p50.clone()), async_sharded.p99()
                );
                Comparison::higher_is_better(&format!("{case}_async_sharded{shards}_ops"), async_sharded.ops(), async1.ops(), "ours_async_1_shard", "appends/s").print();
                Comparison::lower_is_better(&format!("{case}_async_sharded{shards}_p99"), async_sharded.p99(), async1.p99(), "ours_async_1_shard", "µs").print();
                Comparison::higher_is_better(&format!("{case}_async_ops"), async1.ops(), raft.ops(), "raft_engine", "appends/s").print();
                if let Some(us) = linger {
                    println!(
                        "{case}: ours_async_linger({us} µs) {:.0}/s p50 {:.0} p99 {:.0} | ours_async_sharded_linger({shards}, {us} µs) {:.0}/s p50 {:.0} p99 {:.0} µs",
                        linger1.ops(), median(linger1.p50.clone()), linger1.p99(), linger_sharded.ops(), median(linger_sharded.p50.clone()), linger_sharded.p99()
                    );
                    for (name, m, base, base_name) in [("linger", &linger1, &async1, "ours_async"), ("linger_sharded", &linger_sharded, &async_sharded, "ours_async_sharded")] {
                        Comparison::higher_is_better(&format!("{case}_async_{name}_ops"), m.ops(), base.ops(), base_name, "appends/s").print();
                        Comparison::lower_is_better(&format!("{case}_async_{name}_p99"), m.p99(), base.p99(), base_name, "µs").print();
                        Comparison::higher_is_better(&format!("{case}_async_{name}_ops"), m.ops(), raft.ops(), "raft_engine", "appends/s").print();
                    }
                }
            }
            if runtimes {
                println!(
                    "{case}: runtime shards({shards}): glommio {:.0}/s p50 {:.0} p99 {:.0} | monoio {:.0}/s p50 {:.0} p99 {:.0} | std_thread {:.0}/s p50 {:.0} p99 {:.0} µs",
                    rt_glommio.ops(), median(rt_glommio.p50.clone()), rt_glommio.p99(),
                    rt_monoio.ops(), median(rt_monoio.p50.clone()), rt_monoio.p99(),
                    rt_std.ops(), median(rt_std.p50.clone()), rt_std.p99()
                );
                for (name, m) in [("glommio", &rt_glommio), ("monoio", &rt_monoio)] {
                    Comparison::higher_is_better(&format!("{case}_{name}{shards}_ops"), m.ops(), rt_std.ops(), "std_thread_shards", "appends/s").print();
                    Comparison::higher_is_better(&format!("{case}_{name}{shards}_ops"), m.ops(), sharded.ops(), "ours_sharded", "appends/s").print();
                    Comparison::lower_is_better(&format!("{case}_{name}{shards}_p99"), m.p99(), sharded.p99(), "ours_sharded", "µs").print();
                    Comparison::higher_is_better(&format!("{case}_{name}{shards}_ops"), m.ops(), raft.ops(), "raft_engine", "appends/s").print();
                }
            }
            // Durable payload bandwidth against the raw device at ours' batch size.
            Comparison::higher_is_better(&format!("{case}_mibs"), ours.mibs(), device.mibs(), "device_raw", "MiB/s (ours: payload)").print();
        }
    }
    Ok(())
}

/// The segment files of a store directory (one shard, or `shard-<i>/` subdirectories).
fn segment_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(segment_files(&p)?);
        } else if p.extension().is_some_and(|x| x == "seg") {
            out.push(p);
        }
    }
    Ok(out)
}

fn catch_up(root: &Path, shards: usize) -> Result<()> {
    let dir = fresh(root, "catchup")?;
    let total: usize = 128 << 20;
    let payload = 1024usize;
    let n = total / payload;
    {
        let store = Store::open(StoreConfig { sync_log: false, segment_size: 64 << 20, shards, ..store_cfg(&dir) })?;
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
        for p in segment_files(&dir)? {
            let mut f = File::open(&p)?;
            loop {
                let k = f.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                bytes += k as u64;
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
    let name = if shards == 1 { String::new() } else { format!("_{shards}shards") };
    println!(
        "# catch-up ({shards} shard(s)): pulled {} binlogs ({} MiB payload) in {pull_secs:.2} s; raw read of {} MiB in {raw_secs:.2} s; open {open_secs:.3} s",
        got.0, got.1 >> 20, raw_bytes >> 20
    );
    Comparison::higher_is_better(&format!("store_catch_up_1KiB{name}"), mib(got.1, pull_secs), mib(raw_bytes, raw_secs), "raw_read_1MiB", "MiB/s").print();
    Comparison::lower_is_better(&format!("store_open_128MiB{name}"), open_secs * 1000.0, raw_secs * 1000.0, "raw_read_1MiB", "ms").print();
    Ok(())
}

/// Appends `total` bytes of 1 KiB fakes to a store in `dir` without syncing (fast setup).
fn fill_store(dir: &Path, total: u64, segment_size: u64, shards: usize) -> Result<()> {
    let store = Store::open(StoreConfig { sync_log: false, segment_size, shards, ..store_cfg(dir) })?;
    let base = now_ts();
    let body = Bytes::from(vec![0x33u8; 1024]);
    let n = total / 1024;
    // Eight threads: the leader/follower path batches them without a runtime.
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (store, next, body) = (store.clone(), next.clone(), body.clone());
            std::thread::spawn(move || -> Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    let ts = base + i as i64 + 1;
                    store.append_blocking(Record { kind: Kind::Fake, start_ts: ts, commit_ts: ts, payload: body.clone() })?;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("fill thread panicked"))??;
    }
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(store.close());
    Ok(())
}

/// Reads every file under `dir` once with 1 MiB reads; (bytes, seconds).
fn raw_read(dir: &Path) -> Result<(u64, f64)> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_file() {
            files.push(p);
        }
    }
    raw_read_files(&files)
}

/// Reads each of `files` once with 1 MiB reads; (bytes, seconds).
fn raw_read_files(files: &[PathBuf]) -> Result<(u64, f64)> {
    let t = Instant::now();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for p in files {
        let mut f = File::open(p)?;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            bytes += k as u64;
        }
    }
    Ok((bytes, t.elapsed().as_secs_f64()))
}

/// Seconds `Store::open` takes on `dir`, which must hold records in `shards` shards.
fn timed_open(dir: &Path, shards: usize) -> Result<f64> {
    let t = Instant::now();
    let store = Store::open(store_cfg(dir))?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(store.shard_count() == shards, "{}: reopened {} shards of {shards}", dir.display(), store.shard_count());
    anyhow::ensure!(store.max_commit_ts() > 0, "{}: recovered store is empty", dir.display());
    Ok(secs)
}

/// Recovery of a 2 GiB log: our open against a raw read of every byte and against raft-engine's reopen
/// of 2 GiB of 1 KiB entries. Page cache warm for all (each was just written and read once).
fn recovery(root: &Path, rounds: usize) -> Result<()> {
    let total: u64 = 2 << 30;
    let ours_dir = fresh(root, "recovery-ours")?;
    fill_store(&ours_dir, total, 512 << 20, 1)?;
    let shards = bench_shards();
    let sharded_dir = fresh(root, "recovery-sharded")?;
    fill_store(&sharded_dir, total, 512 << 20, shards)?;
    // The worst case: the same 2 GiB never sealed (one 4 GiB segment), so open must scan all of it.
    let unsealed_dir = fresh(root, "recovery-unsealed")?;
    fill_store(&unsealed_dir, total, 4 << 30, 1)?;
    let raft_dir = fresh(root, "recovery-raft")?;
    {
        let cfg = raft_engine::Config {
            dir: raft_dir.to_string_lossy().into_owned(),
            batch_compression_threshold: raft_engine::ReadableSize(0),
            ..Default::default()
        };
        let engine = raft_engine::Engine::open(cfg)?;
        let body = vec![0x33u8; 1024];
        let n = total / 1024;
        let mut k = 0u64;
        while k < n {
            let mut b = raft_engine::LogBatch::default();
            for _ in 0..256 {
                b.put(1 + k % 64, k.to_be_bytes().to_vec(), body.clone())?;
                k += 1;
            }
            engine.write(&mut b, false)?;
        }
        engine.sync()?;
    }
    let (mut ours, mut unsealed, mut raw, mut raft) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut sharded, mut sharded_raw) = (Vec::new(), Vec::new());
    let mut raw_bytes = 0;
    for _ in 0..rounds {
        let (b, secs) = raw_read(&ours_dir)?;
        raw_bytes = b;
        raw.push(secs);
        ours.push(timed_open(&ours_dir, 1)?);
        sharded_raw.push(raw_read_files(&segment_files(&sharded_dir)?)?.1);
        sharded.push(timed_open(&sharded_dir, shards)?);
        unsealed.push(timed_open(&unsealed_dir, 1)?);
        let t = Instant::now();
        let engine = raft_engine::Engine::open(raft_engine::Config {
            dir: raft_dir.to_string_lossy().into_owned(),
            ..Default::default()
        })?;
        raft.push(t.elapsed().as_secs_f64());
        drop(engine);
    }
    let segs = std::fs::read_dir(&ours_dir)?.filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))).count();
    let (ours, raw, raft) = (median(ours) * 1000.0, median(raw) * 1000.0, median(raft) * 1000.0);
    let unsealed = median(unsealed) * 1000.0;
    let (sharded, sharded_raw) = (median(sharded) * 1000.0, median(sharded_raw) * 1000.0);
    println!(
        "# recovery of the same 2 GiB in {shards} shards (512 MiB segments): open {sharded:.0} ms | raw read of its segment files {sharded_raw:.0} ms (medians of {rounds})"
    );
    Comparison::lower_is_better(&format!("store_recovery_2GiB_{shards}shards"), sharded, sharded_raw, "raw_read_1MiB", "ms").print();
    Comparison::lower_is_better(&format!("store_recovery_2GiB_{shards}shards"), sharded, raft, "raft_engine_reopen", "ms").print();
    Comparison::lower_is_better(&format!("store_recovery_2GiB_{shards}shards"), sharded, ours, "ours_1_shard", "ms").print();
    println!(
        "# recovery of a 2 GiB log ({} MiB in {segs} segments of 512 MiB): open {ours:.0} ms | all in one unsealed segment: open {unsealed:.0} ms | raw read of every byte {raw:.0} ms | raft_engine reopen {raft:.0} ms (medians of {rounds})",
        raw_bytes >> 20
    );
    Comparison::lower_is_better("store_recovery_2GiB_unsealed", unsealed, raw, "raw_read_1MiB", "ms").print();
    Comparison::lower_is_better("store_recovery_2GiB_unsealed", unsealed, raft, "raft_engine_reopen", "ms").print();
    Comparison::lower_is_better("store_recovery_2GiB", ours, raw, "raw_read_1MiB", "ms").print();
    Comparison::lower_is_better("store_recovery_2GiB", ours, raft, "raft_engine_reopen", "ms").print();
    let _ = std::fs::remove_dir_all(&ours_dir);
    let _ = std::fs::remove_dir_all(&raft_dir);
    let _ = std::fs::remove_dir_all(&unsealed_dir);
    let _ = std::fs::remove_dir_all(&sharded_dir);
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
    if std::env::var("STORE_PIPELINE").is_ok_and(|v| v == "1") {
        pipeline_appends(&root, Duration::from_secs_f64(secs), rounds)?;
        let _ = std::fs::remove_dir_all(&root);
        return Ok(());
    }
    if secs > 0.0 {
        appends(&root, Duration::from_secs_f64(secs), rounds)?;
    }
    let catch_up_only = std::env::var("STORE_CATCHUP").is_ok_and(|v| v == "1");
    if std::env::var("STORE_CASE").is_ok() && !catch_up_only {
        let _ = std::fs::remove_dir_all(&root);
        return Ok(());
    }
    catch_up(&root, 1)?;
    catch_up(&root, bench_shards())?;
    if catch_up_only {
        let _ = std::fs::remove_dir_all(&root);
        return Ok(());
    }
    recovery(&root, rounds)?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
