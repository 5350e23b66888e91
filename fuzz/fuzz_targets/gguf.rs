//! libFuzzer entry for the `gguf` target; see `ember_fuzz::harness::gguf`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ember_fuzz::harness::gguf(data));
