//! The coordinator: the background task that owns the downstream connections, takes what was queued
//! as one batch, builds its SQL while the previous batch runs, and applies it (see the module docs of
//! [`super`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::*;
use tokio::sync::mpsc;

use super::batch::{GroupPlan, Packet, PartPlan, Plans, Settings};
use super::checkpoint::Applied;
use super::error::{Fail, MysqlError, ignorable_ddl_error, prepare_refused, rejected_with, retryable, server_code, stale_shape};
use super::session::{Session, backoff, open};
use super::sql::TablePlan;
use super::{CheckpointCfg, Msg, MysqlSinkConfig, Shared, batch, checkpoint, fence, table};
use crate::txn::{Body, Ddl, Item, quote_ident};

/// The background task that owns the connections and applies batches.
pub(super) struct Coordinator {
    pub(super) cfg: MysqlSinkConfig,
    pub(super) session: Session,
    pub(super) conns: Vec<Option<Conn>>,
    pub(super) cache: table::Cache,
    pub(super) applied: Applied,
    pub(super) shared: Arc<Shared>,
    pub(super) started: Instant,
    pub(super) durable: i64,
    pub(super) global_written: i64,
    pub(super) schema_version: i64,
    pub(super) since: Option<(Instant, u32)>,
    /// The batch running while the next one is built.
    pub(super) inflight: Option<InFlight>,
    /// The downstream refused a prepared statement: every statement is text from then on.
    pub(super) text_only: bool,
}

type Queued = (Arc<Item>, tokio::sync::OwnedSemaphorePermit);

/// Each part's connection (by index) and what became of it and its transactions.
type PartResults = Vec<(usize, (Option<Conn>, Result<(), mysql_async::Error>))>;

/// A batch applied by its own task (which owns the connections it uses meanwhile).
pub(super) struct InFlight {
    /// Its items, held until it committed (their memory quota too).
    items: Vec<Queued>,
    first: i64,
    max_ts: i64,
    schema_version: i64,
    global_ts: Option<i64>,
    task: AbortOnDrop,
}

/// Aborts the batch task when the coordinator is dropped (a dropped sink stops at once: the
/// downstream rolls back what its connections did not commit).
struct AbortOnDrop(tokio::task::JoinHandle<PartResults>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Coordinator {
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let cap = self.batch_rows();
        let mut next: Option<Msg> = None;
        loop {
            let msg = match next.take() {
                Some(m) => m,
                None => match rx.try_recv() {
                    Ok(m) => m,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        if let Err(e) = self.settle().await {
                            self.die(e, &mut rx);
                        }
                        return;
                    }
                    Err(mpsc::error::TryRecvError::Empty) if self.inflight.is_some() => {
                        // Nothing to prepare meanwhile: wait for the batch in flight, then look again.
                        if let Err(e) = self.settle().await {
                            self.die(e, &mut rx);
                            return;
                        }
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        // Idle: bring upstream's checkpoint row up to date.
                        if let Err(e) = self.write_global(false).await {
                            self.die(e, &mut rx);
                            return;
                        }
                        match rx.recv().await {
                            Some(m) => m,
                            None => break,
                        }
                    }
                },
            };
            let res = match msg {
                Msg::Flush { consistent, reply } => {
                    let r = match self.settle().await {
                        Ok(_) => self.write_global(consistent).await.map(|()| self.durable),
                        Err(e) => Err(e),
                    };
                    let failed = r.as_ref().err().map(|e| e.to_string());
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                    match failed {
                        Some(m) => Err(MysqlError::Stopped(m)),
                        None => Ok(()),
                    }
                }
                Msg::Item(item, permit) => {
                    if let Body::Ddl(ddl) = &item.body {
                        let ddl = ddl.clone();
                        let r = match self.settle().await {
                            Ok(_) => self.apply_ddl(&item, &ddl).await,
                            Err(e) => Err(e),
                        };
                        drop(permit);
                        r
                    } else {
                        let mut batch: Vec<Queued> = vec![(item, permit)];
                        let mut rows = row_count(&batch[0].0);
                        while rows < cap {
                            match rx.try_recv() {
                                Ok(Msg::Item(it, p)) if !matches!(it.body, Body::Ddl(_)) => {
                                    rows += row_count(&it);
                                    batch.push((it, p));
                                }
                                Ok(other) => {
                                    next = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.apply_batch(batch).await
                    }
                }
            };
            if let Err(e) = res {
                self.die(e, &mut rx);
                return;
            }
        }
    }

    fn die(&mut self, e: MysqlError, rx: &mut mpsc::UnboundedReceiver<Msg>) {
        tracing::error!(target: "drainer::sink::mysql", error = %e, "mysql sink stopped");
        self.shared.fail(&e);
        rx.close();
        while let Ok(m) = rx.try_recv() {
            if let Msg::Flush { reply, .. } = m {
                let _ = reply.send(Err(e.to_string()));
            }
        }
    }

    fn batch_rows(&self) -> usize {
        if self.cfg.batch_rows > 0 {
            self.cfg.batch_rows
        } else {
            (self.cfg.txn_batch * self.cfg.worker_count * 32).max(64)
        }
    }

    /// Updates and deletes per connection before a batch is spread over another one (see `conn_rows`).
    fn conn_rows(&self) -> usize {
        match self.cfg.conn_rows {
            0 if self.cfg.tidb => (self.cfg.txn_batch * 32).max(64),
            0 => (self.cfg.txn_batch * 128).max(64),
            n => n,
        }
    }

    /// Inserts per connection before a batch is spread over another one (see `conn_inserts`).
    fn conn_inserts(&self) -> usize {
        match (self.cfg.conn_inserts, self.cfg.conn_rows) {
            (0, 0) if self.cfg.tidb => (self.cfg.txn_batch * 32).max(64),
            (0, 0) => (self.cfg.txn_batch * 512).max(64),
            (0, n) | (n, _) => n,
        }
    }

    fn safe(&self) -> bool {
        self.cfg.safe_mode || (self.cfg.checkpoint.is_none() && self.started.elapsed() < self.cfg.safe_mode_after_start)
    }

    async fn conn(&mut self, w: usize) -> Result<&mut Conn, Fail> {
        if self.conns[w].is_none() {
            let (c, s) = open(&self.cfg, w).await?;
            self.session = s;
            self.conns[w] = Some(c);
        }
        Ok(self.conns[w].as_mut().expect("just connected"))
    }

    fn mark_durable(&mut self, ts: i64) {
        if ts > self.durable {
            self.durable = ts;
            self.shared.durable.store(ts, Ordering::SeqCst);
        }
    }

    /// Handles a retryable failure: waits, drops broken connections, and re-reads the checkpoint,
    /// retrying until that read succeeds: a batch is never retried on a guess of what committed.
    async fn recover(&mut self, mut e: mysql_async::Error) -> Result<(), MysqlError> {
        loop {
            backoff(&self.cfg, &mut self.since, &e).await?;
            for c in &mut self.conns {
                if c.as_ref().is_some_and(|c| c.is_disconnected()) {
                    *c = None;
                }
            }
            let Some(ck) = self.cfg.checkpoint.clone() else { return Ok(()) };
            match self.reload(&ck).await {
                Ok(()) => return Ok(()),
                Err(Fail::Fatal(f)) => return Err(f),
                Err(Fail::Retry(r)) => e = r,
            }
        }
    }

    /// Opens every connection (each waits for its predecessor's session to end), then reads what is
    /// applied.
    async fn reload(&mut self, ck: &CheckpointCfg) -> Result<(), Fail> {
        for w in 0..self.conns.len() {
            self.conn(w).await?;
        }
        let conn = self.conns[0].as_mut().expect("connected above");
        match ck.load(conn).await {
            Ok(a) => {
                self.global_written = a.global;
                self.applied = a;
                Ok(())
            }
            Err(checkpoint::LoadError::Sql(e)) if retryable(&e) => {
                self.conns[0] = None;
                Err(Fail::Retry(e))
            }
            Err(e) => Err(Fail::Fatal(MysqlError::Checkpoint { table: ck.table.clone(), why: e.to_string() })),
        }
    }

    /// Reads the downstream definition of every table `items` write that is not cached yet.
    async fn fetch_tables(&mut self, items: &[Queued]) -> Result<(), Fail> {
        let mut seen = std::collections::HashSet::new();
        for (item, _) in items {
            let Body::Dml(tables) = &item.body else {
                continue;
            };
            for tc in tables {
                let (schema, name) = (&tc.table.schema, &tc.table.name);
                if !seen.insert(Arc::as_ptr(&tc.table) as usize) || self.cache.peek(schema, name).is_some() {
                    continue;
                }
                self.conn(0).await?;
                let conn = self.conns[0].as_mut().expect("connected");
                match self.cache.get(conn, schema, name).await {
                    Ok(_) => {}
                    Err(MysqlError::Query { source, .. }) if retryable(&source) => return Err(Fail::Retry(source)),
                    Err(e) => return Err(Fail::Fatal(e)),
                }
            }
        }
        Ok(())
    }

    /// The table plans for `items` from the cache; `None` when a table is not cached.
    fn plans(&self, items: &[Queued]) -> Option<(Plans, Vec<TablePlan>)> {
        let mut plans = Plans::new();
        let mut list = Vec::new();
        for (item, _) in items {
            let Body::Dml(tables) = &item.body else {
                continue;
            };
            for tc in tables {
                let key = Arc::as_ptr(&tc.table) as usize;
                if plans.contains_key(&key) {
                    continue;
                }
                let down = self.cache.peek(&tc.table.schema, &tc.table.name)?;
                plans.insert(key, (list.len(), tc.table.clone()));
                list.push(table::plan(&tc.table, &down, self.cfg.partial_columns));
            }
        }
        Some((plans, list))
    }

    /// Builds `items` into batches, as if everything in flight had committed (when it does not,
    /// [`Coordinator::settle`] says so and the batches are discarded). `None` when a table is not
    /// cached.
    fn build(&self, items: &[Queued], force_safe: bool) -> Option<Result<Vec<GroupPlan>, MysqlError>> {
        let (plans, list) = self.plans(items)?;
        let settings = Settings {
            workers: self.conns.len(),
            detect: !self.cfg.disable_detect,
            per_txn: self.cfg.disable_dispatch,
            safe: force_safe || self.safe(),
            batch_rows: self.batch_rows(),
            conn_rows: self.conn_rows(),
            conn_inserts: self.conn_inserts(),
            stmt_bytes: (self.session.max_packet / 4).clamp(64 << 10, 1 << 20),
            packet_bytes: (self.session.max_packet / 2).clamp(256 << 10, 8 << 20),
            prepared_params: if self.text_only { 0 } else { self.cfg.prepared_params },
            dialect: self.session.dialect,
            mark: self.cfg.loopback,
            fence: self.fence_sql(),
        };
        let arcs: Vec<Arc<Item>> = items.iter().map(|(i, _)| i.clone()).collect();
        let ck = self.cfg.checkpoint.as_ref();
        let (durable, schema_version) = match &self.inflight {
            Some(f) => (f.max_ts, self.schema_version.max(f.schema_version)),
            None => (self.durable, self.schema_version),
        };
        Some(batch::build(&arcs, &plans, &list, &settings, ck.map(|c| (c, &self.applied)), durable, schema_version))
    }

    /// Applies a batch: builds it while the previous one runs, then starts it and returns without
    /// waiting for it (the next batch is built meanwhile). Batches still run one after another.
    async fn apply_batch(&mut self, mut items: Vec<Queued>) -> Result<(), MysqlError> {
        while !items.is_empty() {
            if self.inflight.is_none() {
                match self.fetch_tables(&items).await {
                    Ok(()) => {}
                    Err(Fail::Fatal(e)) => return Err(e),
                    Err(Fail::Retry(e)) => {
                        self.recover(e).await?;
                        continue;
                    }
                }
            }
            let groups = match self.build(&items, false) {
                None => {
                    // A table to read first: needs a connection, so wait for the batch in flight.
                    self.settle().await?;
                    continue;
                }
                Some(Err(e)) => {
                    self.settle().await?;
                    return Err(e);
                }
                Some(Ok(groups)) => groups,
            };
            let mut valid = true;
            for g in groups {
                if !self.settle().await? {
                    // What was built assumed the batch in flight would commit: build again.
                    valid = false;
                    break;
                }
                let taken: Vec<Queued> = items.drain(..g.n_items).collect();
                self.launch(g, taken).await?;
            }
            if valid {
                break;
            }
        }
        Ok(())
    }

    /// Starts `g` on its connections in a task of its own; [`Coordinator::settle`] collects it.
    async fn launch(&mut self, g: GroupPlan, items: Vec<Queued>) -> Result<(), MysqlError> {
        debug_assert!(self.inflight.is_none());
        for p in &g.parts {
            if let Err(f) = self.conn(p.worker).await {
                return self.apply_items(items, Some(f)).await;
            }
        }
        let conns = self.take_conns(&g.parts);
        let first = items.first().map_or(0, |(i, _)| i.commit_ts);
        let GroupPlan { max_ts, schema_version, global_ts, parts, .. } = g;
        let task = tokio::spawn(run_parts(parts, conns, self.cfg.read_timeout));
        self.inflight = Some(InFlight { items, first, max_ts, schema_version, global_ts, task: AbortOnDrop(task) });
        // Let the task send its first packets before this task goes on building the next batch.
        tokio::task::yield_now().await;
        Ok(())
    }

    /// Waits for the batch in flight. When it committed, records that and returns true; when it
    /// failed, recovers, applies its items again (retrying as [`Coordinator::apply_items`] does) and
    /// returns false: anything built meanwhile must be built again.
    async fn settle(&mut self) -> Result<bool, MysqlError> {
        let Some(mut f) = self.inflight.take() else {
            return Ok(true);
        };
        let results = match (&mut f.task.0).await {
            Ok(r) => r,
            Err(e) => return Err(MysqlError::Internal(format!("a batch task ended: {e}"))),
        };
        match self.absorb(results, f.first, f.max_ts) {
            None => {
                self.committed(f.max_ts, f.schema_version, f.global_ts);
                self.since = None;
                Ok(true)
            }
            Some(fail) => {
                let items = std::mem::take(&mut f.items);
                self.apply_items(items, Some(fail)).await?;
                Ok(false)
            }
        }
    }

    /// The fencing check every transaction starts with, in HA mode.
    fn fence_sql(&self) -> Option<String> {
        let (f, ck) = (self.cfg.fence.as_ref()?, self.cfg.checkpoint.as_ref()?);
        Some(fence::check_sql(ck, f, self.cfg.tidb))
    }

    /// A failed fencing check, as the error that stops this drainer.
    fn fenced(&self) -> MysqlError {
        let (task, token) = self.cfg.fence.as_ref().map(|f| (f.task.clone(), f.token)).unwrap_or_default();
        MysqlError::Fence { task, token, why: "a newer active drainer took over: the downstream's fencing check refused our transaction".into() }
    }

    /// Records that a batch committed.
    fn committed(&mut self, max_ts: i64, schema_version: i64, global_ts: Option<i64>) {
        self.schema_version = self.schema_version.max(schema_version);
        if let Some(ts) = global_ts {
            self.global_written = self.global_written.max(ts);
        }
        self.applied.advance(max_ts);
        self.mark_durable(max_ts);
    }

    /// Takes the (open) connection of every part, for the parts' run.
    fn take_conns(&mut self, parts: &[PartPlan]) -> Vec<Conn> {
        parts.iter().map(|p| self.conns[p.worker].take().expect("connected before")).collect()
    }

    /// Puts the connections of a finished batch back; the failure to act on, if a part failed.
    fn absorb(&mut self, results: PartResults, first: i64, last: i64) -> Option<Fail> {
        let mut fail: Option<Fail> = None;
        for (w, (conn, r)) in results {
            self.conns[w] = conn;
            if let Err(e) = r {
                let f = if fence::is_fenced(&e) && self.cfg.fence.is_some() {
                    Fail::Fatal(self.fenced())
                } else if retryable(&e) {
                    Fail::Retry(e)
                } else {
                    Fail::Fatal(MysqlError::Rejected { first, last, source: e })
                };
                if !matches!(fail, Some(Fail::Fatal(_))) {
                    fail = Some(f);
                }
            }
        }
        fail
    }

    /// Applies `items` one batch at a time, waiting for each, after handling `fail` (how their
    /// first attempt failed): retries lost connections and deadlocks from the re-read checkpoint,
    /// and re-reads a table the downstream rejected the rows of for their shape, once.
    async fn apply_items(&mut self, mut items: Vec<Queued>, mut fail: Option<Fail>) -> Result<(), MysqlError> {
        debug_assert!(self.inflight.is_none());
        let mut force_safe = false;
        let mut refreshed = false;
        loop {
            match fail.take() {
                None => {}
                Some(Fail::Fatal(e @ MysqlError::Rejected { .. })) if !refreshed && rejected_with(&e, stale_shape) => {
                    // The downstream table changed under the cache: re-read it and retry once
                    // (what committed is re-read from the checkpoint, as after a lost connection).
                    tracing::info!(target: "drainer::sink::mysql", error = %e, "downstream table changed; re-reading its definition and retrying");
                    refreshed = true;
                    self.cache.clear();
                    self.reread_checkpoint().await?;
                    force_safe = self.cfg.checkpoint.is_none();
                }
                Some(Fail::Fatal(e @ MysqlError::Rejected { .. })) if !self.text_only && rejected_with(&e, prepare_refused) => {
                    // Text statements do the same: switch to them and retry from the checkpoint.
                    tracing::warn!(target: "drainer::sink::mysql", error = %e, "the downstream refused a prepared INSERT; writing text statements from now on");
                    self.text_only = true;
                    self.reread_checkpoint().await?;
                    force_safe = self.cfg.checkpoint.is_none();
                }
                Some(Fail::Fatal(e)) => return Err(e),
                Some(Fail::Retry(e)) => {
                    self.recover(e).await?;
                    // Without a checkpoint a retried transaction may already be in: replay it in safe mode.
                    force_safe = self.cfg.checkpoint.is_none();
                }
            }
            match self.try_batch(&mut items, force_safe).await {
                Ok(()) => {
                    self.since = None;
                    return Ok(());
                }
                Err(f) => fail = Some(f),
            }
        }
    }

    /// Re-reads what committed from the checkpoint (if one is kept) before a batch is retried,
    /// recovering the connection when that read fails for a retryable reason.
    async fn reread_checkpoint(&mut self) -> Result<(), MysqlError> {
        if let Some(ck) = self.cfg.checkpoint.clone() {
            match self.reload(&ck).await {
                Ok(()) => {}
                Err(Fail::Fatal(f)) => return Err(f),
                Err(Fail::Retry(r)) => self.recover(r).await?,
            }
        }
        Ok(())
    }

    /// Applies `items` batch by batch, waiting for each; committed items are removed from the front.
    async fn try_batch(&mut self, items: &mut Vec<Queued>, force_safe: bool) -> Result<(), Fail> {
        self.fetch_tables(items).await?;
        let groups = match self.build(items, force_safe) {
            Some(r) => r?,
            None => return Err(Fail::Fatal(MysqlError::Internal("a table's definition was not cached".into()))),
        };
        for g in groups {
            let first = items.first().map_or(0, |(i, _)| i.commit_ts);
            for p in &g.parts {
                self.conn(p.worker).await?;
            }
            let conns = self.take_conns(&g.parts);
            let results = run_parts(g.parts, conns, self.cfg.read_timeout).await;
            if let Some(f) = self.absorb(results, first, g.max_ts) {
                return Err(f);
            }
            items.drain(..g.n_items);
            self.committed(g.max_ts, g.schema_version, g.global_ts);
        }
        Ok(())
    }

    /// Writes upstream's checkpoint row when it lags `durable` (or to mark a clean shutdown).
    async fn write_global(&mut self, consistent: bool) -> Result<(), MysqlError> {
        let Some(ck) = self.cfg.checkpoint.clone() else {
            return Ok(());
        };
        if self.global_written >= self.durable && !consistent {
            return Ok(());
        }
        let mut mark = self.fence_sql().map(|f| format!("{f};")).unwrap_or_default();
        mark.push_str(&self.cfg.loopback.map(|c| format!("{};", crate::loopback::mark_sql(0, c))).unwrap_or_default());
        let sql = format!("BEGIN;{mark}{};COMMIT", ck.global_sql(self.durable, self.schema_version, consistent));
        loop {
            let limit = self.cfg.read_timeout;
            let r = match self.conn(0).await {
                Ok(c) => timed(limit, c.query_drop(&sql)).await.map_err(|e| {
                    if fence::is_fenced(&e) && self.cfg.fence.is_some() {
                        Fail::Fatal(self.fenced())
                    } else if retryable(&e) {
                        Fail::Retry(e)
                    } else {
                        Fail::Fatal(MysqlError::query("writing the checkpoint", e))
                    }
                }),
                Err(f) => Err(f),
            };
            match r {
                Ok(()) => {
                    self.since = None;
                    self.global_written = self.durable;
                    return Ok(());
                }
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Retry(e)) => {
                    self.conns[0] = None;
                    backoff(&self.cfg, &mut self.since, &e).await?;
                }
            }
        }
    }

    async fn apply_ddl(&mut self, item: &Item, ddl: &Ddl) -> Result<(), MysqlError> {
        if self.cfg.checkpoint.is_some() && item.commit_ts <= self.applied.global {
            self.mark_durable(item.commit_ts);
            return Ok(());
        }
        // Pending DML was applied before this message was taken (batches never span a DDL).
        self.write_global(false).await?;
        loop {
            match self.try_ddl(item, ddl).await {
                Ok(()) => break,
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Retry(e)) => {
                    self.conns[0] = None;
                    backoff(&self.cfg, &mut self.since, &e).await?;
                }
            }
        }
        self.since = None;
        self.cache.clear();
        self.schema_version = self.schema_version.max(item.schema_version);
        self.mark_durable(item.commit_ts);
        self.applied.advance(item.commit_ts);
        self.write_global(false).await
    }

    async fn try_ddl(&mut self, item: &Item, ddl: &Ddl) -> Result<(), Fail> {
        let limit = self.cfg.read_timeout;
        let (fence_check, fenced) = (self.fence_sql(), self.fenced());
        let conn = self.conn(0).await?;
        let lower = ddl.query.trim_start().to_ascii_lowercase();
        let creates_db = lower.starts_with("create database") || lower.starts_with("create schema");
        let rejected = |e: &mysql_async::Error| {
            let message = match e {
                mysql_async::Error::Server(s) => format!("error {}: {}", s.code, s.message),
                e => e.to_string(),
            };
            MysqlError::DdlRejected { commit_ts: item.commit_ts, query: ddl.query.clone(), message }
        };
        if !ddl.schema.is_empty()
            && !creates_db
            && let Err(e) = conn.query_drop(format!("USE {}", quote_ident(&ddl.schema))).await
        {
            if retryable(&e) {
                return Err(Fail::Retry(e));
            }
            // Replaying a DROP after its database is gone is fine; anything else is not.
            if server_code(&e) == Some(1049) && lower.starts_with("drop") {
                tracing::info!(target: "drainer::sink::mysql", commit_ts = item.commit_ts, query = %ddl.query, "ignoring DDL: database already gone");
                return Ok(());
            }
            return Err(Fail::Fatal(rejected(&e)));
        }
        if let Some(check) = fence_check {
            // The check's lock lasts until the DDL's implicit commit (module `fence`).
            match timed(limit, conn.query_drop(format!("BEGIN;{check}"))).await {
                Ok(()) => {}
                Err(e) if fence::is_fenced(&e) => return Err(Fail::Fatal(fenced)),
                Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
                Err(e) => return Err(Fail::Fatal(MysqlError::query("checking the HA fence before a DDL", e))),
            }
        }
        let t = std::time::Instant::now();
        let r = timed(limit, conn.query_drop(&ddl.query)).await;
        crate::metrics::metrics().query_duration_time.with_label_values(&["ddl"]).observe(t.elapsed().as_secs_f64());
        match r {
            Ok(()) => Ok(()),
            Err(e) if retryable(&e) => Err(Fail::Retry(e)),
            Err(e) if server_code(&e).is_some_and(ignorable_ddl_error) => {
                tracing::info!(target: "drainer::sink::mysql", commit_ts = item.commit_ts, query = %ddl.query, error = %e, "ignoring DDL error, as upstream");
                Ok(())
            }
            Err(e) => Err(Fail::Fatal(rejected(&e))),
        }
    }
}

fn row_count(item: &Item) -> usize {
    match &item.body {
        Body::Dml(t) => t.iter().map(|t| t.rows.len()).sum::<usize>().max(1),
        _ => 1,
    }
}

/// Runs every part on its connection, concurrently: each part's connection index, the connection
/// (`None` when it broke) and how its transactions went.
async fn run_parts(parts: Vec<PartPlan>, conns: Vec<Conn>, limit: Duration) -> PartResults {
    let workers: Vec<usize> = parts.iter().map(|p| p.worker).collect();
    let results = futures::future::join_all(parts.into_iter().zip(conns).map(|(p, c)| run_part(c, p, limit))).await;
    workers.into_iter().zip(results).collect()
}

/// `fut` (one round trip to the downstream), or a retryable I/O error after `limit`.
async fn timed<T>(limit: Duration, fut: impl Future<Output = Result<T, mysql_async::Error>>) -> Result<T, mysql_async::Error> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(limit)),
    }
}

/// The error of a round trip that exceeded `read-timeout` (an I/O error, so it is retried on a new
/// connection).
fn timed_out(limit: Duration) -> mysql_async::Error {
    let why = format!("no reply from the downstream within read-timeout ({}s)", limit.as_secs_f64());
    mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, why)))
}

/// Runs one part's transactions on its connection; rolls back on error. Returns the connection
/// (`None` when it broke).
async fn run_part(mut conn: Conn, p: PartPlan, limit: Duration) -> (Option<Conn>, Result<(), mysql_async::Error>) {
    let dml = crate::metrics::metrics().query_duration_time.with_label_values(&["dml"]);
    for txn in p.txns {
        for packet in txn.packets {
            let t = std::time::Instant::now();
            let r = match packet {
                Packet::Text(sql) => tokio::time::timeout(limit, conn.query_drop(sql)).await,
                Packet::Prepared { sql, params } => {
                    tokio::time::timeout(limit, conn.exec_drop(sql, mysql_async::Params::Positional(params))).await
                }
            };
            // Timed out: the connection's state is unknown, so it is dropped (the server rolls its
            // transaction back) and the batch retried on a new one.
            let Ok(r) = r else { return (None, Err(timed_out(limit))) };
            dml.observe(t.elapsed().as_secs_f64());
            if let Err(e) = r {
                tracing::warn!(target: "drainer::sink::mysql", worker = p.worker, commit_ts = txn.ts, error = %e, "downstream transaction failed");
                if e.is_fatal() || conn.is_disconnected() {
                    return (None, Err(e));
                }
                if conn.query_drop("ROLLBACK").await.is_err() {
                    return (None, Err(e));
                }
                return (Some(conn), Err(e));
            }
        }
    }
    (Some(conn), Ok(()))
}
