//! Pump and drainer nodes as the etcd registry holds them: the node JSON (`NodeStatus`, matching
//! upstream field by field), the five states, the keys `/tidb-binlog/v1/{pumps,drainers}/<nodeID>`,
//! the [`Registry`] over etcd, and how a node picks its id.
//!
//! # Layout
//! - this file: [`NodeKind`], [`NodeState`], [`NodeStatus`], [`Label`], key helpers.
//! - [`registry`]: list, get, create, update, `update_node`, watch over etcd.
//! - [`id`]: node ids (`<data-dir>/.node`, config, `hostname:port`).

pub mod id;
pub mod registry;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use id::{NodeIdError, default_node_id, drainer_node_id, pump_node_id};
pub use registry::{NodeEvent, NodeWatch, Registry, RegistryError};

/// Root of every registry key (upstream `DefaultRootPath`).
pub const ROOT_PATH: &str = "/tidb-binlog/v1";
/// Root of the legacy keys, still accepted when parsing a key.
pub const LEGACY_ROOT_PATH: &str = "/tidb-binlog";

/// Which kind of node a key or status is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    /// A pump (`/tidb-binlog/v1/pumps/...`).
    Pump,
    /// A drainer (`/tidb-binlog/v1/drainers/...`).
    Drainer,
}

impl NodeKind {
    /// The key folder: `pumps` or `drainers`.
    pub fn dir(self) -> &'static str {
        match self {
            NodeKind::Pump => "pumps",
            NodeKind::Drainer => "drainers",
        }
    }

    /// The etcd prefix of every node of this kind, with a trailing slash.
    pub fn prefix(self) -> String {
        format!("{ROOT_PATH}/{}/", self.dir())
    }

    /// The etcd key of node `id`.
    pub fn key(self, id: &str) -> String {
        format!("{ROOT_PATH}/{}/{id}", self.dir())
    }

    /// `pump` or `drainer`.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Pump => "pump",
            NodeKind::Drainer => "drainer",
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Splits a registry key into kind and node id; accepts `/tidb-binlog/v1/<dir>/<id>` and the legacy
/// `/tidb-binlog/<dir>/<id>`. Returns `None` for anything else (including an empty id).
pub fn parse_node_key(key: &str) -> Option<(NodeKind, &str)> {
    let rest = key
        .strip_prefix(ROOT_PATH)
        .and_then(|r| r.strip_prefix('/'))
        .or_else(|| key.strip_prefix(LEGACY_ROOT_PATH).and_then(|r| r.strip_prefix('/')))?;
    let (dir, id) = rest.split_once('/')?;
    let kind = match dir {
        "pumps" => NodeKind::Pump,
        "drainers" => NodeKind::Drainer,
        _ => return None,
    };
    (!id.is_empty()).then_some((kind, id))
}

/// A node's state, stored lower-case in the node JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Running normally.
    Online,
    /// Asked to pause; shutting down.
    Pausing,
    /// Stopped; will come back (pump data is kept and still needed).
    Paused,
    /// Asked to go offline; a pump first waits until every non-offline drainer consumed its data.
    Closing,
    /// Gone for good; drainers no longer wait for it and pumps no longer keep data for it.
    Offline,
}

impl NodeState {
    /// Every state, in lifecycle order.
    pub const ALL: [NodeState; 5] =
        [NodeState::Online, NodeState::Pausing, NodeState::Paused, NodeState::Closing, NodeState::Offline];

    /// The lower-case name used in etcd and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Online => "online",
            NodeState::Pausing => "pausing",
            NodeState::Paused => "paused",
            NodeState::Closing => "closing",
            NodeState::Offline => "offline",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown node state {0:?} (expected online, pausing, paused, closing or offline)")]
pub struct UnknownState(pub String);

impl FromStr for NodeState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownState(s.into()))
    }
}

/// The node's labels, serialized as `{"labels":{k:v}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// Label names and values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The value stored at a node's key: upstream's `node.Status` JSON, field by field. Like Go's decoder,
/// parsing tolerates unknown keys and missing optional ones (older writers); id, host and state are required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node id (also the last key segment).
    #[serde(rename = "nodeId")]
    pub node_id: String,
    /// Advertise address, `host:port` without a scheme.
    pub host: String,
    /// The node's state.
    pub state: NodeState,
    /// Not meaningful upstream (usually false); kept for compatibility.
    #[serde(rename = "isAlive", default)]
    pub is_alive: bool,
    /// Unused upstream (0).
    #[serde(default)]
    pub score: i64,
    /// Labels, or null.
    #[serde(default)]
    pub label: Option<Label>,
    /// Pump: storage max commit ts. Drainer: checkpoint ts (consumed everything up to it).
    #[serde(rename = "maxCommitTS", default)]
    pub max_commit_ts: i64,
    /// Approximate TSO of the last heartbeat.
    #[serde(rename = "updateTS", default)]
    pub update_ts: i64,
    /// Ours (drainer HA): the replication task the drainer belongs to; absent without `task-name`,
    /// so the JSON stays upstream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Ours (drainer HA): `active` or `standby` within the task; absent without `task-name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl NodeStatus {
    /// A fresh status with the given id, address and state; everything else zero.
    pub fn new(node_id: impl Into<String>, host: impl Into<String>, state: NodeState) -> Self {
        Self {
            node_id: node_id.into(),
            host: host.into(),
            state,
            is_alive: false,
            score: 0,
            label: None,
            max_commit_ts: 0,
            update_ts: 0,
            task: None,
            role: None,
        }
    }

    /// The JSON bytes stored in etcd.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("NodeStatus always serializes")
    }

    /// Parses the JSON stored in etcd.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_matches_upstream_field_by_field() {
        let upstream = r#"{"nodeId":"host:8250","host":"10.0.0.1:8250","state":"online","isAlive":false,"score":0,"label":null,"maxCommitTS":412518831548007863,"updateTS":412518831338292471}"#;
        let st = NodeStatus::from_json(upstream.as_bytes()).unwrap();
        assert_eq!(st.node_id, "host:8250");
        assert_eq!(st.host, "10.0.0.1:8250");
        assert_eq!(st.state, NodeState::Online);
        assert!(!st.is_alive);
        assert_eq!(st.score, 0);
        assert_eq!(st.label, None);
        assert_eq!(st.max_commit_ts, 412518831548007863);
        assert_eq!(st.update_ts, 412518831338292471);
        // Same keys, same order, same values when written back.
        assert_eq!(String::from_utf8(st.to_json()).unwrap(), upstream);
        // A drainer of an HA task adds its task and role after upstream's keys.
        let ha = NodeStatus { task: Some("t1".into()), role: Some("standby".into()), ..st };
        let text = String::from_utf8(ha.to_json()).unwrap();
        assert!(text.ends_with(r#","task":"t1","role":"standby"}"#), "{text}");
        assert_eq!(NodeStatus::from_json(text.as_bytes()).unwrap(), ha);
    }

    #[test]
    fn older_or_richer_json_still_parses() {
        let st = NodeStatus::from_json(br#"{"nodeId":"p","host":"h:1","state":"paused","extra":1}"#).unwrap();
        assert_eq!(st, NodeStatus::new("p", "h:1", NodeState::Paused));
        assert!(NodeStatus::from_json(br#"{"nodeId":"p","host":"h:1"}"#).is_err(), "state is required");
    }

    #[test]
    fn labels_serialize_nested() {
        let mut st = NodeStatus::new("d1", "127.0.0.1:8249", NodeState::Paused);
        st.label = Some(Label { labels: [("zone".to_string(), "z1".to_string())].into() });
        let v: serde_json::Value = serde_json::from_slice(&st.to_json()).unwrap();
        assert_eq!(v["label"], serde_json::json!({"labels": {"zone": "z1"}}));
        assert_eq!(v["state"], "paused");
        assert_eq!(NodeStatus::from_json(&st.to_json()).unwrap(), st);
    }

    #[test]
    fn states_round_trip_and_unknown_is_named() {
        for s in NodeState::ALL {
            assert_eq!(s.as_str().parse::<NodeState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!("Online".parse::<NodeState>(), Err(UnknownState("Online".into())));
        assert!(NodeStatus::from_json(br#"{"nodeId":"a","host":"b","state":"gone","isAlive":false,"score":0,"label":null,"maxCommitTS":0,"updateTS":0}"#).is_err());
    }

    #[test]
    fn keys_and_legacy_keys_parse() {
        assert_eq!(NodeKind::Pump.key("h:8250"), "/tidb-binlog/v1/pumps/h:8250");
        assert_eq!(NodeKind::Drainer.prefix(), "/tidb-binlog/v1/drainers/");
        assert_eq!(parse_node_key("/tidb-binlog/v1/pumps/h:8250"), Some((NodeKind::Pump, "h:8250")));
        assert_eq!(parse_node_key("/tidb-binlog/pumps/old:1"), Some((NodeKind::Pump, "old:1")));
        assert_eq!(parse_node_key("/tidb-binlog/v1/drainers/d"), Some((NodeKind::Drainer, "d")));
        assert_eq!(parse_node_key("/tidb-binlog/v1/pumps/"), None);
        assert_eq!(parse_node_key("/tidb-binlog/v1/tso"), None);
        assert_eq!(parse_node_key("/other/v1/pumps/a"), None);
    }
}
