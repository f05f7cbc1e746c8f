//! `status` (ours): every node with its state, max commit ts, lag and heartbeat age, whether its HTTP
//! API answers, which drainer holds back pump GC, and for each drainer why it is not advancing.
//! Read-only: it writes nothing to etcd (not even a TSO); "now" is this machine's clock.
//!
//! A drainer that answers is also asked for its `/status` (`PumpPos`: the newest commit ts it received
//! from each pump). The merge can only emit up to the smallest of those, so the pump with the smallest
//! position is the one the drainer waits for.

use anyhow::Result;
use pump::node::{NodeKind, NodeState, NodeStatus};
use serde::Serialize;

use super::nodes::probe;
use crate::ctx::{Ctx, PROBE_TIMEOUT};
use crate::output::{age_secs, now_ms};

/// A heartbeat older than this means the node's process is probably gone (pump beats every 2 s,
/// drainer every 1 s).
pub const STALE_HEARTBEAT_SECS: i64 = 10;

/// A drainer this far behind the pumps with nothing blocking it is called slow. Its checkpoint trails
/// what it has written by up to the savepoint interval (3 s) plus a heartbeat, so a few seconds are normal.
pub const SLOW_SECS: i64 = 10;

/// One node as `status` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// pump or drainer.
    pub kind: &'static str,
    /// The registry entry.
    #[serde(flatten)]
    pub node: NodeStatus,
    /// Seconds between the time of `maxCommitTS` and now.
    #[serde(rename = "lagSeconds")]
    pub lag_secs: Option<i64>,
    /// Seconds since the last heartbeat (`updateTS`).
    #[serde(rename = "heartbeatAgeSeconds")]
    pub heartbeat_age_secs: Option<i64>,
    /// Whether `GET /status` answered (not probed for offline nodes).
    pub answers: Option<bool>,
    /// Pump only, when paused: whether its pause record (ours) says it paused holding no open Prewrite,
    /// so drainers may go on without it past its max commit ts.
    #[serde(rename = "cleanPause", skip_serializing_if = "Option::is_none")]
    pub clean_pause: Option<bool>,
    /// Drainer only: the newest commit ts it received from each pump (its `/status` `PumpPos`).
    #[serde(rename = "pumpPos", skip_serializing_if = "Option::is_none")]
    pub pump_pos: Option<std::collections::BTreeMap<String, i64>>,
    /// Why this node holds things up (drainer: why it is not advancing; pump: what a closing pump waits for).
    pub problems: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every pump.
    pub pumps: Vec<Row>,
    /// Every drainer.
    pub drainers: Vec<Row>,
    /// Who holds back pump GC, if anyone.
    #[serde(rename = "gcHeldBy")]
    pub gc_held_by: Option<GcHold>,
}

/// The drainer whose checkpoint bounds pump GC.
#[derive(Debug, Clone, Serialize)]
pub struct GcHold {
    /// The drainer.
    #[serde(rename = "nodeId")]
    pub node_id: String,
    /// Its state.
    pub state: NodeState,
    /// Pumps keep every binlog newer than this ts.
    #[serde(rename = "commitTS")]
    pub commit_ts: i64,
}

/// `-cmd status`.
pub async fn status(ctx: &Ctx) -> Result<()> {
    let reg = ctx.registry().await?;
    let pumps = reg.list(NodeKind::Pump).await?;
    let drainers = reg.list(NodeKind::Drainer).await?;
    let http = ctx.http(PROBE_TIMEOUT)?;
    let ask = |n: &NodeStatus| {
        let (http, host, live) = (http.clone(), n.host.clone(), n.state != NodeState::Offline);
        async move { if live { Some(probe(ctx, &http, &host).await) } else { None } }
    };
    let pump_up = futures::future::join_all(pumps.iter().map(ask)).await;
    let drainer_up = futures::future::join_all(drainers.iter().map(ask)).await;
    let records = reg.pause_records().await?;
    let report = build(&pumps, &pump_up, &drainers, &drainer_up, &records, now_ms());
    if ctx.flags.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, ctx));
    }
    Ok(())
}

/// What probing a node gave: not probed (offline), no answer, or its `/status` body.
pub type Probe = Option<Option<serde_json::Value>>;

fn row(kind: NodeKind, n: &NodeStatus, probe: &Probe, now: i64) -> Row {
    let pump_pos = probe.as_ref().and_then(|b| b.as_ref()).and_then(|b| b.get("PumpPos")).and_then(|m| {
        m.as_object().map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_i64()?))).collect())
    });
    let mut problems = Vec::new();
    if kind == NodeKind::Pump {
        problems.extend(pending_problem(n, probe.as_ref().and_then(|b| b.as_ref())));
    }
    Row {
        kind: kind.name(),
        node: n.clone(),
        lag_secs: age_secs(n.max_commit_ts, now),
        heartbeat_age_secs: age_secs(n.update_ts, now),
        answers: probe.as_ref().map(Option::is_some),
        pump_pos: if kind == NodeKind::Drainer { pump_pos } else { None },
        clean_pause: None,
        problems,
    }
}

/// A Prewrite pending this long is named (an open transaction's Prewrite waits for seconds at most).
pub const PENDING_SECS: i64 = 30;

/// The pump's `/status` `PendingPrewrites` (ours): the oldest Prewrite waiting for its Commit longer
/// than [`PENDING_SECS`] holds the pump's watermark and every drainer; say which and what to do.
fn pending_problem(n: &NodeStatus, body: Option<&serde_json::Value>) -> Option<String> {
    let list = body?.get("PendingPrewrites")?.as_array()?;
    let old: Vec<(i64, i64)> = list
        .iter()
        .filter_map(|p| Some((p.get("startTS")?.as_i64()?, p.get("ageSeconds")?.as_i64()?)))
        .filter(|(_, age)| *age > PENDING_SECS)
        .collect();
    let (start_ts, age) = *old.first()?;
    Some(format!(
        "{} prewrite(s) wait for their commit; the oldest, start_ts {start_ts}, for {age}s: the pump's watermark \
         and every drainer wait for it. Check that transaction in TiDB, then run binlogctl -cmd settle-prewrite \
         -node-id {} -start-ts {start_ts} with -commit-ts N (it committed) or -rollback (it did not)",
        old.len(),
        n.node_id
    ))
}

fn stale(r: &Row) -> bool {
    r.heartbeat_age_secs.is_none_or(|a| a > STALE_HEARTBEAT_SECS)
}

/// Builds the report from the registry and the probes (pure, for tests).
pub fn build(
    pumps: &[NodeStatus],
    pump_up: &[Probe],
    drainers: &[NodeStatus],
    drainer_up: &[Probe],
    pause_records: &std::collections::BTreeMap<String, i64>,
    now: i64,
) -> Report {
    let mut prows: Vec<Row> = pumps.iter().zip(pump_up).map(|(n, up)| row(NodeKind::Pump, n, up, now)).collect();
    for p in prows.iter_mut().filter(|p| p.node.state == NodeState::Paused) {
        p.clean_pause = Some(pause_records.get(&p.node.node_id) == Some(&p.node.max_commit_ts));
    }
    let mut drows: Vec<Row> =
        drainers.iter().zip(drainer_up).map(|(n, up)| row(NodeKind::Drainer, n, up, now)).collect();
    // The pumps a drainer pulls from: every non-offline pump but a paused one, which it only drains up
    // to the maxCommitTS the pump registered (see drainer::merge).
    let pulled = |r: &&Row| r.node.state != NodeState::Offline && r.node.state != NodeState::Paused;
    let slowest_pump = prows.iter().filter(pulled).map(|p| p.node.max_commit_ts).min();

    // A standby of an HA task (ours) replicates nothing by design: it reports its active's checkpoint.
    for d in drows.iter_mut().filter(|d| d.node.state != NodeState::Offline && !is_standby(&d.node)) {
        let mut why = Vec::new();
        if d.node.state != NodeState::Online {
            why.push(format!("drainer is {}: it replicates nothing until it is started again", d.node.state));
        }
        if d.answers == Some(false) {
            why.push(format!("drainer does not answer at {}: its process is not running or not reachable", d.node.host));
        } else if stale(d) {
            why.push(format!(
                "last drainer heartbeat {} ago",
                d.heartbeat_age_secs.map_or("never".into(), |a| format!("{a}s"))
            ));
        }
        why.extend(pump_waits(d, &prows));
        if slowest_pump.is_none() && why.is_empty() {
            why.push("no pump is online: there is nothing to pull".into());
        }
        if why.is_empty()
            && let Some(pos) = &d.pump_pos
        {
            why.extend(merge_wait(pos, &prows));
        }
        if why.is_empty()
            && let Some(p) = slowest_pump
        {
            let behind = (crate::output::ts_ms(p) - crate::output::ts_ms(d.node.max_commit_ts)) / 1000;
            if behind > SLOW_SECS {
                why.push(format!(
                    "behind the pumps by {behind}s but nothing blocks it: the downstream or the drainer is slow (see its metrics)"
                ));
            }
        }
        d.problems = why;
    }

    // A closing pump waits for every non-offline drainer to catch up with it.
    for p in prows.iter_mut().filter(|p| p.node.state == NodeState::Closing) {
        for d in drows.iter().filter(|d| d.node.state != NodeState::Offline && d.node.max_commit_ts < p.node.max_commit_ts) {
            p.problems.push(format!(
                "closing: waits for drainer {} ({}) to consume up to ts {} (it is at {})",
                d.node.node_id, d.node.state, p.node.max_commit_ts, d.node.max_commit_ts
            ));
        }
    }

    let gc_held_by = drows
        .iter()
        .filter(|d| d.node.state != NodeState::Offline)
        .min_by_key(|d| d.node.max_commit_ts)
        .map(|d| GcHold { node_id: d.node.node_id.clone(), state: d.node.state, commit_ts: d.node.max_commit_ts });
    Report { pumps: prows, drainers: drows, gc_held_by }
}

/// A drainer waiting to take over its HA task (ours).
fn is_standby(n: &NodeStatus) -> bool {
    n.role.as_deref() == Some("standby")
}

/// The STATE cell: the state, and for a drainer of an HA task its role and task (ours).
fn state_cell(n: &NodeStatus) -> String {
    match (&n.task, &n.role) {
        (Some(t), Some(r)) => format!("{} ({r}, task {t})", n.state),
        _ => n.state.to_string(),
    }
}

/// The pumps that keep drainer `d` from advancing. A pump it pulls from (online, pausing, closing) holds
/// the merge while it does not answer or its heartbeat is stale. A paused pump with a pause record holds
/// it only until the drainer has received everything up to the pump's registered maxCommitTS; after that
/// the merge goes on without it. A paused pump without one always holds it. What the drainer received is the larger of its `PumpPos` for the pump and its checkpoint.
fn pump_waits(d: &Row, pumps: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for p in pumps.iter().filter(|p| p.node.state != NodeState::Offline) {
        let id = &p.node.node_id;
        if p.node.state == NodeState::Paused && p.clean_pause != Some(true) {
            out.push(format!(
                "waits for pump {id}, which is paused without a record that it holds no open transaction (it \
                 paused with prewrites whose commit had not arrived, or it was set paused by hand): a commit \
                 it holds could still come below the drainer's position, so the drainer waits for it, as \
                 upstream; start the pump, or once you know it holds nothing needed, -cmd update-pump -state \
                 offline -force"
            ));
        } else if p.node.state == NodeState::Paused {
            // Everything up to its checkpoint the drainer has consumed, from every pump.
            let pos = d.pump_pos.as_ref().and_then(|pos| pos.get(id).copied()).unwrap_or(0);
            let received = pos.max(d.node.max_commit_ts);
            if received < p.node.max_commit_ts {
                out.push(format!(
                    "waits for pump {id}, which is paused: it holds binlogs up to ts {} and the drainer has received \
                     up to ts {received}; start the pump so the drainer can pull the rest (if they are not needed, \
                     -cmd update-pump -state offline -force drops them)",
                    p.node.max_commit_ts
                ));
            }
        } else if p.answers == Some(false) {
            out.push(format!(
                "waits for pump {id}, which is {} in etcd but does not answer at {}",
                p.node.state, p.node.host
            ));
        } else if stale(p) {
            out.push(format!(
                "waits for pump {id}, whose last heartbeat was {} ago",
                p.heartbeat_age_secs.map_or("never".into(), |a| format!("{a}s"))
            ));
        }
    }
    out
}

/// From a drainer's `PumpPos`: the pump its merge waits for, if that pump is well behind the newest one
/// (more than [`STALE_HEARTBEAT_SECS`]) or has sent nothing at all.
fn merge_wait(pos: &std::collections::BTreeMap<String, i64>, pumps: &[Row]) -> Vec<String> {
    // A paused pump sends nothing new: its position stays behind without holding the merge.
    let live: Vec<&Row> =
        pumps.iter().filter(|p| !matches!(p.node.state, NodeState::Offline | NodeState::Paused)).collect();
    let mut out: Vec<String> = live
        .iter()
        .filter(|p| !pos.contains_key(&p.node.node_id))
        .map(|p| format!("has received nothing from pump {} yet; its merge waits for that pump", p.node.node_id))
        .collect();
    let known: Vec<(&str, i64)> =
        live.iter().filter_map(|p| pos.get(&p.node.node_id).map(|ts| (p.node.node_id.as_str(), *ts))).collect();
    if let (Some(min), Some(max)) = (known.iter().min_by_key(|k| k.1), known.iter().max_by_key(|k| k.1)) {
        let behind = (crate::output::ts_ms(max.1) - crate::output::ts_ms(min.1)) / 1000;
        if behind > STALE_HEARTBEAT_SECS {
            out.push(format!(
                "its merge waits for pump {}: received up to ts {} from it, {behind}s behind pump {}",
                min.0, min.1, max.0
            ));
        }
    }
    out
}

fn render(r: &Report, ctx: &Ctx) -> String {
    let mut out = String::new();
    let header = ["KIND", "NODE ID", "ADDR", "STATE", "MAX COMMIT TS", "COMMIT TIME", "LAG", "HEARTBEAT", "ANSWERS"];
    let mut lines: Vec<[String; 9]> = vec![header.map(String::from)];
    let secs = |s: Option<i64>| s.map_or("-".to_string(), |s| format!("{s}s"));
    for row in r.pumps.iter().chain(&r.drainers) {
        let n = &row.node;
        lines.push([
            row.kind.to_string(),
            n.node_id.clone(),
            n.host.clone(),
            state_cell(n),
            n.max_commit_ts.to_string(),
            if n.max_commit_ts > 0 { ctx.zone.format_ts(n.max_commit_ts) } else { "-".into() },
            secs(row.lag_secs),
            secs(row.heartbeat_age_secs).replace('s', "s ago"),
            row.answers.map_or("-".into(), |a| if a { "yes".into() } else { "no".into() }),
        ]);
    }
    let widths: Vec<usize> = (0..9).map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0)).collect();
    for l in &lines {
        let cells: Vec<String> = l.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push('\n');
    match &r.gc_held_by {
        Some(g) => out.push_str(&format!(
            "pump GC: held back by drainer {} ({}) at ts {} ({}); pumps keep every binlog newer than that\n",
            g.node_id,
            g.state,
            g.commit_ts,
            ctx.zone.format_ts(g.commit_ts)
        )),
        None => out.push_str("pump GC: no non-offline drainer, so only the pumps' gc retention applies\n"),
    }
    for row in r.pumps.iter().chain(&r.drainers).filter(|r| r.node.state != NodeState::Offline) {
        let name = format!("{} {}", row.kind, row.node.node_id);
        if row.kind == "drainer" && is_standby(&row.node) {
            let task = row.node.task.as_deref().unwrap_or("");
            out.push_str(&format!("{name}: standby of task {task}, takes over when the active drainer stops\n"));
        } else if row.problems.is_empty() {
            if row.kind == "drainer" {
                out.push_str(&format!("{name}: advancing, nothing blocks it\n"));
            }
        } else {
            out.push_str(&format!("{name}: not advancing because\n"));
            for p in &row.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000;
    const UP: Probe = Some(Some(serde_json::Value::Null));
    const DOWN: Probe = Some(None);
    const SKIP: Probe = None;

    fn node(id: &str, state: NodeState, commit_ms: i64, beat_ms: i64) -> NodeStatus {
        let mut n = NodeStatus::new(id, "127.0.0.1:1", state);
        n.max_commit_ts = commit_ms << 18;
        n.update_ts = beat_ms << 18;
        n
    }

    #[test]
    fn a_standby_of_an_ha_task_is_not_diagnosed_as_stalled() {
        let pumps = [node("p1", NodeState::Online, NOW - 1_000, NOW - 500)];
        let mut active = node("d1", NodeState::Online, NOW - 2_000, NOW - 500);
        active.task = Some("t".into());
        active.role = Some("active".into());
        // A standby with a stale-looking checkpoint and no `/status` answer is fine: it waits.
        let mut standby = node("d2", NodeState::Online, NOW - 2_000, NOW - 500);
        standby.task = Some("t".into());
        standby.role = Some("standby".into());
        let r = build(&pumps, &[UP], &[active, standby], &[UP, DOWN], &Default::default(), NOW);
        assert!(r.drainers[1].problems.is_empty(), "{:?}", r.drainers[1].problems);
        assert_eq!(state_cell(&r.drainers[0].node), "online (active, task t)");
        assert_eq!(state_cell(&r.drainers[1].node), "online (standby, task t)");
    }

    #[test]
    fn paused_pump_blocks_every_drainer_and_slowest_drainer_holds_gc() {
        let pumps = [node("p1", NodeState::Online, NOW - 3000, NOW - 1000), node("p2", NodeState::Paused, NOW - 60_000, NOW - 60_000)];
        let drainers = [node("d1", NodeState::Online, NOW - 61_000, NOW - 500), node("d2", NodeState::Paused, NOW - 90_000, NOW - 90_000), node("d3", NodeState::Offline, 1, 1)];
        let r = build(&pumps, &[UP, DOWN], &drainers, &[UP, DOWN, SKIP], &records(&pumps), NOW);
        assert_eq!(r.pumps[0].lag_secs, Some(3));
        assert_eq!(r.drainers[0].heartbeat_age_secs, Some(0));
        let d1 = &r.drainers[0].problems;
        assert_eq!(d1.len(), 1, "{d1:?}");
        assert!(d1[0].contains("pump p2, which is paused"), "{d1:?}");
        let d2 = &r.drainers[1].problems;
        assert!(d2[0].contains("drainer is paused") && d2[1].contains("does not answer"), "{d2:?}");
        assert!(r.drainers[2].problems.is_empty(), "offline drainers are not diagnosed");
        let gc = r.gc_held_by.unwrap();
        assert_eq!((gc.node_id.as_str(), gc.state), ("d2", NodeState::Paused));
    }

    #[test]
    fn healthy_drainer_behind_is_called_slow_and_closing_pump_names_its_wait() {
        let pumps = [node("p1", NodeState::Closing, NOW - 1000, NOW - 1000)];
        let drainers = [node("d1", NodeState::Online, NOW - 30_000, NOW - 200)];
        let r = build(&pumps, &[UP], &drainers, &[UP], &records(&pumps), NOW);
        // A closing pump still serves its binlogs: the drainer pulls from it as from an online one.
        assert_eq!(r.drainers[0].problems.len(), 1, "{:?}", r.drainers[0].problems);
        assert!(r.drainers[0].problems[0].contains("behind the pumps by 29s"), "{:?}", r.drainers[0].problems);
        assert!(r.pumps[0].problems[0].contains("waits for drainer d1"), "{:?}", r.pumps[0].problems);
        // A closing pump that does not answer holds the merge.
        let r = build(&pumps, &[DOWN], &drainers, &[UP], &records(&pumps), NOW);
        assert!(r.drainers[0].problems[0].contains("pump p1, which is closing in etcd but does not answer"), "{:?}", r.drainers[0].problems);

        let pumps = [node("p1", NodeState::Online, NOW - 1000, NOW - 1000)];
        let r = build(&pumps, &[UP], &drainers, &[UP], &records(&pumps), NOW);
        assert_eq!(r.drainers[0].problems.len(), 1);
        assert!(r.drainers[0].problems[0].contains("behind the pumps by 29s"), "{:?}", r.drainers[0].problems);
        let caught_up = [node("d1", NodeState::Online, NOW - 1000, NOW - 200)];
        assert!(build(&pumps, &[UP], &caught_up, &[UP], &records(&pumps), NOW).drainers[0].problems.is_empty());
        // A checkpoint a few seconds behind (savepoint cadence) is normal.
        let trailing = [node("d1", NodeState::Online, NOW - 1000 - SLOW_SECS * 1000, NOW - 200)];
        assert!(build(&pumps, &[UP], &trailing, &[UP], &records(&pumps), NOW).drainers[0].problems.is_empty());
    }

    #[test]
    fn paused_pump_holds_a_drainer_only_until_it_received_the_pumps_binlogs() {
        let pumps = [node("p1", NodeState::Online, NOW - 1000, NOW - 1000), node("p2", NodeState::Paused, NOW - 60_000, NOW - 60_000)];
        let drainers = [node("d1", NodeState::Online, NOW - 2000, NOW - 100)];
        // Received p2's last binlog (and went on with p1 only): nothing blocks it, and p2's old
        // position is not a merge wait either.
        let pos = |p2_ms: i64| Some(Some(serde_json::json!({"PumpPos": {"p1": (NOW - 1000) << 18, "p2": p2_ms << 18}})));
        let r = build(&pumps, &[UP, DOWN], &drainers, &[pos(NOW - 60_000)], &records(&pumps), NOW);
        assert!(r.drainers[0].problems.is_empty(), "{:?}", r.drainers[0].problems);
        // Not yet received: it waits for the paused pump, whose process is gone.
        let behind = [node("d1", NodeState::Online, NOW - 70_000, NOW - 100)];
        let r = build(&pumps, &[UP, DOWN], &behind, &[pos(NOW - 65_000)], &records(&pumps), NOW);
        let why = &r.drainers[0].problems;
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("waits for pump p2, which is paused") && why[0].contains("start the pump"), "{why:?}");
        // Only paused pumps: nothing to pull, and that is said.
        let r = build(&pumps[1..], &[DOWN], &drainers, &[UP], &records(&pumps), NOW);
        assert_eq!(r.drainers[0].problems, ["no pump is online: there is nothing to pull"]);
    }

    #[test]
    fn drainer_pump_pos_names_the_pump_the_merge_waits_for() {
        let pumps = [
            node("p1", NodeState::Online, NOW - 1000, NOW - 1000),
            node("p2", NodeState::Online, NOW - 1000, NOW - 1000),
            node("p3", NodeState::Online, NOW - 1000, NOW - 1000),
        ];
        let drainers = [node("d1", NodeState::Online, NOW - 40_000, NOW - 100)];
        let body = serde_json::json!({"PumpPos": {"p1": (NOW - 2000) << 18, "p2": (NOW - 40_000) << 18}, "Synced": false});
        let r = build(&pumps, &[UP, UP, UP], &drainers, &[Some(Some(body))], &records(&pumps), NOW);
        let why = &r.drainers[0].problems;
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("nothing from pump p3"), "{why:?}");
        assert!(why[1].contains("waits for pump p2") && why[1].contains("38s behind pump p1"), "{why:?}");
        assert_eq!(r.drainers[0].pump_pos.as_ref().unwrap().len(), 2);
    }

    /// Pause records of every paused pump: each paused cleanly.
    fn records(pumps: &[NodeStatus]) -> std::collections::BTreeMap<String, i64> {
        pumps.iter().filter(|p| p.state == NodeState::Paused).map(|p| (p.node_id.clone(), p.max_commit_ts)).collect()
    }

    #[test]
    fn a_paused_pump_without_a_pause_record_holds_every_drainer() {
        let pumps = [node("p1", NodeState::Online, NOW, NOW), node("p2", NodeState::Paused, NOW - 60_000, NOW - 60_000)];
        // The drainer has received everything p2 registered: with a clean pause record it goes on...
        let drainers = [node("d1", NodeState::Online, NOW - 1_000, NOW)];
        let r = build(&pumps, &[UP, DOWN], &drainers, &[UP], &records(&pumps), NOW);
        assert!(r.drainers[0].problems.is_empty(), "{:?}", r.drainers[0].problems);
        assert_eq!(r.pumps[1].clean_pause, Some(true));
        // ...without one (hand-set paused, or paused with open prewrites) it waits, and says why.
        let r = build(&pumps, &[UP, DOWN], &drainers, &[UP], &Default::default(), NOW);
        let why = &r.drainers[0].problems;
        assert!(why.iter().any(|w| w.contains("waits for pump p2") && w.contains("without a record")), "{why:?}");
        assert_eq!(r.pumps[1].clean_pause, Some(false));
    }

    #[test]
    fn a_pump_with_an_old_pending_prewrite_is_named_with_what_to_do() {
        let body = serde_json::json!({"PendingPrewrites": [{"startTS": 42, "ageSeconds": 700}, {"startTS": 50, "ageSeconds": 2}]});
        let pumps = [node("p1", NodeState::Online, NOW, NOW)];
        let r = build(&pumps, &[Some(Some(body))], &[], &[], &records(&pumps), NOW);
        let p = &r.pumps[0].problems;
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("1 prewrite(s)") && p[0].contains("start_ts 42") && p[0].contains("-node-id p1 -start-ts 42"), "{p:?}");
        let fresh = serde_json::json!({"PendingPrewrites": [{"startTS": 50, "ageSeconds": 2}]});
        assert!(build(&pumps, &[Some(Some(fresh))], &[], &[], &records(&pumps), NOW).pumps[0].problems.is_empty());
    }

    #[test]
    fn json_row_flattens_the_node_json() {
        let r = build(&[node("p1", NodeState::Online, NOW, NOW)], &[UP], &[], &[], &Default::default(), NOW);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["pumps"][0]["nodeId"], "p1");
        assert_eq!(v["pumps"][0]["lagSeconds"], 0);
        assert_eq!(v["gcHeldBy"], serde_json::Value::Null);
    }
}
