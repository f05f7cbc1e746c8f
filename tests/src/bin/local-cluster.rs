//! `local-cluster`: README's first command. Starts a whole TiDB-Binlog cluster on loopback (PD, pumps,
//! a drainer, upstream and downstream MariaDB, the TiDB stand-in running a workload), shows live progress,
//! stops the workload, waits for the drainer to catch up and prints a verification report: per-table row
//! counts and checksums upstream vs downstream, checkpoint lag percentiles and throughput. The exit code is
//! 0 only if every table matches. The cluster itself is [`tests::e2e::E2e`], shared with the fault tests.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use pump::node::NodeKind;
use tests::e2e::{E2e, Options, SinkKind};
use tests::nodes::list_nodes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sink {
    /// The drainer writes the downstream MariaDB.
    Mysql,
    /// Binlog files, restored into the downstream by reparo.
    File,
    /// Apache Kafka (single node), applied to the downstream by the binlog consumer.
    Kafka,
}

/// Run a local TiDB-Binlog cluster end to end and verify the downstream equals the upstream.
#[derive(Debug, Parser)]
#[command(name = "local-cluster", version)]
struct Args {
    /// Where the drainer replicates to.
    #[arg(long, value_enum, default_value = "mysql")]
    sink: Sink,
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
    let a = Args::parse();
    let sink = match a.sink {
        Sink::Mysql => SinkKind::Mysql,
        Sink::File => SinkKind::File,
        Sink::Kafka => SinkKind::Kafka,
    };
    let opts = Options {
        sink,
        pumps: a.pumps,
        duration: a.duration,
        threads: a.threads,
        tables: a.tables,
        rate: a.rate,
        ddl_every: a.ddl_every,
        ..Options::default()
    };
    let mut n = 0;
    let mut e2e = E2e::start(opts, |what| {
        n += 1;
        println!("[{n}] {what}");
    })?;
    println!("[{}] running the workload for {:?}", n + 1, a.duration);

    let mut lags = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")?);
    let summary = e2e.wait_workload(|e| {
        let mut parts = Vec::new();
        if let Ok(ts) = e.drainer_ts()
            && ts > 0
        {
            let lag = pump::tso::now_ms().saturating_sub(pump::tso::physical_ms(ts as u64));
            let _ = lags.record(lag.max(1));
            parts.push(format!("drainer lag {:.1}s", lag as f64 / 1000.0));
        }
        let etcd = e.pd_url();
        for kind in [NodeKind::Pump, NodeKind::Drainer] {
            for node in list_nodes(&etcd, kind).unwrap_or_default() {
                parts.push(format!("{} {}", node.node_id, node.state.as_str()));
            }
        }
        bar.set_message(parts.join(" | "));
        bar.tick();
        Ok(())
    })?;
    bar.finish_and_clear();
    println!("workload: {summary}");

    println!("[{}] waiting for the drainer to catch up", n + 2);
    let (end_ts, took) = e2e.wait_caught_up(a.catch_up_timeout)?;
    println!("caught up in {:.1} s", took.as_secs_f64());
    if sink != SinkKind::Mysql {
        println!("[{}] replaying the sink's output into the downstream", n + 3);
        e2e.restore(end_ts)?;
    }
    println!("[{}] verifying: downstream vs upstream", n + 4);
    let report = e2e.verify()?;
    print!("{}", report.text);
    println!(
        "checkpoint lag while loaded (ms): p50 {} p90 {} p99 {} max {} ({} samples of now - drainer checkpoint)",
        lags.value_at_quantile(0.5),
        lags.value_at_quantile(0.9),
        lags.value_at_quantile(0.99),
        lags.max(),
        lags.len()
    );
    let num = |k: &str| summary.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let secs = num("elapsed_secs").max(0.001);
    let rows = num("rows_inserted") + num("rows_updated") + num("rows_deleted");
    println!(
        "throughput: {:.0} txns/s, {:.0} rows/s, {:.0} binlogs/s upstream over {secs:.1} s",
        num("txns") / secs,
        rows / secs,
        num("binlogs") / secs
    );
    if a.keep {
        let dir = e2e.cluster.dir().to_path_buf();
        std::mem::forget(e2e);
        println!("kept {} (processes were left running; kill them by hand)", dir.display());
    }
    if report.equal {
        println!("RESULT: downstream equals upstream ({} tables)", report.tables);
        Ok(())
    } else {
        bail!("RESULT: downstream differs from upstream (see above)")
    }
}
