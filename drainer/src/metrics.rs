//! Drainer's Prometheus metrics, with upstream's names (`binlog_drainer_*`). Gauges named "ts" hold the
//! physical milliseconds of a TSO, as upstream.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};

/// Every drainer metric, registered in one [`Registry`].
#[derive(Debug)]
#[allow(missing_docs)]
pub struct Metrics {
    pub registry: Registry,
    pub pump_position: IntGaugeVec,
    pub ddl_jobs_total: IntCounter,
    pub error_count: IntCounterVec,
    pub disorder_binlog_count: IntCounter,
    pub event: IntCounterVec,
    pub checkpoint_tso: IntGauge,
    pub checkpoint_delay_seconds: Histogram,
    pub execute_duration_time: Histogram,
    pub query_duration_time: HistogramVec,
    pub binlog_reach_duration_time: HistogramVec,
    pub read_binlog_size: HistogramVec,
    pub queue_size: IntGaugeVec,
    /// Ours: TiDB DDL job types the schema tracker does not know, skipped.
    pub unknown_ddl_jobs: IntCounter,
    /// `binlog_binlogfile_write_binlog_size{label}`: file-sink records (label `local`).
    pub binlogfile_write_size: HistogramVec,
    /// `binlog_binlogfile_write_binlog_duration_time{label}`: `write` per record, `sync` per fsync.
    pub binlogfile_write_duration: HistogramVec,
    /// `binlog_binlogfile_corruption_binlog_count`: torn or corrupt records cut off at open.
    pub binlogfile_corruption: IntCounter,
}

/// `error_count` types, created at zero so that alerts on `increase()` fire on the first error.
pub const ERROR_TYPES: &[&str] = &["pull_binlog", "unmarshal_binlog", "sink"];

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("binlog").subsystem("drainer")
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help).namespace("binlog").subsystem("drainer").buckets(buckets)
}

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let secs = exponential_buckets(0.00005, 2.0, 18)?;
        let m = Metrics {
            pump_position: IntGaugeVec::new(opts("pump_position", "position of each pump (ts physical ms)"), &["nodeID"])?,
            ddl_jobs_total: IntCounter::with_opts(opts("ddl_jobs_total", "DDL jobs applied"))?,
            error_count: IntCounterVec::new(opts("error_count", "errors by type"), &["type"])?,
            disorder_binlog_count: IntCounter::with_opts(opts("disorder_binlog_count", "binlogs out of order, dropped"))?,
            event: IntCounterVec::new(opts("event", "events by type"), &["type"])?,
            checkpoint_tso: IntGauge::with_opts(opts("checkpoint_tso", "checkpoint ts (physical ms)"))?,
            checkpoint_delay_seconds: Histogram::with_opts(hopts(
                "checkpoint_delay_seconds",
                "how far the checkpoint is behind wall-clock time",
                exponential_buckets(0.001, 2.0, 20)?,
            ))?,
            execute_duration_time: Histogram::with_opts(hopts(
                "execute_duration_time",
                "time to hand a transaction to the sink",
                secs.clone(),
            ))?,
            query_duration_time: HistogramVec::new(
                hopts("query_duration_time", "downstream statement time", secs.clone()),
                &["type"],
            )?,
            binlog_reach_duration_time: HistogramVec::new(
                hopts("binlog_reach_duration_time", "commit to arrival at drainer", exponential_buckets(0.001, 2.0, 20)?),
                &["nodeID"],
            )?,
            read_binlog_size: HistogramVec::new(
                hopts("read_binlog_size", "size of binlogs read from pumps", exponential_buckets(16.0, 2.0, 25)?),
                &["nodeID"],
            )?,
            queue_size: IntGaugeVec::new(opts("queue_size", "queue lengths"), &["name"])?,
            unknown_ddl_jobs: IntCounter::with_opts(opts(
                "unknown_ddl_jobs_total",
                "DDL jobs of types this drainer does not know, skipped",
            ))?,
            binlogfile_write_size: HistogramVec::new(
                HistogramOpts::new("write_binlog_size", "file sink record size")
                    .namespace("binlog")
                    .subsystem("binlogfile")
                    .buckets(exponential_buckets(16.0, 2.0, 25)?),
                &["label"],
            )?,
            binlogfile_write_duration: HistogramVec::new(
                HistogramOpts::new("write_binlog_duration_time", "file sink write and fsync time")
                    .namespace("binlog")
                    .subsystem("binlogfile")
                    .buckets(secs.clone()),
                &["label"],
            )?,
            binlogfile_corruption: IntCounter::with_opts(
                Opts::new("corruption_binlog_count", "corrupt file-sink records cut off").namespace("binlog").subsystem("binlogfile"),
            )?,
            registry,
        };
        for t in ERROR_TYPES {
            m.error_count.with_label_values(&[t]);
        }
        for l in ["write", "sync"] {
            m.binlogfile_write_duration.with_label_values(&[l]);
        }
        let r = &m.registry;
        r.register(Box::new(m.pump_position.clone()))?;
        r.register(Box::new(m.ddl_jobs_total.clone()))?;
        r.register(Box::new(m.error_count.clone()))?;
        r.register(Box::new(m.disorder_binlog_count.clone()))?;
        r.register(Box::new(m.event.clone()))?;
        r.register(Box::new(m.checkpoint_tso.clone()))?;
        r.register(Box::new(m.checkpoint_delay_seconds.clone()))?;
        r.register(Box::new(m.execute_duration_time.clone()))?;
        r.register(Box::new(m.query_duration_time.clone()))?;
        r.register(Box::new(m.binlog_reach_duration_time.clone()))?;
        r.register(Box::new(m.read_binlog_size.clone()))?;
        r.register(Box::new(m.queue_size.clone()))?;
        r.register(Box::new(m.unknown_ddl_jobs.clone()))?;
        r.register(Box::new(m.binlogfile_write_size.clone()))?;
        r.register(Box::new(m.binlogfile_write_duration.clone()))?;
        r.register(Box::new(m.binlogfile_corruption.clone()))?;
        Ok(m)
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics::new().expect("metric definitions are valid"))
}

/// The physical milliseconds of a TSO, for "ts" gauges.
pub fn ts_ms(ts: i64) -> i64 {
    (ts.max(0) as u64 >> pump::tso::LOGICAL_BITS) as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_match_upstream() {
        let m = super::metrics();
        m.disorder_binlog_count.inc();
        m.event.with_label_values(&["DDL"]).inc();
        m.pump_position.with_label_values(&["p1"]).set(1);
        let text = m.render();
        for name in ["binlog_drainer_disorder_binlog_count", "binlog_drainer_event", "binlog_drainer_pump_position"] {
            assert!(text.contains(name), "{name} missing in {text}");
        }
    }
}
