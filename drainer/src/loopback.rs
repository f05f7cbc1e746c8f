//! `loopback-control` and `channel-id`: two clusters replicating into each other without a loop, as
//! upstream's `loopbacksync`.
//!
//! The MySQL/TiDB sink begins every downstream transaction with an update of this drainer's row in the
//! mark table `retl._drainer_repl_mark` (its rows are created at start, one per connection:
//! `(id, channel_id, val, channel_info)`, primary key `(id, channel_id)`). The other direction's TiDB
//! writes that update into its binlog together with the rows, so the drainer reading that cluster sees
//! a change to the mark table whose `channel_id` is its own and drops the whole transaction
//! ([`carries_mark`], checked before any filter): what one drainer wrote is never sent back. Both drainers of a pair use the same
//! `channel-id`.
//!
//! DDL cannot carry the mark (it commits on its own), as upstream: replicate DDL in one direction
//! only (`sync-ddl = false` on the other drainer).

use crate::txn::{RowChange, TableSchema, Value};

/// The mark table's database.
pub const MARK_DB: &str = "retl";
/// The mark table.
pub const MARK_TABLE: &str = "_drainer_repl_mark";
/// The channel id column.
pub const CHANNEL_ID: &str = "channel_id";

/// Creates the mark database and table if they are missing.
pub const CREATE_SQL: &str = "CREATE DATABASE IF NOT EXISTS `retl`;CREATE TABLE IF NOT EXISTS `retl`.`_drainer_repl_mark` \
     (`id` BIGINT NOT NULL, `channel_id` BIGINT NOT NULL DEFAULT 0, `val` BIGINT DEFAULT 0, `channel_info` VARCHAR(64), \
     PRIMARY KEY (`id`, `channel_id`))";

/// Whether `schema`.`table` is the mark table (names compared case-insensitively, as upstream).
pub fn is_mark_table(schema: &str, table: &str) -> bool {
    schema.eq_ignore_ascii_case(MARK_DB) && table.eq_ignore_ascii_case(MARK_TABLE)
}

/// The rows `0..connections` of `channel` (each connection updates its own row), value 1.
pub fn init_sql(connections: usize, channel: i64) -> String {
    let rows: Vec<String> = (0..connections.max(1)).map(|id| format!("({id},{channel},1,'')")).collect();
    format!("REPLACE INTO `retl`.`_drainer_repl_mark` (`id`,`channel_id`,`val`,`channel_info`) VALUES {}", rows.join(","))
}

/// The statement that marks a transaction of connection `id`.
pub fn mark_sql(id: usize, channel: i64) -> String {
    format!("UPDATE `retl`.`_drainer_repl_mark` SET `val`=`val`+1 WHERE `id`={id} AND `channel_id`={channel} LIMIT 1")
}

/// Whether changes to `table` include the mark table's row of `channel` (the new row of an update,
/// the row of an insert or delete), i.e. the transaction was written by the drainer of that channel.
pub fn carries_mark(table: &TableSchema, rows: &[RowChange], channel: i64) -> bool {
    if !is_mark_table(&table.schema, &table.name) {
        return false;
    }
    let Some(col) = table.column_index(CHANNEL_ID) else { return false };
    rows.iter().any(|r| {
        let row = match r {
            RowChange::Insert(row) | RowChange::Delete(row) => row,
            RowChange::Update { new, .. } => new,
        };
        match row.get(col) {
            Some(Some(Value::Int(v))) => *v == channel,
            Some(Some(Value::Uint(v))) => i64::try_from(*v).is_ok_and(|v| v == channel),
            _ => false,
        }
    })
}
