//! Integration tests of ioc-sim: the simulator as a real process over real ptys and its
//! control socket.
// The whole binary is test code; the lint is meant for unit tests inside library modules.
#![allow(clippy::tests_outside_test_module)]

mod ioc_sim;
