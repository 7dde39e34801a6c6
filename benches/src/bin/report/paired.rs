//! Every ratio target again, paired: rounds of W1 at 64 callers (idemstore
//! as threads and as async tasks, and its peers) and W6 (bare and `Sync`),
//! each round running every cell back to back, so that the machine's drift
//! hits both sides of a ratio alike.

use crate::Settings;
use crate::stores::{idemstore, idemstore_async, layered};
use idemstore::Durability;
use idemstore_benches::peers;
use idemstore_benches::peers::postgres::PostgresServer;
use idemstore_benches::peers::redis::RedisServer;
use std::io::Write;

/// The paired ratios: (ratio name, (median, lowest, highest)); W1 names are
/// "how ÷ peer".
///
/// The open-loop ceiling's cell.
pub(crate) const CEILING: &str = "ceiling";
/// The closed-loop ceiling's cell.
pub(crate) const CLOSED: &str = "ceiling, closed loop";
pub(crate) type Ratios = Vec<(String, (f64, f64, f64))>;

/// Measures and prints the paired ratios if they are wanted (plain Redis on
/// `always`, the server with `appendfsync always`, when there is one).
pub(crate) fn run(
    out: &mut impl Write,
    settings: &Settings,
    rt: &tokio::runtime::Runtime,
    always: Option<&RedisServer>,
    postgres: Option<&PostgresServer>,
) -> Ratios {
    let (secs, conns, rounds) = (settings.secs, settings.conns, settings.rounds);
    if !settings.wants("pairs") {
        return Vec::new();
    }
    let mut cells: Vec<Cell<'_>> = vec![
        (CEILING, Box::new(|| peers::raw::ceiling(64, secs))),
        (
            "threads",
            Box::new(|| idemstore(Durability::Sync, 64, secs)),
        ),
        (
            "async tasks",
            Box::new(|| idemstore_async(Durability::Sync, 64, secs)),
        ),
        (CLOSED, Box::new(|| peers::thread_floor::run(64, secs))),
        (
            "sled, one flush",
            Box::new(|| peers::sled::run(64, secs, false)),
        ),
        (
            "sled, flush per step",
            Box::new(|| peers::sled::run(64, secs, true)),
        ),
        ("redb", Box::new(|| peers::redb::run(64, secs))),
        ("SQLite", Box::new(|| peers::sqlite::run(64, secs))),
    ];
    if let Some(pg) = postgres {
        cells.push((
            "PostgreSQL",
            Box::new(move || peers::postgres::sql(rt, pg, 64, 64, secs)),
        ));
    }
    if let Some(server) = always {
        cells.push((
            "Redis 7 always (SET NX PX)",
            Box::new(move || peers::redis::setnx(server, 64, secs)),
        ));
    }
    cells.push((
        "W6 bare",
        Box::new(|| {
            idemstore_benches::http::run(rt, idemstore_benches::http::router(), conns, secs)
        }),
    ));
    cells.push((
        "W6 Sync",
        Box::new(|| layered(rt, Durability::Sync, conns, secs)),
    ));
    let fns: Vec<&dyn Fn() -> f64> = cells.iter().map(|(_, f)| f.as_ref()).collect();
    let p = paired(rounds, &fns);
    let names: Vec<&str> = cells.iter().map(|(n, _)| *n).collect();
    let pairs = ratios(&names, &p);
    let _ = writeln!(
        out,
        "\nPaired ratios, all at 64 callers or connections: {rounds} rounds, each running {} back to back, {secs} s each\n",
        names.join(", ")
    );
    let _ = writeln!(out, "| ratio | median | lowest | highest |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for (name, (med, lo, hi)) in &pairs {
        let _ = writeln!(out, "| {name} | {med:.2} | {lo:.2} | {hi:.2} |");
    }
    pairs
}

/// The ratios of the cells named `names` whose per-round values are `p`: W1
/// at 64 of idemstore (threads, then async tasks) ÷ each peer, then ÷ the
/// two ceilings; the bounds the machine puts on those; W6 `Sync` ÷ bare.
fn ratios(names: &[&str], p: &[Vec<f64>]) -> Ratios {
    let mut pairs: Ratios = Vec::new();
    let col = |name: &str| names.iter().position(|n| *n == name);
    let peers: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            ![CEILING, CLOSED, "threads", "async tasks"].contains(n) && !n.starts_with("W6")
        })
        .collect();
    for how in ["threads", "async tasks"] {
        for peer in peers.iter().copied().chain([CEILING, CLOSED]) {
            if let (Some(a), Some(b)) = (col(how), col(peer)) {
                pairs.push((
                    format!("W1 Sync @64 {how} ÷ {peer}"),
                    ratio_stats(&p[a], &p[b]),
                ));
            }
        }
    }
    // What bounds the W1 targets on this machine, whatever the store.
    for (a, b) in [
        (CLOSED, CEILING),
        (CEILING, "sled, one flush"),
        (CEILING, "sled, flush per step"),
    ] {
        if let (Some(i), Some(j)) = (col(a), col(b)) {
            pairs.push((format!("bound: {a} ÷ {b}"), ratio_stats(&p[i], &p[j])));
        }
    }
    if let (Some(a), Some(b)) = (col("W6 Sync"), col("W6 bare")) {
        pairs.push((
            "W6 behind the layer, Sync ÷ bare handler".to_owned(),
            ratio_stats(&p[a], &p[b]),
        ));
    }
    pairs
}

/// `rounds` rounds of `cells`, each round running every cell once, back to
/// back: a drift in the machine's speed then hits both sides of a ratio
/// alike. Returns each cell's values, by round.
fn paired(rounds: usize, cells: &[&dyn Fn() -> f64]) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::new(); cells.len()];
    for round in 0..rounds {
        for (i, cell) in cells.iter().enumerate() {
            out[i].push(cell());
        }
        eprintln!(
            "paired round {round}: {:?}",
            out.iter().map(|v| v[round]).collect::<Vec<_>>()
        );
    }
    out
}

/// A named measurement of the paired rounds.
type Cell<'a> = (&'static str, Box<dyn Fn() -> f64 + 'a>);

/// Median, minimum and maximum of the per-round ratios `a[i] / b[i]`.
fn ratio_stats(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    if r.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    r.sort_by(f64::total_cmp);
    (r[r.len() / 2], r[0], r[r.len() - 1])
}
