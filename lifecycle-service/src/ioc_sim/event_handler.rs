//! The simulator's one [`Subscriber`]: it owns every source of the run (the lifecycle and
//! mirror ptys, the control socket and its connections) and the [`Ioc`] model, because any
//! input (a frame, a control request, a timer) may produce output on every line.
//!
//! Timers: a drift-free periodic timer sends the current reason (and discards input nobody
//! reads); one one-shot timer follows the model's next deadline (RTC, watchdog); one
//! one-shot timer per pending scenario step and per line being reopened.
//!
//! `reboot-request` is the only blocking work: it runs on a worker thread that reports
//! back through a channel and a [`Notifier`].

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use mngr_ipc::Profile;
use mngr_ipc::cbc::Frame;
use mngr_ipc::client::Client;
use mngr_ipc::event_log::EventLog;
use mngr_ipc::line::{LineCodec, LineMode};
use mngr_ipc::msg::{Body, Request};
use mngr_ipc::runtime::{Notifier, Ops, Subscriber, TimerId};
use serde_json::{Value, json};

use super::command::{Command, ScenarioStep};
use super::config::Config;
use super::ctl;
use super::fault::FaultInjector;
use super::model::{Effect, Ioc};
use super::pty::PtyLine;
use super::{RunError, error_chain, frame_name, hex, mode_name};

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
    reopen: Option<TimerId>,
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

#[derive(Debug)]
struct WorkerDone {
    requester: Requester,
    reply: String,
}

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    writable: bool,
    /// A request is being served; later lines wait.
    awaiting: bool,
    /// The peer will send nothing more.
    eof: bool,
    /// Close once the output is written.
    closing: bool,
    /// Unusable: close now.
    broken: bool,
}

/// The control socket; its file is removed on drop.
#[derive(Debug)]
struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    token: Option<Token>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket())
            && let Err(e) = fs::remove_file(&self.path)
        {
            log::warn!("Cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Binds the control socket, replacing a stale socket file (nobody accepts on it).
fn bind_control(path: &Path) -> Result<ControlSocket, RunError> {
    let err = |source| RunError::Control {
        path: path.to_owned(),
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if ctl::connect_within(path, Duration::from_secs(1)).is_ok() {
                return Err(err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another simulator accepts on it",
                )));
            }
            log::info!("Removing the stale control socket {}", path.display());
            fs::remove_file(path).map_err(err)?;
        }
        Ok(_) => {
            return Err(err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    let socket = ControlSocket {
        listener,
        path: path.to_owned(),
        token: None,
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(socket)
}

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
    worker_tx: Sender<WorkerDone>,
    worker_rx: Receiver<WorkerDone>,
    notifier: Option<Notifier>,
    model_timer: Option<(TimerId, Instant)>,
    period_timer: Option<TimerId>,
    scenario: Vec<ScenarioStep>,
    scenario_next: usize,
    scenario_timer: Option<TimerId>,
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
    let mut m = json!({"line": line, "hex": service, "frame": frame_name(frame)});
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

impl Simulator {
    /// Creates the ptys, their symlinks and, last, the control socket.
    pub(crate) fn new(cfg: Config, log: EventLog) -> Result<Simulator, RunError> {
        let now = Instant::now();
        let mut slots = Vec::new();
        let links = std::iter::once(&cfg.line).chain(&cfg.mirrors);
        for (i, link) in links.enumerate() {
            let label = match i {
                LIFECYCLE => "lifecycle".to_owned(),
                n => format!("mirror{}", n - 1),
            };
            let line = PtyLine::create(link).map_err(|source| RunError::Pty {
                path: link.clone(),
                source,
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
                reopen: None,
                failures: 0,
            });
        }
        let control = bind_control(&cfg.control)?;
        let (worker_tx, worker_rx) = mpsc::channel();
        let start_event = json!({
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
        });
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
            worker_tx,
            worker_rx,
            notifier: None,
            model_timer: None,
            period_timer: None,
            scenario: cfg.scenario,
            scenario_next: 0,
            scenario_timer: None,
            start: now,
            start_event: Some(start_event),
            frames_rx: 0,
            frames_tx: 0,
        })
    }

    // ---- lines ----

    fn register_slot(&mut self, i: usize, ops: &mut Ops<'_, ()>) -> io::Result<()> {
        let slot = &mut self.slots[i];
        if let Some(line) = &slot.line {
            let fd = line.master_fd();
            slot.token = Some(ops.register(&mut SourceFd(&fd), Interest::READABLE)?);
            slot.writable = false;
        }
        Ok(())
    }

    fn close_slot(&mut self, i: usize, ops: &mut Ops<'_, ()>) {
        let slot = &mut self.slots[i];
        if let Some(line) = slot.line.take() {
            if let Some(token) = slot.token.take() {
                let fd = line.master_fd();
                ops.deregister(&mut SourceFd(&fd), token);
            }
            // Dropping the line closes both pty ends and removes the symlink.
            drop(line);
        }
        slot.writable = false;
    }

    /// Closes a line that failed and recreates it after the reopen delay.
    fn fail_slot(&mut self, i: usize, why: &str, ops: &mut Ops<'_, ()>) {
        log::warn!("{}: {why}; recreating the pty", self.slots[i].label);
        self.log.emit(
            "ioc.line",
            json!({"line": self.slots[i].label, "action": "failed", "error": why}),
        );
        self.close_slot(i, ops);
        if self.slots[i].reopen.is_none() {
            self.slots[i].reopen = Some(ops.arm_after(self.reopen_delay));
        }
    }

    fn reopen_slot(&mut self, i: usize, ops: &mut Ops<'_, ()>) {
        self.slots[i].reopen = None;
        match PtyLine::create(&self.slots[i].link) {
            Ok(line) => {
                let pty = line.slave_path().to_owned();
                self.slots[i].line = Some(line);
                self.slots[i].failures = 0;
                if let Err(e) = self.register_slot(i, ops) {
                    self.fail_slot(i, &format!("cannot register: {e}"), ops);
                    return;
                }
                if i == LIFECYCLE {
                    self.codec = LineCodec::new(self.mode);
                    self.codec_dropped = 0;
                }
                log::info!(
                    "{}: reopened {} -> {}",
                    self.slots[i].label,
                    self.slots[i].link.display(),
                    pty.display()
                );
                self.log.emit(
                    "ioc.line",
                    json!({"line": self.slots[i].label, "action": "opened", "pty": pty}),
                );
            }
            Err(e) => {
                let slot = &mut self.slots[i];
                let level = if slot.failures == 0 {
                    log::Level::Warn
                } else {
                    log::Level::Debug
                };
                log::log!(
                    level,
                    "{}: cannot recreate the pty (attempt {}): {}; retrying every {:?}",
                    slot.label,
                    slot.failures + 1,
                    error_chain(&e),
                    self.reopen_delay
                );
                slot.failures = slot.failures.saturating_add(1);
                slot.reopen = Some(ops.arm_after(self.reopen_delay));
            }
        }
    }

    fn flush_slot(&mut self, i: usize, ops: &mut Ops<'_, ()>) {
        let slot = &mut self.slots[i];
        let Some(line) = slot.line.as_mut() else {
            return;
        };
        match line.flush() {
            Ok(done) => {
                let want = !done;
                if want != slot.writable
                    && let Some(token) = slot.token
                {
                    let fd = line.master_fd();
                    match ops.reregister(&mut SourceFd(&fd), token, interest(want)) {
                        Ok(()) => slot.writable = want,
                        Err(e) => log::warn!("{}: cannot reregister: {e}", slot.label),
                    }
                }
            }
            Err(e) => self.fail_slot(i, &format!("write failed: {e}"), ops),
        }
    }

    fn on_line_event(&mut self, i: usize, event: &Event, ops: &mut Ops<'_, ()>) {
        if event.is_writable() {
            self.flush_slot(i, ops);
        }
        let Some(line) = self.slots[i].line.as_mut() else {
            return;
        };
        let mut buf = Vec::new();
        let res = line.drain_input(&mut buf);
        if !buf.is_empty() {
            if i == LIFECYCLE {
                self.on_lifecycle_bytes(&buf, ops);
            } else {
                log::debug!(
                    "{}: discarding {} byte(s) from the far end: {}",
                    self.slots[i].label,
                    buf.len(),
                    hex(&buf[..buf.len().min(64)])
                );
            }
        }
        match res {
            Ok(true) => {}
            Ok(false) => self.fail_slot(i, "end of file on the pty master", ops),
            Err(e) => self.fail_slot(i, &format!("read failed: {e}"), ops),
        }
    }

    fn on_lifecycle_bytes(&mut self, bytes: &[u8], ops: &mut Ops<'_, ()>) {
        log::trace!("lifecycle: {} byte(s) in: {}", bytes.len(), hex(bytes));
        self.codec.feed(bytes);
        while let Some(frame) = self.codec.next_frame() {
            self.frames_rx += 1;
            log::trace!("lifecycle: rx {frame:?}");
            // The bytes exactly as the SoC sent them (decoding ignores some bits).
            let mut fields = frame_fields(&frame, "lifecycle", None);
            fields["hex"] = json!(hex(&self.codec.last_service_bytes()));
            if !self.codec.last_link_bytes().is_empty() {
                fields["raw"] = json!(hex(self.codec.last_link_bytes()));
            }
            self.log.emit("frame.rx", fields);
            let fx = self.ioc.on_frame(&frame, Instant::now());
            self.apply(fx, ops);
        }
        let dropped = self.codec.dropped() + self.codec.skipped();
        if dropped != self.codec_dropped {
            log::debug!(
                "lifecycle: skipped {} garbage byte(s)/frame(s) from the SoC",
                dropped - self.codec_dropped
            );
            self.codec_dropped = dropped;
        }
    }

    /// Sends a reason frame on every line: faults apply to the lifecycle line only.
    fn send_reason(&mut self, reason: u32, ops: &mut Ops<'_, ()>) {
        let frame = Frame::WakeupReason(reason);
        let service = match frame.encode() {
            Ok(b) => b,
            Err(e) => {
                log::error!("Cannot encode reason {reason:#x}: {e}");
                return;
            }
        };
        for i in LIFECYCLE + 1..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(line) = slot.line.as_mut() else {
                continue;
            };
            line.queue(&service);
            self.log
                .emit("frame.tx", frame_fields(&frame, &slot.label, None));
            self.flush_slot(i, ops);
        }
        let Some(line) = self.slots[LIFECYCLE].line.as_mut() else {
            log::debug!("lifecycle: line closed, reason {reason:#x} not sent");
            return;
        };
        let bytes = match self.codec.encode(&frame) {
            Ok(b) => b,
            Err(e) => {
                log::error!("Cannot encode reason {reason:#x}: {e}");
                return;
            }
        };
        log::trace!("lifecycle: tx reason {reason:#x}: {}", hex(&bytes));
        let inj = self.faults.inject(self.mode, &bytes);
        let counts = self.faults.counts();
        if let Some(g) = &inj.garbage {
            line.queue(g);
            self.log.emit(
                "fault",
                json!({"point": "garbage", "line": "lifecycle", "raw": hex(g), "count": counts.garbage}),
            );
        }
        if inj.dropped {
            self.log.emit(
                "fault",
                json!({"point": "drop", "line": "lifecycle", "hex": hex(&service), "count": counts.drop}),
            );
        } else {
            if let Some(bit) = inj.corrupted_bit {
                self.log.emit(
                    "fault",
                    json!({"point": "corrupt", "line": "lifecycle", "hex": hex(&service),
                           "raw": hex(&inj.bytes), "bit": bit, "count": counts.corrupt}),
                );
            }
            let raw_differs = self.mode == LineMode::Uart || inj.corrupted_bit.is_some();
            let copies = if inj.duplicated { 2 } else { 1 };
            for _ in 0..copies {
                line.queue(&inj.bytes);
                self.frames_tx += 1;
                self.log.emit(
                    "frame.tx",
                    frame_fields(&frame, "lifecycle", raw_differs.then_some(&inj.bytes[..])),
                );
            }
            if inj.duplicated {
                self.log.emit(
                    "fault",
                    json!({"point": "dup", "line": "lifecycle", "hex": hex(&service), "count": counts.dup}),
                );
            }
        }
        self.flush_slot(LIFECYCLE, ops);
    }

    // ---- model ----

    fn apply(&mut self, fx: Vec<Effect>, ops: &mut Ops<'_, ()>) {
        // A pending `suspend` is answered after the frames of the wake went out, so the SoC
        // finds the new reason on the line when its suspend command returns.
        let mut resumed = None;
        for e in fx {
            match e {
                Effect::SendReason(r) => self.send_reason(r, ops),
                Effect::Transition { from, to, reason } => {
                    log::info!("IOC {from} -> {to}, reason {reason:#x}");
                    self.log.emit(
                        "ioc.state",
                        json!({"from": from.name(), "to": to.name(), "reason": reason}),
                    );
                }
                Effect::PowerCut { silent } => {
                    log::warn!("Watchdog: no heartbeat for {silent:?}, cutting the power");
                    self.log.emit(
                        "ioc.power_cut",
                        json!({"silent_ms": u64::try_from(silent.as_millis()).unwrap_or(u64::MAX)}),
                    );
                }
                Effect::Resumed { reason } => resumed = Some(reason),
                Effect::Rtc(ev) => {
                    log::info!("RTC {}", ev.name());
                    let mut f = json!({"event": ev.name()});
                    if let super::model::RtcEvent::Armed(after) = ev {
                        f["after_ms"] = json!(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
                    }
                    self.log.emit("ioc.rtc", f);
                }
            }
        }
        if let Some(reason) = resumed {
            for w in std::mem::take(&mut self.suspend_waiters) {
                self.reply(w, format!("ok resumed reason={reason:#x}"), ops);
            }
        }
        self.rearm_model_timer(ops);
    }

    fn rearm_model_timer(&mut self, ops: &mut Ops<'_, ()>) {
        let want = self.ioc.next_deadline();
        if want == self.model_timer.map(|(_, at)| at) {
            return;
        }
        if let Some((id, _)) = self.model_timer.take() {
            ops.cancel(id);
        }
        if let Some(at) = want {
            self.model_timer = Some((ops.arm_at(at), at));
        }
    }

    fn status(&self, now: Instant) -> String {
        let c = self.faults.counts();
        let rtc = self.ioc.rtc_left(now).map_or_else(
            || "none".to_owned(),
            |d| d.as_millis().div_ceil(1000).to_string(),
        );
        let hb = self.ioc.last_heartbeat().map_or("none", |h| h.name());
        format!(
            "ok state={} reason={:#x} rtc={rtc} hb={hb} frames_rx={} frames_tx={} drop={} dup={} \
             corrupt={} garbage={} ignition={} door={} line={}",
            self.ioc.state(),
            self.ioc.reason(),
            self.frames_rx,
            self.frames_tx,
            c.drop,
            c.dup,
            c.corrupt,
            c.garbage,
            if self.ioc.ignition() { "on" } else { "off" },
            if self.ioc.door() { "open" } else { "closed" },
            if self.slots[LIFECYCLE].line.is_some() {
                "open"
            } else {
                "closed"
            },
        )
    }

    fn ok_state(&self) -> String {
        format!(
            "ok state={} reason={:#x}",
            self.ioc.state(),
            self.ioc.reason()
        )
    }

    // ---- requests ----

    fn execute(&mut self, cmd: Command, from: Requester, ops: &mut Ops<'_, ()>) -> Outcome {
        let now = Instant::now();
        let level = if cmd == Command::Status {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(level, "Request: {cmd}");
        let source = match from {
            Requester::Conn(_) => json!("control"),
            Requester::Scenario { line } => json!(format!("scenario:{line}")),
        };
        self.log.emit(
            "ioc.command",
            json!({"source": source, "command": cmd.to_string()}),
        );
        let fx = match cmd {
            Command::IgnitionOn => self.ioc.ignition_on(now),
            Command::IgnitionOff { force_s5 } => self.ioc.ignition_off(force_s5),
            Command::DoorOpen => self.ioc.door_open(now),
            Command::DoorClose => self.ioc.door_close(),
            Command::Status => return Outcome::Reply(self.status(now)),
            Command::Poweroff | Command::Reboot => {
                let res = match cmd {
                    Command::Poweroff => self.ioc.poweroff(now),
                    _ => self.ioc.reboot(now),
                };
                match res {
                    Ok(fx) => fx,
                    Err(e) => return Outcome::Reply(format!("err {e}")),
                }
            }
            Command::Suspend => {
                self.suspend_waiters.push(from);
                return match self.ioc.suspend(now) {
                    Ok(fx) => {
                        // The reply goes out when the system wakes (maybe within `fx`).
                        self.apply(fx, ops);
                        Outcome::Later
                    }
                    Err(e) => {
                        self.suspend_waiters.retain(|w| *w != from);
                        Outcome::Reply(format!("err {e}"))
                    }
                };
            }
            Command::RebootRequest => return self.start_reboot_request(from),
            Command::Reopen => {
                if self.slots[LIFECYCLE].reopen.is_some() {
                    return Outcome::Reply("err a reopen is in progress".to_owned());
                }
                self.close_slot(LIFECYCLE, ops);
                self.slots[LIFECYCLE].reopen = Some(ops.arm_after(self.reopen_delay));
                self.log
                    .emit("ioc.line", json!({"line": "lifecycle", "action": "closed"}));
                return Outcome::Reply(format!(
                    "ok reopening in {} ms",
                    self.reopen_delay.as_millis()
                ));
            }
            Command::Quit => {
                ops.shutdown();
                return Outcome::Reply("ok bye".to_owned());
            }
        };
        self.apply(fx, ops);
        Outcome::Reply(self.ok_state())
    }

    fn start_reboot_request(&mut self, from: Requester) -> Outcome {
        let Some(notifier) = self.notifier.clone() else {
            return Outcome::Reply("err not ready".to_owned());
        };
        let tx = self.worker_tx.clone();
        let client = Client::new(self.socket_dir.clone(), self.profile);
        let name = self.lcs_name.clone();
        let timeout = self.ipc_timeout;
        let spawned = std::thread::Builder::new()
            .name("reboot-request".to_owned())
            .spawn(move || {
                let req = Request::now(Body::Reboot { err: 0 });
                let reply = match client.send(&name, &req, timeout) {
                    Ok(ack) => match ack.err() {
                        Some(0) => "ok ack err=0".to_owned(),
                        Some(e) => format!("err ack err={e}"),
                        None => format!("err unexpected ack {:?}", ack.payload),
                    },
                    Err(e) => format!("err {}", error_chain(&e)),
                };
                if tx
                    .send(WorkerDone {
                        requester: from,
                        reply,
                    })
                    .is_ok()
                {
                    notifier.notify();
                }
            });
        match spawned {
            Ok(_) => Outcome::Later,
            Err(e) => Outcome::Reply(format!("err cannot start a worker: {e}")),
        }
    }

    fn reply(&mut self, to: Requester, text: String, ops: &mut Ops<'_, ()>) {
        match to {
            Requester::Scenario { line } => {
                log::info!("Scenario line {line}: {text}");
                self.log.emit(
                    "ioc.reply",
                    json!({"source": format!("scenario:{line}"), "reply": text}),
                );
            }
            Requester::Conn(token) => {
                let Some(conn) = self.conns.get_mut(&token) else {
                    log::debug!("Reply to a closed connection dropped: {text}");
                    return;
                };
                conn.out.extend_from_slice(text.as_bytes());
                conn.out.push(b'\n');
                conn.awaiting = false;
                self.flush_conn(token, ops);
                self.resume.push(token);
            }
        }
    }

    // ---- control connections ----

    fn accept(&mut self, ops: &mut Ops<'_, ()>) {
        loop {
            match self.control.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        log::warn!("Control: {MAX_CONNECTIONS} connections open, refusing one");
                        let _ = stream.write(b"err too many connections\n");
                        continue;
                    }
                    match ops.register(&mut stream, Interest::READABLE) {
                        Ok(token) => {
                            self.conns.insert(
                                token,
                                Conn {
                                    stream,
                                    inbuf: Vec::new(),
                                    out: Vec::new(),
                                    writable: false,
                                    awaiting: false,
                                    eof: false,
                                    closing: false,
                                    broken: false,
                                },
                            );
                            // Data may have arrived before the registration.
                            self.read_conn(token);
                            self.serve_conn(token, ops);
                            self.maybe_close(token, ops);
                        }
                        Err(e) => log::warn!("Control: cannot register a connection: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("Control: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn read_conn(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let mut buf = [0u8; 1024];
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    conn.eof = true;
                    return;
                }
                Ok(n) => {
                    conn.inbuf.extend_from_slice(&buf[..n]);
                    if conn.inbuf.len() > MAX_CONN_BUFFER {
                        log::warn!("Control: a client floods requests; closing it");
                        conn.broken = true;
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("Control: read failed: {e}");
                    conn.broken = true;
                    return;
                }
            }
        }
    }

    /// Serves the complete request lines of a connection, one at a time.
    fn serve_conn(&mut self, token: Token, ops: &mut Ops<'_, ()>) {
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            if conn.awaiting || conn.broken || conn.closing {
                return;
            }
            let line = match conn.inbuf.iter().position(|&b| b == b'\n') {
                Some(end) if end <= MAX_REQUEST => {
                    let line: Vec<u8> = conn.inbuf.drain(..=end).collect();
                    line
                }
                Some(_) => {
                    conn.inbuf.clear();
                    conn.closing = true;
                    self.reply(
                        Requester::Conn(token),
                        format!("err request longer than {MAX_REQUEST} bytes"),
                        ops,
                    );
                    return;
                }
                None if conn.inbuf.len() > MAX_REQUEST => {
                    conn.inbuf.clear();
                    conn.closing = true;
                    self.reply(
                        Requester::Conn(token),
                        format!("err request longer than {MAX_REQUEST} bytes"),
                        ops,
                    );
                    return;
                }
                None => return,
            };
            conn.awaiting = true;
            let outcome = match std::str::from_utf8(&line) {
                Err(_) => Outcome::Reply("err request is not UTF-8".to_owned()),
                Ok(text) => match Command::parse(text) {
                    Ok(cmd) => self.execute(cmd, Requester::Conn(token), ops),
                    Err(e) => Outcome::Reply(format!("err {e}")),
                },
            };
            match outcome {
                Outcome::Reply(text) => self.reply(Requester::Conn(token), text, ops),
                Outcome::Later => {}
            }
        }
    }

    fn flush_conn(&mut self, token: Token, ops: &mut Ops<'_, ()>) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        while !conn.out.is_empty() {
            match conn.stream.write(&conn.out) {
                Ok(0) => {
                    conn.broken = true;
                    break;
                }
                Ok(n) => {
                    conn.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("Control: write failed: {e}");
                    conn.broken = true;
                    break;
                }
            }
        }
        let want = !conn.out.is_empty() && !conn.broken;
        if want != conn.writable {
            match ops.reregister(&mut conn.stream, token, interest(want)) {
                Ok(()) => conn.writable = want,
                Err(e) => {
                    log::debug!("Control: cannot reregister: {e}");
                    conn.broken = true;
                }
            }
        }
    }

    fn maybe_close(&mut self, token: Token, ops: &mut Ops<'_, ()>) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        let done = (conn.eof || conn.closing) && !conn.awaiting && conn.out.is_empty();
        if (conn.broken || done)
            && let Some(mut conn) = self.conns.remove(&token)
        {
            ops.deregister(&mut conn.stream, token);
        }
    }

    fn on_conn_event(&mut self, token: Token, event: &Event, ops: &mut Ops<'_, ()>) {
        if event.is_writable() {
            self.flush_conn(token, ops);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_conn(token);
        }
        self.serve_conn(token, ops);
        self.maybe_close(token, ops);
    }

    /// Serves the connections whose deferred replies went out during this callback.
    fn resume_conns(&mut self, ops: &mut Ops<'_, ()>) {
        while let Some(token) = self.resume.pop() {
            self.serve_conn(token, ops);
            self.maybe_close(token, ops);
        }
    }

    // ---- scenario ----

    fn arm_scenario(&mut self, ops: &mut Ops<'_, ()>) {
        self.scenario_timer = self
            .scenario
            .get(self.scenario_next)
            .map(|step| ops.arm_at(self.start + step.at));
    }

    fn run_scenario(&mut self, ops: &mut Ops<'_, ()>) {
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
    fn init(&mut self, ops: &mut Ops<'_, ()>) -> io::Result<()> {
        if let Some(ev) = self.start_event.take() {
            self.log.emit("ioc.start", ev);
        }
        self.start = Instant::now();
        for i in 0..self.slots.len() {
            self.register_slot(i, ops)?;
        }
        self.control.token = Some(ops.register(&mut self.control.listener, Interest::READABLE)?);
        self.notifier = Some(ops.notifier());
        self.period_timer = Some(ops.arm_periodic(self.start + self.period, self.period));
        self.arm_scenario(ops);
        let fx = self.ioc.start();
        self.apply(fx, ops);
        Ok(())
    }

    fn on_event(&mut self, event: &Event, ops: &mut Ops<'_, ()>, _ctx: &mut ()) {
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

    fn on_timer(&mut self, id: TimerId, ops: &mut Ops<'_, ()>, _ctx: &mut ()) {
        if Some(id) == self.period_timer {
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
        } else if self.model_timer.is_some_and(|(t, _)| t == id) {
            self.model_timer = None;
            let fx = self.ioc.advance(Instant::now());
            self.apply(fx, ops);
        } else if Some(id) == self.scenario_timer {
            self.scenario_timer = None;
            self.run_scenario(ops);
        } else if let Some(i) = self.slots.iter().position(|s| s.reopen == Some(id)) {
            self.reopen_slot(i, ops);
        }
        self.resume_conns(ops);
    }

    fn on_notify(&mut self, ops: &mut Ops<'_, ()>, _ctx: &mut ()) {
        while let Ok(done) = self.worker_rx.try_recv() {
            self.reply(done.requester, done.reply, ops);
        }
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
