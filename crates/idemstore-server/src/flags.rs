//! The flags every idemstore server binary takes: where the keys live (the
//! embedded store, Redis, a Redis Cluster or PostgreSQL) and how long they
//! are held, and the bounds of its clients. Flattened into a binary's own
//! `clap` parser; [`StoreArgs::open`] opens the backend they name.

use crate::serve::Limits;
use clap::Args;
use idemstore::{Config, Store};
use idemstore_postgres::{PostgresBackend, PostgresConfig};
use idemstore_redis::{RedisBackend, RedisConfig};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A duration flag: humantime's syntax (`500ms`, `30s`, `1h30m`), above zero.
///
/// # Errors
///
/// What is wrong with `s`, with an example of what to write.
pub fn duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (write e.g. 500ms, 30s or 1h)")),
    }
}

/// A duration where zero means "off".
///
/// # Errors
///
/// What is wrong with `s`, with an example of what to write.
pub fn duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 0s, 30s or 7d)"))
}

/// Where the idempotency keys live, and how long they are held.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Directory of the embedded idempotency store (created if missing;
    /// default ./<binary>-data).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// Keep the idempotency keys in Redis at this URL instead of --data, so
    /// that replicas share them.
    #[arg(long, value_name = "URL", conflicts_with_all = ["data", "bucket_width", "segment_bytes", "redis_cluster"])]
    pub redis: Option<String>,

    /// Keep the idempotency keys in the Redis Cluster these seed nodes
    /// belong to (comma-separated URLs; the other nodes are found from
    /// them), instead of --data.
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',',
          conflicts_with_all = ["data", "bucket_width", "segment_bytes"])]
    pub redis_cluster: Option<Vec<String>>,

    /// Keep the idempotency keys in the PostgreSQL database at this URL
    /// instead of --data, so that replicas share them.
    #[arg(long, value_name = "URL", conflicts_with_all = ["data", "bucket_width", "segment_bytes", "redis", "redis_cluster"])]
    pub postgres: Option<String>,

    /// With --redis or --redis-cluster: count a write only once N replicas
    /// of its master hold it (Redis WAIT), so a failover loses no
    /// acknowledged response; fewer in --redis-wait-timeout is a 503.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub redis_wait: u32,

    /// Longest wait for the --redis-wait replicas.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = duration)]
    pub redis_wait_timeout: Duration,

    /// How long a reservation holds its key: a retry of a request whose
    /// server died gets 409 until then, then runs. Longer handlers have it
    /// renewed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub lease: Duration,

    /// How long a completed response is replayed, counted from completion.
    /// Must exceed --lease and --bucket-width.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = duration)]
    pub retention: Duration,

    /// For this long after a key's record expires, a retry with the key is
    /// refused (422, code key-expired: use a new key) instead of running
    /// again. Off by default: the public payment APIs run a request again
    /// once its key expired. The embedded store's directory keeps the grace:
    /// a restart without the flag keeps refusing; `0s` turns it off.
    #[arg(long, value_name = "DURATION", value_parser = duration_or_zero)]
    pub refuse_expired_keys_for: Option<Duration>,

    /// Width of the store's expiry buckets: records expiring within one
    /// share segment files, deleted whole when it ends (at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = duration)]
    pub bucket_width: Duration,

    /// A segment file of the store is sealed (and gets its hint file) past
    /// this many bytes: 8 MiB (8388608) up to 1 GiB.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub segment_bytes: u64,
}

/// The backend [`StoreArgs`] named, open.
#[derive(Clone)]
pub enum Opened {
    /// The embedded store (`--data`).
    Embedded(Store),
    /// Redis or a Redis Cluster (`--redis`, `--redis-cluster`).
    Redis(RedisBackend),
    /// PostgreSQL (`--postgres`).
    Postgres(PostgresBackend),
}

impl Opened {
    /// The embedded store, if that is the backend.
    pub fn store(&self) -> Option<Store> {
        match self {
            Opened::Embedded(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Resolves once the backend holds every completion it accepted: Redis
    /// retries in the background those it could not confirm.
    pub async fn settled(&self) {
        if let Opened::Redis(r) = self {
            r.settled().await;
        }
    }

    /// Closes the embedded store (flushing it); nothing for the others.
    ///
    /// # Errors
    ///
    /// The store's, if its last writes fail.
    pub fn close(&self) -> Result<(), idemstore::Error> {
        match self {
            Opened::Embedded(s) => s.close(),
            _ => Ok(()),
        }
    }
}

impl StoreArgs {
    /// The embedded store's configuration these flags give.
    pub fn store_config(&self) -> Config {
        let mut c = Config::default()
            .lease(self.lease)
            .retention(self.retention)
            .bucket_width(self.bucket_width)
            .max_segment_bytes(self.segment_bytes);
        c.refuse_expired_keys_for = self.refuse_expired_keys_for;
        c
    }

    fn redis_config(&self) -> RedisConfig {
        let mut c = RedisConfig::default()
            .lease(self.lease)
            .retention(self.retention)
            .wait_replicas(self.redis_wait, self.redis_wait_timeout);
        c.refuse_expired_keys_for = self.refuse_expired_keys_for.filter(|g| !g.is_zero());
        c
    }

    /// The PostgreSQL configuration these flags give.
    pub fn postgres_config(&self) -> PostgresConfig {
        PostgresConfig::default()
            .lease(self.lease)
            .retention(self.retention)
    }

    /// Opens the backend the flags name (the embedded store in
    /// `default_dir` when none is named), saying on stderr, after `name: `,
    /// what it opened.
    ///
    /// # Errors
    ///
    /// Why it could not be opened (the backend's message says what to do).
    pub async fn open(
        &self,
        name: &str,
        default_dir: &Path,
    ) -> Result<Opened, Box<dyn std::error::Error>> {
        let waits = match self.redis_wait {
            0 => String::new(),
            n => format!(", each write held by {n} replica(s)"),
        };
        if let Some(url) = &self.redis {
            let backend = RedisBackend::connect(url, self.redis_config()).await?;
            eprintln!("{name}: idempotency keys in Redis at {url}{waits}");
            return Ok(Opened::Redis(backend));
        }
        if let Some(seeds) = &self.redis_cluster {
            let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
            let backend = RedisBackend::connect_cluster(&seeds, self.redis_config()).await?;
            eprintln!(
                "{name}: idempotency keys in the Redis Cluster of {}{waits}",
                seeds.join(",")
            );
            return Ok(Opened::Redis(backend));
        }
        if self.redis_wait > 0 {
            return Err("--redis-wait needs --redis or --redis-cluster".into());
        }
        if let Some(url) = &self.postgres {
            let backend = PostgresBackend::connect(url, self.postgres_config()).await?;
            eprintln!("{name}: idempotency keys in PostgreSQL");
            return Ok(Opened::Postgres(backend));
        }
        let dir = self.data.as_deref().unwrap_or(default_dir);
        let store = Store::open(dir, self.store_config())?;
        let report = store.recovery_report();
        eprintln!(
            "{name}: store {}: {} completed and {} in-flight keys recovered",
            dir.display(),
            report.completed_live,
            report.pending_live
        );
        Ok(Opened::Embedded(store))
    }
}

/// The bounds of a server's clients, as flags.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Longest a client may take to send a request's headers; a slower
    /// connection is closed, as is a keep-alive connection idle this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,

    /// Longest a client may take to send a request's body, counted from the
    /// end of its headers; a slower one gets 400 and its key stays free.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub body_timeout: Duration,

    /// Most connections open at once; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value = "1024")]
    pub max_connections: NonZeroUsize,

    /// Most requests handled at once; more get 503 with Retry-After.
    #[arg(long, value_name = "N", default_value = "256")]
    pub max_concurrency: NonZeroUsize,

    /// On SIGTERM or Ctrl-C, how long requests in flight may take to
    /// finish before their connections are dropped (their work still runs
    /// to its end, within the same timeout, before the store closes).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub shutdown_timeout: Duration,
}

impl LimitArgs {
    /// The limits these flags give.
    pub fn limits(&self) -> Limits {
        Limits {
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            max_connections: self.max_connections,
            max_concurrency: self.max_concurrency,
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}
