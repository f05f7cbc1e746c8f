//! A TCP proxy on loopback that can be cut: a partition between one process and a service (the
//! drainer HA tests put one between the active drainer and PD).
//!
//! [`Proxy::start`] listens on a free port of 127.0.0.1 and forwards every connection's bytes both ways
//! to a target. [`Proxy::cut`] drops every open connection and stops listening, so new connections are
//! refused; [`Proxy::heal`] listens again on the same port.
//!
//! A service that hands out its own address (PD's `GetMembers` lists the leader's client URL, which
//! PD's clients then dial for timestamps) would let the client go around the proxy. [`Proxy::rewrite`]
//! replaces one byte string by another of the same length in what the target sends back (the target's
//! URL by the proxy's, e.g. `127.0.0.1:23791` by `127.0.0.1:40123`): lengths stay as they were, so a
//! plain-text HTTP/2 + protobuf stream stays valid. [`sockets_to`] checks from `/proc` which ports a
//! process is connected to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::free_port;

/// A cuttable TCP proxy (stops, with every connection, when dropped).
#[derive(Debug)]
pub struct Proxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    target: SocketAddr,
    rewrite: Arc<Option<(Vec<u8>, Vec<u8>)>>,
    /// `true` while cut; connection tasks and the accept loop watch it.
    cut: watch::Sender<bool>,
    rt: tokio::runtime::Runtime,
}

impl Proxy {
    /// Starts forwarding `127.0.0.1:<free port>` to `target`.
    pub fn start(target: SocketAddr) -> Result<Self> {
        Self::start_on(free_port(), target, None)
    }

    /// As [`Proxy::start`], replacing `from` by `to` (same length) in the bytes the target sends.
    pub fn start_on(port: u16, target: SocketAddr, rewrite: Option<(Vec<u8>, Vec<u8>)>) -> Result<Self> {
        if let Some((from, to)) = &rewrite
            && (from.len() != to.len() || from.is_empty())
        {
            bail!("a proxy rewrite must keep the length: {:?} -> {:?}", String::from_utf8_lossy(from), String::from_utf8_lossy(to));
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let (cut, _) = watch::channel(false);
        let p = Self { port, target, rewrite: Arc::new(rewrite), cut, rt };
        p.listen()?;
        Ok(p)
    }

    /// A proxy to the service at `url` (`http://127.0.0.1:P`) whose URL it hands out, as seen
    /// through the proxy, names the proxy instead (see the module doc); returns it and its URL.
    pub fn rewriting_url(url: &str) -> Result<(Self, String)> {
        let hostport = url.strip_prefix("http://").with_context(|| format!("{url}: only plain http:// is proxied"))?;
        let target: SocketAddr = hostport.parse().with_context(|| format!("{url}: expected http://IP:PORT"))?;
        // The same number of digits, so the rewritten URL has the same length.
        let port = loop {
            let p = free_port();
            if p.to_string().len() == target.port().to_string().len() && p != target.port() {
                break p;
            }
        };
        let from = format!("{}:{}", target.ip(), target.port()).into_bytes();
        let to = format!("{}:{port}", target.ip()).into_bytes();
        let p = Self::start_on(port, target, Some((from, to)))?;
        let url = format!("http://127.0.0.1:{port}");
        Ok((p, url))
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Drops every connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
        // The accept loop closes its listener on the change; wait until the port refuses.
        let _ = crate::wait_until("the proxy to stop listening", Duration::from_secs(5), || {
            std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_millis(100)).is_err()
        });
    }

    /// Listens and forwards again.
    pub fn heal(&self) -> Result<()> {
        self.cut.send_replace(false);
        self.listen()
    }

    fn listen(&self) -> Result<()> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        // The old listener may take a moment to close; the port is ours (SO_REUSEADDR).
        let mut tries = 0;
        let listener = loop {
            match self.rt.block_on(TcpListener::bind(addr)) {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "proxy rebind");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e).with_context(|| format!("proxy listening on {addr}")),
            }
        };
        let (target, rewrite, sender) = (self.target, self.rewrite.clone(), self.cut.clone());
        let mut cut = self.cut.subscribe();
        self.rt.spawn(async move {
            loop {
                tokio::select! {
                    _ = cut.wait_for(|c| *c) => return, // drops the listener: new connections are refused
                    a = listener.accept() => {
                        let Ok((client, _)) = a else { continue };
                        tokio::spawn(forward(client, target, rewrite.clone(), sender.subscribe()));
                    }
                }
            }
        });
        Ok(())
    }
}

/// One connection: bytes both ways until either side closes or the proxy is cut.
async fn forward(client: TcpStream, target: SocketAddr, rewrite: Arc<Option<(Vec<u8>, Vec<u8>)>>, mut cut: watch::Receiver<bool>) {
    let Ok(server) = TcpStream::connect(target).await else { return };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let down = async {
        let mut r = Rewriter::new(rewrite.as_ref().clone());
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Bytes held back as a possible start of the pattern go out if nothing follows soon.
            let read = if r.holding() {
                match tokio::time::timeout(Duration::from_millis(20), sr.read(&mut buf)).await {
                    Ok(x) => x,
                    Err(_) => {
                        let out = r.flush();
                        if cw.write_all(&out).await.is_err() {
                            return;
                        }
                        continue;
                    }
                }
            } else {
                sr.read(&mut buf).await
            };
            match read {
                Ok(0) | Err(_) => {
                    let _ = cw.write_all(&r.flush()).await;
                    return;
                }
                Ok(n) => {
                    let out = r.push(&buf[..n]);
                    if cw.write_all(&out).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // Either direction ending, or the cut, drops both sockets.
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

/// Replaces `from` by `to` (same length) in a byte stream read in pieces.
struct Rewriter {
    pattern: Option<(Vec<u8>, Vec<u8>)>,
    held: Vec<u8>,
}

impl Rewriter {
    fn new(pattern: Option<(Vec<u8>, Vec<u8>)>) -> Self {
        Self { pattern, held: Vec::new() }
    }

    fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// What can be sent after `bytes`: everything except a tail that may be the start of the pattern.
    fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let Some((from, to)) = &self.pattern else { return bytes.to_vec() };
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(bytes);
        let mut i = 0;
        while i + from.len() <= data.len() {
            if data[i..i + from.len()] == from[..] {
                data[i..i + from.len()].copy_from_slice(to);
                i += from.len();
            } else {
                i += 1;
            }
        }
        // The longest tail (shorter than the pattern) that is a prefix of it waits for more bytes.
        let keep = (1..from.len().min(data.len() + 1)).rev().find(|&k| data[data.len() - k..] == from[..k]).unwrap_or(0);
        self.held = data.split_off(data.len() - keep);
        data
    }

    fn flush(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

/// The remote ports of `pid`'s established TCP connections (from `/proc/<pid>/fd` and `/proc/net/tcp`).
pub fn remote_ports(pid: u32) -> Result<Vec<u16>> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("reading /proc/{pid}/fd"))? {
        if let Ok(link) = std::fs::read_link(fd?.path())
            && let Some(inode) = link.to_string_lossy().strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode; state 01 = ESTABLISHED
            if f.len() > 9 && f[3] == "01" && inodes.contains(f[9])
                && let Some(port) = f[2].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    Ok(ports)
}

/// How many established TCP connections `pid` has to `port` on this host.
pub fn sockets_to(pid: u32, port: u16) -> Result<usize> {
    Ok(remote_ports(pid)?.into_iter().filter(|p| *p == port).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rewriter_replaces_across_reads_and_keeps_lengths() {
        let mut r = Rewriter::new(Some((b"1.2:345".to_vec(), b"1.2:999".to_vec())));
        let mut out = r.push(b"xx1.2:3");
        assert_eq!(out, b"xx");
        assert!(r.holding());
        out.extend(r.push(b"45yy1.2:345"));
        out.extend(r.flush());
        assert_eq!(out, b"xx1.2:999yy1.2:999");
        let mut r = Rewriter::new(Some((b"abc".to_vec(), b"xyz".to_vec())));
        assert_eq!(r.push(b"aab"), b"a");
        assert_eq!(r.push(b"d"), b"abd");
        assert_eq!(r.push(b"c"), b"c");
        assert!(!r.holding());
    }

    #[test]
    fn a_cut_drops_connections_and_refuses_new_ones_until_healed() -> Result<()> {
        use std::io::{Read, Write};
        let echo = std::net::TcpListener::bind("127.0.0.1:0")?;
        let target = echo.local_addr()?;
        std::thread::spawn(move || {
            for s in echo.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0 || s.write_all(&b[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let p = Proxy::start(target)?;
        let mut c = std::net::TcpStream::connect(p.addr())?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"ping")?;
        let mut b = [0u8; 4];
        c.read_exact(&mut b)?;
        assert_eq!(&b, b"ping");
        p.cut();
        let mut rest = Vec::new();
        assert!(matches!(c.read_to_end(&mut rest), Ok(0) | Err(_)), "the open connection is dropped");
        assert!(std::net::TcpStream::connect(p.addr()).is_err(), "new connections are refused");
        p.heal()?;
        let mut c = std::net::TcpStream::connect(p.addr())?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"pong")?;
        c.read_exact(&mut b)?;
        assert_eq!(&b, b"pong");
        assert_eq!(sockets_to(std::process::id(), p.port)?, 1, "/proc shows our one connection to the proxy");
        Ok(())
    }
}
