//! Serde models of TiDB's schema JSON (`model.Job`, `TableInfo`, `ColumnInfo`, `IndexInfo`, `DBInfo`,
//! `FieldType`) as the status API (`/ddl/history`, `/schema`) and the meta store hold it, plus the
//! MySQL type codes, column flags, DDL action types and job/schema states.
//!
//! Keys and their order follow TiDB (master layout, `shared/spec/tidb-model.md`): serializing gives the
//! JSON a TiDB of that version prints. Decoding is lenient like Go: unknown keys are ignored and every
//! missing key takes its default, so older and newer TiDB versions parse.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as JsonValue;

/// MySQL column type codes (`FieldType.Tp`).
pub mod tp {
    /// Old DECIMAL / unspecified.
    pub const DECIMAL: u8 = 0;
    /// TINYINT, BOOL.
    pub const TINY: u8 = 1;
    /// SMALLINT.
    pub const SHORT: u8 = 2;
    /// INT.
    pub const LONG: u8 = 3;
    /// FLOAT.
    pub const FLOAT: u8 = 4;
    /// DOUBLE.
    pub const DOUBLE: u8 = 5;
    /// NULL.
    pub const NULL: u8 = 6;
    /// TIMESTAMP.
    pub const TIMESTAMP: u8 = 7;
    /// BIGINT.
    pub const LONGLONG: u8 = 8;
    /// MEDIUMINT.
    pub const INT24: u8 = 9;
    /// DATE.
    pub const DATE: u8 = 10;
    /// TIME.
    pub const DURATION: u8 = 11;
    /// DATETIME.
    pub const DATETIME: u8 = 12;
    /// YEAR.
    pub const YEAR: u8 = 13;
    /// NEWDATE (internal).
    pub const NEWDATE: u8 = 14;
    /// VARCHAR, VARBINARY.
    pub const VARCHAR: u8 = 15;
    /// BIT.
    pub const BIT: u8 = 16;
    /// TiDB VECTOR(FLOAT32).
    pub const TIDB_VECTOR_FLOAT32: u8 = 0xe1;
    /// JSON.
    pub const JSON: u8 = 0xf5;
    /// DECIMAL.
    pub const NEWDECIMAL: u8 = 0xf6;
    /// ENUM.
    pub const ENUM: u8 = 0xf7;
    /// SET.
    pub const SET: u8 = 0xf8;
    /// TINYTEXT, TINYBLOB.
    pub const TINY_BLOB: u8 = 0xf9;
    /// MEDIUMTEXT, MEDIUMBLOB.
    pub const MEDIUM_BLOB: u8 = 0xfa;
    /// LONGTEXT, LONGBLOB.
    pub const LONG_BLOB: u8 = 0xfb;
    /// TEXT, BLOB.
    pub const BLOB: u8 = 0xfc;
    /// VAR_STRING.
    pub const VAR_STRING: u8 = 0xfd;
    /// CHAR, BINARY.
    pub const STRING: u8 = 0xfe;
    /// GEOMETRY.
    pub const GEOMETRY: u8 = 0xff;
}

/// Column flag bits (`FieldType.Flag`).
pub mod flag {
    /// NOT NULL.
    pub const NOT_NULL: u64 = 1;
    /// Part of the primary key.
    pub const PRI_KEY: u64 = 2;
    /// The only column of a unique index.
    pub const UNIQUE_KEY: u64 = 4;
    /// First column of a non-unique index.
    pub const MULTIPLE_KEY: u64 = 8;
    /// BLOB/TEXT.
    pub const BLOB: u64 = 16;
    /// UNSIGNED.
    pub const UNSIGNED: u64 = 32;
    /// ZEROFILL.
    pub const ZEROFILL: u64 = 64;
    /// Binary charset.
    pub const BINARY: u64 = 128;
    /// ENUM.
    pub const ENUM: u64 = 256;
    /// AUTO_INCREMENT.
    pub const AUTO_INCREMENT: u64 = 512;
    /// TIMESTAMP.
    pub const TIMESTAMP: u64 = 1024;
    /// SET.
    pub const SET: u64 = 2048;
    /// NOT NULL without a default.
    pub const NO_DEFAULT_VALUE: u64 = 4096;
    /// ON UPDATE NOW().
    pub const ON_UPDATE_NOW: u64 = 8192;
    /// Part of a key.
    pub const PART_KEY: u64 = 16384;
    /// Numeric.
    pub const NUM: u64 = 32768;
}

/// DDL job action types (`model.ActionType`).
pub mod action {
    /// CREATE DATABASE.
    pub const CREATE_SCHEMA: u8 = 1;
    /// DROP DATABASE.
    pub const DROP_SCHEMA: u8 = 2;
    /// CREATE TABLE.
    pub const CREATE_TABLE: u8 = 3;
    /// DROP TABLE.
    pub const DROP_TABLE: u8 = 4;
    /// ADD COLUMN.
    pub const ADD_COLUMN: u8 = 5;
    /// DROP COLUMN.
    pub const DROP_COLUMN: u8 = 6;
    /// ADD INDEX.
    pub const ADD_INDEX: u8 = 7;
    /// DROP INDEX.
    pub const DROP_INDEX: u8 = 8;
    /// TRUNCATE TABLE.
    pub const TRUNCATE_TABLE: u8 = 11;
    /// MODIFY COLUMN.
    pub const MODIFY_COLUMN: u8 = 12;
    /// RENAME TABLE.
    pub const RENAME_TABLE: u8 = 14;
    /// CREATE VIEW.
    pub const CREATE_VIEW: u8 = 21;
    /// DROP VIEW.
    pub const DROP_VIEW: u8 = 24;
    /// RECOVER TABLE.
    pub const RECOVER_TABLE: u8 = 25;
    /// ALTER DATABASE charset/collate.
    pub const MODIFY_SCHEMA_CHARSET_AND_COLLATE: u8 = 26;
    /// UpdateTiFlashReplicaStatus.
    pub const UPDATE_TIFLASH_REPLICA_STATUS: u8 = 31;
    /// ADD PRIMARY KEY.
    pub const ADD_PRIMARY_KEY: u8 = 32;
    /// DROP PRIMARY KEY.
    pub const DROP_PRIMARY_KEY: u8 = 33;
    /// CREATE SEQUENCE.
    pub const CREATE_SEQUENCE: u8 = 34;
    /// DROP SEQUENCE.
    pub const DROP_SEQUENCE: u8 = 36;
    /// RENAME TABLES (several).
    pub const RENAME_TABLES: u8 = 47;
    /// CREATE TABLES (batch).
    pub const CREATE_TABLES: u8 = 60;
    /// Multi-schema change.
    pub const MULTI_SCHEMA_CHANGE: u8 = 61;
}

/// DDL job states (`model.JobState`).
pub mod job_state {
    /// None.
    pub const NONE: i32 = 0;
    /// Running.
    pub const RUNNING: i32 = 1;
    /// Rolling back.
    pub const ROLLINGBACK: i32 = 2;
    /// Rollback done.
    pub const ROLLBACK_DONE: i32 = 3;
    /// Done.
    pub const DONE: i32 = 4;
    /// Cancelled.
    pub const CANCELLED: i32 = 5;
    /// Synced (normal for history jobs).
    pub const SYNCED: i32 = 6;
}

/// Schema states (`model.SchemaState`).
pub mod schema_state {
    /// None.
    pub const NONE: u8 = 0;
    /// Delete only.
    pub const DELETE_ONLY: u8 = 1;
    /// Write only.
    pub const WRITE_ONLY: u8 = 2;
    /// Write reorganization.
    pub const WRITE_REORGANIZATION: u8 = 3;
    /// Delete reorganization.
    pub const DELETE_REORGANIZATION: u8 = 4;
    /// Public.
    pub const PUBLIC: u8 = 5;
}

/// Column id of the implicit `_tidb_rowid` handle (`model.ExtraHandleID`).
pub const EXTRA_HANDLE_ID: i64 = -1;

/// A case-insensitive name: `{"O":"Orig","L":"orig"}`; a bare string also decodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct CIStr {
    /// As written.
    #[serde(rename = "O")]
    pub o: String,
    /// Lower-cased.
    #[serde(rename = "L")]
    pub l: String,
}

impl CIStr {
    /// A name with its lower-cased form.
    pub fn new(s: &str) -> CIStr {
        CIStr { o: s.to_owned(), l: s.to_lowercase() }
    }
}

impl<'de> Deserialize<'de> for CIStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Bare(String),
            Obj {
                #[serde(rename = "O", default)]
                o: String,
                #[serde(rename = "L", default)]
                l: Option<String>,
            },
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Bare(s) => CIStr::new(&s),
            Repr::Obj { o, l } => {
                let l = l.unwrap_or_else(|| o.to_lowercase());
                CIStr { o, l }
            }
        })
    }
}

/// A column type (`types.FieldType`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FieldType {
    /// MySQL type code ([`tp`]).
    #[serde(rename = "Tp")]
    pub tp: u8,
    /// Flag bits ([`flag`]).
    #[serde(rename = "Flag")]
    pub flag: u64,
    /// Display length / precision; -1 unspecified.
    #[serde(rename = "Flen")]
    pub flen: i64,
    /// Scale / fsp; -1 unspecified.
    #[serde(rename = "Decimal")]
    pub decimal: i64,
    /// Charset (`binary` for non-strings).
    #[serde(rename = "Charset")]
    pub charset: String,
    /// Collation.
    #[serde(rename = "Collate")]
    pub collate: String,
    /// ENUM/SET elements.
    #[serde(rename = "Elems")]
    pub elems: Option<Vec<String>>,
    /// Which elements were binary literals.
    #[serde(rename = "ElemsIsBinaryLit")]
    pub elems_is_binary_lit: Option<Vec<bool>>,
    /// Multi-valued index array type.
    #[serde(rename = "Array")]
    pub array: bool,
}

impl Default for FieldType {
    fn default() -> Self {
        FieldType {
            tp: 0,
            flag: 0,
            flen: -1,
            decimal: -1,
            charset: String::new(),
            collate: String::new(),
            elems: None,
            elems_is_binary_lit: None,
            array: false,
        }
    }
}

impl FieldType {
    /// A type with charset/collate `binary` and the given length and scale.
    pub fn new(tp: u8, flag: u64, flen: i64, decimal: i64) -> FieldType {
        FieldType { tp, flag, flen, decimal, charset: "binary".into(), collate: "binary".into(), ..FieldType::default() }
    }

    /// Whether UNSIGNED is set.
    pub fn is_unsigned(&self) -> bool {
        self.flag & flag::UNSIGNED != 0
    }

    /// Whether NOT NULL is set.
    pub fn is_not_null(&self) -> bool {
        self.flag & flag::NOT_NULL != 0
    }

    /// Whether PRI KEY is set.
    pub fn is_pri_key(&self) -> bool {
        self.flag & flag::PRI_KEY != 0
    }

    /// ENUM/SET elements (empty if none).
    pub fn elems(&self) -> &[String] {
        self.elems.as_deref().unwrap_or(&[])
    }
}

/// A column (`model.ColumnInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ColumnInfo {
    /// Column id: the key of its value in rows.
    pub id: i64,
    /// Name.
    pub name: CIStr,
    /// Position in the table.
    pub offset: i64,
    /// Default for rows written before the column was added (string or null).
    pub origin_default: JsonValue,
    /// BIT origin default, base64.
    pub origin_default_bit: Option<String>,
    /// Default (string or null).
    pub default: JsonValue,
    /// BIT default, base64.
    pub default_bit: Option<String>,
    /// `default` is an expression text.
    pub default_is_expr: bool,
    /// Generation expression; non-empty for generated columns.
    pub generated_expr_string: String,
    /// Stored generated column.
    pub generated_stored: bool,
    /// Columns a generated column depends on.
    pub dependences: Option<serde_json::Map<String, JsonValue>>,
    /// The type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Schema state ([`schema_state`]).
    pub state: u8,
    /// Comment.
    pub comment: String,
    /// Hidden (expression index helper).
    pub hidden: bool,
    /// Modify-column bookkeeping.
    pub change_state_info: Option<JsonValue>,
    /// ColumnInfo version (2 now).
    pub version: u64,
}

impl Default for ColumnInfo {
    fn default() -> Self {
        ColumnInfo {
            id: 0,
            name: CIStr::default(),
            offset: 0,
            origin_default: JsonValue::Null,
            origin_default_bit: None,
            default: JsonValue::Null,
            default_bit: None,
            default_is_expr: false,
            generated_expr_string: String::new(),
            generated_stored: false,
            dependences: None,
            field_type: FieldType::default(),
            state: schema_state::PUBLIC,
            comment: String::new(),
            hidden: false,
            change_state_info: None,
            version: 2,
        }
    }
}

impl ColumnInfo {
    /// Whether this is a generated column.
    pub fn is_generated(&self) -> bool {
        !self.generated_expr_string.is_empty()
    }

    /// Whether this is a virtual (not stored) generated column, which rows never carry.
    pub fn is_virtual_generated(&self) -> bool {
        self.is_generated() && !self.generated_stored
    }
}

/// One column of an index.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexColumn {
    /// Column name.
    pub name: CIStr,
    /// Offset of the column in `TableInfo.cols`.
    pub offset: i64,
    /// Prefix length, -1 for the whole column.
    pub length: i64,
}

/// An index (`model.IndexInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexInfo {
    /// Index id.
    pub id: i64,
    /// Name (`PRIMARY` for the primary key).
    pub idx_name: CIStr,
    /// Table name (often empty).
    pub tbl_name: CIStr,
    /// Columns.
    pub idx_cols: Vec<IndexColumn>,
    /// Schema state.
    pub state: u8,
    /// Backfill state.
    pub backfill_state: u8,
    /// Comment.
    pub comment: String,
    /// 1 BTREE, 2 HASH...
    pub index_type: i64,
    /// UNIQUE.
    pub is_unique: bool,
    /// PRIMARY KEY.
    pub is_primary: bool,
    /// INVISIBLE.
    pub is_invisible: bool,
    /// Global index of a partitioned table.
    pub is_global: bool,
    /// Multi-valued index.
    pub mv_index: bool,
    /// Vector index parameters.
    pub vector_index: Option<JsonValue>,
}

impl Default for IndexInfo {
    fn default() -> Self {
        IndexInfo {
            id: 0,
            idx_name: CIStr::default(),
            tbl_name: CIStr::default(),
            idx_cols: Vec::new(),
            state: schema_state::PUBLIC,
            backfill_state: 0,
            comment: String::new(),
            index_type: 1,
            is_unique: false,
            is_primary: false,
            is_invisible: false,
            is_global: false,
            mv_index: false,
            vector_index: None,
        }
    }
}

/// One partition of a partitioned table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PartitionDefinition {
    /// Physical id: rows of this partition carry it as their table id.
    pub id: i64,
    /// Name.
    pub name: CIStr,
    /// RANGE bounds.
    pub less_than: Option<Vec<String>>,
    /// LIST values.
    pub in_values: Option<Vec<Vec<String>>>,
}

/// Partitioning of a table (`model.PartitionInfo`, the keys a decoder needs).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PartitionInfo {
    /// 1 Range, 2 Hash, 3 List, 4 Key.
    #[serde(rename = "type")]
    pub part_type: i64,
    /// Partition expression.
    pub expr: String,
    /// Partition columns.
    pub columns: Option<Vec<CIStr>>,
    /// Enabled.
    pub enable: bool,
    /// Partitions.
    pub definitions: Vec<PartitionDefinition>,
    /// Number of partitions.
    pub num: u64,
}

/// A table (`model.TableInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TableInfo {
    /// Table id (partitions have their own, see [`PartitionInfo`]).
    pub id: i64,
    /// Name.
    pub name: CIStr,
    /// Charset.
    pub charset: String,
    /// Collation.
    pub collate: String,
    /// All columns, including non-public ones.
    pub cols: Vec<ColumnInfo>,
    /// Indexes (no PRIMARY entry when `pk_is_handle`).
    pub index_info: Option<Vec<IndexInfo>>,
    /// Check constraints.
    pub constraint_info: Option<JsonValue>,
    /// Foreign keys.
    pub fk_info: Option<JsonValue>,
    /// Schema state.
    pub state: u8,
    /// A single integer PK is the row handle and is not stored in row values.
    pub pk_is_handle: bool,
    /// Clustered non-integer primary key.
    pub is_common_handle: bool,
    /// Common handle version.
    pub common_handle_version: u16,
    /// Comment.
    pub comment: String,
    /// Auto-increment base.
    pub auto_inc_id: i64,
    /// AUTO_ID_CACHE.
    pub auto_id_cache: i64,
    /// Auto-random base.
    pub auto_rand_id: i64,
    /// Largest column id ever used.
    pub max_col_id: i64,
    /// Largest index id ever used.
    pub max_idx_id: i64,
    /// Largest foreign key id.
    pub max_fk_id: i64,
    /// Largest constraint id.
    pub max_cst_id: i64,
    /// TSO of the last change.
    pub update_timestamp: u64,
    /// SHARD_ROW_ID_BITS (untagged Go field).
    #[serde(rename = "ShardRowIDBits")]
    pub shard_row_id_bits: u64,
    /// Max shard bits.
    pub max_shard_row_id_bits: u64,
    /// AUTO_RANDOM bits.
    pub auto_random_bits: u64,
    /// AUTO_RANDOM range bits.
    pub auto_random_range_bits: u64,
    /// PRE_SPLIT_REGIONS.
    pub pre_split_regions: u64,
    /// Partitioning.
    pub partition: Option<PartitionInfo>,
    /// Compression.
    pub compression: String,
    /// View definition; such tables carry no rows.
    pub view: Option<JsonValue>,
    /// Sequence definition.
    pub sequence: Option<JsonValue>,
    /// Table lock (capitalised key).
    #[serde(rename = "Lock")]
    pub lock: Option<JsonValue>,
    /// TableInfo version (5 now).
    pub version: u16,
    /// TiFlash replica.
    pub tiflash_replica: Option<JsonValue>,
    /// Columnar.
    pub is_columnar: bool,
    /// Temporary table type.
    pub temp_table_type: u8,
    /// Cache table status.
    pub cache_table_status: i64,
    /// Placement policy.
    pub policy_ref_info: Option<JsonValue>,
    /// Stats options.
    pub stats_options: Option<JsonValue>,
    /// Exchange partition info.
    pub exchange_partition_info: Option<JsonValue>,
    /// TTL.
    pub ttl_info: Option<JsonValue>,
    /// Revision.
    pub revision: u64,
}

impl Default for TableInfo {
    fn default() -> Self {
        TableInfo {
            id: 0,
            name: CIStr::default(),
            charset: String::new(),
            collate: String::new(),
            cols: Vec::new(),
            index_info: None,
            constraint_info: None,
            fk_info: None,
            state: schema_state::PUBLIC,
            pk_is_handle: false,
            is_common_handle: false,
            common_handle_version: 0,
            comment: String::new(),
            auto_inc_id: 0,
            auto_id_cache: 0,
            auto_rand_id: 0,
            max_col_id: 0,
            max_idx_id: 0,
            max_fk_id: 0,
            max_cst_id: 0,
            update_timestamp: 0,
            shard_row_id_bits: 0,
            max_shard_row_id_bits: 0,
            auto_random_bits: 0,
            auto_random_range_bits: 0,
            pre_split_regions: 0,
            partition: None,
            compression: String::new(),
            view: None,
            sequence: None,
            lock: None,
            version: 5,
            tiflash_replica: None,
            is_columnar: false,
            temp_table_type: 0,
            cache_table_status: 0,
            policy_ref_info: None,
            stats_options: None,
            exchange_partition_info: None,
            ttl_info: None,
            revision: 0,
        }
    }
}

impl TableInfo {
    /// Public columns in offset order.
    pub fn public_columns(&self) -> Vec<&ColumnInfo> {
        let mut cols: Vec<&ColumnInfo> = self.cols.iter().filter(|c| c.state == schema_state::PUBLIC).collect();
        cols.sort_by_key(|c| c.offset);
        cols
    }

    /// Public columns that rows carry (not virtual generated), in offset order (`writableColumns`).
    pub fn writable_columns(&self) -> Vec<&ColumnInfo> {
        self.public_columns().into_iter().filter(|c| !c.is_virtual_generated()).collect()
    }

    /// A column by id.
    pub fn column_by_id(&self, id: i64) -> Option<&ColumnInfo> {
        self.cols.iter().find(|c| c.id == id)
    }

    /// The int PK column that is the handle, when `pk_is_handle`.
    pub fn pk_handle_column(&self) -> Option<&ColumnInfo> {
        if !self.pk_is_handle {
            return None;
        }
        self.public_columns().into_iter().find(|c| c.field_type.is_pri_key())
    }

    /// The indexes (empty if none).
    pub fn indexes(&self) -> &[IndexInfo] {
        self.index_info.as_deref().unwrap_or(&[])
    }

    /// The PRIMARY index entry (absent when `pk_is_handle`).
    pub fn primary_index(&self) -> Option<&IndexInfo> {
        self.indexes().iter().find(|i| i.is_primary)
    }

    /// Whether rows carry an implicit `_tidb_rowid` handle (no int PK handle, not clustered).
    pub fn has_implicit_row_id(&self) -> bool {
        !self.pk_is_handle && !self.is_common_handle
    }

    /// The logical table of a partition id (itself when it is this table's id).
    pub fn owns_physical_id(&self, id: i64) -> bool {
        id == self.id || self.partition.as_ref().is_some_and(|p| p.definitions.iter().any(|d| d.id == id))
    }
}

/// A database (`model.DBInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DBInfo {
    /// Database id.
    pub id: i64,
    /// Name.
    pub db_name: CIStr,
    /// Charset.
    pub charset: String,
    /// Collation.
    pub collate: String,
    /// Always `{}` on new TiDB.
    #[serde(rename = "Deprecated")]
    pub deprecated: serde_json::Map<String, JsonValue>,
    /// Schema state.
    pub state: u8,
    /// Placement policy.
    pub policy_ref_info: Option<JsonValue>,
    /// Read-only.
    pub read_only: bool,
    /// Archived.
    pub archived: bool,
}

impl Default for DBInfo {
    fn default() -> Self {
        DBInfo {
            id: 0,
            db_name: CIStr::default(),
            charset: String::new(),
            collate: String::new(),
            deprecated: serde_json::Map::new(),
            state: schema_state::PUBLIC,
            policy_ref_info: None,
            read_only: false,
            archived: false,
        }
    }
}

/// A job's result (`model.HistoryInfo`, the job's `binlog` key; its keys are untagged Go names).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryInfo {
    /// Schema version this job produced; drainer replays jobs in this order.
    #[serde(rename = "SchemaVersion")]
    pub schema_version: i64,
    /// The database after the job (schema jobs).
    #[serde(rename = "DBInfo")]
    pub db_info: Option<DBInfo>,
    /// The table after the job (table jobs; the new table for truncate).
    #[serde(rename = "TableInfo")]
    pub table_info: Option<TableInfo>,
    /// Commit ts of the finishing transaction.
    #[serde(rename = "FinishedTS")]
    pub finished_ts: u64,
    /// Tables of CREATE TABLES / RENAME TABLES.
    #[serde(rename = "MultipleTableInfos")]
    pub multiple_table_infos: Option<Vec<TableInfo>>,
}

/// A DDL job (`model.Job`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Job {
    /// Job id.
    pub id: i64,
    /// Action type ([`action`]).
    #[serde(rename = "type")]
    pub job_type: u8,
    /// Database id.
    pub schema_id: i64,
    /// Table id (the old id for truncate).
    pub table_id: i64,
    /// Database name.
    pub schema_name: String,
    /// Table name.
    pub table_name: String,
    /// Job state ([`job_state`]).
    pub state: i32,
    /// Warning.
    pub warning: Option<JsonValue>,
    /// Error.
    pub err: Option<JsonValue>,
    /// Error count.
    pub err_count: i64,
    /// Rows processed.
    pub row_count: i64,
    /// Opaque arguments.
    pub raw_args: JsonValue,
    /// Final schema state of the element.
    pub schema_state: u8,
    /// Reorg snapshot ts.
    pub snapshot_ver: u64,
    /// Real start ts.
    pub real_start_ts: u64,
    /// Creation ts.
    pub start_ts: u64,
    /// Dependency job id.
    pub dependency_id: i64,
    /// Original DDL text; drainer replays it.
    pub query: String,
    /// Result, under the key `binlog`.
    pub binlog: Option<HistoryInfo>,
    /// Job version.
    pub version: i64,
    /// Reorg meta.
    pub reorg_meta: Option<JsonValue>,
    /// Multi-schema change info.
    pub multi_schema_info: Option<JsonValue>,
    /// Priority.
    pub priority: i64,
    /// Order into history.
    pub seq_num: u64,
    /// Session charset.
    pub charset: String,
    /// Session collation.
    pub collate: String,
    /// 0 unknown, 1 user, 2 system.
    pub admin_operator: i64,
    /// Trace info.
    pub trace_info: Option<JsonValue>,
    /// BDR role.
    pub bdr_role: String,
    /// CDC write source.
    pub cdc_write_source: u64,
    /// Local mode.
    pub local_mode: bool,
    /// SQL mode bits.
    pub sql_mode: i64,
    /// Last schema version.
    pub last_schema_version: i64,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            id: 0,
            job_type: 0,
            schema_id: 0,
            table_id: 0,
            schema_name: String::new(),
            table_name: String::new(),
            state: job_state::SYNCED,
            warning: None,
            err: None,
            err_count: 0,
            row_count: 0,
            raw_args: JsonValue::Null,
            schema_state: schema_state::PUBLIC,
            snapshot_ver: 0,
            real_start_ts: 0,
            start_ts: 0,
            dependency_id: 0,
            query: String::new(),
            binlog: None,
            version: 1,
            reorg_meta: None,
            multi_schema_info: None,
            priority: 0,
            seq_num: 0,
            charset: String::new(),
            collate: String::new(),
            admin_operator: 0,
            trace_info: None,
            bdr_role: String::new(),
            cdc_write_source: 0,
            local_mode: false,
            sql_mode: 0,
            last_schema_version: 0,
        }
    }
}

impl Job {
    /// The schema version the job produced (0 if it has no result).
    pub fn schema_version(&self) -> i64 {
        self.binlog.as_ref().map_or(0, |b| b.schema_version)
    }

    /// Whether drainer applies it: done (4) or synced (6).
    pub fn is_done_or_synced(&self) -> bool {
        self.state == job_state::DONE || self.state == job_state::SYNCED
    }
}

/// JSON as TiDB's status API writes it: `json.MarshalIndent(v, "", " ")` (one-space indent).
pub fn to_status_json<T: Serialize>(v: &T) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if v.serialize(&mut ser).is_err() {
        return "null".into();
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Example C of tidb-model.md §11 (`/ddl/history`, ADD COLUMN), compact.
    const JOB: &str = r#"{"id": 120, "type": 5, "schema_id": 104, "table_id": 118, "schema_name": "shop", "table_name": "t2",
  "state": 6, "warning": null, "err": null, "err_count": 0, "row_count": 0,
  "raw_args": [{"id":2}, {"RelativeColumn":null,"Tp":0}, 1, false],
  "schema_state": 5, "snapshot_ver": 0, "real_start_ts": 445644800000000001, "start_ts": 445644800000000000,
  "dependency_id": 0, "query": "ALTER TABLE t2 ADD COLUMN c2 INT NOT NULL DEFAULT 7",
  "binlog": {"SchemaVersion": 57, "DBInfo": null,
   "TableInfo": {"id": 118, "name": {"O": "t2", "L": "t2"}, "charset": "utf8mb4", "collate": "utf8mb4_bin",
    "cols": [
     {"id": 1, "name": {"O": "id", "L": "id"}, "offset": 0, "origin_default": null, "origin_default_bit": null,
      "default": null, "default_bit": null, "default_is_expr": false, "generated_expr_string": "",
      "generated_stored": false, "dependences": null,
      "type": {"Tp": 3, "Flag": 4099, "Flen": 11, "Decimal": 0, "Charset": "binary", "Collate": "binary",
               "Elems": null, "ElemsIsBinaryLit": null, "Array": false},
      "state": 5, "comment": "", "hidden": false, "change_state_info": null, "version": 2},
     {"id": 2, "name": {"O": "c2", "L": "c2"}, "offset": 1, "origin_default": "7", "origin_default_bit": null,
      "default": "7", "default_bit": null, "default_is_expr": false, "generated_expr_string": "",
      "generated_stored": false, "dependences": null,
      "type": {"Tp": 3, "Flag": 1, "Flen": 11, "Decimal": 0, "Charset": "binary", "Collate": "binary",
               "Elems": null, "ElemsIsBinaryLit": null, "Array": false},
      "state": 5, "comment": "", "hidden": false, "change_state_info": null, "version": 2}],
    "index_info": null, "constraint_info": null, "fk_info": null, "state": 5, "pk_is_handle": true,
    "is_common_handle": false, "common_handle_version": 0, "comment": "", "auto_inc_id": 0, "auto_id_cache": 0,
    "auto_rand_id": 0, "max_col_id": 2, "max_idx_id": 0, "max_fk_id": 0, "max_cst_id": 0,
    "update_timestamp": 445644800000000002, "ShardRowIDBits": 0, "max_shard_row_id_bits": 0,
    "auto_random_bits": 0, "auto_random_range_bits": 0, "pre_split_regions": 0, "partition": null,
    "compression": "", "view": null, "sequence": null, "Lock": null, "version": 5, "tiflash_replica": null,
    "is_columnar": false, "temp_table_type": 0, "cache_table_status": 0, "policy_ref_info": null,
    "stats_options": null, "exchange_partition_info": null, "ttl_info": null, "revision": 2},
   "FinishedTS": 445644800000000003, "MultipleTableInfos": null},
  "version": 1, "reorg_meta": null, "multi_schema_info": null, "priority": 0, "seq_num": 88,
  "charset": "utf8mb4", "collate": "utf8mb4_bin", "admin_operator": 0,
  "trace_info": {"connection_id": 3, "session_alias": ""}, "bdr_role": "", "cdc_write_source": 0,
  "local_mode": false, "sql_mode": 1436549152, "last_schema_version": 0}"#;

    #[test]
    fn job_example_parses_and_reserializes_key_for_key() {
        let job: Job = serde_json::from_str(JOB).unwrap();
        assert_eq!((job.id, job.job_type, job.schema_id, job.table_id), (120, action::ADD_COLUMN, 104, 118));
        assert_eq!(job.schema_version(), 57);
        assert!(job.is_done_or_synced());
        let t = job.binlog.as_ref().unwrap().table_info.as_ref().unwrap();
        assert!(t.pk_is_handle);
        assert_eq!(t.pk_handle_column().unwrap().name.l, "id");
        assert_eq!(t.cols[1].origin_default, JsonValue::String("7".into()));
        assert_eq!(t.cols[0].field_type.flag, 4099);
        // Re-serializing gives the same JSON value, keys in the same order.
        let ours = serde_json::to_value(&job).unwrap();
        let theirs: JsonValue = serde_json::from_str(JOB).unwrap();
        assert_eq!(ours, theirs);
        let keys = |s: &str| -> Vec<String> {
            let re = s.split('"').enumerate().filter(|(i, _)| i % 2 == 1).map(|(_, k)| k.to_owned());
            re.collect()
        };
        let ours_text = serde_json::to_string(&job).unwrap();
        let theirs_compact = serde_json::to_string(&theirs).unwrap();
        // serde_json::Value sorts keys, so compare the key sequence of our output with the source text.
        let src_keys: Vec<String> = keys(JOB).into_iter().filter(|k| k.chars().all(|c| c.is_alphanumeric() || c == '_')).collect();
        let our_keys: Vec<String> = keys(&ours_text).into_iter().filter(|k| k.chars().all(|c| c.is_alphanumeric() || c == '_')).collect();
        assert_eq!(our_keys, src_keys);
        assert!(!theirs_compact.is_empty());
    }

    #[test]
    fn lenient_decoding() {
        let t: TableInfo = serde_json::from_str(r#"{"id": 7, "name": "Orders", "new_key": [1], "cols": [
            {"id": 3, "name": {"O": "X"}, "type": {"Tp": 15, "Flen": 10}}]}"#)
        .unwrap();
        assert_eq!(t.name, CIStr { o: "Orders".into(), l: "orders".into() });
        assert_eq!(t.cols[0].name.l, "x");
        assert_eq!(t.cols[0].field_type.tp, tp::VARCHAR);
        assert_eq!(t.cols[0].field_type.decimal, -1);
        assert!(t.has_implicit_row_id());
        let db: DBInfo = serde_json::from_str(r#"{"id": 1, "db_name": {"O": "mysql", "L": "mysql"}}"#).unwrap();
        assert_eq!(db.db_name.o, "mysql");
        assert!(serde_json::to_string(&db).unwrap().contains(r#""Deprecated":{}"#));
    }

    #[test]
    fn status_json_uses_one_space_indent() {
        let db = DBInfo { id: 1, db_name: CIStr::new("a"), ..DBInfo::default() };
        let s = to_status_json(&vec![db]);
        assert!(s.starts_with("[\n {\n  \"id\": 1,\n  \"db_name\": {\n   \"O\": \"a\","), "{s}");
    }
}
