//! `pumps` / `drainers` (list), `update-*` (rewrite the state in etcd, with the checks of `safety`),
//! `pause-*` / `offline-*` (HTTP `PUT /state/<nodeID>/{pause|close}` to the node).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use pump::node::{NodeKind, NodeState, NodeStatus, Registry};
use serde::Deserialize;

use super::safety::{self, Severity, View};
use crate::ctx::{Ctx, PROBE_TIMEOUT, REQUEST_TIMEOUT};
use crate::output::node_line;

/// What `pause-*` / `offline-*` ask the node to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `pause`: the node goes pausing, then paused, and exits.
    Pause,
    /// `close`: the node goes closing, then offline, and exits.
    Close,
}

impl Action {
    fn path_word(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Close => "close",
        }
    }
}

/// `-cmd pumps` / `-cmd drainers`.
pub async fn list(ctx: &Ctx, kind: NodeKind) -> Result<()> {
    let reg = ctx.registry().await?;
    let nodes: Vec<NodeStatus> = reg
        .list(kind)
        .await?
        .into_iter()
        .filter(|n| ctx.flags.show_offline_nodes || n.state != NodeState::Offline)
        .collect();
    if ctx.flags.json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    if nodes.is_empty() {
        eprintln!("no {kind} registered in etcd at {}{}", ctx.endpoints(), hidden_note(ctx));
    }
    for n in &nodes {
        println!("{}", node_line(kind, n, &ctx.zone));
    }
    Ok(())
}

fn hidden_note(ctx: &Ctx) -> &'static str {
    if ctx.flags.show_offline_nodes { "" } else { " (offline nodes hidden; -show-offline-nodes shows them)" }
}

/// Whether the node's HTTP API answers `GET /status`.
pub async fn answers(ctx: &Ctx, http: &reqwest::Client, host: &str) -> bool {
    probe(ctx, http, host).await.is_some()
}

/// The body of the node's `GET /status` (JSON `null` if it is not JSON), or `None` if it does not answer.
pub async fn probe(ctx: &Ctx, http: &reqwest::Client, host: &str) -> Option<serde_json::Value> {
    let resp = http.get(ctx.node_url(host, "/status")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    Some(resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn view(reg: &Registry) -> Result<(Vec<NodeStatus>, Vec<NodeStatus>)> {
    Ok((reg.list(NodeKind::Pump).await?, reg.list(NodeKind::Drainer).await?))
}

/// `-cmd update-pump|update-drainer -node-id X -state S`.
pub async fn update(ctx: &Ctx, kind: NodeKind) -> Result<()> {
    let Some(state) = ctx.flags.state.as_deref() else {
        bail!("-cmd update-{kind}: -state is required (online, pausing, paused, closing or offline)");
    };
    let to: NodeState = state.parse().context("-state")?;
    let reg = ctx.registry().await?;
    let mut node = ctx.lookup(&reg, kind).await?;
    let from = node.state;
    if from == to {
        println!("{kind} {} is already {to}; nothing to change", node.node_id);
        return Ok(());
    }
    let (pumps, drainers) = view(&reg).await?;
    let http = ctx.http(PROBE_TIMEOUT)?;
    let alive = answers(ctx, &http, &node.host).await;
    let findings =
        safety::check_update(kind, &node, to, View { pumps: &pumps, drainers: &drainers }, Some(alive));

    let refused = findings.iter().filter(|f| f.severity == Severity::Refuse).count();
    let apply = refused == 0 || ctx.flags.force;
    if ctx.flags.json {
        let report = serde_json::json!({
            "kind": kind.to_string(),
            "node_id": node.node_id,
            "from": from.to_string(),
            "to": to.to_string(),
            "meaning": safety::explain(kind, to),
            "findings": findings.iter().map(|f| serde_json::json!({
                "severity": if f.severity == Severity::Refuse { "data_loss_risk" } else { "note" },
                "message": f.message,
            })).collect::<Vec<_>>(),
            "applied": apply,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{kind} {}: {from} -> {to}", node.node_id);
        println!("  what {to} means: {}", safety::explain(kind, to));
        for f in &findings {
            let tag = match f.severity {
                Severity::Refuse => "DATA LOSS RISK",
                Severity::Warn => "note",
            };
            println!("  {tag}: {}", f.message);
        }
    }
    if !apply {
        bail!(
            "refusing to set {kind} {} to {to}: {refused} data-loss risk(s) above; re-run with -force to apply it anyway",
            node.node_id
        );
    }
    node.state = to;
    reg.update(kind, &node).await?;
    if !ctx.flags.json {
        println!("updated {kind} {} in etcd: state {from} -> {to}", node.node_id);
    }
    Ok(())
}

/// The node's answer to `PUT /state/<id>/<action>`.
#[derive(Debug, Deserialize)]
pub(crate) struct ApiReply {
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) code: i64,
}

/// Sends `req` to a node's HTTP API at `url` and reads its `{message, code}` reply; `unreachable` says
/// what to do when the node does not answer.
pub(crate) async fn api_call(req: reqwest::RequestBuilder, url: &str, unreachable: impl FnOnce() -> String) -> Result<ApiReply> {
    let resp = req.send().await.with_context(unreachable)?;
    let status = resp.status();
    let body = resp.text().await.with_context(|| format!("reading the reply of {url}"))?;
    serde_json::from_str(&body)
        .with_context(|| format!("{url} replied HTTP {status} with something that is not the node API's JSON: {body:?}"))
}

/// `-cmd pause-*|offline-* -node-id X`: look the node up, then ask it over HTTP.
pub async fn apply(ctx: &Ctx, kind: NodeKind, action: Action) -> Result<()> {
    let reg = ctx.registry().await?;
    let node = ctx.lookup(&reg, kind).await?;
    if action == Action::Close {
        let (pumps, drainers) = view(&reg).await?;
        for f in safety::check_offline_request(kind, &node, View { pumps: &pumps, drainers: &drainers }) {
            if ctx.flags.json {
                eprintln!("note: {}", f.message);
            } else {
                println!("note: {}", f.message);
            }
        }
    }
    let word = action.path_word();
    let url = ctx.node_url(&node.host, &format!("/state/{}/{word}", node.node_id));
    let http = ctx.http(REQUEST_TIMEOUT)?;
    let reply = api_call(http.put(&url), &url, || {
        format!(
            "{kind} {} ({}) does not answer at {url}; if its process is gone for good, fix its state with \
             -cmd update-{kind} -state {}",
            node.node_id,
            node.state,
            if action == Action::Pause { "paused" } else { "offline" }
        )
    })
    .await?;
    if reply.code != 200 {
        bail!("{kind} {} refused {word}: {} (code {})", node.node_id, reply.message, reply.code);
    }
    let end = if action == Action::Pause { NodeState::Paused } else { NodeState::Offline };
    if ctx.flags.json {
        // One JSON object: the node's reply, and with -wait the state it reached.
        if ctx.flags.wait {
            wait_for_state(&reg, kind, &node.node_id, end, ctx.flags.wait_timeout, false).await?;
        }
        let report = serde_json::json!({
            "kind": kind.to_string(),
            "node_id": node.node_id,
            "action": word,
            "message": reply.message,
            "state": if ctx.flags.wait { end.to_string() } else { format!("shutting down to {end}") },
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{kind} {}: {}", node.node_id, reply.message);
    if !ctx.flags.wait {
        println!("the {kind} now shuts down and records itself as {end}; check with -cmd {kind}s -show-offline-nodes");
        return Ok(());
    }
    wait_for_state(&reg, kind, &node.node_id, end, ctx.flags.wait_timeout, true).await
}

/// Polls etcd until the node shows `end`, printing each state it passes through; for a closing pump it
/// names, every few seconds, the drainers it still waits for.
async fn wait_for_state(
    reg: &Registry,
    kind: NodeKind,
    id: &str,
    end: NodeState,
    timeout: Duration,
    print: bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_state = None;
    let mut last_note: Option<Instant> = None;
    loop {
        let Some(n) = reg.get(kind, id).await? else {
            bail!("{kind} {id} disappeared from etcd while waiting for it to become {end}");
        };
        if last_state != Some(n.state) {
            if print {
                println!("{kind} {id}: {}", n.state);
            }
            last_state = Some(n.state);
        }
        if n.state == end {
            return Ok(());
        }
        if kind == NodeKind::Pump
            && n.state == NodeState::Closing
            && last_note.is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            let (pumps, drainers) = view(reg).await?;
            let view = View { pumps: &pumps, drainers: &drainers };
            for f in safety::check_update(kind, &n, NodeState::Offline, view, None) {
                if print {
                    println!("  waiting: {}", f.message.split(':').next().unwrap_or_default());
                }
            }
            last_note = Some(Instant::now());
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {} waiting for {kind} {id} to become {end}; it is {}",
                humantime::format_duration(timeout),
                n.state
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
