//! The client against the `payments` example (a real process) through a
//! TCP proxy of the test's own that drops connections before the request
//! reaches the server and after the server answered: every logical request
//! creates exactly one payment, and gets that payment back.

#![allow(clippy::unwrap_used)]

use idemstore_client::{IdempotentRetry, KeyStore, LogicalRequest, RetryPolicy};
use idemstore_tests::Payments;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the connection it accepts, in turn.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Reads the request, never forwards it, closes.
    DropBefore,
    /// Forwards the request, reads the server's answer, closes without
    /// sending it on.
    DropAfter,
    /// Passes everything through.
    Pass,
}

/// A proxy in front of `upstream`; connection `n` gets `plan[n % len]`.
async fn proxy(upstream: SocketAddr, plan: Vec<Fault>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let fault = plan[seen.fetch_add(1, Ordering::SeqCst) % plan.len()];
            tokio::spawn(serve(client, upstream, fault));
        }
    });
    (addr, count)
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, fault: Fault) {
    match fault {
        Fault::DropBefore => {
            let mut buf = [0u8; 4096];
            let _ = client.read(&mut buf).await;
        }
        Fault::DropAfter => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut buf = vec![0u8; 65536];
            let Ok(n) = client.read(&mut buf).await else {
                return;
            };
            if server.write_all(&buf[..n]).await.is_err() {
                return;
            }
            // The whole answer (a small response) arrives, then the client
            // loses it.
            let _ = tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Fault::Pass => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
    }
}

fn client(policy: RetryPolicy, keys: Option<KeyStore>) -> reqwest_middleware::ClientWithMiddleware {
    // A fresh connection per attempt, so that each meets the next fault.
    let inner = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut mw = IdempotentRetry::new(policy);
    if let Some(k) = keys {
        mw = mw.keep_keys(k);
    }
    reqwest_middleware::ClientBuilder::new(inner)
        .with(mw)
        .build()
}

fn fast() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(10)
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
}

async fn payments_of(server: SocketAddr, tenant: &str) -> Vec<serde_json::Value> {
    let r = reqwest::Client::new()
        .get(format!("http://{server}/v1/payments"))
        .header("x-api-key", tenant)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_logical_request_makes_one_payment_through_dropped_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = Payments::start(dir.path());
    // Each logical request meets a dropped request, then a lost answer,
    // then gets through (its retry replays the payment made).
    let (addr, connections) = proxy(
        server.addr,
        vec![Fault::DropBefore, Fault::DropAfter, Fault::Pass],
    )
    .await;
    let c = client(fast(), None);
    let mut ids = Vec::new();
    for i in 0..12 {
        let r = c
            .post(format!("http://{addr}/v1/payments"))
            .header("x-api-key", "client-test")
            .header("content-type", "application/json")
            .body(format!(r#"{{"amount":{},"currency":"EUR"}}"#, 100 + i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "request {i}");
        let replayed = r.headers().get("idempotent-replayed").is_some();
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["amount"], 100 + i);
        // The answer to the first delivered attempt was lost: this is its
        // replay.
        assert!(replayed, "request {i}: the retry replays, not re-runs");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        36,
        "three attempts each"
    );
    let made = payments_of(server.addr, "client-test").await;
    assert_eq!(made.len(), 12, "one payment per logical request: {made:?}");
    let mut made_ids: Vec<String> = made
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    made_ids.sort();
    ids.sort();
    assert_eq!(made_ids, ids);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_is_not_retried_and_bounded_attempts_give_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Payments::start(dir.path());
    let (addr, connections) = proxy(server.addr, vec![Fault::Pass]).await;
    let c = client(fast(), None);
    let url = format!("http://{addr}/v1/payments");
    let send = |amount: u32| {
        c.post(&url)
            .header("x-api-key", "client-422")
            .header("idempotency-key", "reused")
            .header("content-type", "application/json")
            .body(format!(r#"{{"amount":{amount},"currency":"EUR"}}"#))
            .send()
    };
    assert_eq!(send(1).await.unwrap().status(), 201);
    let before = connections.load(Ordering::SeqCst);
    assert_eq!(send(2).await.unwrap().status(), 422);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        before + 1,
        "422 sent once"
    );
    // Nothing answers: bounded attempts, then the transport error.
    let (dead, tried) = proxy(server.addr, vec![Fault::DropBefore]).await;
    let c = client(fast().max_attempts(4), None);
    let e = c
        .post(format!("http://{dead}/v1/payments"))
        .header("x-api-key", "client-422")
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(
        e.is_request() || e.is_connect() || e.to_string().contains("connection"),
        "{e}"
    );
    assert_eq!(tried.load(Ordering::SeqCst), 4);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_header_that_is_not_visible_ascii_is_refused_and_never_replaced() {
    let (addr, connections) = proxy("127.0.0.1:9".parse().unwrap(), vec![Fault::Pass]).await;
    let c = client(fast(), None);
    let e = c
        .post(format!("http://{addr}/v1/payments"))
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        )
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not visible ASCII"), "{e}");
    assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_restarts_resumes_the_key_of_its_unfinished_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Payments::start(dir.path());
    let keys_dir = tempfile::tempdir().unwrap();
    let day = Duration::from_secs(24 * 3600);
    let body = r#"{"amount":7,"currency":"EUR"}"#;
    // Every answer is lost: the client gives up with the outcome unknown
    // (the payment was made), and "restarts".
    let (lossy, _) = proxy(server.addr, vec![Fault::DropAfter]).await;
    {
        let c = client(
            fast().max_attempts(2),
            Some(KeyStore::open(keys_dir.path(), day).unwrap()),
        );
        let r = c
            .post(format!("http://{lossy}/v1/payments"))
            .header("x-api-key", "client-restart")
            .header("content-type", "application/json")
            .with_extension(LogicalRequest::new("order-7"))
            .body(body)
            .send()
            .await;
        assert!(r.is_err());
    }
    // The store is closed with the client (its last handle dropped).
    let keys = KeyStore::open(keys_dir.path(), day).unwrap();
    let kept = keys
        .kept("order-7")
        .unwrap()
        .expect("the key survives the restart");
    let (ok, _) = proxy(server.addr, vec![Fault::Pass]).await;
    let c = client(fast(), Some(keys.clone()));
    let r = c
        .post(format!("http://{ok}/v1/payments"))
        .header("x-api-key", "client-restart")
        .header("content-type", "application/json")
        .with_extension(LogicalRequest::new("order-7"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        r.headers().get("idempotent-replayed").is_some(),
        "resumed: the same key replays"
    );
    assert_eq!(payments_of(server.addr, "client-restart").await.len(), 1);
    // Ended: the name's key is forgotten.
    assert_eq!(keys.kept("order-7").unwrap(), None);
    let _ = kept;
    server.stop();
}
