//! The file sink writes hand-built items; the real `reparo` binary reads them back (print), honours
//! the ts window, and stops at a damaged record with an error naming the file and offset.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use drainer::sink::Sink;
use drainer::sink::file::{FileSink, FileSinkConfig};

use crate::sink_items::{self, CREATE_TABLE};

fn write_files(dir: &Path, max_file_size: u64) -> Vec<drainer::txn::Item> {
    write_files_with(dir, max_file_size, false)
}

fn write_files_with(dir: &Path, max_file_size: u64, gzip: bool) -> Vec<drainer::txn::Item> {
    let mut items = vec![sink_items::ddl(5, "db", CREATE_TABLE)];
    items.extend(sink_items::workload(10, 20).0);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut cfg = FileSinkConfig::new(dir);
        cfg.max_file_size = max_file_size;
        cfg.gzip = gzip;
        let mut sink = FileSink::open(cfg).unwrap();
        for (i, it) in items.iter().enumerate() {
            sink.write(Arc::new(it.clone())).await.unwrap();
            if gzip && i % 5 == 4 {
                // a member ends at every fsync; the compressed size (what rotation counts) grows then
                sink.flush().await.unwrap();
            }
        }
        assert_eq!(sink.flush().await.unwrap(), items.last().unwrap().commit_ts);
    });
    items
}

fn reparo(args: &[&str]) -> Output {
    Command::new(tests::our_binary("reparo")).args(args).output().expect("run reparo")
}

fn commit_lines(out: &Output) -> Vec<i64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("commit ts: "))
        .map(|v| v.parse().unwrap())
        .collect()
}

#[test]
fn reparo_prints_every_record_across_rotated_files_in_the_ts_window() {
    let dir = tempfile::tempdir().unwrap();
    let items = write_files(dir.path(), 2048);
    let files = drainer::sink::file::binlogfile::list_files(dir.path()).unwrap();
    assert!(files.len() >= 3, "small max size rotates: {}", files.len());
    let d = dir.path().to_str().unwrap();

    let out = reparo(&["-data-dir", d, "-dest-type", "print"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(commit_lines(&out), items.iter().map(|i| i.commit_ts).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DDL query: use `db`; create table t (id int primary key"), "{text}");
    assert!(text.contains("schema: db; table: t; type: Update"));
    assert!(text.contains("name(varchar): name-1-0 ü => name-1-1 ü"), "{text}");
    assert!(text.contains("created(datetime): 2020-02-01 01:00:07"), "{text}");
    assert!(text.contains("big(bigint): 18446744073709551614"), "{text}");

    // A window: flags with two dashes, and from the environment.
    let out = Command::new(tests::our_binary("reparo"))
        .args(["--data-dir", d, "--start-tso=50"])
        .env("Reparo_STOP_TSO", "120")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(commit_lines(&out), (50..=120).step_by(10).collect::<Vec<i64>>());

    // Upstream's level names, "fatal" among them, into the log file; an unknown one is named.
    let log = dir.path().join("reparo.log");
    let out = reparo(&["-data-dir", d, "-L", "fatal", "-log-file", log.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = reparo(&["-data-dir", d, "-L", "debug", "-log-file", log.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("reparo: done").count(), 1, "only the debug run logs at info: {text}");
    let out = reparo(&["-data-dir", d, "-L", "loud"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loud"), "{out:?}");

    // Unknown config key: a clear error naming it.
    let cfg = dir.path().join("reparo.toml");
    std::fs::write(&cfg, "data-dir = \"x\"\nstart-tsoo = 1\n").unwrap();
    let out = reparo(&["-config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("start-tsoo"), "{out:?}");
}

/// `[syncer.to] compression = "gzip"`: Reparo reads compressed files (rotated, in a window) exactly as
/// the plain ones.
#[test]
fn reparo_reads_gzip_files_like_plain_ones() {
    let (plain, packed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_files_with(plain.path(), 2048, false);
    let items = write_files_with(packed.path(), 1024, true);
    let files = drainer::sink::file::binlogfile::list_files(packed.path()).unwrap();
    assert!(files.len() >= 2, "small max size rotates: {}", files.len());
    let non_empty = files.iter().filter(|(p, _)| std::fs::metadata(p).unwrap().len() > 0);
    assert!(non_empty.clone().count() >= 2 && non_empty.into_iter().all(|(p, _)| drainer::sink::file::binlogfile::is_gzip(p).unwrap()));
    let print = |d: &Path, extra: &[&str]| {
        let mut args = vec!["-data-dir", d.to_str().unwrap(), "-dest-type", "print"];
        args.extend(extra);
        let out = reparo(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let (a, b) = (print(plain.path(), &[]), print(packed.path(), &[]));
    assert_eq!(commit_lines(&b), items.iter().map(|i| i.commit_ts).collect::<Vec<_>>());
    assert_eq!(a.stdout, b.stdout, "same records, same output");
    let window = print(packed.path(), &["-start-tso=50", "-stop-tso=120"]);
    assert_eq!(commit_lines(&window), (50..=120).step_by(10).collect::<Vec<i64>>());
}

#[test]
fn reparo_names_the_file_and_offset_of_a_corrupt_record() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), 1 << 30);
    let files = drainer::sink::file::binlogfile::list_files(dir.path()).unwrap();
    let path = &files[0].0;
    // Find the 4th record's offset and damage its payload.
    let mut r = drainer::sink::file::binlogfile::RecordReader::open(path).unwrap();
    let mut offsets = Vec::new();
    while let Some((off, _)) = r.next_record().unwrap() {
        offsets.push(off);
    }
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offsets[3] as usize + 20] ^= 0x40;
    std::fs::write(path, &bytes).unwrap();

    let out = reparo(&["-data-dir", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name) && err.contains(&format!("crc mismatch at offset {}", offsets[3])), "{err}");
    assert_eq!(commit_lines(&out).len(), 3, "the records before the damage were printed");
}

/// A downstream row of `db`.`t` as compared: id, name, amount, price, created, data, big, note.
pub(crate) type TRow = (i64, String, String, f64, String, Vec<u8>, u64, Option<String>);

/// The rows `db`.`t` must hold for the live `(id, version)` pairs of a workload.
pub(crate) fn expected_rows(live: &[(i64, i64)]) -> Vec<TRow> {
    use drainer::txn::Value;
    let text = |v: &Option<Value>| match v {
        Some(Value::Bytes(b)) => Some(String::from_utf8(b.clone()).unwrap()),
        Some(Value::Decimal(s)) => Some(s.clone()),
        Some(Value::Time(t)) => Some(t.to_string()),
        _ => None,
    };
    live.iter()
        .map(|&(id, v)| {
            let r = sink_items::row(id, v);
            let Some(Value::Float(price)) = r[3] else { panic!("price") };
            let Some(Value::Bytes(data)) = r[5].clone() else { panic!("data") };
            let Some(Value::Uint(big)) = r[6] else { panic!("big") };
            (id, text(&r[1]).unwrap(), text(&r[2]).unwrap(), price, text(&r[4]).unwrap(), data, big, text(&r[7]))
        })
        .collect()
}

/// Every row of the downstream `db`.`t`, by id.
pub(crate) async fn downstream_rows(c: &mut mysql_async::Conn) -> Vec<TRow> {
    use mysql_async::prelude::Queryable;
    c.query(
        "SELECT id, name, CAST(amount AS CHAR), price, CAST(created AS CHAR), data, big, note FROM db.t ORDER BY id",
    )
    .await
    .unwrap()
}

/// Whether the downstream has table `db`.`name`.
pub(crate) async fn has_table(c: &mut mysql_async::Conn, name: &str) -> bool {
    use mysql_async::prelude::Queryable;
    let n: Option<i64> = c
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'db' AND table_name = ?",
            (name,),
        )
        .await
        .unwrap();
    n == Some(1)
}

/// `create database db`, the table, the workload, then a second table: what the MySQL tests replay.
pub(crate) fn mysql_items(n: i64) -> (Vec<drainer::txn::Item>, Vec<(i64, i64)>) {
    let mut create_db = sink_items::ddl(3, "db", "create database db");
    if let drainer::txn::Body::Ddl(d) = &mut create_db.body {
        d.table.clear();
    }
    let mut items = vec![create_db, sink_items::ddl(5, "db", CREATE_TABLE)];
    let (work, live) = sink_items::workload(10, n);
    let last = work.last().unwrap().commit_ts;
    items.extend(work);
    items.push(sink_items::ddl(last + 5, "db", "create table t2 (a int primary key)"));
    (items, live)
}

fn write_items(dir: &Path, items: &[drainer::txn::Item]) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut cfg = FileSinkConfig::new(dir);
        cfg.max_file_size = 4096;
        let mut sink = FileSink::open(cfg).unwrap();
        for it in items {
            sink.write(Arc::new(it.clone())).await.unwrap();
        }
        sink.flush().await.unwrap();
    });
}

fn mysql_toml(path: &Path, data_dir: &Path, port: u16, password: &str) {
    std::fs::write(
        path,
        format!(
            "data-dir = \"{}\"\ndest-type = \"mysql\"\nworker-count = 4\ntxn-batch = 5\n\
             [dest-db]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"root\"\npassword = \"{password}\"\n",
            data_dir.display()
        ),
    )
    .unwrap();
}

#[test]
fn reparo_restores_into_mysql_with_a_ts_window_and_replays_safely() {
    let cluster = tests::Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (items, live) = mysql_items(20);
    write_items(&data, &items);
    assert!(drainer::sink::file::binlogfile::list_files(&data).unwrap().len() >= 2, "rotated files");

    // Unreachable [dest-db]: runs beside the rest (the loader retries for a while first).
    let dead_cfg = dir.path().join("dead.toml");
    let dead_port = tests::free_port();
    mysql_toml(&dead_cfg, &data, dead_port, "");
    let dead = std::thread::spawn(move || reparo(&["-config", dead_cfg.to_str().unwrap()]));

    let cfg = dir.path().join("reparo.toml");
    mysql_toml(&cfg, &data, db.port, "");
    let cfg = cfg.to_str().unwrap();
    let rt = crate::mysql_sink::rt();
    let mut c = rt.block_on(crate::mysql_sink::conn(db));

    // A window up to ts 100: the first 10 transactions of the workload, the DDL before them.
    let out = reparo(&["-config", cfg, "-stop-tso", "100"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = sink_items::workload(10, 10).1;
    assert_eq!(rt.block_on(downstream_rows(&mut c)), expected_rows(&first));
    assert!(!rt.block_on(has_table(&mut c, "t2")), "the DDL past the window is not applied");

    // Everything, in safe mode, over what the first run applied; then the same again (a restart).
    for run in 0..2 {
        let out = reparo(&["-config", cfg, "-safe-mode"]);
        assert!(out.status.success(), "run {run}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(rt.block_on(downstream_rows(&mut c)), expected_rows(&live), "run {run}");
        assert!(rt.block_on(has_table(&mut c, "t2")));
    }

    // Without safe mode a replay over applied rows is refused, naming the transaction.
    let out = reparo(&["-config", cfg, "-start-tso", "10", "-stop-tso", "10"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("commit ts 10") && err.contains(&format!("127.0.0.1:{}", db.port)), "{err}");

    // A wrong password: a clear error naming the host.
    let bad = dir.path().join("bad.toml");
    mysql_toml(&bad, &data, db.port, "wrong");
    let out = reparo(&["-config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{}", db.port)) && err.contains("root"), "{err}");

    let out = dead.join().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{dead_port}")), "{err}");
}

/// `[dest-db.security]` (ours): Reparo restores into a MariaDB that serves TLS with our test CA, as a
/// user created `REQUIRE X509` (so only with the client certificate); a CA that did not sign the
/// server's certificate is named at once, with the server's address.
#[test]
fn reparo_restores_over_tls_with_dest_db_security() {
    use mysql_async::prelude::Queryable;
    use tests::pki::Pki;
    let dir = tempfile::tempdir().unwrap();
    for d in ["pki", "other"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let pki = Pki::new(&dir.path().join("pki")).unwrap();
    let server = pki.leaf("mariadb").unwrap();
    let client = pki.leaf("reparo").unwrap();
    let other = Pki::new(&dir.path().join("other")).unwrap();
    let args = [
        format!("--ssl-ca={}", pki.ca.display()),
        format!("--ssl-cert={}", server.cert.display()),
        format!("--ssl-key={}", server.key.display()),
    ];
    let db = tests::MariaDb::start_with(&dir.path().join("db"), &args).unwrap();
    let data = dir.path().join("data");
    let (items, live) = mysql_items(10);
    write_items(&data, &items);
    let rt = crate::mysql_sink::rt();
    let mut c = rt.block_on(crate::mysql_sink::conn(&db));
    rt.block_on(c.query_drop("CREATE USER 'x509'@'%' IDENTIFIED BY 'pw' REQUIRE X509; GRANT ALL ON *.* TO 'x509'@'%'"))
        .unwrap();
    let toml = |name: &str, security: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "data-dir = \"{}\"\ndest-type = \"mysql\"\nworker-count = 4\ntxn-batch = 5\n\
                 [dest-db]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"x509\"\npassword = \"pw\"\n{security}",
                data.display(),
                db.port
            ),
        )
        .unwrap();
        path
    };
    let security = |ca: &Path, with_cert: bool| {
        let mut s = format!("[dest-db.security]\nssl-ca = \"{}\"\n", ca.display());
        if with_cert {
            s.push_str(&format!("ssl-cert = \"{}\"\nssl-key = \"{}\"\n", client.cert.display(), client.key.display()));
        }
        s
    };

    // Plain TCP, and TLS without the client certificate: the REQUIRE X509 user is refused.
    for (name, sec) in [("plain.toml", String::new()), ("nocert.toml", security(&pki.ca, false))] {
        let out = reparo(&["-config", toml(name, &sec).to_str().unwrap()]);
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refused user \"x509\""), "{name}: {err}");
    }

    let good = toml("tls.toml", &security(&pki.ca, true));
    let out = reparo(&["-config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rt.block_on(downstream_rows(&mut c)), expected_rows(&live));
    assert!(rt.block_on(has_table(&mut c, "t2")));

    let started = std::time::Instant::now();
    let out = reparo(&["-config", toml("wrong-ca.toml", &security(&other.ca, true)).to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS to the downstream") && err.contains(&format!("127.0.0.1:{}", db.port)), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "a TLS failure is not retried");
}

/// TIMESTAMP values are written to pb files as text in the drainer's local time zone (as upstream);
/// Reparo reads that text in its own local time zone, so run it in the drainer's zone: then the
/// downstream gets the exact instant. In another zone the instant moves by the zones' difference.
#[test]
fn reparo_reads_timestamp_text_in_its_local_time_zone() {
    use drainer::txn::{Body, Column, Item, MysqlTime, RowChange, TableChanges, TableSchema, Time, UniqueKey, Value, mysql_type};
    use mysql_async::prelude::Queryable;
    let table = Arc::new(TableSchema {
        id: 200,
        schema: "db".into(),
        name: "ts".into(),
        columns: vec![
            Column { id: 1, name: "id".into(), tp: mysql_type::LONG, primary_key: true, not_null: true, flen: 11, ..Default::default() },
            Column { id: 2, name: "at".into(), tp: mysql_type::TIMESTAMP, decimal: 6, flen: 26, ..Default::default() },
        ],
        pk_is_handle: true,
        is_common_handle: false,
        unique_keys: vec![UniqueKey { name: "PRIMARY".into(), columns: vec![0] }],
    });
    // 2020-01-02 03:04:05.250000 UTC
    let at = MysqlTime {
        time: Time { year: 2020, month: 1, day: 2, hour: 3, minute: 4, second: 5, microsecond: 250_000 },
        tp: mysql_type::TIMESTAMP, fsp: 6,
    };
    let mut create_db = sink_items::ddl(3, "db", "create database db");
    if let Body::Ddl(d) = &mut create_db.body {
        d.table.clear();
    }
    let insert = Item {
        start_ts: 9,
        commit_ts: 10,
        schema_version: 1,
        body: Body::Dml(vec![TableChanges {
            table,
            rows: vec![RowChange::Insert(vec![Some(Value::Int(1)), Some(Value::Time(at))])],
        }]),
    };
    let items = [create_db, sink_items::ddl(5, "db", "create table ts (id int primary key, at timestamp(6) null)"), insert];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_items(&data, &items); // text in this process's local zone

    let cluster = tests::Cluster::builder().downstream_db().start().unwrap();
    let db = cluster.downstream.as_ref().unwrap();
    let cfg = dir.path().join("reparo.toml");
    mysql_toml(&cfg, &data, db.port, "");
    let rt = crate::mysql_sink::rt();
    let mut c = rt.block_on(crate::mysql_sink::conn(db)); // session zone +00:00
    let stored = |c: &mut mysql_async::Conn| -> String {
        rt.block_on(c.query_first::<String, _>("SELECT CAST(at AS CHAR) FROM db.ts WHERE id = 1")).unwrap().unwrap()
    };

    // Same zone as the writer: the exact instant.
    let out = reparo(&["-config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stored(&mut c), "2020-01-02 03:04:05.250000");

    // A reparo 8 hours east of a UTC writer reads the same text as 8 hours earlier (POSIX TZ rule,
    // no tz database needed). Checked only when this process's zone is UTC at that instant.
    if drainer::sink::file::pb::timestamp_to_local(&at) == at {
        rt.block_on(c.query_drop("DELETE FROM db.ts")).unwrap();
        let out = Command::new(tests::our_binary("reparo"))
            .args(["-config", cfg.to_str().unwrap(), "-start-tso", "10"])
            .env("TZ", "CST-8")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(stored(&mut c), "2020-01-01 19:04:05.250000");
    }
}
