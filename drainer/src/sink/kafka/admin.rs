//! Topic administration (creation, partition count, `max.message.bytes`) and the producer's settings.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::config::{MessageLimit, RDKAFKA_MAX_MESSAGE, RECORD_OVERHEAD};
use super::error::kerr;
use super::window::{AckContext, Window};
use super::{KafkaConfig, KafkaSinkError};

/// The sink's producer: delivery reports go to the ack window.
pub(super) type Producer = rdkafka::producer::ThreadedProducer<AckContext>;

/// Creates `topic` with `partitions` partitions if the brokers do not have it; returns its partition
/// count.
pub async fn ensure_topic(cfg: &KafkaConfig, partitions: i32) -> Result<i32, KafkaSinkError> {
    if let Some(n) = topic_partitions(cfg)? {
        return Ok(n);
    }
    let admin: AdminClient<DefaultClientContext> = cfg.common().create().map_err(kerr("admin client"))?;
    let topic = NewTopic::new(&cfg.topic, partitions, TopicReplication::Fixed(-1)); // the brokers' default.replication.factor
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&topic], &opts).await.map_err(kerr(format!("creating topic {}", cfg.topic)))?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic = %cfg.topic, partitions, "kafka sink: created topic"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(KafkaSinkError::Topic { topic: t, reason: format!("create failed: {code}") });
            }
        }
    }
    for _ in 0..50 {
        if let Some(n) = topic_partitions(cfg)? {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(KafkaSinkError::Topic { topic: cfg.topic.clone(), reason: "created but not visible in metadata".into() })
}

/// The topic's partition count, or `None` when the brokers do not know it.
fn topic_partitions(cfg: &KafkaConfig) -> Result<Option<i32>, KafkaSinkError> {
    let consumer: BaseConsumer = cfg.common().create().map_err(kerr("metadata client"))?;
    let md = consumer.fetch_metadata(Some(&cfg.topic), Duration::from_secs(10)).map_err(|e| {
        if unreachable(&e) {
            KafkaSinkError::Unreachable { addrs: cfg.addrs.clone(), source: e }
        } else {
            kerr(format!("metadata of {}", cfg.topic))(e)
        }
    })?;
    Ok(md.topics().iter().find(|t| t.name() == cfg.topic).and_then(|t| {
        if t.error().is_some() || t.partitions().is_empty() { None } else { Some(t.partitions().len() as i32) }
    }))
}

/// Whether `e` says that no broker answered (as opposed to a broker refusing the request).
fn unreachable(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(e.rdkafka_error_code(), Some(C::BrokerTransportFailure | C::AllBrokersDown | C::OperationTimedOut | C::Resolve))
}

/// The topic's `max.message.bytes` (the broker's `message.max.bytes` when the topic does not set it),
/// or `None` when the brokers do not say.
pub async fn topic_max_message_bytes(cfg: &KafkaConfig) -> Result<Option<usize>, KafkaSinkError> {
    let admin: AdminClient<DefaultClientContext> = cfg.common().create().map_err(kerr("admin client"))?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let res = admin
        .describe_configs([&ResourceSpecifier::Topic(&cfg.topic)], &opts)
        .await
        .map_err(kerr(format!("configs of topic {}", cfg.topic)))?;
    let value = res.into_iter().find_map(|r| r.ok()).and_then(|r| r.get("max.message.bytes").and_then(|e| e.value.clone()));
    Ok(value.and_then(|v| v.parse().ok()))
}

/// The sink's producer. With `transactional_id` set (exactly-once) delivery reports are not used
/// (a transaction's commit says whether all its messages arrived), so `window` is `None`; otherwise
/// they release items from the ack window.
pub(super) fn make_producer(cfg: &KafkaConfig, limit: &MessageLimit, window: Option<&Arc<Window>>) -> Result<Producer, KafkaSinkError> {
    let mut pc = cfg.common();
    // A produce batch must fit the topic's max.message.bytes as a whole; one message always fits
    // (its payload is at most the limit), so only batches of several are capped.
    if let Some(t) = limit.topic_max {
        pc.set("batch.size", t.saturating_sub(RECORD_OVERHEAD).clamp(1, 1_000_000).to_string());
    }
    let mut ack_timeout = cfg.ack_timeout.max(Duration::from_secs(1));
    pc.set("acks", "all")
        .set("enable.idempotence", if cfg.idempotent || cfg.transactional_id.is_some() { "true" } else { "false" })
        .set("message.max.bytes", (limit.payload + 4096).clamp(1000, RDKAFKA_MAX_MESSAGE).to_string())
        .set("batch.num.messages", cfg.max_messages.max(1).to_string())
        .set("linger.ms", "5")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("queue.buffering.max.messages", "1000000");
    if let Some(id) = &cfg.transactional_id {
        // librdkafka refuses a message timeout longer than the transaction timeout.
        let txn_timeout = cfg.transaction_timeout.max(Duration::from_secs(1));
        ack_timeout = ack_timeout.min(txn_timeout);
        pc.set("transactional.id", id).set("transaction.timeout.ms", txn_timeout.as_millis().to_string());
    }
    pc.set("message.timeout.ms", ack_timeout.as_millis().to_string());
    pc.create_with_context(AckContext { window: window.cloned() }).map_err(kerr("producer"))
}
