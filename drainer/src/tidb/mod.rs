//! What TiDB puts inside a binlog and serves about its schemas: the datum codec, the old row format,
//! flatten/unflatten of column values, MySQL binary DECIMAL, packed time, TiDB binary JSON, and serde
//! models of TiDB's `TableInfo`, `ColumnInfo`, `IndexInfo`, `DBInfo` and `model.Job` JSON.
//!
//! # Layout
//! - [`ground`]: [`CodecError`] and Go's varints; it imports no sibling, so the others build on it.
//! - [`codec`]: [`Datum`], its flags, [`decode_one`], [`encode_value`] (row encoding), [`encode_key`]
//!   (comparable encoding), TiKV record keys.
//! - [`row`]: the old row format `colID, value, colID, value, ...` and the insert/update/delete row
//!   shapes of a `TableMutation`.
//! - [`value`]: [`Value`], a column value after `unflatten` with its [`model::FieldType`], and `flatten`.
//! - [`decimal`]: [`Decimal`] and MySQL `decimal2bin`/`bin2decimal`.
//! - [`time`]: packed DATE/DATETIME/TIMESTAMP ([`Time`]) and TIME durations.
//! - [`json`]: TiDB binary JSON ([`Json`]) to and from `serde_json` and TiDB's text rendering.
//! - [`mutation`]: a `TableMutation` decoded into row changes with a `TableInfo`, as drainer does.
//! - [`model`]: the JSON models and the MySQL type, flag, action and state numbers.
//!
//! Every decoder takes untrusted bytes: malformed input is a [`CodecError`] naming the offset and the
//! flag or field, never a panic.

pub mod codec;
pub mod ground;
pub mod decimal;
pub mod json;
pub mod model;
pub mod mutation;
pub mod row;
pub mod time;
pub mod value;

#[cfg(test)]
mod proptests;

pub use codec::{CodecError, Datum, Handle, decode_one, encode_key, encode_value};
pub use decimal::Decimal;
pub use json::Json;
pub use row::{decode_insert_row, decode_row, decode_update_row, encode_insert_row, encode_row};
pub use time::{Duration, Time};
pub use value::{Value, flatten, unflatten};
