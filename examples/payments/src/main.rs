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
//! - `main.rs`: the flags, and which app serves which backend;
//! - `app.rs`: the library: the routes, handlers and the idempotency
//!   layer's configuration (also served by the W6 bench);
//! - `pg.rs`: the PostgreSQL variant, a payment and its stored response in
//!   one transaction.
//!
//! The accept loop with its timeouts, limits and graceful shutdown, the
//! backend flags and `GET /metrics` are `idemstore-server`'s, which
//! `idemproxy` shares.

use clap::Parser;
use idemstore_server::flags::{LimitArgs, Opened, StoreArgs};
use payments::{app_pg, app_with_work};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

/// A payments API behind the Idempotency-Key layer (the idemstore
/// example). Durations are written like 500ms, 30s, 1h or 1h30m.
#[derive(Parser, Debug)]
#[command(name = "payments")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the address is
    /// printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,

    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    limits: LimitArgs,
}

/// Runs the service until a signal; every error is a reason it could not
/// start or stop cleanly.
async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let backend = args
        .store
        .open("payments", Path::new("./payments-data"))
        .await?;
    let (app, work) = match &backend {
        Opened::Embedded(store) => app_with_work(store.clone()),
        Opened::Redis(redis) => app_with_work(redis.clone()),
        // The payments go in the same database, each in the transaction
        // that stores its response.
        Opened::Postgres(pg) => app_pg(pg.clone()).await?,
    };
    let app = app.merge(idemstore_server::metrics::router(backend.store())?);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    idemstore_server::lifecycle::run(
        "payments",
        listener,
        app,
        &args.limits.limits(),
        vec![work],
        &backend,
    )
    .await
}

#[tokio::main]
async fn main() -> ExitCode {
    // Bad flags: clap prints why and exits 2; --help prints usage and exits 0.
    let args = Args::parse();
    idemstore_server::lifecycle::exit_code("payments", run(args).await)
}
