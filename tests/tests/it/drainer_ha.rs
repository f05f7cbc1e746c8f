//! Drainer HA (`task-name`, ours): two drainers of one task on real PD, pumps and MariaDB under the
//! stand-in's workload. One is active (the etcd election's leader), the other stands by; a killed
//! or frozen active is replaced, and the downstream's fencing row keeps an old active from writing.
//! Every test ends with downstream = upstream (row counts, CHECKSUM TABLE, row-level diff): nothing
//! lost, nothing applied twice.
//!
//! "At most one writer" is checked from the downstream itself ([`Audit`]): the drainers log in as
//! different MySQL users, and triggers record, in one sequence, each raise of the fencing row and each
//! committed checkpoint write (every downstream transaction of the sink writes one) with its user. A
//! write by any drainer other than the one whose raise came last means two writers.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mysql_async::prelude::Queryable;
use pump::node::{NodeKind, NodeState};
use tests::e2e::{E2e, Options};
use tests::nodes::{Node, list_nodes};
use tests::proxy::{Proxy, sockets_to};

const TASK: &str = "ha-it";
const ROLE_ACTIVE: &str = drainer::ha::ROLE_ACTIVE;
const ROLE_STANDBY: &str = drainer::ha::ROLE_STANDBY;

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

pub(crate) fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

/// The node id the task's election names leader, if any.
fn leader(pd: &str) -> Result<Option<String>> {
    task_leader(pd, TASK)
}

/// The node id the election of `task` names leader, if any.
pub(crate) fn task_leader(pd: &str, task: &str) -> Result<Option<String>> {
    block_on(async {
        let cfg = pump::etcd::EtcdConfig::from_pd_urls(pd)?;
        let mut c = pump::etcd::connect(&cfg).await?;
        match c.leader(drainer::ha::election_name(task)).await {
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

/// The downstream user a second drainer logs in as (drainer-0 is root), so [`Audit`] tells them apart.
const USER_1: &str = "d1";

fn sql(e: &E2e, stmts: &[String]) -> Result<()> {
    let url = e.cluster.downstream.as_ref().context("downstream")?.url();
    block_on(async {
        let mut c = mysql_async::Conn::from_url(url).await?;
        for s in stmts {
            c.query_drop(s).await.with_context(|| s.clone())?;
        }
        let _ = c.disconnect().await;
        anyhow::Ok(())
    })
}

/// Creates downstream user `user` with every privilege (the sink kills an older active's sessions).
fn add_user(e: &E2e, user: &str) -> Result<()> {
    let mut stmts = Vec::new();
    for host in ["%", "localhost", "127.0.0.1"] {
        stmts.push(format!("CREATE USER IF NOT EXISTS '{user}'@'{host}'"));
        stmts.push(format!("GRANT ALL PRIVILEGES ON *.* TO '{user}'@'{host}'"));
    }
    sql(e, &stmts)
}

/// A drainer of the task like drainer-0 but logging in downstream as `user` and reaching PD at `pd`.
fn add_drainer_as(e: &E2e, id: &str, pd: &str, user: &str) -> Result<Node> {
    e.add_drainer_with(id, pd, |toml| toml.replace("user = \"root\"", &format!("user = \"{user}\"")))
}

/// The downstream's record of who raised the fence and who wrote (see the module doc).
struct Audit;

impl Audit {
    /// Installs the audit table and triggers; the sink's tables must exist (a drainer took over).
    fn install(e: &E2e) -> Result<()> {
        let mut stmts = vec![
            "CREATE TABLE IF NOT EXISTS tidb_binlog.ha_audit(seq BIGINT AUTO_INCREMENT PRIMARY KEY, \
             who VARCHAR(128) NOT NULL, what VARCHAR(16) NOT NULL, token BIGINT NULL)"
                .to_string(),
            "CREATE TRIGGER tidb_binlog.ha_audit_raise AFTER UPDATE ON tidb_binlog.ha_fence FOR EACH ROW \
             INSERT INTO tidb_binlog.ha_audit(who, what, token) VALUES (USER(), 'raise', NEW.token)"
                .to_string(),
        ];
        for (table, ev) in [("checkpoint", "INSERT"), ("checkpoint", "UPDATE"), ("checkpoint_workers", "INSERT"), ("checkpoint_workers", "UPDATE")] {
            stmts.push(format!(
                "CREATE TRIGGER tidb_binlog.ha_audit_{table}_{ev} AFTER {ev} ON tidb_binlog.{table} FOR EACH ROW \
                 INSERT INTO tidb_binlog.ha_audit(who, what) VALUES (USER(), 'write')"
            ));
        }
        sql(e, &stmts)
    }

    /// Walks the record in order: the fencing token only rises, every write is by the drainer that
    /// raised it last (before the first raise recorded, by the first writer), and the writers take at
    /// most `terms` turns (one per takeover, plus the first; two writers at once interleave). Returns
    /// the raises, as (user, token), and the number of writes by each user.
    fn check(e: &E2e, terms: usize) -> Result<(Vec<(String, i64)>, std::collections::BTreeMap<String, usize>)> {
        let url = e.cluster.downstream.as_ref().context("downstream")?.url();
        let rows: Vec<(i64, String, String, Option<i64>)> = block_on(async {
            let mut c = mysql_async::Conn::from_url(url).await?;
            let r = c.query("SELECT seq, who, what, token FROM tidb_binlog.ha_audit ORDER BY seq").await?;
            let _ = c.disconnect().await;
            anyhow::Ok(r)
        })?;
        let user = |who: &str| who.split('@').next().unwrap_or(who).to_string();
        let (mut owner, mut raises, mut writes) = (None::<String>, Vec::new(), std::collections::BTreeMap::new());
        let mut turns: Vec<String> = Vec::new();
        for (seq, who, what, token) in rows {
            let who = user(&who);
            if what == "raise" {
                let token = token.unwrap_or(0);
                if let Some((_, last)) = raises.last()
                    && token <= *last
                {
                    bail!("audit seq {seq}: {who} set the fencing token to {token}, not above {last}");
                }
                raises.push((who.clone(), token));
                owner = Some(who);
                continue;
            }
            *writes.entry(who.clone()).or_insert(0) += 1;
            if turns.last() != Some(&who) {
                turns.push(who.clone());
                if turns.len() > terms {
                    bail!("audit seq {seq}: the writers took turns {turns:?}, more than {terms}: two writers");
                }
            }
            match &owner {
                None => owner = Some(who),
                Some(o) if *o == who => {}
                Some(o) => bail!(
                    "audit seq {seq}: {who} committed a write after {o} raised the fencing token to {:?}: two writers",
                    raises.last().map(|r| r.1)
                ),
            }
        }
        Ok((raises, writes))
    }
}

/// Lines of `node`'s log that say the downstream refused one of its transactions (fenced out).
fn fence_refusals(node: &Node) -> usize {
    std::fs::read_to_string(node.log()).unwrap_or_default().lines().filter(|l| l.contains("fencing check refused")).count()
}

fn wait_role(pd: &str, id: &str, role: &str, timeout: Duration) -> Result<()> {
    tests::wait_until(&format!("{id} registered online as {role}"), timeout, || {
        role_of(pd, id) == Some((NodeState::Online, Some(role.to_string())))
    })
    .with_context(|| format!("{id} is {:?}", role_of(pd, id)))
}

fn pd_port(url: &str) -> Result<u16> {
    url.rsplit(':').next().and_then(|p| p.parse().ok()).with_context(|| format!("no port in {url}"))
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
    let pd = e.pd_url();
    add_user(&e, USER_1)?;
    let mut standby = add_drainer_as(&e, "drainer-1", &pd, USER_1)?;
    wait_takeover(&e, "none", 0, 0, Duration::from_secs(60))?;
    Audit::install(&e)?;
    std::thread::sleep(Duration::from_secs(3));
    let (token, ts) = downstream_progress(&e)?;

    // Frozen past its lease: the standby takes over and ends the frozen one's sessions.
    e.drainer.signal(libc::SIGSTOP);
    let (new, new_token, took) = wait_takeover(&e, "drainer-0", token, ts, Duration::from_secs(30))?;
    assert_eq!(new, "drainer-1");
    eprintln!("frozen active replaced after {took:?} (token {token} -> {new_token})");
    std::thread::sleep(Duration::from_secs(2));

    // Resumed: it must write nothing (the audit below), and it goes back to standing by.
    e.drainer.signal(libc::SIGCONT);
    wait_role(&pd, "drainer-0", ROLE_STANDBY, Duration::from_secs(60))?;
    assert!(e.drainer.is_running(), "the old active stands by instead of exiting");
    let log = std::fs::read_to_string(e.drainer.log())?;
    assert!(
        log.contains("no longer the task's active drainer"),
        "the old active says why it stopped writing:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
    let refusals = fence_refusals(&e.drainer);
    // The fencing row still names the new active's token: the old one never raised it back.
    assert_eq!(downstream_progress(&e)?.0, new_token);
    assert_eq!(leader(&pd)?.as_deref(), Some("drainer-1"));

    make_watched(&mut e, &mut standby, "drainer-1");
    e.wait_workload(|_| Ok(()))?;
    let report = e.finish_and_verify(Duration::from_secs(180))?;
    assert!(report.equal && report.tables > 0, "{}", report.text);
    let (raises, writes) = Audit::check(&e, 2)?;
    eprintln!("audit: raises {raises:?}, writes {writes:?}; the resumed active's transactions refused by the fence: {refusals}");
    assert!(raises.iter().any(|(who, t)| who == USER_1 && *t == new_token), "the new active's raise is recorded: {raises:?}");
    assert!(writes.get(USER_1).copied().unwrap_or(0) > 0, "the new active wrote: {writes:?}");
    Ok(())
}

#[test]
fn a_pd_restart_during_a_takeover_loses_nothing_and_never_has_two_writers() -> Result<()> {
    let mut e = E2e::start(opts(Duration::from_secs(150)), |_| {})?;
    let pd = e.pd_url();
    add_user(&e, USER_1)?;
    let mut standby = add_drainer_as(&e, "drainer-1", &pd, USER_1)?;
    wait_takeover(&e, "none", 0, 0, Duration::from_secs(60))?;
    wait_role(&pd, "drainer-0", ROLE_ACTIVE, Duration::from_secs(30))?;
    Audit::install(&e)?;

    let mut takeovers = Vec::new();
    for i in 0..4 {
        std::thread::sleep(Duration::from_secs(2));
        if e.workload_summary().is_some() {
            bail!("the workload ended before round {i}");
        }
        let (token, ts) = downstream_progress(&e)?;
        let active = e.drainer.node_id.clone();
        assert_eq!(leader(&pd)?.as_deref(), Some(active.as_str()), "round {i}: the watched drainer leads");
        let t = Instant::now();
        e.drainer.kill();
        // PD (with its etcd) dies while the standby waits for the killed one's lease, and comes back.
        std::thread::sleep(Duration::from_secs(1));
        let p = e.cluster.pd.as_mut().context("pd")?;
        p.kill_all();
        std::thread::sleep(Duration::from_secs(3));
        p.restart_all()?;
        let pd_back = t.elapsed();
        tests::wait_until("the standby elected", Duration::from_secs(60), || leader(&pd).ok().flatten().as_ref() == Some(&standby.node_id))?;
        let elected = t.elapsed();
        let (new, new_token, _) = wait_takeover(&e, &active, token, ts, Duration::from_secs(60))?;
        let took = t.elapsed();
        assert_eq!(new, standby.node_id, "round {i}: the standby took over");
        eprintln!(
            "round {i}: {active} killed, PD down 1 s later for 3 s; PD served again at {pd_back:?}, {new} elected at {elected:?}, applied at {took:?} (token {token} -> {new_token})"
        );
        takeovers.push(took);
        e.drainer.restart()?;
        wait_role(&pd, &active, ROLE_STANDBY, Duration::from_secs(30))?;
        std::mem::swap(&mut e.drainer, &mut standby);
    }
    takeovers.sort();
    let (p50, max) = (percentile(&takeovers, 0.5), *takeovers.last().unwrap());
    eprintln!("takeover with a PD restart (kill -9 of the active -> first transaction by the new one), {} rounds: p50 {p50:?}, max {max:?}", takeovers.len());

    e.wait_workload(|_| Ok(()))?;
    let active = leader(&pd)?.context("a leader at the end")?;
    make_watched(&mut e, &mut standby, &active);
    let report = e.finish_and_verify(Duration::from_secs(180))?;
    assert!(report.equal && report.tables > 0, "{}", report.text);
    let (raises, writes) = Audit::check(&e, takeovers.len() + 1)?;
    eprintln!("audit: raises {raises:?}, writes {writes:?}");
    assert!(raises.len() >= 4, "a raise per takeover: {raises:?}");
    Ok(())
}

#[test]
fn a_partitioned_active_is_fenced_out_stands_by_by_itself_and_can_lead_again() -> Result<()> {
    let mut e = E2e::start(opts(Duration::from_secs(120)), |_| {})?;
    let pd = e.pd_url();
    let pd_port = pd_port(&pd)?;
    // drainer-1 reaches PD only through the proxy, for etcd and for PD's own API (its GetMembers
    // answer names the proxy, so timestamps go through it too).
    let (proxy, proxied) = Proxy::rewriting_url(&pd)?;
    add_user(&e, USER_1)?;
    wait_takeover(&e, "none", 0, 0, Duration::from_secs(60))?;
    Audit::install(&e)?;
    let mut cut_off = add_drainer_as(&e, "drainer-1", &proxied, USER_1)?;
    wait_role(&pd, "drainer-1", ROLE_STANDBY, Duration::from_secs(30))?;

    // Make drainer-1 the active one: kill drainer-0, which comes back as a standby (reaching PD directly).
    let (token, ts) = downstream_progress(&e)?;
    e.drainer.kill();
    let (new, _, _) = wait_takeover(&e, "drainer-0", token, ts, Duration::from_secs(30))?;
    assert_eq!(new, "drainer-1");
    e.drainer.restart()?;
    wait_role(&pd, "drainer-0", ROLE_STANDBY, Duration::from_secs(30))?;
    wait_role(&pd, "drainer-1", ROLE_ACTIVE, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(3));
    let pid = cut_off.pid().context("drainer-1 runs")?;
    assert_eq!(sockets_to(pid, pd_port)?, 0, "drainer-1 has a connection to PD that bypasses the proxy");
    assert!(sockets_to(pid, proxy.port)? > 0, "drainer-1 talks to PD through the proxy");

    // Cut under load: drainer-1 loses its lease, drainer-0 takes over.
    let (token, ts) = downstream_progress(&e)?;
    let t = Instant::now();
    proxy.cut();
    let (new, new_token, _) = wait_takeover(&e, "drainer-1", token, ts, Duration::from_secs(30))?;
    let took = t.elapsed();
    assert_eq!(new, "drainer-0");
    eprintln!("partition: drainer-1 cut off from PD, drainer-0 applied after {took:?} (token {token} -> {new_token})");
    std::thread::sleep(Duration::from_secs(3));
    assert!(cut_off.is_running(), "the cut-off active must not exit\n{}", std::fs::read_to_string(cut_off.log())?);
    let log = std::fs::read_to_string(cut_off.log())?;
    assert!(log.contains("no longer the task's active drainer"), "{}", &log[log.len().saturating_sub(3000)..]);

    // Healed: drainer-1 registers as a standby by itself, still only through the proxy.
    proxy.heal()?;
    wait_role(&pd, "drainer-1", ROLE_STANDBY, Duration::from_secs(60))?;
    assert_eq!(sockets_to(pid, pd_port)?, 0, "drainer-1 has a connection to PD that bypasses the proxy");
    assert_eq!(leader(&pd)?.as_deref(), Some("drainer-0"));

    // And it leads again when the new active dies.
    std::thread::sleep(Duration::from_secs(2));
    let (token, ts) = downstream_progress(&e)?;
    let t = Instant::now();
    e.drainer.kill();
    let (new, _, _) = wait_takeover(&e, "drainer-0", token, ts, Duration::from_secs(30))?;
    assert_eq!(new, "drainer-1");
    eprintln!("drainer-0 killed, the once cut-off drainer-1 applied after {:?}", t.elapsed());
    assert_eq!(cut_off.pid(), Some(pid), "the same drainer-1 process, never restarted");
    e.drainer.restart()?;

    e.wait_workload(|_| Ok(()))?;
    make_watched(&mut e, &mut cut_off, "drainer-1");
    let report = e.finish_and_verify(Duration::from_secs(180))?;
    assert!(report.equal && report.tables > 0, "{}", report.text);
    let (raises, writes) = Audit::check(&e, 4)?;
    let refusals = fence_refusals(&e.drainer);
    eprintln!("audit: raises {raises:?}, writes {writes:?}; drainer-1's transactions refused by the fence: {refusals}");
    let by: Vec<&str> = raises.iter().map(|r| r.0.as_str()).collect();
    assert!(by.ends_with(&[USER_1, "root", USER_1]), "raises by drainer-1, drainer-0, drainer-1: {raises:?}");
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

/// The per-transaction fencing check on its own: once the task's row names a newer token, every
/// transaction of the older sink is refused, data and checkpoint together, even on sessions nobody
/// ended. (In the process tests above the takeover's KILL and the named locks usually stop the old
/// active first; the check covers an old active that reconnects before the new one holds its locks.)
#[test]
fn a_sink_whose_token_was_superseded_commits_nothing_more() {
    use drainer::sink::Sink;
    use drainer::sink::mysql::{MysqlSink, MysqlSinkConfig};
    use drainer::txn::{RowChange, Value, mysql_type as T};
    let cluster = tests::Cluster::builder().downstream_db().start().expect("MariaDB");
    let db = cluster.downstream.as_ref().expect("downstream");
    crate::mysql_sink::rt().block_on(async {
        let mut c = crate::mysql_sink::conn(db).await;
        c.query_drop("CREATE DATABASE fz; CREATE TABLE fz.t(id INT PRIMARY KEY, v INT)").await.unwrap();
        let t = crate::mysql_sink::table(
            "fz",
            "t",
            vec![crate::mysql_sink::col("id", T::LONG), crate::mysql_sink::col("v", T::LONG)],
            Some(0),
        );
        let row = |id: i64| RowChange::Insert(vec![Some(Value::Int(id)), Some(Value::Int(id * 10))]);
        let fence = Some(drainer::ha::Fence { task: "ft".into(), token: 5 });
        let mut sink = MysqlSink::connect(MysqlSinkConfig { fence, ..crate::mysql_sink::sink_cfg(db) }).await.unwrap();
        sink.write(crate::mysql_sink::dml(100, vec![(t.clone(), row(1))])).await.unwrap();
        assert_eq!(sink.flush().await.unwrap(), 100);
        let token: Option<i64> = c.query_first("SELECT token FROM tidb_binlog.ha_fence WHERE task = 'ft'").await.unwrap();
        assert_eq!(token, Some(5), "the sink raised the row to its token at start");

        // A newer active raises the row; the old sink's sessions stay open.
        c.query_drop("UPDATE tidb_binlog.ha_fence SET token = 9 WHERE task = 'ft'").await.unwrap();
        let r = async {
            sink.write(crate::mysql_sink::dml(200, vec![(t.clone(), row(2))])).await?;
            sink.flush().await
        }
        .await;
        let e = r.expect_err("a transaction under a superseded token must be refused");
        assert!(e.to_string().contains("fencing check refused"), "{e}");
        let rows: Option<i64> = c.query_first("SELECT COUNT(*) FROM fz.t").await.unwrap();
        assert_eq!(rows, Some(1), "the refused transaction wrote nothing");
        let token: Option<i64> = c.query_first("SELECT token FROM tidb_binlog.ha_fence WHERE task = 'ft'").await.unwrap();
        assert_eq!(token, Some(9), "the old sink never lowers the row");
    });
}
