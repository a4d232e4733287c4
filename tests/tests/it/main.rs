//! End-to-end tests of the lifecycle suite: every flow of `flows.md`, the fault and restart
//! cases, a soak, and the `acrn-scenario` runner itself. Each test plays a scenario of
//! `acrn_tests::scenarios` (the same code the runner plays) against the real binaries, in
//! its own temporary directory; the assertions are the scenario's expectations: frames on
//! the line as literal bytes, IPC requests and acks, VM and IOC states, all with bounded
//! waits.
//!
//! The workspace's binaries must be built first (`cargo build --workspace --bins`; `cargo
//! test --workspace` builds them).

#![allow(clippy::tests_outside_test_module)]

mod faults;
mod flows;
mod runner;
mod soak;

use acrn_tests::scenario::{Options, Report};
use acrn_tests::scenarios::{self, Body, GAP_STALE_QUERY};

/// Plays `body` as `name` with the test options (fast periods, `vms` VMs).
fn play(name: &str, body: Body, vms: usize) -> Report {
    scenarios::play_body(name, body, Options::test(vms))
}

/// Plays `body` and asserts it passed hitting exactly the known gaps `gaps` (and maybe the
/// racy [`GAP_STALE_QUERY`]).
fn check(name: &str, body: Body, vms: usize, gaps: &[&str]) {
    play(name, body, vms).assert_passed_allowing(gaps, &[GAP_STALE_QUERY]);
}
