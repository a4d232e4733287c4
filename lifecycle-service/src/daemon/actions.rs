//! Carrying out the machine's actions and the handlers' work: frames, timers, requests to
//! acrnd, the power commands (on a worker), and the deferred WAKEUP_REASON answers.

use std::io;
use std::process::ExitStatus;
use std::time::Instant;

use mngr_ipc::cbc::Frame;
use mngr_ipc::msg::AckPayload;
use serde_json::json;

use super::acrnd_link::OutKind;
use super::{Core, CoreOps, Done, Lcs, Timer, Work};
use crate::power;
use crate::state::{Action, Event, PowerAction};

impl Core {
    pub(super) fn perform(&mut self, actions: Vec<Action>, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        for a in actions {
            match a {
                Action::Heartbeat(hb) => self.send(Frame::Heartbeat(hb), ops, s),
                Action::SendRtc => self.send_rtc(ops, s),
                Action::ClearRtc => s.rtc_at = None,
                Action::AcrndResume => self.start_request(OutKind::Resume, ops, s),
                Action::AcrndStop(t) => self.start_request(OutKind::Stop(t), ops, s),
                Action::Power(p) => self.run_power(p, ops, s),
                Action::ArmDeadline => ops.arm_after(Timer::Deadline, s.cfg.wait_bound),
                Action::CancelDeadline => {
                    ops.cancel(&Timer::Deadline);
                }
                Action::ReasonLatched(r) => {
                    for (d, _) in s.reason_waiters.drain(..) {
                        d.complete(AckPayload::Reason(r));
                    }
                }
            }
        }
    }

    /// Carries out the work handlers (and the machine) left, in order.
    pub(super) fn drain_work(&mut self, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        while let Some(w) = s.work.pop_front() {
            match w {
                Work::Act(a) => self.perform(vec![a], ops, s),
                Work::ReasonWait => arm_reason_timer(ops, s),
                Work::Terminate => self.terminate(ops, s),
            }
        }
    }

    /// Answers the WAKEUP_REASON requests that waited long enough with 0.
    pub(super) fn expire_reason_waiters(&mut self, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) =
            s.reason_waiters.drain(..).partition(|(_, d)| *d <= now);
        s.reason_waiters = keep;
        for (d, _) in due {
            log::warn!(
                "No wakeup reason from the IOC within {:?}; answering WAKEUP_REASON with 0",
                s.cfg.reason_wait
            );
            d.complete(AckPayload::Reason(0));
        }
        arm_reason_timer(ops, s);
    }

    /// Runs the power command of `action` on a worker.
    fn run_power(&mut self, action: PowerAction, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        let argv = match action {
            PowerAction::Poweroff => s.cfg.commands.poweroff.clone(),
            PowerAction::Reboot => s.cfg.commands.reboot.clone(),
            PowerAction::Suspend => s.cfg.commands.suspend.clone(),
        };
        log::info!("Running {} command: {}", action.name(), argv.join(" "));
        s.log
            .emit("power.run", json!({"action": action.name(), "argv": argv}));
        let job = move || Done::Power {
            action,
            status: power::run(&argv),
        };
        if let Err(e) = ops.spawn(job) {
            log::error!("Cannot start the {} command: {e}", action.name());
            s.dispatch(Event::PowerDone { action, ok: false });
        }
    }

    pub(super) fn on_power_done(
        &mut self,
        action: PowerAction,
        status: io::Result<ExitStatus>,
        s: &mut Lcs,
    ) {
        let ok = match &status {
            Ok(st) if st.success() => {
                log::info!("{} command finished", action.name());
                true
            }
            Ok(st) => {
                log::error!("{} command failed: {st}", action.name());
                false
            }
            Err(e) => {
                log::error!("{} command could not run: {e}", action.name());
                false
            }
        };
        s.log.emit(
            "power.done",
            json!({"action": action.name(), "ok": ok, "status": status.as_ref().ok().and_then(ExitStatus::code)}),
        );
        s.dispatch(Event::PowerDone { action, ok });
    }
}

/// Arms [`Timer::ReasonWait`] at the earliest deferred WAKEUP_REASON's deadline (or
/// cancels it if none waits).
fn arm_reason_timer(ops: &mut CoreOps<'_>, s: &Lcs) {
    match s.reason_waiters.iter().map(|(_, d)| *d).min() {
        Some(first) => ops.arm_at(Timer::ReasonWait, first),
        None => {
            ops.cancel(&Timer::ReasonWait);
        }
    }
}
