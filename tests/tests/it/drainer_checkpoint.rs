//! `[syncer.to.checkpoint] type = "mysql"` for the file sink (upstream #786), through the real
//! pipeline: the checkpoint is upstream's row in another MySQL, not `<data-dir>/savepoint`, and a
//! restarted drainer starts from it.

use anyhow::{Context, Result};
use tests::scripted::{Change, Kind, ScriptedCluster, Val};

/// Commit ts of every record in the file sink's directory.
fn file_ts(dir: &std::path::Path) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for (p, _) in drainer::sink::file::binlogfile::list_files(dir)? {
        let mut r = drainer::sink::file::binlogfile::RecordReader::open(&p)?;
        while let Some((_, b)) = r.next_binlog()? {
            out.push(b.commit_ts());
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sink_keeps_its_checkpoint_in_mysql_and_restarts_from_it() -> Result<()> {
    let mut c = ScriptedCluster::start(1).await?;
    let out = c.cluster.dir().join("out");
    let port = c.cluster.downstream.as_ref().context("downstream")?.port;
    let toml = format!(
        "detect-interval = 1\n[syncer]\ndb-type = \"file\"\n[syncer.to]\ndir = \"{}\"\n\
         [syncer.to.checkpoint]\ntype = \"mysql\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"root\"\npassword = \"\"\nschema = \"ck\"\n",
        out.display()
    );
    let mut d = c.drainer("drainer", &toml).await?;
    c.tidb.create_database("test").await?;
    c.tidb.create_table("test", "t", &[("id", Kind::Int), ("v", Kind::Text)], &["id"]).await?;
    let mut first = Vec::new();
    for i in 1..=5 {
        first.push(c.tidb.txn(&[("test", "t", Change::Insert(vec![Val::Int(i), Val::Text("a".into())]))]).await?);
    }
    c.caught_up(&d).await?;
    assert!(tokio::task::block_in_place(|| d.signal_and_wait(15, std::time::Duration::from_secs(30))), "drainer did not stop");

    let row: Option<String> = c.query_one("SELECT checkPoint FROM ck.checkpoint").await?;
    let ck: serde_json::Value = serde_json::from_str(&row.context("no checkpoint row in MySQL")?)?;
    assert_eq!(ck["consistent"], true, "{ck}");
    assert!(ck["commitTS"].as_i64().unwrap_or(0) >= *first.last().unwrap_or(&0), "{ck}");
    assert!(!d.dir.join("data/savepoint").exists(), "the savepoint file is not the checkpoint");
    let ts = file_ts(&out)?;
    assert!(first.iter().all(|t| ts.contains(t)), "{ts:?}");

    // Without its files the sink has no checkpoint of its own: the MySQL row says where to start.
    std::fs::remove_dir_all(&out)?;
    let mut later = Vec::new();
    for i in 6..=8 {
        later.push(c.tidb.txn(&[("test", "t", Change::Insert(vec![Val::Int(i), Val::Text("b".into())]))]).await?);
    }
    tokio::task::block_in_place(|| d.restart())?;
    c.caught_up(&d).await?;
    assert_eq!(file_ts(&out)?, later, "only what came after the MySQL checkpoint");
    Ok(())
}
