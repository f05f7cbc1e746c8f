//! binlogctl and `pump::etcd::connect` against a real etcd that requires TLS with client certificates
//! (certificates made here with rcgen: a CA, a server cert for 127.0.0.1, a client cert).

use std::path::{Path, PathBuf};
use std::time::Duration;

use pump::etcd::EtcdConfig;
use pump::node::{NodeKind, NodeState, NodeStatus, Registry};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tests::wait_until;

use crate::ctl_util::{FakeNode, ctl};

/// An HTTPS server config for 127.0.0.1 that demands a client certificate signed by the test CA.
fn https_config(pki: &Pki) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca_der.clone())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let (cert, key) = pki.server_der.clone();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(cert)], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
        .unwrap();
    Arc::new(cfg)
}

struct Pki {
    ca: PathBuf,
    ca_der: Vec<u8>,
    server_der: (Vec<u8>, Vec<u8>),
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut ders = Vec::new();
    let mut leaf = |purpose: &[ExtendedKeyUsagePurpose], name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.extended_key_usages = purpose.to_vec();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        ders.push((cert.der().to_vec(), key.serialize_der()));
        (c, k)
    };
    // The server certificate is also a client one: a real PD dials its own etcd with it.
    let (server_cert, server_key) =
        leaf(&[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth], "server");
    let (client_cert, client_key) = leaf(&[ExtendedKeyUsagePurpose::ClientAuth], "client");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    Pki { ca: ca_path, ca_der: ca.der().to_vec(), server_der: ders.swap_remove(0), server_cert, server_key, client_cert, client_key }
}

#[test]
fn binlogctl_and_the_registry_speak_tls_to_pd() {
    let dir = tempfile::Builder::new().prefix("tbrs-ctl-tls-").tempdir().unwrap();
    let pki = make_pki(dir.path());
    let tls = tests::pd::PdTls {
        ca: pki.ca.clone(),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client: Some((pki.client_cert.clone(), pki.client_key.clone())),
    };
    let pd_node = tests::Pd::start_with(&dir.path().join("pd"), Some(tls)).unwrap();
    let port = pd_node.port;
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let (ca, cert, key) = (s(&pki.ca), s(&pki.client_cert), s(&pki.client_key));
    // pd-urls may say http://: with -ssl-ca binlogctl dials https, as upstream does.
    let pd = format!("http://127.0.0.1:{port}");
    let tls_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> =
            ["-pd-urls", &pd, "-ssl-ca", &ca, "-ssl-cert", &cert, "-ssl-key", &key].map(String::from).to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| ctl(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    wait_until("TLS etcd to answer binlogctl", Duration::from_secs(20), || run(tls_args(&["-cmd", "drainers"])).code == 0)
        .unwrap_or_else(|e| panic!("{e}: {}", pd_node.log_tail()));

    // Register a node over TLS with the library, then list it with binlogctl.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let cfg = EtcdConfig {
            endpoints: vec![pd.clone()],
            ssl_ca: Some(pki.ca.clone()),
            ssl_cert: Some(pki.client_cert.clone()),
            ssl_key: Some(pki.client_key.clone()),
            ..EtcdConfig::default()
        };
        let reg = Registry::new(pump::etcd::connect(&cfg).await.unwrap());
        reg.create(NodeKind::Pump, &NodeStatus::new("tls-pump", "127.0.0.1:8250", NodeState::Online)).await.unwrap();
    });
    let out = run(tls_args(&["-cmd", "pumps"]));
    assert!(out.ok().stdout.contains("NodeID: tls-pump"), "{out:?}");
    let dd = dir.path().join("bp");
    run(tls_args(&["-cmd", "generate_meta", "-data-dir", dd.to_str().unwrap()])).ok();
    assert!(std::fs::read_to_string(dd.join("savepoint")).unwrap().starts_with("commitTS = "));

    // pause-pump speaks HTTPS with the client certificate to the node's API.
    let api = FakeNode::with_tls(200, https_config(&pki));
    rt.block_on(async {
        let cfg = EtcdConfig {
            endpoints: vec![pd.clone()],
            ssl_ca: Some(pki.ca.clone()),
            ssl_cert: Some(pki.client_cert.clone()),
            ssl_key: Some(pki.client_key.clone()),
            ..EtcdConfig::default()
        };
        let reg = Registry::new(pump::etcd::connect(&cfg).await.unwrap());
        reg.create(NodeKind::Pump, &NodeStatus::new("tls-api", &api.addr, NodeState::Online)).await.unwrap();
    });
    let out = run(tls_args(&["-cmd", "pause-pump", "-node-id", "tls-api"]));
    assert!(out.ok().stdout.contains("apply action pause success!"), "{out:?}");
    assert_eq!(api.requests(), ["PUT /state/tls-api/pause"]);

    // Without TLS, or without the client certificate etcd demands, it fails with an error.
    assert_eq!(ctl(&["-pd-urls", &pd, "-cmd", "pumps"], &[]).code, 1);
    assert_eq!(ctl(&["-pd-urls", &pd, "-ssl-ca", &ca, "-cmd", "pumps"], &[]).code, 1);
    drop(pd_node);
}
