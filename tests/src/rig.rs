//! A simulated Service OS: `ioc-sim` as the IOC, `sos-lcs`, `acrnd` and `acrn-dm-sim` VMs,
//! all real processes over real ptys and sockets, in one private directory.
//!
//! ```text
//!  ioc-sim ── lifecycle pty (cdev or uart) ── sos-lcs ── mngr IPC ── acrnd ── vm1..vmN (acrn-dm-sim)
//!     └──── one mirror pty per VM (copies of every IOC frame) ─────────────────┘ (--native)
//! ```
//!
//! Layout of a rig's directory (`<run>/<rig>/`): `mngr/` (the mngr socket directory),
//! `add/` (launch scripts `vmN.sh`, which `exec acrn-dm-sim`), `state/` (acrnd's timer
//! store), `cbc-lifecycle` (the line's symlink), `vmN.mirror`, `ioc.sock` (ioc-sim's control
//! socket), `systemctl` (the stand-in below), `jobs`; the processes' output goes to
//! `<run>/proc/<label>.std{out,err}` and every event log to `<run>/events/<actor>.jsonl`.
//!
//! # Power commands and systemd
//!
//! sos-lcs runs `systemctl suspend | poweroff | reboot` through a stand-in script:
//! `suspend` is `ioc-sim ctl suspend`, which returns when the IOC wakes the system, exactly
//! as `systemctl suspend` does. `poweroff` and `reboot` only queue a job (`systemctl
//! list-jobs`, the daemons' `--intent-cmd`, then shows it); the rig's caller then plays
//! systemd with [`Rig::host_power`]: stop acrnd and sos-lcs with SIGTERM (acrnd stops the
//! VMs, sos-lcs writes its last frames), then the firmware's part, `ioc-sim ctl poweroff`
//! or `reboot`. Running `ioc-sim ctl reboot` as sos-lcs's command instead would reboot the
//! IOC before sos-lcs's SIGTERM frames, which would put the rebooted IOC back into
//! "shutdown prepared".
//!
//! # What the simulation does not do
//!
//! Nothing is frozen during S3: acrnd and the device models keep running while ioc-sim is
//! "suspended", so acrnd's own timer for a wake-up fires at the same time as the IOC's RTC
//! (on a real SOS, CLOCK_MONOTONIC stops in S3 and the due VMs are resumed through
//! ACRND_RESUME). Either way the due VM is resumed with the RTC reason.
//!
//! # Teardown
//!
//! acrnd starts each device model in a session of its own, out of reach of the process
//! guard, so the rig kills every device model its event logs name (after checking the
//! pid's command line still names this rig) when it is dropped or [`Rig::teardown`] is
//! called.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mngr_ipc::event_log::read_events;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::bins::{BinNotFound, try_bin_path};
use crate::events::EVENT_LOG_SUFFIX;
use crate::procs::Procs;
use crate::wait::{WaitTimeout, wait_for};

/// How long a daemon may take to serve its socket after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound of an `ioc-sim ctl` request other than `suspend`.
const CTL_TIMEOUT_SECS: u64 = 5;

/// Framing of the lifecycle line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineMode {
    /// Bare 4-byte service frames (`/dev/cbc-lifecycle`).
    Cdev,
    /// CBC link frames (the IOC's UART).
    Uart,
}

impl LineMode {
    /// `cdev` or `uart`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            LineMode::Cdev => "cdev",
            LineMode::Uart => "uart",
        }
    }
}

/// The IOC's state when ioc-sim starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IocStart {
    /// Running, ignition on.
    Running,
    /// Off, ignition off.
    Off,
}

/// Periods, delays and bounds of a rig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// sos-lcs heartbeat period (ms).
    pub heartbeat_ms: u64,
    /// ioc-sim reason period (ms).
    pub reason_period_ms: u64,
    /// Guest heartbeat period of the VMs (ms).
    pub guest_heartbeat_ms: u64,
    /// Time a guest takes to suspend or power off (ms).
    pub guest_delay_ms: u64,
    /// ioc-sim heartbeat watchdog (ms; 0: none).
    pub watchdog_ms: u64,
    /// `timeout` in sos-lcs's ACRND_STOP: acrnd's stop-all deadline (s).
    pub stop_timeout_s: u32,
    /// sos-lcs's bound of its waiting states (s).
    pub wait_bound_s: u64,
    /// acrnd's transition polling interval (ms). The simulated device models send
    /// DM_NOTIFY, so polling is only acrnd's fallback; a poll answer racing a DM_NOTIFY hits
    /// a known acrnd gap (`GAP_STALE_QUERY`), which the soak provokes on purpose.
    pub acrnd_poll_ms: u64,
    /// Default bound of an expectation.
    pub expect: Duration,
}

impl Timing {
    /// Periods slow enough to follow a run on screen (the runner's default).
    #[must_use]
    pub fn watchable() -> Self {
        Self {
            heartbeat_ms: 200,
            reason_period_ms: 200,
            guest_heartbeat_ms: 200,
            guest_delay_ms: 300,
            watchdog_ms: 5000,
            stop_timeout_s: 5,
            wait_bound_s: 10,
            acrnd_poll_ms: 1000,
            expect: Duration::from_secs(15),
        }
    }

    /// Short periods for tests.
    #[must_use]
    pub fn fast() -> Self {
        Self {
            heartbeat_ms: 100,
            reason_period_ms: 100,
            guest_heartbeat_ms: 100,
            guest_delay_ms: 100,
            watchdog_ms: 5000,
            stop_timeout_s: 3,
            wait_bound_s: 8,
            acrnd_poll_ms: 1000,
            expect: Duration::from_secs(15),
        }
    }

    /// The shortest periods, for many cycles; acrnd polls as often as the guests change
    /// state, which provokes the DM_QUERY / DM_NOTIFY race.
    #[must_use]
    pub fn soak() -> Self {
        Self {
            heartbeat_ms: 50,
            reason_period_ms: 50,
            guest_heartbeat_ms: 50,
            guest_delay_ms: 20,
            watchdog_ms: 1000,
            stop_timeout_s: 3,
            wait_bound_s: 8,
            acrnd_poll_ms: 100,
            expect: Duration::from_secs(15),
        }
    }
}

/// One simulated VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Its name (`vm1`).
    pub name: String,
    /// The guest arms an RTC wake-up this many seconds ahead before it suspends or powers off.
    pub rtc_secs: Option<u64>,
    /// acrn-dm-sim `--fault` values.
    pub faults: Vec<String>,
    /// The guest's suspend / power-off delay, if not the rig's.
    pub delay_ms: Option<u64>,
}

impl VmSpec {
    /// A well-behaved VM.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            rtc_secs: None,
            faults: Vec::new(),
            delay_ms: None,
        }
    }

    /// `vm1` .. `vm<n>`.
    #[must_use]
    pub fn numbered(n: usize) -> Vec<Self> {
        (1..=n).map(|i| Self::new(&format!("vm{i}"))).collect()
    }

    /// With an RTC wake-up of `secs` armed at every shutdown.
    #[must_use]
    pub fn rtc(mut self, secs: u64) -> Self {
        self.rtc_secs = Some(secs);
        self
    }

    /// With an acrn-dm-sim fault (`hang-stop`, `crash-stop`, `refuse-suspend`).
    #[must_use]
    pub fn fault(mut self, fault: &str) -> Self {
        self.faults.push(fault.to_owned());
        self
    }

    /// With its own suspend / power-off delay.
    #[must_use]
    pub fn delay(mut self, ms: u64) -> Self {
        self.delay_ms = Some(ms);
        self
    }
}

/// Faults ioc-sim injects on the lifecycle line.
#[derive(Debug, Clone, PartialEq)]
pub struct LineFaults {
    /// Seed of the fault decisions.
    pub seed: u64,
    /// Probability of dropping an IOC → SoC frame.
    pub drop: f64,
    /// Probability of writing a frame twice.
    pub dup: f64,
    /// Probability of flipping a bit.
    pub corrupt: f64,
    /// Probability of garbage before a frame.
    pub garbage: f64,
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct RigConfig {
    /// Name of the rig's directory inside the run directory.
    pub name: String,
    /// The VMs, launched by acrnd.
    pub vms: Vec<VmSpec>,
    /// Framing of the lifecycle line.
    pub mode: LineMode,
    /// The IOC's initial state.
    pub ioc_start: IocStart,
    /// Faults on the line.
    pub faults: Option<LineFaults>,
    /// Periods and bounds.
    pub timing: Timing,
    /// Whether there is an acrnd (else sos-lcs runs `--no-acrnd`, and there are no VMs).
    pub acrnd: bool,
    /// Extra acrnd flags.
    pub acrnd_args: Vec<String>,
}

impl RigConfig {
    /// `vms` VMs named `vm1..`, cdev line, the IOC running, no faults.
    #[must_use]
    pub fn new(vms: usize, timing: Timing) -> Self {
        Self {
            name: "sos".to_owned(),
            vms: VmSpec::numbered(vms),
            mode: LineMode::Cdev,
            ioc_start: IocStart::Running,
            faults: None,
            timing,
            acrnd: true,
            acrnd_args: Vec::new(),
        }
    }

    /// The VM names.
    #[must_use]
    pub fn vm_names(&self) -> Vec<String> {
        self.vms.iter().map(|v| v.name.clone()).collect()
    }
}

/// A rig that cannot go on.
#[derive(Debug)]
pub enum RigError {
    /// A binary is missing.
    Bin(BinNotFound),
    /// A file of the rig cannot be written.
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
    /// A process exited or did not get ready in time.
    Start {
        /// Its label.
        label: String,
        /// What happened, with the tail of its stderr.
        detail: String,
    },
    /// An `ioc-sim ctl` request was refused or not answered.
    Ctl {
        /// The request.
        request: String,
        /// The reply or the error.
        reply: String,
    },
    /// A bounded wait ran out.
    Wait(WaitTimeout),
}

impl fmt::Display for RigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RigError::Bin(e) => write!(f, "{e}"),
            RigError::Io { what, source } => write!(f, "Cannot {what}: {source}"),
            RigError::Start { label, detail } => write!(f, "{label} did not start: {detail}"),
            RigError::Ctl { request, reply } => write!(f, "ioc-sim ctl {request}: {reply}"),
            RigError::Wait(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RigError {}

impl From<WaitTimeout> for RigError {
    fn from(e: WaitTimeout) -> Self {
        RigError::Wait(e)
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RigError {
    let what = what.into();
    move |source| RigError::Io { what, source }
}

/// The workspace binaries a rig runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `ioc-sim`.
    pub ioc_sim: PathBuf,
    /// `sos-lcs`.
    pub sos_lcs: PathBuf,
    /// `acrnd`.
    pub acrnd: PathBuf,
    /// `acrnctl`.
    pub acrnctl: PathBuf,
    /// `acrn-dm-sim`.
    pub dm_sim: PathBuf,
}

impl Bins {
    /// Finds every binary with [`try_bin_path`].
    ///
    /// # Errors
    ///
    /// The first binary not found.
    pub fn find() -> Result<Self, BinNotFound> {
        Ok(Self {
            ioc_sim: try_bin_path("ioc-sim")?,
            sos_lcs: try_bin_path("sos-lcs")?,
            acrnd: try_bin_path("acrnd")?,
            acrnctl: try_bin_path("acrnctl")?,
            dm_sim: try_bin_path("acrn-dm-sim")?,
        })
    }
}

/// What `systemctl` was asked to do, for [`Rig::host_power`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPower {
    /// `systemctl poweroff`: the IOC is told `poweroff`.
    Poweroff,
    /// `systemctl reboot`: the IOC is told `reboot`.
    Reboot,
}

impl HostPower {
    /// `poweroff` or `reboot`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            HostPower::Poweroff => "poweroff",
            HostPower::Reboot => "reboot",
        }
    }
}

/// The output of a command run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOut {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A running (or runnable) simulated Service OS.
#[derive(Debug)]
pub struct Rig {
    cfg: RigConfig,
    bins: Bins,
    dir: PathBuf,
    events: PathBuf,
    procs: Procs,
    runs: Vec<(String, u32)>,
}

impl Rig {
    /// Lays the rig out in `<run_dir>/<cfg.name>/`, writing the launch scripts and the
    /// systemctl stand-in; starts nothing. Event logs go to `<run_dir>/events/`, process
    /// output to `<run_dir>/proc/`.
    ///
    /// # Errors
    ///
    /// A binary is missing, a path contains a blank (commands are split on blanks), or a
    /// file cannot be written.
    pub fn create(cfg: RigConfig, run_dir: &Path) -> Result<Self, RigError> {
        let bins = Bins::find().map_err(RigError::Bin)?;
        let dir = run_dir.join(&cfg.name);
        let events = run_dir.join("events");
        let proc_dir = run_dir.join("proc");
        for d in [&dir, &events, &proc_dir] {
            fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
        }
        for sub in ["mngr", "add", "state"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err(format!("create {}", d.display())))?;
        }
        for p in [&dir, &bins.ioc_sim] {
            if p.to_string_lossy().contains(char::is_whitespace) {
                return Err(RigError::Io {
                    what: format!("use {}", p.display()),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "the daemons split commands on blanks: use a path without blanks (TMPDIR)",
                    ),
                });
            }
        }
        let rig = Self {
            procs: Procs::new(&proc_dir),
            cfg,
            bins,
            dir,
            events,
            runs: Vec::new(),
        };
        rig.write_systemctl()?;
        for vm in &rig.cfg.vms {
            rig.write_launch_script(vm)?;
        }
        Ok(rig)
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &RigConfig {
        &self.cfg
    }

    /// The binaries.
    #[must_use]
    pub fn bins(&self) -> &Bins {
        &self.bins
    }

    /// The rig's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the event logs.
    #[must_use]
    pub fn events_dir(&self) -> &Path {
        &self.events
    }

    /// The mngr socket directory.
    #[must_use]
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("mngr")
    }

    /// acrnd's state directory (the timer store is `timer_list` in it).
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The launch-script directory.
    #[must_use]
    pub fn launch_dir(&self) -> PathBuf {
        self.dir.join("add")
    }

    /// The symlink of the lifecycle line.
    #[must_use]
    pub fn line(&self) -> PathBuf {
        self.dir.join("cbc-lifecycle")
    }

    /// ioc-sim's control socket.
    #[must_use]
    pub fn control(&self) -> PathBuf {
        self.dir.join("ioc.sock")
    }

    fn mirror(&self, vm: &str) -> PathBuf {
        self.dir.join(format!("{vm}.mirror"))
    }

    fn jobs_file(&self) -> PathBuf {
        self.dir.join("jobs")
    }

    fn systemctl(&self) -> PathBuf {
        self.dir.join("systemctl")
    }

    /// The event log of `actor`.
    #[must_use]
    pub fn event_log(&self, actor: &str) -> PathBuf {
        self.events.join(format!("{actor}{EVENT_LOG_SUFFIX}"))
    }

    /// `/bin/sh <rig>/systemctl <verb>`, as a daemon's command line option.
    fn systemctl_cmd(&self, verb: &str) -> String {
        format!("/bin/sh {} {verb}", self.systemctl().display())
    }

    fn write_systemctl(&self) -> Result<(), RigError> {
        let script = format!(
            "#!/bin/sh\n\
             # systemctl stand-in of a simulated Service OS: `suspend` is the IOC's and returns\n\
             # when the IOC wakes the system; `poweroff` and `reboot` queue a job, which the\n\
             # runner carries out as systemd would; `list-jobs` shows the queue.\n\
             case \"$1\" in\n\
             \x20 suspend) exec '{ioc}' ctl --control '{ctl}' suspend ;;\n\
             \x20 poweroff|reboot) echo \"1 $1.target start waiting\" >> '{jobs}' ;;\n\
             \x20 list-jobs) cat '{jobs}' 2>/dev/null ;;\n\
             \x20 *) echo \"systemctl stand-in: unsupported: $*\" >&2; exit 1 ;;\n\
             esac\n\
             exit 0\n",
            ioc = self.bins.ioc_sim.display(),
            ctl = self.control().display(),
            jobs = self.jobs_file().display(),
        );
        fs::write(self.systemctl(), script).map_err(io_err("write the systemctl stand-in"))
    }

    fn write_launch_script(&self, vm: &VmSpec) -> Result<(), RigError> {
        let t = &self.cfg.timing;
        let delay = vm.delay_ms.unwrap_or(t.guest_delay_ms);
        let mut args = vec![
            "--socket-dir".to_owned(),
            self.socket_dir().display().to_string(),
            "--native".to_owned(),
            self.mirror(&vm.name).display().to_string(),
            "--event-log".to_owned(),
            self.event_log(&vm.name).display().to_string(),
            "--heartbeat-ms".to_owned(),
            t.guest_heartbeat_ms.to_string(),
            "--suspend-delay-ms".to_owned(),
            delay.to_string(),
            "--poweroff-delay-ms".to_owned(),
            delay.to_string(),
        ];
        if let Some(s) = vm.rtc_secs {
            args.extend(["--rtc-secs".to_owned(), s.to_string()]);
        }
        for f in &vm.faults {
            args.extend(["--fault".to_owned(), f.clone()]);
        }
        args.push(vm.name.clone());
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let script = format!(
            "#!/bin/bash\n# {vm}: a simulated device model on the IOC mirror channel {mirror}\nexec '{sim}' {args}\n",
            vm = vm.name,
            mirror = self.mirror(&vm.name).display(),
            sim = self.bins.dm_sim.display(),
            args = quoted.join(" "),
        );
        let path = self.launch_dir().join(format!("{}.sh", vm.name));
        fs::write(&path, script).map_err(io_err(format!("write {}", path.display())))
    }

    /// The label of the current (last started) instance of `daemon`.
    #[must_use]
    pub fn label(&self, daemon: &str) -> Option<String> {
        self.runs
            .iter()
            .find(|(d, _)| d == daemon)
            .map(|(d, n)| instance_label(d, *n))
    }

    fn next_label(&mut self, daemon: &str) -> String {
        match self.runs.iter_mut().find(|(d, _)| d == daemon) {
            Some((d, n)) => {
                *n += 1;
                instance_label(d, *n)
            }
            None => {
                self.runs.push((daemon.to_owned(), 1));
                instance_label(daemon, 1)
            }
        }
    }

    fn spawn(&mut self, daemon: &str, mut cmd: Command) -> Result<String, RigError> {
        let label = self.next_label(daemon);
        for var in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "ACRN_WAKEUP_REASON",
        ] {
            cmd.env_remove(var);
        }
        self.procs.spawn(&label, cmd).map_err(|e| RigError::Start {
            label: label.clone(),
            detail: e.to_string(),
        })?;
        Ok(label)
    }

    /// Waits until `ready` holds while the process `label` runs.
    fn wait_ready(
        &mut self,
        label: &str,
        what: &str,
        ready: impl Fn(&Self) -> bool,
    ) -> Result<(), RigError> {
        let mut exited = None;
        let res = crate::wait::wait_until(START_TIMEOUT, what, || {
            if ready(self) {
                return Some(true);
            }
            if !self.procs.is_running(label) {
                exited = Some(());
                return Some(false);
            }
            None
        });
        match res {
            Ok(true) => Ok(()),
            Ok(false) => Err(RigError::Start {
                label: label.to_owned(),
                detail: format!(
                    "it exited; stderr:\n{}",
                    tail(&self.procs.stderr(label), 20)
                ),
            }),
            Err(e) => Err(RigError::Start {
                label: label.to_owned(),
                detail: format!("{e}; stderr:\n{}", tail(&self.procs.stderr(label), 20)),
            }),
        }
    }

    /// Starts ioc-sim with a mirror per VM; returns once its control socket accepts.
    ///
    /// # Errors
    ///
    /// It did not start.
    pub fn start_ioc(&mut self) -> Result<(), RigError> {
        let t = &self.cfg.timing;
        let mut cmd = Command::new(&self.bins.ioc_sim);
        cmd.arg("-v")
            .arg("run")
            .arg("--line")
            .arg(self.line())
            .arg("--mode")
            .arg(self.cfg.mode.name())
            .arg("--control")
            .arg(self.control())
            .arg("--socket-dir")
            .arg(self.socket_dir())
            .arg("--reason-period-ms")
            .arg(t.reason_period_ms.to_string())
            .arg("--watchdog-ms")
            .arg(t.watchdog_ms.to_string())
            .arg("--initial")
            .arg(match self.cfg.ioc_start {
                IocStart::Running => "running",
                IocStart::Off => "off",
            })
            .arg("--event-log")
            .arg(self.event_log("ioc-sim"));
        for vm in &self.cfg.vms {
            cmd.arg("--mirror").arg(self.mirror(&vm.name));
        }
        if let Some(f) = &self.cfg.faults {
            cmd.arg("--seed").arg(f.seed.to_string());
            for (flag, p) in [
                ("--drop", f.drop),
                ("--dup", f.dup),
                ("--corrupt", f.corrupt),
                ("--garbage", f.garbage),
            ] {
                if p > 0.0 {
                    cmd.arg(flag).arg(p.to_string());
                }
            }
        }
        let label = self.spawn("ioc-sim", cmd)?;
        let control = self.control();
        self.wait_ready(&label, "ioc-sim's control socket", move |_| {
            UnixStream::connect(&control).is_ok()
        })
    }

    /// Starts sos-lcs (a new instance if one ran before); returns once it serves `sos-lcs`.
    ///
    /// # Errors
    ///
    /// It did not start.
    pub fn start_lcs(&mut self) -> Result<(), RigError> {
        let t = self.cfg.timing.clone();
        let uid = nix::unistd::getuid().as_raw().to_string();
        let mut cmd = Command::new(&self.bins.sos_lcs);
        match self.cfg.mode {
            LineMode::Cdev => cmd.arg("--line").arg(self.line()),
            LineMode::Uart => cmd.arg("--uart").arg(self.line()),
        };
        cmd.arg("--socket-dir")
            .arg(self.socket_dir())
            .arg("--heartbeat-ms")
            .arg(t.heartbeat_ms.to_string())
            .arg("--stop-timeout")
            .arg(t.stop_timeout_s.to_string())
            .arg("--wait-bound")
            .arg(t.wait_bound_s.to_string())
            .arg("--ipc-timeout-ms")
            .arg("1000")
            .arg("--poweroff-cmd")
            .arg(self.systemctl_cmd("poweroff"))
            .arg("--reboot-cmd")
            .arg(self.systemctl_cmd("reboot"))
            .arg("--suspend-cmd")
            .arg(self.systemctl_cmd("suspend"))
            .arg("--intent-cmd")
            .arg(self.systemctl_cmd("list-jobs --no-legend --no-pager"))
            .arg("--allow-uid")
            .arg(&uid)
            .arg("--event-log")
            .arg(self.event_log("sos-lcs"));
        if !self.cfg.acrnd {
            cmd.arg("--no-acrnd");
        }
        let label = self.spawn("sos-lcs", cmd)?;
        self.wait_ready(&label, "sos-lcs's socket", |rig| {
            served(&rig.socket_dir(), "sos-lcs")
        })
    }

    /// Starts acrnd (a new instance if one ran before) with extra environment `env`;
    /// returns once it serves `acrnd`. acrnd launches the VMs itself.
    ///
    /// # Errors
    ///
    /// It did not start.
    pub fn start_acrnd(&mut self, env: &[(&str, &str)]) -> Result<(), RigError> {
        let t = self.cfg.timing.clone();
        let uid = nix::unistd::getuid().as_raw().to_string();
        let mut cmd = Command::new(&self.bins.acrnd);
        cmd.arg("--launch-dir")
            .arg(self.launch_dir())
            .arg("--socket-dir")
            .arg(self.socket_dir())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--upstream-timers")
            .arg(self.dir.join("upstream_timer_list"))
            .arg("--intent-cmd")
            .arg(self.systemctl_cmd("list-jobs --no-legend --no-pager"))
            .arg("--poll-ms")
            .arg(t.acrnd_poll_ms.to_string())
            .arg("--kill-grace-ms")
            .arg("1000")
            .arg("--shutdown-budget")
            .arg(t.stop_timeout_s.to_string())
            .arg("--allow-uid")
            .arg(&uid)
            .arg("--event-log")
            .arg(self.event_log("acrnd"))
            .args(&self.cfg.acrnd_args)
            .env_remove("ACRND_FAULT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let label = self.spawn("acrnd", cmd)?;
        self.wait_ready(&label, "acrnd's socket", |rig| {
            served(&rig.socket_dir(), "acrnd")
        })
    }

    /// The Service OS boots: sos-lcs, then acrnd (unless the rig has none).
    ///
    /// # Errors
    ///
    /// A daemon did not start.
    pub fn boot(&mut self) -> Result<(), RigError> {
        self.start_lcs()?;
        if self.cfg.acrnd {
            self.start_acrnd(&[])?;
        }
        Ok(())
    }

    /// Sends one request to ioc-sim's control socket; returns the `ok` reply.
    ///
    /// # Errors
    ///
    /// [`RigError::Ctl`] for an `err` reply or no reply.
    pub fn ctl(&self, request: &str) -> Result<String, RigError> {
        let out = self.run_cmd(
            Command::new(&self.bins.ioc_sim)
                .arg("ctl")
                .arg("--control")
                .arg(self.control())
                .arg("--timeout-secs")
                .arg(CTL_TIMEOUT_SECS.to_string())
                .args(request.split_whitespace()),
        )?;
        if out.code == 0 {
            Ok(out.stdout.trim().to_owned())
        } else {
            Err(RigError::Ctl {
                request: request.to_owned(),
                reply: format!("{} {}", out.stdout.trim(), out.stderr.trim())
                    .trim()
                    .to_owned(),
            })
        }
    }

    /// ioc-sim's `status` as `key=value` pairs.
    ///
    /// # Errors
    ///
    /// See [`Rig::ctl`].
    pub fn ioc_status(&self) -> Result<Vec<(String, String)>, RigError> {
        let reply = self.ctl("status")?;
        Ok(reply
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// Runs `acrnctl <args>` against the rig (bounded by acrnctl's own `--timeout-ms`).
    ///
    /// # Errors
    ///
    /// acrnctl cannot be run.
    pub fn acrnctl(&self, args: &[&str]) -> Result<CmdOut, RigError> {
        self.run_cmd(
            Command::new(&self.bins.acrnctl)
                .arg("--socket-dir")
                .arg(self.socket_dir())
                .arg("--launch-dir")
                .arg(self.launch_dir())
                .arg("--timeout-ms")
                .arg("5000")
                .args(args),
        )
    }

    /// The VMs and their states as `acrnctl --json list` shows them.
    ///
    /// # Errors
    ///
    /// acrnctl failed or printed something else than a JSON list.
    pub fn vm_states(&self) -> Result<Vec<(String, String)>, RigError> {
        let out = self.acrnctl(&["--json", "list"])?;
        let bad = |why: &str| RigError::Ctl {
            request: "acrnctl --json list".to_owned(),
            reply: format!("{why}: exit {} {} {}", out.code, out.stdout, out.stderr),
        };
        if out.code != 0 {
            return Err(bad("failed"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).map_err(|_| bad("not JSON"))?;
        let list = v.as_array().ok_or_else(|| bad("not a list"))?;
        Ok(list
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or("?").to_owned(),
                    e["state"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect())
    }

    fn run_cmd(&self, cmd: &mut Command) -> Result<CmdOut, RigError> {
        let what = format!("run {}", cmd.get_program().display());
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(io_err(what))?;
        Ok(CmdOut {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Whether the current instance of `daemon` runs.
    pub fn is_running(&mut self, daemon: &str) -> bool {
        match self.label(daemon) {
            Some(l) => self.procs.is_running(&l),
            None => false,
        }
    }

    /// The pid of the current instance of `daemon`.
    #[must_use]
    pub fn pid(&self, daemon: &str) -> Option<u32> {
        self.label(daemon).map(|l| self.procs.pid(&l))
    }

    /// Kills the current instance of `daemon` (its process group) with SIGKILL, as a crash.
    ///
    /// # Errors
    ///
    /// It could not be reaped in time.
    pub fn crash(&mut self, daemon: &str) -> Result<(), RigError> {
        if let Some(l) = self.label(daemon) {
            self.procs.kill(&l)?;
        }
        Ok(())
    }

    /// Sends SIGTERM to the current instance of `daemon` and waits for it to exit.
    ///
    /// # Errors
    ///
    /// It did not exit within `timeout`.
    pub fn terminate(&mut self, daemon: &str, timeout: Duration) -> Result<(), RigError> {
        let Some(l) = self.label(daemon) else {
            return Ok(());
        };
        if self.procs.signal(&l, Signal::SIGTERM).is_ok() {
            self.procs.wait_exit(&l, timeout)?;
        }
        Ok(())
    }

    /// Queues a `systemctl poweroff | reboot` job, as if someone had run it in the SOS.
    ///
    /// # Errors
    ///
    /// The job file cannot be written.
    pub fn queue_job(&self, power: HostPower) -> Result<(), RigError> {
        let out = self.run_cmd(
            Command::new("/bin/sh")
                .arg(self.systemctl())
                .arg(power.name()),
        )?;
        if out.code == 0 {
            Ok(())
        } else {
            Err(RigError::Io {
                what: "queue a job".to_owned(),
                source: io::Error::other(out.stderr),
            })
        }
    }

    /// The queued jobs (`systemctl list-jobs`).
    #[must_use]
    pub fn jobs(&self) -> String {
        fs::read_to_string(self.jobs_file()).unwrap_or_default()
    }

    /// Plays systemd and the kernel after `systemctl poweroff | reboot`: stops acrnd (which
    /// stops the VMs) and sos-lcs (which writes its last frames) with SIGTERM, then tells
    /// the IOC `poweroff` or `reboot`, and empties the job queue. Returns the VMs whose
    /// device models were still running afterwards (the kernel would kill them; the rig
    /// does).
    ///
    /// # Errors
    ///
    /// A daemon did not exit in time or the IOC refused the command.
    pub fn host_power(&mut self, power: HostPower) -> Result<Vec<String>, RigError> {
        if !self.jobs().contains(&format!("{}.target", power.name())) {
            self.queue_job(power)?;
        }
        let budget = Duration::from_secs(u64::from(self.cfg.timing.stop_timeout_s) + 10);
        self.terminate("acrnd", budget)?;
        self.terminate("sos-lcs", Duration::from_secs(10))?;
        self.ctl(power.name())?;
        fs::write(self.jobs_file(), "").map_err(io_err("empty the job queue"))?;
        Ok(self.kill_dms())
    }

    /// Device models this rig started that still run: `(vm, pid)`, from the `dm.start`
    /// events (the last one per VM).
    #[must_use]
    pub fn live_dms(&self) -> Vec<(String, i32)> {
        let mut last: Vec<(String, i32)> = Vec::new();
        for vm in &self.cfg.vms {
            let Ok(events) = read_events(&self.event_log(&vm.name)) else {
                continue;
            };
            for ev in events.iter().filter(|e| e.kind == "dm.start") {
                let Some(pid) = ev
                    .fields
                    .get("pid")
                    .and_then(serde_json::Value::as_i64)
                    .and_then(|p| i32::try_from(p).ok())
                else {
                    continue;
                };
                if self.is_our_dm(pid) {
                    last.push((vm.name.clone(), pid));
                }
            }
        }
        last
    }

    /// Whether `pid` runs acrn-dm-sim on this rig's socket directory (not a reused pid).
    fn is_our_dm(&self, pid: i32) -> bool {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        if is_zombie(pid) {
            return false;
        }
        let sock = self.socket_dir().display().to_string();
        cmdline.split(|b| *b == 0).any(|arg| arg == sock.as_bytes())
    }

    /// Kills every device model of this rig still running (SIGKILL to its session's group);
    /// returns the VMs that had one.
    pub fn kill_dms(&mut self) -> Vec<String> {
        let live = self.live_dms();
        for (_, pid) in &live {
            let _ = signal::killpg(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        for (_, pid) in &live {
            let _ = wait_for(Duration::from_secs(5), "a device model to die", || {
                !self.is_our_dm(*pid)
            });
        }
        live.into_iter().map(|(vm, _)| vm).collect()
    }

    /// The process labels started so far, in order.
    #[must_use]
    pub fn labels(&self) -> Vec<String> {
        self.runs
            .iter()
            .flat_map(|(d, n)| (1..=*n).map(move |i| instance_label(d, i)))
            .collect()
    }

    /// The last `lines` lines of the stderr of process `label`.
    #[must_use]
    pub fn stderr_tail(&self, label: &str, lines: usize) -> String {
        tail(&self.procs.stderr(label), lines)
    }

    /// Stops everything: the device models, then every process started (SIGKILL).
    pub fn teardown(&mut self) {
        self.kill_dms();
        for label in self.labels() {
            let _ = self.procs.kill(&label);
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.kill_dms();
        // The process guard kills and reaps the rest.
    }
}

fn instance_label(daemon: &str, n: u32) -> String {
    if n == 1 {
        daemon.to_owned()
    } else {
        format!("{daemon}-{n}")
    }
}

/// Whether a live process serves mngr name `name` in `dir`.
fn served(dir: &Path, name: &str) -> bool {
    mngr_ipc::naming::candidates(dir, name).is_ok_and(|c| c.iter().any(|c| c.alive))
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
