//! `payments` processes on a Redis Cluster, over real TCP: simultaneous
//! duplicates across two processes run once; a master `kill -9`ed under
//! load, then failed over, loses no acknowledged completion with
//! `--redis-wait 1`; a slot migrated under load (`redis-cli --cluster
//! reshard`) loses nothing and runs nothing twice.
//!
//! Every payment's amount is unique to its idempotency key, so the payments
//! the processes hold say which keys ran, and how often.
//!
//! The duplicates test uses the cluster the test command starts
//! (`IDEMSTORE_REDIS_CLUSTER_URLS`); the failover and reshard tests start
//! clusters of their own (`scripts/redis-cluster.sh`), since they change
//! them.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use idemstore_tests::{Payments, RedisCluster, Reply, send};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn post(addr: SocketAddr, tenant: &str, key: &str, amount: u64) -> Reply {
    let body = format!(r#"{{"amount":{amount},"currency":"EUR"}}"#);
    let req = Request::builder()
        .method("POST")
        .uri("/v1/payments")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("x-api-key", tenant)
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    send(addr, req).await
}

/// The amounts of every payment `tenant` has on these processes: the
/// handler runs, one per payment.
async fn executed(addrs: &[SocketAddr], tenant: &str) -> Vec<u64> {
    let mut amounts = Vec::new();
    for &addr in addrs {
        let req = Request::builder()
            .method("GET")
            .uri("/v1/payments")
            .header("host", addr.to_string())
            .header("x-api-key", tenant)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let list = send(addr, req).await.json();
        amounts.extend(
            list.as_array()
                .unwrap()
                .iter()
                .map(|p| p["amount"].as_u64().unwrap()),
        );
    }
    amounts
}

#[tokio::test]
async fn two_processes_on_a_cluster_run_simultaneous_duplicates_once() {
    let seeds = std::env::var("IDEMSTORE_REDIS_CLUSTER_URLS").unwrap_or_else(|_| {
        panic!(
            "IDEMSTORE_REDIS_CLUSTER_URLS is not set: run ./scripts/test.sh, which starts a cluster"
        )
    });
    let a = Payments::start_cluster(&seeds, 1);
    let b = Payments::start_cluster(&seeds, 0);
    let tenant = format!("cluster-dups-{}", std::process::id());
    // Ten keys (in different slots), ten simultaneous copies of each.
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            let tenant = tenant.clone();
            tokio::spawn(async move {
                let k = i % 10;
                (k, post(addr, &tenant, &format!("dup-{k}"), 1000 + k).await)
            })
        })
        .collect();
    let mut ids: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for t in tasks {
        let (k, r) = t.await.unwrap();
        match r.status {
            StatusCode::CREATED => {
                ids.entry(k)
                    .or_default()
                    .insert(r.json()["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert!(
        ids.values().all(|s| s.len() == 1),
        "every 201 of a key is the same payment: {ids:?}"
    );
    let mut amounts = executed(&[a.addr, b.addr], &tenant).await;
    amounts.sort_unstable();
    assert_eq!(
        amounts,
        (1000..1010).collect::<Vec<_>>(),
        "each key ran exactly once across both processes"
    );
    a.stop();
    b.stop();
}

/// What a load of fresh keys saw.
#[derive(Default)]
struct Seen {
    /// Every key sent, with its amount.
    sent: Vec<(String, u64)>,
    /// Keys answered 201, with the payment id the client was given.
    acknowledged: BTreeMap<String, String>,
    /// How many answers of each status.
    statuses: BTreeMap<u16, usize>,
}

/// Sends fresh keys from `workers` clients, alternating between `addrs`,
/// until `stop`.
async fn load(addrs: Vec<SocketAddr>, tenant: String, workers: u64, stop: Arc<AtomicBool>) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (addrs, tenant, stop, seen) =
                (addrs.clone(), tenant.clone(), stop.clone(), seen.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let amount = (w + 1) * 1_000_000 + n;
                    let key = format!("load-{amount}");
                    let addr = addrs[usize::try_from(n).unwrap() % addrs.len()];
                    seen.lock().unwrap().sent.push((key.clone(), amount));
                    let r = post(addr, &tenant, &key, amount).await;
                    let mut s = seen.lock().unwrap();
                    *s.statuses.entry(r.status.as_u16()).or_default() += 1;
                    if r.status == StatusCode::CREATED {
                        let id = r.json()["id"].as_str().unwrap().to_owned();
                        s.acknowledged.insert(key, id);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap()
}

/// Retries every acknowledged key: how many did not replay the payment the
/// client was given (each a completion the cluster lost).
async fn lost(addrs: &[SocketAddr], tenant: &str, seen: &Seen) -> Vec<String> {
    let amounts: BTreeMap<&str, u64> = seen.sent.iter().map(|(k, a)| (k.as_str(), *a)).collect();
    let mut lost = Vec::new();
    for (i, (key, id)) in seen.acknowledged.iter().enumerate() {
        let r = post(addrs[i % addrs.len()], tenant, key, amounts[key.as_str()]).await;
        let same = r.status == StatusCode::CREATED
            && r.replayed()
            && r.json()["id"].as_str() == Some(id.as_str());
        if !same {
            lost.push(format!("{key}: {} {:?}", r.status, r.body));
        }
    }
    lost
}

/// Amounts whose handler ran more than once.
fn ran_twice(amounts: &[u64]) -> Vec<u64> {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for a in amounts {
        *count.entry(*a).or_default() += 1;
    }
    count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(a, _)| a)
        .collect()
}

/// A load on two processes; a second in, one master's replica is paused
/// (SIGSTOP) and the master's link to it closed, so the writes of the next
/// second reach only the master (on loopback a replica is otherwise never
/// far enough behind for a kill to lose anything); the master is killed with SIGKILL and the replica
/// resumed; the cluster promotes it; the killed node comes back (as its
/// replica) so the promoted master has a replica again; the load goes on a
/// second. Returns what the clients saw, and the processes (still running).
async fn failover_under_load(
    cluster: &RedisCluster,
    wait: u32,
) -> (Seen, Payments, Payments, String) {
    let seeds = cluster.seeds();
    let a = Payments::start_cluster(&seeds, wait);
    let b = Payments::start_cluster(&seeds, wait);
    let tenant = format!("failover-{wait}");
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(vec![a.addr, b.addr], tenant.clone(), 16, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let nodes = cluster.nodes();
    let victim = nodes
        .iter()
        .find(|n| n.master && n.has_slots)
        .unwrap()
        .clone();
    let replica = nodes
        .iter()
        .find(|n| n.replica_of.as_deref() == Some(victim.id.as_str()))
        .unwrap()
        .clone();
    cluster.signal(replica.port, "-STOP");
    cluster.cut_replicas(victim.port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill9(victim.port);
    cluster.signal(replica.port, "-CONT");
    let c = cluster.clone();
    let took = tokio::task::spawn_blocking(move || {
        c.wait_failed_over(victim.port, Duration::from_secs(60))
    })
    .await
    .unwrap();
    eprintln!("failover of {} took {took:?}", victim.port);
    cluster.restart(victim.port);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.wait_replicated(Duration::from_secs(60)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = running.await.unwrap();
    eprintln!(
        "failover load (--redis-wait {wait}): {} sent, {} acknowledged, statuses {:?}",
        seen.sent.len(),
        seen.acknowledged.len(),
        seen.statuses
    );
    (seen, a, b, tenant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_loses_no_acknowledged_completion_with_redis_wait_1() {
    let cluster = RedisCluster::start();
    let (seen, a, b, tenant) = failover_under_load(&cluster, 1).await;
    assert!(
        seen.acknowledged.len() > 50,
        "too little load to say anything: {:?}",
        seen.statuses
    );
    let addrs = [a.addr, b.addr];
    let lost = lost(&addrs, &tenant, &seen).await;
    assert!(
        lost.is_empty(),
        "acknowledged, then lost by the failover: {lost:?}"
    );
    let amounts = executed(&addrs, &tenant).await;
    assert_eq!(ran_twice(&amounts), Vec::<u64>::new(), "no key ran twice");
    assert!(amounts.len() <= seen.sent.len());
    a.stop();
    b.stop();
}

/// A measurement, not a check: what the same failover loses without
/// `--redis-wait` (Redis replicates asynchronously, so a kill can lose the
/// last writes the master acknowledged). Prints the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored to see what a failover loses without --redis-wait"]
async fn what_a_failover_loses_without_redis_wait() {
    for round in 0..3 {
        let cluster = RedisCluster::start();
        let (seen, a, b, tenant) = failover_under_load(&cluster, 0).await;
        let addrs = [a.addr, b.addr];
        let lost = lost(&addrs, &tenant, &seen).await;
        let amounts = executed(&addrs, &tenant).await;
        eprintln!(
            "round {round}: without --redis-wait: {} of {} acknowledged completions lost, {} keys ran twice; e.g. {:?}",
            lost.len(),
            seen.acknowledged.len(),
            ran_twice(&amounts).len(),
            lost.first()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_under_load_loses_nothing_and_runs_nothing_twice() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seeds();
    let a = Payments::start_cluster(&seeds, 1);
    let b = Payments::start_cluster(&seeds, 1);
    let tenant = "reshard".to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(vec![a.addr, b.addr], tenant.clone(), 16, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let masters: Vec<_> = cluster
        .nodes()
        .into_iter()
        .filter(|n| n.master && n.has_slots)
        .collect();
    let (from, to) = (masters[0].clone(), masters[1].clone());
    let c = cluster.clone();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || c.reshard(&from, &to, 1000))
        .await
        .unwrap();
    eprintln!("reshard of 1000 slots took {:?}", started.elapsed(),);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = running.await.unwrap();
    eprintln!(
        "reshard load: {} sent, {} acknowledged, statuses {:?}",
        seen.sent.len(),
        seen.acknowledged.len(),
        seen.statuses
    );
    let addrs = [a.addr, b.addr];
    let lost = lost(&addrs, &tenant, &seen).await;
    assert!(
        lost.is_empty(),
        "acknowledged, then lost by the reshard: {lost:?}"
    );
    // Every key sent, retried until it is answered: each ran exactly once.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, (key, amount)) in seen.sent.iter().enumerate() {
        loop {
            let r = post(addrs[i % 2], &tenant, key, *amount).await;
            if r.status == StatusCode::CREATED {
                break;
            }
            assert!(
                Instant::now() < deadline && r.status != StatusCode::UNPROCESSABLE_ENTITY,
                "{key} still answers {} {:?}",
                r.status,
                r.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut amounts = executed(&addrs, &tenant).await;
    assert_eq!(ran_twice(&amounts), Vec::<u64>::new(), "no key ran twice");
    amounts.sort_unstable();
    let mut expected: Vec<u64> = seen.sent.iter().map(|(_, a)| *a).collect();
    expected.sort_unstable();
    assert_eq!(amounts, expected, "every key ran exactly once");
    a.stop();
    b.stop();
}

/// A backend that waits for one replica (300 ms), with `connections`
/// connections, on `cluster`; and the ports of the cluster's replicas.
async fn waiting_backend(
    cluster: &RedisCluster,
    connections: usize,
) -> (idemstore_redis::RedisBackend, Vec<u16>) {
    use idemstore_redis::{RedisBackend, RedisConfig};
    let urls = cluster.seeds();
    let seeds: Vec<&str> = urls.split(',').collect();
    let backend = RedisBackend::connect_cluster(
        &seeds,
        RedisConfig::default()
            .wait_replicas(1, Duration::from_millis(300))
            .connections(connections),
    )
    .await
    .unwrap();
    let replicas: Vec<u16> = cluster
        .nodes()
        .into_iter()
        .filter(|n| n.replica_of.is_some())
        .map(|n| n.port)
        .collect();
    assert_eq!(replicas.len(), 3);
    (backend, replicas)
}

/// With `wait_replicas`, a completion no replica holds is answered
/// `Deferred` and never counted as stored until a replica holds it: its
/// background retries write again each time, so their `WAIT`s count what
/// the replicas hold whichever connection they go on. (Three connections,
/// so the first retry goes on the one whose last write to that master, the
/// reservation, was made before the replicas paused. Redis 7.0 sets a
/// connection's offset on every command, written or not, so there a retry
/// that wrote nothing would not be confirmed either; later Redis versions
/// set it only on writes, which the re-write covers.) Once the replicas are
/// back it is stored and replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_no_replica_holds_is_deferred_until_one_does() {
    use idemstore::{Fingerprint, Key, Response, Tenant};
    use idemstore_http::{Backend, BackendError, Lease, Outcome};

    let cluster = RedisCluster::start();
    let (backend, replicas) = waiting_backend(&cluster, 3).await;
    let begin = || backend.begin(Tenant::new(b"t"), Key::new(b"late"), Fingerprint::of(b"r"));
    let Outcome::Reserved(held) = begin().await.unwrap() else {
        panic!("fresh")
    };
    for &p in &replicas {
        cluster.signal(p, "-STOP");
    }
    let e = held.complete(Response::new(201, "paid")).await.unwrap_err();
    assert!(matches!(e, BackendError::Deferred(_)), "{e}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        backend.deferred_completions(),
        1,
        "a retry confirmed a completion no replica holds"
    );
    for &p in &replicas {
        cluster.signal(p, "-CONT");
    }
    tokio::time::timeout(Duration::from_secs(20), backend.settled())
        .await
        .expect("the deferred completion is stored once the replicas are back");
    tokio::time::sleep(Duration::from_millis(400)).await;
    match begin().await.unwrap() {
        Outcome::Replay(s) => assert_eq!(&s.response.body[..], b"paid"),
        other => panic!("expected the replay, got {other:?}"),
    }
}

/// With `wait_replicas`, a reservation no replica holds is given back and
/// answered unavailable (nothing may run on it); the next reservation on
/// that master within the replica timeout is refused without asking; once
/// the replicas are back, the key is free and the request runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_no_replica_holds_is_given_back_then_refused_at_once() {
    use idemstore::{Fingerprint, Key, Tenant};
    use idemstore_http::{Backend, BackendError, Outcome};

    let cluster = RedisCluster::start();
    let (backend, replicas) = waiting_backend(&cluster, 4).await;
    let begin = || {
        backend.begin(
            Tenant::new(b"t"),
            Key::new(b"refused"),
            Fingerprint::of(b"r"),
        )
    };
    for &p in &replicas {
        cluster.signal(p, "-STOP");
    }
    let e = begin().await.unwrap_err();
    assert!(
        matches!(&e, BackendError::Unavailable(m) if m.contains("the reservation did not reach 1 replica")),
        "{e}"
    );
    let e = begin().await.unwrap_err();
    assert!(
        matches!(&e, BackendError::Unavailable(m) if m.contains("a recent write did not reach")),
        "{e}"
    );
    for &p in &replicas {
        cluster.signal(p, "-CONT");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(begin().await.unwrap(), Outcome::Reserved(_)));
}
