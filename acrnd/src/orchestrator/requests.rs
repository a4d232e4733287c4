//! The requests that change acrnd's state: acrnctl's per-VM operations, the lifecycle
//! service's ACRND_STOP / ACRND_RESUME, ACRND_SUSPEND, and a device model's ACRND_TIMER and
//! DM_NOTIFY. Who may make them is the server's business (their access class); here is
//! what they do.

use std::time::Duration;

use mngr_ipc::cbc::reason as wake;
use mngr_ipc::msg::{StopTarget, err};
use mngr_ipc::vocabulary::Phase;
use serde_json::json;

use super::{Command, DmKind, Now, Orchestrator, ReasonFor, ReplyId, Undo, VmState};

/// A request that changes state, decoded from its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Req {
    /// CTL_START.
    Start {
        /// The VM.
        name: String,
    },
    /// CTL_STOP.
    Stop {
        /// The VM.
        name: String,
        /// Power off at once.
        force: bool,
    },
    /// CTL_SUSPEND.
    Suspend {
        /// The VM.
        name: String,
    },
    /// CTL_RESUME.
    Resume {
        /// The VM.
        name: String,
        /// The reason for the guest (0: acrnd's).
        reason: u32,
    },
    /// ACRND_STOP: stop or suspend every VM.
    StopAll {
        /// What the system does next.
        target: StopTarget,
        /// Force the stragglers at the deadline.
        force: bool,
        /// Seconds until the deadline.
        timeout: u32,
    },
    /// ACRND_RESUME: the system is alive again.
    ResumeAll,
    /// ACRND_SUSPEND: suspend every running VM.
    SuspendAll,
    /// ACRND_TIMER: wake `name` in `t` seconds.
    Timer {
        /// The VM.
        name: String,
        /// Seconds from now.
        t: i64,
    },
    /// DM_NOTIFY: `name`'s device model is in suspend mode `mode` now.
    Notify {
        /// The VM.
        name: String,
        /// Its suspend mode.
        mode: i32,
    },
}

/// The answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Answer now with `err`.
    Now(i32),
    /// Answer later, with a [`Command::Answer`] under the request's reply id.
    Later,
}

impl Orchestrator {
    pub(super) fn on_request(&mut self, req: Req, reply: ReplyId, now: Now) -> Answer {
        match req {
            Req::Start { name } => self.vm_op(&name, VmOp::Start, reply),
            Req::Stop { name, force } => self.vm_op(&name, VmOp::Stop { force }, reply),
            Req::Suspend { name } => self.vm_op(&name, VmOp::Suspend, reply),
            Req::Resume { name, reason } => self.vm_op(&name, VmOp::Resume { reason }, reply),
            Req::StopAll {
                target,
                force,
                timeout,
            } => self.on_stop_all(target, force, timeout, now),
            Req::ResumeAll => self.on_resume_all(),
            Req::SuspendAll => self.on_suspend_all(),
            Req::Timer { name, t } => self.on_timer_request(&name, t, reply, now),
            Req::Notify { name, mode } => self.on_notify(&name, mode),
        }
    }

    fn on_stop_all(&mut self, target: StopTarget, force: bool, timeout: u32, now: Now) -> Answer {
        if self.stop_all.is_some() {
            log::info!("ACRND_STOP while a stop-all runs: it continues");
            return Answer::Now(err::OK);
        }
        let timeout = Duration::from_secs(u64::from(timeout.max(1)));
        self.start_stop_all(target, force, timeout, now);
        Answer::Now(err::OK)
    }

    fn on_resume_all(&mut self) -> Answer {
        if self.terminating.is_some() {
            log::info!("ACRND_RESUME ignored: acrnd is stopping the VMs for a host shutdown");
            return Answer::Now(err::BUSY);
        }
        if let Some(stop) = self.stop_all.take() {
            // Ignition came back: the deadline finds no stop-all and does nothing.
            log::info!("ACRND_RESUME: the stop-all under way is abandoned");
            self.emit("stop_all.cancelled", json!({"target": stop.target.name()}));
        }
        self.phase = Phase::Resuming;
        self.out.push(Command::AskReason(ReasonFor::Resume));
        Answer::Now(err::OK)
    }

    fn on_suspend_all(&mut self) -> Answer {
        let names: Vec<String> = self
            .vms
            .iter()
            .filter(|(_, v)| v.state == VmState::Started && !v.busy)
            .map(|(n, _)| n.clone())
            .collect();
        for vm in names {
            self.begin(&vm, VmState::Suspending);
            self.send_dm(&vm, DmKind::Suspend, None);
        }
        Answer::Now(err::OK)
    }

    fn on_timer_request(&mut self, name: &str, t: i64, reply: ReplyId, now: Now) -> Answer {
        if !self.vms.contains_key(name) {
            log::warn!("ACRND_TIMER for unknown VM {name:?}");
            return Answer::Now(err::NOT_FOUND);
        }
        let Ok(delay) = u64::try_from(t) else {
            log::warn!("ACRND_TIMER for {name} with negative delay {t}");
            return Answer::Now(err::INVALID);
        };
        let when = now.epoch.saturating_add(delay);
        if i64::try_from(when).is_err() {
            return Answer::Now(err::INVALID);
        }
        self.timers.insert(name.to_owned(), when);
        let change = self.timer_changed(name);
        log::info!("RTC wake-up for {name} at epoch {when} (in {delay} s)");
        self.emit("timer", json!({"vm": name, "when": when, "delay": delay}));
        self.out.push(Command::Persist {
            reply: Some(reply),
            undo: Some(Undo {
                vm: name.to_owned(),
                change,
            }),
        });
        self.rearm(now);
        Answer::Later
    }

    fn on_notify(&mut self, name: &str, mode: i32) -> Answer {
        let Some(v) = self.vms.get_mut(name) else {
            return Answer::Now(err::NOT_FOUND);
        };
        v.notified += 1;
        self.apply_mode(name, mode, "DM_NOTIFY");
        Answer::Now(err::OK)
    }

    /// A serialized per-VM operation: checks the VM, its state and the power phase, then
    /// starts it; the answer waits for the device model (or the launch).
    fn vm_op(&mut self, name: &str, op: VmOp, reply: ReplyId) -> Answer {
        let Some(vm) = self.vms.get(name) else {
            return Answer::Now(err::NOT_FOUND);
        };
        let force_stop = matches!(op, VmOp::Stop { .. }) && vm.state == VmState::Stopping;
        let starting = matches!(op, VmOp::Start);
        if (vm.busy && !force_stop) || (self.stop_all.is_some() && starting) {
            log::info!(
                "{} for {name} refused: another operation is in progress",
                op.name()
            );
            return Answer::Now(err::BUSY);
        }
        let next = match op.next_state(vm.state, vm.launchable) {
            Ok(s) => s,
            Err(code) => {
                log::info!(
                    "{} for {name} refused in state {}",
                    op.name(),
                    vm.state.name()
                );
                return Answer::Now(code);
            }
        };
        let suspended = vm.state == VmState::Suspended;
        self.begin(name, next);
        match op {
            VmOp::Start => self.out.push(Command::Launch {
                vm: name.to_owned(),
                reason: Self::boot_reason(self.reason),
                reply: Some(reply),
            }),
            // A suspended guest cannot act on a request: only a forced stop works.
            VmOp::Stop { force } => self.send_dm(
                name,
                DmKind::Stop {
                    force: i32::from(force || suspended),
                },
                Some(reply),
            ),
            VmOp::Suspend => self.send_dm(name, DmKind::Suspend, Some(reply)),
            // Never resume with 0: the virtual IOC needs a reason (default: button).
            VmOp::Resume { reason } => {
                let reason = if reason == 0 {
                    wake::DEFAULT_BOOT
                } else {
                    reason
                };
                self.send_dm(name, DmKind::Resume { reason }, Some(reply));
            }
        }
        Answer::Later
    }
}

/// acrnctl's per-VM operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmOp {
    Start,
    Stop { force: bool },
    Suspend,
    Resume { reason: u32 },
}

impl VmOp {
    fn name(self) -> &'static str {
        match self {
            VmOp::Start => "CTL_START",
            VmOp::Stop { .. } => "CTL_STOP",
            VmOp::Suspend => "CTL_SUSPEND",
            VmOp::Resume { .. } => "CTL_RESUME",
        }
    }

    /// The state the VM moves to, or the refusal, from its state now.
    fn next_state(self, state: VmState, launchable: bool) -> Result<VmState, i32> {
        match (self, state) {
            (VmOp::Start, VmState::Stopped) if launchable => Ok(VmState::Starting),
            (VmOp::Start, VmState::Stopped) => Err(err::UNSUPPORTED),
            (VmOp::Stop { .. }, VmState::Started | VmState::Starting | VmState::Suspended) => {
                Ok(VmState::Stopping)
            }
            (VmOp::Stop { force: true }, VmState::Stopping | VmState::Suspending) => {
                Ok(VmState::Stopping)
            }
            (VmOp::Suspend, VmState::Started) => Ok(VmState::Suspending),
            (VmOp::Resume { .. }, VmState::Suspended) => Ok(VmState::Starting),
            _ => Err(err::INVALID),
        }
    }
}
