//! Settling a Prewrite whose Commit never came (upstream `Append.resolve`, which asks TiKV).
//!
//! A Prewrite is never dropped on a timer: it stays pending (and holds the watermark) until a
//! [`Resolver`] learns what happened to its transaction, or an operator settles it explicitly
//! ([`crate::Store::settle`]). The store reports pending Prewrites older than `max_txn_timeout`
//! ([`crate::Store::pending`]) so the pump can warn, count and alert on them.

/// What a [`Resolver`] learned about a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// It committed at this commit_ts: the store writes a Commit record with an empty payload, which
    /// the pump serves as the Commit binlog TiDB would have sent.
    Committed(i64),
    /// It rolled back: the store writes a Rollback record.
    RolledBack,
    /// Not known (yet): the Prewrite stays pending and the resolver is asked again about once a second.
    Unknown,
}

/// Settles unmatched Prewrites. The store calls it, from its own thread, for every unmatched Prewrite
/// that has waited at least a second while the sorter is blocked, about once a second each, with the
/// Prewrite's payload as it was written (the pump decodes it; the store never does).
pub trait Resolver: Send + Sync {
    /// What happened to the transaction that started at `start_ts`, whose P-binlog is `prewrite`.
    fn resolve(&self, start_ts: i64, prewrite: &[u8]) -> Resolution;
}

/// The resolver without a source of truth: every transaction stays [`Resolution::Unknown`] until its
/// Commit or Rollback arrives or an operator settles it. Never loses a committed transaction; an orphan
/// Prewrite blocks the pump's watermark (and the drainer) until then, loudly.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaitResolver;

impl Resolver for WaitResolver {
    fn resolve(&self, _start_ts: i64, _prewrite: &[u8]) -> Resolution {
        Resolution::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_resolver_never_gives_up() {
        let old = 1i64 << 40;
        assert_eq!(WaitResolver.resolve(old, b"p"), Resolution::Unknown);
    }
}
