//! libFuzzer entry for the `peft` target; see `ember_fuzz::harness::peft`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ember_fuzz::harness::peft(data));
