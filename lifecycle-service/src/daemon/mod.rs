//! sos-lcs wiring: one event loop, one owner of the state.
//!
//! * [`Lcs`] (the loop's state) holds the [`Machine`], the armed RTC wake-up, the
//!   WAKEUP_REASON requests waiting for a first reason, and a queue of work for the core.
//! * The IPC servers (`sos-lcs`, `service-vm-lcs`, and the stand-in `acrnd` in no-acrnd
//!   mode) run their handlers (`requests`) on the loop; the server admits each request by
//!   its access class (policy, refusal and request log are the server's). A handler feeds
//!   the machine, answers at once, and leaves the I/O its decision needs (frames, timers,
//!   requests to acrnd) to the core, which it wakes through a [`Notifier`].
//! * The `Core` subscriber owns the IOC line (a [`LineEndpoint`], `ioc_line`), its timers
//!   (one key each: `Timer`) and the jobs it hands to the loop's workers (one result type:
//!   `Done`): requests to acrnd with bounded retries (`acrnd_link`), the power commands
//!   (`actions`), and the exit path (`exit`).
//!
//! Nothing blocks the loop: requests to acrnd, power commands and the host-intent query run
//! on the runtime's worker pool and come back to the core in `on_done`.

mod acrnd_link;
mod actions;
mod exit;
mod ioc_line;
mod requests;

use std::collections::VecDeque;
use std::io;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use mio::event::Event as MioEvent;
use mngr_ipc::client::{Client, ClientError};
use mngr_ipc::daemon::{RunError, open_event_log};
use mngr_ipc::event_log::EventLog;
use mngr_ipc::host::HostIntent;
use mngr_ipc::line::{Backoff, LineEndpoint};
use mngr_ipc::msg::{Ack, StopTarget};
use mngr_ipc::runtime::{EventLoop, Notifier, Ops, SignalSubscriber, Subscriber};
use mngr_ipc::server::{DeferredAck, Handlers, IpcServer, ServerConfig};
use mngr_ipc::vocabulary::{ACRND, LCS_NAMES, SOS_LCS};
use serde_json::json;

use crate::config::Config;
use crate::state::{Action, Event, Machine, PowerAction};
use acrnd_link::OutKind;

/// Suppress the IOC's heartbeat check for 5 minutes (reboot / power-off under way).
pub const SUPPRESS_SHUTDOWN_MS: u32 = 300_000;
/// Suppress it for 30 minutes (plain service stop).
pub const SUPPRESS_STOP_MS: u32 = 1_800_000;

/// Most bytes of frames waiting for the IOC line.
const MAX_QUEUED_BYTES: usize = 4096;

/// Work a handler leaves for the core.
#[derive(Debug)]
enum Work {
    Act(Action),
    ReasonWait,
    Terminate,
}

/// The daemon's state, owned by the event loop.
pub struct Lcs {
    cfg: Config,
    machine: Machine,
    log: EventLog,
    rtc_at: Option<i64>,
    reason_waiters: Vec<(DeferredAck, Instant)>,
    work: VecDeque<Work>,
    core: Option<Notifier>,
}

impl std::fmt::Debug for Lcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lcs")
            .field("state", &self.machine.state())
            .field("rtc_at", &self.rtc_at)
            .finish_non_exhaustive()
    }
}

impl Lcs {
    fn wake_core(&self) {
        if let Some(n) = &self.core {
            n.notify();
        }
    }

    /// Feeds the machine; queues its actions for the core. Returns whether it applied.
    fn dispatch(&mut self, ev: Event) -> bool {
        let before = self.machine.state();
        let o = self.machine.handle(ev);
        if let Some((from, to)) = o.transition {
            match o.forced {
                Some(what) => log::warn!(
                    "State {} -> {} forced: no {what} within {:?}",
                    from.name(),
                    to.name(),
                    self.cfg.wait_bound
                ),
                None => log::info!("State {} -> {} on {ev:?}", from.name(), to.name()),
            }
            self.log.emit(
                "state",
                json!({"from": from.name(), "to": to.name(), "event": format!("{ev:?}"), "forced": o.forced}),
            );
        } else if !o.applied {
            log::debug!("{ev:?} ignored in state {}", before.name());
        }
        let any = !o.actions.is_empty();
        self.work.extend(o.actions.into_iter().map(Work::Act));
        if any {
            self.wake_core();
        }
        if matches!(ev, Event::PowerDone { .. })
            && let Some(r) = self.machine.take_woke()
        {
            log::info!(
                "The IOC sent reason {r:#08x} before the power command returned; acting on it"
            );
            self.dispatch(Event::Reason(r));
        }
        o.applied
    }
}

/// The core's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Open the IOC line (at start, then with back-off while it is missing).
    Reopen,
    /// The heartbeat period (periodic, armed at the first opening attempt).
    Heartbeat,
    /// The bound of the waiting states.
    Deadline,
    /// The earliest deferred WAKEUP_REASON is due.
    ReasonWait,
    /// The next attempt to deliver the request to acrnd.
    Retry,
    /// After acrnd took ACRND_STOP: ask again if no verdict came (an acrnd restarted
    /// meanwhile knows nothing of the stop).
    Restop,
}

/// What the core's worker jobs return.
enum Done {
    /// A request to acrnd, of request generation `generation`.
    Acrnd {
        generation: u64,
        result: Box<Result<Ack, ClientError>>,
    },
    /// A power command.
    Power {
        action: PowerAction,
        status: io::Result<ExitStatus>,
    },
    /// The host's intent at SIGTERM.
    Intent(HostIntent),
}

/// The state of the requests to acrnd.
struct AcrndLink {
    client: Client,
    /// Bumped by every new request: results of older ones are ignored.
    generation: u64,
    /// The request being delivered, and the attempts made.
    outgoing: Option<(OutKind, u32)>,
    /// The ACRND_STOP acrnd took, by generation, to ask again on [`Timer::Restop`].
    restop: Option<(u64, StopTarget)>,
}

/// The subscriber owning the IOC line, the timers and the workers.
struct Core {
    line: LineEndpoint<Timer>,
    acrnd: AcrndLink,
    started: Instant,
    first_frame_logged: bool,
    terminating: bool,
}

type CoreOps<'a> = Ops<'a, Lcs, Core>;

impl Core {
    fn new(cfg: &Config) -> Self {
        // Capped at one period: heartbeats resume within a period of the line's return.
        let backoff = Backoff::new(Backoff::FIRST, cfg.reopen_max.min(cfg.heartbeat));
        Core {
            line: LineEndpoint::new(cfg.line.clone(), Timer::Reopen, backoff, MAX_QUEUED_BYTES),
            acrnd: AcrndLink {
                client: Client::new(&cfg.socket_dir, cfg.profile),
                generation: 0,
                outgoing: None,
                restop: None,
            },
            started: Instant::now(),
            first_frame_logged: false,
            terminating: false,
        }
    }
}

impl Subscriber<Lcs> for Core {
    type Timer = Timer;
    type Done = Done;

    fn init(&mut self, ops: &mut CoreOps<'_>) -> io::Result<()> {
        // The line is opened on the first timer, when the state is reachable.
        ops.arm_after(Timer::Reopen, Duration::ZERO);
        Ok(())
    }

    fn on_event(&mut self, event: &MioEvent, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        let result = self.line.on_event(event, ops);
        self.take_frames(s);
        if let Err(lost) = result {
            self.line_lost(&lost, s);
        }
        self.drain_work(ops, s);
    }

    fn on_timer(&mut self, key: Timer, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        match key {
            Timer::Reopen => {
                if !ops.is_armed(&Timer::Heartbeat) {
                    let period = s.cfg.heartbeat;
                    ops.arm_periodic(Timer::Heartbeat, Instant::now() + period, period);
                }
                self.open_line(ops, s);
            }
            Timer::Heartbeat => {
                let tick = s.machine.tick();
                self.perform(tick, ops, s);
                if s.cfg.watchdog.is_some() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            Timer::Deadline => {
                s.dispatch(Event::Deadline);
            }
            Timer::ReasonWait => self.expire_reason_waiters(ops, s),
            Timer::Retry => self.attempt(ops, s),
            Timer::Restop => self.restop_due(ops, s),
        }
        self.drain_work(ops, s);
    }

    fn on_done(&mut self, done: Done, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        match done {
            Done::Acrnd { generation, result } => {
                self.on_acrnd_result(generation, *result, ops, s);
            }
            Done::Power { action, status } => self.on_power_done(action, status, s),
            Done::Intent(intent) => self.finish(intent, ops, s),
        }
        self.drain_work(ops, s);
    }

    fn on_notify(&mut self, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        self.drain_work(ops, s);
    }
}

/// Binds the servers: the lifecycle service's names, and the stand-in acrnd if asked.
fn serve(el: &mut EventLoop<Lcs>, state: &Lcs) -> Result<(), RunError> {
    let mut names: Vec<(&str, Handlers<Lcs>)> = LCS_NAMES
        .iter()
        .map(|n| (*n, requests::lcs_handlers()))
        .collect();
    if state.cfg.no_acrnd {
        names.push((ACRND, requests::standin_handlers()));
    }
    for (name, handlers) in names {
        let mut sc = ServerConfig::new(name, &state.cfg.socket_dir);
        sc.profile = state.cfg.profile;
        sc.policy = state.cfg.policy.clone();
        sc.log = state.log.clone();
        let server = IpcServer::bind(sc, handlers)?;
        el.add(Box::new(server)).map_err(RunError::Loop)?;
    }
    Ok(())
}

/// Runs sos-lcs until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), RunError> {
    let log = open_event_log(cfg.event_log.as_deref(), SOS_LCS)?;
    log.emit(
        "start",
        json!({"pid": std::process::id(), "line": cfg.line.path.display().to_string(), "mode": format!("{:?}", cfg.line.mode)}),
    );
    let mut el: EventLoop<Lcs> = EventLoop::new().map_err(RunError::Loop)?;
    let core_id = el.add(Box::new(Core::new(&cfg))).map_err(RunError::Loop)?;
    let mut state = Lcs {
        machine: Machine::new(),
        log,
        rtc_at: None,
        reason_waiters: Vec::new(),
        work: VecDeque::new(),
        core: Some(el.notifier(core_id)),
        cfg,
    };
    // The IOC hears its first heartbeat before anything else is set up: open the line now.
    el.turn(&mut state, Some(Duration::ZERO))
        .map_err(RunError::Loop)?;
    serve(&mut el, &state)?;
    let signals = SignalSubscriber::new(
        &[signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT],
        |sig, _ops, s: &mut Lcs| {
            log::info!("Signal {sig} received");
            s.work.push_back(Work::Terminate);
            s.wake_core();
        },
    )
    .map_err(RunError::Loop)?;
    el.add(Box::new(signals)).map_err(RunError::Loop)?;
    // Boot must not wait for an IOC: ready once the sockets are bound.
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving; opening the IOC line"),
    ]);
    let result = el.run(&mut state).map_err(RunError::Loop);
    state.log.emit("stopped", json!({}));
    result
}
