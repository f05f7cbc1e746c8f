//! Sinks that print or just count transactions: Reparo's `dest-type = "print"` and `"memory"`.
//!
//! Print format, one block per transaction:
//! ```text
//! commit ts: 42
//! DDL query: use `db`; create table t (a int);
//! schema: db; table: t; type: Insert
//! a(int): 1
//! schema: db; table: t; type: Update
//! a(int): 1 => 2
//! ```

use std::io::Write;
use std::sync::Arc;

use crate::sink::{Sink, SinkError};
use crate::txn::{Body, Item, RowChange, quote_ident, value_text};

/// Writes every transaction as text to `out`.
#[derive(Debug)]
pub struct PrintSink<W> {
    out: W,
    last_ts: i64,
}

impl<W: Write + Send> PrintSink<W> {
    /// Prints to `out`.
    pub fn new(out: W) -> Self {
        Self { out, last_ts: 0 }
    }

    /// The writer (for tests).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn print(&mut self, item: &Item) -> std::io::Result<()> {
        writeln!(self.out, "commit ts: {}", item.commit_ts)?;
        match &item.body {
            Body::Empty => {}
            Body::Ddl(d) if d.schema.is_empty() => writeln!(self.out, "DDL query: {};", d.query)?,
            Body::Ddl(d) => writeln!(self.out, "DDL query: use {}; {};", quote_ident(&d.schema), d.query)?,
            Body::Dml(tables) => {
                for t in tables {
                    for change in &t.rows {
                        let (kind, row, new) = match change {
                            RowChange::Insert(r) => ("Insert", r, None),
                            RowChange::Delete(r) => ("Delete", r, None),
                            RowChange::Update { old, new } => ("Update", old, Some(new)),
                        };
                        writeln!(self.out, "schema: {}; table: {}; type: {kind}", t.table.schema, t.table.name)?;
                        for (i, col) in t.table.columns.iter().enumerate() {
                            let Some(Some(v)) = row.get(i) else { continue };
                            write!(self.out, "{}({}): {}", col.name, col.type_name(), value_text(v))?;
                            if let Some(Some(n)) = new.and_then(|n| n.get(i)) {
                                write!(self.out, " => {}", value_text(n))?;
                            }
                            writeln!(self.out)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl<W: Write + Send> Sink for PrintSink<W> {
    async fn load_checkpoint(&mut self) -> Result<Option<i64>, SinkError> {
        Ok(None)
    }

    async fn write(&mut self, item: Arc<Item>) -> Result<(), SinkError> {
        self.print(&item).map_err(|e| SinkError::new("print", e))?;
        self.last_ts = item.commit_ts;
        Ok(())
    }

    fn durable_ts(&self) -> i64 {
        self.last_ts
    }

    async fn flush(&mut self) -> Result<i64, SinkError> {
        self.out.flush().map_err(|e| SinkError::new("print", e))?;
        Ok(self.last_ts)
    }
}

/// `dest-type = "memory"`: decodes everything and keeps only a count.
#[derive(Debug, Default)]
pub struct MemorySink {
    /// Transactions received.
    pub count: u64,
    last_ts: i64,
}

impl Sink for MemorySink {
    async fn load_checkpoint(&mut self) -> Result<Option<i64>, SinkError> {
        Ok(None)
    }

    async fn write(&mut self, item: Arc<Item>) -> Result<(), SinkError> {
        self.count += 1;
        self.last_ts = item.commit_ts;
        Ok(())
    }

    fn durable_ts(&self) -> i64 {
        self.last_ts
    }

    async fn flush(&mut self) -> Result<i64, SinkError> {
        Ok(self.last_ts)
    }
}
