//! `canal-json` (ours, `kafka-format = "canal-json"`): the JSON of Alibaba Canal's flat messages, as
//! TiCDC writes it with its TiDB extension, so consumers built for Canal or TiCDC read our topic.
//!
//! One message per row change, and one per DDL:
//! `{"id":0,"database":..,"table":..,"pkNames":[..],"isDdl":false,"type":"INSERT|UPDATE|DELETE",
//! "es":<commit ms>,"ts":<encode ms>,"sql":"","sqlType":{col:<java.sql.Types>},"mysqlType":{col:<type>},
//! "data":[{col:"text"|null}],"old":null|[{changed col:"old text"}],"_tidb":{"commitTs":<ts>}}`;
//! a DDL has `"isDdl":true,"type":"QUERY","sql":<query>` and null maps; a resolved ts is
//! `"type":"TIDB_WATERMARK"` with `"_tidb":{"watermarkTs":<ts>}`. Values are text ([`column_text`]).
//! The messages of one transaction in one partition carry the chunk header `"i/n"`, so a restarted
//! sink (and any consumer) can tell whether the last transaction in a partition is complete.

use serde_json::{Map, Value as Json, json};

use super::translate::column_text;
use crate::txn::{Column, Ddl, Row, RowChange, TableChanges};

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

/// The physical part of a TSO (ms since the epoch).
fn physical_ms(ts: i64) -> i64 {
    ts >> 18
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn row_json(cols: &[Column], row: &Row) -> Json {
    let mut m = Map::with_capacity(cols.len());
    for (c, v) in cols.iter().zip(row) {
        m.insert(c.name.clone(), column_text(c, v.as_ref()).map_or(Json::Null, Json::String));
    }
    Json::Object(m)
}

/// The message of one row change of `t` in the transaction with `commit_ts`.
pub fn row_message(commit_ts: i64, t: &TableChanges, change: &RowChange) -> Vec<u8> {
    let cols = &t.table.columns;
    let pk: Vec<&str> = match t.table.unique_keys.iter().find(|k| k.is_primary()) {
        Some(k) => k.columns.iter().filter_map(|&i| cols.get(i)).map(|c| c.name.as_str()).collect(),
        None => cols.iter().filter(|c| c.primary_key).map(|c| c.name.as_str()).collect(),
    };
    let (kind, data, old) = match change {
        RowChange::Insert(r) => ("INSERT", row_json(cols, r), Json::Null),
        RowChange::Delete(r) => ("DELETE", row_json(cols, r), Json::Null),
        RowChange::Update { old, new } => {
            let mut changed = Map::new();
            for ((c, o), n) in cols.iter().zip(old).zip(new) {
                if o != n {
                    changed.insert(c.name.clone(), column_text(c, o.as_ref()).map_or(Json::Null, Json::String));
                }
            }
            ("UPDATE", row_json(cols, new), json!([changed]))
        }
    };
    let sql_types: Map<String, Json> = cols.iter().map(|c| (c.name.clone(), json!(sql_type(c)))).collect();
    let mysql_types: Map<String, Json> = cols.iter().map(|c| (c.name.clone(), json!(c.type_name()))).collect();
    let msg = json!({
        "id": 0,
        "database": t.table.schema,
        "table": t.table.name,
        "pkNames": if pk.is_empty() { Json::Null } else { json!(pk) },
        "isDdl": false,
        "type": kind,
        "es": physical_ms(commit_ts),
        "ts": now_ms(),
        "sql": "",
        "sqlType": sql_types,
        "mysqlType": mysql_types,
        "data": [data],
        "old": old,
        "_tidb": { "commitTs": commit_ts },
    });
    msg.to_string().into_bytes()
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
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
}
