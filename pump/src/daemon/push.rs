//! Prometheus Pushgateway (`-metrics-addr`, `-metrics-interval`), shared by the pump and the drainer.
//!
//! Every `interval` the whole registry is pushed with `PUT http://<addr>/metrics/job/binlog/instance/<nodeID>`
//! (job `binlog`, grouping label `instance` = the node id, as upstream). A failed push is logged and
//! retried at the next tick; it never stops the node. `/metrics` is served either way.

use std::time::Duration;

/// The push URL for a gateway address (`host:port` or a full `http(s)://` URL) and a node id.
pub fn push_url(addr: &str, node_id: &str) -> String {
    let base = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", addr.trim_end_matches('/'))
    };
    let enc: String = node_id
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{base}/metrics/job/binlog/instance/{enc}")
}

/// Pushes `render()` to the gateway at `addr` every `interval` until the task is dropped. Returns
/// `None` (nothing to do) when `addr` is empty.
pub fn spawn(
    addr: &str,
    interval: Duration,
    node_id: &str,
    render: impl Fn() -> String + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    if addr.trim().is_empty() {
        return None;
    }
    let url = push_url(addr.trim(), node_id);
    let interval = interval.max(Duration::from_secs(1));
    tracing::info!(%url, ?interval, "pushing metrics to a Prometheus Pushgateway");
    Some(tokio::spawn(async move {
        let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics push disabled: cannot build an HTTP client");
                return;
            }
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let body = render();
            let r = client
                .put(&url)
                .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(body)
                .send()
                .await
                .and_then(|r| r.error_for_status());
            match r {
                Ok(_) if failing => {
                    tracing::info!(%url, "metrics push works again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(%url, error = %e, "pushing metrics failed; retrying every interval");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_has_job_and_escaped_instance() {
        assert_eq!(push_url("127.0.0.1:9091", "pump-1:8250"), "http://127.0.0.1:9091/metrics/job/binlog/instance/pump-1%3A8250");
        assert_eq!(push_url("https://gw/", "a"), "https://gw/metrics/job/binlog/instance/a");
    }
}
