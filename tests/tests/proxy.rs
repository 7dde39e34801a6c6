//! `idemproxy` in front of a service in another language (`upstream/orders.py`,
//! Python, which counts its side effects), over real TCP, on every backend:
//! duplicates run once, retries get the first response, a client that
//! vanishes does not cancel or repeat the request, and each way the upstream
//! can fail (down, connection broken after sending, too slow, a body larger
//! than what is stored) ends in an answer that never runs a request twice.
//! Then, on the embedded store: per-route policies, the admin port, SIGTERM
//! with a request in flight, and the headers the upstream sees.
//!
//! The Redis, Redis Cluster and PostgreSQL cases need `IDEMSTORE_REDIS_URL`,
//! `IDEMSTORE_REDIS_CLUSTER_URLS` and `IDEMSTORE_POSTGRES_URL`
//! (`scripts/test.sh` starts the servers and sets them).

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use idemstore_tests::{Orders, Proxy, Reply, send};
use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A backend's flags for the proxy; the guard keeps a data directory.
type Flags = (Vec<OsString>, Option<tempfile::TempDir>);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run ./scripts/test.sh, which starts the servers and sets it")
    })
}

fn embedded() -> Flags {
    let dir = tempfile::tempdir().unwrap();
    (
        vec!["--data".into(), dir.path().as_os_str().to_owned()],
        Some(dir),
    )
}

fn redis() -> Flags {
    (
        vec!["--redis".into(), env("IDEMSTORE_REDIS_URL").into()],
        None,
    )
}

fn redis_cluster() -> Flags {
    (
        vec![
            "--redis-cluster".into(),
            env("IDEMSTORE_REDIS_CLUSTER_URLS").into(),
        ],
        None,
    )
}

fn postgres() -> Flags {
    (
        vec!["--postgres".into(), env("IDEMSTORE_POSTGRES_URL").into()],
        None,
    )
}

/// A proxy on `backend` in front of `upstream`, tenants by `x-api-key`,
/// with `more` flags.
fn proxy(backend: &Flags, upstream: &Orders, more: &[&str]) -> Proxy {
    let mut flags: Vec<&std::ffi::OsStr> = backend.0.iter().map(OsString::as_os_str).collect();
    flags.push("--tenant-header".as_ref());
    flags.push("x-api-key".as_ref());
    flags.extend(more.iter().map(std::ffi::OsStr::new));
    Proxy::start(&upstream.url(), &flags)
}

/// [`proxy`] with a policy file of `text` (tenants by `x-api-key`).
fn proxy_with(backend: &Flags, upstream: &Orders, text: &str, more: &[&str]) -> Proxy {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let path = file.into_temp_path().keep().unwrap();
    let mut flags = vec!["--config", path.to_str().unwrap()];
    flags.extend(more);
    proxy(backend, upstream, &flags)
}

/// A policy under which a 5xx frees its key: only the proxy's word that a
/// request may have run keeps a failed upstream's answer stored.
const FIVE_XX_FREED: &str = "[defaults]\nstore = \"non-server-errors\"\n";

/// A tenant no other test (or earlier run on a shared Redis) uses.
fn tenant(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

async fn post(addr: SocketAddr, tenant: &str, key: Option<&str>, path: &str, body: &str) -> Reply {
    let mut b = Request::builder()
        .method("POST")
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("x-api-key", tenant);
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    send(
        addr,
        b.body(Full::new(Bytes::from(body.to_owned()))).unwrap(),
    )
    .await
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let req = Request::builder()
        .uri(path)
        .header("host", addr.to_string())
        .header("x-api-key", "reader")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(addr, req).await
}

/// The upstream's side effects so far (asked directly, not through the
/// proxy).
async fn effects(upstream: &Orders) -> u64 {
    get(upstream.addr, "/effects").await.json()["effects"]
        .as_u64()
        .unwrap()
}

/// Retries `key` until it is no longer in flight (409 request-in-flight);
/// the first other answer.
async fn settled(addr: SocketAddr, tenant: &str, key: &str, path: &str, body: &str) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = post(addr, tenant, Some(key), path, body).await;
        if !r.problem().ends_with("request-in-flight") {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{key} still in flight after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn duplicates_run_once_and_retries_get_the_first_response(backend: Flags) {
    let upstream = Orders::start();
    let p = proxy(&backend, &upstream, &[]);
    let t = tenant("dups");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let t = t.clone();
            let addr = p.addr;
            tokio::spawn(async move {
                post(addr, &t, Some("k"), "/orders?sleep=300", r#"{"n":1}"#).await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let r = task.await.unwrap();
        match r.status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => assert!(r.problem().ends_with("request-in-flight")),
            s => panic!("unexpected {s}: {:?}", r.body),
        }
    }
    assert!(created >= 1);
    let first = settled(p.addr, &t, "k", "/orders?sleep=300", r#"{"n":1}"#).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.replayed());
    assert_eq!(
        first.headers["x-upstream"], "orders.py",
        "stored headers replay"
    );
    assert_eq!(first.json()["order"], 1);
    assert_eq!(
        effects(&upstream).await,
        1,
        "ten duplicates, one side effect"
    );
    let other = post(p.addr, &t, Some("k"), "/orders?sleep=300", r#"{"n":2}"#).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mine = post(p.addr, &tenant("other"), Some("k"), "/orders", r#"{"n":1}"#).await;
    assert_eq!(mine.status, StatusCode::CREATED);
    assert!(!mine.replayed(), "another tenant's key is its own");
    assert_eq!(effects(&upstream).await, 2);
    assert!(p.stop().success());
}

async fn a_client_that_vanishes_mid_request_leaves_it_to_run_once(backend: Flags) {
    let upstream = Orders::start();
    let p = proxy(&backend, &upstream, &[]);
    let t = tenant("vanish");
    let body = r#"{"n":1}"#;
    {
        let mut s = std::net::TcpStream::connect(p.addr).unwrap();
        write!(
            s,
            "POST /orders?sleep=600 HTTP/1.1\r\nhost: x\r\nx-api-key: {t}\r\n\
             idempotency-key: gone\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(150));
        // Dropped: the client gives up mid-handler.
    }
    let r = settled(p.addr, &t, "gone", "/orders?sleep=600", body).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(
        r.replayed(),
        "the retry gets the vanished client's response"
    );
    assert_eq!(effects(&upstream).await, 1);
}

async fn an_unreachable_upstream_frees_the_key_and_the_retry_runs_once_it_is_back(backend: Flags) {
    let mut upstream = Orders::start();
    let port = upstream.addr.port();
    let p = proxy(&backend, &upstream, &[]);
    let t = tenant("down");
    upstream.kill();
    let r = post(p.addr, &t, Some("k"), "/orders", "{}").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.problem().ends_with("upstream-unreachable"),
        "{:?}",
        r.body
    );
    assert!(!r.replayed());
    let again = post(p.addr, &t, Some("k"), "/orders", "{}").await;
    assert!(
        again.problem().ends_with("upstream-unreachable"),
        "not a replay: nothing ran, so nothing was stored: {:?}",
        again.body
    );
    let upstream = Orders::start_on(port);
    let ran = post(p.addr, &t, Some("k"), "/orders", "{}").await;
    assert_eq!(ran.status, StatusCode::CREATED);
    assert!(!ran.replayed());
    let replay = post(p.addr, &t, Some("k"), "/orders", "{}").await;
    assert!(replay.replayed());
    assert_eq!(effects(&upstream).await, 1);
}

async fn a_connection_broken_after_sending_is_stored_and_never_runs_again(backend: Flags) {
    let upstream = Orders::start();
    let p = proxy_with(&backend, &upstream, FIVE_XX_FREED, &[]);
    let t = tenant("broken");
    let r = post(p.addr, &t, Some("k"), "/close", "{}").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.problem().ends_with("upstream-failed"), "{:?}", r.body);
    let retry = post(p.addr, &t, Some("k"), "/close", "{}").await;
    assert!(
        retry.replayed(),
        "the request may have run: it is not sent again"
    );
    assert_eq!(retry.status, StatusCode::BAD_GATEWAY);
    assert_eq!(effects(&upstream).await, 1);
    // The upstream's own 500 frees the key under this policy: it runs again.
    for _ in 0..2 {
        let r = post(p.addr, &t, Some("f"), "/fail", "{}").await;
        assert!(!r.replayed());
    }
    assert_eq!(effects(&upstream).await, 3);
}

async fn a_response_body_cut_short_is_stored_and_never_runs_again(backend: Flags) {
    let upstream = Orders::start();
    let p = proxy_with(&backend, &upstream, FIVE_XX_FREED, &[]);
    let t = tenant("cut");
    let r = post(p.addr, &t, Some("k"), "/cut", "{}").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    assert!(r.problem().ends_with("upstream-failed"), "{:?}", r.body);
    let retry = post(p.addr, &t, Some("k"), "/cut", "{}").await;
    assert!(retry.replayed(), "it ran upstream: it is not sent again");
    assert_eq!(effects(&upstream).await, 1);
}

async fn an_upstream_that_answers_too_late_is_a_stored_504(backend: Flags) {
    let upstream = Orders::start();
    let p = proxy_with(
        &backend,
        &upstream,
        FIVE_XX_FREED,
        &[
            "--upstream-timeout",
            "300ms",
            "--upstream-connect-timeout",
            "100ms",
        ],
    );
    let t = tenant("slow");
    let r = post(p.addr, &t, Some("k"), "/orders?sleep=1200", "{}").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.problem().ends_with("upstream-timeout"), "{:?}", r.body);
    let retry = post(p.addr, &t, Some("k"), "/orders?sleep=1200", "{}").await;
    assert!(retry.replayed());
    assert_eq!(retry.status, StatusCode::GATEWAY_TIMEOUT);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        effects(&upstream).await,
        1,
        "the upstream finished the first request; the retry never reached it"
    );
}

async fn a_large_streamed_response_reaches_the_client_whole_and_its_retry_is_told_it_ran(
    backend: Flags,
) {
    let upstream = Orders::start();
    let p = proxy(&backend, &upstream, &[]);
    let t = tenant("big");
    let n = 3_000_000;
    let path = format!("/big?n={n}");
    let r = post(p.addr, &t, Some("k"), &path, "{}").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body.len(), n, "streamed whole, past the 1 MiB stored");
    let retry = settled(p.addr, &t, "k", &path, "{}").await;
    assert_eq!(retry.status, StatusCode::CONFLICT);
    assert!(
        retry.problem().ends_with("response-not-replayable"),
        "{:?}",
        retry.body
    );
    assert_eq!(effects(&upstream).await, 1);
}

async fn a_response_whose_body_comes_after_its_head_is_stored_before_the_client_gets_it(
    backend: Flags,
) {
    let upstream = Orders::start();
    let p = proxy(&backend, &upstream, &[]);
    let t = tenant("late");
    for i in 0..5 {
        let key = format!("late-{i}");
        let first = post(p.addr, &t, Some(&key), "/late?ms=50", "{}").await;
        assert_eq!(first.status, StatusCode::CREATED);
        let retry = post(p.addr, &t, Some(&key), "/late?ms=50", "{}").await;
        assert!(
            retry.replayed(),
            "a retry sent the moment the answer arrived is its replay: {} {:?}",
            retry.status,
            retry.body
        );
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(effects(&upstream).await, 5);
}

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::embedded()).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::redis()).await })*
        }
        mod redis_cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::redis_cluster()).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::postgres()).await })*
        }
    };
}

on_every_backend!(
    duplicates_run_once_and_retries_get_the_first_response,
    a_client_that_vanishes_mid_request_leaves_it_to_run_once,
    an_unreachable_upstream_frees_the_key_and_the_retry_runs_once_it_is_back,
    a_connection_broken_after_sending_is_stored_and_never_runs_again,
    a_response_body_cut_short_is_stored_and_never_runs_again,
    an_upstream_that_answers_too_late_is_a_stored_504,
    a_large_streamed_response_reaches_the_client_whole_and_its_retry_is_told_it_ran,
    a_response_whose_body_comes_after_its_head_is_stored_before_the_client_gets_it,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_has_its_own_policy_and_unmatched_paths_pass_untouched() {
    let upstream = Orders::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idemproxy.toml");
    std::fs::write(
        &config,
        r#"
        [defaults]
        tenant = { header = "x-api-key" }

        [[route]]
        path = "/fail"
        store = "success-only"

        [[route]]
        path = "/big"
        key_required = true

        [[route]]
        path = "/close"
        "#,
    )
    .unwrap();
    let data = embedded();
    let mut flags: Vec<&std::ffi::OsStr> = data.0.iter().map(OsString::as_os_str).collect();
    flags.push("--config".as_ref());
    flags.push(config.as_os_str());
    let p = Proxy::start(&upstream.url(), &flags);
    let t = tenant("routes");
    // /fail stores only successes: its 500 frees the key, the retry runs.
    for _ in 0..2 {
        let r = post(p.addr, &t, Some("f"), "/fail", "{}").await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!r.replayed());
    }
    assert_eq!(effects(&upstream).await, 2);
    // /big requires a key.
    let r = post(p.addr, &t, None, "/big?n=10", "{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.problem().ends_with("key-missing"));
    assert_eq!(effects(&upstream).await, 2);
    // /orders is no route's: forwarded untouched, the key ignored.
    for _ in 0..2 {
        let r = post(p.addr, &t, Some("o"), "/orders", "{}").await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert!(!r.replayed());
    }
    assert_eq!(effects(&upstream).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_with_a_mistake_is_refused_at_startup_saying_where() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[defaults]\ntenant = \"single\"\n[[route]]\npath = \"/v1/pay\"\nstore = \"some\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(idemstore_tests::idemproxy_binary())
        .args(["--upstream", "http://127.0.0.1:9", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("route /v1/pay") && err.contains("store"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_reports_liveness_readiness_and_metrics() {
    let mut upstream = Orders::start();
    let data = embedded();
    let p = proxy(&data, &upstream, &[]);
    assert_eq!(get(p.admin, "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(p.admin, "/readyz").await.status, StatusCode::OK);
    post(p.addr, &tenant("m"), Some("k"), "/orders", "{}").await;
    let metrics = get(p.admin, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("idempotency_requests_total{outcome=\"executed\"} 1"),
        "{text}"
    );
    upstream.kill();
    let r = get(p.admin, "/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(p.admin, "/healthz").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_and_its_record_survives_the_restart() {
    let upstream = Orders::start();
    let data = embedded();
    let p = proxy(&data, &upstream, &[]);
    let t = tenant("term");
    let addr = p.addr;
    let first = {
        let t = t.clone();
        tokio::spawn(async move { post(addr, &t, Some("k"), "/orders?sleep=800", "{}").await })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    let pid = p.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let r = first.await.unwrap();
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let status = p.stop();
    assert!(status.success(), "{status}");
    let p = proxy(&data, &upstream, &[]);
    let replay = post(p.addr, &t, Some("k"), "/orders?sleep=800", "{}").await;
    assert!(replay.replayed(), "{:?}", replay.body);
    assert_eq!(replay.body, r.body);
    assert_eq!(effects(&upstream).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_the_clients_headers_with_forwarding_headers_and_no_hop_by_hop() {
    let upstream = Orders::start();
    let data = embedded();
    let p = proxy(&data, &upstream, &[]);
    let req = Request::builder()
        .uri("/headers")
        .header("host", "api.example.com")
        .header("x-api-key", "h")
        .header("connection", "x-secret-hop")
        .header("x-secret-hop", "1")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let seen = send(p.addr, req).await.json();
    assert_eq!(seen["host"], "api.example.com");
    assert_eq!(seen["x-forwarded-host"], "api.example.com");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-custom"], "kept");
    assert!(seen.get("x-secret-hop").is_none(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_layer_refuses_never_reach_the_upstream() {
    let upstream = Orders::start();
    let data = embedded();
    let p = proxy_with(
        &data,
        &upstream,
        "[defaults]\nmax_request_bytes = 100\n",
        &[],
    );
    let t = tenant("refused");
    let r = post(p.addr, &t, Some("has space"), "/orders", "{}").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.problem().ends_with("key-malformed"));
    let r = post(p.addr, &t, Some("k"), "/orders", &"x".repeat(101)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.problem().ends_with("request-too-large"));
    let req = Request::builder()
        .method("POST")
        .uri("/orders")
        .header("host", "x")
        .header("idempotency-key", "k")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let r = send(p.addr, req).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no tenant header");
    assert_eq!(effects(&upstream).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_answers_503_without_forwarding_and_the_key_runs_once_it_is_back() {
    let upstream = Orders::start();
    let redis = idemstore_tests::RedisServer::start();
    let flags: Flags = (vec!["--redis".into(), redis.url().into()], None);
    let p = proxy(&flags, &upstream, &["--lease", "3s"]);
    let t = tenant("paused");
    redis.signal("-STOP");
    let r = post(p.addr, &t, Some("k"), "/orders", "{}").await;
    redis.signal("-CONT");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert!(r.problem().ends_with("store-unavailable"), "{:?}", r.body);
    assert_eq!(effects(&upstream).await, 0, "nothing was forwarded");
    // Once Redis is back, a retry runs (after the lease of a reservation
    // whose reply was lost, at worst), once.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ran = loop {
        let r = post(p.addr, &t, Some("k"), "/orders", "{}").await;
        if r.status == StatusCode::CREATED {
            break r;
        }
        assert!(Instant::now() < deadline, "still {} {:?}", r.status, r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!ran.replayed());
    assert!(
        post(p.addr, &t, Some("k"), "/orders", "{}")
            .await
            .replayed()
    );
    assert_eq!(effects(&upstream).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_spelling_of_a_covered_path_meets_its_routes_policy_and_reaches_the_same_path() {
    let upstream = Orders::start();
    let data = embedded();
    let p = proxy_with(
        &data,
        &upstream,
        "[[route]]\npath = \"/orders\"\nkey_required = true\n",
        &[],
    );
    let t = tenant("spelling");
    for path in ["//orders", "/x/../orders", "/%6Frders", "/./orders"] {
        let r = post(p.addr, &t, None, path, "{}").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {:?}", r.body);
        assert!(r.problem().ends_with("key-missing"), "{path}");
    }
    assert_eq!(effects(&upstream).await, 0);
    let first = post(p.addr, &t, Some("k"), "//orders", "{}").await;
    assert_eq!(
        first.status,
        StatusCode::CREATED,
        "the upstream got /orders"
    );
    let retry = post(p.addr, &t, Some("k"), "/orders", "{}").await;
    assert!(retry.replayed(), "one path, one request");
    assert_eq!(effects(&upstream).await, 1);
}
