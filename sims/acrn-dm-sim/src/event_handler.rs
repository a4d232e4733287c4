//! The simulator's core subscriber: the guest's heartbeat and delay timers, the virtual
//! IOC's resend timer, the native lifecycle channel, the virtual UART between guest and
//! virtual IOC, and the exit path.
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
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::event::Event as MioEvent;
use mio::unix::SourceFd;
use mio::{Interest, Token};
use mngr_ipc::cbc::Frame;
use mngr_ipc::line::{LineCodec, LineDevice, LineMode, open_line};
use mngr_ipc::msg::suspend_mode;
use mngr_ipc::runtime::{Notifier, Ops, Subscriber, TimerId};
use serde_json::json;

use super::{Config, Dm, EXIT_DRAIN, ExitCause, Work, hex};
use crate::guest::GuestAction;
use crate::link::LinkEnd;
use crate::monitor::DeviceModel;
use crate::vioc::Action as ViocAction;

const REOPEN_FIRST: Duration = Duration::from_millis(50);
const REOPEN_MAX: Duration = Duration::from_secs(1);

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

struct Native {
    file: LineDevice,
    token: Token,
}

/// The subscriber driving the simulated VM.
pub(crate) struct Core {
    heartbeat: Duration,
    native_path: Option<PathBuf>,
    native: Option<Native>,
    native_wanted: bool,
    native_codec: LineCodec,
    native_failures: u32,
    backoff: Duration,
    reopen_timer: Option<TimerId>,
    boot_timer: Option<TimerId>,
    hb_timer: Option<TimerId>,
    delay_timer: Option<TimerId>,
    resend_timer: Option<TimerId>,
    exit_timer: Option<TimerId>,
    guest_end: LinkEnd,
    vioc_end: LinkEnd,
    exiting: bool,
    notifier: Option<Notifier>,
}

impl Core {
    pub(crate) fn new(cfg: &Config) -> Self {
        Core {
            heartbeat: cfg.heartbeat,
            native_path: cfg.native.clone(),
            native: None,
            native_wanted: true,
            native_codec: LineCodec::new(LineMode::Cdev),
            native_failures: 0,
            backoff: REOPEN_FIRST,
            reopen_timer: None,
            boot_timer: None,
            hb_timer: None,
            delay_timer: None,
            resend_timer: None,
            exit_timer: None,
            guest_end: LinkEnd::new(),
            vioc_end: LinkEnd::new(),
            exiting: false,
            notifier: None,
        }
    }

    fn drain_work(&mut self, ops: &mut Ops<'_, Dm>, dm: &mut Dm) {
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
    fn exchange(&mut self, first: Hop, ops: &mut Ops<'_, Dm>, dm: &mut Dm) {
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
                        dm.log.emit(
                            "frame.guest_rx",
                            json!({"hex": hex(&service), "link": hex(&bytes), "frame": frame_name(frame.as_ref().ok())}),
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
        ops: &mut Ops<'_, Dm>,
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
                    json!({"hex": hex(&service), "link": hex(&link), "frame": frame_name(Some(&frame))}),
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
            GuestAction::ArmDelay(d) => {
                if let Some(t) = self.delay_timer.take() {
                    ops.cancel(t);
                }
                self.delay_timer = Some(ops.arm_after(d));
            }
            GuestAction::CancelDelay => {
                if let Some(t) = self.delay_timer.take() {
                    ops.cancel(t);
                }
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
        ops: &mut Ops<'_, Dm>,
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
            ViocAction::CloseNative => {
                self.native_wanted = false;
                self.close_native("suspended", ops, dm);
                if let Some(t) = self.reopen_timer.take() {
                    ops.cancel(t);
                }
            }
            ViocAction::OpenNative => {
                self.native_wanted = true;
                self.backoff = REOPEN_FIRST;
                self.open_native(ops, dm);
            }
            ViocAction::StartResend => {
                if self.resend_timer.is_none() {
                    self.resend_timer =
                        Some(ops.arm_periodic(Instant::now() + self.heartbeat, self.heartbeat));
                }
            }
            ViocAction::StopResend => {
                if let Some(t) = self.resend_timer.take() {
                    ops.cancel(t);
                }
            }
            ViocAction::Dropped(what) => log::debug!("Vioc: dropped: {what}"),
        }
    }

    fn open_native(&mut self, ops: &mut Ops<'_, Dm>, dm: &mut Dm) {
        self.reopen_timer = None;
        let Some(path) = self.native_path.clone() else {
            return;
        };
        if self.native.is_some() || !self.native_wanted || self.exiting {
            return;
        }
        match open_line(&path, LineMode::Cdev, 0) {
            Ok(file) => {
                let fd = file.as_raw_fd();
                match ops.register(&mut SourceFd(&fd), Interest::READABLE) {
                    Ok(token) => {
                        log::info!("Native lifecycle channel {} open", path.display());
                        dm.log.emit(
                            "native.line",
                            json!({"state": "open", "path": path.display().to_string()}),
                        );
                        self.native = Some(Native { file, token });
                        self.native_codec = LineCodec::new(LineMode::Cdev);
                        self.native_failures = 0;
                        self.backoff = REOPEN_FIRST;
                        // Frames written before we watched the fd raise no edge: read now.
                        self.read_native(ops, dm);
                    }
                    Err(e) => {
                        log::error!("Cannot watch {}: {e}", path.display());
                        self.schedule_reopen(ops);
                    }
                }
            }
            Err(e) => {
                if self.native_failures == 0 {
                    log::warn!(
                        "Native lifecycle channel {} not available ({e}); retrying",
                        path.display()
                    );
                } else {
                    log::debug!("Native lifecycle channel still not available: {e}");
                }
                self.native_failures = self.native_failures.saturating_add(1);
                self.schedule_reopen(ops);
            }
        }
    }

    fn schedule_reopen(&mut self, ops: &mut Ops<'_, Dm>) {
        if self.reopen_timer.is_none() && self.native_wanted && !self.exiting {
            self.reopen_timer = Some(ops.arm_after(self.backoff));
            self.backoff = (self.backoff * 2).min(REOPEN_MAX);
        }
    }

    fn close_native(&mut self, why: &str, ops: &mut Ops<'_, Dm>, dm: &mut Dm) {
        if let Some(n) = self.native.take() {
            let fd = n.file.as_raw_fd();
            ops.deregister(&mut SourceFd(&fd), n.token);
            log::info!("Native lifecycle channel closed ({why})");
            dm.log
                .emit("native.line", json!({"state": "closed", "why": why}));
        }
    }

    fn read_native(&mut self, ops: &mut Ops<'_, Dm>, dm: &mut Dm) {
        let mut buf = [0u8; 256];
        loop {
            let Some(n) = self.native.as_mut() else {
                return;
            };
            match n.file.read(&mut buf) {
                Ok(0) => return self.native_lost("end of file", ops, dm),
                Ok(k) => self.native_codec.feed(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.native_lost(&e.to_string(), ops, dm),
            }
        }
        while let Some(frame) = self.native_codec.next_frame() {
            let bytes = frame.encode().unwrap_or_default();
            log::trace!("Native frame {}", hex(&bytes));
            dm.log.emit("frame.native_rx", json!({"hex": hex(&bytes)}));
            let actions = dm.vioc.on_native_frame(frame);
            self.exchange(Hop::Vioc(actions), ops, dm);
        }
    }

    fn native_lost(&mut self, why: &str, ops: &mut Ops<'_, Dm>, dm: &mut Dm) {
        self.close_native(why, ops, dm);
        self.schedule_reopen(ops);
    }

    fn begin_exit(&mut self, cause: ExitCause, ops: &mut Ops<'_, Dm>, dm: &mut Dm) {
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
            self.hb_timer.take(),
            self.delay_timer.take(),
            self.resend_timer.take(),
            self.reopen_timer.take(),
            self.boot_timer.take(),
        ]
        .into_iter()
        .flatten()
        {
            ops.cancel(t);
        }
        self.close_native("exiting", ops, dm);
        self.exit_timer = Some(ops.arm_after(EXIT_DRAIN));
        if let Some(n) = &self.notifier {
            dm.monitor().notify_when_idle(n.clone());
        }
    }

    fn crash(&mut self, ops: &mut Ops<'_, Dm>, dm: &mut Dm) {
        log::error!("Fault crash-stop: dying in the middle of a stop");
        dm.log.emit("fault", json!({"point": "crash-stop"}));
        dm.crashed = true;
        ops.shutdown();
    }
}

impl Subscriber<Dm> for Core {
    fn init(&mut self, ops: &mut Ops<'_, Dm>) -> io::Result<()> {
        self.notifier = Some(ops.notifier());
        // Boot on the loop, where the state is at hand.
        self.boot_timer = Some(ops.arm_after(Duration::ZERO));
        Ok(())
    }

    fn on_event(&mut self, event: &MioEvent, ops: &mut Ops<'_, Dm>, dm: &mut Dm) {
        self.drain_work(ops, dm);
        if dm.crashed {
            return;
        }
        if self.native.as_ref().map(|n| n.token) == Some(event.token()) {
            self.read_native(ops, dm);
        }
    }

    fn on_timer(&mut self, id: TimerId, ops: &mut Ops<'_, Dm>, dm: &mut Dm) {
        // Actions of ops that already changed the guest or the virtual IOC come first.
        self.drain_work(ops, dm);
        if dm.crashed {
            return;
        }
        let id = Some(id);
        if id == self.boot_timer {
            self.boot_timer = None;
            self.hb_timer = Some(ops.arm_periodic(Instant::now() + self.heartbeat, self.heartbeat));
            self.open_native(ops, dm);
            let a = dm.guest.boot();
            self.exchange(Hop::Guest(a), ops, dm);
        } else if id == self.hb_timer {
            let a = dm.guest.tick();
            self.exchange(Hop::Guest(a), ops, dm);
        } else if id == self.delay_timer {
            self.delay_timer = None;
            let a = dm.guest.delay_elapsed();
            self.exchange(Hop::Guest(a), ops, dm);
        } else if id == self.resend_timer {
            let a = dm.vioc.on_resend_tick();
            self.exchange(Hop::Vioc(a), ops, dm);
        } else if id == self.reopen_timer {
            self.open_native(ops, dm);
        } else if id == self.exit_timer {
            log::warn!(
                "{} message(s) to acrnd still pending after {EXIT_DRAIN:?}; exiting anyway",
                dm.monitor().pending_to_acrnd()
            );
            ops.shutdown();
        }
    }

    fn on_notify(&mut self, ops: &mut Ops<'_, Dm>, dm: &mut Dm) {
        self.drain_work(ops, dm);
        if self.exiting && !dm.crashed && dm.monitor().pending_to_acrnd() == 0 {
            ops.shutdown();
        }
    }
}

fn frame_name(f: Option<&Frame>) -> String {
    match f {
        Some(Frame::Heartbeat(h)) => format!("heartbeat.{}", h.name()),
        Some(Frame::Rtc(_)) => "rtc".into(),
        Some(Frame::WakeupReason(_)) => "reason".into(),
        Some(Frame::SuppressHeartbeat { .. }) => "suppress".into(),
        Some(Frame::BootSelector(_)) => "boot_selector".into(),
        Some(Frame::LogicMode(_)) => "logic_mode".into(),
        None => "undecodable".into(),
    }
}
