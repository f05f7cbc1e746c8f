//! Connecting to PD's etcd (or a plain etcd standing in for it): `pd-urls` parsing and TLS from the
//! `ssl-ca` / `ssl-cert` / `ssl-key` files that pump, drainer and binlogctl all take.
//!
//! With TLS configured every endpoint is dialled as `https://`, as upstream does when security is on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// Where and how to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    /// Endpoints (`http://host:port`, `https://host:port` or bare `host:port`).
    pub endpoints: Vec<String>,
    /// PEM file of the CA that signed etcd's certificate; turns TLS on.
    pub ssl_ca: Option<PathBuf>,
    /// PEM client certificate (needs `ssl_key`).
    pub ssl_cert: Option<PathBuf>,
    /// PEM private key of `ssl_cert`.
    pub ssl_key: Option<PathBuf>,
    /// Timeout for establishing a connection (default 5 s).
    pub connect_timeout: Option<Duration>,
    /// Timeout applied to each unary request (none by default).
    pub request_timeout: Option<Duration>,
}

/// Why connecting to etcd failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// `pd-urls` held no endpoint.
    #[error("no etcd endpoint given (pd-urls is empty)")]
    NoEndpoints,
    /// An endpoint is not `http(s)://host:port` or `host:port`.
    #[error("bad pd-urls entry {url:?}: {reason}")]
    BadUrl {
        /// The entry as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A TLS file could not be read.
    #[error("reading {what} file {}: {source}", path.display())]
    ReadTls {
        /// Which of ssl-ca / ssl-cert / ssl-key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Only one of ssl-cert and ssl-key was given.
    #[error("ssl-cert and ssl-key must be given together")]
    HalfIdentity,
    /// An `https://` endpoint without `ssl-ca`.
    #[error("pd-urls entry {url} is https but no ssl-ca was given")]
    HttpsWithoutCa {
        /// The endpoint.
        url: String,
    },
    /// The client could not be built or could not reach etcd.
    #[error("connecting to etcd at {endpoints}: {source}")]
    Connect {
        /// The endpoints, comma separated.
        endpoints: String,
        /// The client error.
        source: etcd_client::Error,
    },
}

impl EtcdConfig {
    /// A config for the comma-separated `pd-urls` value, without TLS.
    pub fn from_pd_urls(pd_urls: &str) -> Result<Self, ConnectError> {
        Ok(Self { endpoints: parse_pd_urls(pd_urls)?, ..Self::default() })
    }

    /// Whether TLS is configured (an `ssl-ca` was given).
    pub fn tls(&self) -> bool {
        self.ssl_ca.is_some()
    }
}

/// Splits a comma-separated `pd-urls` value and checks each entry.
pub fn parse_pd_urls(pd_urls: &str) -> Result<Vec<String>, ConnectError> {
    let mut out = Vec::new();
    for raw in pd_urls.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let rest = raw.strip_prefix("http://").or_else(|| raw.strip_prefix("https://")).unwrap_or(raw);
        if rest.contains("://") {
            return Err(ConnectError::BadUrl { url: raw.into(), reason: "scheme must be http or https" });
        }
        let host_port = rest.trim_end_matches('/');
        let Some((host, port)) = host_port.rsplit_once(':') else {
            return Err(ConnectError::BadUrl { url: raw.into(), reason: "missing :port" });
        };
        if host.is_empty() {
            return Err(ConnectError::BadUrl { url: raw.into(), reason: "missing host" });
        }
        if port.parse::<u16>().is_err() {
            return Err(ConnectError::BadUrl { url: raw.into(), reason: "port is not a number 0-65535" });
        }
        out.push(raw.trim_end_matches('/').to_owned());
    }
    if out.is_empty() {
        return Err(ConnectError::NoEndpoints);
    }
    Ok(out)
}

/// Endpoints as they will be dialled: scheme forced to `https` with TLS and added where missing.
pub fn dial_endpoints(cfg: &EtcdConfig) -> Result<Vec<String>, ConnectError> {
    if cfg.endpoints.is_empty() {
        return Err(ConnectError::NoEndpoints);
    }
    let mut out = Vec::new();
    for e in &cfg.endpoints {
        let bare = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://")).unwrap_or(e);
        if e.starts_with("https://") && !cfg.tls() {
            return Err(ConnectError::HttpsWithoutCa { url: e.clone() });
        }
        let scheme = if cfg.tls() { "https" } else { "http" };
        out.push(format!("{scheme}://{bare}"));
    }
    Ok(out)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::ReadTls { what, path: path.into(), source })
}

/// Connects an etcd client as `cfg` says (TLS when `ssl_ca` is set).
pub async fn connect(cfg: &EtcdConfig) -> Result<Client, ConnectError> {
    let endpoints = dial_endpoints(cfg)?;
    let mut opts = ConnectOptions::new().with_connect_timeout(cfg.connect_timeout.unwrap_or(Duration::from_secs(5)));
    if let Some(t) = cfg.request_timeout {
        opts = opts.with_timeout(t);
    }
    if let Some(ca) = &cfg.ssl_ca {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read("ssl-ca", ca)?));
        match (&cfg.ssl_cert, &cfg.ssl_key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read("ssl-cert", cert)?, read("ssl-key", key)?));
            }
            (None, None) => {}
            _ => return Err(ConnectError::HalfIdentity),
        }
        opts = opts.with_tls(tls);
    } else if cfg.ssl_cert.is_some() || cfg.ssl_key.is_some() {
        // A client certificate without a CA would silently be ignored; say so instead.
        return Err(ConnectError::HalfIdentity);
    }
    Client::connect(&endpoints, Some(opts))
        .await
        .map_err(|source| ConnectError::Connect { endpoints: endpoints.join(","), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pd_urls_are_split_and_checked() {
        assert_eq!(
            parse_pd_urls("http://127.0.0.1:2379, 10.0.0.1:2379/").unwrap(),
            ["http://127.0.0.1:2379", "10.0.0.1:2379"]
        );
        assert!(matches!(parse_pd_urls(" , "), Err(ConnectError::NoEndpoints)));
        assert!(matches!(parse_pd_urls("http://h"), Err(ConnectError::BadUrl { reason: "missing :port", .. })));
        assert!(matches!(parse_pd_urls("grpc://h:1"), Err(ConnectError::BadUrl { .. })));
        assert!(matches!(parse_pd_urls("h:99999"), Err(ConnectError::BadUrl { .. })));
    }

    #[test]
    fn tls_forces_https_and_plain_needs_no_https() {
        let mut cfg = EtcdConfig::from_pd_urls("http://a:1,b:2").unwrap();
        assert_eq!(dial_endpoints(&cfg).unwrap(), ["http://a:1", "http://b:2"]);
        cfg.ssl_ca = Some("ca.pem".into());
        assert_eq!(dial_endpoints(&cfg).unwrap(), ["https://a:1", "https://b:2"]);
        let plain = EtcdConfig::from_pd_urls("https://a:1").unwrap();
        assert!(matches!(dial_endpoints(&plain), Err(ConnectError::HttpsWithoutCa { .. })));
    }

    #[test]
    fn missing_tls_file_is_named() {
        let cfg = EtcdConfig {
            endpoints: vec!["a:1".into()],
            ssl_ca: Some("/nonexistent/ca.pem".into()),
            ..EtcdConfig::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let Err(err) = rt.block_on(connect(&cfg)) else { panic!("connect must fail") };
        assert!(err.to_string().contains("ssl-ca file /nonexistent/ca.pem"), "{err}");
    }
}
