//! The fuzz bodies on stable, over valid segments mutated deterministically and over the saved crash
//! inputs in `fuzz/regressions/`. CI runs this instead of cargo-fuzz.

use pump_store::format::{self, Footer, IndexEntry, Loc, RecordKind, RecordRef};

fn valid_segment(sealed: bool) -> Vec<u8> {
    let mut v = format::encode_header(1).to_vec();
    let kinds = [RecordKind::Prewrite, RecordKind::Commit, RecordKind::Rollback, RecordKind::Fake];
    let first = v.len() as u64;
    for i in 0..24i64 {
        let payload: Vec<u8> = (0..(i * 13 % 200) as usize).map(|j| j as u8 ^ i as u8).collect();
        format::encode_record(
            &mut v,
            &RecordRef {
                kind: kinds[i as usize % 4],
                start_ts: 1000 + i,
                commit_ts: match i % 4 {
                    1 => 2000 + i,
                    3 => 1000 + i,
                    _ => 0,
                },
                prewrite_at: Loc { seq: 1, off: first },
                payload: &payload,
            },
        );
    }
    if sealed {
        let footer = Footer {
            seal_watermark: 2021,
            replay_from: 1,
            min_ts: 1000,
            max_ts: 2023,
            max_commit: 2021,
            records: 24,
            data_end: v.len() as u64,
            index: vec![IndexEntry { off: first, prefix_max_commit: i64::MIN, safe_watermark: 0 }],
        };
        let seal = format::encode_seal(&footer);
        v.extend(seal);
    }
    v
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(3) {
        match rng.below(6) {
            0 => {
                let i = rng.below(v.len());
                if !v.is_empty() {
                    v[i] ^= 1 << rng.below(8);
                }
            }
            1 => {
                let n = rng.below(v.len() + 1);
                v.truncate(n);
            }
            2 => {
                let a = rng.below(v.len());
                let b = (a + rng.below(64)).min(v.len());
                v[a..b].fill(0);
            }
            3 => {
                let a = rng.below(v.len());
                let junk: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
                v.splice(a..a, junk);
            }
            4 => {
                // Duplicate a slice somewhere else (a valid record out of place).
                let a = rng.below(v.len());
                let b = (a + rng.below(300)).min(v.len());
                let chunk = v[a..b].to_vec();
                let at = rng.below(v.len());
                v.splice(at..at, chunk);
            }
            _ => {
                let at = rng.below(v.len());
                let word = (rng.next() as u32).to_le_bytes();
                for (k, b) in word.iter().enumerate() {
                    if at + k < v.len() {
                        v[at + k] = *b;
                    }
                }
            }
        }
    }
    v
}

#[test]
fn scan_invariants_hold_on_mutated_segments() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for sealed in [false, true] {
        let base = valid_segment(sealed);
        format::check_scan_invariants(&base);
        for _ in 0..3000 {
            format::check_scan_invariants(&mutate(&base, &mut rng));
        }
    }
}

#[test]
fn recovery_holds_on_mutated_segments() {
    let mut rng = Rng(0x2545f4914f6cdd1d);
    for sealed in [false, true] {
        let base = valid_segment(sealed);
        pump_store::recovery_check::open_image(&base);
        for _ in 0..60 {
            pump_store::recovery_check::open_image(&mutate(&base, &mut rng));
        }
    }
}

#[test]
fn saved_fuzz_inputs_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e} (the saved fuzz inputs live there)", dir.display()));
    for e in entries {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        format::check_scan_invariants(&bytes);
        pump_store::recovery_check::open_image(&bytes);
    }
}
