//! Kafka sink throughput into a real Apache Kafka broker (single node, JIT at full tiers,
//! `tests::kafka::BENCH_JVM`): our `KafkaSink` (translate each item to a
//! `slave.binlog.Binlog`, produce, keep the in-order ack window) against a plain rdkafka
//! `FutureProducer` sending the same message bytes (pre-encoded), same producer settings, same
//! broker, in one run. Rounds alternate (which side goes first, too); medians are reported, with the CPU each side cost this
//! process and the broker per message (`/proc/<pid>/stat`), which a loaded machine disturbs less
//! than wall time.
//!
//! Then end-to-end lag at half of our measured rate: each item gets a TSO-like commit ts (physical ms
//! << 18) and a creation stamp when the bench makes it, is written at a steady rate, and its lag is
//! the time from creation until the sink's durable ts passes it (its message and every earlier one
//! acked by the broker). Baseline: the plain producer sending the pre-encoded bytes at the same rate,
//! lag from send to its in-order ack. p50/p99 per side, medians over the rounds.
//!
//! Then the same comparison per format and partition count (`KAFKA_CASES`, default
//! `canal-json/1,protobuf/8,canal-json/8,protobuf/1/eos`; `<kafka-format>/<partitions>`, more than one partition
//! partitioned by primary key; `/eos` appended: the sink with exactly-once, its transactional
//! producer, against the same plain idempotent producer): the sink writes the items once into a capture topic, the bench reads
//! back every message it produced (partition, headers, bytes: chunk and resolved-ts messages
//! included), and the plain producer sends exactly those, each to its partition, in the same run.
//!
//! `cargo run --release -p bench --bin kafka_sink -- [TXNS] [ROWS_PER_TXN] [ROUNDS] [LAG_SECS]`
//! (defaults 20000 5 3 8).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bench::Comparison;
use drainer::sink::Sink;
use drainer::sink::kafka::{Format, KafkaConfig, KafkaSink, Partitioning, translate};
use drainer::txn::{Body, Column, Item, MysqlTime, RowChange, TableChanges, TableSchema, Time, UniqueKey, Value, mysql_type};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

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
    (0..n).map(|i| item(&t, i, rows, 1_000 + i as i64 * 10)).collect()
}

fn item(t: &Arc<TableSchema>, i: usize, rows: usize, commit_ts: i64) -> Arc<Item> {
    let changes = (0..rows)
        .map(|r| {
            let id = (i * rows + r) as i64;
            RowChange::Insert(vec![
                Some(Value::Int(id)),
                Some(Value::Bytes(format!("customer-{}", id % 997).into_bytes())),
                Some(Value::Decimal(format!("{}.{:02}", id % 10_000, id % 100))),
                Some(Value::Time(MysqlTime {
                    time: Time { year: 2024, month: 5, day: 1 + (id % 28) as u8, hour: 10, ..Default::default() },
                    tp: mysql_type::DATETIME, fsp: 0,
                })),
                Some(Value::Bytes(vec![b'n'; 64])),
            ])
        })
        .collect();
    Arc::new(Item { start_ts: 0, commit_ts, schema_version: 1, body: Body::Dml(vec![TableChanges { table: t.clone(), rows: changes }]) })
}

/// A TSO-like commit ts made now: physical ms << 18, plus `seq` in the logical bits.
fn tso_now(seq: usize) -> i64 {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis() as i64;
    (ms << 18) | (seq as i64 & ((1 << 18) - 1))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Our sink at `rate` items/s for `secs`: (p50, p99) lag in ms and the achieved rate.
async fn ours_lag(addr: &str, topic: &str, rows: usize, rate: f64, secs: f64) -> Result<(f64, f64, f64)> {
    let mut sink = KafkaSink::connect(KafkaConfig::new(addr, topic)).await?;
    let mut last_ts = tso_now(0);
    warm_up(&mut sink, last_ts).await?;
    let mut watch = sink.durable_watch();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let recorder = tokio::spawn(async move {
        let mut seen: Vec<(i64, Instant)> = Vec::new();
        loop {
            tokio::select! {
                r = watch.changed() => {
                    if r.is_err() { break }
                    seen.push((*watch.borrow_and_update(), Instant::now()));
                }
                _ = &mut stop_rx => break,
            }
        }
        seen
    });
    let t = table();
    let n = (rate * secs) as usize;
    let mut made: Vec<(i64, Instant)> = Vec::with_capacity(n);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let ts = tso_now(i + 1).max(last_ts + 1);
        last_ts = ts;
        made.push((ts, Instant::now()));
        sink.write(item(&t, i, rows, ts)).await?;
    }
    let achieved = n as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(sink.flush().await? == last_ts, "flush did not reach the last item");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = stop_tx.send(());
    let seen = recorder.await?;
    let mut lags = Vec::with_capacity(n);
    for (ts, at) in made {
        let i = seen.partition_point(|(d, _)| *d < ts);
        let (_, acked) = seen.get(i).ok_or_else(|| anyhow::anyhow!("no durable ts at or past {ts}"))?;
        lags.push(acked.duration_since(at).as_secs_f64() * 1e3);
    }
    lags.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&lags, 0.5), percentile(&lags, 0.99), achieved))
}

/// The plain producer at `rate` messages/s for `secs`, pre-encoded payloads: (p50, p99) lag in ms from
/// send to in-order ack, and the achieved rate.
async fn plain_lag(addr: &str, topic: &str, payloads: &[Vec<u8>], rate: f64, secs: f64) -> Result<(f64, f64, f64)> {
    drainer::sink::kafka::ensure_topic(&KafkaConfig::new(addr, topic), 1).await?;
    let producer = plain_producer(addr)?;
    plain_warm_up(&producer, topic, &payloads[0]).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, rdkafka::producer::DeliveryFuture)>();
    let collector = tokio::spawn(async move {
        let mut lags = Vec::new();
        while let Some((at, f)) = rx.recv().await {
            f.await?.map_err(|(e, _)| e)?;
            lags.push(at.elapsed().as_secs_f64() * 1e3);
        }
        anyhow::Ok(lags)
    });
    let n = (rate * secs) as usize;
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let at = Instant::now();
        let rec: FutureRecord<'_, (), Vec<u8>> = FutureRecord::to(topic).partition(0).payload(&payloads[i % payloads.len()]);
        let f = producer.send_result(rec).map_err(|(e, _)| e)?;
        tx.send((at, f))?;
    }
    let achieved = n as f64 / start.elapsed().as_secs_f64();
    drop(tx);
    let mut lags = collector.await??;
    lags.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&lags, 0.5), percentile(&lags, 0.99), achieved))
}

/// One acked item before timing: a new producer's first delivery waits for topic metadata and a
/// producer id, a start-up cost, not throughput.
async fn warm_up(sink: &mut KafkaSink, commit_ts: i64) -> Result<()> {
    sink.write(item(&table(), 0, 1, commit_ts)).await?;
    sink.flush().await?;
    Ok(())
}

/// As [`warm_up`], for the plain producer.
async fn plain_warm_up(producer: &FutureProducer, topic: &str, payload: &Vec<u8>) -> Result<()> {
    let rec: FutureRecord<'_, (), Vec<u8>> = FutureRecord::to(topic).partition(0).payload(payload);
    producer.send_result(rec).map_err(|(e, _)| e)?.await?.map_err(|(e, _)| e)?;
    Ok(())
}

fn plain_producer(addr: &str) -> Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "1024")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Deletes `topic` once its round is measured; the broker (`log.segment.delete.delay.ms` and
/// `log.initial.task.delay.ms` at 0) removes its files at once. Without this every round's ~80 MB
/// stayed: from about 1 GB on, both sides' rounds took twice as long (their CPU per message doubled,
/// on disk and in tmpfs alike), so a run's median depended on how many rounds it had.
async fn drop_topic(addr: &str, topic: &str) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", addr).create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.delete_topics(&[topic], &opts).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("deleting topic {t}: {e}"))?;
    }
    Ok(())
}

/// `<format>/<partitions>`, as `KAFKA_CASES` and `KAFKA_ONLY` name a case.
fn parse_case(case: &str) -> Result<(Format, i32)> {
    let (format, partitions) = case.split_once('/').ok_or_else(|| anyhow::anyhow!("case {case:?} is not <format>/<partitions>[/eos]"))?;
    let format = [Format::Protobuf, Format::CanalJson]
        .into_iter()
        .find(|f| f.name() == format)
        .ok_or_else(|| anyhow::anyhow!("case {case:?}: unknown format {format:?}"))?;
    Ok((format, partitions.parse()?))
}

/// Which side runs first in round `r` (`true`: ours), alternating: the broker is still busy for a
/// moment after a side's burst, and that must not fall on one side only.
fn sides(r: usize) -> [bool; 2] {
    [r % 2 == 1, r % 2 == 0]
}

/// The sink's settings for a case: `format`, and with more than one partition partitioned by primary key.
fn case_config(addr: &str, topic: &str, format: Format, partitions: i32) -> KafkaConfig {
    let mut cfg = KafkaConfig::new(addr, topic);
    cfg.format = format;
    if partitions > 1 {
        cfg.partitioning = Partitioning::PrimaryKey;
        cfg.partitions = partitions;
    }
    cfg
}

/// One message as the sink produced it.
struct Captured {
    partition: i32,
    headers: Vec<(String, Vec<u8>)>,
    payload: Vec<u8>,
}

/// Every message in `topic` (`partitions` partitions), read from the start until none arrives for 3 s.
fn capture(addr: &str, topic: &str, partitions: i32) -> Result<Vec<Captured>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "bench-capture")
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "1000000000")
        .set("receive.message.max.bytes", "1000100000")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut out = Vec::new();
    while let Some(m) = c.poll(Duration::from_secs(3)) {
        let m = m?;
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default();
        out.push(Captured { partition: m.partition(), headers, payload: m.payload().unwrap_or_default().to_vec() });
    }
    Ok(out)
}

/// The plain producer sending `msgs` as captured, each to its partition, all acked.
async fn plain_captured(addr: &str, topic: &str, partitions: i32, msgs: &[Captured]) -> Result<f64> {
    drainer::sink::kafka::ensure_topic(&KafkaConfig::new(addr, topic), partitions).await?;
    let producer = plain_producer(addr)?;
    let warm: FutureRecord<'_, (), Vec<u8>> = FutureRecord::to(topic).partition(0).payload(&msgs[0].payload);
    producer.send_result(warm).map_err(|(e, _)| e)?.await?.map_err(|(e, _)| e)?;
    let t = Instant::now();
    let mut futs = Vec::with_capacity(msgs.len());
    for m in msgs {
        let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
        for (k, v) in &m.headers {
            headers = headers.insert(rdkafka::message::Header { key: k, value: Some(v) });
        }
        let rec: FutureRecord<'_, (), Vec<u8>> = FutureRecord::to(topic).partition(m.partition).payload(&m.payload).headers(headers);
        futs.push(producer.send_result(rec).map_err(|(e, _)| e)?);
    }
    for f in futs {
        f.await?.map_err(|(e, _)| e)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

async fn ours(addr: &str, topic: &str, items: &[Arc<Item>]) -> Result<f64> {
    ours_with(KafkaConfig::new(addr, topic), items).await
}

async fn ours_with(cfg: KafkaConfig, items: &[Arc<Item>]) -> Result<f64> {
    let mut sink = KafkaSink::connect(cfg).await?;
    warm_up(&mut sink, items[0].commit_ts - 1).await?;
    let threads = thread_cpu();
    let t = Instant::now();
    for it in items {
        sink.write(it.clone()).await?;
    }
    let ts = sink.flush().await?;
    let elapsed = t.elapsed().as_secs_f64();
    record_threads(threads);
    anyhow::ensure!(ts == items.last().unwrap().commit_ts, "durable ts {ts} after flush");
    // Its tasks stop here: the recovery task would create the topic again once it is deleted.
    drop(sink);
    Ok(elapsed)
}

async fn plain(addr: &str, topic: &str, payloads: &[Vec<u8>]) -> Result<f64> {
    drainer::sink::kafka::ensure_topic(&KafkaConfig::new(addr, topic), 1).await?;
    let producer = plain_producer(addr)?;
    plain_warm_up(&producer, topic, &payloads[0]).await?;
    let threads = thread_cpu();
    let t = Instant::now();
    let mut futs = Vec::with_capacity(payloads.len());
    for p in payloads {
        let rec: FutureRecord<'_, (), Vec<u8>> = FutureRecord::to(topic).partition(0).payload(p);
        futs.push(producer.send_result(rec).map_err(|(e, _)| e)?);
    }
    for f in futs {
        f.await?.map_err(|(e, _)| e)?;
    }
    let elapsed = t.elapsed().as_secs_f64();
    record_threads(threads);
    Ok(elapsed)
}

/// CPU seconds per thread name of this process so far (`/proc/self/task/*/stat`).
fn thread_cpu() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for t in tasks.flatten() {
        let (Ok(stat), Ok(comm)) = (std::fs::read_to_string(t.path().join("stat")), std::fs::read_to_string(t.path().join("comm"))) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let f: Vec<f64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if f.len() > 12 {
            *out.entry(comm.trim().to_string()).or_default() += (f[10] + f[11]) / 100.0;
        }
    }
    out
}

/// The per-thread CPU seconds of the last timed section (printed by `KAFKA_ONLY`).
static LAST_THREADS: std::sync::Mutex<Vec<(String, f64)>> = std::sync::Mutex::new(Vec::new());

fn record_threads(before: std::collections::BTreeMap<String, f64>) {
    let after = thread_cpu();
    let d = after.into_iter().map(|(k, v)| { let b = before.get(&k).copied().unwrap_or(0.0); (k, v - b) }).filter(|(_, v)| *v > 0.0).collect();
    *LAST_THREADS.lock().unwrap() = d;
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat` (USER_HZ = 100).
fn cpu_secs(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesized command name: utime is field 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow::anyhow!("no ')' in /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> { Ok(f.get(i).ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?.parse::<f64>()?) };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let arg = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (n, rows, rounds, lag_secs) = (arg(0, 20_000), arg(1, 5), arg(2, 3), arg(3, 8));
    let dir = tempfile::Builder::new().prefix("tbrs-bench-kafka-").tempdir()?;
    let kafka = {
        let path = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || tests::Kafka::builder().jvm_opts(tests::kafka::BENCH_JVM).prop("log.segment.delete.delay.ms", 0).prop("log.initial.task.delay.ms", 0).start(&path)).await??
    };
    let addr = kafka.addr();
    let me = std::process::id().to_string();
    let broker = kafka.pid(1).to_string();
    let cpu = || -> Result<(f64, f64)> { Ok((cpu_secs(&me)?, cpu_secs(&broker)?)) };
    let items = items(n, rows);
    let payloads: Vec<Vec<u8>> = items.iter().map(|i| translate::to_secondary(i).expect("dml").encode_to_vec()).collect();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    println!("{n} transactions x {rows} rows, {:.1} MB of messages, {rounds} rounds each", bytes as f64 / 1e6);
    // The broker's JIT compiles for seconds after start (its compiler threads took a third of the
    // machine in a profile of the first rounds): warm it up on both sides' paths before measuring.
    for w in 0..3 {
        plain(&addr, &format!("warm_plain_{w}"), &payloads).await?;
        ours(&addr, &format!("warm_ours_{w}"), &items).await?;
        drop_topic(&addr, &format!("warm_plain_{w}")).await?;
        drop_topic(&addr, &format!("warm_ours_{w}")).await?;
    }
    // For profiling one side (`perf record`): `KAFKA_ONLY=ours|plain` runs only that side's rounds;
    // `KAFKA_ONLY=ours:<format>/<partitions>` only our sink in that case.
    if let Ok(side) = std::env::var("KAFKA_ONLY") {
        for r in 0..rounds {
            let c0 = cpu()?;
            let topic = format!("only_{r}");
            let t = match side.split_once(':') {
                None if side == "ours" => ours(&addr, &topic, &items).await?,
                None if side == "plain" => plain(&addr, &topic, &payloads).await?,
                Some(("ours", case)) => {
                    let (format, partitions) = parse_case(case)?;
                    ours_with(case_config(&addr, &topic, format, partitions), &items).await?
                }
                _ => anyhow::bail!("KAFKA_ONLY: {side:?} is not ours, plain or ours:<format>/<partitions>"),
            };
            let c1 = cpu()?;
            drop_topic(&addr, &topic).await?;
            println!("{side} round {r}: {t:.3} s, {:.0} msg/s, CPU per message {:.2} µs here + {:.2} µs broker", n as f64 / t, (c1.0 - c0.0) * 1e6 / n as f64, (c1.1 - c0.1) * 1e6 / n as f64);
            let threads = LAST_THREADS.lock().unwrap().clone();
            println!("  busy while timed: {}", threads.iter().map(|(k, v)| format!("{k} {:.0}%", v / t * 100.0)).collect::<Vec<_>>().join(", "));
        }
        return Ok(());
    }
    let (mut o, mut p) = (Vec::new(), Vec::new());
    // CPU seconds per side: (this process, the broker), summed over the rounds.
    let (mut o_cpu, mut p_cpu) = ((0.0, 0.0), (0.0, 0.0));
    for r in 0..rounds {
        for ours_now in sides(r) {
            let c0 = cpu()?;
            if ours_now {
                o.push(ours(&addr, &format!("ours_{r}"), &items).await?);
            } else {
                p.push(plain(&addr, &format!("plain_{r}"), &payloads).await?);
            }
            let c1 = cpu()?;
            let side = if ours_now { &mut o_cpu } else { &mut p_cpu };
            *side = (side.0 + c1.0 - c0.0, side.1 + c1.1 - c0.1);
            drop_topic(&addr, &format!("{}_{r}", if ours_now { "ours" } else { "plain" })).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let per_msg = |s: f64| s * 1e6 / (n * rounds) as f64;
    println!(
        "CPU per message (incl. topic set-up and warm-up): ours {:.2} µs here + {:.2} µs broker; plain {:.2} µs here + {:.2} µs broker",
        per_msg(o_cpu.0),
        per_msg(o_cpu.1),
        per_msg(p_cpu.0),
        per_msg(p_cpu.1)
    );
    let mut e = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let n: usize = items.iter().map(|i| translate::to_secondary(i).expect("dml").encode_to_vec().len()).sum();
        e.push(t.elapsed().as_secs_f64());
        assert_eq!(n, bytes);
    }
    println!("translate + encode alone (message, prost): {:.3} s (median)", median(e));
    let mut e = Vec::new();
    let mut enc = translate::Encoder::default();
    for _ in 0..rounds {
        let t = Instant::now();
        let n: usize = items.iter().map(|i| if let Body::Dml(ts) = &i.body { enc.dml(i.commit_ts, ts).len() } else { 0 }).sum();
        e.push(t.elapsed().as_secs_f64());
        assert_eq!(n, bytes);
    }
    println!("direct encoding alone (sink's path): {:.3} s (median)", median(e));
    println!("ours {o:.3?} s, plain {p:.3?} s");
    let (o, p) = (median(o), median(p));
    Comparison::higher_is_better("kafka_sink messages/s into kafka", n as f64 / o, n as f64 / p, "plain rdkafka producer", "msg/s").print();
    Comparison::higher_is_better("kafka_sink MB/s into kafka", bytes as f64 / 1e6 / o, bytes as f64 / 1e6 / p, "plain rdkafka producer", "MB/s").print();

    if lag_secs > 0 {
        let rate = (n as f64 / o / 2.0).round();
        println!("lag at {rate}/s (half of our rate) for {lag_secs} s, {rounds} rounds each");
        let (mut ol, mut pl) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            // A side's window writes ~1 GB: its topic goes before the other side starts, so the disk's
            // write-back of it does not land in the other side's window.
            let (mut x, mut y) = (None, None);
            for ours_now in sides(r) {
                let topic = format!("{}_lag_{r}", if ours_now { "ours" } else { "plain" });
                if ours_now {
                    y = Some(ours_lag(&addr, &topic, rows, rate, lag_secs as f64).await?);
                } else {
                    x = Some(plain_lag(&addr, &topic, &payloads, rate, lag_secs as f64).await?);
                }
                drop_topic(&addr, &topic).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let (x, y) = (x.expect("plain ran"), y.expect("ours ran"));
            println!("  round {r}: ours p50 {:.1} p99 {:.1} ms at {:.0}/s; plain p50 {:.1} p99 {:.1} ms at {:.0}/s", y.0, y.1, y.2, x.0, x.1, x.2);
            pl.push(x);
            ol.push(y);
        }
        let m = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| median(v.iter().map(f).collect());
        Comparison::lower_is_better("kafka_sink lag p50 (commit to acked)", m(&ol, |x| x.0), m(&pl, |x| x.0), "plain rdkafka producer", "ms").print();
        Comparison::lower_is_better("kafka_sink lag p99 (commit to acked)", m(&ol, |x| x.1), m(&pl, |x| x.1), "plain rdkafka producer", "ms").print();
    }

    let cases = std::env::var("KAFKA_CASES").unwrap_or_else(|_| "canal-json/1,protobuf/8,canal-json/8,protobuf/1/eos".into());
    for case in cases.split(',').filter(|c| !c.is_empty()) {
        let (format, partitions) = parse_case(case.strip_suffix("/eos").unwrap_or(case))?;
        let eos = case.ends_with("/eos");
        let tag = format!("{}_{partitions}{}", format.name(), if eos { "_eos" } else { "" });
        // Exactly-once: the sink's transactional producer (a Kafka transaction per queued run of
        // items); the baseline stays the plain idempotent producer sending the same messages.
        let config = |topic: String| {
            let mut cfg = case_config(&addr, &topic, format, partitions);
            if eos {
                cfg.transactional_id = Some(format!("bench-{topic}"));
            }
            cfg
        };
        ours_with(config(format!("capture_{tag}")), &items).await?;
        let msgs = {
            let (addr, topic) = (addr.clone(), format!("capture_{tag}"));
            tokio::task::spawn_blocking(move || capture(&addr, &topic, partitions)).await??
        };
        drop_topic(&addr, &format!("capture_{tag}")).await?;
        // The capture topic also holds the warm-up item's message(s): at most a few.
        anyhow::ensure!(msgs.len() >= n, "{case}: captured {} messages for {n} transactions", msgs.len());
        let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
        println!("{case}: {} messages, {:.1} MB", msgs.len(), bytes as f64 / 1e6);
        let (mut o, mut p) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            for ours_now in sides(r) {
                if ours_now {
                    o.push(ours_with(config(format!("ours_{tag}_{r}")), &items).await?);
                } else {
                    p.push(plain_captured(&addr, &format!("plain_{tag}_{r}"), partitions, &msgs).await?);
                }
                drop_topic(&addr, &format!("{}_{tag}_{r}", if ours_now { "ours" } else { "plain" })).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        println!("{case}: ours {o:.3?} s, plain {p:.3?} s");
        let (o, p) = (median(o), median(p));
        Comparison::higher_is_better(
            &format!("kafka_sink {case} transactions/s into kafka"),
            n as f64 / o,
            n as f64 / p,
            "plain rdkafka producer, same messages",
            "txn/s",
        )
        .print();
    }
    Ok(())
}
