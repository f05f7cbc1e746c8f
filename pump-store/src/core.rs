//! What a shard's appenders, its group-commit leader and its pipeline thread share: the shard's
//! [`Shared`] state, its group-commit queue, and the writer of its active segment (held by whoever
//! writes: the leader on the std path, the pipeline thread on the io_uring path).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::commit::{BatchResult, GroupCommit, Item, Leader, Queued};
use crate::format;
use crate::record::Record;
use crate::state::Shared;
use crate::writer::Writer;

impl Item for Record {
    fn size(&self) -> usize {
        format::encoded_len(self.payload.len())
    }
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) shared: Arc<Shared>,
    pub(crate) commit: GroupCommit<Record>,
    /// The active segment; `None` once closed.
    writer: Mutex<Option<Writer>>,
}

impl Core {
    pub(crate) fn new(shared: Arc<Shared>, writer: Writer, pipelined: bool) -> Core {
        let commit = GroupCommit::new(pipelined, shared.cfg.max_batch_bytes, shared.cfg.lead_linger);
        Core { shared, commit, writer: Mutex::new(Some(writer)) }
    }

    /// The active segment's writer (`None` once closed).
    pub(crate) fn writer(&self) -> MutexGuard<'_, Option<Writer>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The std path: the leader writes each batch with one `pwrite` and one `fdatasync`.
impl Leader<Record> for Core {
    fn write(&self, batch: &[Queued<Record>]) -> BatchResult {
        match self.writer().as_mut() {
            Some(w) => w.write_batch(&self.shared, batch),
            None => BatchResult::Closed,
        }
    }

    fn tick(&self) {
        self.shared.refresh_space();
    }

    fn release(&self) {
        drop(self.writer().take());
        self.shared.mark_closed();
    }
}
