//! Generates `binlog` (Binlog, Pump, Cistern), `pdpb` (PD's members, TSO, regions and stores), `metapb` and
//! `tikvpb` (TiKV's MVCC and transaction-status calls) from our own .proto files, and records the git commit
//! for `pump -V`.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/binlog.proto", "proto/pump.proto", "proto/cistern.proto", "proto/metapb.proto", "proto/pdpb.proto", "proto/tikvpb.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The server keeps a written payload as tonic received it (no copy) and stores it unchanged.
        .bytes(".binlog.WriteBinlogReq.payload")
        .compile_protos(&protos, &["proto"])?;

    let hash = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "None".into());
    println!("cargo:rustc-env=PUMP_GIT_HASH={hash}");
    // Re-run when HEAD moves (the HEAD file, and the branch ref it points at).
    for p in [git(&["rev-parse", "--git-path", "HEAD"]), git(&["rev-parse", "--symbolic-full-name", "HEAD"])
        .and_then(|r| git(&["rev-parse", "--git-path", &r]))]
    .into_iter()
    .flatten()
    .filter(|p| std::path::Path::new(p).exists())
    {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
