//! `canal-json` (ours, `kafka-format = "canal-json"`): the JSON of Alibaba Canal's flat messages, as
//! TiCDC writes it with its TiDB extension, so consumers built for Canal or TiCDC read our topic.
//!
//! One message per row change, and one per DDL:
//! `{"id":0,"database":..,"table":..,"pkNames":[..],"isDdl":false,"type":"INSERT|UPDATE|DELETE",
//! "es":<commit ms>,"ts":<encode ms>,"sql":"","sqlType":{col:<java.sql.Types>},"mysqlType":{col:<type>[ unsigned]},
//! "data":[{col:"text"|null}],"old":null|[{changed col:"old text"}],"_tidb":{"commitTs":<ts>}}`;
//! a DDL has `"isDdl":true,"type":"QUERY","sql":<query>` and null maps; a resolved ts is
//! `"type":"TIDB_WATERMARK"` with `"_tidb":{"watermarkTs":<ts>}`. Values are text ([`column_text`](super::translate::column_text)).
//! The messages of one transaction in one partition carry the chunk header `"i/n"`, so a restarted
//! sink (and any consumer) can tell whether the last transaction in a partition is complete.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value as Json, json};

use std::io::Write as _;

use super::translate::{ColumnRef, Wire, column_ref};
use crate::proto::slave;
use crate::txn::{Column, Ddl, Row, RowChange, TableChanges, TableSchema};

/// The `java.sql.Types` code Canal gives a MySQL type.
fn sql_type(c: &Column) -> i32 {
    match c.type_name() {
        "tinyint" => -6,
        "smallint" => 5,
        "mediumint" | "int" => 4,
        "bigint" => -5,
        "float" => 7,
        "double" => 8,
        "decimal" => 3,
        "date" => 91,
        "time" => 92,
        "datetime" | "timestamp" => 93,
        "year" => 12,
        "bit" => -7,
        "char" => 1,
        "binary" => -2,
        "varbinary" => -3,
        "tinyblob" | "blob" | "mediumblob" | "longblob" => 2004,
        "tinytext" | "text" | "mediumtext" | "longtext" => 2005,
        _ => 12, // varchar, json, enum, set
    }
}

/// A column's `mysqlType`: its type name, with ` unsigned` for unsigned integers (as TiCDC writes it).
fn mysql_type_name(c: &Column) -> String {
    let name = c.type_name();
    if c.unsigned && matches!(name, "tinyint" | "smallint" | "mediumint" | "int" | "bigint") {
        format!("{name} unsigned")
    } else {
        name.to_string()
    }
}

/// The physical part of a TSO (ms since the epoch).
fn physical_ms(ts: i64) -> i64 {
    ts >> 18
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Tables whose message parts the [`Writer`] keeps before it starts over.
const TABLE_CACHE: usize = 4096;

/// The parts of a table's row messages that depend only on its schema, written once: the message up
/// to the change type, the column type maps, and each column's escaped `"name":` key.
struct TableParts {
    /// Kept so the pointer the cache is keyed by cannot be reused by another schema.
    _schema: Arc<TableSchema>,
    /// `{"id":0,"database":..,"table":..,"pkNames":..,"isDdl":false,"type":"`
    head: Vec<u8>,
    /// `"sqlType":{..},"mysqlType":{..},"data":[`
    types: Vec<u8>,
    /// `"<name>":` per column, in column order.
    keys: Vec<Vec<u8>>,
    /// How each column's values are written.
    wires: Vec<Wire>,
}

impl TableParts {
    fn new(table: &Arc<TableSchema>) -> Self {
        let cols = &table.columns;
        let pk: Vec<&str> = match table.unique_keys.iter().find(|k| k.is_primary()) {
            Some(k) => k.columns.iter().filter_map(|&i| cols.get(i)).map(|c| c.name.as_str()).collect(),
            None => cols.iter().filter(|c| c.primary_key).map(|c| c.name.as_str()).collect(),
        };
        let mut head = br#"{"id":0,"database":"#.to_vec();
        put_json(&mut head, &table.schema);
        head.extend_from_slice(br#","table":"#);
        put_json(&mut head, &table.name);
        head.extend_from_slice(br#","pkNames":"#);
        if pk.is_empty() {
            head.extend_from_slice(b"null");
        } else {
            put_json(&mut head, &pk);
        }
        head.extend_from_slice(br#","isDdl":false,"type":""#);
        let keys: Vec<Vec<u8>> = cols
            .iter()
            .map(|c| {
                let mut k = Vec::with_capacity(c.name.len() + 3);
                put_json(&mut k, &c.name);
                k.push(b':');
                k
            })
            .collect();
        let mut types = br#""sqlType":{"#.to_vec();
        for (i, (c, k)) in cols.iter().zip(&keys).enumerate() {
            if i > 0 {
                types.push(b',');
            }
            types.extend_from_slice(k);
            types.extend_from_slice(sql_type(c).to_string().as_bytes());
        }
        types.extend_from_slice(br#"},"mysqlType":{"#);
        for (i, (c, k)) in cols.iter().zip(&keys).enumerate() {
            if i > 0 {
                types.push(b',');
            }
            types.extend_from_slice(k);
            put_json(&mut types, &mysql_type_name(c));
        }
        types.extend_from_slice(br#"},"data":["#);
        Self { _schema: table.clone(), head, types, keys, wires: cols.iter().map(Wire::of).collect() }
    }

    /// `{"<col>":"<text>"|null,..}` of the columns `which` picks from `row`.
    fn put_row(&self, out: &mut Vec<u8>, row: &Row, which: impl Fn(usize) -> bool) {
        out.push(b'{');
        let mut first = true;
        for (i, ((w, k), v)) in self.wires.iter().zip(&self.keys).zip(row).enumerate() {
            if !which(i) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(k);
            put_value(out, w, v.as_ref());
        }
        out.push(b'}');
    }
}

/// A column value as JSON: its [`column_text`](super::translate::column_text) as a string, or `null`; written without building the
/// text where it needs no escaping.
fn put_value(out: &mut Vec<u8>, w: &Wire, v: Option<&crate::txn::Value>) {
    let quoted = |out: &mut Vec<u8>, text: &[u8]| {
        out.push(b'"');
        out.extend_from_slice(text);
        out.push(b'"');
    };
    // Printable ASCII but `"` and `\`: the same in a JSON string.
    let plain = |b: &[u8]| b.iter().all(|&c| (0x20..0x80).contains(&c) && c != b'"' && c != b'\\');
    match column_ref(w, v) {
        ColumnRef::Null => out.extend_from_slice(b"null"),
        ColumnRef::Int(i) => {
            let _ = write!(out, "\"{i}\"");
        }
        ColumnRef::Uint(u) => {
            let _ = write!(out, "\"{u}\"");
        }
        ColumnRef::Utf8(b) if plain(b) => quoted(out, b),
        ColumnRef::Utf8(b) => put_json(out, String::from_utf8_lossy(b).as_ref()),
        ColumnRef::Text(t) => put_json(out, t.as_ref()),
        ColumnRef::Short(t) => quoted(out, t.as_bytes()),
        // One char per byte: printable ASCII as is, anything else through the escaping.
        ColumnRef::Bytes(b) if plain(&b) => quoted(out, &b),
        ColumnRef::Bytes(b) => put_json(out, &b.iter().map(|&c| char::from(c)).collect::<String>()),
        ColumnRef::Double(f) => {
            let _ = write!(out, "\"{f}\"");
        }
    }
}

/// `v` as JSON (serde_json's escaping for strings).
fn put_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing into a Vec cannot fail, and these values (strings, lists of strings) always serialize.
    serde_json::to_writer(out, v).expect("a string serializes to JSON");
}

/// Writes row messages straight to bytes, in canal's field order, without building a JSON tree:
/// each table's schema-only parts are written once and cached (keyed by the schema's pointer, the
/// `Arc` kept). The same JSON as [`row_message`].
#[derive(Default)]
pub struct Writer {
    tables: HashMap<usize, TableParts>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("canal::Writer").field("cached_tables", &self.tables.len()).finish()
    }
}

impl Writer {
    /// The message of one row change of `t` in the transaction with `commit_ts`.
    pub fn row_message(&mut self, commit_ts: i64, t: &TableChanges, change: &RowChange) -> Vec<u8> {
        if self.tables.len() >= TABLE_CACHE {
            self.tables.clear();
        }
        let parts = self.tables.entry(Arc::as_ptr(&t.table) as usize).or_insert_with(|| TableParts::new(&t.table));
        let cols = &t.table.columns;
        let mut out = Vec::with_capacity(parts.head.len() + parts.types.len() + 64 * cols.len() + 96);
        out.extend_from_slice(&parts.head);
        let (kind, row) = match change {
            RowChange::Insert(r) => ("INSERT", r),
            RowChange::Delete(r) => ("DELETE", r),
            RowChange::Update { new, .. } => ("UPDATE", new),
        };
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(br#"","es":"#);
        let _ = write!(out, "{}", physical_ms(commit_ts));
        out.extend_from_slice(br#","ts":"#);
        let _ = write!(out, "{}", now_ms());
        out.extend_from_slice(br#","sql":"","#);
        out.extend_from_slice(&parts.types);
        parts.put_row(&mut out, row, |_| true);
        out.extend_from_slice(br#"],"old":"#);
        match change {
            RowChange::Update { old, new } => {
                // Only the changed columns, as canal.
                out.push(b'[');
                parts.put_row(&mut out, old, |i| old.get(i) != new.get(i));
                out.push(b']');
            }
            _ => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","_tidb":{"commitTs":"#);
        let _ = write!(out, "{commit_ts}}}}}");
        out
    }
}

/// The message of one row change of `t` in the transaction with `commit_ts` (a [`Writer`] for one
/// message; the sink keeps one).
pub fn row_message(commit_ts: i64, t: &TableChanges, change: &RowChange) -> Vec<u8> {
    Writer::default().row_message(commit_ts, t, change)
}

/// The message of a DDL.
pub fn ddl_message(commit_ts: i64, ddl: &Ddl) -> Vec<u8> {
    json!({
        "id": 0,
        "database": ddl.schema,
        "table": ddl.table,
        "pkNames": null,
        "isDdl": true,
        "type": "QUERY",
        "es": physical_ms(commit_ts),
        "ts": now_ms(),
        "sql": ddl.query,
        "sqlType": null,
        "mysqlType": null,
        "data": null,
        "old": null,
        "_tidb": { "commitTs": commit_ts },
    })
    .to_string()
    .into_bytes()
}

/// A resolved-ts (watermark) message.
pub fn watermark_message(ts: i64) -> Vec<u8> {
    json!({
        "id": 0, "database": "", "table": "", "pkNames": null, "isDdl": false, "type": "TIDB_WATERMARK",
        "es": physical_ms(ts), "ts": now_ms(), "sql": "", "sqlType": null, "mysqlType": null,
        "data": null, "old": null, "_tidb": { "watermarkTs": ts },
    })
    .to_string()
    .into_bytes()
}

/// The commit ts (or watermark ts) a canal-json message carries, if it is one of ours.
pub fn message_ts(payload: &[u8]) -> Option<i64> {
    let v: Json = serde_json::from_slice(payload).ok()?;
    let t = v.get("_tidb")?;
    t.get("commitTs").or_else(|| t.get("watermarkTs"))?.as_i64()
}

/// Why a message is not canal-json as [`row_message`], [`ddl_message`] and [`watermark_message`] write it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CanalError {
    /// Not JSON, or not a flat message's shape.
    #[error("not a canal-json flat message: {0}")]
    Json(#[from] serde_json::Error),
    /// A field this decoder needs is missing.
    #[error("canal-json message without {0}")]
    Missing(&'static str),
    /// A row or DDL of a kind Canal does not define.
    #[error("canal-json message of unknown type {0:?}")]
    Kind(String),
    /// A value that is not text of its `mysqlType`.
    #[error("canal-json `{schema}`.`{table}` column {column} ({mysql_type}): {why}")]
    Value {
        /// Schema.
        schema: String,
        /// Table.
        table: String,
        /// Column.
        column: String,
        /// Its `mysqlType`.
        mysql_type: String,
        /// What is wrong.
        why: String,
    },
}

/// A decoded canal-json message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A row change or DDL as the protobuf format carries it: a DML `Binlog` with one table (the
    /// message's rows) or a DDL `Binlog`. A transaction's messages in one partition are its chunks.
    Binlog(slave::Binlog),
    /// A resolved ts (`TIDB_WATERMARK`).
    Watermark(i64),
}

#[derive(serde::Deserialize)]
struct Flat {
    #[serde(default)]
    database: String,
    #[serde(default)]
    table: String,
    #[serde(rename = "pkNames", default)]
    pk_names: Option<Vec<String>>,
    #[serde(rename = "isDdl", default)]
    is_ddl: bool,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sql: String,
    #[serde(rename = "mysqlType", default)]
    mysql_type: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    data: Option<Vec<Map<String, Json>>>,
    #[serde(default)]
    old: Option<Vec<Map<String, Json>>>,
    #[serde(rename = "_tidb")]
    tidb: Option<TidbExt>,
}

#[derive(serde::Deserialize)]
struct TidbExt {
    #[serde(rename = "commitTs")]
    commit_ts: Option<i64>,
    #[serde(rename = "watermarkTs")]
    watermark_ts: Option<i64>,
}

/// Whether [`column_text`](super::translate::column_text) writes a `mysqlType`'s values as bytes (one char per byte) rather than text.
fn is_bytes_type(mysql_type: &str) -> bool {
    mysql_type.ends_with("blob") || mysql_type.ends_with("binary") || matches!(mysql_type, "json" | "bit" | "geometry")
}

/// The protobuf column for a value's text: the inverse of [`column_text`](super::translate::column_text) (which prints the protobuf
/// column's value), so a canal-json row becomes the row the protobuf format would have carried.
fn column_of(mysql_type: &str, text: Option<&str>) -> Result<slave::Column, String> {
    let mut c = slave::Column::default();
    let Some(t) = text else {
        c.is_null = Some(true);
        return Ok(c);
    };
    let not_int = || format!("{t:?} is not an integer");
    match mysql_type {
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => c.int64_value = Some(t.parse().map_err(|_| not_int())?),
        "tinyint unsigned" | "smallint unsigned" | "mediumint unsigned" | "int unsigned" | "bigint unsigned" => {
            c.uint64_value = Some(t.parse().map_err(|_| not_int())?)
        }
        "enum" | "set" => c.uint64_value = Some(t.parse().map_err(|_| format!("{t:?} is not an ENUM/SET number"))?),
        "float" | "double" => c.double_value = Some(t.parse().map_err(|_| format!("{t:?} is not a number"))?),
        ty if is_bytes_type(ty) => {
            let bytes: Result<Vec<u8>, _> = t.chars().map(u8::try_from).collect();
            c.bytes_value = Some(bytes.map_err(|_| "bytes text has a char above U+00FF".to_string())?);
        }
        _ => c.string_value = Some(t.to_string()),
    }
    Ok(c)
}

/// Decodes one canal-json message of ours into what the protobuf format carries ([`Decoded`]).
pub fn decode(payload: &[u8]) -> Result<Decoded, CanalError> {
    let m: Flat = serde_json::from_slice(payload)?;
    let tidb = m.tidb.ok_or(CanalError::Missing("_tidb"))?;
    if m.kind == "TIDB_WATERMARK" {
        return Ok(Decoded::Watermark(tidb.watermark_ts.ok_or(CanalError::Missing("_tidb.watermarkTs"))?));
    }
    let commit_ts = tidb.commit_ts.ok_or(CanalError::Missing("_tidb.commitTs"))?;
    if m.is_ddl {
        return Ok(Decoded::Binlog(slave::Binlog {
            r#type: Some(slave::BinlogType::Ddl as i32),
            commit_ts: Some(commit_ts),
            dml_data: None,
            ddl_data: Some(slave::DdlData {
                schema_name: Some(m.database),
                table_name: Some(m.table),
                ddl_query: Some(m.sql.into_bytes()),
            }),
        }));
    }
    let kind = match m.kind.as_str() {
        "INSERT" => slave::MutationType::Insert,
        "UPDATE" => slave::MutationType::Update,
        "DELETE" => slave::MutationType::Delete,
        _ => return Err(CanalError::Kind(m.kind)),
    };
    let types = m.mysql_type.ok_or(CanalError::Missing("mysqlType"))?;
    let data = m.data.ok_or(CanalError::Missing("data"))?;
    let pk = m.pk_names.unwrap_or_default();
    let bad = |column: &str, mysql_type: &str, why: String| CanalError::Value {
        schema: m.database.clone(),
        table: m.table.clone(),
        column: column.to_string(),
        mysql_type: mysql_type.to_string(),
        why,
    };
    let text = |row: &Map<String, Json>, column: &str, mysql_type: &str| -> Result<Option<String>, CanalError> {
        match row.get(column) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(column, mysql_type, format!("value {other} is not a string"))),
        }
    };
    let mut mutations = Vec::with_capacity(data.len());
    // Time columns: the fraction digits give the precision the protobuf's `decimal` carries.
    let mut fsp: std::collections::BTreeMap<&str, i32> = std::collections::BTreeMap::new();
    for (i, new) in data.iter().enumerate() {
        let mut row = slave::Row::default();
        let mut old_row = slave::Row::default();
        let changed = m.old.as_ref().and_then(|o| o.get(i));
        for (column, ty) in &types {
            let v = text(new, column, ty)?;
            if let Some(frac) = v.as_deref().and_then(|t| t.rsplit_once('.')).filter(|_| matches!(ty.as_str(), "time" | "datetime" | "timestamp")) {
                let e = fsp.entry(column.as_str()).or_default();
                *e = (*e).max(frac.1.len() as i32);
            }
            let old_v = match changed.filter(|o| o.contains_key(column)) {
                Some(o) => text(o, column, ty)?,
                None => v.clone(),
            };
            row.columns.push(column_of(ty, v.as_deref()).map_err(|why| bad(column, ty, why))?);
            old_row.columns.push(column_of(ty, old_v.as_deref()).map_err(|why| bad(column, ty, why))?);
        }
        let change_row = (kind == slave::MutationType::Update).then_some(old_row);
        mutations.push(slave::TableMutation { r#type: kind as i32, row, change_row });
    }
    let column_info = types
        .iter()
        .map(|(column, ty)| slave::ColumnInfo {
            name: Some(column.clone()),
            mysql_type: Some(ty.strip_suffix(" unsigned").unwrap_or(ty).to_string()),
            is_primary_key: Some(pk.contains(column)),
            flen: None,
            decimal: fsp.get(column.as_str()).copied(),
        })
        .collect();
    let unique_keys =
        if pk.is_empty() { Vec::new() } else { vec![slave::Key { name: Some("PRIMARY".into()), column_names: pk }] };
    let table = slave::Table {
        schema_name: Some(m.database),
        table_name: Some(m.table),
        column_info,
        mutations,
        unique_keys,
    };
    Ok(Decoded::Binlog(super::translate::dml_binlog(commit_ts, vec![table])))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sink::kafka::translate::column_text;
    use crate::txn::{TableSchema, UniqueKey, Value, mysql_type};

    fn table() -> Arc<TableSchema> {
        let col = |name: &str, tp: u8| Column { name: name.into(), tp, flen: 10, ..Default::default() };
        Arc::new(TableSchema {
            schema: "db".into(),
            name: "t".into(),
            columns: vec![
                Column { primary_key: true, ..col("id", mysql_type::LONG) },
                col("name", mysql_type::VARCHAR),
                Column { binary: true, ..col("raw", mysql_type::BLOB) },
            ],
            unique_keys: vec![UniqueKey { name: "PRIMARY".into(), columns: vec![0] }],
            ..Default::default()
        })
    }

    #[test]
    fn rows_ddl_and_watermarks_have_canals_fields_and_our_commit_ts() {
        let t = TableChanges { table: table(), rows: Vec::new() };
        let old = vec![Some(Value::Int(1)), Some(Value::Bytes(b"a".to_vec())), Some(Value::Bytes(vec![0, 255]))];
        let new = vec![Some(Value::Int(1)), Some(Value::Bytes("ü".as_bytes().to_vec())), Some(Value::Bytes(vec![0, 255]))];
        let ts = (1_700_000_000_000i64 << 18) | 5;
        let m: Json = serde_json::from_slice(&row_message(ts, &t, &RowChange::Update { old, new })).unwrap();
        assert_eq!((m["database"].as_str(), m["table"].as_str(), m["type"].as_str()), (Some("db"), Some("t"), Some("UPDATE")));
        assert_eq!(m["pkNames"], json!(["id"]));
        assert_eq!(m["data"], json!([{"id": "1", "name": "ü", "raw": "\u{0}\u{ff}"}]));
        assert_eq!(m["old"], json!([{"name": "a"}]), "only the changed columns");
        assert_eq!((m["es"].as_i64(), m["_tidb"]["commitTs"].as_i64()), (Some(1_700_000_000_000), Some(ts)));
        assert_eq!((m["sqlType"]["id"].as_i64(), m["mysqlType"]["raw"].as_str()), (Some(4), Some("blob")));
        let row = vec![Some(Value::Int(2)), None, Some(Value::Null)];
        let m: Json = serde_json::from_slice(&row_message(ts, &t, &RowChange::Delete(row))).unwrap();
        assert_eq!((m["type"].as_str(), &m["data"], &m["old"]), (Some("DELETE"), &json!([{"id": "2", "name": null, "raw": null}]), &Json::Null));
        let ddl = Ddl { schema: "db".into(), table: "t".into(), query: "create table t (id int)".into(), job_id: 1, table_after: None };
        let d = ddl_message(ts, &ddl);
        let m: Json = serde_json::from_slice(&d).unwrap();
        assert_eq!((m["isDdl"].as_bool(), m["type"].as_str(), m["sql"].as_str()), (Some(true), Some("QUERY"), Some("create table t (id int)")));
        assert_eq!(message_ts(&d), Some(ts));
        let w = watermark_message(ts);
        assert_eq!(message_ts(&w), Some(ts));
        assert_eq!(serde_json::from_slice::<Json>(&w).unwrap()["type"], "TIDB_WATERMARK");
        assert_eq!(message_ts(b"not json"), None);
    }

    /// Every column kind: a row written as canal-json and decoded gives, through the consumer's
    /// `untranslate`, the same values as the protobuf message of the same change (by column name:
    /// canal-json's maps are ordered by name).
    #[test]
    fn decoded_rows_equal_the_protobuf_rows_for_every_kind_of_value() {
        use crate::sink::kafka::{translate::to_secondary, untranslate::to_item};
        use crate::txn::{Body, Item};
        let col = |name: &str, tp: u8| Column { name: name.into(), tp, ..Default::default() };
        let table = Arc::new(TableSchema {
            schema: "db".into(),
            name: "t".into(),
            columns: vec![
                Column { primary_key: true, unsigned: true, ..col("id", mysql_type::LONGLONG) },
                col("neg", mysql_type::LONG),
                col("name", mysql_type::VARCHAR),
                Column { binary: true, ..col("raw", mysql_type::BLOB) },
                Column { binary: true, ..col("bin", mysql_type::STRING) },
                Column { decimal: 2, ..col("dec", mysql_type::NEWDECIMAL) },
                Column { elems: vec!["x".into(), "y".into()], ..col("e", mysql_type::ENUM) },
                Column { elems: vec!["a".into(), "b".into()], ..col("s", mysql_type::SET) },
                col("j", mysql_type::JSON),
                Column { flen: 12, ..col("bit", mysql_type::BIT) },
                col("f", mysql_type::DOUBLE),
                col("y", mysql_type::YEAR),
                Column { decimal: 3, ..col("d", mysql_type::DURATION) },
                col("n", mysql_type::VARCHAR),
            ],
            unique_keys: vec![UniqueKey { name: "PRIMARY".into(), columns: vec![0] }],
            ..Default::default()
        });
        let row = |id: u64, name: &str| {
            vec![
                Some(Value::Uint(id)),
                Some(Value::Int(-7)),
                Some(Value::Bytes(name.as_bytes().to_vec())),
                Some(Value::Bytes(vec![0, 1, 255])),
                Some(Value::Bytes(vec![200, 0])),
                Some(Value::Decimal("-1.50".into())),
                Some(Value::Enum { index: 2, name: "y".into() }),
                Some(Value::Set { bits: 3, names: "a,b".into() }),
                Some(Value::Json("{\"k\": \"ü\"}".into())),
                Some(Value::Bit(0x0abc)),
                Some(Value::Float(0.1)),
                Some(Value::Int(2024)),
                Some(Value::Duration { nanos: -3_723_456_000_000, fsp: 3 }),
                Some(Value::Null),
            ]
        };
        let changes = [
            RowChange::Insert(row(u64::MAX - 1, "ü")),
            RowChange::Update { old: row(u64::MAX - 1, "ü"), new: row(u64::MAX - 1, "v") },
            RowChange::Delete(row(1, "x")),
        ];
        let by_name = |item: Item| -> Vec<Vec<(String, Option<Value>)>> {
            let Body::Dml(tables) = item.body else { panic!("dml") };
            let t = &tables[0];
            t.rows
                .iter()
                .flat_map(|r| match r {
                    RowChange::Insert(r) | RowChange::Delete(r) => vec![r.clone()],
                    RowChange::Update { old, new } => vec![old.clone(), new.clone()],
                })
                .map(|r| {
                    let mut named: Vec<_> = t.table.columns.iter().map(|c| c.name.clone()).zip(r).collect();
                    named.sort_by(|a, b| a.0.cmp(&b.0));
                    named
                })
                .collect()
        };
        for change in changes {
            let tc = TableChanges { table: table.clone(), rows: vec![change.clone()] };
            let Decoded::Binlog(b) = decode(&row_message(42, &tc, &change)).unwrap() else { panic!("a row") };
            assert_eq!(b.commit_ts(), 42);
            let t = &b.dml_data.as_ref().unwrap().tables[0];
            assert_eq!(t.unique_keys[0].column_names, ["id"]);
            let item = Item { start_ts: 0, commit_ts: 42, schema_version: 0, body: Body::Dml(vec![tc]) };
            let want = by_name(to_item(&to_secondary(&item).unwrap()).unwrap().unwrap());
            let got = by_name(to_item(&b).unwrap().unwrap());
            assert_eq!(got, want, "{change:?}");
        }
        let ddl = Ddl { schema: "db".into(), table: "t".into(), query: "create table t (id int)".into(), job_id: 1, table_after: None };
        let Decoded::Binlog(d) = decode(&ddl_message(9, &ddl)).unwrap() else { panic!("a ddl") };
        assert_eq!((d.commit_ts(), d.ddl_data.unwrap().ddl_query()), (9, &b"create table t (id int)"[..]));
        assert_eq!(decode(&watermark_message(77)).unwrap(), Decoded::Watermark(77));
        // Bad input is named, never a panic.
        assert!(matches!(decode(b"{]"), Err(CanalError::Json(_))));
        assert!(matches!(decode(br#"{"type":"INSERT","_tidb":{}}"#), Err(CanalError::Missing("_tidb.commitTs"))));
        let bad = br#"{"database":"db","table":"t","type":"INSERT","mysqlType":{"id":"int"},"data":[{"id":"x1"}],"_tidb":{"commitTs":1}}"#;
        let e = decode(bad).unwrap_err().to_string();
        assert!(e.contains("`db`.`t` column id (int)") && e.contains("\"x1\""), "{e}");
        let odd = br#"{"database":"db","table":"t","type":"MERGE","mysqlType":{},"data":[],"_tidb":{"commitTs":1}}"#;
        assert!(matches!(decode(odd), Err(CanalError::Kind(k)) if k == "MERGE"));
    }

    /// The direct writer makes the JSON a tree of `json!` maps makes (the reference below, the form
    /// the writer replaced), in canal's field order, for every kind of value and change, from a cached
    /// table as from a new one.
    #[test]
    fn the_direct_writer_writes_the_reference_json_in_canals_field_order() {
        fn reference(commit_ts: i64, t: &TableChanges, change: &RowChange) -> Json {
            let cols = &t.table.columns;
            let row_json = |row: &Row| -> Json {
                cols.iter().zip(row).map(|(c, v)| (c.name.clone(), column_text(c, v.as_ref()).map_or(Json::Null, Json::String))).collect::<Map<_, _>>().into()
            };
            let (kind, data, old) = match change {
                RowChange::Insert(r) => ("INSERT", row_json(r), Json::Null),
                RowChange::Delete(r) => ("DELETE", row_json(r), Json::Null),
                RowChange::Update { old, new } => {
                    let changed: Map<_, _> = cols
                        .iter()
                        .zip(old)
                        .zip(new)
                        .filter(|((_, o), n)| o != n)
                        .map(|((c, o), _)| (c.name.clone(), column_text(c, o.as_ref()).map_or(Json::Null, Json::String)))
                        .collect();
                    ("UPDATE", row_json(new), json!([changed]))
                }
            };
            let pk: Vec<&str> = cols.iter().filter(|c| c.primary_key).map(|c| c.name.as_str()).collect();
            json!({
                "id": 0, "database": t.table.schema, "table": t.table.name,
                "pkNames": if pk.is_empty() { Json::Null } else { json!(pk) },
                "isDdl": false, "type": kind, "es": physical_ms(commit_ts), "sql": "",
                "sqlType": cols.iter().map(|c| (c.name.clone(), json!(sql_type(c)))).collect::<Map<_, _>>(),
                "mysqlType": cols.iter().map(|c| (c.name.clone(), json!(mysql_type_name(c)))).collect::<Map<_, _>>(),
                "data": [data], "old": old, "_tidb": { "commitTs": commit_ts },
            })
        }
        let quoted = Arc::new(TableSchema {
            schema: "d\"b".into(),
            name: "t\\1\n".into(),
            columns: vec![
                Column { name: "k\"ey".into(), tp: mysql_type::LONG, unsigned: true, ..Default::default() },
                Column { name: "v".into(), tp: mysql_type::VARCHAR, ..Default::default() },
            ],
            ..Default::default()
        });
        let typed = Arc::new(TableSchema {
            schema: "db".into(),
            name: "typed".into(),
            columns: vec![
                Column { name: "d".into(), tp: mysql_type::DOUBLE, ..Default::default() },
                Column { name: "dt".into(), tp: mysql_type::DATETIME, decimal: 3, ..Default::default() },
                Column { name: "b".into(), tp: mysql_type::BLOB, binary: true, ..Default::default() },
                Column { name: "dec".into(), tp: mysql_type::NEWDECIMAL, ..Default::default() },
            ],
            ..Default::default()
        });
        let time = crate::txn::MysqlTime {
            time: crate::txn::Time { year: 2024, month: 5, day: 1, hour: 10, minute: 2, second: 3, microsecond: 450_000 },
            tp: mysql_type::DATETIME,
            fsp: 3,
        };
        let t = table();
        let mut w = Writer::default();
        for round in 0..2 {
            for (tb, change) in [
                (&t, RowChange::Insert(vec![Some(Value::Int(1)), Some(Value::Bytes("\"ü\u{1}".into())), Some(Value::Bytes(vec![0, 255]))])),
                (&t, RowChange::Update { old: vec![Some(Value::Int(1)), Some(Value::Bytes(b"a".to_vec())), None], new: vec![Some(Value::Int(1)), Some(Value::Null), None] }),
                (&t, RowChange::Delete(vec![Some(Value::Int(2)), None, Some(Value::Null)])),
                (&quoted, RowChange::Insert(vec![Some(Value::Uint(u64::MAX)), Some(Value::Bytes(b"x\ty".to_vec()))])),
                (&typed, RowChange::Insert(vec![Some(Value::Float(-1.25e-7)), Some(Value::Time(time)), Some(Value::Bytes(b"plain ascii ~".to_vec())), Some(Value::Decimal("-12.50".into()))])),
            ] {
                let tc = TableChanges { table: tb.clone(), rows: vec![change.clone()] };
                let bytes = w.row_message(7 << 18, &tc, &change);
                let mut got: Json = serde_json::from_slice(&bytes).unwrap();
                assert!(got["ts"].as_i64().unwrap() > 1_600_000_000_000, "ts is the encode time in ms");
                got.as_object_mut().unwrap().remove("ts");
                assert_eq!(got, reference(7 << 18, &tc, &change), "round {round}: {}", String::from_utf8_lossy(&bytes));
                let text = std::str::from_utf8(&bytes).unwrap();
                let at: Vec<usize> = ["\"id\"", "\"database\"", "\"table\"", "\"pkNames\"", "\"isDdl\"", "\"type\"", "\"es\"", "\"ts\"", "\"sql\"", "\"sqlType\"", "\"mysqlType\"", "\"data\"", "\"old\"", "\"_tidb\""]
                    .iter()
                    .map(|k| text.find(k).unwrap())
                    .collect();
                assert!(at.windows(2).all(|w| w[0] < w[1]), "canal's field order: {text}");
            }
        }
        assert_eq!(w.tables.len(), 3, "one cached entry per table");
    }

}
