//! `binlog-consumer` reading the canal-json format on real Apache Kafka: the same transactions as
//! the protobuf format gives (every value, by column name), applied to MariaDB exactly once with a
//! resume, and a topic read in the wrong format named by its offset. (Kafka's own console consumer
//! reading canal-json is `kafka_sink::canal_json_is_read_by_kafkas_own_console_consumer_with_every_value`.)

use std::sync::Arc;
use std::time::Duration;

use drainer::consumer::Txn;
use drainer::sink::Sink;
use drainer::sink::kafka::{Format, KafkaConfig, KafkaSink, untranslate};
use drainer::txn::{Body, Item, RowChange, Value};
use tests::Cluster;

use crate::kafka_sink::consumer_apply;
use crate::reparo_files::{downstream_rows, expected_rows, has_table, mysql_items};
use crate::sink_items;

async fn write(addr: &str, topic: &str, format: Format, items: &[Item]) {
    let mut cfg = KafkaConfig::new(addr, topic);
    cfg.format = format;
    cfg.ack_timeout = Duration::from_secs(20);
    let mut sink = KafkaSink::connect(cfg).await.unwrap();
    for it in items {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    sink.flush().await.unwrap();
}

async fn read_all(addr: &str, topic: &str, format: Format) -> Vec<Txn> {
    crate::kafka_sink::read_partition_as(addr, topic, 0, format).await.0
}

/// A transaction as (table, kind, [(column, value)] sorted by column) per row change.
type Changes = Vec<(String, &'static str, Vec<(String, Option<Value>)>)>;

fn changes(t: &Txn) -> (i64, Changes, Option<String>) {
    let item = untranslate::to_item(&t.binlog).unwrap();
    let mut out = Vec::new();
    let mut ddl = None;
    match item.map(|i| i.body) {
        Some(Body::Dml(tables)) => {
            for tc in tables {
                let named = |r: &Vec<Option<Value>>| {
                    let mut v: Vec<_> = tc.table.columns.iter().map(|c| c.name.clone()).zip(r.iter().cloned()).collect();
                    v.sort_by(|a, b| a.0.cmp(&b.0));
                    v
                };
                for r in &tc.rows {
                    let name = tc.table.name.clone();
                    match r {
                        RowChange::Insert(r) => out.push((name, "insert", named(r))),
                        RowChange::Delete(r) => out.push((name, "delete", named(r))),
                        RowChange::Update { old, new } => {
                            out.push((name.clone(), "update old", named(old)));
                            out.push((name, "update new", named(new)));
                        }
                    }
                }
            }
        }
        Some(Body::Ddl(d)) => ddl = Some(d.query),
        _ => {}
    }
    (t.commit_ts, out, ddl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_consumer_reads_canal_json_as_protobuf_and_applies_it_exactly_once() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::builder().kafka().downstream_db().start().unwrap()).await.unwrap();
    let addr = cluster.kafka.as_ref().unwrap().addr();
    let db = cluster.downstream.as_ref().unwrap();
    let (mut items, mut live) = mysql_items(30);
    // A 300-row transaction: 300 canal-json messages, one transaction for the consumer.
    let big: Vec<RowChange> = (10_000..10_300).map(|id| RowChange::Insert(sink_items::row(id, 3))).collect();
    items.push(sink_items::dml(1_000, big));
    live.extend((10_000..10_300).map(|id| (id, 3)));
    write(&addr, "pb", Format::Protobuf, &items).await;
    write(&addr, "canal", Format::CanalJson, &items).await;

    // In process: the same transactions, values and DDL from both formats.
    let pb = read_all(&addr, "pb", Format::Protobuf).await;
    let canal = read_all(&addr, "canal", Format::CanalJson).await;
    assert_eq!(canal.len(), pb.len());
    assert!(pb.len() > 30, "{} transactions", pb.len());
    let big_txn = canal.iter().find(|t| t.commit_ts == 1_000).expect("the big transaction");
    assert_eq!(big_txn.messages, 300, "one message per row, reassembled");
    for (c, p) in canal.iter().zip(&pb) {
        assert_eq!(changes(c), changes(p), "commit ts {}", p.commit_ts);
    }

    // The binary applies the canal-json topic to MariaDB: up to ts 150, then the rest after a restart.
    let apply = |extra: &[&str]| {
        let mut args = vec![format!("--kafka-addrs={addr}"), "-topic=canal".into(), "-format=canal-json".into(), format!("--apply={}", db.url())];
        args.extend(extra.iter().map(|s| s.to_string()));
        move || consumer_apply(args)
    };
    let out = tokio::task::spawn_blocking(apply(&["--stop-at-ts=150", "--idle-timeout=20"])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut c = crate::mysql_sink::conn(db).await;
    assert_eq!(downstream_rows(&mut c).await, expected_rows(&sink_items::workload(10, 15).1));
    let out = tokio::task::spawn_blocking(apply(&["--idle-timeout=3"])).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("up to commit ts 150; resuming"), "{err}");
    live.sort();
    assert_eq!(downstream_rows(&mut c).await, expected_rows(&live));
    assert!(has_table(&mut c, "t2").await);

    // The wrong format is named with the message's offset; an unknown format at the flag.
    let args = vec![format!("--kafka-addrs={addr}"), "-topic=pb".into(), "-format=canal-json".into(), "-idle-timeout=10".into()];
    let out = tokio::task::spawn_blocking(move || consumer_apply(args)).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pb/0 offset 0") && err.contains("kafka-format canal-json"), "{err}");
    let out = consumer_apply(vec!["-topic=pb".into(), "-format=avro".into()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("\"avro\""), "{err}");
}
