#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ociguard_fuzz_harness::monitor_protocol(data));
