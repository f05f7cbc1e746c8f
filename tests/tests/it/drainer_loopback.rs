//! `loopback-control` and `channel-id` through the real pipeline (scripted TiDB, real pumps, the real
//! `drainer`, MariaDB): the drainer marks what it writes and drops upstream transactions that carry
//! its own channel's mark, the way the other direction of a bidirectional pair sends our writes back.

use anyhow::Result;
use tests::scripted::{Change, Kind, ScriptedCluster, Val};

fn mark(id: i64, channel: i64, val: i64) -> Vec<Val> {
    vec![Val::Int(id), Val::Int(channel), Val::Int(val), Val::Text(String::new())]
}

fn row(id: i64, v: &str) -> Vec<Val> {
    vec![Val::Int(id), Val::Text(v.into())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_marked_transactions_are_dropped_and_every_write_is_marked() -> Result<()> {
    let mut c = ScriptedCluster::start(1).await?;
    let toml = c.drainer_toml("loopback-control = true\nchannel-id = 7", "");
    let d = c.drainer("drainer", &toml).await?;
    let t = &mut c.tidb;
    t.create_database("test").await?;
    t.create_table("test", "t", &[("id", Kind::Int), ("v", Kind::Text)], &["id"]).await?;
    // The mark table as the other cluster's TiDB has it (its rows were written by drainers).
    t.create_database("retl").await?;
    let cols = [("id", Kind::Int), ("channel_id", Kind::Int), ("val", Kind::Int), ("channel_info", Kind::Text)];
    t.create_table("retl", "_drainer_repl_mark", &cols, &["id", "channel_id"]).await?;
    t.txn(&[("retl", "_drainer_repl_mark", Change::Insert(mark(0, 7, 1)))]).await?;
    t.txn(&[("retl", "_drainer_repl_mark", Change::Insert(mark(0, 8, 1)))]).await?;
    t.txn(&[("test", "t", Change::Insert(row(1, "a")))]).await?;
    // What this drainer wrote, coming back: its mark with channel 7 and the rows. Dropped whole.
    t.txn(&[
        ("retl", "_drainer_repl_mark", Change::Update(mark(0, 7, 1), mark(0, 7, 2))),
        ("test", "t", Change::Insert(row(2, "echo"))),
    ])
    .await?;
    // Another channel's drainer wrote this one: replicated, its mark row too.
    t.txn(&[
        ("test", "t", Change::Insert(row(3, "other"))),
        ("retl", "_drainer_repl_mark", Change::Update(mark(0, 8, 1), mark(0, 8, 2))),
    ])
    .await?;
    t.txn(&[("test", "t", Change::Update(row(1, "a"), row(1, "a2")))]).await?;
    c.caught_up(&d).await?;
    let rows = c.rows("test.t").await?;
    assert_eq!(rows, vec![(1, Some("a2".to_owned())), (3, Some("other".to_owned()))]);
    let other: Option<i64> = c.query_one("SELECT val FROM retl._drainer_repl_mark WHERE channel_id = 8 AND id = 0").await?;
    assert_eq!(other, Some(2));
    // Our rows: one per connection (worker-count 2), created at start with val 1, and every
    // downstream transaction since bumped one of them.
    let (n, sum): (i64, i64) = c
        .query_one("SELECT COUNT(*), CAST(SUM(val) AS SIGNED) FROM retl._drainer_repl_mark WHERE channel_id = 7")
        .await?
        .unwrap_or_default();
    assert_eq!(n, 2);
    assert!(sum >= n + 3, "at least the three row transactions were marked: sum {sum}");
    Ok(())
}

/// Two clusters replicating into each other, as a bidirectional TiDB pair: each cluster's storage is a
/// MariaDB whose committed transactions a `BinlogBridge` turns into that cluster's binlogs, and each
/// drainer writes into the other cluster's MariaDB. Writes on both sides reach both, and with
/// loopback control nothing comes back: the data settles and both drainers keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_pair_settles_without_a_loop() -> Result<()> {
    use std::time::Duration;
    use mysql_async::prelude::Queryable;
    use tests::scripted::BinlogBridge;

    let binlog = ["--log-bin=mysql-bin", "--binlog-format=ROW", "--server-id=1"];
    let mut x = ScriptedCluster::start_with(1, &binlog).await?;
    let mut y = ScriptedCluster::start_with(1, &binlog).await?;
    let cols = [("id", Kind::Int), ("channel_id", Kind::Int), ("val", Kind::Int), ("channel_info", Kind::Text)];
    for c in [&mut x, &mut y] {
        let mut db = mysql_async::Conn::from_url(c.downstream_url()).await?;
        db.query_drop("CREATE DATABASE test; CREATE TABLE test.t (id BIGINT PRIMARY KEY, v VARCHAR(64))").await?;
        db.query_drop(tests_mark_table()).await?;
        c.tidb.create_database("test").await?;
        c.tidb.create_table("test", "t", &[("id", Kind::Int), ("v", Kind::Text)], &["id"]).await?;
        c.tidb.create_database("retl").await?;
        c.tidb.create_table("retl", "_drainer_repl_mark", &cols, &["id", "channel_id"]).await?;
    }
    let mut bx = BinlogBridge::start(x.cluster.downstream.as_ref().map(|d| d.port).unwrap_or_default()).await?;
    let mut by = BinlogBridge::start(y.cluster.downstream.as_ref().map(|d| d.port).unwrap_or_default()).await?;
    // Each drainer reads its cluster and writes into the other's MariaDB; DDL is not replicated.
    let toml_into = |other: &ScriptedCluster| {
        let port = other.cluster.downstream.as_ref().map(|d| d.port).unwrap_or_default();
        format!(
            "detect-interval = 1\n[syncer]\ndb-type = \"mysql\"\nworker-count = 2\ntxn-batch = 8\nsync-ddl = false\n\
             loopback-control = true\nchannel-id = 1\n[syncer.to]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"root\"\npassword = \"\"\n"
        )
    };
    let mut dx = x.drainer("x-to-y", &toml_into(&y)).await?;
    let mut dy = y.drainer("y-to-x", &toml_into(&x)).await?;

    let mut mx = mysql_async::Conn::from_url(x.downstream_url()).await?;
    let mut my = mysql_async::Conn::from_url(y.downstream_url()).await?;
    mx.query_drop("INSERT INTO test.t VALUES (1, 'x1'), (2, 'x2')").await?;
    mx.query_drop("UPDATE test.t SET v = 'x1b' WHERE id = 1").await?;
    my.query_drop("INSERT INTO test.t VALUES (101, 'y1'), (102, 'y2')").await?;
    my.query_drop("UPDATE test.t SET v = 'y1b' WHERE id = 101").await?;
    my.query_drop("DELETE FROM test.t WHERE id = 102").await?;

    let want: Vec<(i64, String)> = vec![(1, "x1b".into()), (2, "x2".into()), (101, "y1b".into())];
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let mut settled_at = None;
    let mut counts = (0, 0);
    loop {
        bx.poll(&mut x.tidb).await?;
        by.poll(&mut y.tidb).await?;
        anyhow::ensure!(dx.is_running() && dy.is_running(), "a drainer stopped:\n{}\n{}", log_tail(&dx), log_tail(&dy));
        let tx: Vec<(i64, String)> = mx.query("SELECT id, v FROM test.t ORDER BY id").await?;
        let ty: Vec<(i64, String)> = my.query("SELECT id, v FROM test.t ORDER BY id").await?;
        if tx == want && ty == want {
            let now = (bx.data_txns, by.data_txns);
            match settled_at {
                // Settled: for 5 s no transaction that changes data is bridged any more.
                Some(t) if now == counts && std::time::Instant::now() >= t + Duration::from_secs(5) => break,
                Some(_) if now == counts => {}
                _ => {
                    settled_at = Some(std::time::Instant::now());
                    counts = now;
                }
            }
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "not settled: x {tx:?}, y {ty:?}, bridged {:?}", (bx.data_txns, by.data_txns));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Each side's user writes plus what the other drainer applied; nothing echoed further.
    assert!(counts.0 >= 2 && counts.1 >= 3, "{counts:?}");
    let marks: Option<i64> = my.query_first("SELECT CAST(SUM(val) AS SIGNED) FROM retl._drainer_repl_mark WHERE channel_id = 1").await?;
    assert!(marks.unwrap_or(0) > 2, "the x-to-y drainer marked its writes: {marks:?}");
    Ok(())
}

fn tests_mark_table() -> &'static str {
    drainer::loopback::CREATE_SQL
}

fn log_tail(n: &tests::nodes::Node) -> String {
    let log = std::fs::read_to_string(n.log()).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
