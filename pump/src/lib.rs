//! Pump: the binlog protos, the node registry, the TSO, the pump client TiDB embeds, and (feature
//! `server`) the Pump server itself.
//!
//! # Layout
//! - [`proto`]: generated messages and services of package `binlog` (ours, from the spec's field numbers).
//! - [`goflags`]: Go-style `-flag` command lines for clap, shared by every binary.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod goflags;
pub mod proto;
