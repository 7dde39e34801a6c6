//! Which response headers a replay gets (the default, a deny-list added to
//! it, an allow-list) and the redaction hook run before a response is
//! stored. The first client always gets the handler's response as it was.

#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Request, header};
use axum::response::Response;
use axum::routing::post;
use common::{Reply, Runs, open_store};
use http_body_util::BodyExt;
use idemstore::Config;
use idemstore_http::{IdempotencyConfig, IdempotencyLayer, ResponseHeaders, TenantSource};
use tower::ServiceExt;

/// A handler that sets every kind of header a service sets.
async fn handler(axum::extract::State(runs): axum::extract::State<Runs>) -> Response<Body> {
    let n = runs.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let mut r = Response::new(Body::from(format!(r#"{{"run":{n},"secret":"s-{n}"}}"#)));
    *r.status_mut() = axum::http::StatusCode::CREATED;
    let h = r.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: &'static str, v: &'static str| {
        h.append(HeaderName::from_static(name), HeaderValue::from_static(v));
    };
    set(h, "content-type", "application/json");
    set(h, "location", "/v1/payments/1");
    set(h, "etag", "\"v1\"");
    set(h, "link", "</v1/payments/1/refunds>; rel=refunds");
    set(h, "set-cookie", "session=first-client; HttpOnly");
    set(h, "age", "12");
    set(h, "date", "Tue, 01 Dec 2026 10:00:00 GMT");
    set(h, "x-request-id", "req-of-the-first-request");
    set(h, "x-correlation-id", "corr-1");
    set(h, "x-secret-token", "tok-1");
    r
}

struct App {
    router: Router,
    runs: Runs,
    _dir: tempfile::TempDir,
}

fn app(config: IdempotencyConfig) -> App {
    let (store, dir) = open_store(Config::default());
    let runs = Runs::default();
    let router = Router::new()
        .route("/pay", post(handler))
        .layer(IdempotencyLayer::new(store, config))
        .with_state(runs.clone());
    App {
        router,
        runs,
        _dir: dir,
    }
}

async fn send(app: &App) -> Reply {
    let req = Request::post("/pay")
        .header("idempotency-key", "k-1")
        .body(Body::empty())
        .unwrap();
    let (parts, body) = app.router.clone().oneshot(req).await.unwrap().into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn config() -> IdempotencyConfig {
    IdempotencyConfig::new(TenantSource::Single)
}

fn names(r: &Reply) -> Vec<String> {
    let mut n: Vec<String> = r
        .headers
        .keys()
        .map(|k| k.as_str().to_owned())
        // The replay's own: its marker, and the length of its body.
        .filter(|k| k != "idempotent-replayed" && k != "content-length")
        .collect();
    n.sort();
    n.dedup();
    n
}

#[tokio::test]
async fn by_default_cookies_age_date_and_the_request_id_are_not_replayed() {
    let app = app(config());
    let first = send(&app).await;
    assert_eq!(
        first.headers["set-cookie"],
        "session=first-client; HttpOnly"
    );
    assert_eq!(first.headers["x-request-id"], "req-of-the-first-request");
    let replay = send(&app).await;
    assert!(replay.replayed());
    assert_eq!(app.runs.get(), 1);
    assert_eq!(
        names(&replay),
        [
            "content-type",
            "etag",
            "link",
            "location",
            "x-correlation-id",
            "x-secret-token"
        ]
    );
    assert_eq!(replay.headers["location"], "/v1/payments/1");
    assert_eq!(replay.body, first.body);
}

#[tokio::test]
async fn a_deny_list_adds_the_service_s_own_per_request_headers() {
    let app = app(
        config().response_headers(ResponseHeaders::default().and_not([
            HeaderName::from_static("x-correlation-id"),
            HeaderName::from_static("x-secret-token"),
        ])),
    );
    send(&app).await;
    let replay = send(&app).await;
    assert_eq!(names(&replay), ["content-type", "etag", "link", "location"]);
}

#[tokio::test]
async fn an_allow_list_replays_only_what_it_names() {
    let app =
        app(config().response_headers(ResponseHeaders::only([header::LOCATION, header::ETAG])));
    let first = send(&app).await;
    assert_eq!(
        first.headers["x-secret-token"], "tok-1",
        "the first client gets all"
    );
    let replay = send(&app).await;
    assert_eq!(names(&replay), ["etag", "location"]);
}

#[tokio::test]
async fn the_redaction_hook_changes_what_is_stored_not_what_the_first_client_gets() {
    let app = app(config().redact(|r| {
        r.headers.remove("x-secret-token");
        let text = String::from_utf8_lossy(r.body).replace("\"s-1\"", "\"(redacted)\"");
        *r.body = Bytes::from(text);
    }));
    let first = send(&app).await;
    assert!(first.text().contains("\"s-1\""));
    assert_eq!(first.headers["x-secret-token"], "tok-1");
    let replay = send(&app).await;
    assert!(replay.replayed());
    assert_eq!(replay.text(), r#"{"run":1,"secret":"(redacted)"}"#);
    assert!(!replay.headers.contains_key("x-secret-token"));
    assert_eq!(app.runs.get(), 1);
}

#[tokio::test]
async fn a_panicking_redaction_hook_stores_the_notice_and_the_handler_never_runs_again() {
    let app = app(config().redact(|_| panic!("redactor bug")));
    let first = send(&app).await;
    assert_eq!(
        first.status, 201,
        "the first client still gets its response"
    );
    let retry = send(&app).await;
    assert_eq!(retry.status, 409);
    assert_eq!(retry.problem_type(), "response-not-replayable");
    assert!(!retry.text().contains("s-1"), "nothing unredacted kept");
    assert_eq!(app.runs.get(), 1);
}
