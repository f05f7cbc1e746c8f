//! Shared helpers of the `pump_*` tests: start the real `pump` binary against the harness's etcd, talk
//! to it over gRPC and plain HTTP/1.1, read its registration.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use prost::Message;
use pump::node::{NodeKind, NodeState, NodeStatus};
use pump::proto::pump_client::PumpClient;
use pump::proto::{Binlog, BinlogType, PullBinlogReq, Pos, WriteBinlogReq};
use tests::{Proc, free_port, our_binary, wait_until};

/// A running pump process.
pub struct PumpNode {
    pub proc: Proc,
    pub addr: String,
    pub node_id: String,
}

/// Starts `pump` on a free port with `data_dir`, fast heartbeats and fake binlogs, plus `extra` flags;
/// waits until it registered online and answers HTTP.
pub fn start_pump(etcd_url: &str, data_dir: &Path, extra: &[&str]) -> PumpNode {
    start_pump_on(etcd_url, data_dir, free_port(), extra)
}

/// Like [`start_pump`] on a given port.
pub fn start_pump_on(etcd_url: &str, data_dir: &Path, port: u16, extra: &[&str]) -> PumpNode {
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(our_binary("pump"));
    if !extra.contains(&"-config") {
        // Tests must not depend on the machine's free disk: stop writing only below 1 MiB.
        let cfg = data_dir.with_extension("toml");
        std::fs::write(&cfg, "[storage]\nstop-write-at-available-space = \"1 MiB\"\n").unwrap();
        cmd.arg("-config").arg(cfg);
    }
    cmd.args(["-addr", &addr, "-pd-urls", etcd_url, "-heartbeat-interval", "1", "-fake-binlog-interval", "1"])
        .arg("-data-dir")
        .arg(data_dir)
        .args(["-L", "debug"])
        .args(extra);
    for (k, _) in std::env::vars() {
        if k.starts_with("PUMP_") {
            cmd.env_remove(k);
        }
    }
    let log = data_dir.with_extension("log");
    let proc = Proc::spawn("pump", cmd, &log).unwrap();
    let mut node = PumpNode { proc, addr: addr.clone(), node_id: String::new() };
    let mut last = String::new();
    let ok = wait_until("pump to register online", Duration::from_secs(30), || {
        let Ok(id) = std::fs::read_to_string(data_dir.join(".node")) else { return false };
        node.node_id = id.trim().to_owned();
        match http("GET", &addr, "/status") {
            Some((200, body)) => {
                last = body.clone();
                body.contains(&format!("\"{}\"", node.node_id)) && body.contains("\"online\"")
            }
            _ => false,
        }
    });
    if let Err(e) = ok {
        panic!("{e}; last /status {last:?}\n{}", node.proc.log_tail());
    }
    node
}

impl PumpNode {
    /// A gRPC client.
    pub async fn client(&self) -> PumpClient<tonic::transport::Channel> {
        PumpClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }

    /// Waits for the process to exit by itself and returns whether it exited with success.
    pub fn wait_exit_ok(&mut self, timeout: Duration) -> bool {
        match self.proc.wait_exit(timeout) {
            Some(st) => st.success(),
            None => panic!("pump did not exit within {timeout:?}\n{}", self.proc.log_tail()),
        }
    }
}

/// One plain HTTP/1.1 request; `(status, body)` or `None` if nothing answers.
pub fn http(method: &str, addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// A node's registration, read with a fresh client.
pub async fn node(etcd_url: &str, kind: NodeKind, id: &str) -> Option<NodeStatus> {
    let client = etcd_client::Client::connect([etcd_url], None).await.unwrap();
    pump::node::Registry::new(client).get(kind, id).await.unwrap()
}

/// Polls etcd until node `id` is in `state`.
pub async fn wait_state(etcd_url: &str, id: &str, state: NodeState, timeout: Duration) -> NodeStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = node(etcd_url, NodeKind::Pump, id).await;
        if let Some(n) = &n
            && n.state == state
        {
            return n.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "pump {id} never became {state}; last {n:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PD's cluster id, which the pump requires on every request.
pub async fn cluster_id(pd_url: &str) -> u64 {
    tso(pd_url).await.cluster_id()
}

/// A client of the pump's PD (its timestamps are linearizable with the pump's own).
pub async fn tso(pd_url: &str) -> pump::pd::PdClient {
    pump::pd::PdClient::connect(&pump::etcd::EtcdConfig::from_pd_urls(pd_url).unwrap()).await.unwrap()
}

/// A P-binlog.
pub fn prewrite(start_ts: i64, value: &[u8]) -> Vec<u8> {
    Binlog {
        tp: Some(BinlogType::Prewrite as i32),
        start_ts: Some(start_ts),
        commit_ts: Some(0),
        prewrite_key: Some(b"t\x80pk".to_vec()),
        prewrite_value: Some(value.to_vec()),
        ddl_job_id: Some(0),
        ..Binlog::default()
    }
    .encode_to_vec()
}

/// The C-binlog of [`prewrite`] as TiDB sends it (same struct, `prewrite_value` cleared).
pub fn commit(start_ts: i64, commit_ts: i64) -> Vec<u8> {
    Binlog {
        tp: Some(BinlogType::Commit as i32),
        start_ts: Some(start_ts),
        commit_ts: Some(commit_ts),
        prewrite_key: Some(b"t\x80pk".to_vec()),
        ddl_job_id: Some(0),
        ..Binlog::default()
    }
    .encode_to_vec()
}

/// Writes one payload; the gRPC error message on failure.
pub async fn write(client: &mut PumpClient<tonic::transport::Channel>, cluster_id: u64, payload: Vec<u8>) -> Result<(), String> {
    client
        .write_binlog(WriteBinlogReq { cluster_id, payload: payload.into() })
        .await
        .map(|_| ())
        .map_err(|s| s.message().to_owned())
}

/// Pulls from `after` until `until(binlogs so far)` holds (or 20 s pass), returning what arrived.
pub async fn pull_until(
    client: &mut PumpClient<tonic::transport::Channel>,
    cluster_id: u64,
    after: i64,
    until: impl Fn(&[Binlog]) -> bool,
) -> Vec<Binlog> {
    let req = PullBinlogReq { cluster_id, start_from: Some(Pos { suffix: 0, offset: after }) };
    let mut stream = client.pull_binlogs(req).await.unwrap().into_inner();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !until(&got) {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("pull timed out with {} binlogs: {got:?}", got.len()))
            .unwrap()
            .expect("stream ended");
        let e = msg.entity.unwrap();
        let b = Binlog::decode(e.payload.as_slice()).unwrap();
        let meta = e.meta.unwrap();
        assert_eq!((meta.start_ts, meta.commit_ts), (b.start_ts(), b.commit_ts()), "meta matches payload");
        got.push(b);
    }
    got
}
