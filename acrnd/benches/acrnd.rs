//! acrnd as a real process with acrn-dm-sim VMs: stop-all and resume latency, memory and
//! idle wake-ups, against in-bench baselines.
//!
//! Run with `cargo build --release --workspace --bins && cargo bench -p acrnd --bench acrnd`
//! (the bench runs `target/release/acrnd` and `target/release/acrn-dm-sim`, which `cargo
//! bench` alone does not rebuild). `--quick` (or `BENCH_QUICK=1`) is a smoke run with small
//! counts; without `--bench` in argv (`cargo test --all-targets`) it runs nothing.
//! `BENCH_STRICT=1` makes a failed target exit with status 1; otherwise the bench only
//! reports. Method and recorded figures: `BENCHMARKS.md` at the workspace root.
//!
//! For 1, 8 and 64 VMs, one acrnd (autostart, launch scripts that `exec acrn-dm-sim`, guests
//! taking 20 ms to power off or suspend, 100 ms heartbeats), a test lifecycle service
//! `sos-lcs` in the bench process, and acrnd's event log (`--event-log`, `CLOCK_MONOTONIC`
//! stamps, the clock of [`monotonic_ns`]):
//!
//! 1. Stop-all: ACRND_STOP {S5, timeout 20} sent (stamp before the send) → SHUTDOWN in the
//!    test LCS's handler (stamp first thing in the handler). After each cycle every VM is
//!    started again by CTL_START and the bench waits until CTL_LIST shows all started.
//! 2. Resume: ACRND_STOP {S3} → SUSPEND, then ACRND_RESUME sent (the test LCS answers
//!    WAKEUP_REASON with 0x20) → every VM `vm.state` → `started` in acrnd's event log (what
//!    CTL_LIST reports), and → every device model's DM_NOTIFY {mode 0} received by acrnd.
//! 3. VmRSS of acrnd idle with the VMs running, after ~2 s idle. Baseline: `sleep 30`.
//! 4. Voluntary + involuntary context switches of all of acrnd's threads over 5 s of idle
//!    (no requests). Baseline: the `sleep 30` process over the same window.
//!
//! Baseline of the latencies: a raw Unix-socket connect + 280-byte echo round trip,
//! interleaved with the cycles.

use acrn_tests::echo::EchoServer;
use acrn_tests::measure::{
    Rss, env_is_1, load_average, pct, print_machine, raise_nofile, rss_of, switches,
};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use acrn_tests::{Procs, TestDir, bin_path, wait_for, wait_until};
use mngr_ipc::client::Client;
use mngr_ipc::event_log::{LoggedEvent, monotonic_ns};
use mngr_ipc::msg::{AckPayload, Body, MsgId, Request, StopTarget, VmEntry, err, vm_state};
use mngr_ipc::naming::{candidates, monitor_name};
use mngr_ipc::server::{Access, Handlers, ServerConfig, ServerThread, spawn_server};
use mngr_ipc::{MSG_LEN, Profile};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Bound of every single wait of the bench (64 VMs on a loaded 2-CPU machine).
const WAIT: Duration = Duration::from_secs(30);
/// Timeout of each request the bench makes.
const IPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the simulated guests take to power off and to suspend.
const GUEST_DELAY_MS: u64 = 20;
/// Heartbeat period of the simulated guests.
const HEARTBEAT_MS: u64 = 100;
/// What the test LCS answers to WAKEUP_REASON (ignition on).
const REASON: u32 = 0x20;
/// Quiet time after all VMs are up and before a timed cycle.
const SETTLE: Duration = Duration::from_millis(300);
/// Raw-socket round trips between two cycles (the baseline).
const RAW_PER_CYCLE: usize = 10;
/// The soft RLIMIT_NOFILE the bench makes sure of (acrnd inherits it).
const NOFILE: u64 = 4096;

/// Counts of one run.
#[derive(Debug, Clone)]
struct Opts {
    sizes: Vec<usize>,
    /// Stop-all cycles at 1 and 8 VMs.
    stop_cycles: usize,
    /// Stop-all cycles at 64 VMs (each restarts 64 processes).
    stop_cycles_big: usize,
    /// Suspend + resume cycles per size.
    resume_cycles: usize,
    /// Idle time before VmRSS is read.
    settle: Duration,
    /// Window of the idle wake-up count.
    window: Duration,
    /// Sizes at which memory and idle wake-ups are measured.
    idle_sizes: Vec<usize>,
    quick: bool,
}

// ---------------------------------------------------------------------------------------
// The test lifecycle service.

/// `sos-lcs` in the bench: answers WAKEUP_REASON with [`REASON`], acks everything else,
/// and passes each request with the `CLOCK_MONOTONIC` time its handler started.
struct Lcs {
    _server: ServerThread,
    rx: Receiver<(u64, Body)>,
}

impl Lcs {
    fn start(sock: &Path) -> Self {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let h = Handlers::new().fallback(Access::Open, move |req: &Request, call, _: &mut ()| {
            let t = monotonic_ns();
            let _ = tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .send((t, req.body.clone()));
            match req.id() {
                MsgId::WakeupReason => call.ack(AckPayload::Reason(REASON)),
                _ => call.ack(AckPayload::Err(0)),
            }
        });
        Lcs {
            _server: spawn_server(ServerConfig::new("sos-lcs", sock), h, ()).expect("test lcs"),
            rx,
        }
    }

    fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// The next SHUTDOWN or SUSPEND, with its handler time.
    fn report(&self) -> Result<(u64, Body), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, b @ (Body::Shutdown { .. } | Body::Suspend { .. }))) => return Ok((t, b)),
                Ok(_) => {}
                Err(e) => return Err(format!("no SHUTDOWN/SUSPEND at the test LCS: {e}")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// acrnd's event log, read as it grows.

struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Self {
        Tail {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The complete lines written since the last call.
    fn read_new(&mut self) -> Vec<LoggedEvent> {
        let Ok(mut f) = File::open(&self.path) else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += u64::try_from(buf.len()).unwrap_or(0);
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let lines: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&lines)
            .lines()
            .filter_map(|l| serde_json::from_str::<LoggedEvent>(l).ok())
            .collect()
    }

    fn skip(&mut self) {
        let _ = self.read_new();
    }
}

fn field<'a>(e: &'a LoggedEvent, key: &str) -> Option<&'a str> {
    e.fields.get(key).and_then(serde_json::Value::as_str)
}

/// The VM name in the `body` of an `ipc.request` DM_NOTIFY with mode 0.
fn notified_running(e: &LoggedEvent) -> Option<String> {
    if e.kind != "ipc.request" || field(e, "msg") != Some("DM_NOTIFY") {
        return None;
    }
    // `DM_NOTIFY name: vm1, mode: 0` (`Body::describe`).
    let fields = field(e, "body")?.strip_prefix("DM_NOTIFY ")?;
    let mut name = None;
    let mut running = false;
    for f in fields.split(", ") {
        match f.split_once(": ") {
            Some(("name", n)) => name = Some(n.to_owned()),
            Some(("mode", m)) => running = m == "0",
            _ => {}
        }
    }
    name.filter(|_| running)
}

// ---------------------------------------------------------------------------------------
// /proc.

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The soft "Max open files" of a process.
fn nofile_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------------------
// The raw socket baseline.

/// The raw socket baseline with the request it echoes.
struct Echo {
    server: EchoServer,
    wire: Vec<u8>,
}

impl Echo {
    fn start(path: PathBuf) -> Self {
        let wire = Profile::F
            .encode_request(&Request::now(Body::AcrndStop {
                force: 0,
                timeout: 20,
                target: StopTarget::S5,
            }))
            .expect("encode")
            .to_vec();
        Echo {
            server: EchoServer::start(path, MSG_LEN),
            wire,
        }
    }

    /// One connect + 280-byte round trip, in ns.
    fn round_trip(&self) -> u64 {
        ns(self.server.round_trip(&self.wire))
    }
}

// ---------------------------------------------------------------------------------------
// One acrnd with N VMs.

#[derive(Debug, Clone, Copy, Default)]
struct StopSample {
    /// ACRND_STOP sent → SHUTDOWN in the LCS handler.
    total: u64,
    /// → ACRND_STOP acked.
    ack: u64,
    /// → the last DM_STOP dispatched (`dm.send`).
    sent: u64,
    /// → the last VM `vm.state` → stopped.
    stopped: u64,
    /// → the median VM `vm.state` → stopped.
    stopped_p50: u64,
    /// → acrnd's `stop_all.done` (it then sends SHUTDOWN from a worker thread).
    done: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct ResumeSample {
    /// ACRND_STOP {S3} sent → SUSPEND in the LCS handler.
    suspend: u64,
    /// ACRND_RESUME sent → WAKEUP_REASON in the LCS handler.
    reason: u64,
    /// → the last VM `vm.state` → started (what CTL_LIST reports).
    reported: u64,
    /// → the last DM_RESUME acked (`dm.result`).
    acked: u64,
    /// → the last DM_NOTIFY {mode 0} received.
    notified: u64,
}

#[derive(Debug, Clone, Default)]
struct Idle {
    rss: Rss,
    sleep_rss: Rss,
    wakeups: u64,
    sleep_wakeups: u64,
    /// Per thread with wake-ups: name, tid, voluntary, involuntary.
    by_thread: Vec<(String, u32, u64, u64)>,
    threads: Vec<String>,
    fds: usize,
}

#[derive(Debug, Default)]
struct SizeResult {
    n: usize,
    stop: Vec<StopSample>,
    resume: Vec<ResumeSample>,
    idle: Option<Idle>,
    rss_after: Option<Rss>,
    nofile: String,
    emfile: usize,
    error: Option<String>,
}

/// Field order matters: the VMs are killed in `drop`, then `procs` kills acrnd, and the
/// directory goes last.
struct Suite {
    names: Vec<String>,
    procs: Procs,
    lcs: Lcs,
    client: Client,
    sock: PathBuf,
    tail: Tail,
    pid: u32,
    _dir: TestDir,
}

impl Drop for Suite {
    fn drop(&mut self) {
        // The device models run in sessions of their own: the process guard does not reach
        // them. Kill those this suite's acrnd launched (live `<vm>.monitor.<pid>` sockets
        // whose process is an acrn-dm-sim).
        for vm in &self.names {
            for c in candidates(&self.sock, &monitor_name(vm)).unwrap_or_default() {
                let comm =
                    std::fs::read_to_string(format!("/proc/{}/comm", c.pid)).unwrap_or_default();
                if c.alive
                    && comm.trim() == "acrn-dm-sim"
                    && let Ok(pid) = i32::try_from(c.pid)
                {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

impl Suite {
    fn start(n: usize) -> Result<Self, String> {
        let dir = TestDir::new(&format!("acrnd-bench{n}"));
        let sock = dir.join("mngr");
        let launch = dir.join("add");
        std::fs::create_dir_all(&launch).map_err(|e| format!("launch dir: {e}"))?;
        std::fs::create_dir_all(&sock).map_err(|e| format!("socket dir: {e}"))?;
        let sim = bin_path("acrn-dm-sim");
        let names: Vec<String> = (0..n).map(|i| format!("vm{i:02}")).collect();
        for vm in &names {
            let script = format!(
                "#!/bin/bash\nexec {sim} --socket-dir {sock} --heartbeat-ms {HEARTBEAT_MS} --poweroff-delay-ms {GUEST_DELAY_MS} --suspend-delay-ms {GUEST_DELAY_MS} {vm}\n",
                sim = sim.display(),
                sock = sock.display(),
            );
            std::fs::write(launch.join(format!("{vm}.sh")), script)
                .map_err(|e| format!("script: {e}"))?;
        }
        std::fs::write(dir.join("intent"), "").map_err(|e| format!("intent: {e}"))?;
        let lcs = Lcs::start(&sock);
        let events = dir.join("acrnd.events");
        let mut cmd = Command::new(bin_path("acrnd"));
        cmd.arg("--launch-dir")
            .arg(&launch)
            .arg("--socket-dir")
            .arg(&sock)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--upstream-timers")
            .arg(dir.join("upstream_timer_list"))
            .arg("--intent-cmd")
            .arg(format!("cat {}", dir.join("intent").display()))
            .arg("--event-log")
            .arg(&events)
            .arg("--poll-ms")
            .arg("500")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("RUST_LOG");
        let mut procs = Procs::new(dir.path());
        let pid = procs
            .spawn("acrnd", cmd)
            .map_err(|e| format!("spawn acrnd: {e}"))?;
        let s = Suite {
            names,
            procs,
            lcs,
            client: Client::new(&sock, Profile::F),
            sock,
            tail: Tail::new(events),
            pid,
            _dir: dir,
        };
        wait_for(WAIT, "acrnd to serve", || {
            candidates(&s.sock, "acrnd").is_ok_and(|c| c.iter().any(|c| c.alive))
        })
        .map_err(|e| s.failure(&e.to_string()))?;
        s.wait_all(vm_state::STARTED, true)?;
        Ok(s)
    }

    /// `what`, with the end of acrnd's stderr.
    fn failure(&self, what: &str) -> String {
        let err = self.procs.stderr("acrnd");
        let lines: Vec<&str> = err.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
        format!("{what}; acrnd stderr ends with:\n    {tail}")
    }

    fn send(&self, body: Body) -> Result<AckPayload, String> {
        self.client
            .send("acrnd", &Request::now(body), IPC_TIMEOUT)
            .map(|a| a.payload)
            .map_err(|e| self.failure(&format!("acrnd did not answer: {e}")))
    }

    fn list(&self) -> Result<Vec<VmEntry>, String> {
        let mut all = Vec::new();
        loop {
            let start = u32::try_from(all.len()).map_err(|e| e.to_string())?;
            let AckPayload::VmPage(p) = self.send(Body::CtlList { start })? else {
                return Err("CTL_LIST: not a page".into());
            };
            let n = p.entries.len();
            all.extend(p.entries);
            if n == 0 || all.len() >= usize::try_from(p.total).map_err(|e| e.to_string())? {
                return Ok(all);
            }
        }
    }

    /// Waits until CTL_LIST shows every VM in `state` (and, when stopped, without a pid).
    fn wait_all(&self, state: i32, settle: bool) -> Result<(), String> {
        let mut last = Vec::new();
        let ok = wait_for(WAIT, "every VM in the state", || match self.list() {
            Ok(l) => {
                let done = l.len() == self.names.len()
                    && l.iter()
                        .all(|e| e.state == state && (state != vm_state::STOPPED || e.pid == 0));
                last = l;
                done
            }
            Err(_) => false,
        });
        if ok.is_err() {
            let states: Vec<(String, i32)> =
                last.iter().map(|e| (e.name.clone(), e.state)).collect();
            return Err(self.failure(&format!(
                "not every VM reached state {state} within {WAIT:?}: {states:?}"
            )));
        }
        if settle {
            std::thread::sleep(SETTLE);
        }
        Ok(())
    }

    /// CTL_START to every VM (retrying -EBUSY while acrnd finishes the stop).
    fn start_all(&self) -> Result<(), String> {
        for vm in &self.names {
            let r = wait_until(WAIT, "CTL_START taken", || {
                match self.send(Body::CtlStart { name: vm.clone() }) {
                    Ok(AckPayload::Err(e)) if e == err::BUSY => None,
                    other => Some(other),
                }
            })
            .map_err(|e| self.failure(&format!("{vm}: {e}")))?;
            if r? != AckPayload::Err(0) {
                return Err(self.failure(&format!("CTL_START {vm} refused")));
            }
        }
        self.wait_all(vm_state::STARTED, true)
    }

    fn stop_cycle(&mut self) -> Result<StopSample, String> {
        self.lcs.drain();
        self.tail.skip();
        let t0 = monotonic_ns();
        let ack = self.send(Body::AcrndStop {
            force: 0,
            timeout: 20,
            target: StopTarget::S5,
        })?;
        let t_ack = monotonic_ns();
        if ack != AckPayload::Err(0) {
            return Err(format!("ACRND_STOP answered {ack:?}"));
        }
        let (t_lcs, body) = self.lcs.report().map_err(|e| self.failure(&e))?;
        if body != (Body::Shutdown { err: 0 }) {
            return Err(self.failure(&format!("the LCS got {body:?}, not SHUTDOWN {{0}}")));
        }
        let events = self.tail.read_new();
        let stopped: Vec<u64> = events
            .iter()
            .filter(|e| e.kind == "vm.state" && field(e, "to") == Some("stopped"))
            .map(|e| e.t_ns)
            .collect();
        let sent: Vec<u64> = events
            .iter()
            .filter(|e| {
                e.kind == "dm.send" && field(e, "msg").is_some_and(|m| m.starts_with("DM_STOP"))
            })
            .map(|e| e.t_ns)
            .collect();
        if stopped.len() != self.names.len() || sent.len() != self.names.len() {
            return Err(format!(
                "{} VMs stopped and {} DM_STOP sent in acrnd's event log, for {} VMs",
                stopped.len(),
                sent.len(),
                self.names.len()
            ));
        }
        let rel = |t: u64| t.saturating_sub(t0);
        let sample = StopSample {
            total: rel(t_lcs),
            ack: rel(t_ack),
            sent: rel(sent.iter().copied().max().unwrap_or(0)),
            stopped: rel(stopped.iter().copied().max().unwrap_or(0)),
            stopped_p50: rel(pct(&stopped, 50).unwrap_or(0)),
            done: rel(events
                .iter()
                .find(|e| e.kind == "stop_all.done")
                .map_or(0, |e| e.t_ns)),
        };
        self.wait_all(vm_state::STOPPED, false)?;
        self.start_all()?;
        Ok(sample)
    }

    fn resume_cycle(&mut self) -> Result<ResumeSample, String> {
        self.lcs.drain();
        let t0 = monotonic_ns();
        let ack = self.send(Body::AcrndStop {
            force: 0,
            timeout: 20,
            target: StopTarget::S3,
        })?;
        if ack != AckPayload::Err(0) {
            return Err(format!("ACRND_STOP {{S3}} answered {ack:?}"));
        }
        let (t_susp, body) = self.lcs.report().map_err(|e| self.failure(&e))?;
        if body != (Body::Suspend { err: 0 }) {
            return Err(self.failure(&format!("the LCS got {body:?}, not SUSPEND {{0}}")));
        }
        self.wait_all(vm_state::SUSPENDED, true)?;
        self.lcs.drain();
        self.tail.skip();
        let t1 = monotonic_ns();
        let ack = self.send(Body::AcrndResume {
            force: 0,
            timeout: 0,
        })?;
        if ack != AckPayload::Err(0) {
            return Err(format!("ACRND_RESUME answered {ack:?}"));
        }
        let n = self.names.len();
        let mut reported = BTreeMap::new();
        let mut acked = BTreeMap::new();
        let mut notified = BTreeMap::new();
        let mut tail = std::mem::replace(&mut self.tail, Tail::new(PathBuf::new()));
        let got = wait_for(WAIT, "every VM resumed in acrnd's event log", || {
            for e in tail.read_new() {
                let vm = field(&e, "vm").map(str::to_owned);
                if e.kind == "vm.state" && field(&e, "to") == Some("started") {
                    reported.insert(vm.unwrap_or_default(), e.t_ns);
                } else if e.kind == "dm.result"
                    && field(&e, "msg").is_some_and(|m| m.starts_with("DM_RESUME"))
                    && e.fields.get("err").and_then(serde_json::Value::as_i64) == Some(0)
                {
                    acked.insert(vm.unwrap_or_default(), e.t_ns);
                } else if let Some(vm) = notified_running(&e) {
                    notified.insert(vm, e.t_ns);
                }
            }
            reported.len() == n && acked.len() == n && notified.len() == n
        });
        self.tail = tail;
        got.map_err(|e| {
            self.failure(&format!(
                "{e}: {} reported started, {} DM_RESUME acked, {} DM_NOTIFY 0",
                reported.len(),
                acked.len(),
                notified.len()
            ))
        })?;
        let t_reason = std::iter::from_fn(|| self.lcs.rx.try_recv().ok())
            .find(|(_, b)| *b == Body::WakeupReason)
            .map_or(0, |(t, _)| t);
        self.wait_all(vm_state::STARTED, true)?;
        let last =
            |m: &BTreeMap<String, u64>| m.values().copied().max().unwrap_or(0).saturating_sub(t1);
        Ok(ResumeSample {
            suspend: t_susp.saturating_sub(t0),
            reason: t_reason.saturating_sub(t1),
            reported: last(&reported),
            acked: last(&acked),
            notified: last(&notified),
        })
    }

    fn idle(&mut self, o: &Opts) -> Result<Idle, String> {
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let spid = self
            .procs
            .spawn("sleep", sleep)
            .map_err(|e| format!("spawn sleep: {e}"))?;
        wait_for(WAIT, "sleep to exec", || {
            std::fs::read_to_string(format!("/proc/{spid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
        .map_err(|e| e.to_string())?;
        std::thread::sleep(o.settle);
        let rss = rss_of(self.pid).ok_or("acrnd's VmRSS")?;
        let sleep_rss = rss_of(spid).ok_or("VmRSS of sleep")?;
        let a = switches(self.pid);
        let sa = switches(spid);
        std::thread::sleep(o.window);
        let b = switches(self.pid);
        let sb = switches(spid);
        let mut by_thread = Vec::new();
        let mut wakeups = 0;
        for (tid, (comm, vol, inv)) in &b {
            let (v0, i0) = a.get(tid).map_or((0, 0), |(_, v, i)| (*v, *i));
            let (dv, di) = (vol.saturating_sub(v0), inv.saturating_sub(i0));
            wakeups += dv + di;
            if dv + di > 0 {
                by_thread.push((comm.clone(), *tid, dv, di));
            }
        }
        let total =
            |m: &BTreeMap<u32, (String, u64, u64)>| m.values().map(|(_, v, i)| v + i).sum::<u64>();
        let threads = b.values().map(|(c, _, _)| c.clone()).collect();
        let idle = Idle {
            rss,
            sleep_rss,
            wakeups,
            sleep_wakeups: total(&sb).saturating_sub(total(&sa)),
            by_thread,
            threads,
            fds: fd_count(self.pid),
        };
        let _ = self.procs.kill("sleep");
        Ok(idle)
    }

    /// Stops everything (forced) so that nothing is left running.
    fn finish(&mut self) {
        self.lcs.drain();
        if self
            .send(Body::AcrndStop {
                force: 1,
                timeout: 5,
                target: StopTarget::S5,
            })
            .is_ok()
        {
            let _ = self.lcs.report();
            let _ = self.wait_all(vm_state::STOPPED, false);
        }
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn run_size(n: usize, o: &Opts, echo: &Echo, raw: &mut Vec<u64>) -> SizeResult {
    let mut r = SizeResult {
        n,
        ..SizeResult::default()
    };
    let t = Instant::now();
    let mut suite = match Suite::start(n) {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("start: {e}"));
            return r;
        }
    };
    println!(
        "{n} VM(s): acrnd up and {n} VM(s) started in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    r.nofile = nofile_of(suite.pid);
    if o.idle_sizes.contains(&n) {
        match suite.idle(o) {
            Ok(i) => r.idle = Some(i),
            Err(e) => r.error = Some(format!("idle: {e}")),
        }
    }
    let cycles = if n >= 64 {
        o.stop_cycles_big
    } else {
        o.stop_cycles
    };
    for c in 0..cycles {
        if r.error.is_some() {
            break;
        }
        raw.extend((0..RAW_PER_CYCLE).map(|_| echo.round_trip()));
        match suite.stop_cycle() {
            Ok(s) => {
                println!(
                    "  stop {c}: {} (acked {}, last DM_STOP sent {}, VM stopped: median {}, last {}; stop_all.done {})",
                    ms(s.total),
                    ms(s.ack),
                    ms(s.sent),
                    ms(s.stopped_p50),
                    ms(s.stopped),
                    ms(s.done)
                );
                r.stop.push(s);
            }
            Err(e) => r.error = Some(format!("stop cycle {c}: {e}")),
        }
    }
    for c in 0..o.resume_cycles {
        if r.error.is_some() {
            break;
        }
        raw.extend((0..RAW_PER_CYCLE).map(|_| echo.round_trip()));
        match suite.resume_cycle() {
            Ok(s) => {
                println!(
                    "  resume {c}: reported started {} (WAKEUP_REASON {}, DM_RESUME acked {}, DM_NOTIFY 0 {}); S3 stop-all {}",
                    ms(s.reported),
                    ms(s.reason),
                    ms(s.acked),
                    ms(s.notified),
                    ms(s.suspend)
                );
                r.resume.push(s);
            }
            Err(e) => r.error = Some(format!("resume cycle {c}: {e}")),
        }
    }
    if r.idle.is_some() {
        r.rss_after = rss_of(suite.pid);
    }
    let stderr = suite.procs.stderr("acrnd");
    r.emfile = stderr
        .lines()
        .filter(|l| l.contains("Too many open files") || l.contains("os error 24"))
        .count();
    suite.finish();
    if let Some(e) = &r.error {
        println!("  ERROR: {e}");
    }
    r
}

// ---------------------------------------------------------------------------------------
// Statistics and the table.

fn ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

fn us(ns: u64) -> String {
    format!("{:.1} us", ns as f64 / 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

fn ratio(a: u64, b: u64) -> String {
    if b > 0 {
        format!("{:.0}x", a as f64 / b as f64)
    } else {
        "-".into()
    }
}

struct Row {
    what: String,
    measured: String,
    target: String,
    pass: Option<bool>,
    baseline: String,
    ratio: String,
}

fn lat_rows(rows: &mut Vec<Row>, what: &str, v: &[u64], target: Option<u64>, raw: u64) {
    let (Some(p50), Some(max)) = (pct(v, 50), pct(v, 100)) else {
        rows.push(Row {
            what: what.to_owned(),
            measured: "no samples".into(),
            target: target.map_or_else(|| "info".into(), |t| format!("<= {}", ms(t))),
            pass: target.map(|_| false),
            baseline: "-".into(),
            ratio: "-".into(),
        });
        return;
    };
    rows.push(Row {
        what: format!("{what} p50"),
        measured: ms(p50),
        target: target.map_or_else(|| "info".into(), |t| format!("<= {}", ms(t))),
        pass: target.map(|t| p50 <= t),
        baseline: us(raw),
        ratio: ratio(p50, raw),
    });
    rows.push(Row {
        what: format!("{what} max"),
        measured: ms(max),
        target: "info".into(),
        pass: None,
        baseline: "-".into(),
        ratio: "-".into(),
    });
}

fn info(what: String, measured: String) -> Row {
    Row {
        what,
        measured,
        target: "info".into(),
        pass: None,
        baseline: "-".into(),
        ratio: "-".into(),
    }
}

fn stop_target(n: usize) -> Option<u64> {
    let guest = GUEST_DELAY_MS * 1_000_000;
    match n {
        8 => Some(guest + 50_000_000),
        64 => Some(guest + 250_000_000),
        _ => None,
    }
}

#[allow(clippy::too_many_lines)]
fn summarize(results: &[SizeResult], raw: &[u64], window: Duration) -> bool {
    let raw50 = pct(raw, 50).unwrap_or(0);
    let mut rows = Vec::new();
    for r in results {
        let n = r.n;
        let col = |f: fn(&StopSample) -> u64| r.stop.iter().map(f).collect::<Vec<u64>>();
        lat_rows(
            &mut rows,
            &format!("1 [{n:>2} VM] stop-all->SHUTDOWN"),
            &col(|s| s.total),
            stop_target(n),
            raw50,
        );
        let p = |v: Vec<u64>| pct(&v, 50).map_or_else(|| "-".into(), ms);
        rows.push(info(
            format!("1 [{n:>2} VM]   ACRND_STOP acked p50"),
            p(col(|s| s.ack)),
        ));
        rows.push(info(
            format!("1 [{n:>2} VM]   last DM_STOP sent p50"),
            p(col(|s| s.sent)),
        ));
        rows.push(info(
            format!("1 [{n:>2} VM]   last VM stopped p50"),
            p(col(|s| s.stopped)),
        ));
        rows.push(info(
            format!("1 [{n:>2} VM]   stop_all.done p50"),
            p(col(|s| s.done)),
        ));
        let rcol = |f: fn(&ResumeSample) -> u64| r.resume.iter().map(f).collect::<Vec<u64>>();
        let resume_target = (n == 8).then_some(GUEST_DELAY_MS * 1_000_000 + 50_000_000);
        lat_rows(
            &mut rows,
            &format!("2 [{n:>2} VM] resume->all started"),
            &rcol(|s| s.reported),
            resume_target,
            raw50,
        );
        lat_rows(
            &mut rows,
            &format!("2 [{n:>2} VM] resume->all DM_NOTIFY 0"),
            &rcol(|s| s.notified),
            resume_target,
            raw50,
        );
        rows.push(info(
            format!("2 [{n:>2} VM]   WAKEUP_REASON asked p50"),
            p(rcol(|s| s.reason)),
        ));
        rows.push(info(
            format!("2 [{n:>2} VM]   last DM_RESUME acked p50"),
            p(rcol(|s| s.acked)),
        ));
        rows.push(info(
            format!("2 [{n:>2} VM] S3 stop-all->SUSPEND p50"),
            p(rcol(|s| s.suspend)),
        ));
        if let Some(i) = &r.idle {
            let target = (n == 8).then_some(4 * 1024);
            rows.push(Row {
                what: format!("3 [{n:>2} VM] VmRSS idle"),
                measured: mib(i.rss.total),
                target: target.map_or_else(|| "info".into(), |t| format!("<= {}", mib(t))),
                pass: target.map(|t| i.rss.total <= t),
                baseline: mib(i.sleep_rss.total),
                ratio: format!(
                    "{:.2}x",
                    i.rss.total as f64 / i.sleep_rss.total.max(1) as f64
                ),
            });
            for (what, v, b) in [
                ("RssAnon", i.rss.anon, i.sleep_rss.anon),
                ("RssFile", i.rss.file, i.sleep_rss.file),
                ("RssFile: own executable", i.rss.exe, i.sleep_rss.exe),
            ] {
                let mut row = info(format!("3 [{n:>2} VM]   {what}"), mib(v));
                row.baseline = mib(b);
                rows.push(row);
            }
            if let Some(after) = r.rss_after {
                rows.push(info(
                    format!("3 [{n:>2} VM] VmRSS after the cycles"),
                    mib(after.total),
                ));
                rows.push(info(
                    format!("3 [{n:>2} VM]   RssAnon after the cycles"),
                    mib(after.anon),
                ));
            }
            rows.push(Row {
                what: format!(
                    "4 [{n:>2} VM] idle wake-ups in {:.0} s",
                    window.as_secs_f64()
                ),
                measured: format!("{}", i.wakeups),
                target: if n == 8 { "0".into() } else { "info".into() },
                pass: (n == 8).then_some(i.wakeups == 0),
                baseline: format!("{}", i.sleep_wakeups),
                ratio: "-".into(),
            });
            rows.push(info(
                format!("4 [{n:>2} VM] acrnd threads / fds idle"),
                format!("{} / {}", i.threads.len(), i.fds),
            ));
        }
        rows.push(info(
            format!("  [{n:>2} VM] RLIMIT_NOFILE / EMFILE lines"),
            format!("{} / {}", r.nofile, r.emfile),
        ));
        if let Some(e) = &r.error {
            rows.push(Row {
                what: format!("  [{n:>2} VM] run completed"),
                measured: "ERROR".into(),
                target: "no error".into(),
                pass: Some(false),
                baseline: "-".into(),
                ratio: "-".into(),
            });
            println!("{n} VM(s) error: {e}");
        }
    }
    rows.push(Row {
        what: "baseline raw connect+280 B RTT p50".into(),
        measured: us(raw50),
        target: "info".into(),
        pass: None,
        baseline: format!("n={}", raw.len()),
        ratio: "-".into(),
    });
    println!();
    for r in results {
        if let Some(i) = &r.idle {
            println!("{} VM(s): acrnd threads {:?}", r.n, i.threads);
            for (comm, tid, v, inv) in &i.by_thread {
                println!("  thread {comm:?} (tid {tid}) woke: {v} voluntary, {inv} involuntary");
            }
        }
    }
    println!();
    println!(
        "{:<40} {:>12} {:>12}  {:<6} {:>11} {:>6}",
        "figure", "measured", "target", "result", "baseline", "ratio"
    );
    let mut all = true;
    for row in &rows {
        let result = match row.pass {
            Some(true) => "PASS",
            Some(false) => {
                all = false;
                "FAIL"
            }
            None => "-",
        };
        println!(
            "{:<40} {:>12} {:>12}  {result:<6} {:>11} {:>6}",
            row.what, row.measured, row.target, row.baseline, row.ratio
        );
    }
    all
}

// ---------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("acrnd bench: not run without --bench (use `cargo bench -p acrnd --bench acrnd`)");
        return ExitCode::SUCCESS;
    }
    let quick = args.iter().any(|a| a == "--quick") || env_is_1("BENCH_QUICK");
    let strict = env_is_1("BENCH_STRICT");
    let o = if quick {
        Opts {
            sizes: vec![1, 8],
            stop_cycles: 2,
            stop_cycles_big: 1,
            resume_cycles: 2,
            settle: Duration::from_millis(500),
            window: Duration::from_secs(1),
            idle_sizes: vec![8],
            quick,
        }
    } else {
        Opts {
            sizes: vec![1, 8, 64],
            stop_cycles: 10,
            stop_cycles_big: 10,
            resume_cycles: 10,
            settle: Duration::from_secs(2),
            window: Duration::from_secs(5),
            idle_sizes: vec![8, 64],
            quick,
        }
    };
    println!("acrnd: stop-all and resume latency, memory and idle wake-ups with acrn-dm-sim VMs");
    print_machine();
    println!("RLIMIT_NOFILE: {}", raise_nofile(NOFILE));
    println!(
        "counts: sizes {:?}, {} stop-all cycles ({} at 64), {} resume cycles, guests {GUEST_DELAY_MS} ms, heartbeat {HEARTBEAT_MS} ms{}",
        o.sizes,
        o.stop_cycles,
        o.stop_cycles_big,
        o.resume_cycles,
        if o.quick { " (quick)" } else { "" }
    );
    let started = Instant::now();
    let base_dir = TestDir::new("acrnd-bench-raw");
    let echo = Echo::start(base_dir.join("echo.socket"));
    let mut raw = Vec::new();
    let results: Vec<SizeResult> = o
        .sizes
        .iter()
        .map(|&n| run_size(n, &o, &echo, &mut raw))
        .collect();
    drop(echo);
    let all = summarize(&results, &raw, o.window);
    println!(
        "\nwall time {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    if !all && strict {
        println!("a target FAILED and BENCH_STRICT=1: exiting with status 1");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
