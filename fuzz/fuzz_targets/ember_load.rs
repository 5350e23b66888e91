//! libFuzzer entry for the `ember_load` target; see `ember_fuzz::harness::ember_load`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ember_fuzz::harness::ember_load(data));
