//! Fuzzes the lifecycle service frame reassembler (/dev/cbc-lifecycle): the checks are `acrn_tests::oracle::cbc_service`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| acrn_tests::oracle::cbc_service(data));
