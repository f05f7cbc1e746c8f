//! The harness really starts etcd, MariaDB and Apache Kafka, and they really answer.


use mysql_async::prelude::*;
use tests::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_starts_stores_keys_and_survives_a_restart() {
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::builder().pd().start().unwrap()).await.unwrap();
    let url = cluster.pd().url();
    let mut client = etcd_client::Client::connect([url.as_str()], None).await.unwrap();
    client.put("/tidb-binlog/v1/pumps/n1", r#"{"state":"online"}"#, None).await.unwrap();
    let status = client.status().await.unwrap();
    let cluster_id = status.header().unwrap().cluster_id();
    assert_ne!(cluster_id, 0, "etcd reports a cluster id in every header");
    drop(client);

    let mut etcd = cluster.pd.take().unwrap();
    let etcd = tokio::task::spawn_blocking(move || {
        etcd.restart().unwrap();
        etcd
    })
    .await
    .unwrap();
    let mut client = etcd_client::Client::connect([etcd.url().as_str()], None).await.unwrap();
    let got = client.get("/tidb-binlog/v1/pumps/n1", None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), r#"{"state":"online"}"#);
    let id_after = client.status().await.unwrap().header().unwrap().cluster_id();
    assert_eq!(id_after, cluster_id, "the cluster id is stable across restarts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_starts_and_round_trips_rows_across_a_restart() {
    let mut cluster =
        tokio::task::spawn_blocking(|| Cluster::builder().downstream_db().start().unwrap()).await.unwrap();
    let url = cluster.downstream.as_ref().unwrap().url();
    let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
    conn.query_drop("CREATE DATABASE t; CREATE TABLE t.a (id INT PRIMARY KEY, v VARCHAR(10))").await.unwrap();
    conn.exec_drop("INSERT INTO t.a VALUES (?, ?), (?, ?)", (1, "x", 2, "y")).await.unwrap();
    conn.disconnect().await.unwrap();

    let mut db = cluster.downstream.take().unwrap();
    let db = tokio::task::spawn_blocking(move || {
        db.restart().unwrap();
        db
    })
    .await
    .unwrap();
    let mut conn = mysql_async::Conn::from_url(db.url().as_str()).await.unwrap();
    let rows: Vec<(i32, String)> = conn.query("SELECT id, v FROM t.a ORDER BY id").await.unwrap();
    assert_eq!(rows, vec![(1, "x".to_string()), (2, "y".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_starts_keeps_topics_and_survives_a_restart() {
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::builder().kafka().start().unwrap()).await.unwrap();
    let kafka = cluster.kafka.as_ref().unwrap();
    kafka.create_topic("harness_check", 1, &[]).await.unwrap();
    // Creating it again must fail: the broker really keeps topics.
    let err = kafka.create_topic("harness_check", 1, &[]).await.unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    // A SIGKILLed broker comes back with its data.
    let mut kafka = cluster.kafka.take().unwrap();
    let kafka = tokio::task::spawn_blocking(move || {
        kafka.restart(1).unwrap();
        kafka
    })
    .await
    .unwrap();
    let err = kafka.create_topic("harness_check", 1, &[]).await.unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn a_missing_binary_names_the_install_script() {
    let err = tests::find_binary("no-such-binary-tbrs", &[]).unwrap_err().to_string();
    assert!(err.contains("scripts/install-deps.sh"), "{err}");
}
