//! W3: the mixed workload on the `Backend` trait, on the embedded store in
//! each durability mode, on Redis and on PostgreSQL.

use crate::Settings;
use crate::stores::{modes, with_store};
use crate::table::ratio_table;
use crate::w1::Redises;
use idemstore::Config;
use std::io::Write;

/// Measures and prints W3 if it is wanted (on each of `servers` too:
/// `appendfsync always`, then `everysec`, then the cluster).
pub(crate) fn run(
    out: &mut impl Write,
    settings: &Settings,
    rt: &tokio::runtime::Runtime,
    servers: &Redises,
) {
    let secs = settings.secs;
    let mut w3: Vec<(String, f64)> = Vec::new();
    let w3_on = settings.wants("w3");
    for (mode, d) in modes().into_iter().filter(|_| w3_on) {
        let r = with_store(Config::default().durability(d), |store| {
            idemstore_benches::mixed::run(rt, store.clone(), 64, secs)
        });
        eprintln!("W3 idemstore {mode}: {r:.0}");
        w3.push((format!("idemstore {mode}"), r));
    }
    for (server, mode) in servers
        .nodes
        .iter()
        .zip(["always", "everysec"])
        .filter(|_| w3_on)
    {
        let url = server.url();
        let backend = rt
            .block_on(idemstore_redis::RedisBackend::connect(
                &url,
                idemstore_redis::RedisConfig::default(),
            ))
            .expect("connect");
        let r = idemstore_benches::mixed::run(rt, backend, 64, secs);
        eprintln!("W3 Redis {mode}: {r:.0}");
        w3.push((format!("Redis 7, appendfsync {mode}"), r));
    }
    if let Some(c) = servers.cluster.as_ref().filter(|_| w3_on) {
        for (name, backend) in [("", &c.plain), (", wait_replicas(1, 500 ms)", &c.waiting)] {
            let r = idemstore_benches::mixed::run(rt, backend.clone(), 64, secs);
            eprintln!("W3 Redis Cluster{name}: {r:.0}");
            w3.push((format!("Redis Cluster 3+3, appendfsync everysec{name}"), r));
        }
    }
    if let Some(pg) = servers.postgres.as_ref().filter(|_| w3_on) {
        let backend = pg.backend(rt, 64, "w3");
        let r = idemstore_benches::mixed::run(rt, backend, 64, secs);
        eprintln!("W3 PostgreSQL: {r:.0}");
        w3.push((
            "PostgreSQL 15, synchronous_commit on, idemstore-postgres (64 connections)".into(),
            r,
        ));
    }
    if w3_on {
        ratio_table(
            out,
            "W3 mixed (80% new, 15% replay, 5% conflicting duplicate), 64 tasks on the `Backend` trait, ops/s",
            "| store | ops/s | idemstore Sync ÷ this |",
            &w3,
            (|first, r| first / r, "×"),
        );
    }
}
