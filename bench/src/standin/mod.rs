//! The upstream stand-in: plays a TiDB cluster for pumps and drainer.
//!
//! - The truth is a real MariaDB: every generated transaction runs there first.
//! - Each transaction takes `start_ts`, runs its statements (reading each touched row's before- and
//!   after-image from MariaDB), writes the P-binlog through [`pump::client::PumpsClient`], takes
//!   `commit_ts` from the TSO while it still holds its row locks, commits, then writes the C-binlog to
//!   the same pump. So commit-ts order is the upstream's serialization order.
//! - Rows are encoded as TiDB does (old row format, int / common / implicit `-1` handles; which
//!   columns appear per upstream-interfaces.md §3) with [`drainer::tidb`].
//! - DDL (create/drop database, create/drop/truncate/rename table, add/drop column, add/drop index)
//!   runs alone (a write lock over all DML), is sent as a DDL binlog with a job id and schema version
//!   as TiDB assigns them, and lands in the DDL history the status API serves
//!   ([`status`]). The history is kept in the upstream at `tidb_binlog_standin.ddl_history`, so a
//!   restarted stand-in continues the same ids and versions.
//!
//! # Layout
//! - [`tables`]: table shapes, CREATE TABLE text, `TableInfo`, random values.
//! - [`catalog`]: ids, schema versions, DDL planning and the job history.
//! - [`status`]: TiDB's status API for schemas.
//! - `dml`: the workers and their DML transactions (locking reads of the row images, mutations).
//! - `commit`: P-binlog, commit ts under the row locks, COMMIT, then the C-binlog (or Rollback).
//! - `ddl`: the DDL rotation and one DDL run alone.
//! - this file: [`Config`], [`run`] (connect, set up and seed the schema, run the workers), the
//!   shared context, the summary.

pub mod catalog;
mod commit;
mod ddl;
mod dml;
pub mod status;
pub mod tables;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mysql_async::prelude::Queryable;
use mysql_async::Pool;
use pump::client::{ClientConfig, PumpsClient, WriteOutcome};
use pump::node::Registry;
use drainer::tidb::model::{Job, TableInfo};
use pump::pd::PdClient;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;

use catalog::{Catalog, DdlOp};
use ddl::ddl;
use dml::{Op, TxnError, dml_txn, worker};
use tables::Kind;

/// Database holding the stand-in's own DDL history in the upstream.
pub const META_DB: &str = "tidb_binlog_standin";

/// What share of row operations insert, update and delete.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Insert weight.
    pub insert: u32,
    /// Update weight.
    pub update: u32,
    /// Delete weight.
    pub delete: u32,
}

impl Mix {
    /// Parses `insert=50,update=30,delete=20` (missing keys are 0).
    pub fn parse(s: &str) -> Result<Mix> {
        let mut m = Mix { insert: 0, update: 0, delete: 0 };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| anyhow!("mix part {part:?} is not key=weight"))?;
            let v: u32 = v.trim().parse().with_context(|| format!("mix weight {v:?}"))?;
            match k.trim() {
                "insert" => m.insert = v,
                "update" => m.update = v,
                "delete" => m.delete = v,
                other => bail!("unknown mix key {other:?} (insert, update, delete)"),
            }
        }
        if m.insert + m.update + m.delete == 0 {
            bail!("mix {s:?} has no weight");
        }
        Ok(m)
    }
}

/// Stand-in settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// PD (etcd) endpoints, comma separated.
    pub pd_urls: String,
    /// The upstream MariaDB, `mysql://user:pass@host:port`.
    pub upstream: String,
    /// Workload database.
    pub database: String,
    /// Workload tables (cycling through the kinds).
    pub tables: usize,
    /// Rows inserted into each new table before the run.
    pub rows: usize,
    /// Concurrent transactions.
    pub threads: usize,
    /// Stop after this long (None: no limit).
    pub duration: Option<Duration>,
    /// Stop after this many committed transactions (None: no limit).
    pub txns: Option<u64>,
    /// Transactions per second over all threads; 0 = as fast as possible.
    pub rate: f64,
    /// Insert/update/delete weights.
    pub mix: Mix,
    /// Most row operations per transaction.
    pub rows_per_txn: usize,
    /// Size of the blob in a large row.
    pub large_row_bytes: usize,
    /// One transaction in this many writes a large row (0 = never).
    pub large_row_every: u64,
    /// Rows of a large transaction.
    pub large_txn_rows: usize,
    /// One transaction in this many is large (0 = never).
    pub large_txn_every: u64,
    /// A DDL after this many committed transactions (0 = no DDL during the run).
    pub ddl_every: u64,
    /// Where to serve the status API (None: not served).
    pub status_addr: Option<SocketAddr>,
    /// Pump client settings.
    pub client: ClientConfig,
    /// TiDB's `[binlog] binlog-socket`: write every binlog to the pump serving this unix socket
    /// instead of the pumps in the registry.
    pub binlog_socket: Option<String>,
    /// One JSON line per transaction written here (start_ts, commit_ts, pump, outcome).
    pub txn_log: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
    /// Random seed (0: from the clock).
    pub seed: u64,
    /// Fault: every Nth transaction (0 = none) commits or rolls back upstream but its C/Rollback binlog
    /// is never sent, as when TiDB dies right after committing in TiKV. The status API's `/mvcc/hex`
    /// still knows its outcome, as TiKV would.
    pub lose_commit_binlog_every: u64,
    /// Every Nth transaction (0 = none) rolls back upstream after its P-binlog was written.
    pub rollback_every: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pd_urls: "http://127.0.0.1:2379".into(),
            upstream: "mysql://root@127.0.0.1:3306".into(),
            database: "standin".into(),
            tables: 4,
            rows: 100,
            threads: 4,
            duration: Some(Duration::from_secs(10)),
            txns: None,
            rate: 0.0,
            mix: Mix { insert: 50, update: 30, delete: 20 },
            rows_per_txn: 4,
            large_row_bytes: 256 * 1024,
            large_row_every: 100,
            large_txn_rows: 200,
            large_txn_every: 200,
            ddl_every: 0,
            status_addr: None,
            client: ClientConfig::default(),
            binlog_socket: None,
            txn_log: None,
            lose_commit_binlog_every: 0,
            rollback_every: 0,
            progress: true,
            seed: 0,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Committed DML transactions of the run.
    pub txns: u64,
    /// Committed transactions that seeded new tables before the run.
    pub seed_txns: u64,
    /// Transactions rolled back before commit (deadlock, lock timeout, duplicate key).
    pub aborted: u64,
    /// Rows inserted.
    pub rows_inserted: u64,
    /// Rows updated.
    pub rows_updated: u64,
    /// Rows deleted.
    pub rows_deleted: u64,
    /// Binlogs acknowledged by a pump (P and C).
    pub binlogs: u64,
    /// DDL jobs run.
    pub ddl_jobs: u64,
    /// DDL transactions sent (jobs, plus DROP COLUMN's DeleteOnly binlog).
    pub ddl_binlogs: u64,
    /// Errors: failed binlog writes, failed commits, failed DDL.
    pub errors: u64,
    /// C-binlogs that could not be written (the transaction is committed upstream).
    pub commit_binlog_failures: u64,
    /// Seconds of the run (after setup).
    pub elapsed_secs: f64,
    /// Committed transactions per second.
    pub txn_per_sec: f64,
    /// Binlogs per pump node id.
    pub pumps: BTreeMap<String, u64>,
    /// Current schema version.
    pub schema_version: i64,
}

#[derive(Default)]
struct Counters {
    txns: AtomicU64,
    aborted: AtomicU64,
    inserted: AtomicU64,
    updated: AtomicU64,
    deleted: AtomicU64,
    binlogs: AtomicU64,
    ddl: AtomicU64,
    ddl_binlogs: AtomicU64,
    errors: AtomicU64,
    c_failures: AtomicU64,
    pumps: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn wrote(&self, out: &WriteOutcome) {
        if let WriteOutcome::Written { node_id } = out {
            self.binlogs.fetch_add(1, Ordering::Relaxed);
            *self.pumps.lock().unwrap_or_else(|e| e.into_inner()).entry(node_id.clone()).or_default() += 1;
        }
    }
}

/// A workload table as the workers see it between two DDLs.
#[derive(Debug)]
struct WorkTable {
    db: String,
    info: TableInfo,
    kind: Kind,
    next: Arc<AtomicI64>,
}

/// One line of the transaction log.
#[derive(Debug, Serialize)]
struct TxnLogLine {
    start_ts: u64,
    commit_ts: u64,
    pump: String,
    /// `committed` (P and C written), `commit_binlog_failed`, `rolled_back`, `commit_binlog_lost`
    /// (the `--lose-commit-binlog-every` fault: committed or rolled back, C/Rollback never sent).
    outcome: &'static str,
    ddl_job_id: i64,
}

struct Ctx {
    cfg: Config,
    pool: Pool,
    tso: PdClient,
    client: PumpsClient,
    catalog: status::Shared,
    tables: RwLock<Arc<Vec<Arc<WorkTable>>>>,
    next_keys: Mutex<BTreeMap<i64, Arc<AtomicI64>>>,
    ddl_lock: tokio::sync::RwLock<()>,
    ddl_step: Mutex<u64>,
    counters: Counters,
    log: Option<tokio::sync::mpsc::UnboundedSender<TxnLogLine>>,
    pending_commits: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
    stop: AtomicBool,
    next_slot: Mutex<Instant>,
    /// Transactions that reached their commit point (for the `*_every` knobs).
    finished: AtomicU64,
    /// What TiKV would answer about each transaction's primary key (`/mvcc/hex`).
    mvcc: status::Mvcc,
}

/// Runs the stand-in: connects, creates the workload schema (as DDL binlogs), seeds rows, runs the
/// workload, waits for outstanding C-binlogs and returns the summary. The status API (if configured)
/// keeps serving until the returned handle is dropped.
pub async fn run(cfg: Config) -> Result<(Summary, Option<tokio::task::JoinHandle<()>>)> {
    let etcd_cfg = pump::etcd::EtcdConfig::from_pd_urls(&cfg.pd_urls)?;
    let tso = PdClient::connect(&etcd_cfg).await?;
    let etcd = pump::etcd::connect(&etcd_cfg).await.with_context(|| format!("connecting to PD's etcd at {}", cfg.pd_urls))?;
    let client = match &cfg.binlog_socket {
        Some(socket) => PumpsClient::local(tso.cluster_id(), cfg.client.clone(), socket),
        None => PumpsClient::connect(Registry::new(etcd), tso.cluster_id(), cfg.client.clone())
            .await
            .context("starting the pump client")?,
    };

    let opts = mysql_async::Opts::from_url(&cfg.upstream).with_context(|| format!("upstream url {}", cfg.upstream))?;
    let opts = mysql_async::OptsBuilder::from_opts(opts).setup(vec!["SET time_zone = '+00:00'"]);
    let pool = Pool::new(opts);
    let mut conn = pool.get_conn().await.with_context(|| format!("connecting to upstream {}", cfg.upstream))?;
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{META_DB}`")).await?;
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS `{META_DB}`.ddl_history (job_id BIGINT PRIMARY KEY, schema_version BIGINT NOT NULL, job LONGTEXT NOT NULL)"
    ))
    .await?;
    let stored: Vec<String> = conn.query(format!("SELECT job FROM `{META_DB}`.ddl_history")).await?;
    let mut jobs = Vec::with_capacity(stored.len());
    for s in stored {
        jobs.push(serde_json::from_str::<Job>(&s).context("stored DDL job")?);
    }
    drop(conn);
    let catalog: status::Shared = Arc::new(RwLock::new(Catalog::replay(jobs)));
    let mvcc = status::Mvcc::default();

    let server = match cfg.status_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("status address {addr}"))?;
            let app = status::router(catalog.clone()).merge(status::mvcc_router(mvcc.clone()));
            Some(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }))
        }
        None => None,
    };

    let log = match &cfg.txn_log {
        Some(path) => {
            let mut f = std::fs::File::create(path).with_context(|| format!("txn log {}", path.display()))?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<TxnLogLine>();
            tokio::spawn(async move {
                while let Some(l) = rx.recv().await {
                    let _ = writeln!(f, "{}", serde_json::to_string(&l).unwrap_or_default());
                }
                let _ = f.flush();
            });
            Some(tx)
        }
        None => None,
    };

    let ctx = Arc::new(Ctx {
        cfg: cfg.clone(),
        pool,
        tso,
        client,
        catalog,
        tables: RwLock::new(Arc::new(Vec::new())),
        next_keys: Mutex::new(BTreeMap::new()),
        ddl_lock: tokio::sync::RwLock::new(()),
        ddl_step: Mutex::new(0),
        counters: Counters::default(),
        log,
        pending_commits: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
        stop: AtomicBool::new(false),
        next_slot: Mutex::new(Instant::now()),
        finished: AtomicU64::new(0),
        mvcc,
    });

    setup(&ctx).await?;
    let started = Instant::now();
    let base_txns = ctx.counters.txns.load(Ordering::Relaxed);

    let bar = progress_bar(cfg.progress);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..cfg.threads.max(1) {
        let ctx = ctx.clone();
        let seed = if cfg.seed == 0 { rand::random() } else { cfg.seed.wrapping_add(w as u64) };
        workers.spawn(async move { worker(ctx, SmallRng::seed_from_u64(seed), base_txns).await });
    }
    let ticker = {
        let ctx = ctx.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let c = &ctx.counters;
                bar.set_message(format!(
                    "txns {} rows +{} ~{} -{} binlogs {} ddl {} aborted {} errors {}",
                    c.txns.load(Ordering::Relaxed),
                    c.inserted.load(Ordering::Relaxed),
                    c.updated.load(Ordering::Relaxed),
                    c.deleted.load(Ordering::Relaxed),
                    c.binlogs.load(Ordering::Relaxed),
                    c.ddl.load(Ordering::Relaxed),
                    c.aborted.load(Ordering::Relaxed),
                    c.errors.load(Ordering::Relaxed),
                ));
                bar.tick();
            }
        })
    };
    let deadline = cfg.duration.map(|d| started + d);
    loop {
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            break;
        }
        if let Some(n) = cfg.txns
            && ctx.counters.txns.load(Ordering::Relaxed) - base_txns >= n
        {
            break;
        }
        if workers.is_empty() {
            break;
        }
        tokio::select! {
            r = workers.join_next() => {
                if let Some(Err(e)) = r { tracing::error!(error = %e, "worker panicked"); }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    ctx.stop.store(true, Ordering::SeqCst);
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "worker panicked");
        }
    }
    let elapsed = started.elapsed();
    // Outstanding C-binlogs (written in the background, as TiDB does).
    let mut pending = std::mem::take(&mut *ctx.pending_commits.lock().await);
    while pending.join_next().await.is_some() {}
    ticker.abort();
    bar.finish_and_clear();

    let c = &ctx.counters;
    let txns = c.txns.load(Ordering::Relaxed) - base_txns;
    let summary = Summary {
        txns,
        seed_txns: base_txns,
        aborted: c.aborted.load(Ordering::Relaxed),
        rows_inserted: c.inserted.load(Ordering::Relaxed),
        rows_updated: c.updated.load(Ordering::Relaxed),
        rows_deleted: c.deleted.load(Ordering::Relaxed),
        binlogs: c.binlogs.load(Ordering::Relaxed),
        ddl_jobs: c.ddl.load(Ordering::Relaxed),
        ddl_binlogs: c.ddl_binlogs.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        commit_binlog_failures: c.c_failures.load(Ordering::Relaxed),
        elapsed_secs: elapsed.as_secs_f64(),
        txn_per_sec: txns as f64 / elapsed.as_secs_f64().max(1e-9),
        pumps: c.pumps.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        schema_version: ctx.catalog.read().map(|c| c.version()).unwrap_or(0),
    };
    Ok((summary, server))
}

fn progress_bar(show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
        bar.set_style(style);
    }
    bar
}

/// Creates the workload database and tables (as DDL binlogs) and seeds new tables.
async fn setup(ctx: &Arc<Ctx>) -> Result<()> {
    let db = ctx.cfg.database.clone();
    let have_db = ctx.catalog.read().map_err(|_| anyhow!("catalog poisoned"))?.db_by_name(&db).is_some();
    if !have_db {
        ddl(ctx, DdlOp::CreateSchema { db: db.clone() }).await?;
    }
    let existing: Vec<String> = {
        let c = ctx.catalog.read().map_err(|_| anyhow!("catalog poisoned"))?;
        let d = c.db_by_name(&db).ok_or_else(|| anyhow!("database {db} missing after create"))?;
        c.tables_in(d.id).iter().filter(|t| Kind::of_table(&t.name.o).is_some()).map(|t| t.name.o.clone()).collect()
    };
    let mut created = Vec::new();
    for i in existing.len()..ctx.cfg.tables {
        let kind = Kind::ALL[i % Kind::ALL.len()];
        let table = format!("t_{}_{i}", kind.name());
        ddl(ctx, DdlOp::CreateTable { db: db.clone(), table: table.clone(), kind }).await?;
        created.push(table);
    }
    refresh_tables(ctx).await?;
    // Seed the new tables, 100 rows per transaction.
    let tables = ctx.tables.read().map_err(|_| anyhow!("tables poisoned"))?.clone();
    let mut rng = SmallRng::seed_from_u64(ctx.cfg.seed ^ 0x5eed);
    let mut conn = ctx.pool.get_conn().await?;
    for t in tables.iter().filter(|t| created.contains(&t.info.name.o)) {
        let mut left = ctx.cfg.rows;
        let mut attempts = 0;
        let mut failures = 0;
        while left > 0 {
            attempts += 1;
            if attempts > 1000 {
                bail!("seeding {} keeps aborting", t.info.name.o);
            }
            let n = left.min(100);
            let ops: Vec<(Arc<WorkTable>, Op)> = (0..n).map(|_| (t.clone(), Op::Insert)).collect();
            match dml_txn(ctx, &mut conn, &mut rng, ops, None).await {
                Ok(_) => left -= n,
                Err(TxnError::Aborted(e)) => tracing::debug!(error = %e, "seed transaction aborted, retrying"),
                // A failed binlog write or a lost connection on a loaded machine: the transaction
                // was rolled back upstream; try again a few times before giving up.
                Err(TxnError::Fatal(e)) => {
                    failures += 1;
                    if failures > 20 {
                        return Err(e).context("seeding rows");
                    }
                    tracing::warn!(error = %e, failures, "seed transaction failed, retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if conn.query_drop("SELECT 1").await.is_err() {
                        conn = ctx.pool.get_conn().await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Rebuilds the workers' view of the workload tables from the catalog.
async fn refresh_tables(ctx: &Arc<Ctx>) -> Result<()> {
    let (infos, db) = {
        let c = ctx.catalog.read().map_err(|_| anyhow!("catalog poisoned"))?;
        let Some(d) = c.db_by_name(&ctx.cfg.database) else {
            *ctx.tables.write().map_err(|_| anyhow!("tables poisoned"))? = Arc::new(Vec::new());
            return Ok(());
        };
        let infos: Vec<TableInfo> = c.tables_in(d.id).into_iter().filter(|t| Kind::of_table(&t.name.o).is_some()).cloned().collect();
        (infos, d.db_name.o.clone())
    };
    let mut out = Vec::new();
    for info in infos {
        let Some(kind) = Kind::of_table(&info.name.o) else { continue };
        let known = ctx.next_keys.lock().unwrap_or_else(|e| e.into_inner()).get(&info.id).cloned();
        let next = match known {
            Some(n) => n,
            None => {
                let n = Arc::new(AtomicI64::new(next_key_from_upstream(ctx, &db, &info.name.o, kind).await?));
                ctx.next_keys.lock().unwrap_or_else(|e| e.into_inner()).insert(info.id, n.clone());
                n
            }
        };
        out.push(Arc::new(WorkTable { db: db.clone(), info, kind, next }));
    }
    *ctx.tables.write().map_err(|_| anyhow!("tables poisoned"))? = Arc::new(out);
    Ok(())
}

const UNSIGNED_BASE: u64 = 1 << 63;

async fn next_key_from_upstream(ctx: &Ctx, db: &str, table: &str, kind: Kind) -> Result<i64> {
    let expr = match kind {
        Kind::Types => "MAX(id)".to_owned(),
        Kind::Composite => "MAX(u)".to_owned(),
        Kind::NoPk => "MAX(k)".to_owned(),
        Kind::Unsigned => format!("MAX(id) - {UNSIGNED_BASE}"),
    };
    let mut conn = ctx.pool.get_conn().await?;
    let v: Option<Option<i64>> = conn.query_first(format!("SELECT CAST({expr} AS SIGNED) FROM `{db}`.`{table}`")).await?;
    Ok(v.flatten().map_or(0, |m| m + 1))
}
