//! The contract every backend must keep, as one suite run against each:
//! the embedded engine and Redis. A backend is done when it passes all of it.
//!
//! Times are real (Redis judges leases and expiry by its own clock): leases of
//! 400 ms and a retention of 1.5 s keep the suite quick.
//!
//! It runs on the embedded engine, one Redis node, a Redis Cluster, a
//! Redis Cluster whose writes wait for a replica (`wait_replicas(1, ..)`),
//! and PostgreSQL (each test in a schema of its own). These need
//! `IDEMSTORE_REDIS_URL`, `IDEMSTORE_REDIS_CLUSTER_URLS` and
//! `IDEMSTORE_POSTGRES_URL` (scripts/test.sh starts a redis-server, a 3 + 3
//! node cluster and a PostgreSQL server, and sets them); without them these
//! tests fail, loudly.

#![allow(clippy::unwrap_used)]

use idemstore::{Config, Fingerprint, Response, Store};
use idemstore::{Key, Tenant};
use idemstore_http::{Backend, BackendError, Lease, Outcome, RECORD_ROOM};
use idemstore_postgres::{PostgresBackend, PostgresConfig};
use idemstore_redis::{RedisBackend, RedisConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const LEASE: Duration = Duration::from_millis(400);
const RETENTION: Duration = Duration::from_millis(1500);

fn fp(s: &str) -> Fingerprint {
    Fingerprint::of(s.as_bytes())
}

fn resp(s: &str) -> Response {
    Response::new(201, s.as_bytes().to_vec()).with_header("content-type", b"text/plain".to_vec())
}

fn redis_url() -> String {
    std::env::var("IDEMSTORE_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "IDEMSTORE_REDIS_URL is not set: run the tests with ./scripts/test.sh, which installs \
             and starts redis-server, or point it at a Redis you started"
        )
    })
}

fn cluster_urls() -> Vec<String> {
    std::env::var("IDEMSTORE_REDIS_CLUSTER_URLS")
        .unwrap_or_else(|_| {
            panic!(
                "IDEMSTORE_REDIS_CLUSTER_URLS is not set: run the tests with ./scripts/test.sh, \
                 which starts a local Redis Cluster (scripts/redis-cluster.sh)"
            )
        })
        .split(',')
        .map(str::to_owned)
        .collect()
}

pub(crate) fn postgres_url() -> String {
    std::env::var("IDEMSTORE_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "IDEMSTORE_POSTGRES_URL is not set: run the tests with ./scripts/test.sh, which \
             installs and starts PostgreSQL (scripts/postgres.sh)"
        )
    })
}

/// A PostgreSQL backend in a schema of its own, so tests do not see each
/// other.
async fn postgres() -> PostgresBackend {
    let schema = format!(
        "t{}_{}",
        std::process::id(),
        PREFIX.fetch_add(1, Ordering::SeqCst)
    );
    let config = PostgresConfig::default()
        .lease(LEASE)
        .retention(RETENTION)
        .timeout(Duration::from_secs(5))
        .max_connections(8)
        .schema(schema);
    PostgresBackend::connect(&postgres_url(), config)
        .await
        .unwrap()
}

static PREFIX: AtomicU64 = AtomicU64::new(0);

/// A Redis configuration with a prefix of its own, so tests do not see each
/// other.
fn redis_config() -> RedisConfig {
    let prefix = format!(
        "t{}-{}",
        std::process::id(),
        PREFIX.fetch_add(1, Ordering::SeqCst)
    );
    RedisConfig::default()
        .prefix(prefix)
        .lease(LEASE)
        .retention(RETENTION)
}

async fn redis() -> RedisBackend {
    RedisBackend::connect(&redis_url(), redis_config())
        .await
        .unwrap()
}

async fn redis_cluster(config: RedisConfig) -> RedisBackend {
    let urls = cluster_urls();
    let seeds: Vec<&str> = urls.iter().map(String::as_str).collect();
    RedisBackend::connect_cluster(&seeds, config).await.unwrap()
}

fn embedded() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::default()
        .lease(LEASE)
        .retention(RETENTION)
        .bucket_width(Duration::from_secs(1));
    (Store::open(dir.path(), cfg).unwrap(), dir)
}

async fn reserve<B: Backend>(b: &B, tenant: &str, key: &str, f: &str) -> B::Lease {
    match b
        .begin(
            Tenant::new(tenant.as_bytes()),
            Key::new(key.as_bytes()),
            fp(f),
        )
        .await
        .unwrap()
    {
        Outcome::Reserved(l) => l,
        other => panic!(
            "expected a reservation for {tenant}/{key}, got {}",
            describe(&other)
        ),
    }
}

fn describe<L>(o: &Outcome<L>) -> String {
    match o {
        Outcome::Reserved(_) => "reserved".into(),
        Outcome::InFlight {
            lease_left,
            same_request,
            ..
        } => format!("in flight ({lease_left:?}, same: {same_request})"),
        Outcome::Replay(s) => format!("replay of {}", String::from_utf8_lossy(&s.response.body)),
        Outcome::Mismatch(_) => "mismatch".into(),
        Outcome::Expired { .. } => "expired".into(),
    }
}

async fn state<B: Backend>(b: &B, tenant: &str, key: &str, f: &str) -> String {
    match b
        .begin(
            Tenant::new(tenant.as_bytes()),
            Key::new(key.as_bytes()),
            fp(f),
        )
        .await
    {
        Ok(Outcome::Reserved(l)) => {
            drop(l);
            "reserved".into()
        }
        Ok(o) => describe(&o),
        Err(e) => format!("error: {e}"),
    }
}

async fn reserve_replay_mismatch<B: Backend>(b: B) {
    let l = reserve(&b, "t", "k", "a").await;
    assert!(
        state(&b, "t", "k", "a").await.starts_with("in flight"),
        "duplicate while running"
    );
    assert!(state(&b, "t", "k", "b").await.contains("same: false"));
    l.complete(resp("first")).await.unwrap();
    match b
        .begin(Tenant::new(b"t"), Key::new(b"k"), fp("a"))
        .await
        .unwrap()
    {
        Outcome::Replay(s) => {
            assert_eq!(s.response, resp("first"), "byte for byte");
        }
        other => panic!("{}", describe(&other)),
    }
    assert_eq!(state(&b, "t", "k", "b").await, "mismatch");
}

/// A message consumer's "once": the work runs once per id, a redelivery
/// gets its result, another payload under the id is refused, a failed run
/// frees the id, a redelivery while it runs is told so.
async fn execute_or_replay_runs_the_work_once_per_id<B: Backend>(b: B) {
    use idemstore_http::{Executed, OnceError, execute_or_replay};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let runs = AtomicUsize::new(0);
    let work = |out: &'static str| {
        let runs = &runs;
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(out.as_bytes().to_vec())
        }
    };
    let ran = execute_or_replay(&b, b"queue", "m-1", b"payload", work("done")).await;
    assert_eq!(ran.unwrap(), Executed::Ran(b"done".to_vec()));
    let again = execute_or_replay(&b, b"queue", "m-1", b"payload", work("twice")).await;
    assert_eq!(again.unwrap(), Executed::Replayed(b"done".to_vec()));
    let other = execute_or_replay(&b, b"queue", "m-1", b"other", work("x")).await;
    assert!(matches!(other, Err(OnceError::Mismatch)), "{other:?}");
    // Another scope's id is its own.
    let mine = execute_or_replay(&b, b"other-queue", "m-1", b"payload", work("own")).await;
    assert_eq!(mine.unwrap(), Executed::Ran(b"own".to_vec()));
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    let failed = execute_or_replay(&b, b"queue", "m-2", b"p", || async {
        Err::<Vec<u8>, _>("downstream refused".to_owned())
    })
    .await;
    assert!(matches!(failed, Err(OnceError::Failed(_))), "{failed:?}");
    let retried = execute_or_replay(&b, b"queue", "m-2", b"p", work("ok")).await;
    assert_eq!(retried.unwrap(), Executed::Ran(b"ok".to_vec()));

    // A redelivery while the first run is still working.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let slow = execute_or_replay(&b, b"queue", "m-3", b"p", move || async move {
        let _ = started_tx.send(());
        let _ = finish_rx.await;
        Ok::<_, String>(b"slow".to_vec())
    });
    let probe = async {
        started_rx.await.unwrap();
        let busy = execute_or_replay(&b, b"queue", "m-3", b"p", work("dup")).await;
        assert!(matches!(busy, Err(OnceError::InFlight { .. })), "{busy:?}");
        finish_tx.send(()).unwrap();
    };
    let (slow, ()) = tokio::join!(slow, probe);
    assert_eq!(slow.unwrap(), Executed::Ran(b"slow".to_vec()));
    assert_eq!(runs.load(Ordering::SeqCst), 3, "the duplicate never ran");

    // A consumer that stops mid-work (its future dropped) leaves the id
    // reserved: the redelivery is told so instead of running the work again.
    let cut = tokio::time::timeout(
        Duration::from_millis(50),
        execute_or_replay(&b, b"queue", "m-4", b"p", || async {
            std::future::pending::<Result<Vec<u8>, String>>().await
        }),
    )
    .await;
    assert!(cut.is_err(), "cut short");
    let redelivered = execute_or_replay(&b, b"queue", "m-4", b"p", work("again")).await;
    assert!(
        matches!(redelivered, Err(OnceError::InFlight { .. })),
        "{redelivered:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

/// A record kept for a retention of its own (a route's): the replay says
/// so, and it is kept past the backend's default.
async fn a_record_is_kept_for_the_retention_it_was_begun_with<B: Backend>(b: B) {
    let week = Duration::from_secs(7 * 24 * 3600);
    let lease = match b
        .begin_with(Tenant::new(b"t"), Key::new(b"long"), fp("a"), Some(week))
        .await
        .unwrap()
    {
        Outcome::Reserved(l) => l,
        other => panic!("{}", describe(&other)),
    };
    lease.complete(resp("kept")).await.unwrap();
    match b
        .begin(Tenant::new(b"t"), Key::new(b"long"), fp("a"))
        .await
        .unwrap()
    {
        Outcome::Replay(s) => {
            let kept = s.expires_at.0 - s.completed_at.0;
            assert_eq!(kept, u64::try_from(week.as_millis()).unwrap());
        }
        other => panic!("{}", describe(&other)),
    }
    // A retention not longer than the lease is refused.
    let short = b
        .begin_with(
            Tenant::new(b"t"),
            Key::new(b"short"),
            fp("a"),
            Some(Duration::from_millis(1)),
        )
        .await;
    assert!(short.is_err());
}

/// The layer names the body members that differ from the first request's
/// record, which a mismatch must therefore carry, on every backend.
async fn a_mismatch_carries_the_first_request_s_record<B: Backend>(b: B) {
    let l = reserve(&b, "t", "k", "a").await;
    l.complete(resp("first")).await.unwrap();
    match b
        .begin(Tenant::new(b"t"), Key::new(b"k"), fp("b"))
        .await
        .unwrap()
    {
        Outcome::Mismatch(Some(s)) => {
            assert_eq!(s.response, resp("first"));
            assert_eq!(s.fingerprint, fp("a"));
        }
        other => panic!("{}", describe(&other)),
    }
}

async fn tenants_are_independent<B: Backend>(b: B) {
    let a = reserve(&b, "alice", "k", "x").await;
    let o = reserve(&b, "bob", "k", "x").await;
    a.complete(resp("alice")).await.unwrap();
    o.complete(resp("bob")).await.unwrap();
    assert_eq!(state(&b, "alice", "k", "x").await, "replay of alice");
    assert_eq!(state(&b, "bob", "k", "x").await, "replay of bob");
}

async fn abort_and_drop_free_the_key<B: Backend>(b: B) {
    reserve(&b, "t", "k", "a").await.abort().await.unwrap();
    let l = reserve(&b, "t", "k", "a").await;
    drop(l); // the handler panicked
    // A dropped lease may be released in the background: allow a moment.
    let mut freed = false;
    for _ in 0..50 {
        if state(&b, "t", "k", "a").await == "reserved" {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "a dropped lease must free its key");
}

async fn takeover_fences_the_old_holder<B: Backend>(b: B) {
    let old = reserve(&b, "t", "k", "a").await;
    tokio::time::sleep(LEASE + Duration::from_millis(50)).await;
    let new = reserve(&b, "t", "k", "a").await;
    let e = old.complete(resp("stale")).await.unwrap_err();
    assert!(matches!(e, BackendError::Fenced(_)), "{e}");
    new.complete(resp("fresh")).await.unwrap();
    assert_eq!(state(&b, "t", "k", "a").await, "replay of fresh");
}

async fn late_completion_without_takeover_is_kept<B: Backend>(b: B) {
    let l = reserve(&b, "t", "k", "a").await;
    tokio::time::sleep(LEASE + Duration::from_millis(50)).await;
    l.complete(resp("late")).await.unwrap();
    assert_eq!(state(&b, "t", "k", "a").await, "replay of late");
}

async fn renew_extends_the_lease<B: Backend>(b: B) {
    let mut l = reserve(&b, "t", "k", "a").await;
    for _ in 0..3 {
        tokio::time::sleep(LEASE / 2).await;
        l.renew().await.unwrap();
    }
    assert!(
        state(&b, "t", "k", "a").await.starts_with("in flight"),
        "renewed past its first lease"
    );
    l.complete(resp("ok")).await.unwrap();
}

async fn completed_keys_expire_after_the_retention<B: Backend>(b: B) {
    reserve(&b, "t", "k", "a")
        .await
        .complete(resp("v"))
        .await
        .unwrap();
    assert_eq!(state(&b, "t", "k", "a").await, "replay of v");
    tokio::time::sleep(RETENTION + Duration::from_millis(200)).await;
    assert_eq!(
        state(&b, "t", "k", "b").await,
        "reserved",
        "expired: a new request runs"
    );
}

/// The grace of the backends that refuse expired keys.
const GRACE: Duration = Duration::from_millis(2500);

/// On a backend that refuses expired keys for `GRACE`: a key is refused
/// (whatever the request) from its expiry until the grace ends, then runs.
/// The engine's compactor (every 200 ms here) meanwhile writes the key's
/// tombstone and deletes its 1 s bucket, so the refusal is checked on both
/// sides of that.
async fn an_expired_key_is_refused_for_the_grace_then_runs<B: Backend>(b: B) {
    reserve(&b, "t", "k", "a")
        .await
        .complete(resp("v"))
        .await
        .unwrap();
    let completed = std::time::Instant::now();
    assert_eq!(state(&b, "t", "k", "a").await, "replay of v");
    tokio::time::sleep(RETENTION + Duration::from_millis(200)).await;
    assert_eq!(state(&b, "t", "k", "a").await, "expired");
    assert_eq!(state(&b, "t", "k", "b").await, "expired", "any request");
    assert_eq!(
        state(&b, "u", "k", "a").await,
        "reserved",
        "another tenant's key"
    );
    // Past the end of the record's bucket and a compaction pass or two.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(state(&b, "t", "k", "a").await, "expired");
    let free_at = completed + RETENTION + GRACE + Duration::from_millis(300);
    tokio::time::sleep_until(free_at.into()).await;
    assert_eq!(
        state(&b, "t", "k", "a").await,
        "reserved",
        "the grace ended"
    );
}

fn wall_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The times a replay reports: when the response was stored (between the
/// begin and the complete, by the store's clock, which here is the same
/// machine's) and when it expires (one retention later).
async fn a_replay_says_when_it_was_stored_and_when_it_expires<B: Backend>(b: B) {
    let before = wall_ms();
    let l = reserve(&b, "t", "k", "a").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    l.complete(resp("v")).await.unwrap();
    let after = wall_ms();
    let Ok(Outcome::Replay(stored)) = b.begin(Tenant::new(b"t"), Key::new(b"k"), fp("a")).await
    else {
        panic!("expected a replay")
    };
    let (started, completed) = (stored.started_at.0, stored.completed_at.0);
    assert!(
        before <= started + 5 && started + 40 <= completed && completed <= after + 5,
        "started {started}, completed {completed}, not within [{before}, {after}]"
    );
    assert_eq!(
        stored.expires_at.0 - completed,
        u64::try_from(RETENTION.as_millis()).unwrap()
    );
}

async fn racing_begins_get_one_reservation_per_key<B: Backend + Clone>(b: B) {
    let wins = Arc::new(std::sync::Mutex::new(vec![0u32; 20]));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let b = b.clone();
            let wins = wins.clone();
            tokio::spawn(async move {
                for k in 0..20 {
                    if let Ok(Outcome::Reserved(l)) = b
                        .begin(
                            Tenant::new(b"t"),
                            Key::new(format!("k{k}").as_bytes()),
                            fp("a"),
                        )
                        .await
                    {
                        wins.lock().unwrap()[k] += 1;
                        l.complete(resp("x")).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        wins.lock().unwrap().iter().all(|&w| w == 1),
        "{:?}",
        wins.lock().unwrap()
    );
}

async fn an_abandoned_lease_keeps_its_key_until_the_lease_ends<B: Backend>(b: B) {
    let l = reserve(&b, "t", "k", "a").await;
    l.abandon(); // the runtime dropped the work mid-handler
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        state(&b, "t", "k", "a").await.starts_with("in flight"),
        "not freed: its side effects may have happened"
    );
    tokio::time::sleep(LEASE).await;
    assert_eq!(
        state(&b, "t", "k", "a").await,
        "reserved",
        "free once the lease ended"
    );
}

async fn in_flight_says_how_long_the_holder_has_run<B: Backend>(b: B) {
    let _l = reserve(&b, "t", "k", "a").await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    match b
        .begin(Tenant::new(b"t"), Key::new(b"k"), fp("a"))
        .await
        .unwrap()
    {
        Outcome::InFlight {
            lease_left,
            running_for,
            same_request,
        } => {
            assert!(same_request);
            assert!(lease_left <= LEASE);
            let ran = running_for.expect("both backends know when the holder started");
            assert!(ran >= Duration::from_millis(100), "{ran:?}");
            assert!(ran < LEASE, "{ran:?}");
        }
        other => panic!("expected in flight, got {}", describe(&other)),
    }
}

async fn a_response_the_format_cannot_hold_does_not_fit<B: Backend>(b: B) {
    let l = reserve(&b, "t", "k", "a").await;
    let mut huge = resp("v");
    huge.headers = (0..70_000).map(|i| (format!("h{i}"), Vec::new())).collect();
    assert!(matches!(l.fits(&huge), Err(BackendError::TooLarge(_))));
    assert!(l.fits(&resp("v")).is_ok());
    l.complete(resp("v")).await.unwrap();
}

/// What `fits` accepts, `complete` stores and a retry replays, up to and
/// past the backend's largest record: a lease that said yes and then
/// failed to store would free the key after the handler ran.
async fn what_fits_is_stored_and_what_does_not_is_refused_before<B: Backend>(b: B) {
    let bound = b.max_response_body().unwrap_or(1 << 20);
    let mut refused = 0;
    for (i, extra) in [0, RECORD_ROOM / 2, RECORD_ROOM + 4096]
        .into_iter()
        .enumerate()
    {
        let key = format!("k{i}");
        let l = reserve(&b, "t", &key, "a").await;
        // The body at the bound, and `extra` bytes of headers on top.
        let r = Response::new(201, vec![7u8; bound]).with_header("x-pad", vec![b'p'; extra]);
        match l.fits(&r) {
            Ok(()) => {
                l.complete(r).await.unwrap();
                match b
                    .begin(Tenant::new("t"), Key::new(&key), fp("a"))
                    .await
                    .unwrap()
                {
                    Outcome::Replay(s) => assert_eq!(s.response.body.len(), bound),
                    other => panic!("{key}: expected a replay, got {}", describe(&other)),
                }
            }
            Err(BackendError::TooLarge(_)) => {
                refused += 1;
                l.abort().await.unwrap();
            }
            Err(e) => panic!("{key}: {e}"),
        }
    }
    if b.max_response_body().is_some() {
        assert!(refused >= 1, "headers past the record's room must not fit");
    }
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod embedded_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (b, _dir) = embedded();
                    super::$case(b).await;
                }
            )*
        }
        mod redis_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(redis().await).await;
                }
            )*
        }
        mod redis_cluster_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(redis_cluster(redis_config()).await).await;
                }
            )*
        }
        mod redis_cluster_waiting_for_a_replica {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let config = redis_config().wait_replicas(1, Duration::from_secs(1));
                    super::$case(redis_cluster(config).await).await;
                }
            )*
        }
        mod postgres_backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(postgres().await).await;
                }
            )*
        }
    };
}

/// The refusal of expired keys, on each backend configured for it.
mod refusing_expired_keys {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_backend() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::default()
            .lease(LEASE)
            .retention(RETENTION)
            .bucket_width(Duration::from_secs(1))
            .compaction_interval(Duration::from_millis(200))
            .refuse_expired_keys_for(GRACE);
        let store = Store::open(dir.path(), cfg).unwrap();
        an_expired_key_is_refused_for_the_grace_then_runs(store.clone()).await;
        assert!(store.stats().tombstones_written >= 1, "{:?}", store.stats());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_backend() {
        let config = redis_config().refuse_expired_keys_for(GRACE);
        let b = RedisBackend::connect(&redis_url(), config).await.unwrap();
        an_expired_key_is_refused_for_the_grace_then_runs(b).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster_backend() {
        let config = redis_config().refuse_expired_keys_for(GRACE);
        an_expired_key_is_refused_for_the_grace_then_runs(redis_cluster(config).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster_waiting_for_a_replica() {
        let config = redis_config()
            .refuse_expired_keys_for(GRACE)
            .wait_replicas(1, Duration::from_secs(1));
        an_expired_key_is_refused_for_the_grace_then_runs(redis_cluster(config).await).await;
    }
}

suite!(
    reserve_replay_mismatch,
    a_mismatch_carries_the_first_request_s_record,
    execute_or_replay_runs_the_work_once_per_id,
    a_record_is_kept_for_the_retention_it_was_begun_with,
    tenants_are_independent,
    abort_and_drop_free_the_key,
    takeover_fences_the_old_holder,
    late_completion_without_takeover_is_kept,
    renew_extends_the_lease,
    completed_keys_expire_after_the_retention,
    racing_begins_get_one_reservation_per_key,
    an_abandoned_lease_keeps_its_key_until_the_lease_ends,
    in_flight_says_how_long_the_holder_has_run,
    a_response_the_format_cannot_hold_does_not_fit,
    what_fits_is_stored_and_what_does_not_is_refused_before,
    a_replay_says_when_it_was_stored_and_when_it_expires,
);
