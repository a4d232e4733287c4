//! Integration tests of the lifecycle service: sos-lcs and ioc-sim as real processes over
//! real ptys and Unix sockets.
// The whole binary is test code; the lint is meant for unit tests inside library modules.
#![allow(clippy::tests_outside_test_module)]

mod hostile;
mod ioc_sim;
mod lcs;
