//! The written-vs-durable crash test of the std write path (redb's `crash_consistency`): appenders
//! write through `io::disk::FaultIo`, which crashes at a random operation; the crash then throws away
//! (wholly, or in some of its pages) every byte that was written but never synced. Reopened on what is
//! left, the store must hold every acknowledged append, and what it serves must be a prefix of what was
//! written: nothing that followed a hole.
//!
//! Unlike a `kill -9` (which keeps the page cache) this fails when the `fdatasync` before the
//! acknowledgement is left out.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;

use crate::format::{self, RecordKind};
use crate::bell::Bell;
use crate::io::disk::FaultIo;
use crate::segment::{list_segments, seg_path};
use crate::shard::{Backend, Shard};
use crate::{Kind, Record, StoreConfig, WaitResolver};

fn payload(ts: i64) -> Bytes {
    let len = 10 + (ts as usize * 131) % 1500;
    Bytes::from((0..len).map(|i| (ts as usize ^ i) as u8).collect::<Vec<u8>>())
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The start_ts of every data record in `bytes`, in order, up to the first that does not decode.
fn records_in(bytes: &[u8], out: &mut Vec<i64>) {
    let mut at = 0;
    while let Ok((r, used)) = format::decode_record(&bytes[at..]) {
        if !matches!(r.kind, RecordKind::Pad | RecordKind::Footer) {
            out.push(r.start_ts);
        }
        at += used;
    }
}

/// The start_ts of every record the segments in `dir` hold, in log order.
fn records_on_disk(dir: &Path) -> Vec<i64> {
    let mut out = Vec::new();
    for seq in list_segments(dir).unwrap() {
        let bytes = std::fs::read(seg_path(dir, seq)).unwrap();
        out.extend(format::scan_segment(&bytes).records.iter().map(|(_, r)| r.start_ts));
    }
    out
}

/// One crash: returns whether it threw away bytes that had been written.
fn crash_once(seed: u64) -> bool {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        dir: dir.path().to_path_buf(),
        stop_write_at_available_space: 0,
        segment_size: 8 << 10 << (rng.next() % 3),
        preallocate: rng.next() % 2 == 0,
        max_batch_bytes: 1 << (10 + rng.next() % 8),
        ..StoreConfig::default()
    };
    let disk = Arc::new(FaultIo::crashing_at(Some(1 + (rng.next() % 150) as usize)));
    let backend = Backend::Std(disk.clone());
    let shard =
        Shard::open_with_backend(cfg.clone(), Arc::new(WaitResolver), Arc::new(Bell::default()), backend).unwrap();

    // Four threads leading or following, and one async appender led by the background thread.
    let next = Arc::new(AtomicI64::new(1));
    let mut threads: Vec<_> = (0..4)
        .map(|_| {
            let (shard, next) = (shard.clone(), next.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for _ in 0..40 {
                    let ts = next.fetch_add(1, Ordering::SeqCst);
                    let rec = Record { kind: Kind::Fake, start_ts: ts, commit_ts: ts, payload: payload(ts) };
                    match shard.append_blocking(rec) {
                        Ok(()) => acked.push(ts),
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    let (async_shard, async_next) = (shard.clone(), next.clone());
    threads.push(std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut acked = Vec::new();
        for _ in 0..40 {
            let ts = async_next.fetch_add(1, Ordering::SeqCst);
            let rec = Record { kind: Kind::Fake, start_ts: ts, commit_ts: ts, payload: payload(ts) };
            match rt.block_on(async_shard.append(rec)) {
                Ok(()) => acked.push(ts),
                Err(_) => break,
            }
        }
        acked
    }));
    let acked: Vec<i64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    drop(shard);

    let mut coin = || rng.next();
    let lost = disk.crash(&mut coin).unwrap();

    // What was written, in the order it was placed (also the writes the crash took back).
    let mut placed = Vec::new();
    for (_, _, bytes) in disk.writes() {
        records_in(&bytes, &mut placed);
    }
    let shard = Shard::open(cfg.clone()).unwrap();
    for &ts in &acked {
        let got = shard.get(ts).unwrap();
        assert_eq!(got.map(|r| r.payload), Some(payload(ts)), "seed {seed}: acknowledged append {ts} lost");
    }
    drop(shard);
    let kept = records_on_disk(dir.path());
    assert!(
        kept.len() <= placed.len() && kept[..] == placed[..kept.len()],
        "seed {seed}: recovery kept {kept:?}, not a prefix of what was written {placed:?}"
    );
    // And nothing past that prefix is served.
    let shard = Shard::open(cfg).unwrap();
    let kept: HashSet<i64> = kept.into_iter().collect();
    for ts in placed.iter().filter(|ts| !kept.contains(ts)) {
        assert!(shard.get(*ts).unwrap().is_none(), "seed {seed}: record {ts} after a hole is served");
    }
    lost
}

#[test]
fn a_crash_that_drops_every_unsynced_byte_loses_no_acknowledged_append() {
    let mut lost = 0;
    for seed in 1..=60 {
        lost += crash_once(seed) as usize;
    }
    // The crash must actually have taken written bytes back in some runs, or nothing was tested.
    assert!(lost >= 5, "only {lost} of 60 crashes dropped written bytes");
}
