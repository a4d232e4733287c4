//! The simulator's one [`Subscriber`]: it owns every source of the run (the lifecycle and
//! mirror ptys, the control socket and its connections) and the [`Ioc`] model, because any
//! input (a frame, a control request, a timer) may produce output on every line.
//!
//! * `lines`: the pty lines (reading, writing, recreating) and the frames on them;
//! * `control`: the control socket and its connections, one request line at a time;
//! * `requests`: what a request does to the model, and the model's effects.
//!
//! Timers ([`Timer`]): a drift-free periodic timer sends the current reason (and discards
//! input nobody reads); one one-shot timer follows the model's next deadline (RTC,
//! watchdog); one for the next scenario step and one per line being recreated.
//!
//! `reboot-request` is the only blocking work: it runs on the loop's workers and its reply
//! comes back in `on_done`.

mod control;
mod lines;
mod requests;

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Interest, Token};
use mngr_ipc::Profile;
use mngr_ipc::cbc::Frame;
use mngr_ipc::daemon::RunError;
use mngr_ipc::event_log::{EventLog, hex};
use mngr_ipc::line::{LineCodec, LineMode};
use mngr_ipc::runtime::{Ops, Subscriber};
use serde_json::{Value, json};

use crate::command::ScenarioStep;
use crate::config::Config;
use crate::fault::FaultInjector;
use crate::mode_name;
use crate::model::Ioc;
use crate::pty::PtyLine;
use control::{Conn, ControlSocket, bind_control};

/// Index of the lifecycle line among the slots; mirrors follow.
const LIFECYCLE: usize = 0;
/// Longest control request line.
pub const MAX_REQUEST: usize = 256;
/// Most bytes buffered from one control connection.
const MAX_CONN_BUFFER: usize = 64 * 1024;
/// Most control connections at once.
pub const MAX_CONNECTIONS: usize = 32;

/// One pty line and its symlink.
#[derive(Debug)]
struct Slot {
    label: String,
    link: PathBuf,
    line: Option<PtyLine>,
    token: Option<Token>,
    writable: bool,
    /// Failed attempts to recreate the pty in a row (only the first is a warning).
    failures: u32,
}

/// Who asked, and so where the reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Requester {
    Conn(Token),
    Scenario { line: usize },
}

#[derive(Debug)]
enum Outcome {
    Reply(String),
    Later,
}

/// A worker's answer to a request (`reboot-request`).
#[derive(Debug)]
pub(crate) struct Done {
    requester: Requester,
    reply: String,
}

/// The simulator's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The reason period (periodic).
    Period,
    /// The model's next deadline (RTC, watchdog).
    Model,
    /// The next scenario step.
    Scenario,
    /// Recreate the pty of slot `n`.
    Reopen(usize),
}

type SimOps<'a> = Ops<'a, (), Simulator>;

/// The whole simulated IOC.
#[derive(Debug)]
pub(crate) struct Simulator {
    mode: LineMode,
    period: Duration,
    reopen_delay: Duration,
    socket_dir: PathBuf,
    lcs_name: String,
    profile: Profile,
    ipc_timeout: Duration,
    log: EventLog,
    ioc: Ioc,
    codec: LineCodec,
    codec_dropped: u64,
    faults: FaultInjector,
    slots: Vec<Slot>,
    control: ControlSocket,
    conns: HashMap<Token, Conn>,
    /// Connections whose deferred reply was sent: serve their next lines.
    resume: Vec<Token>,
    suspend_waiters: Vec<Requester>,
    /// The deadline [`Timer::Model`] is armed at.
    model_at: Option<Instant>,
    scenario: Vec<ScenarioStep>,
    scenario_next: usize,
    /// Scenario times count from here: the moment the simulator is up (set in `init`).
    start: Instant,
    /// The `ioc.start` event, written in `init` just before `start` is taken.
    start_event: Option<Value>,
    frames_rx: u64,
    frames_tx: u64,
}

fn interest(writable: bool) -> Interest {
    if writable {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

fn frame_fields(frame: &Frame, line: &str, raw: Option<&[u8]>) -> Value {
    let service = frame.encode().map(|b| hex(&b)).unwrap_or_default();
    let mut m = json!({"line": line, "hex": service, "frame": frame.name()});
    match frame {
        Frame::WakeupReason(r) => m["reason"] = json!(r),
        Frame::Rtc(w) => m["seconds"] = json!(w.seconds()),
        Frame::SuppressHeartbeat { ms } => m["ms"] = json!(ms),
        _ => {}
    }
    if let Some(raw) = raw {
        m["raw"] = json!(hex(raw));
    }
    m
}

/// Creates the pty of every line (the lifecycle line first, then the mirrors).
fn create_slots(cfg: &Config) -> Result<Vec<Slot>, RunError> {
    let mut slots = Vec::new();
    let links = std::iter::once(&cfg.line).chain(&cfg.mirrors);
    for (i, link) in links.enumerate() {
        let label = match i {
            LIFECYCLE => "lifecycle".to_owned(),
            n => format!("mirror{}", n - 1),
        };
        let line = PtyLine::create(link).map_err(|e| RunError::Setup {
            what: format!("the pty line {}", link.display()),
            source: io::Error::other(e),
        })?;
        log::info!(
            "{label}: {} -> {}",
            link.display(),
            line.slave_path().display()
        );
        slots.push(Slot {
            label,
            link: link.clone(),
            line: Some(line),
            token: None,
            writable: false,
            failures: 0,
        });
    }
    Ok(slots)
}

/// The `ioc.start` event: seed, mode, paths, periods, fault rates.
fn start_event(cfg: &Config, slots: &[Slot]) -> Value {
    json!({
        "seed": cfg.faults.seed,
        "mode": mode_name(cfg.mode),
        "line": cfg.line,
        "pty": slots[LIFECYCLE].line.as_ref().map(|l| l.slave_path().to_owned()),
        "mirrors": cfg.mirrors,
        "control": cfg.control,
        "initial": format!("{:?}", cfg.initial).to_lowercase(),
        "reason_period_ms": u64::try_from(cfg.reason_period.as_millis()).unwrap_or(u64::MAX),
        "watchdog_ms": cfg.watchdog.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
        "drop": cfg.faults.drop,
        "dup": cfg.faults.dup,
        "corrupt": cfg.faults.corrupt,
        "garbage": cfg.faults.garbage,
    })
}

impl Simulator {
    /// Creates the ptys, their symlinks and, last, the control socket.
    pub(crate) fn new(cfg: Config, log: EventLog) -> Result<Simulator, RunError> {
        let now = Instant::now();
        let slots = create_slots(&cfg)?;
        let control = bind_control(&cfg.control)?;
        let start_event = start_event(&cfg, &slots);
        log::info!(
            "Fault seed {} (drop {}, dup {}, corrupt {}, garbage {})",
            cfg.faults.seed,
            cfg.faults.drop,
            cfg.faults.dup,
            cfg.faults.corrupt,
            cfg.faults.garbage
        );
        Ok(Simulator {
            mode: cfg.mode,
            period: cfg.reason_period,
            reopen_delay: cfg.reopen_delay,
            socket_dir: cfg.socket_dir,
            lcs_name: cfg.lcs_name,
            profile: cfg.profile,
            ipc_timeout: cfg.ipc_timeout,
            log,
            ioc: Ioc::new(cfg.initial, cfg.watchdog, now),
            codec: LineCodec::new(cfg.mode),
            codec_dropped: 0,
            faults: FaultInjector::new(cfg.faults),
            slots,
            control,
            conns: HashMap::new(),
            resume: Vec::new(),
            suspend_waiters: Vec::new(),
            model_at: None,
            scenario: cfg.scenario,
            scenario_next: 0,
            start: now,
            start_event: Some(start_event),
            frames_rx: 0,
            frames_tx: 0,
        })
    }

    // ---- scenario ----

    fn arm_scenario(&mut self, ops: &mut SimOps<'_>) {
        match self.scenario.get(self.scenario_next) {
            Some(step) => ops.arm_at(Timer::Scenario, self.start + step.at),
            None => {
                ops.cancel(&Timer::Scenario);
            }
        }
    }

    fn run_scenario(&mut self, ops: &mut SimOps<'_>) {
        let elapsed = self.start.elapsed();
        while let Some(step) = self.scenario.get(self.scenario_next).cloned() {
            if step.at > elapsed {
                break;
            }
            self.scenario_next += 1;
            let from = Requester::Scenario { line: step.line };
            if let Outcome::Reply(text) = self.execute(step.command, from, ops) {
                self.reply(from, text, ops);
            }
        }
        self.arm_scenario(ops);
    }
}

impl Subscriber<()> for Simulator {
    type Timer = Timer;
    type Done = Done;

    fn init(&mut self, ops: &mut SimOps<'_>) -> io::Result<()> {
        if let Some(ev) = self.start_event.take() {
            self.log.emit("ioc.start", ev);
        }
        self.start = Instant::now();
        for i in 0..self.slots.len() {
            self.register_slot(i, ops)?;
        }
        self.control.token = Some(ops.register(&mut self.control.listener, Interest::READABLE)?);
        ops.arm_periodic(Timer::Period, self.start + self.period, self.period);
        self.arm_scenario(ops);
        let fx = self.ioc.start();
        self.apply(fx, ops);
        Ok(())
    }

    fn on_event(&mut self, event: &Event, ops: &mut SimOps<'_>, _ctx: &mut ()) {
        let token = event.token();
        if Some(token) == self.control.token {
            self.accept(ops);
        } else if let Some(i) = self.slots.iter().position(|s| s.token == Some(token)) {
            self.on_line_event(i, event, ops);
        } else if self.conns.contains_key(&token) {
            self.on_conn_event(token, event, ops);
        } else {
            log::debug!("Event for a closed source {token:?} ignored");
        }
        self.resume_conns(ops);
    }

    fn on_timer(&mut self, key: Timer, ops: &mut SimOps<'_>, _ctx: &mut ()) {
        match key {
            Timer::Period => {
                for slot in &mut self.slots {
                    if let Some(line) = slot.line.as_mut() {
                        let n = line.discard_stale_input();
                        if n > 0 {
                            log::debug!("{}: discarded {n} byte(s) nobody read", slot.label);
                        }
                    }
                }
                if let Some(r) = self.ioc.reporting() {
                    self.send_reason(r, ops);
                }
            }
            Timer::Model => {
                self.model_at = None;
                let fx = self.ioc.advance(Instant::now());
                self.apply(fx, ops);
            }
            Timer::Scenario => self.run_scenario(ops),
            Timer::Reopen(i) => self.reopen_slot(i, ops),
        }
        self.resume_conns(ops);
    }

    fn on_done(&mut self, done: Done, ops: &mut SimOps<'_>, _ctx: &mut ()) {
        self.reply(done.requester, done.reply, ops);
        self.resume_conns(ops);
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for w in std::mem::take(&mut self.suspend_waiters) {
            if let Requester::Conn(token) = w
                && let Some(conn) = self.conns.get_mut(&token)
            {
                // Best effort: the loop is gone, a full socket buffer loses this line.
                let _ = conn.stream.write(b"err ioc-sim is exiting\n");
            }
        }
        self.log.emit(
            "ioc.stop",
            json!({"frames_rx": self.frames_rx, "frames_tx": self.frames_tx}),
        );
        log::info!("Stopped; removing the symlinks and the control socket");
    }
}
