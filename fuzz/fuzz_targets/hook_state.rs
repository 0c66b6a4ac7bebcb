#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ociguard_fuzz_harness::hook_state(data));
