#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ociguard_fuzz_harness::profile_decode(data));
