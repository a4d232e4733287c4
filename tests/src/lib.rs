//! Shared helpers for the workspace's integration tests, and the end-to-end
//! scenarios that the runner `acrn-scenario` and the flow tests play.
//!
//! The helpers are deliberately small and strict:
//!
//! - [`TestDir`] gives every test its own short temporary directory (short
//!   enough to hold unix socket paths), kept on failure for inspection.
//! - [`wait_until`] / [`wait_for`] replace fixed sleeps with bounded polling;
//!   nothing in this crate waits without a deadline.
//! - [`bin_path`] locates a workspace binary built by Cargo.
//! - [`hostile`] plays hostile clients against a daemon's socket and reads what they
//!   cost it (memory, descriptors).
//! - [`Procs`] owns the processes a test starts, captures their output into
//!   files and kills their whole process groups when the test ends, printing
//!   what they said if the test failed.
//! - [`rig`] runs a simulated Service OS (ioc-sim, sos-lcs, acrnd, acrn-dm-sim
//!   VMs); [`scenario`] plays steps against it and checks expectations on the
//!   merged event logs ([`events`], rendered by [`timeline`]); [`scenarios`] are
//!   the named scenarios, with the frames of [`frames`] as literal bytes.
//! - [`oracle`] holds what must hold for any input to the IPC library's code that reads
//!   peer bytes: the bodies of its fuzz targets and of their proptest twins (acrnd's own
//!   oracles are in acrnd's tests). [`corpus`] reads and seeds the fuzz corpus for the twins.
//! - [`measure`] holds what the benches share: percentiles, `/proc` readings, the
//!   machine's facts and the heartbeat-grid analysis.
//!
//! A typical test declares the directory first so that it outlives the
//! process guard (locals drop in reverse order, so the processes are killed
//! and their logs read before the directory is removed):
//!
//! ```no_run
//! use std::process::Command;
//! use std::time::Duration;
//! use acrn_tests::{Procs, TestDir, bin_path, wait_for};
//!
//! let dir = TestDir::new("example");
//! let mut procs = Procs::new(dir.path());
//! let sock = dir.join("daemon.sock");
//! let mut cmd = Command::new(bin_path("some-daemon"));
//! cmd.arg(&sock);
//! procs.spawn("daemon", cmd).expect("spawn daemon");
//! wait_for(Duration::from_secs(5), "daemon socket", || sock.exists()).unwrap();
//! ```

#![deny(missing_docs)]

pub mod bins;
pub mod corpus;
pub mod dir;
pub mod echo;
pub mod events;
pub mod frames;
pub mod hostile;
pub mod measure;
pub mod oracle;
pub mod procs;
pub mod rig;
pub mod scenario;
pub mod scenarios;
pub mod timeline;
pub mod wait;

pub use bins::{bin_path, try_bin_path};
pub use dir::TestDir;
pub use procs::Procs;
pub use wait::{WaitTimeout, wait_for, wait_until};
