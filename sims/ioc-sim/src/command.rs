//! The control language: one request per line, for the control socket and the scenario
//! file alike (formats in the [module docs](super)).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

/// One control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `ignition on`.
    IgnitionOn,
    /// `ignition off`, or `ignition off force-s5` (`force_s5`).
    IgnitionOff {
        /// Latch the FORCE_S5 bit.
        force_s5: bool,
    },
    /// `door open`.
    DoorOpen,
    /// `door close`.
    DoorClose,
    /// `reboot-request`: send REBOOT {err 0} to the lifecycle service over mngr IPC.
    RebootRequest,
    /// `status`.
    Status,
    /// `poweroff`: the SoC powers off.
    Poweroff,
    /// `reboot`: the SoC reboots.
    Reboot,
    /// `suspend`: the SoC suspends; answered when the system wakes.
    Suspend,
    /// `reopen`: close the lifecycle pty and create a new one after the reopen delay.
    Reopen,
    /// `quit`.
    Quit,
}

/// Every request with its syntax, for help texts and error messages.
pub const SYNTAX: &[&str] = &[
    "ignition on",
    "ignition off [force-s5]",
    "door open",
    "door close",
    "reboot-request",
    "status",
    "poweroff",
    "reboot",
    "suspend",
    "reopen",
    "quit",
];

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::IgnitionOn => "ignition on",
            Command::IgnitionOff { force_s5: false } => "ignition off",
            Command::IgnitionOff { force_s5: true } => "ignition off force-s5",
            Command::DoorOpen => "door open",
            Command::DoorClose => "door close",
            Command::RebootRequest => "reboot-request",
            Command::Status => "status",
            Command::Poweroff => "poweroff",
            Command::Reboot => "reboot",
            Command::Suspend => "suspend",
            Command::Reopen => "reopen",
            Command::Quit => "quit",
        })
    }
}

/// A request line that is not a command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// Nothing but blanks.
    #[error("Empty request")]
    Empty,
    /// An unknown first word.
    #[error("Unknown command {0:?}; known: {known}", known = SYNTAX.join(", "))]
    Unknown(String),
    /// A known command with wrong arguments.
    #[error("Usage: {0}")]
    Usage(&'static str),
}

impl Command {
    /// Parses a request line: words separated by blanks, lower case.
    pub fn parse(line: &str) -> Result<Command, CommandError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&first, rest)) = words.split_first() else {
            return Err(CommandError::Empty);
        };
        let bare = |cmd: Command, usage: &'static str| {
            if rest.is_empty() {
                Ok(cmd)
            } else {
                Err(CommandError::Usage(usage))
            }
        };
        match first {
            "ignition" => match rest {
                ["on"] => Ok(Command::IgnitionOn),
                ["off"] => Ok(Command::IgnitionOff { force_s5: false }),
                ["off", "force-s5"] => Ok(Command::IgnitionOff { force_s5: true }),
                _ => Err(CommandError::Usage("ignition on | ignition off [force-s5]")),
            },
            "door" => match rest {
                ["open"] => Ok(Command::DoorOpen),
                ["close"] => Ok(Command::DoorClose),
                _ => Err(CommandError::Usage("door open | door close")),
            },
            "reboot-request" => bare(Command::RebootRequest, "reboot-request"),
            "status" => bare(Command::Status, "status"),
            "poweroff" => bare(Command::Poweroff, "poweroff"),
            "reboot" => bare(Command::Reboot, "reboot"),
            "suspend" => bare(Command::Suspend, "suspend"),
            "reopen" => bare(Command::Reopen, "reopen"),
            "quit" => bare(Command::Quit, "quit"),
            other => Err(CommandError::Unknown(truncated(other))),
        }
    }
}

/// At most 32 characters of a peer's word, for error messages.
fn truncated(word: &str) -> String {
    let mut s: String = word.chars().take(32).collect();
    if s.len() < word.len() {
        s.push('…');
    }
    s
}

/// One scenario step: `command` at `at` after start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioStep {
    /// Time since start.
    pub at: Duration,
    /// What to do.
    pub command: Command,
    /// 1-based line number in the file.
    pub line: usize,
}

/// A scenario file that cannot be used.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("Cannot read scenario {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line does not start with a time in milliseconds.
    #[error("Scenario line {line}: {text:?} does not start with a time in milliseconds")]
    Time {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A time earlier than the previous step's.
    #[error("Scenario line {line}: {at_ms} ms is earlier than the previous step ({prev_ms} ms)")]
    Order {
        /// 1-based line number.
        line: usize,
        /// This step's time.
        at_ms: u64,
        /// The previous step's time.
        prev_ms: u64,
    },
    /// The command part is not a command.
    #[error("Scenario line {line}")]
    Command {
        /// 1-based line number.
        line: usize,
        /// Why.
        #[source]
        source: CommandError,
    },
}

/// Parses a scenario: `<ms> <command>` per line, `ms` non-decreasing; blank lines and
/// everything after `#` are ignored.
pub fn parse_scenario(text: &str) -> Result<Vec<ScenarioStep>, ScenarioError> {
    let mut steps = Vec::new();
    let mut prev_ms = 0u64;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let (time, rest) = content
            .split_once(char::is_whitespace)
            .unwrap_or((content, ""));
        let at_ms: u64 = time.parse().map_err(|_| ScenarioError::Time {
            line,
            text: truncated(raw),
        })?;
        if at_ms < prev_ms {
            return Err(ScenarioError::Order {
                line,
                at_ms,
                prev_ms,
            });
        }
        prev_ms = at_ms;
        let command =
            Command::parse(rest).map_err(|source| ScenarioError::Command { line, source })?;
        steps.push(ScenarioStep {
            at: Duration::from_millis(at_ms),
            command,
            line,
        });
    }
    Ok(steps)
}

/// Reads and parses a scenario file.
pub fn read_scenario(path: &Path) -> Result<Vec<ScenarioStep>, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_scenario(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses_and_prints_back() {
        for syntax in [
            "ignition on",
            "ignition off",
            "ignition off force-s5",
            "door open",
            "door close",
            "reboot-request",
            "status",
            "poweroff",
            "reboot",
            "suspend",
            "reopen",
            "quit",
        ] {
            let cmd = Command::parse(syntax).expect(syntax);
            assert_eq!(cmd.to_string(), syntax);
        }
        assert_eq!(
            Command::parse("  ignition\toff   force-s5 \r"),
            Ok(Command::IgnitionOff { force_s5: true })
        );
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert_eq!(Command::parse(""), Err(CommandError::Empty));
        assert_eq!(Command::parse(" \t "), Err(CommandError::Empty));
        assert!(matches!(
            Command::parse("ignition sideways"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("ignition"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("ignition on now"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("status please"),
            Err(CommandError::Usage("status"))
        ));
        assert!(matches!(
            Command::parse("IGNITION on"),
            Err(CommandError::Unknown(_))
        ));
        let long = "x".repeat(1000);
        let msg = Command::parse(&long).expect_err("unknown").to_string();
        assert!(msg.len() < 300, "peer text is truncated in messages: {msg}");
    }

    #[test]
    fn scenario_parses_with_comments() {
        let steps = parse_scenario(
            "# warm-up\n\n0 ignition on\n300 ignition off   # the driver leaves\n300 door open\n\
             1500 status\n",
        )
        .expect("valid");
        assert_eq!(
            steps,
            [
                ScenarioStep {
                    at: Duration::ZERO,
                    command: Command::IgnitionOn,
                    line: 3
                },
                ScenarioStep {
                    at: Duration::from_millis(300),
                    command: Command::IgnitionOff { force_s5: false },
                    line: 4
                },
                ScenarioStep {
                    at: Duration::from_millis(300),
                    command: Command::DoorOpen,
                    line: 5
                },
                ScenarioStep {
                    at: Duration::from_millis(1500),
                    command: Command::Status,
                    line: 6
                },
            ]
        );
        assert!(parse_scenario("").expect("empty is fine").is_empty());
    }

    #[test]
    fn scenario_errors_name_the_line() {
        let e = parse_scenario("0 status\nsoon ignition on\n").expect_err("bad time");
        assert!(matches!(e, ScenarioError::Time { line: 2, .. }));
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse_scenario("100 status\n50 status\n").expect_err("order");
        assert!(matches!(
            e,
            ScenarioError::Order {
                line: 2,
                at_ms: 50,
                prev_ms: 100
            }
        ));
        let e = parse_scenario("# c\n10 ignition maybe\n").expect_err("command");
        assert!(matches!(e, ScenarioError::Command { line: 2, .. }));
        let e = parse_scenario("-5 status\n").expect_err("negative");
        assert!(matches!(e, ScenarioError::Time { line: 1, .. }));
        let e = parse_scenario("100\n").expect_err("no command");
        assert!(matches!(
            e,
            ScenarioError::Command {
                line: 1,
                source: CommandError::Empty
            }
        ));
    }
}
