//! W2: replay latency (p50/p99) in-process, beside a Redis GET on loopback.

use crate::Settings;
use idemstore::{Config, Durability, Fingerprint, Response, Store};
use idemstore::{Key, Tenant};
use idemstore_benches::peers::redis::RedisServer;
use std::io::Write;
use std::time::{Duration, Instant};

/// W2's rows: (lookup, p50 µs, p99 µs), idemstore first.
pub(crate) type Rows = Vec<(String, f64, f64)>;

/// Measures and prints W2 if it is wanted (the Redis row on `redis`).
pub(crate) fn run(out: &mut impl Write, settings: &Settings, redis: Option<&RedisServer>) -> Rows {
    let w2 = if settings.wants("w2") {
        replay(redis)
    } else {
        Vec::new()
    };
    if !w2.is_empty() {
        let _ = writeln!(out, "\nW2 replay, one caller, 1 KB body\n");
        let _ = writeln!(out, "| lookup | p50 µs | p99 µs |");
        let _ = writeln!(out, "| --- | --- | --- |");
    }
    for (name, p50, p99) in &w2 {
        let _ = writeln!(out, "| {name} | {p50:.2} | {p99:.2} |");
    }
    w2
}

/// p50 and p99 of `n` timed calls of `f`, in µs.
fn percentiles(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let mut t: Vec<Duration> = (0..n)
        .map(|i| {
            let s = Instant::now();
            f(i);
            s.elapsed()
        })
        .collect();
    t.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(t[n / 2]), us(t[n * 99 / 100]))
}

/// W2: `begin` on completed keys (1 KB bodies), one caller, in-process; and a
/// plain Redis GET of a 1 KB value over loopback for scale.
fn replay(redis: Option<&RedisServer>) -> Vec<(String, f64, f64)> {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let store =
        Store::open(dir.path(), Config::default().durability(Durability::None)).expect("open");
    let keys = 10_000;
    let fp = Fingerprint::of(b"r");
    for i in 0..keys {
        let Ok(idemstore::Begin::Reserved(r)) =
            store.begin(Tenant::new("t"), Key::new(&format!("k{i}")), fp)
        else {
            panic!("fresh key")
        };
        r.complete(Response::new(201, vec![b'x'; 1024]))
            .expect("complete");
    }
    let mut out = Vec::new();
    let (p50, p99) = percentiles(100_000, |i| {
        let k = format!("k{}", (i * 7919) % keys);
        assert!(matches!(
            store.begin(Tenant::new("t"), Key::new(&k), fp),
            Ok(idemstore::Begin::Replay(_))
        ));
    });
    out.push(("idemstore replay (in-process begin)".to_owned(), p50, p99));
    if let Some(server) = redis {
        let client = redis::Client::open(server.url()).expect("url");
        let mut conn = client.get_connection().expect("connect");
        let _: () = redis::cmd("SET")
            .arg("v")
            .arg(vec![b'x'; 1024])
            .query(&mut conn)
            .expect("set");
        let (p50, p99) = percentiles(20_000, |_| {
            let v: Vec<u8> = redis::cmd("GET").arg("v").query(&mut conn).expect("get");
            assert_eq!(v.len(), 1024);
        });
        out.push(("Redis GET over loopback (1 KB)".to_owned(), p50, p99));
    }
    out
}
