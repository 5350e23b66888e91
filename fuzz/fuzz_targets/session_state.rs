//! libFuzzer entry for the `session_state` target; see `ember_fuzz::harness::session_state`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ember_fuzz::harness::session_state(data));
