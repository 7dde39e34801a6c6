//! A quick side-by-side report of every workload (W1-W6, README "Figures"),
//! idemstore beside its peers in one run, printed as markdown with ratios.
//! W1: the durable begin→complete cycle (512 B body, fresh keys) at 1, 8 and
//! 64 concurrent callers.
//!
//! `cargo run --release -p idemstore-benches --bin report -- [SECONDS_PER_CELL] [KEYS]`
//!
//! Peers (`idemstore_benches::peers`, a module each), each written the way a
//! competent user would build an idempotency store on it:
//! - the ceiling, open loop: write the bytes a batch of `callers`
//!   completions writes into preallocated, fsynced space, then fdatasync,
//!   in a loop (the best a store could do on this disk); the same loop
//!   appending to a growing file, whose syncs also commit a size change,
//!   as a reference;
//! - the ceiling, closed loop: `callers` threads each queue one record and
//!   park; one thread writes the batch into preallocated space and
//!   fdatasyncs, another wakes them (group commit with no store at all; at
//!   64 callers, where the CPUs are the limit, what parking and waking
//!   threads costs);
//! - SQLite (rusqlite, bundled): WAL, `synchronous = FULL`, a connection
//!   per caller, `INSERT OR IGNORE` to reserve, a fenced `UPDATE` to
//!   complete;
//! - PostgreSQL (the server `scripts/postgres.sh` starts): through this
//!   project's backend, and as plain SQL (`INSERT .. ON CONFLICT DO
//!   NOTHING`, `UPDATE`, 64 connections, `synchronous_commit = on`);
//! - sled 0.34: compare-and-swap to reserve, insert on completion, `flush`
//!   after the completion (idemstore's guarantee), and a variant that also
//!   flushes the reservation;
//! - redb: one write transaction per step (reserve; complete with a row in
//!   an expiry table, redb having no TTL), each committed with its default
//!   immediate durability; and a batched variant, where one committer thread
//!   applies every queued step in one transaction (group commit by hand);
//! - Redis 7 on loopback (started here when `redis-server` is installed),
//!   with `appendfsync always` and `everysec`, two ways: as the issue
//!   describes the peer (`SET NX PX` to reserve, a script to complete with
//!   fencing, one multiplexed connection; the targets use this one), and
//!   through this project's Redis backend (one Lua script per operation);
//! - a local Redis Cluster of 3 masters and 3 replicas (`appendfsync
//!   everysec`, `scripts/redis-cluster.sh`) through this project's backend,
//!   without and with `wait_replicas(1, 500 ms)` (a `WAIT` after every
//!   write).
//!
//! W1 cost: CPU per cycle and latency percentiles (p50, p99, p99.9) of
//! idemstore's cycle at 1, 8 and 64 callers, as threads and async tasks.
//!
//! W2: replay latency (p50/p99) in-process, beside a Redis GET on loopback.
//!
//! W3: the mixed workload on the `Backend` trait (embedded, Redis, and the
//! Redis Cluster without and with `wait_replicas`).
//! W4/W5: open time, heap and disk for KEYS live keys (the `index_memory`
//! binary, run as a child process). W6: HTTP over loopback, bare vs layer.
//! Last, the performance targets with what was measured.
//!
//! `scripts/report.sh [SECONDS_PER_CELL] [KEYS]` builds and runs it.
//!
//! Then every ratio target again, paired: `PAIRED_ROUNDS` (5) rounds, each
//! running W1 at 64 (the ceiling, threads, async tasks, the closed-loop
//! ceiling, both sled variants, redb, SQLite, PostgreSQL as plain SQL, Redis
//! always with `SET NX PX`) and W6 (bare and
//! Sync) back to back, so that the machine's drift hits both sides of a ratio
//! alike; the targets table uses their medians, and "bound" rows give the
//! ceilings the machine puts on the W1 targets.
//!
//! Environment: `REPORT_ONLY=w1,w2,w3,w45,w6,pairs` runs only those sections;
//! `W6_CONNS=N` changes W6's connection count (64 by default);
//! `W6_HANDLER=trivial` serves a stateless JSON 201 instead of the
//! `payments` example's handler;
//! `GCW_US=N` sets W6's stores' `group_commit_window` in µs.
//!
//! # Layout
//!
//! One file per workload (`w1.rs`, `w2.rs`, `w3.rs`, `w45.rs`, `w6.rs`,
//! `paired.rs`), each measuring and printing its table; `targets.rs` prints
//! the targets from what they measured; `stores.rs` runs idemstore itself;
//! the peers live in the library (`idemstore_benches::peers`).

mod cost;
mod paired;
mod stores;
mod table;
mod targets;
mod w1;
mod w2;
mod w3;
mod w45;
mod w6;

/// The command line and the environment of a report.
pub(crate) struct Settings {
    /// Seconds per cell (the first argument; 2 by default).
    pub(crate) secs: f64,
    /// Live keys for W4/W5 (the second argument; 1 000 000 by default).
    pub(crate) keys: u64,
    /// `REPORT_ONLY`: the sections to run, comma-separated (all if unset).
    only: Option<String>,
    /// `W6_CONNS`: W6's connection count (64 by default).
    pub(crate) conns: usize,
    /// `PAIRED_ROUNDS`: rounds of the paired ratios (5).
    pub(crate) rounds: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let arg = |i: usize, d: f64| {
            std::env::args()
                .nth(i)
                .and_then(|a| a.parse().ok())
                .unwrap_or(d)
        };
        let secs = arg(1, 2.0);
        let keys: u64 = std::env::args()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1_000_000);
        Settings {
            secs,
            keys,
            only: std::env::var("REPORT_ONLY").ok(),
            conns: std::env::var("W6_CONNS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64),
            rounds: std::env::var("PAIRED_ROUNDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5),
        }
    }

    /// Whether section `w` (`w1`, `w2`, `w3`, `w45`, `w6`, `pairs`) runs.
    pub(crate) fn wants(&self, w: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == w))
    }
}

fn main() {
    let settings = Settings::from_env();
    let mut out = std::io::stdout().lock();
    let (w1, servers) = w1::run(&mut out, &settings);
    let rt = idemstore_benches::runtime();
    let cost = cost::run(&mut out, &settings, &rt);
    let w2 = w2::run(&mut out, &settings, servers.nodes.first());
    w3::run(&mut out, &settings, &rt, &servers);
    let w6 = w6::run(&mut out, &settings, &rt);
    let w45 = w45::run(&mut out, &settings);
    // The first server runs with appendfsync always.
    let pairs = paired::run(
        &mut out,
        &settings,
        &rt,
        servers.nodes.first(),
        servers.postgres.as_ref(),
    );
    let measured = targets::Measured {
        w1,
        cost,
        w2,
        w45,
        w6,
        pairs,
    };
    targets::print(&mut out, &measured);
}
