//! The `pump` command line and pump.toml with the real binary: `-V`, unknown keys, bad values,
//! `PUMP_*` environment variables and their precedence, unreachable etcd.

use std::process::{Command, Output};

use tests::our_binary;

fn pump(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(our_binary("pump"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("PUMP_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output { status, stdout, stderr } = cmd.output().expect("run pump (build it with cargo build --bins)");
    (status.code().unwrap_or(-1), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

#[test]
fn version_flag_prints_version_and_hash() {
    for flag in ["-V", "--V"] {
        let (code, out, err) = pump(&[flag], &[]);
        if flag == "--V" {
            assert_ne!(code, 0, "only -V is the version flag: {out}{err}");
            continue;
        }
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("Release Version: v") && out.contains("Git Commit Hash: "), "{out}");
    }
}

#[test]
fn unknown_config_key_is_named_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pump.toml");
    std::fs::write(&cfg, "addr = \"127.0.0.1:8250\"\n[storage]\nsync-logs = true\n").unwrap();
    let (code, _, err) = pump(&["-config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("storage.sync-logs") && err.contains("did you mean \"storage.sync-log\""), "{err}");

    std::fs::write(&cfg, "gc = -1\n").unwrap();
    let (code, _, err) = pump(&["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gc"), "{err}");
}

#[test]
fn environment_overrides_file_and_flags_override_environment() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "no-such-key = 1\n").unwrap();
    // PUMP_CONFIG is read when -config is absent.
    let (code, _, err) = pump(&[], &[("PUMP_CONFIG", bad.to_str().unwrap())]);
    assert_eq!(code, 2);
    assert!(err.contains("no-such-key"), "{err}");

    // An environment value beats the file; a flag beats the environment.
    let file = dir.path().join("pump.toml");
    std::fs::write(&file, "addr = \"0.0.0.0:8250\"\n").unwrap();
    let (code, _, err) = pump(&["-config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("advertise-addr"), "0.0.0.0 cannot be advertised: {err}");
    let dead = format!("http://127.0.0.1:{}", tests::free_port());
    let data = dir.path().join("data");
    let args = ["-config", file.to_str().unwrap(), "-data-dir", data.to_str().unwrap(), "-pd-urls", &dead];
    let (code, _, err) = pump(&args, &[("PUMP_ADVERTISE_ADDR", "127.0.0.1:8250")]);
    assert_ne!(code, 0);
    assert!(!err.contains("advertise-addr") && err.contains("PD unreachable"), "env fixed advertise-addr, PD is down: {err}");
    let (code, _, err) =
        pump(&[&args[..], &["-advertise-addr", "0.0.0.0:1"]].concat(), &[("PUMP_ADVERTISE_ADDR", "127.0.0.1:8250")]);
    assert_eq!(code, 2);
    assert!(err.contains("advertise-addr"), "the flag wins over the environment: {err}");
}

#[test]
fn log_rotate_takes_hour_or_day_and_logs_go_to_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/pump.log");
    let (code, _, err) = pump(&["-log-rotate", "week", "-log-file", log.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-log-rotate") && err.contains("week") && err.contains("hour or day"), "{err}");

    // A valid rotation: the pump logs into -log-file (here until it fails on an unreachable etcd).
    let unreachable = format!("http://127.0.0.1:{}", tests::free_port());
    let data = dir.path().join("data");
    let args = ["-log-rotate", "hour", "-log-file", log.to_str().unwrap(), "-pd-urls", &unreachable, "-data-dir", data.to_str().unwrap()];
    let (code, _, err) = pump(&args, &[]);
    assert_ne!(code, 0, "no etcd: {err}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("pump starting"), "{text}");
}
