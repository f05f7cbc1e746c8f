//! Table schemas from TiDB's DDL job history, applied by schema version exactly as upstream drainer.
//!
//! [`Schema`] holds the in-memory catalog: databases by id and name, tables by id (with the partition
//! ids of partitioned tables mapped to their logical table), the ids of truncated tables (DMLs that still
//! carry them are dropped), tables in the middle of a DROP COLUMN, the last DDL version applied to each
//! table, and `version → (schema, table)` for emitting DDLs. Jobs are queued by
//! `binlog.SchemaVersion` and applied by [`Schema::apply_until`] (`handlePreviousDDLJobIfNeed`).
//!
//! With `load-schema-snapshot` the jobs up to the start are not queued: a [`Snapshot`] keeps only
//! the newest state of each database and table, and [`Schema::install`] takes it as the schema there.
//!
//! [`StatusApi`] is the schema source: a TiDB status API (`/ddl/history`, paged with `start_job_id` and
//! `limit` so that every TiDB version answers alike).
//!
//! Actions: CreateSchema / ModifySchemaCharsetAndCollate (DBInfo), DropSchema, CreateTable / CreateView /
//! CreateSequence / RecoverTable (create), DropTable / DropView / DropSequence (drop), TruncateTable (drop
//! the old id and remember it, create the new), RenameTable (drop, create under `schema_id`),
//! CreateTables (every `MultipleTableInfos`); skipped: TiFlash replica status, lock/unlock, cache/nocache,
//! attributes, placement, resource groups; any other action replaces the table with `binlog.TableInfo`.
//! An action this drainer does not know that carries no TableInfo is logged, counted
//! (`binlog_drainer_unknown_ddl_jobs_total`) and skipped, never fatal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::tidb::model::{DBInfo, Job, TableInfo, action, flag, job_state, schema_state};

use crate::metrics::metrics;
use crate::txn::{Column, TableSchema, UniqueKey};

/// Ids above this are DDL system tables, whose jobs drainer skips (`meta.MaxGlobalID`).
pub const MAX_GLOBAL_ID: i64 = 1 << 48;

/// Action types upstream skips (`skipUnsupportedDDLJob`).
const SKIPPED_ACTIONS: &[u8] = &[31, 27, 28, 57, 59, 49, 50, 51, 52, 53, 54, 55, 56, 68, 69, 70];

/// Action types that replace the table with `binlog.TableInfo` (the known "every other action" set).
/// An action outside every list is unknown: applied if it carries a TableInfo, else skipped.
const KNOWN_REPLACE_ACTIONS: &[u8] = &[
    5, 6, 7, 8, 9, 10, 12, 13, 15, 16, 17, 18, 19, 20, 22, 23, 29, 30, 32, 33, 35, 37, 38, 39, 40, 41, 42,
    43, 44, 45, 46, 47, 48, 58, 61, 62, 63, 64, 65, 66, 67, 71, 72,
];

/// A schema-tracking failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A job that must carry a DBInfo/TableInfo does not.
    #[error("DDL job {job_id} (type {job_type}, schema version {version}) carries no {what}")]
    MissingInfo {
        /// Job id.
        job_id: i64,
        /// Action type.
        job_type: u8,
        /// Its schema version.
        version: i64,
        /// "DBInfo" or "TableInfo".
        what: &'static str,
    },
    /// The schema source could not be read.
    #[error("schema source {url}: {reason}")]
    Source {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// One table as the catalog holds it.
#[derive(Debug, Clone)]
pub struct TableEntry {
    /// The database id.
    pub db_id: i64,
    /// TiDB's TableInfo.
    pub info: Arc<TableInfo>,
    /// The sink-neutral schema derived from it.
    pub schema: Arc<TableSchema>,
    /// The schema version of the last DDL applied to this table.
    pub version: i64,
}

/// The catalog. See the module docs.
#[derive(Debug, Default)]
pub struct Schema {
    dbs: HashMap<i64, DBInfo>,
    tables: HashMap<i64, TableEntry>,
    /// partition id → logical table id.
    physical: HashMap<i64, i64>,
    truncated: HashSet<i64>,
    /// The definition each table had before its last DDL, with that definition's version: rows a
    /// transaction wrote at an older schema version are decoded with it (upstream keeps the same two).
    previous: HashMap<i64, (i64, Arc<TableInfo>)>,
    dropping_column: HashSet<i64>,
    version_target: HashMap<i64, (String, String)>,
    current_version: i64,
    queue: BTreeMap<i64, Job>,
}

fn db_name(db: &DBInfo) -> &str {
    &db.db_name.o
}

/// Converts TiDB's TableInfo into the sink-neutral [`TableSchema`] (public columns in offset order,
/// PRIMARY then unique keys over public columns).
pub fn table_schema(db: &str, t: &TableInfo) -> TableSchema {
    let public = t.public_columns();
    let columns: Vec<Column> = public
        .iter()
        .map(|c| {
            let ft = &c.field_type;
            Column {
                id: c.id,
                name: c.name.o.clone(),
                tp: ft.tp,
                unsigned: ft.is_unsigned(),
                not_null: ft.is_not_null(),
                primary_key: ft.is_pri_key(),
                binary: ft.charset == "binary" || (ft.flag & flag::BINARY != 0 && ft.charset.is_empty()),
                flen: ft.flen.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                decimal: ft.decimal.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                charset: ft.charset.clone(),
                elems: ft.elems().to_vec(),
                generated: c.is_generated(),
            }
        })
        .collect();
    let idx_of = |name: &str| columns.iter().position(|c| c.name.eq_ignore_ascii_case(name));
    let mut unique_keys = Vec::new();
    if t.pk_is_handle
        && let Some(pk) = t.pk_handle_column()
        && let Some(i) = idx_of(&pk.name.o)
    {
        unique_keys.push(UniqueKey { name: "PRIMARY".into(), columns: vec![i] });
    }
    let mut idxs: Vec<_> = t.indexes().iter().filter(|i| i.state == schema_state::PUBLIC && (i.is_primary || i.is_unique)).collect();
    idxs.sort_by_key(|i| !i.is_primary);
    for idx in idxs {
        if idx.is_primary && t.pk_is_handle {
            continue;
        }
        let cols: Option<Vec<usize>> = idx.idx_cols.iter().map(|c| idx_of(&c.name.o)).collect();
        if let Some(cols) = cols {
            let name = if idx.is_primary { "PRIMARY".to_owned() } else { idx.idx_name.o.clone() };
            unique_keys.push(UniqueKey { name, columns: cols });
        }
    }
    TableSchema {
        id: t.id,
        schema: db.to_owned(),
        name: t.name.o.clone(),
        columns,
        pk_is_handle: t.pk_is_handle,
        is_common_handle: t.is_common_handle,
        unique_keys,
    }
}

impl Schema {
    /// An empty catalog with the `mysql` schema (id 1) pre-seeded, as upstream.
    pub fn new() -> Self {
        let mut s = Schema::default();
        let mysql = DBInfo { id: 1, db_name: crate::tidb::model::CIStr::new("mysql"), ..DBInfo::default() };
        s.dbs.insert(1, mysql);
        s
    }

    /// Takes `snap` as the schema at its version (nothing must be applied or queued yet).
    pub fn install(&mut self, snap: Snapshot) {
        let dropped: HashSet<i64> = snap.dbs.iter().filter(|(_, (_, d))| d.is_none()).map(|(id, _)| *id).collect();
        for (id, (_, db)) in snap.dbs {
            if let Some(db) = db {
                self.dbs.insert(id, db);
            }
        }
        let mut tables: Vec<(i64, i64, TableInfo)> = snap
            .tables
            .into_values()
            .filter_map(|(v, t)| t.map(|(db, ti)| (v, db, ti)))
            .filter(|(_, db, _)| !dropped.contains(db))
            .collect();
        tables.sort_by_key(|(v, _, ti)| (*v, ti.id));
        for (v, db, ti) in tables {
            self.create_table(db, ti, v);
        }
        self.version_target.clear();
        self.current_version = self.current_version.max(snap.version);
    }

    /// The schema version of the last applied job.
    pub fn current_version(&self) -> i64 {
        self.current_version
    }

    /// Queues history jobs (any order); jobs at or below the current version are ignored.
    pub fn queue_jobs(&mut self, jobs: impl IntoIterator<Item = Job>) {
        for job in jobs {
            let v = job.binlog.as_ref().map(|b| b.schema_version).unwrap_or(0);
            if v > self.current_version {
                self.queue.insert(v, job);
            }
        }
    }

    /// Applies every queued job with schema version ≤ `v`, in version order.
    pub fn apply_until(&mut self, v: i64) -> Result<(), SchemaError> {
        while let Some(entry) = self.queue.first_entry() {
            if *entry.key() > v {
                break;
            }
            let job = entry.remove();
            self.apply_job(&job)?;
        }
        Ok(())
    }

    /// Whether upstream's `skipJob` drops this history job (not done/synced, or a system table).
    pub fn skip_job(job: &Job) -> bool {
        !(job.state == job_state::DONE || job.state == job_state::SYNCED) || job.table_id > MAX_GLOBAL_ID
    }

    /// Applies one job now.
    pub fn apply_job(&mut self, job: &Job) -> Result<(), SchemaError> {
        let Some(info) = job.binlog.as_ref() else { return Ok(()) };
        let version = info.schema_version;
        if version <= self.current_version || Self::skip_job(job) {
            return Ok(());
        }
        let missing = |what| SchemaError::MissingInfo { job_id: job.id, job_type: job.job_type, version, what };
        let t = job.job_type;
        metrics().ddl_jobs_total.inc();
        match t {
            _ if SKIPPED_ACTIONS.contains(&t) => {}
            action::CREATE_SCHEMA | action::MODIFY_SCHEMA_CHARSET_AND_COLLATE => {
                let db = info.db_info.clone().ok_or_else(|| missing("DBInfo"))?;
                self.version_target.insert(version, (db_name(&db).to_owned(), String::new()));
                self.dbs.insert(db.id, db);
            }
            action::DROP_SCHEMA => {
                let name = self.dbs.get(&job.schema_id).map(|d| db_name(d).to_owned()).unwrap_or_default();
                self.dbs.remove(&job.schema_id);
                let ids: Vec<i64> = self.tables.iter().filter(|(_, e)| e.db_id == job.schema_id).map(|(id, _)| *id).collect();
                for id in ids {
                    self.drop_table(id);
                }
                self.version_target.insert(version, (name, String::new()));
            }
            action::CREATE_TABLE | action::CREATE_VIEW | action::CREATE_SEQUENCE | action::RECOVER_TABLE => {
                let ti = info.table_info.clone().ok_or_else(|| missing("TableInfo"))?;
                self.create_table(job.schema_id, ti, version);
            }
            action::DROP_TABLE | action::DROP_VIEW | action::DROP_SEQUENCE => {
                let target = self.table_target(job.table_id).unwrap_or_default();
                self.drop_table(job.table_id);
                self.version_target.insert(version, target);
            }
            action::TRUNCATE_TABLE => {
                let ti = info.table_info.clone().ok_or_else(|| missing("TableInfo"))?;
                self.drop_table(job.table_id);
                self.truncated.insert(job.table_id);
                self.create_table(job.schema_id, ti, version);
            }
            action::RENAME_TABLE => {
                let ti = info.table_info.clone().ok_or_else(|| missing("TableInfo"))?;
                self.drop_table(job.table_id);
                self.create_table(job.schema_id, ti, version);
            }
            action::CREATE_TABLES => {
                let tis = info.multiple_table_infos.clone().ok_or_else(|| missing("MultipleTableInfos"))?;
                let db = self.dbs.get(&job.schema_id).map(|d| db_name(d).to_owned()).unwrap_or_default();
                for ti in tis {
                    self.create_table(job.schema_id, ti, version);
                }
                self.version_target.insert(version, (db, String::new()));
            }
            _ => match info.table_info.clone() {
                Some(ti) => {
                    let db_id = self.tables.get(&ti.id).map(|e| e.db_id).unwrap_or(job.schema_id);
                    if t == action::DROP_COLUMN {
                        self.dropping_column.remove(&ti.id);
                    }
                    self.create_table(db_id, ti, version);
                }
                None if KNOWN_REPLACE_ACTIONS.contains(&t) => return Err(missing("TableInfo")),
                None => {
                    metrics().unknown_ddl_jobs.inc();
                    tracing::warn!(job_id = job.id, job_type = t, version, query = %job.query, "unknown DDL job type without a TableInfo; skipped");
                }
            },
        }
        self.current_version = version;
        Ok(())
    }

    /// The (database, table) names of table `id`, if known.
    pub fn table_target(&self, id: i64) -> Option<(String, String)> {
        let e = self.tables.get(&id)?;
        Some((e.schema.schema.clone(), e.schema.name.clone()))
    }

    fn create_table(&mut self, db_id: i64, ti: TableInfo, version: i64) {
        let db = self.dbs.get(&db_id).map(|d| db_name(d).to_owned()).unwrap_or_default();
        let before = self.tables.get(&ti.id).map(|e| (e.version, e.info.clone()));
        self.drop_table(ti.id);
        if let Some(b) = before {
            self.previous.insert(ti.id, b);
        }
        if let Some(p) = &ti.partition {
            for d in &p.definitions {
                self.physical.insert(d.id, ti.id);
            }
        }
        let schema = Arc::new(table_schema(&db, &ti));
        self.version_target.insert(version, (db, ti.name.o.clone()));
        self.tables.insert(ti.id, TableEntry { db_id, info: Arc::new(ti), schema, version });
    }

    fn drop_table(&mut self, id: i64) {
        self.previous.remove(&id);
        if let Some(e) = self.tables.remove(&id)
            && let Some(p) = &e.info.partition
        {
            for d in &p.definitions {
                self.physical.remove(&d.id);
            }
        }
    }

    /// The table a row's table id (table or partition id) belongs to.
    pub fn table(&self, id: i64) -> Option<&TableEntry> {
        let logical = self.physical.get(&id).copied().unwrap_or(id);
        self.tables.get(&logical)
    }

    /// The definition rows of table `id` written at schema version `version` were encoded with, when
    /// it is not the current one: the one before the table's last DDL, if it was already in force at
    /// `version`.
    pub fn table_at(&self, id: i64, version: i64) -> Option<&Arc<TableInfo>> {
        let logical = self.physical.get(&id).copied().unwrap_or(id);
        let current = self.tables.get(&logical)?;
        if version >= current.version {
            return None;
        }
        self.previous.get(&logical).filter(|(v, _)| *v <= version).map(|(_, info)| info)
    }

    /// Whether DMLs carrying this id belong to a table since truncated.
    pub fn is_truncated(&self, id: i64) -> bool {
        self.truncated.contains(&id)
    }

    /// Marks a table as in the middle of a DROP COLUMN (a DeleteOnly DDL binlog).
    pub fn mark_dropping_column(&mut self, table_id: i64) {
        self.dropping_column.insert(table_id);
    }

    /// Whether rows of this table may lack columns (`CanAppendDefaultValue`): a DROP COLUMN in
    /// progress, or a binlog written at a schema version older than the table's last DDL.
    pub fn can_append_default(&self, table_id: i64, binlog_version: i64) -> bool {
        self.dropping_column.contains(&table_id) || self.table(table_id).is_some_and(|e| binlog_version < e.version)
    }

    /// The `(schema, table)` the DDL at `version` touched.
    pub fn ddl_target(&self, version: i64) -> Option<&(String, String)> {
        self.version_target.get(&version)
    }

    /// The name of database `id`.
    pub fn db_name(&self, id: i64) -> Option<&str> {
        self.dbs.get(&id).map(db_name)
    }
}

/// The schema at one point of the DDL history, built from the jobs up to it in any order, keeping
/// for each database and table only what its newest job left (`load-schema-snapshot`): memory grows
/// with the live tables, not with the history. Database and table ids are never reused by TiDB, so
/// the newest job touching an id decides whether it exists and what it is.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// db id → (version of its newest job, its DBInfo, or `None` once dropped).
    dbs: HashMap<i64, (i64, Option<DBInfo>)>,
    /// table id → (version of its newest job, (db id, TableInfo), or `None` once dropped).
    tables: HashMap<i64, (i64, Option<(i64, TableInfo)>)>,
    version: i64,
    jobs: usize,
}

impl Snapshot {
    /// Adds one history job (whatever its order among the others).
    pub fn add(&mut self, job: Job) -> Result<(), SchemaError> {
        let Some(info) = job.binlog else { return Ok(()) };
        let version = info.schema_version;
        let skip = !(job.state == job_state::DONE || job.state == job_state::SYNCED) || job.table_id > MAX_GLOBAL_ID;
        if version <= 0 || skip {
            return Ok(());
        }
        self.jobs += 1;
        self.version = self.version.max(version);
        let missing = |what| SchemaError::MissingInfo { job_id: job.id, job_type: job.job_type, version, what };
        let t = job.job_type;
        match t {
            _ if SKIPPED_ACTIONS.contains(&t) => {}
            action::CREATE_SCHEMA | action::MODIFY_SCHEMA_CHARSET_AND_COLLATE => {
                let db = info.db_info.ok_or_else(|| missing("DBInfo"))?;
                self.set_db(db.id, version, Some(db));
            }
            action::DROP_SCHEMA => self.set_db(job.schema_id, version, None),
            action::DROP_TABLE | action::DROP_VIEW | action::DROP_SEQUENCE => self.set_table(job.table_id, version, None),
            action::TRUNCATE_TABLE => {
                let ti = info.table_info.ok_or_else(|| missing("TableInfo"))?;
                self.set_table(job.table_id, version, None);
                self.set_table(ti.id, version, Some((job.schema_id, ti)));
            }
            action::CREATE_TABLES => {
                for ti in info.multiple_table_infos.ok_or_else(|| missing("MultipleTableInfos"))? {
                    self.set_table(ti.id, version, Some((job.schema_id, ti)));
                }
            }
            _ => match info.table_info {
                Some(ti) => {
                    if t == action::RENAME_TABLE && job.table_id != ti.id {
                        self.set_table(job.table_id, version, None);
                    }
                    self.set_table(ti.id, version, Some((job.schema_id, ti)));
                }
                None if KNOWN_REPLACE_ACTIONS.contains(&t) || t == action::CREATE_TABLE || t == action::RENAME_TABLE => {
                    return Err(missing("TableInfo"));
                }
                None => {}
            },
        }
        Ok(())
    }

    fn set_db(&mut self, id: i64, version: i64, db: Option<DBInfo>) {
        match self.dbs.get(&id) {
            Some((v, _)) if *v > version => {}
            _ => {
                self.dbs.insert(id, (version, db));
            }
        }
    }

    fn set_table(&mut self, id: i64, version: i64, t: Option<(i64, TableInfo)>) {
        match self.tables.get(&id) {
            Some((v, _)) if *v > version => {}
            _ => {
                self.tables.insert(id, (version, t));
            }
        }
    }

    /// How many jobs it was built from.
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// The newest schema version among its jobs.
    pub fn version(&self) -> i64 {
        self.version
    }
}

/// A TiDB status API as the schema source.
#[derive(Debug, Clone)]
pub struct StatusApi {
    base: String,
    client: reqwest::Client,
}

/// Jobs per `/ddl/history` page (TiDB's maximum).
const PAGE: usize = 2048;

impl StatusApi {
    /// The API at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
        StatusApi { base: base.trim_end_matches('/').to_owned(), client }
    }

    async fn get_jobs(&self, query: &str) -> Result<Vec<Job>, SchemaError> {
        let url = format!("{}/ddl/history?{query}", self.base);
        let err = |reason: String| SchemaError::Source { url: url.clone(), reason };
        let resp = self.client.get(&url).send().await.map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| err(e.to_string()))?;
        if !status.is_success() {
            return Err(err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim())));
        }
        serde_json::from_slice(&body).map_err(|e| err(format!("not a list of DDL jobs: {e}")))
    }

    /// Every history job, sorted by schema version.
    pub async fn all_jobs(&self) -> Result<Vec<Job>, SchemaError> {
        let mut out: Vec<Job> = Vec::new();
        self.for_each_page(|page| {
            out.extend(page);
            Ok(())
        })
        .await?;
        let mut seen = HashSet::new();
        out.retain(|j| seen.insert(j.id));
        out.sort_by_key(|j| j.binlog.as_ref().map(|b| b.schema_version).unwrap_or(0));
        Ok(out)
    }

    /// Hands the history to `f` one page at a time, newest jobs first (a job may come twice when the
    /// history grows meanwhile).
    pub async fn for_each_page(&self, mut f: impl FnMut(Vec<Job>) -> Result<(), SchemaError>) -> Result<(), SchemaError> {
        let mut page = self.get_jobs(&format!("limit={PAGE}")).await?;
        loop {
            let n = page.len();
            let min_id = page.iter().map(|j| j.id).min();
            f(page)?;
            match min_id {
                Some(min) if n >= PAGE && min > 1 => {
                    page = self.get_jobs(&format!("start_job_id={}&limit={PAGE}", min - 1)).await?;
                }
                _ => return Ok(()),
            }
        }
    }

    /// One job by id, `None` if the history does not have it (yet).
    pub async fn job(&self, id: i64) -> Result<Option<Job>, SchemaError> {
        let page = self.get_jobs(&format!("start_job_id={id}&limit=1")).await?;
        Ok(page.into_iter().find(|j| j.id == id))
    }

    /// The job of a DDL binlog: errors retried 10 times 1 s apart; a job not in the history yet is
    /// waited for (1 s polls) until `give_up` says stop.
    pub async fn wait_job(&self, id: i64, mut give_up: impl FnMut() -> bool) -> Result<Job, SchemaError> {
        let mut errors = 0;
        loop {
            match self.job(id).await {
                Ok(Some(j)) => return Ok(j),
                Ok(None) => tracing::info!(job_id = id, "DDL job not in the history yet; waiting"),
                Err(e) => {
                    errors += 1;
                    if errors >= 10 {
                        return Err(e);
                    }
                    tracing::warn!(job_id = id, error = %e, "fetching DDL job failed; retrying");
                }
            }
            if give_up() {
                return Err(SchemaError::Source { url: self.base.clone(), reason: format!("DDL job {id} never appeared") });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tidb::model::{CIStr, ColumnInfo, FieldType, HistoryInfo, IndexColumn, IndexInfo, tp};

    pub(crate) fn col(id: i64, name: &str, offset: i64, t: u8, fl: u64) -> ColumnInfo {
        ColumnInfo {
            id,
            name: CIStr::new(name),
            offset,
            field_type: FieldType::new(t, fl, 11, 0),
            ..ColumnInfo::default()
        }
    }

    fn table(id: i64, name: &str, cols: Vec<ColumnInfo>) -> TableInfo {
        TableInfo { id, name: CIStr::new(name), cols, pk_is_handle: true, ..TableInfo::default() }
    }

    fn job(id: i64, t: u8, schema_id: i64, table_id: i64, v: i64, db: Option<DBInfo>, ti: Option<TableInfo>) -> Job {
        Job {
            id,
            job_type: t,
            schema_id,
            table_id,
            state: job_state::SYNCED,
            query: format!("q{id}"),
            binlog: Some(HistoryInfo { schema_version: v, db_info: db, table_info: ti, ..HistoryInfo::default() }),
            ..Job::default()
        }
    }

    fn db(id: i64, name: &str) -> DBInfo {
        DBInfo { id, db_name: CIStr::new(name), ..DBInfo::default() }
    }

    #[test]
    fn jobs_apply_in_version_order_up_to_the_asked_version() {
        let mut s = Schema::new();
        let t1 = table(10, "t", vec![col(1, "id", 0, tp::LONG, flag::PRI_KEY | flag::NOT_NULL)]);
        let mut t1b = t1.clone();
        t1b.cols.push(col(2, "v", 1, tp::VARCHAR, 0));
        s.queue_jobs([
            job(3, action::ADD_COLUMN, 2, 10, 3, None, Some(t1b)),
            job(1, action::CREATE_SCHEMA, 2, 0, 1, Some(db(2, "d")), None),
            job(2, action::CREATE_TABLE, 2, 10, 2, None, Some(t1)),
        ]);
        s.apply_until(2).unwrap();
        assert_eq!(s.current_version(), 2);
        let e = s.table(10).unwrap();
        assert_eq!((e.schema.schema.as_str(), e.schema.name.as_str(), e.schema.columns.len()), ("d", "t", 1));
        assert_eq!(e.schema.unique_keys[0].name, "PRIMARY");
        assert!(s.can_append_default(10, 1) && !s.can_append_default(10, 2));
        s.apply_until(3).unwrap();
        assert_eq!(s.table(10).unwrap().schema.columns.len(), 2);
        assert_eq!(s.ddl_target(3), Some(&("d".to_owned(), "t".to_owned())));
        assert_eq!(s.ddl_target(1), Some(&("d".to_owned(), String::new())));
    }

    #[test]
    fn truncate_rename_drop_and_unknown_types() {
        let mut s = Schema::new();
        s.apply_job(&job(1, action::CREATE_SCHEMA, 2, 0, 1, Some(db(2, "d")), None)).unwrap();
        s.apply_job(&job(2, action::CREATE_SCHEMA, 3, 0, 2, Some(db(3, "e")), None)).unwrap();
        s.apply_job(&job(3, action::CREATE_TABLE, 2, 10, 3, None, Some(table(10, "t", vec![])))).unwrap();
        s.apply_job(&job(4, action::TRUNCATE_TABLE, 2, 10, 4, None, Some(table(11, "t", vec![])))).unwrap();
        assert!(s.is_truncated(10) && s.table(10).is_none() && s.table(11).is_some());
        s.apply_job(&job(5, action::RENAME_TABLE, 3, 11, 5, None, Some(table(11, "u", vec![])))).unwrap();
        assert_eq!(s.table(11).unwrap().schema.schema, "e");
        assert_eq!(s.ddl_target(5), Some(&("e".to_owned(), "u".to_owned())));
        // a TiDB-only job type we do not know, without a TableInfo: skipped, counted, not fatal
        let before = metrics().unknown_ddl_jobs.get();
        s.apply_job(&job(6, 200, 3, 11, 6, None, None)).unwrap();
        assert_eq!(metrics().unknown_ddl_jobs.get(), before + 1);
        assert_eq!(s.current_version(), 6);
        // a known replace action without TableInfo is an error naming the job
        let e = s.apply_job(&job(7, action::ADD_COLUMN, 3, 11, 7, None, None)).unwrap_err().to_string();
        assert!(e.contains("DDL job 7") && e.contains("TableInfo"), "{e}");
        s.apply_job(&job(8, action::DROP_TABLE, 3, 11, 8, None, None)).unwrap();
        assert!(s.table(11).is_none());
        assert_eq!(s.ddl_target(8), Some(&("e".to_owned(), "u".to_owned())));
        s.apply_job(&job(9, action::DROP_SCHEMA, 2, 0, 9, None, None)).unwrap();
        assert!(s.db_name(2).is_none());
        // not synced/done: skipped without moving the version
        let mut j = job(10, action::CREATE_SCHEMA, 4, 0, 10, Some(db(4, "f")), None);
        j.state = job_state::CANCELLED;
        s.apply_job(&j).unwrap();
        assert!(s.db_name(4).is_none());
    }

    #[test]
    fn the_definition_before_the_last_ddl_serves_rows_of_older_versions() {
        let mut s = Schema::new();
        s.apply_job(&job(1, action::CREATE_SCHEMA, 2, 0, 1, Some(db(2, "d")), None)).unwrap();
        let t1 = table(10, "t", vec![col(1, "id", 0, tp::LONG, flag::PRI_KEY), col(2, "n", 1, tp::LONG, 0)]);
        s.apply_job(&job(2, action::CREATE_TABLE, 2, 10, 2, None, Some(t1))).unwrap();
        assert!(s.table_at(10, 2).is_none() && s.table_at(10, 1).is_none(), "current, or older than the table");
        // MODIFY COLUMN n: a new column id under the same name.
        let t2 = table(10, "t", vec![col(1, "id", 0, tp::LONG, flag::PRI_KEY), col(3, "n", 1, tp::VARCHAR, 0)]);
        s.apply_job(&job(3, action::MODIFY_COLUMN, 2, 10, 3, None, Some(t2))).unwrap();
        let at2 = s.table_at(10, 2).unwrap();
        assert_eq!(at2.cols[1].id, 2);
        assert!(s.table_at(10, 3).is_none());
        s.apply_job(&job(4, action::DROP_TABLE, 2, 10, 4, None, None)).unwrap();
        assert!(s.table_at(10, 2).is_none());
    }

    /// The snapshot of the jobs up to any version, fed newest first, is the schema a replay up to
    /// that version builds.
    #[test]
    fn a_snapshot_at_any_version_equals_the_replay_up_to_it() {
        let mk = |id: i64, name: &str, ncols: usize| {
            let cols = (0..ncols).map(|i| col(i as i64 + 1, &format!("c{i}"), i as i64, tp::LONG, if i == 0 { flag::PRI_KEY } else { 0 })).collect();
            table(id, name, cols)
        };
        let mut jobs = vec![
            job(1, action::CREATE_SCHEMA, 2, 0, 1, Some(db(2, "d")), None),
            job(2, action::CREATE_SCHEMA, 3, 0, 2, Some(db(3, "e")), None),
            job(3, action::CREATE_TABLE, 2, 10, 3, None, Some(mk(10, "a", 1))),
            job(4, action::CREATE_TABLE, 3, 11, 4, None, Some(mk(11, "b", 1))),
            job(5, action::ADD_COLUMN, 2, 10, 5, None, Some(mk(10, "a", 2))),
            job(6, action::TRUNCATE_TABLE, 2, 10, 6, None, Some(mk(12, "a", 2))),
            job(7, action::CREATE_TABLE, 3, 13, 7, None, Some(mk(13, "c", 3))),
            job(9, action::ADD_COLUMN, 2, 12, 9, None, Some(mk(12, "a", 3))),
            job(10, action::DROP_TABLE, 3, 11, 10, None, None),
            job(12, action::DROP_SCHEMA, 3, 0, 11, None, None),
            job(13, action::CREATE_TABLE, 2, 14, 12, None, Some(mk(14, "d1", 1))),
        ];
        // A rename moves a table from e to d before e is dropped.
        let mut rename = job(8, action::RENAME_TABLE, 2, 13, 8, None, Some(mk(13, "c2", 3)));
        rename.schema_id = 2;
        jobs.insert(7, rename);
        let shape = |s: &Schema| {
            let mut t: Vec<(i64, String, String, usize)> = [10, 11, 12, 13, 14]
                .iter()
                .filter_map(|id| s.table(*id).map(|e| (*id, e.schema.schema.clone(), e.schema.name.clone(), e.schema.columns.len())))
                .collect();
            t.sort();
            let dbs: Vec<Option<String>> = [2, 3].iter().map(|id| s.db_name(*id).map(str::to_owned)).collect();
            (t, dbs, s.current_version())
        };
        for v in 0..=12 {
            let mut replay = Schema::new();
            replay.queue_jobs(jobs.clone());
            replay.apply_until(v).unwrap();
            let mut snap = Snapshot::default();
            for j in jobs.iter().rev().filter(|j| j.binlog.as_ref().unwrap().schema_version <= v) {
                snap.add(j.clone()).unwrap();
            }
            let mut snapped = Schema::new();
            snapped.install(snap);
            assert_eq!(shape(&snapped), shape(&replay), "at version {v}");
        }
    }

    #[test]
    fn partitions_map_to_their_table_and_keys_follow_indexes() {
        let mut s = Schema::new();
        s.apply_job(&job(1, action::CREATE_SCHEMA, 2, 0, 1, Some(db(2, "d")), None)).unwrap();
        let mut t = table(20, "p", vec![col(1, "a", 0, tp::VARCHAR, flag::PRI_KEY), col(2, "b", 1, tp::LONG, 0)]);
        t.pk_is_handle = false;
        t.is_common_handle = true;
        t.index_info = Some(vec![
            IndexInfo {
                idx_name: CIStr::new("ub"),
                is_unique: true,
                idx_cols: vec![IndexColumn { name: CIStr::new("b"), offset: 1, length: -1 }],
                ..IndexInfo::default()
            },
            IndexInfo {
                idx_name: CIStr::new("PRIMARY"),
                is_primary: true,
                is_unique: true,
                idx_cols: vec![IndexColumn { name: CIStr::new("a"), offset: 0, length: -1 }],
                ..IndexInfo::default()
            },
        ]);
        t.partition = Some(crate::tidb::model::PartitionInfo {
            definitions: vec![
                crate::tidb::model::PartitionDefinition { id: 21, ..Default::default() },
                crate::tidb::model::PartitionDefinition { id: 22, ..Default::default() },
            ],
            ..Default::default()
        });
        s.apply_job(&job(2, action::CREATE_TABLE, 2, 20, 2, None, Some(t))).unwrap();
        let e = s.table(22).unwrap();
        assert_eq!(e.schema.id, 20);
        let keys: Vec<_> = e.schema.unique_keys.iter().map(|k| (k.name.as_str(), k.columns.clone())).collect();
        assert_eq!(keys, [("PRIMARY", vec![0]), ("ub", vec![1])]);
    }
}
