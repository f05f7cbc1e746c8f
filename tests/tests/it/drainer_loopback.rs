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
