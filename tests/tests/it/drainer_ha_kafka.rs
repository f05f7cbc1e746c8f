//! Drainer HA (`task-name`, ours) with the Kafka sink, on real PD (or the stand-in), pumps, MariaDB
//! and Apache Kafka under the stand-in's workload. Every drainer of the task shares one
//! `transactional.id`, so a new active's `init_transactions` fences the old one and aborts what it
//! left open; the new active resumes from the topic read `read_committed`. Each test ends with the
//! topic read `read_committed` holding every transaction once in commit-ts order (no duplicate, no
//! cut chunk sequence) and the downstream, rebuilt from the topic by `binlog-consumer --apply`, equal
//! to the upstream (nothing lost).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use drainer::consumer::{BinlogConsumer, ConsumerConfig, StartAt};
use pump::node::NodeKind;
use tests::e2e::{E2e, Options, SinkKind};
use tests::nodes::{Node, list_nodes};

const TASK: &str = "ha-kafka";

fn opts(duration: Duration) -> Options {
    Options {
        sink: SinkKind::Kafka,
        duration,
        threads: 2,
        tables: 3,
        rate: 40.0,
        ddl_every: 200,
        drainer_flags: vec![format!("-task-name={TASK}"), "-ha-lease-ttl=3".into()],
        ..Options::default()
    }
}

use crate::drainer_ha::block_on;

/// The node id the task's election names leader, if any.
fn leader(pd: &str) -> Result<Option<String>> {
    crate::drainer_ha::task_leader(pd, TASK)
}

/// Follows the topic `read_committed` in a thread of its own: the highest commit ts committed so far.
struct Tail {
    ts: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
}

impl Tail {
    fn start(e: &E2e) -> Result<Self> {
        let addrs = e.cluster.kafka.as_ref().context("kafka")?.addrs();
        let topic = e.kafka_topic()?;
        let (ts, stop) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicBool::new(false)));
        let (t, s) = (ts.clone(), stop.clone());
        std::thread::spawn(move || {
            block_on(async move {
                let cfg = ConsumerConfig { addrs, topic, partition: 0, start: StartAt::Beginning, after_commit_ts: 0, format: drainer::sink::kafka::Format::Protobuf };
                let mut c = BinlogConsumer::new(cfg).expect("tail consumer");
                while !s.load(Ordering::Relaxed) {
                    if let Ok(Some(txn)) = c.next_timeout(Duration::from_millis(200)).await {
                        t.fetch_max(txn.commit_ts, Ordering::Relaxed);
                    }
                }
            })
        });
        Ok(Self { ts, stop })
    }

    /// The highest commit ts read so far (0 when none).
    fn ts(&self) -> i64 {
        self.ts.load(Ordering::Relaxed)
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until a drainer other than `old` leads and the topic holds a commit ts above `old_ts`: the
/// new active committed a transaction. Returns the new leader, when it was first seen leading and
/// when its first commit was seen (both from the call).
fn wait_takeover(e: &E2e, tail: &Tail, old: &str, old_ts: i64, timeout: Duration) -> Result<(String, Duration, Duration)> {
    let start = Instant::now();
    let mut elected = None;
    loop {
        let lead = leader(&e.pd_url()).unwrap_or(None);
        if let Some(l) = &lead
            && l != old
        {
            elected.get_or_insert(start.elapsed());
            if tail.ts() > old_ts {
                return Ok((l.clone(), elected.unwrap_or_default(), start.elapsed()));
            }
        }
        if start.elapsed() > timeout {
            let ts = tail.ts();
            bail!("no takeover from {old} within {timeout:?}: leader {lead:?}, topic at {ts} (was {old_ts})\n{}", logs(e));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of both drainers' logs, for a failure message.
fn logs(e: &E2e) -> String {
    ["drainer/drainer.log", "drainer-1/drainer.log"]
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(e.cluster.dir().join(p)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| !l.contains("CONFWARN") && !l.contains("PartitionEOF")).collect();
            format!("--- {p} ---\n{}", lines[lines.len().saturating_sub(60)..].join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn role_of(pd: &str, id: &str) -> Option<String> {
    list_nodes(pd, NodeKind::Drainer).ok()?.into_iter().find(|n| n.node_id == id).and_then(|n| n.role)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Puts the node named `id` into `e.drainer` (what `finish_and_verify` watches), the other into `other`.
fn make_watched(e: &mut E2e, other: &mut Node, id: &str) {
    if e.drainer.node_id != id {
        std::mem::swap(&mut e.drainer, other);
    }
}

/// Reads the whole topic `read_committed`: the number of transactions, checking that commit ts
/// strictly increase and that no message was dropped as a duplicate or a cut chunk sequence.
fn check_topic_once_in_order(e: &E2e) -> Result<u64> {
    let addrs = e.cluster.kafka.as_ref().context("kafka")?.addrs();
    let topic = e.kafka_topic()?;
    block_on(async {
        let mut c = BinlogConsumer::new(ConsumerConfig { addrs, topic, partition: 0, start: StartAt::Beginning, after_commit_ts: 0, format: drainer::sink::kafka::Format::Protobuf })?;
        let (mut n, mut last) = (0u64, 0i64);
        while let Some(t) = c.next_timeout(Duration::from_secs(5)).await? {
            anyhow::ensure!(t.commit_ts > last, "commit ts {} after {last}", t.commit_ts);
            (n, last) = (n + 1, t.commit_ts);
        }
        anyhow::ensure!(c.skipped() == 0, "{} messages were duplicates or cut chunk sequences", c.skipped());
        Ok(n)
    })
}

/// Starts the cluster and a standby; waits until the first drainer is active and has committed.
fn start(duration: Duration) -> Result<(E2e, Node, Tail)> {
    let e = E2e::start(opts(duration), |_| {})?;
    let standby = e.add_drainer("drainer-1")?;
    let pd = e.pd_url();
    assert_eq!(leader(&pd)?.as_deref(), Some("drainer-0"), "the first drainer of the task leads");
    let tail = Tail::start(&e)?;
    wait_takeover(&e, &tail, "none", 0, Duration::from_secs(90))?;
    tests::wait_until("drainer-0 registered active", Duration::from_secs(30), || role_of(&pd, "drainer-0").as_deref() == Some("active"))?;
    assert_eq!(role_of(&pd, "drainer-1").as_deref(), Some("standby"));
    Ok((e, standby, tail))
}

#[test]
fn kafka_kill9_of_the_active_drainer_20_times_under_load_loses_and_doubles_nothing() -> Result<()> {
    const KILLS: usize = 20;
    let (mut e, mut standby, tail) = start(Duration::from_secs(260))?;
    let pd = e.pd_url();
    let (mut takeovers, mut sink_starts) = (Vec::new(), Vec::new());
    for i in 0..KILLS {
        // Under load: let the active commit for a moment.
        std::thread::sleep(Duration::from_millis(1500));
        if e.workload_summary().is_some() {
            bail!("the workload ended before kill {i}");
        }
        let active = e.drainer.node_id.clone();
        assert_eq!(leader(&pd)?.as_deref(), Some(active.as_str()), "kill {i}: the watched drainer leads");
        e.drainer.kill();
        // Read after the kill (and what it had in flight): only the new active's commits count.
        std::thread::sleep(Duration::from_millis(200));
        let ts = tail.ts();
        let (new, elected, took) = wait_takeover(&e, &tail, &active, ts, Duration::from_secs(30))?;
        assert_eq!(new, standby.node_id, "kill {i}: the standby took over");
        eprintln!("kill {i}: {active} killed, {new} elected after {elected:?}, committed its first transaction to the topic after {took:?}");
        takeovers.push(took);
        sink_starts.push(took - elected);
        e.drainer.restart()?;
        assert_eq!(role_of(&pd, &active).as_deref(), Some("standby"), "kill {i}: restarted as standby");
        std::mem::swap(&mut e.drainer, &mut standby);
    }
    takeovers.sort();
    sink_starts.sort();
    let (p50, max) = (percentile(&takeovers, 0.5), *takeovers.last().unwrap());
    let (s50, smax) = (percentile(&sink_starts, 0.5), *sink_starts.last().unwrap());
    eprintln!(
        "kafka sink takeover (kill -9 of the active -> first transaction committed by the new one), {KILLS} kills: p50 {p50:?}, \
         max {max:?}; of which elected -> first commit (sink connect, init_transactions, checkpoint, pipeline): p50 {s50:?}, max {smax:?}"
    );
    assert!(max < Duration::from_secs(10), "a takeover took {max:?} (p50 {p50:?}; elected -> first commit p50 {s50:?}, max {smax:?})");

    e.wait_workload(|_| Ok(()))?;
    let active = leader(&pd)?.context("a leader at the end")?;
    make_watched(&mut e, &mut standby, &active);
    let report = e.finish_and_verify(Duration::from_secs(180))?;
    assert!(report.equal && report.tables > 0, "{}", report.text);
    let n = check_topic_once_in_order(&e)?;
    assert!(n > 200, "the workload reached the topic: {n} transactions");
    Ok(())
}

#[test]
fn kafka_a_frozen_active_is_fenced_by_the_new_actives_producer_and_writes_nothing_more() -> Result<()> {
    let (mut e, mut standby, tail) = start(Duration::from_secs(45))?;
    let pd = e.pd_url();
    std::thread::sleep(Duration::from_secs(3));

    // Frozen past its lease, in the middle of its transactions: the standby takes over.
    e.drainer.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(200));
    let ts = tail.ts();
    let (new, _, took) = wait_takeover(&e, &tail, "drainer-0", ts, Duration::from_secs(40))?;
    assert_eq!(new, "drainer-1");
    eprintln!("frozen active replaced after {took:?}");
    std::thread::sleep(Duration::from_secs(2));

    // Resumed: it finds its lease lost (or its producer fenced), stops writing and stands by again.
    e.drainer.signal(libc::SIGCONT);
    tests::wait_until("the resumed old active registered as standby", Duration::from_secs(60), || {
        role_of(&pd, "drainer-0").as_deref() == Some(drainer::ha::ROLE_STANDBY)
    })?;
    assert!(e.drainer.is_running(), "the old active stands by instead of exiting");
    let log = std::fs::read_to_string(e.drainer.log())?;
    let (fenced, lease) = (log.contains("kafka producer fenced"), log.contains("no longer the task's active drainer"));
    assert!(fenced || lease, "the old active says why it stopped writing:\n{}", &log[log.len().saturating_sub(3000)..]);
    eprintln!("the old active stopped writing: fenced {fenced}, lease lost {lease}");
    assert_eq!(leader(&pd)?.as_deref(), Some("drainer-1"));

    make_watched(&mut e, &mut standby, "drainer-1");
    e.wait_workload(|_| Ok(()))?;
    let report = e.finish_and_verify(Duration::from_secs(180))?;
    assert!(report.equal && report.tables > 0, "{}", report.text);
    // Had the old active committed anything after the new one read its checkpoint, the topic would
    // hold that commit ts twice (the new active sends everything after its checkpoint).
    let n = check_topic_once_in_order(&e)?;
    assert!(n > 50, "the workload reached the topic: {n} transactions");
    Ok(())
}
