//! The timestamp layout: a ts is `physical_ms << 18 | logical` ([`compose`], [`physical_ms`],
//! [`to_rough_time`]), as PD hands them out. Timestamps and the cluster id come from PD ([`crate::pd`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bits of the logical part of a ts.
pub const LOGICAL_BITS: u32 = 18;

/// Makes a ts from a physical time in ms and a logical counter (`oracle.ComposeTS`).
pub fn compose(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | (logical & ((1 << LOGICAL_BITS) - 1))
}

/// The physical part of a ts, in ms since the Unix epoch.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// The logical part of a ts.
pub fn logical(ts: u64) -> u64 {
    ts & ((1 << LOGICAL_BITS) - 1)
}

/// The wall-clock time a ts stands for (ms precision).
pub fn to_rough_time(ts: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(physical_ms(ts))
}

/// `ts` moved forward by `elapsed` of wall time, logical part kept: the approximate ts a node reports
/// between real allocations (upstream's heartbeat `updateTS`: last TSO plus elapsed ms << 18).
pub fn advance(ts: u64, elapsed: Duration) -> u64 {
    compose(physical_ms(ts) + elapsed.as_millis() as u64, logical(ts))
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_and_split() {
        let ts = compose(1_700_000_000_123, 5);
        assert_eq!(physical_ms(ts), 1_700_000_000_123);
        assert_eq!(logical(ts), 5);
        assert_eq!(ts, (1_700_000_000_123 << 18) | 5);
        assert_eq!(to_rough_time(ts), UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert_eq!(advance(ts, Duration::from_secs(2)), compose(1_700_000_002_123, 5));
        // Upstream's example ts from the registry JSON: 412518831548007863 is in Oct 2019.
        let secs = physical_ms(412518831548007863) / 1000;
        assert_eq!(secs, 1_573_634_458);
    }
}
