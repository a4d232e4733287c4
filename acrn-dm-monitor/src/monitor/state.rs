//! [`MonitorState`]: what the monitor keeps for the device model, inside the device
//! model's state `C` — VM name, wakeup reason, DM suspend mode, the VM-ops providers and the
//! queue of messages to acrnd.

use std::collections::VecDeque;
use std::fmt;

use mngr_ipc::Profile;
use mngr_ipc::event_log::EventLog;
use mngr_ipc::msg::suspend_mode;
use mngr_ipc::runtime::Notifier;
use mngr_ipc::vocabulary::VmName;
use serde_json::json;

use super::outbox::{Delivery, Outgoing, Report};
use crate::ops::OpsRegistry;

/// A short name of a DM suspend mode, for logs.
pub fn mode_name(mode: i32) -> &'static str {
    match mode {
        suspend_mode::NONE => "running",
        suspend_mode::SYSTEM_RESET => "system_reset",
        suspend_mode::FULL_RESET => "full_reset",
        suspend_mode::POWEROFF => "poweroff",
        suspend_mode::SUSPEND => "suspend",
        suspend_mode::HALT => "halt",
        suspend_mode::TRIPLEFAULT => "triplefault",
        _ => "unknown",
    }
}

/// What the monitor keeps for the device model; lives in the device model's state `C`
/// (see [`DeviceModel`](super::DeviceModel)).
pub struct MonitorState<C> {
    vm: VmName,
    profile: Profile,
    wakeup_reason: u32,
    mode: i32,
    /// The providers; lent out while a request runs them ([`MonitorState::take_ops`]).
    ops: OpsRegistry<C>,
    /// Messages for acrnd not yet handed to a worker.
    outbox: VecDeque<Outgoing>,
    /// Messages queued or being sent.
    in_flight: usize,
    /// Wakes the monitor's outbox subscriber (set once it joined the loop).
    wake: Option<Notifier>,
    /// The outbox subscriber was woken and has not taken the queue yet.
    poked: bool,
    idle_waiters: Vec<Notifier>,
    log: EventLog,
}

impl<C> fmt::Debug for MonitorState<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorState")
            .field("vm", &self.vm)
            .field("profile", &self.profile)
            .field("wakeup_reason", &self.wakeup_reason)
            .field("mode", &self.mode)
            .field("ops", &self.ops)
            .field("outbox", &self.outbox)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl<C> MonitorState<C> {
    pub(super) fn new(vm: VmName, profile: Profile, ops: OpsRegistry<C>, log: EventLog) -> Self {
        MonitorState {
            vm,
            profile,
            wakeup_reason: 0,
            mode: suspend_mode::NONE,
            ops,
            outbox: VecDeque::new(),
            in_flight: 0,
            wake: None,
            poked: false,
            idle_waiters: Vec::new(),
            log,
        }
    }

    /// The VM name.
    pub fn vm(&self) -> &VmName {
        &self.vm
    }

    /// The ABI profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The event log the monitor writes to.
    pub fn event_log(&self) -> &EventLog {
        &self.log
    }

    /// The wakeup reason of the last DM_RESUME (0 before any).
    pub fn wakeup_reason(&self) -> u32 {
        self.wakeup_reason
    }

    pub(super) fn set_wakeup_reason(&mut self, reason: u32) {
        self.wakeup_reason = reason;
    }

    /// The DM suspend mode ([`suspend_mode`]): what DM_QUERY answers.
    pub fn suspend_mode(&self) -> i32 {
        self.mode
    }

    /// Sets the DM suspend mode; on a change, logs it (`dm.state`) and sends DM_NOTIFY.
    /// Returns whether it changed.
    pub fn set_suspend_mode(&mut self, mode: i32) -> bool {
        if mode == self.mode {
            return false;
        }
        let from = self.mode;
        self.mode = mode;
        log::info!(
            "{}: suspend mode {} -> {}",
            self.vm,
            mode_name(from),
            mode_name(mode)
        );
        self.log.emit(
            "dm.state",
            json!({"mode": mode, "from": from, "name": mode_name(mode)}),
        );
        self.notify_state(mode);
        true
    }

    /// Sends DM_NOTIFY {VM name, `mode`} to acrnd (asynchronously, in order).
    pub fn notify_state(&mut self, mode: i32) {
        self.queue(Outgoing::Notify { mode });
    }

    /// Asks acrnd to start or resume this VM in `seconds` (ACRND_TIMER, relative, with the
    /// VM name), asynchronously. 0 seconds is ignored.
    pub fn set_wakeup_timer(&mut self, seconds: u64) {
        if seconds == 0 {
            log::warn!("{}: a wake-up timer of 0 s ignored", self.vm);
            return;
        }
        let secs = i64::try_from(seconds).unwrap_or(i64::MAX);
        self.queue(Outgoing::Timer { secs });
    }

    /// Requests to acrnd queued or in flight.
    pub fn pending_to_acrnd(&self) -> usize {
        self.in_flight
    }

    /// Pokes `n` once no request to acrnd is queued or in flight (at once if none is).
    pub fn notify_when_idle(&mut self, n: Notifier) {
        if self.in_flight == 0 {
            n.notify();
        } else {
            self.idle_waiters.push(n);
        }
    }

    /// Lends the providers out (an empty registry stays in their place until
    /// [`MonitorState::put_ops`]).
    pub(crate) fn take_ops(&mut self) -> OpsRegistry<C> {
        std::mem::replace(&mut self.ops, OpsRegistry::empty())
    }

    /// Takes the providers back.
    pub(crate) fn put_ops(&mut self, ops: OpsRegistry<C>) {
        self.ops = ops;
    }

    fn queue(&mut self, m: Outgoing) {
        let fields = match m {
            Outgoing::Notify { mode } => json!({"msg": m.msg_name(), "mode": mode}),
            Outgoing::Timer { secs } => json!({"msg": m.msg_name(), "t": secs}),
        };
        log::debug!("{}: {m:?} queued for acrnd", self.vm);
        self.log.emit("acrnd.send", fields);
        self.outbox.push_back(m);
        self.in_flight += 1;
        self.poke();
    }

    /// Wakes the outbox subscriber unless it is awake already.
    fn poke(&mut self) {
        if self.poked || self.outbox.is_empty() {
            return;
        }
        if let Some(n) = &self.wake {
            n.notify();
            self.poked = true;
        }
    }

    /// Connects the queue to the outbox subscriber that `wake` notifies (and wakes it for
    /// what is queued already).
    pub(super) fn attach(&mut self, wake: Notifier) {
        self.wake = Some(wake);
        self.poked = false;
        self.poke();
    }

    /// The queue, for the outbox subscriber (which coalesces and sends from it).
    pub(super) fn outbox(&mut self) -> &mut VecDeque<Outgoing> {
        self.poked = false;
        &mut self.outbox
    }

    pub(super) fn delivered(&mut self, r: Report) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let name = r.msg.msg_name();
        let detail = match r.msg {
            Outgoing::Notify { mode } => json!(mode),
            Outgoing::Timer { secs } => json!(secs),
        };
        match &r.delivery {
            Delivery::Acked { err, attempts } => {
                if matches!(err, Some(e) if *e != 0) {
                    log::warn!("{}: acrnd answered {name} ({detail}) with {err:?}", self.vm);
                } else {
                    log::info!("{}: {name} ({detail}) delivered to acrnd", self.vm);
                }
                self.log.emit(
                    "acrnd.result",
                    json!({"msg": name, "value": detail, "ok": true, "err": err, "attempts": attempts}),
                );
            }
            Delivery::Failed { error, attempts } => {
                log::warn!(
                    "{}: {name} ({detail}) not delivered after {attempts} attempt(s): {error}",
                    self.vm
                );
                self.log.emit(
                    "acrnd.result",
                    json!({"msg": name, "value": detail, "ok": false, "error": error, "attempts": attempts}),
                );
            }
            Delivery::Coalesced => {
                log::debug!("{}: {name} ({detail}) to acrnd coalesced", self.vm);
                self.log.emit(
                    "acrnd.result",
                    json!({"msg": name, "value": detail, "ok": false, "coalesced": true}),
                );
            }
        }
        if self.in_flight == 0 {
            for n in self.idle_waiters.drain(..) {
                n.notify();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A state for VM `vm1` whose queue nothing sends (no outbox subscriber).
    pub(crate) fn detached<C>(ops: OpsRegistry<C>) -> MonitorState<C> {
        let vm = VmName::new("vm1", Profile::F).expect("valid");
        MonitorState::new(vm, Profile::F, ops, EventLog::disabled("vm1"))
    }

    impl<C> MonitorState<C> {
        /// What was queued for acrnd since the last call.
        pub(crate) fn sent(&mut self) -> Vec<Outgoing> {
            self.outbox.drain(..).collect()
        }
    }

    #[test]
    fn helpers_queue_in_order_and_track_what_is_pending() {
        let mut m = detached::<()>(OpsRegistry::empty());
        assert!(!m.set_suspend_mode(suspend_mode::NONE), "no change");
        m.set_wakeup_timer(7);
        m.set_wakeup_timer(0);
        assert!(m.set_suspend_mode(suspend_mode::SUSPEND));
        m.set_wakeup_timer(u64::MAX);
        assert_eq!(
            m.sent(),
            vec![
                Outgoing::Timer { secs: 7 },
                Outgoing::Notify { mode: 4 },
                Outgoing::Timer { secs: i64::MAX },
            ]
        );
        assert_eq!(m.pending_to_acrnd(), 3);
        for msg in [Outgoing::Timer { secs: 7 }, Outgoing::Notify { mode: 4 }] {
            m.delivered(Report {
                msg,
                delivery: Delivery::Acked {
                    err: Some(0),
                    attempts: 1,
                },
            });
        }
        assert_eq!(m.pending_to_acrnd(), 1);
        m.delivered(Report {
            msg: Outgoing::Timer { secs: i64::MAX },
            delivery: Delivery::Failed {
                error: "x".into(),
                attempts: 3,
            },
        });
        assert_eq!(m.pending_to_acrnd(), 0);
    }
}
