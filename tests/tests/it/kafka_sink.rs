//! The Kafka sink against a real Apache Kafka broker: hand-built items → sink → consumer. Every
//! transaction arrives once, in commit-ts order, with every column value right; oversized
//! transactions arrive whole; a restarted sink resumes from the topic without duplicates. Faults
//! (broker restarts, leader failover, brokers down at start) are in `kafka_faults`.

use std::sync::Arc;
use std::time::Duration;

use drainer::consumer::{BinlogConsumer, ConsumerConfig, StartAt, Txn};
use drainer::proto::slave;
use drainer::sink::Sink;
use drainer::sink::kafka::{KafkaConfig, KafkaSink};
use drainer::txn::{Body, Item, RowChange};
use tests::Cluster;

use crate::sink_items::{self, CREATE_TABLE};

async fn start() -> Cluster {
    tokio::task::spawn_blocking(|| Cluster::builder().kafka().start().unwrap()).await.unwrap()
}

fn config(addr: &str) -> KafkaConfig {
    let mut cfg = KafkaConfig::new(addr, KafkaConfig::default_topic(7_000_001));
    cfg.max_message_size = 8 * 1024; // small, so the big transaction is chunked
    cfg.ack_timeout = Duration::from_secs(20);
    cfg
}

/// A DDL, the standard workload, a 300-row transaction and empty (fake) items in between.
fn items() -> Vec<Item> {
    let mut items = vec![sink_items::ddl(5, "db", CREATE_TABLE)];
    let (work, _) = sink_items::workload(10, 30);
    for (i, it) in work.into_iter().enumerate() {
        items.push(it);
        if i % 7 == 0 {
            let ts = items.last().unwrap().commit_ts + 1;
            items.push(Item { start_ts: 0, commit_ts: ts, schema_version: 0, body: Body::Empty });
        }
    }
    let big: Vec<RowChange> = (10_000..10_300).map(|id| RowChange::Insert(sink_items::row(id, 3))).collect();
    items.push(sink_items::dml(1_000, big));
    items
}

async fn consume(addr: &str, topic: &str, want: usize) -> (Vec<Txn>, u64) {
    consume_within(addr, topic, want, Duration::from_secs(20)).await
}

/// Reads `topic`/0 from the start until `want` transactions arrived, each within `idle`, then checks
/// nothing else does. Returns them and the count of duplicate messages the consumer dropped.
pub(crate) async fn consume_within(addr: &str, topic: &str, want: usize, idle: Duration) -> (Vec<Txn>, u64) {
    let mut c = BinlogConsumer::new(ConsumerConfig {
        addrs: addr.into(),
        topic: topic.into(),
        partition: 0,
        start: StartAt::Beginning,
        after_commit_ts: 0,
        format: drainer::sink::kafka::Format::Protobuf,
    })
    .unwrap();
    let mut got = Vec::new();
    while got.len() < want {
        match c.next_timeout(idle).await.unwrap() {
            Some(t) => got.push(t),
            None => panic!("only {} of {want} transactions arrived", got.len()),
        }
    }
    // Nothing more (no duplicates) within a short wait.
    assert!(c.next_timeout(Duration::from_secs(2)).await.unwrap().is_none(), "an extra transaction arrived");
    let skipped = c.skipped();
    (got, skipped)
}

fn mutations(t: &Txn) -> Vec<(String, slave::TableMutation)> {
    t.binlog.dml_data.iter().flat_map(|d| &d.tables).flat_map(|tb| tb.mutations.iter().map(|m| (tb.table_name().to_string(), m.clone()))).collect()
}

fn check_values(txns: &[Txn]) {
    // Transaction 0 of the workload inserted rows 1..=3 at version 0.
    let t = txns.iter().find(|t| t.commit_ts == 10).expect("commit ts 10");
    let tb = &t.binlog.dml_data.as_ref().unwrap().tables[0];
    let names: Vec<&str> = tb.column_info.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["id", "name", "amount", "price", "created", "data", "big", "note"]);
    assert_eq!(tb.column_info[2].mysql_type(), "decimal");
    assert!(tb.column_info[0].is_primary_key());
    assert_eq!(tb.unique_keys[0].name(), "PRIMARY");
    let r = &tb.mutations[0].row.columns;
    assert_eq!(r[0].int64_value, Some(1));
    assert_eq!(r[1].string_value(), "name-1-0 ü");
    assert_eq!(r[2].string_value(), "10.00");
    assert_eq!(r[3].double_value, Some(1.0));
    assert_eq!(r[4].string_value(), "2020-02-01 01:00:07");
    assert_eq!(r[5].bytes_value(), &[0, 1, 255, 1, 0]);
    assert_eq!(r[6].uint64_value, Some(u64::MAX - 1));
    assert_eq!(r[7].is_null, Some(true));
    // Transaction 1 updated row 1 to version 1: row = new, change_row = old.
    let t = txns.iter().find(|t| t.commit_ts == 20).expect("commit ts 20");
    let up = mutations(t).into_iter().find(|(_, m)| m.r#type() == slave::MutationType::Update).unwrap().1;
    assert_eq!(up.row.columns[1].string_value(), "name-1-1 ü");
    assert_eq!(up.change_row.as_ref().unwrap().columns[1].string_value(), "name-1-0 ü");
    assert_eq!(up.row.columns[7].string_value(), "note 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_delivers_each_txn_once_in_order_and_resumes_from_the_topic() {
    let cluster = start().await;
    let addr = cluster.kafka.as_ref().unwrap().addr();
    let items = items();
    let cut = items.len() / 2;

    let mut sink = KafkaSink::connect(config(&addr)).await.unwrap();
    assert_eq!(sink.load_checkpoint().await.unwrap(), None, "a new topic holds nothing");
    for it in &items[..cut] {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    let first_ts = items[cut - 1].commit_ts;
    assert_eq!(sink.flush().await.unwrap(), first_ts);
    drop(sink);

    // A restarted sink learns the topic's last commit ts and skips what it already holds, even when
    // the drainer re-sends from an older savepoint.
    let mut sink = KafkaSink::connect(config(&addr)).await.unwrap();
    let cp = sink.load_checkpoint().await.unwrap().unwrap();
    let last_sent = items[..cut].iter().rev().find(|i| !matches!(i.body, Body::Empty)).unwrap().commit_ts;
    assert_eq!(cp, last_sent);
    for it in &items {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    assert_eq!(sink.flush().await.unwrap(), items.last().unwrap().commit_ts);

    let want: Vec<&Item> = items.iter().filter(|i| !matches!(i.body, Body::Empty)).collect();
    let (got, skipped) = consume(&addr, sink.topic(), want.len()).await;
    assert_eq!(skipped, 0, "no duplicate message reached the topic");
    assert_eq!(got.iter().map(|t| t.commit_ts).collect::<Vec<_>>(), want.iter().map(|i| i.commit_ts).collect::<Vec<_>>());
    let big = got.last().unwrap();
    assert!(big.messages >= 3, "the 300-row transaction was chunked: {} messages", big.messages);
    let ids: Vec<i64> = mutations(big).iter().map(|(_, m)| m.row.columns[0].int64_value()).collect();
    assert_eq!(ids, (10_000..10_300).collect::<Vec<i64>>(), "every row, in order");
    let ddl = got[0].binlog.ddl_data.as_ref().unwrap();
    assert_eq!((ddl.schema_name(), ddl.table_name()), ("db", "t"));
    assert_eq!(ddl.ddl_query(), CREATE_TABLE.as_bytes());
    check_values(&got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_consumer_binary_prints_transactions() {
    let cluster = start().await;
    let addr = cluster.kafka.as_ref().unwrap().addr();
    let (items, _) = sink_items::workload(10, 3);
    let mut sink = KafkaSink::connect(config(&addr)).await.unwrap();
    for it in &items {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    sink.flush().await.unwrap();
    let topic = sink.topic().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(tests::our_binary("binlog-consumer"))
            .args(["-kafka-addrs", &addr, "-topic", &topic, "-count", "3", "-idle-timeout", "20"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let heads: Vec<&str> = text.lines().filter(|l| l.starts_with("commit ts")).collect();
    assert_eq!(heads.len(), 3, "{text}");
    assert!(heads[0].starts_with("commit ts 10 "), "{text}");
    assert!(text.contains("  insert `db`.`t`: id=1, name='name-1-0 ü', amount='10.00'"), "{text}");
    assert!(text.contains("  update `db`.`t`: id=1, name='name-1-0 ü'"), "{text}");
}

/// Runs the `binlog-consumer` binary with `args` to its end.
pub(crate) fn consumer_apply(args: Vec<String>) -> std::process::Output {
    std::process::Command::new(tests::our_binary("binlog-consumer")).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_consumer_applies_to_mysql_exactly_once_and_resumes() {
    use crate::reparo_files::{downstream_rows, expected_rows, has_table, mysql_items};
    let cluster = tokio::task::spawn_blocking(|| Cluster::builder().kafka().downstream_db().start().unwrap()).await.unwrap();
    let addr = cluster.kafka.as_ref().unwrap().addr();
    let db = cluster.downstream.as_ref().unwrap();
    let (mut items, mut live) = mysql_items(30);
    // A transaction big enough to be chunked.
    let big: Vec<RowChange> = (10_000..10_300).map(|id| RowChange::Insert(sink_items::row(id, 3))).collect();
    items.push(sink_items::dml(1_000, big));
    live.extend((10_000..10_300).map(|id| (id, 3)));
    let mut sink = KafkaSink::connect(config(&addr)).await.unwrap();
    for it in &items {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    sink.flush().await.unwrap();
    let topic = sink.topic().to_string();
    let base = vec![format!("--kafka-addrs={addr}"), format!("-topic={topic}"), format!("--apply={}", db.url())];
    let with = |extra: &[&str]| base.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect::<Vec<_>>();

    // Up to ts 150: the DDL and the first 15 transactions.
    let out = tokio::task::spawn_blocking({
        let args = with(&["--stop-at-ts=150", "--idle-timeout=20"]);
        move || consumer_apply(args)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut c = crate::mysql_sink::conn(db).await;
    assert_eq!(downstream_rows(&mut c).await, expected_rows(&sink_items::workload(10, 15).1));
    assert!(!has_table(&mut c, "t2").await);

    // A restart resumes after its checkpoint (no safe mode: a replayed insert would fail) and applies
    // the rest, the chunked transaction whole.
    let out = tokio::task::spawn_blocking({
        let args = with(&["--idle-timeout=3"]);
        move || consumer_apply(args)
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("up to commit ts 150; resuming"), "{err}");
    live.sort();
    assert_eq!(downstream_rows(&mut c).await, expected_rows(&live));
    assert!(has_table(&mut c, "t2").await);

    // Once more: nothing left to apply.
    let out = tokio::task::spawn_blocking({
        let args = with(&["--idle-timeout=2", "--stop-at-ts=5000"]);
        move || consumer_apply(args)
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("applied 0 transactions"), "{err}");
    assert_eq!(downstream_rows(&mut c).await, expected_rows(&live));

    // A wrong password is named with the host.
    let out = tokio::task::spawn_blocking({
        let args = vec![
            format!("--kafka-addrs={addr}"),
            format!("-topic={topic}"),
            format!("--apply=mysql://root:nope@127.0.0.1:{}", db.port),
        ];
        move || consumer_apply(args)
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("127.0.0.1:{}", db.port)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_advances_durable_ts_without_more_writes_and_refuses_an_item_it_cannot_encode() {
    let cluster = start().await;
    let addr = cluster.kafka.as_ref().unwrap().addr();
    let mut cfg = config(&addr);
    cfg.topic = "durable_watch".into();
    cfg.max_message_size = 1024;
    let mut sink = KafkaSink::connect(cfg).await.unwrap();
    let (items, _) = sink_items::workload(10, 5);
    let last = items.last().unwrap().commit_ts;
    for it in items {
        sink.write(Arc::new(it)).await.unwrap();
    }
    // No flush and no further write: the ack task alone moves the durable ts.
    let mut durable = sink.durable_watch();
    tokio::time::timeout(Duration::from_secs(20), durable.wait_for(|&ts| ts == last)).await.expect("durable ts reached the last write").unwrap();
    assert_eq!(sink.durable_ts(), last);

    // A DDL over kafka-max-message-size fails its write, naming the transaction, and stops the sink:
    // later calls say so.
    let query = format!("CREATE TABLE t2 (c VARCHAR(10) DEFAULT '{}')", "x".repeat(2000));
    let err = sink.write(Arc::new(sink_items::ddl(last + 10, "db", &query))).await.unwrap_err();
    let err = format!("{:#}", anyhow::Error::from(err));
    assert!(err.contains("over kafka-max-message-size") && err.contains(&format!("commit ts {}", last + 10)), "{err}");
    let err = sink.flush().await.unwrap_err().to_string();
    assert!(err.contains("stopped after an earlier error"), "{err}");
    let err = sink.write(Arc::new(sink_items::ddl(last + 20, "db", "DROP TABLE t2"))).await.unwrap_err().to_string();
    assert!(err.contains("stopped after an earlier error"), "{err}");
    assert_eq!(sink.durable_ts(), last, "nothing past the failed item is durable");
}

/// Reads every transaction of `topic`/`partition` until the partition is quiet for 3 s; returns them
/// and the partition's resolved ts.
async fn read_partition(addr: &str, topic: &str, partition: i32) -> (Vec<Txn>, i64) {
    read_partition_as(addr, topic, partition, drainer::sink::kafka::Format::Protobuf).await
}

/// [`read_partition`] of a topic in `format`.
pub(crate) async fn read_partition_as(addr: &str, topic: &str, partition: i32, format: drainer::sink::kafka::Format) -> (Vec<Txn>, i64) {
    let mut c = BinlogConsumer::new(ConsumerConfig {
        addrs: addr.into(),
        topic: topic.into(),
        partition,
        start: StartAt::Beginning,
        after_commit_ts: 0,
        format,
    })
    .unwrap();
    let mut got = Vec::new();
    while let Some(t) = c.next_timeout(Duration::from_secs(3)).await.unwrap() {
        got.push(t);
    }
    assert_eq!(c.skipped(), 0, "partition {partition}: a duplicate");
    (got, c.resolved_ts())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_partitions_by_primary_key_in_order_with_a_resolved_ts_per_partition() {
    use drainer::sink::kafka::Partitioning;
    let cluster = start().await;
    let addr = cluster.kafka.as_ref().unwrap().addr();
    let mut cfg = KafkaConfig::new(&addr, "by_pk");
    cfg.partitioning = Partitioning::PrimaryKey;
    cfg.partitions = 4;
    let mut items = vec![sink_items::ddl(5, "db", CREATE_TABLE)];
    items.extend(sink_items::workload(10, 60).0);
    let last = items.last().unwrap().commit_ts;
    let mut sink = KafkaSink::connect(cfg.clone()).await.unwrap();
    for it in &items {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    assert_eq!(sink.flush().await.unwrap(), last);
    // The sink sends the resolved ts within a second of the last write.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(sink);

    // Every row change once, each key's changes in one partition in commit-ts order; the DDL and a
    // resolved ts covering the last transaction in every partition.
    let want: usize = items.iter().map(|i| if let Body::Dml(t) = &i.body { t[0].rows.len() } else { 0 }).sum();
    let mut rows = 0;
    let mut home: std::collections::HashMap<i64, i32> = Default::default();
    let mut used = 0;
    for p in 0..4 {
        let (txns, resolved) = read_partition(&addr, "by_pk", p).await;
        assert_eq!(resolved, last, "partition {p}'s resolved ts");
        assert!(txns[0].binlog.ddl_data.is_some(), "partition {p} starts with the DDL");
        let ts: Vec<i64> = txns.iter().map(|t| t.commit_ts).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "partition {p} in commit-ts order: {ts:?}");
        used += usize::from(txns.len() > 1);
        for (_, m) in txns.iter().flat_map(mutations) {
            let id = m.row.columns[0].int64_value();
            assert_eq!(*home.entry(id).or_insert(p), p, "row {id} in two partitions");
            rows += 1;
        }
    }
    assert_eq!(rows, want, "every row change once");
    assert!(used >= 3, "keys spread over the partitions: {used} of 4 used");

    // A restarted sink knows from the resolved ts that every partition holds everything.
    let mut sink = KafkaSink::connect(cfg).await.unwrap();
    assert_eq!(sink.load_checkpoint().await.unwrap(), Some(last));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canal_json_is_read_by_kafkas_own_console_consumer_with_every_value() {
    use drainer::sink::kafka::Format;
    let cluster = start().await;
    let addr = cluster.kafka.as_ref().unwrap().addr();
    let mut cfg = KafkaConfig::new(&addr, "canal");
    cfg.format = Format::CanalJson;
    let mut items = vec![sink_items::ddl(5, "db", CREATE_TABLE)];
    items.extend(sink_items::workload(10, 3).0);
    let last = items.last().unwrap().commit_ts;
    let mut sink = KafkaSink::connect(cfg.clone()).await.unwrap();
    for it in &items {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    assert_eq!(sink.flush().await.unwrap(), last);
    tokio::time::sleep(Duration::from_millis(1500)).await; // the watermark follows within a second
    drop(sink);
    // DDL, 3 + 5 + 5 row changes, then the watermark.
    let rows: usize = items.iter().map(|i| if let Body::Dml(t) = &i.body { t[0].rows.len() } else { 0 }).sum();
    let kafka = cluster.kafka.as_ref().unwrap();
    let lines = tokio::task::block_in_place(|| kafka.console_consume("canal", 1 + rows + 1)).unwrap();
    let msgs: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(msgs.len(), 1 + rows + 1, "{lines:#?}");
    assert_eq!((msgs[0]["isDdl"].as_bool(), msgs[0]["sql"].as_str()), (Some(true), Some(CREATE_TABLE)));
    let kinds: Vec<&str> = msgs[1..=rows].iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds[..5], ["INSERT", "INSERT", "INSERT", "INSERT", "INSERT"]);
    assert_eq!(kinds[6..8], ["UPDATE", "DELETE"]);
    let first = &msgs[1];
    assert_eq!((first["database"].as_str(), first["table"].as_str()), (Some("db"), Some("t")));
    assert_eq!(first["pkNames"], serde_json::json!(["id"]));
    assert_eq!(first["_tidb"]["commitTs"].as_i64(), Some(10));
    let d = &first["data"][0];
    assert_eq!((d["id"].as_str(), d["name"].as_str(), d["amount"].as_str()), (Some("1"), Some("name-1-0 ü"), Some("10.00")));
    assert_eq!((d["price"].as_str(), d["created"].as_str()), (Some("1"), Some("2020-02-01 01:00:07")));
    assert_eq!((d["data"].as_str(), d["big"].as_str(), &d["note"]), (Some("\u{0}\u{1}\u{ff}\u{1}\u{0}"), Some("18446744073709551614"), &serde_json::Value::Null));
    let up = &msgs[7];
    assert_eq!((up["data"][0]["name"].as_str(), up["old"][0]["name"].as_str()), (Some("name-1-1 ü"), Some("name-1-0 ü")));
    let w = msgs.last().unwrap();
    assert_eq!((w["type"].as_str(), w["_tidb"]["watermarkTs"].as_i64()), (Some("TIDB_WATERMARK"), Some(last)));
    // A restarted sink reads its checkpoint back from the JSON.
    let mut sink = KafkaSink::connect(cfg).await.unwrap();
    assert_eq!(sink.load_checkpoint().await.unwrap(), Some(last));
}

/// A table `db`.`name` with `id INT PRIMARY KEY` and the other int columns `cols`.
fn int_table(name: &str, cols: &[&str]) -> Arc<drainer::txn::TableSchema> {
    use drainer::txn::{Column, TableSchema, UniqueKey, mysql_type};
    let mut columns = vec![Column { id: 1, name: "id".into(), tp: mysql_type::LONG, primary_key: true, not_null: true, flen: 11, ..Default::default() }];
    for (i, c) in cols.iter().enumerate() {
        columns.push(Column { id: i as i64 + 2, name: (*c).into(), tp: mysql_type::LONG, flen: 11, ..Default::default() });
    }
    Arc::new(TableSchema {
        id: 200,
        schema: "db".into(),
        name: name.into(),
        columns,
        pk_is_handle: true,
        is_common_handle: false,
        unique_keys: vec![UniqueKey { name: "PRIMARY".into(), columns: vec![0] }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_partitions_by_column_value_keeping_each_values_changes_in_order_in_one_partition() {
    use drainer::sink::kafka::Partitioning;
    use drainer::txn::{TableChanges, Value};
    let cluster = start().await;
    let addr = cluster.kafka.as_ref().unwrap().addr();
    let mut cfg = KafkaConfig::new(&addr, "by_column");
    cfg.partitioning = Partitioning::Columns;
    cfg.partition_columns = vec!["tenant".into()];
    cfg.partitions = 4;
    cfg.transactional_id = Some("tbrs-by-column".into()); // exactly-once: resolved ts inside the transactions too
    // Two tables with a `tenant` column (at different positions) and one without it. Each
    // transaction inserts into all three, and from the second one on updates an earlier orders row.
    let (orders, payments, logs) = (int_table("orders", &["tenant", "amount"]), int_table("payments", &["x", "tenant"]), int_table("logs", &["msg"]));
    let row = |vals: &[i64]| vals.iter().map(|v| Some(Value::Int(*v))).collect::<Vec<_>>();
    let mut items = vec![sink_items::ddl(5, "db", "create table orders (id int primary key, tenant int, amount int)")];
    for i in 0..60i64 {
        let mut o = vec![RowChange::Insert(row(&[i, i % 7, i]))];
        if i >= 1 {
            o.push(RowChange::Update { old: row(&[i - 1, (i - 1) % 7, i - 1]), new: row(&[i - 1, (i - 1) % 7, 1_000 + i]) });
        }
        let tables = vec![
            TableChanges { table: orders.clone(), rows: o },
            TableChanges { table: payments.clone(), rows: vec![RowChange::Insert(row(&[i, 0, (i * 3) % 7]))] },
            TableChanges { table: logs.clone(), rows: vec![RowChange::Insert(row(&[i, i]))] },
        ];
        items.push(Item { start_ts: 0, commit_ts: 10 * (i + 1), schema_version: 1, body: Body::Dml(tables) });
    }
    let last = items.last().unwrap().commit_ts;
    let mut sink = KafkaSink::connect(cfg.clone()).await.unwrap();
    for it in &items {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    assert_eq!(sink.flush().await.unwrap(), last);
    tokio::time::sleep(Duration::from_millis(1500)).await; // the resolved ts follows within a second
    drop(sink);

    // tenant -> (partition, the commit ts of its changes in the order read)
    let mut tenants: std::collections::HashMap<i64, (i32, Vec<i64>)> = Default::default();
    let (mut rows, mut log_parts) = (0, std::collections::HashSet::new());
    for p in 0..4 {
        let (txns, resolved) = read_partition(&addr, "by_column", p).await;
        assert_eq!(resolved, last, "partition {p}'s resolved ts");
        assert!(txns[0].binlog.ddl_data.is_some(), "partition {p} starts with the DDL");
        let ts: Vec<i64> = txns.iter().map(|t| t.commit_ts).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "partition {p} in commit-ts order: {ts:?}");
        for t in &txns {
            for tb in t.binlog.dml_data.iter().flat_map(|d| &d.tables) {
                for m in &tb.mutations {
                    rows += 1;
                    let c = &m.row.columns;
                    let tenant = match tb.table_name() {
                        "orders" => c[1].int64_value(),
                        "payments" => c[2].int64_value(),
                        _ => {
                            log_parts.insert(p);
                            continue;
                        }
                    };
                    let e = tenants.entry(tenant).or_insert((p, Vec::new()));
                    assert_eq!(e.0, p, "tenant {tenant}'s changes in two partitions");
                    e.1.push(t.commit_ts);
                }
            }
        }
    }
    let want: usize = items.iter().map(|i| if let Body::Dml(t) = &i.body { t.iter().map(|t| t.rows.len()).sum() } else { 0 }).sum();
    assert_eq!(rows, want, "every row change once");
    assert_eq!(tenants.len(), 7, "every tenant value seen");
    for (tenant, (_, ts)) in &tenants {
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "tenant {tenant}'s changes in commit-ts order: {ts:?}");
    }
    assert!(tenants.values().map(|v| v.0).collect::<std::collections::HashSet<_>>().len() >= 2, "tenants spread over partitions");
    assert_eq!(log_parts.len(), 1, "a table without the column stays in one partition (by table)");
}

