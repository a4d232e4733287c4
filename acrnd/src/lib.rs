//! acrnd, the VM lifecycle coordinator of the ACRN Service OS.
//!
//! * [`daemon`]: the event-loop daemon (VM table, stop-all, resume, RTC timers, IPC);
//! * [`vms`]: VM discovery and launch; [`coordinator`]: the pure stop-all rules;
//! * [`timers`]: the crash-safe RTC timer store; [`config`]: the command line;
//! * [`ctl`]: the acrnctl tool.
#![deny(missing_docs)]

pub mod config;
pub mod coordinator;
pub mod ctl;
pub mod daemon;
pub mod timers;
pub mod vms;

pub use daemon::{RunError, run};
