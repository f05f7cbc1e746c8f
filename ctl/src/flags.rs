//! binlogctl's command line: upstream's flags (single- or double-dash, through `pump::goflags`) plus our
//! `-json` and `-force`, parsed into [`Flags`] and checked per command.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};

/// What `-cmd` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Cmd {
    /// Get a TSO and write `<data-dir>/savepoint` (`commitTS = N`).
    #[value(name = "generate_meta")]
    GenerateMeta,
    /// List pumps.
    Pumps,
    /// List drainers.
    Drainers,
    /// Rewrite a pump's state in etcd.
    UpdatePump,
    /// Rewrite a drainer's state in etcd.
    UpdateDrainer,
    /// Ask a pump to pause (HTTP PUT /state/<id>/pause).
    PausePump,
    /// Ask a drainer to pause.
    PauseDrainer,
    /// Ask a pump to go offline (HTTP PUT /state/<id>/close).
    OfflinePump,
    /// Ask a drainer to go offline.
    OfflineDrainer,
    /// Encrypt `-text` for `encrypted_password`.
    Encrypt,
    /// Per node: state, max commit ts, lag, who holds back GC, why a drainer is not advancing (ours).
    Status,
    /// Compare two MySQL-protocol databases table by table (ours; `-source`, `-target`).
    Diff,
    /// Settle a Prewrite a pump holds without its Commit (ours; `-node-id`, `-start-ts`, and
    /// `-commit-ts N` or `-rollback`), after checking the transaction in TiDB.
    SettlePrewrite,
}

/// binlogctl's flags, upstream names and defaults.
#[derive(Debug, Parser)]
#[command(
    name = "binlogctl",
    about = "Inspect and change TiDB-Binlog pump and drainer state; make the initial savepoint",
    disable_version_flag = true,
    after_help = "Flags take one dash or two: -cmd pumps, --cmd=pumps."
)]
pub struct Flags {
    /// Print version information and exit.
    #[arg(short = 'V', action = ArgAction::SetTrue)]
    pub version: bool,

    /// The command.
    #[arg(long, value_enum, default_value = "pumps")]
    pub cmd: Cmd,

    /// Id of the pump or drainer (update-*, pause-*, offline-*).
    #[arg(long = "node-id")]
    pub node_id: Option<String>,

    /// Where generate_meta writes `savepoint`.
    #[arg(long = "data-dir", default_value = "binlog_position")]
    pub data_dir: PathBuf,

    /// PD (etcd) endpoints, comma separated.
    #[arg(long = "pd-urls", default_value = "http://127.0.0.1:2379")]
    pub pd_urls: String,

    /// PEM file of trusted CAs; turns TLS on for etcd and for the nodes' HTTP API.
    #[arg(long = "ssl-ca")]
    pub ssl_ca: Option<PathBuf>,

    /// PEM client certificate.
    #[arg(long = "ssl-cert")]
    pub ssl_cert: Option<PathBuf>,

    /// PEM private key of the client certificate.
    #[arg(long = "ssl-key")]
    pub ssl_key: Option<PathBuf>,

    /// Time zone for printed times ("Local" or an IANA name such as Asia/Shanghai).
    #[arg(long = "time-zone")]
    pub time_zone: Option<String>,

    /// New state for update-pump / update-drainer: online, pausing, paused, closing, offline.
    #[arg(long)]
    pub state: Option<String>,

    /// Also list offline nodes.
    #[arg(long = "show-offline-nodes", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value = "false", action = ArgAction::Set)]
    pub show_offline_nodes: bool,

    /// The text to encrypt (encrypt).
    #[arg(long, allow_hyphen_values = true)]
    pub text: Option<String>,

    /// diff: the source database, `mysql://user:password@host:port` (ours).
    #[arg(long)]
    pub source: Option<String>,

    /// diff: the target database, `mysql://user:password@host:port` (ours).
    #[arg(long)]
    pub target: Option<String>,

    /// diff: schemas to compare, comma separated (default: every non-system schema of the source).
    #[arg(long, value_delimiter = ',')]
    pub schemas: Vec<String>,

    /// settle-prewrite: the start_ts of the pending Prewrite (ours).
    #[arg(long = "start-ts")]
    pub start_ts: Option<i64>,

    /// settle-prewrite: it committed at this commit_ts (ours).
    #[arg(long = "commit-ts")]
    pub commit_ts: Option<i64>,

    /// settle-prewrite: it rolled back (ours).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false",
          action = ArgAction::Set)]
    pub rollback: bool,

    /// diff: rows per checksummed chunk.
    #[arg(long = "chunk-size", default_value_t = 10_000)]
    pub chunk_size: usize,

    /// Print JSON instead of text (ours).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false",
          action = ArgAction::Set)]
    pub json: bool,

    /// pause-*/offline-*: wait until etcd shows the node paused/offline (ours).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false",
          action = ArgAction::Set)]
    pub wait: bool,

    /// How long -wait waits, e.g. 90s, 10m (ours).
    #[arg(long = "wait-timeout", default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait_timeout: std::time::Duration,

    /// Apply a state edit even though it can lose data (ours; update-* only).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false",
          action = ArgAction::Set)]
    pub force: bool,
}

impl Flags {
    /// Parses a full command line (program name first), accepting Go-style single-dash long flags.
    pub fn parse_from_args<I, S>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let cmd = Self::command();
        let longs = pump::goflags::long_flags(&cmd);
        let longs: Vec<&str> = longs.iter().map(String::as_str).collect();
        let args = pump::goflags::normalize(args, &longs);
        reject_unknown_single_dash(&cmd, &args)?;
        let matches = cmd.try_get_matches_from(args)?;
        Self::from_arg_matches(&matches)
    }
}

/// Go's flag package says "flag provided but not defined: -x" for an unknown `-x`; clap would read it
/// as a cluster of short flags and name only its first letter. Values of flags that take one are skipped,
/// so `-text -secret` still works.
fn reject_unknown_single_dash(cmd: &clap::Command, args: &[OsString]) -> Result<(), clap::Error> {
    let takes_value = |long: &str| {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(long))
            .is_some_and(|a| a.get_action().takes_values() && a.get_num_args().is_none_or(|n| n.min_values() > 0))
    };
    let mut skip_next = false;
    for arg in args.iter().skip(1) {
        let Some(s) = arg.to_str() else { continue };
        if std::mem::take(&mut skip_next) {
            continue;
        }
        if s == "--" {
            break;
        }
        if let Some(long) = s.strip_prefix("--") {
            skip_next = !long.contains('=') && takes_value(long);
        } else if s.starts_with('-') && s.len() > 2 {
            let mut cmd = cmd.clone();
            return Err(cmd.error(clap::error::ErrorKind::UnknownArgument, format!("flag provided but not defined: {s}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::parse_from_args(std::iter::once("binlogctl").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_upstream() {
        let f = parse(&[]).unwrap();
        assert_eq!(f.cmd, Cmd::Pumps);
        assert_eq!(f.pd_urls, "http://127.0.0.1:2379");
        assert_eq!(f.data_dir, PathBuf::from("binlog_position"));
        assert!(!f.show_offline_nodes && !f.json && !f.force && !f.version);
    }

    #[test]
    fn single_and_double_dash_and_go_bools() {
        let f = parse(&["-cmd", "update-pump", "-node-id=p1", "--state", "paused", "-show-offline-nodes"]).unwrap();
        assert_eq!(f.cmd, Cmd::UpdatePump);
        assert_eq!(f.node_id.as_deref(), Some("p1"));
        assert_eq!(f.state.as_deref(), Some("paused"));
        assert!(f.show_offline_nodes);
        let f = parse(&["--cmd=generate_meta", "-show-offline-nodes=false", "-json=true", "-V"]).unwrap();
        assert_eq!(f.cmd, Cmd::GenerateMeta);
        assert!(!f.show_offline_nodes && f.json && f.version);
    }

    #[test]
    fn unknown_command_and_flag_are_errors() {
        let e = parse(&["-cmd", "pumpz"]).unwrap_err().to_string();
        assert!(e.contains("pumpz") && e.contains("generate_meta"), "{e}");
        let e = parse(&["-bogus", "1"]).unwrap_err().to_string();
        assert!(e.contains("flag provided but not defined: -bogus"), "{e}");
        // A value that starts with a dash is still a value.
        assert_eq!(parse(&["-cmd", "encrypt", "-text", "-pw-"]).unwrap().text.as_deref(), Some("-pw-"));
    }
}
