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
pub fn last_commit_ts(cfg: &KafkaConfig, partitions: i32) -> Result<HashMap<i32, i64>, KafkaSinkError> {
    let mut c = cfg.common();
    c.set("group.id", format!("tidb-binlog-checkpoint-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = c.create().map_err(kerr("checkpoint consumer"))?;
    let mut out = HashMap::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(&cfg.topic, p, Duration::from_secs(10))
            .map_err(kerr(format!("watermarks of {}/{p}", cfg.topic)))?;
        if high <= low {
            continue;
        }
        // Start at the high watermark − 1 and read forward to the end of the partition: the last
        // offset may hold a control record, and some Kafka-protocol brokers report the last batch's
        // base offset + 1 as the high watermark.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&cfg.topic, p, Offset::Offset(high - 1)).map_err(kerr("assign"))?;
        consumer.assign(&tpl).map_err(kerr("assign"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last: Option<(i64, i64, bool)> = None; // (offset, commit ts, complete)
        loop {
            if Instant::now() > deadline {
                return Err(KafkaSinkError::Topic {
                    topic: cfg.topic.clone(),
                    reason: format!("could not read to the end of partition {p} (from offset {})", high - 1),
                });
            }
            match consumer.poll(Duration::from_millis(1000)) {
                None if last.is_some() => break,
                None => continue,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) if last.is_some() => break,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => continue,
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
                    last = Some((m.offset(), ts, complete));
                }
            }
        }
        let Some((_, commit_ts, complete)) = last else { continue };
        let ts = if complete { commit_ts } else { commit_ts - 1 };
        out.insert(p, ts);
    }
    Ok(out)
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
