//! `load-schema-snapshot` through the real pipeline on a history of 10 000 DDL jobs: the drainer that
//! folds the history into a snapshot peaks at less memory than the one that holds and replays it
//! (both measured, with their start times, and printed), and replicates with the right schema.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use drainer::tidb::model::action;
use tests::nodes::Node;
use tests::scripted::{Change, Kind, ScriptedCluster, Val};

const TABLES: usize = 40;
const JOBS: usize = 10_000;

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM")?;
    Ok(line.split_whitespace().nth(1).context("VmHWM value")?.parse()?)
}

/// Starts a drainer, returns it with its start time and peak memory once online.
async fn measured(c: &ScriptedCluster, name: &str, toml: &str) -> Result<(Node, Duration, u64)> {
    let t = Instant::now();
    let mut d = c.drainer(name, toml).await?;
    let took = t.elapsed();
    let pid = d.pid().context("drainer not running")?;
    Ok((d, took, peak_rss_kib(pid)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_long_ddl_history_starts_in_less_memory_than_the_replay() -> Result<()> {
    let mut c = ScriptedCluster::start(1).await?;
    let cols: Vec<(String, Kind)> =
        (0..12).map(|i| if i == 0 { ("id".to_owned(), Kind::Int) } else { (format!("c{i}"), Kind::Text) }).collect();
    let cols: Vec<(&str, Kind)> = cols.iter().map(|(n, k)| (n.as_str(), *k)).collect();
    c.tidb.create_database("test").await?;
    for i in 0..TABLES {
        c.tidb.create_table("test", &format!("t{i}"), &cols, &["id"]).await?;
    }
    for n in 0..JOBS - TABLES - 1 {
        let t = format!("t{}", n % TABLES);
        c.tidb.history_only("test", &t, action::ADD_INDEX, &format!("ALTER TABLE `{t}` ADD INDEX i{n} (c1)")).await?;
    }
    // The drainers start after the whole history; the one table they write to exists downstream.
    c.start_ts = c.tidb.ts().await?;
    {
        use mysql_async::prelude::Queryable;
        let defs: Vec<String> = cols.iter().map(|(n, k)| format!("`{n}` {}", if *k == Kind::Int { "BIGINT PRIMARY KEY" } else { "VARCHAR(64)" })).collect();
        let mut down = mysql_async::Conn::from_url(c.downstream_url()).await?;
        down.query_drop(format!("CREATE DATABASE test; CREATE TABLE test.t7 ({})", defs.join(", "))).await?;
    }

    let (mut full, full_start, full_kib) = measured(&c, "full", &c.drainer_toml("", "")).await?;
    assert!(tokio::task::block_in_place(|| full.signal_and_wait(15, Duration::from_secs(30))));
    let (snap, snap_start, snap_kib) = measured(&c, "snap", &c.drainer_toml("load-schema-snapshot = true", "")).await?;
    eprintln!(
        "{JOBS} DDL jobs: full replay peak RSS {full_kib} KiB, start {full_start:?}; snapshot peak RSS {snap_kib} KiB, start {snap_start:?}"
    );
    assert!(snap_kib < full_kib, "snapshot {snap_kib} KiB, full replay {full_kib} KiB");
    let log = std::fs::read_to_string(snap.log())?;
    assert!(log.contains("schema snapshot built"), "{log}");

    // The snapshot's schema decodes the rows: every column lands.
    let mut row = vec![Val::Int(1)];
    row.extend((1..12).map(|i| Val::Text(format!("v{i}"))));
    c.tidb.txn(&[("test", "t7", Change::Insert(row))]).await?;
    c.caught_up(&snap).await?;
    let got: Option<(i64, String, String)> = c.query_one("SELECT id, c1, c11 FROM test.t7").await?;
    assert_eq!(got, Some((1, "v1".to_owned(), "v11".to_owned())));
    Ok(())
}
