//! `payments`: a small payments API behind the idempotency layer, on the
//! embedded store with `Sync` durability (a 201 leaves the server only after
//! its record is on disk), served with the timeouts and limits a service on
//! the internet needs. Copy it as a template.
//!
//! ```sh
//! cargo run --release -p payments -- --listen 127.0.0.1:3000 --data ./payments-data
//! # or, with several replicas sharing one Redis:
//! cargo run --release -p payments -- --listen 127.0.0.1:3001 --redis redis://127.0.0.1:6379
//! # or on a Redis Cluster, each write held by one replica:
//! cargo run --release -p payments -- --listen 127.0.0.1:3001 \
//!     --redis-cluster redis://10.0.0.5:7000,redis://10.0.0.6:7000 --redis-wait 1
//! # every flag, with its default:
//! cargo run -p payments -- --help
//! ```
//!
//! - every request needs `X-Api-Key` (the tenant); 401 problem+json without;
//! - `POST /v1/payments` `{"amount": 100, "currency": "EUR", "delay_ms": 0}`
//!   → 201 `{"id", "amount", "currency", "created_at"}`; bad JSON → 400. The
//!   currency may be sent in either case (`"eur"`, as Stripe's clients send
//!   it, or `"EUR"`) and is stored and answered in upper case;
//! - `GET /v1/payments` → this tenant's payments (kept in memory: a restart
//!   forgets them, while the idempotency store remembers every response);
//! - `GET /metrics` → the idempotency metrics in Prometheus text (no key
//!   needed): requests by outcome, handler and commit times, batch sizes,
//!   live and pending keys, disk bytes, write failures.
//!
//! Prints `listening on http://ADDR` on stdout when ready. SIGTERM or
//! Ctrl-C stop it: it stops accepting, lets the requests in flight finish
//! for up to `--shutdown-timeout`, drops the connections still open then,
//! waits (within the same timeout) for handlers whose clients left, closes
//! (flushes) the store once no handler runs, and prints
//! `payments: stopped …` on stderr.
//!
//! # Layout
//!
//! - `main.rs`: the flags, the store or Redis backend, start and stop;
//! - `app.rs`: the library: the routes, handlers and the idempotency
//!   layer's configuration (also served by the W6 bench);
//! - `serve.rs`: the accept loop with its timeouts, limits and graceful
//!   shutdown;
//! - `metrics.rs`: `GET /metrics`, Prometheus text of the layer's and the
//!   store's metrics.

mod metrics;
mod serve;

use clap::Parser;
use idemstore::{Config, Store};
use idemstore_postgres::{PostgresBackend, PostgresConfig};
use idemstore_redis::{RedisBackend, RedisConfig};
use payments::{app_pg, app_with_work};
use serve::{Limits, Stopped, serve};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// A payments API behind the Idempotency-Key layer (the idemstore
/// example). Durations are written like 500ms, 30s, 1h or 1h30m.
#[derive(Parser, Debug)]
#[command(name = "payments")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the address is
    /// printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,

    /// Directory of the embedded idempotency store (created if missing).
    #[arg(long, value_name = "DIR", default_value = "./payments-data")]
    data: PathBuf,

    /// Keep the idempotency keys in Redis at this URL instead of --data, so
    /// that replicas share them.
    #[arg(long, value_name = "URL", conflicts_with_all = ["bucket_width", "segment_bytes", "redis_cluster"])]
    redis: Option<String>,

    /// Keep the idempotency keys in the Redis Cluster these seed nodes
    /// belong to (comma-separated URLs; the other nodes are found from
    /// them), instead of --data.
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',',
          conflicts_with_all = ["bucket_width", "segment_bytes"])]
    redis_cluster: Option<Vec<String>>,

    /// Keep the idempotency keys, and the payments, in the PostgreSQL
    /// database at this URL instead of --data: a payment row and its stored
    /// response commit in one transaction, so replicas share both.
    #[arg(long, value_name = "URL", conflicts_with_all = ["bucket_width", "segment_bytes", "redis", "redis_cluster"])]
    postgres: Option<String>,

    /// With --redis or --redis-cluster: count a write only once N replicas
    /// of its master hold it (Redis WAIT), so a failover loses no
    /// acknowledged response; fewer in --redis-wait-timeout is a 503.
    #[arg(long, value_name = "N", default_value_t = 0)]
    redis_wait: u32,

    /// Longest wait for the --redis-wait replicas.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = duration)]
    redis_wait_timeout: Duration,

    /// How long a reservation holds its key: a retry of a request whose
    /// server died gets 409 until then, then runs. Longer handlers have it
    /// renewed (except, on --postgres, while a payment's transaction runs).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    lease: Duration,

    /// How long a completed response is replayed, counted from completion.
    /// Must exceed --lease and --bucket-width.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = duration)]
    retention: Duration,

    /// For this long after a key's record expires, a retry with the key is
    /// refused (422, code key-expired: use a new key) instead of running
    /// again. Off by default: the public payment APIs run a request again
    /// once its key expired. The embedded store's directory keeps the grace:
    /// a restart without the flag keeps refusing; `0s` turns it off.
    #[arg(long, value_name = "DURATION", value_parser = duration_or_zero)]
    refuse_expired_keys_for: Option<Duration>,

    /// Width of the store's expiry buckets: records expiring within one
    /// share segment files, deleted whole when it ends (at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = duration)]
    bucket_width: Duration,

    /// A segment file of the store is sealed (and gets its hint file) past
    /// this many bytes: 8 MiB (8388608) up to 1 GiB.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    segment_bytes: u64,

    /// Longest a client may take to send a request's headers; a slower
    /// connection is closed, as is a keep-alive connection idle this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    header_timeout: Duration,

    /// Longest a client may take to send a request's body, counted from the
    /// end of its headers; a slower one gets 400 and its key stays free.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    body_timeout: Duration,

    /// Most connections open at once; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value = "1024")]
    max_connections: NonZeroUsize,

    /// Most requests handled at once; more get 503 with Retry-After.
    #[arg(long, value_name = "N", default_value = "256")]
    max_concurrency: NonZeroUsize,

    /// On SIGTERM or Ctrl-C, how long requests in flight may take to
    /// finish before their connections are dropped (a dropped handler's key
    /// is freed: a retry runs it again).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    shutdown_timeout: Duration,
}

/// A duration flag: humantime's syntax (`500ms`, `30s`, `1h30m`), above zero.
fn duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (write e.g. 500ms, 30s or 1h)")),
    }
}

/// A duration where zero means "off".
fn duration_or_zero(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 0s, 30s or 7d)"))
}

impl Args {
    fn limits(&self) -> Limits {
        Limits {
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            max_connections: self.max_connections,
            max_concurrency: self.max_concurrency,
            shutdown_timeout: self.shutdown_timeout,
        }
    }

    fn store_config(&self) -> Config {
        let mut c = Config::default()
            .lease(self.lease)
            .retention(self.retention)
            .bucket_width(self.bucket_width)
            .max_segment_bytes(self.segment_bytes);
        c.refuse_expired_keys_for = self.refuse_expired_keys_for;
        c
    }
}

/// Completes on the first SIGTERM or Ctrl-C.
/// A future that resolves on SIGTERM or Ctrl-C. The handlers are installed
/// when this is called, not when the future is first polled: a signal sent
/// right after "listening" is printed must shut the server down cleanly.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        match term {
            Some(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            None => {
                let _ = ctrl_c.await;
            }
        }
    }
}

/// Runs the service until a signal; every error is a reason it could not
/// start or stop cleanly.
async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut redis = None;
    let redis_config = || {
        let mut c = RedisConfig::default()
            .lease(args.lease)
            .retention(args.retention)
            .wait_replicas(args.redis_wait, args.redis_wait_timeout);
        c.refuse_expired_keys_for = args.refuse_expired_keys_for.filter(|g| !g.is_zero());
        c
    };
    let waits = match args.redis_wait {
        0 => String::new(),
        n => format!(", each write held by {n} replica(s)"),
    };
    let ((app, work), store) = match (&args.redis, &args.redis_cluster) {
        (Some(url), _) => {
            let backend = RedisBackend::connect(url, redis_config()).await?;
            eprintln!("idempotency keys in Redis at {url}{waits}");
            redis = Some(backend.clone());
            (app_with_work(backend), None)
        }
        (None, Some(seeds)) => {
            let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
            let backend = RedisBackend::connect_cluster(&seeds, redis_config()).await?;
            eprintln!(
                "idempotency keys in the Redis Cluster of {}{waits}",
                seeds.join(",")
            );
            redis = Some(backend.clone());
            (app_with_work(backend), None)
        }
        (None, None) if args.postgres.is_some() => {
            let url = args.postgres.as_deref().unwrap_or_default();
            let config = PostgresConfig::default()
                .lease(args.lease)
                .retention(args.retention);
            let backend = PostgresBackend::connect(url, config).await?;
            eprintln!("idempotency keys and payments in PostgreSQL");
            (app_pg(backend).await?, None)
        }
        (None, None) => {
            if args.redis_wait > 0 {
                return Err("--redis-wait needs --redis or --redis-cluster".into());
            }
            let store = Store::open(&args.data, args.store_config())?;
            let report = store.recovery_report();
            eprintln!(
                "store {}: {} completed and {} in-flight keys recovered",
                args.data.display(),
                report.completed_live,
                report.pending_live
            );
            (app_with_work(store.clone()), Some(store))
        }
    };
    let app = app.merge(metrics::router(store.clone())?);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let stop = shutdown_signal();
    println!("listening on http://{}", listener.local_addr()?);
    let limits = args.limits();
    let signalled = Arc::new(std::sync::OnceLock::new());
    let signal = {
        let signalled = signalled.clone();
        async move {
            stop.await;
            let _ = signalled.set(tokio::time::Instant::now());
        }
    };
    let stopped = serve(listener, app, &limits, signal).await;
    // Every connection is closed; the work of reserved keys runs in tasks of
    // its own (a handler whose client left still finishes and is stored).
    // Wait for it within the same shutdown timeout, then close the store.
    let deadline = signalled
        .get()
        .map_or_else(tokio::time::Instant::now, |t| *t)
        + limits.shutdown_timeout;
    // With Redis, completions it did not take are retried in the background:
    // wait for those too.
    let settled = async {
        work.idle().await;
        if let Some(r) = &redis {
            r.settled().await;
        }
    };
    if tokio::time::timeout_at(deadline, settled).await.is_err() {
        eprintln!(
            "payments: {} request(s) still running at the shutdown timeout; their keys stay \
             reserved until their leases end",
            work.count()
        );
    }
    if let Some(store) = store {
        store.close()?;
    }
    match stopped {
        Stopped::Drained => eprintln!("payments: stopped cleanly"),
        Stopped::Cut(n) => eprintln!(
            "payments: stopped; {n} connection(s) still open after the {} shutdown timeout were dropped",
            humantime::format_duration(limits.shutdown_timeout)
        ),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    // Bad flags: clap prints why and exits 2; --help prints usage and exits 0.
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payments: {e}");
            ExitCode::FAILURE
        }
    }
}
