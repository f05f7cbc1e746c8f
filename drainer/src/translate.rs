//! Turning one merged binlog into a [`txn::Item`](crate::txn::Item).
//!
//! - A fake binlog (start ts = commit ts) and a commit ts listed in `ignore-txn-commit-ts` become
//!   [`Body::Empty`]: nothing to apply, but the checkpoint moves.
//! - A DDL binlog (`ddl_job_id > 0`): the job is fetched from the schema source, queued and applied up to
//!   its schema version; it becomes [`Body::Ddl`] with `job.query`, unless it failed (schema version 0),
//!   is the DeleteOnly step of a DROP COLUMN (the table is marked instead), is a sequence `select setval`,
//!   is CreateTables for a MySQL/TiDB sink, `sync-ddl` is off, or the filter drops its schema/table; those
//!   become Empty. A DDL listed in `ignore-txn-commit-ts` is still applied to the tracked schema but
//!   becomes Empty. A RENAME TABLE between a filtered-out and a replicated table is an error
//!   ([`TranslateError::RenameAcrossFilter`]) that says how to handle it (upstream: unsupported).
//! - A DML binlog: the schema is brought to `PrewriteValue.schema_version`, mutations of truncated tables
//!   and filtered tables are dropped, the rest decoded row by row with [`crate::tidb::mutation`] (the one decoder: int and clustered
//!   handles, default/zero filling) and converted to [`txn::Value`](crate::txn::Value)s. A DML whose every mutation was dropped is Empty.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prost::Message;
use pump::proto::{Binlog, PrewriteValue};
use crate::tidb::Value as TValue;
use crate::tidb::model::{action, schema_state};
use crate::tidb::mutation::{self, MutationError};

use crate::config::{DbType, SyncerConfig};
use crate::filter::Filter;
use crate::metrics::metrics;
use crate::rules::{AmbiguousRoute, DmlKind, Rules};
use crate::schema::{Schema, SchemaError, Snapshot, StatusApi};
use crate::txn::{Body, Ddl, Item, MysqlTime, Row, RowChange, TableChanges, TableSchema, Value};

/// Why a binlog could not be translated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// Schema tracking or the schema source failed.
    #[error("commit ts {commit_ts}: {source}")]
    Schema {
        /// The binlog's commit ts.
        commit_ts: i64,
        /// The cause.
        source: SchemaError,
    },
    /// A DDL or DML arrived but no schema source is configured.
    #[error(
        "commit ts {commit_ts}: a {what} binlog needs table schemas, but no schema source is configured \
         (set [syncer] schema-source = \"http://<tidb>:10080\" or -schema-source)"
    )]
    NoSchemaSource {
        /// The binlog's commit ts.
        commit_ts: i64,
        /// "DDL" or "DML".
        what: &'static str,
    },
    /// `prewrite_value` is not a PrewriteValue.
    #[error("commit ts {commit_ts}: prewrite_value is not a PrewriteValue: {source}")]
    PrewriteValue {
        /// The binlog's commit ts.
        commit_ts: i64,
        /// The protobuf error.
        source: prost::DecodeError,
    },
    /// A RENAME TABLE moves a table between a filtered-out and a replicated schema or table.
    #[error(
        "commit ts {commit_ts}: `{query}` renames {from} to {to}, and only one of them is replicated \
         (ignore-schemas, replicate-do-db/-table, ignore-table); the drainer does not support a rename \
         across the filter, as upstream. Apply the change to the downstream by hand (copy or drop the \
         table), then add {commit_ts} to [syncer] ignore-txn-commit-ts and restart: the drainer then \
         tracks the rename without running it"
    )]
    RenameAcrossFilter {
        /// The DDL's commit ts.
        commit_ts: i64,
        /// The table before, `` `db`.`t` ``.
        from: String,
        /// The table after.
        to: String,
        /// The DDL.
        query: String,
    },
    /// A table matches two routes of one level.
    #[error("commit ts {commit_ts}: {source}")]
    Route {
        /// The binlog's commit ts.
        commit_ts: i64,
        /// Which rules.
        source: AmbiguousRoute,
    },
    /// A DDL on a routed table cannot be rewritten to name its target.
    #[error(
        "commit ts {commit_ts}: `{query}` touches {from}, which table-migrate-rule routes to {to}, and it cannot \
         be rewritten for the route ({why}). Apply the change to the downstream by hand, then either add \
         {commit_ts} to [syncer] ignore-txn-commit-ts, or drop such DDL with a binlog-filter-rule \
         (ignore-event) on the routed tables, and restart"
    )]
    RouteDdl {
        /// The DDL's commit ts.
        commit_ts: i64,
        /// The DDL.
        query: String,
        /// The source, `` `db`.`t` ``.
        from: String,
        /// The target.
        to: String,
        /// What forms can be routed.
        why: &'static str,
    },
    /// A mutation names a table the schema does not have.
    #[error("commit ts {commit_ts}: table id {table_id} not found at schema version {version}")]
    TableNotFound {
        /// The binlog's commit ts.
        commit_ts: i64,
        /// The table (or partition) id.
        table_id: i64,
        /// The binlog's schema version.
        version: i64,
    },
    /// A row could not be decoded.
    #[error("commit ts {commit_ts}, table {table}: {source}")]
    Row {
        /// The binlog's commit ts.
        commit_ts: i64,
        /// `schema.table`.
        table: String,
        /// What is wrong, with the table id, the row list and the row's index.
        source: MutationError,
    },
}

/// The translator: schema catalog, schema source and filters.
#[derive(Debug)]
pub struct Translator {
    schema: Schema,
    source: Option<StatusApi>,
    filter: Filter,
    rules: Rules,
    /// Routed table definitions by table id: (the source definition, its routed copy).
    routed: HashMap<i64, (Arc<TableSchema>, Arc<TableSchema>)>,
    ignore_ts: HashSet<i64>,
    /// `loopback-control`: the channel whose marked transactions are dropped.
    loopback: Option<i64>,
    /// `load-schema-snapshot`.
    snapshot: bool,
    sync_ddl: bool,
    db_type: DbType,
}

impl Translator {
    /// A translator for `[syncer]` (`schema-source` may be empty: then only fake and filtered binlogs
    /// can be handled).
    pub fn new(cfg: &SyncerConfig, db_type: DbType) -> Result<Self, TranslatorConfigError> {
        Ok(Translator {
            schema: Schema::new(),
            source: (!cfg.schema_source.is_empty()).then(|| StatusApi::new(&cfg.schema_source)),
            filter: Filter::new(cfg)?,
            rules: Rules::new(cfg.case_sensitive, &cfg.table_migrate_rule, &cfg.binlog_filter_rule)?,
            routed: HashMap::new(),
            ignore_ts: cfg.ignore_txn_commit_ts.iter().copied().collect(),
            loopback: cfg.loopback_control.then_some(cfg.channel_id),
            snapshot: cfg.load_schema_snapshot,
            sync_ddl: cfg.sync_ddl,
            db_type,
        })
    }

    /// Loads the DDL history and applies it up to `schema_version` (the checkpoint's).
    ///
    /// With `load-schema-snapshot` the jobs up to the start are folded into a [`Snapshot`] page by
    /// page instead of being held and replayed: those up to `schema_version`, or, without one (a first
    /// start), those finished at or before `start_ts`. Only the later jobs are queued.
    pub async fn init(&mut self, schema_version: i64, start_ts: i64) -> Result<(), SchemaError> {
        let Some(src) = &self.source else { return Ok(()) };
        if !self.snapshot {
            let jobs = src.all_jobs().await?;
            tracing::info!(jobs = jobs.len(), schema_version, "loaded DDL history");
            self.schema.queue_jobs(jobs);
            return self.schema.apply_until(schema_version);
        }
        let mut snap = Snapshot::default();
        let mut later = Vec::new();
        let before_start = |j: &crate::tidb::model::Job| {
            let Some(b) = j.binlog.as_ref() else { return false };
            if schema_version > 0 {
                b.schema_version <= schema_version
            } else {
                b.finished_ts > 0 && b.finished_ts <= start_ts as u64
            }
        };
        src.for_each_page(|page| {
            for job in page {
                if before_start(&job) {
                    snap.add(job)?;
                } else {
                    later.push(job);
                }
            }
            Ok(())
        })
        .await?;
        tracing::info!(jobs = snap.jobs(), version = snap.version(), later = later.len(), "schema snapshot built from the DDL history");
        self.schema.install(snap);
        self.schema.queue_jobs(later);
        self.schema.apply_until(schema_version)
    }

    /// The schema version applied so far (saved with the checkpoint).
    pub fn schema_version(&self) -> i64 {
        self.schema.current_version()
    }

    /// The catalog.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Translates one binlog.
    pub async fn translate(&mut self, b: &Binlog) -> Result<Item, TranslateError> {
        let (start_ts, commit_ts) = (b.start_ts(), b.commit_ts());
        let empty = |v| Item { start_ts, commit_ts, schema_version: v, body: Body::Empty };
        if start_ts == commit_ts {
            return Ok(empty(0));
        }
        let ignored = self.ignore_ts.contains(&commit_ts);
        if b.ddl_job_id() > 0 {
            // An ignored DDL still changes the tracked schema (later rows are encoded with it); it is
            // only not executed downstream.
            return self.ddl(b, ignored).await;
        }
        if ignored {
            tracing::info!(commit_ts, "skipping transaction listed in ignore-txn-commit-ts");
            return Ok(empty(0));
        }
        let pv = PrewriteValue::decode(b.prewrite_value())
            .map_err(|source| TranslateError::PrewriteValue { commit_ts, source })?;
        let version = pv.schema_version();
        if pv.mutations.is_empty() {
            return Ok(empty(version));
        }
        if self.source.is_none() {
            return Err(TranslateError::NoSchemaSource { commit_ts, what: "DML" });
        }
        self.schema.apply_until(version).map_err(|source| TranslateError::Schema { commit_ts, source })?;
        if let Some(channel) = self.loopback
            && self.written_by_channel(&pv, channel, commit_ts, version)?
        {
            tracing::debug!(commit_ts, channel, "skipping a transaction that carries our loopback mark");
            return Ok(empty(version));
        }
        let mut changes = Vec::new();
        for m in &pv.mutations {
            let id = m.table_id();
            if self.schema.is_truncated(id) {
                continue;
            }
            let entry = self.schema.table(id).ok_or(TranslateError::TableNotFound { commit_ts, table_id: id, version })?;
            if entry.info.view.is_some() || self.filter.skip(&entry.schema.schema, &entry.schema.name) {
                continue;
            }
            let (info, table) = (entry.info.clone(), entry.schema.clone());
            let written_with = self.schema.table_at(id, version).cloned();
            let can_append = self.schema.can_append_default(id, version);
            let rows = mutation::decode_mutation_at(&info, written_with.as_deref(), m, can_append);
            let rows = rows.map_err(|source| TranslateError::Row { commit_ts, table: format!("{}.{}", table.schema, table.name), source })?;
            let mut rows: Vec<RowChange> = rows.into_iter().map(convert_change).collect();
            if !self.rules.is_empty() {
                let ignored = [DmlKind::Insert, DmlKind::Update, DmlKind::Delete]
                    .map(|k| self.rules.ignores_dml(&table.schema, &table.name, k));
                if ignored.contains(&true) {
                    rows.retain(|r| !ignored[dml_kind(r) as usize]);
                }
            }
            if !rows.is_empty() {
                let table = self.routed_table(&table).map_err(|source| TranslateError::Route { commit_ts, source })?;
                changes.push(TableChanges { table, rows });
            }
        }
        if changes.is_empty() {
            return Ok(empty(version));
        }
        let ev = &metrics().event;
        for c in &changes {
            for r in &c.rows {
                ev.with_label_values(&[match r {
                    RowChange::Insert(_) => "Insert",
                    RowChange::Update { .. } => "Update",
                    RowChange::Delete(_) => "Delete",
                }])
                .inc();
            }
        }
        Ok(Item { start_ts, commit_ts, schema_version: version, body: Body::Dml(changes) })
    }

    async fn ddl(&mut self, b: &Binlog, ignored: bool) -> Result<Item, TranslateError> {
        let (start_ts, commit_ts, job_id) = (b.start_ts(), b.commit_ts(), b.ddl_job_id());
        let empty = |v| Item { start_ts, commit_ts, schema_version: v, body: Body::Empty };
        let Some(src) = &self.source else { return Err(TranslateError::NoSchemaSource { commit_ts, what: "DDL" }) };
        let job = src.wait_job(job_id, || false).await.map_err(|source| TranslateError::Schema { commit_ts, source })?;
        let version = job.binlog.as_ref().map(|i| i.schema_version).unwrap_or(0);
        if b.ddl_schema_state() == i32::from(schema_state::DELETE_ONLY) {
            if job.job_type == action::DROP_COLUMN {
                self.schema.mark_dropping_column(job.table_id);
            }
            return Ok(empty(version));
        }
        if Schema::skip_job(&job) || version == 0 {
            return Ok(empty(version));
        }
        let renamed_from = if job.job_type == action::RENAME_TABLE { self.schema.table_target(job.table_id) } else { None };
        self.schema.queue_jobs([job.clone()]);
        self.schema.apply_until(version).map_err(|source| TranslateError::Schema { commit_ts, source })?;
        metrics().event.with_label_values(&["DDL"]).inc();
        if ignored {
            tracing::info!(commit_ts, job_id, query = %job.query, "DDL listed in ignore-txn-commit-ts: schema tracked, not executed downstream");
            return Ok(empty(version));
        }
        if job.query.trim_start().to_ascii_lowercase().starts_with("select setval") {
            return Ok(empty(version));
        }
        if job.job_type == action::CREATE_TABLES && matches!(self.db_type, DbType::Mysql | DbType::Tidb) {
            return Ok(empty(version));
        }
        let (schema, table) = match self.schema.ddl_target(version) {
            Some(t) => t.clone(),
            None => (self.schema.db_name(job.schema_id).unwrap_or_default().to_owned(), String::new()),
        };
        if let Some((from_db, from_table)) = &renamed_from
            && self.sync_ddl
            && self.filter.skip(from_db, from_table) != self.filter.skip(&schema, &table)
        {
            // Running it would fail downstream (the source was never replicated) or silently leave a
            // stale table there (the target is not replicated): the operator must decide.
            return Err(TranslateError::RenameAcrossFilter {
                commit_ts,
                from: format!("`{from_db}`.`{from_table}`"),
                to: format!("`{schema}`.`{table}`"),
                query: job.query.clone(),
            });
        }
        if !self.sync_ddl || self.filter.skip(&schema, &table) {
            return Ok(empty(version));
        }
        if self.rules.ignores_ddl(&schema, &table, &job.query) {
            tracing::info!(commit_ts, job_id, query = %job.query, "DDL dropped by a binlog-filter-rule");
            return Ok(empty(version));
        }
        let mut table_after = if table.is_empty() { None } else { self.schema.table(job.table_id).map(|e| e.schema.clone()) };
        let mut query = job.query.clone();
        let (mut schema, mut table) = (schema, table);
        if self.rules.routes() {
            let route = |s: &str, t: &str| self.rules.route(s, t).map_err(|source| TranslateError::Route { commit_ts, source });
            let (to_schema, to_table) = route(&schema, &table)?;
            let from_routed = match &renamed_from {
                Some((s, t)) => route(s, t)? != (s.clone(), t.clone()),
                None => false,
            };
            if (to_schema != schema || to_table != table) || from_routed {
                let named = |s: &str, t: &str| if t.is_empty() { format!("`{s}`") } else { format!("`{s}`.`{t}`") };
                query = crate::rules::rewrite_ddl(&query, &to_schema, &to_table).map_err(|why| TranslateError::RouteDdl {
                    commit_ts,
                    query: job.query.clone(),
                    from: named(&schema, &table),
                    to: named(&to_schema, &to_table),
                    why,
                })?;
                if let Some(t) = table_after.take() {
                    table_after = Some(self.routed_table(&t).map_err(|source| TranslateError::Route { commit_ts, source })?);
                }
                (schema, table) = (to_schema, to_table);
            }
        }
        let schema = if job.job_type == action::CREATE_SCHEMA { String::new() } else { schema };
        Ok(Item { start_ts, commit_ts, schema_version: version, body: Body::Ddl(Ddl { schema, table, query, job_id, table_after }) })
    }

    /// Whether a transaction changes the loopback mark table's row of `channel` (whatever the filters
    /// say about that table, as upstream).
    fn written_by_channel(&self, pv: &PrewriteValue, channel: i64, commit_ts: i64, version: i64) -> Result<bool, TranslateError> {
        for m in &pv.mutations {
            let id = m.table_id();
            let Some(entry) = self.schema.table(id) else { continue };
            if !crate::loopback::is_mark_table(&entry.schema.schema, &entry.schema.name) {
                continue;
            }
            let can_append = self.schema.can_append_default(id, version);
            let rows = mutation::decode_mutation(&entry.info, m, can_append)
                .map_err(|source| TranslateError::Row { commit_ts, table: format!("{}.{}", entry.schema.schema, entry.schema.name), source })?;
            let rows: Vec<RowChange> = rows.into_iter().map(convert_change).collect();
            if crate::loopback::carries_mark(&entry.schema, &rows, channel) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `src` with its route's target names (itself when no rule routes it), cached per table id.
    fn routed_table(&mut self, src: &Arc<TableSchema>) -> Result<Arc<TableSchema>, AmbiguousRoute> {
        if !self.rules.routes() {
            return Ok(src.clone());
        }
        if let Some((s, r)) = self.routed.get(&src.id)
            && Arc::ptr_eq(s, src)
        {
            return Ok(r.clone());
        }
        let (schema, name) = self.rules.route(&src.schema, &src.name)?;
        let routed = if schema == src.schema && name == src.name {
            src.clone()
        } else {
            Arc::new(TableSchema { schema, name, ..(**src).clone() })
        };
        self.routed.insert(src.id, (src.clone(), routed.clone()));
        Ok(routed)
    }
}

/// Why a translator cannot be built from `[syncer]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranslatorConfigError {
    /// A do/ignore pattern is not a regular expression.
    #[error("a replicate-do/ignore pattern is not a valid regular expression: {0}")]
    Filter(#[from] regex::Error),
    /// A binlog-filter or table-migrate rule is wrong.
    #[error(transparent)]
    Rules(#[from] crate::rules::RuleError),
}

fn dml_kind(r: &RowChange) -> DmlKind {
    match r {
        RowChange::Insert(_) => DmlKind::Insert,
        RowChange::Update { .. } => DmlKind::Update,
        RowChange::Delete(_) => DmlKind::Delete,
    }
}

/// A decoded row change over the sink-neutral [`Value`]s.
fn convert_change(c: mutation::RowChange) -> RowChange {
    c.map(|r| -> Row { r.into_iter().map(|v| v.map(convert)).collect() })
}

/// Converts a decoded TiDB value into the sink-neutral [`Value`].
pub fn convert(v: TValue) -> Value {
    let time = |time: crate::tidb::Time, tp: u8, fsp: u8| Value::Time(MysqlTime { time, tp, fsp });
    use crate::txn::mysql_type as mt;
    match v {
        TValue::Null => Value::Null,
        TValue::Int(i) | TValue::Year(i) => Value::Int(i),
        TValue::Uint(u) => Value::Uint(u),
        TValue::Float32(f) => Value::Float(f64::from(f)),
        TValue::Float64(f) => Value::Float(f),
        TValue::Decimal(d) => Value::Decimal(d.to_string()),
        TValue::Bytes(b) => Value::Bytes(b),
        TValue::Date(t) => time(t, mt::DATE, 0),
        TValue::DateTime(t, fsp) => time(t, mt::DATETIME, fsp),
        TValue::Timestamp(t, fsp) => time(t, mt::TIMESTAMP, fsp),
        TValue::Duration(d) => Value::Duration { nanos: d.nanos, fsp: d.fsp },
        TValue::Enum(index, name) => Value::Enum { index, name },
        TValue::Set(bits, names) => Value::Set { bits, names },
        TValue::Bit(b) => Value::Bit(b.iter().rev().take(8).rev().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))),
        TValue::Json(j) => Value::Json(j.to_text()),
    }
}
