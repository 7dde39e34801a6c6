//! W4/W5: open time, heap and disk for a store of many live keys, measured
//! by the `index_memory` binary run as a child process.

use crate::Settings;
use idemstore_benches::peers::BODY;
use std::io::Write;

/// The figures `index_memory` printed, by name (see [`get`]).
pub(crate) type Figures = Vec<(String, f64)>;

/// Measures and prints W4/W5 if they are wanted; `None` when not wanted or
/// when `index_memory` did not run.
pub(crate) fn run(out: &mut impl Write, settings: &Settings) -> Option<Figures> {
    let body = body();
    let f = if settings.wants("w45") {
        open_figures(settings.keys, body)
    } else {
        None
    };
    if let Some(f) = &f {
        let k = get(f, "keys");
        let disk = get(f, "segments") + get(f, "hints");
        let _ = writeln!(
            out,
            "\nW4/W5 a store of {k:.0} live keys ({body} B bodies; filled in {:.0} s)\n",
            get(f, "fill")
        );
        let rows = [
            (
                "fill rate, first tenth / last tenth (Durability::None, 8 threads)",
                format!(
                    "{:.0} / {:.0} keys/s ({:.2}×)",
                    get(f, "fill_first"),
                    get(f, "fill_last"),
                    get(f, "fill_last") / get(f, "fill_first")
                ),
            ),
            (
                "open from hint files (median of 3; the first, right after the fill)",
                format!(
                    "{:.2} s ({:.2} s)",
                    get(f, "open_hints"),
                    get(f, "open_hints_first")
                ),
            ),
            (
                "open from segments (hints deleted)",
                format!("{:.2} s", get(f, "open_scan")),
            ),
            (
                "heap held by the open store",
                format!("{:.1} B/key", get(f, "heap")),
            ),
            (
                "peak extra heap while opening",
                format!("{:.1} B/key", get(f, "peak")),
            ),
            (
                "disk: segments + hints",
                format!(
                    "{:.1} + {:.1} B/key",
                    get(f, "segments") / k,
                    get(f, "hints") / k
                ),
            ),
            (
                "disk ÷ record bytes",
                format!("{:.3}", disk / get(f, "records")),
            ),
            (
                "after the TTL: freed / left",
                format!("{:.0} MB / {:.0} B", get(f, "freed") / 1e6, get(f, "left")),
            ),
        ];
        let _ = writeln!(out, "| figure | value |");
        let _ = writeln!(out, "| --- | --- |");
        for (name, value) in rows {
            let _ = writeln!(out, "| {name} | {value} |");
        }
    }
    f
}

/// The bodies of W4/W5's records: `W45_BODY` bytes (default 512; the long
/// run of the performance issue uses 64, with 100M keys:
/// `W45_BODY=64 REPORT_ONLY=w45 report 2 100000000`).
pub(crate) fn body() -> usize {
    std::env::var("W45_BODY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BODY)
}

/// W4/W5 from the `index_memory` binary beside this one (it installs a
/// counting allocator, which would tax every other workload here).
fn open_figures(keys: u64, body: usize) -> Option<Vec<(String, f64)>> {
    let exe = std::env::current_exe().ok()?.with_file_name("index_memory");
    let out = std::process::Command::new(&exe)
        .args([keys.to_string(), body.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        _ => {
            eprintln!(
                "W4/W5: skipped: {} did not run (build it: cargo build --release -p idemstore-benches --bins)",
                exe.display()
            );
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("figures: "))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect(),
    )
}

/// The figure named `k` of `f`; NaN when `index_memory` did not print it.
pub(crate) fn get(f: &[(String, f64)], k: &str) -> f64 {
    f.iter().find(|(n, _)| n == k).map_or(f64::NAN, |(_, v)| *v)
}
