//! Human-readable text of a consumed transaction (what `binlog-consumer` prints).
//!
//! ```text
//! commit ts 42 (offset 7): DDL `db`.`t`: create table t (a int)
//! commit ts 43 (offset 8): DML
//!   insert `db`.`t`: a=1, b='x'
//!   update `db`.`t`: a=1, b='x' => a=1, b='y'
//! ```

use std::fmt::Write as _;

use super::Txn;
use crate::proto::slave;

/// One column value as text: `NULL`, numbers, `'string'`, `x'hex'` for bytes.
pub fn column_text(c: &slave::Column) -> String {
    if c.is_null() {
        return "NULL".into();
    }
    if let Some(v) = c.int64_value {
        return v.to_string();
    }
    if let Some(v) = c.uint64_value {
        return v.to_string();
    }
    if let Some(v) = c.double_value {
        return v.to_string();
    }
    if let Some(v) = &c.string_value {
        return format!("'{}'", v.replace('\'', "''"));
    }
    if let Some(v) = &c.bytes_value {
        return format!("x'{}'", v.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    "NULL".into()
}

fn row_text(t: &slave::Table, r: &slave::Row) -> String {
    t.column_info
        .iter()
        .zip(&r.columns)
        .map(|(info, c)| format!("{}={}", info.name(), column_text(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The transaction as text, one line per row change.
pub fn txn_text(t: &Txn) -> String {
    let b = &t.binlog;
    let mut out = String::new();
    if let Some(ddl) = &b.ddl_data {
        let _ = writeln!(
            out,
            "commit ts {} (offset {}): DDL `{}`.`{}`: {}",
            t.commit_ts,
            t.offset,
            ddl.schema_name(),
            ddl.table_name(),
            String::from_utf8_lossy(ddl.ddl_query())
        );
        return out;
    }
    let _ = writeln!(out, "commit ts {} (offset {}): DML", t.commit_ts, t.offset);
    for table in b.dml_data.iter().flat_map(|d| &d.tables) {
        for m in &table.mutations {
            let kind = match m.r#type() {
                slave::MutationType::Insert => "insert",
                slave::MutationType::Update => "update",
                slave::MutationType::Delete => "delete",
            };
            let _ = write!(out, "  {kind} `{}`.`{}`: ", table.schema_name(), table.table_name());
            match &m.change_row {
                Some(old) => {
                    let _ = writeln!(out, "{} => {}", row_text(table, old), row_text(table, &m.row));
                }
                None => {
                    let _ = writeln!(out, "{}", row_text(table, &m.row));
                }
            }
        }
    }
    out
}
