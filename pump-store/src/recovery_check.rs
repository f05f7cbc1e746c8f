//! The body of the `recover` fuzz target, public so a stable test can run it over a corpus.

use std::time::Duration;

use crate::format;
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::store::Store;

/// Writes `image` as the only (active) segment of a fresh store directory, opens the store and checks
/// what recovery promises. Panics if a promise breaks; an error from `open` is fine.
///
/// Promises: no panic; the recovered segment holds exactly the records `format::scan_segment` accepted
/// from `image` (every one passed its CRC) and nothing but zeros after them (or the seal an old-format
/// segment gets), each record readable again through [`Store::get`]; appending after recovery works.
pub fn open_image(image: &[u8]) {
    let dir = match tempfile_dir() {
        Some(d) => d,
        None => return,
    };
    let seg = dir.join(crate::segment::file_name(1));
    if std::fs::write(&seg, image).is_err() {
        return;
    }
    let cfg = StoreConfig {
        dir: dir.clone(),
        sync_log: false,
        stop_write_at_available_space: 0,
        max_txn_timeout: Duration::from_secs(3600),
        ..StoreConfig::default()
    };
    let expected = format::scan_segment(image);
    match Store::open(cfg) {
        Err(StoreError::Corrupt { .. }) | Err(StoreError::Io { .. }) => {}
        Err(e) => panic!("unexpected open error: {e}"),
        Ok(store) => {
            let after = std::fs::read(&seg).unwrap_or_default();
            let rescan = format::scan_segment(&after);
            if expected.header.is_ok() && expected.footer.is_none() {
                // Exactly the valid records are kept; after them only zeros (a v2 segment's
                // preallocation), unless an old-format segment was sealed at open.
                assert_eq!(rescan.records, expected.records, "recovery changed the valid records");
                if rescan.footer.is_none() {
                    let rest = after.get(rescan.valid_len as usize..).unwrap_or_default();
                    assert!(rest.iter().all(|&b| b == 0), "bytes after the valid records were kept");
                }
            } else if expected.header.is_err() {
                assert!(rescan.header.is_ok() && rescan.records.is_empty(), "torn header not started afresh");
            }
            // A sealed image's footer is trusted for lookups, so only check lookups of scanned ones.
            let scanned = if expected.footer.is_none() { &expected.records[..] } else { &[] };
            for (_, r) in scanned.iter().take(16) {
                let key = match r.kind {
                    format::RecordKind::Prewrite => r.start_ts,
                    format::RecordKind::Commit | format::RecordKind::Fake => r.commit_ts,
                    _ => continue,
                };
                let got = store.get(key).expect("get after recovery");
                assert!(got.is_some(), "record with key {key} lost");
            }
            drop(store);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> Option<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "pump-store-recover-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).ok()?;
    Some(d)
}
