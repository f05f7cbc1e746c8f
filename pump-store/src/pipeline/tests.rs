//! The io_uring write path over the fault device (`io::fault`): writes complete out of order, a crash
//! leaves an arbitrary subset of the writes in flight on disk (whole, torn or not at all), and one write
//! can fail. Every acknowledged record must survive recovery, and recovery must never serve a record
//! that follows a hole in the log.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use proptest::prelude::*;

use crate::format;
use crate::bell::Bell;
use crate::io::fault::{Crash, FaultDevice, FaultHandle, Faults, Written};
use crate::shard::{Backend, Shard};
use crate::{IoBackend, Kind, Record, StoreConfig, StoreError, WaitResolver};

fn cfg(dir: &Path, segment_size: u64, sync_log: bool) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        stop_write_at_available_space: 0,
        segment_size,
        sync_log,
        io_backend: IoBackend::Uring,
        io_depth: 8,
        ..StoreConfig::default()
    }
}

fn open(cfg: StoreConfig, faults: Faults) -> (Shard, FaultHandle) {
    let (dev, handle) = FaultDevice::new(faults);
    let shard = Shard::open_with_backend(cfg, Arc::new(WaitResolver), Arc::new(Bell::default()), Backend::Uring(Box::new(dev))).unwrap();
    (shard, handle)
}

fn payload(ts: i64) -> Bytes {
    let len = 20 + (ts.unsigned_abs() * 37 % 700) as usize;
    Bytes::from((0..len).map(|i| (ts as usize + i) as u8).collect::<Vec<u8>>())
}

/// `writers` threads append up to `per_writer` fakes each until an append fails; returns the
/// acknowledged timestamps and whether every failure was a refusal after an earlier failure or the
/// failure itself (never a success after a refusal).
fn hammer(shard: &Shard, writers: usize, per_writer: usize) -> Vec<i64> {
    let next = Arc::new(AtomicI64::new(1 << 40));
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (shard, next) = (shard.clone(), next.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for _ in 0..per_writer {
                    let ts = next.fetch_add(1, Ordering::SeqCst);
                    match shard.append_blocking(Record { kind: Kind::Fake, start_ts: ts, commit_ts: ts, payload: payload(ts) }) {
                        Ok(()) => acked.push(ts),
                        Err(_) => {
                            // Once the store failed, it refuses every later append.
                            let again = shard.append_blocking(Record { kind: Kind::Fake, start_ts: -ts, commit_ts: -ts, payload: payload(1) });
                            assert!(matches!(again, Err(StoreError::Poisoned(_))), "{again:?}");
                            break;
                        }
                    }
                }
                acked
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

/// The data records of every segment in `dir`, in log order (segments by number, then file order),
/// as far as a scan accepts them.
fn log_order(dir: &Path) -> Vec<i64> {
    let mut segs: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "seg")).collect();
    segs.sort();
    let mut out = Vec::new();
    for p in segs {
        let image = std::fs::read(&p).unwrap();
        let scan = format::scan_segment(&image);
        out.extend(scan.records.iter().map(|(_, r)| r.commit_ts));
        if scan.footer.is_none() {
            break;
        }
    }
    out
}

/// Copies every file of `from` into a fresh directory.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    to
}

/// Puts `w` into the copy in `dir`: all of it, or (`torn`) only the 512-byte sectors `pick` selects.
fn apply(dir: &Path, w: &Written, torn: Option<u64>) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(dir.join(w.path.file_name().unwrap())).unwrap();
    match torn {
        None => f.write_all_at(&w.bytes, w.off).unwrap(),
        Some(mut pick) => {
            for (i, sector) in w.bytes.chunks(512).enumerate() {
                pick = pick.rotate_left(7) ^ 0x9E37_79B9_7F4A_7C15;
                if pick % 2 == 0 {
                    f.write_all_at(sector, w.off + 512 * i as u64).unwrap();
                }
            }
        }
    }
}

/// The disk a crash could have left: the writes that completed durably, plus each undecided write
/// (in flight, or completed without dsync) whole, torn or missing as `fates` say.
fn crash_image(dir: &Path, crash: &Crash, fates: &[u8], lose_not_durable: bool) -> tempfile::TempDir {
    let img = copy_dir(dir);
    for (i, w) in crash.in_flight.iter().enumerate() {
        match fates.get(i % fates.len().max(1)).copied().unwrap_or(0) % 3 {
            0 => {}
            1 => apply(img.path(), w, None),
            _ => apply(img.path(), w, Some(i as u64 + 1)),
        }
    }
    if lose_not_durable {
        // A completed write without dsync may be gone: the region was zeros before it.
        for (i, w) in crash.not_durable.iter().enumerate() {
            let zeros = Written { bytes: vec![0; w.bytes.len()], ..w.clone() };
            match fates.get((i + 3) % fates.len().max(1)).copied().unwrap_or(0) % 3 {
                0 => {}
                1 => apply(img.path(), &zeros, None),
                _ => apply(img.path(), &zeros, Some(i as u64 + 7)),
            }
        }
    }
    img
}

fn check_crash(seed: u64, crash_after: usize, writers: usize, fates: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 24 << 10, true);
    let (shard, handle) = open(c.clone(), Faults { seed, crash_after: Some(crash_after), fail_write: None });
    let acked = hammer(&shard, writers, 30);
    drop(shard);
    let crash = handle.crash().unwrap_or_default();

    // Every record placed in the log, in order: the crash image with every undecided write whole.
    let all = crash_image(dir.path(), &crash, &[1], false);
    let placed = log_order(all.path());

    let img = crash_image(dir.path(), &crash, fates, true);
    let recovered = {
        let store = Shard::open(StoreConfig { io_backend: IoBackend::Std, ..cfg(img.path(), 24 << 10, true) }).unwrap();
        for &ts in &acked {
            let got = store.get(ts).unwrap();
            assert_eq!(got.map(|r| r.payload), Some(payload(ts)), "acknowledged record {ts} lost (crash after {crash_after})");
        }
        // The store goes on after recovery.
        store.append_blocking(Record { kind: Kind::Fake, start_ts: 1 << 50, commit_ts: 1 << 50, payload: payload(5) }).unwrap();
        drop(store);
        log_order(img.path())
    };
    // Nothing after a hole: what recovery kept is the log's first records, in order (then the new one).
    let (last, kept) = recovered.split_last().unwrap();
    assert_eq!(*last, 1 << 50);
    assert_eq!(kept, &placed[..kept.len()], "recovery served records out of log order");
    let kept: HashSet<i64> = kept.iter().copied().collect();
    assert!(acked.iter().all(|ts| kept.contains(ts)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_crash_keeps_every_acknowledged_record_and_serves_nothing_after_a_hole(
        seed in any::<u64>(),
        crash_after in 0usize..80,
        writers in 1usize..10,
        fates in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        check_crash(seed, crash_after, writers, &fates);
    }
}

#[test]
fn writes_completing_out_of_order_are_acknowledged_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let (shard, handle) = open(cfg(dir.path(), 1 << 20, true), Faults { seed: 7, ..Faults::default() });
    let acked = hammer(&shard, 8, 50);
    assert_eq!(acked.len(), 400);
    assert!(handle.completed() > 8, "several batches were written");
    let st = shard.stats();
    assert_eq!((st.appends, st.write_errors), (400, 0));
    drop(shard);
    let order = log_order(dir.path());
    assert_eq!(order.len(), 400);
    let got: HashSet<i64> = order.into_iter().collect();
    assert!(acked.iter().all(|ts| got.contains(ts)));
}

#[test]
fn a_failed_write_poisons_the_store_and_nothing_after_it_is_acknowledged() {
    for fail in [1, 2, 5, 9] {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, true);
        let (shard, _handle) = open(c.clone(), Faults { seed: fail as u64, fail_write: Some(fail), ..Faults::default() });
        let acked = hammer(&shard, 6, 40);
        assert!(acked.len() < 240, "the failure stopped the writers");
        let err = shard.append_blocking(Record { kind: Kind::Fake, start_ts: 3, commit_ts: 3, payload: payload(3) }).unwrap_err();
        assert!(matches!(err, StoreError::Poisoned(_)), "{err}");
        assert!(shard.stats().write_errors >= 1);
        drop(shard);
        // The failed write left a hole: every acknowledged record lies before it.
        let store = Shard::open(StoreConfig { io_backend: IoBackend::Std, ..c }).unwrap();
        for ts in acked {
            assert_eq!(store.get(ts).unwrap().map(|r| r.payload), Some(payload(ts)), "fail {fail}: acknowledged {ts} lost");
        }
    }
}
