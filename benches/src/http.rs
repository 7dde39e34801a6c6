//! W6: HTTP over loopback. A `POST /v1/payments` handler (the `payments`
//! example's shape: a small JSON 201) served by axum, bare or behind the
//! idempotency layer on the embedded store; 64 client connections (HTTP/1.1,
//! keep-alive), each request with a fresh `Idempotency-Key`. Client and
//! server share the machine, as they share it in both variants.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use std::time::{Duration, Instant};

/// The handler, bare.
pub fn router() -> Router {
    Router::new().route(
        "/v1/payments",
        post(|body: axum::body::Bytes| async move {
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
