//! `binlogctl`: lists pumps and drainers, edits their state in etcd, asks them over HTTP to pause or go
//! offline, writes the initial savepoint, encrypts passwords, and explains why replication is stuck.
//!
//! # Layout
//! - [`flags`]: the command line (upstream's flags, single- or double-dash).
//! - [`ctx`]: what every command needs: etcd, the nodes' HTTP API, the time zone.
//! - [`output`]: how nodes and times are printed.
//! - `cmd/`: one file per command group (`nodes`, `safety`, `status`, `meta`, `encrypt`).
//! - [`diff`]: compares two MySQL-protocol databases (`-cmd diff`; printed by `cmd::diff`).
#![forbid(unsafe_code)]

mod cmd;
mod ctx;
mod diff;
mod flags;
mod output;

use std::process::ExitCode;

use flags::{Cmd, Flags};

fn main() -> ExitCode {
    let flags = match Flags::parse_from_args(std::env::args_os()) {
        Ok(f) => f,
        Err(e) => {
            // Help and version print and succeed; usage errors exit 2, as clap does.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if flags.version {
        println!("Release Version: {}", env!("CARGO_PKG_VERSION"));
        println!("Binary: binlogctl (tidb-binlog-rs)");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("binlogctl: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("binlogctl: error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let ctx = ctx::Ctx::new(flags)?;
    match ctx.flags.cmd {
        Cmd::GenerateMeta => cmd::meta::generate_meta(&ctx).await,
        Cmd::Pumps => cmd::nodes::list(&ctx, pump::node::NodeKind::Pump).await,
        Cmd::Drainers => cmd::nodes::list(&ctx, pump::node::NodeKind::Drainer).await,
        Cmd::UpdatePump => cmd::nodes::update(&ctx, pump::node::NodeKind::Pump).await,
        Cmd::UpdateDrainer => cmd::nodes::update(&ctx, pump::node::NodeKind::Drainer).await,
        Cmd::PausePump => cmd::nodes::apply(&ctx, pump::node::NodeKind::Pump, cmd::nodes::Action::Pause).await,
        Cmd::PauseDrainer => cmd::nodes::apply(&ctx, pump::node::NodeKind::Drainer, cmd::nodes::Action::Pause).await,
        Cmd::OfflinePump => cmd::nodes::apply(&ctx, pump::node::NodeKind::Pump, cmd::nodes::Action::Close).await,
        Cmd::OfflineDrainer => {
            cmd::nodes::apply(&ctx, pump::node::NodeKind::Drainer, cmd::nodes::Action::Close).await
        }
        Cmd::Encrypt => cmd::encrypt::encrypt(&ctx),
        Cmd::Status => cmd::status::status(&ctx).await,
        Cmd::Diff => cmd::diff::diff(&ctx).await,
        Cmd::SettlePrewrite => cmd::prewrite::settle(&ctx).await,
    }
}

/// The error and its causes, skipping a cause whose text the message before it already contains
/// (library errors name their source in their own message).
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
