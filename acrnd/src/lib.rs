//! acrnd, the VM lifecycle coordinator of the ACRN Service OS.
//!
//! * [`orchestrator`]: acrnd's decisions, pure (VM table, stop-all, start queue, timers);
//! * [`daemon`]: the event-loop daemon carrying them out (requests, effects, persistence);
//! * [`vms`]: VM discovery and launch; [`coordinator`]: the pure stop-all rules;
//! * [`timers`]: the crash-safe RTC timer store; [`config`]: the command line;
//! * [`ctl`]: the acrnctl tool.
#![deny(missing_docs)]

pub mod config;
pub mod coordinator;
pub mod ctl;
pub mod daemon;
pub mod orchestrator;
pub mod timers;
pub mod vms;

pub use daemon::run;
pub use mngr_ipc::daemon::RunError;
