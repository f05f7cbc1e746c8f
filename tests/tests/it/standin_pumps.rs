//! The `standin` binary (bench) against a real etcd, a real upstream MariaDB and three in-test gRPC
//! pumps: one pump dies mid-run and every committed transaction's P and C stay together on one pump;
//! replaying the binlogs in commit-ts order gives exactly the upstream's final rows; the status API
//! serves the DDL history and schemas as TiDB does.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use prost::Message;
use pump::node::Registry;
use pump::proto::{Binlog, BinlogType, PrewriteValue};
use drainer::tidb::model::{Job, TableInfo, tp};
use drainer::tidb::mutation::{RowChange, decode_mutation};
use drainer::tidb::value::{Value, flatten, is_string_type, unflatten};
use tests::Cluster;

use crate::client_pumps::FakePump;

struct Run {
    _cluster: Cluster,
    upstream: String,
    pumps: Vec<FakePump>,
    dir: tempfile::TempDir,
}

async fn start(pumps: usize) -> Run {
    let cluster =
        tokio::task::spawn_blocking(|| Cluster::builder().pd().upstream_db().start().unwrap()).await.unwrap();
    let client = etcd_client::Client::connect([cluster.pd().url().as_str()], None).await.unwrap();
    let reg = Registry::new(client);
    let mut ps = Vec::new();
    for i in 0..pumps {
        let p = FakePump::start(&format!("pump-{i}")).await;
        p.register(&reg).await;
        ps.push(p);
    }
    let upstream = cluster.upstream.as_ref().unwrap().url();
    Run { _cluster: cluster, upstream, pumps: ps, dir: tempfile::tempdir().unwrap() }
}

fn standin(run: &Run, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(tests::our_binary("standin"));
    cmd.args(["--pd-urls", &run._cluster.pd().url(), "--upstream", &run.upstream, "--json", "--seed", "7"])
        .args(["--write-timeout", "1s", "--commit-retry-for", "2s", "--detect-interval", "1s"])
        .arg("--txn-log")
        .arg(run.dir.path().join("txns.jsonl"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn summary(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().find(|l| l.starts_with("{\"standin\"")).unwrap_or_else(|| panic!("no summary in {text}"));
    serde_json::from_str::<serde_json::Value>(line).unwrap()["standin"].clone()
}

fn txn_log(run: &Run) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.dir.path().join("txns.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pump_dies_mid_run_and_every_committed_txn_keeps_p_and_c_on_one_pump() {
    let mut run = start(3).await;
    let child = standin(&run, &["--tables", "4", "--rows", "10", "--threads", "4", "--duration", "6s", "--ddl-every", "25"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.pumps[1].kill();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "standin failed: {}", String::from_utf8_lossy(&out.stderr));
    let s = summary(&out.stdout);
    assert!(s["txns"].as_u64().unwrap() > 20, "{s}");
    assert!(s["ddl_jobs"].as_u64().unwrap() >= 5, "schema + 4 tables at least: {s}");

    let on: Vec<HashMap<(BinlogType, i64), Binlog>> = run
        .pumps
        .iter()
        .map(|p| p.binlogs().into_iter().map(|b| ((b.tp(), b.start_ts()), b)).collect())
        .collect();
    let log = txn_log(&run);
    let mut committed = 0;
    let mut on_survivors = 0;
    let upstream_commits = log.iter().filter(|l| l["outcome"] == "committed" || l["outcome"] == "commit_binlog_failed").count();
    let n = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(upstream_commits as u64, n("txns") + n("seed_txns") + n("ddl_binlogs"), "one log line per upstream commit: {s}");
    for l in &log {
        if l["outcome"] != "committed" {
            continue;
        }
        committed += 1;
        let ts = l["start_ts"].as_i64().unwrap();
        let pump = l["pump"].as_str().unwrap();
        let i: usize = pump.trim_start_matches("pump-").parse().unwrap();
        let p = on[i].get(&(BinlogType::Prewrite, ts)).unwrap_or_else(|| panic!("P of {ts} not on {pump}"));
        let c = on[i].get(&(BinlogType::Commit, ts)).unwrap_or_else(|| panic!("C of {ts} not on {pump}"));
        assert_eq!(c.commit_ts(), l["commit_ts"].as_i64().unwrap());
        assert!(c.commit_ts() > p.start_ts());
        for (j, other) in on.iter().enumerate() {
            if j != i {
                assert!(!other.contains_key(&(BinlogType::Prewrite, ts)), "P of {ts} on two pumps");
            }
        }
        if i != 1 {
            on_survivors += 1;
        }
    }
    assert_eq!(committed as u64, upstream_commits as u64 - n("commit_binlog_failures"), "{s}");
    assert!(on_survivors > 0);
    // No pump holds a C-binlog whose P-binlog is elsewhere.
    for (i, m) in on.iter().enumerate() {
        for (tp, ts) in m.keys() {
            if *tp != BinlogType::Prewrite {
                assert!(m.contains_key(&(BinlogType::Prewrite, *ts)), "pump-{i} has C of {ts} without its P");
            }
        }
    }
    // After the kill, new transactions only go to the survivors: the dead pump has nothing newer.
    let last_dead = on[1].keys().map(|(_, ts)| *ts).max().unwrap_or(0);
    let last_alive = on[0].keys().chain(on[2].keys()).map(|(_, ts)| *ts).max().unwrap();
    assert!(last_alive > last_dead);
    // At most one C-binlog per in-flight transaction can be lost with the dead pump.
    assert!(s["commit_binlog_failures"].as_u64().unwrap() <= 4, "{s}");
}

/// Rows of one table as drainer's MySQL sink sees them: full value lists.
type Rows = Vec<Vec<(i64, Value)>>;

/// Replays the committed binlogs in commit-ts order into rows per (current) table id, decoding with
/// `drainer::tidb::mutation` as drainer does. Updates and deletes must find a row equal to their old
/// image, the way a sink's `WHERE` on all columns would.
fn replay(binlogs: &[Binlog], tables: &HashMap<i64, TableInfo>) -> HashMap<i64, Rows> {
    let mut p: HashMap<i64, &Binlog> = HashMap::new();
    let mut c: Vec<&Binlog> = Vec::new();
    for b in binlogs {
        match b.tp() {
            BinlogType::Prewrite => {
                p.insert(b.start_ts(), b);
            }
            BinlogType::Commit => c.push(b),
            _ => {}
        }
    }
    c.sort_by_key(|b| b.commit_ts());
    let mut out: HashMap<i64, Rows> = HashMap::new();
    for cb in c {
        let pb = p[&cb.start_ts()];
        if cb.ddl_job_id() > 0 {
            continue;
        }
        let pv = PrewriteValue::decode(pb.prewrite_value()).unwrap();
        for m in &pv.mutations {
            let Some(t) = tables.get(&m.table_id()) else { continue };
            let rows = out.entry(t.id).or_default();
            // Rows written before a later ADD COLUMN lack it: defaults fill them, as drainer allows
            // for binlogs older than the table's last DDL.
            // The decoder's rows hold one slot per public column; here as (column id, value) pairs. A
            // delete written before the ADD COLUMN lacks the column (the decoder leaves it absent);
            // this replay, which reads every binlog with the last schema, gives it the default as
            // the upstream's ALTER did.
            let cols = t.public_columns();
            let pairs = |r: Vec<Option<Value>>| -> Vec<(i64, Value)> {
                cols.iter().zip(r).map(|(c, v)| (c.id, v.unwrap_or_else(|| Value::default_for_missing(c).unwrap()))).collect()
            };
            for change in decode_mutation(t, m, true).unwrap() {
                match change {
                    RowChange::Insert(new) => rows.push(pairs(new)),
                    RowChange::Update { old, new } => {
                        let (old, new) = (pairs(old), pairs(new));
                        let i = rows.iter().position(|r| *r == old).expect("the old image of an update is a current row");
                        rows[i] = new;
                    }
                    RowChange::Delete(old) => {
                        let old = pairs(old);
                        let i = rows.iter().position(|r| *r == old).expect("a deleted row is a current row");
                        rows.remove(i);
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binlogs_replayed_in_commit_order_equal_the_upstream_rows() {
    let run = start(2).await;
    let port = tests::free_port();
    let status = format!("127.0.0.1:{port}");
    let mut child = standin(
        &run,
        &["--tables", "4", "--rows", "20", "--threads", "4", "--txns", "150", "--duration", "0", "--ddl-every", "20"],
    )
    .args(["--status-addr", &status, "--serve", "--large-row-every", "10", "--large-row-bytes", "70000"])
    .args(["--large-txn-every", "40", "--large-txn-rows", "60"])
    .spawn()
    .unwrap();
    // The summary line comes before the process starts serving forever.
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !String::from_utf8_lossy(&buf).contains("{\"standin\"") || !buf.ends_with(b"\n") {
        assert!(std::time::Instant::now() < deadline, "no summary from standin");
        let n = tokio::time::timeout(Duration::from_secs(90), tokio::io::AsyncReadExt::read(&mut stdout, &mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "standin exited early");
        buf.extend_from_slice(&chunk[..n]);
    }
    let s = summary(&buf);
    assert_eq!(s["errors"].as_u64().unwrap(), 0, "{s}");

    // The DDL history from the status API, as drainer would read it.
    let history: Vec<Job> = serde_json::from_str(&http_get(port, "/ddl/history?limit=2048").1).unwrap();
    assert_eq!(history.len() as u64, s["ddl_jobs"].as_u64().unwrap());
    assert!(history.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let versions: HashSet<i64> = history.iter().map(|j| j.schema_version()).collect();
    assert_eq!(versions.len(), history.len(), "one schema version per job");
    assert_eq!(history.iter().map(|j| j.schema_version()).max().unwrap(), s["schema_version"].as_i64().unwrap());
    let (code, body) = http_get(port, "/ddl/history?start_job_id=1");
    assert_eq!(code, 400, "{body}");
    assert_eq!(body, "when 'start_job_id' is specified, it must work with a 'limit'");

    // Current tables, from /schema/{db}.
    let (code, body) = http_get(port, "/schema/standin");
    assert_eq!(code, 200);
    assert!(body.starts_with("[\n{\n \"id\": "), "hand-joined array of one-space-indented tables: {body:.40}");
    let tables: Vec<TableInfo> = serde_json::from_str(&body).unwrap();
    assert!(tables.len() >= 4);
    for t in &tables {
        let (code, one) = http_get(port, &format!("/schema?table_id={}", t.id));
        assert_eq!(code, 200);
        assert_eq!(&serde_json::from_str::<TableInfo>(&one).unwrap(), t);
        let by_name: TableInfo = serde_json::from_str(&http_get(port, &format!("/schema/STANDIN/{}", t.name.o.to_uppercase())).1).unwrap();
        assert_eq!(&by_name, t);
    }
    assert_eq!(http_get(port, "/schema?table_id=999999").0, 400);
    child.kill().await.unwrap();

    // Replay every pump's binlogs and compare with the upstream.
    let mut all = Vec::new();
    for p in &run.pumps {
        all.extend(p.binlogs());
    }
    // DDL binlogs carry the job id and query of a history job; DROP COLUMN also sends DeleteOnly (1).
    let jobs: HashMap<i64, &Job> = history.iter().map(|j| (j.id, j)).collect();
    let ddl: Vec<&Binlog> = all.iter().filter(|b| b.tp() == BinlogType::Prewrite && b.ddl_job_id() > 0).collect();
    assert_eq!(ddl.len() as u64, s["ddl_binlogs"].as_u64().unwrap());
    for b in &ddl {
        let j = jobs[&b.ddl_job_id()];
        assert_eq!(b.ddl_query(), j.query.as_bytes());
        assert!(b.prewrite_value.is_none());
    }
    assert!(
        ddl.iter().any(|b| b.ddl_schema_state() == 1 && jobs[&b.ddl_job_id()].job_type == drainer::tidb::model::action::DROP_COLUMN),
        "a DeleteOnly binlog of a DROP COLUMN job"
    );
    for kind in [5u8, 6, 7, 8, 11, 14] {
        assert!(history.iter().any(|j| j.job_type == kind), "a job of type {kind} ran");
    }
    let by_id: HashMap<i64, TableInfo> = tables.iter().map(|t| (t.id, t.clone())).collect();
    let replayed = replay(&all, &by_id);
    let pool = mysql_async::Pool::new(
        mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&run.upstream).unwrap())
            .setup(vec!["SET time_zone = '+00:00'"]),
    );
    let mut conn = pool.get_conn().await.unwrap();
    let mut compared = 0;
    for t in &tables {
        let cols = t.writable_columns();
        // FLOAT as DOUBLE: the text protocol would round it to 6 significant digits.
        let list: Vec<String> = cols
            .iter()
            .map(|c| {
                if c.field_type.tp == tp::FLOAT { format!("CAST(`{}` AS DOUBLE)", c.name.o) } else { format!("`{}`", c.name.o) }
            })
            .collect();
        let rows: Vec<mysql_async::Row> =
            conn.query(format!("SELECT {} FROM standin.`{}`", list.join(", "), t.name.o)).await.unwrap();
        let mut have = replayed.get(&t.id).cloned().unwrap_or_default();
        assert_eq!(have.len(), rows.len(), "row count of {}", t.name.o);
        let mut want: Rows = Vec::new();
        for r in rows {
            let mut m = Vec::new();
            for (i, c) in cols.iter().enumerate() {
                let v = match r.as_ref(i).unwrap() {
                    mysql_async::Value::NULL => Value::Null,
                    mysql_async::Value::Bytes(b) if is_string_type(c.field_type.tp) => Value::Bytes(b.clone()),
                    mysql_async::Value::Bytes(b) if c.field_type.tp == tp::BIT => {
                        let n = ((c.field_type.flen + 7) / 8) as usize;
                        let mut out = vec![0u8; n.saturating_sub(b.len())];
                        out.extend_from_slice(b);
                        Value::Bit(out)
                    }
                    mysql_async::Value::Bytes(b) => {
                        Value::from_text(Some(std::str::from_utf8(b).unwrap()), &c.field_type).unwrap()
                    }
                    other => panic!("{other:?}"),
                };
                // Normalise through the datum form (JSON key order, FLOAT widening).
                m.push((c.id, unflatten(&flatten(&v), &c.field_type).unwrap()));
            }
            want.push(m);
        }
        let key = |m: &Vec<(i64, Value)>| format!("{m:?}");
        want.sort_by_key(key);
        have.sort_by_key(key);
        assert!(want == have, "table {}: replayed rows differ from the upstream", t.name.o);
        compared += want.len();
    }
    assert!(compared > 50, "compared {compared} rows");
}

/// A minimal HTTP/1.0 GET: (status, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}
