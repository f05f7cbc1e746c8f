//! `binlogctl -cmd diff` against two real MariaDB servers: equal databases exit 0, a difference is
//! named and exits non-zero, JSON output parses.

use mysql_async::prelude::*;
use tests::Cluster;

use crate::ctl_util::ctl;

#[test]
fn diff_reports_equal_and_differing_tables() {
    let cluster = Cluster::builder().upstream_db().downstream_db().start().unwrap();
    let (up, down) = (cluster.upstream.as_ref().unwrap().url(), cluster.downstream.as_ref().unwrap().url());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for url in [&up, &down] {
            let mut c = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
            c.query_drop(
                "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(10));
                 INSERT INTO app.t VALUES (1,'a'),(2,'b'),(3,'c');",
            )
            .await
            .unwrap();
            c.disconnect().await.unwrap();
        }
    });
    let run = ctl(&["-cmd", "diff", "-source", &up, "-target", &down, "-schemas", "app", "-chunk-size", "2"], &[]);
    assert!(run.ok().stdout.contains("app.t: equal (3 rows, 2 chunks)"), "{run:?}");

    rt.block_on(async {
        let mut c = mysql_async::Conn::from_url(down.as_str()).await.unwrap();
        c.query_drop("UPDATE app.t SET v = 'x' WHERE id = 2").await.unwrap();
        c.disconnect().await.unwrap();
    });
    let run = ctl(&["--cmd=diff", "--source", &up, "--target", &down, "--schemas=app"], &[]);
    run.failed(1, "the databases differ in 1 of 1 tables");
    assert!(run.stdout.contains("different key (2) source (2, b) target (2, x)"), "{run:?}");
    let run = ctl(&["-cmd", "diff", "-source", &up, "-target", &down, "-json"], &[]);
    assert_eq!(run.code, 1);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["equal"], false);

    ctl(&["-cmd", "diff", "-source", &up], &[]).failed(1, "-source and -target are required");
}
