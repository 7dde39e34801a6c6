//! `idemproxy`: a sidecar reverse proxy that puts the Idempotency-Key layer
//! in front of any HTTP service, in any language. A retry of a request whose
//! response was stored gets that response back without reaching the
//! service; simultaneous duplicates run once; a request whose key is in
//! flight gets 409. The service sees every first request as it was sent.
//!
//! ```sh
//! idemproxy --listen 0.0.0.0:8080 --upstream http://127.0.0.1:3000 \
//!     --data /var/lib/idemproxy --tenant-header x-api-key --admin 0.0.0.0:9090
//! # several proxies (replicas) sharing keys: --redis, --redis-cluster or --postgres
//! # per-route policies: --config idemproxy.toml (see policy.rs)
//! ```
//!
//! Prints `listening on http://ADDR` on stdout when ready; SIGTERM or Ctrl-C
//! stop it as the `payments` example stops (stop accepting, drain within
//! `--shutdown-timeout`, wait for the requests whose clients left, close the
//! store).
//!
//! # Layout
//!
//! - `main.rs`: the flags, and the stack: one idempotency layer per route,
//!   each covering only its route's paths, in front of the forwarder;
//! - `policy.rs`: the policy file;
//! - `path.rs`: the one spelling of a path that routes and upstream see;
//! - `forward.rs`: forwarding to the upstream, and what its failures tell
//!   the layer;
//! - `admin.rs`: `/metrics`, `/healthz` and `/readyz` on the admin port.
//!
//! Imports flow one way: `main` uses the others, which use none of each
//! other.

mod admin;
mod forward;
mod path;
mod policy;

use axum::Router;
use clap::Parser;
use forward::{Forward, Upstream};
use http::Request;
use idemstore_http::{Backend, BoxBody, IdempotencyLayer, InFlightWork, RoutePattern};
use idemstore_server::flags::{LimitArgs, Opened, StoreArgs, duration};
use policy::Route;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

/// A reverse proxy that gives any HTTP service the server side of the
/// Idempotency-Key header. Durations are written like 500ms, 30s or 1h.
#[derive(Parser, Debug)]
#[command(name = "idemproxy")]
struct Args {
    /// Address to listen on for the proxied traffic (port 0 picks a free
    /// port; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// The service to forward to: http://HOST:PORT (plain HTTP, no path).
    #[arg(long, value_name = "URL")]
    upstream: String,

    /// The policy file (TOML): which paths the layer covers, with which
    /// options, per route. Without it, every path is covered with the
    /// layer's defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// The header naming the caller (the tenant) whose keys a request's
    /// are, e.g. x-api-key, when the policy file names none.
    #[arg(long, value_name = "NAME", conflicts_with = "single_tenant")]
    tenant_header: Option<String>,

    /// Every request is one caller's (one key space), when the policy file
    /// names no tenant: only for a service with a single client.
    #[arg(long)]
    single_tenant: bool,

    /// Address of the admin port: /metrics, /healthz, /readyz (default:
    /// none).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,

    /// Longest wait for the upstream's response head (and for the body of a
    /// response small enough to be stored before it is sent). Past it
    /// without a head, the client gets 504, stored under its key (the
    /// request may have run: it never runs twice).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    upstream_timeout: Duration,

    /// Longest wait for a connection to the upstream; past it the client
    /// gets 502 and the key is freed (nothing was sent).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration)]
    upstream_connect_timeout: Duration,

    /// Most idle connections kept open to the upstream.
    #[arg(long, value_name = "N", default_value_t = 64)]
    upstream_idle_connections: usize,

    /// An idle connection to the upstream is closed after this long. Keep it
    /// below the upstream's own keep-alive timeout (gunicorn's is 2 s,
    /// Node's 5 s): a request sent just as the upstream closes an idle
    /// connection fails after it was sent, and is answered 502 and stored,
    /// as if it may have run.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration)]
    upstream_idle_timeout: Duration,

    #[command(flatten)]
    store: StoreArgs,

    #[command(flatten)]
    limits: LimitArgs,
}

/// What the layers are built on.
type Inner = BoxCloneSyncService<Request<BoxBody>, http::Response<BoxBody>, Infallible>;

/// The proxy's service: one layer per route (outermost first), each covering
/// only the paths its route is the first to match, around the forwarder.
fn stack<B: Backend + Clone>(
    backend: &B,
    routes: Vec<Route>,
    forward: Forward,
) -> Result<(Router, Vec<InFlightWork>), String> {
    let patterns: Vec<RoutePattern> = routes.iter().map(|r| r.pattern.clone()).collect();
    let mut service: Inner = BoxCloneSyncService::new(forward);
    let mut work = Vec::new();
    for (i, route) in routes.into_iter().enumerate().rev() {
        let Some(config) = route.config else { continue };
        let earlier = patterns[..i].to_vec();
        let own = route.pattern;
        let config = config.paths(move |p| own.matches(p) && !earlier.iter().any(|e| e.matches(p)));
        let layer = IdempotencyLayer::try_new(backend.clone(), config)
            .map_err(|e| format!("route {}: {e}", route.path))?;
        work.push(layer.in_flight_work());
        service = BoxCloneSyncService::new(layer.layer(service));
    }
    let outer = service.map_request(|r: Request<axum::body::Body>| {
        let (mut parts, body) = r.into_parts();
        canonical_path(&mut parts.uri);
        Request::from_parts(parts, BoxBody::new(body))
    });
    Ok((Router::new().fallback_service(outer), work))
}

/// Rewrites `uri`'s path to its canonical form ([`path::canonical`]), which
/// the routes match and the upstream gets.
fn canonical_path(uri: &mut http::Uri) {
    let path = path::canonical(uri.path());
    if path == uri.path() {
        return;
    }
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    if let Ok(u) = http::Uri::from_parts(parts) {
        *uri = u;
    }
}

/// The routes of `--config` (or of the flags alone).
fn routes(args: &Args) -> Result<Vec<Route>, String> {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?,
        None => String::new(),
    };
    let tenant = match (&args.tenant_header, args.single_tenant) {
        (Some(h), _) => Some(policy::TenantFlag::Header(h.clone())),
        (None, true) => Some(policy::TenantFlag::Single),
        (None, false) => None,
    };
    policy::parse(&text, tenant).map_err(|e| match &args.config {
        Some(path) => format!("{}: {e}", path.display()),
        None => format!("{e} (or pass --tenant-header NAME or --single-tenant)"),
    })
}

/// Runs the proxy until a signal; every error is a reason it could not
/// start or stop cleanly.
async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let upstream = Upstream::parse(&args.upstream)?;
    if args.upstream_timeout <= args.upstream_connect_timeout {
        // Else a request that never left (still connecting) would time out
        // as one that may have run, and its 504 be stored.
        return Err(format!(
            "--upstream-timeout ({}) must be longer than --upstream-connect-timeout ({})",
            humantime::format_duration(args.upstream_timeout),
            humantime::format_duration(args.upstream_connect_timeout)
        )
        .into());
    }
    let routes = routes(&args)?;
    let backend = args
        .store
        .open("idemproxy", Path::new("./idemproxy-data"))
        .await?;
    let forward = Forward::new(
        upstream.clone(),
        args.upstream_timeout,
        args.upstream_connect_timeout,
        args.upstream_idle_connections,
        args.upstream_idle_timeout,
        routes
            .iter()
            .filter_map(|r| r.config.as_ref().map(|c| c.max_response_bytes))
            .max()
            .unwrap_or(0),
    );
    let (app, work) = match &backend {
        Opened::Embedded(store) => stack(store, routes, forward),
        Opened::Redis(redis) => stack(redis, routes, forward),
        Opened::Postgres(pg) => stack(pg, routes, forward),
    }?;
    if let Some(addr) = args.admin {
        let admin = admin::router(backend.store(), upstream.authority().to_owned())?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("idemproxy: admin on http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, admin).await {
                eprintln!("idemproxy: the admin port stopped: {e}");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("idemproxy: forwarding to http://{}", upstream.authority());
    idemstore_server::lifecycle::run(
        "idemproxy",
        listener,
        app,
        &args.limits.limits(),
        work,
        &backend,
    )
    .await
}

#[tokio::main]
async fn main() -> ExitCode {
    // Bad flags: clap prints why and exits 2; --help prints usage and exits 0.
    let args = Args::parse();
    idemstore_server::lifecycle::exit_code("idemproxy", run(args).await)
}
