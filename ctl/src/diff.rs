//! `binlogctl -cmd diff`: compares two MySQL-protocol databases table by table, as sync-diff-inspector
//! does for upstream users, and reports the first rows that differ.
//!
//! # Design
//! - A table is cut into chunks of `chunk_size` rows along its key (the primary key, else the first
//!   unique index whose columns are all NOT NULL). The chunk bounds come from the source; the last chunk
//!   is open-ended so rows the target has beyond the source's largest key are still seen.
//! - For each chunk both sides compute `COUNT(*)` and `BIT_XOR` of a CRC32 over every column's text and
//!   NULL-ness; that is order-independent, so equal chunks cost one aggregate query per side.
//! - Only a chunk whose count or checksum differ is fetched row by row, to name the differing rows.
//! - A table without a usable key is one chunk, compared as a multiset of rows.

use std::collections::{BTreeSet, HashMap};

use mysql_async::prelude::*;
use mysql_async::{Conn, Params, Value};
use serde::Serialize;

/// Why a diff could not run (differences themselves are not errors: they are in the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// Could not connect to one side.
    #[error("cannot connect to the {side} database at {url}: {source}")]
    Connect {
        /// "source" or "target".
        side: &'static str,
        /// The URL, without its password.
        url: String,
        /// The driver's error.
        source: mysql_async::Error,
    },
    /// A query failed on one side.
    #[error("query on the {side} database failed ({what}): {source}")]
    Query {
        /// "source" or "target".
        side: &'static str,
        /// What was being read.
        what: String,
        /// The driver's error.
        source: mysql_async::Error,
    },
    /// An option was out of range.
    #[error("bad diff option: {0}")]
    Option(&'static str),
}

/// What to compare and how.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Rows per chunk.
    pub chunk_size: usize,
    /// At most this many differing rows are reported per table.
    pub max_reported_rows: usize,
    /// Only these schemas (all non-system schemas of the source when empty).
    pub schemas: Vec<String>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self { chunk_size: 10_000, max_reported_rows: 10, schemas: Vec::new() }
    }
}

/// The whole comparison.
#[derive(Debug, Serialize)]
pub struct DiffReport {
    /// True when every table matched.
    pub equal: bool,
    /// One entry per compared table, in schema and table order.
    pub tables: Vec<TableDiff>,
}

/// One table's comparison.
#[derive(Debug, Serialize)]
pub struct TableDiff {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Rows in the source.
    pub source_rows: u64,
    /// Rows in the target (0 when the table is missing there).
    pub target_rows: u64,
    /// Chunks compared.
    pub chunks: usize,
    /// Chunks whose count or checksum differed.
    pub chunks_differing: usize,
    /// True when structure and data matched.
    pub equal: bool,
    /// Structural problems (missing table, different columns).
    pub problems: Vec<String>,
    /// The first differing rows.
    pub rows: Vec<RowDiff>,
}

/// How a row differs.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RowDiffKind {
    /// In the source, not in the target.
    MissingInTarget,
    /// In the target, not in the source.
    ExtraInTarget,
    /// Same key, different values.
    Different,
}

/// One differing row; values are shown as text (`NULL` for NULL, hex for non-UTF-8 bytes).
#[derive(Debug, Serialize)]
pub struct RowDiff {
    /// How it differs.
    pub kind: RowDiffKind,
    /// The key columns' values (all columns for tables without a key).
    pub key: Vec<String>,
    /// The source row, if it has one.
    pub source: Option<Vec<String>>,
    /// The target row, if it has one.
    pub target: Option<Vec<String>>,
}

/// Compares the `source` and `target` databases (URLs `mysql://user:pass@host:port`).
pub async fn diff(source: &str, target: &str, opts: &DiffOptions) -> Result<DiffReport, DiffError> {
    if opts.chunk_size == 0 {
        return Err(DiffError::Option("chunk size must be at least 1"));
    }
    let mut src = Side::connect("source", source).await?;
    let mut dst = Side::connect("target", target).await?;
    let schemas = if opts.schemas.is_empty() { src.user_schemas().await? } else { opts.schemas.clone() };
    let mut tables = Vec::new();
    for schema in &schemas {
        for table in src.tables(schema).await? {
            tables.push(diff_table(&mut src, &mut dst, schema, &table, opts).await?);
        }
        // Tables only the target has are differences too.
        let src_tables: BTreeSet<String> = src.tables(schema).await?.into_iter().collect();
        for table in dst.tables(schema).await? {
            if !src_tables.contains(&table) {
                let rows = dst.count(schema, &table).await?;
                tables.push(TableDiff {
                    schema: schema.clone(),
                    table,
                    source_rows: 0,
                    target_rows: rows,
                    chunks: 0,
                    chunks_differing: 0,
                    equal: false,
                    problems: vec!["table exists only in the target".into()],
                    rows: Vec::new(),
                });
            }
        }
    }
    let equal = tables.iter().all(|t| t.equal);
    Ok(DiffReport { equal, tables })
}

async fn diff_table(
    src: &mut Side,
    dst: &mut Side,
    schema: &str,
    table: &str,
    opts: &DiffOptions,
) -> Result<TableDiff, DiffError> {
    let mut out = TableDiff {
        schema: schema.into(),
        table: table.into(),
        source_rows: 0,
        target_rows: 0,
        chunks: 0,
        chunks_differing: 0,
        equal: false,
        problems: Vec::new(),
        rows: Vec::new(),
    };
    let columns = src.columns(schema, table).await?;
    let dst_columns = dst.columns(schema, table).await?;
    out.source_rows = src.count(schema, table).await?;
    if dst_columns.is_empty() {
        out.problems.push("table is missing in the target".into());
        return Ok(out);
    }
    out.target_rows = dst.count(schema, table).await?;
    if columns != dst_columns {
        out.problems.push(format!("columns differ: source {columns:?}, target {dst_columns:?}"));
        return Ok(out);
    }
    let key = src.key_columns(schema, table).await?;
    let t = TableRef { schema, table, columns: &columns, key: &key };

    let ranges = match &key {
        Some(key) => chunk_ranges(src.key_values(&t, key).await?, opts.chunk_size),
        None => vec![Range { lo: None, hi: None }],
    };
    for range in &ranges {
        out.chunks += 1;
        let (a, b) = (src.checksum(&t, range).await?, dst.checksum(&t, range).await?);
        if a == b {
            continue;
        }
        out.chunks_differing += 1;
        if out.rows.len() < opts.max_reported_rows {
            let (src_rows, dst_rows) = (src.rows(&t, range).await?, dst.rows(&t, range).await?);
            let budget = opts.max_reported_rows - out.rows.len();
            out.rows.extend(compare_rows(&t, src_rows, dst_rows, budget));
        }
    }
    out.equal = out.chunks_differing == 0 && out.source_rows == out.target_rows;
    Ok(out)
}

/// A table and the columns the diff uses.
struct TableRef<'a> {
    schema: &'a str,
    table: &'a str,
    columns: &'a [String],
    key: &'a Option<Vec<String>>,
}

impl TableRef<'_> {
    fn name(&self) -> String {
        format!("{}.{}", quote(self.schema), quote(self.table))
    }
    fn key_list(&self) -> String {
        self.key.as_ref().map(|k| list(k)).unwrap_or_else(|| list(self.columns))
    }
    /// Positions of the key columns in `columns`.
    fn key_positions(&self) -> Vec<usize> {
        match self.key {
            Some(k) => k.iter().filter_map(|c| self.columns.iter().position(|x| x == c)).collect(),
            None => (0..self.columns.len()).collect(),
        }
    }
}

/// A chunk: keys in `(lo, hi]`; `None` bounds are open.
#[derive(Debug, Clone, PartialEq)]
struct Range {
    lo: Option<Vec<Value>>,
    hi: Option<Vec<Value>>,
}

impl Range {
    fn predicate(&self, t: &TableRef<'_>) -> (String, Vec<Value>) {
        let key = format!("({})", t.key_list());
        let mut conds = Vec::new();
        let mut params = Vec::new();
        if let Some(lo) = &self.lo {
            conds.push(format!("{key} > ({})", placeholders(lo.len())));
            params.extend(lo.iter().cloned());
        }
        if let Some(hi) = &self.hi {
            conds.push(format!("{key} <= ({})", placeholders(hi.len())));
            params.extend(hi.iter().cloned());
        }
        if conds.is_empty() { ("1=1".into(), params) } else { (conds.join(" AND "), params) }
    }
}

/// Cuts the source's ordered keys into ranges of `size`; the last range is open-ended.
fn chunk_ranges(keys: Vec<Vec<Value>>, size: usize) -> Vec<Range> {
    let mut ranges = Vec::new();
    let mut lo: Option<Vec<Value>> = None;
    let mut i = size;
    while i < keys.len() {
        let hi = keys[i - 1].clone();
        ranges.push(Range { lo: lo.take(), hi: Some(hi.clone()) });
        lo = Some(hi);
        i += size;
    }
    ranges.push(Range { lo, hi: None });
    ranges
}

/// Compares the rows of one chunk; returns at most `budget` differences, in source order first.
fn compare_rows(t: &TableRef<'_>, src: Vec<Vec<Value>>, dst: Vec<Vec<Value>>, budget: usize) -> Vec<RowDiff> {
    let pos = t.key_positions();
    let key_of = |row: &[Value]| -> Vec<String> { pos.iter().map(|&i| show(&row[i])).collect() };
    let text = |row: &[Value]| -> Vec<String> { row.iter().map(show).collect() };
    let mut out = Vec::new();
    if t.key.is_some() {
        let mut dst_by_key: HashMap<Vec<String>, Vec<Value>> = dst.into_iter().map(|r| (key_of(&r), r)).collect();
        let mut extra_order: Vec<Vec<String>> = dst_by_key.keys().cloned().collect();
        extra_order.sort();
        for row in &src {
            let k = key_of(row);
            match dst_by_key.remove(&k) {
                None => out.push(RowDiff {
                    kind: RowDiffKind::MissingInTarget,
                    key: k,
                    source: Some(text(row)),
                    target: None,
                }),
                Some(d) if text(&d) != text(row) => out.push(RowDiff {
                    kind: RowDiffKind::Different,
                    key: k,
                    source: Some(text(row)),
                    target: Some(text(&d)),
                }),
                Some(_) => {}
            }
        }
        for k in extra_order {
            if let Some(d) = dst_by_key.remove(&k) {
                out.push(RowDiff { kind: RowDiffKind::ExtraInTarget, key: k, source: None, target: Some(text(&d)) });
            }
        }
    } else {
        // Multiset difference on the full row text.
        let mut counts: HashMap<Vec<String>, i64> = HashMap::new();
        for r in &src {
            *counts.entry(text(r)).or_default() += 1;
        }
        for r in &dst {
            *counts.entry(text(r)).or_default() -= 1;
        }
        let mut rows: Vec<(Vec<String>, i64)> = counts.into_iter().filter(|(_, n)| *n != 0).collect();
        rows.sort();
        for (row, n) in rows {
            for _ in 0..n.unsigned_abs() {
                out.push(if n > 0 {
                    RowDiff { kind: RowDiffKind::MissingInTarget, key: row.clone(), source: Some(row.clone()), target: None }
                } else {
                    RowDiff { kind: RowDiffKind::ExtraInTarget, key: row.clone(), source: None, target: Some(row.clone()) }
                });
            }
        }
    }
    out.truncate(budget);
    out
}

/// One side of the comparison.
struct Side {
    name: &'static str,
    conn: Conn,
}

impl Side {
    async fn connect(name: &'static str, url: &str) -> Result<Self, DiffError> {
        let opts = mysql_async::Opts::from_url(url).map_err(|e| DiffError::Connect {
            side: name,
            url: redact(url),
            source: mysql_async::Error::Url(e),
        })?;
        let conn = Conn::new(opts).await.map_err(|source| DiffError::Connect { side: name, url: redact(url), source })?;
        Ok(Self { name, conn })
    }

    fn err(&self, what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> DiffError + '_ {
        let what = what.into();
        move |source| DiffError::Query { side: self.name, what, source }
    }

    async fn user_schemas(&mut self) -> Result<Vec<String>, DiffError> {
        let sql = "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN \
                   ('mysql','information_schema','performance_schema','sys','tidb_binlog') ORDER BY SCHEMA_NAME";
        let r = self.conn.query(sql).await;
        r.map_err(self.err("list schemas"))
    }

    async fn tables(&mut self, schema: &str) -> Result<Vec<String>, DiffError> {
        let sql = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? \
                   AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME";
        let r = self.conn.exec(sql, (schema,)).await;
        r.map_err(self.err(format!("list tables of {schema}")))
    }

    async fn columns(&mut self, schema: &str, table: &str) -> Result<Vec<String>, DiffError> {
        let sql = "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                   ORDER BY ORDINAL_POSITION";
        let r = self.conn.exec(sql, (schema, table)).await;
        r.map_err(self.err(format!("columns of {schema}.{table}")))
    }

    /// The primary key, else the first unique index whose columns are all NOT NULL.
    async fn key_columns(&mut self, schema: &str, table: &str) -> Result<Option<Vec<String>>, DiffError> {
        let sql = "SELECT s.INDEX_NAME, s.COLUMN_NAME, c.IS_NULLABLE FROM information_schema.STATISTICS s \
                   JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA \
                   AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME \
                   WHERE s.TABLE_SCHEMA = ? AND s.TABLE_NAME = ? AND s.NON_UNIQUE = 0 \
                   ORDER BY s.INDEX_NAME = 'PRIMARY' DESC, s.INDEX_NAME, s.SEQ_IN_INDEX";
        let r: Result<Vec<(String, String, String)>, _> = self.conn.exec(sql, (schema, table)).await;
        let rows = r.map_err(self.err(format!("keys of {schema}.{table}")))?;
        let mut indexes: Vec<(String, Vec<String>, bool)> = Vec::new();
        for (index, column, nullable) in rows {
            match indexes.last_mut() {
                Some((name, cols, ok)) if *name == index => {
                    cols.push(column);
                    *ok &= nullable == "NO";
                }
                _ => indexes.push((index, vec![column], nullable == "NO")),
            }
        }
        Ok(indexes.into_iter().find(|(_, _, ok)| *ok).map(|(_, cols, _)| cols))
    }

    async fn count(&mut self, schema: &str, table: &str) -> Result<u64, DiffError> {
        let sql = format!("SELECT COUNT(*) FROM {}.{}", quote(schema), quote(table));
        let r: Result<Option<u64>, _> = self.conn.query_first(sql).await;
        Ok(r.map_err(self.err(format!("count {schema}.{table}")))?.unwrap_or(0))
    }

    async fn key_values(&mut self, t: &TableRef<'_>, key: &[String]) -> Result<Vec<Vec<Value>>, DiffError> {
        let sql = format!("SELECT {} FROM {} ORDER BY {}", list(key), t.name(), list(key));
        let r: Result<Vec<mysql_async::Row>, _> = self.conn.query(sql).await;
        let rows = r.map_err(self.err(format!("keys of {}", t.name())))?;
        Ok(rows.into_iter().map(|r| r.unwrap()).collect())
    }

    async fn checksum(&mut self, t: &TableRef<'_>, range: &Range) -> Result<(u64, u64), DiffError> {
        let (pred, params) = range.predicate(t);
        let nulls = t.columns.iter().map(|c| format!("ISNULL({})", quote(c))).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT COUNT(*), COALESCE(BIT_XOR(CAST(CRC32(CONCAT_WS(',', {}, CONCAT({nulls}))) AS UNSIGNED)), 0) \
             FROM {} WHERE {pred}",
            list(t.columns),
            t.name()
        );
        let r: Result<Option<(u64, u64)>, _> = self.conn.exec_first(sql, Params::Positional(params)).await;
        Ok(r.map_err(self.err(format!("checksum of {}", t.name())))?.unwrap_or((0, 0)))
    }

    async fn rows(&mut self, t: &TableRef<'_>, range: &Range) -> Result<Vec<Vec<Value>>, DiffError> {
        let (pred, params) = range.predicate(t);
        let sql = format!("SELECT {} FROM {} WHERE {pred} ORDER BY {}", list(t.columns), t.name(), t.key_list());
        let r: Result<Vec<mysql_async::Row>, _> = self.conn.exec(sql, Params::Positional(params)).await;
        let rows = r.map_err(self.err(format!("rows of {}", t.name())))?;
        Ok(rows.into_iter().map(|r| r.unwrap()).collect())
    }
}

fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

fn list(cols: &[String]) -> String {
    cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// A value as text: `NULL`, the UTF-8 text, or `0x…` hex for other bytes.
fn show(v: &Value) -> String {
    match v {
        Value::NULL => "NULL".into(),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => s.to_owned(),
            Err(_) => format!("0x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        },
        other => other.as_sql(true),
    }
}

/// The URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_key_and_end_open() {
        let keys: Vec<Vec<Value>> = (1..=5).map(|i| vec![Value::Int(i)]).collect();
        let r = chunk_ranges(keys, 2);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], Range { lo: None, hi: Some(vec![Value::Int(2)]) });
        assert_eq!(r[1], Range { lo: Some(vec![Value::Int(2)]), hi: Some(vec![Value::Int(4)]) });
        assert_eq!(r[2], Range { lo: Some(vec![Value::Int(4)]), hi: None });
        assert_eq!(chunk_ranges(Vec::new(), 3), vec![Range { lo: None, hi: None }]);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("mysql://root:secret@127.0.0.1:3306/db"), "mysql://root:***@127.0.0.1:3306/db");
        assert_eq!(redact("mysql://root@127.0.0.1:3306"), "mysql://root@127.0.0.1:3306");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("a`b"), "`a``b`");
        assert_eq!(show(&Value::Bytes(vec![0xff, 0x00])), "0xff00");
        assert_eq!(show(&Value::NULL), "NULL");
    }
}

#[cfg(test)]
mod db_tests {
    //! Against two real MariaDB servers started by the `tests` harness.
    use super::*;

    const SETUP: &str = "CREATE DATABASE shop;
        CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(10,2), blob_col VARBINARY(8));
        CREATE TABLE shop.pairs (a INT NOT NULL, b VARCHAR(5) NOT NULL, v INT, UNIQUE KEY ab (a, b));
        CREATE TABLE shop.nokey (x INT, y VARCHAR(5));";

    async fn load(url: &str) {
        let mut c = Conn::from_url(url).await.unwrap();
        c.query_drop(SETUP).await.unwrap();
        for i in 1..=10 {
            let name = if i % 4 == 0 { None } else { Some(format!("item{i}")) };
            c.exec_drop("INSERT INTO shop.items VALUES (?, ?, ?, ?)", (i, name, format!("{i}.50"), vec![0xffu8, i as u8]))
                .await
                .unwrap();
            c.exec_drop("INSERT INTO shop.pairs VALUES (?, ?, ?)", (i % 3, format!("k{i}"), i)).await.unwrap();
        }
        c.query_drop("INSERT INTO shop.nokey VALUES (1,'a'),(1,'a'),(2,NULL)").await.unwrap();
        c.disconnect().await.unwrap();
    }

    fn opts() -> DiffOptions {
        DiffOptions { chunk_size: 3, max_reported_rows: 10, schemas: vec!["shop".into()] }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn equal_databases_match_and_every_kind_of_difference_is_named() {
        let cluster = tokio::task::spawn_blocking(|| {
            ::tests::Cluster::builder().upstream_db().downstream_db().start().unwrap()
        })
        .await
        .unwrap();
        let (up, down) = (cluster.upstream.as_ref().unwrap().url(), cluster.downstream.as_ref().unwrap().url());
        load(&up).await;
        load(&down).await;

        let report = diff(&up, &down, &opts()).await.unwrap();
        assert!(report.equal, "{report:#?}");
        let items = report.tables.iter().find(|t| t.table == "items").unwrap();
        assert_eq!((items.source_rows, items.target_rows, items.chunks), (10, 10, 4));

        let mut c = Conn::from_url(down.as_str()).await.unwrap();
        c.query_drop(
            "DELETE FROM shop.items WHERE id = 2;
             UPDATE shop.items SET name = NULL WHERE id = 7;
             INSERT INTO shop.items VALUES (11, 'new', 1.00, NULL);
             UPDATE shop.pairs SET v = 99 WHERE a = 1 AND b = 'k4';
             DELETE FROM shop.nokey WHERE x = 1 LIMIT 1;
             CREATE TABLE shop.only_down (id INT PRIMARY KEY);",
        )
        .await
        .unwrap();
        c.disconnect().await.unwrap();

        let report = diff(&up, &down, &opts()).await.unwrap();
        assert!(!report.equal);
        let by_name = |n: &str| report.tables.iter().find(|t| t.table == n).unwrap();

        let items = by_name("items");
        let kinds: Vec<(&RowDiffKind, &str)> = items.rows.iter().map(|r| (&r.kind, &r.key[0][..])).collect();
        assert_eq!(
            kinds,
            vec![
                (&RowDiffKind::MissingInTarget, "2"),
                (&RowDiffKind::Different, "7"),
                (&RowDiffKind::ExtraInTarget, "11"),
            ]
        );
        assert_eq!(items.rows[1].target.as_ref().unwrap()[1], "NULL");
        assert_eq!(items.rows[0].source.as_ref().unwrap()[3], "0xff02");

        let pairs = by_name("pairs");
        assert_eq!(pairs.rows.len(), 1);
        assert_eq!(pairs.rows[0].kind, RowDiffKind::Different);
        assert_eq!(pairs.rows[0].key, vec!["1", "k4"]);

        let nokey = by_name("nokey");
        assert_eq!(nokey.rows.len(), 1);
        assert_eq!(nokey.rows[0].kind, RowDiffKind::MissingInTarget);
        assert_eq!(nokey.rows[0].key, vec!["1", "a"]);

        assert_eq!(by_name("only_down").problems, vec!["table exists only in the target".to_string()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_database_is_named_in_the_error() {
        let port = ::tests::free_port();
        let url = format!("mysql://root:pw@127.0.0.1:{port}");
        let err = diff(&url, &url, &opts()).await.unwrap_err().to_string();
        assert!(err.contains("source database"), "{err}");
        assert!(err.contains(&format!("127.0.0.1:{port}")) && !err.contains("pw"), "{err}");
    }
}
