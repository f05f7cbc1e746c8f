//! PD for the tests: a real `pd-server` when one is installed, else the PD stand-in
//! ([`crate::pd_standin`], the `pd-standin` binary, in front of a real etcd).
//!
//! Which one: `TBRS_PD=real` requires pd-server (an error if it is missing), `TBRS_PD=standin` forces the
//! stand-in, unset takes pd-server when it is found. pd-server is looked for at `$TBRS_PD_SERVER`, then
//! `<tools>/pd-v8.1.2/bin/pd-server`, then on PATH. The Go module proxy these machines reach refuses
//! `github.com/tikv/pd`, so `scripts/install-deps.sh` cannot build it and CI runs the stand-in; a
//! pd-server built by hand into the tools cache makes every test run against the real one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{Etcd, Proc, free_port, our_binary, tools_dir, wait_until};

/// The pd-server version the tools cache keeps.
pub const PD_VERSION: &str = "v8.1.2";

/// pd-server's path if one is installed.
pub fn pd_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TBRS_PD_SERVER") {
        return Some(PathBuf::from(p));
    }
    let cached = tools_dir().join(format!("pd-{PD_VERSION}/bin/pd-server"));
    if cached.is_file() {
        return Some(cached);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("pd-server")).find(|p| p.is_file()))
}

/// Whether the tests run against a real pd-server (see the module doc).
pub fn real_pd() -> Result<Option<PathBuf>> {
    match std::env::var("TBRS_PD").as_deref() {
        Ok("standin") => Ok(None),
        Ok("real") => match pd_server() {
            Some(p) => Ok(Some(p)),
            None => bail!("TBRS_PD=real but no pd-server found (TBRS_PD_SERVER, the tools cache, PATH)"),
        },
        Ok(other) if !other.is_empty() => bail!("TBRS_PD={other:?}: use real or standin"),
        _ => Ok(pd_server()),
    }
}

/// TLS files for a PD that serves TLS and requires client certificates.
#[derive(Debug, Clone)]
pub struct PdTls {
    /// CA.
    pub ca: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// A client certificate and key for the harness's readiness check (default: the server's).
    pub client: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug)]
enum Kind {
    /// A real pd-server: its binary, name, peer port and `--initial-cluster`.
    Real { bin: PathBuf, name: String, peer_port: u16, initial: String },
    /// The stand-in, the etcd behind it and the TiKV address it hands out, if any.
    Standin { etcd: Etcd, tikv: Option<String> },
}

/// One PD member on loopback (data in its own folder, stopped by PID on drop).
#[derive(Debug)]
pub struct Pd {
    /// Client port on 127.0.0.1 (PD's gRPC and its etcd).
    pub port: u16,
    dir: PathBuf,
    kind: Kind,
    tls: Option<PdTls>,
    proc: Proc,
}

impl Pd {
    /// Starts one PD (real or stand-in) with its data in `dir` and waits until it answers.
    pub fn start(dir: &Path) -> Result<Self> {
        Self::start_with(dir, None)
    }

    /// As [`Pd::start`], serving TLS with client-certificate auth.
    pub fn start_with(dir: &Path, tls: Option<PdTls>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port();
        let kind = match real_pd()? {
            Some(bin) => {
                let peer_port = free_port();
                let scheme = if tls.is_some() { "https" } else { "http" };
                let initial = format!("pd1={scheme}://127.0.0.1:{peer_port}");
                Kind::Real { bin, name: "pd1".into(), peer_port, initial }
            }
            None => Kind::Standin { etcd: Etcd::start(&dir.join("etcd"))?, tikv: None },
        };
        let proc = spawn(dir, port, &kind, tls.as_ref())?;
        let pd = Self { port, dir: dir.into(), kind, tls, proc };
        pd.wait_ready()?;
        Ok(pd)
    }

    /// Starts the PD stand-in (even where a real pd-server is installed) telling every caller that one
    /// TiKV store at `tikv` (`host:port`) holds the whole key space: for the pump's resolver tests, with a
    /// TiKV test double, as a real PD only knows regions once a real TiKV joined.
    pub fn start_standin_with_tikv(dir: &Path, tikv: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port();
        let kind = Kind::Standin { etcd: Etcd::start(&dir.join("etcd"))?, tikv: Some(tikv.to_owned()) };
        let proc = spawn(dir, port, &kind, None)?;
        let pd = Self { port, dir: dir.into(), kind, tls: None, proc };
        pd.wait_ready()?;
        Ok(pd)
    }

    /// Starts `n` real pd-server members as one cluster (each in `dir/pd<i>`) and waits until a leader
    /// serves. Refused without a real pd-server: the stand-in has one member.
    pub fn start_members(dir: &Path, n: usize) -> Result<Vec<Self>> {
        let Some(bin) = real_pd()? else { bail!("a {n}-member PD needs a real pd-server (none installed)") };
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial =
            ports.iter().enumerate().map(|(i, (_, p))| format!("pd{}=http://127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");
        let mut out = Vec::new();
        for (i, (port, peer_port)) in ports.into_iter().enumerate() {
            let d = dir.join(format!("pd{}", i + 1));
            std::fs::create_dir_all(&d)?;
            let kind =
                Kind::Real { bin: bin.clone(), name: format!("pd{}", i + 1), peer_port, initial: initial.clone() };
            let proc = spawn(&d, port, &kind, None)?;
            out.push(Self { port, dir: d, kind, tls: None, proc });
        }
        for pd in &out {
            pd.wait_ready()?;
        }
        Ok(out)
    }

    /// Whether this is a real pd-server.
    pub fn is_real(&self) -> bool {
        matches!(self.kind, Kind::Real { .. })
    }

    /// The member's name (`pd1`, ...; `pd-standin` for the stand-in).
    pub fn name(&self) -> &str {
        match &self.kind {
            Kind::Real { name, .. } => name,
            Kind::Standin { .. } => "pd-standin",
        }
    }

    /// `http://127.0.0.1:PORT` (`https` with TLS), what `pd-urls` takes.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// Kills PD with SIGKILL (data stays; the stand-in's etcd stays up behind it, unreachable to clients).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts PD again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.kill();
        self.proc = spawn(&self.dir, self.port, &self.kind, self.tls.as_ref())?;
        self.wait_ready()
    }

    /// Kills PD with SIGKILL together with its store: a real pd-server's embedded etcd dies with it,
    /// the stand-in's etcd is killed too (data stays). [`Pd::restart_all`] starts both again.
    pub fn kill_all(&mut self) {
        self.proc.kill();
        if let Kind::Standin { etcd, .. } = &mut self.kind {
            etcd.kill();
        }
    }

    /// Starts PD (and the stand-in's etcd) again on the same ports and data, and waits until it serves.
    pub fn restart_all(&mut self) -> Result<()> {
        if let Kind::Standin { etcd, .. } = &mut self.kind {
            etcd.restart()?;
        }
        self.restart()
    }

    /// Starts a killed member again without waiting for it to serve (a member of a cluster whose
    /// quorum may be elsewhere).
    pub fn restart_no_wait(&mut self) -> Result<()> {
        self.proc.kill();
        self.proc = spawn(&self.dir, self.port, &self.kind, self.tls.as_ref())?;
        Ok(())
    }

    fn wait_ready(&self) -> Result<()> {
        let cfg = pump::etcd::EtcdConfig {
            endpoints: vec![self.url()],
            ssl_ca: self.tls.as_ref().map(|t| t.ca.clone()),
            ssl_cert: self.tls.as_ref().map(|t| t.client.as_ref().map_or(&t.cert, |c| &c.0).clone()),
            ssl_key: self.tls.as_ref().map(|t| t.client.as_ref().map_or(&t.key, |c| &c.1).clone()),
            ..Default::default()
        };
        let opts = pump::pd::PdOptions { retry_for: Duration::from_secs(1), attempt_timeout: Duration::from_secs(1) };
        let mut last = String::new();
        wait_until("PD to serve members, a ts and its etcd", Duration::from_secs(60), || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let r: Result<()> = rt.block_on(async {
                let pd = pump::pd::PdClient::connect_with(&cfg, opts.clone()).await?;
                pd.get_ts().await?;
                pump::etcd::connect(&cfg).await?.get("/pd/cluster_id", None).await?;
                Ok(())
            });
            r.map_err(|e| last = format!("{e:#}")).is_ok()
        })
        .with_context(|| format!("{} at {}: last error: {last}\n{}", self.name(), self.url(), self.proc.log_tail()))
    }
}

fn spawn(dir: &Path, port: u16, kind: &Kind, tls: Option<&PdTls>) -> Result<Proc> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let client = format!("{scheme}://127.0.0.1:{port}");
    match kind {
        Kind::Real { bin, name, peer_port, initial } => {
            let mut cmd = Command::new(bin);
            cmd.args(["--name", name, "--data-dir"])
                .arg(dir.join("data"))
                .args(["--client-urls", &client, "--peer-urls", &format!("{scheme}://127.0.0.1:{peer_port}")])
                .args(["--initial-cluster", initial]);
            if let Some(t) = tls {
                cmd.arg("--cacert").arg(&t.ca).arg("--cert").arg(&t.cert).arg("--key").arg(&t.key);
            }
            Proc::spawn(name, cmd, &dir.join("pd.log"))
        }
        Kind::Standin { etcd, tikv } => {
            let mut cmd = Command::new(our_binary("pd-standin"));
            cmd.args(["--client-urls", &client, "--etcd", &etcd.url()]);
            if let Some(t) = tikv {
                cmd.args(["--tikv", t]);
            }
            if let Some(t) = tls {
                cmd.arg("--cacert").arg(&t.ca).arg("--cert").arg(&t.cert).arg("--key").arg(&t.key);
            }
            Proc::spawn("pd-standin", cmd, &dir.join("pd.log"))
        }
    }
}

/// The cluster id and one fresh ts from the PD at `url` (plain http) through the generated gRPC client
/// alone: one `GetMembers`, one `Tso` request of count 1 on a stream of its own. A path independent of
/// `pump::pd::PdClient`'s batching, to check what that client hands out.
pub async fn raw_ts(url: &str) -> Result<(u64, u64)> {
    use pump::proto::pdpb::pd_client::PdClient as PdRpc;
    use pump::proto::pdpb::{GetMembersRequest, RequestHeader, TsoRequest};
    let mut rpc = PdRpc::connect(url.to_owned()).await.with_context(|| format!("connecting to {url}"))?;
    let members = rpc.get_members(GetMembersRequest { header: None }).await?.into_inner();
    let cluster_id = members.header.context("GetMembers without a header")?.cluster_id;
    let header = Some(RequestHeader { cluster_id, sender_id: 0 });
    let req = TsoRequest { header, count: 1, dc_location: String::new() };
    let mut resp = rpc.tso(futures::stream::iter([req])).await?.into_inner();
    let r = resp.message().await?.context("the Tso stream ended")?;
    let t = r.timestamp.context("a TsoResponse without a timestamp")?;
    Ok((cluster_id, pump::tso::compose(t.physical as u64, t.logical as u64)))
}

/// The cluster id PD keeps in its etcd at `/pd/cluster_id` (8 bytes, big-endian): a second path to it.
pub async fn stored_cluster_id(url: &str) -> Result<u64> {
    let mut c = etcd_client::Client::connect([url], None).await?;
    let resp = c.get(crate::pd_standin::CLUSTER_ID_KEY, None).await?;
    let v = resp.kvs().first().context("no /pd/cluster_id")?.value();
    Ok(u64::from_be_bytes(v.try_into().context("/pd/cluster_id is not 8 bytes")?))
}
