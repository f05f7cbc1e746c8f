//! `local-cluster`: README's first command. Starts a whole TiDB-Binlog cluster on loopback (etcd, pumps,
//! a drainer, upstream and downstream MariaDB, the TiDB stand-in running a workload), shows live progress,
//! stops the workload, waits for the drainer to catch up and prints a verification report: per-table row
//! counts and checksums upstream vs downstream, checkpoint lag percentiles and throughput. The exit code is
//! 0 only if every table matches.
//!
//! Sinks: `mysql` (drainer writes the downstream), `file` (drainer writes binlog files, reparo restores them
//! into the downstream), `kafka` (drainer writes to the Tansu broker, the binlog consumer applies them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use mysql_async::prelude::Queryable;
use pump::node::NodeKind;
use tests::nodes::{Node, list_nodes};
use tests::{Cluster, Proc, free_port, our_binary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SinkKind {
    Mysql,
    File,
    Kafka,
}

/// Run a local TiDB-Binlog cluster end to end and verify the downstream equals the upstream.
#[derive(Debug, Parser)]
#[command(name = "local-cluster", version)]
struct Args {
    /// Where the drainer replicates to.
    #[arg(long, value_enum, default_value = "mysql")]
    sink: SinkKind,
    /// Number of pumps.
    #[arg(long, default_value_t = 3)]
    pumps: usize,
    /// How long the workload runs.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent upstream sessions of the stand-in.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Tables in the workload.
    #[arg(long, default_value_t = 6)]
    tables: usize,
    /// Transactions per second across all threads (0 = as fast as it goes).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// One DDL (add/drop column or index, truncate, rename...) every this many transactions (0 = none).
    #[arg(long, default_value_t = 100)]
    ddl_every: u64,
    /// How long to wait for the drainer to catch up after the workload stops.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    catch_up_timeout: Duration,
    /// Keep the working directory (logs, data) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started = Instant::now();

    step(1, "starting etcd, the upstream and downstream MariaDB");
    let mut builder = Cluster::builder().etcd().upstream_db().downstream_db();
    if args.sink == SinkKind::Kafka {
        builder = builder.kafka();
    }
    let cluster = builder.start()?;
    let root = cluster.dir().to_path_buf();
    let etcd = cluster.etcd().url();
    let up = cluster.upstream.as_ref().context("upstream")?.url();
    let down = cluster.downstream.as_ref().context("downstream")?.url();

    step(2, &format!("starting {} pumps", args.pumps));
    let mut pumps = Vec::new();
    for i in 0..args.pumps {
        let id = format!("pump-{i}");
        pumps.push(Node::pump(&root.join(&id), &etcd, &id, &["-gc=1".into()])?);
    }

    // The drainer starts from a ts taken before the workload's first DDL.
    let initial_ts = rt.block_on(tso(&etcd))?;

    step(3, "starting the TiDB stand-in (upstream truth in MariaDB, binlogs through the pumps)");
    let status_port = free_port();
    let standin_log = root.join("standin.log");
    let mut cmd = Command::new(binary("standin")?);
    cmd.arg(format!("--pd-urls={etcd}"))
        .arg(format!("--upstream={up}"))
        .arg(format!("--status-addr=127.0.0.1:{status_port}"))
        .arg(format!("--duration={}s", args.duration.as_secs()))
        .arg(format!("--threads={}", args.threads))
        .arg(format!("--tables={}", args.tables))
        .arg(format!("--rate={}", args.rate))
        .arg(format!("--ddl-every={}", args.ddl_every))
        // The summary goes to stdout as one JSON line; the status API stays up for the drainer.
        .args(["--json", "--serve"]);
    let mut standin = Proc::spawn("standin", cmd, &standin_log)?;
    tests::wait_until("the stand-in's status API", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", status_port)).is_ok()
    })
    .with_context(|| standin.log_tail())?;

    step(4, &format!("starting the drainer (sink: {:?})", args.sink));
    let drainer_dir = root.join("drainer");
    std::fs::create_dir_all(&drainer_dir)?;
    let config = drainer_config(&args, &cluster, &drainer_dir)?;
    let mut drainer = Node::drainer(
        &drainer_dir,
        &etcd,
        "drainer-0",
        &[
            format!("-config={}", config.display()),
            format!("-initial-commit-ts={initial_ts}"),
            format!("-schema-source=http://127.0.0.1:{status_port}"),
        ],
    )?;

    step(5, &format!("running the workload for {:?}", args.duration));
    let mut lags = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")?);
    let summary = loop {
        if let Some(summary) = standin_summary(&standin_log) {
            break summary;
        }
        if !standin.is_running() {
            bail!("the stand-in exited\n{}", standin.log_tail());
        }
        let line = rt.block_on(progress_line(&etcd, drainer.port, &mut lags));
        bar.set_message(line);
        bar.tick();
        std::thread::sleep(Duration::from_millis(500));
        if started.elapsed() > args.duration + Duration::from_secs(600) {
            bail!("the stand-in did not stop\n{}", standin.log_tail());
        }
        if !drainer.is_running() {
            bail!("the drainer exited\n{}", std::fs::read_to_string(drainer.log()).unwrap_or_default());
        }
    };
    bar.finish_and_clear();
    println!("workload: {summary}");

    step(6, "waiting for the drainer to catch up");
    let end_ts = rt.block_on(tso(&etcd))?;
    let wait_start = Instant::now();
    loop {
        let ts = rt.block_on(drainer_ts(drainer.port)).unwrap_or(0);
        if ts >= end_ts {
            break;
        }
        if wait_start.elapsed() > args.catch_up_timeout {
            bail!(
                "the drainer did not reach ts {end_ts} within {:?} (at {ts})\n{}",
                args.catch_up_timeout,
                std::fs::read_to_string(drainer.log()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("caught up in {:.1} s", wait_start.elapsed().as_secs_f64());

    match args.sink {
        SinkKind::Mysql => {}
        SinkKind::File => {
            step(7, "restoring the drainer's binlog files into the downstream with reparo");
            let reparo_cfg = root.join("reparo.toml");
            let port = cluster.downstream.as_ref().context("downstream")?.port;
            std::fs::write(
                &reparo_cfg,
                format!(
                    "data-dir = \"{}\"\ndest-type = \"mysql\"\n[dest-db]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"root\"\npassword = \"\"\n",
                    drainer_dir.join("data").display()
                ),
            )?;
            run(Command::new(binary("reparo")?).arg(format!("-config={}", reparo_cfg.display())), "reparo")?;
        }
        SinkKind::Kafka => {
            step(7, "applying the Kafka topic to the downstream with the binlog consumer");
            let kafka = cluster.kafka.as_ref().context("kafka")?;
            run(
                Command::new(binary("binlog-consumer")?)
                    .arg(format!("--kafka-addrs={}", kafka.addr()))
                    .arg(format!("--topic={}", kafka_topic(&rt, &etcd)?))
                    .arg(format!("--apply={down}"))
                    .arg(format!("--stop-at-ts={end_ts}")),
                "binlog-consumer",
            )?;
        }
    }
    drainer.signal_and_wait(15, Duration::from_secs(20));
    standin.kill();

    step(8, "verifying: downstream vs upstream");
    let report = rt.block_on(verify(&up, &down))?;
    print!("{}", report.text);
    println!(
        "checkpoint lag while loaded (ms): p50 {} p90 {} p99 {} max {} ({} samples)",
        lags.value_at_quantile(0.5),
        lags.value_at_quantile(0.9),
        lags.value_at_quantile(0.99),
        lags.max(),
        lags.len()
    );
    let secs = args.duration.as_secs_f64().max(0.001);
    let num = |k: &str| summary.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let txns = num("txns");
    let rows = num("rows_inserted") + num("rows_updated") + num("rows_deleted");
    println!("throughput: {:.0} txns/s, {:.0} rows/s upstream over {secs:.0} s", txns / secs, rows / secs);
    if args.keep {
        let kept = root.clone();
        std::mem::forget(cluster);
        println!("kept {}", kept.display());
    }
    if report.equal {
        println!("RESULT: downstream equals upstream ({} tables)", report.tables);
        Ok(())
    } else {
        bail!("RESULT: downstream differs from upstream (see above)")
    }
}

/// The stand-in's `{"standin": {...}}` summary line, once it has printed it.
fn standin_summary(log: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter(|l| l.starts_with("{\"standin\""))
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|mut v| v.get_mut("standin").map(serde_json::Value::take))
}

fn step(n: usize, what: &str) {
    println!("[{n}] {what}");
}

/// One of our binaries, built beside this one.
fn binary(name: &str) -> Result<PathBuf> {
    let p = our_binary(name);
    if !p.is_file() {
        bail!("{name} is not built at {}: run `cargo build --workspace --bins`", p.display());
    }
    Ok(p)
}

fn run(cmd: &mut Command, name: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {name}"))?;
    if !out.status.success() {
        bail!(
            "{name} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn drainer_config(args: &Args, cluster: &Cluster, dir: &Path) -> Result<PathBuf> {
    let down = cluster.downstream.as_ref().context("downstream")?;
    let sink = match args.sink {
        SinkKind::Mysql => format!(
            "db-type = \"mysql\"\n[syncer.to]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"root\"\npassword = \"\"\n",
            down.port
        ),
        SinkKind::File => format!("db-type = \"file\"\n[syncer.to]\ndir = \"{}\"\n", dir.join("data").display()),
        SinkKind::Kafka => format!(
            "db-type = \"kafka\"\n[syncer.to]\nkafka-addrs = \"{}\"\n",
            cluster.kafka.as_ref().context("kafka")?.addr()
        ),
    };
    let text = format!("detect-interval = 1\n[syncer]\nworker-count = 8\ntxn-batch = 64\n{sink}");
    let path = dir.join("drainer.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn tso(etcd: &str) -> Result<i64> {
    let client = etcd_client::Client::connect([etcd], None).await?;
    let ts = pump::tso::EtcdTso::new(client).get_ts().await?;
    Ok(i64::try_from(ts)?)
}

fn kafka_topic(rt: &tokio::runtime::Runtime, etcd: &str) -> Result<String> {
    rt.block_on(async {
        let mut client = etcd_client::Client::connect([etcd], None).await?;
        Ok(format!("{}_obinlog", pump::tso::cluster_id(&mut client).await?))
    })
}

/// The drainer's checkpoint ts from `GET /commit_ts`.
async fn drainer_ts(port: u16) -> Result<i64> {
    let body: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{port}/commit_ts")).await?.error_for_status()?.json().await?;
    body.pointer("/data/ts").and_then(|v| v.as_i64()).context("no data.ts in /commit_ts")
}

async fn progress_line(etcd: &str, drainer_port: u16, lags: &mut hdrhistogram::Histogram<u64>) -> String {
    let mut parts = Vec::new();
    if let Ok(ts) = drainer_ts(drainer_port).await
        && ts > 0
    {
        let lag = pump::tso::now_ms().saturating_sub(pump::tso::physical_ms(ts as u64));
        let _ = lags.record(lag.max(1));
        parts.push(format!("drainer lag {:.1}s", lag as f64 / 1000.0));
    }
    let etcd = etcd.to_owned();
    let nodes = tokio::task::spawn_blocking(move || {
        let mut v = list_nodes(&etcd, NodeKind::Pump).unwrap_or_default();
        v.extend(list_nodes(&etcd, NodeKind::Drainer).unwrap_or_default());
        v
    })
    .await
    .unwrap_or_default();
    for n in nodes {
        parts.push(format!("{} {}", n.node_id, n.state.as_str()));
    }
    parts.join(" | ")
}

struct Report {
    equal: bool,
    tables: usize,
    text: String,
}

/// Row counts and `CHECKSUM TABLE` per user table on both sides, then `binlogctl -cmd diff` for the
/// row-level comparison (chunked checksums, first differing rows).
async fn verify(up: &str, down: &str) -> Result<Report> {
    let mut upc = mysql_async::Conn::from_url(up).await?;
    let mut downc = mysql_async::Conn::from_url(down).await?;
    let tables: Vec<(String, String)> = upc
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' \
             AND table_schema NOT IN ('mysql','information_schema','performance_schema','sys','tidb_binlog') \
             ORDER BY 1, 2",
        )
        .await?;
    let mut text = format!("{:<40} {:>10} {:>10} {:>12} {:>12}  result\n", "table", "up rows", "down rows", "up checksum", "down checksum");
    let mut equal = true;
    for (db, t) in &tables {
        let name = format!("`{}`.`{}`", db.replace('`', "``"), t.replace('`', "``"));
        let count = format!("SELECT COUNT(*) FROM {name}");
        let sum = format!("CHECKSUM TABLE {name}");
        let up_rows: Option<u64> = upc.query_first(&count).await?;
        let down_rows: Option<u64> = downc.query_first(&count).await.ok().flatten();
        let up_sum: Option<(String, Option<u64>)> = upc.query_first(&sum).await?;
        let down_sum: Option<(String, Option<u64>)> = downc.query_first(&sum).await.ok().flatten();
        let (us, ds) = (up_sum.and_then(|s| s.1), down_sum.and_then(|s| s.1));
        let ok = up_rows == down_rows && us == ds && us.is_some();
        equal &= ok;
        text.push_str(&format!(
            "{:<40} {:>10} {:>10} {:>12} {:>12}  {}\n",
            format!("{db}.{t}"),
            show(up_rows),
            show(down_rows),
            show(us),
            show(ds),
            if ok { "equal" } else { "DIFFERENT" }
        ));
    }
    // The row-level diff names the first differing rows when the checksums disagree.
    let out = Command::new(binary("binlogctl")?)
        .args(["-cmd", "diff", "-source", up, "-target", down])
        .output()
        .context("running binlogctl -cmd diff")?;
    if !out.status.success() {
        equal = false;
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    Ok(Report { equal: equal && !tables.is_empty(), tables: tables.len(), text })
}

fn show(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}
