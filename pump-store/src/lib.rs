//! Pump's storage: a durable, fsync-batched, CRC-checked segment log with a commit-ts index.
//!
//! The on-disk format is documented in `FORMAT.md` beside this crate.
#![warn(missing_docs)]
