//! libFuzzer entry for the `chat_template` target; see `ember_fuzz::harness::chat_template`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ember_fuzz::harness::chat_template(data));
