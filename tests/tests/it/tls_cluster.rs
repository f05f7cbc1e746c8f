//! `[security]` end to end: PD, a pump and a drainer that all require TLS with client certificates.
//! The pump serves gRPC and HTTPS on its one port and checks `cert-allowed-cn`; its registry and TSO
//! talk TLS to PD and its etcd; the drainer pulls from it over TLS and serves its own API over HTTPS, where
//! binlogctl pauses it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pump::etcd::EtcdConfig;
use pump::node::{NodeKind, NodeState, NodeStatus, Registry};
use pump::proto::WriteBinlogReq;
use pump::proto::pump_client::PumpClient;
use tests::pki::{Leaf, Pki};
use tests::{Proc, free_port, our_binary, wait_until};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::ctl_util::ctl;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn security(pki: &Pki, leaf: &Leaf, allowed_cn: &[&str]) -> String {
    let cns: Vec<String> = allowed_cn.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "[security]\nssl-ca = {:?}\nssl-cert = {:?}\nssl-key = {:?}\ncert-allowed-cn = [{}]\n",
        s(&pki.ca),
        s(&leaf.cert),
        s(&leaf.key),
        cns.join(", ")
    )
}

async fn registry(pd: &str, pki: &Pki, leaf: &Leaf) -> Registry {
    let cfg = EtcdConfig {
        endpoints: vec![pd.to_owned()],
        ssl_ca: Some(pki.ca.clone()),
        ssl_cert: Some(leaf.cert.clone()),
        ssl_key: Some(leaf.key.clone()),
        ..EtcdConfig::default()
    };
    Registry::new(pump::etcd::connect(&cfg).await.unwrap())
}

async fn wait_node(reg: &Registry, kind: NodeKind, ok: impl Fn(&NodeStatus) -> bool, what: &str) -> NodeStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(n)) = reg.list(kind).await.map(|l| l.into_iter().find(|n| ok(n))) {
            return n;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TLS gRPC client of the pump presenting `leaf` (or no certificate).
async fn pump_client(addr: &str, pki: &Pki, leaf: Option<&Leaf>) -> Result<PumpClient<tonic::transport::Channel>, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()));
    if let Some(l) = leaf {
        tls = tls.identity(Identity::from_pem(std::fs::read(&l.cert).unwrap(), std::fs::read(&l.key).unwrap()));
    }
    let ep = Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).map_err(|e| e.to_string())?;
    let ch = ep.connect_timeout(Duration::from_secs(5)).connect().await.map_err(|e| format!("{e:?}"))?;
    Ok(PumpClient::new(ch))
}

/// A health probe (empty payload) over TLS: `Ok` when the pump answered.
async fn probe(addr: &str, pki: &Pki, leaf: Option<&Leaf>, cluster_id: u64) -> Result<(), String> {
    let mut c = pump_client(addr, pki, leaf).await?;
    let r = c.write_binlog(WriteBinlogReq { cluster_id, payload: Default::default() }).await.map_err(|e| e.to_string())?;
    let msg = r.into_inner().errmsg;
    if msg.is_empty() { Ok(()) } else { Err(msg) }
}

#[test]
fn pump_and_drainer_speak_tls_with_client_certificates_and_allowed_cns() {
    let dir = tempfile::Builder::new().prefix("tbrs-tls-cluster-").tempdir().unwrap();
    let root = dir.path();
    let pki = Pki::new(root).unwrap();
    let (etcd_cert, pump_cert, drainer_cert, tidb_cert, ctl_cert, intruder) = (
        pki.leaf("etcd").unwrap(),
        pki.leaf("pump").unwrap(),
        pki.leaf("drainer").unwrap(),
        pki.leaf("tidb").unwrap(),
        pki.leaf("binlogctl").unwrap(),
        pki.leaf("intruder").unwrap(),
    );

    // PD with TLS and client-certificate auth (its gRPC and its etcd on one port).
    let tls = tests::pd::PdTls { ca: pki.ca.clone(), cert: etcd_cert.cert.clone(), key: etcd_cert.key.clone(), client: None };
    let etcd = tests::Pd::start_with(&root.join("pd"), Some(tls)).unwrap();
    let client_url = etcd.url();
    let rt = rt();
    let reg = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let reg = registry(&client_url, &pki, &tidb_cert).await;
            if reg.list(NodeKind::Pump).await.is_ok() {
                break reg;
            }
            assert!(tokio::time::Instant::now() < deadline, "TLS etcd did not answer\n{}", etcd.log_tail());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // A pump: only TiDB, drainers and binlogctl may talk to it.
    let pump_addr = format!("127.0.0.1:{}", free_port());
    let pump_cfg = root.join("pump.toml");
    std::fs::write(
        &pump_cfg,
        format!(
            "{}[storage]\nstop-write-at-available-space = \"1 MiB\"\n",
            security(&pki, &pump_cert, &["tidb", "drainer", "binlogctl"])
        ),
    )
    .unwrap();
    let mut cmd = Command::new(our_binary("pump"));
    cmd.args(["-config", &s(&pump_cfg), "-addr", &pump_addr, "-pd-urls", &client_url])
        .args(["-data-dir", &s(&root.join("pump")), "-heartbeat-interval", "1", "-fake-binlog-interval", "1"]);
    let mut pump = Proc::spawn("pump", cmd, &root.join("pump.log")).unwrap();
    rt.block_on(wait_node(&reg, NodeKind::Pump, |n| n.state == NodeState::Online, "the TLS pump to register online"));

    let cluster_id = rt.block_on(async {
        let cfg = EtcdConfig {
            endpoints: vec![client_url.clone()],
            ssl_ca: Some(pki.ca.clone()),
            ssl_cert: Some(tidb_cert.cert.clone()),
            ssl_key: Some(tidb_cert.key.clone()),
            ..EtcdConfig::default()
        };
        pump::pd::PdClient::connect(&cfg).await.unwrap().cluster_id()
    });
    rt.block_on(async {
        probe(&pump_addr, &pki, Some(&tidb_cert), cluster_id).await.unwrap_or_else(|e| panic!("{e}\n{}", pump.log_tail()));
        let e = probe(&pump_addr, &pki, Some(&intruder), cluster_id).await.unwrap_err();
        assert!(!e.is_empty(), "a CN outside cert-allowed-cn is refused");
        assert!(probe(&pump_addr, &pki, None, cluster_id).await.is_err(), "no client certificate, no service");
        // Plain gRPC to a TLS port gets nowhere either.
        let plain = async {
            let mut c = PumpClient::connect(format!("http://{pump_addr}")).await.map_err(|e| e.to_string())?;
            c.write_binlog(WriteBinlogReq { cluster_id, payload: Default::default() }).await.map_err(|e| e.to_string())
        };
        assert!(tokio::time::timeout(Duration::from_secs(10), plain).await.map(|r| r.is_err()).unwrap_or(true));
    });
    let log = std::fs::read_to_string(root.join("pump.log")).unwrap();
    assert!(log.contains("intruder") && log.contains("cert-allowed-cn"), "the refused CN is logged:\n{log}");

    // A drainer with the file sink pulls over TLS and serves HTTPS.
    let drainer_addr = format!("127.0.0.1:{}", free_port());
    let drainer_cfg = root.join("drainer.toml");
    std::fs::write(&drainer_cfg, format!("{}[syncer]\ndb-type = \"file\"\n", security(&pki, &drainer_cert, &[]))).unwrap();
    let mut cmd = Command::new(our_binary("drainer"));
    cmd.args(["-config", &s(&drainer_cfg), "-addr", &drainer_addr, "-pd-urls", &client_url])
        .args(["-data-dir", &s(&root.join("drainer"))]);
    let mut drainer = Proc::spawn("drainer", cmd, &root.join("drainer.log")).unwrap();
    let first = rt.block_on(wait_node(&reg, NodeKind::Drainer, |n| n.state == NodeState::Online, "the TLS drainer online"));
    let later = rt.block_on(wait_node(
        &reg,
        NodeKind::Drainer,
        |n| n.max_commit_ts > first.max_commit_ts + (3000 << 18),
        "the drainer's checkpoint to move 3 s on fake binlogs pulled over TLS",
    ));
    assert_eq!(later.node_id, first.node_id);

    // binlogctl pauses the drainer over HTTPS with its client certificate.
    let args = [
        "-pd-urls",
        &client_url,
        "-ssl-ca",
        &s(&pki.ca),
        "-ssl-cert",
        &s(&ctl_cert.cert),
        "-ssl-key",
        &s(&ctl_cert.key),
        "-cmd",
        "pause-drainer",
        "-node-id",
        &first.node_id,
    ];
    let out = ctl(&args, &[]);
    assert_eq!(out.code, 0, "{out:?}\n{}", drainer.log_tail());
    wait_until("the drainer to exit after pause", Duration::from_secs(30), || !drainer.is_running()).unwrap();
    let n = rt.block_on(reg.get(NodeKind::Drainer, &first.node_id)).unwrap().unwrap();
    assert_eq!(n.state, NodeState::Paused);
    assert!(pump.is_running(), "the pump keeps serving\n{}", pump.log_tail());
}
