//! The MySQL sink (`drainer::sink::mysql`) against a real MariaDB downstream: every column type
//! round-trips (row by row and by CHECKSUM TABLE against the same rows inserted directly), upstream's
//! DML semantics (PK updates, keyless tables, NULL in unique keys), DDL mid-stream, exactly-once
//! across crashes, a downstream restart, and the errors users see.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drainer::sink::Sink;
use drainer::sink::mysql::{CheckpointCfg, MysqlSink, MysqlSinkConfig};
use drainer::txn::{
    Body, Column, Ddl, Item, MysqlTime, Row, RowChange, TableChanges, TableSchema, Time, UniqueKey, Value,
    mysql_type as T,
};
use mysql_async::prelude::*;
use tests::{Cluster, MariaDb};

pub(crate) fn sink_cfg(db: &MariaDb) -> MysqlSinkConfig {
    MysqlSinkConfig {
        port: db.port,
        checkpoint: Some(CheckpointCfg { cluster_id: 7, ..Default::default() }),
        worker_count: 4,
        // small batches still spread over several connections (each carrying 1-4 hash slots)
        conn_rows: 16,
        retry_for: Duration::from_secs(30),
        ..Default::default()
    }
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub(crate) async fn conn(db: &MariaDb) -> mysql_async::Conn {
    let mut c = mysql_async::Conn::from_url(db.url()).await.unwrap();
    c.query_drop("SET time_zone = '+00:00'").await.unwrap();
    c
}

pub(crate) fn col(name: &str, tp: u8) -> Column {
    Column { name: name.into(), tp, ..Default::default() }
}

pub(crate) fn table(schema: &str, name: &str, columns: Vec<Column>, pk: Option<usize>) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        schema: schema.into(),
        name: name.into(),
        columns,
        unique_keys: pk.map(|c| UniqueKey { name: "PRIMARY".into(), columns: vec![c] }).into_iter().collect(),
        ..Default::default()
    })
}

pub(crate) fn dml(ts: i64, changes: Vec<(Arc<TableSchema>, RowChange)>) -> Arc<Item> {
    let mut out: Vec<TableChanges> = Vec::new();
    for (t, rc) in changes {
        match out.last_mut() {
            Some(tc) if Arc::ptr_eq(&tc.table, &t) => tc.rows.push(rc),
            _ => out.push(TableChanges { table: t, rows: vec![rc] }),
        }
    }
    Arc::new(Item { start_ts: ts - 1, commit_ts: ts, schema_version: 1, body: Body::Dml(out) })
}

pub(crate) fn ddl(ts: i64, schema: &str, query: &str) -> Arc<Item> {
    Arc::new(Item {
        start_ts: ts - 1,
        commit_ts: ts,
        schema_version: 2,
        body: Body::Ddl(Ddl {
            schema: schema.into(),
            table: String::new(),
            query: query.into(),
            job_id: 1,
            table_after: None,
        }),
    })
}

fn int(i: i64) -> Option<Value> {
    Some(Value::Int(i))
}

fn text(s: &str) -> Option<Value> {
    Some(Value::Bytes(s.as_bytes().to_vec()))
}

fn time(tp: u8, y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, micro: u32, fsp: u8) -> Option<Value> {
    Some(Value::Time(MysqlTime {
        time: Time { year: y, month: mo, day: d, hour: h, minute: mi, second: s, microsecond: micro },
        tp, fsp,
    }))
}

const ALL_TYPES: &str = "(id INT PRIMARY KEY, ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, bi BIGINT, \
    ubi BIGINT UNSIGNED, f FLOAT, db DOUBLE, dc DECIMAL(40,10), c CHAR(10), vc VARCHAR(100), tx TEXT, \
    bn BINARY(4), vb VARBINARY(20), bl BLOB, dt DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(2), \
    yr YEAR, e ENUM('a','b','c'), st SET('x','y','z'), b BIT(10), j JSON, g BIGINT AS (id * 2) VIRTUAL)";

fn all_types_schema(name: &str) -> Arc<TableSchema> {
    let mut cols = vec![
        col("id", T::LONG),
        col("ti", T::TINY),
        Column { unsigned: true, ..col("si", T::SHORT) },
        col("mi", T::INT24),
        col("bi", T::LONGLONG),
        Column { unsigned: true, ..col("ubi", T::LONGLONG) },
        col("f", T::FLOAT),
        col("db", T::DOUBLE),
        Column { flen: 40, decimal: 10, ..col("dc", T::NEWDECIMAL) },
        col("c", T::STRING),
        col("vc", T::VARCHAR),
        col("tx", T::BLOB),
        Column { binary: true, ..col("bn", T::STRING) },
        Column { binary: true, ..col("vb", T::VARCHAR) },
        Column { binary: true, ..col("bl", T::BLOB) },
        col("dt", T::DATE),
        Column { decimal: 6, ..col("dtm", T::DATETIME) },
        Column { decimal: 3, ..col("ts", T::TIMESTAMP) },
        Column { decimal: 2, ..col("tm", T::DURATION) },
        col("yr", T::YEAR),
        Column { elems: vec!["a".into(), "b".into(), "c".into()], ..col("e", T::ENUM) },
        Column { elems: vec!["x".into(), "y".into(), "z".into()], ..col("st", T::SET) },
        Column { flen: 10, ..col("b", T::BIT) },
        col("j", T::JSON),
        Column { generated: true, ..col("g", T::LONGLONG) },
    ];
    cols[0].primary_key = true;
    table("d", name, cols, Some(0))
}

fn all_types_rows() -> Vec<Row> {
    let dur = |neg: bool, h: i64, m: i64, s: i64, us: i64| {
        let n = ((h * 3600 + m * 60 + s) * 1_000_000 + us) * 1_000;
        Some(Value::Duration { nanos: if neg { -n } else { n }, fsp: 2 })
    };
    vec![
        vec![
            int(1),
            int(-7),
            Some(Value::Uint(65535)),
            int(-8388608),
            int(i64::MIN),
            Some(Value::Uint(u64::MAX)),
            Some(Value::Float(0.1f32 as f64)),
            Some(Value::Float(-1.2345678901234567e-300)),
            Some(Value::Decimal("-123456789012345678901234567890.0123456789".into())),
            text("it's"),
            text("back\\slash \"q\" \0 nul, emoji 😀 é"),
            text("line1\nline2\ttab\r\u{1a}"),
            Some(Value::Bytes(vec![0, 0xff, b'\'', b'\\'])),
            Some(Value::Bytes(vec![0x80, 0x81, 0])),
            Some(Value::Bytes((0..=255u8).collect())),
            time(T::DATE, 2024, 2, 29, 0, 0, 0, 0, 0),
            time(T::DATETIME, 1999, 12, 31, 23, 59, 59, 999_999, 6),
            time(T::TIMESTAMP, 2020, 1, 2, 3, 4, 5, 123_000, 3),
            dur(true, 838, 59, 59, 0),
            int(2155),
            Some(Value::Enum { index: 3, name: "c".into() }),
            Some(Value::Set { bits: 5, names: "x,z".into() }),
            Some(Value::Bit(1023)),
            Some(Value::Json(r#"{"a": [1, 2.5, "x\"y\\z"], "b": null}"#.into())),
            int(2),
        ],
        vec![
            int(2),
            int(127),
            Some(Value::Uint(0)),
            int(8388607),
            int(i64::MAX),
            Some(Value::Uint(0)),
            Some(Value::Float(-3.4028234663852886e38)),
            Some(Value::Float(0.0)),
            Some(Value::Decimal("0.0000000001".into())),
            text(""),
            text("trailing  "),
            text(""),
            Some(Value::Bytes(vec![1, 2, 3, 4])),
            Some(Value::Bytes(vec![])),
            Some(Value::Bytes(vec![])),
            time(T::DATE, 1000, 1, 1, 0, 0, 0, 0, 0),
            time(T::DATETIME, 0, 0, 0, 0, 0, 0, 0, 6),
            time(T::TIMESTAMP, 1970, 1, 1, 0, 0, 1, 0, 3),
            dur(false, 0, 0, 1, 500_000),
            int(1901),
            Some(Value::Enum { index: 1, name: "a".into() }),
            Some(Value::Set { bits: 0, names: "".into() }),
            Some(Value::Bit(0)),
            Some(Value::Json("[]".into())),
            int(4),
        ],
        {
            let mut r: Row = vec![Some(Value::Null); 25];
            r[0] = int(3);
            r[24] = None; // a virtual column is not carried
            r
        },
    ]
}

/// The same value through the binary protocol (an independent path into the server).
fn direct(v: &Option<Value>) -> mysql_async::Value {
    use mysql_async::Value as M;
    match v.as_ref().unwrap_or(&Value::Null) {
        Value::Null => M::NULL,
        Value::Int(i) => M::Int(*i),
        Value::Uint(u) | Value::Bit(u) => M::UInt(*u),
        Value::Float(f) => M::Double(*f),
        Value::Decimal(s) | Value::Json(s) => M::Bytes(s.clone().into_bytes()),
        Value::Bytes(b) => M::Bytes(b.clone()),
        Value::Time(t) => {
            let c = t.time;
            M::Date(c.year, c.month, c.day, c.hour, c.minute, c.second, c.microsecond)
        }
        Value::Duration { nanos, .. } => {
            let us = nanos.unsigned_abs() / 1000;
            let secs = us / 1_000_000;
            M::Time(
                *nanos < 0,
                (secs / 86400) as u32,
                ((secs / 3600) % 24) as u8,
                ((secs / 60) % 60) as u8,
                (secs % 60) as u8,
                (us % 1_000_000) as u32,
            )
        }
        Value::Enum { name, .. } => M::Bytes(name.clone().into_bytes()),
        Value::Set { names, .. } => M::Bytes(names.clone().into_bytes()),
    }
}

async fn rows_of(c: &mut mysql_async::Conn, q: &str) -> Vec<Vec<mysql_async::Value>> {
    let rows: Vec<mysql_async::Row> = c.query(q).await.unwrap();
    rows.into_iter().map(|r| r.unwrap()).collect()
}

/// The server's count of prepared-statement executions.
async fn stmt_executes(c: &mut mysql_async::Conn) -> u64 {
    let r: Option<(String, u64)> = c.query_first("SHOW GLOBAL STATUS LIKE 'Com_stmt_execute'").await.unwrap();
    r.unwrap().1
}

async fn checksum(c: &mut mysql_async::Conn, t: &str) -> u64 {
    let r: Option<(String, u64)> = c.query_first(format!("CHECKSUM TABLE {t}")).await.unwrap();
    r.unwrap().1
}

#[test]
fn every_column_type_round_trips_exactly() {
    let cluster = Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    rt().block_on(async {
        let mut c = conn(db).await;
        c.query_drop(format!(
            "CREATE DATABASE d CHARACTER SET utf8mb4; CREATE TABLE d.direct {ALL_TYPES}; CREATE TABLE d.sink {ALL_TYPES}; CREATE TABLE d.sink_tz {ALL_TYPES}; \
             CREATE TABLE d.prep {ALL_TYPES}; CREATE TABLE d.prep_tz {ALL_TYPES}"
        ))
        .await
        .unwrap();
        let rows = all_types_rows();
        let cols: Vec<String> = all_types_schema("x").columns.iter().take(24).map(|c| format!("`{}`", c.name)).collect();
        let marks = vec!["?"; 24].join(",");
        for r in &rows {
            let params: Vec<mysql_async::Value> = r.iter().take(24).map(direct).collect();
            c.exec_drop(format!("INSERT INTO d.direct ({}) VALUES ({marks})", cols.join(",")), params).await.unwrap();
        }

        // text statements, and (prep*) one prepared INSERT per row: every value as a parameter
        let tz = || vec![("time_zone".to_string(), "'+08:00'".to_string())];
        let mut executes = BTreeMap::new();
        for (name, params, cluster_id, prepared_params) in
            [("sink", vec![], 7, 0), ("sink_tz", tz(), 8, 0), ("prep", vec![], 9, 1), ("prep_tz", tz(), 10, 1)]
        {
            let t = all_types_schema(name);
            let checkpoint = Some(CheckpointCfg { cluster_id, ..Default::default() });
            let cfg = MysqlSinkConfig { params, checkpoint, prepared_params, ..sink_cfg(db) };
            let before = stmt_executes(&mut c).await;
            let mut sink = MysqlSink::connect(cfg).await.unwrap();
            let items: Vec<_> = rows.iter().enumerate().map(|(i, r)| dml(100 + i as i64, vec![(t.clone(), RowChange::Insert(r.clone()))])).collect();
            for it in items {
                sink.write(it).await.unwrap();
            }
            assert_eq!(sink.flush().await.unwrap(), 102);
            assert_eq!(sink.durable_ts(), 102);
            sink.close().await.unwrap();
            executes.insert(name, stmt_executes(&mut c).await - before);
        }
        // prep: the 3 rows as prepared INSERTs; prep_tz: rows 1-2 have TIMESTAMPs the +08:00
        // session must convert, so only row 3 (NULL there) is
        assert_eq!(executes["prep"], executes["sink"] + 3, "{executes:?}");
        assert_eq!(executes["prep_tz"], executes["sink_tz"] + 1, "{executes:?}");

        let want = rows_of(&mut c, "SELECT * FROM d.direct ORDER BY id").await;
        assert_eq!(want.len(), 3);
        for t in ["d.sink", "d.sink_tz", "d.prep", "d.prep_tz"] {
            let got = rows_of(&mut c, &format!("SELECT * FROM {t} ORDER BY id")).await;
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{t}: row differs from the directly inserted one");
            }
            assert_eq!(got.len(), want.len());
            assert_eq!(checksum(&mut c, t).await, checksum(&mut c, "d.direct").await, "{t}");
        }
        // Spot checks against text written by hand, so both paths cannot be wrong the same way.
        let r: (String, String, String, String, String, String) = c
            .query_first("SELECT CAST(ts AS CHAR), CAST(dc AS CHAR), j, CAST(tm AS CHAR), CAST(b + 0 AS CHAR), HEX(bn) FROM d.sink_tz WHERE id = 1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.0, "2020-01-02 03:04:05.123");
        assert_eq!(r.1, "-123456789012345678901234567890.0123456789");
        assert_eq!(r.2, r#"{"a": [1, 2.5, "x\"y\\z"], "b": null}"#);
        assert_eq!(r.3, "-838:59:59.00");
        assert_eq!(r.4, "1023");
        assert_eq!(r.5, "00FF275C");
        let vc: Vec<u8> = c.query_first("SELECT vc FROM d.sink WHERE id = 1").await.unwrap().unwrap();
        assert_eq!(vc, "back\\slash \"q\" \0 nul, emoji 😀 é".as_bytes());
        let ck: String = c.query_first("SELECT checkPoint FROM tidb_binlog.checkpoint WHERE clusterID = 7").await.unwrap().unwrap();
        assert_eq!(ck, r#"{"consistent":true,"commitTS":102,"ts-map":{},"schema-version":1}"#);
    });
}

fn kv_table(schema: &str, name: &str) -> Arc<TableSchema> {
    table(schema, name, vec![col("id", T::LONG), col("v", T::VARCHAR), col("u", T::LONG)], Some(0))
}

fn r(vals: &[Option<Value>]) -> Row {
    vals.to_vec()
}

#[test]
fn updates_deletes_key_changes_and_keyless_tables_follow_upstream() {
    let cluster = Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    rt().block_on(async {
        let mut c = conn(db).await;
        for (schema, safe, cluster_id) in [("plain", false, 1), ("safe", true, 2)] {
            c.query_drop(format!(
                "CREATE DATABASE {schema}; \
                 CREATE TABLE {schema}.k (id INT PRIMARY KEY, v VARCHAR(10), u INT, UNIQUE KEY(u)); \
                 CREATE TABLE {schema}.nk (a INT, b VARCHAR(5)); \
                 CREATE TABLE {schema}.nu (a INT NULL, b INT, UNIQUE KEY(a))"
            ))
            .await
            .unwrap();
            let k = kv_table(schema, "k");
            let nk = table(schema, "nk", vec![col("a", T::LONG), col("b", T::VARCHAR)], None);
            let nu = table(schema, "nu", vec![col("a", T::LONG), col("b", T::LONG)], None);
            let null = Some(Value::Null);
            let items = vec![
                dml(
                    10,
                    vec![
                        (k.clone(), RowChange::Insert(r(&[int(1), text("a"), int(10)]))),
                        (k.clone(), RowChange::Insert(r(&[int(2), text("b"), int(20)]))),
                        (k.clone(), RowChange::Insert(r(&[int(3), text("c"), int(30)]))),
                        (nk.clone(), RowChange::Insert(r(&[int(1), text("x")]))),
                        (nk.clone(), RowChange::Insert(r(&[int(1), text("x")]))),
                        (nk.clone(), RowChange::Insert(r(&[int(2), null.clone()]))),
                        (nu.clone(), RowChange::Insert(r(&[null.clone(), int(1)]))),
                        (nu.clone(), RowChange::Insert(r(&[int(5), int(2)]))),
                    ],
                ),
                dml(
                    20,
                    vec![
                        (
                            k.clone(),
                            RowChange::Update {
                                old: r(&[int(1), text("a"), int(10)]),
                                new: r(&[int(100), text("a"), int(10)]),
                            },
                        ),
                        (
                            k.clone(),
                            RowChange::Update {
                                old: r(&[int(2), text("b"), int(20)]),
                                new: r(&[int(2), text("bb"), int(20)]),
                            },
                        ),
                        (k.clone(), RowChange::Delete(r(&[int(3), text("c"), int(30)]))),
                        (nk.clone(), RowChange::Delete(r(&[int(1), text("x")]))),
                        (
                            nk.clone(),
                            RowChange::Update { old: r(&[int(2), null.clone()]), new: r(&[int(2), text("y")]) },
                        ),
                        (
                            nu.clone(),
                            RowChange::Update { old: r(&[null.clone(), int(1)]), new: r(&[null.clone(), int(3)]) },
                        ),
                        (nu.clone(), RowChange::Delete(r(&[int(5), int(2)]))),
                    ],
                ),
                // the deleted key comes back, and a row whose old values were not all carried
                dml(30, vec![(k.clone(), RowChange::Insert(r(&[int(3), text("c2"), int(30)])))]),
                dml(
                    40,
                    vec![(
                        k.clone(),
                        RowChange::Update { old: r(&[int(2), None, None]), new: r(&[int(2), text("b3"), None]) },
                    )],
                ),
            ];
            let checkpoint = Some(CheckpointCfg { cluster_id, ..Default::default() });
            let mut sink =
                MysqlSink::connect(MysqlSinkConfig { safe_mode: safe, checkpoint, ..sink_cfg(db) }).await.unwrap();
            for it in items {
                sink.write(it).await.unwrap();
            }
            assert_eq!(sink.flush().await.unwrap(), 40);
            drop(sink);
            let k: Vec<(i32, String, i32)> =
                c.query(format!("SELECT id, v, u FROM {schema}.k ORDER BY id")).await.unwrap();
            assert_eq!(k, vec![(2, "b3".into(), 20), (3, "c2".into(), 30), (100, "a".into(), 10)], "{schema}");
            let nk: Vec<(i32, Option<String>)> =
                c.query(format!("SELECT a, b FROM {schema}.nk ORDER BY a")).await.unwrap();
            assert_eq!(nk, vec![(1, Some("x".into())), (2, Some("y".into()))], "{schema}");
            let nu: Vec<(Option<i32>, i32)> = c.query(format!("SELECT a, b FROM {schema}.nu")).await.unwrap();
            assert_eq!(nu, vec![(None, 3)], "{schema}");
        }
    });
}

#[test]
fn ddl_runs_in_order_ignores_replays_and_names_the_ts_of_a_rejected_one() {
    let cluster = Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    rt().block_on(async {
        let mut c = conn(db).await;
        let t1 = table("app", "t", vec![col("id", T::LONG), col("a", T::LONG)], Some(0));
        let t2 = table("app", "t", vec![col("id", T::LONG), col("a", T::LONG), col("b", T::VARCHAR)], Some(0));
        let mut sink = MysqlSink::connect(sink_cfg(db)).await.unwrap();
        assert_eq!(sink.load_checkpoint().await.unwrap(), None);
        for it in [
            ddl(10, "", "CREATE DATABASE app"),
            ddl(11, "app", "CREATE TABLE t (id INT PRIMARY KEY, a INT)"),
            dml(12, vec![(t1.clone(), RowChange::Insert(vec![int(1), int(1)]))]),
            ddl(13, "app", "ALTER TABLE t ADD COLUMN b VARCHAR(5)"),
            dml(14, vec![(t2.clone(), RowChange::Insert(vec![int(2), int(2), text("new")]))]),
            // replays of DDL already applied: ignored as upstream does
            ddl(15, "app", "CREATE TABLE t (id INT PRIMARY KEY, a INT)"),
            ddl(16, "app", "ALTER TABLE t ADD COLUMN b VARCHAR(5)"),
            ddl(17, "", "CREATE DATABASE app"),
            dml(
                18,
                vec![(
                    t2.clone(),
                    RowChange::Update { old: vec![int(1), int(1), None], new: vec![int(1), int(1), text("x")] },
                )],
            ),
        ] {
            sink.write(it).await.unwrap();
        }
        assert_eq!(sink.flush().await.unwrap(), 18);
        let rows: Vec<(i32, i32, Option<String>)> = c.query("SELECT id, a, b FROM app.t ORDER BY id").await.unwrap();
        assert_eq!(rows, vec![(1, 1, Some("x".into())), (2, 2, Some("new".into()))]);
        let ck: String = c.query_first("SELECT checkPoint FROM tidb_binlog.checkpoint").await.unwrap().unwrap();
        assert!(ck.contains(r#""commitTS":18"#) && ck.contains(r#""schema-version":2"#), "{ck}");

        sink.write(ddl(19, "app", "ALTER TABLE t ADD COLUMN c NO_SUCH_TYPE")).await.unwrap();
        let err = sink.flush().await.unwrap_err().to_string();
        assert!(err.contains("commit ts 19") && err.contains("ignore-txn-commit-ts"), "{err}");
        let err = sink.write(dml(20, vec![])).await.unwrap_err().to_string();
        assert!(err.contains("commit ts 19"), "the sink stays stopped: {err}");
        drop(sink);
        // a restart resumes after the last applied DDL
        let mut sink = MysqlSink::connect(sink_cfg(db)).await.unwrap();
        assert_eq!(sink.load_checkpoint().await.unwrap(), Some(18));
    });
}

#[test]
fn wrong_credentials_missing_tables_and_type_mismatches_are_named() {
    let cluster = Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    rt().block_on(async {
        let mut c = conn(db).await;
        c.query_drop("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, n INT)").await.unwrap();
        let err = MysqlSink::connect(MysqlSinkConfig { password: "wrong".into(), ..sink_cfg(db) })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused user \"root\"") && err.contains("password"), "{err}");

        let err = MysqlSink::connect(MysqlSinkConfig {
            port: tests::free_port(),
            retry_for: Duration::from_millis(600),
            ..sink_cfg(db)
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("kept failing"), "{err}");

        let mut sink = MysqlSink::connect(sink_cfg(db)).await.unwrap();
        let missing = table("nodb", "t", vec![col("id", T::LONG)], Some(0));
        sink.write(dml(5, vec![(missing, RowChange::Insert(vec![int(1)]))])).await.unwrap();
        let err = sink.flush().await.unwrap_err().to_string();
        assert!(err.contains("`nodb`.`t` does not exist in the downstream"), "{err}");

        let mut sink = MysqlSink::connect(sink_cfg(db)).await.unwrap();
        let t = table("d", "t", vec![col("id", T::LONG), col("n", T::LONG)], Some(0));
        sink.write(dml(6, vec![(t, RowChange::Insert(vec![int(1), text("not a number")]))])).await.unwrap();
        let err = sink.flush().await.unwrap_err().to_string();
        assert!(err.contains("commit ts 6..=6") && err.contains("Incorrect integer value"), "{err}");
    });
}

/// A deterministic workload and the state it must leave: keyed rows (insert/update/delete, PK
/// changes) and a keyless table where a duplicate or a lost insert shows.
pub(crate) struct Workload {
    pub items: Vec<Arc<Item>>,
    pub keyed: BTreeMap<i64, i64>,
    pub keyless: Vec<(i64, i64)>,
}

pub(crate) fn workload(schema: &str, n_items: usize, seed: u64) -> Workload {
    let k = table(schema, "k", vec![col("id", T::LONGLONG), col("v", T::LONGLONG)], Some(0));
    let nk = table(schema, "nk", vec![col("a", T::LONGLONG), col("b", T::LONGLONG)], None);
    let mut x = seed;
    let mut rnd = move |m: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    let (mut keyed, mut keyless) = (BTreeMap::new(), Vec::new());
    let mut next_id = 1i64;
    let mut items = Vec::new();
    for i in 0..n_items {
        let ts = 1000 + i as i64 * 10;
        let mut ch = Vec::new();
        for _ in 0..1 + rnd(6) {
            let ids: Vec<i64> = keyed.keys().copied().collect();
            match rnd(10) {
                0..=3 => {
                    let v = rnd(1000) as i64;
                    ch.push((nk.clone(), RowChange::Insert(vec![int(v % 7), int(v)])));
                    keyless.push((v % 7, v));
                }
                4..=5 | 6 if ids.is_empty() => {}
                4..=5 => {
                    let id = ids[rnd(ids.len() as u64) as usize];
                    let old = keyed[&id];
                    let (nid, nv) = if rnd(4) == 0 { (next_id + 1_000_000, old) } else { (id, rnd(1000) as i64) };
                    next_id += 1;
                    ch.push((
                        k.clone(),
                        RowChange::Update { old: vec![int(id), int(old)], new: vec![int(nid), int(nv)] },
                    ));
                    keyed.remove(&id);
                    keyed.insert(nid, nv);
                }
                6 => {
                    let id = ids[rnd(ids.len() as u64) as usize];
                    ch.push((k.clone(), RowChange::Delete(vec![int(id), int(keyed[&id])])));
                    keyed.remove(&id);
                }
                _ => {
                    let (id, v) = (next_id, rnd(1000) as i64);
                    next_id += 1;
                    ch.push((k.clone(), RowChange::Insert(vec![int(id), int(v)])));
                    keyed.insert(id, v);
                }
            }
        }
        items.push(if ch.is_empty() && rnd(2) == 0 {
            Arc::new(Item { start_ts: 0, commit_ts: ts, schema_version: 1, body: Body::Empty })
        } else {
            dml(ts, ch)
        });
    }
    keyless.sort();
    Workload { items, keyed, keyless }
}

pub(crate) async fn create_workload_tables(c: &mut mysql_async::Conn, schema: &str) {
    c.query_drop(format!(
        "CREATE DATABASE {schema}; CREATE TABLE {schema}.k (id BIGINT PRIMARY KEY, v BIGINT); \
         CREATE TABLE {schema}.nk (a BIGINT, b BIGINT)"
    ))
    .await
    .unwrap();
}

pub(crate) async fn assert_workload_applied(c: &mut mysql_async::Conn, schema: &str, w: &Workload) {
    let keyed: Vec<(i64, i64)> = c.query(format!("SELECT id, v FROM {schema}.k ORDER BY id")).await.unwrap();
    assert_eq!(keyed, w.keyed.iter().map(|(a, b)| (*a, *b)).collect::<Vec<_>>(), "keyed rows differ");
    let keyless: Vec<(i64, i64)> = c.query(format!("SELECT a, b FROM {schema}.nk ORDER BY a, b")).await.unwrap();
    assert_eq!(keyless.len(), w.keyless.len(), "keyless row count: duplicates or losses");
    assert_eq!(keyless, w.keyless);
}

#[test]
fn crashes_at_random_points_neither_lose_nor_repeat_a_change() {
    let cluster = Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    // parallel workers (worker rows; full batches on 3 connections, one carrying two hash slots),
    // the same with runs of 2+ inserts as prepared statements, and one upstream txn per downstream
    // txn (disable-dispatch)
    let modes = [
        ("crash", MysqlSinkConfig { worker_count: 4, batch_rows: 40, conn_rows: 15, ..sink_cfg(db) }),
        (
            "crash_prep",
            MysqlSinkConfig {
                worker_count: 4,
                batch_rows: 40,
                conn_rows: 15,
                prepared_params: 4,
                checkpoint: Some(CheckpointCfg { cluster_id: 9, ..Default::default() }),
                ..sink_cfg(db)
            },
        ),
        (
            "crash_serial",
            MysqlSinkConfig {
                disable_dispatch: true,
                checkpoint: Some(CheckpointCfg { cluster_id: 8, ..Default::default() }),
                ..sink_cfg(db)
            },
        ),
    ];
    let mut executes = BTreeMap::new();
    for (schema, cfg) in modes {
        let w = workload(schema, 600, 42);
        rt().block_on(async {
            let mut c = conn(db).await;
            create_workload_tables(&mut c, schema).await;
            let before = stmt_executes(&mut c).await;
            let mut x = 7u64;
            let mut resumes = Vec::new();
            for round in 0..8 {
                let mut sink = MysqlSink::connect(cfg.clone()).await.unwrap();
                let resume = sink.load_checkpoint().await.unwrap().unwrap_or(0);
                resumes.push(resume);
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                let take = 20 + (x >> 33) as usize % 80;
                for it in w.items.iter().filter(|i| i.commit_ts > resume).take(take) {
                    sink.write(it.clone()).await.unwrap();
                }
                // let some batches commit and leave others mid-flight, then "crash"
                tokio::time::sleep(Duration::from_millis((x >> 40) % 15 + round)).await;
                drop(sink);
            }
            let mut sink = MysqlSink::connect(cfg.clone()).await.unwrap();
            let resume = sink.load_checkpoint().await.unwrap().unwrap_or(0);
            for it in w.items.iter().filter(|i| i.commit_ts > resume) {
                sink.write(it.clone()).await.unwrap();
            }
            let last = w.items.last().unwrap().commit_ts;
            assert_eq!(sink.flush().await.unwrap(), last);
            sink.close().await.unwrap();
            assert!(resumes.windows(2).all(|p| p[0] <= p[1]), "{schema}: {resumes:?}");
            assert!(resumes.iter().any(|&r| r > 0), "{schema}: some rounds committed something: {resumes:?}");
            assert_workload_applied(&mut c, schema, &w).await;
            executes.insert(schema, stmt_executes(&mut c).await - before);
        });
    }
    assert!(executes["crash_prep"] > executes["crash"] + 20, "prepared INSERTs ran: {executes:?}");
}

#[test]
fn a_downstream_restart_and_killed_connections_lose_nothing() {
    let mut cluster = Cluster::builder().downstream_db().start().unwrap();
    let mut db = cluster.downstream.take().unwrap();
    let w = workload("restart", 500, 9);
    let rt = rt();
    let cfg = sink_cfg(&db);
    let mut sink = rt.block_on(async {
        let mut c = conn(&db).await;
        create_workload_tables(&mut c, "restart").await;
        let mut sink = MysqlSink::connect(cfg.clone()).await.unwrap();
        for it in &w.items[..150] {
            sink.write(it.clone()).await.unwrap();
        }
        sink.flush().await.unwrap();
        // kill the sink's connections mid-stream
        for it in &w.items[150..250] {
            sink.write(it.clone()).await.unwrap();
        }
        let ids: Vec<u64> = c
            .query("SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND command <> 'Daemon'")
            .await
            .unwrap();
        for id in ids {
            let _ = c.query_drop(format!("KILL {id}")).await;
        }
        sink
    });
    // the server goes away while items keep coming, then comes back
    db.kill();
    rt.block_on(async {
        for it in &w.items[250..400] {
            sink.write(it.clone()).await.unwrap();
        }
    });
    let db = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        db.restart().unwrap();
        db
    })
    .join()
    .unwrap();
    rt.block_on(async {
        for it in &w.items[400..] {
            sink.write(it.clone()).await.unwrap();
        }
        assert_eq!(sink.flush().await.unwrap(), w.items.last().unwrap().commit_ts);
        let mut c = conn(&db).await;
        assert_workload_applied(&mut c, "restart", &w).await;
    });
    cluster.downstream = Some(db);
}

/// A downstream that allows no more prepared statements (`max_prepared_stmt_count` reached, as
/// when other clients leak them): the sink switches to text statements and loses nothing, also
/// for batches split over several connections where some parts committed.
#[test]
fn a_downstream_out_of_prepared_statements_gets_text_statements() {
    let cluster = Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    rt().block_on(async {
        let mut c = conn(db).await;
        c.query_drop("CREATE DATABASE p; CREATE TABLE p.t (id BIGINT PRIMARY KEY, v BIGINT)").await.unwrap();
        c.query_drop("SET GLOBAL max_prepared_stmt_count = 0").await.unwrap();
        let t = table("p", "t", vec![col("id", T::LONGLONG), col("v", T::LONGLONG)], Some(0));
        let before = stmt_executes(&mut c).await;
        // 2 parameters: every run of inserts is meant to go as one-row prepared INSERTs
        let mut sink = MysqlSink::connect(MysqlSinkConfig { prepared_params: 2, ..sink_cfg(db) }).await.unwrap();
        for i in 0..10i64 {
            let rows = (0..20).map(|j| (t.clone(), RowChange::Insert(vec![int(i * 100 + j), int(j)]))).collect();
            sink.write(dml(100 + i, rows)).await.unwrap();
        }
        assert_eq!(sink.flush().await.unwrap(), 109);
        sink.close().await.unwrap();
        let got: Option<(u64, i64)> = c.query_first("SELECT COUNT(*), CAST(SUM(id + v) AS SIGNED) FROM p.t").await.unwrap();
        let want: i64 = (0..10i64).flat_map(|i| (0..20).map(move |j| i * 100 + j + j)).sum();
        assert_eq!(got, Some((200, want)));
        assert_eq!(stmt_executes(&mut c).await, before, "nothing ran prepared");
        c.query_drop("SET GLOBAL max_prepared_stmt_count = DEFAULT").await.unwrap();
    });
}

/// `memory_quota` (`[syncer] memory-quota-mb`): while the downstream cannot apply anything,
/// `write` accepts items up to the quota and then waits; once the downstream is back every item
/// lands.
#[test]
fn write_waits_at_the_memory_quota_while_the_downstream_is_stuck() {
    let cluster = Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    rt().block_on(async {
        let mut c = conn(db).await;
        c.query_drop("CREATE DATABASE q; CREATE TABLE q.t (id INT PRIMARY KEY, v LONGBLOB)").await.unwrap();
        let t = table("q", "t", vec![col("id", T::LONG), col("v", T::LONG_BLOB)], Some(0));
        // 64 KiB of quota; each item holds one 16 KiB row: four fit
        let cfg = MysqlSinkConfig { memory_quota: 64 << 10, ..sink_cfg(db) };
        let mut sink = MysqlSink::connect(cfg).await.unwrap();
        let item = |i: i64| dml(100 + i, vec![(t.clone(), RowChange::Insert(vec![int(i), Some(Value::Bytes(vec![i as u8; 16 << 10]))]))]);
        // the table is locked: the sink's first batch waits on it, holding its items' quota
        let mut lock = conn(db).await;
        lock.query_drop("LOCK TABLES q.t WRITE").await.unwrap();
        let mut accepted = 0;
        for i in 0..10 {
            match tokio::time::timeout(Duration::from_millis(500), sink.write(item(i))).await {
                Ok(r) => {
                    r.unwrap();
                    accepted += 1;
                }
                Err(_) => break,
            }
        }
        assert_eq!(accepted, 4, "write must wait once 64 KiB are queued");
        lock.query_drop("UNLOCK TABLES").await.unwrap();
        for i in accepted..10 {
            sink.write(item(i)).await.unwrap();
        }
        assert_eq!(sink.flush().await.unwrap(), 109);
        sink.close().await.unwrap();
        let n: Option<(u64, u64)> = c.query_first("SELECT COUNT(*), SUM(LENGTH(v)) FROM q.t").await.unwrap();
        assert_eq!(n, Some((10, 10 * (16 << 10))));
    });
}

/// `[syncer.to.security]`: a MariaDB serving TLS with certificates from our test CA, users that
/// `REQUIRE SSL` and `REQUIRE X509`. The sink replicates over TLS (the users cannot log in without
/// it), presents its client certificate, and a CA that did not sign the server's certificate is a
/// clear error naming the server, at once rather than after the retry budget.
#[test]
fn tls_to_the_downstream_replicates_and_a_wrong_ca_is_named() {
    use drainer::sink::mysql::MysqlTls;
    use tests::pki::Pki;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path()).unwrap();
    let server = pki.leaf("mariadb").unwrap();
    let client = pki.leaf("drainer").unwrap();
    let other_dir = tmp.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = Pki::new(&other_dir).unwrap();
    let p = |p: &std::path::Path| p.display().to_string();
    let args = [
        format!("--ssl-ca={}", p(&pki.ca)),
        format!("--ssl-cert={}", p(&server.cert)),
        format!("--ssl-key={}", p(&server.key)),
    ];
    let db = MariaDb::start_with(&tmp.path().join("db"), &args).unwrap();
    rt().block_on(async {
        let mut c = conn(&db).await;
        c.query_drop(
            "CREATE USER 'tls'@'%' IDENTIFIED BY 'pw' REQUIRE SSL; GRANT ALL ON *.* TO 'tls'@'%';
             CREATE USER 'x509'@'%' IDENTIFIED BY 'pw' REQUIRE X509; GRANT ALL ON *.* TO 'x509'@'%';
             CREATE DATABASE d; CREATE TABLE d.kv (id INT PRIMARY KEY, v VARCHAR(20), u INT)",
        )
        .await
        .unwrap();
        let tls = |ca: &std::path::Path, with_cert: bool| MysqlTls {
            ca: ca.to_path_buf(),
            client: with_cert.then(|| (client.cert.clone(), client.key.clone())),
        };
        let user = |name: &str, t: Option<MysqlTls>| MysqlSinkConfig {
            user: name.into(),
            password: "pw".into(),
            tls: t,
            ..sink_cfg(&db)
        };
        let t = kv_table("d", "kv");

        // Without TLS the server refuses the REQUIRE SSL user.
        let err = MysqlSink::connect(user("tls", None)).await.unwrap_err().to_string();
        assert!(err.contains("refused user \"tls\""), "{err}");

        let mut sink = MysqlSink::connect(user("tls", Some(tls(&pki.ca, false)))).await.unwrap();
        sink.write(dml(10, (1..=50).map(|k| (t.clone(), RowChange::Insert(r(&[int(k), text("a"), int(0)])))).collect()))
            .await
            .unwrap();
        sink.write(dml(11, vec![(t.clone(), RowChange::Delete(r(&[int(1), text("a"), int(0)])))])).await.unwrap();
        assert_eq!(sink.flush().await.unwrap(), 11);
        drop(sink);
        let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM d.kv").await.unwrap();
        assert_eq!(n, Some(49));

        // REQUIRE X509: only with the client certificate.
        let err = MysqlSink::connect(user("x509", Some(tls(&pki.ca, false)))).await.unwrap_err().to_string();
        assert!(err.contains("refused user \"x509\""), "{err}");
        let mut sink = MysqlSink::connect(user("x509", Some(tls(&pki.ca, true)))).await.unwrap();
        sink.write(dml(12, vec![(t.clone(), RowChange::Insert(r(&[int(1), text("b"), int(0)])))])).await.unwrap();
        assert_eq!(sink.flush().await.unwrap(), 12);
        drop(sink);
        let v: Option<String> = c.query_first("SELECT v FROM d.kv WHERE id = 1").await.unwrap();
        assert_eq!(v.as_deref(), Some("b"));

        // A CA that did not sign the server's certificate: named, and not retried for 30 s.
        let started = std::time::Instant::now();
        let err = MysqlSink::connect(user("tls", Some(tls(&other.ca, false)))).await.unwrap_err().to_string();
        assert!(err.contains("TLS to the downstream") && err.contains(&format!("127.0.0.1:{}", db.port)), "{err}");
        assert!(err.contains("ssl-ca") && err.to_lowercase().contains("certificate"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "a TLS failure is not retried");
    });
}

/// Rows of `d.<t>` as `(id, u, text of the other columns)`, ordered by id.
async fn id_rows(c: &mut mysql_async::Conn, q: &str) -> Vec<(i64, Option<i64>, Option<String>)> {
    c.query(q).await.unwrap()
}

/// Someone changes a downstream table by hand mid-stream (sync-mode 1): an added column with a
/// default is harmless; a column turned into a generated one makes the server reject the cached
/// shape, and the sink re-reads the table and retries, now leaving that column out; a dropped
/// column the rows still carry cannot be written in full-column mode and is named with its commit
/// ts, and switching to sync-mode 2 then applies the same txn without it.
#[test]
fn a_hand_changed_downstream_table_is_re_read_and_sync_mode_2_drops_missing_columns() {
    let cluster = Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    rt().block_on(async {
        let mut c = conn(db).await;
        c.query_drop("CREATE DATABASE d; CREATE TABLE d.kv (id INT PRIMARY KEY, v VARCHAR(20), u INT)").await.unwrap();
        let t = kv_table("d", "kv");
        let row = |id: i64, v: &str, u: i64| r(&[int(id), text(v), int(u)]);
        let mut sink = MysqlSink::connect(sink_cfg(db)).await.unwrap();
        sink.write(dml(10, (1..=20).map(|k| (t.clone(), RowChange::Insert(row(k, "a", k)))).collect())).await.unwrap();
        assert_eq!(sink.flush().await.unwrap(), 10);

        c.query_drop("ALTER TABLE d.kv ADD COLUMN note VARCHAR(10) NOT NULL DEFAULT 'x'").await.unwrap();
        sink.write(dml(11, vec![(t.clone(), RowChange::Insert(row(21, "a", 21)))])).await.unwrap();
        assert_eq!(sink.flush().await.unwrap(), 11);
        let note: Option<String> = c.query_first("SELECT note FROM d.kv WHERE id = 21").await.unwrap();
        assert_eq!(note.as_deref(), Some("x"));

        c.query_drop("ALTER TABLE d.kv DROP COLUMN u, ADD COLUMN u INT AS (id * 2) VIRTUAL").await.unwrap();
        let changes = (22..=40)
            .map(|k| (t.clone(), RowChange::Insert(row(k, "b", 5))))
            .chain([(t.clone(), RowChange::Update { old: row(1, "a", 1), new: row(1, "c", 9) })])
            .collect();
        sink.write(dml(12, changes)).await.unwrap();
        assert_eq!(sink.flush().await.unwrap(), 12, "re-read after the server rejected a value for a generated column");
        let rows = id_rows(&mut c, "SELECT id, u, v FROM d.kv WHERE id IN (1, 22, 40) ORDER BY id").await;
        assert_eq!(rows, vec![(1, Some(2), Some("c".into())), (22, Some(44), Some("b".into())), (40, Some(80), Some("b".into()))]);

        c.query_drop("ALTER TABLE d.kv DROP COLUMN v").await.unwrap();
        sink.write(dml(13, vec![(t.clone(), RowChange::Insert(row(41, "z", 0)))])).await.unwrap();
        let err = sink.flush().await.unwrap_err().to_string();
        assert!(err.contains("commit ts 13..=13") && err.contains("Unknown column"), "{err}");
        drop(sink);

        // sync-mode 2: the same txn again, without the column the downstream lacks
        let mut sink = MysqlSink::connect(MysqlSinkConfig { partial_columns: true, ..sink_cfg(db) }).await.unwrap();
        assert_eq!(sink.load_checkpoint().await.unwrap(), Some(12));
        sink.write(dml(13, vec![(t.clone(), RowChange::Insert(row(41, "z", 0)))])).await.unwrap();
        assert_eq!(sink.flush().await.unwrap(), 13);
        let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM d.kv").await.unwrap();
        assert_eq!(n, Some(41));
    });
}

/// sync-mode 2 against a downstream table with fewer columns (and one the rows do not carry, NOT
/// NULL without a default, which strict mode would reject): inserts, updates, key changes and
/// deletes land with the columns it has, over several workers; a column dropped by hand mid-stream
/// is noticed from the server's error and left out after re-reading the table.
#[test]
fn sync_mode_2_writes_the_columns_the_downstream_table_has() {
    let cluster = Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    rt().block_on(async {
        let mut c = conn(db).await;
        c.query_drop("CREATE DATABASE d; CREATE TABLE d.kv (id INT PRIMARY KEY, u INT, extra INT NOT NULL)").await.unwrap();
        let t = kv_table("d", "kv");
        let row = |id: i64, u: i64| r(&[int(id), text("not stored"), int(u)]);
        let mut sink = MysqlSink::connect(MysqlSinkConfig { partial_columns: true, ..sink_cfg(db) }).await.unwrap();
        sink.write(dml(10, (1..=30).map(|k| (t.clone(), RowChange::Insert(row(k, k)))).collect())).await.unwrap();
        sink.write(dml(
            11,
            vec![
                (t.clone(), RowChange::Update { old: row(2, 2), new: row(2, 200) }),
                (t.clone(), RowChange::Delete(row(3, 3))),
                (t.clone(), RowChange::Update { old: row(4, 4), new: row(104, 4) }),
            ],
        ))
        .await
        .unwrap();
        assert_eq!(sink.flush().await.unwrap(), 11);
        let rows = id_rows(&mut c, "SELECT id, u, CAST(extra AS CHAR) FROM d.kv WHERE id IN (1,2,3,4,104) ORDER BY id").await;
        assert_eq!(rows, vec![(1, Some(1), Some("0".into())), (2, Some(200), Some("0".into())), (104, Some(4), Some("0".into()))]);

        c.query_drop("ALTER TABLE d.kv DROP COLUMN u").await.unwrap();
        sink.write(dml(12, vec![(t.clone(), RowChange::Insert(row(31, 31))), (t.clone(), RowChange::Delete(row(1, 1)))]))
            .await
            .unwrap();
        assert_eq!(sink.flush().await.unwrap(), 12);
        let ids: Vec<i64> = c.query("SELECT id FROM d.kv WHERE id IN (1, 31)").await.unwrap();
        assert_eq!(ids, vec![31]);
        let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM d.kv").await.unwrap();
        assert_eq!(n, Some(29));
    });
}
