//! `[syncer.binlog-filter-rule.*]`, `[[syncer.table-migrate-rule]]` and `case-sensitive` through the
//! real pipeline: a scripted TiDB writes binlogs to two real pumps, the real `drainer` replicates into
//! MariaDB, and the downstream must hold exactly what the rules leave.

use anyhow::Result;
use drainer::tidb::model::action;
use tests::nodes::Node;
use tests::scripted::{Change, Kind, ScriptedCluster, Val};

fn row(id: i64, v: &str) -> Vec<Val> {
    vec![Val::Int(id), Val::Text(v.into())]
}

fn want(rows: &[(i64, &str)]) -> Vec<(i64, Option<String>)> {
    rows.iter().map(|(i, v)| (*i, Some(v.to_string()))).collect()
}

const ID_V: &[(&str, Kind)] = &[("id", Kind::Int), ("v", Kind::Text)];

/// A scripted cluster of `pumps` pumps whose TiDB holds database `db` with the `(id, v)` tables
/// `tables`, and a drainer started with `syncer` (`[syncer]` keys) and `rules` (rule sections).
async fn start_with_tables(
    pumps: usize,
    db: &str,
    tables: &[&str],
    syncer: &str,
    rules: &str,
) -> Result<(ScriptedCluster, Node)> {
    let mut c = ScriptedCluster::start(pumps).await?;
    c.tidb.create_database(db).await?;
    for t in tables {
        c.tidb.create_table(db, t, ID_V, &["id"]).await?;
    }
    let d = c.drainer("drainer", &c.drainer_toml(syncer, rules)).await?;
    Ok((c, d))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_rule_drops_the_deletes_of_its_tables_only() -> Result<()> {
    let (mut c, d) = start_with_tables(
        2,
        "test",
        &["t1", "t2"],
        "",
        "[syncer.binlog-filter-rule.no-delete]\nignore-event = [\"delete\"]\n\
         [[syncer.table-migrate-rule]]\nbinlog-filter-rule = [\"no-delete\"]\nsource = { schema = \"test\", table = \"t1\" }\n",
    )
    .await?;
    for tb in ["t1", "t2"] {
        c.tidb.txn(&[
            ("test", tb, Change::Insert(row(1, "a"))),
            ("test", tb, Change::Insert(row(2, "b"))),
            ("test", tb, Change::Insert(row(3, "c"))),
        ])
        .await?;
    }
    c.tidb.txn(&[("test", "t1", Change::Delete(row(2, "b"))), ("test", "t2", Change::Delete(row(2, "b")))]).await?;
    c.tidb.txn(&[("test", "t1", Change::Update(row(3, "c"), row(3, "c2")))]).await?;
    // Only the delete of a mixed transaction is dropped.
    c.tidb.txn(&[("test", "t1", Change::Delete(row(1, "a"))), ("test", "t1", Change::Insert(row(4, "d")))]).await?;
    c.tidb.txn(&[("test", "t2", Change::Delete(row(3, "c")))]).await?;
    c.caught_up(&d).await?;
    assert_eq!(c.rows("test.t1").await?, want(&[(1, "a"), (2, "b"), (3, "c2"), (4, "d")]));
    assert_eq!(c.rows("test.t2").await?, want(&[(1, "a")]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_rule_drops_one_ddl_kind_and_ignore_sql_drops_matching_ddl() -> Result<()> {
    let (mut c, d) = start_with_tables(
        2,
        "test",
        &["t1", "t2"],
        "",
        "[syncer.binlog-filter-rule.keep-rows]\nignore-event = [\"Truncate Table\"]\n\
         [syncer.binlog-filter-rule.no-index]\nignore-sql = [\"add\\\\s+index\"]\n\
         [[syncer.table-migrate-rule]]\nbinlog-filter-rule = [\"keep-rows\"]\nsource = { schema = \"test\", table = \"*\" }\n\
         [[syncer.table-migrate-rule]]\nbinlog-filter-rule = [\"no-index\"]\nsource = { schema = \"test\", table = \"t2\" }\n",
    )
    .await?;
    c.tidb.txn(&[("test", "t1", Change::Insert(row(1, "a"))), ("test", "t1", Change::Insert(row(2, "b")))]).await?;
    c.tidb.truncate("test", "t1").await?;
    c.tidb.txn(&[("test", "t1", Change::Insert(row(10, "after")))]).await?;
    // Other DDL kinds still run: a new column, then a row that carries it.
    c.tidb.add_column("test", "t1", "w", Kind::Int).await?;
    c.tidb.txn(&[("test", "t1", Change::Insert(vec![Val::Int(11), Val::Text("w".into()), Val::Int(5)]))]).await?;
    c.tidb.other_ddl("test", "t1", action::ADD_INDEX, "ALTER TABLE `t1` ADD INDEX `iv1` (`v`)").await?;
    c.tidb.other_ddl("test", "t2", action::ADD_INDEX, "ALTER TABLE `t2` ADD INDEX `iv2` (`v`)").await?;
    c.tidb.txn(&[("test", "t2", Change::Insert(row(1, "z")))]).await?;
    c.caught_up(&d).await?;
    assert_eq!(c.rows("test.t1").await?, want(&[(1, "a"), (2, "b"), (10, "after"), (11, "w")]), "the TRUNCATE was dropped");
    assert_eq!(c.query_one::<i64>("SELECT w FROM test.t1 WHERE id = 11").await?, Some(5));
    let index = |t: &str, i: &str| format!("SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = 'test' AND table_name = '{t}' AND index_name = '{i}'");
    assert_eq!(c.query_one::<i64>(&index("t1", "iv1")).await?, Some(1), "t1's ADD INDEX ran");
    assert_eq!(c.query_one::<i64>(&index("t2", "iv2")).await?, Some(0), "t2's ADD INDEX matched ignore-sql");
    assert_eq!(c.rows("test.t2").await?, want(&[(1, "z")]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_source_tables_are_routed_into_one_target() -> Result<()> {
    let mut c = ScriptedCluster::start(2).await?;
    let toml = c.drainer_toml(
        "",
        "[[syncer.table-migrate-rule]]\nsource = { schema = \"shard_?\", table = \"Orders\" }\ntarget = { schema = \"merged\", table = \"orders\" }\n\
         [[syncer.table-migrate-rule]]\nsource = { schema = \"shard_?\" }\ntarget = { schema = \"merged\" }\n",
    );
    let d = c.drainer("drainer", &toml).await?;
    for s in ["shard_1", "shard_2"] {
        c.tidb.create_database(s).await?;
        c.tidb.create_table(s, "orders", ID_V, &["id"]).await?;
    }
    c.tidb.create_table("shard_1", "notes", ID_V, &["id"]).await?;
    c.tidb.txn(&[
        ("shard_1", "orders", Change::Insert(row(1, "s1-a"))),
        ("shard_1", "orders", Change::Insert(row(2, "s1-b"))),
        ("shard_2", "orders", Change::Insert(row(101, "s2-a"))),
        ("shard_1", "notes", Change::Insert(row(1, "n"))),
    ])
    .await?;
    c.tidb.txn(&[("shard_2", "orders", Change::Insert(row(102, "s2-b")))]).await?;
    c.tidb.txn(&[("shard_2", "orders", Change::Update(row(101, "s2-a"), row(101, "s2-a2")))]).await?;
    c.tidb.txn(&[("shard_1", "orders", Change::Delete(row(2, "s1-b")))]).await?;
    // A column added on one shard: the ALTER is routed to the target too.
    c.tidb.add_column("shard_1", "orders", "note", Kind::Text).await?;
    c.tidb.txn(&[("shard_1", "orders", Change::Insert(vec![Val::Int(3), Val::Text("s1-c".into()), Val::Text("x".into())]))]).await?;
    c.tidb.txn(&[("shard_2", "orders", Change::Insert(row(103, "s2-c")))]).await?;
    c.caught_up(&d).await?;
    assert_eq!(
        c.rows("merged.orders").await?,
        want(&[(1, "s1-a"), (3, "s1-c"), (101, "s2-a2"), (102, "s2-b"), (103, "s2-c")])
    );
    assert_eq!(c.query_one::<String>("SELECT note FROM merged.orders WHERE id = 3").await?.as_deref(), Some("x"));
    assert_eq!(c.rows("merged.notes").await?, want(&[(1, "n")]), "the schema-level rule routes the other tables");
    let dbs: Option<i64> = c
        .query_one("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name IN ('shard_1', 'shard_2')")
        .await?;
    assert_eq!(dbs, Some(0), "nothing lands under the source names");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_sensitive_rules_match_names_exactly() -> Result<()> {
    let (mut c, d) = start_with_tables(
        1,
        "Test",
        &["T1", "t1"],
        "case-sensitive = true",
        "[syncer.binlog-filter-rule.no-insert]\nignore-event = [\"insert\"]\n\
         [[syncer.table-migrate-rule]]\nbinlog-filter-rule = [\"no-insert\"]\nsource = { schema = \"Test\", table = \"T1\" }\n",
    )
    .await?;
    c.tidb.txn(&[("Test", "T1", Change::Insert(row(1, "upper"))), ("Test", "t1", Change::Insert(row(1, "lower")))]).await?;
    c.caught_up(&d).await?;
    assert_eq!(c.rows("`Test`.`T1`").await?, want(&[]));
    assert_eq!(c.rows("`Test`.`t1`").await?, want(&[(1, "lower")]));
    Ok(())
}

/// Bad rules stop the drainer at start, each named; so do the keys it does not implement.
#[test]
fn bad_rules_and_unimplemented_keys_are_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[syncer.table-migrate-rule]]\nbinlog-filter-rule = [\"missing\"]\nsource = { schema = \"s\", table = \"t\" }\n",
            "\"missing\"",
        ),
        ("[syncer.binlog-filter-rule.r]\nignore-sql = [\"(unclosed\"]\n", "(unclosed"),
        ("[syncer.binlog-filter-rule.r]\nignore-event = [\"delet\"]\n", "\"delet\""),
        ("[[syncer.table-migrate-rule]]\nsource = { schema = \"a*b\" }\ntarget = { schema = \"x\" }\n", "a*b"),
        ("[syncer]\ndb-type = \"kafka\"\n[syncer.relay]\nlog-dir = \"/tmp/relay\"\n", "syncer.relay.log-dir"),
        ("[syncer.to]\noracle-service-name = \"orcl\"\n", "syncer.to.oracle-service-name"),
        ("[syncer.to]\ntime-limit = \"30s\"\n", "syncer.to.time-limit"),
        ("[syncer.to]\nzookeeper-addrs = \"z:2181\"\n", "syncer.to.zookeeper-addrs"),
    ];
    for (i, (toml, name)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("d{i}.toml"));
        std::fs::write(&p, toml).unwrap();
        let out = std::process::Command::new(tests::our_binary("drainer")).arg(format!("-config={}", p.display())).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {err}");
        assert!(err.contains(name), "{toml}: {name} missing from {err}");
    }
}

/// `sync-ddl = false`: DDL changes the tracked schema (later rows decode with it) but is not run
/// downstream, whose tables the operator manages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_ddl_false_tracks_ddl_without_running_it() -> Result<()> {
    use mysql_async::prelude::Queryable;
    let mut c = ScriptedCluster::start(1).await?;
    let mut down = mysql_async::Conn::from_url(c.downstream_url()).await?;
    down.query_drop("CREATE DATABASE test; CREATE TABLE test.t (id BIGINT PRIMARY KEY, v VARCHAR(64))").await?;
    let toml = c.drainer_toml("sync-ddl = false", "sync-mode = 2");
    let d = c.drainer("drainer", &toml).await?;
    c.tidb.create_database("test").await?;
    c.tidb.create_table("test", "t", ID_V, &["id"]).await?;
    c.tidb.txn(&[("test", "t", Change::Insert(row(1, "a")))]).await?;
    c.tidb.add_column("test", "t", "w", Kind::Int).await?;
    c.tidb.txn(&[("test", "t", Change::Insert(vec![Val::Int(2), Val::Text("b".into()), Val::Int(9)]))]).await?;
    c.tidb.create_table("test", "other", ID_V, &["id"]).await?;
    c.caught_up(&d).await?;
    assert_eq!(c.rows("test.t").await?, want(&[(1, "a"), (2, "b")]));
    let cols: Option<i64> = c
        .query_one("SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'test' AND table_name = 't'")
        .await?;
    assert_eq!(cols, Some(2), "the ADD COLUMN did not run downstream");
    let other: Option<i64> = c
        .query_one("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'test' AND table_name = 'other'")
        .await?;
    assert_eq!(other, Some(0), "the CREATE TABLE did not run downstream");
    Ok(())
}

/// `[syncer.to] merge = true`: rows go as DELETE and REPLACE; inserts, updates (a key change too) and
/// deletes land as upstream wrote them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_mode_replicates_every_kind_of_change() -> Result<()> {
    let mut c = ScriptedCluster::start(1).await?;
    let d = c.drainer("drainer", &c.drainer_toml("", "merge = true")).await?;
    c.tidb.create_database("test").await?;
    c.tidb.create_table("test", "t", ID_V, &["id"]).await?;
    c.tidb
        .txn(&[
            ("test", "t", Change::Insert(row(1, "a"))),
            ("test", "t", Change::Insert(row(2, "b"))),
            ("test", "t", Change::Insert(row(3, "c"))),
            ("test", "t", Change::Update(row(1, "a"), row(1, "a2"))),
        ])
        .await?;
    c.tidb.txn(&[("test", "t", Change::Update(row(2, "b"), row(20, "b")))]).await?;
    c.tidb.txn(&[("test", "t", Change::Delete(row(3, "c"))), ("test", "t", Change::Insert(row(3, "c2")))]).await?;
    c.caught_up(&d).await?;
    assert_eq!(c.rows("test.t").await?, want(&[(1, "a2"), (3, "c2"), (20, "b")]));
    Ok(())
}
