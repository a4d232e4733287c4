//! What must hold for any input to acrnd's own readers of files: the bodies of the fuzz
//! targets `timer_store` and `launch_dir` (`fuzz/fuzz_targets/`, run by `cargo fuzz`) and of
//! their proptest twins (`acrnd/tests/it/twins.rs`, run by `cargo test -p acrnd`), so both
//! check the same things. The oracles of the IPC library's readers are in
//! `tests/src/oracle.rs` (`acrn_tests::oracle`).
//!
//! Each oracle takes arbitrary bytes and panics, with a message naming the broken property,
//! if the code under test misbehaves. Each lives in a file of its own that uses only
//! `acrnd`, `std` and `tempfile`: the fuzz targets include that one file
//! (`#[path = ...] mod oracle;`), so no test code goes into the acrnd library.
//!
//! | oracle | code under test |
//! |---|---|
//! | [`timer_store`] | `acrnd::timers::parse` / `render` / `nearest` |
//! | [`launch_dir`] | `acrnd::vms::scan_launch_dir` |

pub mod launch_dir;
pub mod timer_store;

pub use launch_dir::{launch_dir, launch_dir_in};
pub use timer_store::timer_store;
