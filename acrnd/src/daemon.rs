//! acrnd wiring: one event loop, one owner of the state.
//!
//! * [`Acrnd`] (the loop's state) holds the VM table, the RTC timers, the stop-all in
//!   progress and a queue of work for the core; the `acrnd` server's handlers change it and
//!   answer (at once, or deferred until a device model or the disk has answered).
//! * The `Core` subscriber does everything that needs the loop: it runs requests to the
//!   device models and to the lifecycle service on worker threads, watches every device-model
//!   process through a pidfd (a crashed DM is "stopped" at once, with no polling), arms the
//!   timers (next RTC wake-up, stop-all deadline, boot starts, transition polls) and handles
//!   SIGTERM.
//! * One persistence worker writes the timer store, so an `fsync` never blocks the loop;
//!   ACRND_TIMER is acked only once its timer is on disk.
//!
//! Per-VM operations are serialized: a VM has at most one operation in flight, and a
//! request that conflicts with it or with the VM's state gets `-EBUSY` or `-EINVAL`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Child;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use mio::event::Event as MioEvent;
use mio::unix::SourceFd;
use mio::{Interest, Token};
use mngr_ipc::cbc::reason as wake;
use mngr_ipc::client::{Client, ClientError};
use mngr_ipc::event_log::EventLog;
use mngr_ipc::host::{self, HostIntent};
use mngr_ipc::msg::{
    Ack, AckPayload, Body, MsgId, Request, Status, StopTarget, TimerEntry, TimerPage, VmEntry,
    VmPage, epoch_now, err, suspend_mode,
};
use mngr_ipc::naming::monitor_name;
use mngr_ipc::runtime::{EventLoop, Notifier, Ops, SignalSubscriber, Subscriber};
use mngr_ipc::server::{
    Access, Call, DeferredAck, Handlers, IpcServer, PeerCred, Reply, ServerConfig, ServerError,
};
use serde_json::json;
use thiserror::Error;

use crate::config::Config;
use crate::coordinator::{Report, VmState, blockers, completion};
use crate::timers::{FaultPoint, TimerStore, Timers, nearest};
use crate::vms::{self, LaunchSpec};

const INTENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts to learn a launched VM's state by DM_QUERY before giving up on it.
const MAX_START_POLLS: u32 = 120;

/// Why acrnd stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    /// The event log cannot be opened.
    #[error("Cannot open the event log")]
    EventLog(#[source] io::Error),
    /// The state directory cannot be made.
    #[error("Cannot create the state directory")]
    StateDir(#[source] io::Error),
    /// The server socket cannot be bound.
    #[error("Cannot serve mngr IPC")]
    Serve(#[from] ServerError),
    /// The event loop failed.
    #[error("Event loop failed")]
    Loop(#[source] io::Error),
}

/// A request to a device model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DmKind {
    Query,
    Stop { force: i32 },
    Suspend,
    Resume { reason: u32 },
}

/// Why the wakeup reason is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReasonFor {
    Boot,
    Resume,
}

enum Work {
    Dm {
        vm: String,
        kind: DmKind,
        reply: Option<DeferredAck>,
    },
    Launch {
        vm: String,
        reason: u32,
        reply: Option<DeferredAck>,
    },
    AskReason(ReasonFor),
    Persist {
        reply: Option<DeferredAck>,
        undo: Option<(String, Option<u64>, u64)>,
    },
    StopAll {
        target: StopTarget,
        force: bool,
        timeout: Duration,
    },
    Rearm,
    Check,
    Terminate,
}

enum Done {
    Dm {
        vm: String,
        kind: DmKind,
        reply: Option<DeferredAck>,
        result: Box<Result<Ack, ClientError>>,
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
        undo: Option<(String, Option<u64>, u64)>,
        error: Option<String>,
    },
    Intent(HostIntent),
}

struct PersistJob {
    timers: Timers,
    reply: Option<DeferredAck>,
    undo: Option<(String, Option<u64>, u64)>,
}

struct Vm {
    state: VmState,
    /// The state before the operation in flight, restored if the device model refuses it.
    before: VmState,
    spec: Option<LaunchSpec>,
    pid: Option<u32>,
    child: Option<Child>,
    watch: Option<(File, Token)>,
    busy: bool,
    polls: u32,
    query_out: bool,
    /// DM_NOTIFYs applied so far, and their count when the DM_QUERY in flight was sent: an
    /// answer overtaken by a DM_NOTIFY is stale.
    notified: u64,
    query_from: u64,
}

impl Vm {
    fn new(spec: Option<LaunchSpec>) -> Self {
        Vm {
            state: VmState::Stopped,
            before: VmState::Stopped,
            spec,
            pid: None,
            child: None,
            watch: None,
            busy: false,
            polls: 0,
            query_out: false,
            notified: 0,
            query_from: 0,
        }
    }
}

struct StopAll {
    target: StopTarget,
    force: bool,
    started: Instant,
    forcing: bool,
}

/// What acrnd is doing as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle = 0,
    Stopping = 1,
    Suspending = 2,
    Resuming = 3,
}

/// The daemon's state, owned by the event loop.
pub struct Acrnd {
    cfg: Config,
    log: EventLog,
    vms: BTreeMap<String, Vm>,
    timers: Timers,
    reason: u32,
    lcs_reachable: bool,
    stop_all: Option<StopAll>,
    /// A stop-all was reported to the lifecycle service: the system is going down, so no
    /// timer fires until it resumes.
    held: bool,
    phase: Phase,
    start_queue: VecDeque<String>,
    terminating: Option<HostIntent>,
    work: VecDeque<Work>,
    core: Option<Notifier>,
}

impl std::fmt::Debug for Acrnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acrnd")
            .field("vms", &self.vms.len())
            .field("timers", &self.timers)
            .finish_non_exhaustive()
    }
}

fn now_epoch() -> u64 {
    epoch_now()
}

impl Acrnd {
    /// Whether timers must wait: a power transition runs or is reported.
    fn timers_held(&self) -> bool {
        self.stop_all.is_some() || self.terminating.is_some() || self.held
    }

    fn push(&mut self, w: Work) {
        self.work.push_back(w);
        if let Some(n) = &self.core {
            n.notify();
        }
    }

    fn set_state(&mut self, name: &str, state: VmState, why: &str) {
        let Some(vm) = self.vms.get_mut(name) else {
            return;
        };
        if vm.state == state {
            return;
        }
        log::info!("VM {name}: {} -> {} ({why})", vm.state.name(), state.name());
        self.log.emit(
            "vm.state",
            json!({"vm": name, "from": vm.state.name(), "to": state.name(), "why": why}),
        );
        if vm.state == VmState::Starting {
            vm.polls = 0;
        }
        vm.state = state;
        self.push(Work::Check);
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

    fn note(&self, req: &Request, peer: &PeerCred) {
        log::debug!("{} from pid {} uid {}", req.id(), peer.pid, peer.uid);
        self.log.emit(
            "ipc.request",
            json!({"msg": req.id().name(), "pid": peer.pid, "uid": peer.uid, "body": format!("{:?}", req.body)}),
        );
    }

    fn on_timer_request(&mut self, req: &Request, call: Call<'_>) -> Reply {
        let peer = call.peer();
        self.note(req, &peer);
        let Body::AcrndTimer { name, t } = &req.body else {
            return call.err(err::INVALID);
        };
        let Some(vm) = self.vms.get(name) else {
            log::warn!("ACRND_TIMER for unknown VM {name:?}");
            return call.err(err::NOT_FOUND);
        };
        let from_its_dm = vm.pid.is_some_and(|p| i64::from(p) == i64::from(peer.pid));
        if !from_its_dm && !self.cfg.policy.allows(&peer) {
            return self.refuse(req, call);
        }
        let Ok(delay) = u64::try_from(*t) else {
            log::warn!("ACRND_TIMER for {name} with negative delay {t}");
            return call.err(err::INVALID);
        };
        let when = now_epoch().saturating_add(delay);
        if i64::try_from(when).is_err() {
            return call.err(err::INVALID);
        }
        let prev = self.timers.insert(name.clone(), when);
        log::info!("RTC wake-up for {name} at epoch {when} (in {delay} s)");
        self.log
            .emit("timer", json!({"vm": name, "when": when, "delay": delay}));
        let (reply, d) = call.defer();
        self.push(Work::Persist {
            reply: Some(d),
            undo: Some((name.clone(), prev, when)),
        });
        self.push(Work::Rearm);
        reply
    }

    fn on_notify(&mut self, req: &Request, call: Call<'_>) -> Reply {
        let peer = call.peer();
        self.note(req, &peer);
        let Body::DmNotify { name, mode } = &req.body else {
            return call.err(err::INVALID);
        };
        let Some(vm) = self.vms.get(name) else {
            return call.err(err::NOT_FOUND);
        };
        let from_its_dm = vm.pid.is_some_and(|p| i64::from(p) == i64::from(peer.pid));
        if !from_its_dm && !self.cfg.policy.allows(&peer) {
            log::warn!(
                "DM_NOTIFY for {name} from pid {} which is not its device model ({:?})",
                peer.pid,
                vm.pid
            );
            return self.refuse(req, call);
        }
        if let Some(v) = self.vms.get_mut(name) {
            v.notified += 1;
        }
        self.apply_mode(name, *mode, "DM_NOTIFY");
        call.ack(AckPayload::Err(err::OK))
    }

    /// Takes a device-model suspend mode (from DM_NOTIFY or DM_QUERY) into the VM state.
    fn apply_mode(&mut self, name: &str, mode: i32, source: &str) {
        let Some(vm) = self.vms.get(name) else { return };
        let next = match (mode, vm.state) {
            (suspend_mode::NONE, VmState::Starting | VmState::Suspended) => VmState::Started,
            (suspend_mode::NONE, s) => s,
            (suspend_mode::SUSPEND, _) => VmState::Suspended,
            (suspend_mode::POWEROFF | suspend_mode::HALT, _) => VmState::Stopped,
            (_, s) => s,
        };
        self.set_state(name, next, source);
    }

    fn on_stop(&mut self, req: &Request, call: Call<'_>) -> Reply {
        let peer = call.peer();
        self.note(req, &peer);
        if !self.cfg.policy.allows(&peer) {
            return self.refuse(req, call);
        }
        let Body::AcrndStop {
            force,
            timeout,
            target,
        } = req.body
        else {
            return call.err(err::INVALID);
        };
        if self.stop_all.is_some() {
            log::info!("ACRND_STOP while a stop-all runs: it continues");
            return call.ack(AckPayload::Err(err::OK));
        }
        let timeout = Duration::from_secs(u64::from(timeout.max(1)));
        self.push(Work::StopAll {
            target,
            force: force != 0,
            timeout,
        });
        call.ack(AckPayload::Err(err::OK))
    }

    fn on_suspend_all(&mut self, req: &Request, call: Call<'_>) -> Reply {
        let peer = call.peer();
        self.note(req, &peer);
        if !self.cfg.policy.allows(&peer) {
            return self.refuse(req, call);
        }
        let names: Vec<String> = self
            .vms
            .iter()
            .filter(|(_, v)| v.state == VmState::Started && !v.busy)
            .map(|(n, _)| n.clone())
            .collect();
        for vm in names {
            self.begin(&vm, VmState::Suspending);
            self.push(Work::Dm {
                vm,
                kind: DmKind::Suspend,
                reply: None,
            });
        }
        call.ack(AckPayload::Err(err::OK))
    }

    fn on_resume(&mut self, req: &Request, call: Call<'_>) -> Reply {
        let peer = call.peer();
        self.note(req, &peer);
        if !self.cfg.policy.allows(&peer) {
            return self.refuse(req, call);
        }
        if self.terminating.is_some() {
            log::info!("ACRND_RESUME ignored: acrnd is stopping the VMs for a host shutdown");
            return call.err(err::BUSY);
        }
        if let Some(stop) = self.stop_all.take() {
            // Ignition came back: its deadline timer finds no stop-all and does nothing.
            log::info!("ACRND_RESUME: the stop-all under way is abandoned");
            self.log.emit(
                "stop_all.cancelled",
                json!({"target": format!("{:?}", stop.target)}),
            );
        }
        self.phase = Phase::Resuming;
        self.push(Work::AskReason(ReasonFor::Resume));
        call.ack(AckPayload::Err(err::OK))
    }

    fn begin(&mut self, name: &str, state: VmState) {
        if let Some(vm) = self.vms.get_mut(name) {
            vm.busy = true;
            vm.before = vm.state;
        }
        self.set_state(name, state, "request");
    }

    fn ctl(&mut self, req: &Request, call: Call<'_>) -> Reply {
        let peer = call.peer();
        self.note(req, &peer);
        let mutating = !matches!(
            req.body,
            Body::CtlList { .. } | Body::CtlTimers { .. } | Body::CtlStatus
        );
        if mutating && !self.cfg.policy.allows(&peer) {
            return self.refuse(req, call);
        }
        match &req.body {
            Body::CtlList { start } => self.list_page(*start, call),
            Body::CtlTimers { start } => self.timer_page(*start, call),
            Body::CtlStatus => call.ack(AckPayload::Status(Status {
                err: err::OK,
                wakeup_reason: self.reason,
                vms: u32::try_from(self.vms.len()).unwrap_or(u32::MAX),
                lcs_reachable: u32::from(self.lcs_reachable),
                phase: self.phase as u32,
            })),
            Body::CtlStart { name } => self.ctl_vm(name, false, 0, call, |vm| match vm.state {
                VmState::Stopped if vm.spec.is_some() => Ok(VmState::Starting),
                VmState::Stopped => Err(err::UNSUPPORTED),
                _ => Err(err::INVALID),
            }),
            Body::CtlStop { name, force, .. } => {
                let force = *force;
                self.ctl_vm(name, force != 0, 0, call, move |vm| match vm.state {
                    VmState::Started | VmState::Starting | VmState::Suspended => {
                        Ok(VmState::Stopping)
                    }
                    VmState::Stopping | VmState::Suspending if force != 0 => Ok(VmState::Stopping),
                    _ => Err(err::INVALID),
                })
            }
            Body::CtlSuspend { name } => self.ctl_vm(name, false, 0, call, |vm| match vm.state {
                VmState::Started => Ok(VmState::Suspending),
                _ => Err(err::INVALID),
            }),
            Body::CtlResume { name, reason } => {
                self.ctl_vm(name, false, *reason, call, |vm| match vm.state {
                    VmState::Suspended => Ok(VmState::Starting),
                    _ => Err(err::INVALID),
                })
            }
            _ => call.err(err::INVALID),
        }
    }

    /// Serialized per-VM operation: checks the VM, its state and the power phase, then
    /// queues the operation; the ack is deferred until the device model answered.
    fn ctl_vm(
        &mut self,
        name: &str,
        force: bool,
        reason: u32,
        call: Call<'_>,
        allowed: impl FnOnce(&Vm) -> Result<VmState, i32>,
    ) -> Reply {
        let id = call.id();
        let Some(vm) = self.vms.get(name) else {
            return call.err(err::NOT_FOUND);
        };
        let force_stop = matches!(id, MsgId::CtlStop) && vm.state == VmState::Stopping;
        let suspended = vm.state == VmState::Suspended;
        if (vm.busy && !force_stop) || (self.stop_all.is_some() && id == MsgId::CtlStart) {
            log::info!("{id} for {name} refused: another operation is in progress");
            return call.err(err::BUSY);
        }
        let next = match allowed(vm) {
            Ok(s) => s,
            Err(code) => {
                log::info!("{id} for {name} refused in state {}", vm.state.name());
                return call.err(code);
            }
        };
        let (reply, d) = call.defer();
        match d.id() {
            MsgId::CtlStart => {
                self.begin(name, next);
                let reason = if self.reason == 0 {
                    wake::DEFAULT_BOOT
                } else {
                    self.reason
                };
                self.push(Work::Launch {
                    vm: name.to_owned(),
                    reason,
                    reply: Some(d),
                });
            }
            _ => {
                let kind = match d.id() {
                    // A suspended guest cannot act on a request: only a forced stop works.
                    MsgId::CtlStop => DmKind::Stop {
                        force: i32::from(force || suspended),
                    },
                    MsgId::CtlSuspend => DmKind::Suspend,
                    // Never resume with 0: the virtual IOC needs a reason (default: button).
                    _ => DmKind::Resume {
                        reason: if reason == 0 {
                            wake::DEFAULT_BOOT
                        } else {
                            reason
                        },
                    },
                };
                self.begin(name, next);
                self.push(Work::Dm {
                    vm: name.to_owned(),
                    kind,
                    reply: Some(d),
                });
            }
        }
        reply
    }

    fn list_page(&self, start: u32, call: Call<'_>) -> Reply {
        let cap = self.cfg.profile.vm_page_capacity();
        let entries = self
            .vms
            .iter()
            .skip(usize::try_from(start).unwrap_or(usize::MAX))
            .take(cap)
            .map(|(n, v)| VmEntry {
                name: n.clone(),
                state: v.state.wire(),
                pid: v.pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0),
                next_wake: self
                    .timers
                    .get(n)
                    .and_then(|w| i64::try_from(*w).ok())
                    .unwrap_or(0),
            })
            .collect();
        call.ack(AckPayload::VmPage(VmPage {
            err: err::OK,
            total: u32::try_from(self.vms.len()).unwrap_or(u32::MAX),
            entries,
        }))
    }

    fn timer_page(&self, start: u32, call: Call<'_>) -> Reply {
        let cap = self.cfg.profile.timer_page_capacity();
        let mut all: Vec<(&String, &u64)> = self.timers.iter().collect();
        all.sort_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)));
        let entries = all
            .into_iter()
            .skip(usize::try_from(start).unwrap_or(usize::MAX))
            .take(cap)
            .map(|(n, w)| TimerEntry {
                name: n.clone(),
                when: i64::try_from(*w).unwrap_or(i64::MAX),
            })
            .collect();
        call.ack(AckPayload::TimerPage(TimerPage {
            err: err::OK,
            total: u32::try_from(self.timers.len()).unwrap_or(u32::MAX),
            entries,
        }))
    }
}

fn handlers() -> Handlers<Acrnd> {
    Handlers::new()
        .on(MsgId::AcrndTimer, Access::Open, |r, c, s: &mut Acrnd| {
            s.on_timer_request(r, c)
        })
        .on(MsgId::AcrndReason, Access::Open, |r, c, s: &mut Acrnd| {
            s.note(r, &c.peer());
            c.ack(AckPayload::Reason(s.reason))
        })
        .on(MsgId::DmNotify, Access::Open, |r, c, s: &mut Acrnd| {
            s.on_notify(r, c)
        })
        .on(MsgId::AcrndStop, Access::Open, |r, c, s: &mut Acrnd| {
            s.on_stop(r, c)
        })
        .on(MsgId::AcrndSuspend, Access::Open, |r, c, s: &mut Acrnd| {
            s.on_suspend_all(r, c)
        })
        .on(MsgId::AcrndResume, Access::Open, |r, c, s: &mut Acrnd| {
            s.on_resume(r, c)
        })
        .on(MsgId::CtlList, Access::Open, |r, c, s: &mut Acrnd| {
            s.ctl(r, c)
        })
        .on(MsgId::CtlTimers, Access::Open, |r, c, s: &mut Acrnd| {
            s.ctl(r, c)
        })
        .on(MsgId::CtlStatus, Access::Open, |r, c, s: &mut Acrnd| {
            s.ctl(r, c)
        })
        .on(MsgId::CtlStart, Access::Open, |r, c, s: &mut Acrnd| {
            s.ctl(r, c)
        })
        .on(MsgId::CtlStop, Access::Open, |r, c, s: &mut Acrnd| {
            s.ctl(r, c)
        })
        .on(MsgId::CtlSuspend, Access::Open, |r, c, s: &mut Acrnd| {
            s.ctl(r, c)
        })
        .on(MsgId::CtlResume, Access::Open, |r, c, s: &mut Acrnd| {
            s.ctl(r, c)
        })
}

/// The subscriber that owns timers, watches and workers.
struct Core {
    client: Client,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    persist_tx: Sender<PersistJob>,
    notifier: Option<Notifier>,
    asked_intent: bool,
    watches: HashMap<Token, String>,
    last_start: Option<Instant>,
}

impl Core {
    fn spawn_dm(&self, s: &mut Acrnd, vm: String, kind: DmKind, reply: Option<DeferredAck>) {
        let body = match &kind {
            DmKind::Query => Body::DmQuery,
            DmKind::Stop { force } => Body::DmStop { force: *force },
            DmKind::Suspend => Body::DmSuspend,
            DmKind::Resume { reason } => Body::DmResume { reason: *reason },
        };
        if kind == DmKind::Query {
            if let Some(v) = s.vms.get_mut(&vm) {
                v.query_out = true;
                v.query_from = v.notified;
            }
        } else {
            log::info!("{:?} to {vm}", kind);
            s.log
                .emit("dm.send", json!({"vm": vm, "msg": format!("{kind:?}")}));
        }
        let client = self.client.clone();
        let timeout = s.cfg.dm_timeout;
        let tx = self.done_tx.clone();
        let notifier = self.notifier.clone();
        let job = move || {
            let result = client.send(&monitor_name(&vm), &Request::now(body), timeout);
            let _ = tx.send(Done::Dm {
                vm,
                kind,
                reply,
                result: Box::new(result),
            });
            if let Some(n) = notifier {
                n.notify();
            }
        };
        if let Err(e) = std::thread::Builder::new().name("worker".into()).spawn(job) {
            // The job is gone; a deferred ack it carried answers -1 when dropped.
            log::error!("Cannot start a worker: {e}");
        }
    }

    fn lcs_send(
        &self,
        s: &Acrnd,
        requests: Vec<(&'static str, Request)>,
        done: impl FnOnce(Option<Ack>) -> Done + Send + 'static,
    ) {
        let client = self.client.clone();
        let names = s.cfg.lcs_names.clone();
        let timeout = s.cfg.lcs_timeout;
        let tx = self.done_tx.clone();
        let notifier = self.notifier.clone();
        let log = s.log.clone();
        let job = move || {
            let mut last = None;
            for (what, req) in requests {
                last = None;
                for name in &names {
                    match client.send(name, &req, timeout) {
                        Ok(ack) => {
                            log::info!("{what} to {name}: err {:?}", ack.err());
                            log.emit(
                                "lcs.result",
                                json!({"msg": what, "to": name, "ok": true, "err": ack.err()}),
                            );
                            last = Some(ack);
                            break;
                        }
                        Err(ClientError::NotFound { .. }) => continue,
                        Err(e) => {
                            log::warn!("{what} to {name} failed: {e}");
                            log.emit("lcs.result", json!({"msg": what, "to": name, "ok": false, "error": e.to_string()}));
                            break;
                        }
                    }
                }
                if last.is_none() {
                    log::info!("No lifecycle service took {what} (degraded mode: no IOC)");
                }
            }
            let _ = tx.send(done(last));
            if let Some(n) = notifier {
                n.notify();
            }
        };
        if let Err(e) = std::thread::Builder::new().name("worker".into()).spawn(job) {
            // The job is gone; a deferred ack it carried answers -1 when dropped.
            log::error!("Cannot start a worker: {e}");
        }
    }

    fn launch(
        &mut self,
        s: &mut Acrnd,
        vm: &str,
        reason: u32,
        reply: Option<DeferredAck>,
        ops: &mut Ops<'_, Acrnd, Core>,
    ) {
        let Some(spec) = s.vms.get(vm).and_then(|v| v.spec.clone()) else {
            if let Some(d) = reply {
                d.fail(err::UNSUPPORTED);
            }
            return;
        };
        log::info!("Launching {vm} with wakeup reason {reason:#x}");
        match vms::launch(&spec, reason) {
            Ok(child) => {
                let pid = child.id();
                s.log
                    .emit("vm.launch", json!({"vm": vm, "pid": pid, "reason": reason}));
                if let Some(v) = s.vms.get_mut(vm) {
                    v.pid = Some(pid);
                    v.child = Some(child);
                    v.busy = false;
                    v.polls = 0;
                }
                s.set_state(vm, VmState::Starting, "launched");
                self.watch(s, vm, pid, ops);
                self.ensure_poll(s, ops);
                if let Some(d) = reply {
                    d.complete(AckPayload::Err(err::OK));
                }
            }
            Err(e) => {
                log::error!("Cannot launch {vm}: {e}");
                if let Some(v) = s.vms.get_mut(vm) {
                    v.busy = false;
                }
                s.set_state(vm, VmState::Stopped, "launch failed");
                if let Some(d) = reply {
                    d.fail(err::FAILED);
                }
            }
        }
    }

    /// Watches the device-model process of `vm` through a pidfd.
    fn watch(&mut self, s: &mut Acrnd, vm: &str, pid: u32, ops: &mut Ops<'_, Acrnd, Core>) {
        let Some(v) = s.vms.get_mut(vm) else { return };
        if let Some((f, t)) = v.watch.take() {
            ops.deregister(&mut SourceFd(&f.as_raw_fd()), t);
            self.watches.remove(&t);
        }
        match mngr_ipc::sys::pidfd_open(pid) {
            Ok(fd) => {
                let f = File::from(fd);
                match ops.register(&mut SourceFd(&f.as_raw_fd()), Interest::READABLE) {
                    Ok(t) => {
                        self.watches.insert(t, vm.to_owned());
                        v.watch = Some((f, t));
                    }
                    Err(e) => log::warn!("Cannot watch {vm} (pid {pid}): {e}"),
                }
            }
            Err(e) => log::warn!("Cannot watch {vm} (pid {pid}): {e}"),
        }
    }

    /// The device model of `vm` exited.
    fn exited(&mut self, s: &mut Acrnd, vm: &str, ops: &mut Ops<'_, Acrnd, Core>) {
        let Some(v) = s.vms.get_mut(vm) else { return };
        if let Some((f, t)) = v.watch.take() {
            ops.deregister(&mut SourceFd(&f.as_raw_fd()), t);
            self.watches.remove(&t);
        }
        let status = v.child.take().map(|mut c| c.try_wait());
        let pid = v.pid.take();
        v.busy = false;
        match &status {
            Some(Ok(Some(st))) => log::info!("VM {vm}: device model (pid {pid:?}) exited: {st}"),
            Some(Ok(None)) => log::warn!("VM {vm}: pid {pid:?} reported gone but not reapable yet"),
            Some(Err(e)) => log::warn!("VM {vm}: cannot reap pid {pid:?}: {e}"),
            None => log::info!("VM {vm}: device model (pid {pid:?}) is gone"),
        }
        let code = match &status {
            Some(Ok(Some(st))) => st.code(),
            _ => None,
        };
        s.log
            .emit("vm.exit", json!({"vm": vm, "pid": pid, "code": code}));
        s.set_state(vm, VmState::Stopped, "device model exited");
        self.pump_starts(s, ops);
    }

    fn ensure_poll(&mut self, s: &Acrnd, ops: &mut Ops<'_, Acrnd, Core>) {
        let transitional = s.vms.values().any(|v| {
            matches!(
                v.state,
                VmState::Starting | VmState::Stopping | VmState::Suspending
            )
        });
        if transitional && !ops.is_armed(&CoreTimer::Poll) {
            ops.arm_after(CoreTimer::Poll, s.cfg.poll);
        }
    }

    fn poll_transitions(&mut self, s: &mut Acrnd, ops: &mut Ops<'_, Acrnd, Core>) {
        let due: Vec<String> = s
            .vms
            .iter_mut()
            .filter(|(_, v)| {
                !v.query_out
                    && matches!(
                        v.state,
                        VmState::Starting | VmState::Stopping | VmState::Suspending
                    )
            })
            .filter_map(|(n, v)| {
                v.polls += 1;
                (v.polls <= MAX_START_POLLS).then(|| n.clone())
            })
            .collect();
        for vm in due {
            self.spawn_dm(s, vm, DmKind::Query, None);
        }
        self.ensure_poll(s, ops);
    }

    fn pump_starts(&mut self, s: &mut Acrnd, ops: &mut Ops<'_, Acrnd, Core>) {
        if s.stop_all.is_some() || s.terminating.is_some() {
            return;
        }
        while let Some(vm) = s.start_queue.front().cloned() {
            let starting = s
                .vms
                .values()
                .filter(|v| v.state == VmState::Starting)
                .count();
            if starting >= s.cfg.start_parallel {
                return;
            }
            if let Some(last) = self.last_start {
                let next = last + s.cfg.start_delay;
                if Instant::now() < next {
                    ops.arm_unless_armed(CoreTimer::Start, next);
                    return;
                }
            }
            s.start_queue.pop_front();
            if s.vms
                .get(&vm)
                .is_some_and(|v| v.state == VmState::Stopped && !v.busy)
            {
                self.last_start = Some(Instant::now());
                let reason = if s.reason == 0 {
                    wake::DEFAULT_BOOT
                } else {
                    s.reason
                };
                self.launch(s, &vm, reason, None, ops);
            }
        }
    }

    /// Re-attaches to the device models found running (the VM table was filled before the
    /// socket was bound), then asks why the system woke.
    fn boot(&mut self, s: &mut Acrnd, ops: &mut Ops<'_, Acrnd, Core>) {
        let live: Vec<(String, u32)> = s
            .vms
            .iter()
            .filter_map(|(n, v)| v.pid.map(|p| (n.clone(), p)))
            .collect();
        for (name, pid) in live {
            log::info!("Re-attaching to the device model of {name} (pid {pid})");
            self.watch(s, &name, pid, ops);
            self.spawn_dm(s, name, DmKind::Query, None);
        }
        s.log.emit(
            "boot",
            json!({"vms": s.vms.keys().collect::<Vec<_>>(), "timers": s.timers.len()}),
        );
        s.push(Work::AskReason(ReasonFor::Boot));
    }

    /// Timers due now: launch or resume their VMs (unless a power transition runs).
    fn fire_timers(&mut self, s: &mut Acrnd, ops: &mut Ops<'_, Acrnd, Core>) {
        if s.timers_held() {
            return;
        }
        let now = now_epoch();
        let due: Vec<String> = s
            .timers
            .iter()
            .filter(|(_, w)| **w <= now)
            .map(|(n, _)| n.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        for vm in &due {
            s.timers.remove(vm);
            let state = s.vms.get(vm).map(|v| (v.state, v.busy));
            log::info!("RTC timer of {vm} is due");
            s.log.emit("timer.fire", json!({"vm": vm}));
            match state {
                Some((VmState::Stopped, false)) => {
                    s.begin(vm, VmState::Starting);
                    self.launch(s, vm, wake::RTC, None, ops);
                }
                Some((VmState::Suspended, false)) => {
                    s.begin(vm, VmState::Starting);
                    self.spawn_dm(s, vm.clone(), DmKind::Resume { reason: wake::RTC }, None);
                }
                Some((st, _)) => log::info!("{vm} is {}: its timer has nothing to do", st.name()),
                None => log::warn!("Timer of unknown VM {vm} dropped"),
            }
        }
        s.push(Work::Persist {
            reply: None,
            undo: None,
        });
    }

    fn rearm(&mut self, s: &Acrnd, ops: &mut Ops<'_, Acrnd, Core>) {
        ops.cancel(&CoreTimer::Wake);
        let now = now_epoch();
        // While timers are held, a due one waits for the resume (which fires it): arming it
        // would only spin the loop.
        let next = if s.timers_held() {
            s.timers.values().copied().filter(|w| *w > now).min()
        } else {
            nearest(&s.timers).map(|(_, w)| w)
        };
        if let Some(when) = next {
            let delay = when.saturating_sub(now);
            ops.arm_after(CoreTimer::Wake, Duration::from_secs(delay));
        }
    }

    fn on_reason(
        &mut self,
        s: &mut Acrnd,
        why: ReasonFor,
        reason: Option<u32>,
        ops: &mut Ops<'_, Acrnd, Core>,
    ) {
        // The system is up again: timers may fire.
        s.held = false;
        s.lcs_reachable = reason.is_some();
        let r = reason.unwrap_or(0);
        s.reason = r;
        s.log.emit(
            "reason",
            json!({"for": format!("{why:?}"), "reason": r, "lcs": reason.is_some()}),
        );
        let rtc = r & wake::RTC != 0;
        match why {
            ReasonFor::Boot if rtc => {
                log::info!("Woken by RTC ({r:#x}): launching only the VMs whose timers are due");
                self.fire_timers(s, ops);
            }
            ReasonFor::Boot => {
                if s.cfg.autostart {
                    let stopped: Vec<String> = s
                        .vms
                        .iter()
                        .filter(|(_, v)| v.state == VmState::Stopped && v.spec.is_some())
                        .map(|(n, _)| n.clone())
                        .collect();
                    log::info!("Boot (reason {r:#x}): starting {stopped:?}");
                    s.start_queue.extend(stopped);
                    self.pump_starts(s, ops);
                }
                self.resume_suspended(s, r);
            }
            ReasonFor::Resume if rtc => {
                log::info!("Resumed by RTC ({r:#x}): only the VMs whose timers are due");
                self.fire_timers(s, ops);
            }
            ReasonFor::Resume => self.resume_suspended(s, r),
        }
        if why == ReasonFor::Resume {
            s.phase = Phase::Idle;
        }
        self.rearm(s, ops);
    }

    fn resume_suspended(&mut self, s: &mut Acrnd, reason: u32) {
        let reason = if reason == 0 {
            wake::DEFAULT_BOOT
        } else {
            reason
        };
        // Also the VMs an abandoned stop-all left on their way down: their device models
        // hold the emulated ignition-off until a resume clears it.
        let suspended: Vec<String> = s
            .vms
            .iter()
            .filter(|(_, v)| {
                !v.busy
                    && (v.state == VmState::Suspended
                        || (v.pid.is_some()
                            && matches!(v.state, VmState::Suspending | VmState::Stopping)))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for vm in suspended {
            // Starting until its device model confirms it runs again (DM_NOTIFY or query).
            s.begin(&vm, VmState::Starting);
            self.spawn_dm(s, vm, DmKind::Resume { reason }, None);
        }
    }

    fn on_dm_done(
        &mut self,
        s: &mut Acrnd,
        vm: String,
        kind: DmKind,
        reply: Option<DeferredAck>,
        result: Result<Ack, ClientError>,
        ops: &mut Ops<'_, Acrnd, Core>,
    ) {
        if kind == DmKind::Query {
            let mut stale = false;
            if let Some(v) = s.vms.get_mut(&vm) {
                v.query_out = false;
                stale = v.notified != v.query_from;
            }
            match result {
                Ok(_) if stale => {
                    log::debug!("DM_QUERY answer of {vm} overtaken by its DM_NOTIFY: ignored");
                }
                Ok(ack) => {
                    if let AckPayload::State(mode) = ack.payload {
                        s.apply_mode(&vm, mode, "DM_QUERY");
                    }
                }
                Err(ClientError::NotFound { .. }) => {
                    let gone = s
                        .vms
                        .get(&vm)
                        .is_some_and(|v| v.child.is_none() && v.state != VmState::Starting);
                    if gone {
                        s.set_state(&vm, VmState::Stopped, "no device model");
                    }
                }
                Err(e) => log::debug!("DM_QUERY to {vm}: {e}"),
            }
            self.ensure_poll(s, ops);
            return;
        }
        if let Some(v) = s.vms.get_mut(&vm) {
            v.busy = false;
        }
        let code = match &result {
            Ok(ack) => ack.err().unwrap_or(err::OK),
            Err(e) => {
                log::warn!("{kind:?} to {vm} failed: {e}");
                err::FAILED
            }
        };
        s.log.emit(
            "dm.result",
            json!({"vm": vm, "msg": format!("{kind:?}"), "err": code}),
        );
        if code != err::OK {
            log::warn!("{vm} answered {kind:?} with {code}");
            // The VM did not take the request: back to where it was, then ask it.
            if let Some(before) = s.vms.get(&vm).map(|v| v.before) {
                s.set_state(&vm, before, "request refused");
            }
            self.spawn_dm(s, vm.clone(), DmKind::Query, None);
        }
        if let Some(d) = reply {
            d.complete(AckPayload::Err(code));
        }
        self.ensure_poll(s, ops);
    }

    fn start_stop_all(
        &mut self,
        s: &mut Acrnd,
        target: StopTarget,
        force: bool,
        timeout: Duration,
        ops: &mut Ops<'_, Acrnd, Core>,
    ) {
        log::info!("Stop-all: target {target:?}, force {force}, within {timeout:?}");
        s.log.emit(
            "stop_all.start",
            json!({"target": format!("{target:?}"), "force": force, "timeout_ms": timeout.as_millis()}),
        );
        s.phase = match target {
            StopTarget::S3 => Phase::Suspending,
            _ => Phase::Stopping,
        };
        s.start_queue.clear();
        ops.arm_after(CoreTimer::Deadline, timeout);
        s.stop_all = Some(StopAll {
            target,
            force,
            started: Instant::now(),
            forcing: false,
        });
        let running: Vec<String> = s
            .vms
            .iter()
            .filter(|(_, v)| matches!(v.state, VmState::Started | VmState::Starting))
            .map(|(n, _)| n.clone())
            .collect();
        for vm in running {
            match target {
                StopTarget::S5 => {
                    s.begin(&vm, VmState::Stopping);
                    self.spawn_dm(s, vm, DmKind::Stop { force: 0 }, None);
                }
                StopTarget::S3 => {
                    s.begin(&vm, VmState::Suspending);
                    self.spawn_dm(s, vm, DmKind::Suspend, None);
                }
                // The C cbc_lifecycle names no target: the guests act on the IOC's request
                // through their virtual IOCs; acrnd only waits.
                StopTarget::Unspecified => {}
            }
        }
        self.ensure_poll(s, ops);
        self.check(s, ops);
    }

    /// Completes a stop-all as soon as every VM has reached a final state.
    fn check(&mut self, s: &mut Acrnd, ops: &mut Ops<'_, Acrnd, Core>) {
        let states: Vec<VmState> = s.vms.values().map(|v| v.state).collect();
        let Some(report) = completion(&states) else {
            return;
        };
        let Some(stop) = s.stop_all.take() else {
            return;
        };
        ops.cancel(&CoreTimer::Deadline);
        ops.cancel(&CoreTimer::Kill);
        log::info!(
            "Stop-all complete after {:?}: {report:?}",
            stop.started.elapsed()
        );
        s.log.emit(
            "stop_all.done",
            json!({"report": format!("{report:?}"), "ms": stop.started.elapsed().as_millis()}),
        );
        if s.terminating.is_some() {
            ops.shutdown();
            return;
        }
        s.held = true;
        self.report(s, report, err::OK);
    }

    /// RTC_TIMER for the nearest wake-up (if any), then SHUTDOWN / SUSPEND with `code`.
    fn report(&mut self, s: &mut Acrnd, report: Report, code: i32) {
        let mut reqs = Vec::new();
        // The wake-up matters only if the system goes down (not on a refusal).
        if code == err::OK
            && let Some((vm, when)) = nearest(&s.timers)
        {
            let t = i64::try_from(when).unwrap_or(i64::MAX);
            log::info!("Asking the IOC to wake the system at epoch {t} (for {vm})");
            reqs.push((
                "RTC_TIMER",
                Request::now(Body::RtcTimer {
                    vmname: Vec::new(),
                    t,
                }),
            ));
        }
        let body = match report {
            Report::Shutdown => Body::Shutdown { err: code },
            Report::Suspend => Body::Suspend { err: code },
        };
        let what = if matches!(report, Report::Shutdown) {
            "SHUTDOWN"
        } else {
            "SUSPEND"
        };
        s.log.emit("lcs.report", json!({"msg": what, "err": code}));
        reqs.push((what, Request::now(body)));
        s.phase = Phase::Idle;
        self.lcs_send(s, reqs, move |ack| Done::Lcs {
            what,
            ok: ack.is_some(),
        });
    }

    fn deadline(&mut self, s: &mut Acrnd, ops: &mut Ops<'_, Acrnd, Core>) {
        let Some(stop) = s.stop_all.as_mut() else {
            return;
        };
        let names: BTreeMap<String, VmState> =
            s.vms.iter().map(|(n, v)| (n.clone(), v.state)).collect();
        let late: Vec<String> = blockers(&names).into_iter().map(str::to_owned).collect();
        let force = stop.force || s.cfg.force_on_deadline || s.terminating.is_some();
        log::warn!("Stop-all deadline: {late:?} did not finish");
        s.log.emit(
            "stop_all.deadline",
            json!({"blocking": late, "force": force}),
        );
        if force {
            stop.forcing = true;
            for vm in &late {
                s.begin(vm, VmState::Stopping);
                self.spawn_dm(s, vm.clone(), DmKind::Stop { force: 1 }, None);
            }
            ops.arm_after(CoreTimer::Kill, s.cfg.kill_grace);
        } else {
            s.stop_all = None;
            self.report(s, Report::Suspend, err::FAILED);
            // The power transition is abandoned: due timers may fire now.
            self.fire_timers(s, ops);
            self.rearm(s, ops);
        }
    }

    fn kill_stragglers(&mut self, s: &mut Acrnd) {
        for (name, v) in &mut s.vms {
            // Only the VMs that keep the stop-all from completing.
            if matches!(v.state, VmState::Stopped | VmState::Suspended) {
                continue;
            }
            let Some(pid) = v.pid.and_then(|p| i32::try_from(p).ok()) else {
                continue;
            };
            log::warn!("Killing the device model of {name} (pid {pid})");
            s.log.emit("vm.kill", json!({"vm": name, "pid": pid}));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// SIGTERM: asks what the host is doing on a worker, then [`Core::finish`] acts.
    fn terminate(&mut self, s: &mut Acrnd) {
        if s.terminating.is_some() || self.asked_intent {
            return;
        }
        self.asked_intent = true;
        let argv = s.cfg.intent_cmd.clone();
        let tx = self.done_tx.clone();
        let notifier = self.notifier.clone();
        let job = move || {
            let _ = tx.send(Done::Intent(host::host_intent(&argv, INTENT_TIMEOUT)));
            if let Some(n) = notifier {
                n.notify();
            }
        };
        if let Err(e) = std::thread::Builder::new().name("intent".into()).spawn(job) {
            log::warn!("Cannot ask for the host's intent ({e}): assuming a plain stop");
            let _ = self.done_tx.send(Done::Intent(HostIntent::None));
            if let Some(n) = &self.notifier {
                n.notify();
            }
        }
    }

    fn finish(&mut self, s: &mut Acrnd, intent: HostIntent, ops: &mut Ops<'_, Acrnd, Core>) {
        s.terminating = Some(intent);
        s.log.emit("exit", json!({"intent": intent.name()}));
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        match intent {
            HostIntent::None => {
                log::info!("Service stop: the VMs keep running");
                ops.shutdown();
            }
            HostIntent::Poweroff | HostIntent::Reboot => {
                let budget = s.cfg.shutdown_budget;
                log::info!(
                    "Host {}: stopping every VM within {budget:?}",
                    intent.name()
                );
                let usec =
                    u32::try_from((budget + s.cfg.kill_grace + Duration::from_secs(5)).as_micros())
                        .unwrap_or(u32::MAX);
                let _ = sd_notify::notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(usec)]);
                s.stop_all = None;
                ops.cancel(&CoreTimer::Deadline);
                ops.cancel(&CoreTimer::Kill);
                self.start_stop_all(s, StopTarget::S5, true, budget, ops);
            }
        }
    }

    fn drain(&mut self, s: &mut Acrnd, ops: &mut Ops<'_, Acrnd, Core>) {
        while let Some(w) = s.work.pop_front() {
            match w {
                Work::Dm { vm, kind, reply } => self.spawn_dm(s, vm, kind, reply),
                Work::Launch { vm, reason, reply } => self.launch(s, &vm, reason, reply, ops),
                Work::AskReason(why) => {
                    let req = Request::now(Body::WakeupReason);
                    self.lcs_send(s, vec![("WAKEUP_REASON", req)], move |ack| Done::Reason {
                        why,
                        reason: ack.and_then(|a| match a.payload {
                            AckPayload::Reason(r) => Some(r),
                            _ => None,
                        }),
                    });
                }
                Work::Persist { reply, undo } => {
                    let job = PersistJob {
                        timers: s.timers.clone(),
                        reply,
                        undo,
                    };
                    if let Err(mpsc::SendError(job)) = self.persist_tx.send(job) {
                        log::error!("Timer store writer is gone");
                        if let Some(d) = job.reply {
                            d.fail(err::FAILED);
                        }
                    }
                }
                Work::StopAll {
                    target,
                    force,
                    timeout,
                } => {
                    if s.stop_all.is_none() {
                        self.start_stop_all(s, target, force, timeout, ops);
                    }
                }
                Work::Rearm => self.rearm(s, ops),
                Work::Terminate => self.terminate(s),
                Work::Check => {
                    self.check(s, ops);
                    self.pump_starts(s, ops);
                    self.ensure_poll(s, ops);
                }
            }
        }
    }
}

/// The timers of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CoreTimer {
    Boot,
    Wake,
    Poll,
    Start,
    Kill,
    Watchdog,
    Deadline,
}

impl Subscriber<Acrnd> for Core {
    type Timer = CoreTimer;
    type Done = ();

    fn init(&mut self, ops: &mut Ops<'_, Acrnd, Core>) -> io::Result<()> {
        self.notifier = Some(ops.notifier());
        ops.arm_after(CoreTimer::Boot, Duration::ZERO);
        Ok(())
    }

    fn on_event(&mut self, event: &MioEvent, ops: &mut Ops<'_, Acrnd, Core>, s: &mut Acrnd) {
        if let Some(vm) = self.watches.get(&event.token()).cloned() {
            self.exited(s, &vm, ops);
        }
        self.drain(s, ops);
    }

    fn on_timer(&mut self, key: CoreTimer, ops: &mut Ops<'_, Acrnd, Core>, s: &mut Acrnd) {
        match key {
            CoreTimer::Boot => {
                if let Some(w) = s.cfg.watchdog {
                    // The only periodic wake-up of an idle acrnd, and only when systemd asks.
                    let half = w / 2;
                    ops.arm_periodic(CoreTimer::Watchdog, Instant::now() + half, half);
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                self.boot(s, ops);
            }
            CoreTimer::Wake => {
                self.fire_timers(s, ops);
                self.rearm(s, ops);
            }
            CoreTimer::Poll => self.poll_transitions(s, ops),
            CoreTimer::Start => self.pump_starts(s, ops),
            CoreTimer::Kill => {
                // Only for the stop-all that forced: one abandoned meanwhile kills nothing.
                if s.stop_all.as_ref().is_some_and(|st| st.forcing) {
                    self.kill_stragglers(s);
                }
            }
            CoreTimer::Watchdog => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            CoreTimer::Deadline => self.deadline(s, ops),
        }
        self.drain(s, ops);
    }

    fn on_notify(&mut self, ops: &mut Ops<'_, Acrnd, Core>, s: &mut Acrnd) {
        while let Ok(d) = self.done_rx.try_recv() {
            match d {
                Done::Dm {
                    vm,
                    kind,
                    reply,
                    result,
                } => self.on_dm_done(s, vm, kind, reply, *result, ops),
                Done::Reason { why, reason } => self.on_reason(s, why, reason, ops),
                Done::Intent(intent) => self.finish(s, intent, ops),
                Done::Lcs { what, ok } => {
                    s.lcs_reachable = ok;
                    log::debug!("{what} delivered: {ok}");
                }
                Done::Persisted { undo, error } => {
                    if let Some(e) = error {
                        log::error!("Timer store not written: {e}");
                        s.log.emit("store.error", json!({"error": e}));
                        if let Some((vm, prev, new)) = undo
                            && s.timers.get(&vm) == Some(&new)
                        {
                            match prev {
                                Some(p) => s.timers.insert(vm, p),
                                None => s.timers.remove(&vm),
                            };
                            self.rearm(s, ops);
                        }
                    } else {
                        s.log.emit("store.saved", json!({"timers": s.timers.len()}));
                    }
                }
            }
        }
        if s.work.iter().any(|w| matches!(w, Work::Check)) || !s.work.is_empty() {
            self.drain(s, ops);
        }
    }
}

/// Writes the timer store, one job after the other, off the event loop.
fn persistence_worker(
    store: TimerStore,
    log: EventLog,
    jobs: Receiver<PersistJob>,
    done: Sender<Done>,
    notifier: Notifier,
) {
    while let Ok(job) = jobs.recv() {
        let hit_log = log.clone();
        let result = store.save(&job.timers, move |p: FaultPoint| {
            hit_log.emit("fault", json!({"point": p.name()}));
        });
        let error = result.as_ref().err().map(|e| mngr_ipc::error_chain(e));
        if let Some(d) = job.reply {
            match &result {
                Ok(()) => d.complete(AckPayload::Err(err::OK)),
                Err(_) => d.fail(err::FAILED),
            }
        }
        let _ = done.send(Done::Persisted {
            undo: job.undo,
            error,
        });
        notifier.notify();
    }
}

/// Loads the timer store, importing upstream's list once.
fn load_timers(cfg: &Config, store: &TimerStore, log: &EventLog) -> Timers {
    let marker = cfg.state_dir.join("timer_list.imported");
    let mut timers = match store.load() {
        Ok((t, bad)) => {
            for b in bad {
                log::warn!("{}:{}: skipped: {}", store.path().display(), b.line, b.why);
            }
            t
        }
        Err(e) => {
            log::error!("Cannot read {}: {e}", store.path().display());
            Timers::new()
        }
    };
    if !marker.exists() && cfg.upstream_timers.exists() {
        match std::fs::read_to_string(&cfg.upstream_timers) {
            Ok(text) => {
                let (up, bad) = crate::timers::parse(&text);
                for b in bad {
                    log::warn!(
                        "{}:{}: skipped: {}",
                        cfg.upstream_timers.display(),
                        b.line,
                        b.why
                    );
                }
                log::info!(
                    "Imported {} timer(s) from {}",
                    up.len(),
                    cfg.upstream_timers.display()
                );
                log.emit("timers.imported", json!({"count": up.len()}));
                for (vm, when) in up {
                    timers
                        .entry(vm)
                        .and_modify(|t| *t = (*t).min(when))
                        .or_insert(when);
                }
                if let Err(e) = store.save(&timers, |_| {}) {
                    log::error!("Cannot write the imported timers: {e}");
                } else if let Err(e) =
                    std::fs::write(&marker, cfg.upstream_timers.display().to_string())
                {
                    log::warn!("Cannot record the import: {e}");
                }
            }
            Err(e) => log::warn!("Cannot read {}: {e}", cfg.upstream_timers.display()),
        }
    }
    timers
}

/// The registered VMs and the device models already running (re-attached, as starting
/// until they answer a query).
fn discover(cfg: &Config) -> BTreeMap<String, Vm> {
    let mut vms = BTreeMap::new();
    match vms::scan_launch_dir(&cfg.launch_dir) {
        Ok(found) => {
            for (name, spec) in found {
                vms.insert(name, Vm::new(Some(spec)));
            }
        }
        Err(e) => log::error!("Cannot read {}: {e}", cfg.launch_dir.display()),
    }
    for (name, pid) in vms::live_monitors(&cfg.socket_dir) {
        let v = vms.entry(name).or_insert_with(|| Vm::new(None));
        v.pid = Some(pid);
        v.state = VmState::Starting;
    }
    vms
}

/// Runs acrnd until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), RunError> {
    let log =
        EventLog::open_optional(cfg.event_log.as_deref(), "acrnd").map_err(RunError::EventLog)?;
    std::fs::create_dir_all(&cfg.state_dir).map_err(RunError::StateDir)?;
    let store = TimerStore::new(cfg.state_dir.join("timer_list")).with_fault(cfg.fault);
    let timers = load_timers(&cfg, &store, &log);
    log.emit(
        "start",
        json!({"pid": std::process::id(), "timers": timers.len()}),
    );
    let mut el: EventLoop<Acrnd> = EventLoop::new().map_err(RunError::Loop)?;
    let (done_tx, done_rx) = mpsc::channel();
    let (persist_tx, persist_rx) = mpsc::channel();
    let core = Core {
        client: Client::new(&cfg.socket_dir, cfg.profile),
        done_tx: done_tx.clone(),
        done_rx,
        persist_tx,
        notifier: None,
        asked_intent: false,
        watches: HashMap::new(),
        last_start: None,
    };
    let core_id = el.add(Box::new(core)).map_err(RunError::Loop)?;
    let notifier = el.notifier(core_id);
    {
        let (log, n) = (log.clone(), notifier.clone());
        std::thread::Builder::new()
            .name("timer-store".into())
            .spawn(move || persistence_worker(store, log, persist_rx, done_tx, n))
            .map_err(RunError::Loop)?;
    }
    // The VM table is known before the socket accepts anything: a request in the first
    // instants (a DM's ACRND_TIMER, an acrnctl list) sees every VM.
    let vms = discover(&cfg);
    let mut sc = ServerConfig::new("acrnd", &cfg.socket_dir);
    sc.profile = cfg.profile;
    el.add(Box::new(IpcServer::bind(sc, handlers())?))
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
            s.push(Work::Terminate);
        },
    )
    .map_err(RunError::Loop)?;
    el.add(Box::new(signals)).map_err(RunError::Loop)?;
    let mut state = Acrnd {
        cfg,
        log,
        vms,
        timers,
        reason: 0,
        lcs_reachable: false,
        stop_all: None,
        held: false,
        phase: Phase::Idle,
        start_queue: VecDeque::new(),
        terminating: None,
        work: VecDeque::new(),
        core: Some(notifier),
    };
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let result = el.run(&mut state).map_err(RunError::Loop);
    state.log.emit("stopped", json!({}));
    result
}
