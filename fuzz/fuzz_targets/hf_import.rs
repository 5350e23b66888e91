//! libFuzzer entry for the `hf_import` target; see `ember_fuzz::harness::hf_import`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ember_fuzz::harness::hf_import(data));
