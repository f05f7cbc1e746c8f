//! One listening port for gRPC and HTTP, as upstream's cmux: each request goes to the gRPC router when
//! its `content-type` is `application/grpc...`, otherwise to the HTTP API. HTTP/1.1 and HTTP/2 are both
//! spoken (hyper's auto builder); with `[security]` every connection is TLS first.

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The two routers a connection is served by.
#[derive(Clone)]
pub struct App {
    /// `binlog.Pump` (tonic routes as an axum router).
    pub grpc: Router,
    /// The HTTP API.
    pub http: Router,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("App")
    }
}

/// TLS for accepted connections.
#[derive(Clone)]
pub struct Tls {
    /// The acceptor (client certificates required).
    pub acceptor: TlsAcceptor,
    /// `cert-allowed-cn`; empty = any CN signed by the CA.
    pub allowed_cn: Arc<Vec<String>>,
}

impl Tls {
    /// TLS from `[security]` (client certificates required, `cert-allowed-cn` checked); `None` when
    /// `ssl-ca` is not set. Shared by the pump and the drainer.
    pub fn from_security(sec: &super::Security) -> Result<Option<Tls>, super::tls::TlsError> {
        if !sec.enabled() {
            return Ok(None);
        }
        Ok(Some(Tls {
            acceptor: TlsAcceptor::from(super::tls::server_config(sec)?),
            allowed_cn: Arc::new(sec.cert_allowed_cn.clone()),
        }))
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls(allowed_cn={:?})", self.allowed_cn)
    }
}

fn is_grpc(req: &hyper::Request<hyper::body::Incoming>) -> bool {
    req.headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Serves one connection until the peer closes it.
pub async fn serve_conn<IO>(io: IO, app: App)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = tower::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            if is_grpc(&req) { app.grpc.oneshot(req).await } else { app.http.oneshot(req).await }
        }
    });
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection(TokioIo::new(io), svc).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Accepts TCP connections forever, one task each.
pub async fn serve_tcp(listener: TcpListener, tls: Option<Tls>, app: App) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_conn(stream, app).await,
                Some(tls) => {
                    let conn = match tls.acceptor.accept(stream).await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let cert = conn.get_ref().1.peer_certificates().and_then(|c| c.first());
                    if !super::tls::cn_allowed(&tls.allowed_cn, cert) {
                        let cn = cert.and_then(|c| super::tls::subject_cn(c.as_ref()));
                        tracing::warn!(%peer, ?cn, allowed = ?tls.allowed_cn, "client certificate CN not in cert-allowed-cn");
                        return;
                    }
                    serve_conn(conn, app).await
                }
            }
        });
    }
}

/// Accepts connections on a unix socket forever (gRPC and HTTP alike, no TLS).
pub async fn serve_unix(listener: UnixListener, app: App) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_conn(stream, app.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on unix socket failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
