//! acrnd configuration: the command line with the production defaults, and the validated
//! [`Config`]. Every path, timeout, policy and the ABI profile is a flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mngr_ipc::Profile;
use mngr_ipc::auth::Policy;
use mngr_ipc::daemon::{CommonArgs, OptionError};
use mngr_ipc::host::DEFAULT_INTENT_CMD;
use mngr_ipc::naming::DEFAULT_SOCKET_DIR;
use mngr_ipc::vocabulary::{DEFAULT_LAUNCH_DIR, LCS_NAMES};
use thiserror::Error;

use crate::timers::FaultPoint;

/// Where acrnd keeps its state (systemd `StateDirectory=acrn`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/acrn";
/// Upstream's timer list, imported once if present.
pub const UPSTREAM_TIMER_LIST: &str = "/usr/share/acrn/conf/timer_list";

/// Command line of acrnd.
#[derive(Debug, Parser)]
#[command(
    name = "acrnd",
    version,
    about = "ACRN VM lifecycle daemon: starts VMs at boot, stops or suspends them for power transitions, keeps their RTC wake-ups"
)]
pub struct Args {
    /// Launch scripts `<vm>.sh` (and `<vm>.args`).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_LAUNCH_DIR)]
    pub launch_dir: PathBuf,
    /// Directory of the mngr IPC sockets.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SOCKET_DIR)]
    pub socket_dir: PathBuf,
    /// State directory: the timer store `timer_list` lives here.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Upstream timer list to import once, on first start.
    #[arg(long, value_name = "PATH", default_value = UPSTREAM_TIMER_LIST)]
    pub upstream_timers: PathBuf,
    /// Lifecycle service names to try, in order.
    #[arg(long = "lcs", value_name = "NAME", default_values = LCS_NAMES)]
    pub lcs_names: Vec<String>,
    /// Do not start any VM at boot.
    #[arg(long)]
    pub no_autostart: bool,
    /// VMs started at once at boot.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub start_parallel: usize,
    /// Pause between two starts at boot.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub start_delay_ms: u64,
    /// Timeout of a request to a device model.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub dm_timeout_ms: u64,
    /// Timeout of a request to the lifecycle service.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub lcs_timeout_ms: u64,
    /// Interval of DM_QUERY while a VM changes state without telling (device models that do
    /// not send DM_NOTIFY).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub poll_ms: u64,
    /// At the deadline of a stop-all, power the stragglers off (DM_STOP force, then kill)
    /// even when the request did not ask for force.
    #[arg(long)]
    pub force_on_deadline: bool,
    /// After a forced DM_STOP, how long a device model has before it is killed.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub kill_grace_ms: u64,
    /// Time given to the VMs to stop when the host powers off or reboots.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub shutdown_budget: u64,
    /// Command whose output tells, at SIGTERM, whether the host reboots or powers off.
    #[arg(long, value_name = "CMD", default_value = DEFAULT_INTENT_CMD)]
    pub intent_cmd: String,
    /// The options every daemon of the suite takes.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// An unusable configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Empty command.
    #[error("Command for {0} is empty")]
    EmptyCommand(&'static str),
    /// A zero where a positive value is needed.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A common option (profile, group) cannot be used.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// Unknown fault point.
    #[error("Unknown fault point {0:?}")]
    Fault(String),
}

/// Everything acrnd runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Launch scripts.
    pub launch_dir: PathBuf,
    /// mngr sockets.
    pub socket_dir: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Upstream timer list.
    pub upstream_timers: PathBuf,
    /// Lifecycle service names, in order.
    pub lcs_names: Vec<String>,
    /// Start VMs at boot.
    pub autostart: bool,
    /// Parallel starts at boot.
    pub start_parallel: usize,
    /// Pause between starts.
    pub start_delay: Duration,
    /// DM request timeout.
    pub dm_timeout: Duration,
    /// LCS request timeout.
    pub lcs_timeout: Duration,
    /// Query interval during unannounced transitions.
    pub poll: Duration,
    /// Force stragglers at a stop-all deadline.
    pub force_on_deadline: bool,
    /// Grace after a forced stop before kill.
    pub kill_grace: Duration,
    /// VM stop budget at host shutdown.
    pub shutdown_budget: Duration,
    /// Host-intent command.
    pub intent_cmd: Vec<String>,
    /// Who may make privileged requests.
    pub policy: Policy,
    /// Wire profile.
    pub profile: Profile,
    /// Event log.
    pub event_log: Option<PathBuf>,
    /// systemd watchdog, if enabled.
    pub watchdog: Option<Duration>,
    /// Crash point of the timer store (tests).
    pub fault: Option<FaultPoint>,
}

fn nonzero(ms: u64, what: &'static str) -> Result<Duration, ConfigError> {
    if ms == 0 {
        return Err(ConfigError::Zero(what));
    }
    Ok(Duration::from_millis(ms))
}

impl Args {
    /// Validates the command line. `watchdog` and `fault` come from the environment
    /// (`WATCHDOG_USEC`, `ACRND_FAULT`), read by `main`.
    pub fn into_config(
        self,
        watchdog: Option<Duration>,
        fault: Option<String>,
    ) -> Result<Config, ConfigError> {
        let fault = match fault {
            Some(f) => Some(FaultPoint::from_name(&f).ok_or(ConfigError::Fault(f))?),
            None => None,
        };
        let intent_cmd: Vec<String> = self
            .intent_cmd
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if intent_cmd.is_empty() {
            return Err(ConfigError::EmptyCommand("--intent-cmd"));
        }
        if self.start_parallel == 0 {
            return Err(ConfigError::Zero("--start-parallel"));
        }
        Ok(Config {
            launch_dir: self.launch_dir,
            socket_dir: self.socket_dir,
            state_dir: self.state_dir,
            upstream_timers: self.upstream_timers,
            lcs_names: self.lcs_names,
            autostart: !self.no_autostart,
            start_parallel: self.start_parallel,
            start_delay: Duration::from_millis(self.start_delay_ms),
            dm_timeout: nonzero(self.dm_timeout_ms, "--dm-timeout-ms")?,
            lcs_timeout: nonzero(self.lcs_timeout_ms, "--lcs-timeout-ms")?,
            poll: nonzero(self.poll_ms, "--poll-ms")?,
            force_on_deadline: self.force_on_deadline,
            kill_grace: Duration::from_millis(self.kill_grace_ms),
            shutdown_budget: nonzero(
                self.shutdown_budget.saturating_mul(1000),
                "--shutdown-budget",
            )?,
            intent_cmd,
            policy: self.common.policy()?,
            profile: self.common.profile()?,
            event_log: self.common.event_log,
            watchdog,
            fault,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], fault: Option<&str>) -> Result<Config, ConfigError> {
        let mut v = vec!["acrnd"];
        v.extend_from_slice(args);
        Args::try_parse_from(v)
            .expect("parses")
            .into_config(None, fault.map(str::to_owned))
    }

    #[test]
    fn production_defaults() {
        let c = parse(&[], None).expect("valid");
        assert_eq!(c.launch_dir, PathBuf::from("/usr/share/acrn/conf/add"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/acrn"));
        assert_eq!(c.lcs_names, vec!["sos-lcs", "service-vm-lcs"]);
        assert_eq!(c.policy, Policy::default());
        assert!(c.autostart);
        assert_eq!(c.fault, None);
    }

    #[test]
    fn faults_and_bad_values() {
        let c = parse(&[], Some("store.after-rename")).expect("valid");
        assert_eq!(c.fault, Some(FaultPoint::AfterRename));
        assert!(matches!(parse(&[], Some("x")), Err(ConfigError::Fault(_))));
        assert!(matches!(
            parse(&["--poll-ms", "0"], None),
            Err(ConfigError::Zero(_))
        ));
        assert!(matches!(
            parse(&["--abi", "Q"], None),
            Err(ConfigError::Option(OptionError::Profile(_)))
        ));
        let c = parse(&["--lcs", "x", "--lcs", "y"], None).expect("valid");
        assert_eq!(c.lcs_names, vec!["x", "y"]);
    }
}
