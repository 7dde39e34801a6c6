//! `payments --postgres`: two processes on one database. Simultaneous
//! duplicates across both run once; a process killed with SIGKILL in the
//! middle of handlers whose payment rows and stored responses share one
//! transaction leaves every acknowledged response replaying, no payment
//! row without its stored response, and no payment made twice.
//!
//! Needs `IDEMSTORE_POSTGRES_URL` (scripts/test.sh starts PostgreSQL). Each
//! test uses tenants of its own: the database outlives the run.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use idemstore_tests::{Payments as Server, Reply, send, try_send};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn url() -> String {
    std::env::var("IDEMSTORE_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("IDEMSTORE_POSTGRES_URL is not set: run ./scripts/test.sh, which starts PostgreSQL")
    })
}

fn start() -> Server {
    Server::spawn(&[
        "--postgres".as_ref(),
        url().as_ref(),
        "--lease".as_ref(),
        "2s".as_ref(),
    ])
}

async fn post(addr: SocketAddr, tenant: &str, key: &str, body: &str) -> Reply {
    send(addr, request(addr, tenant, key, body)).await
}

fn request(addr: SocketAddr, tenant: &str, key: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri("/v1/payments")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("x-api-key", tenant)
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// The payment rows of `tenant`: (idempotency key, payment id).
async fn rows(tenant: &str) -> Vec<(Option<String>, String)> {
    let pool = sqlx::PgPool::connect(&url()).await.unwrap();
    let rows: Vec<(Option<String>, String)> =
        sqlx::query_as("SELECT idempotency_key, id FROM payments WHERE tenant = $1")
            .bind(tenant.as_bytes())
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_database_run_simultaneous_duplicates_once() {
    let a = start();
    let b = start();
    let tenant = format!("pg-dups-{}", std::process::id());
    let body = r#"{"amount":42,"currency":"USD","delay_ms":200}"#;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            let tenant = tenant.clone();
            tokio::spawn(async move { post(addr, &tenant, "dup", body).await })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::CREATED => {
                ids.insert(r.json()["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert_eq!(ids.len(), 1, "every 201 is one payment: {ids:?}");
    let made = rows(&tenant).await;
    assert_eq!(made.len(), 1, "one payment row: {made:?}");
    assert_eq!(made[0].1, *ids.iter().next().unwrap());
    for s in [&a, &b] {
        let r = post(s.addr, &tenant, "dup", body).await;
        assert!(r.replayed());
        assert_eq!(r.json()["id"], made[0].1.as_str());
    }
    a.stop();
    b.stop();
}

/// Retries `key` on `addr` until it is answered (409 while the killed
/// process's reservation lasts); the payment id it ends with.
async fn settle(addr: SocketAddr, tenant: &str, key: &str, body: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = post(addr, tenant, key, body).await;
        match r.status {
            StatusCode::CREATED => return r.json()["id"].as_str().unwrap().to_owned(),
            StatusCode::CONFLICT if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{key}: {other} {:?}", r.body),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_transaction_loses_no_acknowledged_payment_and_makes_none_twice() {
    let mut a = start();
    let b = start();
    let tenant = format!("pg-kill-{}", std::process::id());
    // Handlers that hold their transaction open 400 ms, started at 40 ms
    // intervals: when the process dies, some have committed and answered,
    // some are inside their transaction, some not yet begun.
    let body = r#"{"amount":7,"currency":"EUR","delay_ms":400}"#;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (addr, tenant) = (a.addr, tenant.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(40 * i)).await;
            let key = format!("k{i}");
            // The kill cuts some exchanges short: those are unanswered.
            let r = try_send(addr, request(addr, &tenant, &key, body)).await;
            (key, r.ok())
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let mut acknowledged = BTreeMap::new();
    let mut keys = Vec::new();
    for t in tasks {
        let (key, reply) = t.await.unwrap();
        if let Some(r) = reply
            && r.status == StatusCode::CREATED
        {
            acknowledged.insert(key.clone(), r.json()["id"].as_str().unwrap().to_owned());
        }
        keys.push(key);
    }
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < keys.len(),
        "the kill came mid-run: {} of {} acknowledged",
        acknowledged.len(),
        keys.len()
    );
    // Every key settles on the survivor: acknowledged ones replay their
    // payment; the others run now (their first attempt committed nothing).
    let mut settled = BTreeMap::new();
    for key in &keys {
        let id = settle(b.addr, &tenant, key, body).await;
        if let Some(first) = acknowledged.get(key) {
            assert_eq!(&id, first, "{key}: acknowledged, so it replays");
        }
        settled.insert(key.clone(), id);
    }
    // The database: one payment per key, and it is the one its key
    // replays (no payment row without its stored response, none twice).
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, id) in rows(&tenant).await {
        by_key.entry(key.unwrap()).or_default().push(id);
    }
    for key in &keys {
        let ids = by_key.get(key).cloned().unwrap_or_default();
        assert_eq!(ids, vec![settled[key].clone()], "{key}");
    }
    assert_eq!(by_key.len(), keys.len());
    b.stop();
}

/// A payment the database refuses (here: a trigger that fails inserts for
/// one tenant) answers 503 and frees its key: once the database takes
/// payments again, the retry makes the payment instead of replaying the 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_the_database_refuses_frees_its_key_so_the_retry_makes_it() {
    let server = start();
    let tenant = format!("pg-refused-{}", std::process::id());
    let pool = sqlx::PgPool::connect(&url()).await.unwrap();
    for sql in [
        "CREATE TABLE IF NOT EXISTS fail_tenants (tenant BYTEA PRIMARY KEY)",
        "CREATE OR REPLACE FUNCTION fail_listed_tenants() RETURNS trigger AS $$
         BEGIN
           IF EXISTS (SELECT 1 FROM fail_tenants WHERE tenant = NEW.tenant) THEN
             RAISE EXCEPTION 'payments refused for this tenant (test)';
           END IF;
           RETURN NEW;
         END $$ LANGUAGE plpgsql",
        "CREATE OR REPLACE TRIGGER fail_listed_tenants BEFORE INSERT ON payments
         FOR EACH ROW EXECUTE FUNCTION fail_listed_tenants()",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    sqlx::query("INSERT INTO fail_tenants VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(tenant.as_bytes())
        .execute(&pool)
        .await
        .unwrap();
    let body = r#"{"amount":31,"currency":"EUR"}"#;
    let refused = post(server.addr, &tenant, "refused-1", body).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    sqlx::query("DELETE FROM fail_tenants WHERE tenant = $1")
        .bind(tenant.as_bytes())
        .execute(&pool)
        .await
        .unwrap();
    let made = post(server.addr, &tenant, "refused-1", body).await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    assert!(!made.replayed(), "the 503 was not stored");
    assert_eq!(rows(&tenant).await.len(), 1);
    pool.close().await;
    server.stop();
}
