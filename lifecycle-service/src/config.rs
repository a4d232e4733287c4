//! sos-lcs configuration: the command line (with the production defaults) and the
//! validated [`Config`] the daemon runs with. Every path, period, timeout, command, mode and
//! the ABI profile is a flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mngr_ipc::Profile;
use mngr_ipc::auth::Policy;
use mngr_ipc::daemon::{CommonArgs, OptionError};
use mngr_ipc::host::DEFAULT_INTENT_CMD;
use mngr_ipc::line::{LineMode, LineSpec};
use mngr_ipc::naming::DEFAULT_SOCKET_DIR;
use thiserror::Error;

/// The CBC lifecycle character device of the kernel CBC driver.
pub const DEFAULT_LINE: &str = "/dev/cbc-lifecycle";
/// The IOC UART's speed on the reference boards (`cbc_attach`).
pub const DEFAULT_BAUD: u32 = 4_000_000;

/// Command line of sos-lcs.
#[derive(Debug, Parser)]
#[command(
    name = mngr_ipc::vocabulary::SOS_LCS,
    version,
    about = "SOS Life Cycle Service: heartbeats to the IOC, wakeup reasons and power transitions with acrnd"
)]
pub struct Args {
    /// Lifecycle channel of the kernel CBC driver (cdev mode): 4-byte service frames.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_LINE)]
    pub line: PathBuf,
    /// Speak the CBC link layer on the IOC's serial line instead (uart mode).
    #[arg(long, value_name = "TTY", conflicts_with = "line")]
    pub uart: Option<PathBuf>,
    /// Baud rate of the serial line (uart mode).
    #[arg(long, default_value_t = DEFAULT_BAUD)]
    pub baud: u32,
    /// Directory of the mngr IPC sockets.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SOCKET_DIR)]
    pub socket_dir: PathBuf,
    /// Heartbeat period.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// `timeout` sent in ACRND_STOP: how long acrnd may take, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub stop_timeout: u32,
    /// Longest wait in SHUTDOWN_DELAY and the ACRND_* states before acting anyway.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait_bound: u64,
    /// Timeout of each request to acrnd.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub ipc_timeout_ms: u64,
    /// Attempts to deliver ACRND_RESUME / ACRND_STOP.
    #[arg(long, value_name = "N", default_value_t = 6)]
    pub retries: u32,
    /// Longest a WAKEUP_REASON asked before the first reason frame waits for it
    /// (below the 2 s the C acrnd waits).
    #[arg(long, value_name = "MS", default_value_t = 1500)]
    pub reason_wait_ms: u64,
    /// Longest pause between attempts to open a missing IOC line.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub reopen_max_ms: u64,
    /// Command run when the IOC confirms S5 (split on spaces; run without a shell).
    #[arg(long, value_name = "CMD", default_value = "systemctl poweroff")]
    pub poweroff_cmd: String,
    /// Command run when the IOC confirms a reboot.
    #[arg(long, value_name = "CMD", default_value = "systemctl reboot")]
    pub reboot_cmd: String,
    /// Command run when the IOC confirms S3; returns when the system has resumed.
    #[arg(long, value_name = "CMD", default_value = "systemctl suspend")]
    pub suspend_cmd: String,
    /// Command whose output tells, at SIGTERM, whether a reboot (`reboot.target`) or a
    /// power-off (`poweroff.target`, `halt.target`) is under way.
    #[arg(long, value_name = "CMD", default_value = DEFAULT_INTENT_CMD)]
    pub intent_cmd: String,
    /// No acrnd on this system (a User VM, native Linux): serve a stand-in `acrnd` that
    /// answers ACRND_STOP with SHUTDOWN or SUSPEND itself.
    #[arg(long)]
    pub no_acrnd: bool,
    /// The options every daemon of the suite takes (`--allow-uid`, `--allow-group`: who may
    /// send SHUTDOWN / SUSPEND / REBOOT / RTC_TIMER; `--abi`, `--event-log`, `-v`).
    #[command(flatten)]
    pub common: CommonArgs,
}

/// An unusable configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A command is empty.
    #[error("Command for {0} is empty")]
    EmptyCommand(&'static str),
    /// A period or timeout of zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A bad `--abi` or `--allow-group`.
    #[error(transparent)]
    Options(#[from] OptionError),
}

/// The power commands, as argument vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerCommands {
    /// S5.
    pub poweroff: Vec<String>,
    /// Reboot.
    pub reboot: Vec<String>,
    /// S3.
    pub suspend: Vec<String>,
}

/// Everything sos-lcs runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The IOC line.
    pub line: LineSpec,
    /// mngr socket directory.
    pub socket_dir: PathBuf,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// ACRND_STOP `timeout`, seconds.
    pub stop_timeout: u32,
    /// Bound of the waiting states.
    pub wait_bound: Duration,
    /// Timeout of requests to acrnd.
    pub ipc_timeout: Duration,
    /// Delivery attempts to acrnd.
    pub retries: u32,
    /// Bound of a deferred WAKEUP_REASON.
    pub reason_wait: Duration,
    /// Longest pause between attempts to open the line.
    pub reopen_max: Duration,
    /// Power commands.
    pub commands: PowerCommands,
    /// Host-intent command.
    pub intent_cmd: Vec<String>,
    /// Serve the stand-in `acrnd`.
    pub no_acrnd: bool,
    /// Who may make privileged requests.
    pub policy: Policy,
    /// Wire profile.
    pub profile: Profile,
    /// Event log path.
    pub event_log: Option<PathBuf>,
    /// systemd watchdog interval, if enabled (`WATCHDOG_USEC`).
    pub watchdog: Option<Duration>,
}

fn argv(cmd: &str, what: &'static str) -> Result<Vec<String>, ConfigError> {
    let v: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
    if v.is_empty() {
        return Err(ConfigError::EmptyCommand(what));
    }
    Ok(v)
}

fn nonzero(ms: u64, what: &'static str) -> Result<Duration, ConfigError> {
    if ms == 0 {
        return Err(ConfigError::Zero(what));
    }
    Ok(Duration::from_millis(ms))
}

impl Args {
    /// Validates the command line; `watchdog` is what systemd asked for.
    pub fn into_config(self, watchdog: Option<Duration>) -> Result<Config, ConfigError> {
        let line = match self.uart {
            Some(path) => LineSpec {
                path,
                mode: LineMode::Uart,
                baud: self.baud,
            },
            None => LineSpec {
                path: self.line,
                mode: LineMode::Cdev,
                baud: self.baud,
            },
        };
        if self.retries == 0 {
            return Err(ConfigError::Zero("--retries"));
        }
        Ok(Config {
            line,
            socket_dir: self.socket_dir,
            heartbeat: nonzero(self.heartbeat_ms, "--heartbeat-ms")?,
            stop_timeout: self.stop_timeout,
            wait_bound: nonzero(self.wait_bound.saturating_mul(1000), "--wait-bound")?,
            ipc_timeout: nonzero(self.ipc_timeout_ms, "--ipc-timeout-ms")?,
            retries: self.retries,
            reason_wait: nonzero(self.reason_wait_ms, "--reason-wait-ms")?,
            reopen_max: nonzero(self.reopen_max_ms, "--reopen-max-ms")?,
            commands: PowerCommands {
                poweroff: argv(&self.poweroff_cmd, "--poweroff-cmd")?,
                reboot: argv(&self.reboot_cmd, "--reboot-cmd")?,
                suspend: argv(&self.suspend_cmd, "--suspend-cmd")?,
            },
            intent_cmd: argv(&self.intent_cmd, "--intent-cmd")?,
            no_acrnd: self.no_acrnd,
            policy: self.common.policy()?,
            profile: self.common.profile()?,
            event_log: self.common.event_log,
            watchdog,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["sos-lcs"];
        v.extend_from_slice(args);
        Args::try_parse_from(v).expect("parses").into_config(None)
    }

    #[test]
    fn production_defaults() {
        let c = parse(&[]).expect("valid");
        assert_eq!(c.line.path, PathBuf::from("/dev/cbc-lifecycle"));
        assert_eq!(c.line.mode, LineMode::Cdev);
        assert_eq!(c.socket_dir, PathBuf::from("/run/acrn/mngr"));
        assert_eq!(c.heartbeat, Duration::from_secs(1));
        assert_eq!(c.stop_timeout, 20);
        assert_eq!(c.wait_bound, Duration::from_secs(60));
        assert_eq!(c.retries, 6);
        assert_eq!(c.commands.suspend, vec!["systemctl", "suspend"]);
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.profile, Profile::F);
    }

    #[test]
    fn uart_mode_and_overrides() {
        let c = parse(&[
            "--uart",
            "/dev/ttyS1",
            "--baud",
            "115200",
            "--allow-uid",
            "1000",
            "--allow-group",
            "27",
            "--abi",
            "e",
            "--heartbeat-ms",
            "50",
        ])
        .expect("valid");
        assert_eq!(c.line.mode, LineMode::Uart);
        assert_eq!(c.line.baud, 115_200);
        assert_eq!(c.policy, Policy::new(vec![1000], vec![27]));
        assert_eq!(c.profile, Profile::E);
        assert_eq!(c.heartbeat, Duration::from_millis(50));
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(matches!(
            parse(&["--heartbeat-ms", "0"]),
            Err(ConfigError::Zero(_))
        ));
        assert!(matches!(
            parse(&["--poweroff-cmd", " "]),
            Err(ConfigError::EmptyCommand(_))
        ));
        assert!(matches!(
            parse(&["--abi", "Q"]),
            Err(ConfigError::Options(OptionError::Profile(_)))
        ));
        assert!(matches!(
            parse(&["--allow-group", "no-such-group-here"]),
            Err(ConfigError::Options(OptionError::Group(_)))
        ));
        assert!(Args::try_parse_from(["sos-lcs", "--line", "/x", "--uart", "/y"]).is_err());
    }
}
