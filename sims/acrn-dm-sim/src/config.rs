//! acrn-dm-sim's command line and the validated [`Config`] it runs with.
//!
//! Launched by acrnd exactly as acrn-dm: from a launch script that `exec`s it, the VM name
//! as the last argument. The environment is read in `main` only: `ACRN_WAKEUP_REASON`
//! (set by acrnd) is handed to [`Args::into_config`] as the default boot reason.

use std::path::PathBuf;
use std::time::Duration;

use acrn_dm_monitor::monitor::DEFAULT_ACRND;
use clap::{Parser, ValueEnum};
use mngr_ipc::Profile;
use mngr_ipc::auth::Policy;
use mngr_ipc::cbc::RtcWake;
use mngr_ipc::daemon::{CommonArgs, OptionError};
use mngr_ipc::naming::DEFAULT_SOCKET_DIR;
use mngr_ipc::profile::ProfileError;
use mngr_ipc::vocabulary::{NameError, VmName};
use thiserror::Error;

use crate::guest::{GuestConfig, GuestFault};

/// Environment variable acrnd sets to the wakeup reason a launched VM should boot with.
pub const WAKEUP_REASON_ENV: &str = "ACRN_WAKEUP_REASON";

/// A misbehaviour to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Fault {
    /// The guest never acts on stop requests; its DM keeps answering "running".
    HangStop,
    /// The process dies abruptly (SIGABRT, socket left behind) in the middle of a stop.
    CrashStop,
    /// The guest ignores suspend requests.
    RefuseSuspend,
}

/// Command line of acrn-dm-sim.
#[derive(Debug, Parser)]
#[command(
    name = "acrn-dm-sim",
    version,
    about = "A simulated ACRN device model: monitor socket, virtual IOC and a simulated guest",
    // A bad --abi is a usage error of the command line itself, as when it was a Profile.
    mut_arg("abi", |a| a.value_parser(parse_abi)),
)]
pub struct Args {
    /// The options every binary of the suite takes. `--allow-uid` / `--allow-group` make
    /// the monitor's policy; without either, every request is open (as acrn-dm's).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Directory of the mngr IPC sockets.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SOCKET_DIR)]
    pub socket_dir: PathBuf,
    /// Native lifecycle channel (4-byte service frames), e.g. an ioc-sim mirror pty.
    #[arg(long, value_name = "PATH")]
    pub native: Option<PathBuf>,
    /// Boot reason for the guest (hex 0x.. or decimal) [default: $ACRN_WAKEUP_REASON, else 0x20].
    #[arg(long, value_name = "N", value_parser = parse_u32)]
    pub boot_reason: Option<u32>,
    /// Guest heartbeat period (also the period pending requests are re-sent at).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Server name of acrnd (receives ACRND_TIMER and DM_NOTIFY).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ACRND)]
    pub acrnd: String,
    /// Time the guest takes from a stop request to powering off.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub poweroff_delay_ms: u64,
    /// Time the guest takes from a suspend request to suspending.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub suspend_delay_ms: u64,
    /// Arm an RTC wake-up of N seconds before suspending or powering off.
    #[arg(long, value_name = "N")]
    pub rtc_secs: Option<u64>,
    /// Send the RTC frame right after the shutdown-prepared heartbeat instead of before it.
    #[arg(long, requires = "rtc_secs")]
    pub rtc_after: bool,
    /// Misbehave (repeatable).
    #[arg(long, value_enum, value_name = "FAULT")]
    pub fault: Vec<Fault>,
    /// The VM name (the last argument, as for acrn-dm).
    #[arg(value_name = "VM")]
    pub vm: String,
}

/// An unusable command line.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The VM name.
    #[error("Bad VM name")]
    Name(#[from] NameError),
    /// `--abi`, `--allow-uid` or `--allow-group`.
    #[error("Bad option")]
    Option(#[from] OptionError),
    /// A period of zero.
    #[error("--heartbeat-ms must be greater than zero")]
    ZeroPeriod,
    /// `ACRN_WAKEUP_REASON` is not a number.
    #[error("{WAKEUP_REASON_ENV}={0:?} is not a number")]
    EnvReason(String),
    /// The RTC wake-up does not fit the frame.
    #[error("--rtc-secs {0} is out of range (1 to 65535 weeks)")]
    Rtc(u64),
}

/// What acrn-dm-sim runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The VM.
    pub vm: VmName,
    /// Socket directory.
    pub socket_dir: PathBuf,
    /// Native lifecycle channel.
    pub native: Option<PathBuf>,
    /// Boot reason as given (the virtual IOC masks it).
    pub boot_reason: u32,
    /// Guest heartbeat and resend period.
    pub heartbeat: Duration,
    /// acrnd's server name.
    pub acrnd: String,
    /// ABI profile.
    pub profile: Profile,
    /// Who may change the VM's state (`None`: anyone who can open the socket).
    pub policy: Option<Policy>,
    /// Event log.
    pub event_log: Option<PathBuf>,
    /// The guest's behaviour.
    pub guest: GuestConfig,
    /// Die abruptly in the middle of a stop.
    pub crash_stop: bool,
}

/// Parses `0x..` (hex) or decimal.
pub fn parse_u32(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => t.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a number (hex 0x.. or decimal): {e}"))
}

/// Checks `--abi` when the command line is parsed (the value stays the name given).
fn parse_abi(s: &str) -> Result<String, ProfileError> {
    Profile::by_name(s).map(|_| s.to_owned())
}

impl Args {
    /// Validates; `env_reason` is `ACRN_WAKEUP_REASON` if set (used when `--boot-reason`
    /// is absent).
    pub fn into_config(self, env_reason: Option<&str>) -> Result<Config, ConfigError> {
        let profile = self.common.profile()?;
        let vm = VmName::new(&self.vm, profile)?;
        let policy = if self.common.allow_uid.is_empty() && self.common.allow_group.is_empty() {
            None
        } else {
            Some(self.common.policy()?)
        };
        if self.heartbeat_ms == 0 {
            return Err(ConfigError::ZeroPeriod);
        }
        let boot_reason = match (self.boot_reason, env_reason) {
            (Some(r), _) => r,
            (None, Some(e)) => parse_u32(e).map_err(|_| ConfigError::EnvReason(e.to_owned()))?,
            (None, None) => mngr_ipc::cbc::reason::DEFAULT_BOOT,
        };
        let rtc = match self.rtc_secs {
            None => None,
            Some(s) => Some(
                i64::try_from(s)
                    .ok()
                    .and_then(RtcWake::from_delta)
                    .ok_or(ConfigError::Rtc(s))?,
            ),
        };
        let faults = self
            .fault
            .iter()
            .filter_map(|f| match f {
                Fault::HangStop => Some(GuestFault::HangStop),
                Fault::RefuseSuspend => Some(GuestFault::RefuseSuspend),
                Fault::CrashStop => None,
            })
            .collect();
        Ok(Config {
            vm,
            socket_dir: self.socket_dir,
            native: self.native,
            boot_reason,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            acrnd: self.acrnd,
            profile,
            policy,
            event_log: self.common.event_log,
            guest: GuestConfig {
                poweroff_delay: Duration::from_millis(self.poweroff_delay_ms),
                suspend_delay: Duration::from_millis(self.suspend_delay_ms),
                rtc,
                rtc_after: self.rtc_after,
                faults,
            },
            crash_stop: self.fault.contains(&Fault::CrashStop),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mngr_ipc::cbc::RtcUnit;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("acrn-dm-sim").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn defaults() {
        let c = parse(&["vm1"]).into_config(None).expect("valid");
        assert_eq!(c.vm.as_str(), "vm1");
        assert_eq!(c.socket_dir, PathBuf::from("/run/acrn/mngr"));
        assert_eq!(c.boot_reason, 0x20);
        assert_eq!(c.heartbeat, Duration::from_secs(1));
        assert_eq!(c.acrnd, "acrnd");
        assert_eq!(c.profile, Profile::F);
        assert_eq!(c.guest.poweroff_delay, Duration::from_millis(500));
        assert_eq!(c.guest.suspend_delay, Duration::from_millis(500));
        assert_eq!(c.guest.rtc, None);
        assert!(c.guest.faults.is_empty());
        assert!(!c.crash_stop);
        assert!(c.native.is_none());
        assert_eq!(c.policy, None, "every request open, as acrn-dm's");
    }

    #[test]
    fn allow_options_make_a_policy() {
        let c = parse(&["--allow-uid", "1000", "--allow-uid", "0", "vm1"])
            .into_config(None)
            .expect("valid");
        assert_eq!(c.policy, Some(Policy::new(vec![1000, 0], Vec::new())));
        let c = parse(&["--allow-group", "27", "vm1"])
            .into_config(None)
            .expect("valid");
        assert_eq!(
            c.policy,
            Some(Policy::new(vec![0], vec![27])),
            "root stays allowed"
        );
        assert!(matches!(
            parse(&["--allow-group", "no-such-group-here", "vm1"]).into_config(None),
            Err(ConfigError::Option(OptionError::Group(_)))
        ));
    }

    #[test]
    fn boot_reason_flag_then_environment_then_default() {
        assert_eq!(
            parse(&["--boot-reason", "0x200", "vm1"])
                .into_config(Some("0x20"))
                .expect("valid")
                .boot_reason,
            0x200
        );
        assert_eq!(
            parse(&["--boot-reason", "512", "vm1"])
                .into_config(None)
                .expect("valid")
                .boot_reason,
            512
        );
        assert_eq!(
            parse(&["vm1"])
                .into_config(Some("0X800"))
                .expect("valid")
                .boot_reason,
            0x800
        );
        assert_eq!(
            parse(&["vm1"])
                .into_config(Some(" 32 "))
                .expect("valid")
                .boot_reason,
            32
        );
        assert!(matches!(
            parse(&["vm1"]).into_config(Some("ignition")),
            Err(ConfigError::EnvReason(_))
        ));
        assert!(Args::try_parse_from(["acrn-dm-sim", "--boot-reason", "0xZZ", "vm1"]).is_err());
    }

    #[test]
    fn every_flag() {
        let c = parse(&[
            "--socket-dir",
            "/x/mngr",
            "--native",
            "/x/lc",
            "--heartbeat-ms",
            "50",
            "--acrnd",
            "acrnd-test",
            "--abi",
            "d",
            "--event-log",
            "/x/ev",
            "--poweroff-delay-ms",
            "10",
            "--suspend-delay-ms",
            "20",
            "--rtc-secs",
            "7",
            "--rtc-after",
            "--fault",
            "hang-stop",
            "--fault",
            "crash-stop",
            "--fault",
            "refuse-suspend",
            "-vv",
            "a-long-vm-name-beyond-16",
        ])
        .into_config(None)
        .expect("valid");
        assert_eq!(c.native, Some(PathBuf::from("/x/lc")));
        assert_eq!(c.heartbeat, Duration::from_millis(50));
        assert_eq!(c.acrnd, "acrnd-test");
        assert_eq!(c.profile, Profile::D, "long names fit profile D");
        assert_eq!(c.event_log, Some(PathBuf::from("/x/ev")));
        assert_eq!(
            c.guest.rtc,
            Some(RtcWake {
                value: 7,
                unit: RtcUnit::Seconds
            })
        );
        assert!(c.guest.rtc_after);
        assert_eq!(
            c.guest.faults,
            vec![GuestFault::HangStop, GuestFault::RefuseSuspend]
        );
        assert!(c.crash_stop);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(matches!(
            parse(&["vm.1"]).into_config(None),
            Err(ConfigError::Name(_))
        ));
        assert!(matches!(
            parse(&["acrnd"]).into_config(None),
            Err(ConfigError::Name(_))
        ));
        assert!(matches!(
            parse(&["a-long-vm-name-beyond-16"]).into_config(None),
            Err(ConfigError::Name(_))
        ));
        assert!(matches!(
            parse(&["--heartbeat-ms", "0", "vm1"]).into_config(None),
            Err(ConfigError::ZeroPeriod)
        ));
        assert!(matches!(
            parse(&["--rtc-secs", "0", "vm1"]).into_config(None),
            Err(ConfigError::Rtc(0))
        ));
        assert!(Args::try_parse_from(["acrn-dm-sim", "--abi", "Z", "vm1"]).is_err());
        assert!(Args::try_parse_from(["acrn-dm-sim", "--fault", "explode", "vm1"]).is_err());
        assert!(Args::try_parse_from(["acrn-dm-sim", "--rtc-after", "vm1"]).is_err());
        assert!(
            Args::try_parse_from(["acrn-dm-sim"]).is_err(),
            "VM name required"
        );
    }
}
