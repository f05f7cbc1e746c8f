//! DDL: the rotation of DDL steps the workers run between transactions, and one DDL run alone
//! (planned by the catalog, executed upstream, sent as a DDL binlog, recorded in the history).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use mysql_async::prelude::Queryable;
use pump::proto::{Binlog, BinlogType};
use drainer::tidb::model::{Job, action, schema_state};

use super::catalog::DdlOp;
use super::tables::Kind;
use super::commit::{spawn_commit, ts_despite_outage};
use super::{Ctx, META_DB, refresh_tables};

/// The DDL of step `step` of the rotation, then runs it.
pub(super) async fn run_ddl_step(ctx: &Arc<Ctx>, step: u64) {
    let db = ctx.cfg.database.clone();
    let tables = match ctx.tables.read() {
        Ok(t) => t.clone(),
        Err(_) => return,
    };
    if tables.is_empty() {
        return;
    }
    let t = &tables[(step as usize / 9) % tables.len()];
    let table = t.info.name.o.clone();
    let added = format!("c_add_{}", step / 9);
    let ops: Vec<DdlOp> = match step % 9 {
        0 => vec![DdlOp::AddColumn { db: db.clone(), table, column: added }],
        1 => {
            let col = t.info.cols.iter().find(|c| c.name.l.starts_with("c_add_")).map(|c| c.name.o.clone());
            match col {
                Some(column) => vec![DdlOp::AddIndex { db: db.clone(), table, index: format!("idx_{column}"), column }],
                None => vec![],
            }
        }
        2 => t
            .info
            .indexes()
            .iter()
            .find(|i| i.idx_name.l.starts_with("idx_c_add_"))
            .map(|i| vec![DdlOp::DropIndex { db: db.clone(), table: table.clone(), index: i.idx_name.o.clone() }])
            .unwrap_or_default(),
        3 => t
            .info
            .cols
            .iter()
            .find(|c| c.name.l.starts_with("c_add_"))
            .map(|c| vec![DdlOp::DropColumn { db: db.clone(), table: table.clone(), column: c.name.o.clone() }])
            .unwrap_or_default(),
        4 => vec![DdlOp::TruncateTable { db: db.clone(), table }],
        5 => {
            let base = table.split("_r").next().unwrap_or(&table).to_owned();
            vec![DdlOp::RenameTable { db: db.clone(), from: table, to: format!("{base}_r{step}") }]
        }
        6 => vec![
            DdlOp::CreateTable { db: db.clone(), table: format!("scratch_{step}"), kind: Kind::Types },
            DdlOp::DropTable { db: db.clone(), table: format!("scratch_{step}") },
        ],
        7 => vec![
            DdlOp::CreateSchema { db: format!("{db}_x{step}") },
            DdlOp::CreateTable { db: format!("{db}_x{step}"), table: "t".into(), kind: Kind::NoPk },
        ],
        _ => vec![DdlOp::DropSchema { db: format!("{db}_x{}", step - 1) }],
    };
    for op in ops {
        if let Err(e) = ddl(ctx, op.clone()).await {
            tracing::warn!(error = %e, ?op, "ddl failed");
            ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The P-binlog of a DDL transaction: no rows, the job id, its query and schema state.
fn ddl_binlog(job: &Job, start_ts: u64, state: u8) -> Binlog {
    Binlog {
        tp: Some(BinlogType::Prewrite as i32),
        start_ts: Some(start_ts as i64),
        commit_ts: Some(0),
        // TiDB's DDL transaction writes the meta key of the job history.
        prewrite_key: Some(format!("mDDLJobHistory{}", job.id).into_bytes()),
        prewrite_value: None,
        ddl_query: Some(job.query.clone().into_bytes()),
        ddl_job_id: Some(job.id),
        ddl_schema_state: Some(i32::from(state)),
    }
}

/// Runs one DDL alone: plans the job, executes it upstream, writes the DDL binlog, records the job.
pub(super) async fn ddl(ctx: &Arc<Ctx>, op: DdlOp) -> Result<Job> {
    let _excl = ctx.ddl_lock.write().await;
    let start_ts = ctx.tso.get_ts().await?;
    let mut job = ctx.catalog.write().map_err(|_| anyhow!("catalog poisoned"))?.plan(&op, start_ts)?;
    if job.job_type == action::DROP_COLUMN {
        // TiDB also writes a binlog when the dropped column reaches DeleteOnly (drainer then knows
        // that rows may lack the column until the job is done).
        let ts = ctx.tso.get_ts().await?;
        let pre = ddl_binlog(&job, ts, schema_state::DELETE_ONLY);
        let out = ctx.client.write_binlog(&pre).await.with_context(|| format!("DeleteOnly binlog of job {}", job.id))?;
        ctx.counters.wrote(&out);
        ctx.counters.ddl_binlogs.fetch_add(1, Ordering::Relaxed);
        match ctx.tso.get_ts().await {
            Ok(cts) => spawn_commit(ctx, pre, cts, out, false).await,
            Err(e) => {
                // Nothing ran upstream yet: roll the written Prewrite back (a Prewrite left
                // unanswered holds its pump's watermark for max-txn-timeout).
                spawn_commit(ctx, pre, 0, out, false).await;
                return Err(anyhow!(e).context(format!("commit ts of job {}'s DeleteOnly binlog", job.id)));
            }
        }
    }
    let mut conn = ctx.pool.get_conn().await?;
    conn.query_drop(job.query.as_str()).await.with_context(|| format!("upstream DDL {:?}", job.query))?;
    let p = ddl_binlog(&job, start_ts, job.schema_state);
    let out = ctx.client.write_binlog(&p).await.with_context(|| format!("DDL binlog of job {}", job.id));
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            // The upstream changed: keep the catalog in step even though the binlog is lost.
            ctx.catalog.write().map_err(|_| anyhow!("catalog poisoned"))?.apply(&job);
            return Err(e);
        }
    };
    ctx.counters.wrote(&out);
    ctx.counters.ddl_binlogs.fetch_add(1, Ordering::Relaxed);
    // The DDL is done upstream, so its binlog must commit: wait out a TSO outage (etcd restarting)
    // as TiDB's DDL owner does, rather than leave the Prewrite unanswered.
    let commit_ts = match ts_despite_outage(ctx).await {
        Ok(ts) => ts,
        Err(e) => {
            // Still no ts: roll the binlog back so the pump is not held; the binlog is lost.
            ctx.catalog.write().map_err(|_| anyhow!("catalog poisoned"))?.apply(&job);
            spawn_commit(ctx, p, 0, out, false).await;
            return Err(e.context(format!("commit ts of DDL job {}", job.id)));
        }
    };
    if let Some(info) = job.binlog.as_mut() {
        info.finished_ts = commit_ts;
    }
    // The job is in the history (and stored) before the C-binlog can reach a drainer.
    let json = serde_json::to_string(&job)?;
    conn.exec_drop(
        format!("INSERT INTO `{META_DB}`.ddl_history (job_id, schema_version, job) VALUES (?, ?, ?)"),
        (job.id, job.schema_version(), json),
    )
    .await?;
    ctx.catalog.write().map_err(|_| anyhow!("catalog poisoned"))?.apply(&job);
    ctx.counters.ddl.fetch_add(1, Ordering::Relaxed);
    refresh_tables(ctx).await?;
    spawn_commit(ctx, p, commit_ts, out, false).await;
    Ok(job)
}
