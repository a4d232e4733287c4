//! The settings of a monitor ([`MonitorConfig`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use mngr_ipc::Profile;
use mngr_ipc::auth::Policy;
use mngr_ipc::event_log::EventLog;
use mngr_ipc::vocabulary::{self, VmName};

/// acrnd's server name (the default recipient of ACRND_TIMER and DM_NOTIFY).
pub const DEFAULT_ACRND: &str = vocabulary::ACRND;

/// Settings of a monitor.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// The VM (checked again for [`MonitorConfig::profile`] by
    /// [`Monitor::bind`](super::Monitor::bind)).
    pub vm: VmName,
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
    /// Send DM_NOTIFY with the current mode (running) once the monitor joins the loop.
    pub announce: bool,
    /// Who may send state-changing requests (`None`: whoever can open the socket). The
    /// server enforces it: DM_QUERY stays open, every other request is privileged.
    pub policy: Option<Policy>,
    /// Where `ipc.*`, `dm.state` and `acrnd.*` events go.
    pub event_log: EventLog,
}

impl MonitorConfig {
    /// Defaults: profile F, acrnd `acrnd`, 2 s per request, 3 attempts from 100 ms apart,
    /// announce on, no policy, no event log.
    pub fn new(vm: VmName, socket_dir: impl AsRef<Path>) -> Self {
        MonitorConfig {
            event_log: EventLog::disabled(vm.as_str()),
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
