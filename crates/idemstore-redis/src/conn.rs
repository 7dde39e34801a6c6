//! Connections: one Redis node (redis-rs's `ConnectionManager`) or a Redis
//! Cluster (redis-rs's cluster connection, which follows MOVED and ASK and
//! re-reads the slot map), a few of them shared round-robin, and the checks
//! made on the servers before the first call.

use crate::config::RedisConfig;
use idemstore_http::BackendError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One multiplexed connection, to a node or to a whole cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    /// A single Redis node.
    Node(ConnectionManager),
    /// A Redis Cluster; each call goes to the master of its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The shared connections, handed out in turn.
pub(crate) struct Pool {
    conns: Vec<Conn>,
    next: AtomicUsize,
}

impl Pool {
    /// The next connection.
    pub(crate) fn get(&self) -> Conn {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// Whether these are cluster connections.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.conns.first(), Some(Conn::Cluster(_)))
    }
}

/// Unavailable, with the cause and what to do.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!(
        "redis: {e}; check that Redis is running and reachable (it reconnects by itself)"
    ))
}

async fn bounded<T>(
    timeout: Duration,
    what: &str,
    f: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| unavailable(format!("timed out {what}")))?
        .map_err(unavailable)
}

/// Connects `config.connections` times to the node at `url`.
pub(crate) async fn node(url: &str, config: &RedisConfig) -> Result<Pool, BackendError> {
    let client = redis::Client::open(url).map_err(unavailable)?;
    let cm = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.call_timeout(true)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let mut conns = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        let c = bounded(
            config.timeout,
            "connecting",
            ConnectionManager::new_with_config(client.clone(), cm.clone()),
        )
        .await?;
        conns.push(Conn::Node(c));
    }
    let pool = Pool {
        conns,
        next: AtomicUsize::new(0),
    };
    check_servers(&pool, config).await?;
    Ok(pool)
}

/// Connects `config.connections` times to the cluster that `seeds` (one or
/// more of its nodes) belong to.
pub(crate) async fn cluster(seeds: &[&str], config: &RedisConfig) -> Result<Pool, BackendError> {
    if seeds.is_empty() {
        return Err(unavailable("no cluster node given; name at least one"));
    }
    let client = redis::cluster::ClusterClient::builder(seeds.iter().copied())
        .connection_timeout(config.timeout)
        .response_timeout(config.call_timeout(true))
        .retries(3)
        .min_retry_wait(20)
        .max_retry_wait(500)
        .build()
        .map_err(unavailable)?;
    let mut conns = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        let c = bounded(
            config.timeout,
            "connecting to the cluster",
            client.get_async_connection(),
        )
        .await?;
        conns.push(Conn::Cluster(c));
    }
    let pool = Pool {
        conns,
        next: AtomicUsize::new(0),
    };
    check_servers(&pool, config).await?;
    Ok(pool)
}

/// `INFO section` of every node: one text from a node, one per node (its
/// replicas included) from a cluster.
async fn info(
    pool: &Pool,
    section: &str,
    config: &RedisConfig,
) -> Result<Vec<String>, BackendError> {
    let mut conn = pool.get();
    let v: Value = bounded(
        config.timeout,
        "asking the server about itself",
        redis::cmd("INFO").arg(section).query_async(&mut conn),
    )
    .await?;
    if let Ok(one) = redis::from_redis_value::<String>(v.clone()) {
        return Ok(vec![one]);
    }
    redis::from_redis_value::<std::collections::HashMap<String, String>>(v)
        .map(|m| m.into_values().collect())
        .map_err(|e| unavailable(format!("unexpected INFO reply: {e}")))
}

/// One field of an `INFO` text.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// Refuses servers the backend cannot keep its promise on: older than
/// Redis 5, or, when replicas must acknowledge writes, a master with fewer
/// replicas attached than that (every write would fail).
async fn check_servers(pool: &Pool, config: &RedisConfig) -> Result<(), BackendError> {
    for text in info(pool, "server", config).await? {
        check_version(&text)?;
    }
    let Some(w) = config.wait else {
        return Ok(());
    };
    for text in info(pool, "replication", config).await? {
        if field(&text, "role") != Some("master") {
            continue;
        }
        let have: u32 = field(&text, "connected_slaves")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if have < w.replicas {
            return Err(BackendError::Unavailable(format!(
                "redis: writes must reach {} replica(s), but a master has {have} attached; \
                 attach replicas (replicaof / cluster replicas) or lower the replica count",
                w.replicas
            )));
        }
    }
    Ok(())
}

/// The oldest Redis whose scripts may read the server clock (`TIME`) and then
/// write: from 5.0 scripts replicate their effects, not themselves.
const MIN_REDIS_MAJOR: u32 = 5;

/// Refuses a server older than [`MIN_REDIS_MAJOR`], from its `INFO server`.
fn check_version(info: &str) -> Result<(), BackendError> {
    let version = field(info, "redis_version").unwrap_or("");
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= MIN_REDIS_MAJOR => Ok(()),
        _ => Err(BackendError::Unavailable(format!(
            "Redis {} is too old or did not say its version: idemstore-redis needs Redis \
             {MIN_REDIS_MAJOR} or newer (its scripts read the server's clock, then write); \
             upgrade the server",
            if version.is_empty() {
                "(unknown)"
            } else {
                version
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_redis_5_are_refused_saying_what_to_do() {
        assert!(
            check_version("# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n").is_ok()
        );
        assert!(check_version("redis_version:5.0.0\n").is_ok());
        let old = check_version("redis_version:4.0.14\n")
            .unwrap_err()
            .to_string();
        assert!(
            old.contains("4.0.14") && old.contains("Redis 5 or newer"),
            "{old}"
        );
        assert!(check_version("no version here").is_err());
    }

    #[test]
    fn info_fields_are_read_by_whole_name() {
        let t = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=x\r\n";
        assert_eq!(field(t, "connected_slaves"), Some("2"));
        assert_eq!(field(t, "role"), Some("master"));
        assert_eq!(field(t, "slave"), None);
    }
}
