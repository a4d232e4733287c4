//! A simulated guest's lifecycle software (what `cbc_lifecycle` does inside a User VM),
//! as a pure state machine: it heartbeats, reacts to wakeup reasons, arms an RTC wake-up,
//! and suspends or powers off. No I/O and no clock: the device model calls
//! [`Guest::tick`] every heartbeat period and [`Guest::delay_elapsed`] when the delay the
//! guest asked for ([`GuestAction::ArmDelay`]) is over.
//!
//! ```text
//!   Off --boot--> Init --any reason (logged as the wake reason)--> Active
//!                  ^                                                 |
//!                  | resume                 0x800000 / 0xC00000 (force S5)
//!                  |                                                 v
//!   Suspended <-- reason 0 -- Prepared(S3) <--delay-- ShuttingDown(S3|S5) --reason alive--> Active
//!   PoweredOff <- reason 0 -- Prepared(S5) <--delay--/
//! ```
//!
//! | state | heartbeat every period |
//! |---|---|
//! | Init | `02 03 00 00` initial |
//! | Active | `02 01 00 00` active |
//! | ShuttingDown | `02 02 00 00` shutdown delay |
//! | Prepared(S3) | `02 00 07 00` shutdown prepared, RAM refresh |
//! | Prepared(S5) | `02 00 01 00` shutdown prepared, halt |
//! | Off, Suspended, PoweredOff | none |
//!
//! When the delay is over the guest sends, if an RTC wake-up is configured, `05 v0 v1
//! unit` right **before** its shutdown-prepared heartbeat (or right after it with
//! `rtc_after`, as ioc-cbc-tools' cbc_lifecycle does), then waits for reason 0 to act.
//!
//! Faults: [`GuestFault::HangStop`] ignores force-S5 requests (the guest keeps running and
//! heartbeating), [`GuestFault::RefuseSuspend`] ignores plain ignition-off.

use std::time::Duration;

use mngr_ipc::cbc::{Frame, Heartbeat, ReasonClass, RtcWake, classify};

/// What a shutdown leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Suspend to RAM.
    S3,
    /// Power off.
    S5,
}

/// A state of the simulated guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestState {
    /// Not booted yet.
    Off,
    /// Booted or resumed; waiting for the first reason.
    Init,
    /// Running.
    Active,
    /// Asked to shut down; taking its time.
    ShuttingDown(Target),
    /// Sent "shutdown prepared"; waiting for reason 0.
    Prepared(Target),
    /// In S3.
    Suspended,
    /// Powered off (final).
    PoweredOff,
}

impl GuestState {
    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            GuestState::Off => "off",
            GuestState::Init => "init",
            GuestState::Active => "active",
            GuestState::ShuttingDown(Target::S3) => "suspending",
            GuestState::ShuttingDown(Target::S5) => "powering_off",
            GuestState::Prepared(Target::S3) => "prepared_s3",
            GuestState::Prepared(Target::S5) => "prepared_s5",
            GuestState::Suspended => "suspended",
            GuestState::PoweredOff => "powered_off",
        }
    }
}

/// A misbehaviour of the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestFault {
    /// Never acts on stop requests (force-S5 reasons).
    HangStop,
    /// Ignores suspend requests (ignition-off without force).
    RefuseSuspend,
}

impl GuestFault {
    /// The fault's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            GuestFault::HangStop => "hang-stop",
            GuestFault::RefuseSuspend => "refuse-suspend",
        }
    }
}

/// How the guest behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// Time from a force-S5 request to "shutdown prepared".
    pub poweroff_delay: Duration,
    /// Time from an ignition-off request to "shutdown prepared".
    pub suspend_delay: Duration,
    /// An RTC wake-up to arm when shutting down.
    pub rtc: Option<RtcWake>,
    /// Send the RTC frame after the shutdown-prepared heartbeat instead of before it.
    pub rtc_after: bool,
    /// Misbehaviours.
    pub faults: Vec<GuestFault>,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            poweroff_delay: Duration::from_millis(500),
            suspend_delay: Duration::from_millis(500),
            rtc: None,
            rtc_after: false,
            faults: Vec::new(),
        }
    }
}

/// What the device model must do for the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestAction {
    /// Send this lifecycle frame to the virtual IOC.
    Send(Frame),
    /// The guest's state changed.
    State {
        /// Previous state.
        from: GuestState,
        /// New state.
        to: GuestState,
    },
    /// The first reason after boot or resume: why the guest woke.
    Wake(u32),
    /// Call [`Guest::delay_elapsed`] after this long (replacing an armed delay).
    ArmDelay(Duration),
    /// Forget the armed delay.
    CancelDelay,
    /// The guest entered S3: the DM suspend mode becomes SUSPEND.
    Suspend,
    /// The guest powered off: the DM suspend mode becomes POWEROFF.
    PowerOff,
    /// A request was ignored because of this fault.
    Refused(GuestFault),
}

/// The simulated guest.
#[derive(Debug, Clone)]
pub struct Guest {
    cfg: GuestConfig,
    state: GuestState,
    refusing: Option<GuestFault>,
}

impl Guest {
    /// A guest not booted yet.
    pub fn new(cfg: GuestConfig) -> Self {
        Guest {
            cfg,
            state: GuestState::Off,
            refusing: None,
        }
    }

    /// The state.
    pub fn state(&self) -> GuestState {
        self.state
    }

    fn go(&mut self, to: GuestState, out: &mut Vec<GuestAction>) {
        let from = self.state;
        if from != to {
            self.state = to;
            out.push(GuestAction::State { from, to });
        }
    }

    fn has(&self, f: GuestFault) -> bool {
        self.cfg.faults.contains(&f)
    }

    /// Boots: the initial heartbeat at once.
    pub fn boot(&mut self) -> Vec<GuestAction> {
        let mut out = Vec::new();
        if self.state == GuestState::Off {
            self.go(GuestState::Init, &mut out);
            out.push(GuestAction::Send(Frame::Heartbeat(Heartbeat::INIT)));
        }
        out
    }

    /// The VM resumed from S3: the initial heartbeat at once.
    pub fn resume(&mut self) -> Vec<GuestAction> {
        let mut out = Vec::new();
        if self.state == GuestState::Suspended {
            self.go(GuestState::Init, &mut out);
            out.push(GuestAction::Send(Frame::Heartbeat(Heartbeat::INIT)));
        }
        out
    }

    /// The heartbeat of the current state, if it sends one.
    pub fn tick(&mut self) -> Vec<GuestAction> {
        let hb = match self.state {
            GuestState::Init => Heartbeat::INIT,
            GuestState::Active => Heartbeat::ACTIVE,
            GuestState::ShuttingDown(_) => Heartbeat::SHUTDOWN_DELAY,
            GuestState::Prepared(t) => prepared(t),
            GuestState::Off | GuestState::Suspended | GuestState::PoweredOff => {
                return Vec::new();
            }
        };
        vec![GuestAction::Send(Frame::Heartbeat(hb))]
    }

    /// A frame from the virtual IOC (only wakeup reasons mean anything to the guest).
    pub fn on_frame(&mut self, frame: Frame) -> Vec<GuestAction> {
        match frame {
            Frame::WakeupReason(r) => self.on_reason(r),
            _ => Vec::new(),
        }
    }

    fn on_reason(&mut self, r: u32) -> Vec<GuestAction> {
        let mut out = Vec::new();
        let class = classify(r);
        match self.state {
            GuestState::Init => {
                out.push(GuestAction::Wake(r));
                match class {
                    ReasonClass::Alive | ReasonClass::PowerOff => {
                        self.go(GuestState::Active, &mut out);
                    }
                    ReasonClass::ShutdownRequest { force_s5 } => {
                        self.go(GuestState::Active, &mut out);
                        self.begin_shutdown(force_s5, &mut out);
                    }
                }
            }
            GuestState::Active => {
                if let ReasonClass::ShutdownRequest { force_s5 } = class {
                    self.begin_shutdown(force_s5, &mut out);
                } else {
                    self.refusing = None;
                }
            }
            GuestState::ShuttingDown(t) => match class {
                ReasonClass::Alive => {
                    // Ignition is back before the guest got going: cancel.
                    out.push(GuestAction::CancelDelay);
                    self.go(GuestState::Active, &mut out);
                }
                ReasonClass::ShutdownRequest { force_s5: true } if t == Target::S3 => {
                    if self.has(GuestFault::HangStop) {
                        self.refuse(GuestFault::HangStop, &mut out);
                    } else {
                        // Power off rather than suspend; the delay already running stands.
                        self.go(GuestState::ShuttingDown(Target::S5), &mut out);
                    }
                }
                _ => {}
            },
            GuestState::Prepared(t) => {
                if class == ReasonClass::PowerOff {
                    match t {
                        Target::S3 => {
                            self.go(GuestState::Suspended, &mut out);
                            out.push(GuestAction::Suspend);
                        }
                        Target::S5 => {
                            self.go(GuestState::PoweredOff, &mut out);
                            out.push(GuestAction::PowerOff);
                        }
                    }
                }
            }
            GuestState::Off | GuestState::Suspended | GuestState::PoweredOff => {}
        }
        out
    }

    fn refuse(&mut self, f: GuestFault, out: &mut Vec<GuestAction>) {
        // Reported once per request, not on every re-sent reason.
        if self.refusing != Some(f) {
            self.refusing = Some(f);
            out.push(GuestAction::Refused(f));
        }
    }

    fn begin_shutdown(&mut self, force_s5: bool, out: &mut Vec<GuestAction>) {
        let (target, fault, delay) = if force_s5 {
            (Target::S5, GuestFault::HangStop, self.cfg.poweroff_delay)
        } else {
            (
                Target::S3,
                GuestFault::RefuseSuspend,
                self.cfg.suspend_delay,
            )
        };
        if self.has(fault) {
            self.refuse(fault, out);
            return;
        }
        self.refusing = None;
        self.go(GuestState::ShuttingDown(target), out);
        out.push(GuestAction::ArmDelay(delay));
    }

    /// The delay of [`GuestAction::ArmDelay`] is over: prepare the shutdown.
    pub fn delay_elapsed(&mut self) -> Vec<GuestAction> {
        let mut out = Vec::new();
        let GuestState::ShuttingDown(t) = self.state else {
            return out;
        };
        let rtc = self.cfg.rtc.map(|w| GuestAction::Send(Frame::Rtc(w)));
        if !self.cfg.rtc_after {
            out.extend(rtc);
        }
        out.push(GuestAction::Send(Frame::Heartbeat(prepared(t))));
        if self.cfg.rtc_after {
            out.extend(rtc);
        }
        self.go(GuestState::Prepared(t), &mut out);
        out
    }
}

fn prepared(t: Target) -> Heartbeat {
    match t {
        Target::S3 => Heartbeat::S3,
        Target::S5 => Heartbeat::S5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GuestAction::*;
    use GuestState as S;
    use mngr_ipc::cbc::RtcUnit;

    const D: Duration = Duration::from_millis(300);
    const P: Duration = Duration::from_millis(200);

    fn cfg() -> GuestConfig {
        GuestConfig {
            poweroff_delay: P,
            suspend_delay: D,
            ..GuestConfig::default()
        }
    }

    fn hb(h: Heartbeat) -> GuestAction {
        Send(Frame::Heartbeat(h))
    }

    fn st(from: GuestState, to: GuestState) -> GuestAction {
        State { from, to }
    }

    fn reason(r: u32) -> Frame {
        Frame::WakeupReason(r)
    }

    fn active(c: GuestConfig) -> Guest {
        let mut g = Guest::new(c);
        g.boot();
        g.on_frame(reason(0x80_0020));
        assert_eq!(g.state(), S::Active);
        g
    }

    #[test]
    fn boots_with_an_initial_heartbeat_and_logs_the_wake_reason() {
        let mut g = Guest::new(cfg());
        assert_eq!(g.tick(), vec![], "off: silent");
        assert_eq!(g.boot(), vec![st(S::Off, S::Init), hb(Heartbeat::INIT)]);
        assert_eq!(g.boot(), vec![], "boots once");
        assert_eq!(g.tick(), vec![hb(Heartbeat::INIT)]);
        assert_eq!(
            g.on_frame(reason(0x80_0020)),
            vec![Wake(0x80_0020), st(S::Init, S::Active)]
        );
        assert_eq!(g.tick(), vec![hb(Heartbeat::ACTIVE)]);
        assert_eq!(g.on_frame(reason(0x80_0020)), vec![], "no second wake");
        assert_eq!(
            g.on_frame(Frame::Heartbeat(Heartbeat::ACTIVE)),
            vec![],
            "only reasons matter"
        );
    }

    #[test]
    fn force_s5_powers_off_after_the_delay_and_reason_zero() {
        let mut g = active(cfg());
        assert_eq!(
            g.on_frame(reason(0xC0_0000)),
            vec![st(S::Active, S::ShuttingDown(Target::S5)), ArmDelay(P)]
        );
        assert_eq!(g.tick(), vec![hb(Heartbeat::SHUTDOWN_DELAY)]);
        assert_eq!(g.on_frame(reason(0xC0_0000)), vec![], "re-sent request");
        assert_eq!(g.on_frame(reason(0)), vec![], "not prepared yet");
        assert_eq!(
            g.delay_elapsed(),
            vec![
                hb(Heartbeat::S5),
                st(S::ShuttingDown(Target::S5), S::Prepared(Target::S5))
            ]
        );
        assert_eq!(g.tick(), vec![hb(Heartbeat::S5)]);
        assert_eq!(
            g.on_frame(reason(0)),
            vec![st(S::Prepared(Target::S5), S::PoweredOff), PowerOff]
        );
        assert_eq!(g.tick(), vec![]);
        assert_eq!(g.on_frame(reason(0x80_0020)), vec![]);
        assert_eq!(g.resume(), vec![], "power-off is final");
    }

    #[test]
    fn ignition_off_suspends_and_resume_reports_the_new_reason() {
        let mut g = active(cfg());
        assert_eq!(
            g.on_frame(reason(0x80_0000)),
            vec![st(S::Active, S::ShuttingDown(Target::S3)), ArmDelay(D)]
        );
        assert_eq!(
            g.delay_elapsed(),
            vec![
                hb(Heartbeat::S3),
                st(S::ShuttingDown(Target::S3), S::Prepared(Target::S3))
            ]
        );
        assert_eq!(
            g.on_frame(reason(0)),
            vec![st(S::Prepared(Target::S3), S::Suspended), Suspend]
        );
        assert_eq!(g.tick(), vec![], "no heartbeats in S3");
        assert_eq!(g.delay_elapsed(), vec![]);
        assert_eq!(
            g.resume(),
            vec![st(S::Suspended, S::Init), hb(Heartbeat::INIT)]
        );
        assert_eq!(
            g.on_frame(reason(0x80_0200)),
            vec![Wake(0x80_0200), st(S::Init, S::Active)]
        );
    }

    #[test]
    fn rtc_goes_before_or_after_the_prepared_heartbeat() {
        let w = RtcWake {
            value: 7,
            unit: RtcUnit::Seconds,
        };
        for after in [false, true] {
            let mut g = active(GuestConfig {
                rtc: Some(w),
                rtc_after: after,
                ..cfg()
            });
            g.on_frame(reason(0x80_0000));
            let a = g.delay_elapsed();
            let sends: Vec<GuestAction> = a.into_iter().filter(|x| matches!(x, Send(_))).collect();
            let want = if after {
                vec![hb(Heartbeat::S3), Send(Frame::Rtc(w))]
            } else {
                vec![Send(Frame::Rtc(w)), hb(Heartbeat::S3)]
            };
            assert_eq!(sends, want, "rtc_after {after}");
        }
    }

    #[test]
    fn ignition_back_cancels_and_force_upgrades() {
        let mut g = active(cfg());
        g.on_frame(reason(0x80_0000));
        assert_eq!(
            g.on_frame(reason(0x80_0020)),
            vec![CancelDelay, st(S::ShuttingDown(Target::S3), S::Active)]
        );
        g.on_frame(reason(0x80_0000));
        assert_eq!(
            g.on_frame(reason(0xC0_0000)),
            vec![st(S::ShuttingDown(Target::S3), S::ShuttingDown(Target::S5))]
        );
        assert_eq!(g.delay_elapsed()[0], hb(Heartbeat::S5));
    }

    #[test]
    fn a_request_as_the_first_reason_is_acted_on() {
        let mut g = Guest::new(cfg());
        g.boot();
        assert_eq!(
            g.on_frame(reason(0xC0_0000)),
            vec![
                Wake(0xC0_0000),
                st(S::Init, S::Active),
                st(S::Active, S::ShuttingDown(Target::S5)),
                ArmDelay(P)
            ]
        );
    }

    #[test]
    fn hang_stop_ignores_stop_but_not_suspend() {
        let mut g = active(GuestConfig {
            faults: vec![GuestFault::HangStop],
            ..cfg()
        });
        assert_eq!(
            g.on_frame(reason(0xC0_0000)),
            vec![Refused(GuestFault::HangStop)]
        );
        assert_eq!(g.on_frame(reason(0xC0_0000)), vec![], "reported once");
        assert_eq!(g.state(), S::Active);
        assert_eq!(g.tick(), vec![hb(Heartbeat::ACTIVE)]);
        assert_eq!(
            g.on_frame(reason(0x80_0000)),
            vec![st(S::Active, S::ShuttingDown(Target::S3)), ArmDelay(D)]
        );
        assert_eq!(
            g.on_frame(reason(0xC0_0000)),
            vec![Refused(GuestFault::HangStop)],
            "no upgrade to S5 either"
        );
    }

    #[test]
    fn refuse_suspend_ignores_suspend_but_not_stop() {
        let mut g = active(GuestConfig {
            faults: vec![GuestFault::RefuseSuspend],
            ..cfg()
        });
        assert_eq!(
            g.on_frame(reason(0x80_0000)),
            vec![Refused(GuestFault::RefuseSuspend)]
        );
        assert_eq!(g.on_frame(reason(0x80_0000)), vec![]);
        assert_eq!(g.state(), S::Active);
        // Ignition back on, then off again: a new request, reported again.
        g.on_frame(reason(0x80_0020));
        assert_eq!(
            g.on_frame(reason(0x80_0000)),
            vec![Refused(GuestFault::RefuseSuspend)]
        );
        assert_eq!(
            g.on_frame(reason(0xC0_0000)),
            vec![st(S::Active, S::ShuttingDown(Target::S5)), ArmDelay(P)]
        );
    }

    #[test]
    fn names() {
        assert_eq!(S::ShuttingDown(Target::S5).name(), "powering_off");
        assert_eq!(S::Prepared(Target::S3).name(), "prepared_s3");
        assert_eq!(GuestFault::HangStop.name(), "hang-stop");
    }
}
