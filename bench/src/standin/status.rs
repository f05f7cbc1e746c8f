//! TiDB's status API for schemas, served from the stand-in's catalog (tidb-model.md §7): success is 200
//! with one-space-indented JSON, any error is 400 with a plain-text message.
//!
//! Routes: `GET /ddl/history[?start_job_id=&limit=]` (newest first, at most 2048), `GET /schema`,
//! `GET /schema/{db}`, `GET /schema/{db}/{table}`, `GET /schema?table_id=N`, `GET /schema?table_ids=a,b`,
//! `GET /db-table/{id}`, `GET /status`; `GET /mvcc/hex/{key}` ([`mvcc_router`]): what TiKV knows of the
//! transactions whose primary key is `key`, in TiDB's JSON (what the pump's resolver reads).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use drainer::tidb::model::to_status_json;

use super::catalog::Catalog;

/// Most jobs one `/ddl/history` answer holds (`DefNumGetDDLHistoryJobs`).
pub const MAX_HISTORY: usize = 2048;

/// The shared catalog the routes read.
pub type Shared = Arc<RwLock<Catalog>>;

/// Each transaction's outcome by its primary key (the P-binlog's `prewrite_key`): (start_ts, commit_ts
/// or `None` if it rolled back), recorded when it commits or rolls back upstream.
#[derive(Debug, Clone, Default)]
pub struct Mvcc(Arc<std::sync::Mutex<HashMap<Vec<u8>, Vec<(u64, Option<u64>)>>>>);

impl Mvcc {
    /// Records the outcome of the transaction `start_ts` whose primary key is `key`.
    pub fn record(&self, key: &[u8], start_ts: u64, commit_ts: Option<u64>) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key.to_vec()).or_default().push((start_ts, commit_ts));
    }
}

/// `GET /mvcc/hex/{key}`: `{"key", "region_id", "value": {"info": {"writes": [...]}}}`, newest write
/// first, a Rollback as `"type": 3` with `commit_ts = start_ts`, a Put with no `type` (kvproto's JSON).
pub fn mvcc_router(mvcc: Mvcc) -> Router {
    Router::new().route("/mvcc/hex/{key}", get(mvcc_hex)).with_state(mvcc)
}

async fn mvcc_hex(State(m): State<Mvcc>, Path(key): Path<String>) -> Response {
    let Ok(raw) = hex::decode(&key) else { return bad(format!("invalid hex key {key}")) };
    let writes: Vec<serde_json::Value> = m
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&raw)
        .map(|v| {
            v.iter()
                .rev()
                .map(|&(start, commit)| match commit {
                    Some(c) => serde_json::json!({"start_ts": start, "commit_ts": c}),
                    None => serde_json::json!({"type": 3, "start_ts": start, "commit_ts": start}),
                })
                .collect()
        })
        .unwrap_or_default();
    let info = if writes.is_empty() { serde_json::json!({}) } else { serde_json::json!({"writes": writes}) };
    ok_json(serde_json::json!({"key": key, "region_id": 2, "value": {"info": info}}).to_string())
}

/// The router of the status API.
pub fn router(catalog: Shared) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/ddl/history", get(ddl_history))
        .route("/schema", get(schema_root))
        .route("/schema/{db}", get(schema_db))
        .route("/schema/{db}/{table}", get(schema_table))
        .route("/db-table/{id}", get(db_table))
        .with_state(catalog)
}

fn ok_json(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn bad(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, msg.into()).into_response()
}

/// `/schema/{db}` writes its array by hand: `[\n` + items joined by `,\n` + `\n]`, `[]` when empty.
fn hand_array(items: Vec<String>) -> String {
    if items.is_empty() { "[]".into() } else { format!("[\n{}\n]", items.join(",\n")) }
}

async fn status(State(c): State<Shared>) -> Response {
    let v = c.read().map(|c| c.version()).unwrap_or(0);
    ok_json(to_status_json(&serde_json::json!({"connections": 0, "version": "5.7.25-TiDB-standin", "git_hash": "", "schema_version": v})))
}

async fn ddl_history(State(c): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let start = match q.get("start_job_id") {
        None => None,
        Some(s) => match s.parse::<i64>() {
            Ok(v) if v >= 1 => Some(v),
            _ => return bad("ddl history start_job_id must be greater than 0"),
        },
    };
    let limit = match q.get("limit") {
        None => None,
        Some(s) => match s.parse::<usize>() {
            Ok(v) if (1..=MAX_HISTORY).contains(&v) => Some(v),
            _ => return bad(format!("ddl history limit must be greater than 0 and less than or equal to {MAX_HISTORY}")),
        },
    };
    if start.is_some() && limit.is_none() {
        return bad("when 'start_job_id' is specified, it must work with a 'limit'");
    }
    let Ok(c) = c.read() else { return bad("catalog unavailable") };
    let jobs = c.history_desc(start, limit.unwrap_or(MAX_HISTORY));
    ok_json(to_status_json(&jobs))
}

async fn schema_root(State(c): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Ok(c) = c.read() else { return bad("catalog unavailable") };
    if let Some(id) = q.get("table_id") {
        let Ok(id) = id.parse::<i64>() else { return bad(format!("invalid table_id {id:?}")) };
        if id < 0 {
            return bad(format!("invalid table_id {id}"));
        }
        return match c.table_by_id(id) {
            Some((_, t)) => ok_json(to_status_json(t)),
            None => bad(format!("[schema:1146]Table which ID = {id} does not exist.")),
        };
    }
    if let Some(ids) = q.get("table_ids") {
        let mut out = BTreeMap::new();
        for s in ids.split(',').filter(|s| !s.is_empty()) {
            let Ok(id) = s.trim().parse::<i64>() else { return bad(format!("invalid table id {s:?}")) };
            if let Some((_, t)) = c.table_by_id(id) {
                out.insert(t.id.to_string(), t.clone());
            }
        }
        if out.is_empty() {
            return bad("All tables are not found");
        }
        return ok_json(to_status_json(&out));
    }
    let dbs: Vec<_> = c.dbs().collect();
    ok_json(to_status_json(&dbs))
}

async fn schema_db(State(c): State<Shared>, Path(db): Path<String>) -> Response {
    let Ok(c) = c.read() else { return bad("catalog unavailable") };
    let Some(d) = c.db_by_name(&db) else { return bad(format!("[schema:1049]Unknown database '{db}'")) };
    ok_json(hand_array(c.tables_in(d.id).into_iter().map(to_status_json).collect()))
}

async fn schema_table(State(c): State<Shared>, Path((db, table)): Path<(String, String)>) -> Response {
    let Ok(c) = c.read() else { return bad("catalog unavailable") };
    if c.db_by_name(&db).is_none() {
        return bad(format!("[schema:1049]Unknown database '{db}'"));
    }
    match c.table_by_name(&db, &table) {
        Some(t) => ok_json(to_status_json(t)),
        None => bad(format!("[schema:1146]Table '{db}.{table}' doesn't exist")),
    }
}

/// The `/db-table/{id}` answer, keys in TiDB's order.
#[derive(serde::Serialize)]
struct DbTable<'a> {
    db_info: &'a drainer::tidb::model::DBInfo,
    table_info: &'a drainer::tidb::model::TableInfo,
    schema_version: i64,
}

async fn db_table(State(c): State<Shared>, Path(id): Path<String>) -> Response {
    let Ok(c) = c.read() else { return bad("catalog unavailable") };
    let Ok(id) = id.parse::<i64>() else { return bad(format!("invalid table id {id:?}")) };
    match c.table_by_id(id) {
        Some((d, t)) => ok_json(to_status_json(&DbTable { db_info: d, table_info: t, schema_version: c.version() })),
        None => bad(format!("[schema:1146]Table which ID = {id} does not exist.")),
    }
}
