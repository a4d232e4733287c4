//! `acrn-dm-sim`: a device-model process for hardware-free runs. It hosts a [`Monitor`],
//! a [`Vioc`] and a simulated [`Guest`] on one event loop, so that acrnd and acrnctl can
//! manage it exactly as they manage acrn-dm.
//!
//! # What acrnd can rely on
//!
//! * **Launch**: from a launch script that `exec`s it (the script's pid is the DM's pid),
//!   the VM name as the last argument; `ACRN_WAKEUP_REASON` in the environment is the boot
//!   reason unless `--boot-reason` is given. A bad command line exits 2 before anything
//!   is bound.
//! * **Socket**: `<socket-dir>/<vm>.monitor.<pid>.socket`, mode 0660, bound before the first
//!   DM_NOTIFY is sent; a stale socket of a dead predecessor of the same name is removed.
//! * **DM_NOTIFY** {name = VM name, mode} to `--acrnd` (default `acrnd`), from the DM's pid,
//!   in order: 0 once at start-up, then on every change of the suspend mode: 4 when the
//!   guest entered S3, 0 when a DM_RESUME resumed it, 3 when the guest powered off, on a
//!   forced DM_STOP and on SIGTERM/SIGINT. For DM_RESUME and a forced DM_STOP the mode
//!   changes (and DM_QUERY answers it) before the ack is written, but the DM_NOTIFY goes
//!   out from a worker and may reach acrnd after the ack. The mode in a DM_NOTIFY is what
//!   DM_QUERY answers from then on. Undeliverable ones (acrnd absent) are retried twice (100 ms,
//!   200 ms apart) and then dropped.
//! * **ACRND_TIMER** {name, t = relative seconds} when the guest arms an RTC wake-up,
//!   queued before the DM_NOTIFY of the suspend or power-off that follows it.
//! * **Exit**: after the guest powered off, a forced DM_STOP, or SIGTERM/SIGINT, the DM
//!   waits until its queued messages to acrnd are done (at most [`EXIT_DRAIN`]), unlinks
//!   its socket and exits 0. While it waits, DM_QUERY answers 3. With
//!   `--fault crash-stop` it dies by SIGABRT instead, leaving its socket behind.
//!
//! # The simulated VM
//!
//! The guest ([`crate::guest`]) heartbeats through the virtual IOC ([`crate::vioc`]) over
//! an in-process virtual UART carrying real CBC link frames ([`crate::link`]). Ops
//! providers: the monitor's own (`PMC_VM_OPs`: query, resume), `ioc_dm` (stop, suspend,
//! resume → the virtual IOC) and `sim_guest` (resume → the guest resumes from S3; a forced
//! stop → exit). DM_BLKRESCAN, DM_PAUSE and DM_CONTINUE have no provider: -95 (-22 for
//! malformed devargs).
//!
//! # Event log (`--event-log`, actor = VM name)
//!
//! | kind | fields |
//! |---|---|
//! | `dm.start` | `vm`, `pid`, `socket`, `boot_reason`, `native`, `profile`, `heartbeat_ms`, `faults` |
//! | `dm.state` | `mode`, `from`, `name` (DM suspend mode changes) |
//! | `dm.exit` | `cause`: `guest_poweroff`, `forced_stop`, `signal` (and `signal`) |
//! | `vioc.state` | `from`, `to`, `event` |
//! | `vioc.rtc` | `secs` (a guest RTC request turned into ACRND_TIMER) |
//! | `guest.state` | `from`, `to` |
//! | `guest.wake` | `reason` (number), `hex` |
//! | `frame.guest_tx` / `frame.guest_rx` | `hex` (service frame), `link` (link frame), `frame` |
//! | `frame.native_rx` | `hex` |
//! | `native.line` | `state` (`open`, `closed`), `path`, `why` |
//! | `ipc.request` / `ipc.ack` | `msg`, `pid`, `uid`, `body` / `err` or `state` |
//! | `acrnd.send` / `acrnd.result` | `msg`, `mode` or `t` / `value`, `ok`, `err`, `attempts`, `error` |
//! | `fault` | `point`: `hang-stop`, `refuse-suspend`, `crash-stop` |

pub mod config;
mod event_handler;

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use mngr_ipc::event_log::EventLog;
use mngr_ipc::msg::err;
use mngr_ipc::runtime::{EventLoop, Notifier, SignalSubscriber};
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use thiserror::Error;

pub use self::config::{Args, Config, ConfigError, Fault, WAKEUP_REASON_ENV};
use self::event_handler::Core;
use crate::guest::{Guest, GuestAction};
use crate::monitor::{DeviceModel, Monitor, MonitorConfig, MonitorError, MonitorState};
use crate::ops::{OpResult, OpsRegistry, VmOps};
use crate::vioc::{self, Vioc};

/// Longest wait for queued messages to acrnd before exiting.
pub const EXIT_DRAIN: Duration = Duration::from_secs(3);

/// Why acrn-dm-sim stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    /// The event log cannot be opened.
    #[error("Cannot open the event log")]
    EventLog(#[source] io::Error),
    /// The monitor cannot start.
    #[error("Cannot start the monitor")]
    Monitor(#[from] MonitorError),
    /// Signals cannot be caught.
    #[error("Cannot catch signals")]
    Signals(#[source] io::Error),
    /// The event loop failed.
    #[error("Event loop failed")]
    Loop(#[source] io::Error),
    /// `--fault crash-stop` fired: the caller must die without any cleanup (the socket is
    /// deliberately left behind).
    #[error("Simulated crash in the middle of a stop")]
    Crashed,
}

/// Why the DM is exiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitCause {
    GuestPoweredOff,
    ForcedStop,
    Signal(i32),
}

impl ExitCause {
    fn name(self) -> &'static str {
        match self {
            ExitCause::GuestPoweredOff => "guest_poweroff",
            ExitCause::ForcedStop => "forced_stop",
            ExitCause::Signal(_) => "signal",
        }
    }
}

/// Work for the core subscriber, queued by providers and signal handlers.
#[derive(Debug)]
pub(crate) enum Work {
    Vioc(Vec<vioc::Action>),
    Guest(Vec<GuestAction>),
    Exit(ExitCause),
}

/// The simulated device model's state, owned by the event loop.
#[derive(Debug)]
pub struct Dm {
    monitor: MonitorState,
    vioc: Vioc,
    guest: Guest,
    log: EventLog,
    work: VecDeque<Work>,
    core: Option<Notifier>,
    crash_stop: bool,
    crashed: bool,
}

impl DeviceModel for Dm {
    fn monitor(&mut self) -> &mut MonitorState {
        &mut self.monitor
    }
}

impl Dm {
    fn request(&mut self, w: Work) {
        self.work.push_back(w);
        if let Some(n) = &self.core {
            n.notify();
        }
    }
}

/// The virtual IOC's ops (the original's `ioc_dm`).
#[derive(Debug)]
struct IocDm;

impl VmOps<Dm> for IocDm {
    fn label(&self) -> &str {
        "ioc_dm"
    }

    fn stop(&mut self, dm: &mut Dm) -> OpResult {
        match dm.vioc.stop() {
            Ok(a) => {
                dm.request(Work::Vioc(a));
                OpResult::Done
            }
            Err(e) => {
                log::warn!("{}: graceful stop refused: {e}", dm.monitor.vm());
                OpResult::Failed(err::BUSY)
            }
        }
    }

    fn suspend(&mut self, dm: &mut Dm) -> OpResult {
        let a = dm.vioc.suspend();
        dm.request(Work::Vioc(a));
        OpResult::Done
    }

    fn resume(&mut self, dm: &mut Dm, reason: u32) -> OpResult {
        let a = dm.vioc.resume(reason);
        dm.request(Work::Vioc(a));
        OpResult::Done
    }
}

/// The simulated guest's ops: it resumes from S3; a forced stop ends the process.
#[derive(Debug)]
struct SimGuest;

impl VmOps<Dm> for SimGuest {
    fn label(&self) -> &str {
        "sim_guest"
    }

    fn resume(&mut self, dm: &mut Dm, _reason: u32) -> OpResult {
        let a = dm.guest.resume();
        if !a.is_empty() {
            dm.request(Work::Guest(a));
        }
        OpResult::Done
    }

    fn powered_off(&mut self, dm: &mut Dm) {
        dm.request(Work::Exit(ExitCause::ForcedStop));
    }
}

/// Runs the simulated device model until it exits.
///
/// Returns [`RunError::Crashed`] for `--fault crash-stop` without releasing anything (the
/// event loop, and so the socket, is leaked on purpose): the caller must abort.
pub fn run(cfg: Config) -> Result<(), RunError> {
    let log = EventLog::open_optional(cfg.event_log.as_deref(), cfg.vm.as_str())
        .map_err(RunError::EventLog)?;
    let mut mcfg = MonitorConfig::new(cfg.vm.as_str(), &cfg.socket_dir);
    mcfg.profile = cfg.profile;
    mcfg.acrnd = cfg.acrnd.clone();
    mcfg.event_log = log.clone();
    let registry = OpsRegistry::new().with(IocDm).with(SimGuest);
    let mut el = EventLoop::new().map_err(RunError::Loop)?;
    el.add(Box::new(
        SignalSubscriber::new(&[SIGTERM, SIGINT], |sig, _ops, dm: &mut Dm| {
            log::info!("Signal {sig}: exiting");
            dm.request(Work::Exit(ExitCause::Signal(sig)));
        })
        .map_err(RunError::Signals)?,
    ))
    .map_err(RunError::Loop)?;
    let (monitor, state) = Monitor::bind(mcfg, registry)?;
    let faults: Vec<&str> = cfg
        .guest
        .faults
        .iter()
        .map(|f| f.name())
        .chain(cfg.crash_stop.then_some("crash-stop"))
        .collect();
    log.emit(
        "dm.start",
        json!({
            "vm": cfg.vm.as_str(),
            "pid": std::process::id(),
            "socket": monitor.socket_path().display().to_string(),
            "boot_reason": cfg.boot_reason,
            "native": cfg.native.as_ref().map(|p| p.display().to_string()),
            "profile": cfg.profile.label(),
            "heartbeat_ms": u64::try_from(cfg.heartbeat.as_millis()).unwrap_or(u64::MAX),
            "faults": faults,
        }),
    );
    log::info!(
        "{}: serving {} (boot reason {:#x})",
        cfg.vm,
        monitor.socket_path().display(),
        cfg.boot_reason
    );
    let mut dm = Dm {
        monitor: state,
        vioc: Vioc::new(cfg.boot_reason),
        guest: Guest::new(cfg.guest.clone()),
        log,
        work: VecDeque::new(),
        core: None,
        crash_stop: cfg.crash_stop,
        crashed: false,
    };
    el.add(Box::new(monitor)).map_err(RunError::Loop)?;
    let core = el.add(Box::new(Core::new(&cfg))).map_err(RunError::Loop)?;
    dm.core = Some(el.notifier(core));
    el.run(&mut dm).map_err(RunError::Loop)?;
    if dm.crashed {
        // A crash releases nothing: the monitor's socket must stay behind, stale.
        std::mem::forget(el);
        return Err(RunError::Crashed);
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
