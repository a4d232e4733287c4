//! Fuzzes a server's message reassembly over arbitrary reads, and its answers: the checks are `acrn_tests::oracle::server_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| acrn_tests::oracle::server_stream(data));
