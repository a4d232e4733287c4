//! Fuzzes acrnd's launch-dir scanner on real directories built from the input: the checks
//! are `acrn_tests::oracle::launch_dir`. Each input gets a fresh directory under the
//! system's temp dir, removed after the run.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    acrn_tests::oracle::launch_dir_in(data, &std::env::temp_dir()).expect("a temp dir");
});
