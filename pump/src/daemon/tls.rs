//! `[security]` for the listening side: a rustls server config from ssl-ca / ssl-cert / ssl-key that
//! demands a client certificate signed by ssl-ca, offers h2 and http/1.1 by ALPN, and the
//! `cert-allowed-cn` check on the client certificate's subject Common Name.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::Security;

/// Why the TLS config could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {what} file {path}: {source}")]
    Read {
        /// ssl-ca, ssl-cert or ssl-key.
        what: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("{what} file {path}: {reason}")]
    Pem {
        /// ssl-ca, ssl-cert or ssl-key.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificates.
    #[error("TLS setup: {0}")]
    Rustls(String),
}

fn read(what: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(Path::new(path)).map_err(|source| TlsError::Read { what, path: path.into(), source })
}

fn certs(what: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem { what, path: path.into(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what, path: path.into(), reason: "no CERTIFICATE block".into() });
    }
    Ok(certs)
}

/// The server side config: our certificate, client certificates required and checked against ssl-ca.
pub fn server_config(sec: &Security) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs("ssl-ca", &sec.ssl_ca)? {
        roots.add(c).map_err(|e| TlsError::Pem { what: "ssl-ca", path: sec.ssl_ca.clone(), reason: e.to_string() })?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let chain = certs("ssl-cert", &sec.ssl_cert)?;
    let key_pem = read("ssl-key", &sec.ssl_key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::Pem { what: "ssl-key", path: sec.ssl_key.clone(), reason: e.to_string() })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Whether a client presenting `cert` may talk to us: always when `allowed` is empty, else when the
/// certificate's subject CN is listed.
pub fn cn_allowed(allowed: &[String], cert: Option<&CertificateDer<'_>>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    cert.and_then(|c| subject_cn(c.as_ref())).is_some_and(|cn| allowed.iter().any(|a| *a == cn))
}

/// One DER TLV: tag, content, rest.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (usize::from(l0), rest)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The subject Common Name of a DER X.509 certificate.
pub fn subject_cn(der: &[u8]) -> Option<String> {
    const SEQ: u8 = 0x30;
    let (SEQ, cert, _) = tlv(der)? else { return None };
    let (SEQ, mut tbs, _) = tlv(cert)? else { return None };
    // version [0] (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    let mut subject = None;
    for _ in 0..5 {
        let (tag, content, rest) = tlv(tbs)?;
        subject = Some((tag, content));
        tbs = rest;
    }
    let (SEQ, mut names) = subject? else { return None };
    const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];
    while !names.is_empty() {
        let (_, set, rest) = tlv(names)?;
        names = rest;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (_, atv, rest) = tlv(atvs)?;
            atvs = rest;
            let (0x06, oid, value) = tlv(atv)? else { continue };
            if oid == CN_OID {
                let (_, s, _) = tlv(value)?;
                return Some(String::from_utf8_lossy(s).into_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_rejects_truncation() {
        assert!(tlv(&[0x30, 0x05, 1, 2]).is_none());
        assert!(tlv(&[0x30, 0x82, 0x01]).is_none());
        assert_eq!(tlv(&[0x02, 0x01, 7, 9]), Some((0x02, &[7u8][..], &[9u8][..])));
        assert_eq!(subject_cn(&[0x30, 0x00]), None);
        assert!(!cn_allowed(&["a".into()], None));
        assert!(cn_allowed(&[], None));
    }

    #[test]
    fn common_name_is_read_from_the_subject() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "the-ca");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "org");
        params.distinguished_name.push(rcgen::DnType::CommonName, "drainer");
        let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
        assert_eq!(subject_cn(leaf.der()).as_deref(), Some("drainer"));
        assert_eq!(subject_cn(ca.der()).as_deref(), Some("the-ca"));
        assert!(cn_allowed(&["tidb".into(), "drainer".into()], Some(leaf.der())));
        assert!(!cn_allowed(&["tidb".into()], Some(leaf.der())));
    }
}
