//! Drainer: pulls binlogs from every pump, merges them in commit-ts order, translates them and
//! replicates them to a sink; Reparo restores the file sink's output.
//!
//! # Layout
//! - [`proto`]: the sink messages (`slave.binlog` for Kafka, `pb_binlog` for files).
//! - [`txn`]: the decoded transaction model every sink consumes.
//! - [`sink`]: the [`sink::Sink`] trait the syncer drives.
//! - [`config`], [`flags`]: drainer.toml and the command line.
//! - [`checkpoint`]: the `savepoint` file and the start ts.
//! - [`filter`]: do/ignore schema and table filters.
//! - [`ha`]: drainer high availability: the election of one active drainer per task, fencing tokens.
//! - [`loopback`]: `loopback-control`: the mark table and the skipping of our own marked transactions.
//! - [`rules`]: binlog-filter rules (ignore-event, ignore-sql) and table routing (table-migrate-rule).
//! - [`merge`]: the k-way merge of per-pump streams into one commit-ts order.
//! - [`pumps`]: pump discovery (the collector) and one reader per pump.
//! - [`metrics`]: Prometheus metrics with upstream's names.
//! - [`consumer`]: reads the Kafka sink's topic back as whole transactions.
//! - [`relay`]: `[syncer.relay]`: the relay log written before the MySQL/TiDB sink, replayed without PD.
//! - [`reparo`]: Reparo, which replays file-sink output into MySQL or prints it.
//! - [`schema`], [`translate`]: table schemas from DDL history; binlog → [`txn::Item`].
//! - [`tidb`]: what TiDB puts in a binlog: datum codec, old row format, DECIMAL/time/JSON, schema JSON
//!   models, and the one decoder of a `TableMutation` into rows.
//! - [`syncer`]: translate and sink tasks, checkpoint saving.
//! - [`server`]: the drainer process: registry, heartbeat, HTTP and Cistern, shutdown.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod consumer;
pub mod config;
pub mod filter;
pub mod ha;
pub mod loopback;
pub mod flags;
pub mod merge;
pub mod metrics;
pub mod pumps;
pub mod schema;
pub mod server;
pub mod setup;
pub mod syncer;
pub mod tidb;
pub mod translate;
pub mod proto;
pub mod relay;
pub mod reparo;
pub mod rules;
pub mod sink;
pub mod txn;
