//! TSO from PD: our client (`pump::pd::PdClient`: one `Tso` stream, every caller waiting when a request
//! goes out shares it) against two baselines, same PD (real pd-server when installed, else the PD
//! stand-in), same number of concurrent callers, in one run:
//! - `pd_go_client`: PD's own Go client (`github.com/tikv/pd/client`, batching the same way), driven by our
//!   small Go program `bench/go/pdtso` (built here with `go build` into `target/`; skipped without Go);
//! - `one_request_per_ts`: one `TsoRequest{count: 1}` per call on a stream of the caller's own.
//!
//! `cargo run --release -p bench --bin tso -- [SECONDS_PER_SIDE] [CALLERS...]` (defaults 5 and 1 16 64).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bench::Comparison;
use hdrhistogram::Histogram;
use pump::pd::PdClient;
use pump::proto::pdpb::pd_client::PdClient as PdRpc;
use pump::proto::pdpb::{RequestHeader, TsoRequest, TsoResponse};
use pump::tso;
use tokio::sync::{Mutex, mpsc};

/// The baseline: a `Tso` stream per caller, one request of count 1 per ts.
struct OnePerCall {
    cluster_id: u64,
    send: mpsc::Sender<TsoRequest>,
    recv: Mutex<tonic::Streaming<TsoResponse>>,
}

impl OnePerCall {
    async fn open(url: &str, cluster_id: u64) -> Result<Self> {
        let mut rpc = PdRpc::connect(url.to_owned()).await?;
        let (send, rx) = mpsc::channel(1);
        // PD (grpc-go) sends the response headers only with its first answer: ask once before
        // awaiting the call, and read that answer here.
        let header = Some(RequestHeader { cluster_id, sender_id: 0 });
        send.send(TsoRequest { header, count: 1, dc_location: String::new() }).await?;
        let mut recv = rpc.tso(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        recv.message().await?.context("the Tso stream ended")?;
        Ok(Self { cluster_id, send, recv: Mutex::new(recv) })
    }

    async fn get_ts(&self) -> Result<u64> {
        let mut recv = self.recv.lock().await;
        let header = Some(RequestHeader { cluster_id: self.cluster_id, sender_id: 0 });
        self.send.send(TsoRequest { header, count: 1, dc_location: String::new() }).await?;
        let r = recv.message().await?.context("the Tso stream ended")?;
        let t = r.timestamp.context("no timestamp")?;
        Ok(tso::compose(t.physical as u64, t.logical as u64))
    }
}

struct Side {
    per_sec: f64,
    p99_us: f64,
}

async fn run_side<F, Fut>(secs: u64, callers: usize, get: F) -> Result<Side>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<u64>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let (get, stop) = (get.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ts = get(caller).await?;
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

/// Builds `bench/go/pdtso` into `target/pdtso` (None without Go).
fn build_go_client() -> Result<Option<std::path::PathBuf>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = root.join("target/pdtso");
    let status = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(root.join("bench/go/pdtso"))
        .status();
    match status {
        Ok(s) if s.success() => Ok(Some(out)),
        Ok(s) => anyhow::bail!("go build of bench/go/pdtso failed: {s}"),
        Err(_) => Ok(None),
    }
}

/// PD's Go client with `callers` callers for `secs`: (ts/s, p99 µs).
fn run_go_client(bin: &std::path::Path, url: &str, callers: usize, secs: u64) -> Result<Side> {
    let out = std::process::Command::new(bin)
        .args(["-pd", url.trim_start_matches("http://"), "-callers", &callers.to_string(), "-seconds", &secs.to_string()])
        .stderr(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(out.status.success(), "pdtso failed: {}", String::from_utf8_lossy(&out.stdout));
    let line = String::from_utf8_lossy(&out.stdout);
    // PD's client logs to stdout too: the answer is the line that starts with `{"callers"`.
    let answer = line.lines().find(|l| l.starts_with("{\"callers\"")).context("pdtso printed no answer")?;
    let v: serde_json::Value = serde_json::from_str(answer)?;
    Ok(Side {
        per_sec: v["ts_per_sec"].as_f64().context("ts_per_sec")?,
        p99_us: v["p99_us"].as_f64().context("p99_us")?,
    })
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let mut callers: Vec<usize> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
    if callers.is_empty() {
        callers = vec![1, 16, 64];
    }
    let cluster = tests::Cluster::builder().pd().start()?;
    let pd = cluster.pd();
    let url = pd.url();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let ours = PdClient::connect(&pump::etcd::EtcdConfig::from_pd_urls(&url)?).await?;
        let which = if pd.is_real() { "pd-server" } else { "the PD stand-in" };
        println!("TSO from {which} at {url}, {secs} s per side");
        let go_client = build_go_client()?;
        for &n in &callers {
            let c = ours.clone();
            let our = run_side(secs, n, move |_| {
                let c = c.clone();
                async move { Ok(c.get_ts().await?) }
            })
            .await?;
            let mut streams = Vec::new();
            for _ in 0..n {
                streams.push(Arc::new(OnePerCall::open(&url, ours.cluster_id()).await?));
            }
            let streams = Arc::new(streams);
            let base = run_side(secs, n, move |caller| {
                let s = streams[caller].clone();
                async move { s.get_ts().await }
            })
            .await?;
            let name = format!("tso_{n}_callers");
            if let Some(bin) = &go_client {
                let go = run_go_client(bin, &url, n, secs)?;
                Comparison::higher_is_better(&name, our.per_sec, go.per_sec, "pd_go_client", "ts/s").print();
                Comparison::lower_is_better(&format!("{name}_p99"), our.p99_us, go.p99_us, "pd_go_client", "us").print();
            }
            Comparison::higher_is_better(&name, our.per_sec, base.per_sec, "one_request_per_ts", "ts/s").print();
            Comparison::lower_is_better(&format!("{name}_p99"), our.p99_us, base.p99_us, "one_request_per_ts", "us").print();
        }
        Ok(())
    })
}
