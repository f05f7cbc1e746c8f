//! A `TableMutation` decoded into row changes with a table's schema: the one decoder, used by the
//! drainer's translator and by the tests that replay the stand-in's binlogs.
//! (upstream-interfaces.md §3 "Drainer's decoding algorithm"; tidb-model.md §10.3.) It walks
//! `sequence` with one cursor per row list and unflattens every value with its column's type.
//!
//! - **Int handle** (`pk_is_handle`): the handle is the PriKey column's value (rows do not carry it); a
//!   handle of an UNSIGNED column is the `u64` of the signed int TiDB encodes.
//! - **Common handle** (`is_common_handle`): each PRIMARY datum fills the public column its index column names
//!   (by name, so a stale `offset` cannot misplace it) when the row lacks it; a prefix column (length > 0) is skipped, as the handle
//!   holds only part of it. A length of -1 (or 0, a missing key) is the whole column.
//! - **Missing columns**: an insert gets each missing stored column's origin default, NULL or zero
//!   value; an update only with `allow_missing` (`CanAppendDefaultValue`); a delete never: it carries
//!   the row as stored, and a column it lacks stays absent (`None`) rather than a guessed value.

use std::collections::HashMap;

use pump::proto::{MutationType, TableMutation};

use super::codec::{CodecError, Datum};
use super::model::{ColumnInfo, TableInfo};
use super::row::{decode_insert_row, decode_row, decode_update_row};
use super::value::{Value, unflatten};

/// One slot per public column of the table, in offset order; `None` = the row did not carry it
/// (virtual generated columns, and columns a delete lacks).
pub type Row = Vec<Option<Value>>;

/// One row change over the table's public columns. `R` is the row: [`Row`] of TiDB values here; the
/// drainer's sink-neutral `txn::RowChange` is the same change over its own row type.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange<R = Row> {
    /// An inserted row.
    Insert(R),
    /// An updated row.
    Update {
        /// Before.
        old: R,
        /// After.
        new: R,
    },
    /// A deleted row.
    Delete(R),
}

impl<R> RowChange<R> {
    /// The same change with each of its rows mapped by `f`.
    pub fn map<S>(self, mut f: impl FnMut(R) -> S) -> RowChange<S> {
        match self {
            RowChange::Insert(r) => RowChange::Insert(f(r)),
            RowChange::Update { old, new } => RowChange::Update { old: f(old), new: f(new) },
            RowChange::Delete(r) => RowChange::Delete(f(r)),
        }
    }
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
    /// An obsolete or unknown mutation type in `sequence` (only Insert, Update and DeleteRow are).
    #[error("table {table_id}: unsupported mutation type {tp} (only Insert, Update, DeleteRow)")]
    UnsupportedType {
        /// Table id.
        table_id: i64,
        /// The type number.
        tp: i32,
    },
    /// An update's old and new halves carry different numbers of known columns.
    #[error("table {table_id} update row {index}: old row has {old} known columns, new row {new}")]
    UnevenUpdate {
        /// Table id.
        table_id: i64,
        /// Update index.
        index: usize,
        /// Known columns before.
        old: usize,
        /// Known columns after.
        new: usize,
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

impl MutationError {
    /// insert, update, delete or sequence: which list the error is about.
    pub fn kind(&self) -> &'static str {
        match self {
            MutationError::Codec { kind, .. } | MutationError::MissingRow { kind, .. } => kind,
            MutationError::UnsupportedType { .. } => "sequence",
            MutationError::UnevenUpdate { .. } | MutationError::ColumnsMissing { .. } => "update",
        }
    }
}

/// Decodes every row of `m` with `table`. `allow_missing` is drainer's `CanAppendDefaultValue`: an
/// update row that lacks columns gets defaults instead of being an error (the table is dropping a
/// column, or the binlog's schema version is older than the table's last DDL).
pub fn decode_mutation(table: &TableInfo, m: &TableMutation, allow_missing: bool) -> Result<Vec<RowChange>, MutationError> {
    decode_mutation_at(table, None, m, allow_missing)
}

/// [`decode_mutation`] into rows of the current definition `table` for rows written with the
/// definition `written_with` (the one at the binlog's schema version, when that is an older one): a
/// column that a MODIFY COLUMN gave a new id is found by name and its datum read with the old type.
pub fn decode_mutation_at(
    table: &TableInfo,
    written_with: Option<&TableInfo>,
    m: &TableMutation,
    allow_missing: bool,
) -> Result<Vec<RowChange>, MutationError> {
    let tid = m.table_id();
    let cols = Cols::new(table, written_with);
    let codec = |kind: &'static str, index: usize| move |source| MutationError::Codec { table_id: tid, kind, index, source };
    let missing = |kind: &'static str, index: usize, len: usize| MutationError::MissingRow { table_id: tid, kind, index, len };
    let (mut i, mut u, mut d) = (0usize, 0usize, 0usize);
    let mut out = Vec::with_capacity(m.sequence.len());
    for &tp in &m.sequence {
        match MutationType::try_from(tp) {
            Ok(MutationType::Insert) => {
                let bytes = m.inserted_rows.get(i).ok_or(missing("insert", i, m.inserted_rows.len()))?;
                out.push(RowChange::Insert(decode_insert(bytes, table, &cols).map_err(codec("insert", i))?));
                i += 1;
            }
            Ok(MutationType::Update) => {
                let bytes = m.updated_rows.get(u).ok_or(missing("update", u, m.updated_rows.len()))?;
                let (old, new) = decode_update_row(bytes).map_err(codec("update", u))?;
                let (mut old, n_old) = cols.row(old).map_err(codec("update", u))?;
                let (mut new, n_new) = cols.row(new).map_err(codec("update", u))?;
                if n_old != n_new {
                    return Err(MutationError::UnevenUpdate { table_id: tid, index: u, old: n_old, new: n_new });
                }
                let want = cols.writable();
                if n_old < want {
                    if !allow_missing {
                        return Err(MutationError::ColumnsMissing { table_id: tid, index: u, got: n_old, want });
                    }
                    cols.fill_missing(&mut old).map_err(codec("update", u))?;
                    cols.fill_missing(&mut new).map_err(codec("update", u))?;
                }
                out.push(RowChange::Update { old, new });
                u += 1;
            }
            Ok(MutationType::DeleteRow) => {
                let bytes = m.deleted_rows.get(d).ok_or(missing("delete", d, m.deleted_rows.len()))?;
                let pairs = decode_row(bytes).map_err(codec("delete", d))?;
                let (row, _) = cols.row(pairs).map_err(codec("delete", d))?;
                out.push(RowChange::Delete(row));
                d += 1;
            }
            _ => return Err(MutationError::UnsupportedType { table_id: tid, tp }),
        }
    }
    Ok(out)
}

fn decode_insert(raw: &[u8], t: &TableInfo, cols: &Cols<'_>) -> Result<Row, CodecError> {
    let pk = t.primary_index();
    let handle_len = if t.is_common_handle { pk.map_or(1, |i| i.idx_cols.len()).max(1) } else { 1 };
    let (handle, pairs) = decode_insert_row(raw, handle_len)?;
    let (mut row, _) = cols.row(pairs)?;
    if t.is_common_handle {
        for (ic, d) in pk.map(|pk| pk.idx_cols.as_slice()).unwrap_or_default().iter().zip(&handle) {
            if ic.length > 0 {
                continue; // a prefix: the handle holds only part of the value
            }
            let Some(i) = cols.public.iter().position(|c| c.name.l == ic.name.l || c.name.o.eq_ignore_ascii_case(&ic.name.o)) else {
                continue;
            };
            if row[i].is_none() {
                row[i] = Some(unflatten(d, &cols.public[i].field_type)?);
            }
        }
    } else if let Some(c) = t.pk_handle_column()
        && let Some(&i) = cols.by_id.get(&c.id)
        && let Some(h) = handle.first()
    {
        // unflatten reads the signed handle of an UNSIGNED column as its u64.
        row[i] = Some(unflatten(h, &c.field_type)?);
    }
    cols.fill_missing(&mut row)?;
    Ok(row)
}

/// The current definition's public columns and how a row's column ids map onto them.
struct Cols<'a> {
    public: Vec<&'a ColumnInfo>,
    by_id: HashMap<i64, usize>,
    /// Columns of the definition the rows were written with that the current one has under the same
    /// name but another id (a MODIFY COLUMN that changed the type): old id → (current index, old
    /// column, whose type the datum was written as).
    renamed_ids: HashMap<i64, (usize, &'a ColumnInfo)>,
}

impl<'a> Cols<'a> {
    fn new(t: &'a TableInfo, written_with: Option<&'a TableInfo>) -> Self {
        let public = t.public_columns();
        let by_id: HashMap<i64, usize> = public.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
        let mut renamed_ids = HashMap::new();
        for old in written_with.map(|w| w.public_columns()).unwrap_or_default() {
            if by_id.contains_key(&old.id) {
                continue;
            }
            if let Some(i) = public.iter().position(|c| c.name.l == old.name.l) {
                renamed_ids.insert(old.id, (i, old));
            }
        }
        Cols { public, by_id, renamed_ids }
    }

    /// The row of `pairs` and how many known columns it carries (unknown ids are skipped).
    fn row(&self, pairs: Vec<(i64, Datum)>) -> Result<(Row, usize), CodecError> {
        let mut row: Row = vec![None; self.public.len()];
        let mut known = 0;
        for (id, d) in pairs {
            let (i, ft) = match (self.by_id.get(&id), self.renamed_ids.get(&id)) {
                (Some(&i), _) => (i, &self.public[i].field_type),
                (None, Some(&(i, old))) => (i, &old.field_type),
                (None, None) => continue,
            };
            if row[i].is_none() {
                known += 1;
            }
            row[i] = Some(unflatten(&d, ft)?);
        }
        Ok((row, known))
    }

    /// Gives every stored column the row lacks its value for missing columns.
    fn fill_missing(&self, row: &mut Row) -> Result<(), CodecError> {
        for (i, c) in self.public.iter().enumerate() {
            if row[i].is_none() && !c.is_virtual_generated() {
                row[i] = Some(Value::default_for_missing(c)?);
            }
        }
        Ok(())
    }

    fn writable(&self) -> usize {
        self.public.iter().filter(|c| !c.is_virtual_generated()).count()
    }
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

    fn mutation(ins: Vec<Vec<u8>>, upd: Vec<Vec<u8>>, del: Vec<Vec<u8>>, seq: &[MutationType]) -> TableMutation {
        TableMutation {
            table_id: Some(9),
            inserted_rows: ins,
            updated_rows: upd,
            deleted_rows: del,
            sequence: seq.iter().map(|&t| t as i32).collect(),
            ..TableMutation::default()
        }
    }

    fn row(vals: &[Value]) -> Row {
        vals.iter().cloned().map(Some).collect()
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
        let m = mutation(vec![ins], vec![upd], vec![del], &[MutationType::Insert, MutationType::Update, MutationType::DeleteRow]);
        let got = decode_mutation(&t, &m, false).unwrap();
        let r = |v: Value, n: i64| row(&[Value::Uint(u64::MAX), v, Value::Int(n)]);
        assert_eq!(
            got,
            [
                // The handle -1 of an UNSIGNED PK is u64::MAX; the missing NOT NULL column takes its origin default.
                RowChange::Insert(r(Value::Bytes(b"a".to_vec()), 7)),
                RowChange::Update { old: r(Value::Bytes(b"a".to_vec()), 7), new: r(Value::Null, 8) },
                RowChange::Delete(r(Value::Null, 8)),
            ]
        );
    }

    #[test]
    fn the_int_handle_fills_only_a_pk_that_is_the_handle() {
        // pk_is_handle: the handle is the PK's value, even over a (stale) value the row carries.
        let ins = encode_insert_row(&Handle::Int(5), &[(1, Datum::U64(4)), (2, Datum::Null), (3, Datum::I64(1))]);
        let m = mutation(vec![ins.clone()], vec![], vec![], &[MutationType::Insert]);
        assert_eq!(decode_mutation(&table(true), &m, false).unwrap(), [RowChange::Insert(row(&[Value::Uint(5), Value::Null, Value::Int(1)]))]);
        // Not the handle (a non-clustered PK): the handle is the implicit _tidb_rowid, the PK keeps its value.
        assert_eq!(decode_mutation(&table(false), &m, false).unwrap(), [RowChange::Insert(row(&[Value::Uint(4), Value::Null, Value::Int(1)]))]);
    }

    #[test]
    fn a_delete_keeps_missing_columns_absent() {
        // A delete carries the row as stored; a column it lacks is not given a default (which would
        // put a made-up value into a WHERE on all columns).
        let mut del = Vec::new();
        encode_row(&mut del, &[(1, Datum::U64(3)), (2, Datum::Bytes(b"x".to_vec()))]);
        let m = mutation(vec![], vec![], vec![del], &[MutationType::DeleteRow]);
        assert_eq!(
            decode_mutation(&table(true), &m, true).unwrap(),
            [RowChange::Delete(vec![Some(Value::Uint(3)), Some(Value::Bytes(b"x".to_vec())), None])]
        );
    }

    fn clustered(second_length: i64) -> TableInfo {
        let mut t = table(false);
        t.is_common_handle = true;
        t.cols[0].field_type = FieldType::new(tp::LONG, flag::PRI_KEY | flag::NOT_NULL, 11, 0);
        t.index_info = Some(vec![IndexInfo {
            idx_name: CIStr::new("PRIMARY"),
            is_primary: true,
            is_unique: true,
            idx_cols: vec![
                IndexColumn { name: CIStr::new("v"), offset: 1, length: -1 },
                IndexColumn { name: CIStr::new("id"), offset: 0, length: second_length },
            ],
            ..IndexInfo::default()
        }]);
        t
    }

    #[test]
    fn clustered_handle_fills_the_whole_key_columns_not_prefixes() {
        let ins = encode_insert_row(&Handle::Common(vec![Datum::Bytes(b"k".to_vec()), Datum::I64(5)]), &[(3, Datum::I64(1))]);
        let m = mutation(vec![ins], vec![], vec![], &[MutationType::Insert]);
        let whole = [RowChange::Insert(row(&[Value::Int(5), Value::Bytes(b"k".to_vec()), Value::Int(1)]))];
        assert_eq!(decode_mutation(&clustered(-1), &m, false).unwrap(), whole);
        // A length of 0 (the key missing from the JSON) is no prefix: the whole column.
        assert_eq!(decode_mutation(&clustered(0), &m, false).unwrap(), whole);
        // A prefix column (length 2) is not taken from the handle; the row lacks it: the zero value.
        assert_eq!(
            decode_mutation(&clustered(2), &m, false).unwrap(),
            [RowChange::Insert(row(&[Value::Int(0), Value::Bytes(b"k".to_vec()), Value::Int(1)]))]
        );
    }

    #[test]
    fn short_updates_need_allow_missing_and_bad_sequences_are_errors() {
        let t = table(true);
        let upd = encode_update_row(&[(1, Datum::U64(1)), (2, Datum::Null)], &[(1, Datum::U64(1)), (2, Datum::Null)]);
        let m = mutation(vec![], vec![upd], vec![], &[MutationType::Update]);
        assert_eq!(
            decode_mutation(&t, &m, false).unwrap_err(),
            MutationError::ColumnsMissing { table_id: 9, index: 0, got: 2, want: 3 }
        );
        let ok = decode_mutation(&t, &m, true).unwrap();
        let r = row(&[Value::Uint(1), Value::Null, Value::Int(7)]);
        assert_eq!(ok[0], RowChange::Update { old: r.clone(), new: r });
        let uneven = encode_update_row(&[(1, Datum::U64(1)), (2, Datum::Null)], &[(1, Datum::U64(1))]);
        let m = mutation(vec![], vec![uneven], vec![], &[MutationType::Update]);
        assert_eq!(decode_mutation(&t, &m, true).unwrap_err(), MutationError::UnevenUpdate { table_id: 9, index: 0, old: 2, new: 1 });
        let m = mutation(vec![], vec![], vec![], &[MutationType::Insert]);
        assert!(matches!(decode_mutation(&t, &m, false), Err(MutationError::MissingRow { kind: "insert", .. })));
        let m = TableMutation { table_id: Some(9), sequence: vec![2], deleted_ids: vec![1], ..TableMutation::default() };
        assert_eq!(decode_mutation(&t, &m, false).unwrap_err(), MutationError::UnsupportedType { table_id: 9, tp: 2 });
        let m = mutation(vec![vec![0x08, 0x02, 0x63]], vec![], vec![], &[MutationType::Insert]);
        assert!(matches!(
            decode_mutation(&t, &m, false).unwrap_err(),
            MutationError::Codec { kind: "insert", index: 0, source: CodecError::UnknownFlag { flag: 0x63, offset: 2 }, .. }
        ));
    }
}
