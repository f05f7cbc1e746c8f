//! The node registry on a real etcd: create/update guards, update_node, list, legacy-free keys, watch.

use std::time::Duration;

use pump::node::{NodeEvent, NodeKind, NodeState, NodeStatus, Registry, RegistryError};
use tests::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_list_get_and_watch() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::builder().pd().start().unwrap()).await.unwrap();
    let url = cluster.pd().url();
    let client = etcd_client::Client::connect([url.as_str()], None).await.unwrap();
    let reg = Registry::new(client.clone());

    let (empty, rev) = reg.list_with_revision(NodeKind::Pump).await.unwrap();
    assert!(empty.is_empty());
    let mut watch = reg.watch(NodeKind::Pump, rev + 1).await.unwrap();

    let mut p1 = NodeStatus::new("p1", "127.0.0.1:8250", NodeState::Online);
    // update before create: NotFound, nothing written.
    assert!(matches!(reg.update(NodeKind::Pump, &p1).await, Err(RegistryError::NotFound { .. })));
    reg.create(NodeKind::Pump, &p1).await.unwrap();
    let err = reg.create(NodeKind::Pump, &p1).await.unwrap_err();
    assert!(matches!(err, RegistryError::AlreadyExists { .. }));
    assert_eq!(err.to_string(), "pump p1 already exists in etcd");

    p1.max_commit_ts = 42;
    reg.update(NodeKind::Pump, &p1).await.unwrap();
    let p2 = NodeStatus::new("p2", "127.0.0.1:8251", NodeState::Paused);
    reg.update_node(NodeKind::Pump, &p2).await.unwrap(); // creates
    p1.state = NodeState::Closing;
    reg.update_node(NodeKind::Pump, &p1).await.unwrap(); // updates

    assert_eq!(reg.get(NodeKind::Pump, "p1").await.unwrap(), Some(p1.clone()));
    assert_eq!(reg.get(NodeKind::Pump, "nope").await.unwrap(), None);
    assert_eq!(reg.list(NodeKind::Pump).await.unwrap(), vec![p1.clone(), p2.clone()]);
    assert!(reg.list(NodeKind::Drainer).await.unwrap().is_empty(), "kinds do not mix");

    // The stored bytes are upstream's JSON at upstream's key.
    let mut kv = client.kv_client();
    let raw = kv.get("/tidb-binlog/v1/pumps/p2", None).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(raw.kvs()[0].value()).unwrap();
    assert_eq!(v["nodeId"], "p2");
    assert_eq!(v["state"], "paused");

    // The watch saw every write in order, then a delete.
    kv.delete("/tidb-binlog/v1/pumps/p2", None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let batch = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap();
        seen.extend(batch);
    }
    let mut first = NodeStatus::new("p1", "127.0.0.1:8250", NodeState::Online);
    assert_eq!(seen[0], NodeEvent::Put(first.clone()));
    first.max_commit_ts = 42;
    assert_eq!(seen[1], NodeEvent::Put(first));
    assert_eq!(seen[2], NodeEvent::Put(p2));
    assert_eq!(seen[3], NodeEvent::Put(p1));
    assert_eq!(seen[4], NodeEvent::Delete { node_id: "p2".into() });

    // A value that is not a node JSON is an error naming the key.
    kv.put("/tidb-binlog/v1/drainers/bad", "{", None).await.unwrap();
    let err = reg.list(NodeKind::Drainer).await.unwrap_err();
    assert!(err.to_string().contains("/tidb-binlog/v1/drainers/bad"), "{err}");
}
