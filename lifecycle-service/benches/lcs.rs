//! Timing and memory of `sos-lcs` as a real process, against in-bench baselines.
//!
//! Run with `cargo bench -p lifecycle-service --bench lcs` (release build). Options after
//! `--`: `--period-ms N` sets the heartbeat period under test (default 250 ms, 100 ms in a
//! quick run); `--quick` (or `BENCH_QUICK=1`) is a smoke run with small counts, as is a
//! run without `--bench` (`cargo test --all-targets`). `BENCH_STRICT=1` makes a failed
//! target exit with status 1; otherwise the bench only reports. `LCS_BENCH_BIN=PATH` measures
//! another build of sos-lcs (same command line) instead of this package's. Method and
//! recorded figures: `BENCHMARKS.md` at the workspace root.
//!
//! The bench plays the IOC on the master of a pty whose slave is symlinked where sos-lcs
//! expects its line (cdev mode: bare 4-byte frames), and acrnd as an in-process mngr-ipc
//! server. A reader thread per pty master timestamps every read right after it returns.
//!
//! 1. Heartbeat period accuracy, alive, idle and then with 8 client threads sending
//!    WAKEUP_REASON as fast as they can (one connection per request). Deviation of beat
//!    `n` = arrival(n) − (arrival(0) + n × period). Baseline: an in-bench thread writing a
//!    frame to a second pty every period on absolute deadlines, read the same way, over the
//!    same time windows.
//! 2. IOC shutdown request (`01 00 00 c0`) written → ACRND_STOP seen by the test acrnd's
//!    handler. Baseline: a raw Unix-socket connect + 280-byte echo round trip.
//! 3. SHUTDOWN {err: 0} sent to sos-lcs in SHUTDOWN_DELAY → S5 heartbeat read on the line.
//! 4. Exec of sos-lcs → its first (init) heartbeat read on the line. Baseline: exec of
//!    `/bin/true` until it has exited.
//! 5. VmRSS of sos-lcs idle and alive for ~2 s. Baseline: VmRSS of `sleep 30`.

use acrn_tests::echo::EchoServer;
use acrn_tests::measure::{
    Beats, Rss, analyze_beats, env_is_1, load_average, print_machine, rss_of,
};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use acrn_tests::{Procs, TestDir};
use mngr_ipc::client::Client;
use mngr_ipc::msg::{AckPayload, Body, MsgId, Request};
use mngr_ipc::server::{Access, Handlers, ServerConfig, ServerThread, spawn_server};
use mngr_ipc::{MSG_LEN, Profile};
use serialport::{SerialPort, TTYPort};

/// Heartbeats sos-lcs sends (service frames, cdev mode).
const HB_INIT: [u8; 4] = [0x02, 0x03, 0x00, 0x00];
const HB_ACTIVE: [u8; 4] = [0x02, 0x01, 0x00, 0x00];
const HB_DELAY: [u8; 4] = [0x02, 0x02, 0x00, 0x00];
const HB_S5: [u8; 4] = [0x02, 0x00, 0x01, 0x00];
/// Wakeup reasons the bench sends as the IOC.
const WR_BUTTON: [u8; 4] = [0x01, 0x20, 0x00, 0x00];
const WR_FORCE_S5: [u8; 4] = [0x01, 0x00, 0x00, 0xc0];
const WR_ZERO: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
/// What the baseline timer writes.
const BASE_FRAME: [u8; 4] = [0x7e, 0x00, 0x00, 0x00];

/// Bound of every single wait of the bench.
const WAIT: Duration = Duration::from_secs(10);
/// Timeout of each IPC request the bench makes.
const IPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Client threads of the loaded heartbeat window.
const LOAD_CLIENTS: usize = 8;
/// Raw-socket round trips per cycle of figure 2 (the baseline, interleaved).
const RAW_PER_CYCLE: usize = 10;

/// A frame read on a pty master and the instant the read returned.
type Stamped = (Instant, [u8; 4]);

/// Counts and settings of one run.
#[derive(Debug, Clone, Copy)]
struct Opts {
    period: Duration,
    /// Periods per heartbeat window (beats 0..=beats are read).
    beats: usize,
    /// Cycles of figures 2 and 3.
    cycles: usize,
    /// Spawns of figure 4.
    spawns: usize,
    quick: bool,
}

// ---------------------------------------------------------------------------------------
// The IOC's side of a pty.

/// A pty pair: the master read by a thread that timestamps each read; the slave kept open
/// (so the master never sees a hang-up while sos-lcs restarts), optionally symlinked.
#[derive(Debug)]
struct Pty {
    master: TTYPort,
    slave: TTYPort,
    rx: Receiver<Stamped>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Pty {
    fn new(link: Option<&Path>) -> Self {
        let (master, slave) = TTYPort::pair().expect("pty pair");
        if let Some(link) = link {
            let name = slave.name().expect("slave name");
            std::os::unix::fs::symlink(name, link).expect("symlink to the pty slave");
        }
        let mut reader = master.try_clone_native().expect("clone the pty master");
        reader
            .set_timeout(Duration::from_millis(50))
            .expect("read timeout");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let reader = std::thread::Builder::new()
            .name("pty-reader".into())
            .spawn(move || {
                let mut buf = [0u8; 256];
                let mut pending: Vec<u8> = Vec::new();
                while !flag.load(Ordering::Acquire) {
                    // `read` is ppoll (bounded) + read; the stamp is taken as it returns.
                    match reader.read(&mut buf) {
                        Ok(n) => {
                            let t = Instant::now();
                            pending.extend_from_slice(&buf[..n]);
                            while pending.len() >= 4 {
                                let f: [u8; 4] = pending[..4].try_into().expect("4 bytes");
                                pending.drain(..4);
                                if tx.send((t, f)).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                            ) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
            .expect("spawn a pty reader");
        Pty {
            master,
            slave,
            rx,
            stop,
            reader: Some(reader),
        }
    }

    /// Writes `bytes` as the IOC.
    fn send(&mut self, bytes: &[u8]) {
        self.master
            .write_all(bytes)
            .expect("write to the pty master");
    }

    /// Forgets what was read so far.
    fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// Everything read so far.
    fn take(&self) -> Vec<Stamped> {
        self.rx.try_iter().collect()
    }

    fn next(&self, timeout: Duration) -> Option<Stamped> {
        match self.rx.recv_timeout(timeout) {
            Ok(s) => Some(s),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("pty reader stopped"),
        }
    }

    /// The arrival of the next `want` frame, skipping others; panics after `WAIT`.
    fn wait_frame(&self, want: [u8; 4], what: &str) -> Instant {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some((t, f)) if f == want => return t,
                Some((_, f)) => {
                    if seen.len() < 16 {
                        seen.push(f);
                    }
                }
                None => panic!("{what}: no frame {want:02x?} within {WAIT:?}; saw {seen:02x?}"),
            }
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The test acrnd.

/// An in-process `acrnd` acking everything and reporting, with the instant its handler
/// ran, what sos-lcs sent it.
struct Acrnd {
    _server: ServerThread,
    rx: Receiver<(Instant, Body)>,
}

impl Acrnd {
    fn start(dir: &Path) -> Self {
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        let h = Handlers::new()
            .on(MsgId::AcrndStop, Access::Open, move |r, c, _: &mut ()| {
                let t = Instant::now();
                let _ = tx.send((t, r.body.clone()));
                c.ack(AckPayload::Err(0))
            })
            .on(MsgId::AcrndResume, Access::Open, move |r, c, _: &mut ()| {
                let t = Instant::now();
                let _ = tx2.send((t, r.body.clone()));
                c.ack(AckPayload::Err(0))
            });
        let server = spawn_server(ServerConfig::new("acrnd", dir), h, ()).expect("test acrnd");
        Acrnd {
            _server: server,
            rx,
        }
    }

    fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// When the handler saw the next request matching `want`; panics after `WAIT`.
    fn wait(&self, want: fn(&Body) -> bool, what: &str) -> Instant {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, b)) if want(&b) => return t,
                Ok(_) => {}
                Err(_) => panic!("{what}: not received by the test acrnd within {WAIT:?}"),
            }
        }
    }
}

fn is_stop(b: &Body) -> bool {
    matches!(b, Body::AcrndStop { .. })
}

fn is_resume(b: &Body) -> bool {
    matches!(b, Body::AcrndResume { .. })
}

// ---------------------------------------------------------------------------------------
// sos-lcs.

/// The sos-lcs under test: this package's, or another build named by `LCS_BENCH_BIN`.
fn lcs_bin() -> PathBuf {
    std::env::var_os("LCS_BENCH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_sos-lcs")),
        PathBuf::from,
    )
}

fn lcs_command(line: &Path, sock: &Path, period: Duration) -> Command {
    let mut cmd = Command::new(lcs_bin());
    cmd.arg("--line")
        .arg(line)
        .arg("--socket-dir")
        .arg(sock)
        .arg("--heartbeat-ms")
        .arg(period.as_millis().to_string())
        // A failing power command sends the machine back to DEFAULT: the way back from S5.
        .args(["--poweroff-cmd", "false"])
        .args(["--reboot-cmd", "false"])
        .args(["--suspend-cmd", "false"])
        .args(["--intent-cmd", "true"]);
    // Production logging (info, to the stderr file Procs keeps), no systemd.
    cmd.env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC");
    cmd
}

/// The IOC says "button": sos-lcs goes alive (ACRND_RESUME, active heartbeat).
fn make_alive(ioc: &mut Pty, acrnd: &Acrnd, what: &str) {
    ioc.send(&WR_BUTTON);
    acrnd.wait(is_resume, &format!("{what}: ACRND_RESUME"));
    ioc.wait_frame(HB_ACTIVE, &format!("{what}: active heartbeat"));
}

/// The machine-wide CPU counters of `/proc/stat` (USER_HZ ticks).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    total: u64,
    idle: u64,
    steal: u64,
}

impl Cpu {
    fn now() -> Self {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
            return Cpu::default();
        };
        let v: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        Cpu {
            // user nice system idle iowait irq softirq steal (guest time is in user).
            total: (0..8).map(at).sum(),
            idle: at(3) + at(4),
            steal: at(7),
        }
    }

    /// "busy x %, steal y %" of all CPUs since `self`.
    fn since(self) -> String {
        let n = Cpu::now();
        let total = n.total.saturating_sub(self.total).max(1) as f64;
        let busy = total - n.idle.saturating_sub(self.idle) as f64;
        let steal = n.steal.saturating_sub(self.steal) as f64;
        format!(
            "CPUs busy {:.0} %, steal {:.1} %",
            100.0 * busy / total,
            100.0 * steal / total
        )
    }
}

// ---------------------------------------------------------------------------------------
// Statistics.

/// The deviations of `arrivals` from the grid `arrivals[0] + n × period`
/// ([`analyze_beats`]).
fn analyze(arrivals: &[Instant], period: Duration) -> Beats {
    let ns: Vec<u64> = arrivals
        .first()
        .map(|&t0| {
            arrivals
                .iter()
                .map(|t| u64::try_from(t.duration_since(t0).as_nanos()).unwrap_or(u64::MAX))
                .collect()
        })
        .unwrap_or_default();
    analyze_beats(&ns, u64::try_from(period.as_nanos()).unwrap_or(u64::MAX))
}

/// Latency samples of one figure.
#[derive(Debug, Clone)]
struct Lat {
    sorted: Vec<Duration>,
}

impl Lat {
    fn new(mut v: Vec<Duration>) -> Self {
        assert!(!v.is_empty(), "no samples");
        v.sort_unstable();
        Lat { sorted: v }
    }

    /// Nearest-rank percentile: the sample at rank ⌈p/100 · n⌉.
    fn pct(&self, p: usize) -> Duration {
        let rank = (p * self.sorted.len()).div_ceil(100).max(1);
        self.sorted[rank - 1]
    }

    fn p50(&self) -> Duration {
        self.pct(50)
    }

    fn max(&self) -> Duration {
        self.sorted[self.sorted.len() - 1]
    }

    fn min(&self) -> Duration {
        self.sorted[0]
    }

    fn summary(&self) -> String {
        format!(
            "n={} min {} p50 {} p90 {} max {}",
            self.sorted.len(),
            fmt_d(self.min()),
            fmt_d(self.p50()),
            fmt_d(self.pct(90)),
            fmt_d(self.max())
        )
    }
}

fn fmt_d(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} us")
    }
}

fn fmt_us(us: f64) -> String {
    if us.abs() >= 1000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} us")
    }
}

/// A pause spreading the cycles over the heartbeat phase (golden-ratio steps).
fn spread(i: usize, period: Duration) -> Duration {
    let frac = (i as f64 * 0.618_034).fract();
    period.min(Duration::from_millis(250)).mul_f64(frac)
}

// ---------------------------------------------------------------------------------------
// Baselines.

/// Writes `BASE_FRAME` to `slave` at start + n × period (absolute deadlines) until stopped.
fn baseline_timer(mut slave: TTYPort, start: Instant, period: Duration, stop: Arc<AtomicBool>) {
    let mut n: u32 = 0;
    while !stop.load(Ordering::Acquire) {
        let deadline = start + period.saturating_mul(n);
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        if slave.write_all(&BASE_FRAME).is_err() {
            return;
        }
        n = n.saturating_add(1);
    }
}

// ---------------------------------------------------------------------------------------
// The run.

#[derive(Debug)]
struct Results {
    idle: Beats,
    load: Beats,
    base_idle: Beats,
    base_load: Beats,
    load_requests: u64,
    load_errors: u64,
    load_secs: f64,
    stop_lat: Lat,
    raw_lat: Lat,
    s5_lat: Lat,
    exec_lat: Lat,
    true_lat: Lat,
    rss: Rss,
    rss_after_load_kib: u64,
    sleep_rss: Rss,
}

/// Reads `beats + 1` active heartbeats; runs `at_2s` once 2 s after `since`.
fn heartbeat_window(
    ioc: &Pty,
    beats: usize,
    since: Instant,
    mut at_2s: impl FnMut(),
) -> Vec<Instant> {
    let mut arrivals = Vec::with_capacity(beats + 1);
    let mut other = 0usize;
    let mut fired = false;
    while arrivals.len() < beats + 1 {
        let (t, f) = ioc
            .next(WAIT)
            .unwrap_or_else(|| panic!("no heartbeat within {WAIT:?}"));
        if f == HB_ACTIVE {
            arrivals.push(t);
        } else {
            other += 1;
        }
        if !fired && since.elapsed() >= Duration::from_secs(2) {
            fired = true;
            at_2s();
        }
    }
    if other > 0 {
        println!("  note: {other} frame(s) other than the active heartbeat in the window");
    }
    arrivals
}

/// The baseline frames read in `[from, to]`.
fn baseline_in(base: &Pty, from: Instant, to: Instant) -> Vec<Instant> {
    base.take()
        .into_iter()
        .filter(|(t, f)| *f == BASE_FRAME && *t >= from && *t <= to)
        .map(|(t, _)| t)
        .collect()
}

fn print_beats(label: &str, b: &Beats) {
    println!(
        "  {label:<16} frames {:>3} over {:>3} periods, missing {}, |dev| median {} p95 {} max {}, max about the median {}, slope {:+.2} us/beat",
        b.frames,
        b.periods,
        b.missing,
        fmt_us(b.median_abs),
        fmt_us(b.p95_abs),
        fmt_us(b.max_abs),
        fmt_us(b.spread),
        b.slope
    );
    let devs: Vec<String> = b.devs.iter().map(|d| format!("{:.0}", d.1)).collect();
    println!("    dev us: {}", devs.join(" "));
}

#[allow(clippy::too_many_lines)]
fn run(o: Opts) -> Results {
    // Declared before the Procs guards so that it outlives them.
    let dir = TestDir::new("lcs-bench");
    let mut procs = Procs::new(dir.path());
    let sock = dir.join("mngr");
    let line = dir.join("cbc-lifecycle");
    let acrnd = Acrnd::start(&sock);
    let mut ioc = Pty::new(Some(&line));
    let base = Pty::new(None);

    // RSS baseline, started alongside.
    let mut sleep = Command::new("sleep");
    sleep.arg("30");
    let sleep_pid = procs.spawn("sleep", sleep).expect("spawn sleep");

    let lcs_pid = procs
        .spawn("sos-lcs", lcs_command(&line, &sock, o.period))
        .expect("spawn sos-lcs");
    ioc.wait_frame(HB_INIT, "sos-lcs start");
    make_alive(&mut ioc, &acrnd, "start");
    let alive_at = Instant::now();
    println!(
        "sos-lcs {} (pid {lcs_pid}) alive; period {:?}",
        lcs_bin().display(),
        o.period
    );

    // The baseline timer, half a period off sos-lcs' grid so that the two pipelines do not
    // wake at the same instant.
    let base_stop = Arc::new(AtomicBool::new(false));
    let base_thread = {
        let slave = base
            .slave
            .try_clone_native()
            .expect("clone the baseline slave");
        let stop = Arc::clone(&base_stop);
        let start = Instant::now() + o.period / 2;
        let period = o.period;
        std::thread::Builder::new()
            .name("base-timer".into())
            .spawn(move || baseline_timer(slave, start, period, stop))
            .expect("spawn the baseline timer")
    };

    // ---- 1. heartbeats, idle.
    println!("\n[1] heartbeat period, {} periods per window", o.beats);
    // Skip the beat the transition sent off the grid and one periodic beat.
    ioc.wait_frame(HB_ACTIVE, "warm-up beat");
    ioc.drain();
    base.drain();
    let mut rss = None;
    let mut sleep_rss = None;
    let from = Instant::now();
    let cpu = Cpu::now();
    let idle_arr = heartbeat_window(&ioc, o.beats, alive_at, || {
        rss = rss_of(lcs_pid);
        sleep_rss = rss_of(sleep_pid);
    });
    let to = Instant::now();
    let idle_cpu = cpu.since();
    if rss.is_none() {
        // A window shorter than 2 s (quick runs): wait for the 2 s.
        let left = Duration::from_secs(2).saturating_sub(alive_at.elapsed());
        std::thread::sleep(left);
        rss = rss_of(lcs_pid);
        sleep_rss = rss_of(sleep_pid);
    }
    let base_idle_arr = baseline_in(&base, from, to);
    let idle = analyze(&idle_arr, o.period);
    let base_idle = analyze(&base_idle_arr, o.period);
    println!("  idle window: {idle_cpu} (machine-wide; the load of other work)");
    print_beats("sos-lcs idle", &idle);
    print_beats("baseline idle", &base_idle);

    // ---- 1. heartbeats, under load.
    let load_stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let load_start = Instant::now();
    let clients: Vec<JoinHandle<()>> = (0..LOAD_CLIENTS)
        .map(|i| {
            let client = Client::new(&sock, Profile::F);
            let stop = Arc::clone(&load_stop);
            let requests = Arc::clone(&requests);
            let errors = Arc::clone(&errors);
            std::thread::Builder::new()
                .name(format!("load-{i}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let r =
                            client.send("sos-lcs", &Request::now(Body::WakeupReason), IPC_TIMEOUT);
                        requests.fetch_add(1, Ordering::Relaxed);
                        if !matches!(r, Ok(ref a) if a.payload == AckPayload::Reason(0x20)) {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .expect("spawn a load client")
        })
        .collect();
    // Let the load settle for a period.
    std::thread::sleep(o.period);
    ioc.drain();
    base.drain();
    let from = Instant::now();
    let cpu = Cpu::now();
    let load_arr = heartbeat_window(&ioc, o.beats, alive_at, || {});
    let to = Instant::now();
    let load_cpu = cpu.since();
    load_stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("load client panicked");
    }
    let load_secs = load_start.elapsed().as_secs_f64();
    let base_load_arr = baseline_in(&base, from, to);
    base_stop.store(true, Ordering::Release);
    base_thread.join().expect("baseline timer panicked");
    let load = analyze(&load_arr, o.period);
    let base_load = analyze(&base_load_arr, o.period);
    println!("  loaded window: {load_cpu}");
    print_beats("sos-lcs loaded", &load);
    print_beats("baseline loaded", &base_load);
    let load_requests = requests.load(Ordering::Relaxed);
    let load_errors = errors.load(Ordering::Relaxed);
    println!(
        "  load: {LOAD_CLIENTS} clients, {load_requests} WAKEUP_REASON requests in {load_secs:.1} s ({:.0}/s), {load_errors} errors",
        load_requests as f64 / load_secs
    );
    let rss_after_load = rss_of(lcs_pid).map_or(0, |r| r.total);

    // ---- 2. shutdown request → ACRND_STOP.
    println!(
        "\n[2] shutdown request -> ACRND_STOP, {} cycles (+ {RAW_PER_CYCLE} raw round trips each)",
        o.cycles
    );
    let client = Client::new(&sock, Profile::F);
    let echo = EchoServer::start(dir.join("echo.socket"), MSG_LEN);
    let wire = Profile::F
        .encode_request(&Request::now(Body::DmQuery))
        .expect("encode a request");
    let mut stop_samples = Vec::new();
    let mut raw_samples = Vec::new();
    for i in 0..o.cycles {
        std::thread::sleep(spread(i, o.period));
        ioc.drain();
        acrnd.drain();
        let t0 = Instant::now();
        ioc.send(&WR_FORCE_S5);
        let t1 = acrnd.wait(is_stop, "ACRND_STOP");
        stop_samples.push(t1.duration_since(t0));
        ioc.wait_frame(HB_DELAY, "shutdown-delay heartbeat");
        // acrnd refuses: back to DEFAULT, then alive again.
        let ack = client
            .send(
                "sos-lcs",
                &Request::now(Body::Suspend { err: -1 }),
                IPC_TIMEOUT,
            )
            .expect("SUSPEND acked");
        assert_eq!(ack.err(), Some(0), "refusal taken");
        ioc.wait_frame(HB_INIT, "init heartbeat after the refusal");
        make_alive(&mut ioc, &acrnd, "after the refusal");
        for _ in 0..RAW_PER_CYCLE {
            raw_samples.push(echo.round_trip(&wire));
        }
    }
    drop(echo);
    let stop_lat = Lat::new(stop_samples);
    let raw_lat = Lat::new(raw_samples);
    println!("  sos-lcs     {}", stop_lat.summary());
    println!("  raw socket  {}", raw_lat.summary());

    // ---- 3. SHUTDOWN → S5 heartbeat.
    println!("\n[3] SHUTDOWN -> S5 heartbeat, {} cycles", o.cycles);
    let mut s5_samples = Vec::new();
    for i in 0..o.cycles {
        ioc.drain();
        acrnd.drain();
        ioc.send(&WR_FORCE_S5);
        acrnd.wait(is_stop, "ACRND_STOP");
        ioc.wait_frame(HB_DELAY, "shutdown-delay heartbeat");
        std::thread::sleep(spread(i, o.period));
        ioc.drain();
        let t0 = Instant::now();
        let ack = client
            .send(
                "sos-lcs",
                &Request::now(Body::Shutdown { err: 0 }),
                IPC_TIMEOUT,
            )
            .expect("SHUTDOWN acked");
        let t1 = ioc.wait_frame(HB_S5, "S5 heartbeat");
        assert_eq!(ack.err(), Some(0), "SHUTDOWN taken");
        s5_samples.push(t1.duration_since(t0));
        // The IOC confirms; the power-off command (`false`) fails: back to DEFAULT.
        ioc.send(&WR_ZERO);
        ioc.wait_frame(HB_INIT, "init heartbeat after the failed power-off");
        make_alive(&mut ioc, &acrnd, "after the failed power-off");
    }
    let s5_lat = Lat::new(s5_samples);
    println!("  sos-lcs     {}", s5_lat.summary());
    procs.kill("sos-lcs").expect("sos-lcs reaped");
    procs.kill("sleep").expect("sleep reaped");

    // ---- 4. exec → first heartbeat.
    println!(
        "\n[4] exec -> first heartbeat, {} spawns (interleaved with /bin/true)",
        o.spawns
    );
    let line2 = dir.join("cbc-lifecycle-2");
    let ioc2 = Pty::new(Some(&line2));
    let mut exec_samples = Vec::new();
    let mut true_samples = Vec::new();
    for i in 0..o.spawns {
        // A fresh socket directory, as at boot.
        let sock_i = dir.join(format!("mngr-{i}"));
        let label = format!("exec-{i}");
        let cmd = lcs_command(&line2, &sock_i, o.period);
        ioc2.drain();
        let t0 = Instant::now();
        procs.spawn(&label, cmd).expect("spawn sos-lcs");
        let t1 = ioc2.wait_frame(HB_INIT, "first heartbeat");
        exec_samples.push(t1.duration_since(t0));
        procs.kill(&label).expect("sos-lcs reaped");

        let mut t = Command::new("/bin/true");
        t.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let t0 = Instant::now();
        let st = t.status().expect("run /bin/true");
        true_samples.push(t0.elapsed());
        assert!(st.success(), "/bin/true failed");
    }
    let exec_lat = Lat::new(exec_samples);
    let true_lat = Lat::new(true_samples);
    println!("  sos-lcs     {}", exec_lat.summary());
    println!("  /bin/true   {}", true_lat.summary());

    // ---- 5. RSS (read during the idle window).
    let rss = rss.expect("VmRSS of sos-lcs");
    let sleep_rss = sleep_rss.expect("VmRSS of sleep");
    println!(
        "\n[5] VmRSS after ~2 s alive and idle: sos-lcs {} kB (anon {}, file {}; after the load: {rss_after_load} kB), sleep {} kB (anon {}, file {})",
        rss.total, rss.anon, rss.file, sleep_rss.total, sleep_rss.anon, sleep_rss.file
    );

    Results {
        idle,
        load,
        base_idle,
        base_load,
        load_requests,
        load_errors,
        load_secs,
        stop_lat,
        raw_lat,
        s5_lat,
        exec_lat,
        true_lat,
        rss,
        rss_after_load_kib: rss_after_load,
        sleep_rss,
    }
}

// ---------------------------------------------------------------------------------------
// Report.

/// One line of the summary table.
struct Row {
    what: &'static str,
    measured: String,
    target: &'static str,
    /// `None`: information only.
    pass: Option<bool>,
    baseline: String,
    ratio: String,
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[allow(clippy::too_many_lines)]
fn summarize(r: &Results) -> bool {
    let rows = [
        Row {
            what: "1 heartbeat max |dev|, idle",
            measured: fmt_us(r.idle.max_abs),
            target: "<= 1 ms",
            pass: Some(r.idle.max_abs <= 1000.0),
            baseline: fmt_us(r.base_idle.max_abs),
            ratio: ratio(r.idle.max_abs, r.base_idle.max_abs),
        },
        Row {
            what: "1 heartbeat max |dev|, load",
            measured: fmt_us(r.load.max_abs),
            target: "<= 5 ms",
            pass: Some(r.load.max_abs <= 5000.0),
            baseline: fmt_us(r.base_load.max_abs),
            ratio: ratio(r.load.max_abs, r.base_load.max_abs),
        },
        Row {
            what: "1 heartbeat trend, idle",
            measured: format!("{:+.2} us/beat", r.idle.slope),
            target: "|x| < 10 us",
            pass: Some(r.idle.slope.abs() < 10.0),
            baseline: format!("{:+.2} us/beat", r.base_idle.slope),
            ratio: "-".into(),
        },
        Row {
            what: "1 heartbeat trend, load",
            measured: format!("{:+.2} us/beat", r.load.slope),
            target: "|x| < 10 us",
            pass: Some(r.load.slope.abs() < 10.0),
            baseline: format!("{:+.2} us/beat", r.base_load.slope),
            ratio: "-".into(),
        },
        Row {
            what: "1 heartbeats missing",
            measured: format!("{}", r.idle.missing + r.load.missing),
            target: "0",
            pass: Some(r.idle.missing + r.load.missing == 0),
            baseline: format!("{}", r.base_idle.missing + r.base_load.missing),
            ratio: "-".into(),
        },
        Row {
            what: "1 heartbeat median |dev|, idle",
            measured: fmt_us(r.idle.median_abs),
            target: "info",
            pass: None,
            baseline: fmt_us(r.base_idle.median_abs),
            ratio: ratio(r.idle.median_abs, r.base_idle.median_abs),
        },
        Row {
            what: "1 heartbeat median |dev|, load",
            measured: fmt_us(r.load.median_abs),
            target: "info",
            pass: None,
            baseline: fmt_us(r.base_load.median_abs),
            ratio: ratio(r.load.median_abs, r.base_load.median_abs),
        },
        Row {
            what: "1 load served (errors)",
            measured: format!(
                "{:.0}/s ({})",
                r.load_requests as f64 / r.load_secs,
                r.load_errors
            ),
            target: "info",
            pass: None,
            baseline: "-".into(),
            ratio: "-".into(),
        },
        Row {
            what: "2 shutdown req -> ACRND_STOP p50",
            measured: fmt_d(r.stop_lat.p50()),
            target: "<= 10 ms",
            pass: Some(r.stop_lat.p50() <= Duration::from_millis(10)),
            baseline: fmt_d(r.raw_lat.p50()),
            ratio: ratio(secs(r.stop_lat.p50()), secs(r.raw_lat.p50())),
        },
        Row {
            what: "2 shutdown req -> ACRND_STOP max",
            measured: fmt_d(r.stop_lat.max()),
            target: "info",
            pass: None,
            baseline: fmt_d(r.raw_lat.max()),
            ratio: ratio(secs(r.stop_lat.max()), secs(r.raw_lat.max())),
        },
        Row {
            what: "3 SHUTDOWN -> S5 heartbeat p50",
            measured: fmt_d(r.s5_lat.p50()),
            target: "<= 10 ms",
            pass: Some(r.s5_lat.p50() <= Duration::from_millis(10)),
            baseline: fmt_d(r.raw_lat.p50()),
            ratio: ratio(secs(r.s5_lat.p50()), secs(r.raw_lat.p50())),
        },
        Row {
            what: "3 SHUTDOWN -> S5 heartbeat max",
            measured: fmt_d(r.s5_lat.max()),
            target: "info",
            pass: None,
            baseline: "-".into(),
            ratio: "-".into(),
        },
        Row {
            what: "4 exec -> first heartbeat p50",
            measured: fmt_d(r.exec_lat.p50()),
            target: "<= 2 ms",
            pass: Some(r.exec_lat.p50() <= Duration::from_millis(2)),
            baseline: fmt_d(r.true_lat.p50()),
            ratio: ratio(secs(r.exec_lat.p50()), secs(r.true_lat.p50())),
        },
        Row {
            what: "5 VmRSS idle alive",
            measured: mib(r.rss.total),
            target: "<= 3 MiB",
            pass: Some(r.rss.total <= 3 * 1024),
            baseline: mib(r.sleep_rss.total),
            ratio: ratio(r.rss.total as f64, r.sleep_rss.total as f64),
        },
        Row {
            what: "5 VmRSS idle: file-backed part",
            measured: mib(r.rss.file),
            target: "info",
            pass: None,
            baseline: mib(r.sleep_rss.file),
            ratio: ratio(r.rss.file as f64, r.sleep_rss.file as f64),
        },
        Row {
            what: "5 VmRSS idle: anonymous part",
            measured: mib(r.rss.anon),
            target: "info",
            pass: None,
            baseline: mib(r.sleep_rss.anon),
            ratio: ratio(r.rss.anon as f64, r.sleep_rss.anon as f64),
        },
        Row {
            what: "5 VmRSS after the load",
            measured: mib(r.rss_after_load_kib),
            target: "info",
            pass: None,
            baseline: "-".into(),
            ratio: "-".into(),
        },
    ];
    println!();
    println!(
        "{:<34} {:>15} {:>12}  {:<6} {:>15} {:>7}",
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
            "{:<34} {:>15} {:>12}  {result:<6} {:>15} {:>7}",
            row.what, row.measured, row.target, row.baseline, row.ratio
        );
    }
    all
}

/// `--period-ms N` or `--period-ms=N`.
fn period_arg(args: &[String]) -> Option<u64> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = if a == "--period-ms" {
            it.next().map(String::as_str)
        } else {
            a.strip_prefix("--period-ms=")
        };
        if let Some(v) = v {
            match v.parse::<u64>() {
                Ok(ms) if ms >= 10 => return Some(ms),
                _ => panic!("--period-ms wants a whole number of milliseconds >= 10, not {v:?}"),
            }
        }
    }
    None
}

fn main() -> ExitCode {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and then the
    // bench only runs its smoke version.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let quick = !benching || args.iter().any(|a| a == "--quick") || env_is_1("BENCH_QUICK");
    let strict = env_is_1("BENCH_STRICT");
    let period_ms = period_arg(&args).unwrap_or(if quick { 100 } else { 250 });
    let opts = if quick {
        Opts {
            period: Duration::from_millis(period_ms),
            beats: 8,
            cycles: 5,
            spawns: 5,
            quick,
        }
    } else {
        Opts {
            period: Duration::from_millis(period_ms),
            beats: 80,
            cycles: 30,
            spawns: 30,
            quick,
        }
    };

    println!("sos-lcs: heartbeat accuracy, reaction latencies, start-up and memory");
    print_machine();
    println!(
        "counts: period {} ms, {} periods per heartbeat window, {} cycles, {} spawns{}",
        period_ms,
        opts.beats,
        opts.cycles,
        opts.spawns,
        if opts.quick { " (quick)" } else { "" }
    );
    let started = Instant::now();
    let cpu = Cpu::now();
    let results = run(opts);
    let cpu = cpu.since();
    let all_pass = summarize(&results);
    println!(
        "\nwall time {:.1} s; over the run: {cpu}; load average at the end {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    if !all_pass && strict {
        println!("a target FAILED and BENCH_STRICT=1: exiting with status 1");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
