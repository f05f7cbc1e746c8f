//! Daemon plumbing shared by `pump`, `drainer` and `reparo` (feature `daemon`; no pump-store): config
//! files and Go-style flags, logging, the one `[security]` type and its TLS, the shared gRPC + HTTP
//! listener, and the Pushgateway push.

pub mod config_file;
pub mod logging;
pub mod push;
pub mod serve;
pub mod tls;

/// `[security]` (the drainer's `[syncer.to.security]` and Reparo's `[dest-db.security]` too): TLS
/// for gRPC, HTTP, the etcd client and the downstream. Off unless `ssl-ca` is set.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Security {
    /// CA that signs peers' certificates.
    pub ssl_ca: String,
    /// This node's certificate.
    pub ssl_cert: String,
    /// This node's private key.
    pub ssl_key: String,
    /// If non-empty, only clients whose certificate Common Name is listed are accepted.
    pub cert_allowed_cn: Vec<String>,
}

impl Security {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        !self.ssl_ca.is_empty()
    }
}

