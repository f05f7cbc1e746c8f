//! Downstream table info (as upstream's loader reads it, from `information_schema`), cached per
//! table and dropped after every DDL, and the [`TablePlan`] that maps an item's columns onto it.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::prelude::*;
use mysql_async::{Conn, Row};

use super::MysqlError;
use super::sql::{PlanCol, TablePlan, push_hex, quoted_col};
use crate::txn::TableSchema;

/// One downstream column.
#[derive(Debug, Clone)]
pub(crate) struct DownColumn {
    pub name: String,
    /// `information_schema.columns.DATA_TYPE`, lower case.
    pub data_type: String,
    /// A generated (virtual or stored) column: never written.
    pub generated: bool,
}

impl DownColumn {
    fn binary_string(&self) -> bool {
        matches!(self.data_type.as_str(), "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob")
    }
}

/// A downstream table as the sink needs it.
#[derive(Debug, Clone)]
pub(crate) struct DownTable {
    pub columns: Vec<DownColumn>,
    /// Unique keys as column names, PRIMARY first, each in key order.
    pub unique_keys: Vec<Vec<String>>,
}

fn text(row: &Row, i: usize) -> String {
    match row.as_ref(i) {
        Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(mysql_async::Value::Int(n)) => n.to_string(),
        Some(mysql_async::Value::UInt(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// `CONVERT(X'..' USING utf8mb4)`: a text literal whatever the session's sql_mode escapes.
fn text_lit(s: &str) -> String {
    let mut out = String::from("CONVERT(");
    push_hex(&mut out, s.as_bytes());
    out.push_str(" USING utf8mb4)");
    out
}

/// Reads a table's columns and unique keys; `Ok(None)` when the table does not exist. Plain text
/// queries: they must work when the server allows no more prepared statements.
pub(crate) async fn fetch(conn: &mut Conn, schema: &str, table: &str) -> Result<Option<DownTable>, mysql_async::Error> {
    let (schema, table) = (text_lit(schema), text_lit(table));
    let rows: Vec<Row> = conn
        .query(format!(
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), EXTRA FROM information_schema.columns \
             WHERE table_schema = {schema} AND table_name = {table} ORDER BY ORDINAL_POSITION"
        ))
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let columns = rows
        .iter()
        .map(|r| {
            let extra = text(r, 2).to_ascii_uppercase();
            DownColumn {
                name: text(r, 0),
                data_type: text(r, 1),
                generated: extra.contains("GENERATED") || extra.contains("VIRTUAL") || extra.contains("PERSISTENT"),
            }
        })
        .collect();
    let rows: Vec<Row> = conn
        .query(format!(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.statistics \
             WHERE table_schema = {schema} AND table_name = {table} AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX"
        ))
        .await?;
    let mut keys: Vec<(String, Vec<String>)> = Vec::new();
    for r in &rows {
        let (idx, col) = (text(r, 0), text(r, 1));
        match keys.iter_mut().find(|(n, _)| *n == idx) {
            Some((_, cols)) => cols.push(col),
            None => keys.push((idx, vec![col])),
        }
    }
    // PRIMARY first, the others in name order (stable across runs).
    keys.sort_by_key(|(n, _)| !n.eq_ignore_ascii_case("PRIMARY"));
    Ok(Some(DownTable { columns, unique_keys: keys.into_iter().map(|(_, c)| c).collect() }))
}

/// Builds the plan for writing rows of `up` into `down`: columns matched by name
/// (case-insensitive), keys from the downstream. With `partial` (sync-mode 2) columns `down` lacks
/// are not written; otherwise they are, and the downstream's error names them.
pub(crate) fn plan(up: &TableSchema, down: &DownTable, partial: bool) -> TablePlan {
    let cols = up
        .columns
        .iter()
        .map(|c| {
            let d = down.columns.iter().find(|d| d.name.eq_ignore_ascii_case(&c.name));
            PlanCol {
                quoted: quoted_col(&c.name),
                write: !c.generated && !d.is_some_and(|d| d.generated) && (d.is_some() || !partial),
                binary: d.map_or(c.binary && is_string_tp(c.tp), |d| d.binary_string()),
            }
        })
        .collect::<Vec<_>>();
    let keys = down
        .unique_keys
        .iter()
        .filter_map(|k| {
            k.iter().map(|name| up.column_index(name).filter(|&i| cols[i].write)).collect::<Option<Vec<usize>>>()
        })
        .collect();
    TablePlan { quoted: up.quoted_name(), cols, keys }
}

fn is_string_tp(tp: u8) -> bool {
    use crate::txn::mysql_type::*;
    matches!(tp, VARCHAR | VAR_STRING | STRING | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | BLOB)
}

/// Downstream table info per `(schema, table)`; cleared after every DDL and when the downstream
/// rejects a batch with a table-shape error (see `stale_shape`).
#[derive(Debug, Default)]
pub(crate) struct Cache {
    tables: HashMap<(String, String), Arc<DownTable>>,
}

impl Cache {
    /// The table's info, fetched on a miss.
    pub async fn get(&mut self, conn: &mut Conn, schema: &str, table: &str) -> Result<Arc<DownTable>, MysqlError> {
        let key = (schema.to_string(), table.to_string());
        if let Some(t) = self.tables.get(&key) {
            return Ok(t.clone());
        }
        let what = format!("reading the downstream definition of {}", crate::txn::quote_ident(table));
        let t = fetch(conn, schema, table).await.map_err(|e| MysqlError::query(what, e))?;
        let t = Arc::new(t.ok_or_else(|| MysqlError::NoTable {
            table: format!("{}.{}", crate::txn::quote_ident(schema), crate::txn::quote_ident(table)),
        })?);
        self.tables.insert(key, t.clone());
        Ok(t)
    }

    /// The table's info if cached.
    pub fn peek(&self, schema: &str, table: &str) -> Option<Arc<DownTable>> {
        self.tables.get(&(schema.to_string(), table.to_string())).cloned()
    }

    /// Forgets everything (after a DDL).
    pub fn clear(&mut self) {
        self.tables.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{Column, UniqueKey};

    #[test]
    fn partial_mode_leaves_out_columns_the_downstream_lacks() {
        let col = |n: &str| Column { name: n.into(), ..Default::default() };
        let up = TableSchema {
            schema: "d".into(),
            name: "t".into(),
            columns: vec![col("id"), col("v"), col("u")],
            unique_keys: vec![UniqueKey { name: "PRIMARY".into(), columns: vec![0] }],
            ..Default::default()
        };
        let dc = |n: &str| DownColumn { name: n.into(), data_type: "int".into(), generated: false };
        let down = DownTable { columns: vec![dc("ID"), dc("u"), dc("extra")], unique_keys: vec![vec!["id".into()]] };
        let full = plan(&up, &down, false);
        assert_eq!(full.cols.iter().map(|c| c.write).collect::<Vec<_>>(), vec![true, true, true]);
        let part = plan(&up, &down, true);
        assert_eq!(part.cols.iter().map(|c| c.write).collect::<Vec<_>>(), vec![true, false, true]);
        assert_eq!(part.keys, vec![vec![0]]);
        // a key over a column that is not written is not usable
        let down2 = DownTable { unique_keys: vec![vec!["v".into()], vec!["id".into()]], ..down };
        assert_eq!(plan(&up, &down2, true).keys, vec![vec![0]]);
    }
}
