//! A directory written in segment format v1 (before pad records and preallocation) opens: its records
//! are served, its active segment is sealed at open, and new records go into a v2 segment.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use pump_store::format::{self, Footer, IndexEntry, Loc, RecordKind, RecordRef};
use pump_store::{IoBackend, Kind, Record, Store, StoreConfig};

fn rec<'a>(kind: RecordKind, start_ts: i64, commit_ts: i64, prewrite_at: Loc, payload: &'a [u8]) -> RecordRef<'a> {
    RecordRef { kind, start_ts, commit_ts, prewrite_at, payload }
}

/// A v1 segment: header, the records, and (if `seal`) a footer with `seal_watermark`.
fn v1_segment(seq: u64, recs: &[RecordRef<'_>], seal: Option<i64>) -> Vec<u8> {
    let mut v = format::encode_header_version(seq, 1).to_vec();
    let first = v.len() as u64;
    for r in recs {
        format::encode_record(&mut v, r);
    }
    if let Some(seal_watermark) = seal {
        let footer = Footer {
            seal_watermark,
            replay_from: seq + 1,
            min_ts: recs.iter().map(|r| if r.kind == RecordKind::Prewrite { r.start_ts } else { r.commit_ts }).min().unwrap(),
            max_ts: recs.iter().map(|r| r.start_ts.max(r.commit_ts)).max().unwrap(),
            max_commit: recs.iter().filter(|r| r.kind != RecordKind::Prewrite).map(|r| r.commit_ts).max().unwrap(),
            records: recs.len() as u64,
            data_end: v.len() as u64,
            index: vec![IndexEntry { off: first, prefix_max_commit: i64::MIN, safe_watermark: i64::MIN }],
        };
        v.extend(format::encode_seal(&footer));
    }
    v
}

fn cfg(dir: &std::path::Path, io_backend: IoBackend) -> StoreConfig {
    StoreConfig { dir: dir.to_path_buf(), stop_write_at_available_space: 0, io_backend, ..StoreConfig::default() }
}

fn pull_all(store: &Store, n: usize) -> Vec<(i64, Kind, Bytes, Option<Bytes>)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let s = store.pull(0).take(n).map(|r| r.unwrap()).map(|c| (c.commit_ts, c.kind, c.payload, c.prewrite)).collect::<Vec<_>>();
        tokio::time::timeout(Duration::from_secs(10), s).await.expect("pull stalled")
    })
}

fn check(backend: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let base = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64) << 18;
    let (s1, c1, f, s2, c2) = (base + 1, base + 2, base + 3, base + 4, base + 5);
    let seg1 = v1_segment(
        1,
        &[
            rec(RecordKind::Prewrite, s1, 0, Loc::default(), b"p1"),
            rec(RecordKind::Commit, s1, c1, Loc { seq: 1, off: format::HEADER_LEN as u64 }, b"c1"),
            rec(RecordKind::Fake, f, f, Loc::default(), b"f"),
        ],
        Some(f),
    );
    let mut seg2 = v1_segment(
        2,
        &[
            rec(RecordKind::Prewrite, s2, 0, Loc::default(), b"p2"),
            rec(RecordKind::Commit, s2, c2, Loc { seq: 2, off: format::HEADER_LEN as u64 }, b"c2"),
        ],
        None,
    );
    seg2.extend_from_slice(&[0x55; 13]); // a torn tail
    std::fs::write(dir.path().join(pump_store::segment_file_name(1)), &seg1).unwrap();
    std::fs::write(dir.path().join(pump_store::segment_file_name(2)), &seg2).unwrap();

    let store = Store::open(cfg(dir.path(), backend)).unwrap();
    assert_eq!(store.max_commit_ts(), c2);
    let want = vec![
        (c1, Kind::Commit, Bytes::from_static(b"c1"), Some(Bytes::from_static(b"p1"))),
        (f, Kind::Fake, Bytes::from_static(b"f"), None),
        (c2, Kind::Commit, Bytes::from_static(b"c2"), Some(Bytes::from_static(b"p2"))),
    ];
    assert_eq!(pull_all(&store, 3), want);
    // The v1 active segment is sealed (untouched records, then its seal); new records go into segment 3.
    let sealed = std::fs::read(dir.path().join(pump_store::segment_file_name(2))).unwrap();
    let scan = format::scan_segment(&sealed);
    assert_eq!(scan.header.unwrap().version, 1);
    assert_eq!(scan.records.len(), 2);
    assert!(scan.footer.is_some(), "the old active segment is sealed at open");
    let f2 = base + 10;
    store.append_blocking(Record { kind: Kind::Fake, start_ts: f2, commit_ts: f2, payload: Bytes::from_static(b"f2") }).unwrap();
    drop(store);
    let seg3 = std::fs::read(dir.path().join(pump_store::segment_file_name(3))).unwrap();
    let scan = format::scan_segment(&seg3);
    assert_eq!(scan.header.unwrap().version, format::VERSION);
    assert_eq!(scan.records.len(), 1);

    let store = Store::open(cfg(dir.path(), backend)).unwrap();
    assert_eq!(store.max_commit_ts(), f2);
    let mut want = want;
    want.push((f2, Kind::Fake, Bytes::from_static(b"f2"), None));
    assert_eq!(pull_all(&store, 4), want);
}

#[test]
fn a_v1_directory_opens_and_continues_in_v2_with_the_std_backend() {
    check(IoBackend::Std);
}

#[test]
fn a_v1_directory_opens_and_continues_in_v2_with_the_io_uring_pipeline() {
    check(IoBackend::Uring);
}
