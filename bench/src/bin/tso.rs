//! TSO allocation on a real etcd: our batching allocator (`pump::tso::EtcdTso`, one compare-and-swap
//! per batch of waiting requests) against the naive baseline (one compare-and-swap per ts), both
//! linearizable, same etcd, same number of concurrent callers, in one run.
//!
//! `cargo run -p bench --bin tso -- [SECONDS_PER_SIDE] [CALLERS]` (defaults 5 and 64).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bench::Comparison;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use hdrhistogram::Histogram;
use pump::tso::{self, EtcdTso, TSO_KEY};

/// The baseline: read the key, then CAS `last+1` (or the clock) into it; retry on conflict.
async fn naive_get_ts(client: &Client) -> Result<u64> {
    let mut kv = client.kv_client();
    loop {
        let resp = kv.get(TSO_KEY, None).await?;
        let (last, rev) = match resp.kvs().first() {
            Some(kv) => (kv.value_str()?.parse::<u64>()?, kv.mod_revision()),
            None => (0, 0),
        };
        let ts = (last + 1).max(tso::compose(tso::now_ms(), 0));
        let txn = Txn::new()
            .when([Compare::mod_revision(TSO_KEY, CompareOp::Equal, rev)])
            .and_then([TxnOp::put(TSO_KEY, ts.to_string(), None)]);
        if kv.txn(txn).await?.succeeded() {
            return Ok(ts);
        }
    }
}

struct Side {
    per_sec: f64,
    p99_us: f64,
}

async fn run_side<F, Fut>(secs: u64, callers: usize, get: F) -> Result<Side>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<u64>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (get, stop) = (get.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ts = get().await?;
                anyhow::ensure!(ts > last, "ts went backwards for one caller: {ts} after {last}");
                last = ts;
                h.record(t.elapsed().as_micros() as u64)?;
            }
            Ok::<_, anyhow::Error>(h)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Side { per_sec: all.len() as f64 / elapsed, p99_us: all.value_at_quantile(0.99) as f64 })
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let callers: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let cluster = tests::Cluster::builder().etcd().start()?;
    let url = cluster.etcd().url();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let client = Client::connect([url.as_str()], None).await?;
        let alloc = EtcdTso::new(client.clone());
        let ours = run_side(secs, callers, move || {
            let a = alloc.clone();
            async move { Ok(a.get_ts().await?) }
        })
        .await?;
        let c = client.clone();
        let base = run_side(secs, callers, move || {
            let c = c.clone();
            async move { naive_get_ts(&c).await }
        })
        .await?;
        println!("TSO on one local etcd, {callers} concurrent callers, {secs} s per side");
        let name = format!("tso_allocate_{callers}_callers");
        Comparison::higher_is_better(&name, ours.per_sec, base.per_sec, "cas_per_ts", "ts/s").print();
        Comparison::lower_is_better(&format!("{name}_p99"), ours.p99_us, base.p99_us, "cas_per_ts", "us").print();
        Ok(())
    })
}
