//! W6: HTTP over loopback, the bare handler against the same handler behind
//! the layer in each durability mode.

use crate::Settings;
use crate::stores::{layered, modes};
use crate::table::ratio_table;
use std::io::Write;

/// W6's rows: (server, requests/s), the bare handler first.
pub(crate) type Rows = Vec<(String, f64)>;

/// Measures and prints W6 if it is wanted.
pub(crate) fn run(out: &mut impl Write, settings: &Settings, rt: &tokio::runtime::Runtime) -> Rows {
    let (secs, conns) = (settings.secs, settings.conns);
    let w6_on = settings.wants("w6");
    let mut w6: Vec<(String, f64)> = Vec::new();
    if w6_on {
        w6.push((
            "bare handler".to_owned(),
            idemstore_benches::http::run(rt, idemstore_benches::http::router(), conns, secs),
        ));
    }
    for (mode, d) in modes().into_iter().filter(|_| w6_on) {
        let r = layered(rt, d, conns, secs);
        w6.push((format!("behind the layer, {mode}"), r));
    }
    if w6_on {
        eprintln!("W6: {w6:?}");
        ratio_table(
            out,
            &format!(
                "W6 HTTP over loopback, the `payments` example's POST /v1/payments{}, {conns} keep-alive connections, fresh keys, requests/s",
                if std::env::var("W6_HANDLER").is_ok_and(|h| h == "trivial") {
                    " (W6_HANDLER=trivial: a stateless JSON 201 instead)"
                } else {
                    ""
                }
            ),
            "| server | req/s | ÷ bare |",
            &w6,
            (|first, r| r / first, ""),
        );
    }
    w6
}
