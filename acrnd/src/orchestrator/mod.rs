//! acrnd's decisions, pure: `(state, event, now) -> commands`.
//!
//! The [`Orchestrator`] owns what acrnd knows: the VM table, the RTC timers, the stop-all
//! in progress, the start queue and the power phase. [`Orchestrator::handle`] takes one
//! [`Event`] (a request, a device model's answer, a process exit, a timer, the disk's
//! answer) and the time, changes the state and returns the [`Command`]s the daemon carries
//! out: requests to device models and to the lifecycle service, launches, kills, timers,
//! store writes, answers to deferred requests, event-log lines. Nothing here touches a
//! socket, a process, a file or a clock, so every rule is unit-tested (`tests.rs`).
//!
//! Per-VM operations are serialized: a VM has at most one operation in flight, and a
//! request that conflicts with it or with the VM's state gets `-EBUSY` or `-EINVAL`.

mod boot;
mod power;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use mngr_ipc::cbc::reason as wake;
use mngr_ipc::host::HostIntent;
use mngr_ipc::msg::{Request, StopTarget};
use mngr_ipc::vocabulary::Phase;
use serde_json::{Value, json};

pub use crate::coordinator::{Report, VmState};
use crate::timers::Timers;
pub use requests::{Answer, Req};

/// Attempts to learn a launched VM's state by DM_QUERY before giving up on it.
pub const MAX_START_POLLS: u32 = 120;

/// The time of an event: the monotonic clock for deadlines, the wall clock (epoch
/// seconds) for RTC timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Seconds since the epoch.
    pub epoch: u64,
}

/// The settings the rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Start every registered VM at boot.
    pub autostart: bool,
    /// VMs starting at once at boot.
    pub start_parallel: usize,
    /// Pause between two starts at boot.
    pub start_delay: Duration,
    /// Interval of DM_QUERY while a VM changes state.
    pub poll: Duration,
    /// Force the stragglers at a stop-all's deadline even if not asked to.
    pub force_on_deadline: bool,
    /// After a forced DM_STOP, the time before the kill.
    pub kill_grace: Duration,
    /// Time the VMs get when the host powers off or reboots.
    pub shutdown_budget: Duration,
}

/// Identifies a deferred answer: the daemon keeps the connection's ack under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyId(pub u64);

/// A request to a device model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmKind {
    /// DM_QUERY.
    Query,
    /// DM_STOP with `force`.
    Stop {
        /// 1: power off at once.
        force: i32,
    },
    /// DM_SUSPEND.
    Suspend,
    /// DM_RESUME with the reason handed to the guest.
    Resume {
        /// Wakeup reason.
        reason: u32,
    },
}

impl DmKind {
    /// The message's C name.
    pub fn name(self) -> &'static str {
        match self {
            DmKind::Query => "DM_QUERY",
            DmKind::Stop { .. } => "DM_STOP",
            DmKind::Suspend => "DM_SUSPEND",
            DmKind::Resume { .. } => "DM_RESUME",
        }
    }

    /// The message and its argument, for logs (`DM_STOP force 1`).
    pub fn describe(self) -> String {
        match self {
            DmKind::Stop { force } => format!("DM_STOP force {force}"),
            DmKind::Resume { reason } => format!("DM_RESUME reason {reason:#x}"),
            other => other.name().to_owned(),
        }
    }
}

/// Why the wakeup reason is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonFor {
    /// acrnd started.
    Boot,
    /// The lifecycle service said the system is alive again.
    Resume,
}

impl ReasonFor {
    /// `Boot` or `Resume` (the event log's word).
    pub fn name(self) -> &'static str {
        match self {
            ReasonFor::Boot => "Boot",
            ReasonFor::Resume => "Resume",
        }
    }
}

/// acrnd's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The nearest RTC timer is due.
    Wake,
    /// Ask the VMs in transition for their state.
    Poll,
    /// Start the next queued VM.
    Start,
    /// Kill the device models a forced stop-all is still waiting for.
    Kill,
    /// The stop-all's deadline.
    Deadline,
}

/// How a device model answered a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmAnswer {
    /// It acked with `err` (and, for DM_QUERY, its suspend mode).
    Ack {
        /// `data.err` (0 for a DM_QUERY ack).
        err: i32,
        /// The suspend mode of a DM_QUERY ack.
        state: Option<i32>,
    },
    /// No monitor socket of that VM exists.
    NotFound,
    /// The request failed (timeout, closed, refused connection), with why.
    Failed(String),
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The loop runs and the server accepts requests: re-attach and ask why we woke.
    Boot,
    /// The lifecycle service's answer to WAKEUP_REASON (`None`: nobody answered).
    Reason {
        /// Why it was asked.
        why: ReasonFor,
        /// The reason.
        reason: Option<u32>,
    },
    /// A device model answered (or a request to it failed).
    Dm {
        /// The VM.
        vm: String,
        /// What was asked.
        kind: DmKind,
        /// The deferred answer waiting for it.
        reply: Option<ReplyId>,
        /// The answer.
        answer: DmAnswer,
    },
    /// A launch started the device model.
    Launched {
        /// The VM.
        vm: String,
        /// The device model's pid.
        pid: u32,
        /// The wakeup reason it was launched with.
        reason: u32,
        /// The deferred answer waiting for it.
        reply: Option<ReplyId>,
    },
    /// A launch failed.
    LaunchFailed {
        /// The VM.
        vm: String,
        /// The deferred answer waiting for it.
        reply: Option<ReplyId>,
    },
    /// A VM's device model exited.
    Exited {
        /// The VM.
        vm: String,
    },
    /// A timer is due.
    Timer(Timer),
    /// A timer-store write finished.
    Persisted {
        /// The timer insertions the write carried, to take back if it failed.
        undo: Vec<Undo>,
        /// The timers it wrote (or tried to).
        written: Timers,
        /// Why it failed.
        error: Option<String>,
    },
    /// A report to the lifecycle service was delivered (or not).
    LcsDelivered {
        /// `SHUTDOWN`, `SUSPEND`.
        what: &'static str,
        /// Whether a lifecycle service took it.
        ok: bool,
    },
    /// SIGTERM or SIGINT.
    Terminate,
    /// What the host is doing, asked at SIGTERM.
    Intent(HostIntent),
}

/// Something to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send a request to a VM's device model; its answer comes back as [`Event::Dm`].
    Dm {
        /// The VM.
        vm: String,
        /// The request.
        kind: DmKind,
        /// The deferred answer to complete with its result.
        reply: Option<ReplyId>,
    },
    /// Launch a VM; [`Event::Launched`] or [`Event::LaunchFailed`] follows.
    Launch {
        /// The VM.
        vm: String,
        /// Its wakeup reason.
        reason: u32,
        /// The deferred answer waiting for it.
        reply: Option<ReplyId>,
    },
    /// Watch a device-model process (its exit becomes [`Event::Exited`]).
    Watch {
        /// The VM.
        vm: String,
        /// The device model's pid.
        pid: u32,
    },
    /// SIGKILL a device model.
    Kill {
        /// The VM.
        vm: String,
        /// The device model's pid.
        pid: u32,
    },
    /// Ask the lifecycle service for the wakeup reason ([`Event::Reason`] follows).
    AskReason(ReasonFor),
    /// Send these requests to the lifecycle service, in order ([`Event::LcsDelivered`]
    /// follows).
    Report {
        /// `(name, request)`.
        requests: Vec<(&'static str, Request)>,
        /// The name of the last one, for [`Event::LcsDelivered`].
        what: &'static str,
    },
    /// Write the timer store as it is when the write starts ([`Event::Persisted`]
    /// follows).
    Persist {
        /// The deferred answer waiting for the write.
        reply: Option<ReplyId>,
        /// The insertion to take back if the write fails.
        undo: Option<Undo>,
    },
    /// Arm a timer (moving it if armed).
    Arm(Timer, Instant),
    /// Cancel a timer.
    Cancel(Timer),
    /// Complete a deferred answer with `err`.
    Answer(ReplyId, i32),
    /// Ask what the host is doing ([`Event::Intent`] follows).
    AskIntent,
    /// Tell systemd acrnd is stopping, and how much longer it may take.
    Stopping {
        /// The time the stop may take beyond the default.
        extend: Option<Duration>,
    },
    /// An event-log line.
    Log(&'static str, Value),
    /// Leave the event loop.
    Exit,
}

/// A timer insertion to take back if the write that carries it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undo {
    /// The VM.
    pub vm: String,
    /// The change count of the VM's timer the insertion made: a later change of the same
    /// timer (another ACRND_TIMER, the timer firing) is not taken back with it.
    pub change: u64,
}

/// What acrnd knows of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// Its state.
    pub state: VmState,
    /// The state before the operation in flight, restored if the device model refuses it.
    before: VmState,
    /// Whether a launch script registers it.
    pub launchable: bool,
    /// Its device model's pid.
    pub pid: Option<u32>,
    /// An operation is in flight.
    busy: bool,
    /// Its device model is a child of this acrnd (launched, not exited yet).
    child: bool,
    polls: u32,
    query_out: bool,
    /// DM_NOTIFYs applied so far, and their count when the DM_QUERY in flight was sent: an
    /// answer overtaken by a DM_NOTIFY is stale.
    notified: u64,
    query_from: u64,
}

impl Vm {
    /// A stopped VM (`launchable` if a launch script registers it).
    pub fn new(launchable: bool) -> Self {
        Vm {
            state: VmState::Stopped,
            before: VmState::Stopped,
            launchable,
            pid: None,
            busy: false,
            child: false,
            polls: 0,
            query_out: false,
            notified: 0,
            query_from: 0,
        }
    }

    /// A device model found running at start-up: starting until it answers a query.
    pub fn running(launchable: bool, pid: u32) -> Self {
        Vm {
            state: VmState::Starting,
            pid: Some(pid),
            ..Vm::new(launchable)
        }
    }

    fn in_transition(&self) -> bool {
        matches!(
            self.state,
            VmState::Starting | VmState::Stopping | VmState::Suspending
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct StopAll {
    target: StopTarget,
    force: bool,
    started: Instant,
    forcing: bool,
}

/// acrnd's state and rules.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    rules: Rules,
    vms: BTreeMap<String, Vm>,
    timers: Timers,
    /// The timers as the store holds them (last written, or loaded).
    stored: Timers,
    /// The change count of each VM's timer when it last changed, and the counter.
    timer_changes: BTreeMap<String, u64>,
    changes: u64,
    reason: u32,
    lcs_reachable: bool,
    stop_all: Option<StopAll>,
    /// A stop-all was reported to the lifecycle service: the system is going down, so no
    /// timer fires until it resumes.
    held: bool,
    phase: Phase,
    start_queue: VecDeque<String>,
    last_start: Option<Instant>,
    terminating: Option<HostIntent>,
    asked_intent: bool,
    armed: BTreeSet<Timer>,
    out: Vec<Command>,
}

impl Orchestrator {
    /// acrnd with these VMs and timers, before boot.
    pub fn new(rules: Rules, vms: BTreeMap<String, Vm>, timers: Timers) -> Self {
        Orchestrator {
            rules,
            vms,
            stored: timers.clone(),
            timers,
            timer_changes: BTreeMap::new(),
            changes: 0,
            reason: 0,
            lcs_reachable: false,
            stop_all: None,
            held: false,
            phase: Phase::Idle,
            start_queue: VecDeque::new(),
            last_start: None,
            terminating: None,
            asked_intent: false,
            armed: BTreeSet::new(),
            out: Vec::new(),
        }
    }

    /// The VM table.
    pub fn vms(&self) -> &BTreeMap<String, Vm> {
        &self.vms
    }

    /// The RTC timers: VM → epoch second.
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// The latched wakeup reason (0 before the lifecycle service answered).
    pub fn reason(&self) -> u32 {
        self.reason
    }

    /// Whether the lifecycle service answered the last request.
    pub fn lcs_reachable(&self) -> bool {
        self.lcs_reachable
    }

    /// What acrnd does as a whole.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether `vm` is in the VM table.
    pub fn knows(&self, vm: &str) -> bool {
        self.vms.contains_key(vm)
    }

    /// Whether `pid` is the device model of `vm` (it may ask for its own VM).
    pub fn is_dm_of(&self, vm: &str, pid: i32) -> bool {
        self.vms
            .get(vm)
            .and_then(|v| v.pid)
            .is_some_and(|p| i64::from(p) == i64::from(pid))
    }

    /// Takes one event at `now`; returns what to do.
    pub fn handle(&mut self, event: Event, now: Now) -> Vec<Command> {
        match event {
            Event::Boot => self.boot(),
            Event::Reason { why, reason } => self.on_reason(why, reason, now),
            Event::Dm {
                vm,
                kind,
                reply,
                answer,
            } => self.on_dm(&vm, kind, reply, answer),
            Event::Launched {
                vm,
                pid,
                reason,
                reply,
            } => self.on_launched(&vm, pid, reason, reply),
            Event::LaunchFailed { vm, reply } => self.on_launch_failed(&vm, reply),
            Event::Exited { vm } => self.on_exited(&vm, now),
            Event::Timer(t) => self.on_timer(t, now),
            Event::Persisted {
                undo,
                written,
                error,
            } => self.on_persisted(undo, written, error, now),
            Event::LcsDelivered { what, ok } => {
                self.lcs_reachable = ok;
                log::debug!("{what} delivered: {ok}");
            }
            Event::Terminate => self.terminate(),
            Event::Intent(intent) => self.finish(intent, now),
        }
        self.settle(now);
        std::mem::take(&mut self.out)
    }

    /// Takes one request at `now`: its answer now, or later under `reply`; and what to do.
    pub fn request(&mut self, req: Req, reply: ReplyId, now: Now) -> (Answer, Vec<Command>) {
        let answer = self.on_request(req, reply, now);
        self.settle(now);
        (answer, std::mem::take(&mut self.out))
    }

    fn on_timer(&mut self, t: Timer, now: Now) {
        self.armed.remove(&t);
        match t {
            Timer::Wake => {
                self.fire_timers(now);
                self.rearm(now);
            }
            Timer::Poll => self.poll_transitions(),
            Timer::Start => {}
            Timer::Kill => {
                // Only for the stop-all that forced: one abandoned meanwhile kills nothing.
                if self.stop_all.as_ref().is_some_and(|st| st.forcing) {
                    self.kill_stragglers();
                }
            }
            Timer::Deadline => self.deadline(now),
        }
    }

    /// What follows any event: a stop-all completes, queued VMs start, transitions are
    /// polled.
    fn settle(&mut self, now: Now) {
        self.check(now);
        self.pump_starts(now);
        self.ensure_poll(now);
    }

    fn emit(&mut self, kind: &'static str, fields: Value) {
        self.out.push(Command::Log(kind, fields));
    }

    fn arm(&mut self, t: Timer, at: Instant) {
        self.armed.insert(t);
        self.out.push(Command::Arm(t, at));
    }

    fn cancel(&mut self, t: Timer) {
        if self.armed.remove(&t) {
            self.out.push(Command::Cancel(t));
        }
    }

    /// Whether timers must wait: a power transition runs or is reported.
    fn timers_held(&self) -> bool {
        self.stop_all.is_some() || self.terminating.is_some() || self.held
    }

    /// The reason handed to a guest: the latched one, or the default if none.
    fn boot_reason(reason: u32) -> u32 {
        if reason == 0 {
            wake::DEFAULT_BOOT
        } else {
            reason
        }
    }

    fn set_state(&mut self, name: &str, state: VmState, why: &str) {
        let Some(vm) = self.vms.get_mut(name) else {
            return;
        };
        if vm.state == state {
            return;
        }
        let from = vm.state;
        log::info!("VM {name}: {} -> {} ({why})", from.name(), state.name());
        if from == VmState::Starting {
            vm.polls = 0;
        }
        vm.state = state;
        self.emit(
            "vm.state",
            json!({"vm": name, "from": from.name(), "to": state.name(), "why": why}),
        );
    }

    /// Marks an operation on `name` in flight, moving it to `state`.
    fn begin(&mut self, name: &str, state: VmState) {
        if let Some(vm) = self.vms.get_mut(name) {
            vm.busy = true;
            vm.before = vm.state;
        }
        self.set_state(name, state, "request");
    }

    fn send_dm(&mut self, vm: &str, kind: DmKind, reply: Option<ReplyId>) {
        if kind == DmKind::Query {
            if let Some(v) = self.vms.get_mut(vm) {
                v.query_out = true;
                v.query_from = v.notified;
            }
        } else {
            log::info!("{} to {vm}", kind.describe());
            self.emit("dm.send", json!({"vm": vm, "msg": kind.describe()}));
        }
        self.out.push(Command::Dm {
            vm: vm.to_owned(),
            kind,
            reply,
        });
    }

    /// Takes a device-model suspend mode (from DM_NOTIFY or DM_QUERY) into the VM state.
    fn apply_mode(&mut self, name: &str, mode: i32, source: &str) {
        use mngr_ipc::msg::suspend_mode;
        let Some(vm) = self.vms.get(name) else { return };
        let next = match (mode, vm.state) {
            (suspend_mode::NONE, VmState::Starting | VmState::Suspended) => VmState::Started,
            (suspend_mode::NONE, s) => s,
            (suspend_mode::SUSPEND, _) => VmState::Suspended,
            (suspend_mode::POWEROFF | suspend_mode::HALT, _) => VmState::Stopped,
            (_, s) => s,
        };
        self.set_state(name, next, source);
    }

    fn ensure_poll(&mut self, now: Now) {
        let transitional = self.vms.values().any(Vm::in_transition);
        if transitional && !self.armed.contains(&Timer::Poll) {
            self.arm(Timer::Poll, now.mono + self.rules.poll);
        }
    }

    fn poll_transitions(&mut self) {
        let due: Vec<String> = self
            .vms
            .iter_mut()
            .filter(|(_, v)| !v.query_out && v.in_transition())
            .filter_map(|(n, v)| {
                v.polls += 1;
                (v.polls <= MAX_START_POLLS).then(|| n.clone())
            })
            .collect();
        for vm in due {
            self.send_dm(&vm, DmKind::Query, None);
        }
    }

    /// Counts a change of `vm`'s timer; returns its change count.
    fn timer_changed(&mut self, vm: &str) -> u64 {
        self.changes += 1;
        self.timer_changes.insert(vm.to_owned(), self.changes);
        self.changes
    }

    /// A write ended. If it failed, the timers it carried that nothing changed since go
    /// back to what the store holds: their requests were answered -1.
    fn on_persisted(&mut self, undo: Vec<Undo>, written: Timers, error: Option<String>, now: Now) {
        let Some(e) = error else {
            self.stored = written;
            self.emit("store.saved", json!({"timers": self.timers.len()}));
            return;
        };
        log::error!("Timer store not written: {e}");
        self.emit("store.error", json!({"error": e}));
        let mut changed = false;
        for u in undo.into_iter().rev() {
            // Only if nothing changed the timer since: a later ACRND_TIMER for the same VM
            // is written (and acked) by the next write.
            if self.timer_changes.get(&u.vm) == Some(&u.change) {
                match self.stored.get(&u.vm) {
                    Some(p) => self.timers.insert(u.vm.clone(), *p),
                    None => self.timers.remove(&u.vm),
                };
                self.timer_changed(&u.vm);
                changed = true;
            }
        }
        if changed {
            self.rearm(now);
        }
    }
}
