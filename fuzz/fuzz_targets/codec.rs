//! cargo-fuzz target `codec`: see `idemstore::fuzzing::codec` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| idemstore::fuzzing::codec(data));
