//! The drainer core in-process against a real etcd, in-test `binlog.Pump` servers and an in-test TiDB
//! status API serving real TiDB JSON (drainer::tidb models): merge order across pumps, paused pumps,
//! restart from the savepoint, filters and DDL.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drainer::config::{Config, TableName};
use drainer::server::Exit;
use drainer::sink::{Sink, SinkError};
use drainer::txn::{Body, Item, RowChange, Value};
use prost::Message;
use pump::node::{NodeKind, NodeState, NodeStatus, Registry};
use pump::proto::pump_server::{Pump, PumpServer};
use pump::proto::{Binlog, BinlogType, Entity, MutationType, PrewriteValue, PullBinlogReq, PullBinlogResp, TableMutation};
use drainer::tidb::model::{CIStr, ColumnInfo, DBInfo, FieldType, HistoryInfo, Job, TableInfo, action, flag, job_state, tp};
use drainer::tidb::{Datum, Handle};
use tests::{Cluster, free_port};
use tokio::sync::oneshot;

// ---------------------------------------------------------------- a pump that serves a fixed log

type Log = Arc<Mutex<Vec<Binlog>>>;

#[derive(Clone)]
struct FakePump {
    log: Log,
}

#[tonic::async_trait]
impl Pump for FakePump {
    async fn write_binlog(
        &self,
        _r: tonic::Request<pump::proto::WriteBinlogReq>,
    ) -> Result<tonic::Response<pump::proto::WriteBinlogResp>, tonic::Status> {
        Err(tonic::Status::unimplemented("test pump"))
    }

    type PullBinlogsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<PullBinlogResp, tonic::Status>> + Send + 'static>>;

    async fn pull_binlogs(
        &self,
        r: tonic::Request<PullBinlogReq>,
    ) -> Result<tonic::Response<Self::PullBinlogsStream>, tonic::Status> {
        let from = r.into_inner().start_from.map(|p| p.offset).unwrap_or(0);
        let log = self.log.clone();
        let s = futures::stream::unfold((log, from), |(log, last)| async move {
            loop {
                let next = log.lock().unwrap().iter().find(|b| b.commit_ts() > last).cloned();
                if let Some(b) = next {
                    let ts = b.commit_ts();
                    let resp = PullBinlogResp {
                        entity: Some(Entity { pos: None, payload: b.encode_to_vec(), checksum: vec![], meta: None }),
                    };
                    return Some((Ok(resp), (log, ts)));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Ok(tonic::Response::new(Box::pin(s)))
    }
}

/// Starts a pump server on a free port; registers it in etcd with `state`.
async fn start_pump(reg: &Registry, id: &str, state: NodeState, max: i64) -> (Log, String) {
    let log: Log = Arc::default();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let svc = FakePump { log: log.clone() };
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    tokio::spawn(tonic::transport::Server::builder().add_service(PumpServer::new(svc)).serve(sock));
    let mut st = NodeStatus::new(id, addr.clone(), state);
    st.max_commit_ts = max;
    reg.update_node(NodeKind::Pump, &st).await.unwrap();
    (log, addr)
}

async fn set_pump(reg: &Registry, id: &str, addr: &str, state: NodeState, max: i64) {
    let mut st = NodeStatus::new(id, addr, state);
    st.max_commit_ts = max;
    reg.update_node(NodeKind::Pump, &st).await.unwrap();
}

// ---------------------------------------------------------------- binlogs and schemas

const DB_ID: i64 = 2;
const T1: i64 = 100;
const T2: i64 = 101;

fn fake(ts: i64) -> Binlog {
    Binlog { tp: Some(BinlogType::Rollback as i32), start_ts: Some(ts), commit_ts: Some(ts), ..Binlog::default() }
}

fn insert(ts: i64, table: i64, id: i64, v: &str) -> Binlog {
    let row = drainer::tidb::encode_insert_row(&Handle::Int(id), &[(2, Datum::Bytes(v.as_bytes().to_vec()))]);
    let pv = PrewriteValue {
        schema_version: Some(3),
        mutations: vec![TableMutation {
            table_id: Some(table),
            inserted_rows: vec![row],
            sequence: vec![MutationType::Insert as i32],
            ..TableMutation::default()
        }],
    };
    Binlog {
        tp: Some(BinlogType::Commit as i32),
        start_ts: Some(ts - 1),
        commit_ts: Some(ts),
        prewrite_value: Some(pv.encode_to_vec()),
        ddl_job_id: Some(0),
        ..Binlog::default()
    }
}

fn ddl(ts: i64, job_id: i64, query: &str) -> Binlog {
    Binlog {
        tp: Some(BinlogType::Commit as i32),
        start_ts: Some(ts - 1),
        commit_ts: Some(ts),
        ddl_query: Some(query.as_bytes().to_vec()),
        ddl_job_id: Some(job_id),
        ..Binlog::default()
    }
}

fn table(id: i64, name: &str, extra_col: bool) -> TableInfo {
    let col = |id: i64, name: &str, offset: i64, t: u8, fl: u64| ColumnInfo {
        id,
        name: CIStr::new(name),
        offset,
        field_type: FieldType::new(t, fl, 11, 0),
        ..ColumnInfo::default()
    };
    let mut cols = vec![
        col(1, "id", 0, tp::LONG, flag::PRI_KEY | flag::NOT_NULL),
        col(2, "v", 1, tp::VARCHAR, 0),
    ];
    if extra_col {
        let mut c = col(3, "w", 2, tp::LONG, flag::NOT_NULL);
        c.origin_default = serde_json::json!("7");
        cols.push(c);
    }
    TableInfo { id, name: CIStr::new(name), cols, pk_is_handle: true, ..TableInfo::default() }
}

fn job(id: i64, t: u8, table_id: i64, v: i64, db: Option<DBInfo>, ti: Option<TableInfo>, query: &str) -> Job {
    Job {
        id,
        job_type: t,
        schema_id: DB_ID,
        table_id,
        state: job_state::SYNCED,
        query: query.into(),
        binlog: Some(HistoryInfo { schema_version: v, db_info: db, table_info: ti, ..HistoryInfo::default() }),
        ..Job::default()
    }
}

fn base_jobs() -> Vec<Job> {
    let db = DBInfo { id: DB_ID, db_name: CIStr::new("test"), ..DBInfo::default() };
    vec![
        job(1, action::CREATE_SCHEMA, 0, 1, Some(db), None, "create database test"),
        job(2, action::CREATE_TABLE, T1, 2, None, Some(table(T1, "t1", false)), "create table t1 (id int primary key, v varchar(11))"),
        job(3, action::CREATE_TABLE, T2, 3, None, Some(table(T2, "t2", false)), "create table t2 (id int primary key, v varchar(11))"),
    ]
}

/// Serves `/ddl/history` (paged by start_job_id/limit, newest first, as TiDB master) from `jobs`.
async fn start_status_api(jobs: Arc<Mutex<Vec<Job>>>) -> String {
    use axum::extract::{Query, State};
    async fn history(
        State(jobs): State<Arc<Mutex<Vec<Job>>>>,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(2048);
        let start: i64 = q.get("start_job_id").and_then(|s| s.parse().ok()).unwrap_or(i64::MAX);
        let mut js: Vec<Job> = jobs.lock().unwrap().iter().filter(|j| j.id <= start).cloned().collect();
        js.sort_by_key(|j| std::cmp::Reverse(j.id));
        js.truncate(limit);
        drainer::tidb::model::to_status_json(&js).into_response()
    }
    let app = axum::Router::new().route("/ddl/history", axum::routing::get(history)).with_state(jobs);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

// ---------------------------------------------------------------- an in-memory sink

#[derive(Clone, Default)]
struct MemSink {
    items: Arc<Mutex<Vec<Arc<Item>>>>,
    durable: Arc<AtomicI64>,
}

impl MemSink {
    fn ts(&self) -> Vec<i64> {
        self.items.lock().unwrap().iter().map(|i| i.commit_ts).collect()
    }
}

impl Sink for MemSink {
    async fn load_checkpoint(&mut self) -> Result<Option<i64>, SinkError> {
        Ok(None)
    }
    async fn write(&mut self, item: Arc<Item>) -> Result<(), SinkError> {
        self.durable.store(item.commit_ts, Ordering::Release);
        self.items.lock().unwrap().push(item);
        Ok(())
    }
    fn durable_ts(&self) -> i64 {
        self.durable.load(Ordering::Acquire)
    }
    async fn flush(&mut self) -> Result<i64, SinkError> {
        Ok(self.durable_ts())
    }
}

// ---------------------------------------------------------------- running a drainer

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<Exit, drainer::server::DrainerError>>,
    sink: MemSink,
    addr: String,
}

impl Running {
    async fn stop(mut self) -> Exit {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.task).await.unwrap().unwrap().unwrap()
    }
}

fn config(cluster: &Cluster, status: &str, data: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.addr = format!("127.0.0.1:{}", free_port());
    cfg.pd_urls = cluster.pd().url();
    cfg.data_dir = data.to_path_buf();
    cfg.node_id = "drainer-1".into();
    cfg.detect_interval = 1;
    cfg.initial_commit_ts = 0;
    cfg.syncer.db_type = "file".into();
    cfg.syncer.schema_source = status.into();
    cfg
}

fn start(mut cfg: Config) -> Running {
    cfg.adjust(|_| None).unwrap();
    let sink = MemSink::default();
    let (tx, rx) = oneshot::channel();
    let addr = cfg.addr.clone();
    let s = sink.clone();
    let stop = async move {
        let _ = rx.await;
    };
    let task = tokio::spawn(drainer::server::run(cfg, s, stop));
    Running { stop: Some(tx), task, sink, addr }
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup() -> (Cluster, Registry, String, Arc<Mutex<Vec<Job>>>) {
    let cluster = tokio::task::spawn_blocking(|| Cluster::builder().pd().start().unwrap()).await.unwrap();
    let client = etcd_client::Client::connect([cluster.pd().url().as_str()], None).await.unwrap();
    let jobs = Arc::new(Mutex::new(base_jobs()));
    let status = start_status_api(jobs.clone()).await;
    (cluster, Registry::new(client), status, jobs)
}

fn rows_of(item: &Item) -> Vec<(i64, String)> {
    let Body::Dml(changes) = &item.body else { return vec![] };
    changes
        .iter()
        .flat_map(|c| c.rows.iter())
        .filter_map(|r| match r {
            RowChange::Insert(row) => match (&row[0], &row[1]) {
                (Some(Value::Int(id)), Some(Value::Bytes(v))) => Some((*id, String::from_utf8_lossy(v).into_owned())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drainer_merges_three_pumps_in_commit_ts_order_and_paused_pumps_stop_blocking() {
    let (cluster, reg, status, _jobs) = setup().await;
    let (a, a_addr) = start_pump(&reg, "pa", NodeState::Online, 0).await;
    let (b, b_addr) = start_pump(&reg, "pb", NodeState::Online, 0).await;
    let (c, _c_addr) = start_pump(&reg, "pc", NodeState::Online, 0).await;
    a.lock().unwrap().extend([insert(10, T1, 1, "a1"), fake(40), insert(70, T1, 4, "a2"), fake(100)]);
    b.lock().unwrap().extend([insert(20, T1, 2, "b1"), fake(50), insert(80, T2, 5, "b2"), fake(100)]);
    c.lock().unwrap().extend([insert(30, T1, 3, "c1"), fake(60), fake(90), fake(110)]);

    let data = cluster.dir().join("drainer");
    let d = start(config(&cluster, &status, &data));
    wait_for("ten merged binlogs", 30, || d.sink.ts().len() >= 10).await;
    // 110 must wait: pa and pb are online and have nothing after 100.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.sink.ts(), [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    let items = d.sink.items.lock().unwrap().clone();
    assert_eq!(rows_of(&items[0]), [(1, "a1".to_string())]);
    assert_eq!(rows_of(&items[7]), [(5, "b2".to_string())]);
    let Body::Dml(ch) = &items[7].body else { panic!("not a DML") };
    assert_eq!((ch[0].table.schema.as_str(), ch[0].table.name.as_str()), ("test", "t2"));
    assert!(matches!(items[3].body, Body::Empty), "fake binlog is Empty");

    // pa paused cleanly (its pause record says it holds no open transaction) having delivered its
    // maxCommitTS: skippable; pb still online and silent: still blocks.
    set_pump(&reg, "pa", &a_addr, NodeState::Paused, 100).await;
    reg.set_pause_record("pa", Some(100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(d.sink.ts().len(), 10, "an online silent pump must still block the merge");
    // pb set paused by hand, without a pause record: it may still hold an open transaction, so it blocks.
    set_pump(&reg, "pb", &b_addr, NodeState::Paused, 100).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(d.sink.ts().len(), 10, "a paused pump without a pause record must still block the merge");
    reg.set_pause_record("pb", Some(100)).await.unwrap();
    wait_for("110 once both silent pumps are paused cleanly", 20, || d.sink.ts().contains(&110)).await;
    // Real TSO from here on: pc keeps committing while pa and pb stay paused; each scan's TSO bound lets
    // it through.
    let tso = crate::pump_util::tso(&cluster.pd().url()).await;
    let t1 = tso.get_ts().await.unwrap() as i64;
    c.lock().unwrap().push(fake(t1));
    wait_for("pc's binlog past the paused pumps", 20, || d.sink.ts().contains(&t1)).await;

    // pa back online (registered before it commits anything new): required again.
    set_pump(&reg, "pa", &a_addr, NodeState::Online, 100).await;
    let t2 = tso.get_ts().await.unwrap() as i64;
    a.lock().unwrap().push(fake(t2));
    let t3 = tso.get_ts().await.unwrap() as i64;
    c.lock().unwrap().push(fake(t3));
    wait_for("pa's binlog after it resumed", 20, || d.sink.ts().contains(&t2)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(*d.sink.ts().last().unwrap(), t2, "pc's later binlog waits for pa again");
    let ts = d.sink.ts();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {ts:?}");

    // HTTP: /status and /commit_ts report the checkpoint and pump positions.
    let body: serde_json::Value = reqwest_get(&format!("http://{}/status", d.addr)).await;
    assert_eq!(body["PumpPos"]["pa"], t2);
    assert_eq!(body["TsMap"], "");
    let exit = d.stop().await;
    assert_eq!(exit.state, NodeState::Paused);
    assert_eq!(exit.checkpoint.commit_ts, t2);
    assert!(exit.checkpoint.consistent);
    let me = reg.get(NodeKind::Drainer, "drainer-1").await.unwrap().unwrap();
    assert_eq!((me.state, me.max_commit_ts), (NodeState::Paused, t2));
}

async fn reqwest_get(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drainer_restart_resumes_from_the_savepoint_without_loss_or_duplicates() {
    let (cluster, reg, status, _jobs) = setup().await;
    let (a, _) = start_pump(&reg, "pa", NodeState::Online, 0).await;
    let (b, _) = start_pump(&reg, "pb", NodeState::Online, 0).await;
    let mut all = Vec::new();
    for i in 1..=20i64 {
        let ts = i * 10;
        let bl = if i % 3 == 0 { fake(ts) } else { insert(ts, T1, i, &format!("v{i}")) };
        all.push(ts);
        if i % 2 == 0 { a.lock().unwrap().push(bl) } else { b.lock().unwrap().push(bl) }
    }
    // both pumps end with a fake at 210 so everything up to 200 can be emitted
    a.lock().unwrap().push(fake(210));
    b.lock().unwrap().push(fake(210));
    all.push(210);
    let data = cluster.dir().join("drainer");
    let d = start(config(&cluster, &status, &data));
    wait_for("first 21 binlogs", 30, || d.sink.ts().len() >= 21).await;
    let first = d.sink.ts();
    let exit = d.stop().await;
    assert_eq!(exit.checkpoint.commit_ts, 210);
    let sp = std::fs::read_to_string(data.join("savepoint")).unwrap();
    assert!(sp.contains("commitTS = 210") && sp.contains("consistent = true"), "{sp}");

    for i in 22..=30i64 {
        let ts = i * 10;
        all.push(ts);
        let bl = insert(ts, T1, i, &format!("v{i}"));
        if i % 2 == 0 { a.lock().unwrap().push(bl) } else { b.lock().unwrap().push(bl) }
    }
    a.lock().unwrap().push(fake(310));
    b.lock().unwrap().push(fake(310));
    all.push(310);
    let d = start(config(&cluster, &status, &data));
    wait_for("the rest after restart", 30, || d.sink.ts().len() >= 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = d.sink.ts();
    d.stop().await;
    let mut union = first.clone();
    union.extend(&second);
    assert_eq!(union, all, "no loss and no duplicate across the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drainer_filters_tables_and_ts_and_emits_ddl_from_history() {
    let (cluster, reg, status, jobs) = setup().await;
    let (a, _) = start_pump(&reg, "pa", NodeState::Online, 0).await;
    // a DDL adding column w to t1 at version 4 (job 4), then rows at the new version
    jobs.lock().unwrap().push(job(4, action::ADD_COLUMN, T1, 4, None, Some(table(T1, "t1", true)), "alter table t1 add column w int not null default 7"));
    let mut after = insert(60, T1, 6, "x");
    if let Some(pv) = after.prewrite_value.as_mut() {
        let mut v = PrewriteValue::decode(pv.as_slice()).unwrap();
        v.schema_version = Some(4);
        *pv = v.encode_to_vec();
    }
    a.lock().unwrap().extend([
        insert(10, T1, 1, "keep"),
        insert(20, T2, 2, "ignored table"),
        insert(30, T1, 3, "ignored ts"),
        ddl(40, 4, "alter table t1 add column w int not null default 7"),
        after,
        fake(70),
    ]);
    let data = cluster.dir().join("drainer");
    let mut cfg = config(&cluster, &status, &data);
    cfg.syncer.ignore_table = vec![TableName { db_name: "test".into(), tbl_name: "~^t2$".into() }];
    cfg.syncer.ignore_txn_commit_ts = vec![30];
    let d = start(cfg);
    wait_for("six items", 30, || d.sink.ts().len() >= 6).await;
    let items = d.sink.items.lock().unwrap().clone();
    assert_eq!(rows_of(&items[0]), [(1, "keep".to_string())]);
    assert!(matches!(items[1].body, Body::Empty), "filtered table → Empty, checkpoint still moves");
    assert!(matches!(items[2].body, Body::Empty), "ignore-txn-commit-ts → Empty");
    let Body::Ddl(ddl) = &items[3].body else { panic!("DDL expected, got {:?}", items[3].body) };
    assert_eq!((ddl.schema.as_str(), ddl.table.as_str(), ddl.job_id), ("test", "t1", 4));
    assert!(ddl.query.starts_with("alter table t1 add column w"));
    assert_eq!(ddl.table_after.as_ref().unwrap().columns.len(), 3);
    let Body::Dml(ch) = &items[4].body else { panic!("DML expected") };
    let RowChange::Insert(row) = &ch[0].rows[0] else { panic!("insert expected") };
    // w was not in the encoded row: filled with its origin default
    assert_eq!(row[2], Some(Value::Int(7)));
    // PUT /state/<id>/close: closing, then offline with the final checkpoint.
    let url = format!("http://{}/state/drainer-1/close", d.addr);
    let Running { stop: _keep, task, .. } = d;
    let bad: serde_json::Value =
        reqwest::Client::new().put(format!("http://{}/state/other/close", d_addr(&url))).send().await.unwrap().json().await.unwrap();
    assert_eq!(bad["code"], 3);
    let resp: serde_json::Value = reqwest::Client::new().put(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(resp["code"], 200, "{resp}");
    assert_eq!(resp["message"], "apply action close success!");
    let exit = tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().unwrap();
    assert_eq!(exit.state, NodeState::Offline);
    assert_eq!(exit.checkpoint.commit_ts, 70);
    assert_eq!(exit.checkpoint.schema_version, 4);
    let me = reg.get(NodeKind::Drainer, "drainer-1").await.unwrap().unwrap();
    assert_eq!((me.state, me.max_commit_ts), (NodeState::Offline, 70));
}

fn d_addr(url: &str) -> &str {
    url.trim_start_matches("http://").split('/').next().unwrap_or_default()
}

fn at_version(mut b: Binlog, version: i64) -> Binlog {
    if let Some(pv) = b.prewrite_value.as_mut() {
        let mut v = PrewriteValue::decode(pv.as_slice()).unwrap();
        v.schema_version = Some(version);
        *pv = v.encode_to_vec();
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_into_an_ignored_schema_stops_with_a_clear_error_and_can_be_skipped() {
    const ARCH: i64 = 3;
    let (cluster, reg, status, jobs) = setup().await;
    let (a, _) = start_pump(&reg, "pa", NodeState::Online, 0).await;
    {
        let arch = DBInfo { id: ARCH, db_name: CIStr::new("arch"), ..DBInfo::default() };
        let mut create = job(4, action::CREATE_SCHEMA, 0, 4, Some(arch), None, "create database arch");
        create.schema_id = ARCH;
        let mut rename = job(5, action::RENAME_TABLE, T2, 5, None, Some(table(T2, "t2", false)), "rename table test.t2 to arch.t2");
        rename.schema_id = ARCH;
        jobs.lock().unwrap().extend([create, rename]);
    }
    a.lock().unwrap().extend([
        insert(10, T2, 1, "before"),
        ddl(20, 4, "create database arch"),
        ddl(30, 5, "rename table test.t2 to arch.t2"),
        at_version(insert(40, T2, 2, "after, now in arch"), 5),
        at_version(insert(50, T1, 3, "t1 still replicated"), 5),
        fake(60),
    ]);
    let data = cluster.dir().join("drainer");
    let mut cfg = config(&cluster, &status, &data);
    cfg.syncer.ignore_schemas = "arch".into();
    let d = start(cfg.clone());
    let err = tokio::time::timeout(Duration::from_secs(30), d.task).await.unwrap().unwrap().unwrap_err().to_string();
    for want in ["commit ts 30", "`test`.`t2`", "`arch`.`t2`", "ignore-txn-commit-ts", "rename table test.t2 to arch.t2"] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    assert!(d.sink.ts().iter().all(|&ts| ts < 30), "nothing at or after the rename was applied: {:?}", d.sink.ts());

    // The operator handled the table downstream and skips the DDL: the rename is tracked, so the
    // row written to arch.t2 afterwards is filtered out, and t1 goes on.
    cfg.syncer.ignore_txn_commit_ts = vec![30];
    let d = start(cfg);
    wait_for("the rest after the skip", 30, || d.sink.ts().last() == Some(&60)).await;
    let items = d.sink.items.lock().unwrap().clone();
    let after: Vec<i64> = items.iter().map(|i| i.commit_ts).filter(|&t| t > 20).collect();
    assert_eq!(after, [30, 40, 50, 60]);
    let by_ts = |ts: i64| items.iter().find(|i| i.commit_ts == ts).unwrap().clone();
    assert_eq!(rows_of(&by_ts(10)), [(1, "before".to_string())]);
    assert!(matches!(by_ts(30).body, Body::Empty), "the skipped rename runs nothing downstream");
    assert!(matches!(by_ts(40).body, Body::Empty), "arch.t2 is ignored: the rename was tracked");
    assert_eq!(rows_of(&by_ts(50)), [(3, "t1 still replicated".to_string())]);
    d.stop().await;
}
