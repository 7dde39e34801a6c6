//! The markdown tables more than one workload prints.

use std::io::Write;

/// A two-column table of `rows` with a third column `ratio(first, this)`,
/// followed by `unit`.
pub(crate) fn ratio_table(
    out: &mut impl Write,
    title: &str,
    columns: &str,
    rows: &[(String, f64)],
    (ratio, unit): (impl Fn(f64, f64) -> f64, &str),
) {
    let _ = writeln!(out, "\n{title}\n");
    let _ = writeln!(out, "{columns}");
    let _ = writeln!(out, "| --- | --- | --- |");
    for (name, r) in rows {
        let _ = writeln!(
            out,
            "| {name} | {r:.0} | {:.2}{unit} |",
            ratio(rows[0].1, *r)
        );
    }
}
