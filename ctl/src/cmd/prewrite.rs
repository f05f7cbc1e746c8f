//! `-cmd settle-prewrite` (ours): settles by hand a Prewrite that a pump holds without its Commit, after
//! the operator checked the transaction in TiDB (`SELECT ... AS OF TIMESTAMP`, `/mvcc/hex/<key>` on its
//! status port, or TiDB's log). `-commit-ts N` writes the Commit the pump then serves as TiDB's C-binlog;
//! `-rollback` writes a Rollback and the transaction is never replicated. Until then the pump holds its
//! watermark (and every drainer) at that Prewrite: `-cmd status` names it.

use anyhow::{Result, bail};
use pump::node::NodeKind;

use super::nodes::api_call;
use crate::ctx::{Ctx, REQUEST_TIMEOUT};

/// `-cmd settle-prewrite -node-id P -start-ts S (-commit-ts C | -rollback)`.
pub async fn settle(ctx: &Ctx) -> Result<()> {
    let Some(start_ts) = ctx.flags.start_ts else { bail!("-cmd settle-prewrite: -start-ts is required") };
    let path = match (ctx.flags.commit_ts, ctx.flags.rollback) {
        (Some(c), false) => format!("/debug/prewrites/{start_ts}/commit/{c}"),
        (None, true) => format!("/debug/prewrites/{start_ts}/rollback"),
        _ => bail!("-cmd settle-prewrite: give exactly one of -commit-ts N (it committed) and -rollback (it did not)"),
    };
    let reg = ctx.registry().await?;
    let node = ctx.lookup(&reg, NodeKind::Pump).await?;
    let url = ctx.node_url(&node.host, &path);
    let reply = api_call(ctx.http(REQUEST_TIMEOUT)?.post(&url), &url, || {
        format!("pump {} does not answer at {url}; start it first (the Prewrite is in its data dir)", node.node_id)
    })
    .await?;
    if reply.code != 200 {
        bail!("pump {} refused: {}", node.node_id, reply.message);
    }
    if ctx.flags.json {
        println!("{}", serde_json::json!({"node_id": node.node_id, "start_ts": start_ts, "message": reply.message}));
    } else {
        println!("pump {}: {}", node.node_id, reply.message);
        if ctx.flags.rollback {
            println!("the transaction that started at {start_ts} will not be replicated");
        }
    }
    Ok(())
}
