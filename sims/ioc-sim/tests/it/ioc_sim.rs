//! `ioc-sim` as a process: real ptys, the real control socket, the SoC side opened the way
//! sos-lcs opens it. Frames are compared with literal bytes, never with our encoder's output.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acrn_tests::{Procs, TestDir, wait_for, wait_until};
use mngr_ipc::cbc::Frame;
use mngr_ipc::event_log::{LoggedEvent, read_events};
use mngr_ipc::line::{LineCodec, LineDevice, LineMode, open_line};
use mngr_ipc::msg::{AckPayload, Body, MsgId, Request};
use mngr_ipc::server::{Access, Call, Handlers, ServerConfig, spawn_server};
use nix::sys::signal::Signal;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ioc-sim");
/// Bound of every wait for something that should happen within a few periods.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// The reason period the tests run with.
pub(crate) const PERIOD_MS: u64 = 100;
const PERIOD: Duration = Duration::from_millis(PERIOD_MS);

/// Literal frames (service bytes).
const R_BTN: [u8; 4] = [0x01, 0x20, 0x00, 0x00];
const R_BTN_SOC: [u8; 4] = [0x01, 0x20, 0x00, 0x80];
const R_SOC: [u8; 4] = [0x01, 0x00, 0x00, 0x80];
const R_SOC_FS5: [u8; 4] = [0x01, 0x00, 0x00, 0xc0];
const R_ZERO: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
const R_RTC: [u8; 4] = [0x01, 0x00, 0x02, 0x00];
const HB_INIT: [u8; 4] = [0x02, 0x03, 0x00, 0x00];
const HB_ACTIVE: [u8; 4] = [0x02, 0x01, 0x00, 0x00];
const HB_S5: [u8; 4] = [0x02, 0x00, 0x01, 0x00];
const HB_S3: [u8; 4] = [0x02, 0x00, 0x07, 0x00];
const RTC_2S: [u8; 4] = [0x05, 0x02, 0x00, 0x00];

/// A running `ioc-sim run` in its own directory. `procs` is declared first so that it is
/// dropped (the process killed) before the directory goes.
struct Sim {
    procs: Procs,
    dir: TestDir,
    line: PathBuf,
    control: PathBuf,
    events: PathBuf,
}

impl Sim {
    /// The command line; `{dir}` in `extra` stands for the test's directory.
    fn command(dir: &TestDir, extra: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("RUST_LOG")
            .arg("-vv")
            .arg("run")
            .arg("--line")
            .arg(dir.join("lc"))
            .arg("--control")
            .arg(dir.join("ioc.sock"))
            .arg("--event-log")
            .arg(dir.join("events.jsonl"))
            .arg("--reason-period-ms")
            .arg(PERIOD_MS.to_string())
            .args(
                extra
                    .iter()
                    .map(|a| a.replace("{dir}", &dir.path().to_string_lossy())),
            );
        cmd
    }

    /// Starts the simulator and waits until its control socket accepts.
    fn start(label: &str, extra: &[&str]) -> Sim {
        let dir = TestDir::new(label);
        let mut procs = Procs::new(dir.path());
        procs
            .spawn("ioc-sim", Sim::command(&dir, extra))
            .expect("spawn ioc-sim");
        let sim = Sim {
            line: dir.join("lc"),
            control: dir.join("ioc.sock"),
            events: dir.join("events.jsonl"),
            procs,
            dir,
        };
        wait_for(WAIT, "the control socket to accept", || {
            UnixStream::connect(&sim.control).is_ok()
        })
        .expect("ioc-sim starts");
        sim
    }

    fn request(&self, line: &str) -> String {
        request(&self.control, line)
    }

    fn soc(&self, mode: LineMode) -> Soc {
        Soc::open(&self.line, mode)
    }

    fn events(&self) -> Vec<LoggedEvent> {
        read_events(&self.events).expect("event log readable")
    }

    /// Waits for an event of `kind` whose fields match `pred`.
    fn wait_event(&self, kind: &str, pred: impl Fn(&LoggedEvent) -> bool) -> LoggedEvent {
        wait_until(WAIT, kind, || {
            self.events()
                .into_iter()
                .find(|e| e.kind == kind && pred(e))
        })
        .unwrap_or_else(|e| panic!("{e}; events: {:#?}", self.events()))
    }
}

/// One request over a fresh connection, with the simulator's reply line.
pub(crate) fn request(control: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(control).expect("connect to the control socket");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(format!("{line}\n").as_bytes()).expect("write");
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).expect("reply");
    assert!(reply.ends_with('\n'), "a whole reply line: {reply:?}");
    reply.trim_end().to_owned()
}

/// `ioc-sim ctl` as a process: (exit code, stdout).
fn ctl(control: &Path, words: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("ctl")
        .arg("--control")
        .arg(control)
        .args(words)
        .output()
        .expect("run ioc-sim ctl");
    (
        out.status.code().expect("ctl exits, not killed"),
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned(),
    )
}

/// The SoC end of a line, reading raw bytes.
struct Soc {
    file: LineDevice,
    buf: Vec<u8>,
    closed: bool,
}

impl Soc {
    fn open(path: &Path, mode: LineMode) -> Soc {
        Soc {
            file: open_line(path, mode, 115_200).expect("open the line as the SoC"),
            buf: Vec::new(),
            closed: false,
        }
    }

    /// Reads what is available; notes end of file or a read error (a closed pty).
    fn pump(&mut self) {
        let mut b = [0u8; 512];
        loop {
            match self.file.read(&mut b) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// The next `n` bytes, waiting at most `timeout`.
    fn next(&mut self, n: usize, timeout: Duration) -> Option<Vec<u8>> {
        wait_until(timeout, "bytes from ioc-sim", || {
            self.pump();
            (self.buf.len() >= n).then(|| self.buf.drain(..n).collect())
        })
        .ok()
    }

    /// Reads `frame.len()`-byte chunks until one equals `frame`; returns those before it.
    fn expect(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(frame.len(), left) {
                Some(c) if c == frame => return seen,
                Some(c) => seen.push(c),
                None => panic!(
                    "no {frame:02x?} within {WAIT:?}; got {} chunk(s), the last: {:02x?}",
                    seen.len(),
                    &seen[seen.len().saturating_sub(8)..]
                ),
            }
        }
    }

    /// Discards what has arrived.
    fn drain(&mut self) {
        self.pump();
        self.buf.clear();
    }

    fn write(&mut self, bytes: &[u8]) {
        self.file.write_all(bytes).expect("write to the line");
    }
}

fn field<'a>(e: &'a LoggedEvent, key: &str) -> &'a serde_json::Value {
    &e.fields[key]
}

pub(crate) fn status_field(status: &str, key: &str) -> String {
    status
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {status:?}"))
        .to_owned()
}

#[test]
fn reasons_follow_heartbeats_ignition_and_poweroff() {
    let sim = Sim::start("ioc-flow", &[]);
    let mut soc = sim.soc(LineMode::Cdev);
    // Periodic frames with the ignition on.
    for _ in 0..3 {
        soc.expect(&R_BTN);
    }
    soc.write(&HB_ACTIVE);
    let before = soc.expect(&R_BTN_SOC);
    assert!(before.iter().all(|c| c == &R_BTN), "{before:02x?}");

    assert!(sim.request("ignition off force-s5").starts_with("ok "));
    soc.expect(&R_SOC_FS5);
    assert!(sim.request("ignition on").starts_with("ok "));
    soc.expect(&R_BTN_SOC);
    let (code, out) = ctl(&sim.control, &["ignition", "off"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "ok state=running reason=0x800000")
    );
    soc.expect(&R_SOC);
    soc.write(&HB_S5);
    soc.expect(&R_ZERO);
    soc.expect(&R_ZERO);
    let status = sim.request("status");
    assert_eq!(status_field(&status, "state"), "prepared");
    assert_eq!(status_field(&status, "hb"), "s5");
    assert_eq!(status_field(&status, "reason"), "0x0");
    assert_eq!(status_field(&status, "frames_rx"), "2");

    let (code, out) = ctl(&sim.control, &["poweroff"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok state=off"), "{out}");
    assert_eq!(status_field(&sim.request("status"), "state"), "off");
    soc.drain();
    assert_eq!(
        soc.next(4, 5 * PERIOD),
        None,
        "nothing is sent while the power is off"
    );
    let off = sim.wait_event("ioc.state", |e| field(e, "to") == "off");
    assert_eq!(field(&off, "from"), "prepared");
    assert!(
        !sim.events()
            .iter()
            .any(|e| e.kind == "frame.tx" && e.t_ns > off.t_ns),
        "no frame.tx after the power went off"
    );
    // A second power command finds the SoC without power.
    let (code, out) = ctl(&sim.control, &["poweroff"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("err "), "{out}");
    // Ignition on powers the system on again; the SoC bit waits for an ACTIVE heartbeat.
    assert!(sim.request("ignition on").starts_with("ok state=running"));
    soc.expect(&R_BTN);
    let rx = sim.wait_event("frame.rx", |e| field(e, "frame") == "heartbeat.active");
    assert_eq!(field(&rx, "hex"), "02010000");
    assert_eq!(field(&rx, "line"), "lifecycle");
}

#[test]
fn suspend_returns_when_the_rtc_wakes_the_system() {
    let sim = Sim::start("ioc-suspend", &[]);
    let mut soc = sim.soc(LineMode::Cdev);
    soc.write(&HB_ACTIVE);
    soc.expect(&R_BTN_SOC);
    sim.request("ignition off");
    soc.expect(&R_SOC);
    let armed_at = Instant::now();
    soc.write(&RTC_2S);
    soc.write(&HB_S3);
    soc.expect(&R_ZERO);
    let mut procs = Procs::new(sim.dir.path());
    let mut cmd = Command::new(BIN);
    cmd.arg("ctl")
        .arg("--control")
        .arg(&sim.control)
        .arg("suspend");
    procs.spawn("suspend", cmd).expect("spawn ctl suspend");
    wait_for(WAIT, "the system to suspend", || {
        sim.request("status").contains("state=suspended")
    })
    .expect("suspended");
    let status = sim.request("status");
    let rtc: u64 = status_field(&status, "rtc").parse().expect("seconds left");
    assert!((1..=2).contains(&rtc), "{status}");
    assert!(procs.is_running("suspend"), "suspend waits for the wake");
    let exit = procs.wait_exit("suspend", WAIT).expect("suspend returns");
    let woke_after = armed_at.elapsed();
    assert!(exit.success(), "{}", procs.stderr("suspend"));
    assert_eq!(procs.stdout("suspend"), "ok resumed reason=0x200\n");
    assert!(
        woke_after >= Duration::from_secs(2),
        "the RTC counts from the frame's reception: woke after {woke_after:?}"
    );
    soc.expect(&R_RTC);
    soc.expect(&R_RTC);
    assert_eq!(status_field(&sim.request("status"), "rtc"), "none");
    let fired = sim.wait_event("ioc.rtc", |e| field(e, "event") == "fired");
    let resumed = sim.wait_event("ioc.state", |e| field(e, "from") == "suspended");
    assert_eq!(field(&resumed, "reason"), 0x200);
    assert!(fired.t_ns <= resumed.t_ns);
}

#[test]
fn initial_off_stays_silent_until_ignition_on() {
    let sim = Sim::start("ioc-initial-off", &["--initial", "off"]);
    let mut soc = sim.soc(LineMode::Cdev);
    assert_eq!(soc.next(4, 3 * PERIOD), None, "off: nothing on the line");
    // The door does not power the system on; the ignition does.
    assert_eq!(sim.request("door open"), "ok state=off reason=0x800");
    assert_eq!(soc.next(4, 3 * PERIOD), None);
    assert_eq!(sim.request("ignition on"), "ok state=running reason=0x820");
    soc.expect(&[0x01, 0x20, 0x08, 0x00]);
    let on = sim.wait_event("ioc.state", |e| field(e, "to") == "running");
    assert_eq!(field(&on, "from"), "off");
    assert_eq!(field(&on, "reason"), 0x820);
}

#[test]
fn watchdog_cuts_the_power_without_heartbeats() {
    let sim = Sim::start("ioc-watchdog", &["--watchdog-ms", "300"]);
    let mut soc = sim.soc(LineMode::Cdev);
    // Answer ten periods (three watchdog periods) with heartbeats: the power stays.
    for _ in 0..10 {
        soc.expect(&R_BTN);
        soc.write(&HB_INIT);
    }
    assert_eq!(status_field(&sim.request("status"), "state"), "running");
    // Silence: the watchdog cuts the power.
    wait_for(WAIT, "the power cut", || {
        sim.request("status").contains("state=off")
    })
    .expect("power cut");
    let cut = sim.wait_event("ioc.power_cut", |_| true);
    let silent = field(&cut, "silent_ms").as_u64().expect("silent_ms");
    assert!(silent >= 300, "{silent}");
    sim.wait_event("ioc.state", |e| {
        field(e, "from") == "running" && field(e, "to") == "off"
    });
    soc.drain();
    assert_eq!(soc.next(4, 5 * PERIOD), None, "no frames after the cut");
}

#[test]
fn mirrors_carry_the_reason_frames_and_ignore_input() {
    let sim = Sim::start("ioc-mirror", &["--mirror", "{dir}/m0"]);
    let m0 = sim.dir.join("m0");
    let mut soc = sim.soc(LineMode::Cdev);
    let mut mirror = Soc::open(&m0, LineMode::Cdev);
    mirror.expect(&R_BTN);
    // A device model writing on its mirror reaches nobody: still no SoC bit.
    mirror.write(&HB_ACTIVE);
    for _ in 0..3 {
        soc.expect(&R_BTN);
    }
    soc.write(&HB_ACTIVE);
    soc.expect(&R_BTN_SOC);
    let before = mirror.expect(&R_BTN_SOC);
    assert!(before.iter().all(|c| c == &R_BTN), "{before:02x?}");
    sim.wait_event("frame.tx", |e| {
        field(e, "line") == "mirror0" && field(e, "hex") == "01200080"
    });
    let rx: Vec<_> = sim
        .events()
        .into_iter()
        .filter(|e| e.kind == "frame.rx")
        .collect();
    assert_eq!(
        rx.len(),
        1,
        "only the lifecycle heartbeat is decoded: {rx:#?}"
    );
    let (code, out) = ctl(&sim.control, &["quit"]);
    assert_eq!((code, out.as_str()), (0, "ok bye"));
    wait_for(WAIT, "the mirror symlink to go", || {
        fs::symlink_metadata(&m0).is_err()
    })
    .expect("mirror symlink removed on quit");
}

/// The link frame `05 seq 0e <service> cs` of the lifecycle channel, computed by hand: the
/// 8-bit sum of all bytes is 0.
fn link_frame(seq: u8, service: [u8; 4]) -> [u8; 8] {
    let mut f = [
        0x05, seq, 0x0e, service[0], service[1], service[2], service[3], 0,
    ];
    let sum = f.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    f[7] = 0u8.wrapping_sub(sum);
    f
}

#[test]
fn uart_mode_carries_link_frames() {
    // The hand formula agrees with the literal vectors.
    assert_eq!(
        link_frame(0, R_BTN_SOC),
        [0x05, 0x00, 0x0e, 0x01, 0x20, 0x00, 0x80, 0x4c]
    );
    assert_eq!(
        link_frame(1, R_BTN),
        [0x05, 0x01, 0x0e, 0x01, 0x20, 0x00, 0x00, 0xcb]
    );
    let sim = Sim::start("ioc-uart", &["--mode", "uart"]);
    let mut soc = sim.soc(LineMode::Uart);
    let mut last_seq = None;
    for _ in 0..5 {
        let f = soc.next(8, WAIT).expect("a link frame");
        let seq = f[1];
        assert!(seq < 4, "{f:02x?}");
        assert_eq!(f, link_frame(seq, R_BTN), "{f:02x?}");
        if let Some(prev) = last_seq {
            assert_eq!(seq, (prev + 1) % 4, "sequence numbers advance");
        }
        last_seq = Some(seq);
    }
    // The SoC's ACTIVE heartbeat as a link frame: 05 00 0e 02 01 00 00 ea.
    soc.write(&[0x05, 0x00, 0x0e, 0x02, 0x01, 0x00, 0x00, 0xea]);
    let got = wait_until(WAIT, "01 20 00 80 in a link frame", || {
        let f = soc.next(8, WAIT)?;
        (f[3..7] == R_BTN_SOC).then_some(f)
    })
    .expect("SoC bit set");
    assert_eq!(got, link_frame(got[1] & 3, R_BTN_SOC));
    let tx = sim.wait_event("frame.tx", |e| field(e, "hex") == "01200080");
    assert_eq!(
        field(&tx, "raw").as_str().map(str::len),
        Some(16),
        "the link bytes are logged"
    );
}

#[test]
fn dup_writes_every_frame_twice() {
    let sim = Sim::start("ioc-dup", &["--dup", "1.0", "--seed", "7"]);
    let mut soc = sim.soc(LineMode::Cdev);
    let chunks: Vec<Vec<u8>> = (0..8).map(|_| soc.next(4, WAIT).expect("frame")).collect();
    assert!(chunks.iter().all(|c| c == &R_BTN), "{chunks:02x?}");
    let status = sim.request("status");
    let dup: u64 = status_field(&status, "dup").parse().expect("count");
    let tx: u64 = status_field(&status, "frames_tx").parse().expect("count");
    assert!(dup >= 4, "{status}");
    assert_eq!(tx, 2 * dup, "every frame twice: {status}");
    assert!(sim.procs.stderr("ioc-sim").contains("fault seed 7"));
    let start = sim.wait_event("ioc.start", |_| true);
    assert_eq!(field(&start, "seed"), 7);
    sim.wait_event("fault", |e| field(e, "point") == "dup");
}

#[test]
fn drop_sends_nothing_on_the_lifecycle_line() {
    let sim = Sim::start(
        "ioc-drop",
        &["--drop", "1.0", "--seed", "7", "--mirror", "{dir}/m0"],
    );
    let m0 = sim.dir.join("m0");
    let mut soc = sim.soc(LineMode::Cdev);
    let mut mirror = Soc::open(&m0, LineMode::Cdev);
    // The mirror proves frames are being produced meanwhile.
    for _ in 0..4 {
        mirror.expect(&R_BTN);
    }
    soc.pump();
    assert!(soc.buf.is_empty(), "dropped: {:02x?}", soc.buf);
    let status = sim.request("status");
    assert_eq!(status_field(&status, "frames_tx"), "0");
    let drops: u64 = status_field(&status, "drop").parse().expect("count");
    assert!(drops >= 4, "{status}");
    sim.wait_event("fault", |e| field(e, "point") == "drop");
}

#[test]
fn corrupt_flips_exactly_one_bit() {
    let sim = Sim::start("ioc-corrupt", &["--corrupt", "1.0", "--seed", "3"]);
    let mut soc = sim.soc(LineMode::Cdev);
    for _ in 0..6 {
        let c = soc.next(4, WAIT).expect("frame");
        let flipped: u32 = c.iter().zip(R_BTN).map(|(a, b)| (a ^ b).count_ones()).sum();
        assert_eq!(flipped, 1, "{c:02x?}");
    }
    sim.wait_event("fault", |e| field(e, "point") == "corrupt");
}

#[test]
fn cdev_garbage_is_skipped_by_the_codec() {
    let sim = Sim::start("ioc-garbage", &["--garbage", "1.0", "--seed", "11"]);
    let mut soc = sim.soc(LineMode::Cdev);
    let mut raw = Vec::new();
    for _ in 0..6 {
        let garbage = soc.next(4, WAIT).expect("garbage");
        assert!(
            garbage.iter().all(|b| !(1..=6).contains(b)),
            "no header byte in garbage: {garbage:02x?}"
        );
        let frame = soc.next(4, WAIT).expect("frame");
        assert_eq!(frame, R_BTN);
        raw.extend_from_slice(&garbage);
        raw.extend_from_slice(&frame);
    }
    let mut codec = LineCodec::new(LineMode::Cdev);
    codec.feed(&raw);
    let mut frames = 0;
    while let Some(f) = codec.next_frame() {
        assert_eq!(f, Frame::WakeupReason(0x20));
        frames += 1;
    }
    assert_eq!(frames, 6);
    assert_eq!(codec.dropped(), 24);
    let status = sim.request("status");
    assert!(
        status_field(&status, "garbage")
            .parse::<u64>()
            .expect("count")
            >= 6
    );
}

#[test]
fn reopen_replaces_the_pty() {
    let sim = Sim::start("ioc-reopen", &["--reopen-delay-ms", "500"]);
    let mut old = sim.soc(LineMode::Cdev);
    old.expect(&R_BTN);
    let reply = sim.request("reopen");
    assert_eq!(reply, "ok reopening in 500 ms");
    // Closed before the reply: the path is gone until the delay has passed.
    assert!(fs::symlink_metadata(&sim.line).is_err(), "symlink removed");
    assert_eq!(status_field(&sim.request("status"), "line"), "closed");
    assert!(
        sim.request("reopen").starts_with("err "),
        "one reopen at a time"
    );
    wait_for(WAIT, "EOF or EIO on the old slave", || {
        old.pump();
        old.closed
    })
    .expect("the old line dies");
    wait_for(WAIT, "the new symlink", || sim.line.exists()).expect("recreated");
    let mut new = sim.soc(LineMode::Cdev);
    new.expect(&R_BTN);
    new.write(&HB_ACTIVE);
    new.expect(&R_BTN_SOC);
    assert_eq!(status_field(&sim.request("status"), "line"), "open");
    sim.wait_event("ioc.line", |e| field(e, "action") == "opened");
}

#[test]
fn pipelined_requests_wait_for_a_pending_suspend() {
    let sim = Sim::start("ioc-pipeline", &[]);
    let a = UnixStream::connect(&sim.control).expect("connect");
    a.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut a_lines = BufReader::new(a.try_clone().expect("clone"));
    let mut read_a = || {
        let mut l = String::new();
        a_lines.read_line(&mut l).expect("reply");
        l
    };
    (&a).write_all(b"suspend\nstatus\n").expect("write");
    wait_for(WAIT, "the system to suspend", || {
        sim.request("status").contains("state=suspended")
    })
    .expect("suspended");
    // The door wakes the system: the suspend is answered, then the queued status.
    assert_eq!(sim.request("door open"), "ok state=running reason=0x820");
    assert_eq!(read_a(), "ok resumed reason=0x820\n");
    let status = read_a();
    assert!(
        status.starts_with("ok state=running reason=0x820 "),
        "{status}"
    );
    // A suspend still pending when the simulator quits gets an error.
    (&a).write_all(b"suspend\n").expect("write");
    wait_for(WAIT, "the system to suspend", || {
        sim.request("status").contains("state=suspended")
    })
    .expect("suspended");
    assert_eq!(sim.request("quit"), "ok bye");
    assert_eq!(read_a(), "err ioc-sim is exiting\n");
    assert_eq!(read_a(), "", "then end of file");
}

#[test]
fn malformed_control_lines_get_err() {
    let sim = Sim::start("ioc-malformed", &[]);
    let mut s = UnixStream::connect(&sim.control).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"ignition sideways\n\nbogus\nstatus please\n\xff\xfe\nIGNITION on\nstatus\n")
        .expect("write");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    for expect_ok in [false, false, false, false, false, false, true] {
        let mut reply = String::new();
        r.read_line(&mut reply).expect("reply");
        assert_eq!(reply.starts_with("ok "), expect_ok, "{reply:?}");
        assert!(
            reply.starts_with("ok ") || reply.starts_with("err "),
            "{reply:?}"
        );
    }
    // An over-long line: an error, and the connection is closed.
    s.write_all(&[b'x'; 300]).expect("write");
    let mut reply = String::new();
    r.read_line(&mut reply).expect("reply");
    assert!(reply.starts_with("err request longer"), "{reply:?}");
    let mut rest = String::new();
    assert_eq!(r.read_line(&mut rest).expect("eof"), 0);
    // The simulator is unharmed.
    assert!(sim.request("status").starts_with("ok state=running"));
    let (code, out) = ctl(&sim.control, &["ignition", "sideways"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("err Usage"), "{out}");
    let (code, out) = ctl(&sim.dir.join("nobody.sock"), &["status"]);
    assert_eq!((code, out.as_str()), (3, ""));
}

#[test]
fn scenario_drives_ignition_off_at_300_ms() {
    let dir = TestDir::new("ioc-scen-file");
    let scenario = dir.join("scenario.txt");
    fs::write(&scenario, "# the driver leaves\n300 ignition off\n").expect("write scenario");
    let spawned = Instant::now();
    let sim = Sim::start(
        "ioc-scenario",
        &["--scenario", scenario.to_str().expect("utf-8")],
    );
    let mut soc = sim.soc(LineMode::Cdev);
    soc.write(&HB_ACTIVE);
    // Frames carry BTN until the scenario switches the ignition off.
    let mut seen = Vec::new();
    let off = wait_until(WAIT, "a frame without BTN", || {
        let c = soc.next(4, WAIT)?;
        assert_eq!(c[0], 0x01, "{c:02x?}");
        if c[1] & 0x20 != 0 {
            seen.push(c);
            return None;
        }
        Some(c)
    })
    .expect("ignition off");
    let at = spawned.elapsed();
    assert!(at >= Duration::from_millis(300), "ignition off at {at:?}");
    assert!(!seen.is_empty(), "the ignition was on first");
    assert!(off == R_SOC || off == R_ZERO, "{off:02x?}");
    let start = sim.wait_event("ioc.start", |_| true);
    let cmd = sim.wait_event("ioc.command", |e| field(e, "source") == "scenario:2");
    assert_eq!(field(&cmd, "command"), "ignition off");
    let after_ms = (cmd.t_ns - start.t_ns) / 1_000_000;
    assert!(after_ms >= 300, "run {after_ms} ms after start");
    sim.wait_event("ioc.reply", |e| field(e, "source") == "scenario:2");
}

#[test]
fn malformed_scenario_fails_the_start_naming_the_line() {
    let dir = TestDir::new("ioc-bad-scen");
    let scenario = dir.join("scenario.txt");
    fs::write(&scenario, "0 status\nsoon ignition on\n").expect("write scenario");
    let mut procs = Procs::new(dir.path());
    let mut cmd = Sim::command(&dir, &["--scenario", scenario.to_str().expect("utf-8")]);
    cmd.env("RUST_LOG", "off");
    procs.spawn("ioc-sim", cmd).expect("spawn");
    let status = procs.wait_exit("ioc-sim", WAIT).expect("exits");
    assert_eq!(status.code(), Some(2));
    let err = procs.stderr("ioc-sim");
    assert!(err.contains("line 2"), "{err}");
    assert!(!dir.join("lc").exists() && !dir.join("ioc.sock").exists());
}

#[test]
fn reboot_request_reaches_the_lifecycle_service() {
    let mngr = TestDir::new("ioc-rr-mngr");
    // Nobody serves sos-lcs yet: an error, and ctl exits 1.
    let sim = Sim::start(
        "ioc-rebootreq",
        &["--socket-dir", mngr.path().to_str().expect("utf-8")],
    );
    let (code, out) = ctl(&sim.control, &["reboot-request"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("err "), "{out}");

    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let handlers = Handlers::new().on(
        MsgId::Reboot,
        Access::Open,
        move |req: &Request, call: Call<'_>, _: &mut ()| {
            seen2.lock().expect("lock").push(req.body.clone());
            call.ack(AckPayload::Err(0))
        },
    );
    let server = spawn_server(ServerConfig::new("sos-lcs", mngr.path()), handlers, ())
        .expect("sos-lcs server");
    let (code, out) = ctl(&sim.control, &["reboot-request"]);
    assert_eq!((code, out.as_str()), (0, "ok ack err=0"));
    assert_eq!(*seen.lock().expect("lock"), [Body::Reboot { err: 0 }]);
    // The loop kept serving while the worker waited for the ack.
    assert!(sim.request("status").starts_with("ok "));
    server.stop();
}

#[test]
fn sigterm_removes_the_symlinks_and_the_socket() {
    let mut sim = Sim::start("ioc-term", &["--mirror", "{dir}/m0"]);
    let m0 = sim.dir.join("m0");
    assert!(sim.line.exists() && m0.exists());
    sim.procs
        .signal("ioc-sim", Signal::SIGTERM)
        .expect("signal");
    let status = sim.procs.wait_exit("ioc-sim", WAIT).expect("exits");
    assert!(status.success(), "{status}");
    assert!(fs::symlink_metadata(&sim.line).is_err());
    assert!(fs::symlink_metadata(&m0).is_err());
    assert!(fs::symlink_metadata(&sim.control).is_err());
    let stop = sim.wait_event("ioc.stop", |_| true);
    assert!(field(&stop, "frames_tx").as_u64().is_some());
}

#[test]
fn quit_exits_cleanly() {
    let mut sim = Sim::start("ioc-quit", &[]);
    let (code, out) = ctl(&sim.control, &["quit"]);
    assert_eq!((code, out.as_str()), (0, "ok bye"));
    let status = sim.procs.wait_exit("ioc-sim", WAIT).expect("exits");
    assert!(status.success(), "{status}");
    assert!(fs::symlink_metadata(&sim.line).is_err());
    assert!(fs::symlink_metadata(&sim.control).is_err());
}
