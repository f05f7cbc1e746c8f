//! The `drainer` binary's command line: strict config keys, flag/env/file precedence, -V.

use std::process::Command;

use tests::our_binary;

fn drainer(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(our_binary("drainer"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running drainer");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn unknown_config_key_is_an_error_naming_key_and_nearest_valid_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("drainer.toml");
    std::fs::write(&p, "detect-interval = 3\n[syncer]\nreplicate-do-tables = []\n").unwrap();
    let (code, err) = drainer(&["-config", p.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown configuration options: syncer.replicate-do-tables"), "{err}");
    assert!(err.contains("did you mean \"syncer.replicate-do-table\""), "{err}");
}

#[test]
fn flag_beats_env_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("drainer.toml");
    std::fs::write(&p, "[syncer]\ndb-type = \"mysql\"\n").unwrap();
    let cfg = p.to_str().unwrap();
    // env beats the file
    let (code, err) = drainer(&["-config", cfg], &[("BINLOG_SERVER_DEST_DB_TYPE", "flash")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"flash\" is no longer supported"), "{err}");
    // an explicit flag beats the env
    let (code, err) = drainer(&["-config", cfg, "-dest-db-type", "oracle"], &[("BINLOG_SERVER_DEST_DB_TYPE", "flash")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"oracle\" is not supported"), "{err}");
    // double-dash works as well
    let (code, err) = drainer(&["--config", cfg, "--compressor=zstd"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("compressor"), "{err}");
}

#[test]
fn version_flag_prints_and_exits() {
    let out = Command::new(our_binary("drainer")).arg("-V").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("drainer"));
}
