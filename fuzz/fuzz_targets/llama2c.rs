//! libFuzzer entry for the `llama2c` target; see `ember_fuzz::harness::llama2c`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ember_fuzz::harness::llama2c(data));
