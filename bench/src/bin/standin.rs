//! `standin`: plays a TiDB cluster. Every transaction runs in a real upstream MariaDB, takes its
//! commit ts from PD's TSO while holding its row locks, and is sent to the pumps as TiDB's
//! P and C binlogs; DDL goes out as DDL binlogs and into the DDL history of TiDB's status API.
//!
//! `standin --pd-urls http://127.0.0.1:2379 --upstream mysql://root@127.0.0.1:3306 --duration 30s`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bench::standin::{self, Config, Mix};
use clap::Parser;
use pump::client::{ClientConfig, Strategy};

/// Plays a TiDB cluster: workload in a real MariaDB, binlogs to the pumps, TiDB's status API.
#[derive(Debug, Parser)]
#[command(name = "standin", version)]
struct Args {
    /// PD (or plain etcd) endpoints, comma separated.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pd_urls: String,
    /// The upstream MariaDB/MySQL that holds the truth.
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    upstream: String,
    /// Workload database.
    #[arg(long, default_value = "standin")]
    database: String,
    /// Workload tables; kinds cycle: every column type with an int PK, clustered composite PK with a
    /// unique key, no PK (implicit row id), unsigned PK with a unique key.
    #[arg(long, default_value_t = 4)]
    tables: usize,
    /// Rows inserted into each new table before the run.
    #[arg(long, default_value_t = 100)]
    rows: usize,
    /// Concurrent transactions.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// How long to run (e.g. 30s, 5m); 0 = until --txns.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many committed transactions.
    #[arg(long)]
    txns: Option<u64>,
    /// Transactions per second over all threads; 0 = unlimited.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Row operation weights.
    #[arg(long, default_value = "insert=50,update=30,delete=20")]
    mix: String,
    /// Most row operations in one transaction.
    #[arg(long, default_value_t = 4)]
    rows_per_txn: usize,
    /// Bytes of the blob of a large row.
    #[arg(long, default_value_t = 256 * 1024)]
    large_row_bytes: usize,
    /// One transaction in N writes a large row (0 = never).
    #[arg(long, default_value_t = 100)]
    large_row_every: u64,
    /// Rows of a large transaction.
    #[arg(long, default_value_t = 200)]
    large_txn_rows: usize,
    /// Every Nth transaction of a thread is large (0 = never).
    #[arg(long, default_value_t = 200)]
    large_txn_every: u64,
    /// A DDL after every N committed transactions (0 = none): add/drop column, add/drop index,
    /// truncate, rename, create/drop table, create/drop database, in rotation.
    #[arg(long, default_value_t = 0)]
    ddl_every: u64,
    /// Serve TiDB's status API (/ddl/history, /schema) here, e.g. 127.0.0.1:10080.
    #[arg(long)]
    status_addr: Option<SocketAddr>,
    /// Keep serving the status API after the run until interrupted.
    #[arg(long)]
    serve: bool,
    /// Pump selection as TiDB's [binlog] strategy: range or hash.
    #[arg(long, default_value = "range")]
    strategy: String,
    /// TiDB's [binlog] write-timeout.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    write_timeout: Duration,
    /// TiDB's [binlog] ignore-error: a failed P-binlog stops binlog writing instead of failing.
    #[arg(long)]
    ignore_error: bool,
    /// How long a C-binlog is retried on its pump (TiDB: 10m).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    commit_retry_for: Duration,
    /// TiDB's [binlog] binlog-socket: write every binlog to the pump serving gRPC on this unix socket
    /// (pump's `socket`) instead of the pumps registered in etcd.
    #[arg(long)]
    binlog_socket: Option<String>,
    /// Probe period of unavailable pumps (TiDB: 30s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    detect_interval: Duration,
    /// Write one JSON line per transaction (start_ts, commit_ts, pump, outcome) to this file.
    #[arg(long)]
    txn_log: Option<PathBuf>,
    /// Print the summary as one JSON line (and no progress bar).
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Random seed (0 = from the clock).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fault: every Nth transaction's C/Rollback binlog is never sent (TiDB dying right after its
    /// commit); `/mvcc/hex` still answers its outcome (0 = never).
    #[arg(long, default_value_t = 0)]
    lose_commit_binlog_every: u64,
    /// Every Nth transaction rolls back upstream after its P-binlog (0 = never).
    #[arg(long, default_value_t = 0)]
    rollback_every: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let cfg = Config {
        pd_urls: a.pd_urls,
        upstream: a.upstream,
        database: a.database,
        tables: a.tables,
        rows: a.rows,
        threads: a.threads,
        duration: (!a.duration.is_zero()).then_some(a.duration),
        txns: a.txns,
        rate: a.rate,
        mix: Mix::parse(&a.mix)?,
        rows_per_txn: a.rows_per_txn,
        large_row_bytes: a.large_row_bytes,
        large_row_every: a.large_row_every,
        large_txn_rows: a.large_txn_rows,
        large_txn_every: a.large_txn_every,
        ddl_every: a.ddl_every,
        status_addr: a.status_addr,
        client: ClientConfig {
            write_timeout: a.write_timeout,
            ignore_error: a.ignore_error,
            strategy: Strategy::parse(&a.strategy),
            commit_retry_for: a.commit_retry_for,
            detect_interval: a.detect_interval,
            ..ClientConfig::default()
        },
        binlog_socket: a.binlog_socket,
        txn_log: a.txn_log,
        progress: !a.json && !a.no_progress,
        seed: a.seed,
        lose_commit_binlog_every: a.lose_commit_binlog_every,
        rollback_every: a.rollback_every,
    };
    if cfg.duration.is_none() && cfg.txns.is_none() && !a.serve {
        anyhow::bail!("--duration 0 needs --txns");
    }
    let (summary, server) = standin::run(cfg).await.context("stand-in")?;
    if a.json {
        println!("{}", serde_json::to_string(&serde_json::json!({ "standin": summary }))?);
    } else {
        println!(
            "txns {} ({:.1}/s)  rows +{} ~{} -{}  binlogs {}  ddl {}  aborted {}  errors {} (commit binlog {})  schema version {}",
            summary.txns,
            summary.txn_per_sec,
            summary.rows_inserted,
            summary.rows_updated,
            summary.rows_deleted,
            summary.binlogs,
            summary.ddl_jobs,
            summary.aborted,
            summary.errors,
            summary.commit_binlog_failures,
            summary.schema_version
        );
        for (pump, n) in &summary.pumps {
            println!("  pump {pump}: {n} binlogs");
        }
    }
    if a.serve
        && let Some(server) = server
    {
        eprintln!("serving the status API until interrupted");
        tokio::select! {
            _ = server => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    Ok(())
}
