//! `acrnctl`, the command-line tool: lists and operates VMs through acrnd (so its
//! operations are serialized with everything else acrnd does), and manages launch scripts.
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 usage, 3 acrnd (or the VM's device model)
//! not reachable. Every wait is bounded by `--timeout-ms`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use mngr_ipc::Profile;
use mngr_ipc::client::{Client, ClientError};
use mngr_ipc::msg::{AckPayload, Body, Request, Status, TimerEntry, VmEntry, err, vm_state};
use mngr_ipc::naming::{DEFAULT_SOCKET_DIR, monitor_name};
use serde_json::json;

use crate::config::DEFAULT_LAUNCH_DIR;
use crate::vms::valid_vm_name;

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

struct Ctx {
    client: Client,
    timeout: Duration,
}

impl Ctx {
    fn ask(&self, body: Body) -> Result<AckPayload, Outcome> {
        match self.client.send("acrnd", &Request::now(body), self.timeout) {
            Ok(ack) => Ok(ack.payload),
            Err(
                e @ (ClientError::NotFound { .. }
                | ClientError::Connect { .. }
                | ClientError::Timeout { .. }),
            ) => Err(Outcome::Unreachable(format!(
                "acrnd is not reachable: {}",
                mngr_ipc::error_chain(&e)
            ))),
            Err(e) => Err(Outcome::Failed(mngr_ipc::error_chain(&e))),
        }
    }

    fn list(&self) -> Result<Vec<VmEntry>, Outcome> {
        let mut all = Vec::new();
        loop {
            let start = u32::try_from(all.len()).unwrap_or(u32::MAX);
            match self.ask(Body::CtlList { start })? {
                AckPayload::VmPage(p) if p.err == err::OK => {
                    let n = p.entries.len();
                    all.extend(p.entries);
                    if n == 0 || all.len() >= usize::try_from(p.total).unwrap_or(usize::MAX) {
                        return Ok(all);
                    }
                }
                other => {
                    return Err(Outcome::Failed(format!(
                        "acrnd refused the listing: {other:?}"
                    )));
                }
            }
        }
    }

    fn timers(&self) -> Result<Vec<TimerEntry>, Outcome> {
        let mut all = Vec::new();
        loop {
            let start = u32::try_from(all.len()).unwrap_or(u32::MAX);
            match self.ask(Body::CtlTimers { start })? {
                AckPayload::TimerPage(p) if p.err == err::OK => {
                    let n = p.entries.len();
                    all.extend(p.entries);
                    if n == 0 || all.len() >= usize::try_from(p.total).unwrap_or(usize::MAX) {
                        return Ok(all);
                    }
                }
                other => {
                    return Err(Outcome::Failed(format!(
                        "acrnd refused the listing: {other:?}"
                    )));
                }
            }
        }
    }

    fn op(&self, what: &str, vm: &str, body: Body) -> Outcome {
        match self.ask(body) {
            Ok(AckPayload::Err(0)) => Outcome::Ok(format!("{vm}: {what} done")),
            Ok(AckPayload::Err(e)) => {
                Outcome::Failed(format!("{vm}: {what} failed: {}", describe(e)))
            }
            Ok(other) => Outcome::Failed(format!("{vm}: unexpected answer {other:?}")),
            Err(o) => o,
        }
    }
}

/// A human reading of an `err` value.
pub fn describe(e: i32) -> String {
    let what = match e {
        err::NOT_FOUND => "no such VM",
        err::NOT_PERMITTED => "not permitted",
        err::BUSY => "another operation is in progress",
        err::INVALID => "not possible in the VM's state",
        err::UNKNOWN_ID => "not supported by this acrnd",
        err::UNSUPPORTED => "not supported by this VM",
        err::TIMED_OUT => "timed out",
        _ => "failed",
    };
    format!("{what} ({e})")
}

/// The text of a VM state number.
pub fn state_name(s: i32) -> &'static str {
    match s {
        vm_state::STOPPED => "stopped",
        vm_state::STARTED => "started",
        vm_state::PAUSED => "paused",
        vm_state::SUSPENDED => "suspended",
        vm_state::UNTRACKED => "untracked",
        vm_state::STARTING => "starting",
        vm_state::STOPPING => "stopping",
        vm_state::SUSPENDING => "suspending",
        _ => "unknown",
    }
}

fn when(epoch: i64) -> String {
    if epoch <= 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp(epoch, 0).map_or_else(
        || epoch.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The VM name of a launch script: the last word of its device-model line.
pub fn name_from_script(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| {
            l.split_whitespace()
                .take(2)
                .any(|w| w.ends_with("acrn-dm") || w.ends_with("acrn-dm-sim"))
        })
        .find_map(|l| l.split_whitespace().next_back().map(str::to_owned))
}

fn add(launch_dir: &Path, script: &Path, args: &[String], name: Option<String>) -> Outcome {
    let text = match fs::read_to_string(script) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("Cannot read {}: {e}", script.display())),
    };
    let Some(vm) = name.or_else(|| name_from_script(&text)) else {
        return Outcome::Usage("Cannot read the VM name from the script; give --name".into());
    };
    if !valid_vm_name(&vm) {
        return Outcome::Usage(format!(
            "{vm:?} is not a valid VM name (a letter, then letters, digits, - or _; at most 15)"
        ));
    }
    let dest = launch_dir.join(format!("{vm}.sh"));
    if dest.exists() {
        return Outcome::Failed(format!("VM {vm} exists already"));
    }
    if let Err(e) = fs::create_dir_all(launch_dir) {
        return Outcome::Failed(format!("Cannot create {}: {e}", launch_dir.display()));
    }
    if let Err(e) = fs::copy(script, &dest) {
        return Outcome::Failed(format!("Cannot install the script: {e}"));
    }
    if !args.is_empty()
        && let Err(e) = fs::write(
            launch_dir.join(format!("{vm}.args")),
            format!("{}\n", args.join(" ")),
        )
    {
        let _ = fs::remove_file(&dest);
        return Outcome::Failed(format!("Cannot write the arguments: {e}"));
    }
    Outcome::Ok(format!("{vm} added"))
}

/// Runs one command.
pub fn run(cli: Cli) -> Outcome {
    let profile = match Profile::by_name(&cli.abi) {
        Ok(p) => p,
        Err(e) => return Outcome::Usage(e.to_string()),
    };
    let ctx = Ctx {
        client: Client::new(&cli.socket_dir, profile),
        timeout: Duration::from_millis(cli.timeout_ms.max(1)),
    };
    match cli.command {
        Cmd::List => match ctx.list() {
            Ok(vms) if cli.json => Outcome::Ok(
                serde_json::to_string_pretty(
                    &vms.iter()
                        .map(|v| {
                            json!({
                                "name": v.name, "state": state_name(v.state), "pid": v.pid,
                                "next_wake": (v.next_wake > 0).then_some(v.next_wake),
                            })
                        })
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default(),
            ),
            Ok(vms) if vms.is_empty() => Outcome::Ok("There are no VMs".into()),
            Ok(vms) => {
                let mut out = format!(
                    "{:<16} {:<11} {:>8}  {}",
                    "NAME", "STATE", "PID", "NEXT WAKE-UP"
                );
                for v in vms {
                    let pid = if v.pid > 0 {
                        v.pid.to_string()
                    } else {
                        "-".into()
                    };
                    out.push_str(&format!(
                        "\n{:<16} {:<11} {:>8}  {}",
                        v.name,
                        state_name(v.state),
                        pid,
                        when(v.next_wake)
                    ));
                }
                Outcome::Ok(out)
            }
            Err(o) => o,
        },
        Cmd::Start { vm } => ctx.op("start", &vm, Body::CtlStart { name: vm.clone() }),
        Cmd::Stop { vm, force } => ctx.op(
            "stop",
            &vm,
            Body::CtlStop {
                name: vm.clone(),
                force: i32::from(force),
                timeout: 0,
            },
        ),
        Cmd::Suspend { vm } => ctx.op("suspend", &vm, Body::CtlSuspend { name: vm.clone() }),
        Cmd::Resume { vm, reason } => ctx.op(
            "resume",
            &vm,
            Body::CtlResume {
                name: vm.clone(),
                reason: reason.unwrap_or(0),
            },
        ),
        Cmd::Reset { vm } => {
            let stopped = ctx.op(
                "stop",
                &vm,
                Body::CtlStop {
                    name: vm.clone(),
                    force: 0,
                    timeout: 0,
                },
            );
            if !matches!(stopped, Outcome::Ok(_)) {
                return stopped;
            }
            let deadline = Instant::now() + ctx.timeout;
            loop {
                match ctx.list() {
                    Ok(vms)
                        if vms
                            .iter()
                            .any(|v| v.name == vm && v.state == vm_state::STOPPED) =>
                    {
                        break;
                    }
                    Ok(_) if Instant::now() >= deadline => {
                        return Outcome::Failed(format!(
                            "{vm} did not stop within {:?}",
                            ctx.timeout
                        ));
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(50)),
                    Err(o) => return o,
                }
            }
            ctx.op("start", &vm, Body::CtlStart { name: vm.clone() })
        }
        Cmd::Blkrescan { vm, devargs } => {
            let Some((slot, path)) = devargs.split_once(',') else {
                return Outcome::Usage("devargs must be SLOT,PATH".into());
            };
            if slot.parse::<u32>().is_err() || path.is_empty() {
                return Outcome::Usage("devargs must be SLOT,PATH with a numeric slot".into());
            }
            match ctx.client.send(
                &monitor_name(&vm),
                &Request::now(Body::DmBlkrescan { devargs }),
                ctx.timeout,
            ) {
                Ok(ack) if ack.err() == Some(0) => Outcome::Ok(format!("{vm}: rescan done")),
                Ok(ack) => Outcome::Failed(format!(
                    "{vm}: rescan failed: {}",
                    describe(ack.err().unwrap_or(err::FAILED))
                )),
                Err(e) => Outcome::Unreachable(format!(
                    "{vm}'s device model is not reachable: {}",
                    mngr_ipc::error_chain(&e)
                )),
            }
        }
        Cmd::Add { script, args, name } => add(&cli.launch_dir, &script, &args, name),
        Cmd::Del { vm } => {
            if !valid_vm_name(&vm) {
                return Outcome::Usage(format!("{vm:?} is not a valid VM name"));
            }
            let script = cli.launch_dir.join(format!("{vm}.sh"));
            if !script.exists() {
                return Outcome::Failed(format!("No launch script for {vm}"));
            }
            let running = match ctx.list() {
                Ok(vms) => vms
                    .iter()
                    .any(|v| v.name == vm && v.state != vm_state::STOPPED),
                // Without acrnd, a live device-model socket tells.
                Err(_) => mngr_ipc::naming::candidates(&cli.socket_dir, &monitor_name(&vm))
                    .is_ok_and(|c| c.iter().any(|c| c.alive)),
            };
            if running {
                return Outcome::Failed(format!("{vm} is running: stop it first"));
            }
            let _ = fs::remove_file(cli.launch_dir.join(format!("{vm}.args")));
            match fs::remove_file(&script) {
                Ok(()) => Outcome::Ok(format!("{vm} deleted")),
                Err(e) => Outcome::Failed(format!("Cannot remove {}: {e}", script.display())),
            }
        }
        Cmd::Timers => match ctx.timers() {
            Ok(t) if cli.json => Outcome::Ok(
                serde_json::to_string_pretty(
                    &t.iter()
                        .map(|e| json!({"name": e.name, "when": e.when}))
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default(),
            ),
            Ok(t) if t.is_empty() => Outcome::Ok("No pending wake-ups".into()),
            Ok(t) => Outcome::Ok(
                t.iter()
                    .map(|e| format!("{:<16} {}", e.name, when(e.when)))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Err(o) => o,
        },
        Cmd::Status => match ctx.ask(Body::CtlStatus) {
            Ok(AckPayload::Status(Status {
                wakeup_reason,
                vms,
                lcs_reachable,
                phase,
                ..
            })) => {
                let phase = ["idle", "stopping", "suspending", "resuming"]
                    .get(usize::try_from(phase).unwrap_or(usize::MAX))
                    .copied()
                    .unwrap_or("unknown");
                let lcs = ["sos-lcs", "service-vm-lcs"].iter().any(|n| {
                    mngr_ipc::naming::candidates(&cli.socket_dir, n)
                        .is_ok_and(|c| c.iter().any(|c| c.alive))
                });
                if cli.json {
                    Outcome::Ok(json!({"acrnd": "running", "phase": phase, "vms": vms, "wakeup_reason": wakeup_reason,
                        "lcs_reachable_by_acrnd": lcs_reachable == 1, "lcs_socket": lcs}).to_string())
                } else {
                    Outcome::Ok(format!(
                        "acrnd: running ({phase}), {vms} VM(s), wakeup reason {wakeup_reason:#x}\nlifecycle service: {}",
                        if lcs { "reachable" } else { "not reachable" }
                    ))
                }
            }
            Ok(other) => Outcome::Failed(format!("unexpected answer {other:?}")),
            Err(o) => o,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names() {
        let s = "#!/bin/bash\n# comment acrn-dm x\nexec acrn-dm -A -m 2G vm1\n";
        assert_eq!(name_from_script(s).as_deref(), Some("vm1"));
        let s = "exec /usr/bin/acrn-dm-sim --socket-dir /tmp/x android # tail\n";
        assert_eq!(name_from_script(s).as_deref(), Some("android"));
        assert_eq!(name_from_script("echo hi\n"), None);
    }

    #[test]
    fn reasons_parse() {
        assert_eq!(parse_reason("0x200"), Ok(0x200));
        assert_eq!(parse_reason("32"), Ok(32));
        assert!(parse_reason("0x1000000").is_err());
        assert!(parse_reason("x").is_err());
    }
}
