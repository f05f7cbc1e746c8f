//! Shared benchmark plumbing: every comparison prints a table row and one JSON line.
#![warn(missing_docs)]

use serde::Serialize;

pub mod standin;

/// One side-by-side comparison, printed as the JSON line fixed in `shared/spec/extensions.md`.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// Name of the benchmark.
    pub bench: String,
    /// Our measured value.
    pub ours: f64,
    /// The baseline's measured value in the same run.
    pub baseline: f64,
    /// Which baseline.
    pub baseline_name: String,
    /// Unit; for latencies it says the ratio is baseline/ours.
    pub unit: String,
    /// > 1 means ours is better.
    pub ratio: f64,
}

impl Comparison {
    /// A throughput-like comparison (higher is better): ratio = ours / baseline.
    pub fn higher_is_better(bench: &str, ours: f64, baseline: f64, baseline_name: &str, unit: &str) -> Self {
        Self::new(bench, ours, baseline, baseline_name, unit, ours / baseline)
    }

    /// A latency-like comparison (lower is better): ratio = baseline / ours.
    pub fn lower_is_better(bench: &str, ours: f64, baseline: f64, baseline_name: &str, unit: &str) -> Self {
        let unit = format!("{unit} (ratio = baseline/ours)");
        Self::new(bench, ours, baseline, baseline_name, &unit, baseline / ours)
    }

    fn new(bench: &str, ours: f64, baseline: f64, baseline_name: &str, unit: &str, ratio: f64) -> Self {
        Self {
            bench: bench.into(),
            ours,
            baseline,
            baseline_name: baseline_name.into(),
            unit: unit.into(),
            ratio,
        }
    }

    /// The JSON line.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a Comparison always serializes")
    }

    /// Prints the human row, then the JSON line.
    pub fn print(&self) {
        println!(
            "{:<48} ours {:>14.2}  {:<20} {:>14.2}  {:<28} ratio {:.3}",
            self.bench, self.ours, self.baseline_name, self.baseline, self.unit, self.ratio
        );
        println!("{}", self.json());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_ratio_is_baseline_over_ours() {
        let c = Comparison::lower_is_better("p99", 2.0, 4.0, "device", "ms");
        assert_eq!(c.ratio, 2.0);
        let v: serde_json::Value = serde_json::from_str(&c.json()).unwrap();
        assert_eq!(v["bench"], "p99");
        assert_eq!(v["baseline_name"], "device");
        assert_eq!(v["unit"], "ms (ratio = baseline/ours)");
        assert_eq!(Comparison::higher_is_better("t", 3.0, 6.0, "b", "ops/s").ratio, 0.5);
    }
}
