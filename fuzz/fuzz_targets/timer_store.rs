//! Fuzzes acrnd's timer-store parser: the checks are `acrnd/tests/oracle/timer_store.rs`,
//! shared with its proptest twin in acrnd's tests.
#![no_main]

#[path = "../../acrnd/tests/oracle/timer_store.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::timer_store(data));
