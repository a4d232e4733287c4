//! acrnd and acrnctl as real processes, with acrn-dm-sim VMs; and the proptest twins of
//! acrnd's fuzz targets.
// The whole binary is test code; the lint is meant for unit tests inside library modules.
#![allow(clippy::tests_outside_test_module)]

mod daemon;
mod hostile;
// Shared with the fuzz targets (`fuzz/fuzz_targets/`), which include its files by path.
#[path = "../oracle/mod.rs"]
mod oracle;
mod twins;
