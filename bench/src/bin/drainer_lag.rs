//! Drainer memory under lag: a pump holding N committed DML transactions the drainer has not read yet,
//! then a drainer (file sink) started from before the first one; its RSS is sampled every 100 ms until
//! its checkpoint passes the last transaction.
//!
//! `drainer_lag [SMALL] [LARGE]` (defaults 100000 and 1000000 transactions of one 4-column row each).
//! The comparison is the drainer against itself: peak RSS at LARGE lag over peak RSS at SMALL lag
//! (bounded memory means a ratio near 1, not near LARGE/SMALL). Also printed: catch-up time and rate.
//!
//! `drainer_lag e2e [SECONDS]` (default 20): end-to-end lag, commit → file-sink record, at 50 % of the
//! pipeline's max load. Three pumps, 16 writers (each on one pump), a drainer with the file sink. Phase
//! A writes unpaced for 10 s and takes max load = transactions / time until the last one is in the
//! file; phase B writes at half that rate for SECONDS. Lag of a transaction = the wall clock when a
//! tailer (polling every 2 ms) sees its record in the file minus the physical part of its commit ts.
//! Baseline in the same run: the same transactions' lag to a plain `PullBinlogs` client of their pump.
//!
//! Needs `pump` and `drainer` built in the same profile (`cargo build --release -p pump -p drainer -p bench`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bench::Comparison;
use bench::standin::catalog::{Catalog, DdlOp};
use bench::standin::tables::Kind;
use prost::Message;
use pump::proto::pump_client::PumpClient;
use pump::proto::{Binlog, BinlogType, MutationType, PrewriteValue, TableMutation, WriteBinlogReq};
use drainer::tidb::codec::{Datum, Handle};
use drainer::tidb::row::encode_insert_row;

struct Outcome {
    peak_rss_mib: f64,
    catch_up_secs: f64,
    txns: u64,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// One PD, `pumps` pumps, the TSO and a status API serving one table without a primary key.
struct Env {
    rt: tokio::runtime::Runtime,
    cluster: tests::Cluster,
    pumps: Vec<tests::nodes::Node>,
    cluster_id: u64,
    tso: pump::pd::PdClient,
    table_id: i64,
    version: i64,
    status_addr: String,
}

impl Env {
    fn start(pumps: usize) -> Result<Env> {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let cluster = tests::Cluster::builder().pd().start()?;
        let etcd = cluster.pd().url();
        let root = cluster.dir().to_path_buf();
        let mut nodes = Vec::new();
        for i in 0..pumps {
            nodes.push(tests::nodes::Node::pump(
                &root.join(format!("pump{i}")),
                &etcd,
                &format!("lag-pump-{i}"),
                // `Node::pump` stops writes only below 1 MiB free, so the machine's free disk does not matter.
                &["-fake-binlog-interval=1".into(), "-heartbeat-interval=1".into(), "-L=warn".into()],
            )?);
        }
        let (cluster_id, tso) = rt.block_on(async {
            let pd = pump::pd::PdClient::connect(&pump::etcd::EtcdConfig::from_pd_urls(&etcd)?).await?;
            anyhow::Ok((pd.cluster_id(), pd))
        })?;
        // Schema: one database, one table without a primary key (implicit row id handle), served as
        // TiDB's status API for the drainer.
        let mut catalog = Catalog::new();
        for op in [
            DdlOp::CreateSchema { db: "lag".into() },
            DdlOp::CreateTable { db: "lag".into(), table: "t_nopk_0".into(), kind: Kind::NoPk },
        ] {
            let ts = rt.block_on(tso.get_ts())?;
            let mut job = catalog.plan(&op, ts)?;
            if let Some(info) = job.binlog.as_mut() {
                info.finished_ts = ts + 1;
            }
            catalog.apply(&job);
        }
        let table_id = catalog.table_by_name("lag", "t_nopk_0").context("the table")?.id;
        let version = catalog.version();
        let status_addr = format!("127.0.0.1:{}", tests::free_port());
        let listener = rt.block_on(tokio::net::TcpListener::bind(&status_addr))?;
        let router = bench::standin::status::router(Arc::new(std::sync::RwLock::new(catalog)));
        rt.spawn(async move { axum::serve(listener, router).await });
        Ok(Env { rt, cluster, pumps: nodes, cluster_id, tso, table_id, version, status_addr })
    }

    fn root(&self) -> std::path::PathBuf {
        self.cluster.dir().to_path_buf()
    }

    /// A writer's connection and what its transactions need.
    async fn writer(&self, pump: usize) -> Result<Writer> {
        let c = PumpClient::connect(format!("http://{}", self.pumps[pump].addr())).await?;
        Ok(Writer { c, tso: self.tso.clone(), cluster_id: self.cluster_id, table_id: self.table_id, version: self.version })
    }

    /// Starts a drainer with the file sink from `initial` (not waiting for it to be online, so that
    /// sampling and clocks cover its start-up).
    fn drainer(&self, initial: i64) -> Result<(tests::Proc, String)> {
        let root = self.root();
        let cfg = root.join("drainer.toml");
        std::fs::write(&cfg, "[syncer]\ndb-type = \"file\"\n")?;
        let daddr = format!("127.0.0.1:{}", tests::free_port());
        let mut cmd = std::process::Command::new(tests::our_binary("drainer"));
        cmd.arg(format!("-config={}", cfg.display()))
            .arg(format!("-addr={daddr}"))
            .arg(format!("-advertise-addr={daddr}"))
            .arg(format!("-data-dir={}", root.join("drainer").join("data").display()))
            .arg(format!("-pd-urls={}", self.cluster.pd().url()))
            .arg("-node-id=lag-drainer")
            .arg(format!("-initial-commit-ts={initial}"))
            .arg(format!("-schema-source=http://{}", self.status_addr))
            .arg("-L=warn");
        Ok((tests::Proc::spawn("drainer", cmd, &root.join("drainer.log"))?, daddr))
    }
}

struct Writer {
    c: PumpClient<tonic::transport::Channel>,
    tso: pump::pd::PdClient,
    cluster_id: u64,
    table_id: i64,
    version: i64,
}

impl Writer {
    /// One transaction as TiDB writes it: a P with one inserted row, acknowledged, then its C with a
    /// commit ts taken after the P's ack. Returns the commit ts.
    async fn txn(&mut self, row: i64) -> Result<i64> {
        let s = self.tso.get_ts().await? as i64;
        let cols = vec![
            (1, Datum::I64(row)),
            (2, Datum::Bytes(format!("value-{row:012}-padding-to-about-64-bytes-of-text").into_bytes())),
            (3, Datum::I64(row % 1000)),
            (4, Datum::Null),
        ];
        let m = TableMutation {
            table_id: Some(self.table_id),
            inserted_rows: vec![encode_insert_row(&Handle::Int(row), &cols)],
            sequence: vec![MutationType::Insert as i32],
            ..TableMutation::default()
        };
        let pv = PrewriteValue { schema_version: Some(self.version), mutations: vec![m] };
        let p = Binlog {
            tp: Some(BinlogType::Prewrite as i32),
            start_ts: Some(s),
            commit_ts: Some(0),
            prewrite_key: Some(b"t\x80r".to_vec()),
            prewrite_value: Some(pv.encode_to_vec()),
            ddl_job_id: Some(0),
            ..Binlog::default()
        };
        let mut cb = p.clone();
        cb.tp = Some(BinlogType::Commit as i32);
        cb.prewrite_value = None;
        let r = self.c.write_binlog(WriteBinlogReq { cluster_id: self.cluster_id, payload: p.encode_to_vec().into() }).await?.into_inner();
        if !r.errmsg.is_empty() {
            bail!("pump refused: {}", r.errmsg);
        }
        let commit_ts = self.tso.get_ts().await? as i64;
        cb.commit_ts = Some(commit_ts);
        let r = self.c.write_binlog(WriteBinlogReq { cluster_id: self.cluster_id, payload: cb.encode_to_vec().into() }).await?.into_inner();
        if !r.errmsg.is_empty() {
            bail!("pump refused: {}", r.errmsg);
        }
        Ok(commit_ts)
    }
}

fn run(txns: u64) -> Result<Outcome> {
    let env = Env::start(1)?;
    let rt = &env.rt;
    let root = env.root();
    let initial = rt.block_on(env.tso.get_ts())? as i64;

    // Fill the pump: 16 writers.
    let started = Instant::now();
    let last_commit = rt.block_on(async {
        let per = txns / 16;
        let mut tasks = Vec::new();
        for w in 0..16u64 {
            let n = if w == 15 { txns - per * 15 } else { per };
            let mut writer = env.writer(0).await?;
            tasks.push(tokio::spawn(async move {
                let mut last = 0i64;
                for i in 0..n {
                    last = last.max(writer.txn((w * 1_000_000_000 + i) as i64).await?);
                }
                anyhow::Ok(last)
            }));
        }
        let mut last = 0;
        for t in tasks {
            last = last.max(t.await??);
        }
        anyhow::Ok(last)
    })?;
    eprintln!("  filled the pump with {txns} transactions in {:.1} s", started.elapsed().as_secs_f64());

    // The drainer, from before the first transaction.
    let (drainer, daddr) = env.drainer(initial)?;
    let pid = drainer.pid();
    let started = Instant::now();
    let mut peak = 0u64;
    loop {
        if let Some(r) = rss_kib(pid) {
            peak = peak.max(r);
        }
        let ts = rt
            .block_on(http_get(&daddr, "/commit_ts"))
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["data"]["ts"].as_i64())
            .unwrap_or(0);
        if ts >= last_commit {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the drainer did not catch up in 30 min (at {ts}, want {last_commit})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let catch_up_secs = started.elapsed().as_secs_f64();
    // Every transaction was really translated and written, not skipped.
    let metrics = rt.block_on(http_get(&daddr, "/metrics")).unwrap_or_default();
    let inserts: f64 = metrics
        .lines()
        .find(|l| l.starts_with("binlog_drainer_event{type=\"Insert\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let bytes: u64 = std::fs::read_dir(root.join("drainer").join("data"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("binlog-"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    eprintln!("  drainer translated {inserts} inserted rows and wrote {:.1} MiB of binlog files", bytes as f64 / (1 << 20) as f64);
    if inserts as u64 != txns {
        bail!("the drainer translated {inserts} inserted rows, want {txns}");
    }
    Ok(Outcome { peak_rss_mib: peak as f64 / 1024.0, catch_up_secs, txns })
}

/// Tails the file sink's directory: every record's commit ts with the wall clock (ms) it was seen at;
/// `count` follows how many records it has seen so far.
fn tail_files(
    dir: std::path::PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    count: Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<Result<Vec<(i64, i64)>>> {
    std::thread::spawn(move || {
        use std::io::{Read, Seek, SeekFrom};
        let mut seen = Vec::new();
        let (mut file_idx, mut pos, mut pending) = (0usize, 0u64, Vec::<u8>::new());
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            let files = drainer::sink::file::binlogfile::list_files(&dir).unwrap_or_default();
            let Some((path, _)) = files.get(file_idx) else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let mut f = std::fs::File::open(path)?;
            f.seek(SeekFrom::Start(pos))?;
            let n = f.read_to_end(&mut pending)?;
            pos += n as u64;
            let now = pump::tso::now_ms() as i64;
            // Whole records only; a record cut by a partial write waits for the next poll.
            let mut at = 0;
            while pending.len() - at >= 12 {
                let len = u64::from_le_bytes(pending[at + 4..at + 12].try_into()?) as usize;
                if pending.len() - at < 12 + len + 4 {
                    break;
                }
                let b = drainer::proto::pb::Binlog::decode(&pending[at + 12..at + 12 + len])?;
                seen.push((b.commit_ts(), now));
                count.store(seen.len(), std::sync::atomic::Ordering::Release);
                at += 16 + len;
            }
            pending.drain(..at);
            if n == 0 {
                if files.len() > file_idx + 1 && pending.is_empty() {
                    (file_idx, pos) = (file_idx + 1, 0);
                } else {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        Ok(seen)
    })
}

/// Pulls every pump directly: each committed transaction's commit ts with the wall clock (ms) its
/// pump streamed it.
fn pull_pumps(env: &Env, from: i64, seen: Arc<std::sync::Mutex<Vec<(i64, i64)>>>) {
    for p in &env.pumps {
        let (addr, seen, cluster_id) = (p.addr(), seen.clone(), env.cluster_id);
        env.rt.spawn(async move {
            let mut c = PumpClient::connect(format!("http://{addr}")).await?;
            let req = pump::proto::PullBinlogReq {
                cluster_id,
                start_from: Some(pump::proto::Pos { suffix: 0, offset: from }),
            };
            let mut stream = c.pull_binlogs(req).await?.into_inner();
            while let Some(resp) = stream.message().await? {
                let now = pump::tso::now_ms() as i64;
                let Some(e) = resp.entity else { continue };
                let b = Binlog::decode(e.payload.as_slice())?;
                if b.start_ts() != b.commit_ts() {
                    seen.lock().expect("lock").push((b.commit_ts(), now));
                }
            }
            anyhow::Ok(())
        });
    }
}

fn percentiles(lags: &[i64]) -> (f64, f64, f64) {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for &l in lags {
        h.record(l.max(0) as u64).expect("record");
    }
    (h.value_at_quantile(0.5) as f64, h.value_at_quantile(0.99) as f64, h.max() as f64)
}

/// `writers` writers spread over the pumps for `how_long`, each unpaced or one transaction per
/// `every`; row ids from `first_row`. Returns the transactions written.
fn write_for(env: &Env, writers: usize, how_long: Duration, every: Option<Duration>, first_row: usize) -> Result<usize> {
    env.rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let mut writer = env.writer(w % env.pumps.len()).await?;
            tasks.push(tokio::spawn(async move {
                let mut tick = every.map(tokio::time::interval);
                if let Some(t) = tick.as_mut() {
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                }
                let mut n = 0usize;
                while start.elapsed() < how_long {
                    if let Some(t) = tick.as_mut() {
                        t.tick().await;
                    }
                    writer.txn((first_row + w * 1_000_000_000 + n) as i64).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        anyhow::Ok(total)
    })
}

fn e2e(secs: u64) -> Result<()> {
    const WRITERS: usize = 16;
    let env = Env::start(3)?;
    let initial = env.rt.block_on(env.tso.get_ts())? as i64;
    let (_drainer, _daddr) = env.drainer(initial)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tailed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tailer = tail_files(env.root().join("drainer").join("data"), stop.clone(), tailed.clone());
    let pulled = Arc::new(std::sync::Mutex::new(Vec::new()));
    pull_pumps(&env, initial, pulled.clone());
    let tailed_count = || tailed.load(std::sync::atomic::Ordering::Acquire);

    // Phase A: unpaced, to find the pipeline's max load.
    eprintln!("phase A: {WRITERS} writers unpaced for 10 s");
    let t0 = Instant::now();
    let written_a = write_for(&env, WRITERS, Duration::from_secs(10), None, 0)?;
    while tailed_count() < written_a {
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("the drainer did not write the {written_a} phase-A transactions in 10 min");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let max_rate = written_a as f64 / t0.elapsed().as_secs_f64();
    let rate = max_rate / 2.0;
    eprintln!("  max load {max_rate:.0} txn/s ({written_a} txns written and in the file after {:.1} s)", t0.elapsed().as_secs_f64());

    // Phase B: paced at half the max load.
    eprintln!("phase B: {rate:.0} txn/s for {secs} s");
    let b_from = env.rt.block_on(env.tso.get_ts())? as i64;
    let t1 = Instant::now();
    let every = Duration::from_secs_f64(WRITERS as f64 / rate);
    let written_b = write_for(&env, WRITERS, Duration::from_secs(secs), Some(every), 2_000_000_000_000)?;
    let achieved = written_b as f64 / t1.elapsed().as_secs_f64();
    let want = written_a + written_b;
    let deadline = Instant::now() + Duration::from_secs(120);
    while tailed_count() < want || pulled.lock().expect("lock").len() < want {
        if Instant::now() > deadline {
            bail!("phase B did not reach the file and the pullers in 2 min");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let tailed = tailer.join().map_err(|_| anyhow::anyhow!("tailer panicked"))??;
    let lag = |v: &[(i64, i64)]| -> Vec<i64> { v.iter().filter(|(ts, _)| *ts > b_from).map(|(ts, at)| at - (ts >> 18)).collect() };
    let file_lag = lag(&tailed);
    let pull_lag = lag(&pulled.lock().expect("lock"));
    if file_lag.len() != written_b || pull_lag.len() != written_b {
        bail!("phase B wrote {written_b} txns; the file has {} and the pullers saw {}", file_lag.len(), pull_lag.len());
    }
    // Where the slow ones were: seconds into phase B (by commit ts) of every transaction over 200 ms.
    let slow: Vec<String> = tailed
        .iter()
        .filter(|(ts, at)| *ts > b_from && at - (ts >> 18) > 200)
        .map(|(ts, at)| format!("+{:.2}s:{}ms", ((ts >> 18) - (b_from >> 18)) as f64 / 1000.0, at - (ts >> 18)))
        .collect();
    if !slow.is_empty() {
        eprintln!("  file-sink records over 200 ms ({}): {}", slow.len(), slow.iter().take(20).cloned().collect::<Vec<_>>().join(" "));
    }
    let (f50, f99, fmax) = percentiles(&file_lag);
    let (p50, p99, pmax) = percentiles(&pull_lag);
    println!("phase B: {written_b} txns at {achieved:.0} txn/s (max load {max_rate:.0} txn/s, 3 pumps, {WRITERS} writers)");
    println!("  commit -> file-sink record: p50 {f50:.0} ms, p99 {f99:.0} ms, max {fmax:.0} ms (goal: p99 <= 1000 ms)");
    println!("  commit -> pump PullBinlogs: p50 {p50:.0} ms, p99 {p99:.0} ms, max {pmax:.0} ms");
    Comparison::lower_is_better(
        "e2e_lag_p99_commit_to_file_at_50pct_load",
        f99,
        p99,
        "commit to a plain PullBinlogs client of the pump",
        "ms",
    )
    .print();
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("e2e") {
        let secs = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
        return e2e(secs);
    }
    let small: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let large: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let mut out = Vec::new();
    for n in [small, large] {
        eprintln!("lag of {n} transactions:");
        let o = run(n)?;
        println!(
            "lag {:>9} txns: peak drainer RSS {:>8.1} MiB, caught up in {:>7.1} s ({:>9.0} txns/s)",
            o.txns,
            o.peak_rss_mib,
            o.catch_up_secs,
            o.txns as f64 / o.catch_up_secs
        );
        out.push(o);
    }
    Comparison::lower_is_better(
        &format!("drainer_peak_rss_{large}_vs_{small}_lag"),
        out[1].peak_rss_mib,
        out[0].peak_rss_mib,
        &format!("same drainer at {small} lag"),
        "MiB",
    )
    .print();
    Ok(())
}
