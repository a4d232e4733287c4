//! The SOS Life Cycle Service (`sos-lcs`).
//!
//! sos-lcs sits between the IOC (over the CBC lifecycle channel, [`mngr_ipc::line`]) and
//! acrnd (over mngr IPC): it heartbeats the IOC every period, learns why the system woke,
//! asks acrnd to stop or suspend the VMs when the IOC requests a shutdown, and carries out
//! the power action once both agree. [`state`] is its pure state machine, [`daemon`] the
//! event-loop wiring, [`config`] the command line, [`power`] the commands it runs.
#![deny(missing_docs)]

pub mod config;
pub mod daemon;
pub mod power;
pub mod state;

pub use daemon::run;
pub use mngr_ipc::daemon::RunError;
