//! The Kafka sink's settings: brokers, topic, format, partitioning, limits.

use std::time::Duration;

use rdkafka::ClientConfig;

/// librdkafka's ceiling for `message.max.bytes`.
pub(super) const RDKAFKA_MAX_MESSAGE: usize = 1_000_000_000;

/// How messages are spread over partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// Everything to partition 0 (upstream). Total commit-ts order.
    Single,
    /// By `schema.table`: a table's changes stay in commit-ts order in one partition; a transaction
    /// touching several tables becomes one message per partition, each with the transaction's commit
    /// ts. DDL goes to every partition.
    Table,
    /// By primary-key values (tables without a PK fall back to the table): one key's changes stay in
    /// order in one partition. DDL goes to every partition.
    PrimaryKey,
    /// By the values of [`KafkaConfig::partition_columns`] (`kafka-partition-by = "column:<name>,.."`):
    /// the same values go to the same partition whatever the table, so one value's changes stay in
    /// commit-ts order in one partition; a table without one of the columns goes by the table; an
    /// update goes by its new values. DDL goes to every partition.
    Columns,
}

/// The message format (`kafka-format`, ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Upstream's `slave.binlog.Binlog` protobuf, one message per transaction (and partition).
    Protobuf,
    /// Canal's flat JSON as TiCDC writes it, one message per row change or DDL ([`canal`]).
    CanalJson,
}

impl Format {
    /// The name `kafka-format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Protobuf => "protobuf",
            Format::CanalJson => "canal-json",
        }
    }
}

/// The Kafka sink's settings (upstream keys in `[syncer.to]`, plus ours).
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `kafka-addrs`: comma-separated `host:port` list.
    pub addrs: String,
    /// `kafka-version` (default `0.8.2.0`): the broker version assumed if version probing fails.
    pub version: String,
    /// `kafka-max-messages` (default 1024): messages per produce batch.
    pub max_messages: usize,
    /// `kafka-max-message-size` (default 1 GiB): larger transactions are chunked.
    pub max_message_size: usize,
    /// `kafka-client-id` (default `tidb_binlog`).
    pub client_id: String,
    /// `topic-name`, or `<clusterID>_obinlog`.
    pub topic: String,
    /// `kafka-format` (ours; default [`Format::Protobuf`]).
    pub format: Format,
    /// Partitioning (ours; default [`Partitioning::Single`]).
    pub partitioning: Partitioning,
    /// The columns of [`Partitioning::Columns`].
    pub partition_columns: Vec<String>,
    /// Partitions to create when the topic is missing (1 for [`Partitioning::Single`]).
    pub partitions: i32,
    /// Unacked bytes before `write` waits (upstream: 90 MiB).
    pub max_pending_bytes: usize,
    /// How long a message may stay unacked before the sink fails (upstream: 30 s).
    pub ack_timeout: Duration,
    /// Idempotent producer (ours; default true).
    pub idempotent: bool,
    /// How long [`KafkaSink::connect`] retries while no broker answers (ours; default 2 minutes).
    pub connect_timeout: Duration,
    /// Exactly-once (ours, `kafka-exactly-once`): the transactional producer's `transactional.id`
    /// ([`KafkaConfig::transactional_id`]); `None` for the idempotent producer.
    pub transactional_id: Option<String>,
    /// The transactional producer's `transaction.timeout.ms` (default 60 s): a transaction left
    /// open by a dead producer is aborted by the brokers after it, unless a producer with the same
    /// `transactional.id` starts first (which aborts it at once). At most the brokers'
    /// `transaction.max.timeout.ms` (default 15 minutes).
    pub transaction_timeout: Duration,
}

impl KafkaConfig {
    /// Upstream's defaults for the given brokers and topic.
    pub fn new(addrs: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            addrs: addrs.into(),
            version: "0.8.2.0".into(),
            max_messages: 1024,
            max_message_size: 1 << 30,
            client_id: "tidb_binlog".into(),
            topic: topic.into(),
            format: Format::Protobuf,
            partitioning: Partitioning::Single,
            partition_columns: Vec::new(),
            partitions: 1,
            max_pending_bytes: 90 << 20,
            ack_timeout: Duration::from_secs(30),
            idempotent: true,
            connect_timeout: Duration::from_secs(120),
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }

    /// The `transactional.id` of a drainer's exactly-once producer: `tidb-binlog-<cluster id>-task-<task>`
    /// for an HA task (every drainer of the task shares it, so a new active drainer's producer fences
    /// the old one's), else `tidb-binlog-<cluster id>-node-<node id>` (a restarted drainer fences its
    /// previous run and aborts the transaction it left open).
    pub fn transactional_id(cluster_id: u64, task: Option<&str>, node_id: &str) -> String {
        match task {
            Some(t) => format!("tidb-binlog-{cluster_id}-task-{t}"),
            None => format!("tidb-binlog-{cluster_id}-node-{node_id}"),
        }
    }

    /// Upstream's default topic name for a cluster: `<clusterID>_obinlog`.
    pub fn default_topic(cluster_id: u64) -> String {
        format!("{cluster_id}_obinlog")
    }

    /// The message size limit actually used (librdkafka caps it at 10^9 bytes).
    pub fn message_limit(&self) -> usize {
        self.max_message_size.clamp(1024, RDKAFKA_MAX_MESSAGE - 4096)
    }

    pub(super) fn common(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addrs)
            .set("client.id", &self.client_id)
            .set("broker.version.fallback", &self.version)
            .set("socket.keepalive.enable", "true");
        c
    }
}

/// Bytes a record batch may add around one message: the v2 batch header (61), the record's own
/// framing (at most 21) and the chunk header, with room to spare.
pub(super) const RECORD_OVERHEAD: usize = 256;

/// The largest payload the sink sends and what sets it.
#[derive(Debug, Clone)]
pub(super) struct MessageLimit {
    /// Payload bytes per message: larger transactions are chunked.
    pub(super) payload: usize,
    /// `kafka-max-message-size`, or the topic's `max.message.bytes` when that is smaller.
    pub(super) bound: String,
    /// The topic's `max.message.bytes`, when known: a produce batch must not exceed it.
    pub(super) topic_max: Option<usize>,
}

impl MessageLimit {
    pub(super) fn new(cfg: &KafkaConfig, topic_max: Option<usize>) -> Self {
        let own = cfg.message_limit();
        match topic_max {
            Some(t) if t.saturating_sub(RECORD_OVERHEAD) < own => Self {
                payload: t.saturating_sub(RECORD_OVERHEAD).max(1),
                bound: format!("max.message.bytes {t} of topic {} less {RECORD_OVERHEAD} bytes of record overhead", cfg.topic),
                topic_max,
            },
            _ => Self { payload: own, bound: "kafka-max-message-size".into(), topic_max },
        }
    }
}
