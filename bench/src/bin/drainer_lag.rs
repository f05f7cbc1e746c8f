//! Drainer memory under lag: a pump holding N committed DML transactions the drainer has not read yet,
//! then a drainer (file sink) started from before the first one; its RSS is sampled every 100 ms until
//! its checkpoint passes the last transaction.
//!
//! `drainer_lag [SMALL] [LARGE]` (defaults 100000 and 1000000 transactions of one 4-column row each).
//! The comparison is the drainer against itself: peak RSS at LARGE lag over peak RSS at SMALL lag
//! (bounded memory means a ratio near 1, not near LARGE/SMALL). Also printed: catch-up time and rate.
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
use pump::tidb::codec::{Datum, Handle};
use pump::tidb::row::encode_insert_row;

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

fn run(txns: u64) -> Result<Outcome> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cluster = tests::Cluster::builder().etcd().start()?;
    let etcd = cluster.etcd().url();
    let root = cluster.dir().to_path_buf();
    let pump = tests::nodes::Node::pump(
        &root.join("pump"),
        &etcd,
        "lag-pump",
        // `Node::pump` stops writes only below 1 MiB free, so the machine's free disk does not matter.
        &["-fake-binlog-interval=1".into(), "-heartbeat-interval=1".into(), "-L=warn".into()],
    )?;
    let addr = pump.addr();
    let (cluster_id, tso) = rt.block_on(async {
        let c = etcd_client::Client::connect([etcd.as_str()], None).await?;
        let id = pump::tso::cluster_id(&c).await?;
        anyhow::Ok((id, pump::tso::TsoSource::connect(c, &etcd).await?))
    })?;
    let initial = rt.block_on(tso.get_ts())? as i64;

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

    // Fill the pump: 16 writers, each txn a P with one inserted row and its C; start and commit ts
    // from the TSO, the commit ts taken after the P is acknowledged, as TiDB does.
    let started = Instant::now();
    let last_commit = rt.block_on(async {
        let per = txns / 16;
        let mut tasks = Vec::new();
        for w in 0..16u64 {
            let n = if w == 15 { txns - per * 15 } else { per };
            let (addr, tso) = (addr.clone(), tso.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = PumpClient::connect(format!("http://{addr}")).await?;
                let mut last = 0i64;
                for i in 0..n {
                    let s = tso.get_ts().await? as i64;
                    let row = (w * 1_000_000_000 + i) as i64;
                    let cols = vec![
                        (1, Datum::I64(row)),
                        (2, Datum::Bytes(format!("value-{row:012}-padding-to-about-64-bytes-of-text").into_bytes())),
                        (3, Datum::I64(row % 1000)),
                        (4, Datum::Null),
                    ];
                    let m = TableMutation {
                        table_id: Some(table_id),
                        inserted_rows: vec![encode_insert_row(&Handle::Int(row), &cols)],
                        sequence: vec![MutationType::Insert as i32],
                        ..TableMutation::default()
                    };
                    let pv = PrewriteValue { schema_version: Some(version), mutations: vec![m] };
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
                    let r = c.write_binlog(WriteBinlogReq { cluster_id, payload: p.encode_to_vec() }).await?.into_inner();
                    if !r.errmsg.is_empty() {
                        bail!("pump refused: {}", r.errmsg);
                    }
                    let commit_ts = tso.get_ts().await? as i64;
                    cb.commit_ts = Some(commit_ts);
                    let r = c.write_binlog(WriteBinlogReq { cluster_id, payload: cb.encode_to_vec() }).await?.into_inner();
                    if !r.errmsg.is_empty() {
                        bail!("pump refused: {}", r.errmsg);
                    }
                    last = last.max(commit_ts);
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
    let cfg = root.join("drainer.toml");
    std::fs::write(&cfg, "[syncer]\ndb-type = \"file\"\n")?;
    // Started directly (not through a helper that waits for it to be online), so that sampling and
    // the clock cover its start-up and the whole catch-up.
    let port = tests::free_port();
    let daddr = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(tests::our_binary("drainer"));
    cmd.arg(format!("-config={}", cfg.display()))
        .arg(format!("-addr={daddr}"))
        .arg(format!("-advertise-addr={daddr}"))
        .arg(format!("-data-dir={}", root.join("drainer").join("data").display()))
        .arg(format!("-pd-urls={etcd}"))
        .arg("-node-id=lag-drainer")
        .arg(format!("-initial-commit-ts={initial}"))
        .arg(format!("-schema-source=http://{status_addr}"))
        .arg("-L=warn");
    let drainer = tests::Proc::spawn("drainer", cmd, &root.join("drainer.log"))?;
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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
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
