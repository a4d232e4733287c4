//! The simulated device model's state ([`Dm`]) and its VM-ops providers: the virtual IOC's
//! (`ioc_dm`) and the simulated guest's (`sim_guest`).
//!
//! Providers run in the monitor's handlers: they change the guest or the virtual IOC at
//! once and queue the resulting actions ([`Work`]) for the core subscriber, which they
//! wake with its notifier (see `event_handler.rs`).

use std::collections::VecDeque;

use acrn_dm_monitor::monitor::{DeviceModel, MonitorState};
use acrn_dm_monitor::ops::{OpResult, VmOps};
use acrn_dm_monitor::vioc::{self, Vioc};
use mngr_ipc::event_log::EventLog;
use mngr_ipc::msg::err;
use mngr_ipc::runtime::Notifier;

use crate::guest::{Guest, GuestAction};

/// Why the DM is exiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitCause {
    GuestPoweredOff,
    ForcedStop,
    Signal(i32),
}

impl ExitCause {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ExitCause::GuestPoweredOff => "guest_poweroff",
            ExitCause::ForcedStop => "forced_stop",
            ExitCause::Signal(_) => "signal",
        }
    }
}

/// Work for the core subscriber, queued by providers and signal handlers.
#[derive(Debug)]
pub(crate) enum Work {
    Vioc(Vec<vioc::Action>),
    Guest(Vec<GuestAction>),
    Exit(ExitCause),
}

/// The simulated device model's state, owned by the event loop.
#[derive(Debug)]
pub struct Dm {
    pub(crate) monitor: MonitorState<Dm>,
    pub(crate) vioc: Vioc,
    pub(crate) guest: Guest,
    pub(crate) log: EventLog,
    pub(crate) work: VecDeque<Work>,
    /// Wakes the core subscriber for queued work.
    pub(crate) core: Option<Notifier>,
    pub(crate) crash_stop: bool,
    pub(crate) crashed: bool,
}

impl DeviceModel for Dm {
    fn monitor(&mut self) -> &mut MonitorState<Dm> {
        &mut self.monitor
    }
}

impl Dm {
    pub(crate) fn request(&mut self, w: Work) {
        self.work.push_back(w);
        if let Some(n) = &self.core {
            n.notify();
        }
    }
}

/// The virtual IOC's ops (the original's `ioc_dm`).
#[derive(Debug)]
pub(crate) struct IocDm;

impl VmOps<Dm> for IocDm {
    fn label(&self) -> &str {
        "ioc_dm"
    }

    fn stop(&mut self, dm: &mut Dm) -> OpResult {
        match dm.vioc.stop() {
            Ok(a) => {
                dm.request(Work::Vioc(a));
                OpResult::Done
            }
            Err(e) => {
                log::warn!("{}: graceful stop refused: {e}", dm.monitor.vm());
                OpResult::Failed(err::BUSY)
            }
        }
    }

    fn suspend(&mut self, dm: &mut Dm) -> OpResult {
        let a = dm.vioc.suspend();
        dm.request(Work::Vioc(a));
        OpResult::Done
    }

    fn resume(&mut self, dm: &mut Dm, reason: u32) -> OpResult {
        let a = dm.vioc.resume(reason);
        dm.request(Work::Vioc(a));
        OpResult::Done
    }
}

/// The simulated guest's ops: it resumes from S3; a forced stop ends the process.
#[derive(Debug)]
pub(crate) struct SimGuest;

impl VmOps<Dm> for SimGuest {
    fn label(&self) -> &str {
        "sim_guest"
    }

    fn resume(&mut self, dm: &mut Dm, _reason: u32) -> OpResult {
        let a = dm.guest.resume();
        if !a.is_empty() {
            dm.request(Work::Guest(a));
        }
        OpResult::Done
    }

    fn powered_off(&mut self, dm: &mut Dm) {
        dm.request(Work::Exit(ExitCause::ForcedStop));
    }
}
