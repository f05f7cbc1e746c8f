//! `[syncer] sql-mode` with the MySQL sink against a real MariaDB: the mode is set on the sink's
//! sessions, and text is escaped for it, so strings with backslashes, quotes and NULs arrive byte for
//! byte under `NO_BACKSLASH_ESCAPES` (where `\` is an ordinary character) and `ANSI_QUOTES` alike, and
//! a mode that changes what the server stores (`NO_AUTO_VALUE_ON_ZERO`) takes effect.

use drainer::sink::Sink;
use drainer::sink::mysql::{CheckpointCfg, MysqlSink, MysqlSinkConfig};
use drainer::txn::{RowChange, Value, mysql_type as T};
use mysql_async::prelude::*;
use tests::Cluster;

use crate::mysql_sink::{col, conn, dml, rt, sink_cfg, table};

const TRICKY: &[&str] = &["back\\slash", "quote ' and \" and `", "nul \0 byte", "\\' escaped quote", "new\nline \\n tab\t", "\\"];

#[test]
fn sql_mode_is_applied_and_strings_survive_no_backslash_escapes_and_ansi_quotes() {
    let cluster = Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    rt().block_on(async {
        let mut c = conn(db).await;
        c.query_drop("CREATE DATABASE m").await.unwrap();
        for (i, mode) in [None, Some("NO_BACKSLASH_ESCAPES"), Some("ANSI_QUOTES,NO_BACKSLASH_ESCAPES,NO_AUTO_VALUE_ON_ZERO")]
            .into_iter()
            .enumerate()
        {
            let name = format!("t{i}");
            // The last table's key is AUTO_INCREMENT: only a session in NO_AUTO_VALUE_ON_ZERO (the mode
            // the sink was given) stores row 0 as 0 rather than as the next sequence number.
            let key = if i == 2 { "INT AUTO_INCREMENT" } else { "INT" };
            c.query_drop(format!("CREATE TABLE m.{name} (id {key} PRIMARY KEY, v VARCHAR(64), b VARBINARY(64))")).await.unwrap();
            let t = table("m", &name, vec![col("id", T::LONG), col("v", T::VARCHAR), col("b", T::VARCHAR)], Some(0));
            let checkpoint = Some(CheckpointCfg { cluster_id: 100 + i as u64, ..Default::default() });
            let cfg = MysqlSinkConfig { sql_mode: mode.map(str::to_owned), checkpoint, ..sink_cfg(db) };
            let mut sink = MysqlSink::connect(cfg).await.unwrap();
            let mut ts = 10;
            for (id, s) in TRICKY.iter().enumerate() {
                let row = vec![Some(Value::Int(id as i64)), Some(Value::Bytes(s.as_bytes().to_vec())), Some(Value::Bytes(s.as_bytes().to_vec()))];
                sink.write(dml(ts, vec![(t.clone(), RowChange::Insert(row))])).await.unwrap();
                ts += 1;
            }
            // An update keyed by a tricky value, too (WHERE on all columns is not used: id is the key,
            // but the SET carries the text).
            let old = vec![Some(Value::Int(0)), Some(Value::Bytes(TRICKY[0].into())), Some(Value::Bytes(TRICKY[0].into()))];
            let new = vec![Some(Value::Int(0)), Some(Value::Bytes(b"it's \\ done".to_vec())), Some(Value::Bytes(TRICKY[0].into()))];
            sink.write(dml(ts, vec![(t.clone(), RowChange::Update { old, new })])).await.unwrap();
            assert_eq!(sink.flush().await.unwrap(), ts);
            sink.close().await.unwrap();

            let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = c.query(format!("SELECT id, v, b FROM m.{name} ORDER BY id")).await.unwrap();
            assert_eq!(rows.len(), TRICKY.len(), "{mode:?}");
            let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
            assert_eq!(ids, (0..TRICKY.len() as i64).collect::<Vec<_>>(), "{mode:?}: row 0 kept its id");
            for (id, v, b) in rows {
                let want: &[u8] = if id == 0 { b"it's \\ done" } else { TRICKY[id as usize].as_bytes() };
                assert_eq!(String::from_utf8_lossy(&v), String::from_utf8_lossy(want), "{mode:?}: v of row {id}");
                assert_eq!(b, TRICKY[id as usize].as_bytes(), "{mode:?}: b of row {id}");
            }
        }
    });
}
