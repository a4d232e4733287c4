//! What every binary of the suite shares around its event loop: the logging setup, the
//! common command-line options, and the error a `run` returns with its exit code.
//!
//! A daemon's `main` is four lines: parse its `Args` (which flatten [`CommonArgs`]), call
//! [`init_logging`], call its `run`, and turn the result into an exit code with
//! [`exit_code`].

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use thiserror::Error;

use crate::auth::{Policy, resolve_group};
use crate::event_log::EventLog;
use crate::profile::{Profile, ProfileError};
use crate::server::ServerError;

/// The options every daemon and simulator of the suite takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Uid allowed to make privileged requests (repeatable; default 0).
    #[arg(long, value_name = "UID")]
    pub allow_uid: Vec<u32>,
    /// Group (name or gid) allowed to make them too (repeatable).
    #[arg(long, value_name = "GROUP")]
    pub allow_group: Vec<String>,
    /// ABI profile of struct mngr_msg: F (ACRN v3.x), E (v2.x), D (v1.1–1.6).
    #[arg(long, value_name = "PROFILE", default_value = "F")]
    pub abi: String,
    /// Append lifecycle events as JSON lines to this file.
    #[arg(long, value_name = "PATH")]
    pub event_log: Option<PathBuf>,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Common options that cannot be used.
#[derive(Debug, Error)]
pub enum OptionError {
    /// `--abi` names no profile.
    #[error("Bad ABI profile")]
    Profile(#[from] ProfileError),
    /// `--allow-group` names no group.
    #[error("Unknown group {0:?}")]
    Group(String),
}

impl CommonArgs {
    /// The policy of `--allow-uid` (root if none) and `--allow-group`.
    pub fn policy(&self) -> Result<Policy, OptionError> {
        let uids = if self.allow_uid.is_empty() {
            vec![0]
        } else {
            self.allow_uid.clone()
        };
        let gids = self
            .allow_group
            .iter()
            .map(|g| resolve_group(g).ok_or_else(|| OptionError::Group(g.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy::new(uids, gids))
    }

    /// The profile of `--abi`.
    pub fn profile(&self) -> Result<Profile, OptionError> {
        Ok(Profile::by_name(&self.abi)?)
    }
}

/// Why a daemon or simulator stopped with an error.
#[derive(Debug, Error)]
pub enum RunError {
    /// The event log cannot be opened.
    #[error("Cannot open the event log")]
    EventLog(#[source] io::Error),
    /// A directory the program keeps its state in cannot be made.
    #[error("Cannot create the state directory")]
    StateDir(#[source] io::Error),
    /// A server socket cannot be bound.
    #[error("Cannot serve mngr IPC")]
    Serve(#[from] ServerError),
    /// The event loop failed (or a subscriber could not join it).
    #[error("Event loop failed")]
    Loop(#[source] io::Error),
    /// A device, pty or control socket the program needs cannot be set up.
    #[error("Cannot set up {what}")]
    Setup {
        /// What (`the control socket /run/x`, `the IOC pty`).
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Opens `--event-log` (or a disabled log) for `actor`.
pub fn open_event_log(path: Option<&std::path::Path>, actor: &str) -> Result<EventLog, RunError> {
    EventLog::open_optional(path, actor).map_err(RunError::EventLog)
}

/// The exit code of a run: 0, or 1 after logging the error chain. Bad options exit 2
/// before a run (see [`usage_error`]).
pub fn exit_code(result: Result<(), RunError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Logs an unusable configuration; its exit code is 2.
pub fn usage_error(e: &dyn std::error::Error) -> ExitCode {
    log::error!("{}", crate::error_chain(e));
    ExitCode::from(2)
}

/// Whether stderr goes to the journal (systemd sets `JOURNAL_STREAM` to its device and
/// inode).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// The syslog priority journald reads from a `<N>` line prefix.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Sets up `log` for a daemon: the level from `-v` (info, debug, trace) unless `RUST_LOG`
/// says otherwise; to stderr; under journald with priority prefixes (`<4>` for a warning);
/// no timestamps (the journal and the daemons' supervisors stamp lines).
pub fn init_logging(verbose: u8) {
    init_logging_with(verbose, &["info", "debug", "trace"], false);
}

/// Sets up `log` with `levels[v]` for `-v` given `v` times (the last one beyond), and
/// millisecond timestamps if `timestamps` (tools whose output is read beside event logs);
/// otherwise as [`init_logging`].
pub fn init_logging_with(verbose: u8, levels: &[&str], timestamps: bool) {
    let i = usize::from(verbose).min(levels.len().saturating_sub(1));
    let level = levels.get(i).copied().unwrap_or("info");
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    if timestamps {
        b.format_timestamp_millis();
    } else {
        b.format_timestamp(None);
    }
    if stderr_is_journal() {
        b.format(|f, record| {
            writeln!(
                f,
                "<{}>{}: {}",
                priority(record.level()),
                record.target(),
                record.args()
            )
        });
    }
    // A second init (tests calling a main twice) keeps the first logger.
    let _ = b.try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn common_options_make_the_policy_and_profile() {
        let a = Args::try_parse_from(["x"]).expect("defaults");
        assert_eq!(a.common.policy().expect("policy"), Policy::default());
        assert_eq!(a.common.profile().expect("profile"), Profile::F);
        assert_eq!(a.common.verbose, 0);
        let a = Args::try_parse_from([
            "x",
            "--allow-uid",
            "1000",
            "--allow-group",
            "27",
            "--abi",
            "E",
            "-vv",
            "--event-log",
            "/x/ev",
        ])
        .expect("parses");
        assert_eq!(
            a.common.policy().expect("policy"),
            Policy::new(vec![1000], vec![27])
        );
        assert_eq!(a.common.profile().expect("profile"), Profile::E);
        assert_eq!(a.common.verbose, 2);
        assert_eq!(a.common.event_log, Some(PathBuf::from("/x/ev")));
        let bad = Args::try_parse_from(["x", "--abi", "Q"]).expect("parses");
        assert!(matches!(bad.common.profile(), Err(OptionError::Profile(_))));
        let bad =
            Args::try_parse_from(["x", "--allow-group", "no-such-group-here"]).expect("parses");
        assert!(matches!(bad.common.policy(), Err(OptionError::Group(_))));
    }

    #[test]
    fn journald_priorities() {
        assert_eq!(priority(log::Level::Error), 3);
        assert_eq!(priority(log::Level::Warn), 4);
        assert_eq!(priority(log::Level::Info), 6);
        assert_eq!(priority(log::Level::Trace), 7);
    }

    #[test]
    fn run_errors_read_as_a_chain() {
        let e = RunError::Setup {
            what: "the control socket /x".into(),
            source: io::Error::other("boom"),
        };
        assert_eq!(
            crate::error_chain(&e),
            "Cannot set up the control socket /x: boom"
        );
    }
}
