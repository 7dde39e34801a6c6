//! The `payments` example as a real process, over real TCP: the README's
//! curl session, 50 simultaneous duplicates, and a restart that replays.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn example_binary() -> PathBuf {
    // target/<profile>/deps/payments-<hash> -> target/<profile>/examples/payments
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join("payments");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds examples; run it through cargo",
        bin.display()
    );
    bin
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(data: &Path) -> Server {
        Server::spawn(&["--data".as_ref(), data.as_os_str()])
    }

    /// A replica keeping its idempotency keys in Redis.
    fn start_redis(url: &str) -> Server {
        Server::spawn(&["--redis".as_ref(), url.as_ref()])
    }

    fn spawn(args: &[&std::ffi::OsStr]) -> Server {
        let mut child = Command::new(example_binary())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Server { child, addr }
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "payments must exit cleanly on SIGTERM: {status}"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }
}

async fn call(addr: SocketAddr, method: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri("/v1/payments")
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = sender
        .send_request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
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

    let other = call(
        s.addr,
        "POST",
        &[ALICE, key],
        r#"{"amount":200,"currency":"EUR"}"#,
    )
    .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.headers["content-type"], "application/problem+json");

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
