//! `deploy/`: every metric the Grafana dashboard and the Prometheus alert rules use is one that a running
//! pump or drainer really exports (scraped from their `/metrics` after a short replicated workload), and
//! the files parse.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tests::e2e::{E2e, Options};

/// `binlog_*` sample names used in PromQL expressions (as exported: with `_bucket`/`_count` etc.).
fn names_in<'a>(exprs: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    let re = regex::Regex::new(r"binlog_[a-z_]+[a-z]").unwrap();
    exprs.flat_map(|e| re.find_iter(e).map(|m| m.as_str().to_owned()).collect::<Vec<_>>()).collect()
}

/// Every `"expr"` string anywhere in the dashboard JSON.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) if k == "expr" => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

fn scrape(addr: &str) -> Result<String> {
    let url = format!("http://{addr}/metrics");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let body = rt.block_on(async { reqwest::get(&url).await?.error_for_status()?.text().await });
    body.with_context(|| format!("GET {url}"))
}

#[test]
fn dashboard_and_alerts_use_only_metrics_the_daemons_export() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dash = std::fs::read_to_string(root.join("grafana/tidb-binlog.json"))?;
    let dash: serde_json::Value = serde_json::from_str(&dash).context("deploy/grafana/tidb-binlog.json is not JSON")?;
    let mut exprs = Vec::new();
    dashboard_exprs(&dash, &mut exprs);
    let rules = std::fs::read_to_string(root.join("prometheus/alert-rules.yml"))?;
    let rule_exprs: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")).collect();
    assert!(exprs.len() > 10 && rule_exprs.len() > 3, "{} dashboard and {} rule expressions", exprs.len(), rule_exprs.len());
    let used = names_in(exprs.iter().map(String::as_str).chain(rule_exprs.iter().copied()));

    let mut e2e = E2e::start(
        Options { duration: Duration::from_secs(4), threads: 2, tables: 2, pumps: 1, ddl_every: 20, ..Options::default() },
        |_| {},
    )?;
    e2e.wait_workload(|_| Ok(()))?;
    e2e.wait_caught_up(Duration::from_secs(60))?;
    let mut exported = BTreeSet::new();
    for addr in e2e.pumps.iter().map(|p| p.addr()).chain([e2e.drainer.addr()]) {
        for line in scrape(&addr)?.lines().filter(|l| !l.starts_with('#')) {
            exported.insert(line.split(['{', ' ']).next().unwrap_or("").to_owned());
        }
    }
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "deploy/ uses metrics nobody exports: {missing:?}\nexported: {exported:?}");
    Ok(())
}
