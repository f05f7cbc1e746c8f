//! The public [`Store`]: one or more shards behind one handle. An append goes to shard
//! `shard_of(start_ts)`, so a transaction's Prewrite, Commit and Rollback share a shard (and its sorter,
//! which matches them); a pull merges the shards' committed streams (`reader`) up to the front's
//! watermark (`front`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::bell::Bell;
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::front::Front;
use crate::layout::{shard_dirs, shard_of};
use crate::record::{Committed, Kind, Record};
use crate::resolver::{Resolver, WaitResolver};
use crate::shard::Shard;
use crate::stats::StoreStats;

/// A handle to an open store: one or more shards (`StoreConfig::shards`) behind one commit-ts order.
/// Clone it freely; the store closes (flushing every queued append) when [`Store::close`] is called or
/// the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    shards: Arc<Vec<Shard>>,
    front: Arc<Front>,
    dir: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).field("shards", &self.shards.len()).finish()
    }
}


impl Store {
    /// Opens (creating if needed) the store in `cfg.dir` with the [`WaitResolver`] (an orphan Prewrite
    /// waits for its Commit, a Rollback or [`Store::settle`]).
    /// Recovers every shard from a crash (in parallel): truncates a torn or corrupt tail of its last
    /// segment (logged and counted), then replays the records its sorter had not released. Blocks
    /// while it reads.
    pub fn open(cfg: StoreConfig) -> Result<Store, StoreError> {
        Store::open_with_resolver(cfg, Arc::new(WaitResolver))
    }

    /// Like [`Store::open`] with a custom [`Resolver`] for unmatched Prewrites (shared by the shards).
    pub fn open_with_resolver(cfg: StoreConfig, resolver: Arc<dyn Resolver>) -> Result<Store, StoreError> {
        let dirs = shard_dirs(&cfg.dir, cfg.shards)?;
        let bell = Arc::new(Bell::default());
        let opened: Vec<Result<Shard, StoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = dirs
                .iter()
                .map(|d| {
                    let cfg = StoreConfig { dir: d.clone(), ..cfg.clone() };
                    let (resolver, bell) = (resolver.clone(), bell.clone());
                    s.spawn(move || Shard::open_with(cfg, resolver, bell))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(StoreError::Closed)))
                .collect()
        });
        let shards = opened.into_iter().collect::<Result<Vec<_>, _>>()?;
        for s in &shards {
            let w = s.shared().lock().sorter.watermark();
            bell.raise_seen(w);
        }
        let front = Front { shards: shards.iter().map(|s| s.shared().clone()).collect(), bell };
        Ok(Store { shards: Arc::new(shards), front: Arc::new(front), dir: cfg.dir })
    }

    /// How many shards the store has.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn route(&self, start_ts: i64) -> &Shard {
        &self.shards[shard_of(start_ts, self.shards.len())]
    }

    /// After an acknowledged Commit or Fake: idle shards may release up to its commit ts.
    fn acknowledged(&self, kind: Kind, commit_ts: i64) {
        if matches!(kind, Kind::Commit | Kind::Fake)
            && self.shards.len() > 1
            && self.front.bell.raise_seen(commit_ts)
        {
            self.front.bell.ring();
        }
    }

    /// Appends one binlog to its shard; resolves once it is durable (fdatasynced when `sync_log`).
    /// Concurrent appends to a shard share one write and one fdatasync, issued by the shard's background
    /// thread so that the caller's runtime never blocks on the disk. A record with start_ts == 0 and
    /// commit_ts == 0 is upstream's health probe: it is accepted and not stored.
    pub async fn append(&self, rec: Record) -> Result<(), StoreError> {
        let (kind, commit_ts) = (rec.kind, rec.commit_ts);
        self.route(rec.start_ts).append(rec).await?;
        self.acknowledged(kind, commit_ts);
        Ok(())
    }

    /// [`Store::append`] for threads outside an async runtime, and the fastest way in: when no write is
    /// in progress in its shard the calling thread writes and syncs its record itself (with every
    /// append queued meanwhile), otherwise it waits for the current leader's batch, or is handed the lead.
    pub fn append_blocking(&self, rec: Record) -> Result<(), StoreError> {
        let (kind, commit_ts) = (rec.kind, rec.commit_ts);
        self.route(rec.start_ts).append_blocking(rec)?;
        self.acknowledged(kind, commit_ts);
        Ok(())
    }

    /// The sorted watermark (upstream `maxCommitTS`): every committed transaction with a commit_ts at
    /// or below it is complete in the log. With shards: the minimum of what each shard can release.
    /// Never goes down while the store is open.
    pub fn max_commit_ts(&self) -> i64 {
        self.front.snapshot().watermark
    }

    /// Streams committed transactions and fake binlogs with `commit_ts > after_commit_ts` (clamped up to
    /// the GC ts) in strictly increasing commit_ts order across every shard, never beyond
    /// [`Store::max_commit_ts`]; then tails the log live. Rolled-back transactions are skipped. Ends
    /// when the store closes.
    pub fn pull(
        &self,
        after_commit_ts: i64,
    ) -> impl futures::Stream<Item = Result<Committed, StoreError>> + Send + 'static + use<> {
        crate::reader::pull(self.front.clone(), after_commit_ts)
    }

    /// Raises the GC ts to `ts` (persisted per shard) if it is above the current one and below the
    /// watermark (as upstream), then deletes, in every shard, sealed segments whose every ts is at or
    /// below `ts - max_txn_timeout` (in TSO units) and that hold nothing its sorter still waits for.
    pub fn gc(&self, ts: i64) {
        if ts <= self.front.gc_ts_min() || self.max_commit_ts() <= ts {
            return;
        }
        for s in self.shards.iter() {
            s.gc(ts);
        }
    }

    /// The GC ts (the lowest of the shards').
    pub fn gc_ts(&self) -> i64 {
        self.front.gc_ts_min()
    }

    /// Looks up a stored record by key (upstream `ts:` keys): a Prewrite by its start_ts, a Commit or
    /// Fake by its commit_ts. Scans only segments whose ts range holds `ts`, in every shard; meant for
    /// debugging.
    pub fn get(&self, ts: i64) -> Result<Option<Record>, StoreError> {
        for s in self.shards.iter() {
            if let Some(r) = s.get(ts)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Settles the pending Prewrite `start_ts` by hand (an operator who checked TiDB): a Commit at
    /// `commit_ts`, or with `None` a Rollback, written to its shard as a resolver would.
    pub fn settle(&self, start_ts: i64, commit_ts: Option<i64>) -> Result<(), StoreError> {
        self.shards[shard_of(start_ts, self.shards.len())].settle(start_ts, commit_ts)
    }

    /// Every unmatched Prewrite (start_ts, time since this process saw it), oldest start_ts first.
    pub fn pending(&self) -> Vec<(i64, Duration)> {
        let mut v: Vec<_> = self.shards.iter().flat_map(|s| s.pending()).collect();
        v.sort_unstable();
        v
    }

    /// Counters and gauges for metrics, summed over the shards (`max_commit_ts` is the front's
    /// watermark, `gc_ts` the lowest GC ts, `available_space` the lowest figure).
    pub fn stats(&self) -> StoreStats {
        let mut total = StoreStats { available_space: u64::MAX, gc_ts: i64::MAX, ..StoreStats::default() };
        for s in self.shards.iter() {
            let st = s.stats();
            total.appends += st.appends;
            total.batches += st.batches;
            total.fsyncs += st.fsyncs;
            total.bytes_written += st.bytes_written;
            total.segments += st.segments;
            total.disk_bytes += st.disk_bytes;
            total.torn_tail_truncations += st.torn_tail_truncations;
            total.write_errors += st.write_errors;
            total.pending_prewrites += st.pending_prewrites;
            total.gc_ts = total.gc_ts.min(st.gc_ts);
            total.available_space = total.available_space.min(st.available_space);
        }
        total.max_commit_ts = self.max_commit_ts();
        total
    }

    /// Flushes every queued append, stops the writers and ends every pull stream. Appends after this
    /// fail with [`StoreError::Closed`].
    pub async fn close(self) {
        futures::future::join_all(self.shards.iter().cloned().map(|s| s.close())).await;
    }
}
