//! `ioc-sim`: an IOC (automotive I/O controller) on the far end of a pseudo-terminal, for
//! hardware-free runs of sos-lcs and the device models, in real time.
//!
//! # Lines
//!
//! * The **lifecycle line**: a raw pty; ioc-sim owns the master, a symlink (`--line PATH`)
//!   points at the slave, which the SoC side opens. `--mode cdev` (default) carries bare
//!   4-byte service frames as `/dev/cbc-lifecycle` does; `--mode uart` carries CBC link
//!   frames on the lifecycle channel ([`mngr_ipc::line::LineCodec`] frames both directions).
//! * **Mirrors** (`--mirror PATH`, repeatable): more ptys, always cdev framing, carrying a
//!   copy of every IOC→SoC frame for the device models' virtual IOCs. Input on them is
//!   discarded.
//!
//! ioc-sim keeps each slave open itself (never reading it), so the SoC side may close and
//! reopen the path freely; frames nobody reads for a whole period are discarded, so a new
//! opener starts with fresh frames. On `quit`, SIGTERM or SIGINT the symlinks and the
//! control socket are removed.
//!
//! # The IOC
//!
//! [`model::Ioc`] is the pure state machine (reason composition, power states, RTC,
//! watchdog); see its module docs for the rules. Every `--reason-period-ms` (default 1000,
//! on a drift-free grid) while the system runs, ioc-sim sends `01 r0 r1 r2` with the current
//! reason, and at once whenever the reason changes; 0 after a shutdown-prepared heartbeat.
//!
//! # Control socket
//!
//! `--control PATH` is a Unix stream socket (never inside the mngr socket dir). A client
//! writes one request per line (at most 256 bytes, UTF-8, words separated by blanks) and
//! gets one reply line per request, in order, starting with `ok` or `err`:
//!
//! | request | effect | reply |
//! |---|---|---|
//! | `ignition on` | BTN set, FORCE_S5 cleared; powers on from off, wakes from suspend | `ok state=.. reason=0x..` |
//! | `ignition off` | BTN cleared | same |
//! | `ignition off force-s5` | BTN cleared, FORCE_S5 set until the next ignition on | same |
//! | `door open` / `door close` | DOOR bit; opening wakes from suspend | same |
//! | `reboot-request` | REBOOT {err 0} to the lifecycle service over mngr IPC (worker thread) | `ok ack err=0` after the ack, or `err ...` |
//! | `status` | — | `ok state=<running\|prepared\|off\|suspended> reason=0x.. rtc=<secs-left\|none> hb=<last heartbeat\|none> frames_rx=N frames_tx=N drop=N dup=N corrupt=N garbage=N ignition=<on\|off> door=<open\|closed> line=<open\|closed>` |
//! | `poweroff` | the SoC powers off: state off | `ok state=off ...` or `err` if not powered |
//! | `reboot` | the SoC reboots: running at once | `ok state=running ...` or `err` |
//! | `suspend` | the SoC suspends | only when the system wakes: `ok resumed reason=0x200` |
//! | `reopen` | closes the lifecycle pty and symlink; a new pair after `--reopen-delay-ms` | `ok reopening in N ms` |
//! | `quit` | exits | `ok bye` |
//!
//! The control socket is created after the lines: once it accepts, the lines exist.
//! `ioc-sim ctl --control PATH [--timeout-secs N] <words...>` sends one request and prints
//! the reply (exit 0 for `ok`, 1 for `err` or no reply, 3 if the socket is unreachable), so
//! sos-lcs can be configured with `--poweroff-cmd "ioc-sim ctl --control /x/ioc.sock
//! poweroff"` and the like.
//!
//! # Scenario file
//!
//! `--scenario FILE`: one `<ms> <request>` per line, `ms` counted from start and
//! non-decreasing; `#` starts a comment, blank lines are ignored. Requests run on the event
//! loop's timers in real time; their replies go to the log and the event log
//! (`ioc.reply`). A malformed line fails the start-up with its line number.
//!
//! ```text
//! # ignition off after 300 ms, back on 5 s later
//! 300 ignition off
//! 5300 ignition on
//! ```
//!
//! # Faults
//!
//! `--drop P`, `--dup P`, `--corrupt P`, `--garbage P` apply to each IOC→SoC frame of the
//! lifecycle line, decided by a [`fault::SplitMix64`] stream from `--seed` (default: from
//! the clock; logged in the `ioc.start` event). See [`fault`].
//!
//! # Event log
//!
//! `--event-log PATH` (actor `ioc-sim`): `ioc.start` (seed, mode, paths), `frame.tx` /
//! `frame.rx` (`line`: `lifecycle` or `mirrorN`, `hex`: service frame, `frame`: e.g.
//! `reason` or `heartbeat.active`, `raw`: link bytes in uart mode or corrupted bytes),
//! `ioc.state` (`from`, `to`, `reason`), `ioc.power_cut`, `ioc.rtc`, `fault` (`point`:
//! drop, dup, corrupt, garbage), `ioc.command`, `ioc.reply`, `ioc.line`, `ioc.stop`.

use mngr_ipc::daemon::{RunError, open_event_log};
use mngr_ipc::line::LineMode;
use mngr_ipc::runtime::{EventLoop, SignalSubscriber};
use signal_hook::consts::{SIGINT, SIGTERM};

pub mod command;
pub mod config;
pub mod ctl;
mod event_handler;
pub mod fault;
pub mod model;
pub mod pty;

pub use config::{Cli, CliCommand, Config, ConfigError, CtlArgs, RunArgs};

/// The actor name of ioc-sim's event log.
pub const ACTOR: &str = "ioc-sim";
/// Exit status of `ioc-sim run` after a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of `ioc-sim run` for a bad command line or scenario.
pub const EXIT_USAGE: u8 = 2;

/// Runs the simulator until `quit`, SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), RunError> {
    let log = open_event_log(config.event_log.as_deref(), ACTOR)?;
    let mut el: EventLoop<()> = EventLoop::new().map_err(RunError::Loop)?;
    // Signals first, so a SIGTERM during start-up still removes what was created.
    let signals = SignalSubscriber::new(&[SIGTERM, SIGINT], |sig, ops, _: &mut ()| {
        log::info!("Signal {sig}: exiting");
        ops.shutdown();
    })
    .map_err(|source| RunError::Setup {
        what: "the signal handlers".to_owned(),
        source,
    })?;
    el.add(Box::new(signals)).map_err(RunError::Loop)?;
    let sim = event_handler::Simulator::new(config, log)?;
    el.add(Box::new(sim)).map_err(RunError::Loop)?;
    el.run(&mut ()).map_err(RunError::Loop)
}

/// `cdev` or `uart`.
pub fn mode_name(mode: LineMode) -> &'static str {
    match mode {
        LineMode::Cdev => "cdev",
        LineMode::Uart => "uart",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mngr_ipc::cbc::{Frame, Heartbeat};
    use mngr_ipc::error_chain;
    use mngr_ipc::event_log::hex;

    #[test]
    fn what_the_event_log_and_stderr_say() {
        assert_eq!(mode_name(LineMode::Cdev), "cdev");
        assert_eq!(mode_name(LineMode::Uart), "uart");
        // The frame names and hex of `frame.tx` / `frame.rx` (the suite's one spelling).
        assert_eq!(hex(&[0x01, 0x20, 0x00, 0xc0]), "012000c0");
        assert_eq!(
            Frame::Heartbeat(Heartbeat::ACTIVE).name(),
            "heartbeat.active"
        );
        assert_eq!(Frame::WakeupReason(0).name(), "reason");
        let e = RunError::Setup {
            what: "the control socket /x".into(),
            source: std::io::Error::other("boom"),
        };
        assert_eq!(error_chain(&e), "Cannot set up the control socket /x: boom");
    }
}
