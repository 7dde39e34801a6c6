//! cargo-fuzz target `operations`: see `idemstore::fuzzing::operations` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| idemstore::fuzzing::operations(data));
