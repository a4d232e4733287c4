//! acrnd and acrnctl as real processes, with acrn-dm-sim VMs.
// The whole binary is test code; the lint is meant for unit tests inside library modules.
#![allow(clippy::tests_outside_test_module)]

mod daemon;
mod hostile;
