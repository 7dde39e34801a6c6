//! `payments`: a small payments API behind the idempotency layer, on the
//! embedded store with `Sync` durability (a 201 leaves the server only after
//! its record is on disk).
//!
//! ```sh
//! cargo run --release -p idemstore-http --example payments -- --listen 127.0.0.1:3000 --data ./payments-data
//! # or, with several replicas sharing one Redis:
//! cargo run --release -p idemstore-http --example payments -- --listen 127.0.0.1:3001 --redis redis://127.0.0.1:6379
//! ```
//!
//! - every request needs `X-Api-Key` (the tenant); 401 problem+json without;
//! - `POST /v1/payments` `{"amount": 100, "currency": "EUR", "delay_ms": 0}`
//!   → 201 `{"id", "amount", "currency", "created_at"}`; bad JSON → 400;
//! - `GET /v1/payments` → this tenant's payments (kept in memory: a restart
//!   forgets them, while the idempotency store remembers every response).
//!
//! Prints `listening on http://ADDR` when ready; SIGTERM or Ctrl-C shut it
//! down cleanly (in-flight requests finish, the store is flushed and closed).

mod app;

use app::app;
use idemstore::{Config, Store};
use idemstore_http::Embedded;
use idemstore_redis::{RedisBackend, RedisConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

struct Args {
    listen: SocketAddr,
    data: PathBuf,
    redis: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
        data: PathBuf::from("./payments-data"),
        redis: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                args.listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?
            }
            "--data" => args.data = PathBuf::from(value),
            "--redis" => args.redis = Some(value),
            other => {
                return Err(format!(
                    "unknown flag {other}; use --listen ADDR and --data DIR or --redis URL"
                ));
            }
        }
    }
    Ok(args)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| format!("payments: {e}"))?;
    let (app, store) = match &args.redis {
        Some(url) => {
            let backend = RedisBackend::connect(url, RedisConfig::default()).await?;
            eprintln!("idempotency keys in Redis at {url}");
            (app(backend), None)
        }
        None => {
            let store = Store::open(&args.data, Config::default())?;
            let report = store.recovery_report();
            eprintln!(
                "store {}: {} completed and {} in-flight keys recovered",
                args.data.display(),
                report.completed_live,
                report.pending_live
            );
            (app(Embedded(store.clone())), Some(store))
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    if let Some(store) = store {
        store.close()?;
    }
    eprintln!("payments: stopped cleanly");
    Ok(())
}
