//! Bringing VMs up: boot by wakeup reason, the start queue, RTC timers firing, resume after
//! a wake-up; and what device models tell acrnd (answers, launches, exits).

use mngr_ipc::cbc::reason as wake;
use mngr_ipc::msg::err;
use mngr_ipc::vocabulary::Phase;
use serde_json::json;

use super::{Command, DmAnswer, DmKind, Now, Orchestrator, ReasonFor, ReplyId, Timer, VmState};
use crate::timers::nearest;

impl Orchestrator {
    /// Re-attaches to the device models found running (the VM table was filled before the
    /// socket was bound), then asks why the system woke.
    pub(super) fn boot(&mut self) {
        let live: Vec<(String, u32)> = self
            .vms
            .iter()
            .filter_map(|(n, v)| v.pid.map(|p| (n.clone(), p)))
            .collect();
        for (name, pid) in live {
            log::info!("Re-attaching to the device model of {name} (pid {pid})");
            self.out.push(Command::Watch {
                vm: name.clone(),
                pid,
            });
            self.send_dm(&name, DmKind::Query, None);
        }
        self.emit(
            "boot",
            json!({"vms": self.vms.keys().collect::<Vec<_>>(), "timers": self.timers.len()}),
        );
        self.out.push(Command::AskReason(ReasonFor::Boot));
    }

    pub(super) fn on_reason(&mut self, why: ReasonFor, reason: Option<u32>, now: Now) {
        // The system is up again: timers may fire.
        self.held = false;
        self.lcs_reachable = reason.is_some();
        let r = reason.unwrap_or(0);
        self.reason = r;
        self.emit(
            "reason",
            json!({"for": why.name(), "reason": r, "lcs": reason.is_some()}),
        );
        let rtc = r & wake::RTC != 0;
        match why {
            ReasonFor::Boot if rtc => {
                log::info!("Woken by RTC ({r:#x}): launching only the VMs whose timers are due");
                self.fire_timers(now);
            }
            ReasonFor::Boot => {
                if self.rules.autostart {
                    let stopped: Vec<String> = self
                        .vms
                        .iter()
                        .filter(|(_, v)| v.state == VmState::Stopped && v.launchable)
                        .map(|(n, _)| n.clone())
                        .collect();
                    log::info!("Boot (reason {r:#x}): starting {}", stopped.join(", "));
                    self.start_queue.extend(stopped);
                    self.pump_starts(now);
                }
                self.resume_suspended(r);
            }
            ReasonFor::Resume if rtc => {
                log::info!("Resumed by RTC ({r:#x}): only the VMs whose timers are due");
                self.fire_timers(now);
            }
            ReasonFor::Resume => self.resume_suspended(r),
        }
        if why == ReasonFor::Resume {
            self.phase = Phase::Idle;
        }
        self.rearm(now);
    }

    pub(super) fn resume_suspended(&mut self, reason: u32) {
        let reason = Self::boot_reason(reason);
        // Also the VMs an abandoned stop-all left on their way down: their device models
        // hold the emulated ignition-off until a resume clears it.
        let suspended: Vec<String> = self
            .vms
            .iter()
            .filter(|(_, v)| {
                !v.busy
                    && (v.state == VmState::Suspended
                        || (v.pid.is_some()
                            && matches!(v.state, VmState::Suspending | VmState::Stopping)))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for vm in suspended {
            // Starting until its device model confirms it runs again (DM_NOTIFY or query).
            self.begin(&vm, VmState::Starting);
            self.send_dm(&vm, DmKind::Resume { reason }, None);
        }
    }

    /// Starts queued VMs, at most `start_parallel` starting at once, `start_delay` apart;
    /// nothing while a power transition runs.
    pub(super) fn pump_starts(&mut self, now: Now) {
        if self.stop_all.is_some() || self.terminating.is_some() {
            return;
        }
        while let Some(vm) = self.start_queue.front().cloned() {
            // A VM whose launch is under way counts as starting.
            let starting = self
                .vms
                .values()
                .filter(|v| v.state == VmState::Starting || (v.busy && v.state == VmState::Stopped))
                .count();
            if starting >= self.rules.start_parallel {
                return;
            }
            if let Some(last) = self.last_start {
                let next = last + self.rules.start_delay;
                if now.mono < next {
                    if !self.armed.contains(&Timer::Start) {
                        self.arm(Timer::Start, next);
                    }
                    return;
                }
            }
            self.start_queue.pop_front();
            if self
                .vms
                .get(&vm)
                .is_some_and(|v| v.state == VmState::Stopped && !v.busy)
            {
                self.last_start = Some(now.mono);
                if let Some(v) = self.vms.get_mut(&vm) {
                    v.busy = true;
                }
                self.out.push(Command::Launch {
                    vm,
                    reason: Self::boot_reason(self.reason),
                    reply: None,
                });
            }
        }
    }

    /// Timers due now: launch or resume their VMs (unless a power transition runs).
    pub(super) fn fire_timers(&mut self, now: Now) {
        if self.timers_held() {
            return;
        }
        let due: Vec<String> = self
            .timers
            .iter()
            .filter(|(_, w)| **w <= now.epoch)
            .map(|(n, _)| n.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        for vm in &due {
            self.timers.remove(vm);
            self.timer_changed(vm);
            let state = self.vms.get(vm).map(|v| (v.state, v.busy));
            log::info!("RTC timer of {vm} is due");
            self.emit("timer.fire", json!({"vm": vm}));
            match state {
                Some((VmState::Stopped, false)) => {
                    self.begin(vm, VmState::Starting);
                    self.out.push(Command::Launch {
                        vm: vm.clone(),
                        reason: wake::RTC,
                        reply: None,
                    });
                }
                Some((VmState::Suspended, false)) => {
                    self.begin(vm, VmState::Starting);
                    self.send_dm(vm, DmKind::Resume { reason: wake::RTC }, None);
                }
                Some((st, _)) => log::info!("{vm} is {}: its timer has nothing to do", st.name()),
                None => log::warn!("Timer of unknown VM {vm} dropped"),
            }
        }
        self.out.push(Command::Persist {
            reply: None,
            undo: None,
        });
    }

    /// Arms the wake-up timer at the nearest RTC timer.
    pub(super) fn rearm(&mut self, now: Now) {
        self.cancel(Timer::Wake);
        // While timers are held, a due one waits for the resume (which fires it): arming it
        // would only spin the loop.
        let next = if self.timers_held() {
            self.timers
                .values()
                .copied()
                .filter(|w| *w > now.epoch)
                .min()
        } else {
            nearest(&self.timers).map(|(_, w)| w)
        };
        if let Some(when) = next {
            let delay = when.saturating_sub(now.epoch);
            self.arm(
                Timer::Wake,
                now.mono + std::time::Duration::from_secs(delay),
            );
        }
    }

    pub(super) fn on_launched(&mut self, vm: &str, pid: u32, reason: u32, reply: Option<ReplyId>) {
        self.emit("vm.launch", json!({"vm": vm, "pid": pid, "reason": reason}));
        if let Some(v) = self.vms.get_mut(vm) {
            v.pid = Some(pid);
            v.child = true;
            v.busy = false;
            v.polls = 0;
        }
        self.set_state(vm, VmState::Starting, "launched");
        self.out.push(Command::Watch {
            vm: vm.to_owned(),
            pid,
        });
        if let Some(r) = reply {
            self.out.push(Command::Answer(r, err::OK));
        }
    }

    pub(super) fn on_launch_failed(&mut self, vm: &str, reply: Option<ReplyId>) {
        let launchable = self.vms.get(vm).is_some_and(|v| v.launchable);
        if let Some(v) = self.vms.get_mut(vm) {
            v.busy = false;
        }
        self.set_state(vm, VmState::Stopped, "launch failed");
        if let Some(r) = reply {
            let code = if launchable {
                err::FAILED
            } else {
                err::UNSUPPORTED
            };
            self.out.push(Command::Answer(r, code));
        }
    }

    /// The device model of `vm` exited.
    pub(super) fn on_exited(&mut self, vm: &str, now: Now) {
        let Some(v) = self.vms.get_mut(vm) else {
            return;
        };
        v.pid = None;
        v.child = false;
        v.busy = false;
        self.set_state(vm, VmState::Stopped, "device model exited");
        self.pump_starts(now);
    }

    pub(super) fn on_dm(
        &mut self,
        vm: &str,
        kind: DmKind,
        reply: Option<ReplyId>,
        answer: DmAnswer,
    ) {
        if kind == DmKind::Query {
            self.on_query_answer(vm, answer);
            return;
        }
        if let Some(v) = self.vms.get_mut(vm) {
            v.busy = false;
        }
        let code = match &answer {
            DmAnswer::Ack { err, .. } => *err,
            DmAnswer::NotFound => {
                log::warn!("{} to {vm} failed: no device model serves it", kind.name());
                err::FAILED
            }
            DmAnswer::Failed(why) => {
                log::warn!("{} to {vm} failed: {why}", kind.name());
                err::FAILED
            }
        };
        self.emit(
            "dm.result",
            json!({"vm": vm, "msg": kind.describe(), "err": code}),
        );
        if code != err::OK {
            log::warn!("{vm} answered {} with {code}", kind.name());
            // The VM did not take the request: back to where it was, then ask it.
            if let Some(before) = self.vms.get(vm).map(|v| v.before) {
                self.set_state(vm, before, "request refused");
            }
            self.send_dm(vm, DmKind::Query, None);
        }
        if let Some(r) = reply {
            self.out.push(Command::Answer(r, code));
        }
    }

    fn on_query_answer(&mut self, vm: &str, answer: DmAnswer) {
        let mut stale = false;
        if let Some(v) = self.vms.get_mut(vm) {
            v.query_out = false;
            stale = v.notified != v.query_from;
        }
        match answer {
            DmAnswer::Ack { .. } if stale => {
                log::debug!("DM_QUERY answer of {vm} overtaken by its DM_NOTIFY: ignored");
            }
            DmAnswer::Ack { state, .. } => {
                if let Some(mode) = state {
                    self.apply_mode(vm, mode, "DM_QUERY");
                }
            }
            DmAnswer::NotFound => {
                let gone = self
                    .vms
                    .get(vm)
                    .is_some_and(|v| !v.child && v.state != VmState::Starting);
                if gone {
                    self.set_state(vm, VmState::Stopped, "no device model");
                }
            }
            DmAnswer::Failed(why) => log::debug!("DM_QUERY to {vm}: {why}"),
        }
    }
}
