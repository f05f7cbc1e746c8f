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
//! - this file: [`Config`], [`run`], transactions, DDL, the summary.

pub mod catalog;
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
use mysql_async::{Conn, Pool};
use prost::Message;
use pump::client::{ClientConfig, PumpsClient, WriteOutcome};
use pump::node::Registry;
use pump::proto::{Binlog, BinlogType, MutationType, PrewriteValue, TableMutation};
use drainer::tidb::codec::{Datum, Handle, record_key};
use drainer::tidb::model::{EXTRA_HANDLE_ID, Job, TableInfo, action, flag, schema_state, tp};
use drainer::tidb::row::{encode_insert_row, encode_row, encode_update_row};
use drainer::tidb::value::{Value, flatten, is_string_type};
use pump::pd::PdClient;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use catalog::{Catalog, DdlOp};
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Insert,
    Update,
    Delete,
}

#[derive(Debug)]
enum TxnError {
    /// Rolled back upstream, nothing written: retryable.
    Aborted(anyhow::Error),
    /// A binlog or commit failure.
    Fatal(anyhow::Error),
}

async fn worker(ctx: Arc<Ctx>, mut rng: SmallRng, base_txns: u64) {
    let mut conn = match ctx.pool.get_conn().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "worker cannot connect to the upstream");
            ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut n: u64 = 0;
    while !ctx.stop.load(Ordering::Relaxed) {
        if let Some(limit) = ctx.cfg.txns
            && ctx.counters.txns.load(Ordering::Relaxed) - base_txns >= limit
        {
            break;
        }
        pace(&ctx).await;
        n += 1;
        // Tables are picked under the DDL lock, so a transaction never sees a schema mid-change.
        let guard = ctx.ddl_lock.read().await;
        let ops = plan_ops(&ctx, &mut rng, n);
        if ops.is_empty() {
            drop(guard);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let large = ctx.cfg.large_row_every > 0 && rng.random_ratio(1, ctx.cfg.large_row_every.min(u64::from(u32::MAX)) as u32);
        let r = dml_txn(&ctx, &mut conn, &mut rng, ops, large.then_some(ctx.cfg.large_row_bytes)).await;
        drop(guard);
        match r {
            Ok(_) => {}
            Err(TxnError::Aborted(e)) => {
                tracing::debug!(error = %e, "transaction aborted");
                ctx.counters.aborted.fetch_add(1, Ordering::Relaxed);
                // A connection in a bad state is replaced.
                if conn.query_drop("SELECT 1").await.is_err() {
                    match ctx.pool.get_conn().await {
                        Ok(c) => conn = c,
                        Err(_) => return,
                    }
                }
            }
            Err(TxnError::Fatal(e)) => {
                tracing::warn!(error = %e, "transaction failed");
                ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
                if conn.query_drop("SELECT 1").await.is_err() {
                    match ctx.pool.get_conn().await {
                        Ok(c) => conn = c,
                        Err(_) => return,
                    }
                }
            }
        }
        let done = ctx.counters.txns.load(Ordering::Relaxed) - base_txns;
        if ctx.cfg.ddl_every > 0 && done > 0 && done % ctx.cfg.ddl_every == 0 {
            let step = {
                let mut s = ctx.ddl_step.lock().unwrap_or_else(|e| e.into_inner());
                if *s >= done / ctx.cfg.ddl_every {
                    None
                } else {
                    *s = done / ctx.cfg.ddl_every;
                    Some(*s)
                }
            };
            if let Some(step) = step {
                run_ddl_step(&ctx, step - 1).await;
            }
        }
    }
}

/// Waits for this transaction's slot under `--rate`.
async fn pace(ctx: &Ctx) {
    if ctx.cfg.rate <= 0.0 {
        return;
    }
    let gap = Duration::from_secs_f64(1.0 / ctx.cfg.rate);
    let at = {
        let mut next = ctx.next_slot.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if *next < now {
            *next = now;
        }
        let at = *next;
        *next += gap;
        at
    };
    tokio::time::sleep_until(at.into()).await;
}

fn plan_ops(ctx: &Ctx, rng: &mut SmallRng, n: u64) -> Vec<(Arc<WorkTable>, Op)> {
    let tables = match ctx.tables.read() {
        Ok(t) => t.clone(),
        Err(_) => return Vec::new(),
    };
    if tables.is_empty() {
        return Vec::new();
    }
    let cfg = &ctx.cfg;
    let large_txn = cfg.large_txn_every > 0 && n % cfg.large_txn_every == 0;
    let count = if large_txn { cfg.large_txn_rows.max(1) } else { rng.random_range(1..=cfg.rows_per_txn.max(1)) };
    let total = cfg.mix.insert + cfg.mix.update + cfg.mix.delete;
    (0..count)
        .map(|_| {
            let t = tables[rng.random_range(0..tables.len())].clone();
            let r = rng.random_range(0..total.max(1));
            let op = if large_txn || r < cfg.mix.insert {
                Op::Insert
            } else if r < cfg.mix.insert + cfg.mix.update {
                Op::Update
            } else {
                Op::Delete
            };
            (t, op)
        })
        .collect()
}

fn q(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The WHERE clause and handle of key number `n` of a table.
fn key_of(t: &WorkTable, n: i64) -> (String, Handle, Vec<(String, String)>) {
    match t.kind {
        Kind::Types => (format!("`id` = {n}"), Handle::Int(n), vec![("id".into(), n.to_string())]),
        Kind::Unsigned => {
            let id = UNSIGNED_BASE + n as u64;
            (
                format!("`id` = {id}"),
                Handle::Int(id as i64),
                vec![("id".into(), id.to_string()), ("name".into(), format!("'name{n}'"))],
            )
        }
        Kind::Composite => {
            let a = format!("k{n:08}");
            let b = n % 1000;
            (
                format!("`a` = '{a}' AND `b` = {b}"),
                Handle::Common(vec![Datum::Bytes(a.clone().into_bytes()), Datum::I64(b)]),
                vec![("a".into(), format!("'{a}'")), ("b".into(), b.to_string()), ("u".into(), n.to_string())],
            )
        }
        Kind::NoPk => (format!("`k` = {n}"), Handle::Int(n), vec![("k".into(), n.to_string())]),
    }
}

/// Columns a workload update may change: not keys, not unique.
fn updatable(t: &WorkTable, col: &drainer::tidb::model::ColumnInfo) -> bool {
    let f = col.field_type.flag;
    f & (flag::PRI_KEY | flag::UNIQUE_KEY) == 0 && !(t.kind == Kind::NoPk && col.name.l == "k")
}

/// Reads one row (all writable columns) with a locking read and turns it into datums. A locking
/// read sees the latest committed version. A plain read would see the transaction's REPEATABLE READ
/// snapshot: after an UPDATE that changed nothing (every value already equal) InnoDB keeps no
/// version of its own, so it would return the row as of the snapshot, older than the locked
/// version the UPDATE applied to, and the binlog's new row would undo a concurrent transaction's
/// committed change (seen as a rare "databases differ" in the fault tests).
async fn read_row(conn: &mut Conn, t: &WorkTable, where_: &str) -> Result<Option<Vec<(i64, Datum)>>, TxnError> {
    let cols = t.info.writable_columns();
    // FLOAT over the text protocol comes back rounded to 6 significant digits; as DOUBLE it is exact.
    let list: Vec<String> = cols
        .iter()
        .map(|c| if c.field_type.tp == tp::FLOAT { format!("CAST({} AS DOUBLE)", q(&c.name.o)) } else { q(&c.name.o) })
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{} WHERE {where_} LIMIT 1 FOR UPDATE",
        list.join(", "),
        q(&t.db),
        q(&t.info.name.o)
    );
    let row: Option<mysql_async::Row> = conn.query_first(sql).await.map_err(aborted)?;
    let Some(row) = row else { return Ok(None) };
    let mut out = Vec::with_capacity(cols.len());
    for (i, c) in cols.iter().enumerate() {
        let v = row.as_ref(i).ok_or_else(|| TxnError::Fatal(anyhow!("column {} missing from the result", c.name.o)))?;
        let d = to_datum(v, &c.field_type)
            .with_context(|| format!("column {} of {}.{}", c.name.o, t.db, t.info.name.o))
            .map_err(TxnError::Fatal)?;
        out.push((c.id, d));
    }
    Ok(Some(out))
}

/// A value MariaDB returned over the text protocol, as TiDB's flattened datum.
fn to_datum(v: &mysql_async::Value, ft: &drainer::tidb::model::FieldType) -> Result<Datum> {
    let b = match v {
        mysql_async::Value::NULL => return Ok(Datum::Null),
        mysql_async::Value::Bytes(b) => b,
        other => bail!("unexpected binary-protocol value {other:?}"),
    };
    let val = if is_string_type(ft.tp) {
        Value::Bytes(b.clone())
    } else if ft.tp == tp::BIT {
        let n = (((ft.flen + 7) / 8).clamp(1, 8)) as usize;
        let mut out = vec![0u8; n.saturating_sub(b.len())];
        out.extend_from_slice(&b[b.len().saturating_sub(n)..]);
        Value::Bit(out)
    } else {
        Value::from_text(Some(std::str::from_utf8(b)?), ft)?
    };
    Ok(flatten(&val))
}

/// Row columns as an insert carries them: without the int handle column, without the integer
/// columns of a clustered key (they never need restored data).
fn insert_columns(t: &WorkTable, row: &[(i64, Datum)]) -> Vec<(i64, Datum)> {
    let skip: Vec<i64> = t
        .info
        .cols
        .iter()
        .filter(|c| {
            c.field_type.is_pri_key()
                && (t.info.pk_is_handle || (t.info.is_common_handle && !is_string_type(c.field_type.tp)))
        })
        .map(|c| c.id)
        .collect();
    row.iter().filter(|(id, _)| !skip.contains(id)).cloned().collect()
}

fn with_row_id(t: &WorkTable, mut row: Vec<(i64, Datum)>, h: &Handle) -> Vec<(i64, Datum)> {
    if t.info.has_implicit_row_id()
        && let Handle::Int(id) = h
    {
        row.push((EXTRA_HANDLE_ID, Datum::I64(*id)));
    }
    row
}

#[derive(Default)]
struct MutationBuilder {
    order: Vec<i64>,
    by_table: BTreeMap<i64, TableMutation>,
    first_key: Option<Vec<u8>>,
}

impl MutationBuilder {
    fn entry(&mut self, t: &WorkTable, h: &Handle) -> &mut TableMutation {
        if self.first_key.is_none() {
            self.first_key = Some(record_key(t.info.id, h));
        }
        let id = t.info.id;
        if !self.by_table.contains_key(&id) {
            self.order.push(id);
        }
        self.by_table.entry(id).or_insert_with(|| TableMutation { table_id: Some(id), ..TableMutation::default() })
    }

    fn into_value(mut self, schema_version: i64) -> (Vec<u8>, Vec<u8>) {
        let mutations: Vec<TableMutation> = self.order.iter().filter_map(|id| self.by_table.remove(id)).collect();
        let pv = PrewriteValue { schema_version: Some(schema_version), mutations };
        (self.first_key.unwrap_or_default(), pv.encode_to_vec())
    }
}

/// Sorts an upstream error: deadlock, lock wait timeout and duplicate key roll the transaction back
/// and are retried; anything else is a failure (a bug in the generated SQL, a lost connection).
fn aborted(e: mysql_async::Error) -> TxnError {
    match &e {
        mysql_async::Error::Server(s) if matches!(s.code, 1205 | 1213 | 1062) => TxnError::Aborted(e.into()),
        _ => TxnError::Fatal(e.into()),
    }
}

/// Runs one DML transaction upstream and writes its binlogs; on any error the upstream transaction
/// is rolled back before returning (so it holds no locks). Returns the number of row changes.
async fn dml_txn(
    ctx: &Arc<Ctx>,
    conn: &mut Conn,
    rng: &mut SmallRng,
    ops: Vec<(Arc<WorkTable>, Op)>,
    large: Option<usize>,
) -> Result<usize, TxnError> {
    let r = dml_txn_inner(ctx, conn, rng, ops, large).await;
    if r.is_err() {
        let _ = conn.query_drop("ROLLBACK").await;
    }
    r
}

async fn dml_txn_inner(
    ctx: &Arc<Ctx>,
    conn: &mut Conn,
    rng: &mut SmallRng,
    ops: Vec<(Arc<WorkTable>, Op)>,
    large: Option<usize>,
) -> Result<usize, TxnError> {
    let schema_version = ctx.catalog.read().map(|c| c.version()).unwrap_or(0);
    let start_ts = ctx.tso.get_ts().await.map_err(|e| TxnError::Fatal(e.into()))?;
    conn.query_drop("START TRANSACTION").await.map_err(aborted)?;
    let mut m = MutationBuilder::default();
    let (mut ins, mut upd, mut del) = (0u64, 0u64, 0u64);
    let mut large = large;
    for (t, op) in ops {
        let cols = t.info.writable_columns();
        match op {
            Op::Insert => {
                let n = t.next.fetch_add(1, Ordering::Relaxed);
                let (where_, h, keys) = key_of(&t, n);
                let mut names = Vec::new();
                let mut vals = Vec::new();
                for c in &cols {
                    names.push(q(&c.name.o));
                    match keys.iter().find(|(k, _)| *k == c.name.l) {
                        Some((_, v)) => vals.push(v.clone()),
                        None => {
                            let big = if c.field_type.tp == tp::MEDIUM_BLOB { large.take() } else { None };
                            vals.push(tables::random_literal(rng, &c.field_type, !c.field_type.is_not_null(), big));
                        }
                    }
                }
                let sql = format!(
                    "INSERT INTO {}.{} ({}) VALUES ({})",
                    q(&t.db),
                    q(&t.info.name.o),
                    names.join(", "),
                    vals.join(", ")
                );
                conn.query_drop(sql).await.map_err(aborted)?;
                let row = read_row(conn, &t, &where_).await?.ok_or_else(|| TxnError::Fatal(anyhow!("inserted row not found")))?;
                let bytes = encode_insert_row(&h, &insert_columns(&t, &row));
                let e = m.entry(&t, &h);
                e.inserted_rows.push(bytes);
                e.sequence.push(MutationType::Insert as i32);
                ins += 1;
            }
            Op::Update | Op::Delete => {
                let top = t.next.load(Ordering::Relaxed).max(1);
                let n = rng.random_range(0..top);
                let (where_, h, _) = key_of(&t, n);
                let Some(old) = read_row(conn, &t, &where_).await? else { continue };
                if op == Op::Delete {
                    let sql = format!("DELETE FROM {}.{} WHERE {where_} LIMIT 1", q(&t.db), q(&t.info.name.o));
                    conn.query_drop(sql).await.map_err(aborted)?;
                    let mut bytes = Vec::new();
                    encode_row(&mut bytes, &with_row_id(&t, old, &h));
                    let e = m.entry(&t, &h);
                    e.deleted_rows.push(bytes);
                    e.sequence.push(MutationType::DeleteRow as i32);
                    del += 1;
                } else {
                    let candidates: Vec<_> = cols.iter().filter(|c| updatable(&t, c)).collect();
                    if candidates.is_empty() {
                        continue;
                    }
                    let k = rng.random_range(1..=candidates.len().min(3));
                    let mut sets = Vec::new();
                    for _ in 0..k {
                        let c = candidates[rng.random_range(0..candidates.len())];
                        let big = if c.field_type.tp == tp::MEDIUM_BLOB { large.take() } else { None };
                        sets.push(format!(
                            "{} = {}",
                            q(&c.name.o),
                            tables::random_literal(rng, &c.field_type, !c.field_type.is_not_null(), big)
                        ));
                    }
                    let sql = format!("UPDATE {}.{} SET {} WHERE {where_} LIMIT 1", q(&t.db), q(&t.info.name.o), sets.join(", "));
                    conn.query_drop(sql).await.map_err(aborted)?;
                        let new = read_row(conn, &t, &where_).await?.ok_or_else(|| TxnError::Fatal(anyhow!("updated row not found")))?;
                    let bytes = encode_update_row(&with_row_id(&t, old, &h), &with_row_id(&t, new, &h));
                    let e = m.entry(&t, &h);
                    e.updated_rows.push(bytes);
                    e.sequence.push(MutationType::Update as i32);
                    upd += 1;
                }
            }
        }
    }
    let changes = (ins + upd + del) as usize;
    if changes == 0 {
        conn.query_drop("ROLLBACK").await.map_err(aborted)?;
        return Ok(0);
    }
    let (prewrite_key, prewrite_value) = m.into_value(schema_version);
    let p = Binlog {
        tp: Some(BinlogType::Prewrite as i32),
        start_ts: Some(start_ts as i64),
        commit_ts: Some(0),
        prewrite_key: Some(prewrite_key),
        prewrite_value: Some(prewrite_value),
        ddl_query: None,
        ddl_job_id: Some(0),
        ddl_schema_state: Some(0),
    };
    let commit_ts = commit_with_binlog(ctx, conn, p).await?;
    let c = &ctx.counters;
    c.txns.fetch_add(1, Ordering::Relaxed);
    c.inserted.fetch_add(ins, Ordering::Relaxed);
    c.updated.fetch_add(upd, Ordering::Relaxed);
    c.deleted.fetch_add(del, Ordering::Relaxed);
    let _ = commit_ts;
    Ok(changes)
}

/// Writes the P-binlog, takes the commit ts (locks still held), commits upstream and hands the
/// C-binlog to the background. Returns the commit ts.
async fn commit_with_binlog(ctx: &Arc<Ctx>, conn: &mut Conn, p: Binlog) -> Result<u64, TxnError> {
    let start_ts = p.start_ts() as u64;
    let key = p.prewrite_key().to_vec();
    let out = match ctx.client.write_binlog(&p).await {
        Ok(o) => o,
        Err(e) => {
            let _ = conn.query_drop("ROLLBACK").await;
            return Err(TxnError::Fatal(anyhow!(e).context(format!("prewrite binlog of start_ts {start_ts}"))));
        }
    };
    ctx.counters.wrote(&out);
    let n = ctx.finished.fetch_add(1, Ordering::Relaxed) + 1;
    let every = |k: u64| k > 0 && n % k == 0;
    let lose = every(ctx.cfg.lose_commit_binlog_every);
    let commit_ts = match ctx.tso.get_ts().await {
        Ok(ts) => ts,
        Err(e) => {
            let _ = conn.query_drop("ROLLBACK").await;
            ctx.mvcc.record(&key, start_ts, None);
            spawn_commit(ctx, p, 0, out, false).await;
            return Err(TxnError::Fatal(anyhow!(e).context("commit ts")));
        }
    };
    if every(ctx.cfg.rollback_every) {
        conn.query_drop("ROLLBACK").await.map_err(|e| TxnError::Fatal(e.into()))?;
        ctx.mvcc.record(&key, start_ts, None);
        spawn_commit(ctx, p, 0, out, lose).await;
        return Err(TxnError::Aborted(anyhow!("start_ts {start_ts} rolled back on purpose (--rollback-every)")));
    }
    if let Err(e) = conn.query_drop("COMMIT").await {
        ctx.mvcc.record(&key, start_ts, None);
        spawn_commit(ctx, p, 0, out, false).await;
        return Err(TxnError::Fatal(anyhow!(e).context(format!("upstream commit of start_ts {start_ts}"))));
    }
    ctx.mvcc.record(&key, start_ts, Some(commit_ts));
    spawn_commit(ctx, p, commit_ts, out, lose).await;
    Ok(commit_ts)
}

/// Writes the C (or, with `commit_ts == 0`, Rollback) binlog in the background, as TiDB does.
/// With `lose`, the binlog is not written (the `--lose-commit-binlog-every` fault) and the txn log says
/// `commit_binlog_lost`.
async fn spawn_commit(ctx: &Arc<Ctx>, mut b: Binlog, commit_ts: u64, p_out: WriteOutcome, lose: bool) {
    let WriteOutcome::Written { node_id: p_pump } = p_out else { return };
    if lose {
        if let Some(log) = &ctx.log {
            let _ = log.send(TxnLogLine {
                start_ts: b.start_ts() as u64,
                commit_ts,
                pump: p_pump,
                outcome: "commit_binlog_lost",
                ddl_job_id: b.ddl_job_id(),
            });
        }
        return;
    }
    b.prewrite_value = None;
    if commit_ts == 0 {
        b.set_tp(BinlogType::Rollback);
    } else {
        b.set_tp(BinlogType::Commit);
        b.commit_ts = Some(commit_ts as i64);
    }
    let ctx2 = ctx.clone();
    ctx.pending_commits.lock().await.spawn(async move {
        let r = ctx2.client.write_binlog(&b).await;
        let outcome = match &r {
            Ok(out) => {
                ctx2.counters.wrote(out);
                if commit_ts == 0 { "rolled_back" } else { "committed" }
            }
            Err(e) => {
                tracing::warn!(error = %e, start_ts = b.start_ts(), "commit binlog not written");
                ctx2.counters.c_failures.fetch_add(1, Ordering::Relaxed);
                ctx2.counters.errors.fetch_add(1, Ordering::Relaxed);
                "commit_binlog_failed"
            }
        };
        let pump = match r {
            Ok(WriteOutcome::Written { node_id }) => node_id,
            _ => p_pump,
        };
        if let Some(log) = &ctx2.log {
            let _ = log.send(TxnLogLine {
                start_ts: b.start_ts() as u64,
                commit_ts,
                pump,
                outcome,
                ddl_job_id: b.ddl_job_id(),
            });
        }
    });
}

/// The DDL of step `step` of the rotation, then runs it.
async fn run_ddl_step(ctx: &Arc<Ctx>, step: u64) {
    let db = ctx.cfg.database.clone();
    let tables = match ctx.tables.read() {
        Ok(t) => t.clone(),
        Err(_) => return,
    };
    if tables.is_empty() {
        return;
    }
    let t = &tables[(step as usize / 9) % tables.len()];
    let table = t.info.name.o.clone();
    let added = format!("c_add_{}", step / 9);
    let ops: Vec<DdlOp> = match step % 9 {
        0 => vec![DdlOp::AddColumn { db: db.clone(), table, column: added }],
        1 => {
            let col = t.info.cols.iter().find(|c| c.name.l.starts_with("c_add_")).map(|c| c.name.o.clone());
            match col {
                Some(column) => vec![DdlOp::AddIndex { db: db.clone(), table, index: format!("idx_{column}"), column }],
                None => vec![],
            }
        }
        2 => t
            .info
            .indexes()
            .iter()
            .find(|i| i.idx_name.l.starts_with("idx_c_add_"))
            .map(|i| vec![DdlOp::DropIndex { db: db.clone(), table: table.clone(), index: i.idx_name.o.clone() }])
            .unwrap_or_default(),
        3 => t
            .info
            .cols
            .iter()
            .find(|c| c.name.l.starts_with("c_add_"))
            .map(|c| vec![DdlOp::DropColumn { db: db.clone(), table: table.clone(), column: c.name.o.clone() }])
            .unwrap_or_default(),
        4 => vec![DdlOp::TruncateTable { db: db.clone(), table }],
        5 => {
            let base = table.split("_r").next().unwrap_or(&table).to_owned();
            vec![DdlOp::RenameTable { db: db.clone(), from: table, to: format!("{base}_r{step}") }]
        }
        6 => vec![
            DdlOp::CreateTable { db: db.clone(), table: format!("scratch_{step}"), kind: Kind::Types },
            DdlOp::DropTable { db: db.clone(), table: format!("scratch_{step}") },
        ],
        7 => vec![
            DdlOp::CreateSchema { db: format!("{db}_x{step}") },
            DdlOp::CreateTable { db: format!("{db}_x{step}"), table: "t".into(), kind: Kind::NoPk },
        ],
        _ => vec![DdlOp::DropSchema { db: format!("{db}_x{}", step - 1) }],
    };
    for op in ops {
        if let Err(e) = ddl(ctx, op.clone()).await {
            tracing::warn!(error = %e, ?op, "ddl failed");
            ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A ts from the TSO, retrying for up to a minute while it fails.
async fn ts_despite_outage(ctx: &Arc<Ctx>) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match ctx.tso.get_ts().await {
            Ok(ts) => return Ok(ts),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "TSO unavailable; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The P-binlog of a DDL transaction: no rows, the job id, its query and schema state.
fn ddl_binlog(job: &Job, start_ts: u64, state: u8) -> Binlog {
    Binlog {
        tp: Some(BinlogType::Prewrite as i32),
        start_ts: Some(start_ts as i64),
        commit_ts: Some(0),
        // TiDB's DDL transaction writes the meta key of the job history.
        prewrite_key: Some(format!("mDDLJobHistory{}", job.id).into_bytes()),
        prewrite_value: None,
        ddl_query: Some(job.query.clone().into_bytes()),
        ddl_job_id: Some(job.id),
        ddl_schema_state: Some(i32::from(state)),
    }
}

/// Runs one DDL alone: plans the job, executes it upstream, writes the DDL binlog, records the job.
async fn ddl(ctx: &Arc<Ctx>, op: DdlOp) -> Result<Job> {
    let _excl = ctx.ddl_lock.write().await;
    let start_ts = ctx.tso.get_ts().await?;
    let mut job = ctx.catalog.write().map_err(|_| anyhow!("catalog poisoned"))?.plan(&op, start_ts)?;
    if job.job_type == action::DROP_COLUMN {
        // TiDB also writes a binlog when the dropped column reaches DeleteOnly (drainer then knows
        // that rows may lack the column until the job is done).
        let ts = ctx.tso.get_ts().await?;
        let pre = ddl_binlog(&job, ts, schema_state::DELETE_ONLY);
        let out = ctx.client.write_binlog(&pre).await.with_context(|| format!("DeleteOnly binlog of job {}", job.id))?;
        ctx.counters.wrote(&out);
        ctx.counters.ddl_binlogs.fetch_add(1, Ordering::Relaxed);
        match ctx.tso.get_ts().await {
            Ok(cts) => spawn_commit(ctx, pre, cts, out, false).await,
            Err(e) => {
                // Nothing ran upstream yet: roll the written Prewrite back (a Prewrite left
                // unanswered holds its pump's watermark for max-txn-timeout).
                spawn_commit(ctx, pre, 0, out, false).await;
                return Err(anyhow!(e).context(format!("commit ts of job {}'s DeleteOnly binlog", job.id)));
            }
        }
    }
    let mut conn = ctx.pool.get_conn().await?;
    conn.query_drop(job.query.as_str()).await.with_context(|| format!("upstream DDL {:?}", job.query))?;
    let p = ddl_binlog(&job, start_ts, job.schema_state);
    let out = ctx.client.write_binlog(&p).await.with_context(|| format!("DDL binlog of job {}", job.id));
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            // The upstream changed: keep the catalog in step even though the binlog is lost.
            ctx.catalog.write().map_err(|_| anyhow!("catalog poisoned"))?.apply(&job);
            return Err(e);
        }
    };
    ctx.counters.wrote(&out);
    ctx.counters.ddl_binlogs.fetch_add(1, Ordering::Relaxed);
    // The DDL is done upstream, so its binlog must commit: wait out a TSO outage (etcd restarting)
    // as TiDB's DDL owner does, rather than leave the Prewrite unanswered.
    let commit_ts = match ts_despite_outage(ctx).await {
        Ok(ts) => ts,
        Err(e) => {
            // Still no ts: roll the binlog back so the pump is not held; the binlog is lost.
            ctx.catalog.write().map_err(|_| anyhow!("catalog poisoned"))?.apply(&job);
            spawn_commit(ctx, p, 0, out, false).await;
            return Err(e.context(format!("commit ts of DDL job {}", job.id)));
        }
    };
    if let Some(info) = job.binlog.as_mut() {
        info.finished_ts = commit_ts;
    }
    // The job is in the history (and stored) before the C-binlog can reach a drainer.
    let json = serde_json::to_string(&job)?;
    conn.exec_drop(
        format!("INSERT INTO `{META_DB}`.ddl_history (job_id, schema_version, job) VALUES (?, ?, ?)"),
        (job.id, job.schema_version(), json),
    )
    .await?;
    ctx.catalog.write().map_err(|_| anyhow!("catalog poisoned"))?.apply(&job);
    ctx.counters.ddl.fetch_add(1, Ordering::Relaxed);
    refresh_tables(ctx).await?;
    spawn_commit(ctx, p, commit_ts, out, false).await;
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transaction's image of a row it updated without changing any value is the latest
    /// committed row, not its older REPEATABLE READ snapshot (which would make the binlog undo a
    /// concurrent transaction's change).
    #[test]
    fn the_image_after_an_update_that_changed_nothing_is_the_latest_committed_row() {
        let dir = tempfile::tempdir().unwrap();
        let db = ::tests::MariaDb::start(&dir.path().join("db")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut a = Conn::from_url(db.url()).await.unwrap();
            a.query_drop(format!("CREATE DATABASE s; {}", tables::create_sql("s", "t", Kind::Types))).await.unwrap();
            a.query_drop("INSERT INTO s.t (id, c_dec, c_tiny) VALUES (1, 1.5, 7), (2, 0, 0)").await.unwrap();
            let t = WorkTable {
                db: "s".into(),
                info: tables::table_info(102, "t", Kind::Types),
                kind: Kind::Types,
                next: Arc::new(AtomicI64::new(3)),
            };
            let dec = t.info.cols.iter().find(|c| c.name.l == "c_dec").unwrap().id;
            let dec_of = |row: &[(i64, Datum)]| row.iter().find(|(id, _)| *id == dec).map(|(_, d)| format!("{d:?}"));

            let mut b = Conn::from_url(db.url()).await.unwrap();
            b.query_drop("BEGIN").await.unwrap();
            // b's snapshot is taken here, by a plain read of another row, before a's change commits
            b.query_drop("SELECT * FROM s.t WHERE id = 2").await.unwrap();
            a.query_drop("UPDATE s.t SET c_dec = 2.5 WHERE id = 1").await.unwrap();
            let old = read_row(&mut b, &t, "`id` = 1").await.unwrap().unwrap();
            assert!(dec_of(&old).unwrap().contains("int_digits: \"2\""), "the locked row is a's: {:?}", dec_of(&old));
            b.query_drop("UPDATE s.t SET c_tiny = 7 WHERE id = 1").await.unwrap();
            let new = read_row(&mut b, &t, "`id` = 1").await.unwrap().unwrap();
            assert_eq!(dec_of(&new), dec_of(&old), "the image must hold a's committed c_dec");
            assert_eq!(new, old);
            b.query_drop("COMMIT").await.unwrap();
        });
    }
}
