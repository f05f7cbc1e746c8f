//! The node registry in etcd: list, get, create (`If ModRevision==0 Then Put`), update
//! (`If ModRevision>0 Then Put`), `update_node` (Get, then create or update, as upstream) and watch.
//! Keys carry no lease: a node's last status stays until someone rewrites it.

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};

use super::{NodeKind, NodeStatus, parse_node_key};

/// Where pumps keep their pause records (ours; see [`Registry::set_pause_record`]).
pub const PAUSE_RECORD_PREFIX: &str = "/tidb-binlog/v1/pause-records/";

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// etcd refused or could not be reached.
    #[error("etcd {op} of {key}: {source}")]
    Etcd {
        /// What was attempted (get, list, txn, watch).
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The client error.
        source: etcd_client::Error,
    },
    /// A stored value is not a node JSON.
    #[error("the value at {key} is not a node status JSON: {source}")]
    BadValue {
        /// The key.
        key: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// `create` found the key already there.
    #[error("{kind} {node_id} already exists in etcd")]
    AlreadyExists {
        /// Pump or drainer.
        kind: NodeKind,
        /// The node id.
        node_id: String,
    },
    /// `update` found no key.
    #[error("{kind} {node_id} not found in etcd")]
    NotFound {
        /// Pump or drainer.
        kind: NodeKind,
        /// The node id.
        node_id: String,
    },
}

/// One change seen by [`NodeWatch`].
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// A node was written (created or updated).
    Put(NodeStatus),
    /// A node's key was deleted.
    Delete {
        /// The node id from the key.
        node_id: String,
    },
}

/// The registry over one etcd client (cheap to clone).
#[derive(Clone)]
pub struct Registry {
    client: Client,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

fn etcd(op: &'static str, key: &str) -> impl FnOnce(etcd_client::Error) -> RegistryError {
    let key = key.to_owned();
    move |source| RegistryError::Etcd { op, key, source }
}

fn parse(key: &str, value: &[u8]) -> Result<NodeStatus, RegistryError> {
    NodeStatus::from_json(value).map_err(|source| RegistryError::BadValue { key: key.into(), source })
}

impl Registry {
    /// A registry using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The underlying etcd client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every node of `kind`, sorted by node id.
    pub async fn list(&self, kind: NodeKind) -> Result<Vec<NodeStatus>, RegistryError> {
        Ok(self.list_with_revision(kind).await?.0)
    }

    /// Every node of `kind` and the etcd revision of that read (to watch from `revision + 1`).
    pub async fn list_with_revision(&self, kind: NodeKind) -> Result<(Vec<NodeStatus>, i64), RegistryError> {
        let prefix = kind.prefix();
        let resp = self
            .client
            .kv_client()
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd("list", &prefix))?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut nodes = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            nodes.push(parse(&key, kv.value())?);
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok((nodes, rev))
    }

    /// Node `id` of `kind`, if registered.
    pub async fn get(&self, kind: NodeKind, id: &str) -> Result<Option<NodeStatus>, RegistryError> {
        let key = kind.key(id);
        let resp = self.client.kv_client().get(key.as_str(), None).await.map_err(etcd("get", &key))?;
        resp.kvs().first().map(|kv| parse(&key, kv.value())).transpose()
    }

    /// Registers a new node; fails with [`RegistryError::AlreadyExists`] if its key exists.
    pub async fn create(&self, kind: NodeKind, status: &NodeStatus) -> Result<(), RegistryError> {
        let key = kind.key(&status.node_id);
        if self.put_if(&key, status, CompareOp::Equal).await? {
            Ok(())
        } else {
            Err(RegistryError::AlreadyExists { kind, node_id: status.node_id.clone() })
        }
    }

    /// Rewrites an existing node; fails with [`RegistryError::NotFound`] if its key is missing.
    pub async fn update(&self, kind: NodeKind, status: &NodeStatus) -> Result<(), RegistryError> {
        let key = kind.key(&status.node_id);
        if self.put_if(&key, status, CompareOp::Greater).await? {
            Ok(())
        } else {
            Err(RegistryError::NotFound { kind, node_id: status.node_id.clone() })
        }
    }

    /// Sets (`Some(ts)`) or removes (`None`) pump `node_id`'s pause record (ours, at
    /// [`PAUSE_RECORD_PREFIX`]`<node_id>`, decimal): written by a pump that paused holding every
    /// transaction it accepted complete up to `ts` (no open Prewrite), so a drainer may go on without it
    /// past `ts`; removed when the pump starts. Upstream's tools never read it.
    pub async fn set_pause_record(&self, node_id: &str, ts: Option<i64>) -> Result<(), RegistryError> {
        let key = format!("{PAUSE_RECORD_PREFIX}{node_id}");
        let mut kv = self.client.kv_client();
        match ts {
            Some(ts) => kv.put(key.as_str(), ts.to_string(), None).await.map(|_| ()).map_err(etcd("put", &key)),
            None => kv.delete(key.as_str(), None).await.map(|_| ()).map_err(etcd("delete", &key)),
        }
    }

    /// Every pump's pause record: node id → ts (see [`Registry::set_pause_record`]).
    pub async fn pause_records(&self) -> Result<std::collections::BTreeMap<String, i64>, RegistryError> {
        let resp = self
            .client
            .kv_client()
            .get(PAUSE_RECORD_PREFIX, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd("list", PAUSE_RECORD_PREFIX))?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let id = String::from_utf8_lossy(kv.key()).strip_prefix(PAUSE_RECORD_PREFIX)?.to_owned();
                Some((id, std::str::from_utf8(kv.value()).ok()?.trim().parse().ok()?))
            })
            .collect())
    }

    /// Creates or updates, choosing by a Get first (upstream `UpdateNode`).
    pub async fn update_node(&self, kind: NodeKind, status: &NodeStatus) -> Result<(), RegistryError> {
        if self.get(kind, &status.node_id).await?.is_some() {
            self.update(kind, status).await
        } else {
            self.create(kind, status).await
        }
    }

    async fn put_if(&self, key: &str, status: &NodeStatus, op: CompareOp) -> Result<bool, RegistryError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, op, 0)])
            .and_then([TxnOp::put(key, status.to_json(), None)]);
        let resp = self.client.kv_client().txn(txn).await.map_err(etcd("txn", key))?;
        Ok(resp.succeeded())
    }

    /// Watches every node of `kind` from etcd revision `from_revision` (0 = from now).
    pub async fn watch(&self, kind: NodeKind, from_revision: i64) -> Result<NodeWatch, RegistryError> {
        let prefix = kind.prefix();
        let mut opts = WatchOptions::new().with_prefix();
        if from_revision > 0 {
            opts = opts.with_start_revision(from_revision);
        }
        let stream =
            self.client.watch_client().watch(prefix.as_str(), Some(opts)).await.map_err(etcd("watch", &prefix))?;
        Ok(NodeWatch { stream, prefix })
    }
}

/// A stream of registry changes for one kind of node.
pub struct NodeWatch {
    stream: etcd_client::WatchStream,
    prefix: String,
}

impl std::fmt::Debug for NodeWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeWatch({})", self.prefix)
    }
}

impl NodeWatch {
    /// The next batch of changes, or `None` when etcd ended the watch (cancelled, e.g. because the start
    /// revision was compacted): list again and watch from the new revision.
    pub async fn next(&mut self) -> Result<Option<Vec<NodeEvent>>, RegistryError> {
        loop {
            let Some(resp) = self.stream.message().await.map_err(etcd("watch", &self.prefix))? else {
                return Ok(None);
            };
            if resp.canceled() {
                return Ok(None);
            }
            let mut out = Vec::new();
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                match ev.event_type() {
                    EventType::Put => out.push(NodeEvent::Put(parse(&key, kv.value())?)),
                    EventType::Delete => {
                        if let Some((_, id)) = parse_node_key(&key) {
                            out.push(NodeEvent::Delete { node_id: id.to_owned() });
                        }
                    }
                }
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
    }
}
