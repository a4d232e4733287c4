//! sos-lcs wiring: one event loop, one owner of the state.
//!
//! * [`Lcs`] (the loop's state) holds the [`Machine`], the armed RTC wake-up, the
//!   WAKEUP_REASON requests waiting for a first reason, and a queue of work for the core.
//! * The IPC servers (`sos-lcs`, `service-vm-lcs`, and the stand-in `acrnd` in no-acrnd
//!   mode) run their handlers on the loop; a handler feeds the machine, answers at once,
//!   and leaves the I/O its decision needs (frames, timers, requests to acrnd) to the core,
//!   which it wakes through a [`Notifier`].
//! * The `Core` subscriber owns the IOC line, the heartbeat timer, the deadline of the
//!   waiting states, the workers that talk to acrnd (bounded retries) and run the power
//!   commands, and the exit path.
//!
//! Nothing blocks the loop: requests to acrnd and power commands run on worker threads
//! that report back through a channel and the core's notifier.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitStatus;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use mio::event::Event as MioEvent;
use mio::unix::SourceFd;
use mio::{Interest, Token};
use mngr_ipc::cbc::{Frame, Heartbeat, RtcWake};
use mngr_ipc::client::{Client, ClientError};
use mngr_ipc::event_log::EventLog;
use mngr_ipc::line::{LineCodec, LineDevice, open_line};
use mngr_ipc::msg::{Ack, AckPayload, Body, MsgId, Request, StopTarget, epoch_now, err};
use mngr_ipc::runtime::{EventLoop, Notifier, Ops, SignalSubscriber, Subscriber, TimerId};
use mngr_ipc::server::{Call, DeferredAck, Handlers, IpcServer, Reply, ServerConfig, ServerError};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::json;
use thiserror::Error;

use crate::config::Config;
use crate::power;
use crate::state::{Action, Event, Machine, PowerAction, State, Verdict};
use mngr_ipc::host::{self, HostIntent};

/// Server names of the lifecycle service: the C name and the one ACRN ≥ v2.7 looks up.
pub const SERVER_NAMES: [&str; 2] = ["sos-lcs", "service-vm-lcs"];

/// Suppress the IOC's heartbeat check for 5 minutes (reboot / power-off under way).
pub const SUPPRESS_SHUTDOWN_MS: u32 = 300_000;
/// Suppress it for 30 minutes (plain service stop).
pub const SUPPRESS_STOP_MS: u32 = 1_800_000;

const INTENT_TIMEOUT: Duration = Duration::from_secs(2);
const REOPEN_FIRST: Duration = Duration::from_millis(50);
const MAX_QUEUED_BYTES: usize = 4096;

/// Why sos-lcs stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    /// The event log cannot be opened.
    #[error("Cannot open the event log")]
    EventLog(#[source] io::Error),
    /// A server socket cannot be bound.
    #[error("Cannot serve mngr IPC")]
    Serve(#[from] ServerError),
    /// The event loop failed.
    #[error("Event loop failed")]
    Loop(#[source] io::Error),
}

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

    fn refuse(&self, req: &Request, call: Call<'_>) -> Reply {
        let p = call.peer();
        log::warn!(
            "{} from pid {} uid {} refused by policy",
            req.id(),
            p.pid,
            p.uid
        );
        self.log.emit(
            "ipc.refused",
            json!({"msg": req.id().name(), "pid": p.pid, "uid": p.uid}),
        );
        call.err(err::NOT_PERMITTED)
    }

    fn note_request(&self, req: &Request, call: &Call<'_>) {
        let p = call.peer();
        log::debug!("{} from pid {} uid {}", req.id(), p.pid, p.uid);
        self.log.emit(
            "ipc.request",
            json!({"msg": req.id().name(), "pid": p.pid, "uid": p.uid, "body": format!("{:?}", req.body)}),
        );
    }

    fn on_wakeup_reason(&mut self, req: &Request, call: Call<'_>) -> Reply {
        self.note_request(req, &call);
        if let Some(r) = self.machine.latched_reason() {
            return call.ack(AckPayload::Reason(r));
        }
        // No reason yet (boot, or just after S3): answer when the first one comes, so that
        // acrnd does not take an RTC boot for an ignition boot.
        let (reply, d) = call.defer();
        self.reason_waiters
            .push((d, Instant::now() + self.cfg.reason_wait));
        self.work.push_back(Work::ReasonWait);
        self.wake_core();
        reply
    }

    fn on_rtc_timer(&mut self, req: &Request, call: Call<'_>) -> Reply {
        self.note_request(req, &call);
        if !self.cfg.policy.allows(&call.peer()) {
            return self.refuse(req, call);
        }
        let Body::RtcTimer { vmname, t } = &req.body else {
            return call.err(err::INVALID);
        };
        let who: String = String::from_utf8_lossy(vmname)
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(32)
            .collect();
        let delta = t.saturating_sub(now_epoch());
        match RtcWake::from_delta(delta) {
            Some(w) => {
                log::info!("RTC wake-up armed for epoch {t} ({delta} s, {w:?}) for {who:?}");
                self.rtc_at = Some(*t);
                self.log
                    .emit("rtc.armed", json!({"t": t, "delta": delta, "vm": who}));
                call.ack(AckPayload::Err(err::OK))
            }
            None => {
                log::warn!("RTC wake-up at epoch {t} refused: {delta} s from now is out of range");
                call.ack(AckPayload::Err(err::FAILED))
            }
        }
    }

    fn on_verdict(&mut self, req: &Request, call: Call<'_>) -> Reply {
        self.note_request(req, &call);
        if !self.cfg.policy.allows(&call.peer()) {
            return self.refuse(req, call);
        }
        let (kind, e) = match req.body {
            Body::Shutdown { err } => (Verdict::Shutdown, err),
            Body::Suspend { err } => (Verdict::Suspend, err),
            Body::Reboot { err } => (Verdict::Reboot, err),
            _ => return call.err(err::INVALID),
        };
        if self.dispatch(Event::Verdict { kind, err: e }) {
            call.ack(AckPayload::Err(err::OK))
        } else {
            log::info!(
                "{} (err {e}) not possible in state {}",
                req.id(),
                self.machine.state().name()
            );
            call.ack(AckPayload::Err(err::BUSY))
        }
    }

    /// Whether a request to the stand-in acrnd may act: sos-lcs's own requests (its acrnd
    /// client runs in this process), or a peer the policy allows, as acrnd would require.
    fn standin_allows(&self, call: &Call<'_>) -> bool {
        let peer = call.peer();
        u32::try_from(peer.pid).is_ok_and(|p| p == std::process::id())
            || self.cfg.policy.allows(&peer)
    }

    /// The stand-in acrnd of no-acrnd mode: agree at once, S5 if the IOC asked for it.
    fn on_standin_stop(&mut self, req: &Request, call: Call<'_>) -> Reply {
        self.note_request(req, &call);
        if !self.standin_allows(&call) {
            return self.refuse(req, call);
        }
        let kind = if self.machine.force_s5() {
            Verdict::Shutdown
        } else {
            Verdict::Suspend
        };
        self.dispatch(Event::Verdict { kind, err: 0 });
        call.ack(AckPayload::Err(err::OK))
    }
}

fn now_epoch() -> i64 {
    i64::try_from(epoch_now()).unwrap_or(i64::MAX)
}

fn lcs_handlers() -> Handlers<Lcs> {
    Handlers::new()
        .on(MsgId::WakeupReason, Access::Open, |r, c, s: &mut Lcs| {
            s.on_wakeup_reason(r, c)
        })
        .on(MsgId::RtcTimer, Access::Open, |r, c, s: &mut Lcs| {
            s.on_rtc_timer(r, c)
        })
        .on(MsgId::Shutdown, Access::Open, |r, c, s: &mut Lcs| {
            s.on_verdict(r, c)
        })
        .on(MsgId::Suspend, Access::Open, |r, c, s: &mut Lcs| {
            s.on_verdict(r, c)
        })
        .on(MsgId::Reboot, Access::Open, |r, c, s: &mut Lcs| {
            s.on_verdict(r, c)
        })
}

fn standin_handlers() -> Handlers<Lcs> {
    Handlers::new()
        .on(MsgId::AcrndStop, Access::Open, |r, c, s: &mut Lcs| {
            s.on_standin_stop(r, c)
        })
        .on(MsgId::AcrndResume, Access::Open, |r, c, s: &mut Lcs| {
            s.note_request(r, &c);
            if !s.standin_allows(&c) {
                return s.refuse(r, c);
            }
            c.ack(AckPayload::Err(err::OK))
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutKind {
    Resume,
    Stop(StopTarget),
}

impl OutKind {
    fn request(self, stop_timeout: u32) -> Request {
        Request::now(match self {
            OutKind::Resume => Body::AcrndResume {
                force: 0,
                timeout: 0,
            },
            OutKind::Stop(target) => Body::AcrndStop {
                force: 0,
                timeout: stop_timeout,
                target,
            },
        })
    }

    fn name(self) -> &'static str {
        match self {
            OutKind::Resume => "ACRND_RESUME",
            OutKind::Stop(_) => "ACRND_STOP",
        }
    }
}

enum WorkerResult {
    Acrnd {
        generation: u64,
        result: Box<Result<Ack, ClientError>>,
    },
    Power {
        action: PowerAction,
        status: io::Result<ExitStatus>,
    },
    Intent(HostIntent),
}

struct Line {
    file: LineDevice,
    token: Token,
    out: VecDeque<u8>,
    writable: bool,
}

/// The subscriber owning the IOC line, the timers and the workers.
struct Core {
    codec: LineCodec,
    line: Option<Line>,
    reopen_timer: Option<TimerId>,
    backoff: Duration,
    heartbeat_timer: Option<TimerId>,
    deadline_timer: Option<TimerId>,
    reason_timer: Option<TimerId>,
    retry_timer: Option<TimerId>,
    /// After acrnd took ACRND_STOP: when to ask again if no verdict came (an acrnd
    /// restarted meanwhile knows nothing of the stop), for that request's generation.
    restop_timer: Option<(TimerId, u64, StopTarget)>,
    generation: u64,
    outgoing: Option<(OutKind, u32)>,
    results_tx: Sender<WorkerResult>,
    results_rx: Receiver<WorkerResult>,
    notifier: Option<Notifier>,
    client: Client,
    started: Instant,
    first_heartbeat_logged: bool,
    terminating: bool,
}

impl Core {
    fn new(cfg: &Config) -> Self {
        let (results_tx, results_rx) = mpsc::channel();
        Core {
            codec: LineCodec::new(cfg.line.mode),
            line: None,
            reopen_timer: None,
            backoff: REOPEN_FIRST,
            heartbeat_timer: None,
            deadline_timer: None,
            reason_timer: None,
            retry_timer: None,
            restop_timer: None,
            generation: 0,
            outgoing: None,
            results_tx,
            results_rx,
            notifier: None,
            client: Client::new(&cfg.socket_dir, cfg.profile),
            started: Instant::now(),
            first_heartbeat_logged: false,
            terminating: false,
        }
    }

    fn open_line(&mut self, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        self.reopen_timer = None;
        let lc = &s.cfg.line;
        match open_line(&lc.path, lc.mode, lc.baud) {
            Ok(file) => {
                let fd = file.as_raw_fd();
                match ops.register(&mut SourceFd(&fd), Interest::READABLE) {
                    Ok(token) => {
                        log::info!("IOC line {} open ({:?} mode)", lc.path.display(), lc.mode);
                        s.log.emit(
                            "line",
                            json!({"state": "open", "path": lc.path.display().to_string()}),
                        );
                        notify_status(&format!("IOC line {} open", lc.path.display()));
                        self.line = Some(Line {
                            file,
                            token,
                            out: VecDeque::new(),
                            writable: false,
                        });
                        self.codec = LineCodec::new(lc.mode);
                        self.backoff = REOPEN_FIRST;
                        // The IOC hears from us at once, not a period later.
                        let now = s.machine.tick();
                        self.perform(now, ops, s);
                    }
                    Err(e) => {
                        log::error!("Cannot watch {}: {e}", lc.path.display());
                        self.schedule_reopen(ops, s);
                    }
                }
            }
            Err(e) => {
                if self.backoff == REOPEN_FIRST {
                    log::warn!(
                        "IOC line {} not available ({e}); retrying with back-off up to {:?}",
                        lc.path.display(),
                        s.cfg.reopen_max
                    );
                    notify_status(&format!("waiting for IOC line {}", lc.path.display()));
                } else {
                    log::debug!("IOC line {} still not available: {e}", lc.path.display());
                }
                self.schedule_reopen(ops, s);
            }
        }
    }

    fn schedule_reopen(&mut self, ops: &mut Ops<'_, Lcs>, s: &Lcs) {
        if self.reopen_timer.is_none() {
            self.reopen_timer = Some(ops.arm_after(self.backoff));
            // Capped at one period: heartbeats resume within a period of the line's return.
            self.backoff = (self.backoff * 2)
                .min(s.cfg.reopen_max)
                .min(s.cfg.heartbeat);
        }
    }

    fn close_line(&mut self, why: &str, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        if let Some(line) = self.line.take() {
            let fd = line.file.as_raw_fd();
            ops.deregister(&mut SourceFd(&fd), line.token);
            log::warn!(
                "IOC line {} lost ({why}); reopening",
                s.cfg.line.path.display()
            );
            s.log.emit("line", json!({"state": "closed", "why": why}));
            notify_status(&format!("IOC line {} lost", s.cfg.line.path.display()));
        }
        self.backoff = REOPEN_FIRST;
        self.schedule_reopen(ops, s);
    }

    fn read_line(&mut self, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        let mut buf = [0u8; 512];
        loop {
            let Some(line) = self.line.as_mut() else {
                return;
            };
            match line.file.read(&mut buf) {
                Ok(0) => return self.close_line("end of file", ops, s),
                Ok(n) => self.codec.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.close_line(&e.to_string(), ops, s),
            }
        }
        while let Some(frame) = self.codec.next_frame() {
            let bytes = frame.encode().unwrap_or_default();
            s.log.emit(
                "frame.rx",
                json!({"hex": hex(&bytes), "frame": format!("{frame:?}")}),
            );
            match frame {
                Frame::WakeupReason(r) => {
                    log::trace!("Wakeup reason {r:#08x}");
                    s.dispatch(Event::Reason(r));
                }
                Frame::LogicMode(_) => log::debug!("Logic-mode frame ignored"),
                other => log::debug!("Unexpected frame from the IOC ignored: {other:?}"),
            }
        }
        self.drain_work(ops, s);
    }

    fn send(&mut self, frame: Frame, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        let bytes = match self.codec.encode(&frame) {
            Ok(b) => b,
            Err(e) => {
                log::error!("Cannot encode {frame:?}: {e}");
                return;
            }
        };
        let service = frame.encode().unwrap_or_default();
        let Some(line) = self.line.as_mut() else {
            log::debug!("IOC line down: {frame:?} not sent");
            return;
        };
        if line.out.len() + bytes.len() > MAX_QUEUED_BYTES {
            log::warn!("IOC line not draining: dropping {frame:?}");
            return;
        }
        line.out.extend(bytes.iter());
        if matches!(frame, Frame::Heartbeat(_)) {
            log::trace!("Heartbeat {}", hex(&service));
        } else {
            log::debug!("Frame {} to the IOC", hex(&service));
        }
        s.log.emit(
            "frame.tx",
            json!({"hex": hex(&service), "frame": frame_name(&frame)}),
        );
        if !self.first_heartbeat_logged {
            self.first_heartbeat_logged = true;
            log::debug!("First frame {:?} after start", self.started.elapsed());
        }
        self.flush(ops, s);
    }

    fn flush(&mut self, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        let Some(line) = self.line.as_mut() else {
            return;
        };
        while !line.out.is_empty() {
            let (a, _) = line.out.as_slices();
            match line.file.write(a) {
                Ok(0) => break,
                Ok(n) => {
                    line.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.close_line(&e.to_string(), ops, s),
            }
        }
        let want = !line.out.is_empty();
        if want != line.writable {
            let fd = line.file.as_raw_fd();
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = ops.reregister(&mut SourceFd(&fd), line.token, interest) {
                return self.close_line(&e.to_string(), ops, s);
            }
            line.writable = want;
        }
    }

    fn perform(&mut self, actions: Vec<Action>, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        for a in actions {
            match a {
                Action::Heartbeat(hb) => self.send(Frame::Heartbeat(hb), ops, s),
                Action::SendRtc => self.send_rtc(ops, s),
                Action::ClearRtc => s.rtc_at = None,
                Action::AcrndResume => self.start_request(OutKind::Resume, ops, s),
                Action::AcrndStop(t) => self.start_request(OutKind::Stop(t), ops, s),
                Action::Power(p) => self.run_power(p, s),
                Action::ArmDeadline => {
                    if let Some(t) = self.deadline_timer.take() {
                        ops.cancel(t);
                    }
                    self.deadline_timer = Some(ops.arm_after(s.cfg.wait_bound));
                }
                Action::CancelDeadline => {
                    if let Some(t) = self.deadline_timer.take() {
                        ops.cancel(t);
                    }
                }
                Action::ReasonLatched(r) => {
                    for (d, _) in s.reason_waiters.drain(..) {
                        d.complete(AckPayload::Reason(r));
                    }
                }
            }
        }
    }

    fn send_rtc(&mut self, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        let Some(t) = s.rtc_at else { return };
        let delta = t.saturating_sub(now_epoch());
        match RtcWake::from_delta(delta) {
            Some(w) => self.send(Frame::Rtc(w), ops, s),
            None => {
                log::warn!("RTC wake-up at epoch {t} has passed; dropped");
                s.rtc_at = None;
            }
        }
    }

    fn drain_work(&mut self, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        while let Some(w) = s.work.pop_front() {
            match w {
                Work::Act(a) => self.perform(vec![a], ops, s),
                Work::ReasonWait => self.arm_reason_timer(ops, s),
                Work::Terminate => self.terminate(s),
            }
        }
    }

    fn arm_reason_timer(&mut self, ops: &mut Ops<'_, Lcs>, s: &Lcs) {
        if let Some(t) = self.reason_timer.take() {
            ops.cancel(t);
        }
        if let Some(first) = s.reason_waiters.iter().map(|(_, d)| *d).min() {
            self.reason_timer = Some(ops.arm_at(first));
        }
    }

    fn expire_reason_waiters(&mut self, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) =
            s.reason_waiters.drain(..).partition(|(_, d)| *d <= now);
        s.reason_waiters = keep;
        for (d, _) in due {
            log::warn!(
                "No wakeup reason from the IOC within {:?}; answering WAKEUP_REASON with 0",
                s.cfg.reason_wait
            );
            d.complete(AckPayload::Reason(0));
        }
        self.arm_reason_timer(ops, s);
    }

    fn start_request(&mut self, kind: OutKind, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        self.generation += 1;
        if let Some(t) = self.retry_timer.take() {
            ops.cancel(t);
        }
        self.outgoing = Some((kind, 0));
        self.attempt(s);
    }

    fn attempt(&mut self, s: &mut Lcs) {
        let Some((kind, attempts)) = self.outgoing.as_mut() else {
            return;
        };
        *attempts += 1;
        let (kind, attempt) = (*kind, *attempts);
        let req = kind.request(s.cfg.stop_timeout);
        log::info!("{} to acrnd (attempt {attempt})", kind.name());
        s.log.emit(
            "acrnd.send",
            json!({"msg": kind.name(), "attempt": attempt, "target": format!("{:?}", match kind { OutKind::Stop(t) => Some(t), OutKind::Resume => None })}),
        );
        let client = self.client.clone();
        let timeout = s.cfg.ipc_timeout;
        let tx = self.results_tx.clone();
        let notifier = self.notifier.clone();
        let generation = self.generation;
        let spawned = std::thread::Builder::new()
            .name("to-acrnd".into())
            .spawn(move || {
                let result = client.send("acrnd", &req, timeout);
                let _ = tx.send(WorkerResult::Acrnd {
                    generation,
                    result: Box::new(result),
                });
                if let Some(n) = notifier {
                    n.notify();
                }
            });
        if let Err(e) = spawned {
            log::error!("Cannot start a worker: {e}");
            let _ = self.results_tx.send(WorkerResult::Acrnd {
                generation,
                result: Box::new(Err(ClientError::Io(e))),
            });
            if let Some(n) = &self.notifier {
                n.notify();
            }
        }
    }

    fn on_acrnd_result(
        &mut self,
        generation: u64,
        result: Result<Ack, ClientError>,
        ops: &mut Ops<'_, Lcs>,
        s: &mut Lcs,
    ) {
        if generation != self.generation {
            return; // superseded by a newer request
        }
        let Some((kind, attempts)) = self.outgoing else {
            return;
        };
        match result {
            Ok(ack) => {
                log::info!("acrnd acked {} with err {:?}", kind.name(), ack.err());
                s.log.emit(
                    "acrnd.result",
                    json!({"msg": kind.name(), "ok": true, "err": ack.err()}),
                );
                self.outgoing = None;
                if let OutKind::Stop(target) = kind {
                    // acrnd answers within its own deadline (the ACRND_STOP timeout); a
                    // period later, ask again: an acrnd restarted meanwhile starts over.
                    let after =
                        Duration::from_secs(u64::from(s.cfg.stop_timeout.max(1))) + s.cfg.heartbeat;
                    if let Some((t, _, _)) = self.restop_timer.take() {
                        ops.cancel(t);
                    }
                    self.restop_timer = Some((ops.arm_after(after), generation, target));
                }
            }
            Err(e) => {
                s.log.emit(
                    "acrnd.result",
                    json!({"msg": kind.name(), "ok": false, "error": e.to_string()}),
                );
                if attempts < s.cfg.retries {
                    log::warn!("{} not delivered: {e}; retrying", kind.name());
                    // Like the original, the second ACRND_STOP follows at once.
                    let delay = match (kind, attempts) {
                        (OutKind::Stop(_), 1) => Duration::ZERO,
                        _ => s.cfg.heartbeat,
                    };
                    self.retry_timer = Some(ops.arm_after(delay));
                } else {
                    log::error!(
                        "{} not delivered after {attempts} attempts: {e}",
                        kind.name()
                    );
                    self.outgoing = None;
                    if matches!(kind, OutKind::Stop(_)) {
                        s.dispatch(Event::StopUndeliverable);
                    }
                }
            }
        }
    }

    fn run_power(&mut self, action: PowerAction, s: &mut Lcs) {
        let argv = match action {
            PowerAction::Poweroff => s.cfg.commands.poweroff.clone(),
            PowerAction::Reboot => s.cfg.commands.reboot.clone(),
            PowerAction::Suspend => s.cfg.commands.suspend.clone(),
        };
        log::info!("Running {} command: {}", action.name(), argv.join(" "));
        s.log
            .emit("power.run", json!({"action": action.name(), "argv": argv}));
        let tx = self.results_tx.clone();
        let notifier = self.notifier.clone();
        let spawned = std::thread::Builder::new()
            .name("power".into())
            .spawn(move || {
                let status = power::run(&argv);
                let _ = tx.send(WorkerResult::Power { action, status });
                if let Some(n) = notifier {
                    n.notify();
                }
            });
        if let Err(e) = spawned {
            log::error!("Cannot start the {} command: {e}", action.name());
            s.dispatch(Event::PowerDone { action, ok: false });
        }
    }

    fn on_power_done(&mut self, action: PowerAction, status: io::Result<ExitStatus>, s: &mut Lcs) {
        let ok = match &status {
            Ok(st) if st.success() => {
                log::info!("{} command finished", action.name());
                true
            }
            Ok(st) => {
                log::error!("{} command failed: {st}", action.name());
                false
            }
            Err(e) => {
                log::error!("{} command could not run: {e}", action.name());
                false
            }
        };
        s.log.emit(
            "power.done",
            json!({"action": action.name(), "ok": ok, "status": status.as_ref().ok().and_then(ExitStatus::code)}),
        );
        s.dispatch(Event::PowerDone { action, ok });
    }

    /// SIGTERM: asks what the host is doing on a worker (the loop keeps heartbeating
    /// meanwhile), then [`Core::finish`] writes the last frames.
    fn terminate(&mut self, s: &mut Lcs) {
        if self.terminating {
            return;
        }
        self.terminating = true;
        let argv = s.cfg.intent_cmd.clone();
        let tx = self.results_tx.clone();
        let notifier = self.notifier.clone();
        let job = move || {
            let _ = tx.send(WorkerResult::Intent(host::host_intent(
                &argv,
                INTENT_TIMEOUT,
            )));
            if let Some(n) = notifier {
                n.notify();
            }
        };
        if let Err(e) = std::thread::Builder::new().name("intent".into()).spawn(job) {
            log::warn!("Cannot ask for the host's intent ({e}): assuming a plain stop");
            let _ = self.results_tx.send(WorkerResult::Intent(HostIntent::None));
            if let Some(n) = &self.notifier {
                n.notify();
            }
        }
    }

    fn finish(&mut self, intent: HostIntent, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        log::info!("Stopping; host intent: {}", intent.name());
        s.log.emit("exit", json!({"intent": intent.name()}));
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        match intent {
            HostIntent::Reboot => {
                self.send(
                    Frame::SuppressHeartbeat {
                        ms: SUPPRESS_SHUTDOWN_MS,
                    },
                    ops,
                    s,
                );
                self.send(Frame::Heartbeat(Heartbeat::REBOOT), ops, s);
            }
            HostIntent::Poweroff => {
                self.send_rtc(ops, s);
                self.send(
                    Frame::SuppressHeartbeat {
                        ms: SUPPRESS_SHUTDOWN_MS,
                    },
                    ops,
                    s,
                );
                self.send(Frame::Heartbeat(Heartbeat::S5), ops, s);
            }
            HostIntent::None => {
                self.send(
                    Frame::SuppressHeartbeat {
                        ms: SUPPRESS_STOP_MS,
                    },
                    ops,
                    s,
                );
            }
        }
        self.flush_before_exit();
        for (d, _) in s.reason_waiters.drain(..) {
            d.complete(AckPayload::Reason(0));
        }
        ops.shutdown();
    }

    /// Last frames before exit: a few bounded attempts if the line is momentarily full.
    fn flush_before_exit(&mut self) {
        let Some(line) = self.line.as_mut() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_millis(200);
        while !line.out.is_empty() && Instant::now() < deadline {
            let (a, _) = line.out.as_slices();
            match line.file.write(a) {
                Ok(n) => {
                    line.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Wait (bounded) for room on the line rather than spin.
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                    let mut fds = [PollFd::new(line.file.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::from(ms));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("Last frames not written: {e}");
                    return;
                }
            }
        }
    }
}

fn notify_status(status: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn frame_name(f: &Frame) -> String {
    match f {
        Frame::Heartbeat(h) => format!("heartbeat.{}", h.name()),
        Frame::Rtc(_) => "rtc".into(),
        Frame::SuppressHeartbeat { .. } => "suppress".into(),
        Frame::WakeupReason(_) => "wakeup_reason".into(),
        other => format!("{other:?}"),
    }
}

impl Subscriber<Lcs> for Core {
    fn init(&mut self, ops: &mut Ops<'_, Lcs>) -> io::Result<()> {
        self.notifier = Some(ops.notifier());
        // The line is opened on the first timer, when the state is reachable.
        self.reopen_timer = Some(ops.arm_after(Duration::ZERO));
        Ok(())
    }

    fn on_event(&mut self, event: &MioEvent, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        if event.is_writable() {
            self.flush(ops, s);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_line(ops, s);
        }
    }

    fn on_timer(&mut self, id: TimerId, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        if Some(id) == self.reopen_timer {
            if self.heartbeat_timer.is_none() {
                self.heartbeat_timer =
                    Some(ops.arm_periodic(Instant::now() + s.cfg.heartbeat, s.cfg.heartbeat));
            }
            self.open_line(ops, s);
        } else if Some(id) == self.heartbeat_timer {
            let tick = s.machine.tick();
            self.perform(tick, ops, s);
            if s.cfg.watchdog.is_some() {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        } else if Some(id) == self.deadline_timer {
            self.deadline_timer = None;
            s.dispatch(Event::Deadline);
        } else if Some(id) == self.reason_timer {
            self.reason_timer = None;
            self.expire_reason_waiters(ops, s);
        } else if Some(id) == self.retry_timer {
            self.retry_timer = None;
            self.attempt(s);
        } else if let Some((t, generation, target)) = self.restop_timer
            && t == id
        {
            self.restop_timer = None;
            if generation == self.generation && s.machine.state() == State::ShutdownDelay {
                log::warn!("No verdict from acrnd since it took ACRND_STOP: asking again");
                self.start_request(OutKind::Stop(target), ops, s);
            }
        }
        self.drain_work(ops, s);
    }

    fn on_notify(&mut self, ops: &mut Ops<'_, Lcs>, s: &mut Lcs) {
        while let Ok(r) = self.results_rx.try_recv() {
            match r {
                WorkerResult::Acrnd { generation, result } => {
                    self.on_acrnd_result(generation, *result, ops, s);
                }
                WorkerResult::Power { action, status } => self.on_power_done(action, status, s),
                WorkerResult::Intent(intent) => self.finish(intent, ops, s),
            }
        }
        self.drain_work(ops, s);
    }
}

/// Runs sos-lcs until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), RunError> {
    let log =
        EventLog::open_optional(cfg.event_log.as_deref(), "sos-lcs").map_err(RunError::EventLog)?;
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
    let mut names: Vec<(&str, Handlers<Lcs>)> =
        SERVER_NAMES.iter().map(|n| (*n, lcs_handlers())).collect();
    if state.cfg.no_acrnd {
        names.push(("acrnd", standin_handlers()));
    }
    for (name, handlers) in names {
        let mut sc = ServerConfig::new(name, &state.cfg.socket_dir);
        sc.profile = state.cfg.profile;
        let server = IpcServer::bind(sc, handlers)?;
        el.add(Box::new(server)).map_err(RunError::Loop)?;
    }
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
