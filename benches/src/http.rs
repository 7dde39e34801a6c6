//! W6: HTTP over loopback. The `payments` example's own service (the
//! `payments` crate's library, so this is the same handler), served by axum
//! bare or behind the idempotency layer on the embedded store; 64 client
//! connections (HTTP/1.1, keep-alive), each `POST /v1/payments` with an API
//! key and a fresh `Idempotency-Key`. Client and server share the machine,
//! as they share it in both variants.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::time::{Duration, Instant};

/// `W6_HANDLER=trivial` swaps the payments service for a handler that only
/// formats a small JSON 201 (no parsing, no state): the layer's own cost
/// then weighs the most.
fn trivial_handler() -> bool {
    std::env::var("W6_HANDLER").is_ok_and(|h| h == "trivial")
}

/// The payments service, bare.
pub fn router() -> Router {
    if trivial_handler() {
        return trivial();
    }
    payments::bare()
}

/// The payments service behind the idempotency layer on `store` (tenant:
/// the `X-Api-Key` header, as the example configures it).
pub fn layered(store: &idemstore::Store) -> Router {
    if trivial_handler() {
        return trivial().layer(idemstore_http::IdempotencyLayer::new(
            store.clone(),
            idemstore_http::IdempotencyConfig::new(idemstore_http::TenantSource::Single),
        ));
    }
    payments::app(store.clone())
}

/// A JSON 201 of the payments shape, formatted from nothing.
fn trivial() -> Router {
    Router::new().route(
        "/v1/payments",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let amount = body.len();
            (
                StatusCode::CREATED,
                [("content-type", "application/json")],
                format!(
                    r#"{{"id":"pay_{amount}","amount":100,"currency":"EUR","status":"succeeded"}}"#
                ),
            )
        }),
    )
}

/// Serves `app` on a free loopback port and drives it from `conns`
/// connections for `secs`; returns requests per second.
pub fn run(rt: &tokio::runtime::Runtime, app: Router, conns: usize, secs: f64) -> f64 {
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let clients: Vec<_> = (0..conns)
            .map(|c| {
                tokio::spawn(async move {
                    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                    stream.set_nodelay(true).expect("nodelay");
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Body>(io)
                        .await
                        .expect("handshake");
                    tokio::spawn(conn);
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let req = Request::post("/v1/payments")
                            .header("host", "bench")
                            .header("content-type", "application/json")
                            .header("x-api-key", format!("sk_bench_{}", c % 8))
                            .header("idempotency-key", format!("c{c}-{n}"))
                            .body(Body::from(r#"{"amount":100,"currency":"EUR"}"#))
                            .expect("request");
                        let resp = send.send_request(req).await.expect("send");
                        assert_eq!(resp.status(), StatusCode::CREATED);
                        resp.into_body().collect().await.expect("body");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for c in clients {
            total += c.await.expect("client");
        }
        let rate = total as f64 / start.elapsed().as_secs_f64();
        server.abort();
        rate
    })
}
