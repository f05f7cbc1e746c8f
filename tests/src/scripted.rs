//! A scripted TiDB: a test says which DDL and row changes happen, and this writes the binlogs TiDB
//! would write for them to the real pumps of a cluster (P and C through [`pump::client::PumpsClient`],
//! timestamps from PD) and serves the DDL history on a TiDB status API for the drainer's
//! `schema-source`.
//!
//! Unlike the stand-in (`bench`'s random workload over a real upstream MariaDB), nothing runs
//! upstream: the test knows exactly what the downstream must hold. Tables have `BIGINT` and
//! `VARCHAR(64)` columns; a single `BIGINT` primary key is the row handle (`PKIsHandle`), any other
//! key leaves the table with TiDB's implicit row id, which this keeps per row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use prost::Message;
use pump::client::{ClientConfig, PumpsClient, WriteOutcome};
use pump::node::Registry;
use pump::pd::PdClient;
use pump::proto::{Binlog, BinlogType, MutationType, PrewriteValue, TableMutation};
use drainer::tidb::codec::{Datum, Handle, record_key};
use drainer::tidb::model::{
    CIStr, ColumnInfo, DBInfo, EXTRA_HANDLE_ID, FieldType, HistoryInfo, IndexColumn, IndexInfo, Job, TableInfo, action,
    flag, job_state, schema_state, tp,
};
use drainer::tidb::row::{encode_insert_row, encode_row, encode_update_row};

/// A column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `BIGINT`.
    Int,
    /// `VARCHAR(64)` utf8mb4.
    Text,
}

/// A value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Val {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A string.
    Text(String),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.into())
    }
}

/// A row change of [`ScriptedTidb::txn`], values in column order.
#[derive(Debug, Clone)]
pub enum Change {
    /// INSERT.
    Insert(Vec<Val>),
    /// UPDATE from the first row to the second.
    Update(Vec<Val>, Vec<Val>),
    /// DELETE.
    Delete(Vec<Val>),
}

#[derive(Debug)]
struct Table {
    db: String,
    info: TableInfo,
    /// Primary key column indexes.
    pk: Vec<usize>,
    /// Implicit row ids by primary key values (tables without an int handle).
    row_ids: HashMap<Vec<Val>, i64>,
    next_row_id: i64,
}

impl Table {
    fn handle(&mut self, row: &[Val], insert: bool) -> Result<i64> {
        if self.info.pk_is_handle {
            return match row.get(self.pk[0]) {
                Some(Val::Int(h)) => Ok(*h),
                other => bail!("primary key value {other:?} is not an integer"),
            };
        }
        let key: Vec<Val> = self.pk.iter().map(|&i| row[i].clone()).collect();
        if insert {
            self.next_row_id += 1;
            self.row_ids.insert(key, self.next_row_id);
            return Ok(self.next_row_id);
        }
        self.row_ids.get(&key).copied().ok_or_else(|| anyhow!("no row with key {key:?} in {}", self.info.name.o))
    }

    fn pairs(&self, row: &[Val], skip_handle: bool) -> Vec<(i64, Datum)> {
        self.info
            .cols
            .iter()
            .zip(row)
            .filter(|(c, _)| !(skip_handle && self.info.pk_is_handle && c.field_type.is_pri_key()))
            .map(|(c, v)| {
                let d = match v {
                    Val::Null => Datum::Null,
                    Val::Int(i) => Datum::I64(*i),
                    Val::Text(s) => Datum::Bytes(s.as_bytes().to_vec()),
                };
                (c.id, d)
            })
            .collect()
    }
}

/// A transaction whose P-binlog is written and whose C-binlog is not yet.
#[derive(Debug)]
pub struct Prewritten(Binlog);

/// See the module docs.
pub struct ScriptedTidb {
    client: PumpsClient,
    pd: PdClient,
    jobs: Arc<Mutex<Vec<Job>>>,
    status_url: String,
    server: tokio::task::JoinHandle<()>,
    dbs: HashMap<String, i64>,
    tables: HashMap<(String, String), Table>,
    next_id: i64,
    version: i64,
}

impl std::fmt::Debug for ScriptedTidb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScriptedTidb({}, schema version {})", self.status_url, self.version)
    }
}

impl Drop for ScriptedTidb {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn column(id: i64, name: &str, offset: usize, kind: Kind, pk: bool) -> ColumnInfo {
    let mut ft = match kind {
        Kind::Int => FieldType::new(tp::LONGLONG, 0, 20, 0),
        Kind::Text => {
            let mut ft = FieldType::new(tp::VARCHAR, 0, 64, 0);
            ft.charset = "utf8mb4".into();
            ft.collate = "utf8mb4_bin".into();
            ft
        }
    };
    if pk {
        ft.flag |= flag::PRI_KEY | flag::NOT_NULL;
    }
    ColumnInfo { id, name: CIStr::new(name), offset: offset as i64, field_type: ft, ..ColumnInfo::default() }
}

impl ScriptedTidb {
    /// Connects to the pumps registered in the cluster's PD and serves the status API on loopback.
    pub async fn start(pd_url: &str) -> Result<Self> {
        let cfg = pump::etcd::EtcdConfig::from_pd_urls(pd_url)?;
        let pd = PdClient::connect(&cfg).await?;
        let etcd = pump::etcd::connect(&cfg).await?;
        let client = PumpsClient::connect(Registry::new(etcd), pd.cluster_id(), ClientConfig::default()).await?;
        let jobs: Arc<Mutex<Vec<Job>>> = Arc::default();
        let (status_url, server) = serve_history(jobs.clone()).await?;
        Ok(ScriptedTidb {
            client,
            pd,
            jobs,
            status_url,
            server,
            dbs: HashMap::new(),
            tables: HashMap::new(),
            next_id: 100,
            version: 0,
        })
    }

    /// The status API, for `-schema-source`.
    pub fn status_url(&self) -> &str {
        &self.status_url
    }

    /// A fresh ts from PD.
    pub async fn ts(&self) -> Result<i64> {
        Ok(i64::try_from(self.pd.get_ts().await?)?)
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Records a DDL job in the history without writing its binlog (a history longer than what the
    /// test replicates); the table keeps its definition.
    pub async fn history_only(&mut self, db: &str, table: &str, job_type: u8, query: &str) -> Result<()> {
        let schema_id = self.db_id(db)?;
        let t = self.table(db, table)?;
        let (table_id, info) = (t.info.id, t.info.clone());
        let finished = self.ts().await?;
        self.record_job(job_type, schema_id, table_id, query, finished, None, Some(info))?;
        Ok(())
    }

    /// Records a finished DDL job in the history at a new schema version; returns the job id.
    #[allow(clippy::too_many_arguments)]
    fn record_job(
        &mut self,
        job_type: u8,
        schema_id: i64,
        table_id: i64,
        query: &str,
        finished_ts: i64,
        db: Option<DBInfo>,
        table: Option<TableInfo>,
    ) -> Result<i64> {
        self.version += 1;
        let job_id = self.id();
        let job = Job {
            id: job_id,
            job_type,
            schema_id,
            table_id,
            state: job_state::SYNCED,
            schema_state: schema_state::PUBLIC,
            query: query.into(),
            binlog: Some(HistoryInfo {
                schema_version: self.version,
                db_info: db,
                table_info: table,
                finished_ts: u64::try_from(finished_ts)?,
                ..HistoryInfo::default()
            }),
            ..Job::default()
        };
        self.jobs.lock().map_err(|_| anyhow!("history poisoned"))?.push(job);
        Ok(job_id)
    }

    /// Runs a DDL job: records it in the history, then writes its binlog. Returns the commit ts.
    async fn ddl(&mut self, job_type: u8, schema_id: i64, table_id: i64, query: &str, db: Option<DBInfo>, table: Option<TableInfo>) -> Result<i64> {
        let start_ts = self.ts().await?;
        let job_id = self.record_job(job_type, schema_id, table_id, query, start_ts, db, table)?;
        let p = Binlog {
            tp: Some(BinlogType::Prewrite as i32),
            start_ts: Some(start_ts),
            commit_ts: Some(0),
            prewrite_key: Some(format!("mDDLJobHistory{job_id}").into_bytes()),
            prewrite_value: None,
            ddl_query: Some(query.as_bytes().to_vec()),
            ddl_job_id: Some(job_id),
            ddl_schema_state: Some(i32::from(schema_state::PUBLIC)),
        };
        self.commit(p).await
    }

    async fn commit(&self, p: Binlog) -> Result<i64> {
        let commit_ts = self.ts().await?;
        match self.client.write_txn(p, commit_ts).await? {
            WriteOutcome::Written { .. } => Ok(commit_ts),
            other => bail!("binlog not written: {other:?}"),
        }
    }

    /// `CREATE DATABASE`.
    pub async fn create_database(&mut self, db: &str) -> Result<i64> {
        let id = self.id();
        let info = DBInfo { id, db_name: CIStr::new(db), ..DBInfo::default() };
        self.dbs.insert(db.into(), id);
        self.ddl(action::CREATE_SCHEMA, id, 0, &format!("CREATE DATABASE `{db}`"), Some(info), None).await
    }

    fn db_id(&self, db: &str) -> Result<i64> {
        self.dbs.get(db).copied().with_context(|| format!("no database {db}"))
    }

    /// `CREATE TABLE` with these columns and primary key columns.
    pub async fn create_table(&mut self, db: &str, table: &str, cols: &[(&str, Kind)], pk: &[&str]) -> Result<i64> {
        let schema_id = self.db_id(db)?;
        let id = self.id();
        let pk_idx: Vec<usize> = pk.iter().map(|p| cols.iter().position(|(n, _)| n == p).context("pk column")).collect::<Result<_>>()?;
        let int_handle = pk_idx.len() == 1 && cols[pk_idx[0]].1 == Kind::Int;
        let infos: Vec<ColumnInfo> =
            cols.iter().enumerate().map(|(i, (n, k))| column(i as i64 + 1, n, i, *k, pk_idx.contains(&i))).collect();
        let index = (!int_handle).then(|| IndexInfo {
            id: 1,
            idx_name: CIStr::new("PRIMARY"),
            idx_cols: pk_idx.iter().map(|&i| IndexColumn { name: CIStr::new(cols[i].0), offset: i as i64, length: -1 }).collect(),
            state: schema_state::PUBLIC,
            is_unique: true,
            is_primary: true,
            ..IndexInfo::default()
        });
        let info = TableInfo {
            id,
            name: CIStr::new(table),
            charset: "utf8mb4".into(),
            collate: "utf8mb4_bin".into(),
            max_col_id: infos.len() as i64,
            cols: infos,
            index_info: index.map(|i| vec![i]),
            pk_is_handle: int_handle,
            ..TableInfo::default()
        };
        let defs: Vec<String> = cols
            .iter()
            .map(|(n, k)| {
                let t = if *k == Kind::Int { "BIGINT" } else { "VARCHAR(64)" };
                let nn = if pk.contains(n) { " NOT NULL" } else { "" };
                format!("`{n}` {t}{nn}")
            })
            .collect();
        let keys: Vec<String> = pk.iter().map(|p| format!("`{p}`")).collect();
        let query = format!(
            "CREATE TABLE `{table}` ({}, PRIMARY KEY ({})) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            defs.join(", "),
            keys.join(", ")
        );
        let ts = self.ddl(action::CREATE_TABLE, schema_id, id, &query, None, Some(info.clone())).await?;
        let t = Table { db: db.into(), info, pk: pk_idx, row_ids: HashMap::new(), next_row_id: 0 };
        self.tables.insert((db.into(), table.into()), t);
        Ok(ts)
    }

    fn table(&mut self, db: &str, table: &str) -> Result<&mut Table> {
        self.tables.get_mut(&(db.to_owned(), table.to_owned())).with_context(|| format!("no table {db}.{table}"))
    }

    /// `TRUNCATE TABLE` (the table gets a new id, as in TiDB).
    pub async fn truncate(&mut self, db: &str, table: &str) -> Result<i64> {
        let schema_id = self.db_id(db)?;
        let new_id = self.id();
        let t = self.table(db, table)?;
        let old_id = t.info.id;
        t.info.id = new_id;
        t.row_ids.clear();
        let info = t.info.clone();
        self.ddl(action::TRUNCATE_TABLE, schema_id, old_id, &format!("TRUNCATE TABLE `{table}`"), None, Some(info)).await
    }

    /// `ALTER TABLE .. ADD COLUMN` (nullable, at the end).
    pub async fn add_column(&mut self, db: &str, table: &str, name: &str, kind: Kind) -> Result<i64> {
        let schema_id = self.db_id(db)?;
        let t = self.table(db, table)?;
        let id = t.info.max_col_id + 1;
        let offset = t.info.cols.len();
        t.info.cols.push(column(id, name, offset, kind, false));
        t.info.max_col_id = id;
        let (table_id, info) = (t.info.id, t.info.clone());
        let sql = if kind == Kind::Int { "BIGINT" } else { "VARCHAR(64)" };
        let query = format!("ALTER TABLE `{table}` ADD COLUMN `{name}` {sql}");
        self.ddl(action::ADD_COLUMN, schema_id, table_id, &query, None, Some(info)).await
    }

    /// Any other DDL the drainer should only pass on: recorded with the table's current definition.
    pub async fn other_ddl(&mut self, db: &str, table: &str, job_type: u8, query: &str) -> Result<i64> {
        let schema_id = self.db_id(db)?;
        let t = self.table(db, table)?;
        let (table_id, info) = (t.info.id, t.info.clone());
        self.ddl(job_type, schema_id, table_id, query, None, Some(info)).await
    }

    /// `ALTER TABLE .. MODIFY COLUMN` to another type: TiDB gives the column a new id (same name).
    pub async fn modify_column(&mut self, db: &str, table: &str, name: &str, kind: Kind) -> Result<i64> {
        let schema_id = self.db_id(db)?;
        let t = self.table(db, table)?;
        let id = t.info.max_col_id + 1;
        let pos = t.info.cols.iter().position(|c| c.name.o == name).with_context(|| format!("no column {name}"))?;
        let pk = t.info.cols[pos].field_type.is_pri_key();
        t.info.cols[pos] = column(id, name, pos, kind, pk);
        t.info.max_col_id = id;
        let (table_id, info) = (t.info.id, t.info.clone());
        let sql = if kind == Kind::Int { "BIGINT" } else { "VARCHAR(64)" };
        let query = format!("ALTER TABLE `{table}` MODIFY COLUMN `{name}` {sql}");
        self.ddl(action::MODIFY_COLUMN, schema_id, table_id, &query, None, Some(info)).await
    }

    /// One transaction of row changes; returns its commit ts.
    pub async fn txn(&mut self, changes: &[(&str, &str, Change)]) -> Result<i64> {
        let p = self.prewrite(changes).await?;
        self.commit_prewritten(p).await
    }

    /// The first half of [`ScriptedTidb::txn`]: the P-binlog, at the current schema version; commit it
    /// with [`ScriptedTidb::commit_prewritten`] (after a DDL, to play a transaction that started
    /// before it).
    pub async fn prewrite(&mut self, changes: &[(&str, &str, Change)]) -> Result<Prewritten> {
        let start_ts = self.ts().await?;
        let mut order: Vec<i64> = Vec::new();
        let mut muts: HashMap<i64, TableMutation> = HashMap::new();
        let mut first_key = None;
        for (db, table, ch) in changes {
            let t = self.table(db, table)?;
            let (rows, kind) = match ch {
                Change::Insert(r) => {
                    let h = t.handle(r, true)?;
                    (encode_insert_row(&Handle::Int(h), &t.pairs(r, true)), (MutationType::Insert, h))
                }
                Change::Update(old, new) => {
                    let h = t.handle(old, false)?;
                    let (mut o, mut n) = (t.pairs(old, false), t.pairs(new, false));
                    if !t.info.pk_is_handle {
                        o.push((EXTRA_HANDLE_ID, Datum::I64(h)));
                        n.push((EXTRA_HANDLE_ID, Datum::I64(h)));
                        let key: Vec<Val> = t.pk.iter().map(|&i| new[i].clone()).collect();
                        t.row_ids.insert(key, h);
                    }
                    (encode_update_row(&o, &n), (MutationType::Update, h))
                }
                Change::Delete(r) => {
                    let h = t.handle(r, false)?;
                    let mut pairs = t.pairs(r, false);
                    if !t.info.pk_is_handle {
                        pairs.push((EXTRA_HANDLE_ID, Datum::I64(h)));
                    }
                    let mut b = Vec::new();
                    encode_row(&mut b, &pairs);
                    (b, (MutationType::DeleteRow, h))
                }
            };
            let (mt, h) = kind;
            let id = t.info.id;
            first_key.get_or_insert_with(|| record_key(id, &Handle::Int(h)));
            if !muts.contains_key(&id) {
                order.push(id);
            }
            let m = muts.entry(id).or_insert_with(|| TableMutation { table_id: Some(id), ..TableMutation::default() });
            match mt {
                MutationType::Insert => m.inserted_rows.push(rows),
                MutationType::Update => m.updated_rows.push(rows),
                _ => m.deleted_rows.push(rows),
            }
            m.sequence.push(mt as i32);
        }
        let mutations = order.iter().filter_map(|id| muts.remove(id)).collect();
        let pv = PrewriteValue { schema_version: Some(self.version), mutations };
        let p = Binlog {
            tp: Some(BinlogType::Prewrite as i32),
            start_ts: Some(start_ts),
            commit_ts: Some(0),
            prewrite_key: first_key,
            prewrite_value: Some(pv.encode_to_vec()),
            ddl_query: None,
            ddl_job_id: Some(0),
            ddl_schema_state: Some(0),
        };
        match self.client.write_binlog(&p).await? {
            WriteOutcome::Written { .. } => Ok(Prewritten(p)),
            other => bail!("prewrite binlog not written: {other:?}"),
        }
    }

    /// Commits a [`Prewritten`] transaction now; returns its commit ts.
    pub async fn commit_prewritten(&self, p: Prewritten) -> Result<i64> {
        let mut c = p.0;
        let commit_ts = self.ts().await?;
        c.prewrite_value = None;
        c.set_tp(BinlogType::Commit);
        c.commit_ts = Some(commit_ts);
        match self.client.write_binlog(&c).await? {
            WriteOutcome::Written { .. } => Ok(commit_ts),
            other => bail!("commit binlog not written: {other:?}"),
        }
    }

    /// The database a table was created in (for tests that keep only table names).
    pub fn db_of(&self, table: &str) -> Option<&str> {
        self.tables.values().find(|t| t.info.name.o == table).map(|t| t.db.as_str())
    }
}

/// Serves `/ddl/history` (paged by `start_job_id` and `limit`, newest first, as TiDB).
async fn serve_history(jobs: Arc<Mutex<Vec<Job>>>) -> Result<(String, tokio::task::JoinHandle<()>)> {
    use axum::extract::{Query, State};
    use axum::response::IntoResponse;
    async fn history(
        State(jobs): State<Arc<Mutex<Vec<Job>>>>,
        Query(q): Query<HashMap<String, String>>,
    ) -> axum::response::Response {
        let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(2048);
        let start: i64 = q.get("start_job_id").and_then(|s| s.parse().ok()).unwrap_or(i64::MAX);
        let mut js: Vec<Job> = match jobs.lock() {
            Ok(j) => j.iter().filter(|j| j.id <= start).cloned().collect(),
            Err(_) => return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "poisoned").into_response(),
        };
        js.sort_by_key(|j| std::cmp::Reverse(j.id));
        js.truncate(limit);
        drainer::tidb::model::to_status_json(&js).into_response()
    }
    let app = axum::Router::new().route("/ddl/history", axum::routing::get(history)).with_state(jobs);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok((url, task))
}

/// PD, pumps, a downstream MariaDB and a [`ScriptedTidb`] writing to the pumps; drainers are started
/// by the test with its own `[syncer]` settings.
#[derive(Debug)]
pub struct ScriptedCluster {
    /// What the test writes through.
    pub tidb: ScriptedTidb,
    /// The pumps.
    pub pumps: Vec<crate::nodes::Node>,
    /// A ts taken before anything was written: where drainers start.
    pub start_ts: i64,
    // Declared last: the services stop after our processes.
    /// PD and the downstream MariaDB.
    pub cluster: crate::Cluster,
}

impl ScriptedCluster {
    /// Starts PD, the downstream, `pumps` pumps (1 s heartbeats and fake binlogs) and the scripted TiDB.
    pub async fn start(pumps: usize) -> Result<Self> {
        Self::start_with(pumps, &[]).await
    }

    /// [`ScriptedCluster::start`] with extra MariaDB server options for the downstream (e.g. a binary
    /// log for a [`BinlogBridge`]).
    pub async fn start_with(pumps: usize, downstream_args: &[&str]) -> Result<Self> {
        let args: Vec<String> = downstream_args.iter().map(|a| a.to_string()).collect();
        let (cluster, pumps) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut cluster = crate::Cluster::builder().pd().start()?;
            cluster.downstream = Some(crate::MariaDb::start_with(&cluster.dir().join("downstream"), &args)?);
            let mut nodes = Vec::new();
            for i in 0..pumps {
                let id = format!("pump-{i}");
                let flags = ["-heartbeat-interval=1".to_owned(), "-fake-binlog-interval=1".to_owned()];
                nodes.push(crate::nodes::Node::pump(&cluster.dir().join(&id), &cluster.pd().url(), &id, &flags)?);
            }
            Ok((cluster, nodes))
        })
        .await??;
        let tidb = ScriptedTidb::start(&cluster.pd().url()).await?;
        let start_ts = tidb.ts().await?;
        Ok(ScriptedCluster { tidb, pumps, start_ts, cluster })
    }

    /// The downstream's `mysql://` URL.
    pub fn downstream_url(&self) -> String {
        self.cluster.downstream.as_ref().map(|d| d.url()).unwrap_or_default()
    }

    /// A drainer.toml writing to the downstream: `[syncer]` keys from `syncer`, then `tables` (whole
    /// TOML tables such as `[syncer.binlog-filter-rule.x]`) at the end.
    pub fn drainer_toml(&self, syncer: &str, tables: &str) -> String {
        let port = self.cluster.downstream.as_ref().map(|d| d.port).unwrap_or_default();
        format!(
            "detect-interval = 1\n[syncer]\ndb-type = \"mysql\"\nworker-count = 2\ntxn-batch = 8\n{syncer}\n\
             [syncer.to]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"root\"\npassword = \"\"\n{tables}\n"
        )
    }

    /// Starts a drainer `name` with `toml` from [`ScriptedCluster::start_ts`], schemas from the scripted
    /// TiDB; waits until it is online.
    pub async fn drainer(&self, name: &str, toml: &str) -> Result<crate::nodes::Node> {
        let dir = self.cluster.dir().join(name);
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("drainer.toml");
        std::fs::write(&cfg, toml)?;
        let flags = vec![
            format!("-config={}", cfg.display()),
            format!("-initial-commit-ts={}", self.start_ts),
            format!("-schema-source={}", self.tidb.status_url()),
        ];
        let (pd, name) = (self.cluster.pd().url(), name.to_owned());
        tokio::task::spawn_blocking(move || crate::nodes::Node::drainer(&dir, &pd, &name, &flags)).await?
    }

    /// Waits until `drainer`'s checkpoint passes a ts taken now (so everything written before is applied).
    pub async fn caught_up(&self, drainer: &crate::nodes::Node) -> Result<()> {
        let want = self.tidb.ts().await?;
        // Generous: a loaded 2-core machine running many clusters at once is slow; a healthy run
        // takes seconds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        let url = format!("http://127.0.0.1:{}/commit_ts", drainer.port);
        loop {
            let ts = match reqwest::get(&url).await {
                Ok(r) => r.json::<serde_json::Value>().await.ok().and_then(|v| v.pointer("/data/ts").and_then(|t| t.as_i64())),
                Err(_) => None,
            };
            if ts.is_some_and(|t| t >= want) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(drainer.log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
                bail!("drainer did not reach ts {want} (at {ts:?})\n{}", tail.join("\n"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// `(id, v)` rows of a downstream table, ordered by id.
    pub async fn rows(&self, table: &str) -> Result<Vec<(i64, Option<String>)>> {
        use mysql_async::prelude::Queryable;
        let mut c = mysql_async::Conn::from_url(self.downstream_url()).await?;
        let rows = c.query(format!("SELECT id, v FROM {table} ORDER BY id")).await?;
        c.disconnect().await?;
        Ok(rows)
    }

    /// One value of a downstream query.
    pub async fn query_one<T: mysql_async::prelude::FromRow + Send + 'static>(&self, sql: &str) -> Result<Option<T>> {
        use mysql_async::prelude::Queryable;
        let mut c = mysql_async::Conn::from_url(self.downstream_url()).await?;
        let v = c.query_first(sql).await?;
        c.disconnect().await?;
        Ok(v)
    }
}

impl ScriptedTidb {
    /// Whether `db`.`table` is one of this TiDB's tables.
    pub fn has_table(&self, db: &str, table: &str) -> bool {
        self.tables.contains_key(&(db.to_owned(), table.to_owned()))
    }
}

/// Plays the storage of a TiDB with a MariaDB: every transaction committed in that MariaDB (read from
/// its row-format binary log with `mariadb-binlog`) is written as TiDB binlogs by a [`ScriptedTidb`],
/// for the tables registered in it (others, like a drainer's checkpoint table, are left out). With
/// it, what a drainer writes into the MariaDB flows on to that cluster's pumps, as in a
/// bidirectional pair of TiDB clusters. The MariaDB needs `--log-bin --binlog-format=ROW`.
#[derive(Debug)]
pub struct BinlogBridge {
    port: u16,
    file: String,
    pos: u64,
    /// Transactions written on that changed a table other than the loopback mark table.
    pub data_txns: usize,
}

/// One row event of `mariadb-binlog -v` output being read.
enum Part {
    None,
    Where,
    Set,
}

impl BinlogBridge {
    /// A bridge from the MariaDB on `port`, starting at the end of its binary log.
    pub async fn start(port: u16) -> Result<Self> {
        let (file, pos) = Self::end(port).await?;
        Ok(BinlogBridge { port, file, pos, data_txns: 0 })
    }

    async fn end(port: u16) -> Result<(String, u64)> {
        use mysql_async::prelude::Queryable;
        let mut c = mysql_async::Conn::from_url(format!("mysql://root@127.0.0.1:{port}")).await?;
        let row: Option<(String, u64, String, String)> = c.query_first("SHOW MASTER STATUS").await?;
        c.disconnect().await?;
        row.map(|(f, p, _, _)| (f, p)).context("SHOW MASTER STATUS is empty: start the MariaDB with --log-bin")
    }

    /// Writes what was committed since the last call; returns how many transactions were written.
    pub async fn poll(&mut self, tidb: &mut ScriptedTidb) -> Result<usize> {
        let (file, end) = Self::end(self.port).await?;
        anyhow::ensure!(file == self.file, "the binary log rotated from {} to {file}", self.file);
        if end <= self.pos {
            return Ok(0);
        }
        let out = tokio::process::Command::new("mariadb-binlog")
            .args(["--read-from-remote-server", "--host=127.0.0.1", "--user=root", "--base64-output=decode-rows", "-v"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--start-position={}", self.pos))
            .arg(format!("--stop-position={end}"))
            .arg(&file)
            .output()
            .await?;
        anyhow::ensure!(out.status.success(), "mariadb-binlog: {}", String::from_utf8_lossy(&out.stderr));
        self.pos = end;
        let mut written = 0;
        for txn in parse_row_events(&String::from_utf8_lossy(&out.stdout), tidb)? {
            if txn.is_empty() {
                continue;
            }
            if txn.iter().any(|(db, t, _)| !crate::scripted::is_mark(db, t)) {
                self.data_txns += 1;
            }
            let refs: Vec<(&str, &str, Change)> = txn.iter().map(|(d, t, c)| (d.as_str(), t.as_str(), c.clone())).collect();
            tidb.txn(&refs).await?;
            written += 1;
        }
        Ok(written)
    }
}

fn is_mark(db: &str, table: &str) -> bool {
    db == "retl" && table == "_drainer_repl_mark"
}

/// One transaction's row changes, `(db, table, change)`.
type BridgedTxn = Vec<(String, String, Change)>;

/// The row event being read: its kind (INSERT, UPDATE, DELETE), table, and the values of its WHERE
/// (the row before) and SET (the row after) parts.
struct RowEvent {
    kind: &'static str,
    db: String,
    table: String,
    before: Vec<Val>,
    after: Vec<Val>,
}

impl RowEvent {
    fn change(self) -> (String, String, Change) {
        let ch = match self.kind {
            "INSERT" => Change::Insert(self.after),
            "UPDATE" => Change::Update(self.before, self.after),
            _ => Change::Delete(self.before),
        };
        (self.db, self.table, ch)
    }
}

/// The transactions of `mariadb-binlog -v` output: the row changes of registered tables.
fn parse_row_events(text: &str, tidb: &ScriptedTidb) -> Result<Vec<BridgedTxn>> {
    let mut txns = Vec::new();
    let mut cur: BridgedTxn = Vec::new();
    let mut ev: Option<RowEvent> = None;
    let mut part = Part::None;
    for line in text.lines() {
        if line.starts_with("START TRANSACTION") || line.starts_with("BEGIN") {
            cur.clear();
            continue;
        }
        if line.starts_with("COMMIT") {
            cur.extend(ev.take().map(RowEvent::change));
            txns.push(std::mem::take(&mut cur));
            continue;
        }
        let Some(rest) = line.strip_prefix("### ") else { continue };
        let header = [("INSERT", "INSERT INTO "), ("UPDATE", "UPDATE "), ("DELETE", "DELETE FROM ")]
            .iter()
            .find_map(|(k, h)| rest.strip_prefix(h).map(|n| (*k, n)));
        if let Some((kind, name)) = header {
            cur.extend(ev.take().map(RowEvent::change));
            let (db, t) = name.split_once('.').context("table name")?;
            let (db, table) = (db.trim_matches('`').to_owned(), t.trim_matches('`').to_owned());
            // Tables TiDB does not have here (a drainer's checkpoint) are left out, values unread.
            ev = tidb.has_table(&db, &table).then(|| RowEvent { kind, db, table, before: Vec::new(), after: Vec::new() });
            part = Part::None;
            continue;
        }
        let Some(e) = ev.as_mut() else { continue };
        match rest.trim() {
            "WHERE" => part = Part::Where,
            "SET" => part = Part::Set,
            v => {
                let Some((_, value)) = v.split_once('=') else { continue };
                // An unsigned column prints as `-1 (18446744073709551615)`: the signed form is its value here.
                let value = value.split_once(" (").map(|(a, _)| a).unwrap_or(value);
                let val = if value == "NULL" {
                    Val::Null
                } else if let Some(s) = value.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                    Val::Text(s.to_owned())
                } else {
                    Val::Int(value.parse().with_context(|| format!("value {value:?}"))?)
                };
                match part {
                    Part::Where => e.before.push(val),
                    Part::Set => e.after.push(val),
                    Part::None => {}
                }
            }
        }
    }
    Ok(txns)
}
