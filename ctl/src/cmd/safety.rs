//! What a state edit means, and which edits can lose data. Pure functions over the registry contents,
//! so every rule is unit tested here; `nodes` refuses an edit with a [`Severity::Refuse`] finding
//! unless `-force` is given.
//!
//! The rules come from how the cluster uses the states (spec §7, seed guide "Pump/Drainer state"):
//! - drainers pull from, and wait for, every pump that is not offline (a paused one only up to its max
//!   commit ts); an offline pump is forgotten;
//! - pumps keep binlogs for `gc` (and, with `gc-waits-for-drainers`, until every non-offline drainer
//!   consumed them); a pump going offline waits for every non-offline drainer;
//! - TiDB writes only to online pumps.

use pump::node::{NodeKind, NodeState, NodeStatus};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Can lose data: refused without `-force`.
    Refuse,
    /// Worth knowing; the edit goes ahead.
    Warn,
}

/// One thing the operator should know about an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Refuse or warn.
    pub severity: Severity,
    /// What happens and why.
    pub message: String,
}

fn refuse(message: String) -> Finding {
    Finding { severity: Severity::Refuse, message }
}

fn warn(message: String) -> Finding {
    Finding { severity: Severity::Warn, message }
}

/// What it means for a node of `kind` to be in state `to`.
pub fn explain(kind: NodeKind, to: NodeState) -> &'static str {
    use NodeState::*;
    match (kind, to) {
        (NodeKind::Pump, Online) => "TiDB sends binlogs to online pumps and drainers pull from them.",
        (NodeKind::Pump, Pausing) => {
            "A transitional state the pump sets while it shuts down after a pause request; TiDB stops \
             writing to it and drainers still pull from it."
        }
        (NodeKind::Pump, Paused) => {
            "TiDB stops writing to the pump. Drainers wait for the binlogs it holds up to its max commit ts, \
             then go on without it (upstream's drainer stalls until it is back); its binlogs are kept."
        }
        (NodeKind::Pump, Closing) => {
            "A transitional state the pump sets while it waits for every non-offline drainer to consume \
             its binlogs before going offline. Setting it by hand does not start that wait."
        }
        (NodeKind::Pump, Offline) => {
            "TiDB stops writing to the pump and drainers stop pulling from it and no longer wait for it. \
             Binlogs it holds that a drainer has not consumed are never replicated."
        }
        (NodeKind::Drainer, Online) => {
            "Pumps keep binlogs for gc (with gc-waits-for-drainers, until it has consumed them), and a pump \
             going offline waits for it."
        }
        (NodeKind::Drainer, Pausing) => {
            "A transitional state the drainer sets while it shuts down after a pause request."
        }
        (NodeKind::Drainer, Paused) => {
            "The drainer does not replicate; a pump going offline waits for it, and pumps with \
             gc-waits-for-drainers keep binlogs for it."
        }
        (NodeKind::Drainer, Closing) => {
            "A transitional state the drainer sets while it shuts down after an offline request."
        }
        (NodeKind::Drainer, Offline) => {
            "Pumps no longer keep binlogs for the drainer (with gc-waits-for-drainers) and pumps going \
             offline no longer wait for it; nothing replicates to its downstream any more."
        }
    }
}

/// What the registry holds, for the checks.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Every pump.
    pub pumps: &'a [NodeStatus],
    /// Every drainer.
    pub drainers: &'a [NodeStatus],
}

impl View<'_> {
    fn live_drainers(&self) -> impl Iterator<Item = &NodeStatus> {
        self.drainers.iter().filter(|d| d.state != NodeState::Offline)
    }
    fn live_pumps(&self) -> impl Iterator<Item = &NodeStatus> {
        self.pumps.iter().filter(|p| p.state != NodeState::Offline)
    }
}

/// Findings for `update-<kind> -node-id node -state to`. `answers` is whether the node's HTTP API
/// answered a probe (`None` if not probed).
pub fn check_update(kind: NodeKind, node: &NodeStatus, to: NodeState, view: View<'_>, answers: Option<bool>) -> Vec<Finding> {
    use NodeState::*;
    let mut out = Vec::new();
    let id = &node.node_id;
    match (kind, to) {
        (NodeKind::Pump, Offline) => {
            for d in view.live_drainers().filter(|d| d.max_commit_ts < node.max_commit_ts) {
                out.push(refuse(format!(
                    "drainer {} ({}) has consumed up to ts {} but pump {id} holds binlogs up to ts {}: once the \
                     pump is offline the drainer stops pulling from it and the binlogs in between are lost \
                     downstream. Use -cmd offline-pump, which waits until every drainer caught up",
                    d.node_id, d.state, d.max_commit_ts, node.max_commit_ts
                )));
            }
        }
        (NodeKind::Drainer, Offline) => {
            // A dead drainer set offline by hand is upstream's runbook: allowed, saying what it gives up.
            // A running one is refused: -cmd offline-drainer makes it stop at a consistent checkpoint.
            let flag = |m: String| if answers == Some(true) { refuse(m) } else { warn(m) };
            for p in view.live_pumps().filter(|p| p.max_commit_ts > node.max_commit_ts) {
                out.push(flag(format!(
                    "pump {} ({}) holds binlogs up to ts {} but drainer {id} has consumed only up to ts {}: once \
                     the drainer is offline nothing replicates them to its downstream, pumps with \
                     gc-waits-for-drainers stop keeping them for it, and a drainer started again from this \
                     checkpoint finds whatever pump GC left",
                    p.node_id, p.state, p.max_commit_ts, node.max_commit_ts
                )));
            }
        }
        (NodeKind::Pump, Online) if answers == Some(false) => {
            out.push(refuse(format!(
                "pump {id} does not answer at {}: TiDB would pick it for writes that then fail (with \
                 ignore-error TiDB stops writing binlogs altogether), and drainers would wait for it",
                node.host
            )));
        }
        _ => {}
    }
    if matches!(to, Pausing | Closing) {
        out.push(warn(format!(
            "{to} is a transitional state the {kind} process sets itself; nothing completes it when it is set by hand"
        )));
    }
    if kind == NodeKind::Pump && node.state == Offline && to != Offline {
        out.push(warn(format!(
            "pump {id} was offline: drainers will pull from it and wait for it again, and stall while it is not running"
        )));
    }
    if answers == Some(true) {
        out.push(warn(format!(
            "{kind} {id} is running (it answers at {}): it rewrites its own state on its next heartbeat, so this \
             edit may not last; use -cmd pause-{kind} or -cmd offline-{kind} for a running node",
            node.host
        )));
    }
    out
}

/// Findings for `offline-<kind>` (asking the node to close): nothing refuses, since the node itself
/// waits when it must, but a pump's wait can last forever.
pub fn check_offline_request(kind: NodeKind, node: &NodeStatus, view: View<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    if kind == NodeKind::Pump {
        for d in view.live_drainers().filter(|d| d.state != NodeState::Online) {
            out.push(warn(format!(
                "drainer {} is {}: pump {} stays closing until every non-offline drainer has consumed its binlogs",
                d.node_id, d.state, node.node_id
            )));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, state: NodeState, ts: i64) -> NodeStatus {
        let mut n = NodeStatus::new(id, format!("127.0.0.1:1/{id}"), state);
        n.max_commit_ts = ts;
        n
    }

    fn severities(f: &[Finding]) -> Vec<Severity> {
        f.iter().map(|f| f.severity).collect()
    }

    #[test]
    fn pump_offline_refused_while_a_live_drainer_is_behind() {
        let pump = node("p1", NodeState::Paused, 100);
        let drainers = [node("d1", NodeState::Online, 90), node("d2", NodeState::Offline, 10), node("d3", NodeState::Paused, 100)];
        let view = View { pumps: std::slice::from_ref(&pump), drainers: &drainers };
        let f = check_update(NodeKind::Pump, &pump, NodeState::Offline, view, None);
        assert_eq!(severities(&f), [Severity::Refuse], "{f:?}");
        assert!(f[0].message.contains("drainer d1"), "{f:?}");
        // Caught up: allowed.
        let drainers = [node("d1", NodeState::Online, 100)];
        let view = View { pumps: std::slice::from_ref(&pump), drainers: &drainers };
        assert!(check_update(NodeKind::Pump, &pump, NodeState::Offline, view, None).is_empty());
    }

    #[test]
    fn a_dead_drainer_may_go_offline_saying_what_it_gives_up_a_live_one_may_not() {
        let d = node("d1", NodeState::Paused, 50);
        let pumps = [node("p1", NodeState::Online, 60), node("p2", NodeState::Offline, 99)];
        let view = View { pumps: &pumps, drainers: std::slice::from_ref(&d) };
        let f = check_update(NodeKind::Drainer, &d, NodeState::Offline, view, Some(false));
        assert_eq!(severities(&f), [Severity::Warn]);
        assert!(f[0].message.contains("pump p1") && !f[0].message.contains("p2"), "{f:?}");
        assert!(f[0].message.contains("consumed only up to ts 50"), "{f:?}");
        let view = View { pumps: &pumps, drainers: std::slice::from_ref(&d) };
        let f = check_update(NodeKind::Drainer, &d, NodeState::Offline, view, Some(true));
        assert!(severities(&f).contains(&Severity::Refuse), "{f:?}");
    }

    #[test]
    fn pump_online_refused_when_it_does_not_answer() {
        let p = node("p1", NodeState::Paused, 1);
        let view = View { pumps: std::slice::from_ref(&p), drainers: &[] };
        assert_eq!(severities(&check_update(NodeKind::Pump, &p, NodeState::Online, view, Some(false))), [Severity::Refuse]);
        assert!(check_update(NodeKind::Pump, &p, NodeState::Paused, view, Some(false)).is_empty());
        // Running: a warning that the heartbeat will overwrite the edit.
        assert_eq!(severities(&check_update(NodeKind::Pump, &p, NodeState::Online, view, Some(true))), [Severity::Warn]);
    }

    #[test]
    fn transitional_and_revived_states_warn() {
        let p = node("p1", NodeState::Offline, 1);
        let view = View { pumps: std::slice::from_ref(&p), drainers: &[] };
        let f = check_update(NodeKind::Pump, &p, NodeState::Closing, view, None);
        assert_eq!(severities(&f), [Severity::Warn, Severity::Warn], "{f:?}");
    }

    #[test]
    fn offline_request_warns_about_paused_drainers() {
        let p = node("p1", NodeState::Online, 1);
        let drainers = [node("d1", NodeState::Paused, 0), node("d2", NodeState::Online, 0)];
        let f = check_offline_request(NodeKind::Pump, &p, View { pumps: std::slice::from_ref(&p), drainers: &drainers });
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("drainer d1 is paused"));
    }

    #[test]
    fn every_state_is_explained_for_both_kinds() {
        for k in [NodeKind::Pump, NodeKind::Drainer] {
            for s in NodeState::ALL {
                assert!(explain(k, s).len() > 20);
            }
        }
    }
}
