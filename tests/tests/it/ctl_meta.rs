//! binlogctl's generate_meta (savepoint from PD's TSO) and encrypt, against PD (real or the stand-in).

use crate::ctl_util::{Env, ctl};

fn savepoint_ts(path: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text.lines().find(|l| !l.starts_with('#')).unwrap();
    let v = line.strip_prefix("commitTS = ").unwrap_or_else(|| panic!("not `commitTS = N`: {text:?}"));
    v.parse().unwrap()
}

#[test]
fn generate_meta_writes_a_fresh_increasing_savepoint() {
    let env = Env::start();
    let dir = env.cluster.dir().join("bp");
    let dir_s = dir.to_str().unwrap();
    let raw = || env.block_on(tests::pd::raw_ts(&env.url())).unwrap();
    let (cluster_id, before) = raw();
    let run = env.ctl(&["-cmd", "generate_meta", "-data-dir", dir_s]);
    let first = savepoint_ts(&dir.join("savepoint"));
    let (_, after) = raw();
    assert!(run.ok().stdout.contains(&format!("meta: {{CommitTS: {first}}}")), "{run:?}");
    assert!(before < first && first < after, "PD's ts: {before} < {first} < {after}");

    let run = env.ctl(&["--cmd=generate_meta", "--data-dir", dir_s, "-time-zone", "Asia/Shanghai"]);
    let second = savepoint_ts(&dir.join("savepoint"));
    assert!(second > first);
    assert!(run.ok().stdout.contains("+0800 CST"), "{run:?}");
    assert!(run.stdout.contains("+0000 UTC"), "{run:?}");
    let text = std::fs::read_to_string(dir.join("savepoint")).unwrap();
    assert!(text.lines().skip(1).all(|l| l.starts_with("# ")), "times are TOML comments: {text:?}");

    let run = env.ctl(&["-cmd", "generate_meta", "-data-dir", dir_s, "-json"]);
    let v: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(v["commitTS"].as_u64().unwrap(), savepoint_ts(&dir.join("savepoint")));
    assert_eq!(v["clusterID"].as_u64().unwrap(), cluster_id);
    assert_eq!(env.block_on(tests::pd::stored_cluster_id(&env.url())).unwrap(), cluster_id);
}

#[test]
fn generate_meta_refuses_a_plain_etcd_and_names_a_dead_pd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = tests::Etcd::start(&dir.path().join("etcd")).unwrap();
    let bp = dir.path().join("bp");
    let url = etcd.url();
    let run = ctl(&["-pd-urls", &url, "-cmd", "generate_meta", "-data-dir", bp.to_str().unwrap()], &[]);
    run.failed(1, &format!("{url} is not a PD"));
    assert!(!bp.join("savepoint").exists());

    let dead = format!("http://127.0.0.1:{}", tests::free_port());
    let run = ctl(&["-pd-urls", &dead, "-cmd", "generate_meta", "-data-dir", bp.to_str().unwrap()], &[]);
    run.failed(1, &format!("PD unreachable at {dead}"));
}

#[test]
fn encrypt_output_decrypts_with_the_default_or_env_key() {
    let run = ctl(&["-cmd", "encrypt", "-text", "s3cret pw"], &[]);
    let enc = run.ok().stdout.trim().to_owned();
    assert!(run.stderr.contains("default key"), "{run:?}");
    let key = hex_decode(pump::encrypt::DEFAULT_SECRET_KEY_HEX);
    assert_eq!(pump::encrypt::decrypt_with(&key, &enc).unwrap(), "s3cret pw");

    let hex16 = "000102030405060708090a0b0c0d0e0f";
    let run = ctl(&["--cmd", "encrypt", "--text=abc", "--json"], &[("BINLOG_SECRET_KEY", hex16)]);
    let v: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap();
    assert_eq!(pump::encrypt::decrypt_with(&hex_decode(hex16), v["encrypted"].as_str().unwrap()).unwrap(), "abc");
    assert!(pump::encrypt::decrypt_with(&key, v["encrypted"].as_str().unwrap()).map_or(true, |p| p != "abc"));

    ctl(&["-cmd", "encrypt", "-text", "x"], &[("BINLOG_SECRET_KEY", "abcd")]).failed(1, "16, 24 or 32 bytes");
    ctl(&["-cmd", "encrypt"], &[]).failed(1, "-text is required");
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
