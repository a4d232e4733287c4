//! The simulator's core subscriber: the guest's heartbeat and delay timers, the virtual
//! IOC's resend timer, the native lifecycle channel (read by `native.rs`), the virtual UART
//! between guest and virtual IOC, and the exit path.
//!
//! Everything the guest and the virtual IOC say to each other crosses the virtual UART as
//! link-frame bytes: a [`Hop`] queue carries them until the exchange settles, so a guest
//! frame, the reason it provokes and the guest's reaction all happen in one turn of the
//! loop, in order.
//!
//! Ops providers run in the monitor's handlers: they change the guest or the virtual IOC at
//! once and queue the resulting actions in [`Dm`]'s work queue. Every callback of the core
//! drains that queue before it does anything else, so actions are carried out in the order
//! the state changes happened, even when a timer falls due in the same turn of the loop
//! as the request (the notification only arrives in the next turn).

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use acrn_dm_monitor::monitor::DeviceModel;
use acrn_dm_monitor::vioc::Action as ViocAction;
use mio::event::Event as MioEvent;
use mngr_ipc::cbc::Frame;
use mngr_ipc::event_log::hex;
use mngr_ipc::msg::suspend_mode;
use mngr_ipc::runtime::{Notifier, Ops, Subscriber};
use serde_json::json;

use crate::EXIT_DRAIN;
use crate::config::Config;
use crate::dm::{Dm, ExitCause, Work};
use crate::guest::GuestAction;
use crate::link::LinkEnd;
use crate::native::NativeLine;

/// The timers of the core subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SimTimer {
    /// Boot the guest (at once, on the loop where the state is at hand).
    Boot,
    /// The guest's heartbeat period.
    Heartbeat,
    /// The delay the guest asked for.
    Delay,
    /// Re-send the virtual IOC's pending request.
    Resend,
    /// Reopen the native channel (the line endpoint's reopen timer).
    Reopen,
    /// Give up waiting for acrnd and exit.
    Exit,
}

/// One step of an exchange between the guest and the virtual IOC.
#[derive(Debug)]
enum Hop {
    Guest(Vec<GuestAction>),
    Vioc(Vec<ViocAction>),
    /// Link bytes the guest wrote, on their way to the virtual IOC.
    ToVioc(Vec<u8>),
    /// Link bytes the virtual IOC wrote, on their way to the guest.
    ToGuest(Vec<u8>),
}

/// The subscriber driving the simulated VM.
pub(crate) struct Core {
    heartbeat: Duration,
    native: NativeLine,
    guest_end: LinkEnd,
    vioc_end: LinkEnd,
    exiting: bool,
    notifier: Option<Notifier>,
}

impl Core {
    pub(crate) fn new(cfg: &Config) -> Self {
        Core {
            heartbeat: cfg.heartbeat,
            native: NativeLine::new(cfg.native.clone()),
            guest_end: LinkEnd::new(),
            vioc_end: LinkEnd::new(),
            exiting: false,
            notifier: None,
        }
    }

    fn drain_work(&mut self, ops: &mut Ops<'_, Dm, Self>, dm: &mut Dm) {
        while let Some(w) = dm.work.pop_front() {
            if dm.crashed {
                return;
            }
            match w {
                Work::Vioc(a) => self.exchange(Hop::Vioc(a), ops, dm),
                Work::Guest(a) => self.exchange(Hop::Guest(a), ops, dm),
                Work::Exit(cause) => self.begin_exit(cause, ops, dm),
            }
        }
    }

    /// Runs an exchange between guest and virtual IOC until it settles.
    fn exchange(&mut self, first: Hop, ops: &mut Ops<'_, Dm, Self>, dm: &mut Dm) {
        let mut q = VecDeque::from([first]);
        while let Some(hop) = q.pop_front() {
            if dm.crashed {
                return;
            }
            match hop {
                Hop::Guest(actions) => {
                    for a in actions {
                        self.guest_action(a, &mut q, ops, dm);
                    }
                }
                Hop::Vioc(actions) => {
                    for a in actions {
                        self.vioc_action(a, &mut q, ops, dm);
                    }
                }
                Hop::ToVioc(bytes) => {
                    for service in self.vioc_end.receive(&bytes) {
                        q.push_back(Hop::Vioc(dm.vioc.on_guest_frame(service)));
                    }
                }
                Hop::ToGuest(bytes) => {
                    for service in self.guest_end.receive(&bytes) {
                        let frame = Frame::decode(service);
                        let name = frame.as_ref().map_or("undecodable".into(), Frame::name);
                        dm.log.emit(
                            "frame.guest_rx",
                            json!({"hex": hex(&service), "link": hex(&bytes), "frame": name}),
                        );
                        match frame {
                            Ok(f) => q.push_back(Hop::Guest(dm.guest.on_frame(f))),
                            Err(e) => log::debug!("Guest: frame {} ignored: {e}", hex(&service)),
                        }
                    }
                }
            }
        }
    }

    fn guest_action(
        &mut self,
        a: GuestAction,
        q: &mut VecDeque<Hop>,
        ops: &mut Ops<'_, Dm, Self>,
        dm: &mut Dm,
    ) {
        match a {
            GuestAction::Send(frame) => {
                let service = match frame.encode() {
                    Ok(s) => s,
                    Err(e) => {
                        log::error!("Guest: cannot encode {frame:?}: {e}");
                        return;
                    }
                };
                let link = self.guest_end.encode(service);
                log::trace!("Guest -> vioc {}", hex(&service));
                dm.log.emit(
                    "frame.guest_tx",
                    json!({"hex": hex(&service), "link": hex(&link), "frame": frame.name()}),
                );
                q.push_back(Hop::ToVioc(link));
            }
            GuestAction::State { from, to } => {
                log::info!("Guest: {} -> {}", from.name(), to.name());
                dm.log
                    .emit("guest.state", json!({"from": from.name(), "to": to.name()}));
            }
            GuestAction::Wake(r) => {
                log::info!("Guest: woke with reason {r:#08x}");
                dm.log.emit(
                    "guest.wake",
                    json!({"reason": r, "hex": format!("{r:#08x}")}),
                );
            }
            GuestAction::ArmDelay(d) => ops.arm_after(SimTimer::Delay, d),
            GuestAction::CancelDelay => {
                ops.cancel(&SimTimer::Delay);
            }
            GuestAction::Suspend => {
                dm.monitor().set_suspend_mode(suspend_mode::SUSPEND);
                q.push_back(Hop::Vioc(dm.vioc.guest_down()));
            }
            GuestAction::PowerOff => {
                if dm.crash_stop {
                    self.crash(ops, dm);
                    return;
                }
                dm.monitor().set_suspend_mode(suspend_mode::POWEROFF);
                q.push_back(Hop::Vioc(dm.vioc.guest_down()));
                self.begin_exit(ExitCause::GuestPoweredOff, ops, dm);
            }
            GuestAction::Refused(f) => {
                log::warn!("Guest: request ignored (fault {})", f.name());
                dm.log.emit("fault", json!({"point": f.name()}));
            }
        }
    }

    fn vioc_action(
        &mut self,
        a: ViocAction,
        q: &mut VecDeque<Hop>,
        ops: &mut Ops<'_, Dm, Self>,
        dm: &mut Dm,
    ) {
        match a {
            ViocAction::ToGuest(r) => match Frame::WakeupReason(r).encode() {
                Ok(service) => q.push_back(Hop::ToGuest(self.vioc_end.encode(service))),
                Err(e) => log::error!("Vioc: cannot encode reason {r:#x}: {e}"),
            },
            ViocAction::SetWakeupTimer(secs) => {
                log::info!("Vioc: guest RTC wake-up in {secs} s");
                dm.log.emit("vioc.rtc", json!({"secs": secs}));
                dm.monitor().set_wakeup_timer(secs);
            }
            ViocAction::Transition { from, to, event } => {
                log::info!("Vioc: {} -> {} on {}", from.name(), to.name(), event.name());
                dm.log.emit(
                    "vioc.state",
                    json!({"from": from.name(), "to": to.name(), "event": event.name()}),
                );
            }
            ViocAction::CloseNative => self.native.unwant("suspended", ops, &dm.log),
            ViocAction::OpenNative => {
                let frames = self.native.want(ops, &dm.log);
                self.native_frames(frames, ops, dm);
            }
            ViocAction::StartResend => {
                if !ops.is_armed(&SimTimer::Resend) {
                    let first = Instant::now() + self.heartbeat;
                    ops.arm_periodic(SimTimer::Resend, first, self.heartbeat);
                }
            }
            ViocAction::StopResend => {
                ops.cancel(&SimTimer::Resend);
            }
            ViocAction::Dropped(what) => log::debug!("Vioc: dropped: {what}"),
        }
    }

    /// Frames read from the native channel, each an exchange of its own.
    fn native_frames(&mut self, frames: Vec<Frame>, ops: &mut Ops<'_, Dm, Self>, dm: &mut Dm) {
        for frame in frames {
            let bytes = frame.encode().unwrap_or_default();
            log::trace!("Native frame {}", hex(&bytes));
            dm.log.emit("frame.native_rx", json!({"hex": hex(&bytes)}));
            let actions = dm.vioc.on_native_frame(frame);
            self.exchange(Hop::Vioc(actions), ops, dm);
        }
    }

    fn begin_exit(&mut self, cause: ExitCause, ops: &mut Ops<'_, Dm, Self>, dm: &mut Dm) {
        if self.exiting {
            return;
        }
        if cause == ExitCause::ForcedStop && dm.crash_stop {
            self.crash(ops, dm);
            return;
        }
        self.exiting = true;
        if let ExitCause::Signal(_) = cause {
            // The VM ends with the process: tell acrnd it is off.
            dm.monitor().set_suspend_mode(suspend_mode::POWEROFF);
        }
        let signal = match cause {
            ExitCause::Signal(s) => Some(s),
            _ => None,
        };
        log::info!("Exiting ({})", cause.name());
        dm.log
            .emit("dm.exit", json!({"cause": cause.name(), "signal": signal}));
        for t in [
            SimTimer::Heartbeat,
            SimTimer::Delay,
            SimTimer::Resend,
            SimTimer::Boot,
        ] {
            ops.cancel(&t);
        }
        self.native.end(ops, &dm.log);
        ops.arm_after(SimTimer::Exit, EXIT_DRAIN);
        if let Some(n) = &self.notifier {
            dm.monitor().notify_when_idle(n.clone());
        }
    }

    fn crash(&mut self, ops: &mut Ops<'_, Dm, Self>, dm: &mut Dm) {
        log::error!("Fault crash-stop: dying in the middle of a stop");
        dm.log.emit("fault", json!({"point": "crash-stop"}));
        dm.crashed = true;
        ops.shutdown();
    }
}

impl Subscriber<Dm> for Core {
    type Timer = SimTimer;
    type Done = ();

    fn init(&mut self, ops: &mut Ops<'_, Dm, Self>) -> io::Result<()> {
        self.notifier = Some(ops.notifier());
        // Boot on the loop, where the state is at hand.
        ops.arm_after(SimTimer::Boot, Duration::ZERO);
        Ok(())
    }

    fn on_event(&mut self, event: &MioEvent, ops: &mut Ops<'_, Dm, Self>, dm: &mut Dm) {
        self.drain_work(ops, dm);
        if dm.crashed {
            return;
        }
        if self.native.owns(event) {
            let frames = self.native.on_event(event, ops, &dm.log);
            self.native_frames(frames, ops, dm);
        }
    }

    fn on_timer(&mut self, key: SimTimer, ops: &mut Ops<'_, Dm, Self>, dm: &mut Dm) {
        // Actions of ops that already changed the guest or the virtual IOC come first.
        self.drain_work(ops, dm);
        if dm.crashed {
            return;
        }
        match key {
            SimTimer::Boot => {
                let first = Instant::now() + self.heartbeat;
                ops.arm_periodic(SimTimer::Heartbeat, first, self.heartbeat);
                let frames = self.native.open(ops, &dm.log);
                self.native_frames(frames, ops, dm);
                let a = dm.guest.boot();
                self.exchange(Hop::Guest(a), ops, dm);
            }
            SimTimer::Heartbeat => {
                let a = dm.guest.tick();
                self.exchange(Hop::Guest(a), ops, dm);
            }
            SimTimer::Delay => {
                let a = dm.guest.delay_elapsed();
                self.exchange(Hop::Guest(a), ops, dm);
            }
            SimTimer::Resend => {
                let a = dm.vioc.on_resend_tick();
                self.exchange(Hop::Vioc(a), ops, dm);
            }
            SimTimer::Reopen => {
                let frames = self.native.open(ops, &dm.log);
                self.native_frames(frames, ops, dm);
            }
            SimTimer::Exit => {
                log::warn!(
                    "{} message(s) to acrnd still pending after {EXIT_DRAIN:?}; exiting anyway",
                    dm.monitor().pending_to_acrnd()
                );
                ops.shutdown();
            }
        }
    }

    fn on_notify(&mut self, ops: &mut Ops<'_, Dm, Self>, dm: &mut Dm) {
        self.drain_work(ops, dm);
        if self.exiting && !dm.crashed && dm.monitor().pending_to_acrnd() == 0 {
            ops.shutdown();
        }
    }
}
