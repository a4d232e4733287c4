//! What a request does: to the model (ignition, door, the SoC's power commands), to the
//! lines (`reopen`), to the lifecycle service (`reboot-request`, on a worker); and the
//! model's effects: frames, events, deferred replies, its next deadline.

use std::time::Instant;

use mngr_ipc::client::Client;
use mngr_ipc::error_chain;
use mngr_ipc::msg::{Body, Request};
use serde_json::json;

use super::{Done, LIFECYCLE, Outcome, Requester, SimOps, Simulator, Timer};
use crate::command::Command;
use crate::model::{Effect, RtcEvent};

impl Simulator {
    pub(super) fn apply(&mut self, fx: Vec<Effect>, ops: &mut SimOps<'_>) {
        // A pending `suspend` is answered after the frames of the wake went out, so the SoC
        // finds the new reason on the line when its suspend command returns.
        let mut resumed = None;
        for e in fx {
            match e {
                Effect::SendReason(r) => self.send_reason(r, ops),
                Effect::Transition { from, to, reason } => {
                    log::info!("IOC {from} -> {to}, reason {reason:#x}");
                    self.log.emit(
                        "ioc.state",
                        json!({"from": from.name(), "to": to.name(), "reason": reason}),
                    );
                }
                Effect::PowerCut { silent } => {
                    log::warn!("Watchdog: no heartbeat for {silent:?}, cutting the power");
                    self.log.emit(
                        "ioc.power_cut",
                        json!({"silent_ms": u64::try_from(silent.as_millis()).unwrap_or(u64::MAX)}),
                    );
                }
                Effect::Resumed { reason } => resumed = Some(reason),
                Effect::Rtc(ev) => {
                    log::info!("RTC {}", ev.name());
                    let mut f = json!({"event": ev.name()});
                    if let RtcEvent::Armed(after) = ev {
                        f["after_ms"] = json!(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
                    }
                    self.log.emit("ioc.rtc", f);
                }
            }
        }
        if let Some(reason) = resumed {
            for w in std::mem::take(&mut self.suspend_waiters) {
                self.reply(w, format!("ok resumed reason={reason:#x}"), ops);
            }
        }
        self.rearm_model_timer(ops);
    }

    /// Keeps [`Timer::Model`] on the model's next deadline.
    pub(super) fn rearm_model_timer(&mut self, ops: &mut SimOps<'_>) {
        let want = self.ioc.next_deadline();
        if want == self.model_at {
            return;
        }
        match want {
            Some(at) => ops.arm_at(Timer::Model, at),
            None => {
                ops.cancel(&Timer::Model);
            }
        }
        self.model_at = want;
    }

    pub(super) fn status(&self, now: Instant) -> String {
        let c = self.faults.counts();
        let rtc = self.ioc.rtc_left(now).map_or_else(
            || "none".to_owned(),
            |d| d.as_millis().div_ceil(1000).to_string(),
        );
        let hb = self.ioc.last_heartbeat().map_or("none", |h| h.name());
        format!(
            "ok state={} reason={:#x} rtc={rtc} hb={hb} frames_rx={} frames_tx={} drop={} dup={} \
             corrupt={} garbage={} ignition={} door={} line={}",
            self.ioc.state(),
            self.ioc.reason(),
            self.frames_rx,
            self.frames_tx,
            c.drop,
            c.dup,
            c.corrupt,
            c.garbage,
            if self.ioc.ignition() { "on" } else { "off" },
            if self.ioc.door() { "open" } else { "closed" },
            if self.slots[LIFECYCLE].line.is_some() {
                "open"
            } else {
                "closed"
            },
        )
    }

    pub(super) fn ok_state(&self) -> String {
        format!(
            "ok state={} reason={:#x}",
            self.ioc.state(),
            self.ioc.reason()
        )
    }

    pub(super) fn execute(
        &mut self,
        cmd: Command,
        from: Requester,
        ops: &mut SimOps<'_>,
    ) -> Outcome {
        let now = Instant::now();
        let level = if cmd == Command::Status {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(level, "Request: {cmd}");
        let source = match from {
            Requester::Conn(_) => json!("control"),
            Requester::Scenario { line } => json!(format!("scenario:{line}")),
        };
        self.log.emit(
            "ioc.command",
            json!({"source": source, "command": cmd.to_string()}),
        );
        let fx = match cmd {
            Command::IgnitionOn => self.ioc.ignition_on(now),
            Command::IgnitionOff { force_s5 } => self.ioc.ignition_off(force_s5),
            Command::DoorOpen => self.ioc.door_open(now),
            Command::DoorClose => self.ioc.door_close(),
            Command::Status => return Outcome::Reply(self.status(now)),
            Command::Poweroff | Command::Reboot => {
                let res = match cmd {
                    Command::Poweroff => self.ioc.poweroff(now),
                    _ => self.ioc.reboot(now),
                };
                match res {
                    Ok(fx) => fx,
                    Err(e) => return Outcome::Reply(format!("err {e}")),
                }
            }
            Command::Suspend => {
                self.suspend_waiters.push(from);
                return match self.ioc.suspend(now) {
                    Ok(fx) => {
                        // The reply goes out when the system wakes (maybe within `fx`).
                        self.apply(fx, ops);
                        Outcome::Later
                    }
                    Err(e) => {
                        self.suspend_waiters.retain(|w| *w != from);
                        Outcome::Reply(format!("err {e}"))
                    }
                };
            }
            Command::RebootRequest => return self.start_reboot_request(from, ops),
            Command::Reopen => {
                if ops.is_armed(&Timer::Reopen(LIFECYCLE)) {
                    return Outcome::Reply("err a reopen is in progress".to_owned());
                }
                self.close_slot(LIFECYCLE, ops);
                ops.arm_after(Timer::Reopen(LIFECYCLE), self.reopen_delay);
                self.log
                    .emit("ioc.line", json!({"line": "lifecycle", "action": "closed"}));
                return Outcome::Reply(format!(
                    "ok reopening in {} ms",
                    self.reopen_delay.as_millis()
                ));
            }
            Command::Quit => {
                ops.shutdown();
                return Outcome::Reply("ok bye".to_owned());
            }
        };
        self.apply(fx, ops);
        Outcome::Reply(self.ok_state())
    }

    pub(super) fn start_reboot_request(
        &mut self,
        from: Requester,
        ops: &mut SimOps<'_>,
    ) -> Outcome {
        let client = Client::new(self.socket_dir.clone(), self.profile);
        let name = self.lcs_name.clone();
        let timeout = self.ipc_timeout;
        let job = move || {
            let req = Request::now(Body::Reboot { err: 0 });
            let reply = match client.send(&name, &req, timeout) {
                Ok(ack) => match ack.err() {
                    Some(0) => "ok ack err=0".to_owned(),
                    Some(e) => format!("err ack err={e}"),
                    None => format!("err unexpected ack {:?}", ack.payload),
                },
                Err(e) => format!("err {}", error_chain(&e)),
            };
            Done {
                requester: from,
                reply,
            }
        };
        match ops.spawn(job) {
            Ok(()) => Outcome::Later,
            Err(e) => Outcome::Reply(format!("err cannot start a worker: {e}")),
        }
    }
}
