//! Replays the committed cargo-fuzz corpora (`fuzz/corpus/<target>/`) and the
//! regression inputs (`fuzz/regressions/<target>/`) through the same checks
//! the fuzz targets run, so every CI run keeps what fuzzing found caught.

#![allow(clippy::unwrap_used)]

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| check(&data));
            assert!(r.is_ok(), "{target}: {} fails", path.display());
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn codec_corpus() {
    replay("codec", idemstore::fuzzing::codec);
}

#[test]
fn recovery_corpus() {
    replay("recovery", idemstore::fuzzing::recovery);
}

#[test]
fn operations_corpus() {
    replay("operations", idemstore::fuzzing::operations);
}
