//! Go-style command lines for clap: upstream's binaries take `-flag value`, `-flag=value` and
//! `--flag`; clap wants `--flag`. [`normalize`] rewrites single-dash long flags to double-dash, so every
//! binary of ours accepts both spellings.
//!
//! A single-dash word is rewritten only when it names a long flag of the command (given by the caller),
//! so short flags (`-L`, `-V`, `-c`) and negative numbers (`-1` for `initial-commit-ts`) are left alone.

use std::ffi::OsString;

/// Rewrites `-name` / `-name=value` to `--name` / `--name=value` for every `name` in `long_flags`.
/// Arguments after a bare `--` are left as they are.
pub fn normalize<I, S>(args: I, long_flags: &[&str]) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut out = Vec::new();
    let mut passthrough = false;
    for (i, arg) in args.into_iter().map(Into::into).enumerate() {
        if i == 0 || passthrough {
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        let rewritten = s
            .strip_prefix('-')
            .filter(|rest| !rest.starts_with('-'))
            .filter(|rest| long_flags.contains(&rest.split('=').next().unwrap_or(rest)))
            .map(|rest| OsString::from(format!("--{rest}")));
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

/// Long flag names of a clap command, for [`normalize`].
pub fn long_flags(cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments().filter_map(|a| a.get_long()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize(args.iter().copied(), &["config", "pd-urls", "initial-commit-ts", "V-not-short"])
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            norm(&["pump", "-config", "p.toml", "-pd-urls=http://a:1", "--config", "x"]),
            ["pump", "--config", "p.toml", "--pd-urls=http://a:1", "--config", "x"]
        );
    }

    #[test]
    fn short_flags_values_and_negative_numbers_stay() {
        assert_eq!(
            norm(&["d", "-L", "debug", "-V", "-initial-commit-ts", "-1", "-c", "4"]),
            ["d", "-L", "debug", "-V", "--initial-commit-ts", "-1", "-c", "4"]
        );
    }

    #[test]
    fn unknown_single_dash_words_and_passthrough_are_untouched() {
        assert_eq!(norm(&["d", "-nope", "--", "-config"]), ["d", "-nope", "--", "-config"]);
    }
}
