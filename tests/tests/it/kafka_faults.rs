//! The Kafka sink under faults, on real Apache Kafka: a broker killed (SIGKILL) and restarted while
//! the sink writes, the brokers down when the sink starts, a topic whose `max.message.bytes` is
//! smaller than a transaction, the partition leader's broker killed on a 3-node cluster, and the
//! drainer killed (SIGKILL) under load in the whole cluster. Every time: every transaction arrives
//! once, in commit-ts order, or the sink returns an error that says what is wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drainer::consumer::{BinlogConsumer, ConsumerConfig, StartAt, Txn};
use drainer::sink::Sink;
use drainer::sink::kafka::{KafkaConfig, KafkaSink};
use drainer::txn::{Item, RowChange};
use tests::Kafka;

use crate::sink_items;

fn config(addrs: &str, topic: &str) -> KafkaConfig {
    KafkaConfig::new(addrs, topic)
}

/// Reads `topic`/0 from the start until `want` transactions arrived (30 s each), then checks nothing
/// else does.
async fn consume(addrs: &str, topic: &str, want: usize) -> (Vec<Txn>, u64) {
    crate::kafka_sink::consume_within(addrs, topic, want, Duration::from_secs(30)).await
}

fn commit_ts(items: &[Item]) -> Vec<i64> {
    items.iter().map(|i| i.commit_ts).collect()
}

fn got_ts(txns: &[Txn]) -> Vec<i64> {
    txns.iter().map(|t| t.commit_ts).collect()
}

async fn start_kafka(nodes: usize) -> (tempfile::TempDir, Kafka) {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::Builder::new().prefix("tbrs-kafka-").tempdir().unwrap();
        let kafka = Kafka::builder().nodes(nodes).start(dir.path()).unwrap();
        (dir, kafka)
    })
    .await
    .unwrap()
}

/// Writes `items` one every `gap`, flushes, and returns the sink's final durable ts.
fn write_slowly(mut sink: KafkaSink, items: Vec<Item>, gap: Duration) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        for it in items {
            sink.write(Arc::new(it)).await.unwrap();
            tokio::time::sleep(gap).await;
        }
        sink.flush().await.unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_loses_and_duplicates_nothing_when_the_broker_is_killed_and_restarted() {
    broker_killed_and_restarted(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_exactly_once_loses_and_duplicates_nothing_when_the_broker_is_killed_and_restarted() {
    // Transactions cut by the restart are aborted and sent again whole.
    broker_killed_and_restarted(Some("tbrs-eos-broker-restart")).await;
}

async fn broker_killed_and_restarted(transactional_id: Option<&str>) {
    let (_dir, kafka) = start_kafka(1).await;
    let addrs = kafka.addrs();
    let (items, _) = sink_items::workload(10, 300);
    let mut cfg = config(&addrs, "broker_restart");
    cfg.transactional_id = transactional_id.map(str::to_string);
    let sink = KafkaSink::connect(cfg).await.unwrap();
    let writer = write_slowly(sink, items.clone(), Duration::from_millis(10));
    // Kill the broker while the writer is in the middle, bring it back a second later.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let kafka = tokio::task::spawn_blocking(move || {
        let mut kafka = kafka;
        kafka.kill(1);
        std::thread::sleep(Duration::from_secs(1));
        kafka.start_node(1).unwrap();
        kafka
    })
    .await
    .unwrap();
    let durable = tokio::time::timeout(Duration::from_secs(90), writer).await.expect("the writer finished").unwrap();
    assert_eq!(durable, items.last().unwrap().commit_ts);
    let (got, skipped) = consume(&kafka.addrs(), "broker_restart", items.len()).await;
    assert_eq!(got_ts(&got), commit_ts(&items), "every transaction, in commit-ts order");
    assert_eq!(skipped, 0, "no transaction reached the topic twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_sends_again_what_timed_out_while_the_broker_was_down() {
    let (_dir, mut kafka) = start_kafka(1).await;
    let addrs = kafka.addrs();
    let mut cfg = config(&addrs, "timed_out");
    cfg.ack_timeout = Duration::from_secs(3);
    let mut sink = KafkaSink::connect(cfg).await.unwrap();
    let (items, _) = sink_items::workload(10, 40);
    for it in &items[..10] {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    sink.flush().await.unwrap();
    kafka.kill(1);
    // These time out in the producer (3 s) while the broker is down; a new producer sends them again.
    for it in &items[10..] {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(sink.durable_ts(), items[9].commit_ts, "nothing is durable while the broker is down");
    let kafka = tokio::task::spawn_blocking(move || {
        kafka.start_node(1).unwrap();
        kafka
    })
    .await
    .unwrap();
    let durable = tokio::time::timeout(Duration::from_secs(60), sink.flush()).await.expect("flushed").unwrap();
    assert_eq!(durable, items.last().unwrap().commit_ts);
    let (got, _) = consume(&kafka.addrs(), "timed_out", items.len()).await;
    assert_eq!(got_ts(&got), commit_ts(&items), "every transaction, in commit-ts order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_waits_for_brokers_that_are_down_at_start_and_names_them_when_it_gives_up() {
    // Nothing listens: the error names the brokers once `connect_timeout` is over.
    let nobody = format!("127.0.0.1:{}", tests::free_port());
    let mut cfg = config(&nobody, "down_at_start");
    cfg.connect_timeout = Duration::from_secs(3);
    let t = Instant::now();
    let err = KafkaSink::connect(cfg).await.unwrap_err().to_string();
    assert!(err.contains(&nobody) && err.contains("unreachable"), "{err}");
    assert!(t.elapsed() >= Duration::from_secs(2), "it retried for the timeout: {:?}", t.elapsed());

    // A broker that comes up while the sink retries: the sink connects and delivers.
    let (_dir, mut kafka) = start_kafka(1).await;
    kafka.kill(1);
    let addrs = kafka.addrs();
    let connecting = tokio::spawn(KafkaSink::connect(config(&addrs, "down_at_start")));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!connecting.is_finished(), "connect gave up while its timeout runs");
    let kafka = tokio::task::spawn_blocking(move || {
        kafka.start_node(1).unwrap();
        kafka
    })
    .await
    .unwrap();
    let mut sink = tokio::time::timeout(Duration::from_secs(60), connecting).await.expect("connected").unwrap().unwrap();
    let (items, _) = sink_items::workload(10, 5);
    for it in &items {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    assert_eq!(sink.flush().await.unwrap(), items.last().unwrap().commit_ts);
    let (got, _) = consume(&kafka.addrs(), "down_at_start", items.len()).await;
    assert_eq!(got_ts(&got), commit_ts(&items));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_chunks_to_the_topics_max_message_bytes_and_names_it_when_a_ddl_cannot_fit() {
    let (_dir, kafka) = start_kafka(1).await;
    let addrs = kafka.addrs();
    kafka.create_topic("small_max", 1, &[("max.message.bytes", "20000")]).await.unwrap();
    // kafka-max-message-size stays at its default (1 GiB): the topic's limit is what counts.
    let mut sink = KafkaSink::connect(config(&addrs, "small_max")).await.unwrap();
    let (mut items, _) = sink_items::workload(10, 5);
    let big: Vec<RowChange> = (10_000..10_600).map(|id| RowChange::Insert(sink_items::row(id, 3))).collect();
    items.push(sink_items::dml(1_000, big));
    for it in &items {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    assert_eq!(sink.flush().await.unwrap(), 1_000);
    let (got, skipped) = consume(&addrs, "small_max", items.len()).await;
    assert_eq!((got_ts(&got), skipped), (commit_ts(&items), 0));
    let big = got.last().unwrap();
    assert!(big.messages >= 3, "the 600-row transaction was chunked: {} messages", big.messages);
    let rows: usize = big.binlog.dml_data.as_ref().unwrap().tables.iter().map(|t| t.mutations.len()).sum();
    assert_eq!(rows, 600, "every row arrived");

    // A DDL cannot be chunked: its write fails naming the topic's limit, and nothing after it is durable.
    let query = format!("CREATE TABLE t2 (c VARCHAR(10) DEFAULT '{}')", "x".repeat(30_000));
    let err = sink.write(Arc::new(sink_items::ddl(2_000, "db", &query))).await.unwrap_err();
    let err = format!("{:#}", anyhow::Error::from(err));
    assert!(err.contains("commit ts 2000") && err.contains("max.message.bytes 20000 of topic small_max"), "{err}");
    assert_eq!(sink.durable_ts(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_fails_over_when_the_partition_leaders_broker_is_killed() {
    let (_dir, mut kafka) = start_kafka(3).await;
    let addrs = kafka.addrs();
    kafka.create_topic("failover", 1, &[]).await.unwrap();
    let (items, _) = sink_items::workload(10, 300);
    let sink = KafkaSink::connect(config(&addrs, "failover")).await.unwrap();
    let writer = write_slowly(sink, items.clone(), Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = kafka.leader_of("failover", 0).unwrap();
    kafka.kill(leader);
    let durable = tokio::time::timeout(Duration::from_secs(90), writer).await.expect("the writer finished").unwrap();
    assert_eq!(durable, items.last().unwrap().commit_ts);
    let new_leader = kafka.leader_of("failover", 0).unwrap();
    assert_ne!(new_leader, leader, "another broker leads the partition");
    let (got, skipped) = consume(&addrs, "failover", items.len()).await;
    assert_eq!(got_ts(&got), commit_ts(&items), "every transaction, in commit-ts order");
    assert_eq!(skipped, 0, "no transaction reached the topic twice");
}

#[test]
fn kill9_the_drainer_under_load_with_the_kafka_sink_duplicates_nothing() -> anyhow::Result<()> {
    kill9_the_drainer_under_load("")
}

#[test]
fn kill9_the_drainer_under_load_with_exactly_once_has_every_txn_once_read_committed() -> anyhow::Result<()> {
    // A restarted drainer keeps its node id, so its producer's transactional.id: its
    // init_transactions aborts what the killed one left open.
    kill9_the_drainer_under_load("kafka-exactly-once = true\n")
}

/// Kills the drainer (SIGKILL) at a random moment of the workload and restarts it; then the
/// downstream, rebuilt from the topic, equals the upstream (nothing lost) and the topic, read
/// `read_committed`, holds every commit ts once, in order (nothing doubled, no cut chunk sequence).
fn kill9_the_drainer_under_load(to_extra: &str) -> anyhow::Result<()> {
    let opts = tests::e2e::Options { sink: tests::e2e::SinkKind::Kafka, to_extra: to_extra.into(), ..crate::fault::opts() };
    let e2e = crate::fault::run_with_fault_in(
        opts,
        |e| {
            e.drainer.kill();
            Ok(())
        },
        |e| e.drainer.restart(),
    )?;
    let topic = e2e.kafka_topic()?;
    let addrs = e2e.cluster.kafka.as_ref().expect("kafka").addrs();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (txns, skipped) = rt.block_on(async {
        let mut c = BinlogConsumer::new(ConsumerConfig { addrs, topic, partition: 0, start: StartAt::Beginning, after_commit_ts: 0, format: drainer::sink::kafka::Format::Protobuf })?;
        let (mut n, mut last) = (0u64, 0i64);
        while let Some(t) = c.next_timeout(Duration::from_secs(5)).await? {
            anyhow::ensure!(t.commit_ts > last, "commit ts {} after {last}", t.commit_ts);
            (n, last) = (n + 1, t.commit_ts);
        }
        anyhow::Ok((n, c.skipped()))
    })?;
    assert!(txns > 50, "the workload reached the topic: {txns} transactions");
    assert_eq!(skipped, 0, "a transaction reached the topic twice");
    Ok(())
}

// ---- Exactly-once (`kafka-exactly-once`): the transactional producer. ----

/// Where the child writer of the kill -9 test finds its brokers, topic and transactional id.
const EOS_CHILD: &str = "TBRS_KAFKA_EOS_CHILD";

/// `n` transactions of 20 inserts each, commit ts 10, 20, ..: with a 1 KiB message limit each is a
/// chunk sequence of several messages.
fn eos_items(n: i64) -> Vec<Item> {
    (0..n).map(|i| sink_items::dml(10 * (i + 1), (0..20).map(|k| RowChange::Insert(sink_items::row(i * 20 + k, 1))).collect())).collect()
}

fn eos_config(addrs: &str, topic: &str, transactional_id: &str) -> KafkaConfig {
    let mut cfg = config(addrs, topic);
    cfg.max_message_size = 1024;
    cfg.transactional_id = Some(transactional_id.to_string());
    cfg
}

/// How many messages `topic`/0 holds when read with `isolation` (`read_committed` or
/// `read_uncommitted`); transaction markers are never counted.
fn count_messages(addrs: &str, topic: &str, isolation: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addrs)
        .set("group.id", "tbrs-count")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => n += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return n,
            _ => {}
        }
    }
    panic!("could not read {topic}/0 to its end ({isolation})");
}

/// The writer the kill -9 test kills: writes [`eos_items`] with the exactly-once producer as fast
/// as it can. Runs only as that test's child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of kafka_sink_exactly_once_kill9_of_the_writer_leaves_every_txn_once_read_committed"]
async fn eos_writer_child() {
    let spec = std::env::var(EOS_CHILD).expect("run by its parent test");
    let parts: Vec<&str> = spec.split('|').collect();
    let mut sink = KafkaSink::connect(eos_config(parts[0], parts[1], parts[2])).await.unwrap();
    for it in eos_items(1_000_000) {
        sink.write(Arc::new(it)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_exactly_once_kill9_of_the_writer_leaves_every_txn_once_read_committed() {
    let (dir, kafka) = start_kafka(1).await;
    let addrs = kafka.addrs();
    let (topic, tid) = ("eos_kill9", "tbrs-eos-kill9");
    kafka.create_topic(topic, 1, &[]).await.unwrap();
    // A writer process, killed with SIGKILL in the middle of its transactions.
    let log = std::fs::File::create(dir.path().join("writer.log")).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kafka_faults::eos_writer_child", "--ignored", "--nocapture"])
        .env(EOS_CHILD, format!("{addrs}|{topic}|{tid}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let probe = eos_config(&addrs, topic, tid);
    let t = Instant::now();
    loop {
        let held = tokio::task::block_in_place(|| drainer::sink::kafka::last_commit_ts(&probe, 1)).unwrap();
        if held.get(&0).is_some_and(|&ts| ts >= 3_000) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "the writer committed too little: {held:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The kill left messages of its open transaction in the log: visible read_uncommitted only.
    let (committed, all) =
        tokio::task::block_in_place(|| (count_messages(&addrs, topic, "read_committed"), count_messages(&addrs, topic, "read_uncommitted")));
    eprintln!("after kill -9: {committed} committed messages, {} of unfinished transactions", all - committed);
    assert!(all > committed, "the kill left no uncommitted message ({all}); the test proves nothing");

    // The next producer with the same id aborts them and resumes after the last committed item, even
    // when the drainer re-sends from an older savepoint.
    let mut sink = KafkaSink::connect(probe).await.unwrap();
    let cp = sink.load_checkpoint().await.unwrap().expect("a checkpoint in the topic");
    assert!(cp >= 3_000 && cp % 10 == 0, "the checkpoint is a whole committed item: {cp}");
    let items = eos_items(cp / 10 + 40);
    for it in &items {
        sink.write(Arc::new(it.clone())).await.unwrap();
    }
    assert_eq!(sink.flush().await.unwrap(), items.last().unwrap().commit_ts);
    let (got, skipped) = consume(&addrs, topic, items.len()).await;
    assert_eq!(got_ts(&got), commit_ts(&items), "every transaction once, in commit-ts order (read_committed)");
    assert_eq!(skipped, 0, "no duplicate and no cut chunk sequence is visible read_committed");
    assert!(got.iter().all(|t| t.binlog.dml_data.as_ref().is_some_and(|d| d.tables.iter().map(|t| t.mutations.len()).sum::<usize>() == 20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_exactly_once_a_newer_producer_with_the_same_id_fences_the_older_one() {
    let (_dir, kafka) = start_kafka(1).await;
    let addrs = kafka.addrs();
    let (topic, tid) = ("eos_fence", "tbrs-eos-fence");
    let items = eos_items(40);
    let mut old = KafkaSink::connect(eos_config(&addrs, topic, tid)).await.unwrap();
    for it in &items[..20] {
        old.write(Arc::new(it.clone())).await.unwrap();
    }
    assert_eq!(old.flush().await.unwrap(), items[19].commit_ts);

    // A new active drainer's sink: its init_transactions fences the old producer.
    let mut new = KafkaSink::connect(eos_config(&addrs, topic, tid)).await.unwrap();
    assert_eq!(new.load_checkpoint().await.unwrap(), Some(items[19].commit_ts));
    for it in &items[20..30] {
        old.write(Arc::new(it.clone())).await.unwrap();
    }
    let err = format!("{:#}", anyhow::Error::from(old.flush().await.unwrap_err()));
    assert!(err.contains("fenced") && err.contains(tid), "the old sink names the fencing: {err}");
    assert_eq!(old.durable_ts(), items[19].commit_ts, "nothing the old sink wrote after the takeover is durable");
    let err = old.write(Arc::new(items[30].clone())).await.unwrap_err().to_string();
    assert!(err.contains("stopped"), "{err}");

    for it in &items[20..] {
        new.write(Arc::new(it.clone())).await.unwrap();
    }
    assert_eq!(new.flush().await.unwrap(), items.last().unwrap().commit_ts);
    let (got, skipped) = consume(&addrs, topic, items.len()).await;
    assert_eq!((got_ts(&got), skipped), (commit_ts(&items), 0), "every transaction once: the old sink committed nothing more");
}
