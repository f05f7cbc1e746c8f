//! The HTTP API on the gRPC port: `/status`, `/state/{nodeID}/{pause|close}`, `/drainers`,
//! `/debug/binlog/{ts}`, `/debug/gc/trigger`, `/metrics`. Replies are upstream's shapes. Ours besides:
//! `/status` also lists `PendingPrewrites`; `GET /debug/prewrites` lists them; `POST
//! /debug/prewrites/{start_ts}/commit/{commit_ts}` and `POST /debug/prewrites/{start_ts}/rollback` settle
//! one by hand (what `binlogctl -cmd settle-prewrite` calls).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use prost::Message;
use serde::Serialize;

use super::core::{Core, Stop};
use crate::node::{NodeKind, NodeStatus};
use crate::proto::{Binlog, PrewriteValue};

/// The router of the HTTP API.
pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/state/{id}/{action}", put(state).post(state))
        .route("/drainers", get(drainers))
        .route("/debug/binlog/{ts}", get(debug_binlog))
        .route("/debug/gc/trigger", post(gc_trigger).get(gc_trigger))
        .route("/debug/prewrites", get(pending))
        .route("/debug/prewrites/{start_ts}/commit/{commit_ts}", post(settle_commit))
        .route("/debug/prewrites/{start_ts}/rollback", post(settle_rollback))
        .route("/metrics", get(metrics))
        .with_state(core)
}

fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_string_pretty(v) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /status` body.
#[derive(Serialize)]
struct StatusReply {
    status: BTreeMap<String, NodeStatus>,
    #[serde(rename = "CommitTS")]
    commit_ts: i64,
    #[serde(rename = "Checkpoint")]
    checkpoint: serde_json::Value,
    #[serde(rename = "ErrMsg")]
    err_msg: String,
    /// Ours: Prewrites of this pump waiting for their Commit.
    #[serde(rename = "PendingPrewrites")]
    pending_prewrites: Vec<super::core::PendingPrewrite>,
}

async fn status(State(core): State<Arc<Core>>) -> Response {
    let mut reply = StatusReply {
        status: BTreeMap::new(),
        commit_ts: 0,
        checkpoint: serde_json::json!({}),
        err_msg: String::new(),
        pending_prewrites: core.pending_prewrites(),
    };
    match core.registry.list(NodeKind::Pump).await {
        Ok(pumps) => reply.status = pumps.into_iter().map(|p| (p.node_id.clone(), p)).collect(),
        Err(e) => reply.err_msg = e.to_string(),
    }
    match core.fresh_ts().await {
        Ok(ts) => reply.commit_ts = ts as i64,
        Err(e) if reply.err_msg.is_empty() => reply.err_msg = e.to_string(),
        Err(_) => {}
    }
    json(&reply)
}

/// The `{message, code, data}` reply of the state API.
#[derive(Serialize)]
struct ApiReply {
    message: String,
    code: i64,
    data: Option<serde_json::Value>,
}

async fn state(State(core): State<Arc<Core>>, Path((id, action)): Path<(String, String)>) -> Response {
    let refuse = |message: String| json(&ApiReply { message, code: 3, data: None });
    if id != core.node_id {
        return refuse(format!("invalid nodeID {id}, this pump is {}", core.node_id));
    }
    let stop = match action.as_str() {
        "pause" => Stop::Pause,
        "close" => Stop::Close,
        _ => return refuse(format!("invalid action {action}, expected pause or close")),
    };
    match core.request_stop(stop) {
        Ok(()) => {
            tracing::info!(action, "state change requested over HTTP");
            json(&ApiReply { message: format!("apply action {action} success!"), code: 200, data: None })
        }
        Err(msg) => refuse(msg),
    }
}

async fn drainers(State(core): State<Arc<Core>>) -> Response {
    match core.registry.list(NodeKind::Drainer).await {
        Ok(d) => json(&d),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn debug_binlog(State(core): State<Arc<Core>>, Path(ts): Path<String>) -> Response {
    let Ok(ts) = ts.parse::<i64>() else {
        return (StatusCode::BAD_REQUEST, format!("invalid ts {ts:?}\n")).into_response();
    };
    let item = match core.store.get(ts) {
        Ok(Some(r)) => r.payload,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no binlog stored under ts {ts}\n")).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("reading ts {ts}: {e}\n")).into_response(),
    };
    let mut out = String::new();
    match Binlog::decode(item.as_ref()) {
        Ok(b) => {
            let _ = writeln!(out, "binlog: {b:?}");
            if let Some(pv) = &b.prewrite_value {
                match PrewriteValue::decode(pv.as_slice()) {
                    Ok(v) => {
                        let _ = writeln!(out, "prewrite value: {v:?}");
                    }
                    Err(e) => {
                        let _ = writeln!(out, "prewrite value does not decode: {e}");
                    }
                }
            }
            let _ = writeln!(out, "mvcc: not available (this pump does not talk to TiKV)");
        }
        Err(e) => {
            let _ = writeln!(out, "stored payload ({} bytes) does not decode as binlog.Binlog: {e}", item.len());
        }
    }
    out.into_response()
}

async fn pending(State(core): State<Arc<Core>>) -> Response {
    json(&core.pending_prewrites())
}

async fn settle(core: &Core, start_ts: i64, commit_ts: Option<i64>) -> Response {
    let what = commit_ts.map_or("rolled back".to_owned(), |c| format!("committed at {c}"));
    match core.store.settle(start_ts, commit_ts) {
        Ok(()) => {
            tracing::warn!(start_ts, ?commit_ts, "prewrite settled by hand: {what}");
            json(&ApiReply { message: format!("prewrite {start_ts} settled: {what}"), code: 200, data: None })
        }
        Err(e) => (StatusCode::BAD_REQUEST, json(&ApiReply { message: e.to_string(), code: 3, data: None })).into_response(),
    }
}

async fn settle_commit(State(core): State<Arc<Core>>, Path((start_ts, commit_ts)): Path<(i64, i64)>) -> Response {
    settle(&core, start_ts, Some(commit_ts)).await
}

async fn settle_rollback(State(core): State<Arc<Core>>, Path(start_ts): Path<i64>) -> Response {
    settle(&core, start_ts, None).await
}

async fn gc_trigger(State(core): State<Arc<Core>>) -> Response {
    if core.gc_once().await { "trigger gc success\n" } else { "gc is working\n" }.into_response()
}

async fn metrics(State(core): State<Arc<Core>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], core.metrics.render()).into_response()
}
