//! `[syncer.relay]` through the real pipeline: the drainer relays what it reads while the downstream
//! is down, is killed with the downstream behind, and restarted without PD; the relay log replay in
//! safe mode brings the downstream to what the upstream wrote, with a consistent checkpoint.

use std::time::Duration;

use anyhow::{Context, Result};
use drainer::relay::RelayReader;
use tests::scripted::{Change, Kind, ScriptedCluster, Val};

fn row(id: i64, v: &str) -> Vec<Val> {
    vec![Val::Int(id), Val::Text(v.into())]
}

/// The highest commit ts in the relay log.
fn relayed_up_to(dir: &std::path::Path) -> i64 {
    let Ok(mut r) = RelayReader::open(dir) else { return 0 };
    let mut last = 0;
    while let Ok(Some(b)) = r.next_binlog() {
        last = b.commit_ts();
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_the_downstream_behind_the_relay_log_replays_it_without_pd() -> Result<()> {
    let mut c = ScriptedCluster::start(1).await?;
    let relay = c.cluster.dir().join("relay");
    let toml = c.drainer_toml("", &format!("[syncer.relay]\nlog-dir = \"{}\"\nmax-file-size = 4096\n", relay.display()));
    let mut d = c.drainer("drainer", &toml).await?;
    c.tidb.create_database("test").await?;
    c.tidb.create_table("test", "t", &[("id", Kind::Int), ("v", Kind::Text)], &["id"]).await?;
    for i in 1..=5 {
        c.tidb.txn(&[("test", "t", Change::Insert(row(i, "first")))]).await?;
    }
    c.caught_up(&d).await?;
    assert_eq!(c.rows("test.t").await?.len(), 5);

    // The downstream goes away; the drainer goes on reading and relaying.
    c.cluster.downstream.as_mut().context("downstream")?.kill();
    let mut last = 0;
    for i in 6..=40 {
        last = c.tidb.txn(&[("test", "t", Change::Insert(row(i, &format!("v{i}").repeat(8))))]).await?;
    }
    last = last.max(c.tidb.txn(&[("test", "t", Change::Update(row(3, "first"), row(3, "changed")))]).await?);
    last = last.max(c.tidb.txn(&[("test", "t", Change::Delete(row(4, "first")))]).await?);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while relayed_up_to(&relay) < last {
        anyhow::ensure!(std::time::Instant::now() < deadline, "the relay log never reached ts {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let files = drainer::sink::file::binlogfile::list_files(&relay)?;
    assert!(files.len() > 1, "max-file-size rotates the relay log: {files:?}");
    d.kill();

    // The upstream cluster is lost; the downstream is back.
    c.cluster.pd.as_mut().context("pd")?.kill();
    let down = c.cluster.downstream.as_mut().context("downstream")?;
    tokio::task::block_in_place(|| down.restart())?;
    let before: Option<i64> = c.query_one("SELECT COUNT(*) FROM test.t").await?;
    assert_eq!(before, Some(5), "the downstream is behind");

    // Restarted without PD: the drainer replays the relay log and exits with the PD error.
    let restarted = tokio::task::block_in_place(|| d.restart());
    assert!(restarted.is_err(), "the drainer cannot come online without PD");
    let log = std::fs::read_to_string(d.log())?;
    assert!(log.contains("relay log replayed"), "{log}");

    let mut want: Vec<(i64, Option<String>)> = (1..=40)
        .filter(|&i| i != 4)
        .map(|i| (i, Some(if i <= 5 { "first".to_owned() } else { format!("v{i}").repeat(8) })))
        .collect();
    want[2].1 = Some("changed".into());
    assert_eq!(c.rows("test.t").await?, want);
    let ck: Option<String> = c.query_one("SELECT checkPoint FROM tidb_binlog.checkpoint").await?;
    let ck: serde_json::Value = serde_json::from_str(&ck.context("no checkpoint row")?)?;
    assert_eq!(ck["consistent"], true, "{ck}");
    assert!(ck["commitTS"].as_i64().unwrap_or(0) >= last, "{ck}");
    Ok(())
}

/// A relay directory the drainer cannot create is named at start.
#[test]
fn an_unusable_relay_dir_is_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let p = dir.path().join("d.toml");
    let relay = blocker.join("relay");
    std::fs::write(&p, format!("[syncer.relay]\nlog-dir = \"{}\"\n", relay.display())).unwrap();
    let out = std::process::Command::new(tests::our_binary("drainer"))
        .arg(format!("-config={}", p.display()))
        .arg("-pd-urls=http://127.0.0.1:1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("log-dir") && err.contains(&relay.display().to_string()), "{err}");
}
