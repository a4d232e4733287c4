//! acrnd wiring: one event loop, one owner of the state.
//!
//! * [`Acrnd`] (the loop's state) holds the pure [`Orchestrator`] and what the effects need
//!   beside it: the launch specs, the deferred acks by [`ReplyId`], the commands and events
//!   waiting for the core.
//! * `requests`: the `acrnd` server's handlers, registered with their access class; each
//!   turns its typed body into an orchestrator request or answers a query from the state.
//! * `effects`: the `Core` subscriber carries out the orchestrator's commands: requests to
//!   the device models and the lifecycle service on the loop's workers, launches, pidfd
//!   watches of every device model, kills, timers, sd_notify, event-log lines.
//! * `persist`: the timer store: loading (and importing upstream's list once) at start,
//!   and writes on a worker, one at a time, coalesced; ACRND_TIMER is acked only once its
//!   timer is on disk.

mod effects;
mod persist;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use mngr_ipc::daemon::{RunError, open_event_log};
use mngr_ipc::event_log::EventLog;
use mngr_ipc::msg::epoch_now;
use mngr_ipc::runtime::{EventLoop, Notifier, SignalSubscriber};
use mngr_ipc::server::{DeferredAck, IpcServer, ServerConfig};
use mngr_ipc::vocabulary::ACRND;
use serde_json::json;

use crate::config::Config;
use crate::orchestrator::{Command, Event, Now, Orchestrator, ReplyId, Rules, Vm};
use crate::timers::TimerStore;
use crate::vms::{self, LaunchSpec};

/// Requests acrnd runs at once on its workers: a stop-all of 64 VMs sends every DM its
/// request together, and a hung device model (up to `--dm-timeout-ms`) must not hold up the
/// lifecycle service's requests or a timer-store write. Threads start only when needed.
const WORKERS: usize = 96;

/// The time now, for the orchestrator.
fn now() -> Now {
    Now {
        mono: Instant::now(),
        epoch: epoch_now(),
    }
}

/// The daemon's state, owned by the event loop.
pub struct Acrnd {
    cfg: Config,
    log: EventLog,
    orch: Orchestrator,
    specs: BTreeMap<String, LaunchSpec>,
    replies: HashMap<ReplyId, DeferredAck>,
    next_reply: u64,
    /// Commands and events for the core, which the `core` notifier wakes.
    outbox: Vec<Command>,
    inbox: Vec<Event>,
    core: Option<Notifier>,
}

impl std::fmt::Debug for Acrnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acrnd")
            .field("vms", &self.orch.vms().len())
            .field("timers", &self.orch.timers().len())
            .finish_non_exhaustive()
    }
}

impl Acrnd {
    /// Hands commands to the core (it runs them in this turn, before anything decided
    /// later). Event-log lines are written at once, before the request's ack: a peer that
    /// reads the log after the ack finds them.
    fn queue(&mut self, commands: Vec<Command>) {
        let mut wake = false;
        for c in commands {
            match c {
                Command::Log(kind, fields) => self.log.emit(kind, fields),
                other => {
                    self.outbox.push(other);
                    wake = true;
                }
            }
        }
        if wake {
            self.wake_core();
        }
    }

    /// Hands an event to the core, which gives it to the orchestrator.
    fn post(&mut self, event: Event) {
        self.inbox.push(event);
        self.wake_core();
    }

    fn wake_core(&self) {
        if let Some(n) = &self.core {
            n.notify();
        }
    }
}

fn rules(cfg: &Config) -> Rules {
    Rules {
        autostart: cfg.autostart,
        start_parallel: cfg.start_parallel,
        start_delay: cfg.start_delay,
        poll: cfg.poll,
        force_on_deadline: cfg.force_on_deadline,
        kill_grace: cfg.kill_grace,
        shutdown_budget: cfg.shutdown_budget,
    }
}

/// The registered VMs and the device models already running (re-attached, as starting
/// until they answer a query).
fn discover(cfg: &Config) -> (BTreeMap<String, Vm>, BTreeMap<String, LaunchSpec>) {
    let specs = match vms::scan_launch_dir(&cfg.launch_dir, cfg.profile) {
        Ok(found) => found,
        Err(e) => {
            log::error!("Cannot read {}: {e}", cfg.launch_dir.display());
            BTreeMap::new()
        }
    };
    let mut table: BTreeMap<String, Vm> =
        specs.keys().map(|n| (n.clone(), Vm::new(true))).collect();
    for (name, pid) in vms::live_monitors(&cfg.socket_dir) {
        let launchable = specs.contains_key(&name);
        table.insert(name, Vm::running(launchable, pid));
    }
    (table, specs)
}

/// Runs acrnd until SIGTERM or SIGINT (and, if the host goes down, until every VM is).
pub fn run(cfg: Config) -> Result<(), RunError> {
    let log = open_event_log(cfg.event_log.as_deref(), ACRND)?;
    std::fs::create_dir_all(&cfg.state_dir).map_err(RunError::StateDir)?;
    let store = TimerStore::new(cfg.state_dir.join("timer_list")).with_fault(cfg.fault);
    let timers = persist::load(&cfg, &store, &log);
    log.emit(
        "start",
        json!({"pid": std::process::id(), "timers": timers.len()}),
    );
    let mut el: EventLoop<Acrnd> = EventLoop::with_workers(WORKERS).map_err(RunError::Loop)?;
    let core_id = el
        .add(Box::new(effects::Core::new(&cfg, store, log.clone())))
        .map_err(RunError::Loop)?;
    // The VM table is known before the socket accepts anything: a request in the first
    // instants (a DM's ACRND_TIMER, an acrnctl list) sees every VM.
    let (table, specs) = discover(&cfg);
    let mut sc = ServerConfig::new(ACRND, &cfg.socket_dir);
    sc.profile = cfg.profile;
    sc.policy = cfg.policy.clone();
    sc.log = log.clone();
    el.add(Box::new(IpcServer::bind(sc, requests::handlers())?))
        .map_err(RunError::Loop)?;
    // SIGXFSZ is caught too: a timer-store write past RLIMIT_FSIZE must fail with EFBIG
    // (and reach the ack) instead of killing acrnd. A caught signal is reset to its
    // default in the device models acrnd launches, unlike an ignored one.
    let signals = SignalSubscriber::new(
        &[
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGXFSZ,
        ],
        |sig, _ops, s: &mut Acrnd| {
            if sig == signal_hook::consts::SIGXFSZ {
                log::warn!("SIGXFSZ: a write went past the file size limit (it fails)");
                return;
            }
            log::info!("Signal {sig} received");
            s.post(Event::Terminate);
        },
    )
    .map_err(RunError::Loop)?;
    el.add(Box::new(signals)).map_err(RunError::Loop)?;
    let mut state = Acrnd {
        orch: Orchestrator::new(rules(&cfg), table, timers),
        cfg,
        log,
        specs,
        replies: HashMap::new(),
        next_reply: 0,
        outbox: Vec::new(),
        inbox: Vec::new(),
        core: Some(el.notifier(core_id)),
    };
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let result = el.run(&mut state).map_err(RunError::Loop);
    state.log.emit("stopped", json!({}));
    result
}
