//! The Kafka sink's errors.

use super::translate;

/// A failure of the Kafka sink.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// A client could not be created or a request failed.
    #[error("kafka {what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A message was not delivered.
    #[error("delivering commit ts {commit_ts} to {topic}/{partition}: {reason}")]
    Delivery {
        /// The transaction.
        commit_ts: i64,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Why.
        reason: String,
    },
    /// A transaction cannot be made to fit the message size.
    #[error(transparent)]
    TooLarge(#[from] translate::TooLarge),
    /// The sink's tasks stopped after an error that was already returned.
    #[error("the sink stopped after an earlier error")]
    Stopped,
    /// No broker of `kafka-addrs` answered (at start, after retrying for `connect_timeout`).
    #[error("kafka brokers {addrs} unreachable: {source}")]
    Unreachable {
        /// The brokers tried (`kafka-addrs`).
        addrs: String,
        /// The last client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Exactly-once: a newer producer with the same `transactional.id` started (another drainer of
    /// the task became active, or this drainer was started twice), so this one is fenced out and stops
    /// writing; what it left uncommitted is aborted.
    #[error(
        "kafka producer fenced: transactional.id {transactional_id} was taken over by a newer producer \
         (another drainer of the task is active); this drainer stops writing: {reason}"
    )]
    Fenced {
        /// The shared `transactional.id`.
        transactional_id: String,
        /// The client's error.
        reason: String,
    },
    /// The topic has fewer partitions than the partitioning needs, or none.
    #[error("topic {topic}: {reason}")]
    Topic {
        /// Topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
}

pub(super) fn kerr(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaSinkError {
    let what = what.into();
    move |source| KafkaSinkError::Kafka { what, source }
}
