//! Test certificates made with rcgen: one CA, a server certificate for 127.0.0.1/localhost, and client
//! certificates with a chosen subject Common Name (for `cert-allowed-cn`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

/// A certificate and its key, as PEM files and DER bytes.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// PEM certificate file.
    pub cert: PathBuf,
    /// PEM (PKCS#8) key file.
    pub key: PathBuf,
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// DER (PKCS#8) key.
    pub key_der: Vec<u8>,
}

/// A CA that signs the leaves it makes; its files live in `dir`.
pub struct Pki {
    dir: PathBuf,
    ca_cert: Certificate,
    ca_key: KeyPair,
    /// PEM CA certificate file.
    pub ca: PathBuf,
    /// DER CA certificate.
    pub ca_der: Vec<u8>,
}

impl Pki {
    /// A new CA in `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "tbrs test CA");
        params.distinguished_name = dn;
        let ca_cert = params.self_signed(&ca_key)?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem())?;
        Ok(Pki { dir: dir.to_path_buf(), ca_der: ca_cert.der().to_vec(), ca_cert, ca_key, ca })
    }

    /// A leaf for 127.0.0.1 and localhost with subject CN `cn`, usable as a server and as a client.
    pub fn leaf(&self, cn: &str) -> Result<Leaf> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        let (c, k) = (self.dir.join(format!("{cn}.pem")), self.dir.join(format!("{cn}-key.pem")));
        std::fs::write(&c, cert.pem())?;
        std::fs::write(&k, key.serialize_pem())?;
        Ok(Leaf { cert: c, key: k, cert_der: cert.der().to_vec(), key_der: key.serialize_der() })
    }
}
