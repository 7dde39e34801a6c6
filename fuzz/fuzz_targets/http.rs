//! cargo-fuzz target `http`: see `idemstore_http::fuzzing::http`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| idemstore_http::fuzzing::http(data));
