//! [`Item`] → `slave.binlog.Binlog` (the "secondary binlog"), as upstream's Kafka translator, and the
//! split of one oversized transaction into ordered chunks that are each a valid `Binlog`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use prost::encoding::encode_varint;

use crate::proto::slave;
use crate::sink::file::pb::timestamp_to_local;
use crate::txn::{Body, Column, Item, MysqlTime, Row, RowChange, TableChanges, TableSchema, Value, format_duration, mysql_type};

/// A transaction that cannot be made to fit the message size limit.
#[derive(Debug, thiserror::Error)]
#[error("commit ts {commit_ts}: {what} needs {size} bytes, over {bound} ({limit} bytes)")]
pub struct TooLarge {
    /// The transaction.
    pub commit_ts: i64,
    /// What does not fit (a DDL, one row of a table).
    pub what: String,
    /// Its encoded size.
    pub size: usize,
    /// The limit.
    pub limit: usize,
    /// What sets the limit: `kafka-max-message-size`, or the topic's `max.message.bytes`.
    pub bound: String,
}

/// A column value as it goes on the wire: upstream's `DatumToColumn` mapping (see the table in the
/// spec §9.2), borrowing the value's bytes where it can. [`column_value`] and [`Encoder`] both build on
/// it, so the message and the direct encoding cannot disagree.
pub(crate) enum ColumnRef<'a> {
    Null,
    Int(i64),
    Uint(u64),
    Double(f64),
    Bytes(Cow<'a, [u8]>),
    /// A text value's bytes, checked to be UTF-8 (most are ASCII, which is checked inline).
    Utf8(&'a [u8]),
    Text(Cow<'a, str>),
    /// Text made here that fits the stack (a time).
    Short(Short),
}

/// ASCII text of at most 32 bytes, on the stack.
#[derive(Clone, Copy)]
pub(crate) struct Short {
    buf: [u8; 32],
    len: u8,
}

impl Short {
    /// The text's bytes (ASCII digits and separators only).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    fn push(&mut self, b: u8) {
        self.buf[usize::from(self.len)] = b;
        self.len += 1;
    }

    /// `v` in `n` decimal digits, zero-padded (`v` < 10^n).
    fn digits(&mut self, v: u32, n: u8) {
        let mut v = v;
        for i in (0..n).rev() {
            self.buf[usize::from(self.len + i)] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len += n;
    }
}

/// How a column's values go on the wire: the choices of [`column_ref`] that depend on the column only
/// (its type name, flags, width), made once per column.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wire {
    /// An integer value is text (the time types).
    int_text: bool,
    /// An integer value is unsigned (unsigned integer types).
    int_unsigned: bool,
    /// An unsigned value stays unsigned (unsigned types, ENUM, SET, BIT), else goes signed.
    uint_unsigned: bool,
    /// Bytes go as bytes (binary and blob types, JSON, BIT), else as text.
    bytes: bool,
    /// A BIT value's width in bytes.
    bit_bytes: usize,
}

impl Wire {
    pub(crate) fn of(col: &Column) -> Self {
        let name = col.type_name();
        Wire {
            int_text: matches!(name, "year" | "date" | "datetime" | "timestamp" | "time"),
            int_unsigned: col.unsigned && matches!(name, "bigint" | "int" | "smallint" | "tinyint" | "mediumint"),
            uint_unsigned: col.unsigned || matches!(name, "enum" | "set" | "bit"),
            bytes: col.binary || name.ends_with("blob") || name.ends_with("binary") || name == "json" || name == "bit",
            bit_bytes: ((col.flen.max(1).saturating_add(7) / 8) as usize).min(8),
        }
    }
}

pub(crate) fn column_ref<'a>(w: &Wire, v: Option<&'a Value>) -> ColumnRef<'a> {
    let Some(v) = v else {
        return ColumnRef::Null;
    };
    match v {
        Value::Null => ColumnRef::Null,
        Value::Int(i) if w.int_text => ColumnRef::Text(Cow::Owned(i.to_string())),
        Value::Int(i) if w.int_unsigned => ColumnRef::Uint(*i as u64),
        Value::Int(i) => ColumnRef::Int(*i),
        Value::Uint(u) if w.uint_unsigned => ColumnRef::Uint(*u),
        Value::Uint(u) => ColumnRef::Int(*u as i64),
        Value::Float(f) => ColumnRef::Double(*f),
        Value::Decimal(s) => ColumnRef::Text(Cow::Borrowed(s)),
        Value::Json(s) => ColumnRef::Bytes(Cow::Borrowed(s.as_bytes())),
        Value::Bytes(b) if w.bytes => ColumnRef::Bytes(Cow::Borrowed(b)),
        // Text types: Go strings may hold any bytes; a prost `string` must be UTF-8.
        Value::Bytes(b) if b.is_ascii() || std::str::from_utf8(b).is_ok() => ColumnRef::Utf8(b),
        Value::Bytes(b) => ColumnRef::Text(String::from_utf8_lossy(b)),
        Value::Time(t) => match time_text(&timestamp_to_local(t)) {
            Some(s) => ColumnRef::Short(s),
            None => ColumnRef::Text(Cow::Owned(t.to_string())),
        },
        Value::Duration { nanos, fsp } => ColumnRef::Text(Cow::Owned(format_duration(*nanos, *fsp))),
        Value::Enum { index, .. } => ColumnRef::Uint(*index),
        Value::Set { bits, .. } => ColumnRef::Uint(*bits),
        Value::Bit(b) => ColumnRef::Bytes(Cow::Owned(b.to_be_bytes()[8 - w.bit_bytes..].to_vec())),
    }
}

/// A column value as text, as canal-json carries it (`None` for NULL): the same mapping as the
/// protobuf message's column ([`column_value`]) printed as a string; integers in decimal, doubles
/// shortest, binary bytes as ISO-8859-1 (one char per byte), ENUM/SET as their number.
pub fn column_text(col: &Column, v: Option<&Value>) -> Option<String> {
    match column_ref(&Wire::of(col), v) {
        ColumnRef::Null => None,
        ColumnRef::Int(i) => Some(i.to_string()),
        ColumnRef::Uint(u) => Some(u.to_string()),
        ColumnRef::Double(f) => Some(f.to_string()),
        ColumnRef::Bytes(b) => Some(b.iter().map(|&c| char::from(c)).collect()),
        ColumnRef::Utf8(b) => Some(String::from_utf8_lossy(b).into_owned()),
        ColumnRef::Text(t) => Some(t.into_owned()),
        ColumnRef::Short(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
    }
}

/// `t` as [`MysqlTime`]'s `Display` prints it, without the formatting machinery or an allocation
/// (a time is in most rows); `None` for fields wider than `Display` pads to (it prints those).
fn time_text(t: &MysqlTime) -> Option<Short> {
    let c = &t.time;
    if c.year > 9999 || c.month > 99 || c.day > 99 || c.hour > 99 || c.minute > 99 || c.second > 99 || c.microsecond > 999_999 {
        return None;
    }
    let mut s = Short { buf: [0; 32], len: 0 };
    s.digits(c.year.into(), 4);
    s.push(b'-');
    s.digits(c.month.into(), 2);
    s.push(b'-');
    s.digits(c.day.into(), 2);
    if t.tp == mysql_type::DATE || t.tp == mysql_type::NEWDATE {
        return Some(s);
    }
    s.push(b' ');
    s.digits(c.hour.into(), 2);
    s.push(b':');
    s.digits(c.minute.into(), 2);
    s.push(b':');
    s.digits(c.second.into(), 2);
    let fsp = t.fsp.min(6);
    if fsp > 0 {
        s.push(b'.');
        s.digits(c.microsecond / 10u32.pow(u32::from(6 - fsp)), fsp);
    }
    Some(s)
}

/// A column value as upstream's `DatumToColumn` maps it (see the table in the spec §9.2).
pub fn column_value(col: &Column, v: Option<&Value>) -> slave::Column {
    let mut c = slave::Column::default();
    match column_ref(&Wire::of(col), v) {
        ColumnRef::Null => c.is_null = Some(true),
        ColumnRef::Int(i) => c.int64_value = Some(i),
        ColumnRef::Uint(u) => c.uint64_value = Some(u),
        ColumnRef::Double(f) => c.double_value = Some(f),
        ColumnRef::Bytes(b) => c.bytes_value = Some(b.into_owned()),
        ColumnRef::Utf8(b) => c.string_value = Some(String::from_utf8_lossy(b).into_owned()),
        ColumnRef::Text(s) => c.string_value = Some(s.into_owned()),
        ColumnRef::Short(s) => c.string_value = Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
    }
    c
}

fn row(table: &TableSchema, r: &Row) -> slave::Row {
    slave::Row {
        columns: table.columns.iter().enumerate().map(|(i, c)| column_value(c, r.get(i).and_then(Option::as_ref))).collect(),
    }
}

fn mutation(table: &TableSchema, change: &RowChange) -> slave::TableMutation {
    let (tp, r, old) = match change {
        RowChange::Insert(r) => (slave::MutationType::Insert, r, None),
        RowChange::Delete(r) => (slave::MutationType::Delete, r, None),
        RowChange::Update { old, new } => (slave::MutationType::Update, new, Some(old)),
    };
    slave::TableMutation { r#type: tp as i32, row: row(table, r), change_row: old.map(|o| row(table, o)) }
}

/// The `Table` message without mutations: names, every column's info, unique keys.
pub fn table_header(table: &TableSchema) -> slave::Table {
    let column_info = table
        .columns
        .iter()
        .map(|c| slave::ColumnInfo {
            name: Some(c.name.clone()),
            mysql_type: Some(c.type_name().to_string()),
            is_primary_key: Some(c.primary_key),
            flen: Some(c.flen),
            decimal: Some(c.decimal),
        })
        .collect();
    let mut unique_keys = Vec::new();
    let has_primary = table.unique_keys.iter().any(|k| k.is_primary());
    if table.pk_is_handle
        && !has_primary
        && let Some(pk) = table.columns.iter().find(|c| c.primary_key)
    {
        unique_keys.push(slave::Key { name: Some("PRIMARY".into()), column_names: vec![pk.name.clone()] });
    }
    for k in &table.unique_keys {
        let column_names = k.columns.iter().filter_map(|&i| table.columns.get(i)).map(|c| c.name.clone()).collect();
        unique_keys.push(slave::Key { name: Some(k.name.clone()), column_names });
    }
    slave::Table {
        schema_name: Some(table.schema.clone()),
        table_name: Some(table.name.clone()),
        column_info,
        mutations: Vec::new(),
        unique_keys,
    }
}

/// The `Table` for one table mutation.
pub fn table_message(changes: &TableChanges) -> slave::Table {
    let mut t = table_header(&changes.table);
    t.mutations = changes.rows.iter().map(|r| mutation(&changes.table, r)).collect();
    t
}

/// The secondary binlog for `item`, or `None` when it carries nothing to send.
pub fn to_secondary(item: &Item) -> Option<slave::Binlog> {
    match &item.body {
        Body::Empty => None,
        Body::Ddl(d) => Some(slave::Binlog {
            r#type: Some(slave::BinlogType::Ddl as i32),
            commit_ts: Some(item.commit_ts),
            dml_data: None,
            ddl_data: Some(slave::DdlData {
                schema_name: Some(d.schema.clone()),
                table_name: Some(d.table.clone()),
                ddl_query: Some(d.query.clone().into_bytes()),
            }),
        }),
        Body::Dml(tables) => {
            if tables.iter().all(|t| t.rows.is_empty()) {
                return None;
            }
            Some(dml_binlog(item.commit_ts, tables.iter().filter(|t| !t.rows.is_empty()).map(table_message).collect()))
        }
    }
}

/// A DML binlog holding `tables`.
pub fn dml_binlog(commit_ts: i64, tables: Vec<slave::Table>) -> slave::Binlog {
    slave::Binlog {
        r#type: Some(slave::BinlogType::Dml as i32),
        commit_ts: Some(commit_ts),
        dml_data: Some(slave::DmlData { tables }),
        ddl_data: None,
    }
}

/// Bytes a length-delimited field of `len` bytes takes (tag + length varint + body).
fn field_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

/// Encodes `binlog` as one message, or — when it is over `limit` bytes — as ordered chunks, each a
/// valid DML `Binlog` with the same commit ts carrying a run of the mutations (a table split over
/// chunks repeats its header). A DDL, or one mutation with its table header, over the limit is an
/// error naming `bound`, what sets the limit.
pub fn encode_chunks(binlog: &slave::Binlog, limit: usize, bound: &str) -> Result<Vec<Vec<u8>>, TooLarge> {
    let commit_ts = binlog.commit_ts();
    let whole = binlog.encoded_len();
    if whole <= limit {
        return Ok(vec![binlog.encode_to_vec()]);
    }
    let Some(dml) = &binlog.dml_data else {
        return Err(TooLarge { commit_ts, what: "the DDL".into(), size: whole, limit, bound: bound.into() });
    };
    // Fixed part of every chunk: type + commit ts (≤ 13 bytes) and the dml_data wrapper (≤ 11).
    let base = dml_binlog(commit_ts, Vec::new()).encoded_len() + 11;
    let mut chunks = Vec::new();
    let mut cur: Vec<slave::Table> = Vec::new();
    let mut cur_len = base;
    for table in &dml.tables {
        let mut header = table.clone();
        header.mutations.clear();
        let header_len = header.encoded_len();
        let mut open = false; // whether `cur`'s last table is this table
        for m in &table.mutations {
            let m_len = field_len(m.encoded_len());
            let need_table = if open { 0 } else { field_len(header_len + 10) };
            if cur_len + need_table + m_len > limit && !cur.is_empty() {
                chunks.push(dml_binlog(commit_ts, std::mem::take(&mut cur)).encode_to_vec());
                cur_len = base;
                open = false;
            }
            if !open {
                let need = field_len(header_len + 10) + m_len;
                if base + need > limit {
                    return Err(TooLarge {
                        commit_ts,
                        what: format!("one row of `{}`.`{}`", table.schema_name(), table.table_name()),
                        size: base + need,
                        limit,
                        bound: bound.into(),
                    });
                }
                cur.push(header.clone());
                cur_len += field_len(header_len + 10);
                open = true;
            }
            cur.last_mut().expect("pushed above").mutations.push(m.clone());
            cur_len += m_len;
        }
    }
    if !cur.is_empty() {
        chunks.push(dml_binlog(commit_ts, cur).encode_to_vec());
    }
    Ok(chunks)
}

/// Appends `v` as a varint (prost's `encode_varint`, with the one-byte case first).
fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else {
        encode_varint(v, out);
    }
}

/// Appends field `tag` (length-delimited) holding `body`.
fn put_bytes(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Appends the tag and length of field `tag` (length-delimited) whose body of `len` bytes follows.
fn put_head(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    put_varint(out, len as u64);
}

/// The encoded length of a `slave.binlog.Column` message body.
fn column_len(c: &ColumnRef<'_>) -> usize {
    match c {
        ColumnRef::Null => 2,
        ColumnRef::Int(i) => 1 + prost::encoding::encoded_len_varint(*i as u64),
        ColumnRef::Uint(u) => 1 + prost::encoding::encoded_len_varint(*u),
        ColumnRef::Double(_) => 9,
        ColumnRef::Bytes(b) => field_len(b.len()),
        ColumnRef::Utf8(b) => field_len(b.len()),
        ColumnRef::Text(s) => field_len(s.len()),
        ColumnRef::Short(s) => field_len(usize::from(s.len)),
    }
}

/// Appends a `slave.binlog.Column` message body.
fn put_column(out: &mut Vec<u8>, c: &ColumnRef<'_>) {
    match c {
        ColumnRef::Null => out.extend_from_slice(&[0x08, 0x01]),
        ColumnRef::Int(i) => {
            out.push(0x10);
            put_varint(out, *i as u64);
        }
        ColumnRef::Uint(u) => {
            out.push(0x18);
            put_varint(out, *u);
        }
        ColumnRef::Double(f) => {
            out.push(0x21);
            out.extend_from_slice(&f.to_le_bytes());
        }
        ColumnRef::Bytes(b) => put_bytes(out, 0x2a, b),
        ColumnRef::Utf8(b) => put_bytes(out, 0x32, b),
        ColumnRef::Text(s) => put_bytes(out, 0x32, s.as_bytes()),
        ColumnRef::Short(s) => put_bytes(out, 0x32, s.as_bytes()),
    }
}

/// Tables whose encoded headers the [`Encoder`] keeps before it starts over.
const HEADER_CACHE: usize = 4096;

/// What the [`Encoder`] keeps per table: the schema (kept so its pointer cannot be reused), the
/// encoded `Table` fields before the mutations (1–3) and after them (5), and each column's [`Wire`].
struct TableHeader {
    _schema: Arc<TableSchema>,
    before: Vec<u8>,
    after: Vec<u8>,
    wires: Vec<Wire>,
}

/// One mutation of the message being encoded: its type and its row bodies in [`Encoder::rows`].
struct Mutation {
    tp: u8,
    row: (usize, usize),
    old: Option<(usize, usize)>,
}

impl Mutation {
    /// The encoded length of its `TableMutation` body.
    fn len(&self) -> usize {
        2 + field_len(self.row.1 - self.row.0) + self.old.map_or(0, |(a, b)| field_len(b - a))
    }
}

/// Encodes DML transactions straight to `slave.binlog.Binlog` bytes — the same bytes as prost makes
/// of [`to_secondary`]'s message — without building the message: each table's header (names, column
/// info, unique keys) and how each column's values go on the wire are worked out once and cached; the rows' bodies are
/// written into a scratch buffer, and the message, whose nested lengths are then known, is written
/// once around them.
#[derive(Default)]
pub struct Encoder {
    headers: Vec<TableHeader>,
    /// Index into `headers` by table schema (pointer, with the `Arc` kept so it cannot be reused).
    index: HashMap<usize, usize>,
    /// The last table looked up (pointer, index): consecutive transactions are mostly of one table.
    last: Option<(usize, usize)>,
    /// The row bodies of the message being encoded, back to back.
    rows: Vec<u8>,
    mutations: Vec<Mutation>,
    /// Per table of the message: its header's index and its run of `mutations`.
    tables: Vec<(usize, usize, usize)>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("cached_tables", &self.headers.len()).finish()
    }
}

impl Encoder {
    /// The encoded DML binlog of `tables` (tables without rows are left out, as [`to_secondary`]).
    pub fn dml<'a>(&mut self, commit_ts: i64, tables: impl IntoIterator<Item = &'a TableChanges>) -> Vec<u8> {
        self.dml_rows(commit_ts, tables.into_iter().map(|t| (&t.table, t.rows.iter())))
    }

    /// The encoded DML binlog of some row changes per table, in the order given (a partition's share
    /// of a transaction); tables without rows are left out.
    pub fn dml_rows<'a, R>(&mut self, commit_ts: i64, tables: impl IntoIterator<Item = (&'a Arc<TableSchema>, R)>) -> Vec<u8>
    where
        R: IntoIterator<Item = &'a RowChange>,
    {
        if self.headers.len() >= HEADER_CACHE {
            (self.headers, self.index, self.last) = Default::default();
        }
        self.rows.clear();
        self.mutations.clear();
        self.tables.clear();
        for (table, rows) in tables {
            let key = self.header(table);
            let header = &self.headers[key];
            let first = self.mutations.len();
            for change in rows {
                let (tp, r, old) = match change {
                    RowChange::Insert(r) => (slave::MutationType::Insert, r, None),
                    RowChange::Delete(r) => (slave::MutationType::Delete, r, None),
                    RowChange::Update { old, new } => (slave::MutationType::Update, new, Some(old)),
                };
                let row = encode_row(&mut self.rows, &header.wires, r);
                let old = old.map(|o| encode_row(&mut self.rows, &header.wires, o));
                self.mutations.push(Mutation { tp: tp as u8, row, old });
            }
            if self.mutations.len() > first {
                self.tables.push((key, first, self.mutations.len()));
            }
        }
        let table_len = |&(key, first, end): &(usize, usize, usize)| {
            let h = &self.headers[key];
            h.before.len() + self.mutations[first..end].iter().map(|m| field_len(m.len())).sum::<usize>() + h.after.len()
        };
        let tables_len: usize = self.tables.iter().map(|t| field_len(table_len(t))).sum();
        let mut out = Vec::with_capacity(13 + field_len(tables_len));
        out.extend_from_slice(&[0x08, slave::BinlogType::Dml as u8, 0x10]);
        put_varint(&mut out, commit_ts as u64);
        put_head(&mut out, 0x1a, tables_len);
        for t in &self.tables {
            let h = &self.headers[t.0];
            put_head(&mut out, 0x0a, table_len(t));
            out.extend_from_slice(&h.before);
            for m in &self.mutations[t.1..t.2] {
                put_head(&mut out, 0x22, m.len());
                out.extend_from_slice(&[0x08, m.tp]);
                put_bytes(&mut out, 0x12, &self.rows[m.row.0..m.row.1]);
                if let Some((a, b)) = m.old {
                    put_bytes(&mut out, 0x1a, &self.rows[a..b]);
                }
            }
            out.extend_from_slice(&h.after);
        }
        out
    }

    /// The index of `table`'s header, worked out and cached on first sight.
    fn header(&mut self, table: &Arc<TableSchema>) -> usize {
        let key = Arc::as_ptr(table) as usize;
        if let Some((k, i)) = self.last
            && k == key
        {
            return i;
        }
        let headers = &mut self.headers;
        let i = *self.index.entry(key).or_insert_with(|| {
            let mut h = table_header(table);
            let keys = std::mem::take(&mut h.unique_keys);
            let after = slave::Table { unique_keys: keys, ..Default::default() }.encode_to_vec();
            let wires = table.columns.iter().map(Wire::of).collect();
            headers.push(TableHeader { _schema: table.clone(), before: h.encode_to_vec(), after, wires });
            headers.len() - 1
        });
        self.last = Some((key, i));
        i
    }
}

/// Appends the `Row` message body of `r` to `rows`; returns where it is.
fn encode_row(rows: &mut Vec<u8>, wires: &[Wire], r: &Row) -> (usize, usize) {
    let start = rows.len();
    for (i, w) in wires.iter().enumerate() {
        let c = column_ref(w, r.get(i).and_then(Option::as_ref));
        rows.push(0x0a);
        put_varint(rows, column_len(&c) as u64);
        put_column(rows, &c);
    }
    (start, rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{Time, UniqueKey};
    use std::sync::Arc;

    fn table() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            schema: "s".into(),
            name: "t".into(),
            columns: vec![
                Column { name: "id".into(), tp: mysql_type::LONGLONG, unsigned: true, primary_key: true, flen: 20, ..Default::default() },
                Column { name: "v".into(), tp: mysql_type::VARCHAR, flen: 10, ..Default::default() },
                Column { name: "b".into(), tp: mysql_type::BIT, flen: 12, ..Default::default() },
                Column { name: "ts".into(), tp: mysql_type::TIMESTAMP, ..Default::default() },
                Column { name: "y".into(), tp: mysql_type::YEAR, ..Default::default() },
                Column { name: "u".into(), tp: mysql_type::VARCHAR, ..Default::default() },
            ],
            pk_is_handle: true,
            unique_keys: vec![UniqueKey { name: "uk_v".into(), columns: vec![1] }],
            ..Default::default()
        })
    }

    fn row(id: u64, v: &str) -> Row {
        vec![
            Some(Value::Uint(id)),
            Some(Value::Bytes(v.as_bytes().to_vec())),
            Some(Value::Bit(0x0102)),
            Some(Value::Time(MysqlTime {
                time: Time { year: 2020, month: 1, day: 2, hour: 3, ..Default::default() },
                tp: mysql_type::TIMESTAMP, fsp: 0,
            })),
            Some(Value::Int(2024)),
            None,
        ]
    }

    #[test]
    fn values_info_keys_and_update_halves_follow_upstream() {
        let item = Item {
            start_ts: 1,
            commit_ts: 7,
            schema_version: 1,
            body: Body::Dml(vec![TableChanges { table: table(), rows: vec![RowChange::Update { old: row(1, "a"), new: row(1, "b") }] }]),
        };
        let b = to_secondary(&item).unwrap();
        assert_eq!((b.r#type(), b.commit_ts()), (slave::BinlogType::Dml, 7));
        let t = &b.dml_data.as_ref().unwrap().tables[0];
        assert_eq!(t.column_info[0].mysql_type(), "bigint");
        assert!(t.column_info[0].is_primary_key());
        assert_eq!(t.column_info[1].flen(), 10);
        let keys: Vec<(&str, Vec<String>)> = t.unique_keys.iter().map(|k| (k.name(), k.column_names.clone())).collect();
        assert_eq!(keys, vec![("PRIMARY", vec!["id".to_string()]), ("uk_v", vec!["v".to_string()])]);
        let m = &t.mutations[0];
        assert_eq!(m.r#type(), slave::MutationType::Update);
        let new = &m.row.columns;
        let old = &m.change_row.as_ref().unwrap().columns;
        assert_eq!((new[1].string_value(), old[1].string_value()), ("b", "a"), "row = new, change_row = old");
        assert_eq!(new[0].uint64_value, Some(1));
        assert_eq!(new[2].bytes_value(), &[0x01, 0x02], "bit: (flen+7)/8 big-endian bytes");
        assert_eq!(new[4].string_value(), "2024", "year as text");
        assert_eq!(new[5].is_null, Some(true), "a column the row does not carry is NULL");
        assert!(new[3].string_value().starts_with("20"), "{:?}", new[3]);
    }

    #[test]
    fn oversized_transactions_split_into_valid_ordered_chunks() {
        let rows: Vec<RowChange> = (0..50).map(|i| RowChange::Insert(row(i, &"x".repeat(40)))).collect();
        let item = Item {
            start_ts: 1,
            commit_ts: 9,
            schema_version: 1,
            body: Body::Dml(vec![
                TableChanges { table: table(), rows: rows[..20].to_vec() },
                TableChanges { table: table(), rows: rows[20..].to_vec() },
            ]),
        };
        let b = to_secondary(&item).unwrap();
        let whole = b.encode_to_vec();
        assert_eq!(encode_chunks(&b, whole.len(), "kafka-max-message-size").unwrap(), vec![whole.clone()]);
        let limit = 1000;
        let chunks = encode_chunks(&b, limit, "kafka-max-message-size").unwrap();
        assert!(chunks.len() > 3, "{}", chunks.len());
        let mut ids = Vec::new();
        for c in &chunks {
            assert!(c.len() <= limit, "{} > {limit}", c.len());
            let part = slave::Binlog::decode(c.as_slice()).unwrap();
            assert_eq!(part.commit_ts(), 9);
            for t in &part.dml_data.unwrap().tables {
                assert_eq!(t.column_info.len(), 6, "every chunk repeats the table header");
                ids.extend(t.mutations.iter().map(|m| m.row.columns[0].uint64_value()));
            }
        }
        assert_eq!(ids, (0..50).collect::<Vec<u64>>(), "all rows, in order");
        let err = encode_chunks(&b, 200, "kafka-max-message-size").unwrap_err().to_string();
        assert!(err.contains("one row of `s`.`t`") && err.contains("commit ts 9"), "{err}");
    }
    fn wide_table() -> Arc<TableSchema> {
        let col = |name: &str, tp: u8| Column { name: name.into(), tp, ..Default::default() };
        Arc::new(TableSchema {
            schema: "s".into(),
            name: "wide".into(),
            columns: vec![
                Column { primary_key: true, ..col("i", mysql_type::LONGLONG) },
                Column { unsigned: true, ..col("u", mysql_type::LONGLONG) },
                col("neg", mysql_type::LONGLONG),
                col("d", mysql_type::DOUBLE),
                Column { decimal: 2, ..col("dec", mysql_type::NEWDECIMAL) },
                col("j", mysql_type::JSON),
                // A LONGBLOB's width, as TiDB gives it: no overflow working out the column's wire.
                Column { flen: i32::MAX, ..col("blob", mysql_type::BLOB) },
                col("bad_utf8", mysql_type::VARCHAR),
                col("dt", mysql_type::DATETIME),
                col("dur", mysql_type::DURATION),
                col("e", mysql_type::ENUM),
                col("set", mysql_type::SET),
                col("y", mysql_type::YEAR),
                col("null", mysql_type::VARCHAR),
            ],
            ..Default::default()
        })
    }

    fn wide_row(i: i64) -> Row {
        vec![
            Some(Value::Int(i)),
            Some(Value::Uint(u64::MAX - i as u64)),
            Some(Value::Int(-i - 1)),
            Some(Value::Float(i as f64 / 3.0)),
            Some(Value::Decimal(format!("{i}.25"))),
            Some(Value::Json(format!("{{\"k\": {i}}}"))),
            Some(Value::Bytes(vec![0, 1, 2, 255])),
            Some(Value::Bytes(vec![b'a', 0xff, b'b'])),
            Some(Value::Time(MysqlTime {
                time: Time { year: 2021, month: 2, day: 3, hour: 4, microsecond: 5, ..Default::default() },
                fsp: 3, tp: mysql_type::DATETIME,
            })),
            Some(Value::Duration { nanos: -3_600_000_000_123, fsp: 2 }),
            Some(Value::Enum { index: 2, name: "b".into() }),
            Some(Value::Set { bits: 5, names: "a,c".into() }),
            Some(Value::Int(1999)),
            Some(Value::Null),
        ]
    }

    #[test]
    fn direct_encoding_is_the_prost_encoding_of_the_message() {
        let mut enc = Encoder::default();
        let mut short = wide_row(1);
        short.truncate(5); // a row missing trailing columns: they are NULL
        let items = [
            Item { start_ts: 1, commit_ts: 7, schema_version: 1, body: Body::Dml(vec![TableChanges { table: table(), rows: vec![RowChange::Update { old: row(1, "a"), new: row(1, "b") }] }]) },
            Item {
                start_ts: 1,
                commit_ts: i64::MAX - 3,
                schema_version: 1,
                body: Body::Dml(vec![
                    TableChanges { table: wide_table(), rows: (0..20).map(|i| RowChange::Insert(wide_row(i))).collect() },
                    TableChanges { table: table(), rows: vec![] },
                    TableChanges { table: table(), rows: vec![RowChange::Delete(row(9, "z")), RowChange::Insert(row(10, "ü"))] },
                    TableChanges { table: wide_table(), rows: vec![RowChange::Update { old: wide_row(3), new: short }] },
                ]),
            },
        ];
        for _ in 0..2 {
            // The second pass runs from the header cache.
            for item in &items {
                let Body::Dml(tables) = &item.body else { unreachable!() };
                let want = to_secondary(item).unwrap().encode_to_vec();
                assert_eq!(enc.dml(item.commit_ts, tables), want, "commit ts {}", item.commit_ts);
                // A partition's share (every other row of each table): the message of those rows.
                let share: Vec<TableChanges> = tables
                    .iter()
                    .map(|t| TableChanges { table: t.table.clone(), rows: t.rows.iter().step_by(2).cloned().collect() })
                    .collect();
                let want = to_secondary(&Item { body: Body::Dml(share.clone()), ..item.clone() }).unwrap().encode_to_vec();
                let got = enc.dml_rows(item.commit_ts, tables.iter().map(|t| (&t.table, t.rows.iter().step_by(2))));
                assert_eq!(got, want, "share of commit ts {}", item.commit_ts);
            }
        }
    }
    #[test]
    fn text_values_go_as_utf8_strings_with_invalid_bytes_replaced() {
        let t = table();
        let col = &t.columns[1]; // VARCHAR
        for (bytes, want) in [(&b"plain"[..], "plain"), ("ü-ß".as_bytes(), "ü-ß"), (&[b'a', 0xff, b'b'][..], "a\u{FFFD}b"), (&[][..], "")] {
            let c = column_value(col, Some(&Value::Bytes(bytes.to_vec())));
            assert_eq!((c.string_value(), c.bytes_value.is_none()), (want, true), "{bytes:?}");
            assert_eq!(column_text(col, Some(&Value::Bytes(bytes.to_vec()))).as_deref(), Some(want));
        }
        let blob = Column { tp: mysql_type::BLOB, binary: true, ..col.clone() };
        let c = column_value(&blob, Some(&Value::Bytes(vec![b'a', 0xff])));
        assert_eq!((c.bytes_value(), c.string_value.is_none()), (&[b'a', 0xff][..], true), "blob types keep their bytes");
    }

    #[test]
    fn time_text_is_display() {
        let mut times = vec![MysqlTime::default(), MysqlTime {
            time: Time { year: 10_000, month: 1, day: 1, ..Default::default() },
            tp: mysql_type::DATETIME, fsp: 0,
        }];
        for fsp in 0..=7 {
            for tp in [mysql_type::DATE, mysql_type::DATETIME, mysql_type::TIMESTAMP] {
                times.push(MysqlTime {
                    time: Time { year: 987, month: 12, day: 31, hour: 23, minute: 5, second: 9, microsecond: 120_034 },
                    tp, fsp,
                });
            }
        }
        for t in times {
            assert_eq!(time_text(&t).map_or_else(|| t.to_string(), |s| String::from_utf8_lossy(s.as_bytes()).into_owned()), t.to_string(), "{t:?}");
        }
    }
}
