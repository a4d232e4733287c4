//! acrnd, the VM lifecycle coordinator of the ACRN Service OS.
//!
//! [`timers`] is the crash-safe RTC timer store; [`coordinator`] the pure stop-all
//! bookkeeping.
#![deny(missing_docs)]

pub mod coordinator;
pub mod timers;
