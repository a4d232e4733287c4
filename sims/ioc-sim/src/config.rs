//! Command line of `ioc-sim` and the validated [`Config`] of a run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use mngr_ipc::line::LineMode;
use mngr_ipc::naming::DEFAULT_SOCKET_DIR;
use mngr_ipc::profile::{Profile, ProfileError};
use thiserror::Error;

use crate::command::{ScenarioError, ScenarioStep, read_scenario};
use crate::fault::{FaultConfig, seed_from_clock};
use crate::model::Initial;

/// The control-line and scenario formats, the IOC model and the exit statuses, shown by
/// `ioc-sim run --help` and `ioc-sim ctl --help`.
pub const FORMATS_HELP: &str = "\
CONTROL SOCKET (--control): one request per line, one reply line per request, starting
with `ok` or `err`:
  ignition on              BTN set; powers on from off, wakes from suspend
  ignition off [force-s5]  BTN cleared (force-s5: FORCE_S5 set until the next ignition on)
  door open | door close   DOOR bit; door open wakes from suspend
  reboot-request           send REBOOT {err 0} to the lifecycle service (mngr IPC);
                           replied after its ack: `ok ack err=0`
  status                   `ok state=running|prepared|off|suspended reason=0x.. rtc=<s>|none
                           hb=<last heartbeat> frames_rx=N frames_tx=N drop=N dup=N
                           corrupt=N garbage=N ignition=on|off door=open|closed
                           line=open|closed`
  poweroff | reboot        the SoC's power commands
  suspend                  the SoC suspends; replied when the system wakes:
                           `ok resumed reason=0x200`
  reopen                   close the lifecycle pty, create a new one after --reopen-delay-ms
  quit                     exit (symlinks and the control socket are removed)
The control socket is created last: once it accepts, the lines exist.

SCENARIO FILE (--scenario): one `<ms> <request>` per line, ms since start, non-decreasing;
`#` starts a comment; blank lines are ignored. Replies go to the log. Example:
  # ignition off after 300 ms, back on 5 s later
  300 ignition off
  5300 ignition on

IOC MODEL: the reason frame `01 r0 r1 r2` goes out every --reason-period-ms while the
system runs, and at once on every change. reason = BTN 0x20 (ignition on) | DOOR 0x800
(door open) | RTC 0x200 (after an RTC wake, until the next ignition/door change or power
off) | FORCE_S5 0x400000 (after `ignition off force-s5`, until ignition on) | SOC 0x800000
(from the SoC's first ACTIVE heartbeat until a shutdown-prepared heartbeat or power loss).
A shutdown-prepared heartbeat (S5 02 00 01 00, reboot 02 00 02 00, S3 02 00 07 00) makes
the state `prepared`: reason 0 at once and on every period, until the SoC's power command:
poweroff -> off (ignition on or a due RTC powers on), reboot -> running, suspend ->
suspended (ignition on, door open or a due RTC wakes). A wake event while prepared wakes
the system right after it went down. RTC frame `05 v0 v1 unit`: armed for v x unit from
its reception (the last one wins, 0 disarms); it wakes the system while off or suspended.
Watchdog (--watchdog-ms): while running or prepared, no heartbeat for that long cuts the
power (state off); a suppress frame `04 ms0 ms1 ms2` pushes the deadline back by its ms.

FAULTS: applied to each IOC->SoC frame of the lifecycle line (never to mirrors), decided by
a generator seeded with --seed: garbage before the frame, drop, corrupt (one bit flipped),
dup (written twice). Counted in `status` and logged as `fault` events.

EXIT STATUS: run: 0 after quit or SIGTERM/SIGINT, 1 on a runtime failure, 2 on a bad
command line or scenario. ctl: 0 for an `ok` reply, 1 for an `err` reply or no reply,
3 if the control socket is unreachable.";

/// An IOC on the far end of a pseudo-terminal, for hardware-free runs of sos-lcs and the
/// device models.
#[derive(Debug, Parser)]
#[command(name = "ioc-sim", version)]
pub struct Cli {
    /// More log output: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the simulated IOC.
    #[command(after_long_help = FORMATS_HELP)]
    Run(Box<RunArgs>),
    /// Send one request to a running simulator and print its reply.
    #[command(after_long_help = FORMATS_HELP)]
    Ctl(CtlArgs),
}

/// Framing of the lifecycle line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Bare 4-byte service frames, as /dev/cbc-lifecycle carries them.
    Cdev,
    /// CBC link frames on the lifecycle channel, as the IOC's UART carries them.
    Uart,
}

/// The state to start in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitialArg {
    /// Running with the ignition on.
    Running,
    /// Off, ignition off.
    Off,
    /// Suspended to RAM, ignition off.
    Suspended,
}

/// Options of `ioc-sim run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Symlink to create, pointing at the lifecycle pty's slave (what the SoC opens).
    #[arg(long, value_name = "PATH")]
    pub line: PathBuf,
    /// Framing of the lifecycle line.
    #[arg(long, value_enum, default_value_t = ModeArg::Cdev)]
    pub mode: ModeArg,
    /// Symlink of an extra pty (cdev framing) carrying a copy of every IOC→SoC frame, for
    /// a device model's virtual IOC; repeatable. Input on it is discarded.
    #[arg(long, value_name = "PATH")]
    pub mirror: Vec<PathBuf>,
    /// Unix socket taking control requests (not inside the mngr socket dir).
    #[arg(long, value_name = "PATH")]
    pub control: PathBuf,
    /// The mngr IPC socket dir, for `reboot-request`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SOCKET_DIR)]
    pub socket_dir: PathBuf,
    /// mngr server name of the lifecycle service, for `reboot-request`.
    #[arg(long, value_name = "NAME", default_value = mngr_ipc::vocabulary::SOS_LCS)]
    pub lcs_name: String,
    /// mngr ABI profile (F, E or D), for `reboot-request`.
    #[arg(long, value_name = "P", default_value = "F", value_parser = Profile::by_name)]
    pub profile: Profile,
    /// Timeout of the `reboot-request` IPC exchange.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub ipc_timeout_ms: u64,
    /// Period of the wake-up reason frames.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub reason_period_ms: u64,
    /// Cut the power after this long without a heartbeat (0: no watchdog).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub watchdog_ms: u64,
    /// State at start.
    #[arg(long, value_enum, default_value_t = InitialArg::Running)]
    pub initial: InitialArg,
    /// Delay between closing and recreating the lifecycle pty on `reopen`.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub reopen_delay_ms: u64,
    /// Requests to run at given times (format below).
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Append one JSON line per event (frames, state changes, faults) to this file.
    #[arg(long, value_name = "PATH")]
    pub event_log: Option<PathBuf>,
    /// Seed of the fault decisions (default: from the clock; printed at start).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Probability of dropping an IOC→SoC frame of the lifecycle line.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub drop: f64,
    /// Probability of writing a frame twice.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub dup: f64,
    /// Probability of flipping one random bit of a frame.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub corrupt: f64,
    /// Probability of inserting garbage before a frame (cdev: a frame with an invalid
    /// header; uart: 1-16 arbitrary bytes).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    pub garbage: f64,
}

/// Options of `ioc-sim ctl`.
#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// The control socket of a running `ioc-sim run`.
    #[arg(long, value_name = "PATH")]
    pub control: PathBuf,
    /// Give up after this many seconds (default: 3600 for `suspend`, 5 otherwise).
    #[arg(long, value_name = "N")]
    pub timeout_secs: Option<u64>,
    /// The request, e.g. `ignition off force-s5`.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
    pub words: Vec<String>,
}

impl CtlArgs {
    /// The request line.
    pub fn request(&self) -> String {
        self.words.join(" ")
    }

    /// The timeout: `--timeout-secs`, else the request's default.
    pub fn timeout(&self) -> Duration {
        match self.timeout_secs {
            Some(s) => Duration::from_secs(s),
            None => crate::ctl::default_timeout(&self.request()),
        }
    }
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability in 0..1"))
    }
}

/// A command line that cannot be run.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A period of zero.
    #[error("--{0} must be at least 1 ms")]
    ZeroPeriod(&'static str),
    /// The control socket would sit in the mngr socket dir.
    #[error("The control socket must not be inside the mngr socket dir {}", .0.display())]
    ControlInSocketDir(PathBuf),
    /// Two of the paths are the same.
    #[error("{} is given twice (line, mirrors, control socket and event log differ)", .0.display())]
    SamePath(PathBuf),
    /// The scenario file is unusable.
    #[error("Bad scenario")]
    Scenario(#[from] ScenarioError),
    /// An unknown ABI profile.
    #[error("Bad ABI profile")]
    Profile(#[from] ProfileError),
}

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Symlink of the lifecycle pty.
    pub line: PathBuf,
    /// Framing of the lifecycle line.
    pub mode: LineMode,
    /// Symlinks of the mirror ptys.
    pub mirrors: Vec<PathBuf>,
    /// The control socket.
    pub control: PathBuf,
    /// The mngr socket dir.
    pub socket_dir: PathBuf,
    /// mngr name of the lifecycle service.
    pub lcs_name: String,
    /// mngr ABI profile.
    pub profile: Profile,
    /// Timeout of the `reboot-request` exchange.
    pub ipc_timeout: Duration,
    /// Period of the reason frames.
    pub reason_period: Duration,
    /// Heartbeat watchdog, if any.
    pub watchdog: Option<Duration>,
    /// State at start.
    pub initial: Initial,
    /// Delay of `reopen`.
    pub reopen_delay: Duration,
    /// Scenario steps.
    pub scenario: Vec<ScenarioStep>,
    /// Event log file.
    pub event_log: Option<PathBuf>,
    /// Fault probabilities and seed.
    pub faults: FaultConfig,
}

/// `path` with its parent resolved, for comparing locations of files that may not exist.
fn resolved(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = parent.canonicalize().unwrap_or_else(|_| parent.to_owned());
    match path.file_name() {
        Some(name) => parent.join(name),
        None => parent,
    }
}

impl Config {
    /// Validates the command line (and reads the scenario file).
    pub fn from_args(args: RunArgs) -> Result<Config, ConfigError> {
        if args.reason_period_ms == 0 {
            return Err(ConfigError::ZeroPeriod("reason-period-ms"));
        }
        let control = resolved(&args.control);
        let socket_dir = args
            .socket_dir
            .canonicalize()
            .unwrap_or_else(|_| args.socket_dir.clone());
        if control.parent() == Some(socket_dir.as_path()) {
            return Err(ConfigError::ControlInSocketDir(args.socket_dir));
        }
        let mut seen: Vec<PathBuf> = Vec::new();
        let paths = std::iter::once(&args.line)
            .chain(&args.mirror)
            .chain(std::iter::once(&args.control))
            .chain(args.event_log.as_ref());
        for p in paths {
            let r = resolved(p);
            if seen.contains(&r) {
                return Err(ConfigError::SamePath(p.clone()));
            }
            seen.push(r);
        }
        let scenario = match &args.scenario {
            Some(path) => read_scenario(path)?,
            None => Vec::new(),
        };
        Ok(Config {
            line: args.line,
            mode: match args.mode {
                ModeArg::Cdev => LineMode::Cdev,
                ModeArg::Uart => LineMode::Uart,
            },
            mirrors: args.mirror,
            control: args.control,
            socket_dir: args.socket_dir,
            lcs_name: args.lcs_name,
            profile: args.profile,
            ipc_timeout: Duration::from_millis(args.ipc_timeout_ms),
            reason_period: Duration::from_millis(args.reason_period_ms),
            watchdog: (args.watchdog_ms > 0).then(|| Duration::from_millis(args.watchdog_ms)),
            initial: match args.initial {
                InitialArg::Running => Initial::Running,
                InitialArg::Off => Initial::Off,
                InitialArg::Suspended => Initial::Suspended,
            },
            reopen_delay: Duration::from_millis(args.reopen_delay_ms),
            scenario,
            event_log: args.event_log,
            faults: FaultConfig {
                seed: args.seed.unwrap_or_else(seed_from_clock),
                drop: args.drop,
                dup: args.dup,
                corrupt: args.corrupt,
                garbage: args.garbage,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ioc-sim").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let mut all = vec!["run", "--line", "/tmp/x/lc", "--control", "/tmp/x/c.sock"];
        all.extend_from_slice(args);
        match parse(&all).expect("parses").command {
            CliCommand::Run(r) => *r,
            CliCommand::Ctl(_) => panic!("not run"),
        }
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let c = Config::from_args(run_args(&["--seed", "5"])).expect("valid");
        assert_eq!(c.mode, LineMode::Cdev);
        assert_eq!(c.reason_period, Duration::from_millis(1000));
        assert_eq!(c.watchdog, None);
        assert_eq!(c.initial, Initial::Running);
        assert_eq!(c.reopen_delay, Duration::from_millis(200));
        assert_eq!(c.socket_dir, Path::new(DEFAULT_SOCKET_DIR));
        assert_eq!(c.lcs_name, "sos-lcs");
        assert_eq!(c.profile, Profile::F);
        assert_eq!(c.faults.seed, 5);
        assert!(!c.faults.any());
    }

    #[test]
    fn options() {
        let c = Config::from_args(run_args(&[
            "--mode",
            "uart",
            "--mirror",
            "/tmp/x/m0",
            "--mirror",
            "/tmp/x/m1",
            "--watchdog-ms",
            "300",
            "--initial",
            "suspended",
            "--dup",
            "1.0",
            "--drop",
            "0",
            "--profile",
            "d",
        ]))
        .expect("valid");
        assert_eq!(c.mode, LineMode::Uart);
        assert_eq!(c.mirrors.len(), 2);
        assert_eq!(c.watchdog, Some(Duration::from_millis(300)));
        assert_eq!(c.initial, Initial::Suspended);
        assert_eq!(c.faults.dup, 1.0);
        assert_eq!(c.profile, Profile::D);
    }

    #[test]
    fn bad_values_are_rejected() {
        let base = ["run", "--line", "/tmp/x/lc", "--control", "/tmp/x/c.sock"];
        for extra in [
            &["--drop", "1.5"][..],
            &["--dup", "-0.1"],
            &["--garbage", "NaN"],
            &["--mode", "usb"],
            &["--profile", "Z"],
            &["--initial", "asleep"],
        ] {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            assert!(parse(&all).is_err(), "{extra:?}");
        }
        assert!(matches!(
            Config::from_args(run_args(&["--reason-period-ms", "0"])),
            Err(ConfigError::ZeroPeriod(_))
        ));
        assert!(matches!(
            Config::from_args(run_args(&["--socket-dir", "/tmp/x"])),
            Err(ConfigError::ControlInSocketDir(_))
        ));
        assert!(matches!(
            Config::from_args(run_args(&["--mirror", "/tmp/x/lc"])),
            Err(ConfigError::SamePath(_))
        ));
        assert!(matches!(
            Config::from_args(run_args(&["--scenario", "/nonexistent/scenario"])),
            Err(ConfigError::Scenario(ScenarioError::Read { .. }))
        ));
    }

    #[test]
    fn ctl_words_and_timeouts() {
        let cli =
            parse(&["ctl", "--control", "/tmp/c", "ignition", "off", "force-s5"]).expect("parses");
        let CliCommand::Ctl(c) = cli.command else {
            panic!("not ctl")
        };
        assert_eq!(c.request(), "ignition off force-s5");
        assert_eq!(c.timeout(), Duration::from_secs(5));
        let cli = parse(&["ctl", "--control", "/tmp/c", "suspend"]).expect("parses");
        let CliCommand::Ctl(c) = cli.command else {
            panic!("not ctl")
        };
        assert_eq!(c.timeout(), Duration::from_secs(3600));
        let cli = parse(&[
            "-v",
            "ctl",
            "--control",
            "/tmp/c",
            "--timeout-secs",
            "2",
            "suspend",
        ])
        .expect("parses");
        assert_eq!(cli.verbose, 1);
        let CliCommand::Ctl(c) = cli.command else {
            panic!("not ctl")
        };
        assert_eq!(c.timeout(), Duration::from_secs(2));
        assert!(
            parse(&["ctl", "--control", "/tmp/c"]).is_err(),
            "words required"
        );
    }
}
