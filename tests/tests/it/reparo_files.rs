//! The file sink writes hand-built items; the real `reparo` binary reads them back (print), honours
//! the ts window, and stops at a damaged record with an error naming the file and offset.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use drainer::sink::Sink;
use drainer::sink::file::{FileSink, FileSinkConfig};

use crate::sink_items::{self, CREATE_TABLE};

fn write_files(dir: &Path, max_file_size: u64) -> Vec<drainer::txn::Item> {
    let mut items = vec![sink_items::ddl(5, "db", CREATE_TABLE)];
    items.extend(sink_items::workload(10, 20).0);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut cfg = FileSinkConfig::new(dir);
        cfg.max_file_size = max_file_size;
        let mut sink = FileSink::open(cfg).unwrap();
        for it in &items {
            sink.write(Arc::new(it.clone())).await.unwrap();
        }
        assert_eq!(sink.flush().await.unwrap(), items.last().unwrap().commit_ts);
    });
    items
}

fn reparo(args: &[&str]) -> Output {
    Command::new(tests::our_binary("reparo")).args(args).output().expect("run reparo")
}

fn commit_lines(out: &Output) -> Vec<i64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("commit ts: "))
        .map(|v| v.parse().unwrap())
        .collect()
}

#[test]
fn reparo_prints_every_record_across_rotated_files_in_the_ts_window() {
    let dir = tempfile::tempdir().unwrap();
    let items = write_files(dir.path(), 2048);
    let files = drainer::binlogfile::list_files(dir.path()).unwrap();
    assert!(files.len() >= 3, "small max size rotates: {}", files.len());
    let d = dir.path().to_str().unwrap();

    let out = reparo(&["-data-dir", d, "-dest-type", "print"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(commit_lines(&out), items.iter().map(|i| i.commit_ts).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DDL query: use `db`; create table t (id int primary key"), "{text}");
    assert!(text.contains("schema: db; table: t; type: Update"));
    assert!(text.contains("name(varchar): name-1-0 ü => name-1-1 ü"), "{text}");
    assert!(text.contains("created(datetime): 2020-02-01 01:00:07"), "{text}");
    assert!(text.contains("big(bigint): 18446744073709551614"), "{text}");

    // A window: flags with two dashes, and from the environment.
    let out = Command::new(tests::our_binary("reparo"))
        .args(["--data-dir", d, "--start-tso=50"])
        .env("Reparo_STOP_TSO", "120")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(commit_lines(&out), (50..=120).step_by(10).collect::<Vec<i64>>());

    // Unknown config key: a clear error naming it.
    let cfg = dir.path().join("reparo.toml");
    std::fs::write(&cfg, "data-dir = \"x\"\nstart-tsoo = 1\n").unwrap();
    let out = reparo(&["-config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("start-tsoo"), "{out:?}");
}

#[test]
fn reparo_names_the_file_and_offset_of_a_corrupt_record() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), 1 << 30);
    let files = drainer::binlogfile::list_files(dir.path()).unwrap();
    let path = &files[0].0;
    // Find the 4th record's offset and damage its payload.
    let mut r = drainer::binlogfile::RecordReader::open(path).unwrap();
    let mut offsets = Vec::new();
    while let Some((off, _)) = r.next_record().unwrap() {
        offsets.push(off);
    }
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offsets[3] as usize + 20] ^= 0x40;
    std::fs::write(path, &bytes).unwrap();

    let out = reparo(&["-data-dir", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name) && err.contains(&format!("crc mismatch at offset {}", offsets[3])), "{err}");
    assert_eq!(commit_lines(&out).len(), 3, "the records before the damage were printed");
}
