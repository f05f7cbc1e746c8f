//! `binlog-consumer`: the seed's "Binlog Slave Client". Reads the Kafka sink's topic (one partition,
//! assign mode), reassembles chunked transactions, and prints each transaction in commit-ts order, or
//! with `--apply=mysql://user[:password]@host[:port]` applies them to MySQL/TiDB through the drainer's
//! MySQL sink, exactly once: the checkpoint row `tidb_binlog.consumer_checkpoint` (keyed by the
//! topic's cluster id) is written with the data, and a restarted consumer resumes after it.
//!
//! Flags (single or double dash): `-kafka-addrs`, `-topic`, `-format` (the drainer's `kafka-format`:
//! `protobuf`, the default, or `canal-json`), `-partition`, `-offset` (default: from the
//! beginning), `-commit-ts` (skip transactions at or below it), `-count` (stop after N transactions),
//! `-idle-timeout` (seconds; stop after that long without a transaction; 0 = never), `-apply`,
//! `-stop-at-ts` (apply/print transactions up to this commit ts, then exit 0: at a transaction with
//! this ts, or before the first one past it).
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use anyhow::Context as _;
use drainer::consumer::{BinlogConsumer, ConsumerConfig, StartAt, Txn, apply, text};
use drainer::sink::Sink;
use drainer::sink::kafka::Format;
use drainer::sink::mysql::MysqlSink;

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
    /// The topic's format, as the drainer's `kafka-format`: `protobuf` or `canal-json`.
    #[arg(long, default_value = "protobuf", value_parser = parse_format)]
    format: Format,
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
    /// Apply to this MySQL/TiDB (`mysql://user[:password]@host[:port]`) instead of printing.
    #[arg(long)]
    apply: Option<String>,
    /// Stop once everything up to this commit ts is done: at a transaction with commit ts >= it
    /// (one past it is not applied). 0 = never.
    #[arg(long = "stop-at-ts", default_value_t = 0)]
    stop_at_ts: i64,
}

fn parse_format(s: &str) -> Result<Format, String> {
    [Format::Protobuf, Format::CanalJson]
        .into_iter()
        .find(|f| f.name() == s)
        .ok_or_else(|| format!("unknown format {s:?} (want protobuf or canal-json)"))
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

/// Where transactions go.
enum Out {
    Print(std::io::StdoutLock<'static>),
    Apply { sink: MysqlSink, addr: String },
}

impl Out {
    async fn take(&mut self, txn: &Txn) -> anyhow::Result<()> {
        use std::io::Write;
        match self {
            Out::Print(out) => {
                out.write_all(text::txn_text(txn).as_bytes())?;
                out.flush()?;
            }
            Out::Apply { sink, addr } => {
                if let Some(item) = drainer::sink::kafka::untranslate::to_item(&txn.binlog)? {
                    sink.write(std::sync::Arc::new(item)).await.with_context(|| format!("applying to {addr}"))?;
                }
            }
        }
        Ok(())
    }
}

async fn run(f: Flags) -> anyhow::Result<()> {
    let mut after = f.commit_ts;
    let mut out = match &f.apply {
        None => Out::Print(std::io::stdout().lock()),
        Some(url) => {
            let cfg = apply::sink_config(url, &f.topic)?;
            let addr = format!("{}:{}", cfg.host, cfg.port);
            let mut sink = MysqlSink::connect(cfg).await.with_context(|| format!("--apply {addr}"))?;
            if let Some(ts) = sink.load_checkpoint().await? {
                eprintln!("binlog-consumer: {addr} has everything up to commit ts {ts}; resuming after it");
                after = after.max(ts);
            }
            Out::Apply { sink, addr }
        }
    };
    let mut c = BinlogConsumer::new(ConsumerConfig {
        addrs: f.kafka_addrs,
        topic: f.topic,
        partition: f.partition,
        start: f.offset.map_or(StartAt::Beginning, StartAt::Offset),
        after_commit_ts: after,
        format: f.format,
    })?;
    let mut n = 0u64;
    let mut last_ts = after;
    loop {
        let txn = if f.idle_timeout > 0 {
            match c.next_timeout(Duration::from_secs(f.idle_timeout)).await? {
                Some(t) => t,
                None => break,
            }
        } else {
            c.next().await?
        };
        if f.stop_at_ts > 0 && txn.commit_ts > f.stop_at_ts {
            break;
        }
        out.take(&txn).await?;
        n += 1;
        last_ts = txn.commit_ts;
        if (f.count > 0 && n >= f.count) || (f.stop_at_ts > 0 && txn.commit_ts >= f.stop_at_ts) {
            break;
        }
    }
    if let Out::Apply { sink, addr } = out {
        let ts = sink.close().await.with_context(|| format!("applying to {addr}"))?;
        eprintln!("binlog-consumer: applied {n} transactions to {addr}; everything up to commit ts {} is in", ts.max(last_ts));
    }
    Ok(())
}
