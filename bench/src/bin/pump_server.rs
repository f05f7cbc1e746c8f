//! The pump server's write path side by side with pump-store alone, in one process run.
//!
//! `pump_server [SECONDS_PER_CASE] [ROUNDS] [PAYLOAD_BYTES]` (defaults 3 s, 3 rounds, 1024 B). Needs the
//! `pump` binary built in the same profile (`cargo build --release -p pump -p bench`).
//!
//! For 1, 16 and 64 concurrent clients, each writes transactions as TiDB does (a Prewrite binlog
//! carrying the payload, then its Commit binlog; every write is acknowledged only once durable):
//! * ours: the real `pump` process (sync-log on) over gRPC `WriteBinlog`, one connection per client,
//!   registered in a real etcd;
//! * baseline: `pump_store::Store::append` in this process with the same records (no gRPC, no
//!   protobuf decoding, no server).
//!
//! Reported per case: WriteBinlog calls/s and p50/p99 per call; the goals are ≥ 80 % of the
//! store's throughput and p99 within the store's p99 + 0.5 ms. Medians over the rounds.

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
    hist: Histogram<u64>,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.calls as f64 / self.secs
    }
    fn p_ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
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
    Ok(Run { calls, secs: start.elapsed().as_secs_f64(), hist })
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
            let r = client.write_binlog(WriteBinlogReq { cluster_id, payload: prewrite(s, &payload) }).await?.into_inner();
            if !r.errmsg.is_empty() {
                bail!("prewrite refused: {}", r.errmsg);
            }
            let p = t.elapsed();
            let t = Instant::now();
            let r = client.write_binlog(WriteBinlogReq { cluster_id, payload: commit(s, s + 1) }).await?.into_inner();
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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3.0);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let size: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let dur = Duration::from_secs_f64(secs);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    let cluster = tests::Cluster::builder().etcd().start()?;
    let etcd = cluster.etcd().url();
    let root = cluster.dir().to_path_buf();
    let mut pump = tests::nodes::Node::pump(
        &root.join("pump"),
        &etcd,
        "bench-pump",
        // `Node::pump` stops writes only below 1 MiB free, so the machine's free disk does not matter.
        &["-fake-binlog-interval=3600".into(), "-heartbeat-interval=1".into(), "-L=warn".into()],
    )?;
    let addr = pump.addr();
    let (cluster_id, first_ts) = rt.block_on(async {
        let c = etcd_client::Client::connect([etcd.as_str()], None).await?;
        let id = pump::tso::cluster_id(&c).await?;
        let tso = pump::tso::TsoSource::connect(c, &etcd).await?;
        anyhow::Ok((id, tso.get_ts().await? as i64))
    })?;
    // One ts sequence above every TSO value the pump has seen, shared by both systems.
    let ts = Arc::new(AtomicI64::new(first_ts + (1 << 18)));
    let store = Arc::new(Store::open(StoreConfig {
        dir: root.join("store-alone"),
        stop_write_at_available_space: 1 << 20,
        ..StoreConfig::default()
    })?);
    let payload = Arc::new((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());

    println!("pump server vs pump-store alone: {size} B prewrite values, {secs} s per case, {rounds} rounds");
    println!("{:<10} {:>14} {:>9} {:>9} {:>14} {:>9} {:>9} {:>7}", "clients", "server /s", "p50 ms", "p99 ms", "store /s", "p50 ms", "p99 ms", "ratio");
    for clients in [1usize, 16, 64] {
        let (mut sv, mut sp50, mut sp99, mut bv, mut bp50, mut bp99) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let s = rt.block_on(via_server(&addr, clients, dur, payload.clone(), cluster_id, ts.clone()))?;
            let b = rt.block_on(store_alone(store.clone(), clients, dur, payload.clone(), ts.clone()))?;
            sv.push(s.per_sec());
            sp50.push(s.p_ms(0.5));
            sp99.push(s.p_ms(0.99));
            bv.push(b.per_sec());
            bp50.push(b.p_ms(0.5));
            bp99.push(b.p_ms(0.99));
        }
        let (s, b) = (median(sv), median(bv));
        let (s99, b99) = (median(sp99), median(bp99));
        println!(
            "{clients:<10} {s:>14.0} {:>9.2} {s99:>9.2} {b:>14.0} {:>9.2} {b99:>9.2} {:>7.2}",
            median(sp50),
            median(bp50),
            s / b
        );
        Comparison::higher_is_better(&format!("pump_server_writebinlog_{clients}c_{size}B"), s, b, "pump_store_alone", "calls/s").print();
        Comparison::lower_is_better(&format!("pump_server_writebinlog_p99_{clients}c_{size}B"), s99, b99, "pump_store_alone", "ms").print();
        println!("  p99 goal (server ≤ store + 0.5 ms): {}", if s99 <= b99 + 0.5 { "met" } else { "missed" });
    }
    pump.kill();
    Ok(())
}
