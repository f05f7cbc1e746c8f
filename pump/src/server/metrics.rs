//! Prometheus metrics with upstream's names (namespace `binlog`, subsystems `pump` and `pump_storage`).
//! Gauges that hold a ts hold its physical milliseconds, as upstream does.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, exponential_buckets,
};

/// Every metric pump exports, registered in its own [`Registry`].
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `binlog_pump_rpc_duration_seconds{method,label}`.
    pub rpc_duration: HistogramVec,
    /// `binlog_pump_loss_binlog_count`: C-binlogs whose P-binlog was not found.
    pub loss_binlog: IntCounter,
    /// `binlog_pump_storage_gc_ts` (physical ms).
    pub gc_ts: IntGauge,
    /// `binlog_pump_storage_done_gc_ts` (physical ms).
    pub done_gc_ts: IntGauge,
    /// `binlog_pump_storage_deleted_kv_total`.
    pub deleted_kv: IntCounter,
    /// `binlog_pump_storage_storage_size_bytes{type=capacity|available}`.
    pub storage_size: IntGaugeVec,
    /// `binlog_pump_storage_max_commit_ts` (physical ms).
    pub max_commit_ts: IntGauge,
    /// `binlog_pump_storage_query_tikv_count`: questions to the resolver's source (`[resolver]`: TiDB's
    /// status API here, TiKV upstream).
    pub query_tikv: IntCounter,
    /// `binlog_pump_drainer_behind_gc_count` (ours): non-offline drainers whose checkpoint is below the
    /// GC ts by time (they miss binlogs unless `gc-waits-for-drainers`).
    pub drainers_behind_gc: IntGauge,
    /// `binlog_pump_storage_pending_prewrite_count` (ours): Prewrites waiting for their Commit.
    pub pending_prewrites: IntGauge,
    /// `binlog_pump_storage_oldest_pending_prewrite_seconds` (ours): age of the oldest pending Prewrite,
    /// from its start_ts; above 600 (max-txn-timeout) it blocks replication and needs an operator.
    pub oldest_pending_prewrite: IntGauge,
    /// `binlog_pump_storage_error_count{type}`.
    pub storage_errors: IntCounterVec,
    /// `binlog_pump_storage_write_binlog_size{type}`.
    pub write_size: HistogramVec,
    /// `binlog_pump_storage_write_binlog_duration_time{type}`.
    pub write_duration: HistogramVec,
    /// `binlog_pump_storage_slow_chaser_count{type}` (no slow chaser here; stays 0).
    pub slow_chaser: IntCounterVec,
    /// `binlog_drainer_slow_chaser_catchup_time_seconds` (registered by pump upstream; stays empty).
    pub slow_chaser_catchup: Histogram,
    /// The write path's series, resolved on first use so that each call skips the label lookup (and a
    /// series appears only once observed, as upstream's).
    write_path: std::sync::OnceLock<WritePath>,
}

/// `rpc_duration{method="WriteBinlog",label="succ"}` and the `type="single"` write histograms.
#[derive(Debug, Clone)]
pub struct WritePath {
    /// `binlog_pump_rpc_duration_seconds{method="WriteBinlog",label="succ"}`.
    pub rpc_succ: Histogram,
    /// `binlog_pump_storage_write_binlog_duration_time{type="single"}`.
    pub duration: Histogram,
    /// `binlog_pump_storage_write_binlog_size{type="single"}`.
    pub size: Histogram,
}

impl Metrics {
    /// Creates and registers every metric (plus the process collector).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let rpc_duration = HistogramVec::new(
            HistogramOpts::new("rpc_duration_seconds", "Bucketed histogram of processing time (s) of rpc queries.")
                .namespace("binlog")
                .subsystem("pump")
                .buckets(exponential_buckets(0.00005, 2.0, 18)?),
            &["method", "label"],
        )?;
        let loss_binlog = IntCounter::with_opts(
            Opts::new("loss_binlog_count", "Total loss binlog count").namespace("binlog").subsystem("pump"),
        )?;
        let st = |name: &str, help: &str| Opts::new(name, help).namespace("binlog").subsystem("pump_storage");
        let gc_ts = IntGauge::with_opts(st("gc_ts", "gc ts of storage"))?;
        let done_gc_ts = IntGauge::with_opts(st("done_gc_ts", "the metadata and vlog after this gc ts has been collected"))?;
        let deleted_kv = IntCounter::with_opts(st("deleted_kv_total", "deleted kv number"))?;
        let storage_size = IntGaugeVec::new(st("storage_size_bytes", "storage size info"), &["type"])?;
        let max_commit_ts = IntGauge::with_opts(st("max_commit_ts", "max commit ts of storage"))?;
        let query_tikv = IntCounter::with_opts(st("query_tikv_count", "Total count that queried tikv"))?;
        let storage_errors = IntCounterVec::new(st("error_count", "Total count of storage errors"), &["type"])?;
        let pending_prewrites = IntGauge::with_opts(st("pending_prewrite_count", "Prewrites waiting for their commit"))?;
        let drainers_behind_gc = IntGauge::with_opts(
            Opts::new("drainer_behind_gc_count", "Non-offline drainers whose checkpoint is below the GC ts by time")
                .namespace("binlog")
                .subsystem("pump"),
        )?;
        let oldest_pending_prewrite =
            IntGauge::with_opts(st("oldest_pending_prewrite_seconds", "Age of the oldest pending prewrite by its start ts"))?;
        let hst = |name: &str, help: &str| HistogramOpts::new(name, help).namespace("binlog").subsystem("pump_storage");
        let write_size = HistogramVec::new(
            hst("write_binlog_size", "write binlog size").buckets(exponential_buckets(16.0, 2.0, 25)?),
            &["type"],
        )?;
        let write_duration = HistogramVec::new(
            hst("write_binlog_duration_time", "Bucketed histogram of write time (s) of binlog.")
                .buckets(exponential_buckets(0.00005, 2.0, 20)?),
            &["type"],
        )?;
        let slow_chaser = IntCounterVec::new(st("slow_chaser_count", "How many times slow chaser runs"), &["type"])?;
        let slow_chaser_catchup = Histogram::with_opts(
            HistogramOpts::new("slow_chaser_catchup_time_seconds", "How much time spent on catching up")
                .namespace("binlog")
                .subsystem("drainer")
                .buckets(exponential_buckets(0.00005, 2.0, 20)?),
        )?;
        registry.register(Box::new(rpc_duration.clone()))?;
        registry.register(Box::new(loss_binlog.clone()))?;
        registry.register(Box::new(gc_ts.clone()))?;
        registry.register(Box::new(done_gc_ts.clone()))?;
        registry.register(Box::new(deleted_kv.clone()))?;
        registry.register(Box::new(storage_size.clone()))?;
        registry.register(Box::new(max_commit_ts.clone()))?;
        registry.register(Box::new(query_tikv.clone()))?;
        registry.register(Box::new(storage_errors.clone()))?;
        registry.register(Box::new(pending_prewrites.clone()))?;
        registry.register(Box::new(drainers_behind_gc.clone()))?;
        registry.register(Box::new(oldest_pending_prewrite.clone()))?;
        registry.register(Box::new(write_size.clone()))?;
        registry.register(Box::new(write_duration.clone()))?;
        registry.register(Box::new(slow_chaser.clone()))?;
        registry.register(Box::new(slow_chaser_catchup.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Self {
            registry,
            rpc_duration,
            loss_binlog,
            gc_ts,
            done_gc_ts,
            deleted_kv,
            storage_size,
            max_commit_ts,
            query_tikv,
            drainers_behind_gc,
            pending_prewrites,
            oldest_pending_prewrite,
            storage_errors,
            write_size,
            write_duration,
            slow_chaser,
            slow_chaser_catchup,
            write_path: Default::default(),
        })
    }

    /// The write path's series (resolved once).
    pub fn write_path(&self) -> &WritePath {
        self.write_path.get_or_init(|| WritePath {
            rpc_succ: self.rpc_duration.with_label_values(&["WriteBinlog", "succ"]),
            duration: self.write_duration.with_label_values(&["single"]),
            size: self.write_size.with_label_values(&["single"]),
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_are_exported() {
        let m = Metrics::new().unwrap();
        assert!(!m.render().contains("WriteBinlog"), "no series before the first call");
        m.write_path().rpc_succ.observe(0.001);
        assert_eq!(m.rpc_duration.with_label_values(&["WriteBinlog", "succ"]).get_sample_count(), 1);
        m.storage_size.with_label_values(&["available"]).set(1);
        m.storage_errors.with_label_values(&["write_binlog"]).inc();
        m.write_size.with_label_values(&["single"]).observe(10.0);
        m.write_duration.with_label_values(&["single"]).observe(0.1);
        m.slow_chaser.with_label_values(&["write"]);
        let text = m.render();
        for name in [
            "binlog_pump_rpc_duration_seconds_bucket{label=\"succ\",method=\"WriteBinlog\"",
            "binlog_pump_loss_binlog_count",
            "binlog_pump_storage_gc_ts",
            "binlog_pump_storage_done_gc_ts",
            "binlog_pump_storage_deleted_kv_total",
            "binlog_pump_storage_storage_size_bytes{type=\"available\"}",
            "binlog_pump_storage_max_commit_ts",
            "binlog_pump_storage_query_tikv_count",
            "binlog_pump_storage_pending_prewrite_count",
            "binlog_pump_drainer_behind_gc_count",
            "binlog_pump_storage_oldest_pending_prewrite_seconds",
            "binlog_pump_storage_error_count{type=\"write_binlog\"}",
            "binlog_pump_storage_write_binlog_size_bucket",
            "binlog_pump_storage_write_binlog_duration_time_bucket",
            "binlog_pump_storage_slow_chaser_count",
            "binlog_drainer_slow_chaser_catchup_time_seconds_bucket",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
