//! What pump needs to know about a `binlog.Binlog`: its kind on write, the fake binlog it generates,
//! and the C-binlog joined with its P-binlog that it serves.

use prost::Message;

use crate::proto::{Binlog, BinlogType};

/// What a written payload is, as pump classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// `start_ts == 0 && commit_ts == 0`: a health probe, stored nowhere.
    Probe,
    /// A Prewrite (P-binlog), keyed by start ts.
    Prewrite,
    /// A Commit (C-binlog).
    Commit,
    /// A Rollback of a transaction (commit ts 0 from TiDB).
    Rollback,
    /// A fake binlog (`start_ts > 0 && start_ts == commit_ts`): advances the watermark.
    Fake,
}

/// A decoded write: kind and timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The kind.
    pub kind: WriteKind,
    /// `start_ts`.
    pub start_ts: i64,
    /// `commit_ts`.
    pub commit_ts: i64,
    /// The raw `tp` was Prewrite (also true for a probe, whose empty payload decodes to Prewrite).
    pub is_prewrite_type: bool,
}

/// Decodes a WriteBinlog payload far enough to route it.
pub fn classify(payload: &[u8]) -> Result<Classified, prost::DecodeError> {
    let b = Binlog::decode(payload)?;
    let (start_ts, commit_ts) = (b.start_ts(), b.commit_ts());
    let tp = BinlogType::try_from(b.tp.unwrap_or(0)).unwrap_or(BinlogType::Prewrite);
    let is_prewrite_type = tp == BinlogType::Prewrite;
    let kind = if start_ts == 0 && commit_ts == 0 {
        WriteKind::Probe
    } else if start_ts > 0 && start_ts == commit_ts {
        WriteKind::Fake
    } else {
        match tp {
            BinlogType::Prewrite => WriteKind::Prewrite,
            BinlogType::Commit | BinlogType::PostDdl => WriteKind::Commit,
            BinlogType::Rollback => WriteKind::Rollback,
            BinlogType::PreDdl => WriteKind::Prewrite,
        }
    };
    Ok(Classified { kind, start_ts, commit_ts, is_prewrite_type })
}

/// A fake binlog with both timestamps `ts`, encoded as Go does (every non-nullable field written).
pub fn fake_binlog(ts: i64) -> Vec<u8> {
    Binlog {
        tp: Some(BinlogType::Rollback as i32),
        start_ts: Some(ts),
        commit_ts: Some(ts),
        ddl_job_id: Some(0),
        ddl_schema_state: Some(0),
        ..Binlog::default()
    }
    .encode_to_vec()
}

/// The C-binlog `commit` with the P-binlog's `prewrite_value`, `ddl_query`, `ddl_job_id` and
/// `ddl_schema_state` (and `start_ts`) copied in, re-encoded: what PullBinlogs serves.
pub fn join(commit: &[u8], prewrite: &[u8]) -> Result<Vec<u8>, prost::DecodeError> {
    let mut c = Binlog::decode(commit)?;
    let p = Binlog::decode(prewrite)?;
    c.start_ts = Some(p.start_ts());
    c.ddl_job_id = Some(p.ddl_job_id());
    c.ddl_schema_state = Some(p.ddl_schema_state());
    c.prewrite_value = p.prewrite_value;
    c.ddl_query = p.ddl_query;
    if c.commit_ts.is_none() {
        c.commit_ts = Some(0);
    }
    Ok(c.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: Binlog) -> Vec<u8> {
        b.encode_to_vec()
    }

    #[test]
    fn kinds() {
        assert_eq!(classify(&[]).unwrap().kind, WriteKind::Probe);
        assert!(classify(&[]).unwrap().is_prewrite_type);
        let p = enc(Binlog { tp: Some(0), start_ts: Some(5), ..Default::default() });
        assert_eq!(classify(&p).unwrap().kind, WriteKind::Prewrite);
        let c = enc(Binlog { tp: Some(1), start_ts: Some(5), commit_ts: Some(6), ..Default::default() });
        assert_eq!(classify(&c).unwrap(), Classified { kind: WriteKind::Commit, start_ts: 5, commit_ts: 6, is_prewrite_type: false });
        let r = enc(Binlog { tp: Some(2), start_ts: Some(5), commit_ts: Some(0), ..Default::default() });
        assert_eq!(classify(&r).unwrap().kind, WriteKind::Rollback);
        assert_eq!(classify(&fake_binlog(9)).unwrap().kind, WriteKind::Fake);
        assert!(classify(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn join_copies_prewrite_fields() {
        let p = enc(Binlog {
            tp: Some(0),
            start_ts: Some(5),
            prewrite_key: Some(b"k".to_vec()),
            prewrite_value: Some(b"rows".to_vec()),
            ddl_query: Some(b"create table t (a int)".to_vec()),
            ddl_job_id: Some(12),
            ddl_schema_state: Some(1),
            ..Default::default()
        });
        let c = enc(Binlog { tp: Some(1), start_ts: Some(5), commit_ts: Some(6), prewrite_key: Some(b"k".to_vec()), ..Default::default() });
        let j = Binlog::decode(join(&c, &p).unwrap().as_slice()).unwrap();
        assert_eq!(j.tp(), BinlogType::Commit);
        assert_eq!((j.start_ts(), j.commit_ts()), (5, 6));
        assert_eq!(j.prewrite_value(), b"rows");
        assert_eq!(j.ddl_query(), b"create table t (a int)");
        assert_eq!((j.ddl_job_id(), j.ddl_schema_state()), (12, 1));
        assert_eq!(j.prewrite_key(), b"k");
    }
}
