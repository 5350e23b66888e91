//! libFuzzer entry for the `tokenizer` target; see `ember_fuzz::harness::tokenizer`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ember_fuzz::harness::tokenizer(data));
