//! [`MysqlError`], and how the sink classifies the driver's errors: retry, fatal, stale table
//! shape, refused prepared statement, ignorable DDL error.

/// MySQL sink errors.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// Bad configuration.
    #[error("config: {0}")]
    Config(String),
    /// The downstream refused the login.
    #[error("the downstream {addr} refused user {user:?}: {message} (check [syncer.to] user and password)")]
    Auth {
        /// host:port.
        addr: String,
        /// User name.
        user: String,
        /// Server message.
        message: String,
    },
    /// The TLS handshake with the downstream failed (or its files are unreadable).
    #[error(
        "TLS to the downstream {addr} failed: {why} (check [syncer.to.security] ssl-ca/ssl-cert/ssl-key and that \
         the server's certificate is signed by that CA and names the host)"
    )]
    Tls {
        /// host:port.
        addr: String,
        /// The driver's error, with its causes.
        why: String,
    },
    /// A query failed.
    #[error("{what}: {source}")]
    Query {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },
    /// A table the items write to does not exist downstream.
    #[error("table {table} does not exist in the downstream (create it, or its database, there first)")]
    NoTable {
        /// `` `db`.`t` ``.
        table: String,
    },
    /// A value cannot be written.
    #[error("txn at commit ts {commit_ts}, table {table}: {why}")]
    BadValue {
        /// The item's commit ts.
        commit_ts: i64,
        /// The table.
        table: String,
        /// Why.
        why: String,
    },
    /// The downstream rejected row changes (type mismatch, missing column, ...).
    #[error("the downstream rejected txns with commit ts {first}..={last}: {source}")]
    Rejected {
        /// Lowest commit ts in the failed transaction.
        first: i64,
        /// Highest.
        last: i64,
        /// The server's error.
        #[source]
        source: mysql_async::Error,
    },
    /// The downstream rejected a DDL.
    #[error(
        "the downstream rejected the DDL at commit ts {commit_ts} ({query}): {message}; \
         to skip it, add {commit_ts} to [syncer] ignore-txn-commit-ts"
    )]
    DdlRejected {
        /// The DDL's commit ts.
        commit_ts: i64,
        /// The DDL text.
        query: String,
        /// Server message.
        message: String,
    },
    /// The downstream kept failing for longer than `retry_for`.
    #[error("the downstream {addr} kept failing for {secs}s, giving up: {last}")]
    Unavailable {
        /// host:port.
        addr: String,
        /// Seconds spent retrying.
        secs: u64,
        /// The last error.
        last: String,
    },
    /// Drainer HA: taking over the downstream failed, or a newer active drainer fenced this one out.
    #[error("drainer HA, task {task} with token {token}: {why}")]
    Fence {
        /// The task.
        task: String,
        /// This drainer's token.
        token: i64,
        /// What happened.
        why: String,
    },
    /// Another sink holds this sink's named lock.
    #[error(
        "another MySQL sink holds lock {lock:?} (is a second drainer for this cluster writing to this downstream?)"
    )]
    Busy {
        /// The lock name.
        lock: String,
    },
    /// The checkpoint row is unreadable.
    #[error("checkpoint {table}: {why}")]
    Checkpoint {
        /// The table.
        table: String,
        /// Why.
        why: String,
    },
    /// The sink stopped after an earlier error.
    #[error("stopped: {0}")]
    Stopped(String),
    /// A bug.
    #[error("internal: {0}")]
    Internal(String),
}

impl MysqlError {
    pub(super) fn query(what: impl Into<String>, source: mysql_async::Error) -> Self {
        MysqlError::Query { what: what.into(), source }
    }
}

/// Errors worth retrying: the connection, deadlocks, lock waits, a server going down.
pub(super) fn retryable(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => {
            matches!(s.code, 1040 | 1053 | 1205 | 1213 | 1317 | 1927 | 2006 | 2013 | 8002 | 9007)
        }
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        _ => false,
    }
}

/// A connect error that retrying cannot fix when TLS is on: the handshake or certificate
/// verification failed, a certificate/key file is missing or malformed, or the server has no TLS.
pub(super) fn tls_failure(e: &mysql_async::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Tls(_)) => true,
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => {
            matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::NotFound | ErrorKind::PermissionDenied)
        }
        mysql_async::Error::Driver(d) => matches!(
            d,
            mysql_async::DriverError::NoClientSslFlagFromServer | mysql_async::DriverError::NoKeyFound
        ),
        _ => false,
    }
}

/// An error with its causes, `a: b: c` (rustls' reason sits below the driver's io error).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

pub(super) fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// Errors that say the cached downstream table info may be stale (someone changed the table by
/// hand): unknown column, column count, value for a generated column, no such table. The batch is
/// retried once after re-reading the table.
pub(super) fn stale_shape(code: u16) -> bool {
    matches!(code, 1054 | 1136 | 1146 | 1906 | 3105)
}

/// The server will not run a prepared statement: too many prepared statements server-wide
/// (`max_prepared_stmt_count`), a statement the protocol does not support, too many placeholders.
pub(super) fn prepare_refused(code: u16) -> bool {
    matches!(code, 1295 | 1390 | 1461)
}

/// Upstream's ignorable DDL errors: database/table/column/index already exists or does not exist.
pub(super) fn ignorable_ddl_error(code: u16) -> bool {
    matches!(code, 1007 | 1008 | 1049 | 1050 | 1051 | 1054 | 1060 | 1061 | 1091 | 1146 | 1176 | 1831)
}

pub(super) enum Fail {
    Retry(mysql_async::Error),
    Fatal(MysqlError),
}

impl From<MysqlError> for Fail {
    fn from(e: MysqlError) -> Self {
        Fail::Fatal(e)
    }
}

/// The downstream rejected a batch with a server error whose code `code` accepts.
pub(super) fn rejected_with(e: &MysqlError, code: fn(u16) -> bool) -> bool {
    matches!(e, MysqlError::Rejected { source, .. } if server_code(source).is_some_and(code))
}
