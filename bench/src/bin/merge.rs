//! Merge throughput: `drainer::merge::Merger` (batches through bounded per-source queues, a loser tree over the heads,
//! dedup and disorder accounting) against `itertools::kmerge` over the same in-memory streams (a plain
//! k-way merge with no watermark logic), side by side in one run.
//!
//! Usage: `merge [TOTAL_ITEMS]` (default 4,000,000); prints one comparison per source count 2/8/32.
use std::time::Instant;

use bench::Comparison;
use drainer::merge::{Merger, Pause, source};
use itertools::Itertools;

/// Streams of strictly increasing ts, interleaved across sources like pumps sharing one TSO.
fn streams(k: usize, total: usize) -> Vec<Vec<i64>> {
    let mut out = vec![Vec::with_capacity(total / k + 1); k];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[(x as usize) % k].push(i as i64 + 1);
    }
    out
}

fn ours(data: &[Vec<i64>], batch: usize) -> (f64, i64) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let mut m: Merger<i64> = Merger::new(0);
        let mut senders = Vec::new();
        for (i, s) in data.iter().enumerate() {
            let (tx, rx) = source(format!("p{i}"), s.len() / batch + 2, m.waker());
            m.add_source(rx);
            for chunk in s.chunks(batch) {
                tx.send(chunk.to_vec()).await.expect("queue");
            }
            senders.push(tx);
        }
        drop(senders);
        let t = Instant::now();
        let mut n = 0usize;
        let mut sum = 0i64;
        // the drainer's merge task takes batches of 256 (`drainer::syncer::MERGE_BATCH`)
        let mut out = Vec::with_capacity(256);
        loop {
            let pause = m.fill(&mut out, 256);
            for &x in &out {
                n += 1;
                sum = sum.wrapping_add(x);
            }
            out.clear();
            if pause != Pause::Full {
                break;
            }
        }
        (n as f64 / t.elapsed().as_secs_f64(), sum)
    })
}

fn baseline(data: &[Vec<i64>]) -> (f64, i64) {
    let iters: Vec<_> = data.iter().map(|s| s.clone().into_iter()).collect();
    let t = Instant::now();
    let mut n = 0usize;
    let mut sum = 0i64;
    for x in iters.into_iter().kmerge() {
        n += 1;
        sum = sum.wrapping_add(x);
    }
    (n as f64 / t.elapsed().as_secs_f64(), sum)
}

fn main() {
    let total: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(4_000_000);
    for k in [2usize, 8, 32] {
        let data = streams(k, total);
        // warm up both, then take the median of 5 alternating runs
        let _ = (ours(&data, 512), baseline(&data));
        let (mut o, mut b) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let (ro, so) = ours(&data, 512);
            let (rb, sb) = baseline(&data);
            assert_eq!(so, sb, "both merges must produce the same items");
            o.push(ro);
            b.push(rb);
        }
        o.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        Comparison::higher_is_better(&format!("merge {k} streams, {total} items"), o[2], b[2], "itertools::kmerge", "items/s")
            .print();
    }
}
