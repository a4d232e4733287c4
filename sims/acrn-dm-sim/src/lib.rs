//! `acrn-dm-sim`: a device-model process for hardware-free runs. It hosts the monitor of
//! `acrn-dm-monitor` ([`Monitor`]), its virtual IOC ([`Vioc`]) and a simulated [`Guest`]
//! on one event loop, so that acrnd and acrnctl can manage it exactly as they manage
//! acrn-dm. It is a crate of its own so that a device model embedding the monitor compiles
//! no simulator.
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
//! The guest ([`guest`]) heartbeats through the virtual IOC ([`acrn_dm_monitor::vioc`])
//! over an in-process virtual UART carrying real CBC link frames ([`link`]). Ops
//! providers: the monitor's own (`PMC_VM_OPs`: query, resume), `ioc_dm` (stop, suspend,
//! resume → the virtual IOC) and `sim_guest` (resume → the guest resumes from S3; a forced
//! stop → exit). DM_BLKRESCAN, DM_PAUSE and DM_CONTINUE have no provider: -95 (-22 for
//! malformed devargs).
//!
//! # Access
//!
//! Without `--allow-uid` and `--allow-group` every request is open to whoever can open the
//! socket (as acrn-dm's). With either, they make the monitor's policy: DM_QUERY stays open,
//! other requests from peers the policy does not allow are refused with -13 (`-EACCES`).
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
//! | `ipc.refused` | `msg`, `pid`, `uid` (a request the policy does not allow) |
//! | `acrnd.send` / `acrnd.result` | `msg`, `mode` or `t` / `value`, `ok`, `err`, `attempts`, `error` |
//! | `fault` | `point`: `hang-stop`, `refuse-suspend`, `crash-stop` |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
mod dm;
mod event_handler;
pub mod guest;
pub mod link;
mod native;

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use acrn_dm_monitor::monitor::{Monitor, MonitorConfig, MonitorError};
use acrn_dm_monitor::ops::OpsRegistry;
use acrn_dm_monitor::vioc::Vioc;
use mngr_ipc::daemon::{self, RunError};
use mngr_ipc::event_log::EventLog;
use mngr_ipc::runtime::{EventLoop, SignalSubscriber};
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};

pub use self::config::{Args, Config, ConfigError, Fault, WAKEUP_REASON_ENV};
pub use self::dm::Dm;
use self::dm::{ExitCause, IocDm, SimGuest, Work};
use self::event_handler::Core;
use self::guest::Guest;

/// Longest wait for queued messages to acrnd before exiting.
pub const EXIT_DRAIN: Duration = Duration::from_secs(3);

/// How a run ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a crash must end the process"]
pub enum Exit {
    /// The VM powered off, was stopped, or a signal ended it: exit 0.
    Clean,
    /// `--fault crash-stop` fired: the caller must die without any cleanup (the socket is
    /// deliberately left behind).
    Crashed,
}

/// Runs the simulated device model until it exits.
///
/// Returns [`Exit::Crashed`] for `--fault crash-stop` without releasing anything (the
/// event loop, and so the socket, is leaked on purpose): the caller must abort.
pub fn run(cfg: Config) -> Result<Exit, RunError> {
    let log = daemon::open_event_log(cfg.event_log.as_deref(), cfg.vm.as_str())?;
    let mut el = EventLoop::new().map_err(RunError::Loop)?;
    let signals = SignalSubscriber::new(&[SIGTERM, SIGINT], |sig, _ops, dm: &mut Dm| {
        log::info!("Signal {sig}: exiting");
        dm.request(Work::Exit(ExitCause::Signal(sig)));
    })
    .map_err(|source| RunError::Setup {
        what: "signal handling".into(),
        source,
    })?;
    el.add(Box::new(signals)).map_err(RunError::Loop)?;
    let monitor = bind_monitor(&cfg, &log)?;
    log_start(&cfg, &log, &monitor);
    let mut dm = Dm {
        monitor: monitor.add_to(&mut el).map_err(RunError::Loop)?,
        vioc: Vioc::new(cfg.boot_reason),
        guest: Guest::new(cfg.guest.clone()),
        log,
        work: VecDeque::new(),
        core: None,
        crash_stop: cfg.crash_stop,
        crashed: false,
    };
    let core = el.add(Box::new(Core::new(&cfg))).map_err(RunError::Loop)?;
    dm.core = Some(el.notifier(core));
    el.run(&mut dm).map_err(RunError::Loop)?;
    if dm.crashed {
        // A crash releases nothing: the monitor's socket must stay behind, stale.
        std::mem::forget(el);
        return Ok(Exit::Crashed);
    }
    Ok(Exit::Clean)
}

/// Binds the monitor socket with the virtual IOC's and the guest's providers.
fn bind_monitor(cfg: &Config, log: &EventLog) -> Result<Monitor<Dm>, RunError> {
    let mut mcfg = MonitorConfig::new(cfg.vm.clone(), &cfg.socket_dir);
    mcfg.profile = cfg.profile;
    mcfg.acrnd = cfg.acrnd.clone();
    mcfg.policy = cfg.policy.clone();
    mcfg.event_log = log.clone();
    let registry = OpsRegistry::new().with(IocDm).with(SimGuest);
    Monitor::bind(mcfg, registry).map_err(|e| match e {
        MonitorError::Serve(e) => RunError::Serve(e),
        // The configuration checked the name for this profile already.
        MonitorError::Name(e) => RunError::Setup {
            what: format!("the monitor of {}", cfg.vm),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        },
    })
}

fn log_start(cfg: &Config, log: &EventLog, monitor: &Monitor<Dm>) {
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
}
