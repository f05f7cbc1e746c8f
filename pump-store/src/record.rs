//! What is appended ([`Record`], [`Kind`]) and what a pull serves ([`Committed`]).

use bytes::Bytes;

use crate::format::{RecordKind, RecordRef};

/// The kind of a stored binlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A P-binlog (its payload carries the prewrite value).
    Prewrite,
    /// A C-binlog.
    Commit,
    /// A rollback of a prewritten transaction; it settles the Prewrite and is never pulled.
    Rollback,
    /// A fake binlog (start_ts == commit_ts): advances the watermark, is pulled, and is accepted even
    /// below the disk-space threshold.
    Fake,
}

/// One binlog to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Kind.
    pub kind: Kind,
    /// Transaction start ts.
    pub start_ts: i64,
    /// Commit ts (0 for Prewrite and for TiDB's Rollback).
    pub commit_ts: i64,
    /// The encoded `binlog.Binlog`; opaque to the store.
    pub payload: Bytes,
}

/// A committed transaction (or a fake binlog) as served by [`Store::pull`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Transaction start ts.
    pub start_ts: i64,
    /// Commit ts.
    pub commit_ts: i64,
    /// [`Kind::Commit`] or [`Kind::Fake`].
    pub kind: Kind,
    /// The Commit (or Fake) record's payload. Empty for a Commit synthesized from a
    /// [`Resolution::Committed`].
    pub payload: Bytes,
    /// The matching Prewrite record's payload; `None` for a Fake, or when the Prewrite is gone (never
    /// written, or garbage-collected).
    pub prewrite: Option<Bytes>,
}

pub(crate) fn to_record(r: &RecordRef<'_>) -> Record {
    let kind = match r.kind {
        RecordKind::Prewrite => Kind::Prewrite,
        RecordKind::Commit => Kind::Commit,
        RecordKind::Rollback | RecordKind::Footer | RecordKind::Pad => Kind::Rollback,
        RecordKind::Fake => Kind::Fake,
    };
    Record { kind, start_ts: r.start_ts, commit_ts: r.commit_ts, payload: Bytes::copy_from_slice(r.payload) }
}

pub(crate) fn record_kind(k: Kind) -> RecordKind {
    match k {
        Kind::Prewrite => RecordKind::Prewrite,
        Kind::Commit => RecordKind::Commit,
        Kind::Rollback => RecordKind::Rollback,
        Kind::Fake => RecordKind::Fake,
    }
}
