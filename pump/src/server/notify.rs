//! Telling online drainers that this pump came (back) online: `binlog.Cistern/Notify`, with retries.
//! A dead drainer is logged, never fatal.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::daemon::Security;
use super::core::Core;
use crate::node::{NodeKind, NodeState};
use crate::proto::NotifyReq;
use crate::proto::cistern_client::CisternClient;

/// Attempts per drainer.
const ATTEMPTS: u32 = 3;

/// A gRPC endpoint for `host` (`host:port`), TLS from `sec` when enabled.
pub fn endpoint(sec: &Security, host: &str) -> Result<Endpoint, String> {
    let scheme = if sec.enabled() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{host}"))
        .map_err(|e| format!("bad drainer address {host:?}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5));
    if sec.enabled() {
        let read = |p: &str| std::fs::read(p).map_err(|e| format!("reading {p}: {e}"));
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&sec.ssl_ca)?))
            .identity(Identity::from_pem(read(&sec.ssl_cert)?, read(&sec.ssl_key)?));
        ep = ep.tls_config(tls).map_err(|e| format!("TLS for {host}: {e}"))?;
    }
    Ok(ep)
}

async fn notify_one(sec: &Security, host: &str) -> Result<(), String> {
    let ch = endpoint(sec, host)?.connect().await.map_err(|e| format!("dialing {host}: {e}"))?;
    CisternClient::new(ch).notify(NotifyReq {}).await.map_err(|e| format!("Notify on {host}: {e}"))?;
    Ok(())
}

/// Notifies every online drainer, each with [`ATTEMPTS`] tries and a growing pause between them.
pub async fn notify_drainers(core: Arc<Core>) {
    let drainers = match core.registry.list(NodeKind::Drainer).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "listing drainers to notify");
            return;
        }
    };
    for d in drainers.into_iter().filter(|d| d.state == NodeState::Online) {
        for attempt in 1..=ATTEMPTS {
            match notify_one(&core.cfg.security, &d.host).await {
                Ok(()) => {
                    tracing::info!(drainer = %d.node_id, host = %d.host, "notified drainer");
                    break;
                }
                Err(e) => {
                    tracing::warn!(drainer = %d.node_id, attempt, error = %e, "notifying drainer failed");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                }
            }
        }
    }
}
