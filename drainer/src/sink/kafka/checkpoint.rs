//! The checkpoint read back from the topic: the last whole transaction of each partition; and the
//! record headers that mark chunks and resolved-ts messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::error::kerr;
use super::{CHUNK_HEADER, Format, KafkaConfig, KafkaSinkError, RESOLVED_HEADER, canal};
use crate::proto::slave;

/// What the topic's partitions hold last: per partition, the commit ts of the last whole transaction
/// (a trailing incomplete chunk sequence counts as its commit ts − 1, so it is sent again).
///
/// Read `read_committed`: messages of aborted or still open Kafka transactions do not count (with
/// exactly-once, what a killed drainer left uncommitted is sent again; a transaction still open holds
/// the partition's end at its start). The end of a partition may be control records (transaction
/// markers) or aborted messages, so reading starts a few offsets before the end and moves further
/// back until it finds a message.
pub fn last_commit_ts(cfg: &KafkaConfig, partitions: i32) -> Result<HashMap<i32, i64>, KafkaSinkError> {
    let mut c = cfg.common();
    c.set("group.id", format!("tidb-binlog-checkpoint-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        // At the end of a partition the broker answers a fetch at once instead of waiting for data.
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer = c.create().map_err(kerr("checkpoint consumer"))?;
    let mut out = HashMap::new();
    for p in 0..partitions {
        let (low, high) = watermarks(&consumer, cfg, p)?;
        let mut span = 8i64;
        while high > low {
            let from = high.saturating_sub(span).max(low);
            if let Some((commit_ts, complete)) = read_tail(&consumer, cfg, p, from)? {
                out.insert(p, if complete { commit_ts } else { commit_ts - 1 });
                break;
            }
            if from == low {
                break; // Nothing committed in the partition.
            }
            span = span.saturating_mul(8);
        }
    }
    Ok(out)
}

/// How long [`watermarks`] waits for a partition to get a leader.
const LEADER_WAIT: Duration = Duration::from_secs(30);

/// Whether `e` says the partition has no leader right now: a topic just created, or a leader's broker
/// failing over.
fn leaderless(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(e.rdkafka_error_code(), Some(C::NotLeaderForPartition | C::LeaderNotAvailable | C::UnknownTopicOrPartition | C::UnknownPartition))
}

/// Partition `p`'s low and high offsets, waiting up to [`LEADER_WAIT`] while it has no leader (a
/// topic the sink has just created may be in the metadata before its partitions have leaders).
fn watermarks(consumer: &BaseConsumer, cfg: &KafkaConfig, p: i32) -> Result<(i64, i64), KafkaSinkError> {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        match consumer.fetch_watermarks(&cfg.topic, p, Duration::from_secs(10)) {
            Err(e) if leaderless(&e) && Instant::now() < deadline => {
                tracing::info!(topic = %cfg.topic, partition = p, error = %e, "kafka sink: waiting for the partition's leader");
                std::thread::sleep(Duration::from_millis(200));
            }
            r => return r.map_err(kerr(format!("watermarks of {}/{p}", cfg.topic))),
        }
    }
}

/// Reads partition `p` from offset `from` to its end; returns the last message's commit ts and
/// whether it ends a transaction (not a chunk before the last).
fn read_tail(consumer: &BaseConsumer, cfg: &KafkaConfig, p: i32, from: i64) -> Result<Option<(i64, bool)>, KafkaSinkError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&cfg.topic, p, Offset::Offset(from)).map_err(kerr("assign"))?;
    consumer.assign(&tpl).map_err(kerr("assign"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        if Instant::now() > deadline {
            return Err(KafkaSinkError::Topic {
                topic: cfg.topic.clone(),
                reason: format!("could not read to the end of partition {p} (from offset {from})"),
            });
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(last),
            Some(Err(e)) => return Err(kerr(format!("reading {}/{p}", cfg.topic))(e)),
            Some(Ok(m)) => {
                let payload = m.payload().unwrap_or_default();
                let ts = match cfg.format {
                    Format::Protobuf => slave::Binlog::decode(payload).map(|b| b.commit_ts()).map_err(|e| e.to_string()),
                    Format::CanalJson => canal::message_ts(payload).ok_or_else(|| "no _tidb.commitTs".to_string()),
                };
                let ts = ts.map_err(|e| KafkaSinkError::Topic {
                    topic: cfg.topic.clone(),
                    reason: format!("message at {p}/{} is not {}: {e}", m.offset(), cfg.format.name()),
                })?;
                let complete = chunk_of(m.headers()).is_none_or(|(i, n)| i + 1 == n);
                last = Some((ts, complete));
            }
        }
    }
}

/// Whether a message is a resolved-ts message ([`RESOLVED_HEADER`]).
pub fn is_resolved<H: Headers>(headers: Option<&H>) -> bool {
    headers.is_some_and(|h| h.iter().any(|h| h.key == RESOLVED_HEADER))
}

/// The chunk header of a message, if it has one: `(index, count)`.
pub fn chunk_of<H: Headers>(headers: Option<&H>) -> Option<(u32, u32)> {
    let h = headers?;
    h.iter().find(|h| h.key == CHUNK_HEADER).and_then(|h| {
        let v = std::str::from_utf8(h.value?).ok()?;
        let (i, n) = v.split_once('/')?;
        Some((i.parse().ok()?, n.parse().ok()?))
    })
}
