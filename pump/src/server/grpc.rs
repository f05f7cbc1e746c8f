//! The gRPC `binlog.Pump` service: WriteBinlog and PullBinlogs.
//!
//! PullBinlogs serves, in strictly increasing commit ts from `startFrom.offset` (exclusive), every
//! committed binlog the store has released (commit ts ≤ its watermark): a C-binlog joined with its
//! P-binlog's fields, or a fake binlog as stored. Errors answer with a gRPC status whose message is
//! upstream's text.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use super::store::{Committed, Kind};
use tonic::{Request, Response, Status};

use super::binlogs;
use super::core::{Core, WriteError};
use crate::proto::pump_server::Pump;
use crate::proto::{Entity, Meta, Pos, PullBinlogReq, PullBinlogResp, WriteBinlogReq, WriteBinlogResp};

/// The service (cheap to clone).
#[derive(Debug, Clone)]
pub struct PumpService {
    core: Arc<Core>,
}

impl PumpService {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

/// The entity PullBinlogs sends for one committed binlog, or `None` to skip it.
pub fn entity(core: &Core, c: Committed) -> Option<Entity> {
    let payload = match c.kind {
        Kind::Fake => c.payload.to_vec(),
        Kind::Commit => {
            let Some(p) = c.prewrite.as_ref() else {
                core.metrics.loss_binlog.inc();
                tracing::error!(start_ts = c.start_ts, commit_ts = c.commit_ts, "Matching P-binlog not found");
                return None;
            };
            match binlogs::join(&c.payload, p, c.commit_ts) {
                Ok(b) => b,
                Err(e) => {
                    core.metrics.storage_errors.with_label_values(&["read_value"]).inc();
                    tracing::error!(start_ts = c.start_ts, commit_ts = c.commit_ts, error = %e, "stored binlog does not decode");
                    return None;
                }
            }
        }
        _ => return None,
    };
    Some(Entity {
        pos: Some(Pos::default()),
        payload,
        checksum: Vec::new(),
        meta: Some(Meta { start_ts: c.start_ts, commit_ts: c.commit_ts }),
    })
}

type PullStream = Pin<Box<dyn Stream<Item = Result<PullBinlogResp, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Pump for PumpService {
    async fn write_binlog(&self, req: Request<WriteBinlogReq>) -> Result<Response<WriteBinlogResp>, Status> {
        let started = Instant::now();
        let req = req.into_inner();
        let res = self.core.write_binlog(req.cluster_id, req.payload).await;
        let took = started.elapsed().as_secs_f64();
        match &res {
            Ok(()) => self.core.metrics.write_path().rpc_succ.observe(took),
            Err(_) => self.core.metrics.rpc_duration.with_label_values(&["WriteBinlog", "fail"]).observe(took),
        }
        match res {
            Ok(()) => Ok(Response::new(WriteBinlogResp { errmsg: String::new() })),
            Err(e) => {
                tracing::debug!(error = %e, "WriteBinlog refused");
                // Upstream answers every refusal with a plain error (code Unknown); TiDB's client treats
                // ResourceExhausted specially, so no other code is used here.
                Err(Status::unknown(e.to_string()))
            }
        }
    }

    type PullBinlogsStream = PullStream;

    async fn pull_binlogs(&self, req: Request<PullBinlogReq>) -> Result<Response<PullStream>, Status> {
        let started = Instant::now();
        let req = req.into_inner();
        if req.cluster_id != self.core.cluster_id {
            self.core.metrics.rpc_duration.with_label_values(&["PullBinlogs", "fail"]).observe(started.elapsed().as_secs_f64());
            return Err(Status::unknown(
                WriteError::ClusterId { got: req.cluster_id, want: self.core.cluster_id }.to_string(),
            ));
        }
        let mut from = req.start_from.map(|p| p.offset).unwrap_or(0);
        let gc_ts = self.core.store.gc_ts();
        if from < gc_ts {
            tracing::error!(requested = from, gc_ts, "PullBinlogs asks for binlogs already garbage collected; starting at the GC ts");
            from = gc_ts;
        }
        tracing::info!(from, "PullBinlogs started");
        let core = self.core.clone();
        let stream = self.core.store.pull(from).filter_map(move |item| {
            let out = match item {
                Ok(c) => entity(&core, c).map(|e| Ok(PullBinlogResp { entity: Some(e) })),
                Err(e) => {
                    core.metrics.storage_errors.with_label_values(&["read_value"]).inc();
                    Some(Err(Status::internal(format!("reading binlogs: {e}"))))
                }
            };
            futures::future::ready(out)
        });
        self.core.metrics.rpc_duration.with_label_values(&["PullBinlogs", "succ"]).observe(started.elapsed().as_secs_f64());
        Ok(Response::new(Box::pin(stream)))
    }
}
