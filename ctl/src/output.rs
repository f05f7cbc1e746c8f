//! How binlogctl prints: node lines in upstream's shape
//! (`pump: {NodeID: .., Addr: .., State: .., MaxCommitTS: .., UpdateTime: ..}`), times of a ts in a time
//! zone, and small helpers for ages.

use anyhow::{Result, bail};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use pump::node::{NodeKind, NodeStatus};

/// Where printed times are shown.
#[derive(Debug, Clone, Copy)]
pub enum Zone {
    /// The machine's zone, by IANA name when it can be found.
    Local(Option<Tz>),
    /// A named zone from `-time-zone`.
    Named(Tz),
}

impl Zone {
    /// `None` or `"Local"` = the machine's zone; otherwise an IANA name.
    pub fn parse(name: Option<&str>) -> Result<Self> {
        match name.map(str::trim) {
            None | Some("") | Some("Local") | Some("local") => {
                Ok(Zone::Local(iana_time_zone::get_timezone().ok().and_then(|n| n.parse::<Tz>().ok())))
            }
            Some(n) => match n.parse::<Tz>() {
                Ok(tz) => Ok(Zone::Named(tz)),
                Err(_) => bail!("-time-zone {n:?} is not a time zone (use Local or a name like Asia/Shanghai)"),
            },
        }
    }

    /// Formats a Unix time in ms like Go's `time.Time` (`2018-12-25 14:23:37 +0800 CST`).
    pub fn format_ms(&self, ms: i64) -> String {
        let Some(utc) = Utc.timestamp_millis_opt(ms).single() else {
            return format!("<bad time {ms} ms>");
        };
        const FMT: &str = "%Y-%m-%d %H:%M:%S %z %Z";
        match self {
            Zone::Named(tz) | Zone::Local(Some(tz)) => utc.with_timezone(tz).format(FMT).to_string(),
            Zone::Local(None) => utc.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S %z").to_string(),
        }
    }

    /// Formats the time a ts stands for.
    pub fn format_ts(&self, ts: i64) -> String {
        self.format_ms(ts_ms(ts))
    }
}

/// The physical ms of a ts stored as i64 (negative ts count as 0).
pub fn ts_ms(ts: i64) -> i64 {
    pump::tso::physical_ms(u64::try_from(ts).unwrap_or(0)) as i64
}

/// Now, in Unix ms.
pub fn now_ms() -> i64 {
    pump::tso::now_ms() as i64
}

/// Whole seconds from the time of `ts` to now (0 for a ts of 0 means "never").
pub fn age_secs(ts: i64, now_ms: i64) -> Option<i64> {
    (ts > 0).then(|| (now_ms - ts_ms(ts)).max(0) / 1000)
}

/// One node in upstream's log shape; a drainer of an HA task (ours) adds its task and role.
pub fn node_line(kind: NodeKind, n: &NodeStatus, zone: &Zone) -> String {
    let ha = match (&n.task, &n.role) {
        (Some(t), Some(r)) => format!(", Task: {t}, Role: {r}"),
        (Some(t), None) => format!(", Task: {t}"),
        _ => String::new(),
    };
    format!(
        "{kind}: {{NodeID: {}, Addr: {}, State: {}, MaxCommitTS: {}, UpdateTime: {}{ha}}}",
        n.node_id,
        n.host,
        n.state,
        n.max_commit_ts,
        zone.format_ts(n.update_ts)
    )
}

/// A UTC time for machine-readable output (RFC 3339).
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump::node::NodeState;

    #[test]
    fn go_style_times_in_named_zones() {
        let z = Zone::parse(Some("Asia/Shanghai")).unwrap();
        // 2018-12-25 06:23:37 UTC.
        assert_eq!(z.format_ms(1_545_719_017_000), "2018-12-25 14:23:37 +0800 CST");
        assert_eq!(Zone::parse(Some("UTC")).unwrap().format_ms(0), "1970-01-01 00:00:00 +0000 UTC");
        assert!(Zone::parse(Some("Mars/Base")).unwrap_err().to_string().contains("Mars/Base"));
    }

    #[test]
    fn node_line_has_upstream_fields() {
        let mut n = NodeStatus::new("p1", "127.0.0.1:8250", NodeState::Online);
        n.max_commit_ts = 7;
        n.update_ts = (1_545_719_017_000i64) << 18;
        let z = Zone::parse(Some("UTC")).unwrap();
        assert_eq!(
            node_line(NodeKind::Pump, &n, &z),
            "pump: {NodeID: p1, Addr: 127.0.0.1:8250, State: online, MaxCommitTS: 7, UpdateTime: 2018-12-25 06:23:37 +0000 UTC}"
        );
        n.task = Some("t1".into());
        n.role = Some("standby".into());
        assert_eq!(
            node_line(NodeKind::Drainer, &n, &z),
            "drainer: {NodeID: p1, Addr: 127.0.0.1:8250, State: online, MaxCommitTS: 7, UpdateTime: 2018-12-25 06:23:37 +0000 UTC, Task: t1, Role: standby}"
        );
    }

    #[test]
    fn ages() {
        let ts = (10_000i64) << 18;
        assert_eq!(age_secs(ts, 15_500), Some(5));
        assert_eq!(age_secs(0, 15_500), None);
        assert_eq!(age_secs(ts, 9_000), Some(0), "clock skew never gives a negative age");
    }
}
