//! Our own daemons as child processes: pumps and drainers started with upstream's flags against the
//! harness's etcd, waited for until they register `online`, killable and restartable on the same data.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pump::node::{NodeKind, NodeState, NodeStatus, Registry};

use crate::{Proc, free_port, our_binary, wait_until};

/// Reads one node's registry entry from etcd (`None` if it is not registered yet).
pub fn node_status(etcd_url: &str, kind: NodeKind, id: &str) -> Result<Option<NodeStatus>> {
    block_on(async {
        let client = etcd_client::Client::connect([etcd_url], None).await?;
        Ok(Registry::new(client).get(kind, id).await?)
    })
}

/// Lists every registered node of `kind`.
pub fn list_nodes(etcd_url: &str, kind: NodeKind) -> Result<Vec<NodeStatus>> {
    block_on(async {
        let client = etcd_client::Client::connect([etcd_url], None).await?;
        Ok(Registry::new(client).list(kind).await?)
    })
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}

/// One daemon of ours (`pump` or `drainer`) run with fixed arguments, restartable on the same data dir.
#[derive(Debug)]
pub struct Node {
    /// Which daemon.
    pub kind: NodeKind,
    /// The node id it registers under (we pass `-node-id`).
    pub node_id: String,
    /// Its gRPC + HTTP port on 127.0.0.1.
    pub port: u16,
    /// Its data dir (and log file, `<dir>/<kind>.log`).
    pub dir: PathBuf,
    etcd_url: String,
    args: Vec<String>,
    proc: Option<Proc>,
}

impl Node {
    /// Starts `pump` with `-addr`, `-data-dir`, `-pd-urls`, `-node-id` and `extra` flags, and waits until
    /// it is `online` in etcd. Without a `-config` among `extra` it gets one that stops writes only below
    /// 1 MiB free, so tests do not depend on the machine's free disk (upstream's default is 10 GiB), and
    /// 2 store shards, so the pump's tests run through the sharded front (the default is 1 shard).
    pub fn pump(dir: &Path, etcd_url: &str, node_id: &str, extra: &[String]) -> Result<Self> {
        let mut args = Vec::new();
        if !extra.iter().any(|a| a.trim_start_matches('-').starts_with("config")) {
            std::fs::create_dir_all(dir)?;
            let cfg = dir.join("pump-test.toml");
            std::fs::write(&cfg, "[storage]\nstop-write-at-available-space = \"1 MiB\"\nshards = 2\n")?;
            args.push(format!("-config={}", cfg.display()));
        }
        args.extend(extra.iter().cloned());
        Self::start(NodeKind::Pump, dir, etcd_url, node_id, &args)
    }

    /// Starts `drainer` the same way (put sink settings in a `-config` file among `extra`).
    pub fn drainer(dir: &Path, etcd_url: &str, node_id: &str, extra: &[String]) -> Result<Self> {
        Self::start(NodeKind::Drainer, dir, etcd_url, node_id, extra)
    }

    fn start(kind: NodeKind, dir: &Path, etcd_url: &str, node_id: &str, extra: &[String]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port();
        let mut args = vec![
            format!("-addr=127.0.0.1:{port}"),
            format!("-advertise-addr=127.0.0.1:{port}"),
            format!("-data-dir={}", dir.join("data").display()),
            format!("-pd-urls={etcd_url}"),
            format!("-node-id={node_id}"),
        ];
        args.extend(extra.iter().cloned());
        let mut node = Self {
            kind,
            node_id: node_id.into(),
            port,
            dir: dir.into(),
            etcd_url: etcd_url.into(),
            args,
            proc: None,
        };
        node.restart()?;
        Ok(node)
    }

    /// The process id while it runs.
    pub fn pid(&mut self) -> Option<u32> {
        if self.is_running() { self.proc.as_ref().map(Proc::pid) } else { None }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process log.
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.kind.name()))
    }

    /// Kills the process with SIGKILL (no chance to update its state in etcd).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Sends a signal and waits up to `timeout` for the process to exit; true if it did.
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> bool {
        let Some(p) = self.proc.as_mut() else { return true };
        p.signal(sig);
        let exited = p.wait_exit(timeout).is_some();
        if exited {
            self.proc = None;
        }
        exited
    }

    /// Sends a signal (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) without waiting.
    pub fn signal(&self, sig: i32) {
        if let Some(p) = self.proc.as_ref() {
            p.signal(sig);
        }
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let st = self.proc.as_mut()?.wait_exit(timeout);
        if st.is_some() {
            self.proc = None;
        }
        st
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running())
    }

    /// (Re)starts the process with the same arguments and data, and waits until it is `online` in etcd
    /// with an update time after this start.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let bin = our_binary(self.kind.name());
        if !bin.is_file() {
            bail!("{} not built at {}: run `cargo build --workspace --bins`", self.kind.name(), bin.display());
        }
        let mut cmd = Command::new(bin);
        cmd.args(&self.args);
        let started_ms = pump::tso::now_ms();
        self.proc = Some(Proc::spawn(self.kind.name(), cmd, &self.log())?);
        let (url, kind, id) = (self.etcd_url.clone(), self.kind, self.node_id.clone());
        let mut proc_dead = false;
        let res = wait_until(&format!("{} {id} to be online in etcd", kind.name()), Duration::from_secs(60), || {
            if !self.proc.as_mut().is_some_and(|p| p.is_running()) {
                proc_dead = true;
                return true;
            }
            // updateTS is a TSO written at each heartbeat: fresh means written after this start.
            matches!(node_status(&url, kind, &id), Ok(Some(s)) if s.state == NodeState::Online
                && pump::tso::physical_ms(s.update_ts.max(0) as u64) >= started_ms)
        });
        let tail = self.proc.as_ref().map(|p| p.log_tail()).unwrap_or_default();
        if proc_dead {
            bail!("{} {} exited during start\n{tail}", kind.name(), self.node_id);
        }
        res.with_context(|| tail)
    }
}
