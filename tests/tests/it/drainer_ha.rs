//! Drainer HA (`task-name`, ours): two drainers of one task on real PD, pumps and MariaDB under the
//! stand-in's workload. One is active (the etcd election's leader), the other stands by; a killed
//! or frozen active is replaced, and the downstream's fencing row keeps an old active from writing.
//! Every test ends with downstream = upstream (row counts, CHECKSUM TABLE, row-level diff): nothing
//! lost, nothing applied twice.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mysql_async::prelude::Queryable;
use pump::node::{NodeKind, NodeState};
use tests::e2e::{E2e, Options};
use tests::nodes::{Node, list_nodes};

const TASK: &str = "ha-it";

fn opts(duration: Duration) -> Options {
    Options {
        duration,
        threads: 2,
        tables: 3,
        rate: 40.0,
        ddl_every: 200,
        drainer_flags: vec![format!("-task-name={TASK}"), "-ha-lease-ttl=3".into()],
        ..Options::default()
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

/// The node id the task's election names leader, if any.
fn leader(pd: &str) -> Result<Option<String>> {
    block_on(async {
        let cfg = pump::etcd::EtcdConfig::from_pd_urls(pd)?;
        let mut c = pump::etcd::connect(&cfg).await?;
        match c.leader(drainer::ha::election_name(TASK)).await {
            Ok(r) => Ok(r.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
            // "election: no leader"
            Err(e) if e.to_string().contains("no leader") => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
}

/// The downstream's fencing token of the task and the highest commit ts its checkpoint rows hold
/// (upstream's row and ours per worker): it grows with every applied transaction.
fn downstream_progress(e: &E2e) -> Result<(i64, i64)> {
    let url = e.cluster.downstream.as_ref().context("downstream")?.url();
    block_on(async {
        let mut c = mysql_async::Conn::from_url(url).await?;
        let token: Option<i64> =
            c.exec_first("SELECT token FROM tidb_binlog.ha_fence WHERE task = ?", (TASK,)).await.unwrap_or(None);
        let workers: Option<Option<i64>> =
            c.query_first("SELECT MAX(commitTS) FROM tidb_binlog.checkpoint_workers").await.unwrap_or(None);
        let global: Vec<String> = c.query("SELECT checkPoint FROM tidb_binlog.checkpoint").await.unwrap_or_default();
        let global = global
            .iter()
            .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok()?.get("commitTS")?.as_i64())
            .max()
            .unwrap_or(0);
        let _ = c.disconnect().await;
        anyhow::Ok((token.unwrap_or(0), workers.flatten().unwrap_or(0).max(global)))
    })
}

/// Waits until a drainer other than `old` leads with a higher token than `old_token` and the
/// downstream has moved past `old_ts`: the new active applied a transaction. Returns the new leader.
fn wait_takeover(e: &E2e, old: &str, old_token: i64, old_ts: i64, timeout: Duration) -> Result<(String, i64, Duration)> {
    let start = Instant::now();
    loop {
        let lead = leader(&e.pd_url()).unwrap_or(None);
        let (token, ts) = downstream_progress(e).unwrap_or((0, 0));
        if let Some(l) = &lead
            && l != old
            && token > old_token
            && ts > old_ts
        {
            return Ok((l.clone(), token, start.elapsed()));
        }
        if start.elapsed() > timeout {
            bail!("no takeover from {old} within {timeout:?}: leader {lead:?}, token {token} (was {old_token}), ts {ts} (was {old_ts})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn role_of(pd: &str, id: &str) -> Option<(NodeState, Option<String>)> {
    list_nodes(pd, NodeKind::Drainer).ok()?.into_iter().find(|n| n.node_id == id).map(|n| (n.state, n.role))
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

#[test]
fn kill9_of_the_active_drainer_20_times_under_load_a_standby_takes_over_each_time() -> Result<()> {
    // About 8 s per kill on a loaded 2-core machine: the workload outlasts the 20 kills.
    let mut e = E2e::start(opts(Duration::from_secs(230)), |_| {})?;
    let mut standby = e.add_drainer("drainer-1")?;
    let pd = e.pd_url();
    assert_eq!(leader(&pd)?.as_deref(), Some("drainer-0"), "the first drainer of the task leads");
    // Let the active apply something first (it registers as active once its sink is up).
    wait_takeover(&e, "none", 0, 0, Duration::from_secs(60))?;
    tests::wait_until("drainer-0 registered active", Duration::from_secs(30), || {
        role_of(&pd, "drainer-0").and_then(|r| r.1).as_deref() == Some("active")
    })?;
    assert_eq!(role_of(&pd, "drainer-1").and_then(|r| r.1).as_deref(), Some("standby"));

    let mut takeovers = Vec::new();
    for i in 0..20 {
        // Under load: let the active apply for a moment.
        std::thread::sleep(Duration::from_millis(1500));
        if e.workload_summary().is_some() {
            bail!("the workload ended before kill {i}");
        }
        let (token, ts) = downstream_progress(&e)?;
        let active = e.drainer.node_id.clone();
        assert_eq!(leader(&pd)?.as_deref(), Some(active.as_str()), "kill {i}: the watched drainer leads");
        e.drainer.kill();
        let (new, new_token, took) = wait_takeover(&e, &active, token, ts, Duration::from_secs(30))?;
        assert_eq!(new, standby.node_id, "kill {i}: the standby took over");
        eprintln!("kill {i}: {active} killed, {new} applied its first transaction after {took:?} (token {token} -> {new_token})");
        takeovers.push(took);
        // The killed one comes back as the standby.
        e.drainer.restart()?;
        assert_eq!(role_of(&pd, &active).and_then(|r| r.1).as_deref(), Some("standby"), "kill {i}: restarted as standby");
        std::mem::swap(&mut e.drainer, &mut standby);
    }
    takeovers.sort();
    let (p50, max) = (percentile(&takeovers, 0.5), *takeovers.last().unwrap());
    eprintln!("takeover (kill -9 of the active -> first transaction applied by the new one), 20 kills: p50 {p50:?}, max {max:?}");
    assert!(max < Duration::from_secs(10), "a takeover took {max:?} (p50 {p50:?})");

    // Downstream = upstream once the workload is over.
    e.wait_workload(|_| Ok(()))?;
    let active = leader(&pd)?.context("a leader at the end")?;
    make_watched(&mut e, &mut standby, &active);
    let report = e.finish_and_verify(Duration::from_secs(180))?;
    assert!(report.equal && report.tables > 0, "{}", report.text);
    Ok(())
}

#[test]
fn a_frozen_active_is_fenced_out_and_the_new_active_goes_on() -> Result<()> {
    let mut e = E2e::start(opts(Duration::from_secs(40)), |_| {})?;
    let mut standby = e.add_drainer("drainer-1")?;
    let pd = e.pd_url();
    wait_takeover(&e, "none", 0, 0, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(3));
    let (token, ts) = downstream_progress(&e)?;

    // Frozen past its lease: the standby takes over and ends the frozen one's sessions.
    e.drainer.signal(libc::SIGSTOP);
    let (new, new_token, took) = wait_takeover(&e, "drainer-0", token, ts, Duration::from_secs(30))?;
    assert_eq!(new, "drainer-1");
    eprintln!("frozen active replaced after {took:?} (token {token} -> {new_token})");
    std::thread::sleep(Duration::from_secs(2));

    // Resumed: it must write nothing and stop.
    e.drainer.signal(libc::SIGCONT);
    let status = e.drainer.wait_exit(Duration::from_secs(150)).context("the old active did not stop after it was resumed")?;
    assert!(!status.success(), "the old active exits with an error");
    let log = std::fs::read_to_string(e.drainer.log())?;
    assert!(
        log.contains("lease of task") || log.contains("fencing check refused"),
        "the old active says why it stopped:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
    // The fencing row still names the new active's token: the old one never raised it back.
    assert_eq!(downstream_progress(&e)?.0, new_token);
    assert_eq!(leader(&pd)?.as_deref(), Some("drainer-1"));

    make_watched(&mut e, &mut standby, "drainer-1");
    e.wait_workload(|_| Ok(()))?;
    let report = e.finish_and_verify(Duration::from_secs(180))?;
    assert!(report.equal && report.tables > 0, "{}", report.text);
    Ok(())
}

#[test]
fn offline_of_the_active_hands_over_at_once_and_pausing_a_standby_stops_only_it() -> Result<()> {
    let mut e = E2e::start(opts(Duration::from_secs(25)), |_| {})?;
    let mut standby = e.add_drainer("drainer-1")?;
    let mut third = e.add_drainer("drainer-2")?;
    let pd = e.pd_url();
    wait_takeover(&e, "none", 0, 0, Duration::from_secs(60))?;

    // binlogctl shows the task and each role.
    let ctl = tests::e2e::binary("binlogctl")?;
    let out = std::process::Command::new(&ctl).args([&format!("-pd-urls={pd}"), "-cmd", "drainers"]).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("Task: {TASK}, Role: active")) && text.contains("Role: standby"), "{text}");
    let out = std::process::Command::new(&ctl).args([&format!("-pd-urls={pd}"), "-cmd", "status"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("standby of task {TASK}")), "{text}");

    // Pausing a standby stops only it.
    let out = std::process::Command::new(&ctl)
        .args([&format!("-pd-urls={pd}"), "-cmd", "pause-drainer", "-node-id", "drainer-2"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(third.wait_exit(Duration::from_secs(30)).is_some(), "the paused standby exits");
    assert_eq!(role_of(&pd, "drainer-2").map(|r| r.0), Some(NodeState::Paused));
    assert_eq!(leader(&pd)?.as_deref(), Some("drainer-0"));

    // Offline of the active: it stops cleanly (offline), revokes its lease, the standby takes over.
    let (token, ts) = downstream_progress(&e)?;
    let t = Instant::now();
    let out = std::process::Command::new(&ctl)
        .args([&format!("-pd-urls={pd}"), "-cmd", "offline-drainer", "-node-id", "drainer-0"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (new, _, took) = wait_takeover(&e, "drainer-0", token, ts, Duration::from_secs(30))?;
    assert_eq!(new, "drainer-1");
    eprintln!("offline of the active -> first transaction by the standby: {:?}", t.elapsed().max(took));
    assert!(e.drainer.wait_exit(Duration::from_secs(30)).is_some(), "the offline drainer exits");
    assert_eq!(role_of(&pd, "drainer-0").map(|r| r.0), Some(NodeState::Offline));

    make_watched(&mut e, &mut standby, "drainer-1");
    e.wait_workload(|_| Ok(()))?;
    let report = e.finish_and_verify(Duration::from_secs(180))?;
    assert!(report.equal && report.tables > 0, "{}", report.text);
    Ok(())
}
