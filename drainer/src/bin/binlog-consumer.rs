//! `binlog-consumer`: the seed's "Binlog Slave Client". Reads the Kafka sink's topic (one partition,
//! assign mode), reassembles chunked transactions, and prints each transaction in commit-ts order.
//!
//! Flags (single or double dash): `-kafka-addrs`, `-topic`, `-partition`, `-offset` (default: from the
//! beginning), `-commit-ts` (skip transactions at or below it), `-count` (stop after N transactions),
//! `-idle-timeout` (seconds; stop after that long without a transaction; 0 = never).
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use drainer::consumer::{BinlogConsumer, ConsumerConfig, StartAt, text};

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "binlog-consumer", about = "Print the transactions the drainer's Kafka sink wrote, in commit-ts order")]
struct Flags {
    /// Brokers, comma separated.
    #[arg(long = "kafka-addrs", default_value = "127.0.0.1:9092")]
    kafka_addrs: String,
    /// The topic (`<clusterID>_obinlog` by default on the drainer side).
    #[arg(long)]
    topic: String,
    /// The partition.
    #[arg(long, default_value_t = 0)]
    partition: i32,
    /// Start offset (default: the partition's first message).
    #[arg(long)]
    offset: Option<i64>,
    /// Skip transactions with commit ts at or below this.
    #[arg(long = "commit-ts", default_value_t = 0)]
    commit_ts: i64,
    /// Stop after this many transactions (0 = never).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Stop after this many seconds without a transaction (0 = never).
    #[arg(long = "idle-timeout", default_value_t = 0)]
    idle_timeout: u64,
}

fn main() -> ExitCode {
    let cmd = Flags::command();
    let longs = pump::goflags::long_flags(&cmd);
    let longs: Vec<&str> = longs.iter().map(String::as_str).collect();
    let args = pump::goflags::normalize(std::env::args_os(), &longs);
    let flags = match cmd.try_get_matches_from(args).and_then(|m| Flags::from_arg_matches(&m)) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("binlog-consumer: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("binlog-consumer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(f: Flags) -> anyhow::Result<()> {
    use std::io::Write;
    let mut c = BinlogConsumer::new(ConsumerConfig {
        addrs: f.kafka_addrs,
        topic: f.topic,
        partition: f.partition,
        start: f.offset.map_or(StartAt::Beginning, StartAt::Offset),
        after_commit_ts: f.commit_ts,
    })?;
    let mut out = std::io::stdout().lock();
    let mut n = 0;
    loop {
        let txn = if f.idle_timeout > 0 {
            match c.next_timeout(Duration::from_secs(f.idle_timeout)).await? {
                Some(t) => t,
                None => break,
            }
        } else {
            c.next().await?
        };
        out.write_all(text::txn_text(&txn).as_bytes())?;
        out.flush()?;
        n += 1;
        if f.count > 0 && n >= f.count {
            break;
        }
    }
    Ok(())
}
