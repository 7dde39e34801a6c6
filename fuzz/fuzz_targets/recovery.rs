//! cargo-fuzz target `recovery`: see `idemstore::fuzzing::recovery` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| idemstore::fuzzing::recovery(data));
