//! The two-binlog commit as TiDB does it: P-binlog, commit ts from the TSO while the row locks are
//! held, COMMIT upstream, then the C-binlog (or a Rollback) to the same pump in the background.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use pump::client::WriteOutcome;
use pump::proto::{Binlog, BinlogType};

use super::dml::TxnError;
use super::{Ctx, TxnLogLine};

/// Writes the P-binlog, takes the commit ts (locks still held), commits upstream and hands the
/// C-binlog to the background. Returns the commit ts.
pub(super) async fn commit_with_binlog(ctx: &Arc<Ctx>, conn: &mut Conn, p: Binlog) -> Result<u64, TxnError> {
    let start_ts = p.start_ts() as u64;
    let key = p.prewrite_key().to_vec();
    let out = match ctx.client.write_binlog(&p).await {
        Ok(o) => o,
        Err(e) => {
            let _ = conn.query_drop("ROLLBACK").await;
            return Err(TxnError::Fatal(anyhow!(e).context(format!("prewrite binlog of start_ts {start_ts}"))));
        }
    };
    ctx.counters.wrote(&out);
    let n = ctx.finished.fetch_add(1, Ordering::Relaxed) + 1;
    let every = |k: u64| k > 0 && n % k == 0;
    let lose = every(ctx.cfg.lose_commit_binlog_every);
    let commit_ts = match ctx.tso.get_ts().await {
        Ok(ts) => ts,
        Err(e) => {
            let _ = conn.query_drop("ROLLBACK").await;
            ctx.mvcc.record(&key, start_ts, None);
            spawn_commit(ctx, p, 0, out, false).await;
            return Err(TxnError::Fatal(anyhow!(e).context("commit ts")));
        }
    };
    if every(ctx.cfg.rollback_every) {
        conn.query_drop("ROLLBACK").await.map_err(|e| TxnError::Fatal(e.into()))?;
        ctx.mvcc.record(&key, start_ts, None);
        spawn_commit(ctx, p, 0, out, lose).await;
        return Err(TxnError::Aborted(anyhow!("start_ts {start_ts} rolled back on purpose (--rollback-every)")));
    }
    if let Err(e) = conn.query_drop("COMMIT").await {
        ctx.mvcc.record(&key, start_ts, None);
        spawn_commit(ctx, p, 0, out, false).await;
        return Err(TxnError::Fatal(anyhow!(e).context(format!("upstream commit of start_ts {start_ts}"))));
    }
    ctx.mvcc.record(&key, start_ts, Some(commit_ts));
    spawn_commit(ctx, p, commit_ts, out, lose).await;
    Ok(commit_ts)
}

/// Writes the C (or, with `commit_ts == 0`, Rollback) binlog in the background, as TiDB does.
/// With `lose`, the binlog is not written (the `--lose-commit-binlog-every` fault) and the txn log says
/// `commit_binlog_lost`.
pub(super) async fn spawn_commit(ctx: &Arc<Ctx>, mut b: Binlog, commit_ts: u64, p_out: WriteOutcome, lose: bool) {
    let WriteOutcome::Written { node_id: p_pump } = p_out else { return };
    if lose {
        if let Some(log) = &ctx.log {
            let _ = log.send(TxnLogLine {
                start_ts: b.start_ts() as u64,
                commit_ts,
                pump: p_pump,
                outcome: "commit_binlog_lost",
                ddl_job_id: b.ddl_job_id(),
            });
        }
        return;
    }
    b.prewrite_value = None;
    if commit_ts == 0 {
        b.set_tp(BinlogType::Rollback);
    } else {
        b.set_tp(BinlogType::Commit);
        b.commit_ts = Some(commit_ts as i64);
    }
    let ctx2 = ctx.clone();
    ctx.pending_commits.lock().await.spawn(async move {
        let r = ctx2.client.write_binlog(&b).await;
        let outcome = match &r {
            Ok(out) => {
                ctx2.counters.wrote(out);
                if commit_ts == 0 { "rolled_back" } else { "committed" }
            }
            Err(e) => {
                tracing::warn!(error = %e, start_ts = b.start_ts(), "commit binlog not written");
                ctx2.counters.c_failures.fetch_add(1, Ordering::Relaxed);
                ctx2.counters.errors.fetch_add(1, Ordering::Relaxed);
                "commit_binlog_failed"
            }
        };
        let pump = match r {
            Ok(WriteOutcome::Written { node_id }) => node_id,
            _ => p_pump,
        };
        if let Some(log) = &ctx2.log {
            let _ = log.send(TxnLogLine {
                start_ts: b.start_ts() as u64,
                commit_ts,
                pump,
                outcome,
                ddl_job_id: b.ddl_job_id(),
            });
        }
    });
}

/// A ts from the TSO, retrying for up to a minute while it fails.
pub(super) async fn ts_despite_outage(ctx: &Arc<Ctx>) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match ctx.tso.get_ts().await {
            Ok(ts) => return Ok(ts),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "TSO unavailable; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
