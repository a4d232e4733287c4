//! Integration tests of acrn-dm-monitor: acrn-dm-sim as a real process, launched as acrnd
//! launches acrn-dm, over real Unix sockets and ptys, with a test acrnd in the test.
// The whole binary is test code; the lint is meant for unit tests inside library modules.
#![allow(clippy::tests_outside_test_module)]

mod faults;
mod harness;
mod lifecycle;
mod native;
mod requests;
