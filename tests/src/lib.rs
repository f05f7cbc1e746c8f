//! The process-level test harness: starts real services (PD, etcd, MariaDB, Apache Kafka) and our
//! binaries on loopback, each in its own temp directory, and stops them by PID on drop.
//!
//! # Layout
//! - [`Cluster`] / [`ClusterBuilder`]: what a test asks for, started in one call.
//! - [`Pd`] ([`pd`]): a real pd-server when installed, else the PD stand-in ([`pd_standin`]) in front of
//!   an [`Etcd`].
//! - [`Etcd`], [`MariaDb`], [`Kafka`]: one real service each (Kafka in module [`kafka`]).
//! - [`Proc`]: a child process killed (and reaped) on drop.
//!
//! Where the service binaries come from: `scripts/install-deps.sh` (apt for etcd and MariaDB, Maven
//! Central for Kafka's jars under `$TBRS_TOOLS`, default `~/.cache/tbrs`). A missing binary is an error that
//! names the install script, never a silently skipped test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod e2e;
pub mod kafka;
pub mod nodes;
pub mod pd;
pub mod pd_standin;
pub mod pki;
pub mod proxy;
pub mod scripted;
pub mod tikv_double;

pub use kafka::Kafka;
pub use pd::Pd;

/// A child process that is killed with SIGKILL and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Self { name: name.into(), child: Some(child), log: log.into() })
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) without waiting.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // The pid is our own child, not yet reaped, so it cannot have been reused.
            let pid = i32::try_from(c.id()).expect("pid fits in i32");
            let _ = unsafe_free_kill(pid, sig);
        }
    }

    /// Kills with SIGKILL and reaps.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; returns its exit code if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The tail of the process log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!("--- last lines of {} ({}) ---\n{}", self.name, self.log.display(), lines[from..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kill(2)` through the `kill` command, so this crate needs no `unsafe`.
fn unsafe_free_kill(pid: i32, sig: i32) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status()
}

/// Ports [`free_port`] hands out: below the kernel's ephemeral range (32768–60999 by default), where
/// client sockets and `:0` binds of every process land, so a port picked here and bound a moment later
/// by the service cannot have been taken by someone's outgoing connection in between.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1 for a service a test starts: never the same one twice in this process
/// (a counter walks [`PORT_RANGE`] from a per-process offset), and one nobody listens on right now.
/// (Taking the kernel's `:0` port and releasing it let a parallel test's client connection or a child's
/// `:0` bind take it before the service bound it: a drainer once read another server's 404s.)
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
    let _ = NEXT.compare_exchange(u32::MAX, std::process::id().wrapping_mul(7919) % span, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let i = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = PORT_RANGE.start + u16::try_from(i).expect("span fits u16");
        // A listener there makes the bind fail (SO_REUSEADDR only lets it pass TIME_WAIT sockets).
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORT_RANGE:?}")
}

/// Polls `f` every 50 ms until it returns `Ok(true)` or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Finds a service binary on PATH or in the listed places, or says how to install it.
pub fn find_binary(name: &str, extra: &[PathBuf]) -> Result<PathBuf> {
    for dir in extra.iter().cloned().chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("`{name}` not found on PATH or in {extra:?}; run scripts/install-deps.sh first")
}

/// Where `scripts/install-deps.sh` puts tools it fetches (Kafka's jars).
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("TBRS_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/tbrs"),
    }
}

/// A real single-node etcd on loopback.
#[derive(Debug)]
pub struct Etcd {
    /// Client port on 127.0.0.1.
    pub port: u16,
    proc: Proc,
    dir: PathBuf,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd with its data in `dir` and waits until it answers.
    pub fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (port, peer_port) = (free_port(), free_port());
        let proc = Self::spawn(dir, port, peer_port)?;
        let etcd = Self { port, proc, dir: dir.into(), peer_port };
        etcd.wait_ready()?;
        Ok(etcd)
    }

    fn spawn(dir: &Path, port: u16, peer_port: u16) -> Result<Proc> {
        let bin = find_binary("etcd", &[])?;
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(bin);
        cmd.args(["--name", "n1", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n1={peer}")]);
        Proc::spawn("etcd", cmd, &dir.join("etcd.log"))
    }

    fn wait_ready(&self) -> Result<()> {
        let url = self.url();
        wait_until("etcd to answer", Duration::from_secs(20), || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                match etcd_client::Client::connect([url.as_str()], None).await {
                    Ok(mut c) => c.status().await.is_ok(),
                    Err(_) => false,
                }
            })
        })
        .with_context(|| self.proc.log_tail())
    }

    /// `http://127.0.0.1:PORT`, what `pd-urls` takes.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills etcd with SIGKILL (data stays).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.kill();
        self.proc = Self::spawn(&self.dir, self.port, self.peer_port)?;
        self.wait_ready()
    }
}

/// A real MariaDB server on loopback with its own datadir, port and socket; root has no password.
#[derive(Debug)]
pub struct MariaDb {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    proc: Proc,
    dir: PathBuf,
    extra: Vec<String>,
}

impl MariaDb {
    /// Initializes a datadir in `dir`, starts the server and waits until root can log in over TCP.
    pub fn start(dir: &Path) -> Result<Self> {
        Self::start_with(dir, &[])
    }

    /// [`MariaDb::start`] with extra server options (e.g. `--ssl-ca=..`), kept for restarts.
    pub fn start_with(dir: &Path, extra: &[String]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let install = find_binary("mariadb-install-db", &[PathBuf::from("/usr/bin")])?;
        // Each instance gets its own tmpdir: many servers start at once in tests, and a shared /tmp
        // made bootstraps fail on each other's temp tables.
        std::fs::create_dir_all(dir.join("tmp"))?;
        let out = Command::new(install)
            .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal"])
            .args(["--skip-test-db", "--innodb-log-file-size=8M"])
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--datadir={}", dir.join("data").display()))
            .output()
            .context("running mariadb-install-db")?;
        if !out.status.success() {
            bail!("mariadb-install-db failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = free_port();
        let proc = Self::spawn(dir, port, extra)?;
        let db = Self { port, proc, dir: dir.into(), extra: extra.to_vec() };
        db.wait_ready()?;
        Ok(db)
    }

    fn spawn(dir: &Path, port: u16, extra: &[String]) -> Result<Proc> {
        let bin = find_binary("mariadbd", &[PathBuf::from("/usr/sbin")])?;
        let mut cmd = Command::new(bin);
        cmd.args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1", "--innodb-log-file-size=8M"])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("s.sock").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", dir.join("err.log").display()))
            .arg(format!("--port={port}"))
            .args(extra);
        Proc::spawn("mariadbd", cmd, &dir.join("mariadbd.out"))
    }

    fn wait_ready(&self) -> Result<()> {
        let url = self.url();
        wait_until("MariaDB to accept root over TCP", Duration::from_secs(60), || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                match mysql_async::Conn::from_url(url.as_str()).await {
                    Ok(c) => {
                        let _ = c.disconnect().await;
                        true
                    }
                    Err(_) => false,
                }
            })
        })
        .with_context(|| std::fs::read_to_string(self.dir.join("err.log")).unwrap_or_default())
    }

    /// `mysql://root@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL (data stays).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the server again on the same port and datadir.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.kill();
        self.proc = Self::spawn(&self.dir, self.port, &self.extra)?;
        self.wait_ready()
    }
}

/// What a test asks the harness to start.
#[derive(Debug, Default)]
pub struct ClusterBuilder {
    pd: bool,
    upstream_db: bool,
    downstream_db: bool,
    kafka: bool,
}

impl ClusterBuilder {
    /// Start a PD (real pd-server, or the PD stand-in: [`pd`]).
    pub fn pd(mut self) -> Self {
        self.pd = true;
        self
    }
    /// Start a MariaDB that plays the upstream truth.
    pub fn upstream_db(mut self) -> Self {
        self.upstream_db = true;
        self
    }
    /// Start a MariaDB that plays the downstream.
    pub fn downstream_db(mut self) -> Self {
        self.downstream_db = true;
        self
    }
    /// Start a single-node Apache Kafka.
    pub fn kafka(mut self) -> Self {
        self.kafka = true;
        self
    }

    /// Starts everything asked for, each in its own folder under one temp dir.
    pub fn start(self) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("tbrs-cluster-").tempdir()?;
        let root = dir.path().to_path_buf();
        Ok(Cluster {
            pd: if self.pd { Some(Pd::start(&root.join("pd"))?) } else { None },
            upstream: if self.upstream_db { Some(MariaDb::start(&root.join("upstream"))?) } else { None },
            downstream: if self.downstream_db { Some(MariaDb::start(&root.join("downstream"))?) } else { None },
            kafka: if self.kafka { Some(Kafka::start(&root.join("kafka"))?) } else { None },
            dir,
        })
    }
}

/// A running set of real services; everything stops (by PID) and the temp dir is removed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// The PD, if asked for.
    pub pd: Option<Pd>,
    /// The upstream MariaDB, if asked for.
    pub upstream: Option<MariaDb>,
    /// The downstream MariaDB, if asked for.
    pub downstream: Option<MariaDb>,
    /// The Kafka broker, if asked for.
    pub kafka: Option<Kafka>,
    // Declared last so the processes above are killed before their folders go.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts describing a cluster.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The cluster's temp dir, for data dirs of our own binaries.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the temp dir (every log and data dir in it) after the cluster stops, for a failure to be
    /// looked at afterwards; returns its path.
    pub fn keep_dir(&mut self) -> &Path {
        self.dir.disable_cleanup(true);
        self.dir.path()
    }

    /// The PD (panics with a clear message if the test did not ask for it).
    pub fn pd(&self) -> &Pd {
        self.pd.as_ref().expect("the test did not ask for PD")
    }
}

/// Path of one of our workspace binaries: beside the running executable, or one level up when the caller
/// is a test in `target/<profile>/deps`.
pub fn our_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir.join(name)
}
