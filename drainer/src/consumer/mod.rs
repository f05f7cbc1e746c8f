//! A consumer of the Kafka sink's topic (the seed's "Binlog Slave Client"): reads one partition in
//! assign mode (no consumer group), reassembles chunked transactions, drops duplicates, and yields
//! whole `slave.binlog.Binlog` transactions in commit-ts order. It reads either format the sink writes
//! (`kafka-format`): upstream's protobuf, or canal-json, whose row and DDL messages
//! ([`crate::sink::kafka::canal::decode`]) are the chunks of their transaction.
//!
//! # Invariants
//! - [`BinlogConsumer::next`] yields strictly increasing commit ts: a message at or below the last
//!   yielded commit ts (a re-send after a producer restart) is skipped.
//! - A chunk sequence (`tidb-binlog-chunk: i/n`) is yielded only when all `n` chunks arrived in order;
//!   a sequence cut short (the producer died mid-transaction and sends it again) is dropped when the
//!   next sequence or whole message starts.

pub mod apply;
pub mod text;

use std::time::Duration;

use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedHeaders;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::proto::slave;
use crate::sink::kafka::canal::{self, CanalError};
use crate::sink::kafka::{Format, chunk_of, is_resolved};

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The partition's first message.
    Beginning,
    /// A message offset.
    Offset(i64),
}

/// How to reach the topic.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `host:port` list.
    pub addrs: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Where to start.
    pub start: StartAt,
    /// Skip transactions with commit ts at or below this (0 = none).
    pub after_commit_ts: i64,
    /// The topic's format (the drainer's `kafka-format`).
    pub format: Format,
}

/// Why a message could not be read in the topic's format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Not a `slave.binlog.Binlog`.
    #[error("not a slave.binlog.Binlog (kafka-format protobuf): {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// Not one of our canal-json messages.
    #[error("{0} (kafka-format canal-json)")]
    CanalJson(#[from] CanalError),
}

/// A failure of the consumer.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// A Kafka client error.
    #[error("kafka {what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A message that is not in the topic's format.
    #[error("{topic}/{partition} offset {offset}: {source}")]
    Decode {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// What is wrong with it.
        #[source]
        source: MessageError,
    },
}

/// One whole transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    /// Its commit ts.
    pub commit_ts: i64,
    /// The (reassembled) binlog.
    pub binlog: slave::Binlog,
    /// Offset of its first message.
    pub offset: i64,
    /// How many messages carried it.
    pub messages: u32,
}

struct Partial {
    txn: Txn,
    count: u32,
}

/// Reassembles messages into transactions; pure, so it is tested without a broker.
#[derive(Default)]
pub struct Assembler {
    partial: Option<Partial>,
    last_ts: i64,
    /// Messages skipped as duplicates or broken sequences.
    pub skipped: u64,
}

impl std::fmt::Debug for Assembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assembler").field("last_ts", &self.last_ts).field("skipped", &self.skipped).finish()
    }
}

impl Assembler {
    /// An assembler that skips commit ts at or below `after`.
    pub fn new(after: i64) -> Self {
        Self { partial: None, last_ts: after, skipped: 0 }
    }

    /// Feeds one decoded message; returns a transaction when one is complete.
    pub fn push(&mut self, offset: i64, binlog: slave::Binlog, chunk: Option<(u32, u32)>) -> Option<Txn> {
        let ts = binlog.commit_ts();
        if ts <= self.last_ts {
            self.skipped += 1;
            return None;
        }
        let (index, count) = chunk.unwrap_or((0, 1));
        if index == 0 {
            if let Some(p) = self.partial.take() {
                tracing::warn!(commit_ts = p.txn.commit_ts, offset = p.txn.offset, "consumer: dropping an incomplete chunk sequence");
                self.skipped += u64::from(p.txn.messages);
            }
            self.partial = Some(Partial { txn: Txn { commit_ts: ts, binlog, offset, messages: 1 }, count });
        } else {
            match &mut self.partial {
                Some(p) if p.txn.commit_ts == ts && p.txn.messages == index && p.count == count => {
                    let more = binlog.dml_data.map(|d| d.tables).unwrap_or_default();
                    p.txn.binlog.dml_data.get_or_insert_with(Default::default).tables.extend(more);
                    p.txn.messages += 1;
                }
                _ => {
                    self.skipped += 1;
                    return None;
                }
            }
        }
        if self.partial.as_ref().is_some_and(|p| p.txn.messages == p.count) {
            let p = self.partial.take().expect("checked");
            self.last_ts = p.txn.commit_ts;
            return Some(p.txn);
        }
        None
    }
}

/// Reads one partition and yields whole transactions.
pub struct BinlogConsumer {
    consumer: StreamConsumer,
    cfg: ConsumerConfig,
    assembler: Assembler,
    resolved_ts: i64,
}

impl std::fmt::Debug for BinlogConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinlogConsumer").field("topic", &self.cfg.topic).field("partition", &self.cfg.partition).finish()
    }
}

impl BinlogConsumer {
    /// Connects and assigns the partition (no consumer group rebalancing).
    pub fn new(cfg: ConsumerConfig) -> Result<Self, ConsumerError> {
        let kerr = |what: &str| {
            let what = what.to_string();
            move |source| ConsumerError::Kafka { what, source }
        };
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &cfg.addrs)
            .set("group.id", format!("tidb-binlog-consumer-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // Messages of aborted (or still open) Kafka transactions are never read: with the sink's
            // exactly-once producer a killed drainer's unfinished work stays invisible.
            .set("isolation.level", "read_committed")
            .set("fetch.message.max.bytes", "1000000000")
            .set("receive.message.max.bytes", "1000100000")
            .create()
            .map_err(kerr("consumer"))?;
        let offset = match cfg.start {
            StartAt::Beginning => Offset::Beginning,
            StartAt::Offset(o) => Offset::Offset(o),
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&cfg.topic, cfg.partition, offset).map_err(kerr("assign"))?;
        consumer.assign(&tpl).map_err(kerr("assign"))?;
        Ok(Self { consumer, assembler: Assembler::new(cfg.after_commit_ts), cfg, resolved_ts: 0 })
    }

    /// Waits for the next whole transaction.
    pub async fn next(&mut self) -> Result<Txn, ConsumerError> {
        loop {
            let m = match self.consumer.recv().await {
                Ok(m) => m,
                // librdkafka reports a lost broker connection as a consumption error and reconnects by
                // itself (to the partition's next leader); the consumer keeps its position.
                Err(rdkafka::error::KafkaError::MessageConsumption(
                    code @ (rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                    | rdkafka::types::RDKafkaErrorCode::AllBrokersDown),
                )) => {
                    tracing::warn!(topic = %self.cfg.topic, error = %code, "Kafka connection lost; the consumer reconnects");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(source) => return Err(ConsumerError::Kafka { what: "receive".into(), source }),
            };
            let payload = m.payload().unwrap_or_default();
            let decoded = match self.cfg.format {
                Format::Protobuf => slave::Binlog::decode(payload).map_err(MessageError::from).map(|b| {
                    if is_resolved::<BorrowedHeaders>(m.headers()) { canal::Decoded::Watermark(b.commit_ts()) } else { canal::Decoded::Binlog(b) }
                }),
                Format::CanalJson => canal::decode(payload).map_err(MessageError::from),
            };
            let decoded = decoded.map_err(|source| ConsumerError::Decode {
                topic: self.cfg.topic.clone(),
                partition: m.partition(),
                offset: m.offset(),
                source,
            })?;
            let binlog = match decoded {
                canal::Decoded::Watermark(ts) => {
                    self.resolved_ts = self.resolved_ts.max(ts);
                    continue;
                }
                canal::Decoded::Binlog(b) => b,
            };
            let chunk = chunk_of::<BorrowedHeaders>(m.headers());
            if let Some(t) = self.assembler.push(m.offset(), binlog, chunk) {
                return Ok(t);
            }
        }
    }

    /// Like [`BinlogConsumer::next`], giving `None` after `idle` without a transaction.
    pub async fn next_timeout(&mut self, idle: Duration) -> Result<Option<Txn>, ConsumerError> {
        match tokio::time::timeout(idle, self.next()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Messages skipped so far (duplicates, broken chunk sequences).
    pub fn skipped(&self) -> u64 {
        self.assembler.skipped
    }

    /// The highest resolved ts read so far (0 if none): every transaction of this partition with a
    /// commit ts at or below it has been returned.
    pub fn resolved_ts(&self) -> i64 {
        self.resolved_ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::kafka::translate::dml_binlog;

    fn part(ts: i64, table: &str) -> slave::Binlog {
        dml_binlog(ts, vec![slave::Table { table_name: Some(table.into()), ..Default::default() }])
    }

    fn tables(t: &Txn) -> Vec<String> {
        t.binlog.dml_data.as_ref().unwrap().tables.iter().map(|t| t.table_name().to_string()).collect()
    }

    #[test]
    fn reassembles_chunks_and_drops_duplicates_and_broken_sequences() {
        let mut a = Assembler::new(0);
        assert_eq!(a.push(0, part(10, "a"), None).unwrap().commit_ts, 10);
        assert!(a.push(1, part(20, "a"), Some((0, 3))).is_none());
        assert!(a.push(2, part(20, "b"), Some((1, 3))).is_none());
        // The producer died here and re-sends commit ts 20 from its first chunk.
        assert!(a.push(3, part(20, "a"), Some((0, 2))).is_none());
        let t = a.push(4, part(20, "b"), Some((1, 2))).unwrap();
        assert_eq!((t.commit_ts, t.offset, t.messages), (20, 3, 2));
        assert_eq!(tables(&t), ["a", "b"]);
        assert!(a.push(5, part(20, "a"), None).is_none(), "a duplicate after a restart");
        assert!(a.push(6, part(30, "x"), Some((1, 2))).is_none(), "a sequence without its start");
        assert_eq!(a.push(7, part(40, "y"), None).unwrap().commit_ts, 40);
        assert_eq!(a.skipped, 4, "two of the cut sequence, the duplicate, the orphan chunk");
    }
}
