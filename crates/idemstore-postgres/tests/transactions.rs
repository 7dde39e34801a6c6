//! The record in the handler's own transaction, and the database failing
//! under the backend: against a real PostgreSQL (`IDEMSTORE_POSTGRES_URL`,
//! which scripts/test.sh sets; the failure test starts a server of its own
//! with scripts/postgres.sh).

#![allow(clippy::unwrap_used)]

use idemstore::{Fingerprint, Key, Response, Tenant};
use idemstore_http::{Backend, BackendError, Lease, Outcome};
use idemstore_postgres::{PostgresBackend, PostgresConfig, PostgresLease};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static SCHEMA: AtomicU64 = AtomicU64::new(0);

fn url() -> String {
    std::env::var("IDEMSTORE_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "IDEMSTORE_POSTGRES_URL is not set: run the tests with ./scripts/test.sh, which \
             installs and starts PostgreSQL"
        )
    })
}

fn config() -> PostgresConfig {
    let schema = format!(
        "tx{}_{}",
        std::process::id(),
        SCHEMA.fetch_add(1, Ordering::SeqCst)
    );
    PostgresConfig::default()
        .lease(Duration::from_millis(500))
        .retention(Duration::from_secs(60))
        .timeout(Duration::from_secs(5))
        .schema(schema)
}

/// A backend in a schema of its own, with the test's business table.
async fn backend() -> PostgresBackend {
    let b = PostgresBackend::connect(&url(), config()).await.unwrap();
    sqlx::query("CREATE TABLE payments (id text PRIMARY KEY, amount int8 NOT NULL)")
        .execute(b.pool())
        .await
        .unwrap();
    b
}

async fn begin(b: &PostgresBackend, key: &str) -> Outcome<PostgresLease> {
    b.begin(
        Tenant::new(b"acct"),
        Key::new(key.as_bytes()),
        Fingerprint::of(b"pay 500"),
    )
    .await
    .unwrap()
}

async fn reserve(b: &PostgresBackend, key: &str) -> PostgresLease {
    match begin(b, key).await {
        Outcome::Reserved(l) => l,
        other => panic!("expected a reservation of {key}, got {other:?}"),
    }
}

async fn payments(b: &PostgresBackend) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(b.pool())
        .await
        .unwrap()
}

fn label(o: &Outcome<PostgresLease>) -> String {
    match o {
        Outcome::Reserved(_) => "reserved".into(),
        Outcome::InFlight { .. } => "in flight".into(),
        Outcome::Replay(s) => format!("replay of {}", String::from_utf8_lossy(&s.response.body)),
        Outcome::Mismatch(_) => "mismatch".into(),
        Outcome::Expired { .. } => "expired".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_commits_with_the_handler_s_writes_and_a_retry_waits_for_the_commit() {
    let b = backend().await;
    let lease = reserve(&b, "order-1").await;
    let mut tx = b.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO payments VALUES ('pay_1', 500)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let coupled = lease
        .complete_in(&mut tx, Response::new(201, "pay_1"))
        .await
        .unwrap();
    // Until the commit the row is locked: a retry waits for it.
    let retry = {
        let b = b.clone();
        tokio::spawn(async move { label(&begin(&b, "order-1").await) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !retry.is_finished(),
        "the retry did not wait for the commit"
    );
    tx.commit().await.unwrap();
    coupled.committed();
    assert_eq!(retry.await.unwrap(), "replay of pay_1");
    assert_eq!(label(&begin(&b, "order-1").await), "replay of pay_1");
    assert_eq!(payments(&b).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_stores_nothing_and_frees_the_key_for_the_retry() {
    let b = backend().await;
    let lease = reserve(&b, "order-2").await;
    let mut tx = b.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO payments VALUES ('pay_2', 500)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let coupled = lease
        .complete_in(&mut tx, Response::new(201, "pay_2"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    drop(coupled);
    assert_eq!(payments(&b).await, 0);
    // The guard frees the key in the background, well before the lease.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match begin(&b, "order-2").await {
            Outcome::Reserved(l) => {
                l.complete(Response::new(201, "pay_2b")).await.unwrap();
                break;
            }
            Outcome::InFlight { .. } if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("after the rollback: {}", label(&other)),
        }
    }
    assert_eq!(label(&begin(&b, "order-2").await), "replay of pay_2b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_taken_over_cannot_commit_its_record() {
    let b = backend().await;
    let old = reserve(&b, "order-3").await;
    // The old holder stalls past its lease; a retry takes the key over and
    // commits its payment with its record.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let new = reserve(&b, "order-3").await;
    let mut tx = b.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO payments VALUES ('pay_3new', 500)")
        .execute(&mut *tx)
        .await
        .unwrap();
    new.complete_in(&mut tx, Response::new(201, "pay_3new"))
        .await
        .unwrap()
        .committed();
    tx.commit().await.unwrap();
    // The old holder's record is fenced: it must roll back its payment.
    let mut tx = b.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO payments VALUES ('pay_3old', 500)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let e = old
        .complete_in(&mut tx, Response::new(201, "pay_3old"))
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Fenced(_)), "{e}");
    tx.rollback().await.unwrap();
    assert_eq!(payments(&b).await, 1);
    assert_eq!(label(&begin(&b, "order-3").await), "replay of pay_3new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_newer_schema_or_a_missing_one_when_it_may_not_migrate() {
    let cfg = config();
    let schema = cfg.schema.clone().unwrap();
    let mut no_migrate = cfg.clone();
    no_migrate.migrate = false;
    let e = PostgresBackend::connect(&url(), no_migrate.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("schema version"), "{e}");
    let b = PostgresBackend::connect(&url(), cfg).await.unwrap();
    // Migrated: a second connect that may not migrate accepts it.
    PostgresBackend::connect(&url(), no_migrate.clone())
        .await
        .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {schema}._sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99, 'from the future', true, '\\x00', 0)"
    ))
    .execute(b.pool())
    .await
    .unwrap();
    let e = PostgresBackend::connect(&url(), no_migrate)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("99"), "{e}");
}

/// A PostgreSQL server of this test's own (scripts/postgres.sh), stopped
/// when dropped.
struct Server {
    dir: tempfile::TempDir,
    url: String,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let out = script(&["start", &dir.path().join("pg").to_string_lossy()]);
        Server {
            url: out.trim().to_owned(),
            dir,
        }
    }
    fn stop(&self) {
        script(&["stop", &self.dir.path().join("pg").to_string_lossy()]);
    }
    fn restart(&self) {
        script(&["restart", &self.dir.path().join("pg").to_string_lossy()]);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn script(args: &[&str]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres.sh");
    let out = Command::new("bash").arg(path).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "postgres.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_down_gets_503s_and_the_completion_lands_when_it_is_back() {
    let server = Server::start();
    let cfg = PostgresConfig::default()
        .lease(Duration::from_secs(5))
        .retention(Duration::from_secs(60))
        .timeout(Duration::from_secs(1));
    let b = PostgresBackend::connect(&server.url, cfg).await.unwrap();
    let lease = reserve(&b, "k").await;
    server.stop();
    // Down: a new request is refused (503, the handler never runs), within
    // the timeout.
    let t = Instant::now();
    let e = b
        .begin(
            Tenant::new(b"acct"),
            Key::new(b"other"),
            Fingerprint::of(b"x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Unavailable(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // The handler that ran keeps its response: deferred, the key held.
    let e = lease
        .complete(Response::new(201, "paid"))
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Deferred(_)), "{e}");
    assert_eq!(b.deferred_completions(), 1);
    server.restart();
    // Back: the deferred completion lands and replays; nothing ran twice.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match b
            .begin(
                Tenant::new(b"acct"),
                Key::new(b"k"),
                Fingerprint::of(b"pay 500"),
            )
            .await
        {
            Ok(Outcome::Replay(s)) => {
                assert_eq!(s.response.body, b"paid");
                break;
            }
            Ok(Outcome::InFlight { .. }) | Err(BackendError::Unavailable(_))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(other) => panic!("after the restart: {}", label(&other)),
            Err(e) => panic!("after the restart: {e}"),
        }
    }
    assert_eq!(b.deferred_completions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_deletes_expired_rows_and_the_key_runs_again() {
    let cfg = config()
        .lease(Duration::from_millis(200))
        .retention(Duration::from_millis(600));
    let b = PostgresBackend::connect(&url(), cfg).await.unwrap();
    for i in 0..20 {
        reserve(&b, &format!("k{i}"))
            .await
            .complete(Response::new(200, "v"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(b.sweep().await.unwrap(), 20);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM idemstore_records")
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
    reserve(&b, "k0").await.abort().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_a_503_within_the_timeout_not_a_hang() {
    let cfg = config()
        .max_connections(1)
        .timeout(Duration::from_millis(500));
    let b = PostgresBackend::connect(&url(), cfg).await.unwrap();
    // The pool's only connection, held by a long transaction.
    let tx = b.pool().begin().await.unwrap();
    let t = Instant::now();
    let e = b
        .begin(Tenant::new(b"acct"), Key::new(b"k"), Fingerprint::of(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Unavailable(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(tx);
    // Free again: the key was never reserved.
    assert!(matches!(begin(&b, "k").await, Outcome::Reserved(_)));
}

/// Sends `sig` to every process of the server in `dir` (the postmaster
/// and its backends).
fn signal_server(dir: &std::path::Path, sig: &str) {
    let pid = std::fs::read_to_string(dir.join("pg/data/postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_owned();
    let children = Command::new("pgrep").args(["-P", &pid]).output().unwrap();
    let mut pids = vec![pid];
    pids.extend(
        String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned),
    );
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(&pids)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_database_gets_503s_and_serves_again_when_it_resumes() {
    let server = Server::start();
    let cfg = PostgresConfig::default()
        .lease(Duration::from_secs(5))
        .retention(Duration::from_secs(60))
        .timeout(Duration::from_millis(700));
    let b = PostgresBackend::connect(&server.url, cfg).await.unwrap();
    reserve(&b, "before")
        .await
        .complete(Response::new(201, "v"))
        .await
        .unwrap();
    signal_server(server.dir.path(), "STOP");
    let t = Instant::now();
    let e = b
        .begin(
            Tenant::new(b"acct"),
            Key::new(b"during"),
            Fingerprint::of(b"x"),
        )
        .await;
    let elapsed = t.elapsed();
    signal_server(server.dir.path(), "CONT");
    assert!(matches!(e, Err(BackendError::Unavailable(_))), "{e:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    // Resumed: what was stored replays; the refused key is freed well
    // before its 5 s lease (the paused server runs the statement it had
    // when it resumes; the backend frees that reservation by its nonce).
    assert_eq!(label(&begin(&b, "before").await), "replay of v");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let o = b
            .begin(
                Tenant::new(b"acct"),
                Key::new(b"during"),
                Fingerprint::of(b"x"),
            )
            .await
            .unwrap();
        match o {
            Outcome::Reserved(_) => break,
            Outcome::InFlight { .. } if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("after the pause: {}", label(&other)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_begins_under_serializable_isolation_are_retried_and_reserve_once() {
    // A database whose every transaction is SERIALIZABLE: concurrent
    // statements on one row fail with serialization errors, which the
    // backend retries instead of answering 503.
    let server = Server::start();
    let admin = sqlx::PgPool::connect(&server.url).await.unwrap();
    sqlx::query("ALTER DATABASE idem SET default_transaction_isolation = 'serializable'")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let cfg = PostgresConfig::default()
        .lease(Duration::from_secs(30))
        .retention(Duration::from_secs(60))
        .timeout(Duration::from_secs(10))
        .max_connections(16);
    let b = PostgresBackend::connect(&server.url, cfg).await.unwrap();
    let isolation: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(isolation, "serializable");
    for round in 0..5 {
        let key = format!("race-{round}");
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (b, key) = (b.clone(), key.clone());
                tokio::spawn(async move {
                    b.begin(
                        Tenant::new(b"acct"),
                        Key::new(key.as_bytes()),
                        Fingerprint::of(b"x"),
                    )
                    .await
                })
            })
            .collect();
        let mut reserved = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(Outcome::Reserved(l)) => reserved.push(l),
                Ok(Outcome::InFlight { .. }) => {}
                Ok(other) => panic!("{}", label(&other)),
                Err(e) => panic!("a racing begin failed instead of being retried: {e}"),
            }
        }
        assert_eq!(reserved.len(), 1, "round {round}");
        for l in reserved {
            l.complete(Response::new(201, "v")).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begins_racing_takeovers_of_a_freed_key_never_fail_on_an_old_snapshot() {
    // Each task takes the key when it is free and frees it at once: a begin
    // whose snapshot still shows the key freed (or its lease over) while a
    // newer version holds it must look again, never answer 503.
    let b = PostgresBackend::connect(&url(), config().max_connections(8))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move {
                let mut reserved = 0;
                for _ in 0..150 {
                    match b
                        .begin(
                            Tenant::new(b"acct"),
                            Key::new(b"hot"),
                            Fingerprint::of(b"x"),
                        )
                        .await
                    {
                        Ok(Outcome::Reserved(l)) => {
                            reserved += 1;
                            l.abort().await.unwrap();
                        }
                        Ok(Outcome::InFlight { lease_left, .. }) => {
                            assert!(!lease_left.is_zero(), "in flight with its lease over");
                        }
                        Ok(other) => panic!("{}", label(&other)),
                        Err(e) => panic!("a begin failed: {e}"),
                    }
                }
                reserved
            })
        })
        .collect();
    let mut reserved = 0;
    for t in tasks {
        reserved += t.await.unwrap();
    }
    assert!(reserved > 0);
}
