//! A whole TiDB-Binlog cluster on loopback, end to end: PD, pumps, a drainer, upstream and downstream
//! MariaDB and the TiDB stand-in's workload. Shared by `local-cluster` (README's first command) and the
//! fault tests, which kill and restart parts of it while the workload runs.
//!
//! The verification is always the same: after the workload stops and the drainer has caught up to a ts
//! taken after the workload's last commit, every user table of the upstream must equal the downstream
//! (row count, `CHECKSUM TABLE`, and `binlogctl -cmd diff`'s chunked row comparison).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mysql_async::prelude::Queryable;

use crate::nodes::Node;
use crate::{Cluster, Proc, free_port, our_binary, wait_until};

/// Where the drainer replicates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// The drainer writes the downstream MariaDB.
    Mysql,
    /// The drainer writes binlog files; reparo restores them into the downstream.
    File,
    /// The drainer writes to Apache Kafka; the binlog consumer applies the topic to the downstream.
    Kafka,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The sink.
    pub sink: SinkKind,
    /// Number of pumps.
    pub pumps: usize,
    /// How long the workload runs.
    pub duration: Duration,
    /// Concurrent upstream sessions.
    pub threads: usize,
    /// Tables in the workload.
    pub tables: usize,
    /// Transactions per second across all threads (0 = unlimited).
    pub rate: f64,
    /// One DDL every this many transactions (0 = none).
    pub ddl_every: u64,
    /// Extra lines for drainer.toml's `[syncer]` section.
    pub syncer_extra: String,
    /// Extra drainer command-line flags (e.g. `-compressor=gzip`).
    pub drainer_flags: Vec<String>,
    /// Extra lines for drainer.toml's `[syncer.to]` section (e.g. `compression = "gzip"`).
    pub to_extra: String,
    /// Extra stand-in flags (e.g. `--lose-commit-binlog-every=7`).
    pub standin_flags: Vec<String>,
    /// Extra lines for every pump.toml; `{status}` becomes the stand-in's status API URL (TiDB's).
    pub pump_toml_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sink: SinkKind::Mysql,
            pumps: 3,
            duration: Duration::from_secs(20),
            threads: 4,
            tables: 6,
            rate: 0.0,
            ddl_every: 100,
            syncer_extra: String::new(),
            drainer_flags: Vec::new(),
            to_extra: String::new(),
            standin_flags: Vec::new(),
            pump_toml_extra: String::new(),
        }
    }
}

/// A running end-to-end cluster. Everything stops (by PID) when it is dropped.
#[derive(Debug)]
pub struct E2e {
    /// The pumps, `pump-0`, `pump-1`, ...
    pub pumps: Vec<Node>,
    /// The drainer, `drainer-0`.
    pub drainer: Node,
    /// The stand-in process (it serves TiDB's status API until killed).
    pub standin: Proc,
    /// What was asked for.
    pub opts: Options,
    standin_log: PathBuf,
    /// The drainer's flags after its `-addr`, `-data-dir`, `-pd-urls`, `-node-id` (for [`E2e::add_drainer`]).
    drainer_args: Vec<String>,
    rt: tokio::runtime::Runtime,
    // Declared last: the services stop after our processes.
    /// The real services (PD, MariaDB up and down, Apache Kafka for the Kafka sink).
    pub cluster: Cluster,
    /// One whole cluster at a time in a test process (see [`E2E_SLOT`]); released last.
    _slot: std::sync::MutexGuard<'static, ()>,
}

/// Whole-cluster runs in one test process take turns: each is a dozen processes under load, and a
/// 2-core machine running several at once starves them into timeouts that test nothing.
static E2E_SLOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl E2e {
    /// Starts services, pumps, the stand-in's workload and the drainer; `say` hears each step.
    pub fn start(opts: Options, mut say: impl FnMut(&str)) -> Result<Self> {
        let slot = E2E_SLOT.lock().unwrap_or_else(|p| p.into_inner());
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        say("starting PD, the upstream and downstream MariaDB");
        let mut builder = Cluster::builder().pd().upstream_db().downstream_db();
        if opts.sink == SinkKind::Kafka {
            builder = builder.kafka();
        }
        let cluster = builder.start()?;
        let root = cluster.dir().to_path_buf();
        let pd = cluster.pd().url();
        let up = cluster.upstream.as_ref().context("upstream")?.url();

        let status_port = free_port();
        say(&format!("starting {} pumps", opts.pumps));
        let mut pumps = Vec::new();
        for i in 0..opts.pumps {
            let id = format!("pump-{i}");
            let mut flags = Vec::new();
            if !opts.pump_toml_extra.is_empty() {
                let toml = root.join(format!("{id}.toml"));
                let extra = opts.pump_toml_extra.replace("{status}", &format!("http://127.0.0.1:{status_port}"));
                std::fs::write(&toml, format!("[storage]\nstop-write-at-available-space = \"1 MiB\"\n{extra}\n"))?;
                flags.push(format!("-config={}", toml.display()));
            }
            pumps.push(Node::pump(&root.join(&id), &pd, &id, &flags)?);
        }
        // The drainer starts from a ts taken before the workload's first DDL.
        let initial_ts = rt.block_on(tso(&pd))?;

        say("starting the TiDB stand-in (upstream truth in MariaDB, binlogs through the pumps)");
        let standin_log = root.join("standin.log");
        let mut cmd = Command::new(binary("standin")?);
        cmd.arg(format!("--pd-urls={pd}"))
            .arg(format!("--upstream={up}"))
            .arg(format!("--status-addr=127.0.0.1:{status_port}"))
            .arg(format!("--duration={}ms", opts.duration.as_millis()))
            .arg(format!("--threads={}", opts.threads))
            .arg(format!("--tables={}", opts.tables))
            .arg(format!("--rate={}", opts.rate))
            .arg(format!("--ddl-every={}", opts.ddl_every))
            // Every transaction's start/commit ts, pump and outcome, kept with the dir if a check fails.
            .arg(format!("--txn-log={}", root.join("standin-txns.jsonl").display()))
            // The summary goes to stdout as one JSON line; the status API stays up for the drainer.
            .args(["--json", "--serve"])
            .args(&opts.standin_flags);
        let mut standin = Proc::spawn("standin", cmd, &standin_log)?;
        wait_until("the stand-in's status API", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", status_port)).is_ok() || !standin.is_running()
        })?;
        if !standin.is_running() {
            bail!("the stand-in exited at start\n{}", standin.log_tail());
        }

        say(&format!("starting the drainer (sink: {:?})", opts.sink));
        let drainer_dir = root.join("drainer");
        std::fs::create_dir_all(&drainer_dir)?;
        let config = drainer_config(&opts, &cluster, &drainer_dir)?;
        let mut flags = vec![
            format!("-config={}", config.display()),
            format!("-initial-commit-ts={initial_ts}"),
            format!("-schema-source=http://127.0.0.1:{status_port}"),
        ];
        flags.extend(opts.drainer_flags.iter().cloned());
        let drainer = Node::drainer(&drainer_dir, &pd, "drainer-0", &flags)?;
        Ok(Self { pumps, drainer, standin, opts, standin_log, drainer_args: flags, rt, cluster, _slot: slot })
    }

    /// Starts one more drainer, `node_id`, with the same configuration and flags as `drainer-0` (its
    /// own port and data dir `<root>/<node_id>`): with `-task-name` among the flags, a standby.
    pub fn add_drainer(&self, node_id: &str) -> Result<Node> {
        Node::drainer(&self.cluster.dir().join(node_id), &self.pd_url(), node_id, &self.drainer_args)
    }

    /// As [`E2e::add_drainer`], with `pd_url` as its `pd-urls` (a proxy in front of PD, say) and
    /// drainer-0's drainer.toml passed through `edit` (another downstream user, say).
    pub fn add_drainer_with(&self, node_id: &str, pd_url: &str, edit: impl Fn(String) -> String) -> Result<Node> {
        let dir = self.cluster.dir().join(node_id);
        std::fs::create_dir_all(&dir)?;
        let mut args = self.drainer_args.clone();
        for a in &mut args {
            if let Some(path) = a.strip_prefix("-config=") {
                let toml = dir.join("drainer.toml");
                std::fs::write(&toml, edit(std::fs::read_to_string(path)?))?;
                *a = format!("-config={}", toml.display());
            }
        }
        Node::drainer(&dir, pd_url, node_id, &args)
    }

    /// The PD URL (`pd-urls`).
    pub fn pd_url(&self) -> String {
        self.cluster.pd().url()
    }

    /// A fresh ts from the cluster's TSO.
    pub fn tso(&self) -> Result<i64> {
        self.rt.block_on(tso(&self.pd_url()))
    }

    /// The drainer's checkpoint ts (`GET /commit_ts`).
    pub fn drainer_ts(&self) -> Result<i64> {
        self.rt.block_on(drainer_ts(self.drainer.port))
    }

    /// The stand-in's summary, once the workload has finished.
    pub fn workload_summary(&self) -> Option<serde_json::Value> {
        standin_summary(&self.standin_log)
    }

    /// The stand-in's per-transaction log (`--txn-log`): one JSON object per line.
    pub fn txn_log(&self) -> Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(self.cluster.dir().join("standin-txns.jsonl"))?;
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    /// Waits for the workload to finish, calling `tick` about every 500 ms meanwhile (for progress
    /// displays and fault injection). Fails if the stand-in or the drainer dies.
    pub fn wait_workload(&mut self, mut tick: impl FnMut(&mut Self) -> Result<()>) -> Result<serde_json::Value> {
        let deadline = Instant::now() + self.opts.duration + Duration::from_secs(600);
        loop {
            if let Some(summary) = self.workload_summary() {
                return Ok(summary);
            }
            if !self.standin.is_running() {
                bail!("the stand-in exited\n{}", self.standin.log_tail());
            }
            if Instant::now() > deadline {
                bail!("the stand-in did not stop\n{}", self.standin.log_tail());
            }
            tick(self)?;
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until the drainer's checkpoint passes a ts taken now; returns how long that took.
    pub fn wait_caught_up(&mut self, timeout: Duration) -> Result<(i64, Duration)> {
        let end_ts = self.tso()?;
        let start = Instant::now();
        loop {
            let ts = self.drainer_ts().unwrap_or(0);
            if ts >= end_ts {
                return Ok((end_ts, start.elapsed()));
            }
            if start.elapsed() > timeout {
                // Which pump holds the merge back: each one's registry state and watermark, and its log.
                let pumps = crate::nodes::list_nodes(&self.pd_url(), pump::node::NodeKind::Pump).unwrap_or_default();
                let mut why = String::new();
                for p in &pumps {
                    why.push_str(&format!("pump {} {} maxCommitTS {}\n", p.node_id, p.state, p.max_commit_ts));
                }
                for p in &self.pumps {
                    why.push_str(&format!("--- {} ---\n{}\n", p.node_id, log_tail(&p.log())));
                }
                bail!(
                    "the drainer did not reach ts {end_ts} within {timeout:?} (at {ts})\n{why}--- drainer ---\n{}\n--- stand-in ---\n{}",
                    log_tail(&self.drainer.log()),
                    log_tail(&self.standin_log)
                );
            }
            if !self.drainer.is_running() {
                bail!("the drainer exited\n{}", log_tail(&self.drainer.log()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// For the file and Kafka sinks: replays what the drainer wrote up to `end_ts` into the downstream
    /// (reparo, or the binlog consumer). Nothing to do for the MySQL sink.
    pub fn restore(&self, end_ts: i64) -> Result<()> {
        let down = self.cluster.downstream.as_ref().context("downstream")?;
        let root = self.cluster.dir();
        match self.opts.sink {
            SinkKind::Mysql => Ok(()),
            SinkKind::File => {
                let cfg = root.join("reparo.toml");
                std::fs::write(
                    &cfg,
                    format!(
                        "data-dir = \"{}\"\ndest-type = \"mysql\"\n[dest-db]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"root\"\npassword = \"\"\n",
                        self.drainer.dir.join("data").display(),
                        down.port
                    ),
                )?;
                run(Command::new(binary("reparo")?).arg(format!("-config={}", cfg.display())), "reparo")
            }
            SinkKind::Kafka => {
                let kafka = self.cluster.kafka.as_ref().context("kafka")?;
                let topic = self.kafka_topic()?;
                run(
                    Command::new(binary("binlog-consumer")?)
                        .arg(format!("--kafka-addrs={}", kafka.addr()))
                        .arg(format!("--topic={topic}"))
                        .arg(format!("--apply={}", down.url()))
                        .arg(format!("--stop-at-ts={end_ts}"))
                        // The topic carries no watermarks: the drainer has caught up past end_ts, so
                        // a quiet topic means everything up to it has been applied.
                        .arg("--idle-timeout=10"),
                    "binlog-consumer",
                )
            }
        }
    }

    /// The Kafka sink's topic: upstream's default, `<cluster id>_obinlog`.
    pub fn kafka_topic(&self) -> Result<String> {
        self.rt.block_on(async {
            let pd = pump::pd::PdClient::connect(&pump::etcd::EtcdConfig::from_pd_urls(&self.pd_url())?).await?;
            anyhow::Ok(format!("{}_obinlog", pd.cluster_id()))
        })
    }

    /// Compares every user table upstream and downstream.
    pub fn verify(&self) -> Result<Report> {
        let up = self.cluster.upstream.as_ref().context("upstream")?.url();
        let down = self.cluster.downstream.as_ref().context("downstream")?.url();
        self.rt.block_on(verify(&up, &down))
    }

    /// The whole check after the workload: catch up, restore (file/Kafka), verify. Fails with the report
    /// if any table differs.
    pub fn finish_and_verify(&mut self, catch_up: Duration) -> Result<Report> {
        let checked = (|| {
            let (end_ts, _) = self.wait_caught_up(catch_up)?;
            self.restore(end_ts)?;
            let report = self.verify()?;
            if !report.equal {
                bail!("downstream differs from upstream:\n{}", report.text);
            }
            Ok(report)
        })();
        // A failed check keeps every log and data dir (pumps' stores, the drainer's, the stand-in's
        // transaction log, `standin-txns.jsonl`) so it can be looked into after the test.
        checked.map_err(|e| {
            let dir = self.cluster.keep_dir().display().to_string();
            e.context(format!("end-to-end check failed; logs and data kept in {dir}"))
        })
    }
}

/// The result of [`E2e::verify`].
#[derive(Debug)]
pub struct Report {
    /// Every table matched (and there was at least one).
    pub equal: bool,
    /// How many tables were compared.
    pub tables: usize,
    /// A table per line: rows and checksums on both sides.
    pub text: String,
}

/// One of our binaries, built beside the caller.
pub fn binary(name: &str) -> Result<PathBuf> {
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

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The stand-in's `{"standin": {...}}` summary line, once it has printed it.
fn standin_summary(log: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter(|l| l.starts_with("{\"standin\""))
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|mut v| v.get_mut("standin").map(serde_json::Value::take))
}

fn drainer_config(opts: &Options, cluster: &Cluster, dir: &Path) -> Result<PathBuf> {
    let down = cluster.downstream.as_ref().context("downstream")?;
    let sink = match opts.sink {
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
    let text = format!(
        "detect-interval = 1\n[syncer]\nworker-count = 8\ntxn-batch = 64\n{}\n{sink}{}\n",
        opts.syncer_extra, opts.to_extra
    );
    let path = dir.join("drainer.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn tso(pd: &str) -> Result<i64> {
    let pd = pump::pd::PdClient::connect(&pump::etcd::EtcdConfig::from_pd_urls(pd)?).await?;
    Ok(i64::try_from(pd.get_ts().await?)?)
}

/// The drainer's checkpoint ts from `GET /commit_ts`.
async fn drainer_ts(port: u16) -> Result<i64> {
    let body: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{port}/commit_ts")).await?.error_for_status()?.json().await?;
    body.pointer("/data/ts").and_then(|v| v.as_i64()).context("no data.ts in /commit_ts")
}

/// Row counts and `CHECKSUM TABLE` per user table on both sides, then `binlogctl -cmd diff` for the
/// row-level comparison (chunked checksums, first differing rows).
async fn verify(up: &str, down: &str) -> Result<Report> {
    let mut upc = mysql_async::Conn::from_url(up).await?;
    let mut downc = mysql_async::Conn::from_url(down).await?;
    let tables: Vec<(String, String)> = upc
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' \
             AND table_schema NOT IN ('mysql','information_schema','performance_schema','sys','tidb_binlog', \
             'tidb_binlog_standin') \
             ORDER BY 1, 2",
        )
        .await?;
    let mut text = format!(
        "{:<40} {:>10} {:>10} {:>12} {:>12}  result\n",
        "table", "up rows", "down rows", "up checksum", "down checksum"
    );
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
    // The stand-in's own bookkeeping schema (its DDL history) is not replicated: compare the rest.
    let mut schemas: Vec<&str> = tables.iter().map(|(db, _)| db.as_str()).collect();
    schemas.dedup();
    let out = Command::new(binary("binlogctl")?)
        .args(["-cmd", "diff", "-source", up, "-target", down, "-schemas", &schemas.join(",")])
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
