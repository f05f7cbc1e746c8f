//! Settling a Prewrite whose Commit never came (upstream `Append.resolve`, which asks TiKV).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a [`Resolver`] learned about a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// It committed at this commit_ts: the store writes a Commit record with an empty payload.
    Committed(i64),
    /// It rolled back: the store writes a Rollback record.
    RolledBack,
    /// Not known: the sorter keeps waiting and asks again about once a second.
    Unknown,
    /// Given up without knowing: treated as rolled back (a Rollback record is written), logged and
    /// counted in [`crate::StoreStats::loss_count`].
    Lost,
}

/// Settles unmatched Prewrites. The store calls it, from its own thread, for every unmatched Prewrite
/// that has waited at least a second while the sorter is blocked, about once a second each.
pub trait Resolver: Send + Sync {
    /// What happened to the transaction that started at `start_ts`.
    fn resolve(&self, start_ts: i64) -> Resolution;
}

/// The default policy without TiKV: [`Resolution::Unknown`] until the transaction is older than the
/// timeout (its start_ts's physical milliseconds against the wall clock), then [`Resolution::Lost`].
///
/// The risk: a transaction that commits after the timeout has its binlog dropped (counted as lost).
#[derive(Debug, Clone)]
pub struct TimeoutResolver {
    /// The max-txn-timeout.
    pub timeout: Duration,
}

impl Resolver for TimeoutResolver {
    fn resolve(&self, start_ts: i64) -> Resolution {
        let physical_ms = start_ts >> 18;
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        if now_ms.saturating_sub(physical_ms) > self.timeout.as_millis() as i64 {
            Resolution::Lost
        } else {
            Resolution::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_resolver_uses_the_physical_time_of_start_ts() {
        let r = TimeoutResolver { timeout: Duration::from_secs(600) };
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert_eq!(r.resolve(now_ms << 18), Resolution::Unknown);
        assert_eq!(r.resolve((now_ms - 601_000) << 18), Resolution::Lost);
    }
}
