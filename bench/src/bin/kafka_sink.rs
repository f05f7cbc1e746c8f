//! Kafka sink throughput into the real Tansu broker: our `KafkaSink` (translate each item to a
//! `slave.binlog.Binlog`, produce, keep the in-order ack window) against a plain rdkafka
//! `FutureProducer` sending the same message bytes (pre-encoded), same producer settings, same
//! broker, in one run. Rounds alternate; medians are reported.
//!
//! `cargo run --release -p bench --bin kafka_sink -- [TXNS] [ROWS_PER_TXN] [ROUNDS]` (defaults 20000 5 3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bench::Comparison;
use drainer::sink::Sink;
use drainer::sink::kafka::{KafkaConfig, KafkaSink, translate};
use drainer::txn::{Body, Column, Item, MysqlTime, RowChange, TableChanges, TableSchema, UniqueKey, Value, mysql_type};
use prost::Message;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn table() -> Arc<TableSchema> {
    let col = |id: i64, name: &str, tp: u8| Column { id, name: name.into(), tp, flen: 20, ..Default::default() };
    Arc::new(TableSchema {
        id: 1,
        schema: "bench".into(),
        name: "orders".into(),
        columns: vec![
            Column { primary_key: true, ..col(1, "id", mysql_type::LONGLONG) },
            col(2, "customer", mysql_type::VARCHAR),
            Column { decimal: 2, ..col(3, "amount", mysql_type::NEWDECIMAL) },
            col(4, "created", mysql_type::DATETIME),
            col(5, "note", mysql_type::BLOB),
        ],
        pk_is_handle: true,
        unique_keys: vec![UniqueKey { name: "PRIMARY".into(), columns: vec![0] }],
        ..Default::default()
    })
}

fn items(n: usize, rows: usize) -> Vec<Arc<Item>> {
    let t = table();
    (0..n)
        .map(|i| {
            let changes = (0..rows)
                .map(|r| {
                    let id = (i * rows + r) as i64;
                    RowChange::Insert(vec![
                        Some(Value::Int(id)),
                        Some(Value::Bytes(format!("customer-{}", id % 997).into_bytes())),
                        Some(Value::Decimal(format!("{}.{:02}", id % 10_000, id % 100))),
                        Some(Value::Time(MysqlTime { year: 2024, month: 5, day: 1 + (id % 28) as u8, hour: 10, tp: mysql_type::DATETIME, ..Default::default() })),
                        Some(Value::Bytes(vec![b'n'; 64])),
                    ])
                })
                .collect();
            Arc::new(Item {
                start_ts: 0,
                commit_ts: 1_000 + i as i64 * 10,
                schema_version: 1,
                body: Body::Dml(vec![TableChanges { table: t.clone(), rows: changes }]),
            })
        })
        .collect()
}

async fn ours(addr: &str, topic: &str, items: &[Arc<Item>]) -> Result<f64> {
    let mut sink = KafkaSink::connect(KafkaConfig::new(addr, topic)).await?;
    let t = Instant::now();
    for it in items {
        sink.write(it.clone()).await?;
    }
    let ts = sink.flush().await?;
    anyhow::ensure!(ts == items.last().unwrap().commit_ts, "durable ts {ts} after flush");
    Ok(t.elapsed().as_secs_f64())
}

async fn plain(addr: &str, topic: &str, payloads: &[Vec<u8>]) -> Result<f64> {
    drainer::sink::kafka::ensure_topic(&KafkaConfig::new(addr, topic), 1).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "1024")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let t = Instant::now();
    let mut futs = Vec::with_capacity(payloads.len());
    for p in payloads {
        let rec: FutureRecord<'_, (), Vec<u8>> = FutureRecord::to(topic).partition(0).payload(p);
        futs.push(producer.send_result(rec).map_err(|(e, _)| e)?);
    }
    for f in futs {
        f.await?.map_err(|(e, _)| e)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (n, rows, rounds) = (args.first().copied().unwrap_or(20_000), args.get(1).copied().unwrap_or(5), args.get(2).copied().unwrap_or(3));
    let cluster = tokio::task::spawn_blocking(|| tests::Cluster::builder().kafka().start()).await??;
    let addr = cluster.kafka.as_ref().expect("kafka").addr();
    let items = items(n, rows);
    let payloads: Vec<Vec<u8>> = items.iter().map(|i| translate::to_secondary(i).expect("dml").encode_to_vec()).collect();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    println!("{n} transactions x {rows} rows, {:.1} MB of messages, {rounds} rounds each", bytes as f64 / 1e6);
    let (mut o, mut p) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        p.push(plain(&addr, &format!("plain_{r}"), &payloads).await?);
        o.push(ours(&addr, &format!("ours_{r}"), &items).await?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (o, p) = (median(o), median(p));
    Comparison::higher_is_better("kafka_sink messages/s into tansu", n as f64 / o, n as f64 / p, "plain rdkafka producer", "msg/s").print();
    Comparison::higher_is_better("kafka_sink MB/s into tansu", bytes as f64 / 1e6 / o, bytes as f64 / 1e6 / p, "plain rdkafka producer", "MB/s").print();
    Ok(())
}
