//! Opening a downstream session: login (TLS), time zone, sql_mode, params, TiDB variables, the
//! connection's named lock, and the retry with backoff while the downstream is unavailable.

use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};

use super::error::{Fail, MysqlError, error_chain, retryable, tls_failure};
use super::sql::{self, Dialect};
use super::{CheckpointCfg, MysqlSinkConfig};

/// A session's facts learned at connect.
#[derive(Debug, Clone, Copy)]
pub(super) struct Session {
    pub(super) dialect: Dialect,
    pub(super) max_packet: usize,
}

pub(super) fn addr(cfg: &MysqlSinkConfig) -> String {
    format!("{}:{}", cfg.host, cfg.port)
}

pub(super) fn time_zone(cfg: &MysqlSinkConfig) -> Result<Option<String>, MysqlError> {
    let Some((_, v)) = cfg.params.iter().find(|(k, _)| k.eq_ignore_ascii_case("time_zone")) else {
        return Ok(None);
    };
    let v = v.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
    if v.eq_ignore_ascii_case("SYSTEM") || v.eq_ignore_ascii_case("Local") {
        return Err(MysqlError::Config(format!("[syncer.to.params] time_zone = {v:?} is not allowed; name a zone")));
    }
    Ok(Some(v))
}

fn is_utc(zone: &str) -> bool {
    matches!(zone, "+00:00" | "-00:00" | "+0:00" | "UTC" | "utc" | "Etc/UTC" | "GMT")
}

/// The named lock connection `worker` holds while it lives (so a restarted sink waits until every
/// connection of a crashed one has finished its last transaction before reading the checkpoint).
pub(super) fn lock_name(ck: &CheckpointCfg, worker: usize) -> String {
    let name = format!("{}.{}:{}:{worker}", ck.schema, ck.table, ck.cluster_id);
    let cut = name.char_indices().rev().nth(63).map_or(0, |(i, _)| i);
    name[cut..].to_string()
}

/// Takes (or, with `release`, takes and drops) the named lock; waits up to 60 s.
pub(super) async fn take_lock(conn: &mut Conn, name: &str, release: bool) -> Result<(), Fail> {
    let mut q = String::new();
    sql::push_quoted(&mut q, name, Dialect::default());
    match conn.query_first::<Option<i64>, _>(format!("SELECT GET_LOCK({q}, 60)")).await {
        Ok(Some(Some(1))) => {}
        Ok(_) => {
            return Err(Fail::Fatal(MysqlError::Busy { lock: name.to_string() }));
        }
        Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
        Err(e) => {
            return Err(Fail::Fatal(MysqlError::query(format!("taking lock {name}"), e)));
        }
    }
    if release && let Err(e) = conn.query_drop(format!("DO RELEASE_LOCK({q})")).await {
        return Err(if retryable(&e) { Fail::Retry(e) } else { Fail::Fatal(MysqlError::query("releasing a lock", e)) });
    }
    Ok(())
}

/// Prepared statements a connection keeps (least recently used ones are closed).
const STMT_CACHE: usize = 32;

/// Opens one session for connection `worker`: login, time zone, sql_mode, params, TiDB variables,
/// and (with a checkpoint) the connection's named lock.
pub(super) async fn open(cfg: &MysqlSinkConfig, worker: usize) -> Result<(Conn, Session), Fail> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(cfg.host.clone())
        .tcp_port(cfg.port)
        .user(Some(cfg.user.clone()))
        .pass(Some(cfg.password.clone()))
        .prefer_socket(false)
        .tcp_nodelay(true)
        // the prepared multi-row INSERTs: one statement per table and column set in use
        .stmt_cache_size(STMT_CACHE);
    let opts = match &cfg.tls {
        None => opts,
        Some(t) => {
            let mut ssl =
                mysql_async::SslOpts::default().with_root_certs(vec![t.ca.clone().into()]).with_disable_built_in_roots(true);
            if let Some((cert, key)) = &t.client {
                ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(cert.clone().into(), key.clone().into())));
            }
            opts.ssl_opts(ssl)
        }
    };
    let mut conn = match Conn::new(opts).await {
        Ok(c) => c,
        Err(mysql_async::Error::Server(s)) if matches!(s.code, 1044 | 1045 | 1698) => {
            return Err(Fail::Fatal(MysqlError::Auth { addr: addr(cfg), user: cfg.user.clone(), message: s.message }));
        }
        Err(e) if cfg.tls.is_some() && tls_failure(&e) => {
            return Err(Fail::Fatal(MysqlError::Tls { addr: addr(cfg), why: error_chain(&e) }));
        }
        Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
        Err(e) => {
            return Err(Fail::Fatal(MysqlError::query(format!("connecting to {}", addr(cfg)), e)));
        }
    };
    let zone = time_zone(cfg)?;
    let mut setup = Vec::new();
    let mut q = String::new();
    sql::push_quoted(&mut q, zone.as_deref().unwrap_or("+00:00"), Dialect::default());
    setup.push(format!("SET SESSION time_zone = {q}"));
    if let Some(mode) = &cfg.sql_mode {
        let mut q = String::new();
        sql::push_quoted(&mut q, mode, Dialect::default());
        setup.push(format!("SET SESSION sql_mode = {q}"));
    }
    for (k, v) in cfg.params.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("time_zone")) {
        if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Fail::Fatal(MysqlError::Config(format!("[syncer.to.params] {k:?} is not a variable name"))));
        }
        let v = v.trim().trim_matches('\'');
        let val = if v.parse::<f64>().is_ok() {
            v.to_string()
        } else {
            let mut q = String::new();
            sql::push_quoted(&mut q, v, Dialect::default());
            q
        };
        setup.push(format!("SET SESSION {k} = {val}"));
    }
    for st in &setup {
        if let Err(e) = conn.query_drop(st).await {
            if retryable(&e) {
                return Err(Fail::Retry(e));
            }
            return Err(Fail::Fatal(MysqlError::Config(format!("{st}: {e}"))));
        }
    }
    if cfg.tidb {
        for st in [
            "SET SESSION allow_auto_random_explicit_insert = 1",
            "SET SESSION tidb_txn_mode = 'optimistic'",
            "SET SESSION tidb_placement_mode = 'ignore'",
        ] {
            match conn.query_drop(st).await {
                Ok(()) => {}
                Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
                Err(_) => {} // unknown to this server: ignored, as upstream
            }
        }
    }
    let facts: Option<(String, u64)> = match conn.query_first("SELECT @@SESSION.sql_mode, @@max_allowed_packet").await {
        Ok(r) => r,
        Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
        Err(e) => {
            return Err(Fail::Fatal(MysqlError::query("reading the session's sql_mode", e)));
        }
    };
    let (mut mode, max_packet) = facts.unwrap_or_default();
    if cfg.partial_columns {
        let kept: Vec<&str> =
            mode.split(',').filter(|m| !m.trim().eq_ignore_ascii_case("STRICT_TRANS_TABLES")).collect();
        let kept = kept.join(",");
        if kept != mode {
            let mut q = String::new();
            sql::push_quoted(&mut q, &kept, Dialect::default());
            match conn.query_drop(format!("SET SESSION sql_mode = {q}")).await {
                Ok(()) => mode = kept,
                Err(e) if retryable(&e) => return Err(Fail::Retry(e)),
                Err(e) => return Err(Fail::Fatal(MysqlError::query("removing STRICT_TRANS_TABLES (sync-mode = 2)", e))),
            }
        }
    }
    if let Some(ck) = &cfg.checkpoint {
        take_lock(&mut conn, &lock_name(ck, worker), false).await?;
    }
    let dialect = Dialect {
        backslash_escapes: !mode.to_ascii_uppercase().contains("NO_BACKSLASH_ESCAPES"),
        convert_timestamps: zone.as_deref().is_some_and(|z| !is_utc(z)),
    };
    Ok((conn, Session { dialect, max_packet: max_packet.max(1 << 20) as usize }))
}

/// Retries with backoff while the downstream is unavailable, up to `cfg.retry_for` since `since`.
pub(super) async fn backoff(
    cfg: &MysqlSinkConfig,
    since: &mut Option<(Instant, u32)>,
    e: &mysql_async::Error,
) -> Result<(), MysqlError> {
    let (start, n) = since.get_or_insert((Instant::now(), 0));
    let waited = start.elapsed();
    if waited >= cfg.retry_for {
        return Err(MysqlError::Unavailable { addr: addr(cfg), secs: waited.as_secs(), last: e.to_string() });
    }
    let pause = Duration::from_millis(100u64 << (*n).min(5)).min(Duration::from_secs(3));
    *n += 1;
    tracing::warn!(target: "drainer::sink::mysql", error = %e, retry_in = ?pause, "downstream failed, retrying");
    tokio::time::sleep(pause).await;
    Ok(())
}

pub(super) async fn open_retrying(cfg: &MysqlSinkConfig) -> Result<(Conn, Session), MysqlError> {
    let mut since = None;
    loop {
        match open(cfg, 0).await {
            Ok(c) => return Ok(c),
            Err(Fail::Fatal(e)) => return Err(e),
            Err(Fail::Retry(e)) => backoff(cfg, &mut since, &e).await?,
        }
    }
}
