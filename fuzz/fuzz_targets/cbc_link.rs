//! Fuzzes the CBC link frame reassembler (the IOC's UART): the checks are `acrn_tests::oracle::cbc_link`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| acrn_tests::oracle::cbc_link(data));
