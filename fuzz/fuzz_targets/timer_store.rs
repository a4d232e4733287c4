//! Fuzzes acrnd's timer-store parser: the checks are `acrn_tests::oracle::timer_store`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| acrn_tests::oracle::timer_store(data));
