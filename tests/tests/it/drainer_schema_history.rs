//! Rows decoded with the table definition of their binlog's schema version, through the real
//! pipeline: a transaction that started before a MODIFY COLUMN (which gives the column a new id)
//! commits after it; its value must arrive, not the column's default.

use anyhow::Result;
use tests::scripted::{Change, Kind, ScriptedCluster, Val};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_written_before_a_modify_column_keeps_its_value() -> Result<()> {
    let mut c = ScriptedCluster::start(1).await?;
    let d = c.drainer("drainer", &c.drainer_toml("", "")).await?;
    let t = &mut c.tidb;
    t.create_database("test").await?;
    t.create_table("test", "t", &[("id", Kind::Int), ("n", Kind::Int)], &["id"]).await?;
    t.txn(&[("test", "t", Change::Insert(vec![Val::Int(1), Val::Int(7)]))]).await?;
    // Started at the old schema version, committed after the DDL.
    let late = t.prewrite(&[("test", "t", Change::Insert(vec![Val::Int(2), Val::Int(42)]))]).await?;
    t.modify_column("test", "t", "n", Kind::Text).await?;
    t.commit_prewritten(late).await?;
    t.txn(&[("test", "t", Change::Insert(vec![Val::Int(3), Val::Text("new".into())]))]).await?;
    c.caught_up(&d).await?;
    let rows: Vec<(i64, Option<String>)> = {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::from_url(c.downstream_url()).await?;
        conn.query("SELECT id, n FROM test.t ORDER BY id").await?
    };
    let want = vec![(1, Some("7".to_owned())), (2, Some("42".to_owned())), (3, Some("new".to_owned()))];
    assert_eq!(rows, want);
    Ok(())
}
