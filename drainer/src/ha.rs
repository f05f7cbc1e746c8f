//! Drainer high availability (ours): several drainers configured as one replication task
//! (`task-name`) elect one active drainer through an etcd election on PD's etcd; the others stand by.
//!
//! - **Election.** Every drainer of task `T` grants itself a lease of `ha-lease-ttl` seconds, keeps it
//!   alive, and campaigns on `/tidb-binlog/v1/tasks/T/election` (etcd's v3 election API) with its node
//!   id as the value. The winner's leader key's create revision is its **fencing token**: etcd
//!   revisions only grow, so a later active always holds a larger token.
//! - **Standby.** A drainer that waits is registered `online` with `"task":T,"role":"standby"`; it
//!   reports the active drainer's registered checkpoint as its own `maxCommitTS` (so pumps' GC is held
//!   back by the task's progress, not by a stale number), answers `/status`, `/commit_ts` and
//!   `PUT /state/<id>/{pause,close}` (binlogctl's pause-drainer/offline-drainer stop it, as any drainer).
//! - **Active.** The winner connects its sink, resumes from the sink's checkpoint (the MySQL/TiDB
//!   checkpoint table downstream, shared by every drainer of the task) and registers `"role":"active"`.
//!   As soon as its lease is not known alive any more, or the downstream's fence refuses one of its
//!   transactions, its term ends: the sink is dropped without a final flush (its checkpoint is
//!   committed with the data downstream; the fence refuses any late write), the pipeline's state goes
//!   with it, and the drainer stands by again by itself, registered `"role":"standby"`, and can be
//!   elected later (`server::run_with` builds a new sink per term). No supervisor is needed.
//!   Stopping on request (signal, pause, offline) revokes the lease, so a standby takes over at once.
//! - **Fencing.** A drainer that lost its lease but has not noticed yet (frozen, partitioned from etcd)
//!   must not write. The MySQL/TiDB sink keeps the token in `tidb_binlog.ha_fence` (see
//!   [`crate::sink::mysql`]'s `fence` module): a new active raises the row to its token, and every
//!   downstream transaction checks the row, under a lock, in the same transaction as its data.
//!   The Kafka sink fences with Kafka's own producer epochs: every drainer of the task uses one
//!   `transactional.id` (`tidb-binlog-<cluster id>-task-<task>`) with exactly-once on, so the new
//!   active's `init_transactions` aborts what the old one left open and makes any later produce or
//!   commit of the old one fail (`ProducerFenced`); the old one stops with an error naming the fencing.
//!   Its checkpoint is the topic itself, read `read_committed` by the new active.
//! - **Sinks.** MySQL/TiDB and Kafka. The file sink writes into the node's own data dir: with
//!   `task-name` it is refused by name at start.

use std::time::{Duration, Instant};

use etcd_client::Client;
use pump::node::{NodeKind, NodeStatus, Registry};
use tokio::sync::watch;


pub use crate::config::DEFAULT_LEASE_TTL;
/// Where tasks keep their election (ours).
pub const TASKS_PREFIX: &str = "/tidb-binlog/v1/tasks/";
/// The registry role of the active drainer of a task.
pub const ROLE_ACTIVE: &str = "active";
/// The registry role of a drainer waiting to take over.
pub const ROLE_STANDBY: &str = "standby";

/// The election name of task `task`.
pub fn election_name(task: &str) -> String {
    format!("{TASKS_PREFIX}{task}/election")
}

pub use crate::sink::mysql::Fence;

/// An etcd call of the election failed.
#[derive(Debug, thiserror::Error)]
#[error("drainer HA: etcd {what} for task {task}: {source}")]
pub struct HaError {
    /// What was attempted.
    pub what: &'static str,
    /// The task.
    pub task: String,
    /// The client error.
    #[source]
    pub source: etcd_client::Error,
}

/// A lease kept alive in the background. `lost` turns true (and the keeper stops) once the lease may
/// have expired on the server: no keep-alive answered within the TTL (less a margin) since it was sent.
#[derive(Debug)]
pub struct Lease {
    /// The lease id.
    pub id: i64,
    /// True once the lease is lost.
    pub lost: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Lease {
    /// Grants a lease of `ttl` seconds and keeps it alive.
    pub async fn grant(client: &Client, task: &str, ttl: i64) -> Result<Lease, HaError> {
        let mut c = client.clone();
        let err = |what| move |source| HaError { what, task: task.to_string(), source };
        let sent = Instant::now();
        let id = c.lease_grant(ttl, None).await.map_err(err("granting a lease"))?.id();
        let (tx, lost) = watch::channel(false);
        let keeper = tokio::spawn(keep_alive(c, id, Duration::from_secs(ttl as u64), sent, tx));
        Ok(Lease { id, lost, keeper })
    }

    /// Revokes the lease (a standby takes over at once); errors are only logged: the lease expires anyway.
    pub async fn revoke(self, client: &Client) {
        self.keeper.abort();
        if let Err(e) = client.clone().lease_revoke(self.id).await {
            tracing::warn!(error = %e, lease = self.id, "revoking the HA lease failed; it expires on its own");
        }
    }
}

async fn keep_alive(mut client: Client, id: i64, ttl: Duration, granted: Instant, lost: watch::Sender<bool>) {
    // The server expires the lease `ttl` after it received the last keep-alive, which is after we sent
    // it: counting from our send time, with a margin, we give up before the server does.
    let margin = ttl / 5;
    let period = ttl / 3;
    let mut valid_until = granted + ttl;
    let mut stream = None;
    loop {
        let now = Instant::now();
        if now + margin >= valid_until {
            tracing::warn!(lease = id, "HA lease lost: no keep-alive answered in time");
            let _ = lost.send(true);
            return;
        }
        if stream.is_none() {
            match tokio::time::timeout(period, client.lease_keep_alive(id)).await {
                Ok(Ok(s)) => stream = Some(s),
                Ok(Err(e)) => tracing::warn!(error = %e, lease = id, "opening the HA lease keep-alive failed"),
                Err(_) => tracing::warn!(lease = id, "opening the HA lease keep-alive timed out"),
            }
        }
        if let Some((keeper, answers)) = stream.as_mut() {
            let sent = Instant::now();
            let r = tokio::time::timeout(period, async {
                keeper.keep_alive().await?;
                answers.message().await
            })
            .await;
            match r {
                Ok(Ok(Some(a))) if a.ttl() > 0 => valid_until = sent + ttl,
                Ok(Ok(Some(_))) => {
                    tracing::warn!(lease = id, "HA lease expired on the server");
                    let _ = lost.send(true);
                    return;
                }
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    tracing::warn!(lease = id, "HA lease keep-alive failed; reopening");
                    stream = None;
                }
            }
        }
        let next = Instant::now() + period;
        tokio::time::sleep_until(next.min(valid_until.checked_sub(margin).unwrap_or(next)).into()).await;
    }
}

/// Campaigns for task `task` with `lease` until elected; returns the fencing token.
pub async fn campaign(client: &Client, task: &str, node_id: &str, lease: i64) -> Result<i64, HaError> {
    let mut c = client.clone();
    let r = c
        .campaign(election_name(task), node_id, lease)
        .await
        .map_err(|source| HaError { what: "campaign", task: task.to_string(), source })?;
    let token = r.leader().map(|l| l.rev()).unwrap_or(0);
    if token <= 0 {
        return Err(HaError {
            what: "campaign",
            task: task.to_string(),
            source: etcd_client::Error::InvalidArgs("the election answered without a leader key".into()),
        });
    }
    Ok(token)
}

/// Whether `e` (or an error it wraps) is the MySQL sink's fencing error: a newer active drainer fenced
/// this one out, or this one could not fence the downstream when it took over.
pub fn is_fenced(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if matches!(e.downcast_ref::<crate::sink::mysql::MysqlError>(), Some(crate::sink::mysql::MysqlError::Fence { .. })) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The checkpoint a standby of `task` reports: the registered `maxCommitTS` of the task's active
/// drainer, if one is registered online; `None` otherwise.
pub async fn active_checkpoint(registry: &Registry, task: &str) -> Option<i64> {
    let nodes = registry.list(NodeKind::Drainer).await.ok()?;
    active_of(&nodes, task).map(|n| n.max_commit_ts)
}

/// The online active drainer of `task` among `nodes`.
pub fn active_of<'a>(nodes: &'a [NodeStatus], task: &str) -> Option<&'a NodeStatus> {
    nodes.iter().find(|n| {
        n.task.as_deref() == Some(task)
            && n.role.as_deref() == Some(ROLE_ACTIVE)
            && n.state == pump::node::NodeState::Online
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump::node::NodeState;

    #[test]
    fn a_fencing_error_is_found_through_the_wrappers() {
        use crate::server::DrainerError;
        use crate::sink::SinkError;
        use crate::sink::mysql::MysqlError;
        let fenced = || MysqlError::Fence { task: "t".into(), token: 7, why: "a newer active drainer took over".into() };
        let through_sync = DrainerError::Sync(crate::syncer::SyncError::Sink(SinkError::new("mysql", fenced())));
        assert!(is_fenced(&through_sync));
        assert!(is_fenced(&DrainerError::Sink(SinkError::new("mysql", fenced()))));
        let other = DrainerError::Sink(SinkError::new("mysql", MysqlError::Config("bad".into())));
        assert!(!is_fenced(&other));
        assert!(!is_fenced(&DrainerError::LostLease("t".into())));
    }

    #[test]
    fn the_active_of_a_task_is_online_with_role_active() {
        let mk = |id: &str, task: Option<&str>, role: Option<&str>, st: NodeState, ts: i64| {
            let mut n = NodeStatus::new(id, "h:1", st);
            n.task = task.map(Into::into);
            n.role = role.map(Into::into);
            n.max_commit_ts = ts;
            n
        };
        let nodes = vec![
            mk("a", Some("t"), Some(ROLE_ACTIVE), NodeState::Paused, 1),
            mk("b", Some("u"), Some(ROLE_ACTIVE), NodeState::Online, 2),
            mk("c", Some("t"), Some(ROLE_STANDBY), NodeState::Online, 3),
            mk("d", None, None, NodeState::Online, 4),
            mk("e", Some("t"), Some(ROLE_ACTIVE), NodeState::Online, 5),
        ];
        assert_eq!(active_of(&nodes, "t").map(|n| n.node_id.as_str()), Some("e"));
        assert_eq!(active_of(&nodes, "x"), None);
    }
}
