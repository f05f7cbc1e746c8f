//! The pump server's write path side by side with pump-store alone, in one process run.
//!
//! `pump_server [SECONDS_PER_CASE] [ROUNDS] [PAYLOAD_BYTES]` (defaults 3 s, 3 rounds, 1024 B;
//! `PUMP_BENCH_CLIENTS=64` runs only that client count, e.g. to profile one case). Needs the `pump`
//! binary built in the same profile (`cargo build --release -p pump -p bench --bins`).
//!
//! For 1, 16 and 64 concurrent clients, each writes transactions as TiDB does (a Prewrite binlog
//! carrying the payload, then its Commit binlog; every write is acknowledged only once durable):
//! * ours: the real `pump` process (sync-log on, default config) over gRPC `WriteBinlog`, one
//!   connection per client, registered in PD's etcd. The clients run in a separate load-generator
//!   process (this binary re-run with `--load-client`), so the server's CPU and the clients' CPU are
//!   measured apart;
//! * baseline: `pump_store::Store::append` in this process with the same records and the same shard
//!   count as the pump's store (no gRPC, no protobuf decoding, no server).
//!
//! Reported per case: WriteBinlog calls/s and p50/p99 per call, and the CPU each process used over
//! the run (from `/proc/<pid>/stat` utime+stime) as cores busy and as µs per call. The goals
//! are ≥ 80 % of the store's throughput and p99 within the store's p99 + 0.5 ms. Medians over the
//! rounds.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::Comparison;
use bytes::Bytes;
use hdrhistogram::Histogram;
use prost::Message;
use pump::proto::pump_client::PumpClient;
use pump::proto::{Binlog, BinlogType, WriteBinlogReq};
use pump_store::{Kind, Record, Store, StoreConfig};

struct Run {
    calls: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.calls as f64 / self.secs
    }
}

fn prewrite(start_ts: i64, value: &[u8]) -> Vec<u8> {
    Binlog {
        tp: Some(BinlogType::Prewrite as i32),
        start_ts: Some(start_ts),
        commit_ts: Some(0),
        prewrite_key: Some(b"t\x80pk".to_vec()),
        prewrite_value: Some(value.to_vec()),
        ddl_job_id: Some(0),
        ..Binlog::default()
    }
    .encode_to_vec()
}

fn commit(start_ts: i64, commit_ts: i64) -> Vec<u8> {
    Binlog {
        tp: Some(BinlogType::Commit as i32),
        start_ts: Some(start_ts),
        commit_ts: Some(commit_ts),
        prewrite_key: Some(b"t\x80pk".to_vec()),
        ddl_job_id: Some(0),
        ..Binlog::default()
    }
    .encode_to_vec()
}

/// Runs `clients` tasks of `txn` (which makes two acknowledged writes) until `dur` passed.
async fn drive<F, Fut>(clients: usize, dur: Duration, txn: F) -> Result<Run>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(Duration, Duration)>> + Send,
{
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let txn = txn.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let (p, c2) = txn(c).await?;
                h.record(p.as_micros().max(1) as u64)?;
                h.record(c2.as_micros().max(1) as u64)?;
                n += 2;
            }
            anyhow::Ok((n, h))
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut calls = 0;
    for t in tasks {
        let (n, h) = t.await??;
        calls += n;
        hist.add(h)?;
    }
    let ms = |q| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(Run { calls, secs: start.elapsed().as_secs_f64(), p50_ms: ms(0.5), p99_ms: ms(0.99) })
}

async fn via_server(addr: &str, clients: usize, dur: Duration, payload: Arc<Vec<u8>>, cluster_id: u64, ts: Arc<AtomicI64>) -> Result<Run> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(PumpClient::connect(format!("http://{addr}")).await.context("connecting to the pump")?);
    }
    let conns = Arc::new(conns);
    drive(clients, dur, move |c| {
        let (conns, payload, ts) = (conns.clone(), payload.clone(), ts.clone());
        async move {
            let mut client = conns[c].clone();
            let s = ts.fetch_add(2, Ordering::Relaxed);
            let t = Instant::now();
            let r = client.write_binlog(WriteBinlogReq { cluster_id, payload: prewrite(s, &payload).into() }).await?.into_inner();
            if !r.errmsg.is_empty() {
                bail!("prewrite refused: {}", r.errmsg);
            }
            let p = t.elapsed();
            let t = Instant::now();
            let r = client.write_binlog(WriteBinlogReq { cluster_id, payload: commit(s, s + 1).into() }).await?.into_inner();
            if !r.errmsg.is_empty() {
                bail!("commit refused: {}", r.errmsg);
            }
            Ok((p, t.elapsed()))
        }
    })
    .await
}

async fn store_alone(store: Arc<Store>, clients: usize, dur: Duration, payload: Arc<Vec<u8>>, ts: Arc<AtomicI64>) -> Result<Run> {
    drive(clients, dur, move |_| {
        let (store, payload, ts) = (store.clone(), payload.clone(), ts.clone());
        async move {
            let s = ts.fetch_add(2, Ordering::Relaxed);
            let t = Instant::now();
            let p = Bytes::from(prewrite(s, &payload));
            store.append(Record { kind: Kind::Prewrite, start_ts: s, commit_ts: 0, payload: p }).await?;
            let pd = t.elapsed();
            let t = Instant::now();
            let c = Bytes::from(commit(s, s + 1));
            store.append(Record { kind: Kind::Commit, start_ts: s, commit_ts: s + 1, payload: c }).await?;
            Ok((pd, t.elapsed()))
        }
    })
    .await
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat` (USER_HZ = 100).
fn cpu_secs(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesized command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("no ')' in /proc/<pid>/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> { Ok(f.get(i).context("short /proc/<pid>/stat")?.parse::<f64>()?) };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Seconds a process's threads have spent runnable but waiting for a CPU, summed over its current
/// threads (`/proc/<pid>/task/*/schedstat`, second field, ns).
fn runq_secs(pid: &str) -> Result<f64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| format!("listing /proc/{pid}/task"))? {
        // A thread may exit between the listing and the read.
        let Ok(s) = std::fs::read_to_string(t?.path().join("schedstat")) else { continue };
        ns += s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(ns as f64 / 1e9)
}

/// The load-generator process: `--load-client ADDR CLUSTER_ID PAYLOAD_BYTES`, then one line per run on
/// stdin, `CLIENTS SECONDS FIRST_TS`, answered with `CALLS SECS P50_MS P99_MS NEXT_TS` on stdout.
fn load_client(args: &[String]) -> Result<()> {
    let [addr, cluster_id, size] = args else { bail!("usage: pump_server --load-client ADDR CLUSTER_ID PAYLOAD_BYTES") };
    let cluster_id: u64 = cluster_id.parse()?;
    let size: usize = size.parse()?;
    let payload = Arc::new((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let [clients, secs, first_ts] = f.as_slice() else { bail!("bad command {line:?}") };
        let ts = Arc::new(AtomicI64::new(first_ts.parse()?));
        let dur = Duration::from_secs_f64(secs.parse()?);
        let r = rt.block_on(via_server(addr, clients.parse()?, dur, payload.clone(), cluster_id, ts.clone()))?;
        writeln!(out, "{} {} {} {} {}", r.calls, r.secs, r.p50_ms, r.p99_ms, ts.load(Ordering::Relaxed))?;
        out.flush()?;
    }
    Ok(())
}

/// The load-generator child, driven over its stdin/stdout.
struct LoadClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl LoadClient {
    fn spawn(addr: &str, cluster_id: u64, size: usize) -> Result<LoadClient> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--load-client", addr, &cluster_id.to_string(), &size.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the load-generator process")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(LoadClient { child, stdin, stdout })
    }

    /// One run; returns it and the next unused ts.
    fn run(&mut self, clients: usize, secs: f64, first_ts: i64) -> Result<(Run, i64)> {
        writeln!(self.stdin, "{clients} {secs} {first_ts}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the load-generator process exited");
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [calls, secs, p50, p99, next] = f.as_slice() else { bail!("bad load-generator answer {line:?}") };
        Ok((Run { calls: calls.parse()?, secs: secs.parse()?, p50_ms: p50.parse()?, p99_ms: p99.parse()? }, next.parse()?))
    }
}

impl Drop for LoadClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Rounds {
    s_rate: Vec<f64>,
    s_p50: Vec<f64>,
    s_p99: Vec<f64>,
    s_cpu: Vec<f64>,
    c_cpu: Vec<f64>,
    s_runq: Vec<f64>,
    c_runq: Vec<f64>,
    s_us: Vec<f64>,
    b_rate: Vec<f64>,
    b_p50: Vec<f64>,
    b_p99: Vec<f64>,
    b_cpu: Vec<f64>,
    b_us: Vec<f64>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--load-client") {
        return load_client(&args[2..]);
    }
    let secs: f64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3.0);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let size: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let dur = Duration::from_secs_f64(secs);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    let cluster = tests::Cluster::builder().pd().start()?;
    let etcd = cluster.pd().url();
    let root = cluster.dir().to_path_buf();
    let mut pump = tests::nodes::Node::pump(
        &root.join("pump"),
        &etcd,
        "bench-pump",
        // `Node::pump` stops writes only below 1 MiB free, so the machine's free disk does not matter.
        &["-fake-binlog-interval=3600".into(), "-heartbeat-interval=1".into(), "-L=warn".into()],
    )?;
    let addr = pump.addr();
    let pump_pid = pump.pid().context("the pump is not running")?.to_string();
    let (cluster_id, first_ts) = rt.block_on(async {
        let pd = pump::pd::PdClient::connect(&pump::etcd::EtcdConfig::from_pd_urls(&etcd)?).await?;
        anyhow::Ok((pd.cluster_id(), pd.get_ts().await? as i64))
    })?;
    // One ts sequence above every TSO value the pump has seen, shared by both systems.
    let mut next_ts = first_ts + (1 << 18);
    // The pump's default `[storage] shards` (0: automatic), so both sides have as many group commits.
    let store = Arc::new(Store::open(StoreConfig {
        dir: root.join("store-alone"),
        stop_write_at_available_space: 1 << 20,
        shards: pump::server::config::Config::default().storage.shards,
        ..StoreConfig::default()
    })?);
    let payload = Arc::new((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
    let mut load = LoadClient::spawn(&addr, cluster_id, size)?;
    let client_pid = load.child.id().to_string();
    let me = std::process::id().to_string();

    println!("pump server vs pump-store alone: {size} B prewrite values, {secs} s per case, {rounds} rounds");
    println!("CPU: cores busy over the run (utime+stime / wall) and µs of CPU per WriteBinlog call");
    println!("runq: threads waiting for a CPU, on average over the run (schedstat run-queue time / wall)");
    println!(
        "{:<8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} | {:>9} {:>7} {:>7} {:>7} {:>7} | {:>6}",
        "clients", "server/s", "p50 ms", "p99 ms", "srvCPU", "cliCPU", "srv µs", "store/s", "p50 ms", "p99 ms", "CPU", "µs", "ratio"
    );
    let counts: Vec<usize> = match std::env::var("PUMP_BENCH_CLIENTS") {
        Ok(v) => v.split(',').map(|c| c.trim().parse().context("PUMP_BENCH_CLIENTS: a comma-separated list of client counts")).collect::<Result<_>>()?,
        Err(_) => vec![1, 16, 64],
    };
    for clients in counts {
        let mut r = Rounds::default();
        for _ in 0..rounds {
            let (s0, c0) = (cpu_secs(&pump_pid)?, cpu_secs(&client_pid)?);
            let (sq0, cq0) = (runq_secs(&pump_pid)?, runq_secs(&client_pid)?);
            let (s, next) = load.run(clients, secs, next_ts)?;
            let (s1, c1) = (cpu_secs(&pump_pid)?, cpu_secs(&client_pid)?);
            let (sq1, cq1) = (runq_secs(&pump_pid)?, runq_secs(&client_pid)?);
            r.s_runq.push((sq1 - sq0) / s.secs);
            r.c_runq.push((cq1 - cq0) / s.secs);
            next_ts = next;
            let ts = Arc::new(AtomicI64::new(next_ts));
            let b0 = cpu_secs(&me)?;
            let b = rt.block_on(store_alone(store.clone(), clients, dur, payload.clone(), ts.clone()))?;
            let b1 = cpu_secs(&me)?;
            next_ts = ts.load(Ordering::Relaxed);
            r.s_rate.push(s.per_sec());
            r.s_p50.push(s.p50_ms);
            r.s_p99.push(s.p99_ms);
            r.s_cpu.push((s1 - s0) / s.secs);
            r.c_cpu.push((c1 - c0) / s.secs);
            r.s_us.push((s1 - s0) * 1e6 / s.calls as f64);
            r.b_rate.push(b.per_sec());
            r.b_p50.push(b.p50_ms);
            r.b_p99.push(b.p99_ms);
            r.b_cpu.push((b1 - b0) / b.secs);
            r.b_us.push((b1 - b0) * 1e6 / b.calls as f64);
        }
        let (s, b) = (median(r.s_rate), median(r.b_rate));
        let (s99, b99) = (median(r.s_p99), median(r.b_p99));
        println!(
            "{clients:<8} {s:>9.0} {:>7.2} {s99:>7.2} {:>7.2} {:>7.2} {:>7.1} | {b:>9.0} {:>7.2} {b99:>7.2} {:>7.2} {:>7.1} | {:>6.2}",
            median(r.s_p50),
            median(r.s_cpu),
            median(r.c_cpu),
            median(r.s_us),
            median(r.b_p50),
            median(r.b_cpu),
            median(r.b_us),
            s / b
        );
        Comparison::higher_is_better(&format!("pump_server_writebinlog_{clients}c_{size}B"), s, b, "pump_store_alone", "calls/s").print();
        Comparison::lower_is_better(&format!("pump_server_writebinlog_p99_{clients}c_{size}B"), s99, b99, "pump_store_alone", "ms").print();
        println!(
            "  runq: server {:.2}, load generator {:.2}; p99 goal (server ≤ store + 0.5 ms): {}",
            median(r.s_runq),
            median(r.c_runq),
            if s99 <= b99 + 0.5 { "met" } else { "missed" }
        );
    }
    drop(load);
    pump.kill();
    Ok(())
}
