//! The monitor: the per-VM mngr IPC endpoint `<vm>.monitor` that acrnd and acrnctl use to
//! stop, suspend, resume and query a device model, and the helpers its components use to
//! talk to acrnd.
//!
//! # Pieces
//!
//! * [`Monitor<C>`]: a [`Subscriber`](mngr_ipc::runtime::Subscriber) of the device model's
//!   [`EventLoop`](mngr_ipc::runtime::EventLoop), built on
//!   [`IpcServer`]. It binds
//!   `DIR/<vm>.monitor.<pid>.socket` (replacing the stale socket of a dead predecessor of
//!   the same name) and unlinks it when dropped, i.e. on an orderly exit.
//! * [`MonitorState`]: what the monitor keeps for the device model — VM name, wakeup
//!   reason, DM suspend mode, the outbox to acrnd. It lives inside the device model's
//!   state `C`, which gives access to it through [`DeviceModel::monitor`], so handlers,
//!   providers and the device model's own subscribers all reach it with `&mut C`.
//! * [`OpsRegistry<C>`](crate::ops::OpsRegistry): the providers that carry requests out.
//!
//! # Requests
//!
//! | request | what happens | ack |
//! |---|---|---|
//! | DM_STOP `force` ≠ 0 | suspend mode := POWEROFF (DM_NOTIFY 3), then every provider's [`powered_off`](crate::ops::VmOps::powered_off) | `err` 0 |
//! | DM_STOP `force` = 0 | every provider's `stop` | `err` (see [`aggregate`](crate::ops::aggregate)) |
//! | DM_SUSPEND | every `suspend` | `err` |
//! | DM_RESUME `reason` | wakeup reason := `reason`; every `resume` (the built-in one first: mode := running) | `err` |
//! | DM_PAUSE / DM_CONTINUE (profile D) | every `pause` / `unpause` | `err`, -95 if none |
//! | DM_QUERY | the first `query` | `state` = suspend mode (0 running, 3 off, 4 suspended); `err` -95 if none |
//! | DM_BLKRESCAN `slot,path` | devargs checked ([`BlkRescan`]), then every `rescan` | `err`, -22 if malformed |
//! | any other id | — | `err` -38 (`-ENOSYS`) |
//!
//! # Helpers (never block the loop)
//!
//! * [`MonitorState::wakeup_reason`]: the reason of the last DM_RESUME (0 before any).
//! * [`MonitorState::set_wakeup_timer`]: ACRND_TIMER {VM name, relative seconds} to acrnd.
//! * [`MonitorState::notify_state`]: DM_NOTIFY {VM name, mode} to acrnd;
//!   [`MonitorState::set_suspend_mode`] sends it on every change of the suspend mode, and
//!   the monitor announces the current mode (0) once when it starts serving.
//!
//! Both go through one worker thread, in order (see the outbox rules in the source of
//! `outbox.rs`); each result comes back to the loop and is logged (`acrnd.result`).
//!
//! # Differences from the original monitor
//!
//! * "no provider implements it" (-95) and "a provider failed" (its code) differ, and the
//!   first failure is reported instead of a sum;
//! * DM_BLKRESCAN validates its devargs and never touches the wakeup reason;
//! * DM_QUERY and DM_RESUME of a VM being torn down: query says 3, resume is refused (-16);
//! * ACRND_TIMER and DM_NOTIFY never block the loop (the original blocked its rx thread up
//!   to 2 s and ignored the result), are retried when undeliverable, and are logged;
//! * VM names are validated ([`VmName`]); an optional [`Policy`] restricts who may change
//!   the VM's state (DM_QUERY stays open), on top of the socket's 0660 mode.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use acrn_dm_monitor::monitor::{DeviceModel, Monitor, MonitorConfig, MonitorState};
//! use acrn_dm_monitor::ops::{OpResult, OpsRegistry, VmOps};
//! use mngr_ipc::msg::{AckPayload, Body, Request};
//! use mngr_ipc::runtime::EventLoop;
//! use mngr_ipc::{Profile, client::Client};
//!
//! struct Dm {
//!     monitor: MonitorState,
//!     stops: u32,
//! }
//! impl DeviceModel for Dm {
//!     fn monitor(&mut self) -> &mut MonitorState {
//!         &mut self.monitor
//!     }
//! }
//! struct PowerButton;
//! impl VmOps<Dm> for PowerButton {
//!     fn label(&self) -> &str {
//!         "power_button"
//!     }
//!     fn stop(&mut self, dm: &mut Dm) -> OpResult {
//!         dm.stops += 1; // inject the button press here
//!         OpResult::Done
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let cfg = MonitorConfig::new("vm1", dir.path());
//! let (monitor, state) = Monitor::bind(cfg, OpsRegistry::new().with(PowerButton))?;
//! let mut dm = Dm { monitor: state, stops: 0 };
//! let mut el = EventLoop::new()?;
//! el.add(Box::new(monitor))?;
//!
//! let client = Client::new(dir.path(), Profile::F);
//! let asker = std::thread::spawn(move || {
//!     let q = client.send("vm1.monitor", &Request::now(Body::DmQuery), Duration::from_secs(5));
//!     let s = client.send("vm1.monitor", &Request::now(Body::DmStop { force: 0 }), Duration::from_secs(5));
//!     (q.map(|a| a.payload), s.map(|a| a.payload))
//! });
//! while !asker.is_finished() {
//!     el.turn(&mut dm, Some(Duration::from_millis(10)))?;
//! }
//! let (q, s) = asker.join().expect("asker");
//! assert_eq!(q?, AckPayload::State(0));
//! assert_eq!(s?, AckPayload::Err(0));
//! assert_eq!(dm.stops, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod event_handler;
mod outbox;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use mngr_ipc::Profile;
use mngr_ipc::auth::Policy;
use mngr_ipc::client::Client;
use mngr_ipc::event_log::EventLog;
use mngr_ipc::msg::{AckPayload, Body, Request, err, suspend_mode};
use mngr_ipc::runtime::Notifier;
use mngr_ipc::server::{Call, Handlers, IpcServer, PeerCred, Reply, ServerConfig, ServerError};
use serde_json::json;
use thiserror::Error;

pub use self::event_handler::Monitor;
pub use self::outbox::MAX_QUEUED;
use self::outbox::{Delivery, OutboxConfig, Outgoing, Report};
use crate::name::{NameError, VmName};
use crate::ops::{BlkRescan, Op, OpsRegistry};

/// acrnd's server name (the default recipient of ACRND_TIMER and DM_NOTIFY).
pub const DEFAULT_ACRND: &str = "acrnd";

/// The device model's state, as the monitor needs it: access to the [`MonitorState`].
pub trait DeviceModel {
    /// The monitor's part of the device model's state.
    fn monitor(&mut self) -> &mut MonitorState;
}

/// Settings of a monitor.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// The VM name (validated by [`Monitor::bind`]).
    pub vm: String,
    /// The mngr socket directory.
    pub socket_dir: PathBuf,
    /// ABI profile of the wire format (also bounds the VM name).
    pub profile: Profile,
    /// Server name of acrnd.
    pub acrnd: String,
    /// Timeout of each request to acrnd.
    pub acrnd_timeout: Duration,
    /// Attempts per request to acrnd when it cannot be reached.
    pub acrnd_attempts: u32,
    /// Pause before the first retry (doubling after each).
    pub retry_backoff: Duration,
    /// Send DM_NOTIFY with the current mode (running) once the socket is bound.
    pub announce: bool,
    /// Who may send state-changing requests (`None`: whoever can open the socket).
    pub policy: Option<Policy>,
    /// Where `ipc.*`, `dm.state` and `acrnd.*` events go.
    pub event_log: EventLog,
}

impl MonitorConfig {
    /// Defaults: profile F, acrnd `acrnd`, 2 s per request, 3 attempts from 100 ms apart,
    /// announce on, no policy, no event log.
    pub fn new(vm: impl Into<String>, socket_dir: impl AsRef<Path>) -> Self {
        let vm = vm.into();
        MonitorConfig {
            event_log: EventLog::disabled(&vm),
            vm,
            socket_dir: socket_dir.as_ref().to_owned(),
            profile: Profile::F,
            acrnd: DEFAULT_ACRND.to_owned(),
            acrnd_timeout: Duration::from_secs(2),
            acrnd_attempts: 3,
            retry_backoff: Duration::from_millis(100),
            announce: true,
            policy: None,
        }
    }
}

/// A monitor that cannot start.
#[derive(Debug, Error)]
pub enum MonitorError {
    /// The VM name is not acceptable.
    #[error("Bad VM name")]
    Name(#[from] NameError),
    /// The socket cannot be bound.
    #[error("Cannot serve the monitor socket")]
    Serve(#[from] ServerError),
}

/// What the monitor keeps for the device model; lives in the device model's state.
#[derive(Debug)]
pub struct MonitorState {
    vm: VmName,
    profile: Profile,
    wakeup_reason: u32,
    mode: i32,
    outbox: Sender<Outgoing>,
    in_flight: usize,
    idle_waiters: Vec<Notifier>,
    log: EventLog,
}

/// A short name of a DM suspend mode, for logs.
pub fn mode_name(mode: i32) -> &'static str {
    match mode {
        suspend_mode::NONE => "running",
        suspend_mode::SYSTEM_RESET => "system_reset",
        suspend_mode::FULL_RESET => "full_reset",
        suspend_mode::POWEROFF => "poweroff",
        suspend_mode::SUSPEND => "suspend",
        suspend_mode::HALT => "halt",
        suspend_mode::TRIPLEFAULT => "triplefault",
        _ => "unknown",
    }
}

impl MonitorState {
    fn new(vm: VmName, profile: Profile, outbox: Sender<Outgoing>, log: EventLog) -> Self {
        MonitorState {
            vm,
            profile,
            wakeup_reason: 0,
            mode: suspend_mode::NONE,
            outbox,
            in_flight: 0,
            idle_waiters: Vec::new(),
            log,
        }
    }

    /// The VM name.
    pub fn vm(&self) -> &VmName {
        &self.vm
    }

    /// The ABI profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The event log the monitor writes to.
    pub fn event_log(&self) -> &EventLog {
        &self.log
    }

    /// The wakeup reason of the last DM_RESUME (0 before any).
    pub fn wakeup_reason(&self) -> u32 {
        self.wakeup_reason
    }

    /// The DM suspend mode ([`suspend_mode`]): what DM_QUERY answers.
    pub fn suspend_mode(&self) -> i32 {
        self.mode
    }

    /// Sets the DM suspend mode; on a change, logs it (`dm.state`) and sends DM_NOTIFY.
    /// Returns whether it changed.
    pub fn set_suspend_mode(&mut self, mode: i32) -> bool {
        if mode == self.mode {
            return false;
        }
        let from = self.mode;
        self.mode = mode;
        log::info!(
            "{}: suspend mode {} -> {}",
            self.vm,
            mode_name(from),
            mode_name(mode)
        );
        self.log.emit(
            "dm.state",
            json!({"mode": mode, "from": from, "name": mode_name(mode)}),
        );
        self.notify_state(mode);
        true
    }

    /// Sends DM_NOTIFY {VM name, `mode`} to acrnd (asynchronously, in order).
    pub fn notify_state(&mut self, mode: i32) {
        self.queue(Outgoing::Notify { mode });
    }

    /// Asks acrnd to start or resume this VM in `seconds` (ACRND_TIMER, relative, with the
    /// VM name), asynchronously. 0 seconds is ignored.
    pub fn set_wakeup_timer(&mut self, seconds: u64) {
        if seconds == 0 {
            log::warn!("{}: a wake-up timer of 0 s ignored", self.vm);
            return;
        }
        let secs = i64::try_from(seconds).unwrap_or(i64::MAX);
        self.queue(Outgoing::Timer { secs });
    }

    /// Requests to acrnd queued or in flight.
    pub fn pending_to_acrnd(&self) -> usize {
        self.in_flight
    }

    /// Pokes `n` once no request to acrnd is queued or in flight (at once if none is).
    pub fn notify_when_idle(&mut self, n: Notifier) {
        if self.in_flight == 0 {
            n.notify();
        } else {
            self.idle_waiters.push(n);
        }
    }

    fn queue(&mut self, m: Outgoing) {
        let fields = match m {
            Outgoing::Notify { mode } => json!({"msg": m.msg_name(), "mode": mode}),
            Outgoing::Timer { secs } => json!({"msg": m.msg_name(), "t": secs}),
        };
        if self.outbox.send(m).is_err() {
            log::error!("{}: outbox to acrnd is gone; {m:?} not sent", self.vm);
            return;
        }
        log::debug!("{}: {m:?} queued for acrnd", self.vm);
        self.log.emit("acrnd.send", fields);
        self.in_flight += 1;
    }

    fn delivered(&mut self, r: Report) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let name = r.msg.msg_name();
        let detail = match r.msg {
            Outgoing::Notify { mode } => json!(mode),
            Outgoing::Timer { secs } => json!(secs),
        };
        match &r.delivery {
            Delivery::Acked { err, attempts } => {
                if matches!(err, Some(e) if *e != 0) {
                    log::warn!("{}: acrnd answered {name} ({detail}) with {err:?}", self.vm);
                } else {
                    log::info!("{}: {name} ({detail}) delivered to acrnd", self.vm);
                }
                self.log.emit(
                    "acrnd.result",
                    json!({"msg": name, "value": detail, "ok": true, "err": err, "attempts": attempts}),
                );
            }
            Delivery::Failed { error, attempts } => {
                log::warn!(
                    "{}: {name} ({detail}) not delivered after {attempts} attempt(s): {error}",
                    self.vm
                );
                self.log.emit(
                    "acrnd.result",
                    json!({"msg": name, "value": detail, "ok": false, "error": error, "attempts": attempts}),
                );
            }
            Delivery::Coalesced => {
                self.log.emit(
                    "acrnd.result",
                    json!({"msg": name, "value": detail, "ok": false, "coalesced": true}),
                );
            }
        }
        if self.in_flight == 0 {
            for n in self.idle_waiters.drain(..) {
                n.notify();
            }
        }
    }
}

/// A request's answer, before it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `data.err`.
    Err(i32),
    /// `data.state` (DM_QUERY).
    State(i32),
}

/// Turns requests into provider calls; owned by the server's handler.
pub(crate) struct Dispatcher<C> {
    registry: OpsRegistry<C>,
    policy: Option<Policy>,
}

impl<C: DeviceModel> Dispatcher<C> {
    pub(crate) fn new(registry: OpsRegistry<C>, policy: Option<Policy>) -> Self {
        Dispatcher { registry, policy }
    }

    fn handle(&mut self, req: &Request, call: Call<'_>, ctx: &mut C) -> Reply {
        let peer = call.peer();
        let id = req.id();
        log::debug!("{id} from pid {} uid {}", peer.pid, peer.uid);
        let log = ctx.monitor().event_log().clone();
        log.emit(
            "ipc.request",
            json!({"msg": id.name(), "pid": peer.pid, "uid": peer.uid, "body": format!("{:?}", req.body)}),
        );
        match self.answer(&req.body, &peer, ctx) {
            Answer::State(s) => {
                log.emit("ipc.ack", json!({"msg": id.name(), "state": s}));
                call.ack(AckPayload::State(s))
            }
            Answer::Err(e) => {
                log.emit("ipc.ack", json!({"msg": id.name(), "err": e}));
                call.err(e)
            }
        }
    }

    /// The answer to `body` from `peer` (no I/O: testable without sockets).
    pub(crate) fn answer(&mut self, body: &Body, peer: &PeerCred, ctx: &mut C) -> Answer {
        let changes_state = matches!(
            body,
            Body::DmStop { .. }
                | Body::DmSuspend
                | Body::DmResume { .. }
                | Body::DmPause
                | Body::DmContinue
                | Body::DmBlkrescan { .. }
        );
        if changes_state
            && let Some(p) = &self.policy
            && !p.allows(peer)
        {
            log::warn!(
                "{} from pid {} uid {} refused by policy",
                body.id(),
                peer.pid,
                peer.uid
            );
            return Answer::Err(err::NOT_PERMITTED);
        }
        let code = match body {
            Body::DmStop { force } if *force != 0 => {
                let m = ctx.monitor();
                log::info!("{}: forced stop: powering off at once", m.vm());
                if m.set_suspend_mode(suspend_mode::POWEROFF) {
                    self.registry.powered_off(ctx);
                }
                err::OK
            }
            Body::DmStop { .. } => self.registry.run_aggregated(Op::Stop, ctx, 0, None),
            Body::DmSuspend => self.registry.run_aggregated(Op::Suspend, ctx, 0, None),
            Body::DmResume { reason } => {
                ctx.monitor().wakeup_reason = *reason;
                self.registry.run_aggregated(Op::Resume, ctx, *reason, None)
            }
            Body::DmPause => self.registry.run_aggregated(Op::Pause, ctx, 0, None),
            Body::DmContinue => self.registry.run_aggregated(Op::Unpause, ctx, 0, None),
            Body::DmQuery => {
                return match self.registry.query(ctx) {
                    Some((_, mode)) => Answer::State(mode),
                    None => Answer::Err(err::UNSUPPORTED),
                };
            }
            Body::DmBlkrescan { devargs } => match BlkRescan::parse(devargs) {
                Some(args) => self
                    .registry
                    .run_aggregated(Op::Rescan, ctx, 0, Some(&args)),
                None => {
                    log::warn!("DM_BLKRESCAN with malformed devargs {devargs:?}");
                    err::INVALID
                }
            },
            other => {
                log::info!("{} is not a monitor request; answering -ENOSYS", other.id());
                err::UNKNOWN_ID
            }
        };
        Answer::Err(code)
    }
}

impl<C: DeviceModel + 'static> Monitor<C> {
    /// Validates the VM name, binds `<vm>.monitor` in the socket directory with the
    /// registry's providers, and returns the subscriber to add to the device model's loop
    /// with the [`MonitorState`] to keep in its state `C`.
    ///
    /// Requests are served once the subscriber runs on the loop; DM_NOTIFY and
    /// ACRND_TIMER queued before that are sent once it does.
    pub fn bind(
        cfg: MonitorConfig,
        registry: OpsRegistry<C>,
    ) -> Result<(Monitor<C>, MonitorState), MonitorError> {
        let vm = VmName::new(&cfg.vm, cfg.profile)?;
        let mut dispatcher = Dispatcher::new(registry, cfg.policy.clone());
        let handlers = Handlers::new().fallback(Access::Open, move |req, call, ctx: &mut C| {
            dispatcher.handle(req, call, ctx)
        });
        let mut scfg = ServerConfig::new(vm.monitor_name(), &cfg.socket_dir);
        scfg.profile = cfg.profile;
        let server = IpcServer::bind(scfg, handlers)?;
        let (tx, rx): (Sender<Outgoing>, Receiver<Outgoing>) = mpsc::channel();
        let outbox = OutboxConfig {
            client: Client::new(&cfg.socket_dir, cfg.profile),
            acrnd: cfg.acrnd.clone(),
            vm: vm.as_str().to_owned(),
            timeout: cfg.acrnd_timeout,
            attempts: cfg.acrnd_attempts,
            backoff: cfg.retry_backoff,
        };
        let mut state = MonitorState::new(vm, cfg.profile, tx, cfg.event_log.clone());
        if cfg.announce {
            state.notify_state(state.mode);
        }
        Ok((Monitor::new(server, outbox, rx), state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{OpResult, VmOps};

    struct Dm {
        m: MonitorState,
        rx: Receiver<Outgoing>,
        calls: Vec<String>,
    }

    impl DeviceModel for Dm {
        fn monitor(&mut self) -> &mut MonitorState {
            &mut self.m
        }
    }

    impl Dm {
        fn new() -> Self {
            let (tx, rx) = mpsc::channel();
            let vm = VmName::new("vm1", Profile::F).expect("valid");
            Dm {
                m: MonitorState::new(vm, Profile::F, tx, EventLog::disabled("vm1")),
                rx,
                calls: Vec::new(),
            }
        }

        fn sent(&self) -> Vec<Outgoing> {
            self.rx.try_iter().collect()
        }
    }

    /// A provider that records its calls and answers as told.
    struct Rec {
        label: &'static str,
        stop: OpResult,
        rescan: OpResult,
    }

    impl VmOps<Dm> for Rec {
        fn label(&self) -> &str {
            self.label
        }
        fn stop(&mut self, dm: &mut Dm) -> OpResult {
            dm.calls.push(format!("{}.stop", self.label));
            self.stop
        }
        fn resume(&mut self, dm: &mut Dm, reason: u32) -> OpResult {
            dm.calls.push(format!(
                "{}.resume({reason:#x}) mode={}",
                self.label,
                dm.m.suspend_mode()
            ));
            OpResult::Done
        }
        fn rescan(&mut self, dm: &mut Dm, a: &BlkRescan) -> OpResult {
            dm.calls
                .push(format!("{}.rescan({},{})", self.label, a.slot, a.path));
            self.rescan
        }
        fn powered_off(&mut self, dm: &mut Dm) {
            dm.calls.push(format!("{}.powered_off", self.label));
        }
    }

    fn rec(label: &'static str, stop: OpResult) -> Rec {
        Rec {
            label,
            stop,
            rescan: OpResult::Unsupported,
        }
    }

    const ROOT: PeerCred = PeerCred {
        pid: 1,
        uid: 0,
        gid: 0,
    };

    #[test]
    fn query_answers_the_suspend_mode_from_the_builtin_provider() {
        let mut dm = Dm::new();
        let mut d = Dispatcher::new(OpsRegistry::new(), None);
        assert_eq!(d.answer(&Body::DmQuery, &ROOT, &mut dm), Answer::State(0));
        dm.m.set_suspend_mode(suspend_mode::SUSPEND);
        assert_eq!(d.answer(&Body::DmQuery, &ROOT, &mut dm), Answer::State(4));
        let mut none = Dispatcher::new(OpsRegistry::<Dm>::empty(), None);
        assert_eq!(
            none.answer(&Body::DmQuery, &ROOT, &mut dm),
            Answer::Err(err::UNSUPPORTED)
        );
    }

    #[test]
    fn forced_stop_powers_off_once_and_tells_providers() {
        let mut dm = Dm::new();
        let mut d = Dispatcher::new(
            OpsRegistry::new().with(rec("a", OpResult::Failed(-5))),
            None,
        );
        let stop = Body::DmStop { force: 1 };
        assert_eq!(d.answer(&stop, &ROOT, &mut dm), Answer::Err(0));
        assert_eq!(dm.m.suspend_mode(), suspend_mode::POWEROFF);
        assert_eq!(dm.calls, vec!["a.powered_off"], "no graceful stop op");
        assert_eq!(d.answer(&stop, &ROOT, &mut dm), Answer::Err(0));
        assert_eq!(dm.calls.len(), 1, "a second forced stop changes nothing");
        assert_eq!(dm.sent(), vec![Outgoing::Notify { mode: 3 }]);
        assert_eq!(dm.m.pending_to_acrnd(), 1);
        // A VM being torn down cannot be resumed.
        assert_eq!(
            d.answer(&Body::DmResume { reason: 0x20 }, &ROOT, &mut dm),
            Answer::Err(err::BUSY)
        );
        assert_eq!(d.answer(&Body::DmQuery, &ROOT, &mut dm), Answer::State(3));
    }

    #[test]
    fn graceful_stop_reports_the_first_failure_or_unsupported() {
        let mut dm = Dm::new();
        let stop = Body::DmStop { force: 0 };
        let mut only_pmc = Dispatcher::new(OpsRegistry::new(), None);
        assert_eq!(
            only_pmc.answer(&stop, &ROOT, &mut dm),
            Answer::Err(err::UNSUPPORTED)
        );
        let mut d = Dispatcher::new(
            OpsRegistry::new()
                .with(rec("a", OpResult::Done))
                .with(rec("b", OpResult::Failed(-5)))
                .with(rec("c", OpResult::Failed(err::FAILED))),
            None,
        );
        assert_eq!(d.answer(&stop, &ROOT, &mut dm), Answer::Err(-5));
        assert_eq!(
            dm.calls,
            vec!["a.stop", "b.stop", "c.stop"],
            "all are called"
        );
        assert_eq!(dm.m.suspend_mode(), suspend_mode::NONE);
    }

    #[test]
    fn resume_stores_the_reason_and_runs_the_builtin_provider_first() {
        let mut dm = Dm::new();
        dm.m.set_suspend_mode(suspend_mode::SUSPEND);
        let _ = dm.sent();
        let mut d = Dispatcher::new(OpsRegistry::new().with(rec("ioc", OpResult::Done)), None);
        assert_eq!(
            d.answer(&Body::DmResume { reason: 0x200 }, &ROOT, &mut dm),
            Answer::Err(0)
        );
        assert_eq!(dm.m.wakeup_reason(), 0x200);
        assert_eq!(
            dm.calls,
            vec!["ioc.resume(0x200) mode=0"],
            "mode is running before the next provider runs"
        );
        assert_eq!(dm.sent(), vec![Outgoing::Notify { mode: 0 }]);
    }

    #[test]
    fn blkrescan_validates_and_never_touches_the_wakeup_reason() {
        let mut dm = Dm::new();
        let mut d = Dispatcher::new(OpsRegistry::new(), None);
        d.answer(&Body::DmResume { reason: 0x200 }, &ROOT, &mut dm);
        let bad = Body::DmBlkrescan {
            devargs: "nocomma".into(),
        };
        assert_eq!(d.answer(&bad, &ROOT, &mut dm), Answer::Err(err::INVALID));
        let good = Body::DmBlkrescan {
            devargs: "3,/img".into(),
        };
        assert_eq!(
            d.answer(&good, &ROOT, &mut dm),
            Answer::Err(err::UNSUPPORTED),
            "no virtio-blk provider"
        );
        assert_eq!(dm.m.wakeup_reason(), 0x200);
        let mut with_blk = Dispatcher::new(
            OpsRegistry::new().with(Rec {
                label: "virtio_blk_rescan",
                stop: OpResult::Unsupported,
                rescan: OpResult::Done,
            }),
            None,
        );
        assert_eq!(with_blk.answer(&good, &ROOT, &mut dm), Answer::Err(0));
        assert_eq!(dm.calls, vec!["virtio_blk_rescan.rescan(3,/img)"]);
        assert_eq!(dm.m.wakeup_reason(), 0x200);
    }

    #[test]
    fn pause_and_other_ids() {
        let mut dm = Dm::new();
        let mut d = Dispatcher::new(OpsRegistry::new(), None);
        assert_eq!(
            d.answer(&Body::DmPause, &ROOT, &mut dm),
            Answer::Err(err::UNSUPPORTED)
        );
        assert_eq!(
            d.answer(&Body::DmContinue, &ROOT, &mut dm),
            Answer::Err(err::UNSUPPORTED)
        );
        assert_eq!(
            d.answer(
                &Body::AcrndTimer {
                    name: "vm1".into(),
                    t: 5
                },
                &ROOT,
                &mut dm
            ),
            Answer::Err(err::UNKNOWN_ID)
        );
    }

    #[test]
    fn policy_guards_state_changes_but_not_queries() {
        let mut dm = Dm::new();
        let mut d = Dispatcher::new(OpsRegistry::new(), Some(Policy::default()));
        let user = PeerCred {
            pid: 0,
            uid: 1000,
            gid: 1000,
        };
        assert_eq!(d.answer(&Body::DmQuery, &user, &mut dm), Answer::State(0));
        assert_eq!(
            d.answer(&Body::DmStop { force: 1 }, &user, &mut dm),
            Answer::Err(err::NOT_PERMITTED)
        );
        assert_eq!(dm.m.suspend_mode(), suspend_mode::NONE);
        assert_eq!(
            d.answer(&Body::DmStop { force: 1 }, &ROOT, &mut dm),
            Answer::Err(0)
        );
    }

    /// A provider whose suspend arms a wake-up timer and reports the guest suspended, as a
    /// virtual IOC and PMC would.
    struct Sleeper;

    impl VmOps<Dm> for Sleeper {
        fn label(&self) -> &str {
            "sleeper"
        }
        fn suspend(&mut self, dm: &mut Dm) -> OpResult {
            dm.m.set_wakeup_timer(7);
            dm.m.set_suspend_mode(suspend_mode::SUSPEND);
            OpResult::Done
        }
    }

    #[test]
    fn a_slow_acrnd_never_blocks_the_monitor_and_gets_messages_in_order() {
        use mngr_ipc::MsgId;
        use mngr_ipc::server::{DeferredAck, spawn_server};
        use std::sync::Mutex;
        use std::time::Instant;

        let dir = tempfile::tempdir().expect("tempdir");
        // A test acrnd that holds every ack until the test releases it.
        let (held_tx, held_rx) = mpsc::channel::<(Body, DeferredAck)>();
        let held_tx = Mutex::new(held_tx);
        let hold = move |r: &Request, call: Call<'_>, _: &mut ()| {
            let (reply, d) = call.defer();
            let _ = held_tx.lock().expect("lock").send((r.body.clone(), d));
            reply
        };
        let hold = std::sync::Arc::new(Mutex::new(hold));
        let h2 = std::sync::Arc::clone(&hold);
        let acrnd = spawn_server(
            ServerConfig::new("acrnd", dir.path()),
            Handlers::new()
                .on(MsgId::DmNotify, Access::Open, move |r, c, s| {
                    (hold.lock().expect("lock"))(r, c, s)
                })
                .on(MsgId::AcrndTimer, Access::Open, move |r, c, s| {
                    (h2.lock().expect("lock"))(r, c, s)
                }),
            (),
        )
        .expect("acrnd");

        // The device model's loop on its own thread.
        let sock = dir.path().to_owned();
        let (stop_tx, stop_rx) = mpsc::channel();
        let dm_thread = std::thread::spawn(move || {
            let cfg = MonitorConfig::new("vm1", &sock);
            let (monitor, state) =
                Monitor::bind(cfg, OpsRegistry::new().with(Sleeper)).expect("bind");
            let (_, rx) = mpsc::channel();
            let mut dm = Dm {
                m: state,
                rx,
                calls: Vec::new(),
            };
            let mut el = mngr_ipc::runtime::EventLoop::new().expect("loop");
            el.add(Box::new(monitor)).expect("add");
            stop_tx.send(el.handle()).expect("handle");
            el.run(&mut dm).expect("run");
            // Stopped by the test once acrnd answered everything: let the reports in.
            let deadline = Instant::now() + Duration::from_secs(5);
            while dm.m.pending_to_acrnd() > 0 && Instant::now() < deadline {
                el.turn(&mut dm, Some(Duration::from_millis(10)))
                    .expect("turn");
            }
            dm.m.pending_to_acrnd()
        });
        let stop = stop_rx.recv().expect("loop handle");
        let client = Client::new(dir.path(), Profile::F);
        let ask = |body: Body| {
            client
                .send("vm1.monitor", &Request::now(body), Duration::from_secs(5))
                .expect("acked")
                .payload
        };

        // The start-up DM_NOTIFY 0 reaches acrnd, which sits on it.
        let (first, first_ack) = held_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("DM_NOTIFY 0");
        assert_eq!(
            first,
            Body::DmNotify {
                name: "vm1".into(),
                mode: 0
            }
        );
        // Meanwhile the monitor answers at once, and queues more for acrnd.
        let t0 = Instant::now();
        assert_eq!(ask(Body::DmQuery), AckPayload::State(0));
        assert_eq!(ask(Body::DmSuspend), AckPayload::Err(0));
        assert_eq!(ask(Body::DmQuery), AckPayload::State(4));
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(
            held_rx.try_recv().is_err(),
            "one request to acrnd at a time"
        );
        first_ack.complete(AckPayload::Err(0));
        // Then the timer, then the suspend notification: the order they were made in.
        let (second, a2) = held_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("ACRND_TIMER");
        assert_eq!(
            second,
            Body::AcrndTimer {
                name: "vm1".into(),
                t: 7
            }
        );
        a2.complete(AckPayload::Err(0));
        let (third, a3) = held_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("DM_NOTIFY 4");
        assert_eq!(
            third,
            Body::DmNotify {
                name: "vm1".into(),
                mode: 4
            }
        );
        a3.complete(AckPayload::Err(0));
        // Every result comes back to the loop.
        stop.shutdown();
        let pending = dm_thread.join().expect("dm thread");
        assert_eq!(pending, 0, "results reach the loop");
        drop(acrnd);
    }

    #[test]
    fn helpers_queue_in_order_and_track_what_is_pending() {
        let mut dm = Dm::new();
        assert!(!dm.m.set_suspend_mode(suspend_mode::NONE), "no change");
        dm.m.set_wakeup_timer(7);
        dm.m.set_wakeup_timer(0);
        assert!(dm.m.set_suspend_mode(suspend_mode::SUSPEND));
        dm.m.set_wakeup_timer(u64::MAX);
        assert_eq!(
            dm.sent(),
            vec![
                Outgoing::Timer { secs: 7 },
                Outgoing::Notify { mode: 4 },
                Outgoing::Timer { secs: i64::MAX },
            ]
        );
        assert_eq!(dm.m.pending_to_acrnd(), 3);
        for msg in [Outgoing::Timer { secs: 7 }, Outgoing::Notify { mode: 4 }] {
            dm.m.delivered(Report {
                msg,
                delivery: Delivery::Acked {
                    err: Some(0),
                    attempts: 1,
                },
            });
        }
        assert_eq!(dm.m.pending_to_acrnd(), 1);
        dm.m.delivered(Report {
            msg: Outgoing::Timer { secs: i64::MAX },
            delivery: Delivery::Failed {
                error: "x".into(),
                attempts: 3,
            },
        });
        assert_eq!(dm.m.pending_to_acrnd(), 0);
    }
}
