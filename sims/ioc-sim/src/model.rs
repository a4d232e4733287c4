//! The IOC's power logic as a pure state machine: no I/O, no clock of its own (every input
//! carries the `Instant` it happens at), so every path is unit-tested.
//!
//! ```text
//!              shutdown-prepared heartbeat              poweroff / watchdog
//!   Running ─────────────────────────────▶ Prepared ──────────────────────────▶ Off
//!      ▲  ▲          (reason 0 from now on)   │ │                                │
//!      │  │ reboot                            │ │ suspend                        │
//!      │  └───────────────────────────────────┘ ▼                                │
//!      │        ignition on / door open / RTC   Suspended                        │
//!      ├────────────────────────────────────────┘                                │
//!      └──────────────────── ignition on / RTC ──────────────────────────────────┘
//! ```
//! (`poweroff`, `reboot` and `suspend` are accepted from `Running` too; the watchdog cuts
//! the power from `Running` and `Prepared`.)
//!
//! The wake-up reason is composed from the sources:
//!
//! | bit | set while |
//! |---|---|
//! | `BTN` 0x20 | ignition on |
//! | `DOOR` 0x800 | door open |
//! | `RTC` 0x200 | after an RTC wake, until the next ignition/door change or power off |
//! | `FORCE_S5` 0x400000 | after "ignition off force-s5", until the next ignition on |
//! | `SOC` 0x800000 | from the first ACTIVE heartbeat until a shutdown-prepared heartbeat or the SoC losing power (off, suspend, reboot) |
//!
//! and the line carries it while `Running`, 0 while `Prepared`, nothing while `Off` or
//! `Suspended`. Every method returns the [`Effect`]s the caller must carry out; a changed
//! reason on the line is one of them ([`Effect::SendReason`]).
//!
//! Rules that the protocol leaves open, decided here:
//! * wake events are edges: an `ignition on` or `door open` input wakes the system even if
//!   the source was already active; `door open` does not power the system on from `Off`;
//! * a wake event (or an RTC expiry) while `Prepared` is latched and wakes the system at
//!   once when it then powers off or suspends (`ignition off` / `door close` cancel their
//!   latched wake); an RTC expiring while `Running` is missed and disarmed;
//! * an RTC frame is accepted in every state (the SoC writes it just before suspending, so it
//!   may be read after the `suspend` command); value 0 disarms the alarm;
//! * the watchdog deadline is the last heartbeat plus the watchdog period; a suppress frame
//!   pushes the current deadline back by its milliseconds (and later heartbeats never pull it
//!   forward again).

use std::fmt;
use std::time::{Duration, Instant};

use mngr_ipc::cbc::{Frame, Heartbeat, reason};
use thiserror::Error;

/// Power state of the simulated system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    /// Powered; reason frames carry the current sources.
    Running,
    /// The SoC sent this "shutdown prepared" heartbeat; reason 0 until its power command.
    Prepared(Heartbeat),
    /// Power removed; nothing is sent on the line.
    Off,
    /// Suspended to RAM; nothing is sent on the line.
    Suspended,
}

impl PowerState {
    /// The name used in replies and in the event log: `running`, `prepared`, `off`,
    /// `suspended`.
    pub fn name(&self) -> &'static str {
        match self {
            PowerState::Running => "running",
            PowerState::Prepared(_) => "prepared",
            PowerState::Off => "off",
            PowerState::Suspended => "suspended",
        }
    }

    /// Whether the SoC has power (`Running` or `Prepared`).
    pub fn is_powered(&self) -> bool {
        matches!(self, PowerState::Running | PowerState::Prepared(_))
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The state the simulation starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Initial {
    /// Running, ignition on.
    #[default]
    Running,
    /// Off, ignition off.
    Off,
    /// Suspended, ignition off.
    Suspended,
}

/// What happened to the RTC alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcEvent {
    /// Armed to expire after this delay.
    Armed(Duration),
    /// Disarmed by an RTC frame with value 0.
    Disarmed,
    /// Expired and woke the system.
    Fired,
    /// Expired while the system was going down: it wakes the system once it is down.
    Latched,
    /// Expired while the system was running: nothing to wake.
    Missed,
}

impl RtcEvent {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            RtcEvent::Armed(_) => "armed",
            RtcEvent::Disarmed => "disarmed",
            RtcEvent::Fired => "fired",
            RtcEvent::Latched => "latched",
            RtcEvent::Missed => "missed",
        }
    }
}

/// Something the caller of the model must do or record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Send this wake-up reason now: the reason on the line changed, or the line came alive.
    SendReason(u32),
    /// The power state changed; `reason` is the composed reason afterwards.
    Transition {
        /// Before.
        from: PowerState,
        /// After.
        to: PowerState,
        /// [`Ioc::reason`] after the change.
        reason: u32,
    },
    /// The watchdog cut the power after this long without a heartbeat.
    PowerCut {
        /// Time since the last heartbeat (or power-on).
        silent: Duration,
    },
    /// The system woke from suspend with this reason (answers a pending `suspend`).
    Resumed {
        /// The reason reported at the wake.
        reason: u32,
    },
    /// The RTC alarm changed.
    Rtc(RtcEvent),
}

/// A power command the current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PowerError {
    /// The SoC has no power, so it cannot run a power command.
    #[error("The system is {0}: the SoC cannot run a power command")]
    NotPowered(PowerState),
}

/// Wake events latched while `Prepared`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Latched {
    ignition: bool,
    door: bool,
    rtc: bool,
}

/// How the system is woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Ignition,
    Door,
    Rtc,
}

/// The simulated IOC.
#[derive(Debug, Clone)]
pub struct Ioc {
    state: PowerState,
    ignition: bool,
    door: bool,
    rtc_woke: bool,
    soc: bool,
    force_s5: bool,
    rtc: Option<Instant>,
    watchdog: Option<Duration>,
    fed: Instant,
    suppressed_until: Option<Instant>,
    last_hb: Option<Heartbeat>,
    reported: Option<u32>,
    latched: Latched,
}

/// Whether `hb` is a "shutdown prepared" heartbeat (command 0 with an action).
fn is_prepared(hb: Heartbeat) -> bool {
    hb.command == 0 && hb.action != 0
}

impl Ioc {
    /// A new IOC in state `initial` at `now`; `watchdog` is the heartbeat timeout (`None`:
    /// no watchdog). Call [`Ioc::start`] to get the first reason frame.
    pub fn new(initial: Initial, watchdog: Option<Duration>, now: Instant) -> Ioc {
        let state = match initial {
            Initial::Running => PowerState::Running,
            Initial::Off => PowerState::Off,
            Initial::Suspended => PowerState::Suspended,
        };
        Ioc {
            state,
            ignition: initial == Initial::Running,
            door: false,
            rtc_woke: false,
            soc: false,
            force_s5: false,
            rtc: None,
            watchdog: watchdog.filter(|d| !d.is_zero()),
            fed: now,
            suppressed_until: None,
            last_hb: None,
            reported: None,
            latched: Latched::default(),
        }
    }

    /// The effects of starting: the first reason frame if the system runs.
    pub fn start(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.settle(&mut fx);
        fx
    }

    /// The power state.
    pub fn state(&self) -> PowerState {
        self.state
    }

    /// The reason the IOC reports: 0 while `Prepared`, else the composed sources (also
    /// while `Off` or `Suspended`, where nothing is sent).
    pub fn reason(&self) -> u32 {
        match self.state {
            PowerState::Prepared(_) => 0,
            _ => self.sources(),
        }
    }

    /// The reason the line carries on every period, if the line is alive.
    pub fn reporting(&self) -> Option<u32> {
        match self.state {
            PowerState::Running => Some(self.sources()),
            PowerState::Prepared(_) => Some(0),
            PowerState::Off | PowerState::Suspended => None,
        }
    }

    /// Whether the ignition is on.
    pub fn ignition(&self) -> bool {
        self.ignition
    }

    /// Whether the door is open.
    pub fn door(&self) -> bool {
        self.door
    }

    /// The last heartbeat received.
    pub fn last_heartbeat(&self) -> Option<Heartbeat> {
        self.last_hb
    }

    /// Time left until the armed RTC alarm expires (zero if due), `None` if disarmed.
    pub fn rtc_left(&self, now: Instant) -> Option<Duration> {
        self.rtc.map(|due| due.saturating_duration_since(now))
    }

    /// When the watchdog cuts the power unless fed, if it is watching.
    pub fn watchdog_deadline(&self) -> Option<Instant> {
        let period = self.watchdog?;
        if !self.state.is_powered() {
            return None;
        }
        let due = self.fed + period;
        Some(self.suppressed_until.map_or(due, |s| s.max(due)))
    }

    /// The next instant [`Ioc::advance`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.rtc, self.watchdog_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn sources(&self) -> u32 {
        let mut r = 0;
        for (on, bit) in [
            (self.ignition, reason::BTN),
            (self.door, reason::DOOR),
            (self.rtc_woke, reason::RTC),
            (self.soc, reason::SOC),
            (self.force_s5, reason::FORCE_S5),
        ] {
            if on {
                r |= bit;
            }
        }
        r
    }

    /// Emits [`Effect::SendReason`] if the reason on the line changed.
    fn settle(&mut self, fx: &mut Vec<Effect>) {
        let now = self.reporting();
        if now != self.reported {
            if let Some(r) = now {
                fx.push(Effect::SendReason(r));
            }
            self.reported = now;
        }
    }

    /// Changes state; callers update the sources first so the logged reason is the new one.
    fn go(&mut self, to: PowerState, fx: &mut Vec<Effect>) {
        let from = self.state;
        self.state = to;
        fx.push(Effect::Transition {
            from,
            to,
            reason: self.reason(),
        });
    }

    fn power_on(&mut self, by: Wake, now: Instant, fx: &mut Vec<Effect>) {
        let was = self.state;
        self.soc = false;
        self.rtc_woke = by == Wake::Rtc;
        self.fed = now;
        self.suppressed_until = None;
        self.latched = Latched::default();
        self.go(PowerState::Running, fx);
        if was == PowerState::Suspended {
            fx.push(Effect::Resumed {
                reason: self.reason(),
            });
        }
    }

    /// Powers down to `Off` or `Suspended`, then honours a wake latched while `Prepared`.
    fn power_down(&mut self, to: PowerState, now: Instant, fx: &mut Vec<Effect>) {
        self.soc = false;
        if to == PowerState::Off {
            self.rtc_woke = false;
        }
        self.go(to, fx);
        let latched = std::mem::take(&mut self.latched);
        let wake = match to {
            PowerState::Off if latched.ignition => Some(Wake::Ignition),
            PowerState::Off if latched.rtc => Some(Wake::Rtc),
            PowerState::Suspended if latched.ignition => Some(Wake::Ignition),
            PowerState::Suspended if latched.door => Some(Wake::Door),
            PowerState::Suspended if latched.rtc => Some(Wake::Rtc),
            _ => None,
        };
        if let Some(by) = wake {
            self.power_on(by, now, fx);
        }
    }

    /// A wake event from the car: powers the system on where `by` may, latches it while
    /// `Prepared`.
    fn wake(&mut self, by: Wake, now: Instant, fx: &mut Vec<Effect>) {
        match (self.state, by) {
            (PowerState::Off, Wake::Door) | (PowerState::Running, _) => {}
            (PowerState::Off | PowerState::Suspended, _) => self.power_on(by, now, fx),
            (PowerState::Prepared(_), Wake::Ignition) => self.latched.ignition = true,
            (PowerState::Prepared(_), Wake::Door) => self.latched.door = true,
            (PowerState::Prepared(_), Wake::Rtc) => self.latched.rtc = true,
        }
    }

    /// Ignition switched on (or the power button pressed): BTN set, FORCE_S5 cleared, and a
    /// wake event.
    pub fn ignition_on(&mut self, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        if !self.ignition {
            self.rtc_woke = false;
        }
        self.ignition = true;
        self.force_s5 = false;
        self.wake(Wake::Ignition, now, &mut fx);
        self.settle(&mut fx);
        fx
    }

    /// Ignition switched off; with `force_s5` the FORCE_S5 bit is latched until the next
    /// ignition on.
    pub fn ignition_off(&mut self, force_s5: bool) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.ignition {
            self.rtc_woke = false;
        }
        self.ignition = false;
        self.force_s5 |= force_s5;
        self.latched.ignition = false;
        self.settle(&mut fx);
        fx
    }

    /// The door opened: DOOR set, and a wake event (not from `Off`).
    pub fn door_open(&mut self, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        if !self.door {
            self.rtc_woke = false;
        }
        self.door = true;
        self.wake(Wake::Door, now, &mut fx);
        self.settle(&mut fx);
        fx
    }

    /// The door closed: DOOR cleared.
    pub fn door_close(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.door {
            self.rtc_woke = false;
        }
        self.door = false;
        self.latched.door = false;
        self.settle(&mut fx);
        fx
    }

    /// A frame from the SoC, received at `now`.
    pub fn on_frame(&mut self, frame: &Frame, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match *frame {
            Frame::Heartbeat(hb) => {
                self.last_hb = Some(hb);
                if self.state.is_powered() {
                    self.fed = now;
                    if is_prepared(hb) {
                        self.soc = false;
                        match self.state {
                            PowerState::Running => self.go(PowerState::Prepared(hb), &mut fx),
                            PowerState::Prepared(_) => self.state = PowerState::Prepared(hb),
                            PowerState::Off | PowerState::Suspended => {}
                        }
                    } else if hb == Heartbeat::ACTIVE && self.state == PowerState::Running {
                        self.soc = true;
                    }
                }
            }
            Frame::SuppressHeartbeat { ms } => {
                if let Some(due) = self.watchdog_deadline() {
                    self.suppressed_until = Some(due + Duration::from_millis(u64::from(ms)));
                }
            }
            Frame::Rtc(wake) => {
                if wake.value == 0 {
                    self.rtc = None;
                    fx.push(Effect::Rtc(RtcEvent::Disarmed));
                } else {
                    let after = Duration::from_secs(wake.seconds());
                    self.rtc = Some(now + after);
                    fx.push(Effect::Rtc(RtcEvent::Armed(after)));
                }
            }
            Frame::WakeupReason(_) | Frame::BootSelector(_) | Frame::LogicMode(_) => {}
        }
        self.settle(&mut fx);
        fx
    }

    /// The SoC powers itself off (`shutdown 0` in simulation).
    pub fn poweroff(&mut self, now: Instant) -> Result<Vec<Effect>, PowerError> {
        if !self.state.is_powered() {
            return Err(PowerError::NotPowered(self.state));
        }
        let mut fx = Vec::new();
        self.power_down(PowerState::Off, now, &mut fx);
        self.settle(&mut fx);
        Ok(fx)
    }

    /// The SoC reboots: back to `Running` at once with the current sources (the SoC bit
    /// clears until the next ACTIVE heartbeat), and the reason is sent at once.
    pub fn reboot(&mut self, now: Instant) -> Result<Vec<Effect>, PowerError> {
        if !self.state.is_powered() {
            return Err(PowerError::NotPowered(self.state));
        }
        let mut fx = Vec::new();
        self.soc = false;
        self.fed = now;
        self.suppressed_until = None;
        self.latched = Latched::default();
        self.go(PowerState::Running, &mut fx);
        self.reported = None;
        self.settle(&mut fx);
        Ok(fx)
    }

    /// The SoC suspends to RAM. The returned effects contain [`Effect::Resumed`] if a wake
    /// latched while going down resumes it at once.
    pub fn suspend(&mut self, now: Instant) -> Result<Vec<Effect>, PowerError> {
        if !self.state.is_powered() {
            return Err(PowerError::NotPowered(self.state));
        }
        let mut fx = Vec::new();
        self.power_down(PowerState::Suspended, now, &mut fx);
        self.settle(&mut fx);
        Ok(fx)
    }

    /// Acts on whatever is due at `now`: the RTC alarm, then the watchdog.
    pub fn advance(&mut self, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        if let Some(due) = self.rtc
            && due <= now
        {
            self.rtc = None;
            match self.state {
                PowerState::Off | PowerState::Suspended => {
                    fx.push(Effect::Rtc(RtcEvent::Fired));
                    self.wake(Wake::Rtc, now, &mut fx);
                }
                PowerState::Prepared(_) => {
                    fx.push(Effect::Rtc(RtcEvent::Latched));
                    self.wake(Wake::Rtc, now, &mut fx);
                }
                PowerState::Running => fx.push(Effect::Rtc(RtcEvent::Missed)),
            }
        }
        if let Some(due) = self.watchdog_deadline()
            && due <= now
        {
            fx.push(Effect::PowerCut {
                silent: now.saturating_duration_since(self.fed),
            });
            self.power_down(PowerState::Off, now, &mut fx);
        }
        self.settle(&mut fx);
        fx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mngr_ipc::cbc::{RtcUnit, RtcWake};

    const BTN: u32 = 0x20;
    const RTC: u32 = 0x200;
    const DOOR: u32 = 0x800;
    const FS5: u32 = 0x40_0000;
    const SOC: u32 = 0x80_0000;

    fn hb(h: Heartbeat) -> Frame {
        Frame::Heartbeat(h)
    }

    fn rtc_frame(value: u16) -> Frame {
        Frame::Rtc(RtcWake {
            value,
            unit: RtcUnit::Seconds,
        })
    }

    fn sends(fx: &[Effect]) -> Vec<u32> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::SendReason(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    fn transitions(fx: &[Effect]) -> Vec<(&'static str, &'static str)> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Transition { from, to, .. } => Some((from.name(), to.name())),
                _ => None,
            })
            .collect()
    }

    fn resumed(fx: &[Effect]) -> Option<u32> {
        fx.iter().find_map(|e| match e {
            Effect::Resumed { reason } => Some(*reason),
            _ => None,
        })
    }

    /// Running with ignition on and the SoC active (reason 0x800020).
    fn running(t0: Instant) -> Ioc {
        let mut ioc = Ioc::new(Initial::Running, None, t0);
        assert_eq!(sends(&ioc.start()), [BTN]);
        assert_eq!(
            sends(&ioc.on_frame(&hb(Heartbeat::ACTIVE), t0)),
            [SOC | BTN]
        );
        ioc
    }

    /// Prepared for S3 after ignition off.
    fn prepared(t0: Instant) -> Ioc {
        let mut ioc = running(t0);
        assert_eq!(sends(&ioc.ignition_off(false)), [SOC]);
        let fx = ioc.on_frame(&hb(Heartbeat::S3), t0);
        assert_eq!(sends(&fx), [0]);
        assert_eq!(transitions(&fx), [("running", "prepared")]);
        ioc
    }

    fn off(t0: Instant) -> Ioc {
        let mut ioc = prepared(t0);
        ioc.poweroff(t0).expect("powered");
        assert_eq!(ioc.state(), PowerState::Off);
        ioc
    }

    fn suspended(t0: Instant) -> Ioc {
        let mut ioc = prepared(t0);
        let fx = ioc.suspend(t0).expect("powered");
        assert_eq!(resumed(&fx), None);
        assert_eq!(ioc.state(), PowerState::Suspended);
        ioc
    }

    type Builder = fn(Instant) -> Ioc;
    const STATES: [(&str, Builder); 4] = [
        ("running", running),
        ("prepared", prepared),
        ("off", off),
        ("suspended", suspended),
    ];

    #[test]
    fn initial_states() {
        let t0 = Instant::now();
        let mut r = Ioc::new(Initial::Running, None, t0);
        assert_eq!(sends(&r.start()), [BTN]);
        assert_eq!(r.reporting(), Some(BTN));
        for init in [Initial::Off, Initial::Suspended] {
            let mut ioc = Ioc::new(init, None, t0);
            assert!(ioc.start().is_empty());
            assert_eq!(ioc.reporting(), None);
            assert!(!ioc.ignition());
        }
        assert_eq!(Ioc::new(Initial::Off, None, t0).state(), PowerState::Off);
        assert_eq!(
            Ioc::new(Initial::Suspended, None, t0).state(),
            PowerState::Suspended
        );
    }

    #[test]
    fn reason_composition() {
        let t0 = Instant::now();
        let mut ioc = Ioc::new(Initial::Running, None, t0);
        ioc.start();
        assert_eq!(sends(&ioc.door_open(t0)), [BTN | DOOR]);
        assert_eq!(
            sends(&ioc.on_frame(&hb(Heartbeat::INIT), t0)),
            [] as [u32; 0]
        );
        assert_eq!(
            sends(&ioc.on_frame(&hb(Heartbeat::ACTIVE), t0)),
            [BTN | DOOR | SOC]
        );
        assert!(
            sends(&ioc.on_frame(&hb(Heartbeat::ACTIVE), t0)).is_empty(),
            "no change, no frame"
        );
        assert_eq!(sends(&ioc.ignition_off(true)), [DOOR | SOC | FS5]);
        assert_eq!(sends(&ioc.door_close()), [SOC | FS5]);
        assert_eq!(ioc.reason(), 0xC0_0000);
        // A delay heartbeat keeps the SoC bit: the shutdown request stands.
        assert!(sends(&ioc.on_frame(&hb(Heartbeat::SHUTDOWN_DELAY), t0)).is_empty());
        assert_eq!(sends(&ioc.ignition_on(t0)), [BTN | SOC]);
    }

    #[test]
    fn force_s5_latches_until_ignition_on() {
        let t0 = Instant::now();
        let mut ioc = running(t0);
        assert_eq!(sends(&ioc.ignition_off(true)), [SOC | FS5]);
        assert!(sends(&ioc.ignition_off(false)).is_empty(), "still latched");
        assert_eq!(ioc.reason(), SOC | FS5);
        assert!(sends(&ioc.door_open(t0)).contains(&(SOC | FS5 | DOOR)));
        ioc.door_close();
        // Survives a power cycle: only ignition on clears it.
        ioc.on_frame(&hb(Heartbeat::S5), t0);
        ioc.poweroff(t0).expect("powered");
        assert_eq!(ioc.reason(), FS5);
        let fx = ioc.ignition_on(t0);
        assert_eq!(sends(&fx), [BTN]);
        // Force S5 while already off is still latched.
        assert_eq!(sends(&ioc.ignition_off(true)), [FS5]);
    }

    #[test]
    fn shutdown_prepared_heartbeats_answer_zero() {
        let t0 = Instant::now();
        for h in [Heartbeat::S5, Heartbeat::REBOOT, Heartbeat::S3] {
            let mut ioc = running(t0);
            ioc.ignition_off(false);
            let fx = ioc.on_frame(&hb(h), t0);
            assert_eq!(sends(&fx), [0], "{}", h.name());
            assert_eq!(ioc.state(), PowerState::Prepared(h));
            assert_eq!(ioc.reporting(), Some(0));
            // Repeated and changed prepared heartbeats keep the phase, without a new frame.
            assert!(ioc.on_frame(&hb(h), t0).is_empty());
            let other = ioc.on_frame(&hb(Heartbeat::S5), t0);
            assert!(transitions(&other).is_empty());
            assert!(matches!(ioc.state(), PowerState::Prepared(_)));
            // Even an ACTIVE heartbeat does not call the shutdown off.
            assert!(sends(&ioc.on_frame(&hb(Heartbeat::ACTIVE), t0)).is_empty());
            assert_eq!(ioc.reporting(), Some(0));
        }
    }

    #[test]
    fn poweroff_in_every_state() {
        let t0 = Instant::now();
        for (name, build) in STATES {
            let mut ioc = build(t0);
            let res = ioc.poweroff(t0);
            match name {
                "running" | "prepared" => {
                    let fx = res.expect("powered");
                    assert_eq!(transitions(&fx), [(name, "off")]);
                    assert!(sends(&fx).is_empty());
                    assert_eq!(ioc.reporting(), None);
                }
                _ => {
                    assert_eq!(res, Err(PowerError::NotPowered(ioc.state())), "{name}");
                    assert_eq!(ioc.state().name(), name);
                }
            }
        }
    }

    #[test]
    fn reboot_in_every_state() {
        let t0 = Instant::now();
        for (name, build) in STATES {
            let mut ioc = build(t0);
            let res = ioc.reboot(t0);
            match name {
                "running" => {
                    let fx = res.expect("powered");
                    assert_eq!(transitions(&fx), [("running", "running")]);
                    assert_eq!(sends(&fx), [BTN], "sent at once, SoC bit cleared");
                }
                "prepared" => {
                    let fx = res.expect("powered");
                    assert_eq!(transitions(&fx), [("prepared", "running")]);
                    assert_eq!(sends(&fx), [0], "ignition is off: no source left");
                    assert_eq!(ioc.state(), PowerState::Running);
                }
                _ => {
                    assert!(res.is_err(), "{name}");
                    assert_eq!(ioc.state().name(), name);
                }
            }
        }
    }

    #[test]
    fn suspend_in_every_state() {
        let t0 = Instant::now();
        for (name, build) in STATES {
            let mut ioc = build(t0);
            let res = ioc.suspend(t0);
            match name {
                "running" | "prepared" => {
                    let fx = res.expect("powered");
                    assert_eq!(transitions(&fx), [(name, "suspended")]);
                    assert_eq!(resumed(&fx), None);
                    assert!(sends(&fx).is_empty());
                }
                _ => {
                    assert!(res.is_err(), "{name}");
                    assert_eq!(ioc.state().name(), name);
                }
            }
        }
    }

    #[test]
    fn ignition_on_in_every_state() {
        let t0 = Instant::now();
        for (name, build) in STATES {
            let mut ioc = build(t0);
            let fx = ioc.ignition_on(t0);
            match name {
                "running" => {
                    assert!(fx.is_empty(), "already on: no change");
                }
                "prepared" => {
                    assert!(sends(&fx).is_empty(), "committed: reason stays 0");
                    assert_eq!(ioc.reporting(), Some(0));
                    // The wake is latched: the suspend resumes at once.
                    let fx = ioc.suspend(t0).expect("powered");
                    assert_eq!(
                        transitions(&fx),
                        [("prepared", "suspended"), ("suspended", "running")]
                    );
                    assert_eq!(resumed(&fx), Some(BTN));
                    assert_eq!(sends(&fx), [BTN]);
                }
                "off" => {
                    assert_eq!(transitions(&fx), [("off", "running")]);
                    assert_eq!(resumed(&fx), None);
                    assert_eq!(sends(&fx), [BTN]);
                }
                _ => {
                    assert_eq!(transitions(&fx), [("suspended", "running")]);
                    assert_eq!(resumed(&fx), Some(BTN));
                    assert_eq!(sends(&fx), [BTN]);
                }
            }
        }
    }

    #[test]
    fn ignition_off_in_every_state() {
        let t0 = Instant::now();
        for (name, build) in STATES {
            let mut ioc = build(t0);
            let fx = ioc.ignition_off(false);
            assert!(transitions(&fx).is_empty(), "{name}: never a state change");
            assert_eq!(ioc.state().name(), name);
            match name {
                "running" => assert_eq!(sends(&fx), [SOC]),
                _ => assert!(sends(&fx).is_empty(), "{name}"),
            }
        }
    }

    #[test]
    fn door_in_every_state() {
        let t0 = Instant::now();
        for (name, build) in STATES {
            let mut ioc = build(t0);
            let fx = ioc.door_open(t0);
            match name {
                "running" => assert_eq!(sends(&fx), [BTN | SOC | DOOR]),
                "prepared" => {
                    assert!(fx.is_empty());
                    let fx = ioc.poweroff(t0).expect("powered");
                    assert_eq!(transitions(&fx), [("prepared", "off")], "door wakes no Off");
                }
                "off" => {
                    assert!(fx.is_empty(), "door does not power on");
                    assert_eq!(ioc.state(), PowerState::Off);
                }
                _ => {
                    assert_eq!(transitions(&fx), [("suspended", "running")]);
                    assert_eq!(resumed(&fx), Some(DOOR));
                }
            }
            let before = ioc.state();
            let fx = ioc.door_close();
            assert!(transitions(&fx).is_empty());
            assert_eq!(ioc.state(), before);
            assert!(!ioc.door());
        }
    }

    #[test]
    fn latched_wakes_are_cancelled_by_the_opposite_edge() {
        let t0 = Instant::now();
        let mut ioc = prepared(t0);
        ioc.ignition_on(t0);
        ioc.ignition_off(false);
        ioc.door_open(t0);
        ioc.door_close();
        let fx = ioc.suspend(t0).expect("powered");
        assert_eq!(resumed(&fx), None);
        assert_eq!(ioc.state(), PowerState::Suspended);
    }

    #[test]
    fn rtc_wakes_from_suspend_after_its_delay() {
        let t0 = Instant::now();
        let mut ioc = prepared(t0);
        let fx = ioc.on_frame(&rtc_frame(2), t0);
        assert_eq!(fx, [Effect::Rtc(RtcEvent::Armed(Duration::from_secs(2)))]);
        ioc.suspend(t0).expect("powered");
        assert_eq!(ioc.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(
            ioc.rtc_left(t0 + Duration::from_millis(500)),
            Some(Duration::from_millis(1500))
        );
        assert!(ioc.advance(t0 + Duration::from_millis(1999)).is_empty());
        let fx = ioc.advance(t0 + Duration::from_secs(2));
        assert_eq!(fx[0], Effect::Rtc(RtcEvent::Fired));
        assert_eq!(transitions(&fx), [("suspended", "running")]);
        assert_eq!(resumed(&fx), Some(RTC));
        assert_eq!(sends(&fx), [RTC]);
        assert_eq!(ioc.rtc_left(t0), None, "disarmed after firing");
        assert_eq!(ioc.next_deadline(), None);
        // The RTC bit stays until an ignition or door change.
        assert!(sends(&ioc.on_frame(&hb(Heartbeat::ACTIVE), t0)).contains(&(RTC | SOC)));
        assert_eq!(sends(&ioc.door_open(t0)), [SOC | DOOR]);
    }

    #[test]
    fn rtc_powers_on_from_off_and_the_last_frame_wins() {
        let t0 = Instant::now();
        let mut ioc = off(t0);
        ioc.on_frame(&rtc_frame(60), t0);
        let t1 = t0 + Duration::from_secs(10);
        ioc.on_frame(
            &Frame::Rtc(RtcWake {
                value: 1,
                unit: RtcUnit::Minutes,
            }),
            t1,
        );
        assert_eq!(ioc.next_deadline(), Some(t1 + Duration::from_secs(60)));
        let fx = ioc.advance(t1 + Duration::from_secs(60));
        assert_eq!(transitions(&fx), [("off", "running")]);
        assert_eq!(resumed(&fx), None, "a cold boot is no resume");
        assert_eq!(sends(&fx), [RTC]);
    }

    #[test]
    fn rtc_zero_disarms_and_running_misses() {
        let t0 = Instant::now();
        let mut ioc = suspended(t0);
        ioc.on_frame(&rtc_frame(5), t0);
        assert_eq!(
            ioc.on_frame(&rtc_frame(0), t0),
            [Effect::Rtc(RtcEvent::Disarmed)]
        );
        assert_eq!(ioc.next_deadline(), None);
        assert!(ioc.advance(t0 + Duration::from_secs(10)).is_empty());

        let mut ioc = running(t0);
        ioc.on_frame(&rtc_frame(1), t0);
        let fx = ioc.advance(t0 + Duration::from_secs(1));
        assert_eq!(fx, [Effect::Rtc(RtcEvent::Missed)]);
        assert_eq!(ioc.state(), PowerState::Running);
    }

    #[test]
    fn rtc_expiring_while_prepared_wakes_right_after_power_down() {
        let t0 = Instant::now();
        for (cmd, from_down) in [("suspend", "suspended"), ("poweroff", "off")] {
            let mut ioc = prepared(t0);
            ioc.on_frame(&rtc_frame(1), t0);
            let fx = ioc.advance(t0 + Duration::from_secs(1));
            assert_eq!(fx, [Effect::Rtc(RtcEvent::Latched)]);
            let fx = match cmd {
                "suspend" => ioc.suspend(t0),
                _ => ioc.poweroff(t0),
            }
            .expect("powered");
            assert_eq!(
                transitions(&fx),
                [("prepared", from_down), (from_down, "running")]
            );
            assert_eq!(sends(&fx), [RTC]);
        }
    }

    #[test]
    fn watchdog_cuts_power_without_heartbeats() {
        let t0 = Instant::now();
        let wd = Duration::from_millis(300);
        let mut ioc = Ioc::new(Initial::Running, Some(wd), t0);
        ioc.start();
        assert_eq!(ioc.next_deadline(), Some(t0 + wd));
        let t1 = t0 + Duration::from_millis(200);
        ioc.on_frame(&hb(Heartbeat::INIT), t1);
        assert_eq!(ioc.next_deadline(), Some(t1 + wd), "any heartbeat feeds it");
        assert!(ioc.advance(t1 + Duration::from_millis(299)).is_empty());
        let fx = ioc.advance(t1 + wd);
        assert_eq!(
            fx[0],
            Effect::PowerCut {
                silent: Duration::from_millis(300)
            }
        );
        assert_eq!(transitions(&fx), [("running", "off")]);
        assert_eq!(ioc.next_deadline(), None, "no watchdog while off");
        // Powered on again, it watches from the power-on.
        let t2 = t1 + Duration::from_secs(5);
        ioc.ignition_on(t2);
        assert_eq!(ioc.next_deadline(), Some(t2 + wd));
    }

    #[test]
    fn watchdog_also_watches_the_prepared_phase_and_not_suspend() {
        let t0 = Instant::now();
        let wd = Duration::from_millis(100);
        let mut ioc = Ioc::new(Initial::Running, Some(wd), t0);
        ioc.ignition_off(false);
        ioc.on_frame(&hb(Heartbeat::S5), t0);
        assert_eq!(ioc.watchdog_deadline(), Some(t0 + wd));
        ioc.suspend(t0).expect("powered");
        assert_eq!(ioc.watchdog_deadline(), None);
        assert!(ioc.advance(t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn suppress_extends_the_deadline() {
        let t0 = Instant::now();
        let wd = Duration::from_millis(100);
        let mut ioc = Ioc::new(Initial::Running, Some(wd), t0);
        ioc.on_frame(&Frame::SuppressHeartbeat { ms: 1000 }, t0);
        assert_eq!(
            ioc.watchdog_deadline(),
            Some(t0 + Duration::from_millis(1100))
        );
        // A heartbeat does not pull the suppressed deadline forward.
        ioc.on_frame(&hb(Heartbeat::S5), t0 + Duration::from_millis(50));
        assert_eq!(
            ioc.watchdog_deadline(),
            Some(t0 + Duration::from_millis(1100))
        );
        assert!(ioc.advance(t0 + Duration::from_millis(1099)).is_empty());
        assert_eq!(
            transitions(&ioc.advance(t0 + Duration::from_millis(1100))),
            [("prepared", "off")]
        );
    }

    #[test]
    fn no_watchdog_never_cuts() {
        let t0 = Instant::now();
        for wd in [None, Some(Duration::ZERO)] {
            let mut ioc = Ioc::new(Initial::Running, wd, t0);
            ioc.start();
            assert_eq!(ioc.next_deadline(), None);
            assert!(ioc.advance(t0 + Duration::from_secs(3600)).is_empty());
            assert_eq!(ioc.state(), PowerState::Running);
        }
    }

    #[test]
    fn frames_while_unpowered_change_nothing_but_the_rtc() {
        let t0 = Instant::now();
        for (name, build) in [("off", off as Builder), ("suspended", suspended)] {
            let mut ioc = build(t0);
            for f in [
                hb(Heartbeat::ACTIVE),
                hb(Heartbeat::S5),
                Frame::SuppressHeartbeat { ms: 5 },
                Frame::WakeupReason(0x20),
                Frame::LogicMode([1, 2, 3]),
                Frame::BootSelector([0, 0, 0]),
            ] {
                assert!(ioc.on_frame(&f, t0).is_empty(), "{name}: {f:?}");
                assert_eq!(ioc.state().name(), name);
            }
            assert_eq!(ioc.last_heartbeat(), Some(Heartbeat::S5));
            assert_eq!(ioc.reason() & SOC, 0);
        }
    }

    #[test]
    fn power_off_clears_the_rtc_bit_and_soc_bit() {
        let t0 = Instant::now();
        let mut ioc = suspended(t0);
        ioc.on_frame(&rtc_frame(1), t0);
        ioc.advance(t0 + Duration::from_secs(1));
        ioc.on_frame(&hb(Heartbeat::ACTIVE), t0);
        assert_eq!(ioc.reason(), RTC | SOC);
        ioc.poweroff(t0).expect("powered");
        assert_eq!(ioc.reason(), 0);
    }
}
