//! Sinks: where merged, translated [`Item`]s go (MySQL/TiDB, Kafka, files; `print` and `memory` for Reparo).
//!
//! The syncer drives one sink: it hands items over in strictly increasing commit-ts order with
//! [`Sink::write`] and saves the drainer checkpoint from [`Sink::durable_ts`]. A sink may buffer and
//! apply items asynchronously; awaiting `write` is the backpressure that keeps memory bounded.
//!
//! # Invariants every sink keeps
//! - `durable_ts` never decreases and never passes an item that is not yet durable downstream, nor any
//!   earlier item (an ack window, as upstream's Successes channel released in order).
//! - An item with [`Body::Empty`](crate::txn::Body::Empty) is durable as soon as every earlier item is.
//! - Errors name the sink and the item's commit ts where there is one.

use std::future::Future;
use std::sync::Arc;

pub mod mysql;

use crate::txn::Item;

pub mod file;
pub mod kafka;
pub mod print;

/// A failure inside a sink.
#[derive(Debug, thiserror::Error)]
#[error("{sink} sink: {source}")]
pub struct SinkError {
    /// Which sink: `mysql`, `kafka`, `file`.
    pub sink: &'static str,
    /// What went wrong.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl SinkError {
    /// Wraps a sink's own error.
    pub fn new(sink: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        SinkError { sink, source: source.into() }
    }
}

/// A destination for merged, translated binlogs.
pub trait Sink: Send {
    /// The commit ts the sink itself records as applied, for sinks that keep their own checkpoint
    /// downstream (the MySQL checkpoint table written with the data, a Kafka topic). `None` when the
    /// sink keeps none and the drainer's file checkpoint is the truth.
    fn load_checkpoint(&mut self) -> impl Future<Output = Result<Option<i64>, SinkError>> + Send;

    /// Accepts the next item. Items arrive in strictly increasing commit ts. May return before the item
    /// is durable; may wait (backpressure) while the sink's buffers are full.
    fn write(&mut self, item: Arc<Item>) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The highest commit ts such that it and every earlier written item are durable downstream
    /// (0 before anything is).
    fn durable_ts(&self) -> i64;

    /// Waits until every written item is durable and returns [`Sink::durable_ts`].
    fn flush(&mut self) -> impl Future<Output = Result<i64, SinkError>> + Send;

    /// The input is momentarily drained (called after a batch when nothing else is queued): a sink
    /// that buffers output may hand it to the OS or the network now instead of waiting for more, which
    /// keeps the lag low at light load. Not a durability point. Default: nothing.
    fn idle(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}
