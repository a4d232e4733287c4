//! `acrnctl`, the command-line tool: lists and operates VMs through acrnd (so its
//! operations are serialized with everything else acrnd does), and manages launch scripts.
//!
//! * this module: the command line ([`Cli`], [`Cmd`]), how a command ended ([`Outcome`])
//!   and [`run`], which hands each sub-command to a small function;
//! * [`commands`]: talking to acrnd and to the device models (requests, paging, reset's
//!   wait) and adding or deleting launch scripts;
//! * [`render`]: what acrnctl prints (tables, JSON, errors and states in words).
//!
//! Its vocabulary (server names, the VM-name rule, status phases, default paths) is
//! `mngr_ipc`'s, never the daemon's modules: acrnctl and acrnd agree because both take it
//! from there.
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 usage, 3 acrnd (or the VM's device model)
//! not reachable. Every wait is bounded by `--timeout-ms`.

pub mod commands;
pub mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mngr_ipc::Profile;
use mngr_ipc::msg::Body;
use mngr_ipc::naming::DEFAULT_SOCKET_DIR;
use mngr_ipc::vocabulary::DEFAULT_LAUNCH_DIR;

pub use commands::name_from_script;
pub use render::{describe, state_name};

use commands::Session;

/// Command line of acrnctl.
#[derive(Debug, Parser)]
#[command(
    name = "acrnctl",
    version,
    about = "Manage the VMs of an ACRN Service OS through acrnd"
)]
pub struct Cli {
    /// Directory of the mngr IPC sockets.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SOCKET_DIR, global = true)]
    pub socket_dir: PathBuf,
    /// Launch scripts (for add and del).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_LAUNCH_DIR, global = true)]
    pub launch_dir: PathBuf,
    /// Bound of every request and wait.
    #[arg(long, value_name = "MS", default_value_t = 5000, global = true)]
    pub timeout_ms: u64,
    /// ABI profile of struct mngr_msg.
    #[arg(long, value_name = "PROFILE", default_value = "F", global = true)]
    pub abi: String,
    /// JSON output (list, timers, status).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The sub-commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// VMs with their state, device-model pid and next wake-up.
    List,
    /// Start a stopped VM.
    Start {
        /// VM name.
        vm: String,
    },
    /// Stop a VM (gracefully, or at once with --force).
    Stop {
        /// VM name.
        vm: String,
        /// Power off at once instead of asking the guest.
        #[arg(short, long)]
        force: bool,
    },
    /// Suspend a running VM.
    Suspend {
        /// VM name.
        vm: String,
    },
    /// Resume a suspended VM.
    Resume {
        /// VM name.
        vm: String,
        /// Wakeup reason handed to the guest (hex or decimal; default 0x20, ignition).
        #[arg(long, value_parser = parse_reason)]
        reason: Option<u32>,
    },
    /// Stop a VM, wait until it is stopped, start it again.
    Reset {
        /// VM name.
        vm: String,
    },
    /// Make a VM's virtio-blk backend re-open its image.
    Blkrescan {
        /// VM name.
        vm: String,
        /// `slot,path`.
        devargs: String,
    },
    /// Install a launch script into the launch directory.
    Add {
        /// The script (it `exec`s the device model with the VM name last).
        script: PathBuf,
        /// Arguments for the script, saved in `<vm>.args`.
        args: Vec<String>,
        /// The VM's name, when it cannot be read from the script.
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a stopped VM's launch script.
    Del {
        /// VM name.
        vm: String,
    },
    /// Pending RTC wake-ups.
    Timers,
    /// acrnd's and the lifecycle service's status.
    Status,
}

fn parse_reason(s: &str) -> Result<u32, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    v.map_err(|e| e.to_string()).and_then(|r| {
        if r > 0x00FF_FFFF {
            Err("a reason has 24 bits".into())
        } else {
            Ok(r)
        }
    })
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; print this.
    Ok(String),
    /// The operation failed.
    Failed(String),
    /// Bad arguments.
    Usage(String),
    /// Nobody answered.
    Unreachable(String),
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Outcome::Ok(_) => 0,
            Outcome::Failed(_) => 1,
            Outcome::Usage(_) => 2,
            Outcome::Unreachable(_) => 3,
        })
    }
}

/// Runs one command.
pub fn run(cli: Cli) -> Outcome {
    let profile = match Profile::by_name(&cli.abi) {
        Ok(p) => p,
        Err(e) => return Outcome::Usage(e.to_string()),
    };
    let timeout = Duration::from_millis(cli.timeout_ms.max(1));
    let session = Session::new(&cli.socket_dir, profile, timeout);
    match cli.command {
        Cmd::List => list(&session, cli.json),
        Cmd::Start { vm } => session.op("start", &vm, Body::CtlStart { name: vm.clone() }),
        Cmd::Stop { vm, force } => session.op("stop", &vm, stop_body(&vm, force)),
        Cmd::Suspend { vm } => session.op("suspend", &vm, Body::CtlSuspend { name: vm.clone() }),
        Cmd::Resume { vm, reason } => {
            let body = Body::CtlResume {
                name: vm.clone(),
                reason: reason.unwrap_or(0),
            };
            session.op("resume", &vm, body)
        }
        Cmd::Reset { vm } => session.reset(&vm),
        Cmd::Blkrescan { vm, devargs } => session.blkrescan(&vm, &devargs),
        Cmd::Add { script, args, name } => {
            commands::add(&cli.launch_dir, &script, &args, name, profile)
        }
        Cmd::Del { vm } => session.del(&cli.launch_dir, &vm),
        Cmd::Timers => timers(&session, cli.json),
        Cmd::Status => status(&session, cli.json),
    }
}

/// CTL_STOP of `vm`: at once with `force`, else by asking the guest, without a deadline of
/// acrnd's.
pub(crate) fn stop_body(vm: &str, force: bool) -> Body {
    Body::CtlStop {
        name: vm.to_owned(),
        force: i32::from(force),
        timeout: 0,
    }
}

fn list(session: &Session, json: bool) -> Outcome {
    match session.list() {
        Ok(vms) if json => Outcome::Ok(render::list_json(&vms)),
        Ok(vms) => Outcome::Ok(render::list_table(&vms)),
        Err(o) => o,
    }
}

fn timers(session: &Session, json: bool) -> Outcome {
    match session.timers() {
        Ok(t) if json => Outcome::Ok(render::timers_json(&t)),
        Ok(t) => Outcome::Ok(render::timers_text(&t)),
        Err(o) => o,
    }
}

fn status(session: &Session, json: bool) -> Outcome {
    match session.status() {
        Ok(s) => {
            let lcs = session.lcs_socket_alive();
            Outcome::Ok(if json {
                render::status_json(&s, lcs)
            } else {
                render::status_text(&s, lcs)
            })
        }
        Err(o) => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse() {
        assert_eq!(parse_reason("0x200"), Ok(0x200));
        assert_eq!(parse_reason("32"), Ok(32));
        assert!(parse_reason("0x1000000").is_err());
        assert!(parse_reason("x").is_err());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Outcome::Ok(String::new()).exit_code(), ExitCode::from(0));
        assert_eq!(
            Outcome::Failed(String::new()).exit_code(),
            ExitCode::from(1)
        );
        assert_eq!(Outcome::Usage(String::new()).exit_code(), ExitCode::from(2));
        assert_eq!(
            Outcome::Unreachable(String::new()).exit_code(),
            ExitCode::from(3)
        );
    }

    #[test]
    fn a_bad_profile_is_a_usage_error() {
        let cli = Cli::try_parse_from(["acrnctl", "--abi", "Q", "list"]).expect("parses");
        assert!(matches!(run(cli), Outcome::Usage(_)));
    }
}
