//! Crash consistency: a segment cut at any byte (what a crash leaves when the tail was never synced),
//! optionally followed by garbage and then the zeros of the preallocated rest, must recover every record
//! acknowledged before the cut and nothing else.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;
use pump_store::{Kind, Record, Store, StoreConfig, format};

fn cfg(dir: &std::path::Path, sync_log: bool) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        sync_log,
        stop_write_at_available_space: 0,
        segment_size: 1 << 20,
        ..StoreConfig::default()
    }
}

fn payload(i: usize, len: usize) -> Bytes {
    Bytes::from((0..len).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>())
}

fn check(sizes: &[usize], cut: f64, garbage: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let base = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64) << 18;
    let seg_name = pump_store::segment_file_name(1);

    // Write the records through the real writer; each one's end is where the log was when it was
    // acknowledged (one append at a time, so one batch each).
    let a = tempfile::tempdir().unwrap();
    {
        let store = Store::open(cfg(a.path(), false)).unwrap();
        for (i, &n) in sizes.iter().enumerate() {
            let ts = base + i as i64 + 1;
            store.append_blocking(Record { kind: Kind::Fake, start_ts: ts, commit_ts: ts, payload: payload(i, n) }).unwrap();
        }
    }
    let image = std::fs::read(a.path().join(&seg_name)).unwrap();
    let scan = format::scan_segment(&image);
    assert_eq!(scan.records.len(), sizes.len());
    let acked_len: Vec<u64> = scan.records.iter().map(|(off, r)| off + format::encoded_len(r.payload.len()) as u64).collect();
    let k = ((scan.valid_len as f64) * cut) as usize;
    let acked = acked_len.iter().filter(|&&l| l as usize <= k).count();

    // Crash: only the first k bytes made it, then whatever garbage, then the preallocated zeros.
    let b = tempfile::tempdir().unwrap();
    let mut crashed = image[..k].to_vec();
    crashed.extend_from_slice(garbage);
    if crashed.len() < image.len() {
        crashed.resize(image.len(), 0);
    }
    std::fs::write(b.path().join(&seg_name), &crashed).unwrap();

    let store = Store::open(cfg(b.path(), true)).unwrap();
    let want_wm = if acked == 0 { 0 } else { base + acked as i64 };
    assert_eq!(store.max_commit_ts(), want_wm, "cut at {k} of {}", image.len());
    // Writing continues after the recovered records, and nothing unacknowledged sits in between.
    let next = base + sizes.len() as i64 + 10;
    store.append_blocking(Record { kind: Kind::Fake, start_ts: next, commit_ts: next, payload: Bytes::from_static(b"n") }).unwrap();
    let got = rt.block_on(async {
        let s = store.pull(0).take(acked + 1).map(|r| r.unwrap()).collect::<Vec<_>>();
        tokio::time::timeout(Duration::from_secs(10), s).await.expect("pull stalled")
    });
    for (i, g) in got[..acked].iter().enumerate() {
        assert_eq!(g.commit_ts, base + i as i64 + 1);
        assert_eq!(g.payload, payload(i, sizes[i]), "record {i} damaged");
    }
    assert_eq!(got[acked].commit_ts, next);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn crash_at_any_byte_keeps_exactly_the_acknowledged_records(
        sizes in prop::collection::vec(0usize..400, 1..25),
        cut in 0.0f64..=1.0,
        garbage in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        check(&sizes, cut, &garbage);
    }
}

#[test]
fn crash_inside_the_header_starts_afresh() {
    for cut in [0.0, 0.001, 0.01] {
        check(&[10, 20, 30], cut, b"");
        check(&[10, 20, 30], cut, &[0xff; 40]);
    }
}

#[test]
fn zero_filled_tail_is_truncated() {
    // A filesystem can leave zeroes (extended but never written blocks) after a crash.
    check(&[100, 200, 300, 400], 1.0, &[0u8; 4096]);
    check(&[100, 200, 300, 400], 0.7, &[0u8; 4096]);
}
