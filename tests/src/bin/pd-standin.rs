//! `pd-standin`: the PD stand-in (`tests::pd_standin`) as a process, started by the test harness where no
//! real pd-server is installed. Flags follow pd-server's where they mean the same thing.
//!
//! `pd-standin --client-urls http://127.0.0.1:P --etcd http://127.0.0.1:E [--cacert CA --cert C --key K]
//! [--tikv HOST:PORT]`

use anyhow::{Context, Result, bail};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "PD stand-in: pdpb.PD (members, TSO, one region) and etcd's API forwarded to a real etcd, on one port")]
struct Args {
    /// The one client URL to listen on and advertise (`http://127.0.0.1:P`, `https://` with TLS).
    #[arg(long = "client-urls")]
    client_urls: String,
    /// The etcd behind the stand-in.
    #[arg(long)]
    etcd: String,
    /// CA of client certificates (turns TLS on with --cert and --key).
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    /// Server certificate.
    #[arg(long)]
    cert: Option<std::path::PathBuf>,
    /// Server key.
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// One TiKV store holding the whole key space (ours; for the pump's resolver tests).
    #[arg(long)]
    tikv: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let a = Args::parse();
    let hostport = a.client_urls.strip_prefix("http://").or_else(|| a.client_urls.strip_prefix("https://")).unwrap_or(&a.client_urls);
    let listen = hostport.trim_end_matches('/').parse().with_context(|| format!("--client-urls {}", a.client_urls))?;
    let tls = match (a.cacert, a.cert, a.key) {
        (Some(ca), Some(cert), Some(key)) => Some((ca, cert, key)),
        (None, None, None) => None,
        _ => bail!("--cacert, --cert and --key go together"),
    };
    tests::pd_standin::serve(tests::pd_standin::Options { listen, etcd: a.etcd, tls, tikv: a.tikv }).await
}
