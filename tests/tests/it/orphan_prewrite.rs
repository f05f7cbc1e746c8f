//! A Prewrite whose Commit never comes is never dropped. The stand-in (real TiDB cannot be made to lose
//! its C-binlog on demand) commits or rolls back transactions upstream and never sends their C/Rollback
//! binlog (`--lose-commit-binlog-every`), as a TiDB that dies right after committing in TiKV; its status
//! API's `/mvcc/hex` knows each outcome, as TiKV would. Against the stand-in only.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tests::e2e::{E2e, Options, binary};

fn opts(pump_toml_extra: &str) -> Options {
    Options {
        duration: Duration::from_secs(8),
        threads: 3,
        tables: 3,
        ddl_every: 0,
        // Every 7th transaction loses its C-binlog; every 11th rolls back (77th: both).
        standin_flags: vec!["--lose-commit-binlog-every=7".into(), "--rollback-every=11".into()],
        pump_toml_extra: pump_toml_extra.into(),
        ..Options::default()
    }
}

fn lost(e: &E2e) -> Result<Vec<serde_json::Value>> {
    Ok(e.txn_log()?.into_iter().filter(|l| l["outcome"] == "commit_binlog_lost").collect())
}

#[test]
fn a_lost_commit_binlog_is_recovered_from_tidbs_status_api() -> Result<()> {
    let mut e = E2e::start(opts("[resolver]\ntidb-status-urls = [\"{status}\"]"), |_| {})?;
    e.wait_workload(|_| Ok(()))?;
    let lost = lost(&e)?;
    let committed = lost.iter().filter(|l| l["commit_ts"].as_u64() > Some(0)).count();
    assert!(committed > 0, "the fault never hit a committed transaction: {lost:?}");
    let started = Instant::now();
    let report = e.finish_and_verify(Duration::from_secs(120))?;
    assert!(report.equal && report.tables > 0, "{}", report.text);
    eprintln!(
        "{} lost C-binlogs ({committed} committed) recovered through /mvcc/hex; caught up {:?} after the workload",
        lost.len(),
        started.elapsed()
    );
    Ok(())
}

#[test]
fn without_a_source_the_drainer_holds_status_names_the_prewrite_and_an_operator_settles_it() -> Result<()> {
    let mut e = E2e::start(opts(""), |_| {})?;
    e.wait_workload(|_| Ok(()))?;
    let lost = lost(&e)?;
    assert!(!lost.is_empty(), "the fault never hit");
    // The drainer holds below the first lost commit: passing it would make that commit disorder.
    let first_commit = lost.iter().filter_map(|l| l["commit_ts"].as_i64()).filter(|&c| c > 0).min().context("a lost commit")?;
    std::thread::sleep(Duration::from_secs(3));
    let held = e.drainer_ts()?;
    assert!(held < first_commit, "the drainer passed a pending prewrite: checkpoint {held} >= its commit ts {first_commit}");
    // binlogctl status names it (once it is older than its 30 s threshold, which we do not wait for
    // here: the pump's /status lists it at once).
    let ctl = |args: &[&str]| -> Result<std::process::Output> {
        Ok(std::process::Command::new(binary("binlogctl")?).arg(format!("-pd-urls={}", e.pd_url())).args(args).output()?)
    };
    let pump_of = |l: &serde_json::Value| l["pump"].as_str().unwrap_or_default().to_owned();
    let first = &lost[0];
    let pump = e.pumps.iter().find(|p| p.node_id == pump_of(first)).context("the pump of a lost txn")?;
    let status = crate::pump_util::http("GET", &pump.addr(), "/status").context("pump /status")?.1;
    assert!(status.contains(&first["start_ts"].to_string()), "pump /status lists the pending prewrite: {status}");
    // Settle each as the txn log says it ended (what an operator reads from TiDB).
    for l in &lost {
        let (start, commit) = (l["start_ts"].to_string(), l["commit_ts"].as_u64().unwrap_or(0));
        let mut args = vec!["-cmd".to_owned(), "settle-prewrite".into(), "-node-id".into(), pump_of(l), "-start-ts".into(), start];
        if commit > 0 {
            args.extend(["-commit-ts".into(), commit.to_string()]);
        } else {
            args.push("-rollback".into());
        }
        let out = ctl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        assert!(out.status.success(), "settle-prewrite {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Settled twice is refused by name.
    let args = ["-cmd", "settle-prewrite", "-node-id", &pump_of(first), "-start-ts", &first["start_ts"].to_string(), "-rollback"];
    let out = ctl(&args)?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no pending prewrite"));
    let report = e.finish_and_verify(Duration::from_secs(120))?;
    assert!(report.equal && report.tables > 0, "{}", report.text);
    Ok(())
}

#[test]
fn a_twenty_minute_old_transaction_whose_commit_trails_by_five_seconds_is_served() {
    use crate::pump_util::{cluster_id, commit, prewrite, pull_until, start_pump, tso};
    use pump::proto::WriteBinlogReq;
    let cluster = tests::Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    let pump = start_pump(&url, &cluster.dir().join("pump"), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let cid = cluster_id(&url).await;
        let pd = tso(&url).await;
        let now = pd.get_ts().await.unwrap();
        // A pessimistic ETL transaction: started 20 minutes ago (its start_ts), prewritten now.
        let start = pump::tso::compose(pump::tso::physical_ms(now) - 20 * 60 * 1000, 7) as i64;
        let mut c = pump.client().await;
        let w = |payload: Vec<u8>| WriteBinlogReq { cluster_id: cid, payload: payload.into() };
        assert_eq!(c.write_binlog(w(prewrite(start, b"etl rows"))).await.unwrap().into_inner().errmsg, "");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let commit_ts = pd.get_ts().await.unwrap() as i64;
        assert_eq!(c.write_binlog(w(commit(start, commit_ts))).await.unwrap().into_inner().errmsg, "");
        let got = pull_until(&mut c, cid, 0, |g| g.iter().any(|b| b.commit_ts() == commit_ts)).await;
        let b = got.iter().find(|b| b.commit_ts() == commit_ts).unwrap();
        assert_eq!((b.start_ts(), b.prewrite_value()), (start, &b"etl rows"[..]));
    });
}

/// Measures the time from a Prewrite whose Commit never comes to its Commit served, through the TiDB
/// status API source (here a loopback server answering as TiDB's `/mvcc/hex` does).
#[test]
fn the_status_api_resolver_serves_a_lost_commit_within_seconds() {
    use crate::pump_util::{cluster_id, prewrite, pull_until, start_pump, tso};
    use pump::proto::WriteBinlogReq;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // start_ts -> commit_ts that "TiKV" knows.
    let known: std::sync::Arc<std::sync::Mutex<Option<(i64, i64)>>> = Default::default();
    let status_addr = rt.block_on(async {
        let known = known.clone();
        let app = axum::Router::new().route(
            "/mvcc/hex/{key}",
            axum::routing::get(move |axum::extract::Path(key): axum::extract::Path<String>| {
                let known = *known.lock().unwrap();
                async move {
                    let writes = known.map_or(serde_json::json!([]), |(s, c)| serde_json::json!([{"start_ts": s, "commit_ts": c}]));
                    serde_json::json!({"key": key, "region_id": 2, "value": {"info": {"writes": writes}}}).to_string()
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    });
    let cluster = tests::Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    let toml = cluster.dir().join("pump.toml");
    std::fs::write(
        &toml,
        format!("[storage]\nstop-write-at-available-space = \"1 MiB\"\n[resolver]\ntidb-status-urls = [\"http://{status_addr}\"]\n"),
    )
    .unwrap();
    let pump = start_pump(&url, &cluster.dir().join("pump"), &["-config", toml.to_str().unwrap()]);
    rt.block_on(async {
        let (cid, pd) = (cluster_id(&url).await, tso(&url).await);
        let start = pd.get_ts().await.unwrap() as i64;
        let commit_ts = pd.get_ts().await.unwrap() as i64;
        *known.lock().unwrap() = Some((start, commit_ts));
        let mut c = pump.client().await;
        let p = WriteBinlogReq { cluster_id: cid, payload: prewrite(start, b"rows").into() };
        let lost_at = Instant::now();
        assert_eq!(c.write_binlog(p).await.unwrap().into_inner().errmsg, "");
        let got = pull_until(&mut c, cid, 0, |g| g.iter().any(|b| b.commit_ts() == commit_ts)).await;
        let took = lost_at.elapsed();
        let b = got.iter().find(|b| b.commit_ts() == commit_ts).unwrap();
        assert_eq!((b.start_ts(), b.prewrite_value()), (start, &b"rows"[..]));
        eprintln!("lost commit served through /mvcc/hex {took:?} after its prewrite");
        assert!(took < Duration::from_secs(10), "{took:?}");
    });
}

/// The TiKV source, as upstream's pump asks it: PD's `GetRegion`/`GetStore` find the prewrite key's
/// leader, `MvccGetByKey` tells committed or rolled back; a transaction past max-txn-timeout with no
/// record is settled by `KvCheckTxnStatus`, a younger one waits. Against a **TiKV test double**
/// (`tests::tikv_double`) behind the PD stand-in's one region: no TiKV can run here.
#[test]
fn the_tikv_source_settles_orphan_prewrites_against_a_tikv_test_double() {
    use crate::pump_util::{cluster_id, commit, prewrite, pull_until, start_pump, tso};
    use pump::proto::WriteBinlogReq;
    let key = b"t\x80pk"; // the prewrite_key of pump_util's binlogs
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tikv = rt.block_on(tests::tikv_double::TikvDouble::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pd = tests::Pd::start_standin_with_tikv(&dir.path().join("pd"), &tikv.addr.to_string()).unwrap();
    let url = pd.url();
    // The default config: `[resolver] tikv = true`, no TiDB status URL.
    let pump = start_pump(&url, &dir.path().join("pump"), &[]);
    rt.block_on(async {
        let (cid, pd) = (cluster_id(&url).await, tso(&url).await);
        let mut c = pump.client().await;
        let w = |payload: Vec<u8>| WriteBinlogReq { cluster_id: cid, payload: payload.into() };
        let ts = || async { pd.get_ts().await.unwrap() as i64 };

        // 1. Committed in TiKV, its C-binlog lost: served with TiKV's commit ts and its payload.
        let (start, commit_ts) = (ts().await, ts().await);
        tikv.state.lock().unwrap().commit(key, start as u64, commit_ts as u64);
        let lost_at = Instant::now();
        assert_eq!(c.write_binlog(w(prewrite(start, b"committed rows"))).await.unwrap().into_inner().errmsg, "");
        let got = pull_until(&mut c, cid, 0, |g| g.iter().any(|b| b.commit_ts() == commit_ts)).await;
        let took = lost_at.elapsed();
        let b = got.iter().find(|b| b.commit_ts() == commit_ts).unwrap();
        assert_eq!((b.start_ts(), b.prewrite_value()), (start, &b"committed rows"[..]));
        eprintln!("lost commit served through TiKV (double) {took:?} after its prewrite");
        assert!(took < Duration::from_secs(10), "{took:?}");

        // 2. Rolled back in TiKV: never served; a later transaction passes it.
        let rolled = ts().await;
        tikv.state.lock().unwrap().rollback(key, rolled as u64);
        assert_eq!(c.write_binlog(w(prewrite(rolled, b"rolled back"))).await.unwrap().into_inner().errmsg, "");
        // 3. Started 20 minutes ago (past max-txn-timeout), no record: KvCheckTxnStatus decides it
        //    (here: committed, as TiKV answers for a primary committed meanwhile).
        let now = ts().await as u64;
        let old = pump::tso::compose(pump::tso::physical_ms(now) - 20 * 60 * 1000, 3) as i64;
        let old_commit = ts().await;
        tikv.state.lock().unwrap().txn_status.insert(old as u64, (0, old_commit as u64));
        assert_eq!(c.write_binlog(w(prewrite(old, b"old txn"))).await.unwrap().into_inner().errmsg, "");
        let got = pull_until(&mut c, cid, 0, |g| g.iter().any(|b| b.commit_ts() == old_commit)).await;
        let b = got.iter().find(|b| b.commit_ts() == old_commit).unwrap();
        assert_eq!((b.start_ts(), b.prewrite_value()), (old, &b"old txn"[..]));

        // 4. Young, no record in TiKV: pending (it holds back everything committed after its start);
        //    TiKV is not asked to decide it.
        let young = ts().await;
        assert_eq!(c.write_binlog(w(prewrite(young, b"still running"))).await.unwrap().into_inner().errmsg, "");
        // The young one commits normally later; everything after the rolled-back one is served and the
        // rolled-back one never is.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let young_commit = ts().await;
        assert_eq!(c.write_binlog(w(commit(young, young_commit))).await.unwrap().into_inner().errmsg, "");
        let got = pull_until(&mut c, cid, 0, |g| g.iter().any(|b| b.commit_ts() == young_commit)).await;
        assert!(got.iter().all(|b| b.start_ts() != rolled), "a rolled-back transaction was served");
        assert_eq!(got.iter().filter(|b| b.start_ts() == young).count(), 1);

        let st = tikv.state.lock().unwrap();
        let asked: Vec<u64> = st.status_asked.iter().map(|r| r.lock_ts).collect();
        assert!(asked.contains(&(old as u64)), "KvCheckTxnStatus not asked about the old transaction: {asked:?}");
        assert!(!asked.contains(&(young as u64)), "TiKV was asked to decide a transaction younger than max-txn-timeout");
        let r = st.status_asked.iter().find(|r| r.lock_ts == old as u64).unwrap();
        assert_eq!((r.primary_key.as_slice(), r.rollback_if_not_exist), (&key[..], true));
        assert!(r.current_ts > now, "current_ts {} is not a fresh PD ts", r.current_ts);
    });
}

/// The TiKV source is asked through PD; a PD that knows no TiKV (none joined) leaves the Prewrite
/// pending: it is never settled for lack of an answer.
#[test]
fn without_a_tikv_the_tikv_source_leaves_the_prewrite_pending() {
    use crate::pump_util::{cluster_id, commit, prewrite, pull_until, start_pump, tso};
    use pump::proto::WriteBinlogReq;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cluster = tests::Cluster::builder().pd().start().unwrap();
    let url = cluster.pd().url();
    let pump = start_pump(&url, &cluster.dir().join("pump"), &[]);
    rt.block_on(async {
        let (cid, pd) = (cluster_id(&url).await, tso(&url).await);
        let mut c = pump.client().await;
        let w = |payload: Vec<u8>| WriteBinlogReq { cluster_id: cid, payload: payload.into() };
        let start = pd.get_ts().await.unwrap() as i64;
        assert_eq!(c.write_binlog(w(prewrite(start, b"rows"))).await.unwrap().into_inner().errmsg, "");
        // Several resolver rounds (one a second after the first second).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let commit_ts = pd.get_ts().await.unwrap() as i64;
        assert_eq!(c.write_binlog(w(commit(start, commit_ts))).await.unwrap().into_inner().errmsg, "");
        let got = pull_until(&mut c, cid, 0, |g| g.iter().any(|b| b.commit_ts() == commit_ts)).await;
        assert_eq!(got.iter().filter(|b| b.start_ts() == start).count(), 1);
    });
}
