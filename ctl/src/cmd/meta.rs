//! `generate_meta`: get a fresh ts and write `<data-dir>/savepoint` as TOML `commitTS = N`, the
//! drainer's starting point after a full backup. With `-time-zone` the time of the ts is printed and
//! also written as TOML comments (upstream appended plain lines, which broke the TOML; ours stays valid).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pump::pd::{PdClient, PdOptions};

use crate::ctx::Ctx;
use crate::output::{Zone, ts_ms};

/// The savepoint file name inside `-data-dir`.
pub const SAVEPOINT: &str = "savepoint";

/// `-cmd generate_meta`.
pub async fn generate_meta(ctx: &Ctx) -> Result<()> {
    // A CLI gives up sooner than a daemon: 5 s of retries, then the error names PD and its endpoints.
    let opts = PdOptions { retry_for: std::time::Duration::from_secs(5), ..PdOptions::default() };
    let src = PdClient::connect_with(&ctx.etcd, opts).await?;
    let ts = src.get_ts().await?;
    let ts = i64::try_from(ts).context("the ts does not fit in int64")?;
    let times = ctx.flags.time_zone.as_ref().map(|_| {
        let utc = Zone::parse(Some("UTC")).map(|z| z.format_ts(ts)).unwrap_or_default();
        (utc, ctx.zone.format_ts(ts))
    });
    let path = write_savepoint(&ctx.flags.data_dir, ts, times.as_ref())?;
    if ctx.flags.json {
        let mut v = serde_json::json!({"commitTS": ts, "path": path, "clusterID": src.cluster_id()});
        if let Some((_, local)) = &times {
            v["time"] = local.clone().into();
            v["timeUTC"] = crate::output::rfc3339_ms(ts_ms(ts)).into();
        }
        println!("{v}");
        return Ok(());
    }
    println!("meta: {{CommitTS: {ts}}}");
    if let Some((utc, local)) = &times {
        println!("commit time: {utc}");
        println!("commit time: {local}");
    }
    println!("wrote {}", path.display());
    Ok(())
}

/// Writes `<dir>/savepoint` atomically (temp file, fsync, rename) and returns its path.
pub fn write_savepoint(dir: &Path, ts: i64, times: Option<&(String, String)>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating -data-dir {}", dir.display()))?;
    let path = dir.join(SAVEPOINT);
    let tmp = dir.join(format!(".{SAVEPOINT}.tmp"));
    let mut text = format!("commitTS = {ts}\n");
    if let Some((utc, local)) = times {
        text.push_str(&format!("# {utc}\n# {local}\n"));
    }
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savepoint_is_toml_with_commit_ts_even_with_times() {
        let dir = tempfile::tempdir().unwrap();
        let times = ("2026-01-01 00:00:00 +0000 UTC".to_string(), "2026-01-01 08:00:00 +0800 CST".to_string());
        let p = write_savepoint(&dir.path().join("bp"), 412518831548007863, Some(&times)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("commitTS = 412518831548007863\n"), "{text}");
        assert_eq!(parse_toml_commit_ts(&text), 412518831548007863);
    }

    /// A tiny TOML check without a TOML dependency: one `key = int` line, the rest comments.
    fn parse_toml_commit_ts(text: &str) -> i64 {
        let mut ts = None;
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').unwrap();
            assert_eq!(k.trim(), "commitTS");
            ts = Some(v.trim().parse().unwrap());
        }
        ts.unwrap()
    }
}
