//! The monitor: the per-VM mngr IPC endpoint `<vm>.monitor` that acrnd and acrnctl use to
//! stop, suspend, resume and query a device model, and the helpers its components use to
//! talk to acrnd.
//!
//! # Pieces
//!
//! * [`Monitor<C>`]: made by [`Monitor::bind`], which binds
//!   `DIR/<vm>.monitor.<pid>.socket` (replacing the stale socket of a dead predecessor of
//!   the same name); [`Monitor::add_to`] puts it on the device model's
//!   [`EventLoop`] as two subscribers — the socket's
//!   [`IpcServer`] and the outbox to acrnd — and returns the [`MonitorState`]. The socket
//!   is unlinked when the server is dropped, i.e. on an orderly exit.
//! * [`MonitorState`]: what the monitor keeps for the device model — VM name, wakeup
//!   reason, DM suspend mode, the providers, the queue to acrnd. It lives inside the device
//!   model's state `C`, which gives access to it through [`DeviceModel::monitor`], so
//!   handlers, providers and the device model's own subscribers all reach it with `&mut C`.
//! * [`OpsRegistry<C>`](crate::ops::OpsRegistry): the providers that carry requests out.
//!
//! # Requests
//!
//! | request | access | what happens | ack |
//! |---|---|---|---|
//! | DM_STOP `force` ≠ 0 | privileged | suspend mode := POWEROFF (DM_NOTIFY 3), then every provider's [`powered_off`](crate::ops::VmOps::powered_off) | `err` 0 |
//! | DM_STOP `force` = 0 | privileged | every provider's `stop` | `err` (see [`aggregate`](crate::ops::aggregate)) |
//! | DM_SUSPEND | privileged | every `suspend` | `err` |
//! | DM_RESUME `reason` | privileged | wakeup reason := `reason`; every `resume` (the built-in one first: mode := running) | `err` |
//! | DM_PAUSE / DM_CONTINUE (profile D) | privileged | every `pause` / `unpause` | `err`, -95 if none |
//! | DM_QUERY | open | the first `query` | `state` = suspend mode (0 running, 3 off, 4 suspended); `err` -95 if none |
//! | DM_BLKRESCAN `slot,path` | privileged | devargs checked ([`BlkRescan`](crate::ops::BlkRescan)), then every `rescan` | `err`, -22 if malformed |
//! | any other id | open | — | `err` -38 (`-ENOSYS`) |
//!
//! "Privileged" applies only with a [`MonitorConfig::policy`]: the server then refuses the
//! peers the policy does not allow (`err` -13, `-EACCES`, a warning and an `ipc.refused`
//! event) without calling a provider. Without a policy every request is open (the socket's
//! 0660 mode is the only guard), as in the original.
//!
//! # Helpers (never block the loop)
//!
//! * [`MonitorState::wakeup_reason`]: the reason of the last DM_RESUME (0 before any).
//! * [`MonitorState::set_wakeup_timer`]: ACRND_TIMER {VM name, relative seconds} to acrnd.
//! * [`MonitorState::notify_state`]: DM_NOTIFY {VM name, mode} to acrnd;
//!   [`MonitorState::set_suspend_mode`] sends it on every change of the suspend mode, and
//!   the monitor announces the current mode (0) once when it joins the loop.
//!
//! Both go out one at a time, in order, as jobs of the loop's worker pool (see the outbox
//! rules in the source of `outbox.rs`); each result comes back to the loop and is logged
//! (`acrnd.result`).
//!
//! # Differences from the original monitor
//!
//! * "no provider implements it" (-95) and "a provider failed" (its code) differ, and the
//!   first failure is reported instead of a sum;
//! * DM_BLKRESCAN validates its devargs and never touches the wakeup reason;
//! * DM_QUERY and DM_RESUME of a VM being torn down: query says 3, resume is refused (-16);
//! * ACRND_TIMER and DM_NOTIFY never block the loop (the original blocked its rx thread up
//!   to 2 s and ignored the result), are retried when undeliverable, and are logged;
//! * VM names follow the suite's rule ([`VmName`]); an optional
//!   [`Policy`](mngr_ipc::auth::Policy) restricts who may change the VM's state (DM_QUERY
//!   stays open), on top of the socket's 0660 mode.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use acrn_dm_monitor::monitor::{DeviceModel, Monitor, MonitorConfig, MonitorState};
//! use acrn_dm_monitor::ops::{OpResult, OpsRegistry, VmOps};
//! use mngr_ipc::msg::{AckPayload, Body, Request};
//! use mngr_ipc::runtime::EventLoop;
//! use mngr_ipc::vocabulary::VmName;
//! use mngr_ipc::{Profile, client::Client};
//!
//! struct Dm {
//!     monitor: MonitorState<Dm>,
//!     stops: u32,
//! }
//! impl DeviceModel for Dm {
//!     fn monitor(&mut self) -> &mut MonitorState<Dm> {
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
//! let cfg = MonitorConfig::new(VmName::new("vm1", Profile::F)?, dir.path());
//! let monitor = Monitor::bind(cfg, OpsRegistry::new().with(PowerButton))?;
//! let mut el = EventLoop::new()?;
//! let mut dm = Dm { monitor: monitor.add_to(&mut el)?, stops: 0 };
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

mod config;
mod dispatch;
mod event_handler;
mod outbox;
mod state;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use mngr_ipc::client::Client;
use mngr_ipc::msg::suspend_mode;
use mngr_ipc::runtime::EventLoop;
use mngr_ipc::server::{IpcServer, ServerConfig, ServerError};
use mngr_ipc::vocabulary::{NameError, VmName};
use thiserror::Error;

pub use self::config::{DEFAULT_ACRND, MonitorConfig};
use self::event_handler::Outbox;
pub use self::outbox::MAX_QUEUED;
use self::outbox::OutboxConfig;
pub use self::state::{MonitorState, mode_name};
use crate::ops::OpsRegistry;

/// The device model's state, as the monitor needs it: access to the [`MonitorState`].
pub trait DeviceModel: Sized + 'static {
    /// The monitor's part of the device model's state.
    fn monitor(&mut self) -> &mut MonitorState<Self>;
}

/// A monitor that cannot start.
#[derive(Debug, Error)]
pub enum MonitorError {
    /// The VM name does not fit the configured profile.
    #[error("Bad VM name")]
    Name(#[from] NameError),
    /// The socket cannot be bound.
    #[error("Cannot serve the monitor socket")]
    Serve(#[from] ServerError),
}

/// The monitor of one VM: its bound socket, ready to serve on the device model's loop.
///
/// Made by [`Monitor::bind`]; [`Monitor::add_to`] puts it on the loop.
pub struct Monitor<C> {
    server: IpcServer<C>,
    outbox: OutboxConfig,
    state: MonitorState<C>,
    path: PathBuf,
}

impl<C> fmt::Debug for Monitor<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("path", &self.path)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<C: DeviceModel> Monitor<C> {
    /// Checks the VM name against the profile and binds `<vm>.monitor` in the socket
    /// directory with the registry's providers. With a policy in `cfg`, the server refuses
    /// state changes from the peers it does not allow.
    ///
    /// Nothing is served, and nothing sent to acrnd, before [`Monitor::add_to`]; with
    /// `cfg.announce`, DM_NOTIFY (running) is the first message sent then.
    pub fn bind(cfg: MonitorConfig, registry: OpsRegistry<C>) -> Result<Monitor<C>, MonitorError> {
        let vm = VmName::new(cfg.vm.as_str(), cfg.profile)?;
        let mut scfg = ServerConfig::new(vm.monitor_name(), &cfg.socket_dir);
        scfg.profile = cfg.profile;
        scfg.log = cfg.event_log.clone();
        let guarded = cfg.policy.is_some();
        if let Some(p) = cfg.policy {
            scfg.policy = p;
        }
        let server = IpcServer::bind(scfg, dispatch::handlers(guarded))?;
        let outbox = OutboxConfig {
            client: Client::new(&cfg.socket_dir, cfg.profile),
            acrnd: cfg.acrnd,
            vm: vm.as_str().to_owned(),
            timeout: cfg.acrnd_timeout,
            attempts: cfg.acrnd_attempts,
            backoff: cfg.retry_backoff,
        };
        let mut state = MonitorState::new(vm, cfg.profile, registry, cfg.event_log);
        if cfg.announce {
            state.notify_state(suspend_mode::NONE);
        }
        Ok(Monitor {
            path: server.path().to_owned(),
            server,
            outbox,
            state,
        })
    }

    /// The socket's path (`DIR/<vm>.monitor.<pid>.socket`).
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Serves the socket and starts the outbox to acrnd on `el`; returns the state to keep
    /// in the device model's state `C` (the loop must run with it).
    pub fn add_to(self, el: &mut EventLoop<C>) -> io::Result<MonitorState<C>> {
        el.add(Box::new(self.server))?;
        let outbox = el.add(Box::new(Outbox::new(self.outbox)))?;
        let mut state = self.state;
        state.attach(el.notifier(outbox));
        Ok(state)
    }
}
