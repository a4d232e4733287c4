//! The core: carries out what the orchestrator decided, and turns what happens (worker
//! results, device-model exits, timers) back into orchestrator events.
//!
//! Requests to device models and to the lifecycle service, the host-intent query and the
//! timer-store writes run on the loop's workers; their results come back in `on_done`. A
//! device model's exit is seen through its pidfd (a crashed DM is "stopped" at once, with
//! no polling).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event as MioEvent;
use mio::unix::SourceFd;
use mio::{Interest, Token};
use mngr_ipc::client::{Client, ClientError};
use mngr_ipc::event_log::EventLog;
use mngr_ipc::host::{self, HostIntent};
use mngr_ipc::msg::{Ack, AckPayload, Body, Request};
use mngr_ipc::runtime::{Ops, Subscriber};
use mngr_ipc::vocabulary::monitor_name;
use serde_json::json;

use super::persist::{Batch, Writer};
use super::{Acrnd, now};
use crate::config::Config;
use crate::orchestrator::{Command, DmAnswer, DmKind, Event, ReasonFor, ReplyId, Timer};
use crate::timers::{FaultPoint, TimerStore, Timers};
use crate::vms;

const INTENT_TIMEOUT: Duration = Duration::from_secs(2);

/// The core's timers: its own, and the orchestrator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CoreTimer {
    /// Boot once the loop runs.
    Boot,
    /// systemd's watchdog.
    Watchdog,
    /// One of the orchestrator's.
    Orch(Timer),
}

/// What a worker job of the core returns.
#[derive(Debug)]
pub(super) enum Done {
    Dm {
        vm: String,
        kind: DmKind,
        reply: Option<ReplyId>,
        answer: DmAnswer,
    },
    Reason {
        why: ReasonFor,
        reason: Option<u32>,
    },
    Lcs {
        what: &'static str,
        ok: bool,
    },
    Persisted {
        error: Option<String>,
    },
    Intent(HostIntent),
}

/// A device model acrnd watches.
#[derive(Debug)]
struct Watched {
    vm: String,
    pidfd: File,
    child: Option<Child>,
}

/// The subscriber that owns timers, watches and workers.
pub(super) struct Core {
    client: Client,
    lcs_names: Arc<[String]>,
    dm_timeout: Duration,
    lcs_timeout: Duration,
    intent_cmd: Arc<[String]>,
    watchdog: Option<Duration>,
    store: Arc<TimerStore>,
    writer: Writer,
    /// The acks and insertions of the write in flight, and the timers it writes.
    writing: Option<(Batch, Timers)>,
    log: EventLog,
    watches: HashMap<Token, Watched>,
    /// Children launched, until their watch is registered.
    launched: HashMap<String, Child>,
}

type CoreOps<'a> = Ops<'a, Acrnd, Core>;

impl Core {
    pub(super) fn new(cfg: &Config, store: TimerStore, log: EventLog) -> Self {
        Core {
            client: Client::new(&cfg.socket_dir, cfg.profile),
            lcs_names: cfg.lcs_names.clone().into(),
            dm_timeout: cfg.dm_timeout,
            lcs_timeout: cfg.lcs_timeout,
            intent_cmd: cfg.intent_cmd.clone().into(),
            watchdog: cfg.watchdog,
            store: Arc::new(store),
            writer: Writer::default(),
            writing: None,
            log,
            watches: HashMap::new(),
            launched: HashMap::new(),
        }
    }

    /// Gives `event` to the orchestrator and carries out what it decides, after what it
    /// decided before (the requests' commands and the signals waiting in the state).
    fn feed(&mut self, event: Event, ops: &mut CoreOps<'_>, s: &mut Acrnd) {
        self.catch_up(ops, s);
        let commands = s.orch.handle(event, now());
        self.run(commands, ops, s);
    }

    /// Carries out the commands the request handlers queued, then feeds the events the
    /// signal handler posted, in the order they were decided.
    fn catch_up(&mut self, ops: &mut CoreOps<'_>, s: &mut Acrnd) {
        loop {
            let commands = std::mem::take(&mut s.outbox);
            let events = std::mem::take(&mut s.inbox);
            if commands.is_empty() && events.is_empty() {
                return;
            }
            self.run(commands, ops, s);
            for event in events {
                let commands = s.orch.handle(event, now());
                self.run(commands, ops, s);
            }
        }
    }

    /// Carries out `commands`, and those that the events they cause bring.
    fn run(&mut self, commands: Vec<Command>, ops: &mut CoreOps<'_>, s: &mut Acrnd) {
        let mut queue: VecDeque<Command> = commands.into();
        while let Some(c) = queue.pop_front() {
            if let Some(event) = self.exec(c, ops, s) {
                queue.extend(s.orch.handle(event, now()));
            }
        }
    }

    /// Carries out one command; returns the event it causes at once, if any.
    fn exec(&mut self, c: Command, ops: &mut CoreOps<'_>, s: &mut Acrnd) -> Option<Event> {
        match c {
            Command::Dm { vm, kind, reply } => return self.send_dm(vm, kind, reply, ops),
            Command::Launch { vm, reason, reply } => {
                return Some(self.launch(s, vm, reason, reply));
            }
            Command::Watch { vm, pid } => self.watch(vm, pid, ops),
            Command::Kill { vm, pid } => kill(&vm, pid),
            Command::AskReason(why) => return self.ask_reason(why, ops),
            Command::Report { requests, what } => {
                let job = self.lcs_job(requests);
                let spawned = ops.spawn(move || Done::Lcs {
                    what,
                    ok: job().is_some(),
                });
                if let Err(e) = spawned {
                    log::error!("Cannot start a worker ({e}): {what} not sent");
                    return Some(Event::LcsDelivered { what, ok: false });
                }
            }
            Command::Persist { reply, undo } => {
                if let Some(batch) = self.writer.want(reply, undo) {
                    self.write(batch, ops, s);
                }
            }
            Command::Arm(t, at) => ops.arm_at(CoreTimer::Orch(t), at),
            Command::Cancel(t) => {
                ops.cancel(&CoreTimer::Orch(t));
            }
            Command::Answer(id, code) => match s.replies.remove(&id) {
                Some(d) => d.complete(AckPayload::Err(code)),
                None => log::error!("No deferred ack waits under reply {}", id.0),
            },
            Command::AskIntent => return self.ask_intent(ops),
            Command::Stopping { extend } => notify_stopping(extend),
            Command::Log(kind, fields) => self.log.emit(kind, fields),
            Command::Exit => ops.shutdown(),
        }
        None
    }

    /// Sends a request to a device model on a worker; if no worker can run it, the request
    /// fails at once (its deferred ack answers -1).
    fn send_dm(
        &mut self,
        vm: String,
        kind: DmKind,
        reply: Option<ReplyId>,
        ops: &mut CoreOps<'_>,
    ) -> Option<Event> {
        let body = match kind {
            DmKind::Query => Body::DmQuery,
            DmKind::Stop { force } => Body::DmStop { force },
            DmKind::Suspend => Body::DmSuspend,
            DmKind::Resume { reason } => Body::DmResume { reason },
        };
        let client = self.client.clone();
        let timeout = self.dm_timeout;
        let target = vm.clone();
        let spawned = ops.spawn(move || {
            let result = client.send(&monitor_name(&target), &Request::now(body), timeout);
            Done::Dm {
                vm: target,
                kind,
                reply,
                answer: dm_answer(result),
            }
        });
        spawned.err().map(|e| Event::Dm {
            vm,
            kind,
            reply,
            answer: DmAnswer::Failed(format!("no worker to send it: {e}")),
        })
    }

    fn launch(&mut self, s: &Acrnd, vm: String, reason: u32, reply: Option<ReplyId>) -> Event {
        let Some(spec) = s.specs.get(&vm) else {
            return Event::LaunchFailed { vm, reply };
        };
        log::info!("Launching {vm} with wakeup reason {reason:#x}");
        match vms::launch(spec, reason) {
            Ok(child) => {
                let pid = child.id();
                self.launched.insert(vm.clone(), child);
                Event::Launched {
                    vm,
                    pid,
                    reason,
                    reply,
                }
            }
            Err(e) => {
                log::error!("Cannot launch {vm}: {e}");
                Event::LaunchFailed { vm, reply }
            }
        }
    }

    /// Watches the device-model process of `vm` through a pidfd.
    fn watch(&mut self, vm: String, pid: u32, ops: &mut CoreOps<'_>) {
        self.unwatch(&vm, ops);
        let child = self.launched.remove(&vm);
        let fd = match mngr_ipc::sys::pidfd_open(pid) {
            Ok(fd) => File::from(fd),
            Err(e) => {
                log::warn!("Cannot watch {vm} (pid {pid}): {e}");
                return;
            }
        };
        match ops.register(&mut SourceFd(&fd.as_raw_fd()), Interest::READABLE) {
            Ok(t) => {
                self.watches.insert(
                    t,
                    Watched {
                        vm,
                        pidfd: fd,
                        child,
                    },
                );
            }
            Err(e) => log::warn!("Cannot watch {vm} (pid {pid}): {e}"),
        }
    }

    fn unwatch(&mut self, vm: &str, ops: &mut CoreOps<'_>) -> Option<Watched> {
        let token = self
            .watches
            .iter()
            .find(|(_, w)| w.vm == vm)
            .map(|(t, _)| *t)?;
        let w = self.watches.remove(&token)?;
        ops.deregister(&mut SourceFd(&w.pidfd.as_raw_fd()), token);
        Some(w)
    }

    /// The device model of a watch exited: reap it, log how, tell the orchestrator.
    fn exited(&mut self, token: Token, ops: &mut CoreOps<'_>, s: &mut Acrnd) {
        let Some(vm) = self.watches.get(&token).map(|w| w.vm.clone()) else {
            return;
        };
        let Some(w) = self.unwatch(&vm, ops) else {
            return;
        };
        let pid = s.orch.vms().get(&vm).and_then(|v| v.pid);
        let pid_text = pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        let status = w.child.map(|mut c| c.try_wait());
        match &status {
            Some(Ok(Some(st))) => log::info!("VM {vm}: device model (pid {pid_text}) exited: {st}"),
            Some(Ok(None)) => {
                log::warn!("VM {vm}: pid {pid_text} reported gone but not reapable yet");
            }
            Some(Err(e)) => log::warn!("VM {vm}: cannot reap pid {pid_text}: {e}"),
            None => log::info!("VM {vm}: device model (pid {pid_text}) is gone"),
        }
        let code = match &status {
            Some(Ok(Some(st))) => st.code(),
            _ => None,
        };
        self.log
            .emit("vm.exit", json!({"vm": vm, "pid": pid, "code": code}));
        self.feed(Event::Exited { vm }, ops, s);
    }

    /// A job sending `requests` to the lifecycle service, each to the first name that
    /// serves; returns the last ack (`None`: nobody took the last one).
    fn lcs_job(
        &self,
        requests: Vec<(&'static str, Request)>,
    ) -> impl FnOnce() -> Option<Ack> + Send + 'static {
        let client = self.client.clone();
        let names = Arc::clone(&self.lcs_names);
        let timeout = self.lcs_timeout;
        let log = self.log.clone();
        move || {
            let mut last = None;
            for (what, req) in requests {
                last = lcs_send(&client, &names, what, &req, timeout, &log);
                if last.is_none() {
                    log::info!("No lifecycle service took {what} (degraded mode: no IOC)");
                }
            }
            last
        }
    }

    fn ask_reason(&mut self, why: ReasonFor, ops: &mut CoreOps<'_>) -> Option<Event> {
        let job = self.lcs_job(vec![("WAKEUP_REASON", Request::now(Body::WakeupReason))]);
        let spawned = ops.spawn(move || Done::Reason {
            why,
            reason: job().and_then(|a| match a.payload {
                AckPayload::Reason(r) => Some(r),
                _ => None,
            }),
        });
        spawned.err().map(|e| {
            log::error!("Cannot start a worker ({e}): going on without the wakeup reason");
            Event::Reason { why, reason: None }
        })
    }

    fn ask_intent(&mut self, ops: &mut CoreOps<'_>) -> Option<Event> {
        let argv = Arc::clone(&self.intent_cmd);
        match ops.spawn(move || Done::Intent(host::host_intent(&argv, INTENT_TIMEOUT))) {
            Ok(()) => None,
            Err(e) => {
                log::warn!("Cannot ask for the host's intent ({e}): assuming a plain stop");
                Some(Event::Intent(HostIntent::None))
            }
        }
    }

    /// Writes the timers as they are now on a worker, for `batch`; if no worker can run
    /// it, the write fails at once.
    fn write(&mut self, batch: Batch, ops: &mut CoreOps<'_>, s: &mut Acrnd) {
        let timers = s.orch.timers().clone();
        let store = Arc::clone(&self.store);
        let log = self.log.clone();
        self.writing = Some((batch, timers.clone()));
        let spawned = ops.spawn(move || {
            let result = store.save(&timers, move |p: FaultPoint| {
                log.emit("fault", json!({"point": p.name()}));
            });
            Done::Persisted {
                error: result.err().map(|e| mngr_ipc::error_chain(&e)),
            }
        });
        if let Err(e) = spawned {
            self.persisted(Some(format!("no worker to write it: {e}")), ops, s);
        }
    }

    /// The write in flight ended: answer its acks, tell the orchestrator (which takes the
    /// timers back if it failed), start the waiting write.
    fn persisted(&mut self, error: Option<String>, ops: &mut CoreOps<'_>, s: &mut Acrnd) {
        let (batch, written) = self.writing.take().unwrap_or_default();
        let code = if error.is_some() {
            mngr_ipc::msg::err::FAILED
        } else {
            mngr_ipc::msg::err::OK
        };
        for id in batch.replies {
            if let Some(d) = s.replies.remove(&id) {
                d.complete(AckPayload::Err(code));
            }
        }
        self.feed(
            Event::Persisted {
                undo: batch.undo,
                written,
                error,
            },
            ops,
            s,
        );
        if let Some(next) = self.writer.done() {
            self.write(next, ops, s);
        }
    }
}

/// Sends one request to the first lifecycle-service name that serves, logging the result.
fn lcs_send(
    client: &Client,
    names: &[String],
    what: &str,
    req: &Request,
    timeout: Duration,
    log: &EventLog,
) -> Option<Ack> {
    for name in names {
        match client.send(name, req, timeout) {
            Ok(ack) => {
                let err = ack.err();
                match err {
                    Some(e) => log::info!("{what} to {name}: err {e}"),
                    None => log::info!("{what} to {name}: answered"),
                }
                log.emit(
                    "lcs.result",
                    json!({"msg": what, "to": name, "ok": true, "err": err}),
                );
                return Some(ack);
            }
            Err(ClientError::NotFound { .. }) => continue,
            Err(e) => {
                let why = mngr_ipc::error_chain(&e);
                log::warn!("{what} to {name} failed: {why}");
                log.emit(
                    "lcs.result",
                    json!({"msg": what, "to": name, "ok": false, "error": why}),
                );
                return None;
            }
        }
    }
    None
}

fn dm_answer(result: Result<Ack, ClientError>) -> DmAnswer {
    match result {
        Ok(ack) => match ack.payload {
            AckPayload::State(state) => DmAnswer::Ack {
                err: 0,
                state: Some(state),
            },
            other => DmAnswer::Ack {
                err: other.err().unwrap_or(mngr_ipc::msg::err::OK),
                state: None,
            },
        },
        Err(ClientError::NotFound { .. }) => DmAnswer::NotFound,
        Err(e) => DmAnswer::Failed(mngr_ipc::error_chain(&e)),
    }
}

fn kill(vm: &str, pid: u32) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    if let Err(e) = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    ) {
        log::warn!("Cannot kill the device model of {vm} (pid {pid}): {e}");
    }
}

fn notify_stopping(extend: Option<Duration>) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(extra) = extend {
        let usec = u32::try_from(extra.as_micros()).unwrap_or(u32::MAX);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(usec)]);
    }
}

impl Subscriber<Acrnd> for Core {
    type Timer = CoreTimer;
    type Done = Done;

    fn init(&mut self, ops: &mut CoreOps<'_>) -> io::Result<()> {
        ops.arm_after(CoreTimer::Boot, Duration::ZERO);
        Ok(())
    }

    fn on_event(&mut self, event: &MioEvent, ops: &mut CoreOps<'_>, s: &mut Acrnd) {
        self.exited(event.token(), ops, s);
    }

    fn on_timer(&mut self, key: CoreTimer, ops: &mut CoreOps<'_>, s: &mut Acrnd) {
        match key {
            CoreTimer::Boot => {
                if let Some(w) = self.watchdog {
                    // The only periodic wake-up of an idle acrnd, and only when systemd asks.
                    let half = w / 2;
                    ops.arm_periodic(CoreTimer::Watchdog, Instant::now() + half, half);
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                self.feed(Event::Boot, ops, s);
            }
            CoreTimer::Watchdog => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            CoreTimer::Orch(t) => self.feed(Event::Timer(t), ops, s),
        }
    }

    fn on_done(&mut self, done: Done, ops: &mut CoreOps<'_>, s: &mut Acrnd) {
        let event = match done {
            Done::Dm {
                vm,
                kind,
                reply,
                answer,
            } => Event::Dm {
                vm,
                kind,
                reply,
                answer,
            },
            Done::Reason { why, reason } => Event::Reason { why, reason },
            Done::Lcs { what, ok } => Event::LcsDelivered { what, ok },
            Done::Intent(intent) => Event::Intent(intent),
            Done::Persisted { error } => return self.persisted(error, ops, s),
        };
        self.feed(event, ops, s);
    }

    fn on_notify(&mut self, ops: &mut CoreOps<'_>, s: &mut Acrnd) {
        self.catch_up(ops, s);
    }
}
