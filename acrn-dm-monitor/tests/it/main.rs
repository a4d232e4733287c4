//! Integration tests of acrn-dm-monitor: a test device model embedding the monitor on its
//! own event loop, over real Unix sockets, with a test acrnd where one is needed. (The
//! simulated device model and its process tests live in `sims/acrn-dm-sim`.)
// The whole binary is test code; the lint is meant for unit tests inside library modules.
#![allow(clippy::tests_outside_test_module)]

mod access;
mod harness;
mod outbox;
