//! End-to-end runs with non-default drainer options: the replicated downstream must still equal the
//! upstream.

use std::time::Duration;

use anyhow::Result;
use tests::e2e::{E2e, Options};

/// `compressor = "gzip"` (seed guide): the drainer asks pumps for gzip-compressed PullBinlogs
/// responses; the pump serves them compressed and the data arrives intact.
#[test]
fn drainer_pulling_with_gzip_replicates_everything() -> Result<()> {
    let mut e2e = E2e::start(
        Options {
            duration: Duration::from_secs(5),
            threads: 2,
            tables: 3,
            pumps: 2,
            ddl_every: 30,
            drainer_flags: vec!["-compressor=gzip".into()],
            ..Options::default()
        },
        |_| {},
    )?;
    e2e.wait_workload(|_| Ok(()))?;
    let report = e2e.finish_and_verify(Duration::from_secs(90))?;
    assert!(report.equal && report.tables >= 3, "{}", report.text);
    Ok(())
}
