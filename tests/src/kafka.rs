//! A real Apache Kafka (4.x, KRaft) on loopback: one node, or a cluster of several nodes that are each
//! broker and controller, in a temp dir, stopped by PID.
//!
//! The jars come from Maven Central through `scripts/install-kafka.sh` (called by
//! `scripts/install-deps.sh`) into `$TBRS_TOOLS/kafka-<version>/libs`; the version is the one in
//! `scripts/kafka/pom.xml`. Each node's storage is formatted (`kafka.tools.StorageTool format`) before
//! its first start; a restart keeps its data, as a real broker does.
//!
//! Tests start the JVM with quick-start flags (C1 only, serial GC, small heap): a broker is up in a
//! few seconds on two cores. Benchmarks pass the JVM's defaults through [`KafkaBuilder::jvm_opts`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{Proc, free_port, port_open, tools_dir, wait_until};

/// The pom that pins the Kafka version the install script resolves.
const POM: &str = include_str!("../../scripts/kafka/pom.xml");

/// The broker's log configuration (INFO to stdout, which the harness sends to the node's log file).
const LOG4J: &str = include_str!("../../scripts/kafka/log4j2.properties");

/// The cluster id every node is formatted with (any 16 bytes, base64url without padding).
const CLUSTER_ID: &str = "dGJycy10ZXN0LWthZmthLg";

/// JVM flags for tests: start fast, use little memory.
pub const QUICK_JVM: &[&str] = &["-Xms64m", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData"];

/// JVM flags for benchmarks: the JIT's full tiers and a 1 GiB heap.
pub const BENCH_JVM: &[&str] = &["-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:-UsePerfData"];

/// The Kafka version in `scripts/kafka/pom.xml`.
pub fn kafka_version() -> &'static str {
    POM.split("<kafka.version>").nth(1).and_then(|s| s.split('<').next()).expect("scripts/kafka/pom.xml names <kafka.version>")
}

/// The folder of Kafka's jars, or an error naming the install script.
pub fn kafka_libs() -> Result<PathBuf> {
    let home = tools_dir().join(format!("kafka-{}", kafka_version()));
    if !home.join(".complete").is_file() {
        bail!("Apache Kafka {} is not installed in {}; run scripts/install-deps.sh first", kafka_version(), home.display());
    }
    Ok(home.join("libs"))
}

/// What a test asks for; see [`Kafka::builder`].
#[derive(Debug, Clone)]
pub struct KafkaBuilder {
    nodes: usize,
    jvm: Vec<String>,
    props: Vec<(String, String)>,
}

impl KafkaBuilder {
    /// Number of nodes (each broker and controller; default 1).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n.max(1);
        self
    }

    /// Replaces the JVM flags ([`QUICK_JVM`] by default).
    pub fn jvm_opts(mut self, opts: &[&str]) -> Self {
        self.jvm = opts.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Adds or overrides one line of every node's `server.properties`.
    pub fn prop(mut self, key: &str, value: impl ToString) -> Self {
        self.props.retain(|(k, _)| k != key);
        self.props.push((key.into(), value.to_string()));
        self
    }

    /// Formats every node's storage under `dir`, starts them and waits until every broker is in the
    /// cluster's metadata.
    pub fn start(self, dir: &Path) -> Result<Kafka> {
        let libs = kafka_libs()?;
        std::fs::create_dir_all(dir)?;
        let log4j = dir.join("log4j2.properties");
        std::fs::write(&log4j, LOG4J)?;
        let ports: Vec<(u16, u16)> = (0..self.nodes).map(|_| (free_port(), free_port())).collect();
        let voters = ports.iter().enumerate().map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1)).collect::<Vec<_>>().join(",");
        let replicas = self.nodes.min(3);
        let mut nodes = Vec::new();
        for (i, &(port, controller_port)) in ports.iter().enumerate() {
            let ndir = dir.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&ndir)?;
            let mut props = vec![
                ("process.roles", "broker,controller".to_string()),
                ("node.id", (i + 1).to_string()),
                ("controller.quorum.voters", voters.clone()),
                ("listeners", format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}")),
                ("advertised.listeners", format!("PLAINTEXT://127.0.0.1:{port}")),
                ("controller.listener.names", "CONTROLLER".into()),
                ("inter.broker.listener.name", "PLAINTEXT".into()),
                ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into()),
                ("log.dirs", ndir.join("data").display().to_string()),
                ("num.partitions", "1".into()),
                ("default.replication.factor", replicas.to_string()),
                ("min.insync.replicas", replicas.min(2).to_string()),
                ("offsets.topic.replication.factor", replicas.to_string()),
                ("transaction.state.log.replication.factor", replicas.to_string()),
                ("transaction.state.log.min.isr", replicas.min(2).to_string()),
                ("group.initial.rebalance.delay.ms", "0".into()),
                ("auto.create.topics.enable", "false".into()),
            ];
            props.retain(|(k, _)| !self.props.iter().any(|(pk, _)| pk == k));
            let mut text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            for (k, v) in &self.props {
                text.push_str(&format!("{k}={v}\n"));
            }
            std::fs::write(ndir.join("server.properties"), text)?;
            nodes.push(Node { id: i + 1, port, dir: ndir, proc: None });
        }
        let kafka = Kafka { nodes, libs, jvm: self.jvm, log4j };
        // Format every node's storage at once (a JVM each).
        let formats: Vec<_> = kafka.nodes.iter().map(|n| kafka.format(n)).collect::<Result<_>>()?;
        for (n, child) in kafka.nodes.iter().zip(formats) {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!("formatting kafka node {} failed: {}{}", n.id, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            }
        }
        let mut kafka = kafka;
        for i in 0..kafka.nodes.len() {
            kafka.spawn(i)?;
        }
        for i in 0..kafka.nodes.len() {
            kafka.wait_listening(i)?;
        }
        kafka.wait_brokers(kafka.nodes.len())?;
        Ok(kafka)
    }
}

/// One node of a [`Kafka`] cluster.
#[derive(Debug)]
struct Node {
    id: usize,
    port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

/// A running Apache Kafka cluster on loopback (one node unless asked otherwise). Every node is
/// killed by PID when it is dropped.
#[derive(Debug)]
pub struct Kafka {
    nodes: Vec<Node>,
    libs: PathBuf,
    jvm: Vec<String>,
    log4j: PathBuf,
}

impl Kafka {
    /// A single node with quick-start JVM flags.
    pub fn start(dir: &Path) -> Result<Self> {
        Self::builder().start(dir)
    }

    /// Starts describing a cluster.
    pub fn builder() -> KafkaBuilder {
        KafkaBuilder { nodes: 1, jvm: QUICK_JVM.iter().map(|s| s.to_string()).collect(), props: Vec::new() }
    }

    fn java(&self, main: &str) -> Command {
        let mut cmd = Command::new("java");
        cmd.args(&self.jvm)
            .arg(format!("-Dlog4j2.configurationFile={}", self.log4j.display()))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .arg(main);
        cmd
    }

    fn format(&self, n: &Node) -> Result<std::process::Child> {
        let mut cmd = self.java("kafka.tools.StorageTool");
        cmd.args(["format", "--ignore-formatted", "-t", CLUSTER_ID, "-c"])
            .arg(n.dir.join("server.properties"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().context("starting java (Java 17 is needed for Kafka)")
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let mut cmd = self.java("kafka.Kafka");
        let n = &self.nodes[i];
        cmd.arg(n.dir.join("server.properties"));
        let proc = Proc::spawn(&format!("kafka node {}", n.id), cmd, &n.dir.join("kafka.log"))?;
        self.nodes[i].proc = Some(proc);
        Ok(())
    }

    fn wait_listening(&self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        let port = n.port;
        wait_until(&format!("kafka node {} to listen", n.id), Duration::from_secs(60), || port_open(port))
            .with_context(|| n.proc.as_ref().map(|p| p.log_tail()).unwrap_or_default())
    }

    /// Waits until the cluster's metadata lists `want` brokers.
    fn wait_brokers(&self, want: usize) -> Result<()> {
        let addr = self.addrs();
        let mut last = String::new();
        wait_until(&format!("{want} kafka brokers in the metadata"), Duration::from_secs(60), || {
            let Ok(c) = ClientConfig::new().set("bootstrap.servers", &addr).create::<BaseConsumer>() else { return false };
            match c.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(md) => {
                    last = format!("{} brokers", md.brokers().len());
                    md.brokers().len() >= want
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        })
        .with_context(|| format!("last answer: {last}\n{}", self.nodes.iter().filter_map(|n| n.proc.as_ref()).map(|p| p.log_tail()).collect::<Vec<_>>().join("\n")))
    }

    /// Every node's `127.0.0.1:PORT`, comma-separated: what `kafka-addrs` takes.
    pub fn addrs(&self) -> String {
        self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// The first node's `127.0.0.1:PORT` (the only one of a single node).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.nodes[0].port)
    }

    /// The broker port of node `id` (1-based, as Kafka's `node.id`).
    pub fn port_of(&self, id: usize) -> u16 {
        self.nodes[id - 1].port
    }

    /// The OS process id of node `id` (1-based), 0 when it is not running.
    pub fn pid(&self, id: usize) -> u32 {
        self.nodes[id - 1].proc.as_ref().map(Proc::pid).unwrap_or(0)
    }

    /// Kills node `id` (1-based) with SIGKILL; its data stays.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut p) = self.nodes[id - 1].proc.take() {
            p.kill();
        }
    }

    /// Starts node `id` again on the same ports and data and waits until the cluster lists every
    /// running broker.
    pub fn start_node(&mut self, id: usize) -> Result<()> {
        self.kill(id);
        self.spawn(id - 1)?;
        self.wait_listening(id - 1)?;
        let running = self.nodes.iter().filter(|n| n.proc.is_some()).count();
        self.wait_brokers(running)
    }

    /// Kills node `id` with SIGKILL and starts it again.
    pub fn restart(&mut self, id: usize) -> Result<()> {
        self.start_node(id)
    }

    /// The last lines of node `id`'s log, for failure messages.
    pub fn log_tail(&self, id: usize) -> String {
        self.nodes[id - 1].proc.as_ref().map(|p| p.log_tail()).unwrap_or_else(|| format!("kafka node {id} is not running"))
    }

    /// Creates a topic (replication = the node count up to 3) with extra topic configs, e.g.
    /// `("max.message.bytes", "20000")`.
    pub async fn create_topic(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", self.addrs()).create()?;
        let replicas = self.nodes.len().min(3) as i32;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        for r in admin.create_topics([&topic], &opts).await? {
            if let Err((t, code)) = r {
                bail!("creating topic {t}: {code}");
            }
        }
        Ok(())
    }

    /// Reads `topic` from the beginning with Kafka's own console consumer (Java, not our code) until
    /// `max` messages or 20 s without one; returns the message values, one per line.
    pub fn console_consume(&self, topic: &str, max: usize) -> Result<Vec<String>> {
        let mut cmd = self.java("org.apache.kafka.tools.consumer.ConsoleConsumer");
        cmd.args(["--bootstrap-server", &self.addrs(), "--topic", topic, "--from-beginning"])
            .args(["--max-messages", &max.to_string(), "--timeout-ms", "20000"]);
        let out = cmd.output().context("running Kafka's console consumer")?;
        if !out.status.success() && out.stdout.is_empty() {
            bail!("console consumer failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.lines().map(str::to_string).collect())
    }

    /// The node id leading `topic`/`partition`, from the cluster's metadata.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Result<usize> {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", self.addrs()).create()?;
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let t = md.topics().iter().find(|t| t.name() == topic).context("topic not in metadata")?;
        let p = t.partitions().iter().find(|p| p.id() == partition).context("partition not in metadata")?;
        usize::try_from(p.leader()).context("partition has no leader")
    }
}
