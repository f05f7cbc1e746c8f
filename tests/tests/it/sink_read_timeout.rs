//! `[syncer.to] read-timeout` against a real MariaDB: a round trip the downstream does not answer in
//! time drops the connection and is retried on a new one; one that never gets through in time is
//! named with the read-timeout when the sink gives up; in time, the row arrives exactly once.

use std::time::{Duration, Instant};

use drainer::sink::Sink;
use drainer::sink::mysql::{MysqlSink, MysqlSinkConfig};
use drainer::txn::{RowChange, Value, mysql_type};
use mysql_async::prelude::Queryable;
use tests::MariaDb;

use crate::mysql_sink::{col, conn, dml, rt, sink_cfg, table};

#[test]
fn a_round_trip_past_read_timeout_is_retried_on_a_new_connection_and_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = MariaDb::start(dir.path()).unwrap();
    rt().block_on(async {
        let mut c = conn(&db).await;
        c.query_drop("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v INT); INSERT INTO d.t VALUES (1, 0)")
            .await
            .unwrap();
        let t = table("d", "t", vec![col("id", mysql_type::LONG), col("v", mysql_type::LONG)], Some(0));
        let insert = |ts: i64, id: i64, v: i64| dml(ts, vec![(t.clone(), RowChange::Insert(vec![Some(Value::Int(id)), Some(Value::Int(v))]))]);
        let cfg = MysqlSinkConfig { read_timeout: Duration::from_secs(1), worker_count: 1, ..sink_cfg(&db) };
        let mut sink = MysqlSink::connect(cfg.clone()).await.unwrap();
        sink.write(insert(5, 3, 3)).await.unwrap();
        assert_eq!(sink.flush().await.unwrap(), 5);

        // The table is locked for 3 s: the sink's transaction waits past read-timeout, its connection
        // is dropped and the work retried on a new one; the row lands once.
        let mut holder = conn(&db).await;
        holder.query_drop("LOCK TABLES d.t WRITE").await.unwrap();
        let before = connections(&mut c).await;
        sink.write(insert(10, 2, 5)).await.unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            holder.query_drop("UNLOCK TABLES").await.unwrap();
        });
        let start = Instant::now();
        assert_eq!(sink.flush().await.unwrap(), 10);
        assert!(start.elapsed() >= Duration::from_secs(2), "{:?}", start.elapsed());
        release.await.unwrap();
        let after = connections(&mut c).await;
        assert!(after > before, "no new connection: the timed-out one was kept ({before} -> {after})");
        let rows: Vec<(i64, i64)> = c.query("SELECT id, v FROM d.t ORDER BY id").await.unwrap();
        assert_eq!(rows, vec![(1, 0), (2, 5), (3, 3)]);
        sink.close().await.unwrap();
    });
}

/// How many connections the server has accepted so far.
async fn connections(c: &mut mysql_async::Conn) -> i64 {
    let q = "SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'CONNECTIONS'";
    c.query_first::<i64, _>(q).await.unwrap().unwrap()
}
