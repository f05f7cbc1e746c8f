//! End-to-end runs with non-default drainer options: the replicated downstream must still equal the
//! upstream.

use std::time::Duration;

use anyhow::Result;
use tests::e2e::{E2e, Options, SinkKind};

/// The short workload both runs use: 5 s, 2 threads, 3 tables, a DDL every 30 transactions, over
/// `pumps` pumps.
fn short_run(pumps: usize) -> Options {
    Options { duration: Duration::from_secs(5), threads: 2, tables: 3, pumps, ddl_every: 30, ..Options::default() }
}

/// `compressor = "gzip"` (seed guide): the drainer asks pumps for gzip-compressed PullBinlogs
/// responses; the pump serves them compressed and the data arrives intact.
#[test]
fn drainer_pulling_with_gzip_replicates_everything() -> Result<()> {
    let mut e2e = E2e::start(
        Options { drainer_flags: vec!["-compressor=gzip".into()], ..short_run(2) },
        |_| {},
    )?;
    e2e.wait_workload(|_| Ok(()))?;
    let report = e2e.finish_and_verify(Duration::from_secs(90))?;
    assert!(report.equal && report.tables >= 3, "{}", report.text);
    Ok(())
}

/// The file sink with `compression = "gzip"` (seed guide), then Reparo into the downstream: the
/// restored tables equal the upstream's (DDL in the middle, three pumps).
#[test]
fn file_sink_with_gzip_then_reparo_restores_the_upstream() -> Result<()> {
    let mut e2e = E2e::start(
        Options { sink: SinkKind::File, to_extra: "compression = \"gzip\"".into(), ..short_run(3) },
        |_| {},
    )?;
    e2e.wait_workload(|_| Ok(()))?;
    let report = e2e.finish_and_verify(Duration::from_secs(90))?;
    assert!(report.equal && report.tables >= 3, "{}", report.text);
    let files = drainer::sink::file::binlogfile::list_files(&e2e.drainer.dir.join("data"))?;
    let mut gz = 0;
    for (p, _) in &files {
        if std::fs::metadata(p)?.len() > 0 {
            assert!(drainer::sink::file::binlogfile::is_gzip(p)?, "{} is not gzip", p.display());
            gz += 1;
        }
    }
    assert!(gz >= 1, "{files:?}");
    Ok(())
}
