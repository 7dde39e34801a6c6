//! The `payments` example as a real process, over real TCP: the README's
//! curl session, 50 simultaneous duplicates, a restart that replays, its
//! flags, and the bounds it keeps against slow, hung and too many clients
//! and at shutdown. Timing assertions leave generous slack (the machine is
//! shared): each bound is checked well below the default it replaces.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use idemstore_tests::{Payments as Server, Reply, payments_binary, send};

async fn call(addr: SocketAddr, method: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    request(addr, method, "/v1/payments", headers, body).await
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(
        addr,
        b.body(Full::new(Bytes::from(body.to_owned()))).unwrap(),
    )
    .await
}

const ALICE: (&str, &str) = ("x-api-key", "alice");

#[tokio::test]
async fn the_readme_session_replay_422_409_401() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let key = ("idempotency-key", "order-1");
    let created = call(
        s.addr,
        "POST",
        &[ALICE, key],
        r#"{"amount":100,"currency":"EUR"}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(!created.replayed());
    let p = created.json();
    assert_eq!(
        (p["amount"].as_i64(), p["currency"].as_str()),
        (Some(100), Some("EUR"))
    );
    assert!(p["id"].as_str().unwrap().starts_with("pay_"));

    let again = call(
        s.addr,
        "POST",
        &[ALICE, key],
        r#"{"amount":100,"currency":"EUR"}"#,
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(again.replayed());
    assert_eq!(again.body, created.body);
    // The same JSON document, serialized another way: the same request.
    let reserialized = call(
        s.addr,
        "POST",
        &[ALICE, key],
        "{\n  \"currency\": \"EUR\",\n  \"amount\": 100\n}",
    )
    .await;
    assert!(reserialized.replayed(), "{}", reserialized.problem());
    assert_eq!(reserialized.body, created.body);

    let other = call(
        s.addr,
        "POST",
        &[ALICE, key],
        r#"{"amount":200,"currency":"EUR"}"#,
    )
    .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.headers["content-type"], "application/problem+json");
    assert_eq!(other.json()["members"], serde_json::json!(["amount"]));
    assert!(
        !String::from_utf8_lossy(&other.body).contains("200"),
        "names, never values"
    );

    let slow_body = r#"{"amount":5,"currency":"EUR","delay_ms":800}"#;
    let addr = s.addr;
    let slow = tokio::spawn(async move {
        call(
            addr,
            "POST",
            &[ALICE, ("idempotency-key", "slow-1")],
            slow_body,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy = call(
        s.addr,
        "POST",
        &[ALICE, ("idempotency-key", "slow-1")],
        slow_body,
    )
    .await;
    assert_eq!(busy.status, StatusCode::CONFLICT);
    assert!(busy.headers.contains_key("retry-after"));
    assert_eq!(slow.await.unwrap().status, StatusCode::CREATED);

    let anon = call(s.addr, "POST", &[key], r#"{"amount":100,"currency":"EUR"}"#).await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anon.headers["content-type"], "application/problem+json");

    let bad = call(
        s.addr,
        "POST",
        &[ALICE, ("idempotency-key", "bad-1")],
        r#"{"amount":"lots"}"#,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Another tenant with the same key gets its own payment.
    let bob = call(
        s.addr,
        "POST",
        &[("x-api-key", "bob"), key],
        r#"{"amount":100,"currency":"EUR"}"#,
    )
    .await;
    assert_eq!(bob.status, StatusCode::CREATED);
    assert_ne!(bob.json()["id"], p["id"]);

    let list = call(s.addr, "GET", &[ALICE], "").await.json();
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "order-1 once, slow-1 once: {list}"
    );
    s.stop();
}

#[tokio::test]
async fn fifty_simultaneous_duplicates_over_tcp_create_one_payment() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let body = r#"{"amount":42,"currency":"USD","delay_ms":300}"#;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let addr = s.addr;
            tokio::spawn(async move {
                call(addr, "POST", &[ALICE, ("idempotency-key", "dup-1")], body).await
            })
        })
        .collect();
    let mut created = 0;
    let mut conflicts = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created + conflicts, 50);
    assert!(created >= 1);
    let list = call(s.addr, "GET", &[ALICE], "").await.json();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "exactly one execution: {list}"
    );
    s.stop();
}

#[tokio::test]
async fn a_restarted_server_replays_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let key = ("idempotency-key", "survives-restart");
    let body = r#"{"amount":7,"currency":"GBP"}"#;
    let before = call(s.addr, "POST", &[ALICE, key], body).await;
    assert_eq!(before.status, StatusCode::CREATED);
    s.stop();

    let s = Server::start(dir.path());
    let after = call(s.addr, "POST", &[ALICE, key], body).await;
    assert_eq!(after.status, StatusCode::CREATED);
    assert!(after.replayed());
    assert_eq!(after.body, before.body);
    // The new process never ran the handler: its (in-memory) list is empty.
    let list = call(s.addr, "GET", &[ALICE], "").await.json();
    assert_eq!(list.as_array().unwrap().len(), 0);
    s.stop();
}

#[tokio::test]
async fn two_replicas_on_one_redis_execute_duplicates_once() {
    let url = std::env::var("IDEMSTORE_REDIS_URL").unwrap_or_else(|_| {
        panic!("IDEMSTORE_REDIS_URL is not set: run ./scripts/test.sh, which starts Redis")
    });
    let a = Server::start_redis(&url);
    let b = Server::start_redis(&url);
    // A tenant of this run only: the shared Redis outlives it.
    let tenant = format!("replicas-{}", std::process::id());
    let body = r#"{"amount":42,"currency":"USD","delay_ms":200}"#;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            let tenant = tenant.clone();
            tokio::spawn(async move {
                call(
                    addr,
                    "POST",
                    &[("x-api-key", &tenant), ("idempotency-key", "dup-across")],
                    body,
                )
                .await
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::CREATED => {
                ids.insert(r.json()["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ids.len(), 1, "every 201 is the same payment: {ids:?}");
    let on_a = call(a.addr, "GET", &[("x-api-key", &tenant)], "")
        .await
        .json();
    let on_b = call(b.addr, "GET", &[("x-api-key", &tenant)], "")
        .await
        .json();
    let total = on_a.as_array().unwrap().len() + on_b.as_array().unwrap().len();
    assert_eq!(
        total, 1,
        "exactly one execution across both replicas: {on_a} {on_b}"
    );
    // A retry to either replica replays it.
    for s in [&a, &b] {
        let r = call(
            s.addr,
            "POST",
            &[("x-api-key", &tenant), ("idempotency-key", "dup-across")],
            body,
        )
        .await;
        assert!(r.replayed());
    }
    a.stop();
    b.stop();
}

/// Runs the binary with `args` to its exit (at most 30 s): status, stdout,
/// stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(payments_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("payments {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, out, err)
}

#[test]
fn help_names_every_flag_and_bad_flags_exit_2_saying_why() {
    let (status, help, _) = run_to_exit(&["--help"]);
    assert!(status.success(), "--help: {status}");
    for flag in [
        "--listen",
        "--data",
        "--redis",
        "--redis-cluster",
        "--redis-wait",
        "--redis-wait-timeout",
        "--postgres",
        "--lease",
        "--refuse-expired-keys-for",
        "--retention",
        "--bucket-width",
        "--segment-bytes",
        "--header-timeout",
        "--body-timeout",
        "--max-connections",
        "--max-concurrency",
        "--shutdown-timeout",
    ] {
        assert!(help.contains(flag), "--help does not name {flag}:\n{help}");
    }

    for (args, named) in [
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--retention", "5x"][..], "--retention"),
        (&["--header-timeout", "0s"][..], "--header-timeout"),
        (&["--max-concurrency", "0"][..], "--max-concurrency"),
        (&["--listen", "nowhere"][..], "--listen"),
        (
            &["--redis", "redis://a", "--redis-cluster", "redis://b"][..],
            "--redis-cluster",
        ),
        (&["--redis-wait", "many"][..], "--redis-wait"),
        (
            &["--postgres", "postgres://a", "--redis", "redis://b"][..],
            "--redis",
        ),
    ] {
        let (status, _, err) = run_to_exit(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {status} {err}");
        assert!(
            err.contains(named),
            "{args:?} must say what was wrong: {err}"
        );
    }
    // Waiting for replicas needs a Redis to wait in.
    let (status, _, err) = run_to_exit(&["--redis-wait", "1"]);
    assert!(
        !status.success() && err.contains("--redis-wait needs --redis or --redis-cluster"),
        "{status} {err}"
    );
    // A cluster that cannot be reached, or a Redis without the replicas
    // to wait for, is refused at start, saying what to do.
    let (status, _, err) = run_to_exit(&["--redis-cluster", "redis://127.0.0.1:1"]);
    assert!(
        !status.success() && err.contains("check that Redis is running"),
        "{status} {err}"
    );
    let url = std::env::var("IDEMSTORE_REDIS_URL").unwrap_or_else(|_| {
        panic!("IDEMSTORE_REDIS_URL is not set: run ./scripts/test.sh, which starts Redis")
    });
    let (status, _, err) = run_to_exit(&["--redis", &url, "--redis-wait", "1"]);
    assert!(
        !status.success() && err.contains("has 0 attached; attach replicas"),
        "{status} {err}"
    );
}

#[test]
fn the_store_flags_reach_the_store() {
    // Values the store refuses at open: the process says so and exits 1,
    // which it could not if the flags never reached the store's Config.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (flags, named) in [
        (&["--retention", "30s"][..], "retention"),
        (&["--bucket-width", "48h"][..], "retention"),
        (&["--segment-bytes", "4096"][..], "max_segment_bytes"),
    ] {
        let mut args = vec!["--listen", "127.0.0.1:0", "--data", data];
        args.extend_from_slice(flags);
        let (status, _, err) = run_to_exit(&args);
        assert_eq!(status.code(), Some(1), "{flags:?}: {status} {err}");
        assert!(err.contains(named), "{flags:?}: {err}");
    }
    // Valid non-default values start the server.
    let s = Server::start_with(
        dir.path(),
        &[
            "--retention",
            "2m",
            "--bucket-width",
            "10s",
            "--segment-bytes",
            "8388608",
        ],
    );
    s.stop();
}

/// Reads from `c` until the end of a response head or EOF (at most
/// `within`); what was read.
async fn read_head(c: &mut TcpStream, within: Duration) -> String {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match c.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or_else(|_| panic!("nothing from the server within {within:?}"));
    String::from_utf8_lossy(&buf).into_owned()
}

/// Waits until the server closes `c` (EOF or reset), at most `within`.
async fn closed_within(c: &mut TcpStream, within: Duration) {
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(within, c.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "still connected after {within:?}");
}

#[tokio::test]
async fn a_client_sending_half_a_header_is_disconnected_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--header-timeout", "1s"]);
    // A keep-alive connection left idle after its response goes the same
    // way as one sending half a head.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /v1/payments HTTP/1.1\r\nHost: payments\r\nX-Api-Key: alice\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut idle, Duration::from_secs(30)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"POST /v1/payments HTTP/1.1\r\nHost: payments\r\nX-Api-")
        .await
        .unwrap();
    let start = Instant::now();
    for c in [&mut slow, &mut idle] {
        closed_within(c, Duration::from_secs(30)).await;
    }
    let took = start.elapsed();
    // A timer does not fire early; the default (10 s) would be far later.
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
    // The server goes on serving others.
    let ok = call(s.addr, "GET", &[ALICE], "").await;
    assert_eq!(ok.status, StatusCode::OK);
    s.stop();
}

#[tokio::test]
async fn a_client_stalling_in_the_body_gets_400_after_the_body_timeout_and_its_key_stays_free() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--body-timeout", "1s"]);
    let mut stalled = TcpStream::connect(s.addr).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/payments HTTP/1.1\r\nHost: payments\r\nX-Api-Key: alice\r\n\
              Idempotency-Key: stalled-1\r\nContent-Type: application/json\r\n\
              Content-Length: 40\r\n\r\n{\"amount\":",
        )
        .await
        .unwrap();
    let start = Instant::now();
    let head = read_head(&mut stalled, Duration::from_secs(30)).await;
    let took = start.elapsed();
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(20), "answered after {took:?}");
    // The failed read took no key: the same key runs the handler now.
    let body = r#"{"amount":100,"currency":"EUR"}"#;
    let r = call(
        s.addr,
        "POST",
        &[ALICE, ("idempotency-key", "stalled-1")],
        body,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(!r.replayed());
    s.stop();
}

#[tokio::test]
async fn beyond_max_concurrency_requests_get_503_which_is_not_stored_under_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--max-concurrency", "1"]);
    let addr = s.addr;
    let slow = tokio::spawn(async move {
        call(
            addr,
            "POST",
            &[ALICE, ("idempotency-key", "busy-slow")],
            r#"{"amount":5,"currency":"EUR","delay_ms":3000}"#,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = r#"{"amount":6,"currency":"EUR"}"#;
    let key = ("idempotency-key", "busy-2");
    let shed = call(s.addr, "POST", &[ALICE, key], body).await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers["content-type"], "application/problem+json");
    assert!(shed.headers.contains_key("retry-after"));
    assert_eq!(slow.await.unwrap().status, StatusCode::CREATED);
    // The 503 came from outside the idempotency layer: the key is unused.
    let later = call(s.addr, "POST", &[ALICE, key], body).await;
    assert_eq!(later.status, StatusCode::CREATED);
    assert!(!later.replayed());
    s.stop();
}

#[tokio::test]
async fn beyond_max_connections_a_new_connection_waits_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--max-connections", "1"]);
    // One keep-alive connection, answered (so accepted), held open.
    let mut first = TcpStream::connect(s.addr).await.unwrap();
    first
        .write_all(b"GET /v1/payments HTTP/1.1\r\nHost: payments\r\nX-Api-Key: alice\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut first, Duration::from_secs(30)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let addr = s.addr;
    let second = tokio::spawn(async move { call(addr, "GET", &[ALICE], "").await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served while the only slot was taken"
    );
    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("the freed slot serves the waiting connection")
        .unwrap();
    assert_eq!(served.status, StatusCode::OK);
    s.stop();
}

#[tokio::test]
async fn sigterm_with_hung_clients_exits_within_the_shutdown_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // The header and body timeouts are far longer than the test: only the
    // shutdown timeout can end these connections in time.
    let mut s = Server::start_with(
        dir.path(),
        &[
            "--shutdown-timeout",
            "2s",
            "--header-timeout",
            "10m",
            "--body-timeout",
            "10m",
        ],
    );
    let get = b"GET /v1/payments HTTP/1.1\r\nHost: payments\r\nX-Api-Key: alice\r\n\r\n";
    // Half a head on a fresh connection.
    let mut fresh = TcpStream::connect(s.addr).await.unwrap();
    fresh
        .write_all(b"POST /v1/payments HTTP/1.1\r\nHost: pay")
        .await
        .unwrap();
    // Half a head on a keep-alive connection, after a full request (which
    // proves the server accepted it).
    let mut kept = TcpStream::connect(s.addr).await.unwrap();
    kept.write_all(get).await.unwrap();
    assert!(
        read_head(&mut kept, Duration::from_secs(30))
            .await
            .starts_with("HTTP/1.1 200")
    );
    kept.write_all(b"POST /v1/payments HTTP/1.1\r\nHost: pay")
        .await
        .unwrap();
    // A request whose body never ends: in flight in the idempotency layer.
    let mut stalled = TcpStream::connect(s.addr).await.unwrap();
    stalled.write_all(get).await.unwrap();
    assert!(
        read_head(&mut stalled, Duration::from_secs(30))
            .await
            .starts_with("HTTP/1.1 200")
    );
    stalled
        .write_all(
            b"POST /v1/payments HTTP/1.1\r\nHost: payments\r\nX-Api-Key: alice\r\n\
              Idempotency-Key: hung-1\r\nContent-Length: 40\r\n\r\n{\"amount\":",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    s.terminate();
    let start = Instant::now();
    let status = s.wait_for_exit(Duration::from_secs(20));
    let took = start.elapsed();
    assert!(status.success(), "{status}");
    // It waited for the request in flight, up to the timeout.
    assert!(took >= Duration::from_millis(1500), "exited after {took:?}");
    let stderr = s.stderr_at_exit();
    assert!(
        stderr.contains("payments: stopped") && stderr.contains("dropped"),
        "{stderr}"
    );
    for c in [&mut fresh, &mut kept, &mut stalled] {
        closed_within(c, Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_request_in_flight_at_sigterm_completes_and_replays_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());
    let addr = s.addr;
    let key = ("idempotency-key", "in-flight-at-sigterm");
    let body = r#"{"amount":9,"currency":"EUR","delay_ms":3000}"#;
    let in_flight = tokio::spawn(async move { call(addr, "POST", &[ALICE, key], body).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.terminate();
    // New connections are refused while the request in flight finishes.
    loop {
        assert!(
            !in_flight.is_finished(),
            "still accepting connections while draining"
        );
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = in_flight.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    let status = s.wait_for_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let stderr = s.stderr_at_exit();
    assert!(stderr.contains("payments: stopped cleanly"), "{stderr}");

    // Its response was stored before the store closed.
    let s = Server::start(dir.path());
    let again = call(s.addr, "POST", &[ALICE, key], body).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(again.replayed());
    assert_eq!(again.body, first.body);
    s.stop();
}

#[tokio::test]
async fn a_handler_whose_client_left_finishes_before_sigterm_closes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());
    let addr = s.addr;
    let key = ("idempotency-key", "client-left-before-sigterm");
    let body = r#"{"amount":7,"currency":"EUR","delay_ms":1500}"#;
    // The client gives up mid-handler: its connection closes, the handler
    // runs on in the layer's own task.
    {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /v1/payments HTTP/1.1\r\nhost: x\r\nx-api-key: alice\r\n\
             idempotency-key: {}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            key.1,
            body.len()
        );
        c.write_all(req.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    s.terminate();
    let status = s.wait_for_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let stderr = s.stderr_at_exit();
    assert!(stderr.contains("payments: stopped cleanly"), "{stderr}");
    // The server waited for it and stored it before closing the store.
    let s = Server::start(dir.path());
    let again = call(s.addr, "POST", &[ALICE, key], body).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert!(again.replayed(), "stored before the store closed");
    assert_eq!(again.json()["amount"], 7);
    s.stop();
}

#[tokio::test]
async fn lowercase_currency_codes_are_accepted_and_answered_upper_case() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let key = ("idempotency-key", "lower-1");
    let lower = r#"{"amount":100,"currency":"eur"}"#;
    let created = call(s.addr, "POST", &[ALICE, key], lower).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["currency"], "EUR");
    let again = call(s.addr, "POST", &[ALICE, key], lower).await;
    assert!(again.replayed());
    assert_eq!(again.body, created.body);
    // The fingerprint covers the bytes sent: the same payment spelled
    // "EUR" under the same key is another request.
    let upper = call(
        s.addr,
        "POST",
        &[ALICE, key],
        r#"{"amount":100,"currency":"EUR"}"#,
    )
    .await;
    assert_eq!(upper.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mixed = call(
        s.addr,
        "POST",
        &[ALICE, ("idempotency-key", "lower-2")],
        r#"{"amount":100,"currency":"Usd"}"#,
    )
    .await;
    assert_eq!(mixed.json()["currency"], "USD");
    for (i, bad) in ["eu1", "euro", "eu", "€ur"].iter().enumerate() {
        let k = format!("lower-bad-{i}");
        let r = call(
            s.addr,
            "POST",
            &[ALICE, ("idempotency-key", &k)],
            &format!(r#"{{"amount":100,"currency":"{bad}"}}"#),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    s.stop();
}

#[tokio::test]
async fn the_routers_404_and_405_are_not_stored_under_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let body = r#"{"amount":100,"currency":"EUR"}"#;
    for (method, path, key) in [
        ("POST", "/v1/refunds", "misrouted-404"),
        ("PATCH", "/v1/payments", "misrouted-405"),
    ] {
        let headers = [ALICE, ("idempotency-key", key)];
        let wrong = request(s.addr, method, path, &headers, body).await;
        let expected = if path == "/v1/payments" {
            StatusCode::METHOD_NOT_ALLOWED
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(wrong.status, expected, "{method} {path}");
        let twice = request(s.addr, method, path, &headers, body).await;
        assert_eq!(twice.status, expected, "{method} {path}");
        assert!(!twice.replayed(), "{method} {path}: {expected} was stored");
        // The key is still free for the right route.
        let right = call(s.addr, "POST", &headers, body).await;
        assert_eq!(right.status, StatusCode::CREATED, "after {method} {path}");
        assert!(!right.replayed());
    }
    s.stop();
}

/// A Prometheus scrape line's value: `name` with exactly these labels.
fn scraped(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn metrics_count_a_known_mix_of_requests_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let body = r#"{"amount":5,"currency":"EUR"}"#;
    for k in ["m1", "m2", "m3"] {
        let r = call(s.addr, "POST", &[ALICE, ("idempotency-key", k)], body).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    for k in ["m1", "m2"] {
        assert!(
            call(s.addr, "POST", &[ALICE, ("idempotency-key", k)], body)
                .await
                .replayed()
        );
    }
    let other = r#"{"amount":6,"currency":"EUR"}"#;
    let r = call(s.addr, "POST", &[ALICE, ("idempotency-key", "m1")], other).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let long = "k".repeat(300);
    let r = call(s.addr, "POST", &[ALICE, ("idempotency-key", &long)], body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Outside the layer: neither a 401 nor a GET is counted.
    let r = call(s.addr, "POST", &[("idempotency-key", "m9")], body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    call(s.addr, "GET", &[ALICE], "").await;

    // No API key needed to scrape.
    let m = request(s.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    for (outcome, n) in [
        ("executed", 3.0),
        ("replayed", 2.0),
        ("mismatch", 1.0),
        ("rejected", 1.0),
    ] {
        assert_eq!(
            scraped(
                &text,
                &format!("idempotency_requests_total{{outcome=\"{outcome}\"}}")
            ),
            Some(n),
            "{outcome}:\n{text}"
        );
    }
    for absent in ["conflict", "unavailable"] {
        assert_eq!(
            scraped(
                &text,
                &format!("idempotency_requests_total{{outcome=\"{absent}\"}}")
            ),
            None,
            "{absent}:\n{text}"
        );
    }
    assert_eq!(
        scraped(&text, "idempotency_handler_seconds_count"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        scraped(&text, "idempotency_store_live_keys"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        scraped(&text, "idempotency_store_pending_keys"),
        Some(0.0),
        "{text}"
    );
    assert!(
        scraped(&text, "idempotency_store_disk_bytes").is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert!(scraped(&text, "idempotency_store_commit_seconds_count").is_some_and(|n| n >= 1.0));
    assert!(
        scraped(&text, "idempotency_store_batch_records_sum").is_some_and(|n| n >= 3.0),
        "the three completions were written:\n{text}"
    );
    s.stop();
}
