//! The lifecycle state machine of sos-lcs: pure, no I/O, no clock.
//!
//! States and the table of valid transitions are those of the C `cbc_lifecycle`
//! (`valid_map`), with the originals' dead ends fixed:
//!
//! * the IOC reporting a real wake source again during SHUTDOWN_DELAY (ignition back on)
//!   cancels the shutdown: SHUTDOWN_DELAY → ALIVE, and acrnd is told ACRND_RESUME;
//! * SHUTDOWN_DELAY and the ACRND_* states are bounded: the daemon arms a deadline on
//!   [`Action::ArmDeadline`] and feeds [`Event::Deadline`] back; the machine then acts
//!   (S5 for an unanswered shutdown request; the agreed power action when the IOC never
//!   confirms with reason 0), and reports what it waited for in [`Outcome::forced`];
//! * an ACRND_STOP nobody could take ends in S5 when the IOC asked for force-S5, else S3
//!   (the original always assumed S3);
//! * acrnd's SHUTDOWN or SUSPEND is taken only while its ACRND_STOP is pending
//!   (SHUTDOWN_DELAY): one arriving while ALIVE answers a stop that ignition cancelled, and is
//!   refused rather than suspending a running car;
//! * SHUTDOWN is transient: a shutdown request moves straight on to SHUTDOWN_DELAY and sends
//!   ACRND_STOP at once instead of at the next tick;
//! * an alive reason read in IOC_SHUTDOWN (the system resumed and the IOC spoke before the
//!   suspend command returned) is kept and acted on when the command returns
//!   ([`Machine::take_woke`]); the original dropped it and woke only on the IOC's next
//!   reason frame, one IOC period later.
//!
//! ```text
//!  DEFAULT --reason alive--> ALIVE --shutdown request--> SHUTDOWN_DELAY --SHUTDOWN/SUSPEND ok--> ACRND_*
//!     ^                        ^                           |   |                                   |
//!     |                        +-----reason alive----------+   +--refusal (err != 0)--> DEFAULT     | IOC reason 0
//!     +--------------------- suspend returned ---------- IOC_SHUTDOWN <-----------------------------+
//! ```

use mngr_ipc::StopTarget;
use mngr_ipc::cbc::{Heartbeat, ReasonClass, classify, reason};

/// The lifecycle states (numbered as in the C code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// 0: nothing decided (start-up, after S3, after a refusal).
    Default,
    /// 1: the IOC reports a real wake source: stay on.
    Alive,
    /// 2: the IOC requests a shutdown (transient).
    Shutdown,
    /// 3: acrnd was asked to stop or suspend the VMs; waiting for its verdict.
    ShutdownDelay,
    /// 4: acrnd agreed to S5.
    AcrndShutdown,
    /// 5: the IOC sent reason 0: the power action runs.
    IocShutdown,
    /// 6: reboot agreed.
    AcrndReboot,
    /// 7: acrnd agreed to S3.
    AcrndSuspend,
}

impl State {
    /// Every state, in C order.
    pub const ALL: [State; 8] = [
        State::Default,
        State::Alive,
        State::Shutdown,
        State::ShutdownDelay,
        State::AcrndShutdown,
        State::IocShutdown,
        State::AcrndReboot,
        State::AcrndSuspend,
    ];

    /// The C log name.
    pub fn name(self) -> &'static str {
        match self {
            State::Default => "default",
            State::Alive => "keep_alive",
            State::Shutdown => "shutdown",
            State::ShutdownDelay => "shutdown_delay",
            State::AcrndShutdown => "acrnd_shutdown",
            State::IocShutdown => "ioc_shutdown",
            State::AcrndReboot => "acrnd_reboot",
            State::AcrndSuspend => "acrnd_suspend",
        }
    }

    /// The heartbeat this state sends every period (none while the power action runs).
    pub fn heartbeat(self) -> Option<Heartbeat> {
        match self {
            State::Default => Some(Heartbeat::INIT),
            State::Alive => Some(Heartbeat::ACTIVE),
            State::Shutdown | State::ShutdownDelay => Some(Heartbeat::SHUTDOWN_DELAY),
            State::AcrndShutdown => Some(Heartbeat::S5),
            State::AcrndReboot => Some(Heartbeat::REBOOT),
            State::AcrndSuspend => Some(Heartbeat::S3),
            State::IocShutdown => None,
        }
    }

    /// Whether an armed RTC wake-up goes out with this state's heartbeat (S3 and S5).
    pub fn sends_rtc(self) -> bool {
        matches!(self, State::AcrndShutdown | State::AcrndSuspend)
    }

    /// Whether the state waits for someone else under a deadline.
    pub fn is_bounded(self) -> bool {
        matches!(
            self,
            State::ShutdownDelay | State::AcrndShutdown | State::AcrndReboot | State::AcrndSuspend
        )
    }
}

/// Whether `from → to` is allowed: the C `valid_map`, with two changes:
///
/// * SHUTDOWN_DELAY → ALIVE is allowed: a shutdown cancelled because ignition came back;
/// * ALIVE → ACRND_SHUTDOWN / ACRND_SUSPEND are not: acrnd's SHUTDOWN or SUSPEND answers an
///   ACRND_STOP, so one arriving while alive is a late answer to a cancelled stop, and
///   taking it would suspend or power off a car whose ignition is on. REBOOT from ALIVE
///   stays valid (a reboot requested over IPC).
pub fn valid(from: State, to: State) -> bool {
    use State::*;
    if from == to {
        return true;
    }
    match from {
        Default => matches!(to, Alive | Shutdown),
        Alive => matches!(to, Shutdown | AcrndReboot),
        Shutdown => matches!(
            to,
            ShutdownDelay | AcrndShutdown | IocShutdown | AcrndReboot | AcrndSuspend
        ),
        ShutdownDelay => matches!(
            to,
            Default | Alive | AcrndShutdown | IocShutdown | AcrndReboot | AcrndSuspend
        ),
        AcrndShutdown | AcrndReboot | AcrndSuspend => to == IocShutdown,
        IocShutdown => to == Default,
    }
}

/// What acrnd (or another client) decided, over IPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// SHUTDOWN: all VMs stopped.
    Shutdown,
    /// SUSPEND: all VMs suspended.
    Suspend,
    /// REBOOT.
    Reboot,
}

/// The terminal actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Power off (S5).
    Poweroff,
    /// Reboot.
    Reboot,
    /// Suspend to RAM (S3); the command returns when the system has resumed.
    Suspend,
}

impl PowerAction {
    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            PowerAction::Poweroff => "poweroff",
            PowerAction::Reboot => "reboot",
            PowerAction::Suspend => "suspend",
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A wakeup-reason frame from the IOC.
    Reason(u32),
    /// SHUTDOWN / SUSPEND / REBOOT over IPC; `err != 0` is a refusal.
    Verdict {
        /// Which.
        kind: Verdict,
        /// `data.err`.
        err: i32,
    },
    /// ACRND_STOP could not be delivered to anyone, retries exhausted.
    StopUndeliverable,
    /// The deadline armed for the current waiting state expired.
    Deadline,
    /// The power command finished (`ok`: exit status 0).
    PowerDone {
        /// Which command.
        action: PowerAction,
        /// Whether it succeeded.
        ok: bool,
    },
}

/// What the daemon must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send this heartbeat now (a state change sends its heartbeat at once).
    Heartbeat(Heartbeat),
    /// Send the armed RTC wake-up now, recomputing its delay.
    SendRtc,
    /// Forget the armed RTC wake-up (it was used).
    ClearRtc,
    /// Tell acrnd the system is alive (with bounded retries).
    AcrndResume,
    /// Ask acrnd to stop or suspend all VMs (with bounded retries).
    AcrndStop(StopTarget),
    /// Run the power command.
    Power(PowerAction),
    /// (Re)arm the deadline of the current waiting state.
    ArmDeadline,
    /// Cancel that deadline.
    CancelDeadline,
    /// The wakeup reason is known: answer pending WAKEUP_REASON requests.
    ReasonLatched(u32),
}

/// The result of one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Whether the event was acted on (false: ignored in this state).
    pub applied: bool,
    /// The state change, if any.
    pub transition: Option<(State, State)>,
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// Set when a deadline forced the step: what the machine had waited for.
    pub forced: Option<&'static str>,
}

impl Outcome {
    fn ignored() -> Self {
        Outcome::default()
    }
}

/// The machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    state: State,
    reason: u32,
    latched: Option<u32>,
    force_s5: bool,
    woke: Option<u32>,
}

impl Default for Machine {
    fn default() -> Self {
        Machine::new()
    }
}

impl Machine {
    /// A machine in DEFAULT, no reason seen.
    pub fn new() -> Self {
        Machine::with_state(State::Default)
    }

    /// A machine in `state` (for tests and simulations).
    pub fn with_state(state: State) -> Self {
        Machine {
            state,
            reason: 0,
            latched: None,
            force_s5: false,
            woke: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The raw reason of the last frame.
    pub fn reason(&self) -> u32 {
        self.reason
    }

    /// The reason latched when the system last became alive; `None` before the first
    /// alive reason and after each suspend cycle.
    pub fn latched_reason(&self) -> Option<u32> {
        self.latched
    }

    /// Whether the IOC asked for force-S5 in its last shutdown request.
    pub fn force_s5(&self) -> bool {
        self.force_s5
    }

    /// An alive reason the IOC sent while the power command ran, to act on now that it has
    /// returned (the system resumed, and the IOC spoke, before the suspend command returned:
    /// waiting for its next reason frame would cost one IOC period). Taken once, and only
    /// after the command finished.
    pub fn take_woke(&mut self) -> Option<u32> {
        if self.state == State::IocShutdown {
            return None;
        }
        self.woke.take()
    }

    /// What the periodic tick sends in the current state.
    pub fn tick(&self) -> Vec<Action> {
        let mut a = Vec::new();
        if self.state.sends_rtc() {
            a.push(Action::SendRtc);
        }
        if let Some(hb) = self.state.heartbeat() {
            a.push(Action::Heartbeat(hb));
        }
        a
    }

    fn go(&mut self, to: State, mut actions: Vec<Action>) -> Outcome {
        let from = self.state;
        debug_assert!(valid(from, to), "{from:?} -> {to:?}");
        self.state = to;
        if to.is_bounded() {
            actions.push(Action::ArmDeadline);
        } else if from.is_bounded() {
            actions.insert(0, Action::CancelDeadline);
        }
        if to.sends_rtc() {
            actions.push(Action::SendRtc);
        }
        if let Some(hb) = to.heartbeat() {
            actions.push(Action::Heartbeat(hb));
        }
        Outcome {
            applied: true,
            transition: (from != to).then_some((from, to)),
            actions,
            forced: None,
        }
    }

    fn become_alive(&mut self) -> Outcome {
        self.latched = Some(self.reason);
        let r = self.reason;
        self.go(
            State::Alive,
            vec![Action::ReasonLatched(r), Action::AcrndResume],
        )
    }

    fn agreed(&mut self, kind: Verdict) -> Outcome {
        let to = match kind {
            Verdict::Shutdown => State::AcrndShutdown,
            Verdict::Suspend => State::AcrndSuspend,
            Verdict::Reboot => State::AcrndReboot,
        };
        if !valid(self.state, to) {
            return Outcome::ignored();
        }
        if self.state == to {
            return Outcome {
                applied: true,
                ..Outcome::default()
            };
        }
        self.go(to, Vec::new())
    }

    fn power_for(state: State) -> Option<PowerAction> {
        match state {
            State::AcrndShutdown => Some(PowerAction::Poweroff),
            State::AcrndReboot => Some(PowerAction::Reboot),
            State::AcrndSuspend => Some(PowerAction::Suspend),
            _ => None,
        }
    }

    fn run_power(&mut self) -> Outcome {
        let Some(action) = Machine::power_for(self.state) else {
            return Outcome::ignored();
        };
        let mut pre = Vec::new();
        if self.state.sends_rtc() {
            pre.push(Action::SendRtc);
        }
        pre.push(Action::Power(action));
        self.woke = None;
        self.go(State::IocShutdown, pre)
    }

    /// Feeds one event.
    pub fn handle(&mut self, event: Event) -> Outcome {
        match event {
            Event::Reason(r) => self.on_reason(r),
            Event::Verdict { err, .. } if err != 0 => match self.state {
                State::Shutdown | State::ShutdownDelay => self.go(State::Default, Vec::new()),
                _ => Outcome::ignored(),
            },
            Event::Verdict { kind, .. } => self.agreed(kind),
            Event::StopUndeliverable => match self.state {
                State::Shutdown | State::ShutdownDelay => {
                    let mut o = self.agreed(if self.force_s5 {
                        Verdict::Shutdown
                    } else {
                        Verdict::Suspend
                    });
                    o.forced = Some("an acrnd to take ACRND_STOP");
                    o
                }
                _ => Outcome::ignored(),
            },
            Event::Deadline => match self.state {
                State::Shutdown | State::ShutdownDelay => {
                    let mut o = self.agreed(Verdict::Shutdown);
                    o.forced = Some("acrnd's SHUTDOWN or SUSPEND");
                    o
                }
                State::AcrndShutdown | State::AcrndReboot | State::AcrndSuspend => {
                    let mut o = self.run_power();
                    o.forced = Some("the IOC's reason 0");
                    o
                }
                _ => Outcome::ignored(),
            },
            Event::PowerDone { action, ok } => {
                if self.state != State::IocShutdown {
                    return Outcome::ignored();
                }
                match (action, ok) {
                    (PowerAction::Suspend, _) | (_, false) => {
                        // Resumed (or the command failed): wait for a fresh reason.
                        self.latched = None;
                        self.go(State::Default, vec![Action::ClearRtc])
                    }
                    (_, true) => Outcome {
                        applied: true,
                        ..Outcome::default()
                    },
                }
            }
        }
    }

    /// Whether `r` carries a wake source (ignition, door, RTC, ...) the latched reason had
    /// not.
    fn new_source(&self, r: u32) -> bool {
        let sources = |x: u32| x & reason::MASK & !reason::SHUTDOWN_BITS;
        sources(r) & !self.latched.map_or(0, sources) != 0
    }

    fn on_reason(&mut self, r: u32) -> Outcome {
        self.reason = r;
        if self.state == State::IocShutdown {
            // The latest reason while the power command runs: an alive one is acted on when
            // the command returns (see `take_woke`).
            self.woke = (classify(r) == ReasonClass::Alive).then_some(r);
            return Outcome {
                applied: self.woke.is_some(),
                ..Outcome::default()
            };
        }
        match classify(r) {
            ReasonClass::Alive => match self.state {
                State::Default | State::Shutdown | State::ShutdownDelay => self.become_alive(),
                State::Alive if self.new_source(r) => {
                    // A wake source the system did not wake for (the ignition after an RTC
                    // wake-up): acrnd learns the new reason and resumes the VMs still
                    // suspended.
                    self.latched = Some(r);
                    Outcome {
                        applied: true,
                        transition: None,
                        actions: vec![Action::ReasonLatched(r), Action::AcrndResume],
                        forced: None,
                    }
                }
                _ => Outcome::ignored(),
            },
            ReasonClass::ShutdownRequest { force_s5 } => {
                self.force_s5 = force_s5;
                match self.state {
                    State::Default | State::Alive => {
                        let target = if force_s5 {
                            StopTarget::S5
                        } else {
                            StopTarget::S3
                        };
                        // SHUTDOWN is passed through at once: ACRND_STOP goes out now.
                        let from = self.state;
                        self.state = State::Shutdown;
                        let mut o = self.go(State::ShutdownDelay, vec![Action::AcrndStop(target)]);
                        o.transition = Some((from, State::ShutdownDelay));
                        o
                    }
                    _ => Outcome::ignored(),
                }
            }
            ReasonClass::PowerOff => match self.state {
                State::AcrndShutdown | State::AcrndReboot | State::AcrndSuspend => self.run_power(),
                State::Shutdown | State::ShutdownDelay => {
                    // The IOC removes power without our agreement: nothing is left to do.
                    self.go(State::Default, Vec::new())
                }
                _ => Outcome::ignored(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::State::*;
    use super::*;
    use mngr_ipc::cbc::reason;

    const ALIVE_R: u32 = reason::BTN;
    const REQ: u32 = reason::SOC;
    const REQ_S5: u32 = reason::SOC | reason::FORCE_S5;

    #[test]
    fn transition_table_is_the_c_valid_map_with_our_changes() {
        // Rows: from; columns: to, in C order. 1 = valid.
        #[rustfmt::skip]
        let table: [[u8; 8]; 8] = [
            //  D  A  S  SD AS IS AR AU
            [1, 1, 1, 0, 0, 0, 0, 0], // DEFAULT
            [0, 1, 1, 0, 0, 0, 1, 0], // ALIVE (→ ACRND_SHUTDOWN / SUSPEND: not ours)
            [0, 0, 1, 1, 1, 1, 1, 1], // SHUTDOWN
            [1, 1, 0, 1, 1, 1, 1, 1], // SHUTDOWN_DELAY (→ ALIVE: ours)
            [0, 0, 0, 0, 1, 1, 0, 0], // ACRND_SHUTDOWN
            [1, 0, 0, 0, 0, 1, 0, 0], // IOC_SHUTDOWN
            [0, 0, 0, 0, 0, 1, 1, 0], // ACRND_REBOOT
            [0, 0, 0, 0, 0, 1, 0, 1], // ACRND_SUSPEND
        ];
        for (i, from) in State::ALL.into_iter().enumerate() {
            for (j, to) in State::ALL.into_iter().enumerate() {
                assert_eq!(valid(from, to), table[i][j] == 1, "{from:?} -> {to:?}");
            }
        }
    }

    fn every_event() -> Vec<Event> {
        let mut v = vec![
            Event::Reason(0),
            Event::Reason(ALIVE_R),
            Event::Reason(reason::RTC | reason::SOC),
            Event::Reason(REQ),
            Event::Reason(REQ_S5),
            Event::StopUndeliverable,
            Event::Deadline,
        ];
        for kind in [Verdict::Shutdown, Verdict::Suspend, Verdict::Reboot] {
            v.push(Event::Verdict { kind, err: 0 });
            v.push(Event::Verdict { kind, err: -1 });
        }
        for action in [
            PowerAction::Poweroff,
            PowerAction::Reboot,
            PowerAction::Suspend,
        ] {
            v.push(Event::PowerDone { action, ok: true });
            v.push(Event::PowerDone { action, ok: false });
        }
        v
    }

    /// The expected next state for every (state, event); `None` = ignored.
    fn expected(from: State, ev: Event) -> Option<State> {
        match (from, ev) {
            (Default | ShutdownDelay, Event::Reason(r)) if classify(r) == ReasonClass::Alive => {
                Some(Alive)
            }
            // Kept for when the power command returns.
            (IocShutdown, Event::Reason(r)) if classify(r) == ReasonClass::Alive => {
                Some(IocShutdown)
            }
            // Built ALIVE with nothing latched: every alive reason is a new wake source.
            (Alive, Event::Reason(r)) if classify(r) == ReasonClass::Alive => Some(Alive),
            (Default | Alive, Event::Reason(REQ | REQ_S5)) => Some(ShutdownDelay),
            (ShutdownDelay, Event::Reason(0)) => Some(Default),
            (AcrndShutdown | AcrndReboot | AcrndSuspend, Event::Reason(0)) => Some(IocShutdown),
            (ShutdownDelay, Event::Verdict { err, .. }) if err != 0 => Some(Default),
            (ShutdownDelay, Event::Verdict { kind, err: 0 }) => Some(match kind {
                Verdict::Shutdown => AcrndShutdown,
                Verdict::Suspend => AcrndSuspend,
                Verdict::Reboot => AcrndReboot,
            }),
            (
                Alive,
                Event::Verdict {
                    kind: Verdict::Reboot,
                    err: 0,
                },
            ) => Some(AcrndReboot),
            (
                AcrndShutdown,
                Event::Verdict {
                    kind: Verdict::Shutdown,
                    err: 0,
                },
            ) => Some(AcrndShutdown),
            (
                AcrndSuspend,
                Event::Verdict {
                    kind: Verdict::Suspend,
                    err: 0,
                },
            ) => Some(AcrndSuspend),
            (
                AcrndReboot,
                Event::Verdict {
                    kind: Verdict::Reboot,
                    err: 0,
                },
            ) => Some(AcrndReboot),
            (ShutdownDelay, Event::StopUndeliverable) => Some(AcrndSuspend),
            (ShutdownDelay, Event::Deadline) => Some(AcrndShutdown),
            (AcrndShutdown | AcrndReboot | AcrndSuspend, Event::Deadline) => Some(IocShutdown),
            (
                IocShutdown,
                Event::PowerDone {
                    action: PowerAction::Suspend,
                    ..
                },
            ) => Some(Default),
            (IocShutdown, Event::PowerDone { ok: false, .. }) => Some(Default),
            (IocShutdown, Event::PowerDone { ok: true, .. }) => Some(IocShutdown),
            _ => None,
        }
    }

    #[test]
    fn every_state_and_every_event() {
        for from in State::ALL {
            if from == Shutdown {
                continue; // transient: never observable between events
            }
            for ev in every_event() {
                let mut m = Machine::with_state(from);
                let o = m.handle(ev);
                match expected(from, ev) {
                    Some(to) => {
                        assert!(o.applied, "{from:?} + {ev:?} should apply");
                        assert_eq!(m.state(), to, "{from:?} + {ev:?}");
                        // A shutdown request passes through the transient SHUTDOWN.
                        assert!(valid(from, to) || to == ShutdownDelay && valid(Shutdown, to));
                        if to != from {
                            assert_eq!(o.transition, Some((from, to)));
                            if let Some(hb) = to.heartbeat() {
                                assert_eq!(
                                    o.actions.last(),
                                    Some(&Action::Heartbeat(hb)),
                                    "{from:?} + {ev:?}: the new state's heartbeat at once"
                                );
                            }
                        }
                    }
                    None => {
                        assert!(!o.applied, "{from:?} + {ev:?} should be ignored: {o:?}");
                        assert_eq!(m.state(), from);
                        assert!(o.actions.is_empty());
                    }
                }
            }
        }
    }

    #[test]
    fn a_new_wake_source_while_alive_tells_acrnd_again() {
        let mut m = Machine::new();
        m.handle(Event::Reason(reason::RTC));
        // The IOC adds the SoC bit: nothing new.
        assert!(!m.handle(Event::Reason(reason::RTC | reason::SOC)).applied);
        // Ignition on after the RTC wake-up: a new source, acrnd is told again.
        let o = m.handle(Event::Reason(reason::BTN | reason::SOC));
        assert_eq!(o.transition, None);
        assert_eq!(
            o.actions,
            vec![
                Action::ReasonLatched(reason::BTN | reason::SOC),
                Action::AcrndResume
            ]
        );
        assert_eq!(m.latched_reason(), Some(reason::BTN | reason::SOC));
        // Repeats, and a source going away, are nothing new.
        assert!(!m.handle(Event::Reason(reason::BTN | reason::SOC)).applied);
        assert!(!m.handle(Event::Reason(reason::BTN)).applied);
        assert_eq!(m.state(), State::Alive);
    }

    #[test]
    fn alive_latches_the_reason_and_tells_acrnd() {
        let mut m = Machine::new();
        assert_eq!(m.latched_reason(), None);
        let o = m.handle(Event::Reason(reason::RTC));
        assert_eq!(
            o.actions,
            vec![
                Action::ReasonLatched(reason::RTC),
                Action::AcrndResume,
                Action::Heartbeat(Heartbeat::ACTIVE)
            ]
        );
        // A later alive frame (with the SoC bit) does not re-latch.
        m.handle(Event::Reason(reason::RTC | reason::SOC));
        assert_eq!(m.latched_reason(), Some(reason::RTC));
    }

    #[test]
    fn shutdown_request_sends_acrnd_stop_with_the_target_at_once() {
        for (r, target) in [(REQ, StopTarget::S3), (REQ_S5, StopTarget::S5)] {
            let mut m = Machine::with_state(Alive);
            let o = m.handle(Event::Reason(r));
            assert_eq!(
                o.actions,
                vec![
                    Action::AcrndStop(target),
                    Action::ArmDeadline,
                    Action::Heartbeat(Heartbeat::SHUTDOWN_DELAY)
                ]
            );
            assert_eq!(m.force_s5(), r == REQ_S5);
        }
    }

    #[test]
    fn ignition_back_during_the_delay_cancels() {
        let mut m = Machine::with_state(Alive);
        m.handle(Event::Reason(REQ));
        let o = m.handle(Event::Reason(ALIVE_R | reason::SOC));
        assert_eq!(o.transition, Some((ShutdownDelay, Alive)));
        assert_eq!(o.actions[0], Action::CancelDeadline);
        assert!(o.actions.contains(&Action::AcrndResume));
    }

    #[test]
    fn undeliverable_stop_follows_force_s5() {
        let mut m = Machine::with_state(Alive);
        m.handle(Event::Reason(REQ_S5));
        let o = m.handle(Event::StopUndeliverable);
        assert_eq!(m.state(), AcrndShutdown);
        assert!(o.forced.is_some());
    }

    #[test]
    fn forced_steps_name_what_they_waited_for() {
        let mut m = Machine::with_state(Alive);
        m.handle(Event::Reason(REQ));
        let o = m.handle(Event::Deadline);
        assert_eq!(m.state(), AcrndShutdown);
        assert_eq!(o.forced, Some("acrnd's SHUTDOWN or SUSPEND"));
        let o = m.handle(Event::Deadline);
        assert_eq!(m.state(), IocShutdown);
        assert_eq!(o.forced, Some("the IOC's reason 0"));
        assert!(o.actions.contains(&Action::Power(PowerAction::Poweroff)));
    }

    #[test]
    fn rtc_goes_with_s3_and_s5_and_before_the_power_action() {
        for (kind, power) in [
            (Verdict::Suspend, PowerAction::Suspend),
            (Verdict::Shutdown, PowerAction::Poweroff),
        ] {
            let mut m = Machine::with_state(ShutdownDelay);
            let o = m.handle(Event::Verdict { kind, err: 0 });
            assert!(o.actions.contains(&Action::SendRtc), "{kind:?}");
            assert_eq!(m.tick()[0], Action::SendRtc);
            let o = m.handle(Event::Reason(0));
            assert_eq!(
                o.actions,
                vec![
                    Action::CancelDeadline,
                    Action::SendRtc,
                    Action::Power(power)
                ]
            );
        }
        let mut m = Machine::with_state(ShutdownDelay);
        m.handle(Event::Verdict {
            kind: Verdict::Reboot,
            err: 0,
        });
        assert!(!m.tick().contains(&Action::SendRtc));
    }

    #[test]
    fn suspend_return_waits_for_a_fresh_reason() {
        let mut m = Machine::with_state(AcrndSuspend);
        m.handle(Event::Reason(0));
        let o = m.handle(Event::PowerDone {
            action: PowerAction::Suspend,
            ok: true,
        });
        assert_eq!(m.state(), Default);
        assert_eq!(m.latched_reason(), None);
        assert_eq!(
            o.actions,
            vec![Action::ClearRtc, Action::Heartbeat(Heartbeat::INIT)]
        );
    }

    #[test]
    fn a_reason_sent_before_the_suspend_command_returned_is_kept_for_its_return() {
        let mut m = Machine::with_state(AcrndSuspend);
        m.handle(Event::Reason(0));
        assert!(m.handle(Event::Reason(ALIVE_R)).applied, "kept");
        assert_eq!(m.state(), IocShutdown, "nothing happens before the return");
        assert_eq!(m.take_woke(), None, "not while the command runs");
        m.handle(Event::PowerDone {
            action: PowerAction::Suspend,
            ok: true,
        });
        assert_eq!(m.take_woke(), Some(ALIVE_R));
        assert_eq!(m.take_woke(), None, "taken once");

        // A later reason replaces it; a shutdown reason leaves nothing to act on.
        let mut m = Machine::with_state(AcrndSuspend);
        m.handle(Event::Reason(0));
        m.handle(Event::Reason(ALIVE_R));
        assert!(!m.handle(Event::Reason(0)).applied);
        m.handle(Event::PowerDone {
            action: PowerAction::Suspend,
            ok: true,
        });
        assert_eq!(m.take_woke(), None);

        // A reason from an earlier cycle is not kept into the next power command.
        let mut m = Machine::with_state(AcrndSuspend);
        m.handle(Event::Reason(0));
        m.handle(Event::Reason(ALIVE_R));
        m.handle(Event::PowerDone {
            action: PowerAction::Poweroff,
            ok: true,
        });
        assert_eq!(m.take_woke(), None, "still powering off");
    }

    #[test]
    fn ticks_send_the_state_heartbeat() {
        assert_eq!(
            Machine::new().tick(),
            vec![Action::Heartbeat(Heartbeat::INIT)]
        );
        assert_eq!(
            Machine::with_state(IocShutdown).tick(),
            Vec::<Action>::new()
        );
        assert_eq!(
            Machine::with_state(AcrndReboot).tick(),
            vec![Action::Heartbeat(Heartbeat::REBOOT)]
        );
    }
}
