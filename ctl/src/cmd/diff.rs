//! `diff -source URL -target URL`: runs the comparison of `crate::diff` and prints one line per table
//! (or the report as JSON). Differences make the exit code non-zero, so scripts can gate on it.

use anyhow::{Result, bail};

use crate::ctx::Ctx;
use crate::diff::{DiffOptions, DiffReport};

/// `-cmd diff`.
pub async fn diff(ctx: &Ctx) -> Result<()> {
    let (Some(source), Some(target)) = (ctx.flags.source.as_deref(), ctx.flags.target.as_deref()) else {
        bail!("-cmd diff: -source and -target are required (mysql://user:password@host:port)");
    };
    let opts = DiffOptions {
        chunk_size: ctx.flags.chunk_size,
        schemas: ctx.flags.schemas.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
        ..DiffOptions::default()
    };
    let report = crate::diff::diff(source, target, &opts).await?;
    if ctx.flags.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    let differing = report.tables.iter().filter(|t| !t.equal).count();
    if differing > 0 {
        bail!("the databases differ in {differing} of {} tables", report.tables.len());
    }
    Ok(())
}

fn render(r: &DiffReport) -> String {
    let mut out = String::new();
    for t in &r.tables {
        let name = format!("{}.{}", t.schema, t.table);
        if t.equal {
            out.push_str(&format!("{name}: equal ({} rows, {} chunks)\n", t.source_rows, t.chunks));
            continue;
        }
        out.push_str(&format!(
            "{name}: DIFFERENT (source {} rows, target {} rows, {} of {} chunks differ)\n",
            t.source_rows, t.target_rows, t.chunks_differing, t.chunks
        ));
        for p in &t.problems {
            out.push_str(&format!("  - {p}\n"));
        }
        for row in &t.rows {
            let kind = serde_json::to_value(&row.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            out.push_str(&format!("  - {kind} key ({})", row.key.join(", ")));
            if let Some(s) = &row.source {
                out.push_str(&format!(" source ({})", s.join(", ")));
            }
            if let Some(t) = &row.target {
                out.push_str(&format!(" target ({})", t.join(", ")));
            }
            out.push('\n');
        }
    }
    let equal = r.tables.iter().filter(|t| t.equal).count();
    out.push_str(&format!("{equal} of {} tables equal\n", r.tables.len()));
    out
}
