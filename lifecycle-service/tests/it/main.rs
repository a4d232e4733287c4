//! Integration tests of the lifecycle service: sos-lcs as a real process over real ptys and
//! Unix sockets (with ioc-sim, a sibling package's binary, as the IOC in one test).
// The whole binary is test code; the lint is meant for unit tests inside library modules.
#![allow(clippy::tests_outside_test_module)]

mod hostile;
mod lcs;
