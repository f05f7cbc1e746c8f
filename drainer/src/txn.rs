//! The drainer's decoded transaction: what the translator produces from one merged binlog and what every
//! sink (MySQL/TiDB, Kafka, file) consumes.
//!
//! The model is sink-neutral. Values are decoded and unflattened (TiDB's `Unflatten`) but not yet
//! formatted for any sink: TIMESTAMP values stay in UTC and each sink converts them to its own zone
//! (`[syncer.to.params] time_zone` for MySQL, the drainer's local zone for Kafka and files, as upstream).
//!
//! # Invariants
//! - A [`Row`] has exactly one slot per column of its [`TableSchema`], in `columns` order.
//!   `None` means the binlog did not carry that column (virtual generated columns, or update/delete
//!   halves written before an ADD COLUMN); sinks treat absent columns as upstream does.
//! - [`Item`]s reach a sink in strictly increasing `commit_ts` order.

use std::fmt;
use std::sync::Arc;

/// MySQL column type bytes (`mysql.TypeXXX`), as in TiDB's `FieldType.tp` and `pb_binlog.column.tp[0]`:
/// the codec's own table, so the drainer and the TiDB model never disagree.
pub use crate::tidb::model::tp as mysql_type;
/// The calendar time of DATE, DATETIME and TIMESTAMP values (the TiDB codec's own type).
pub use crate::tidb::time::Time;

/// One merged, decoded binlog, ready for a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The transaction's start ts (0 for fake binlogs).
    pub start_ts: i64,
    /// The commit ts; the checkpoint advances to it once the sink has made the item durable.
    pub commit_ts: i64,
    /// The schema version the binlog was written with (`PrewriteValue.schema_version`, or the DDL's).
    pub schema_version: i64,
    /// What the item carries.
    pub body: Body,
}

/// What an [`Item`] carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Row changes of one upstream transaction, grouped per table mutation in binlog order.
    Dml(Vec<TableChanges>),
    /// One DDL statement.
    Ddl(Ddl),
    /// Nothing to apply (a fake binlog, or a transaction every change of which was filtered out); the
    /// sink only moves its checkpoint.
    Empty,
}

/// One DDL statement as TiDB ran it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ddl {
    /// The schema the DDL runs in (`use <schema>`); empty when it has none (e.g. CREATE DATABASE).
    pub schema: String,
    /// The table it touches, if any.
    pub table: String,
    /// The query text as TiDB received it (no `use` prefix).
    pub query: String,
    /// TiDB's DDL job id.
    pub job_id: i64,
    /// The table's definition after the DDL, when the DDL leaves one (sinks may refresh caches with it).
    pub table_after: Option<Arc<TableSchema>>,
}

/// The changes one table mutation made, in the mutation's sequence order.
#[derive(Debug, Clone, PartialEq)]
pub struct TableChanges {
    /// The table's definition at the binlog's schema version.
    pub table: Arc<TableSchema>,
    /// Row changes in sequence order.
    pub rows: Vec<RowChange>,
}

/// One row change over sink-neutral values: the decoder's generic change over this module's [`Row`].
/// An insert's missing columns are already filled with their default or zero value, as upstream; an
/// update carries the values before (`old`) and after (`new`).
pub type RowChange = crate::tidb::mutation::RowChange<Row>;

/// One value slot per column of the table, in `TableSchema::columns` order; `None` = not carried.
pub type Row = Vec<Option<Value>>;

/// A table definition as the sinks need it (derived from TiDB's `TableInfo`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableSchema {
    /// TiDB table id.
    pub id: i64,
    /// Database name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Public columns in TiDB's `Columns` order (offset order).
    pub columns: Vec<Column>,
    /// The integer primary key is the row handle (`PKIsHandle`).
    pub pk_is_handle: bool,
    /// The primary key is clustered on non-integer columns (`IsCommonHandle`).
    pub is_common_handle: bool,
    /// Primary and unique keys, PRIMARY first, as column indexes into `columns`.
    pub unique_keys: Vec<UniqueKey>,
}

impl TableSchema {
    /// The index of the column named `name` (case-insensitive, as MySQL compares column names).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// `` `schema`.`name` `` with backticks doubled inside names.
    pub fn quoted_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// A primary or unique key.
#[derive(Debug, Clone, PartialEq)]
pub struct UniqueKey {
    /// Index name; `PRIMARY` for the primary key.
    pub name: String,
    /// Column indexes into `TableSchema::columns`, in key order.
    pub columns: Vec<usize>,
}

impl UniqueKey {
    /// Whether this is the primary key.
    pub fn is_primary(&self) -> bool {
        self.name.eq_ignore_ascii_case("PRIMARY")
    }
}

/// One column's definition.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Column {
    /// TiDB column id (stable across renames; the key in encoded rows).
    pub id: i64,
    /// Column name.
    pub name: String,
    /// MySQL type byte ([`mysql_type`]).
    pub tp: u8,
    /// UNSIGNED.
    pub unsigned: bool,
    /// NOT NULL.
    pub not_null: bool,
    /// Part of the primary key (`PriKeyFlag`).
    pub primary_key: bool,
    /// Binary collation/charset (BINARY, VARBINARY, BLOB rather than CHAR, VARCHAR, TEXT).
    pub binary: bool,
    /// Display length (`flen`); bits for BIT.
    pub flen: i32,
    /// Fractional digits (`decimal`): scale for DECIMAL, fsp for time types.
    pub decimal: i32,
    /// Charset name, e.g. `utf8mb4` or `binary`.
    pub charset: String,
    /// ENUM/SET members.
    pub elems: Vec<String>,
    /// A generated column (stored or virtual): sinks never write it.
    pub generated: bool,
}

impl Column {
    /// Upstream's lower-case type name (`types.TypeToStr`), used as `mysql_type` by the Kafka and
    /// file sinks: e.g. `int`, `bigint`, `varchar`, `text`, `blob`, `decimal`, `datetime`, `json`.
    pub fn type_name(&self) -> &'static str {
        use mysql_type::*;
        let text_or = |blob: &'static str, text: &'static str| if self.binary { blob } else { text };
        match self.tp {
            TINY => "tinyint",
            SHORT => "smallint",
            INT24 => "mediumint",
            LONG => "int",
            LONGLONG => "bigint",
            FLOAT => "float",
            DOUBLE => "double",
            DECIMAL | NEWDECIMAL => "decimal",
            NULL => "null",
            TIMESTAMP => "timestamp",
            DATE | NEWDATE => "date",
            DURATION => "time",
            DATETIME => "datetime",
            YEAR => "year",
            VARCHAR => text_or("varbinary", "varchar"),
            VAR_STRING => "var_string",
            STRING => text_or("binary", "char"),
            BIT => "bit",
            JSON => "json",
            ENUM => "enum",
            SET => "set",
            TINY_BLOB => text_or("tinyblob", "tinytext"),
            MEDIUM_BLOB => text_or("mediumblob", "mediumtext"),
            LONG_BLOB => text_or("longblob", "longtext"),
            BLOB => text_or("blob", "text"),
            GEOMETRY => "geometry",
            _ => "unknown",
        }
    }
}

/// A decoded column value (after TiDB's `Unflatten`, before any sink's formatting).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Signed integer types and YEAR.
    Int(i64),
    /// Unsigned integer types.
    Uint(u64),
    /// FLOAT (already rounded to f32 precision) and DOUBLE.
    Float(f64),
    /// DECIMAL as exact text with the column's scale, e.g. `-12.340`.
    Decimal(String),
    /// CHAR/VARCHAR/TEXT (UTF-8 bytes) and BINARY/VARBINARY/BLOB, as stored.
    Bytes(Vec<u8>),
    /// DATE, DATETIME and TIMESTAMP; TIMESTAMP in UTC.
    Time(MysqlTime),
    /// TIME: signed nanoseconds and the column's fsp.
    Duration {
        /// Signed nanoseconds.
        nanos: i64,
        /// Fractional digits to print (0..=6).
        fsp: u8,
    },
    /// ENUM: 1-based member index (0 = the empty/invalid value) and the member's name.
    Enum {
        /// 1-based member index.
        index: u64,
        /// Member name ("" for index 0).
        name: String,
    },
    /// SET: member bitmask and the comma-joined member names.
    Set {
        /// Member bitmask.
        bits: u64,
        /// Member names joined by `,`.
        names: String,
    },
    /// BIT(n): the value as an integer (n ≤ 64).
    Bit(u64),
    /// JSON as text, as TiDB prints it.
    Json(String),
}

/// A DATE, DATETIME or TIMESTAMP column value: the calendar time ([`Time`], the one time model,
/// shared with the TiDB codec) with the column's type and fsp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct MysqlTime {
    /// The date and time (all zero for the zero date).
    pub time: Time,
    /// The column type: [`mysql_type::DATE`], [`mysql_type::DATETIME`] or [`mysql_type::TIMESTAMP`].
    pub tp: u8,
    /// Fractional digits to print (0..=6).
    pub fsp: u8,
}

impl MysqlTime {
    /// Whether this is the zero value `0000-00-00 00:00:00`.
    pub fn is_zero(&self) -> bool {
        self.time.year == 0 && self.time.month == 0 && self.time.day == 0
    }
}

impl fmt::Display for MysqlTime {
    /// MySQL's text form: `YYYY-MM-DD` for DATE, else `YYYY-MM-DD HH:MM:SS[.ffffff]` cut to `fsp` digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tp == mysql_type::DATE || self.tp == mysql_type::NEWDATE {
            return f.write_str(&self.time.date_string());
        }
        f.write_str(&self.time.datetime_string(i32::from(self.fsp)))
    }
}

/// Formats a TIME value (`[-]HH:MM:SS[.ffffff]`, hours may exceed 24), as MySQL prints it.
pub fn format_duration(nanos: i64, fsp: u8) -> String {
    crate::tidb::time::Duration { nanos, fsp }.to_string()
}

/// Text of a value as printed (bytes as lossy UTF-8, NULL as `NULL`).
pub fn value_text(v: &Value) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = write_value_text(&mut s, v);
    s
}

/// Writes [`value_text`] of `v` to `w`, without building it where it need not (numbers, decimals,
/// JSON, text).
pub fn write_value_text(w: &mut impl std::fmt::Write, v: &Value) -> std::fmt::Result {
    match v {
        Value::Null => w.write_str("NULL"),
        Value::Int(i) => write!(w, "{i}"),
        Value::Uint(u) => write!(w, "{u}"),
        Value::Float(f) => write!(w, "{f}"),
        Value::Decimal(s) | Value::Json(s) => w.write_str(s),
        Value::Bytes(b) => w.write_str(&String::from_utf8_lossy(b)),
        Value::Time(t) => write!(w, "{t}"),
        Value::Duration { nanos, fsp } => write!(w, "{}", crate::tidb::time::Duration { nanos: *nanos, fsp: *fsp }),
        Value::Enum { index, .. } => write!(w, "{index}"),
        Value::Set { bits, .. } => write!(w, "{bits}"),
        Value::Bit(b) => write!(w, "{b}"),
    }
}

/// `` `name` `` with inner backticks doubled, as MySQL quotes identifiers.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Fixtures for the sinks' round-trip tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// The changes a round trip must keep: insert `row(1)`, update it to `row(2)`, delete `row(2)`.
    pub(crate) fn insert_update_delete(row: impl Fn(u64) -> Row) -> Vec<RowChange> {
        vec![RowChange::Insert(row(1)), RowChange::Update { old: row(1), new: row(2) }, RowChange::Delete(row(2))]
    }

    /// An item at commit ts 42 holding [`insert_update_delete`] of `row` in `table`.
    pub(crate) fn dml_item(table: &Arc<TableSchema>, row: impl Fn(u64) -> Row) -> Item {
        Item {
            start_ts: 0,
            commit_ts: 42,
            schema_version: 0,
            body: Body::Dml(vec![TableChanges { table: table.clone(), rows: insert_update_delete(row) }]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_text_follows_type_and_fsp() {
        let time = Time { year: 2024, month: 2, day: 29, hour: 23, minute: 5, second: 9, microsecond: 120_300 };
        let t = MysqlTime { time, tp: mysql_type::DATETIME, fsp: 4 };
        assert_eq!(t.to_string(), "2024-02-29 23:05:09.1203");
        assert_eq!(MysqlTime { fsp: 0, ..t }.to_string(), "2024-02-29 23:05:09");
        assert_eq!(MysqlTime { tp: mysql_type::DATE, ..t }.to_string(), "2024-02-29");
        let zero = MysqlTime { tp: mysql_type::TIMESTAMP, ..Default::default() };
        assert!(zero.is_zero());
        assert_eq!(zero.to_string(), "0000-00-00 00:00:00");
    }

    #[test]
    fn durations_print_like_mysql() {
        let n = ((838 * 3600 + 59 * 60 + 58) * 1_000_000 + 999_999) * 1_000;
        assert_eq!(format_duration(n, 6), "838:59:58.999999");
        assert_eq!(format_duration(-n, 0), "-838:59:58");
        assert_eq!(format_duration(1_500_000_000, 1), "00:00:01.5");
        assert_eq!(format_duration(-500, 6), "-00:00:00.000000");
    }

    #[test]
    fn names_are_quoted_and_type_names_follow_binary_flag() {
        let t = TableSchema { schema: "d`b".into(), name: "t".into(), ..Default::default() };
        assert_eq!(t.quoted_name(), "`d``b`.`t`");
        let mut c = Column { tp: mysql_type::BLOB, ..Default::default() };
        assert_eq!(c.type_name(), "text");
        c.binary = true;
        assert_eq!(c.type_name(), "blob");
        c.tp = mysql_type::STRING;
        assert_eq!(c.type_name(), "binary");
    }
}
