//! Replays the committed `http` fuzz corpus and regressions (see
//! `crates/idemstore/tests/fuzz_corpus.rs`).

#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn http_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join("http")) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| idemstore_http::fuzzing::http(&data));
            assert!(r.is_ok(), "{} fails", path.display());
            n += 1;
        }
    }
    assert!(n > 0, "no http corpus");
}
