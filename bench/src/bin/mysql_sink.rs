//! `mysql_sink`: the drainer's MySQL sink against a real MariaDB, side by side with
//! `LOAD DATA LOCAL INFILE` of the same rows (the ceiling) and single-row autocommit statements
//! (the floor), for an insert-only and a mixed insert/update/delete workload. For context it also
//! times `LOAD DATA` of the same rows in 10,240-row statements (one transaction each, the size of
//! the sink's default batch).
//!
//! `cargo run --release -p bench --bin mysql_sink -- [rows] [runs]` (defaults 200000, 3). Prints one
//! table row and JSON line per comparison (medians over the runs). `SINK_WORKERS` and
//! `SINK_TXN_BATCH` set the sink's `worker-count` and `txn-batch` (defaults 16 and 20, upstream's);
//! `SINK_CONN_ROWS` / `SINK_CONN_INSERTS` its updates and deletes / inserts per connection
//! (default: the sink's), `SINK_PREPARED_PARAMS` its
//! parameters per prepared INSERT (default: the sink's; 0 = text statements only). The insert
//! workload also runs with text statements only, for the prepared statements' gain. Both workloads
//! also run with drainer HA's fencing check (`task-name`: every transaction reads
//! `tidb_binlog.ha_fence` under a shared lock first), for its steady-state cost.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bench::Comparison;
use drainer::sink::Sink;
use drainer::sink::mysql::{CheckpointCfg, MysqlSink, MysqlSinkConfig};
use drainer::txn::{Body, Column, Item, RowChange, TableChanges, TableSchema, UniqueKey, Value, mysql_type};
use mysql_async::prelude::*;

const DDL: &str = "(id BIGINT PRIMARY KEY, k INT NOT NULL, c VARCHAR(120) NOT NULL, pad VARCHAR(60) NOT NULL)";

fn schema(table: &str) -> Arc<TableSchema> {
    let col = |name: &str, tp| Column { name: name.into(), tp, ..Default::default() };
    Arc::new(TableSchema {
        schema: "b".into(),
        name: table.into(),
        columns: vec![
            col("id", mysql_type::LONGLONG),
            col("k", mysql_type::LONG),
            col("c", mysql_type::VARCHAR),
            col("pad", mysql_type::VARCHAR),
        ],
        unique_keys: vec![UniqueKey { name: "PRIMARY".into(), columns: vec![0] }],
        ..Default::default()
    })
}

struct Rng(u64);
impl Rng {
    fn next(&mut self, m: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % m
    }
}

#[derive(Clone)]
struct Rec {
    id: i64,
    k: i64,
    c: String,
    pad: String,
}

fn rec(rng: &mut Rng, id: i64) -> Rec {
    let c: String = (0..11).map(|_| format!("{:010}", rng.next(10_000_000_000))).collect::<Vec<_>>().join("-");
    let pad: String = (0..5).map(|_| format!("{:011}", rng.next(100_000_000_000))).collect::<Vec<_>>().join("-");
    Rec { id, k: rng.next(1_000_000) as i64, c: c[..119].to_string(), pad: pad[..59].to_string() }
}

fn row(r: &Rec) -> Vec<Option<Value>> {
    vec![
        Some(Value::Int(r.id)),
        Some(Value::Int(r.k)),
        Some(Value::Bytes(r.c.clone().into_bytes())),
        Some(Value::Bytes(r.pad.clone().into_bytes())),
    ]
}

#[derive(Clone)]
enum Op {
    Insert(Rec),
    Update(Rec, Rec),
    Delete(Rec),
}

/// Ops grouped into upstream transactions of `per_txn` changes.
fn items(table: &Arc<TableSchema>, ops: &[Op], per_txn: usize, ts0: i64) -> Vec<Arc<Item>> {
    ops.chunks(per_txn)
        .enumerate()
        .map(|(i, ch)| {
            let rows = ch
                .iter()
                .map(|op| match op {
                    Op::Insert(r) => RowChange::Insert(row(r)),
                    Op::Update(o, n) => RowChange::Update { old: row(o), new: row(n) },
                    Op::Delete(r) => RowChange::Delete(row(r)),
                })
                .collect();
            Arc::new(Item {
                start_ts: ts0 + i as i64 * 2,
                commit_ts: ts0 + i as i64 * 2 + 1,
                schema_version: 1,
                body: Body::Dml(vec![TableChanges { table: table.clone(), rows }]),
            })
        })
        .collect()
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn single_sql(table: &str, op: &Op) -> String {
    match op {
        Op::Insert(r) => format!(
            "INSERT INTO b.{table} (id,k,c,pad) VALUES ({},{},{},{})",
            r.id,
            r.k,
            sql_str(&r.c),
            sql_str(&r.pad)
        ),
        Op::Update(o, n) => {
            format!(
                "UPDATE b.{table} SET id={},k={},c={},pad={} WHERE id={} LIMIT 1",
                n.id,
                n.k,
                sql_str(&n.c),
                sql_str(&n.pad),
                o.id
            )
        }
        Op::Delete(r) => format!("DELETE FROM b.{table} WHERE id={} LIMIT 1", r.id),
    }
}

async fn reset(c: &mut mysql_async::Conn, table: &str) -> Result<()> {
    c.query_drop(format!("DROP TABLE IF EXISTS b.{table}; CREATE TABLE b.{table} {DDL}")).await?;
    Ok(())
}

async fn load_data(c: &mut mysql_async::Conn, table: &str, recs: &[Rec]) -> Result<()> {
    let mut tsv = String::with_capacity(recs.len() * 200);
    for r in recs {
        tsv.push_str(&format!("{}\t{}\t{}\t{}\n", r.id, r.k, r.c, r.pad));
    }
    // in 1 MiB chunks: each chunk travels as one packet (max_allowed_packet)
    let data = bytes::Bytes::from(tsv);
    let chunks: Vec<std::io::Result<bytes::Bytes>> =
        (0..data.len()).step_by(1 << 20).map(|i| Ok(data.slice(i..(i + (1 << 20)).min(data.len())))).collect();
    c.set_infile_handler(async move { Ok(Box::pin(futures::stream::iter(chunks)) as mysql_async::InfileData) });
    c.query_drop(format!("LOAD DATA LOCAL INFILE 'rows' INTO TABLE b.{table} (id,k,c,pad)")).await?;
    Ok(())
}

/// `CHECKSUM TABLE b.<table>`.
async fn checksum(c: &mut mysql_async::Conn, table: &str) -> Result<Option<u64>> {
    let r: Option<(String, u64)> = c.query_first(format!("CHECKSUM TABLE b.{table}")).await?;
    Ok(r.map(|x| x.1))
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn run_sink(port: u16, items: &[Arc<Item>], cluster_id: u64, text_only: bool, fenced: bool) -> Result<f64> {
    let cfg = MysqlSinkConfig {
        fence: fenced.then(|| drainer::ha::Fence { task: format!("bench-{cluster_id}"), token: 1 }),
        port,
        checkpoint: Some(CheckpointCfg { cluster_id, ..Default::default() }),
        // upstream's defaults (`worker-count` 16, `txn-batch` 20) unless overridden with
        // SINK_WORKERS / SINK_TXN_BATCH (a batch is txn-batch × worker-count × 32 rows)
        worker_count: env_or("SINK_WORKERS", 16),
        txn_batch: env_or("SINK_TXN_BATCH", 20),
        // updates+deletes / inserts per connection (0 = the sink's defaults): a batch runs on
        // ceil(others / conn_rows + inserts / conn_inserts) connections
        conn_rows: env_or("SINK_CONN_ROWS", 0),
        conn_inserts: env_or("SINK_CONN_INSERTS", 0),
        prepared_params: if text_only { 0 } else { env_or("SINK_PREPARED_PARAMS", MysqlSinkConfig::default().prepared_params) },
        ..Default::default()
    };
    let mut sink = MysqlSink::connect(cfg).await?;
    let t = Instant::now();
    for it in items {
        sink.write(it.clone()).await?;
    }
    sink.flush().await?;
    let secs = t.elapsed().as_secs_f64();
    sink.close().await?;
    Ok(secs)
}

async fn run_single(c: &mut mysql_async::Conn, table: &str, ops: &[Op]) -> Result<f64> {
    let t = Instant::now();
    for op in ops {
        c.query_drop(single_sql(table, op)).await?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A mixed workload over rows `base` already in the table: 50 % inserts, 30 % updates, 20 % deletes.
fn mixed_ops(rng: &mut Rng, base: &[Rec], n: usize) -> Vec<Op> {
    let mut live: Vec<Rec> = base.to_vec();
    let mut next = base.len() as i64 + 1;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        match rng.next(10) {
            0..=4 => {
                let r = rec(rng, next);
                next += 1;
                live.push(r.clone());
                ops.push(Op::Insert(r));
            }
            5..=7 => {
                let i = rng.next(live.len() as u64) as usize;
                let mut n = rec(rng, live[i].id);
                n.id = live[i].id;
                ops.push(Op::Update(live[i].clone(), n.clone()));
                live[i] = n;
            }
            _ => {
                let i = rng.next(live.len() as u64) as usize;
                ops.push(Op::Delete(live.swap_remove(i)));
            }
        }
    }
    ops
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(200_000);
    let runs: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dir = tempfile::tempdir()?;
    let db = tests::MariaDb::start(&dir.path().join("db")).context("starting MariaDB")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let mut c = mysql_async::Conn::from_url(db.url()).await?;
        c.query_drop("CREATE DATABASE b").await?;
        let mut rng = Rng(1);
        let recs: Vec<Rec> = (1..=n as i64).map(|id| rec(&mut rng, id)).collect();
        let ins_ops: Vec<Op> = recs.iter().cloned().map(Op::Insert).collect();
        let floor_n = (n / 20).clamp(1000, 10_000);
        let mixed_base = &recs[..n / 2];
        let mixed = mixed_ops(&mut rng, mixed_base, n / 2);
        let (mut load, mut ours, mut floor, mut m_ours, mut m_floor) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut load_chunked, mut ours_text) = (vec![], vec![]);
        let (mut f_ours, mut fm_ours) = (vec![], vec![]);
        for run in 0..runs {
            println!("run {}/{runs}", run + 1);
            reset(&mut c, "load").await?;
            let t = Instant::now();
            load_data(&mut c, "load", &recs).await?;
            load.push(n as f64 / t.elapsed().as_secs_f64());

            // context, not a goal: LOAD DATA in batch-sized transactions, as the sink commits
            reset(&mut c, "loadc").await?;
            let t = Instant::now();
            for chunk in recs.chunks(10_240) {
                load_data(&mut c, "loadc", chunk).await?;
            }
            load_chunked.push(n as f64 / t.elapsed().as_secs_f64());

            reset(&mut c, "sink").await?;
            let its = items(&schema("sink"), &ins_ops, 10, 1000);
            ours.push(n as f64 / run_sink(db.port, &its, 100 + run as u64, false, false).await?);

            reset(&mut c, "sinkt").await?;
            let its = items(&schema("sinkt"), &ins_ops, 10, 1000);
            ours_text.push(n as f64 / run_sink(db.port, &its, 300 + run as u64, true, false).await?);
            if run == 0 {
                anyhow::ensure!(
                    checksum(&mut c, "sink").await? == checksum(&mut c, "sinkt").await?,
                    "inserts: prepared and text statements differ"
                );
            }

            reset(&mut c, "single").await?;
            floor.push(floor_n as f64 / run_single(&mut c, "single", &ins_ops[..floor_n]).await?);

            // mixed: preload the base rows, then apply the same changes both ways
            reset(&mut c, "msink").await?;
            load_data(&mut c, "msink", mixed_base).await?;
            let its = items(&schema("msink"), &mixed, 4, 1000);
            m_ours.push(mixed.len() as f64 / run_sink(db.port, &its, 200 + run as u64, false, false).await?);
            // the same with HA fencing (a checkpoint row of its own, so the same work)
            reset(&mut c, "fsink").await?;
            let its = items(&schema("fsink"), &ins_ops, 10, 1000);
            f_ours.push(n as f64 / run_sink(db.port, &its, 400 + run as u64, false, true).await?);
            reset(&mut c, "fmsink").await?;
            load_data(&mut c, "fmsink", mixed_base).await?;
            let its = items(&schema("fmsink"), &mixed, 4, 1000);
            fm_ours.push(mixed.len() as f64 / run_sink(db.port, &its, 500 + run as u64, false, true).await?);
            reset(&mut c, "msingle").await?;
            load_data(&mut c, "msingle", mixed_base).await?;
            let fl = floor_n.min(mixed.len());
            m_floor.push(fl as f64 / run_single(&mut c, "msingle", &mixed[..fl]).await?);
            // the sink's result is the reference state: check it equals the single-statement one
            if run == 0 {
                reset(&mut c, "mcheck").await?;
                load_data(&mut c, "mcheck", mixed_base).await?;
                run_single(&mut c, "mcheck", &mixed).await?;
                anyhow::ensure!(
                    checksum(&mut c, "msink").await? == checksum(&mut c, "mcheck").await?,
                    "mixed: sink result differs from single statements"
                );
            }
        }
        println!("{n} rows of 4 columns (~190 bytes), {runs} runs, medians; txns of 10 (inserts) / 4 (mixed) changes");
        Comparison::higher_is_better(
            "mysql_sink.insert_vs_load_data",
            median(ours.clone()),
            median(load),
            "LOAD DATA LOCAL INFILE",
            "rows/s",
        )
        .print();
        Comparison::higher_is_better(
            "mysql_sink.insert_vs_load_data_per_10240_rows",
            median(ours.clone()),
            median(load_chunked),
            "LOAD DATA LOCAL INFILE",
            "rows/s",
        )
        .print();
        Comparison::higher_is_better(
            "mysql_sink.insert_prepared_vs_text",
            median(ours.clone()),
            median(ours_text),
            "the sink with text statements only",
            "rows/s",
        )
        .print();
        Comparison::higher_is_better(
            "mysql_sink.insert_vs_single_row",
            median(ours.clone()),
            median(floor),
            "single-row autocommit",
            "rows/s",
        )
        .print();
        Comparison::higher_is_better(
            "mysql_sink.insert_fenced_vs_unfenced",
            median(f_ours),
            median(ours.clone()),
            "the sink without HA fencing",
            "rows/s",
        )
        .print();
        Comparison::higher_is_better(
            "mysql_sink.mixed_fenced_vs_unfenced",
            median(fm_ours),
            median(m_ours.clone()),
            "the sink without HA fencing",
            "changes/s",
        )
        .print();
        Comparison::higher_is_better(
            "mysql_sink.mixed_vs_single_row",
            median(m_ours),
            median(m_floor),
            "single-row autocommit",
            "changes/s",
        )
        .print();
        anyhow::Ok(())
    })?;
    Ok(())
}
