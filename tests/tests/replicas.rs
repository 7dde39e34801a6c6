//! What only a shared backend has: several replicas on one Redis, and Redis
//! going away and coming back. These tests start a redis-server of their own
//! (from PATH; scripts/test.sh installs it) so they can stop and restart it.

#![allow(clippy::unwrap_used)]

use idemstore::{Fingerprint, Response};
use idemstore::{Key, Tenant};
use idemstore_http::{Backend, BackendError, Lease, Outcome};
use idemstore_redis::{RedisBackend, RedisConfig};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idemstore_tests::RedisServer as Redis;

fn config() -> RedisConfig {
    RedisConfig::default()
        .lease(Duration::from_secs(5))
        .timeout(Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_on_the_same_keys_execute_each_once() {
    let redis = Redis::start();
    let a = RedisBackend::connect(&redis.url(), config()).await.unwrap();
    let b = RedisBackend::connect(&redis.url(), config()).await.unwrap();
    let executions = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for replica in [a, b] {
        for _ in 0..8 {
            let replica = replica.clone();
            let executions = executions.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..50 {
                    let key = format!("order-{k}");
                    loop {
                        match replica
                            .begin(
                                Tenant::new(b"tenant"),
                                Key::new(key.as_bytes()),
                                Fingerprint::of(b"r"),
                            )
                            .await
                            .unwrap()
                        {
                            Outcome::Reserved(l) => {
                                executions.fetch_add(1, Ordering::SeqCst);
                                l.complete(Response::new(201, key.clone())).await.unwrap();
                                break;
                            }
                            Outcome::Replay(s) => {
                                assert_eq!(s.response.body, key.as_bytes());
                                break;
                            }
                            Outcome::InFlight { .. } => tokio::task::yield_now().await,
                            Outcome::Mismatch(_) | Outcome::Expired { .. } => {
                                panic!("same request, within the retention")
                            }
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        executions.load(Ordering::SeqCst),
        50,
        "each key ran exactly once across both replicas"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_fast_and_service_resumes_when_it_returns() {
    let mut redis = Redis::start();
    let backend = RedisBackend::connect(&redis.url(), config()).await.unwrap();
    let l = match backend
        .begin(Tenant::new(b"t"), Key::new(b"kept"), Fingerprint::of(b"r"))
        .await
        .unwrap()
    {
        Outcome::Reserved(l) => l,
        _ => panic!("fresh"),
    };
    l.complete(Response::new(201, "kept")).await.unwrap();

    redis.down();
    let started = Instant::now();
    let e = match backend
        .begin(Tenant::new(b"t"), Key::new(b"new"), Fingerprint::of(b"r"))
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("Redis is down"),
    };
    assert!(matches!(e, BackendError::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("check that Redis is running"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the timeout: {:?}",
        started.elapsed()
    );

    // Restarted (appendfsync always): what was acknowledged is still there,
    // and the same backend works again without being recreated.
    redis.up();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match backend
            .begin(Tenant::new(b"t"), Key::new(b"kept"), Fingerprint::of(b"r"))
            .await
        {
            Ok(Outcome::Replay(s)) => {
                assert_eq!(s.response.body, b"kept");
                break;
            }
            Ok(other) => panic!(
                "acknowledged completion lost across a Redis restart: {}",
                matches!(other, Outcome::Reserved(_))
            ),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("did not reconnect: {e}"),
        }
    }
    assert!(matches!(
        backend
            .begin(Tenant::new(b"t"), Key::new(b"new"), Fingerprint::of(b"r"))
            .await
            .unwrap(),
        Outcome::Reserved(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_answers_503_while_redis_is_down_and_the_handler_does_not_run() {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::post;
    use tower::ServiceExt;
    let mut redis = Redis::start();
    let backend = RedisBackend::connect(&redis.url(), config()).await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let app = {
        let runs = runs.clone();
        Router::new()
            .route(
                "/pay",
                post(move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    async { (StatusCode::CREATED, "paid") }
                }),
            )
            .layer(idemstore_http::IdempotencyLayer::new(
                backend,
                idemstore_http::IdempotencyConfig::new(idemstore_http::TenantSource::Single),
            ))
    };
    let call = |key: &'static str| {
        let app = app.clone();
        async move {
            let req = Request::post("/pay")
                .header("idempotency-key", key)
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }
    };
    assert_eq!(call("a").await, StatusCode::CREATED);
    redis.down();
    assert_eq!(call("b").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    redis.up();
    let deadline = Instant::now() + Duration::from_secs(10);
    while call("b").await != StatusCode::CREATED {
        assert!(Instant::now() < deadline, "service did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_fails_within_the_timeout() {
    let redis = Redis::start();
    let backend = RedisBackend::connect(&redis.url(), config()).await.unwrap();
    // Block the server for 2 s (as a long-running command or a stall would).
    let port = redis.port().to_string();
    let sleeper = std::thread::spawn(move || {
        Command::new("redis-cli")
            .args(["-p", &port, "DEBUG", "SLEEP", "2"])
            .output()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let r = backend
        .begin(Tenant::new(b"t"), Key::new(b"k"), Fingerprint::of(b"r"))
        .await;
    let took = started.elapsed();
    assert!(
        matches!(r, Err(BackendError::Unavailable(_))),
        "a stalled Redis must fail the call"
    );
    assert!(
        took < Duration::from_millis(1500),
        "bounded by the 500 ms timeout: {took:?}"
    );
    sleeper.join().unwrap().unwrap();
    // Once it answers again, so do we.
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend
        .begin(Tenant::new(b"t"), Key::new(b"k2"), Fingerprint::of(b"r"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "did not recover after the stall");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_holder_stays_fenced_even_if_the_key_vanished_and_generations_restart() {
    let redis = Redis::start();
    let backend = RedisBackend::connect(&redis.url(), config()).await.unwrap();
    let Outcome::Reserved(stale) = backend
        .begin(Tenant::new(b"t"), Key::new(b"k"), Fingerprint::of(b"r"))
        .await
        .unwrap()
    else {
        panic!("fresh")
    };
    // The hash disappears (eviction, expiry of a long stall, a failover).
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "--scan",
            "--pattern",
            "idem:*",
        ])
        .output()
        .unwrap();
    for key in String::from_utf8_lossy(&out.stdout).lines() {
        Command::new("redis-cli")
            .args(["-p", &redis.port().to_string(), "DEL", key])
            .output()
            .unwrap();
    }
    let Outcome::Reserved(fresh) = backend
        .begin(Tenant::new(b"t"), Key::new(b"k"), Fingerprint::of(b"r"))
        .await
        .unwrap()
    else {
        panic!("the key is free again")
    };
    assert_eq!(
        stale.token(),
        fresh.token(),
        "generations restarted: the tokens collide"
    );
    let e = stale
        .complete(Response::new(200, "stale"))
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Fenced(_)), "{e}");
    fresh.complete(Response::new(201, "fresh")).await.unwrap();
    match backend
        .begin(Tenant::new(b"t"), Key::new(b"k"), Fingerprint::of(b"r"))
        .await
        .unwrap()
    {
        Outcome::Replay(s) => assert_eq!(s.response.body, b"fresh"),
        _ => panic!("expected the fresh holder's response"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_key_holds_memory_for_one_lease_not_the_retention() {
    let redis = Redis::start();
    let backend = RedisBackend::connect(&redis.url(), config()).await.unwrap();
    let Outcome::Reserved(l) = backend
        .begin(Tenant::new(b"t"), Key::new(b"k"), Fingerprint::of(b"r"))
        .await
        .unwrap()
    else {
        panic!("fresh")
    };
    l.abort().await.unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let key = cli(&["--scan", "--pattern", "idem:*"]);
    assert!(
        !key.is_empty(),
        "the aborted key keeps its generation for now"
    );
    let ttl: i64 = cli(&["PTTL", &key]).parse().unwrap();
    // config() has a 5 s lease; the retention is 24 h.
    assert!(ttl > 0 && ttl <= 5_000, "PTTL {ttl} ms");
    assert_eq!(cli(&["HEXISTS", &key, "td"]), "0", "no tenant digest kept");
    // The key is free: the next request runs, with a newer token.
    let Outcome::Reserved(again) = backend
        .begin(Tenant::new(b"t"), Key::new(b"k"), Fingerprint::of(b"r"))
        .await
        .unwrap()
    else {
        panic!("free after the abort")
    };
    again.complete(Response::new(201, "ok")).await.unwrap();
    assert!(matches!(
        backend
            .begin(Tenant::new(b"t"), Key::new(b"k"), Fingerprint::of(b"r"))
            .await
            .unwrap(),
        Outcome::Replay(_)
    ));
}

/// One clock: the completion and expiry times a replay reports are the ones
/// the Redis server wrote (from its own `TIME`) and enforces (the hash's
/// expiry), not the caller's clock or the copy inside the record. Shown by
/// moving them in Redis, as a server clock an hour ahead would have set
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reports_the_times_the_redis_server_keeps_and_enforces() {
    let redis = Redis::start();
    let backend = RedisBackend::connect(&redis.url(), config()).await.unwrap();
    let begin = || backend.begin(Tenant::new(b"t"), Key::new(b"k"), Fingerprint::of(b"r"));
    let Outcome::Reserved(l) = begin().await.unwrap() else {
        panic!("fresh")
    };
    l.complete(Response::new(201, "ok")).await.unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let key = cli(&["--scan", "--pattern", "idem:*"]);
    let Outcome::Replay(stored) = begin().await.unwrap() else {
        panic!("replay")
    };
    let ca: u64 = cli(&["HGET", &key, "ca"]).parse().unwrap();
    let ex: u64 = cli(&["HGET", &key, "ex"]).parse().unwrap();
    assert_eq!((stored.completed_at.0, stored.expires_at.0), (ca, ex));
    assert_eq!(
        cli(&["PEXPIRETIME", &key]).parse::<u64>().unwrap(),
        ex,
        "the reported expiry is the one Redis enforces"
    );
    let ahead = (ca + 3_600_000, ex + 3_600_000);
    cli(&[
        "HSET",
        &key,
        "ca",
        &ahead.0.to_string(),
        "ex",
        &ahead.1.to_string(),
    ]);
    cli(&["PEXPIREAT", &key, &ahead.1.to_string()]);
    let Outcome::Replay(moved) = begin().await.unwrap() else {
        panic!("replay")
    };
    assert_eq!((moved.completed_at.0, moved.expires_at.0), ahead);
}
