//! The lifecycle part of the virtual IOC (the original's "IOC mediator"): a pure state
//! machine, no I/O. It turns guest heartbeats and RTC requests, native wakeup reasons and
//! monitor ops into [`Action`]s; the device model carries them out (frames to the guest,
//! ACRND_TIMER through the monitor, the native channel, a resend timer).
//!
//! # States and events
//!
//! | state | meaning | CBC processing |
//! |---|---|---|
//! | [`State::Init`] | after start or resume; the guest has not sent a heartbeat yet | on |
//! | [`State::Active`] | the guest heartbeats; it sees the SoC bit | on |
//! | [`State::Suspending`] | the guest sent "shutdown prepared"; it is going to S3 or S5 | off (RTC requests still accepted) |
//! | [`State::Suspended`] | the guest is in S3 or off; the native channel is closed | off |
//!
//! | from | event | actions | to |
//! |---|---|---|---|
//! | Init | HbActive | reason `boot_reason \| 0x800000` (or the pending request's) to the guest | Active |
//! | Active | RamRefresh, HbInactive | reason 0 to the guest; stop re-sending a pending request | Suspending |
//! | Suspending | Shutdown (the device model saw the guest enter S3 or power off) | close the native channel | Suspended |
//! | Suspending | Resume | (native channel still open) | Init |
//! | Suspended | Resume | reopen the native channel | Init |
//!
//! Every other (state, event) pair changes nothing ([`Vioc::handle`]).
//!
//! # Guest frames (service bytes, lifecycle channel)
//!
//! * `02 cmd sus_stat 00` heartbeat: 3 initial → a reason at once (as for HbActive) and
//!   HbActive; 1 active, 2 shutdown delay, 4 standby → HbActive; 0 shutdown prepared with
//!   SUS_STAT 7 → RamRefresh, with any other SUS_STAT → HbInactive; others dropped. An
//!   event equal to the previous one from the guest is not raised again; that memory is
//!   cleared on resume. Heartbeats are dropped while CBC processing is off.
//! * `05 v0 v1 unit` RTC request: `seconds = (v0 | v1 << 8) × {1, 60, 3600, 86400,
//!   604800}[unit]` in `u64` → [`Action::SetWakeupTimer`]; value 0 or unit > 4 dropped.
//!   Accepted in Init, Active **and Suspending**; dropped in Suspended.
//! * Anything else (boot selector, suppress heartbeat, unknown) is dropped.
//!
//! # Reasons to the guest
//!
//! Always masked with `0xC00A20` ([`reason::GUEST_MASK`]).
//!
//! * A pending request ([`Vioc::stop`] → `0xC00000`, [`Vioc::suspend`] → `0x800000`) goes
//!   to the guest at once and again on every [`Vioc::on_resend_tick`] (the device model
//!   runs a periodic timer between [`Action::StartResend`] and [`Action::StopResend`]),
//!   and replaces every native reason, until a resume clears it.
//! * A native reason `n` (a `01` frame from the native lifecycle channel): guest active →
//!   `(n | 0x800000) & !0x200`; guest not yet active → `boot_reason & !0x800000`.
//! * The guest's initial heartbeat (and the Init → Active transition) → `boot_reason |
//!   0x800000`; Active → Suspending → 0.
//!
//! The boot reason ([`boot_reason`]): bit 24 (the original's debug flag) is ignored,
//! the rest masked with `0xC00A20`; 0 becomes `0x20` (ignition button). A DM_RESUME reason
//! becomes the boot reason by the same rule, so after a resume with `0x200` (RTC) the
//! guest's initial heartbeat delivers `0x800200`.
//!
//! # A suspend and resume, end to end
//!
//! ```text
//! acrnd        monitor / DM          vioc                         guest
//!   | DM_SUSPEND   |                   |                              |
//!   |------------->| suspend()         | pending SUSPEND              |
//!   |              |------------------>|-- 01 00 00 80 (at once, ---->| ignition off:
//!   |<-- ack 0 ----|                   |   then every period)         | suspend delay
//!   |              |                   |<------------- 05 v0 v1 unit -| (optional RTC)
//!   |<-- ACRND_TIMER {vm, secs} -------| SetWakeupTimer               |
//!   |              |                   |<------------- 02 00 07 00 ---| shutdown prepared, S3
//!   |              |                   | RamRefresh: Active->Suspending
//!   |              |                   |-- 01 00 00 00 -------------->| reason 0: enter S3
//!   |<-- DM_NOTIFY 4 -- mode SUSPEND <-|------------------------------|
//!   |              | guest_down()      | Shutdown: ->Suspended (native closed)
//!   | DM_RESUME 0x200                  |                              |
//!   |------------->| mode NONE, DM_NOTIFY 0                           |
//!   |              | resume(0x200)     | Resume: ->Init, boot 0x200   |
//!   |              |---------------------------------------- resume ->|
//!   |              |                   |<------------- 02 03 00 00 ---| initial heartbeat
//!   |              |                   |-- 01 00 02 80 -------------->| woke by 0x800200
//!   |              |                   | HbActive: Init->Active       |
//! ```
//!
//! # Differences from the original mediator
//!
//! * A pending stop or suspend reaches the guest at once and is re-sent every period by its
//!   own timer (the original sent it only when the next native frame arrived, i.e. never
//!   without a native channel); it also replaces the reason of the initial heartbeat, so a
//!   guest booting while a request is pending is not told "ignition on" in between.
//! * RTC requests are accepted in Suspending (a guest arms its wake-up right around its
//!   "shutdown prepared" heartbeat); seconds are computed in `u64`.
//! * A resume with reason 0 resumes with `0x20` (the original left the mediator suspended,
//!   its native channels closed, while the VM ran again).
//! * The heartbeat event filter is reset on resume.
//! * Suspending lasts until the device model reports the guest down ([`Vioc::guest_down`])
//!   instead of ending at once; a resume is accepted in Suspending too.
//! * The initial heartbeat's reason is sent once, not twice (heartbeat and transition).
//! * A graceful stop of a guest in S3 is refused ([`ViocError::GuestAsleep`]): no frame
//!   can reach it; the original answered 0 and did nothing.

use mngr_ipc::cbc::{Frame, RtcUnit, reason};
use thiserror::Error;

/// The reason of an emulated ignition-off with force-S5 (pending STOP).
pub const STOP_REASON: u32 = reason::FORCE_S5 | reason::SOC;
/// The reason of an emulated ignition-off (pending SUSPEND).
pub const SUSPEND_REASON: u32 = reason::SOC;
/// Bit 24 of a boot reason: the original's debug-mode flag; ignored here.
pub const DEBUG_BIT: u32 = 1 << 24;
/// `SUS_STAT` of a "shutdown prepared" heartbeat that means S3 (RAM refresh).
pub const SUS_STAT_RAM_REFRESH: u8 = 7;

/// The boot reason the guest is told: bit 24 ignored, masked with `0xC00A20`, 0 → `0x20`.
pub fn boot_reason(raw: u32) -> u32 {
    let r = raw & !DEBUG_BIT & reason::GUEST_MASK;
    if r == 0 { reason::DEFAULT_BOOT } else { r }
}

/// Seconds of an RTC request `05 v0 v1 unit`, in `u64` (no overflow for any input);
/// `None` for value 0 or a unit byte above 4.
pub fn rtc_seconds(value: u16, unit: u8) -> Option<u64> {
    if value == 0 || unit > 4 {
        return None;
    }
    let unit = RtcUnit::from_wire(unit)?;
    Some(u64::from(value) * unit.seconds())
}

/// A state of the virtual IOC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// After start or resume (`IOC_S_INIT`).
    Init,
    /// The guest heartbeats (`IOC_S_ACTIVE`).
    Active,
    /// The guest prepared its shutdown (`IOC_S_SUSPENDING`).
    Suspending,
    /// The guest is in S3 or off (`IOC_S_SUSPENDED`).
    Suspended,
}

impl State {
    /// Every state.
    pub const ALL: [State; 4] = [
        State::Init,
        State::Active,
        State::Suspending,
        State::Suspended,
    ];

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            State::Init => "init",
            State::Active => "active",
            State::Suspending => "suspending",
            State::Suspended => "suspended",
        }
    }

    /// Whether lifecycle frames are processed (Init and Active).
    pub fn cbc_enabled(self) -> bool {
        matches!(self, State::Init | State::Active)
    }
}

/// An event of the virtual IOC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The guest heartbeats (initial, active, shutdown delay, standby).
    HbActive,
    /// The guest prepared S3 (shutdown prepared, SUS_STAT 7).
    RamRefresh,
    /// The guest prepared another shutdown (S5, reboot, ...).
    HbInactive,
    /// The guest is down (in S3 or off).
    Shutdown,
    /// DM_RESUME.
    Resume,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 5] = [
        Event::HbActive,
        Event::RamRefresh,
        Event::HbInactive,
        Event::Shutdown,
        Event::Resume,
    ];

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Event::HbActive => "hb_active",
            Event::RamRefresh => "ram_refresh",
            Event::HbInactive => "hb_inactive",
            Event::Shutdown => "shutdown",
            Event::Resume => "resume",
        }
    }
}

/// A request of the monitor waiting to reach the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pending {
    /// None.
    #[default]
    None,
    /// Emulated ignition-off with force-S5: power off.
    Stop,
    /// Emulated ignition-off: suspend.
    Suspend,
}

impl Pending {
    /// The reason that carries the request, if any.
    pub fn reason(self) -> Option<u32> {
        match self {
            Pending::None => None,
            Pending::Stop => Some(STOP_REASON),
            Pending::Suspend => Some(SUSPEND_REASON),
        }
    }
}

/// What the device model must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the wakeup reason `01 r0 r1 r2` to the guest (already masked).
    ToGuest(u32),
    /// Ask acrnd to wake this VM in this many seconds (ACRND_TIMER).
    SetWakeupTimer(u64),
    /// The state changed.
    Transition {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// The event that caused it.
        event: Event,
    },
    /// Close the native lifecycle channel.
    CloseNative,
    /// Open the native lifecycle channel again.
    OpenNative,
    /// Start the periodic timer calling [`Vioc::on_resend_tick`] (if not running).
    StartResend,
    /// Stop that timer.
    StopResend,
    /// A frame or request was dropped (for logs).
    Dropped(&'static str),
}

/// An op the virtual IOC cannot carry out.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum ViocError {
    /// The guest is in S3: no frame reaches it until it is resumed.
    #[error("The guest is suspended; a graceful stop cannot reach it")]
    GuestAsleep,
}

/// The virtual IOC's lifecycle state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vioc {
    state: State,
    boot_reason: u32,
    guest_active: bool,
    last_event: Option<Event>,
    pending: Pending,
}

impl Vioc {
    /// Starts in Init with the boot reason `raw` (see [`boot_reason`]).
    pub fn new(raw_boot_reason: u32) -> Self {
        Vioc {
            state: State::Init,
            boot_reason: boot_reason(raw_boot_reason),
            guest_active: false,
            last_event: None,
            pending: Pending::None,
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The boot reason (as masked).
    pub fn boot_reason(&self) -> u32 {
        self.boot_reason
    }

    /// Whether the guest has announced itself since the last start or resume.
    pub fn guest_active(&self) -> bool {
        self.guest_active
    }

    /// The last event raised by a guest heartbeat (`None` after start or resume).
    pub fn last_event(&self) -> Option<Event> {
        self.last_event
    }

    /// The pending request.
    pub fn pending(&self) -> Pending {
        self.pending
    }

    /// The reason an announcing guest gets: the pending request's, else `boot | SoC`.
    fn active_reason(&self) -> u32 {
        self.pending
            .reason()
            .unwrap_or(self.boot_reason | reason::SOC)
            & reason::GUEST_MASK
    }

    /// The transition table (see the module docs).
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let from = self.state;
        let (to, mut actions) = match (from, event) {
            (State::Init, Event::HbActive) => {
                self.guest_active = true;
                (State::Active, vec![Action::ToGuest(self.active_reason())])
            }
            (State::Active, Event::RamRefresh | Event::HbInactive) => {
                self.guest_active = false;
                (
                    State::Suspending,
                    vec![Action::ToGuest(0), Action::StopResend],
                )
            }
            (State::Suspending, Event::Shutdown) => (State::Suspended, vec![Action::CloseNative]),
            (State::Suspending | State::Suspended, Event::Resume) => {
                self.guest_active = false;
                self.last_event = None;
                let reopen = if from == State::Suspended {
                    vec![Action::OpenNative]
                } else {
                    Vec::new()
                };
                (State::Init, reopen)
            }
            _ => return Vec::new(),
        };
        self.state = to;
        actions.insert(0, Action::Transition { from, to, event });
        actions
    }

    /// A lifecycle service frame from the guest (`service` = header and 3 payload bytes).
    pub fn on_guest_frame(&mut self, service: [u8; 4]) -> Vec<Action> {
        match service[0] {
            2 => self.on_heartbeat(service[1], service[2]),
            5 => self.on_rtc(u16::from_le_bytes([service[1], service[2]]), service[3]),
            3 => vec![Action::Dropped("boot selector from the guest")],
            4 => vec![Action::Dropped("suppress-heartbeat from the guest")],
            _ => vec![Action::Dropped("unknown frame from the guest")],
        }
    }

    fn on_heartbeat(&mut self, cmd: u8, sus_stat: u8) -> Vec<Action> {
        if !self.state.cbc_enabled() {
            return vec![Action::Dropped("heartbeat while CBC processing is off")];
        }
        let mut actions = Vec::new();
        let event = match cmd {
            3 => {
                let r = self.active_reason();
                actions.push(Action::ToGuest(r));
                self.guest_active = true;
                Event::HbActive
            }
            1 | 2 | 4 => Event::HbActive,
            0 if sus_stat == SUS_STAT_RAM_REFRESH => Event::RamRefresh,
            0 => Event::HbInactive,
            _ => return vec![Action::Dropped("heartbeat command ignored")],
        };
        let told = !actions.is_empty();
        if self.last_event != Some(event) {
            self.last_event = Some(event);
            // The initial heartbeat already told the guest; the transition does not repeat it.
            actions.extend(
                self.handle(event)
                    .into_iter()
                    .filter(|a| !(told && matches!(a, Action::ToGuest(_)))),
            );
        }
        actions
    }

    fn on_rtc(&mut self, value: u16, unit: u8) -> Vec<Action> {
        if self.state == State::Suspended {
            return vec![Action::Dropped("RTC request while suspended")];
        }
        match rtc_seconds(value, unit) {
            Some(s) => vec![Action::SetWakeupTimer(s)],
            None if value == 0 => vec![Action::Dropped("RTC request of value 0")],
            None => vec![Action::Dropped("RTC request with a unit above weeks")],
        }
    }

    /// A frame read from the native lifecycle channel.
    pub fn on_native_frame(&mut self, frame: Frame) -> Vec<Action> {
        if !self.state.cbc_enabled() {
            return vec![Action::Dropped("native frame while CBC processing is off")];
        }
        if let Some(r) = self.pending.reason() {
            return vec![Action::ToGuest(r & reason::GUEST_MASK)];
        }
        match frame {
            Frame::WakeupReason(native) => {
                let r = if self.guest_active {
                    (native | reason::SOC) & !reason::RTC
                } else {
                    self.boot_reason & !reason::SOC
                };
                vec![Action::ToGuest(r & reason::GUEST_MASK)]
            }
            _ => vec![Action::Dropped("native frame other than a wakeup reason")],
        }
    }

    /// The resend timer fired: the pending request again, or stop the timer.
    pub fn on_resend_tick(&mut self) -> Vec<Action> {
        match self.pending.reason() {
            Some(r) if self.state.cbc_enabled() => vec![Action::ToGuest(r & reason::GUEST_MASK)],
            _ => vec![Action::StopResend],
        }
    }

    fn request(&mut self, p: Pending) -> Vec<Action> {
        self.pending = p;
        match p.reason() {
            Some(r) if self.state.cbc_enabled() => {
                vec![Action::ToGuest(r & reason::GUEST_MASK), Action::StartResend]
            }
            _ => Vec::new(),
        }
    }

    /// Op `stop` (graceful DM_STOP): pending := Stop, delivered at once. Refused in
    /// Suspended.
    pub fn stop(&mut self) -> Result<Vec<Action>, ViocError> {
        if self.state == State::Suspended {
            return Err(ViocError::GuestAsleep);
        }
        Ok(self.request(Pending::Stop))
    }

    /// Op `suspend` (DM_SUSPEND): pending := Suspend, delivered at once. Nothing to do in
    /// Suspended.
    pub fn suspend(&mut self) -> Vec<Action> {
        if self.state == State::Suspended {
            return Vec::new();
        }
        self.request(Pending::Suspend)
    }

    /// Op `resume` (DM_RESUME): clears the pending request, takes `reason` as the boot
    /// reason ([`boot_reason`]: 0 → `0x20`) and raises Resume.
    pub fn resume(&mut self, reason: u32) -> Vec<Action> {
        self.pending = Pending::None;
        self.boot_reason = boot_reason(reason);
        let mut actions = vec![Action::StopResend];
        actions.extend(self.handle(Event::Resume));
        actions
    }

    /// The device model saw the guest enter S3 or power off: raises Shutdown.
    pub fn guest_down(&mut self) -> Vec<Action> {
        self.handle(Event::Shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use mngr_ipc::cbc::Heartbeat;

    fn vioc_in(state: State) -> Vioc {
        let mut v = Vioc::new(0);
        let reach: &[Event] = match state {
            State::Init => &[],
            State::Active => &[Event::HbActive],
            State::Suspending => &[Event::HbActive, Event::RamRefresh],
            State::Suspended => &[Event::HbActive, Event::RamRefresh, Event::Shutdown],
        };
        for e in reach {
            v.handle(*e);
        }
        assert_eq!(v.state(), state);
        v
    }

    fn t(from: State, to: State, event: Event) -> Action {
        Transition { from, to, event }
    }

    #[test]
    fn every_state_and_event() {
        use Event as E;
        use State as S;
        for s in S::ALL {
            for e in E::ALL {
                let mut v = vioc_in(s);
                let got = v.handle(e);
                let want: Vec<Action> = match (s, e) {
                    (S::Init, E::HbActive) => vec![t(s, S::Active, e), ToGuest(0x80_0020)],
                    (S::Active, E::RamRefresh | E::HbInactive) => {
                        vec![t(s, S::Suspending, e), ToGuest(0), StopResend]
                    }
                    (S::Suspending, E::Shutdown) => vec![t(s, S::Suspended, e), CloseNative],
                    (S::Suspending, E::Resume) => vec![t(s, S::Init, e)],
                    (S::Suspended, E::Resume) => vec![t(s, S::Init, e), OpenNative],
                    _ => vec![],
                };
                assert_eq!(got, want, "{s:?} + {e:?}");
                let to = match want.first() {
                    Some(Transition { to, .. }) => *to,
                    _ => s,
                };
                assert_eq!(v.state(), to, "{s:?} + {e:?}");
                assert_eq!(
                    v.guest_active(),
                    to == S::Active,
                    "guest active only in Active here: {s:?} + {e:?}"
                );
            }
        }
    }

    #[test]
    fn guest_heartbeats_raise_events_once() {
        let mut v = Vioc::new(0x20);
        // Initial: the reason at once, once, then Active.
        assert_eq!(
            v.on_guest_frame([2, 3, 0, 0]),
            vec![
                ToGuest(0x80_0020),
                t(State::Init, State::Active, Event::HbActive)
            ]
        );
        // Repeated HbActive (active, delay, standby) is a no-op.
        for hb in [[2, 1, 0, 0], [2, 2, 0, 0], [2, 4, 0, 0]] {
            assert_eq!(v.on_guest_frame(hb), vec![], "{hb:02x?}");
        }
        // A repeated initial heartbeat still gets its immediate reason.
        assert_eq!(v.on_guest_frame([2, 3, 0, 0]), vec![ToGuest(0x80_0020)]);
        assert_eq!(
            v.on_guest_frame([2, 9, 0, 0]),
            vec![Dropped("heartbeat command ignored")]
        );
        // Shutdown prepared, S3: RamRefresh.
        assert_eq!(
            v.on_guest_frame([2, 0, 7, 0]),
            vec![
                t(State::Active, State::Suspending, Event::RamRefresh),
                ToGuest(0),
                StopResend
            ]
        );
        assert_eq!(v.last_event(), Some(Event::RamRefresh));
        assert_eq!(
            v.on_guest_frame([2, 0, 7, 0]),
            vec![Dropped("heartbeat while CBC processing is off")]
        );
    }

    #[test]
    fn other_shutdown_prepared_is_hb_inactive() {
        for sus_stat in [0u8, 1, 2, 3, 6, 8, 0xff] {
            let mut v = vioc_in(State::Active);
            v.last_event = Some(Event::HbActive);
            let got = v.on_guest_frame([2, 0, sus_stat, 0]);
            assert_eq!(
                got[0],
                t(State::Active, State::Suspending, Event::HbInactive),
                "sus_stat {sus_stat}"
            );
        }
    }

    #[test]
    fn first_heartbeat_active_sends_the_reason_from_the_transition() {
        let mut v = Vioc::new(0x200);
        assert_eq!(
            v.on_guest_frame([2, 1, 0, 0]),
            vec![
                t(State::Init, State::Active, Event::HbActive),
                ToGuest(0x80_0200)
            ]
        );
    }

    #[test]
    fn other_guest_frames_are_dropped() {
        let mut v = vioc_in(State::Active);
        assert_eq!(
            v.on_guest_frame([3, 0, 0, 0]),
            vec![Dropped("boot selector from the guest")]
        );
        assert_eq!(
            v.on_guest_frame([4, 0xe0, 0x93, 0x04]),
            vec![Dropped("suppress-heartbeat from the guest")]
        );
        assert_eq!(
            v.on_guest_frame([1, 0x20, 0, 0]),
            vec![Dropped("unknown frame from the guest")]
        );
        assert_eq!(v.state(), State::Active);
    }

    #[test]
    fn boot_reason_masking() {
        assert_eq!(boot_reason(0), 0x20, "0 is the ignition button");
        assert_eq!(boot_reason(0x20), 0x20);
        assert_eq!(boot_reason(0x200), 0x200);
        assert_eq!(boot_reason(0x100_0020), 0x20, "bit 24 (debug) ignored");
        assert_eq!(boot_reason(0x100_0000), 0x20, "only bit 24: default");
        assert_eq!(boot_reason(0x0000_0100), 0x20, "bits outside the mask");
        assert_eq!(boot_reason(0xFFFF_FFFF), 0xC0_0A20);
        assert_eq!(boot_reason(0x80_0A00), 0x80_0A00);
    }

    #[test]
    fn native_reasons_follow_the_soc_bit_rules() {
        // Guest not yet active: the boot reason without the SoC bit, whatever the IOC says.
        let mut v = Vioc::new(0x80_0220);
        assert_eq!(v.boot_reason(), 0x80_0220);
        assert_eq!(
            v.on_native_frame(Frame::WakeupReason(0x40)),
            vec![ToGuest(0x220)]
        );
        // Guest active: native | SoC, RTC bit cleared, masked.
        v.on_guest_frame([2, 3, 0, 0]);
        for (native, want) in [
            (0x00_0020, 0x80_0020),
            (0x00_0200, 0x80_0000),
            (0x00_0220, 0x80_0020),
            (0x80_0000, 0x80_0000),
            (0xC0_0000, 0xC0_0000),
            (0x00_0000, 0x80_0000),
            (0x00_0800, 0x80_0800),
            (0xFF_FFFF, 0xC0_0820),
            (0x00_0040, 0x80_0000),
        ] {
            assert_eq!(
                v.on_native_frame(Frame::WakeupReason(native)),
                vec![ToGuest(want)],
                "native {native:#x}"
            );
        }
        assert_eq!(
            v.on_native_frame(Frame::LogicMode([0, 0, 0])),
            vec![Dropped("native frame other than a wakeup reason")]
        );
        assert_eq!(
            v.on_native_frame(Frame::Heartbeat(Heartbeat::ACTIVE)),
            vec![Dropped("native frame other than a wakeup reason")]
        );
        // Suspending: nothing forwarded.
        v.on_guest_frame([2, 0, 7, 0]);
        assert_eq!(
            v.on_native_frame(Frame::WakeupReason(0x20)),
            vec![Dropped("native frame while CBC processing is off")]
        );
    }

    #[test]
    fn rtc_conversion_for_every_unit() {
        assert_eq!(rtc_seconds(7, 0), Some(7));
        assert_eq!(rtc_seconds(7, 1), Some(420));
        assert_eq!(rtc_seconds(7, 2), Some(25_200));
        assert_eq!(rtc_seconds(7, 3), Some(604_800));
        assert_eq!(rtc_seconds(7, 4), Some(4_233_600));
        // The original overflowed a 32-bit int here (>= 3551 weeks, >= 24856 days).
        assert_eq!(rtc_seconds(u16::MAX, 4), Some(39_635_568_000));
        assert_eq!(rtc_seconds(u16::MAX, 3), Some(5_662_224_000));
        assert_eq!(rtc_seconds(3551, 4), Some(2_147_644_800));
        assert_eq!(rtc_seconds(0, 0), None);
        for unit in [5u8, 0x10, 0x12, 0xff] {
            assert_eq!(rtc_seconds(1, unit), None, "unit {unit:#x}");
        }
    }

    #[test]
    fn rtc_requests_are_accepted_until_the_guest_is_down() {
        for s in [State::Init, State::Active, State::Suspending] {
            let mut v = vioc_in(s);
            assert_eq!(
                v.on_guest_frame([5, 0x10, 0x0e, 0]),
                vec![SetWakeupTimer(3600)],
                "{s:?}"
            );
            assert_eq!(
                v.on_guest_frame([5, 0, 0, 0]),
                vec![Dropped("RTC request of value 0")]
            );
            assert_eq!(
                v.on_guest_frame([5, 1, 0, 5]),
                vec![Dropped("RTC request with a unit above weeks")]
            );
        }
        let mut v = vioc_in(State::Suspended);
        assert_eq!(
            v.on_guest_frame([5, 0x10, 0x0e, 0]),
            vec![Dropped("RTC request while suspended")]
        );
    }

    #[test]
    fn rtc_right_after_shutdown_prepared_is_forwarded() {
        let mut v = Vioc::new(0x20);
        v.on_guest_frame([2, 3, 0, 0]);
        v.suspend();
        v.on_guest_frame([2, 0, 7, 0]);
        assert_eq!(v.state(), State::Suspending);
        assert_eq!(v.on_guest_frame([5, 7, 0, 0]), vec![SetWakeupTimer(7)]);
    }

    #[test]
    fn pending_requests_go_out_at_once_and_every_period() {
        let mut v = vioc_in(State::Active);
        assert_eq!(v.on_resend_tick(), vec![StopResend], "nothing pending");
        assert_eq!(v.suspend(), vec![ToGuest(0x80_0000), StartResend]);
        assert_eq!(v.pending(), Pending::Suspend);
        assert_eq!(v.on_resend_tick(), vec![ToGuest(0x80_0000)]);
        // The pending request replaces native reasons.
        assert_eq!(
            v.on_native_frame(Frame::WakeupReason(0x20)),
            vec![ToGuest(0x80_0000)]
        );
        // Stop overrides suspend.
        assert_eq!(v.stop(), Ok(vec![ToGuest(0xC0_0000), StartResend]));
        assert_eq!(v.on_resend_tick(), vec![ToGuest(0xC0_0000)]);
        // Once the guest prepared its shutdown, nothing more is sent.
        v.on_guest_frame([2, 0, 1, 0]);
        assert_eq!(v.state(), State::Suspending);
        assert_eq!(v.on_resend_tick(), vec![StopResend]);
        assert_eq!(v.pending(), Pending::Stop, "kept until a resume");
    }

    #[test]
    fn a_request_pending_during_boot_is_what_the_guest_hears() {
        let mut v = Vioc::new(0x20);
        assert_eq!(v.stop(), Ok(vec![ToGuest(0xC0_0000), StartResend]));
        assert_eq!(
            v.on_guest_frame([2, 3, 0, 0]),
            vec![
                ToGuest(0xC0_0000),
                t(State::Init, State::Active, Event::HbActive)
            ]
        );
    }

    #[test]
    fn ops_in_suspending_and_suspended() {
        let mut v = vioc_in(State::Suspending);
        assert_eq!(v.stop(), Ok(vec![]), "recorded, not sent");
        assert_eq!(v.pending(), Pending::Stop);
        let mut v = vioc_in(State::Suspended);
        assert_eq!(v.stop(), Err(ViocError::GuestAsleep));
        assert_eq!(v.suspend(), vec![]);
        assert_eq!(v.pending(), Pending::None);
    }

    #[test]
    fn resume_clears_the_request_takes_the_reason_and_resets_the_filter() {
        let mut v = Vioc::new(0x20);
        v.on_guest_frame([2, 3, 0, 0]);
        v.suspend();
        v.on_guest_frame([2, 0, 7, 0]);
        v.guest_down();
        assert_eq!(v.state(), State::Suspended);
        assert_eq!(
            v.resume(0x200),
            vec![
                StopResend,
                t(State::Suspended, State::Init, Event::Resume),
                OpenNative
            ]
        );
        assert_eq!(v.pending(), Pending::None);
        assert_eq!(v.last_event(), None, "filter reset");
        assert_eq!(v.boot_reason(), 0x200);
        // The guest's initial heartbeat delivers reason | SoC.
        assert_eq!(
            v.on_guest_frame([2, 3, 0, 0]),
            vec![
                ToGuest(0x80_0200),
                t(State::Init, State::Active, Event::HbActive)
            ]
        );
    }

    #[test]
    fn the_filter_is_reset_on_resume() {
        // Whatever the filter held before the resume, the guest's first heartbeat event
        // after it is raised (the original kept the old value across the resume).
        for (e, hb) in [
            (Event::HbActive, [2u8, 1, 0, 0]),
            (Event::RamRefresh, [2, 0, 7, 0]),
            (Event::HbInactive, [2, 0, 1, 0]),
        ] {
            let mut v = vioc_in(State::Suspended);
            v.last_event = Some(e);
            v.resume(0x20);
            assert_eq!(v.last_event(), None, "{e:?}");
            v.on_guest_frame(hb);
            assert_eq!(v.last_event(), Some(e), "{e:?} raised again");
        }
        let mut v = vioc_in(State::Suspended);
        v.last_event = Some(Event::HbActive);
        v.resume(0x20);
        assert_eq!(
            v.on_guest_frame([2, 1, 0, 0]),
            vec![
                t(State::Init, State::Active, Event::HbActive),
                ToGuest(0x80_0020)
            ],
            "an unreset filter would leave the vioc in Init"
        );
    }

    #[test]
    fn resume_with_reason_zero_uses_the_default() {
        let mut v = vioc_in(State::Suspended);
        let a = v.resume(0);
        assert_eq!(v.state(), State::Init, "not left suspended");
        assert!(a.contains(&OpenNative));
        assert_eq!(v.boot_reason(), 0x20);
        assert_eq!(v.on_guest_frame([2, 3, 0, 0])[0], ToGuest(0x80_0020));
    }

    #[test]
    fn resume_while_running_only_clears_the_request() {
        let mut v = vioc_in(State::Active);
        v.suspend();
        assert_eq!(v.resume(0x800), vec![StopResend]);
        assert_eq!(v.state(), State::Active);
        assert_eq!(v.pending(), Pending::None);
        assert_eq!(v.boot_reason(), 0x800);
    }
}
