//! A `TableMutation` decoded into row changes with a table's schema, the way drainer does it
//! (upstream-interfaces.md §3 "Drainer's decoding algorithm"): walk `sequence` with one cursor per
//! row list, take the handle datums of inserted rows, fill the int handle column or the clustered
//! primary-key columns from them, unflatten every value with its column type, and give columns a
//! row lacks their origin default, NULL or the zero value.

use std::collections::BTreeMap;

use super::codec::{CodecError, Datum};
use super::model::{ColumnInfo, EXTRA_HANDLE_ID, TableInfo};
use super::row::{decode_insert_row, decode_row, decode_update_row};
use super::value::{Value, unflatten};
use pump::proto::{MutationType, TableMutation};

/// One row change, values keyed by column id over the table's writable columns (public, not
/// virtual generated), in the table's column order.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange {
    /// An inserted row.
    Insert {
        /// The new row.
        new: Vec<(i64, Value)>,
    },
    /// An updated row.
    Update {
        /// Before.
        old: Vec<(i64, Value)>,
        /// After.
        new: Vec<(i64, Value)>,
    },
    /// A deleted row.
    Delete {
        /// The row as it was.
        old: Vec<(i64, Value)>,
    },
}

/// Why a mutation could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MutationError {
    /// A row's bytes are malformed.
    #[error("table {table_id} {kind} row {index}: {source}")]
    Codec {
        /// Table id.
        table_id: i64,
        /// insert, update or delete.
        kind: &'static str,
        /// Index in its row list.
        index: usize,
        /// The codec error.
        source: CodecError,
    },
    /// `sequence` names more rows than the list holds.
    #[error("table {table_id}: sequence wants {kind} row {index}, the mutation has only {len}")]
    MissingRow {
        /// Table id.
        table_id: i64,
        /// insert, update or delete.
        kind: &'static str,
        /// The wanted index.
        index: usize,
        /// Rows present.
        len: usize,
    },
    /// An obsolete or unknown mutation type in `sequence`.
    #[error("table {table_id}: unsupported mutation type {tp}")]
    UnsupportedType {
        /// Table id.
        table_id: i64,
        /// The type number.
        tp: i32,
    },
    /// An update lacks columns and defaults may not be used (`CanAppendDefaultValue` false).
    #[error("table {table_id} update row {index}: {got} of {want} columns present")]
    ColumnsMissing {
        /// Table id.
        table_id: i64,
        /// Update index.
        index: usize,
        /// Columns decoded.
        got: usize,
        /// Columns expected.
        want: usize,
    },
}

/// Decodes every row of `m` with `table`. `allow_missing` is drainer's `CanAppendDefaultValue`: an
/// update row that lacks columns gets defaults instead of being an error (the table is dropping a
/// column, or the binlog's schema version is older than the table's last DDL).
pub fn decode_mutation(table: &TableInfo, m: &TableMutation, allow_missing: bool) -> Result<Vec<RowChange>, MutationError> {
    let tid = m.table_id();
    let cols = table.writable_columns();
    let by_id: BTreeMap<i64, &ColumnInfo> = table.cols.iter().map(|c| (c.id, c)).collect();
    let handle_len = if table.is_common_handle { table.primary_index().map_or(1, |i| i.idx_cols.len()) } else { 1 };
    let codec = |kind: &'static str, index: usize| move |source| MutationError::Codec { table_id: tid, kind, index, source };
    let (mut i, mut u, mut d) = (0usize, 0usize, 0usize);
    let mut out = Vec::with_capacity(m.sequence.len());
    for &tp in &m.sequence {
        match MutationType::try_from(tp) {
            Ok(MutationType::Insert) => {
                let bytes = m.inserted_rows.get(i).ok_or(MutationError::MissingRow {
                    table_id: tid,
                    kind: "insert",
                    index: i,
                    len: m.inserted_rows.len(),
                })?;
                let (handle, pairs) = decode_insert_row(bytes, handle_len).map_err(codec("insert", i))?;
                let mut row: BTreeMap<i64, Datum> = pairs.into_iter().collect();
                if table.is_common_handle {
                    if let Some(pk) = table.primary_index() {
                        for (ic, h) in pk.idx_cols.iter().zip(handle) {
                            if ic.length != -1 {
                                continue;
                            }
                            if let Some(c) = table.cols.get(ic.offset as usize) {
                                row.entry(c.id).or_insert(h);
                            }
                        }
                    }
                } else if let Some(h) = handle.into_iter().next() {
                    if let Some(pk) = table.pk_handle_column() {
                        row.insert(pk.id, h.clone());
                    }
                    row.insert(EXTRA_HANDLE_ID, h);
                }
                out.push(RowChange::Insert { new: values(&cols, row).map_err(codec("insert", i))? });
                i += 1;
            }
            Ok(MutationType::Update) => {
                let bytes = m.updated_rows.get(u).ok_or(MutationError::MissingRow {
                    table_id: tid,
                    kind: "update",
                    index: u,
                    len: m.updated_rows.len(),
                })?;
                let (old, new) = decode_update_row(bytes).map_err(codec("update", u))?;
                let known = |r: Vec<(i64, Datum)>| -> BTreeMap<i64, Datum> {
                    r.into_iter().filter(|(id, _)| by_id.contains_key(id)).collect()
                };
                let (old, new) = (known(old), known(new));
                let want = cols.len();
                let got = old.len().min(new.len());
                if got < want && !allow_missing {
                    return Err(MutationError::ColumnsMissing { table_id: tid, index: u, got, want });
                }
                out.push(RowChange::Update {
                    old: values(&cols, old).map_err(codec("update", u))?,
                    new: values(&cols, new).map_err(codec("update", u))?,
                });
                u += 1;
            }
            Ok(MutationType::DeleteRow) => {
                let bytes = m.deleted_rows.get(d).ok_or(MutationError::MissingRow {
                    table_id: tid,
                    kind: "delete",
                    index: d,
                    len: m.deleted_rows.len(),
                })?;
                let row: BTreeMap<i64, Datum> = decode_row(bytes).map_err(codec("delete", d))?.into_iter().collect();
                out.push(RowChange::Delete { old: values(&cols, row).map_err(codec("delete", d))? });
                d += 1;
            }
            _ => return Err(MutationError::UnsupportedType { table_id: tid, tp }),
        }
    }
    Ok(out)
}

/// Unflattens the row's datums for `cols`; a missing column takes its default for missing values.
fn values(cols: &[&ColumnInfo], mut row: BTreeMap<i64, Datum>) -> Result<Vec<(i64, Value)>, CodecError> {
    cols.iter()
        .map(|c| {
            let v = match row.remove(&c.id) {
                Some(d) => unflatten(&d, &c.field_type)?,
                None => Value::default_for_missing(c)?,
            };
            Ok((c.id, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tidb::codec::Handle;
    use crate::tidb::model::{CIStr, FieldType, IndexColumn, IndexInfo, flag, tp};
    use crate::tidb::row::{encode_insert_row, encode_row, encode_update_row};

    fn col(id: i64, name: &str, ft: FieldType) -> ColumnInfo {
        ColumnInfo { id, name: CIStr::new(name), offset: id - 1, field_type: ft, ..ColumnInfo::default() }
    }

    fn table(pk_is_handle: bool) -> TableInfo {
        TableInfo {
            id: 9,
            pk_is_handle,
            cols: vec![
                col(1, "id", FieldType::new(tp::LONGLONG, flag::PRI_KEY | flag::NOT_NULL | flag::UNSIGNED, 20, 0)),
                col(2, "v", FieldType::new(tp::VARCHAR, 0, 10, 0)),
                ColumnInfo {
                    origin_default: serde_json::Value::String("7".into()),
                    ..col(3, "n", FieldType::new(tp::LONG, flag::NOT_NULL, 11, 0))
                },
            ],
            ..TableInfo::default()
        }
    }

    #[test]
    fn insert_update_delete_with_an_unsigned_int_handle() {
        let t = table(true);
        let ins = encode_insert_row(&Handle::Int(-1), &[(2, Datum::Bytes(b"a".to_vec()))]);
        let upd = encode_update_row(
            &[(1, Datum::U64(u64::MAX)), (2, Datum::Bytes(b"a".to_vec())), (3, Datum::I64(7))],
            &[(1, Datum::U64(u64::MAX)), (2, Datum::Null), (3, Datum::I64(8))],
        );
        let mut del = Vec::new();
        encode_row(&mut del, &[(1, Datum::U64(u64::MAX)), (2, Datum::Null), (3, Datum::I64(8))]);
        let m = TableMutation {
            table_id: Some(9),
            inserted_rows: vec![ins],
            updated_rows: vec![upd],
            deleted_rows: vec![del],
            sequence: vec![MutationType::Insert as i32, MutationType::Update as i32, MutationType::DeleteRow as i32],
            ..TableMutation::default()
        };
        let got = decode_mutation(&t, &m, false).unwrap();
        let row = |v: Value, n: i64| vec![(1, Value::Uint(u64::MAX)), (2, v), (3, Value::Int(n))];
        assert_eq!(
            got,
            [
                // The handle fills the unsigned PK; the missing NOT NULL column takes its origin default.
                RowChange::Insert { new: row(Value::Bytes(b"a".to_vec()), 7) },
                RowChange::Update { old: row(Value::Bytes(b"a".to_vec()), 7), new: row(Value::Null, 8) },
                RowChange::Delete { old: row(Value::Null, 8) },
            ]
        );
    }

    #[test]
    fn clustered_handle_fills_the_key_columns() {
        let mut t = table(false);
        t.is_common_handle = true;
        t.cols[0].field_type = FieldType::new(tp::LONG, flag::PRI_KEY | flag::NOT_NULL, 11, 0);
        t.index_info = Some(vec![IndexInfo {
            idx_name: CIStr::new("PRIMARY"),
            is_primary: true,
            is_unique: true,
            idx_cols: vec![
                IndexColumn { name: CIStr::new("v"), offset: 1, length: -1 },
                IndexColumn { name: CIStr::new("id"), offset: 0, length: -1 },
            ],
            ..IndexInfo::default()
        }]);
        let ins = encode_insert_row(&Handle::Common(vec![Datum::Bytes(b"k".to_vec()), Datum::I64(5)]), &[(3, Datum::I64(1))]);
        let m = TableMutation { table_id: Some(9), inserted_rows: vec![ins], sequence: vec![0], ..TableMutation::default() };
        assert_eq!(
            decode_mutation(&t, &m, false).unwrap(),
            [RowChange::Insert { new: vec![(1, Value::Int(5)), (2, Value::Bytes(b"k".to_vec())), (3, Value::Int(1))] }]
        );
    }

    #[test]
    fn short_updates_need_allow_missing_and_bad_sequences_are_errors() {
        let t = table(true);
        let upd = encode_update_row(&[(1, Datum::U64(1)), (2, Datum::Null)], &[(1, Datum::U64(1)), (2, Datum::Null)]);
        let m = TableMutation { table_id: Some(9), updated_rows: vec![upd], sequence: vec![1], ..TableMutation::default() };
        assert_eq!(
            decode_mutation(&t, &m, false).unwrap_err(),
            MutationError::ColumnsMissing { table_id: 9, index: 0, got: 2, want: 3 }
        );
        let ok = decode_mutation(&t, &m, true).unwrap();
        assert_eq!(ok[0], RowChange::Update {
            old: vec![(1, Value::Uint(1)), (2, Value::Null), (3, Value::Int(7))],
            new: vec![(1, Value::Uint(1)), (2, Value::Null), (3, Value::Int(7))],
        });
        let m = TableMutation { table_id: Some(9), sequence: vec![0], ..TableMutation::default() };
        assert!(matches!(decode_mutation(&t, &m, false), Err(MutationError::MissingRow { kind: "insert", .. })));
        let m = TableMutation { table_id: Some(9), sequence: vec![2], deleted_ids: vec![1], ..TableMutation::default() };
        assert_eq!(decode_mutation(&t, &m, false).unwrap_err(), MutationError::UnsupportedType { table_id: 9, tp: 2 });
        let m = TableMutation { table_id: Some(9), inserted_rows: vec![vec![0x08, 0x02, 0x63]], sequence: vec![0], ..TableMutation::default() };
        assert!(matches!(
            decode_mutation(&t, &m, false).unwrap_err(),
            MutationError::Codec { kind: "insert", index: 0, source: CodecError::UnknownFlag { flag: 0x63, offset: 2 }, .. }
        ));
    }
}
