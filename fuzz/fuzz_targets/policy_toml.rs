#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ociguard_fuzz_harness::policy_toml(data));
