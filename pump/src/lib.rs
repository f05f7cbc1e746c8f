//! Pump: the binlog protos, the node registry, the TSO, the pump client TiDB embeds, and (feature
//! `server`) the Pump server itself.
//!
//! # Layout
//! - [`proto`]: generated messages and services of package `binlog` (ours, from the spec's field numbers).
//! - [`goflags`]: Go-style `-flag` command lines for clap, shared by every binary.
//! - [`etcd`]: connecting to PD's etcd (or a plain etcd), TLS from ssl-ca/ssl-cert/ssl-key.
//! - [`node`]: node JSON, states, keys, the etcd [`node::Registry`], node ids.
//! - [`pd`]: the PD client: cluster id, leader, batched TSO over `pdpb.PD`.
//! - [`tso`]: the timestamp layout (physical ms << 18 | logical).
//! - [`encrypt`]: `encrypted_password` (AES-CFB, upstream `pkg/encrypt` compatible).
//! - `daemon` (feature `daemon`): plumbing of every daemon (config files, logging, `Security` and TLS,
//!   the shared listener, Pushgateway push), without pump-store.
//! - `server` (feature `server`): the Pump server behind the `pump` binary.
//! - [`client`]: the pump client TiDB embeds (discovery, range/hash, P and C to one pump, fail-over, probes).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod encrypt;
pub mod etcd;
pub mod goflags;
pub mod node;
pub mod pd;
pub mod proto;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "server")]
pub mod server;
pub mod tso;
