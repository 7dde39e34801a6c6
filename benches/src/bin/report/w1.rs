//! W1: the durable begin→complete cycle (512 B body, fresh keys) at 1, 8
//! and 64 concurrent callers, idemstore beside every peer.

use crate::Settings;
use crate::stores::{idemstore, idemstore_async, modes};
use idemstore_benches::peers::postgres::PostgresServer;
use idemstore_benches::peers::redis::RedisServer;
use idemstore_benches::peers::{self, BODY};
use std::io::Write;

const CALLERS: [usize; 3] = [1, 8, 64];

/// W1's rows: each store's cycles/s at 1, 8 and 64 callers, idemstore
/// `Sync` first.
pub(crate) type Rows = Vec<(String, Vec<f64>)>;

/// Measures and prints W1 if it is wanted. Starts the Redis servers the
/// later workloads use too (`appendfsync always`, then `everysec`), wanted
/// or not, and returns them with the rows.
pub(crate) fn run(out: &mut impl Write, settings: &Settings) -> (Rows, Redises) {
    let secs = settings.secs;
    let mut rows: Rows = Vec::new();
    let w1 = settings.wants("w1");
    let mut row = |name: &str, f: &dyn Fn(usize) -> f64| {
        if !w1 {
            return;
        }
        let cells: Vec<f64> = CALLERS.iter().map(|&c| f(c)).collect();
        eprintln!("{name}: {cells:?}");
        rows.push((name.to_owned(), cells));
    };
    for (i, (mode, d)) in modes().into_iter().enumerate() {
        row(&format!("idemstore {mode}"), &|c| idemstore(d, c, secs));
        if i == 0 {
            row(
                &format!("idemstore {mode}, async tasks (2 tokio workers)"),
                &|c| idemstore_async(d, c, secs),
            );
        }
    }
    row(
        "ceiling, open loop (write into preallocated space + fdatasync, batch = callers)",
        &|c| peers::raw::ceiling(c, secs),
    );
    row(
        "ceiling, closed loop (callers park; one thread writes into preallocated space + fdatasync)",
        &|c| peers::thread_floor::run(c, secs),
    );
    row(
        "growing file (append + fdatasync, batch = callers; each sync commits a size change)",
        &|c| peers::raw::growing(c, secs),
    );
    row(
        "SQLite (WAL, synchronous=FULL, INSERT OR IGNORE, UPDATE; a connection per caller)",
        &|c| peers::sqlite::run(c, secs),
    );
    row("sled 0.34, one flush (CAS, insert, flush)", &|c| {
        peers::sled::run(c, secs, false)
    });
    row(
        "sled 0.34, flush per step (CAS, flush, insert, flush)",
        &|c| peers::sled::run(c, secs, true),
    );
    row("redb (a write txn per step, expiry table)", &|c| {
        peers::redb::run(c, secs)
    });
    row("redb batched (group commit by hand)", &|c| {
        peers::redb::run_batched(c, secs)
    });
    let mut servers = Vec::new();
    for mode in ["always", "everysec"] {
        let Some(server) = RedisServer::start(mode) else {
            eprintln!(
                "Redis {mode}: skipped: redis-server is not installed (scripts/test.sh installs it)"
            );
            continue;
        };
        row(
            &format!("Redis 7, appendfsync {mode} (SET NX PX, complete script)"),
            &|c| peers::redis::setnx(&server, c, secs),
        );
        row(
            &format!("Redis 7, appendfsync {mode}, idemstore-redis backend (Lua)"),
            &|c| peers::redis::backend(&server, c, secs),
        );
        servers.push(server);
    }
    let cluster = cluster(settings);
    if let Some(c) = &cluster {
        for (name, backend) in [("", &c.plain), (", wait_replicas(1, 500 ms)", &c.waiting)] {
            row(
                &format!("Redis Cluster 3+3, appendfsync everysec, idemstore-redis backend{name}"),
                &|n| peers::redis::cycles(&c.rt, backend, n, secs),
            );
        }
    }
    let postgres = (settings.wants("w1") || settings.wants("w3"))
        .then(PostgresServer::start)
        .flatten();
    if let Some(pg) = &postgres {
        let rt = idemstore_benches::runtime();
        let backend = pg.backend(&rt, 64, "w1");
        row(
            "PostgreSQL 15, synchronous_commit on, idemstore-postgres backend (64 connections)",
            &|n| peers::redis::cycles(&rt, &backend, n, secs),
        );
        row(
            "PostgreSQL 15, synchronous_commit on, INSERT .. ON CONFLICT, UPDATE (64 connections)",
            &|n| peers::postgres::sql(&rt, pg, 64, n, secs),
        );
    } else if w1 {
        eprintln!("PostgreSQL: skipped: not installed (scripts/test.sh installs it)");
    }
    let ours = rows
        .first()
        .map_or_else(|| vec![f64::NAN; 3], |r| r.1.clone());
    if w1 {
        let _ = writeln!(
            out,
            "W1 durable begin→complete, {BODY} B body, fresh keys, cycles/s ({secs} s per cell)\n"
        );
        let _ = writeln!(
            out,
            "| store | 1 caller | 8 callers | 64 callers | idemstore Sync ÷ this, at 64 |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
        for (name, cells) in &rows {
            let c: Vec<String> = cells.iter().map(|v| format!("{v:.0}")).collect();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {:.2}× |",
                c[0],
                c[1],
                c[2],
                ours[2] / cells[2]
            );
        }
    }
    (
        rows,
        Redises {
            nodes: servers,
            cluster,
            postgres,
        },
    )
}

/// The servers the workloads run on.
pub(crate) struct Redises {
    /// One node with `appendfsync always`, then one with `everysec`.
    pub(crate) nodes: Vec<RedisServer>,
    /// A 3 + 3 node cluster, if W1 or W3 is wanted and Redis is installed.
    pub(crate) cluster: Option<ClusterBackends>,
    /// A PostgreSQL server, if W1 or W3 is wanted and it is installed.
    pub(crate) postgres: Option<PostgresServer>,
}

/// A local Redis Cluster and two backends on it: without and with
/// `wait_replicas(1, 500 ms)`, connected on `rt`, which keeps their
/// connections alive.
pub(crate) struct ClusterBackends {
    pub(crate) plain: idemstore_redis::RedisBackend,
    pub(crate) waiting: idemstore_redis::RedisBackend,
    pub(crate) rt: tokio::runtime::Runtime,
    _cluster: idemstore_tests::RedisCluster,
}

fn cluster(settings: &Settings) -> Option<ClusterBackends> {
    if !(settings.wants("w1") || settings.wants("w3")) {
        return None;
    }
    let installed = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!(
            "Redis Cluster: skipped: redis-server is not installed (scripts/test.sh installs it)"
        );
        return None;
    }
    let cluster = idemstore_tests::RedisCluster::start_with_appendfsync("everysec");
    let urls = cluster.seeds();
    let seeds: Vec<&str> = urls.split(',').collect();
    let rt = idemstore_benches::runtime();
    let connect = |config| {
        rt.block_on(idemstore_redis::RedisBackend::connect_cluster(
            &seeds, config,
        ))
        .expect("connect to the cluster")
    };
    let plain = connect(idemstore_redis::RedisConfig::default());
    // A prefix of its own: W3's keys are the same in every run.
    let waiting = connect(
        idemstore_redis::RedisConfig::default()
            .prefix("idem-waiting")
            .wait_replicas(1, std::time::Duration::from_millis(500)),
    );
    Some(ClusterBackends {
        plain,
        waiting,
        rt,
        _cluster: cluster,
    })
}
