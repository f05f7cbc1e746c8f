//! The stand-in's schema catalog: databases, tables and the DDL job history, with ids and schema
//! versions handed out the way TiDB does (one global id sequence for databases, tables and jobs; one
//! schema version per job). The history is also what the status API serves.

use std::collections::BTreeMap;

use drainer::tidb::model::{
    CIStr, ColumnInfo, DBInfo, FieldType, HistoryInfo, IndexColumn, IndexInfo, Job, TableInfo, action, flag,
    job_state, schema_state,
};

use super::tables::{self, Kind};

/// A DDL the stand-in can run.
#[derive(Debug, Clone)]
pub enum DdlOp {
    /// CREATE DATABASE.
    CreateSchema {
        /// Database.
        db: String,
    },
    /// DROP DATABASE.
    DropSchema {
        /// Database.
        db: String,
    },
    /// CREATE TABLE of a kind.
    CreateTable {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// Shape.
        kind: Kind,
    },
    /// DROP TABLE.
    DropTable {
        /// Database.
        db: String,
        /// Table.
        table: String,
    },
    /// TRUNCATE TABLE (new table id).
    TruncateTable {
        /// Database.
        db: String,
        /// Table.
        table: String,
    },
    /// RENAME TABLE within a database.
    RenameTable {
        /// Database.
        db: String,
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// ADD COLUMN `name INT NULL DEFAULT 7`.
    AddColumn {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// DROP COLUMN.
    DropColumn {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// ADD INDEX on one column.
    AddIndex {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// Index.
        index: String,
        /// Column.
        column: String,
    },
    /// DROP INDEX.
    DropIndex {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// Index.
        index: String,
    },
}

/// Why a DDL cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Unknown database.
    #[error("unknown database {0}")]
    UnknownDb(String),
    /// Unknown table.
    #[error("unknown table {0}.{1}")]
    UnknownTable(String, String),
    /// Already there.
    #[error("{0} already exists")]
    Exists(String),
    /// Unknown column or index.
    #[error("unknown column or index {0}")]
    UnknownObject(String),
}

/// The catalog.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    next_id: i64,
    version: i64,
    dbs: BTreeMap<i64, DBInfo>,
    tables: BTreeMap<i64, (i64, TableInfo)>,
    history: BTreeMap<i64, Job>,
}

/// First id handed out on an empty catalog (TiDB's system objects take the low ids).
pub const FIRST_ID: i64 = 100;

fn q(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Catalog {
        Catalog { next_id: FIRST_ID, ..Catalog::default() }
    }

    /// Rebuilds the catalog from a stored history (in any order).
    pub fn replay(jobs: Vec<Job>) -> Catalog {
        let mut c = Catalog::new();
        let mut jobs = jobs;
        jobs.sort_by_key(|j| (j.schema_version(), j.id));
        for j in jobs {
            c.apply(&j);
        }
        c
    }

    /// The current schema version.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Every database.
    pub fn dbs(&self) -> impl Iterator<Item = &DBInfo> {
        self.dbs.values()
    }

    /// A database by (case-insensitive) name.
    pub fn db_by_name(&self, name: &str) -> Option<&DBInfo> {
        let l = name.to_lowercase();
        self.dbs.values().find(|d| d.db_name.l == l)
    }

    /// The tables of database `db_id`, by id.
    pub fn tables_in(&self, db_id: i64) -> Vec<&TableInfo> {
        self.tables.values().filter(|(d, _)| *d == db_id).map(|(_, t)| t).collect()
    }

    /// A table by database and table name (case-insensitive).
    pub fn table_by_name(&self, db: &str, table: &str) -> Option<&TableInfo> {
        let d = self.db_by_name(db)?;
        let l = table.to_lowercase();
        self.tables_in(d.id).into_iter().find(|t| t.name.l == l)
    }

    /// A table and its database by table id (or partition id).
    pub fn table_by_id(&self, id: i64) -> Option<(&DBInfo, &TableInfo)> {
        let (db, t) = self.tables.get(&id).or_else(|| self.tables.values().find(|(_, t)| t.owns_physical_id(id)))?;
        Some((self.dbs.get(db)?, t))
    }

    /// History jobs, newest first, with id <= `start_job_id` (all if None), at most `limit`.
    pub fn history_desc(&self, start_job_id: Option<i64>, limit: usize) -> Vec<&Job> {
        let top = start_job_id.unwrap_or(i64::MAX);
        self.history.range(..=top).rev().take(limit).map(|(_, j)| j).collect()
    }

    fn alloc(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn db(&self, name: &str) -> Result<&DBInfo, PlanError> {
        self.db_by_name(name).ok_or_else(|| PlanError::UnknownDb(name.into()))
    }

    fn table(&self, db: &str, table: &str) -> Result<(i64, TableInfo), PlanError> {
        let d = self.db(db)?;
        let t = self.table_by_name(db, table).ok_or_else(|| PlanError::UnknownTable(db.into(), table.into()))?;
        Ok((d.id, t.clone()))
    }

    /// Plans `op`: the job (id and schema version assigned, `FinishedTS` still 0) with its query.
    /// Nothing changes until [`Catalog::apply`].
    pub fn plan(&mut self, op: &DdlOp, start_ts: u64) -> Result<Job, PlanError> {
        let mut job = Job {
            state: job_state::SYNCED,
            schema_state: schema_state::PUBLIC,
            start_ts,
            real_start_ts: start_ts,
            charset: "utf8mb4".into(),
            collate: "utf8mb4_bin".into(),
            raw_args: serde_json::Value::Null,
            ..Job::default()
        };
        let mut info = HistoryInfo::default();
        match op {
            DdlOp::CreateSchema { db } => {
                if self.db_by_name(db).is_some() {
                    return Err(PlanError::Exists(db.clone()));
                }
                let d = DBInfo {
                    id: self.alloc(),
                    db_name: CIStr::new(db),
                    charset: "utf8mb4".into(),
                    collate: "utf8mb4_bin".into(),
                    ..DBInfo::default()
                };
                job.job_type = action::CREATE_SCHEMA;
                job.schema_id = d.id;
                job.schema_name = db.clone();
                job.query = format!("CREATE DATABASE {} DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", q(db));
                info.db_info = Some(d);
            }
            DdlOp::DropSchema { db } => {
                let d = self.db(db)?.clone();
                job.job_type = action::DROP_SCHEMA;
                job.schema_id = d.id;
                job.schema_name = db.clone();
                job.schema_state = schema_state::NONE;
                job.query = format!("DROP DATABASE {}", q(db));
                info.db_info = Some(DBInfo { state: schema_state::NONE, ..d });
            }
            DdlOp::CreateTable { db, table, kind } => {
                let d = self.db(db)?.id;
                if self.table_by_name(db, table).is_some() {
                    return Err(PlanError::Exists(format!("{db}.{table}")));
                }
                let id = self.alloc();
                job.job_type = action::CREATE_TABLE;
                job.schema_id = d;
                job.table_id = id;
                job.schema_name = db.clone();
                job.table_name = table.clone();
                job.query = tables::create_sql(db, table, *kind);
                info.table_info = Some(tables::table_info(id, table, *kind));
            }
            DdlOp::DropTable { db, table } => {
                let (d, t) = self.table(db, table)?;
                job.job_type = action::DROP_TABLE;
                job.schema_id = d;
                job.table_id = t.id;
                job.schema_name = db.clone();
                job.table_name = table.clone();
                job.schema_state = schema_state::NONE;
                job.query = format!("DROP TABLE {}.{}", q(db), q(table));
                info.table_info = Some(TableInfo { state: schema_state::NONE, ..t });
            }
            DdlOp::TruncateTable { db, table } => {
                let (d, t) = self.table(db, table)?;
                let new_id = self.alloc();
                job.job_type = action::TRUNCATE_TABLE;
                job.schema_id = d;
                job.table_id = t.id;
                job.schema_name = db.clone();
                job.table_name = table.clone();
                job.query = format!("TRUNCATE TABLE {}.{}", q(db), q(table));
                info.table_info = Some(TableInfo { id: new_id, ..t });
            }
            DdlOp::RenameTable { db, from, to } => {
                let (d, t) = self.table(db, from)?;
                if self.table_by_name(db, to).is_some() {
                    return Err(PlanError::Exists(format!("{db}.{to}")));
                }
                job.job_type = action::RENAME_TABLE;
                job.schema_id = d;
                job.table_id = t.id;
                job.schema_name = db.clone();
                job.table_name = to.clone();
                job.query = format!("RENAME TABLE {}.{} TO {}.{}", q(db), q(from), q(db), q(to));
                info.table_info = Some(TableInfo { name: CIStr::new(to), ..t });
            }
            DdlOp::AddColumn { db, table, column } => {
                let (d, mut t) = self.table(db, table)?;
                if t.cols.iter().any(|c| c.name.l == column.to_lowercase()) {
                    return Err(PlanError::Exists(column.clone()));
                }
                t.max_col_id += 1;
                let seven = serde_json::Value::String("7".into());
                t.cols.push(ColumnInfo {
                    id: t.max_col_id,
                    name: CIStr::new(column),
                    offset: t.cols.len() as i64,
                    origin_default: seven.clone(),
                    default: seven,
                    field_type: FieldType::new(drainer::tidb::model::tp::LONG, 0, 11, 0),
                    ..ColumnInfo::default()
                });
                job.job_type = action::ADD_COLUMN;
                job.schema_id = d;
                job.table_id = t.id;
                job.schema_name = db.clone();
                job.table_name = table.clone();
                job.query = format!("ALTER TABLE {}.{} ADD COLUMN {} INT NULL DEFAULT 7", q(db), q(table), q(column));
                info.table_info = Some(t);
            }
            DdlOp::DropColumn { db, table, column } => {
                let (d, mut t) = self.table(db, table)?;
                let l = column.to_lowercase();
                let before = t.cols.len();
                t.cols.retain(|c| c.name.l != l);
                if t.cols.len() == before {
                    return Err(PlanError::UnknownObject(column.clone()));
                }
                for (i, c) in t.cols.iter_mut().enumerate() {
                    c.offset = i as i64;
                }
                if let Some(idx) = t.index_info.as_mut() {
                    idx.retain(|i| i.idx_cols.iter().all(|c| c.name.l != l));
                    for i in idx.iter_mut() {
                        for c in &mut i.idx_cols {
                            c.offset = t.cols.iter().position(|x| x.name.l == c.name.l).unwrap_or(0) as i64;
                        }
                    }
                }
                job.job_type = action::DROP_COLUMN;
                job.schema_id = d;
                job.table_id = t.id;
                job.schema_name = db.clone();
                job.table_name = table.clone();
                job.schema_state = schema_state::NONE;
                job.query = format!("ALTER TABLE {}.{} DROP COLUMN {}", q(db), q(table), q(column));
                info.table_info = Some(t);
            }
            DdlOp::AddIndex { db, table, index, column } => {
                let (d, mut t) = self.table(db, table)?;
                let l = column.to_lowercase();
                let offset = t.cols.iter().position(|c| c.name.l == l).ok_or_else(|| PlanError::UnknownObject(column.clone()))?;
                if t.indexes().iter().any(|i| i.idx_name.l == index.to_lowercase()) {
                    return Err(PlanError::Exists(index.clone()));
                }
                t.max_idx_id += 1;
                let c = &mut t.cols[offset];
                if c.field_type.flag & (flag::PRI_KEY | flag::UNIQUE_KEY) == 0 {
                    c.field_type.flag |= flag::MULTIPLE_KEY;
                }
                let ii = IndexInfo {
                    id: t.max_idx_id,
                    idx_name: CIStr::new(index),
                    idx_cols: vec![IndexColumn { name: CIStr::new(column), offset: offset as i64, length: -1 }],
                    ..IndexInfo::default()
                };
                t.index_info.get_or_insert_with(Vec::new).push(ii);
                job.job_type = action::ADD_INDEX;
                job.schema_id = d;
                job.table_id = t.id;
                job.schema_name = db.clone();
                job.table_name = table.clone();
                job.query = format!("ALTER TABLE {}.{} ADD INDEX {} ({})", q(db), q(table), q(index), q(column));
                info.table_info = Some(t);
            }
            DdlOp::DropIndex { db, table, index } => {
                let (d, mut t) = self.table(db, table)?;
                let l = index.to_lowercase();
                let idx = t.index_info.get_or_insert_with(Vec::new);
                let Some(pos) = idx.iter().position(|i| i.idx_name.l == l) else {
                    return Err(PlanError::UnknownObject(index.clone()));
                };
                let removed = idx.remove(pos);
                if idx.is_empty() {
                    t.index_info = None;
                }
                for ic in &removed.idx_cols {
                    let still = t.indexes().iter().any(|i| i.idx_cols.first().is_some_and(|c| c.name.l == ic.name.l));
                    if !still && let Some(c) = t.cols.iter_mut().find(|c| c.name.l == ic.name.l) {
                        c.field_type.flag &= !flag::MULTIPLE_KEY;
                    }
                }
                job.job_type = action::DROP_INDEX;
                job.schema_id = d;
                job.table_id = t.id;
                job.schema_name = db.clone();
                job.table_name = table.clone();
                job.schema_state = schema_state::NONE;
                job.query = format!("ALTER TABLE {}.{} DROP INDEX {}", q(db), q(table), q(index));
                info.table_info = Some(t);
            }
        }
        job.id = self.alloc();
        info.schema_version = self.version + 1;
        job.binlog = Some(info);
        Ok(job)
    }

    /// Applies a finished job (live, or from the stored history) as drainer would.
    pub fn apply(&mut self, job: &Job) {
        let Some(info) = job.binlog.as_ref() else { return };
        match job.job_type {
            action::CREATE_SCHEMA => {
                if let Some(d) = &info.db_info {
                    self.dbs.insert(d.id, d.clone());
                }
            }
            action::DROP_SCHEMA => {
                self.dbs.remove(&job.schema_id);
                self.tables.retain(|_, (db, _)| *db != job.schema_id);
            }
            action::DROP_TABLE => {
                self.tables.remove(&job.table_id);
            }
            action::TRUNCATE_TABLE | action::RENAME_TABLE => {
                self.tables.remove(&job.table_id);
                if let Some(t) = &info.table_info {
                    self.tables.insert(t.id, (job.schema_id, t.clone()));
                }
            }
            _ => {
                if let Some(t) = &info.table_info {
                    self.tables.insert(t.id, (job.schema_id, t.clone()));
                }
            }
        }
        let max_table_id = info.table_info.as_ref().map_or(0, |t| t.id);
        let max_db_id = info.db_info.as_ref().map_or(0, |d| d.id);
        self.next_id = self.next_id.max(job.id.max(max_table_id).max(max_db_id) + 1);
        self.version = self.version.max(info.schema_version);
        self.history.insert(job.id, job.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &mut Catalog, op: DdlOp) -> Job {
        let j = c.plan(&op, 1).unwrap();
        c.apply(&j);
        j
    }

    #[test]
    fn ids_and_versions_follow_tidb() {
        let mut c = Catalog::new();
        let j1 = run(&mut c, DdlOp::CreateSchema { db: "s".into() });
        assert_eq!((j1.schema_id, j1.id, j1.schema_version()), (100, 101, 1));
        let j2 = run(&mut c, DdlOp::CreateTable { db: "s".into(), table: "t_types_0".into(), kind: Kind::Types });
        assert_eq!((j2.table_id, j2.id, j2.schema_version()), (102, 103, 2));
        let j3 = run(&mut c, DdlOp::TruncateTable { db: "s".into(), table: "t_types_0".into() });
        assert_eq!(j3.table_id, 102);
        let new_id = j3.binlog.as_ref().unwrap().table_info.as_ref().unwrap().id;
        assert_eq!(new_id, 104);
        assert_eq!(c.table_by_name("S", "T_TYPES_0").unwrap().id, 104);
        let j4 = run(&mut c, DdlOp::AddColumn { db: "s".into(), table: "t_types_0".into(), column: "c_new".into() });
        let t = j4.binlog.as_ref().unwrap().table_info.as_ref().unwrap();
        assert_eq!(t.cols.last().unwrap().origin_default, serde_json::Value::String("7".into()));
        assert_eq!(t.max_col_id, t.cols.len() as i64);
        run(&mut c, DdlOp::RenameTable { db: "s".into(), from: "t_types_0".into(), to: "t_types_9".into() });
        assert!(c.table_by_name("s", "t_types_0").is_none());
        run(&mut c, DdlOp::AddIndex { db: "s".into(), table: "t_types_9".into(), index: "i1".into(), column: "c_int".into() });
        run(&mut c, DdlOp::DropIndex { db: "s".into(), table: "t_types_9".into(), index: "i1".into() });
        run(&mut c, DdlOp::DropColumn { db: "s".into(), table: "t_types_9".into(), column: "c_new".into() });
        assert_eq!(c.version(), 8);
        let replayed = Catalog::replay(c.history_desc(None, 100).into_iter().cloned().collect());
        assert_eq!(replayed.version(), 8);
        assert_eq!(replayed.table_by_name("s", "t_types_9"), c.table_by_name("s", "t_types_9"));
        assert_eq!(replayed.next_id, c.next_id);
        run(&mut c, DdlOp::DropSchema { db: "s".into() });
        assert!(c.table_by_name("s", "t_types_9").is_none());
        assert_eq!(c.history_desc(Some(103), 2).iter().map(|j| j.id).collect::<Vec<_>>(), [103, 101]);
    }
}
