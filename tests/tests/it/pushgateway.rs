//! `-metrics-addr` / `-metrics-interval`: pump and drainer push their metrics to a Prometheus
//! Pushgateway (job `binlog`, `instance` = node id). The gateway here is a small HTTP receiver that
//! records what it is sent (no Pushgateway is installed on these machines); the pushes themselves come
//! from the real `pump` and `drainer` binaries against a real etcd.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{OriginalUri, State};
use axum::http::Method;
use axum::routing::any;
use tests::nodes::Node;
use tests::{free_port, wait_until};

type Pushes = Arc<Mutex<Vec<(Method, String, String)>>>;

async fn record(State(p): State<Pushes>, method: Method, OriginalUri(uri): OriginalUri, body: String) -> &'static str {
    p.lock().unwrap().push((method, uri.path().to_owned(), body));
    ""
}

#[test]
fn pump_and_drainer_push_metrics_to_the_gateway() {
    let cluster = tests::Cluster::builder().pd().start().unwrap();
    let etcd = cluster.pd().url();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let pushes: Pushes = Arc::default();
    let gw = format!("127.0.0.1:{}", free_port());
    let listener = rt.block_on(tokio::net::TcpListener::bind(&gw)).unwrap();
    let app = Router::new().fallback(any(record)).with_state(pushes.clone());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let push = [format!("-metrics-addr={gw}"), "-metrics-interval=1".to_owned()];
    let root = cluster.dir();
    let _pump = Node::pump(&root.join("pump"), &etcd, "pump-push", &push).unwrap();
    let cfg = root.join("drainer.toml");
    std::fs::write(&cfg, "[syncer]\ndb-type = \"file\"\n").unwrap();
    let mut flags = vec![format!("-config={}", cfg.display())];
    flags.extend(push.iter().cloned());
    let _drainer = Node::drainer(&root.join("drainer"), &etcd, "drainer-push", &flags).unwrap();

    let seen = |path: &str, metric: &str| {
        pushes.lock().unwrap().iter().any(|(m, p, b)| m == Method::PUT && p == path && b.contains(metric))
    };
    wait_until("both nodes to push", Duration::from_secs(30), || {
        seen("/metrics/job/binlog/instance/pump-push", "binlog_pump_storage_max_commit_ts")
            && seen("/metrics/job/binlog/instance/drainer-push", "binlog_drainer_checkpoint_tso")
    })
    .unwrap_or_else(|e| {
        let got: Vec<(Method, String)> = pushes.lock().unwrap().iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
        panic!("{e}: got {got:?}")
    });
    // Every interval, not once.
    let n = pushes.lock().unwrap().len();
    wait_until("more pushes", Duration::from_secs(10), || pushes.lock().unwrap().len() >= n + 2).unwrap();
}
