//! Fuzzes acrnd's launch-dir scanner on real directories built from the input: the checks
//! are `acrnd/tests/oracle/launch_dir.rs`, shared with its proptest twin in acrnd's tests.
//! Each input gets a fresh directory under the system's temp dir, removed after the run.
#![no_main]

#[path = "../../acrnd/tests/oracle/launch_dir.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oracle::launch_dir_in(data, &std::env::temp_dir()).expect("a temp dir");
});
