//! Taking every VM down: the stop-all (ACRND_STOP, a host power-off or reboot), its
//! completion on the last VM's state change, its deadline (refuse, or force and kill), and
//! the report to the lifecycle service.

use std::collections::BTreeMap;
use std::time::Duration;

use mngr_ipc::host::HostIntent;
use mngr_ipc::msg::{Body, Request, StopTarget, err};
use mngr_ipc::vocabulary::Phase;
use serde_json::json;

use super::{Command, DmKind, Now, Orchestrator, Report, StopAll, Timer, VmState};
use crate::coordinator::{blockers, completion};
use crate::timers::nearest;

impl Orchestrator {
    pub(super) fn start_stop_all(
        &mut self,
        target: StopTarget,
        force: bool,
        timeout: Duration,
        now: Now,
    ) {
        log::info!(
            "Stop-all: target {}, force {force}, within {} ms",
            target.name(),
            timeout.as_millis()
        );
        self.emit(
            "stop_all.start",
            json!({"target": target.name(), "force": force, "timeout_ms": timeout.as_millis()}),
        );
        self.phase = match target {
            StopTarget::S3 => Phase::Suspending,
            _ => Phase::Stopping,
        };
        self.start_queue.clear();
        self.arm(Timer::Deadline, now.mono + timeout);
        self.stop_all = Some(StopAll {
            target,
            force,
            started: now.mono,
            forcing: false,
        });
        let running: Vec<String> = self
            .vms
            .iter()
            .filter(|(_, v)| matches!(v.state, VmState::Started | VmState::Starting))
            .map(|(n, _)| n.clone())
            .collect();
        for vm in running {
            match target {
                StopTarget::S5 => {
                    self.begin(&vm, VmState::Stopping);
                    self.send_dm(&vm, DmKind::Stop { force: 0 }, None);
                }
                StopTarget::S3 => {
                    self.begin(&vm, VmState::Suspending);
                    self.send_dm(&vm, DmKind::Suspend, None);
                }
                // The C cbc_lifecycle names no target: the guests act on the IOC's request
                // through their virtual IOCs; acrnd only waits.
                StopTarget::Unspecified => {}
            }
        }
    }

    /// Completes a stop-all as soon as every VM has reached a final state.
    pub(super) fn check(&mut self, now: Now) {
        let Some(report) = completion(self.vms.values().map(|v| &v.state)) else {
            return;
        };
        let Some(stop) = self.stop_all.take() else {
            return;
        };
        self.cancel(Timer::Deadline);
        self.cancel(Timer::Kill);
        let took = now.mono.saturating_duration_since(stop.started);
        log::info!(
            "Stop-all complete after {} ms: {}",
            took.as_millis(),
            report.name()
        );
        self.emit(
            "stop_all.done",
            json!({"report": report.name(), "ms": took.as_millis()}),
        );
        if self.terminating.is_some() {
            self.out.push(Command::Exit);
            return;
        }
        self.held = true;
        self.report(report, err::OK);
    }

    /// RTC_TIMER for the nearest wake-up (if any), then SHUTDOWN / SUSPEND with `code`.
    fn report(&mut self, report: Report, code: i32) {
        let mut requests = Vec::new();
        // The wake-up matters only if the system goes down (not on a refusal).
        if code == err::OK
            && let Some((vm, when)) = nearest(&self.timers)
        {
            let t = i64::try_from(when).unwrap_or(i64::MAX);
            log::info!("Asking the IOC to wake the system at epoch {t} (for {vm})");
            requests.push((
                "RTC_TIMER",
                Request::now(Body::RtcTimer {
                    vmname: Vec::new(),
                    t,
                }),
            ));
        }
        let (what, body) = match report {
            Report::Shutdown => ("SHUTDOWN", Body::Shutdown { err: code }),
            Report::Suspend => ("SUSPEND", Body::Suspend { err: code }),
        };
        self.emit("lcs.report", json!({"msg": what, "err": code}));
        requests.push((what, Request::now(body)));
        self.phase = Phase::Idle;
        self.out.push(Command::Report { requests, what });
    }

    /// The stop-all's deadline: force the stragglers down, or refuse.
    pub(super) fn deadline(&mut self, now: Now) {
        let Some(stop) = self.stop_all.as_ref() else {
            return;
        };
        let states: BTreeMap<String, VmState> =
            self.vms.iter().map(|(n, v)| (n.clone(), v.state)).collect();
        let late: Vec<String> = blockers(&states).into_iter().map(str::to_owned).collect();
        let force = stop.force || self.rules.force_on_deadline || self.terminating.is_some();
        log::warn!("Stop-all deadline: {} did not finish", late.join(", "));
        self.emit(
            "stop_all.deadline",
            json!({"blocking": late, "force": force}),
        );
        if force {
            if let Some(stop) = self.stop_all.as_mut() {
                stop.forcing = true;
            }
            for vm in &late {
                self.begin(vm, VmState::Stopping);
                self.send_dm(vm, DmKind::Stop { force: 1 }, None);
            }
            self.arm(Timer::Kill, now.mono + self.rules.kill_grace);
        } else {
            self.stop_all = None;
            self.report(Report::Suspend, err::FAILED);
            // The power transition is abandoned: due timers may fire now.
            self.fire_timers(now);
            self.rearm(now);
        }
    }

    /// SIGKILLs the device models that keep the forced stop-all from completing.
    pub(super) fn kill_stragglers(&mut self) {
        let stragglers: Vec<(String, u32)> = self
            .vms
            .iter()
            .filter(|(_, v)| !matches!(v.state, VmState::Stopped | VmState::Suspended))
            .filter_map(|(n, v)| v.pid.map(|p| (n.clone(), p)))
            .collect();
        for (vm, pid) in stragglers {
            log::warn!("Killing the device model of {vm} (pid {pid})");
            self.emit("vm.kill", json!({"vm": vm, "pid": pid}));
            self.out.push(Command::Kill { vm, pid });
        }
    }

    /// SIGTERM: ask what the host is doing; [`Orchestrator::finish`] acts on the answer.
    pub(super) fn terminate(&mut self) {
        if self.terminating.is_some() || self.asked_intent {
            return;
        }
        self.asked_intent = true;
        self.out.push(Command::AskIntent);
    }

    /// The host's intent is known: leave the VMs running, or stop them all first.
    pub(super) fn finish(&mut self, intent: HostIntent, now: Now) {
        self.terminating = Some(intent);
        self.emit("exit", json!({"intent": intent.name()}));
        match intent {
            HostIntent::None => {
                log::info!("Service stop: the VMs keep running");
                self.out.push(Command::Stopping { extend: None });
                self.out.push(Command::Exit);
            }
            HostIntent::Poweroff | HostIntent::Reboot => {
                let budget = self.rules.shutdown_budget;
                log::info!(
                    "Host {}: stopping every VM within {} s",
                    intent.name(),
                    budget.as_secs()
                );
                self.out.push(Command::Stopping {
                    extend: Some(budget + self.rules.kill_grace + Duration::from_secs(5)),
                });
                self.stop_all = None;
                self.cancel(Timer::Deadline);
                self.cancel(Timer::Kill);
                self.start_stop_all(StopTarget::S5, true, budget, now);
            }
        }
    }
}
