//! Drainer: pulls binlogs from every pump, merges them in commit-ts order, translates them and
//! replicates them to a sink; Reparo restores the file sink's output.
//!
//! # Layout
//! - [`proto`]: the sink messages (`slave.binlog` for Kafka, `pb_binlog` for files).
//! - [`txn`]: the decoded transaction model every sink consumes.
//! - [`sink`]: the [`sink::Sink`] trait the syncer drives.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod proto;
pub mod sink;
pub mod txn;
