//! What every command needs: the etcd registry (from `-pd-urls` and the TLS flags), an HTTP client for
//! the nodes' API (same TLS files), and the time zone for printed times.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use pump::etcd::EtcdConfig;
use pump::node::{NodeKind, NodeStatus, Registry};

use crate::flags::Flags;
use crate::output::Zone;

/// How long one etcd request or one HTTP call to a node may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a liveness probe of a node's HTTP API may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Parsed flags plus what was derived from them.
#[derive(Debug)]
pub struct Ctx {
    /// The command line.
    pub flags: Flags,
    /// How to reach etcd.
    pub etcd: EtcdConfig,
    /// Where printed times are shown.
    pub zone: Zone,
}

impl Ctx {
    /// Checks the flags every command shares.
    pub fn new(flags: Flags) -> Result<Self> {
        let mut etcd = EtcdConfig::from_pd_urls(&flags.pd_urls).context("-pd-urls")?;
        etcd.ssl_ca = flags.ssl_ca.clone();
        etcd.ssl_cert = flags.ssl_cert.clone();
        etcd.ssl_key = flags.ssl_key.clone();
        etcd.request_timeout = Some(REQUEST_TIMEOUT);
        if flags.ssl_ca.is_none() && (flags.ssl_cert.is_some() || flags.ssl_key.is_some()) {
            bail!("-ssl-cert and -ssl-key need -ssl-ca (TLS is on only when -ssl-ca is given)");
        }
        let zone = Zone::parse(flags.time_zone.as_deref())?;
        Ok(Self { flags, etcd, zone })
    }

    /// The `-pd-urls` endpoints, for messages.
    pub fn endpoints(&self) -> String {
        self.etcd.endpoints.join(",")
    }

    /// A connected etcd client.
    pub async fn etcd_client(&self) -> Result<etcd_client::Client> {
        Ok(pump::etcd::connect(&self.etcd).await?)
    }

    /// The node registry.
    pub async fn registry(&self) -> Result<Registry> {
        Ok(Registry::new(self.etcd_client().await?))
    }

    /// The node `-node-id` names, or an error that lists the registered ones.
    pub async fn lookup(&self, reg: &Registry, kind: NodeKind) -> Result<NodeStatus> {
        let Some(id) = self.flags.node_id.as_deref().filter(|s| !s.is_empty()) else {
            bail!("-cmd {}: -node-id is required", cmd_name(self));
        };
        if let Some(node) = reg.get(kind, id).await? {
            return Ok(node);
        }
        let known: Vec<String> = reg.list(kind).await?.into_iter().map(|n| n.node_id).collect();
        let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
        bail!("{kind} {id:?} not found in etcd at {} (registered {kind}s: {known})", self.endpoints())
    }

    /// An HTTP client for the nodes' API; with `-ssl-ca` it trusts that CA and presents the client
    /// certificate if given.
    pub fn http(&self, timeout: Duration) -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).no_proxy();
        if let Some(ca) = &self.flags.ssl_ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading -ssl-ca {}", ca.display()))?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).context("parsing -ssl-ca")?);
            if let (Some(cert), Some(key)) = (&self.flags.ssl_cert, &self.flags.ssl_key) {
                let mut pem = std::fs::read(cert).with_context(|| format!("reading -ssl-cert {}", cert.display()))?;
                pem.push(b'\n');
                pem.extend(std::fs::read(key).with_context(|| format!("reading -ssl-key {}", key.display()))?);
                b = b.identity(reqwest::Identity::from_pem(&pem).context("parsing -ssl-cert/-ssl-key")?);
            }
        }
        Ok(b.build()?)
    }

    /// `http(s)://<host><path>`: https when TLS is on.
    pub fn node_url(&self, host: &str, path: &str) -> String {
        let scheme = if self.flags.ssl_ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{host}{path}")
    }
}

fn cmd_name(ctx: &Ctx) -> String {
    use clap::ValueEnum;
    ctx.flags.cmd.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
}
