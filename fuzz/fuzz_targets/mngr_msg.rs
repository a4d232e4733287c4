//! Fuzzes struct mngr_msg decoding in every ABI profile: the checks are `acrn_tests::oracle::mngr_msg`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| acrn_tests::oracle::mngr_msg(data));
