//! Shared helpers of the `ctl_*` tests: run binlogctl, write and read node JSON in etcd, and a tiny
//! HTTP server that stands in for a pump's or drainer's state API (records each request, answers JSON).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pump::node::{NodeKind, NodeStatus};
use tests::{Cluster, our_binary};

/// A started etcd plus a blocking client for it.
pub struct Env {
    pub cluster: Cluster,
    rt: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

impl Env {
    pub fn start() -> Self {
        let cluster = Cluster::builder().pd().start().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let url = cluster.pd().url();
        let client = rt.block_on(etcd_client::Client::connect([url.as_str()], None)).unwrap();
        Self { cluster, rt, client }
    }

    pub fn url(&self) -> String {
        self.cluster.pd().url()
    }

    /// Runs `f` on this env's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Writes a node's JSON straight into etcd, as a running pump or drainer would.
    pub fn put_node(&self, kind: NodeKind, n: &NodeStatus) {
        self.put(&kind.key(&n.node_id), n.to_json());
    }

    pub fn put(&self, key: &str, value: impl Into<Vec<u8>>) {
        let mut kv = self.client.kv_client();
        self.rt.block_on(kv.put(key, value.into(), None)).unwrap();
    }

    /// The raw value at a key.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut kv = self.client.kv_client();
        let resp = self.rt.block_on(kv.get(key, None)).unwrap();
        resp.kvs().first().map(|kv| kv.value().to_vec())
    }

    pub fn node(&self, kind: NodeKind, id: &str) -> NodeStatus {
        NodeStatus::from_json(&self.get(&kind.key(id)).expect("node registered")).unwrap()
    }

    /// Runs binlogctl with `-pd-urls <this etcd>` first.
    pub fn ctl(&self, args: &[&str]) -> Run {
        let url = self.url();
        let mut all = vec!["-pd-urls", url.as_str()];
        all.extend_from_slice(args);
        ctl(&all, &[])
    }
}

/// What a binlogctl run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "binlogctl failed: {self:#?}");
        self
    }
    pub fn failed(&self, code: i32, stderr_has: &str) -> &Self {
        assert_eq!(self.code, code, "{self:#?}");
        assert!(self.stderr.contains(stderr_has), "stderr lacks {stderr_has:?}: {self:#?}");
        self
    }
}

/// Runs binlogctl with exactly these arguments and extra environment.
pub fn ctl(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(our_binary("binlogctl"));
    cmd.args(args).env_remove("BINLOG_SECRET_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output { status, stdout, stderr } = cmd.output().expect("run binlogctl (build it with cargo build --bins)");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A stand-in for a node's HTTP API on loopback: records `METHOD PATH` of each request and answers
/// `/status` with `{}` and `/state/..` with the reply code it was given. Stops on drop.
pub struct FakeNode {
    pub addr: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeNode {
    /// `code` is what `PUT /state/..` answers in its JSON (200 = accepted, 3 = refused).
    pub fn start(code: i64) -> Self {
        Self::with_status(code, "{}")
    }

    /// Like [`FakeNode::start`], with `status` as the body of `GET /status`.
    pub fn with_status(code: i64, status: &str) -> Self {
        Self::serve(code, status, None)
    }

    /// Like [`FakeNode::start`], serving HTTPS with `tls` (which may demand client certificates).
    pub fn with_tls(code: i64, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::serve(code, "{}", Some(tls))
    }

    fn serve(code: i64, status: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let status = status.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        sock.set_nonblocking(false).unwrap();
                        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        match &tls {
                            None => answer(sock, code, &status, &reqs),
                            Some(cfg) => {
                                let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                                answer(rustls::StreamOwned::new(conn, sock), code, &status, &reqs);
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { addr, requests, stop, thread: Some(thread) }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head, records `METHOD PATH`, writes the reply (a failed TLS handshake records nothing).
fn answer(mut sock: impl Read + Write, code: i64, status: &str, reqs: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let line = head.lines().next().unwrap_or_default().to_owned();
    if line.is_empty() {
        return;
    }
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    reqs.lock().unwrap().push(format!("{method} {path}"));
    let body = if path == "/status" {
        status.to_owned()
    } else {
        let action = path.rsplit('/').next().unwrap_or("");
        let msg = if code == 200 { format!("apply action {action} success!") } else { "node is not online".to_string() };
        format!("{{\n  \"message\": \"{msg}\",\n  \"code\": {code},\n  \"data\": null\n}}")
    };
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes());
    let _ = sock.flush();
}

/// A loopback address where nothing listens.
pub fn dead_addr() -> String {
    format!("127.0.0.1:{}", tests::free_port())
}
