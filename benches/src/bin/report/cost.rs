//! W1's cost: what a durable cycle of idemstore (`Sync`, 512 B, fresh keys)
//! costs in CPU (user + system of this process, per cycle) and in latency
//! (p50, p99, p99.9 as each caller saw it), at 1, 8 and 64 callers, as
//! threads and as async tasks.

use crate::Settings;
use crate::stores::with_store;
use idemstore::{Begin, Config, Fingerprint, Key, Tenant};
use idemstore_benches::cost::{self, Cost};
use idemstore_benches::peers::BODY;
use idemstore_benches::response;
use std::io::Write;

/// (how, callers, cost).
pub(crate) type Rows = Vec<(&'static str, usize, Cost)>;

/// Measures and prints W1's cost if `w1` is wanted.
pub(crate) fn run(out: &mut impl Write, settings: &Settings, rt: &tokio::runtime::Runtime) -> Rows {
    let mut rows = Rows::new();
    if !settings.wants("w1") {
        return rows;
    }
    let secs = settings.secs;
    for callers in [1, 8, 64] {
        let c = with_store(Config::default(), |store| {
            let store = store.clone();
            let resp = response(BODY);
            cost::threads(callers, secs, move |t, i| {
                let key = format!("c-{t}-{i}");
                match store.begin(Tenant::new("bench"), Key::new(&key), Fingerprint::of(b"x")) {
                    Ok(Begin::Reserved(r)) => r.complete(resp.clone()).expect("complete"),
                    other => panic!("fresh key not reserved: {other:?}"),
                }
            })
        });
        rows.push(("threads", callers, c));
        let c = with_store(Config::default(), |store| {
            let store = store.clone();
            let resp = response(BODY);
            cost::tasks(rt, callers, secs, move |t, i| {
                let (store, resp) = (store.clone(), resp.clone());
                async move {
                    let key = format!("c-{t}-{i}");
                    match store.begin(Tenant::new("bench"), Key::new(&key), Fingerprint::of(b"x")) {
                        Ok(Begin::Reserved(r)) => r.complete_async(resp).await.expect("complete"),
                        other => panic!("fresh key not reserved: {other:?}"),
                    }
                }
            })
        });
        rows.push(("async tasks", callers, c));
    }
    let _ = writeln!(
        out,
        "\nW1 cost: idemstore Sync, {BODY} B body, fresh keys; CPU is user + system of the whole process per cycle ({secs} s per cell)\n"
    );
    let _ = writeln!(
        out,
        "| callers as | callers | cycles/s | CPU µs/cycle | p50 µs | p99 µs | p99.9 µs |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    for (how, callers, c) in &rows {
        let _ = writeln!(
            out,
            "| {how} | {callers} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} |",
            c.rate, c.cpu_us, c.p50_us, c.p99_us, c.p999_us
        );
    }
    rows
}
