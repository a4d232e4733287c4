//! sos-lcs as a real process: the test holds the far end of a pty as the IOC and serves a
//! test `acrnd`. Frames on the line are compared with literal bytes (the C captures), never
//! with bytes our codec produced.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use acrn_tests::{Procs, TestDir, wait_for, wait_until};
use mngr_ipc::Profile;
use mngr_ipc::cbc::LinkStream;
use mngr_ipc::client::Client;
use mngr_ipc::msg::{AckPayload, Body, MsgId, Request, StopTarget, epoch_now, err};
use mngr_ipc::server::{Access, Handlers, PeerCred, ServerConfig, ServerThread, spawn_server};
use serialport::{SerialPort, TTYPort};

pub(crate) const T: Duration = Duration::from_secs(10);
pub(crate) const HB_MS: u64 = 100;

pub(crate) const HB_INIT: [u8; 4] = [0x02, 0x03, 0x00, 0x00];
pub(crate) const HB_ACTIVE: [u8; 4] = [0x02, 0x01, 0x00, 0x00];
pub(crate) const HB_DELAY: [u8; 4] = [0x02, 0x02, 0x00, 0x00];
pub(crate) const HB_S5: [u8; 4] = [0x02, 0x00, 0x01, 0x00];
pub(crate) const HB_REBOOT: [u8; 4] = [0x02, 0x00, 0x02, 0x00];
pub(crate) const HB_S3: [u8; 4] = [0x02, 0x00, 0x07, 0x00];
pub(crate) const SUPPRESS_5MIN: [u8; 4] = [0x04, 0xe0, 0x93, 0x04];
pub(crate) const SUPPRESS_30MIN: [u8; 4] = [0x04, 0x40, 0x77, 0x1b];
pub(crate) const WR_BUTTON: [u8; 4] = [0x01, 0x20, 0x00, 0x00];
pub(crate) const WR_BUTTON_SOC: [u8; 4] = [0x01, 0x20, 0x00, 0x80];
pub(crate) const WR_RTC: [u8; 4] = [0x01, 0x00, 0x02, 0x00];
pub(crate) const WR_SHUTDOWN: [u8; 4] = [0x01, 0x00, 0x00, 0x80];
pub(crate) const WR_FORCE_S5: [u8; 4] = [0x01, 0x00, 0x00, 0xc0];
pub(crate) const WR_ZERO: [u8; 4] = [0x01, 0x00, 0x00, 0x00];

/// The IOC's end of the line: a pty master, with a symlink to the slave where sos-lcs
/// expects its device.
pub(crate) struct FakeIoc {
    pub(crate) master: TTYPort,
    _slave: TTYPort,
    buf: Vec<u8>,
    uart: bool,
    link_rx: LinkStream,
}

impl FakeIoc {
    pub(crate) fn new(link: &Path, uart: bool) -> Self {
        // serialport's pair() is not thread-safe: one at a time.
        static PTY: OnceLock<Mutex<()>> = OnceLock::new();
        let _g = PTY.get_or_init(Mutex::default).lock().expect("pty lock");
        let (mut master, slave) = TTYPort::pair().expect("pty pair");
        // serialport opens both ends without O_CLOEXEC: a process that a parallel test
        // spawns would inherit the master and keep the line up after this end drops it.
        mngr_ipc::sys::set_cloexec(&master).expect("FD_CLOEXEC");
        mngr_ipc::sys::set_cloexec(&slave).expect("FD_CLOEXEC");
        master
            .set_timeout(Duration::from_millis(20))
            .expect("timeout");
        let _ = std::fs::remove_file(link);
        let name = slave.name().expect("slave name");
        std::os::unix::fs::symlink(name, link).expect("symlink");
        FakeIoc {
            master,
            _slave: slave,
            buf: Vec::new(),
            uart,
            link_rx: LinkStream::new(),
        }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to the line");
        self.master.flush().expect("flush");
    }

    pub(crate) fn pump(&mut self) {
        let mut b = [0u8; 256];
        match self.master.read(&mut b) {
            Ok(n) => {
                if self.uart {
                    self.link_rx.feed(&b[..n]);
                    while let Some(f) = self.link_rx.next_frame() {
                        assert_eq!(f.mux, 1, "lifecycle channel");
                        self.buf.extend_from_slice(&f.region[..4]);
                    }
                } else {
                    self.buf.extend_from_slice(&b[..n]);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) => {}
            Err(_) => std::thread::yield_now(), // no slave open (EIO): nothing to read yet
        }
    }

    /// The next 4-byte frame sos-lcs wrote.
    pub(crate) fn next_frame(&mut self, timeout: Duration) -> Option<[u8; 4]> {
        let deadline = Instant::now() + timeout;
        while self.buf.len() < 4 && Instant::now() < deadline {
            self.pump();
        }
        if self.buf.len() < 4 {
            return None;
        }
        let f: [u8; 4] = self.buf[..4].try_into().expect("4 bytes");
        self.buf.drain(..4);
        Some(f)
    }

    /// Reads frames until `want`; returns those before it. Panics after `timeout`.
    pub(crate) fn wait_frame(&mut self, want: [u8; 4], timeout: Duration) -> Vec<[u8; 4]> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left) {
                Some(f) if f == want => return seen,
                Some(f) => seen.push(f),
                None => panic!("no frame {want:02x?} within {timeout:?}; saw {seen:02x?}"),
            }
        }
    }

    /// Drops what sos-lcs wrote so far.
    pub(crate) fn clear(&mut self) {
        let until = Instant::now() + Duration::from_millis(30);
        while Instant::now() < until {
            self.pump();
        }
        self.buf.clear();
    }
}

/// A test acrnd recording what sos-lcs sends it.
pub(crate) struct TestAcrnd {
    _server: ServerThread,
    pub(crate) rx: Receiver<(Body, PeerCred)>,
}

impl TestAcrnd {
    pub(crate) fn start(dir: &Path) -> Self {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let record = move |r: &Request, call: mngr_ipc::server::Call<'_>, _: &mut ()| {
            let _ = tx.lock().expect("lock").send((r.body.clone(), call.peer()));
            call.ack(AckPayload::Err(0))
        };
        let record = std::sync::Arc::new(Mutex::new(record));
        let r2 = std::sync::Arc::clone(&record);
        let h = Handlers::new()
            .on(MsgId::AcrndStop, Access::Open, move |r, c, s| {
                (record.lock().expect("lock"))(r, c, s)
            })
            .on(MsgId::AcrndResume, Access::Open, move |r, c, s| {
                (r2.lock().expect("lock"))(r, c, s)
            });
        let server = spawn_server(ServerConfig::new("acrnd", dir), h, ()).expect("test acrnd");
        TestAcrnd {
            _server: server,
            rx,
        }
    }

    pub(crate) fn next(&self) -> Body {
        self.rx.recv_timeout(T).expect("a request from sos-lcs").0
    }
}

pub(crate) struct Lcs {
    pub(crate) dir: TestDir,
    pub(crate) procs: Procs,
    pub(crate) sock: PathBuf,
    pub(crate) line: PathBuf,
    pub(crate) events: PathBuf,
}

impl Lcs {
    pub(crate) fn dir(label: &str) -> (TestDir, PathBuf, PathBuf) {
        let dir = TestDir::new(label);
        let sock = dir.join("mngr");
        let line = dir.join("cbc-lifecycle");
        (dir, sock, line)
    }

    pub(crate) fn spawn(
        dir: TestDir,
        sock: PathBuf,
        line: PathBuf,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Self {
        let events = dir.join("events.jsonl");
        let mut procs = Procs::new(dir.path());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sos-lcs"));
        let marker = |n: &str| format!("touch {}", dir.join(n).display());
        cmd.arg("--socket-dir").arg(&sock);
        if !extra.contains(&"--heartbeat-ms") {
            cmd.arg("--heartbeat-ms").arg(HB_MS.to_string());
        }
        cmd.arg("--event-log")
            .arg(&events)
            .arg("--poweroff-cmd")
            .arg(marker("poweroff.ran"))
            .arg("--reboot-cmd")
            .arg(marker("reboot.ran"))
            .arg("--intent-cmd")
            .arg(format!("cat {}", dir.join("intent").display()))
            .arg("-vv");
        if !extra.contains(&"--uart") {
            cmd.arg("--line").arg(&line);
        }
        cmd.args(extra);
        // The test process is the privileged client: allow its uid (root in CI, anyone else
        // on a developer's machine), unless the test sets its own policy.
        if !extra.contains(&"--allow-uid") {
            cmd.arg("--allow-uid")
                .arg(nix::unistd::getuid().as_raw().to_string());
        }
        cmd.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC");
        for (k, v) in env {
            cmd.env(k, v);
        }
        procs.spawn("sos-lcs", cmd).expect("spawn sos-lcs");
        Lcs {
            dir,
            procs,
            sock,
            line,
            events,
        }
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(&self.sock, Profile::F)
    }

    pub(crate) fn wait_served(&self) {
        wait_for(T, "sos-lcs socket", || {
            mngr_ipc::naming::candidates(&self.sock, "sos-lcs").is_ok_and(|c| !c.is_empty())
        })
        .expect("sos-lcs serves");
    }

    pub(crate) fn send(&self, body: Body) -> mngr_ipc::Ack {
        self.client()
            .send("sos-lcs", &Request::now(body), T)
            .expect("acked")
    }

    pub(crate) fn events(&self) -> Vec<mngr_ipc::event_log::LoggedEvent> {
        mngr_ipc::event_log::read_events(&self.events).expect("event log")
    }

    pub(crate) fn wait_state(&self, to: &str) {
        wait_for(T, &format!("state {to}"), || {
            self.events()
                .iter()
                .any(|e| e.kind == "state" && e.fields["to"] == to)
        })
        .expect("state reached");
    }
}

/// sos-lcs up, line open, alive (ACRND_RESUME delivered) with a test acrnd.
pub(crate) fn alive(label: &str, extra: &[&str]) -> (Lcs, FakeIoc, TestAcrnd) {
    let (dir, sock, line) = Lcs::dir(label);
    let acrnd = TestAcrnd::start(&sock);
    let mut ioc = FakeIoc::new(&line, false);
    let lcs = Lcs::spawn(dir, sock, line, extra, &[]);
    ioc.wait_frame(HB_INIT, T);
    ioc.send(&WR_BUTTON);
    assert_eq!(
        acrnd.next(),
        Body::AcrndResume {
            force: 0,
            timeout: 0
        }
    );
    (lcs, ioc, acrnd)
}

#[test]
fn alive_sends_acrnd_resume_and_active_heartbeats_at_once() {
    let (dir, sock, line) = Lcs::dir("lcs-alive");
    let acrnd = TestAcrnd::start(&sock);
    let mut ioc = FakeIoc::new(&line, false);
    let lcs = Lcs::spawn(dir, sock, line, &["--heartbeat-ms", "5000"], &[]);
    // With a 5 s period, frames that arrive within 2 s were sent because something
    // happened, not by the periodic tick.
    assert_eq!(
        ioc.next_frame(Duration::from_secs(2)),
        Some(HB_INIT),
        "init at once"
    );
    let sent = Instant::now();
    ioc.send(&WR_BUTTON);
    assert_eq!(ioc.next_frame(Duration::from_secs(2)), Some(HB_ACTIVE));
    assert!(sent.elapsed() < Duration::from_secs(2));
    assert_eq!(
        acrnd.next(),
        Body::AcrndResume {
            force: 0,
            timeout: 0
        }
    );
    let ack = lcs.send(Body::WakeupReason);
    assert_eq!(ack.payload, AckPayload::Reason(0x20));
    // Also reachable under the name ACRN >= v2.7 looks up.
    let ack = lcs
        .client()
        .send("service-vm-lcs", &Request::now(Body::WakeupReason), T)
        .expect("acked");
    assert_eq!(ack.payload, AckPayload::Reason(0x20));
}

#[test]
fn shutdown_request_to_s5_and_poweroff() {
    let (lcs, mut ioc, acrnd) = alive("lcs-s5", &[]);
    ioc.send(&WR_FORCE_S5);
    assert_eq!(
        acrnd.next(),
        Body::AcrndStop {
            force: 0,
            timeout: 20,
            target: StopTarget::S5
        }
    );
    ioc.wait_frame(HB_DELAY, T);
    let ack = lcs.send(Body::Shutdown { err: 0 });
    assert_eq!(ack.err(), Some(0));
    ioc.wait_frame(HB_S5, T);
    ioc.send(&WR_ZERO);
    let marker = lcs.dir.join("poweroff.ran");
    wait_for(T, "poweroff command", || marker.exists()).expect("poweroff ran");
}

#[test]
fn shutdown_request_without_force_asks_for_s3() {
    let (lcs, mut ioc, acrnd) = alive("lcs-s3", &[]);
    ioc.send(&WR_SHUTDOWN);
    assert_eq!(
        acrnd.next(),
        Body::AcrndStop {
            force: 0,
            timeout: 20,
            target: StopTarget::S3
        }
    );
    ioc.wait_frame(HB_DELAY, T);
    assert_eq!(lcs.send(Body::Suspend { err: 0 }).err(), Some(0));
    ioc.wait_frame(HB_S3, T);
}

#[test]
fn refusal_goes_back_to_default() {
    let (lcs, mut ioc, _acrnd) = alive("lcs-refuse", &[]);
    ioc.send(&WR_SHUTDOWN);
    ioc.wait_frame(HB_DELAY, T);
    assert_eq!(lcs.send(Body::Suspend { err: -1 }).err(), Some(0));
    ioc.wait_frame(HB_INIT, T);
    lcs.wait_state("default");
}

#[test]
fn ignition_back_during_the_delay_cancels_the_shutdown() {
    let (lcs, mut ioc, acrnd) = alive("lcs-cancel", &[]);
    ioc.send(&WR_SHUTDOWN);
    assert!(matches!(acrnd.next(), Body::AcrndStop { .. }));
    ioc.wait_frame(HB_DELAY, T);
    ioc.send(&WR_BUTTON_SOC);
    assert_eq!(
        acrnd.next(),
        Body::AcrndResume {
            force: 0,
            timeout: 0
        }
    );
    ioc.wait_frame(HB_ACTIVE, T);
    // A late verdict from acrnd's cancelled stop must not suspend a running system.
    assert_eq!(lcs.send(Body::Suspend { err: 0 }).err(), Some(err::BUSY));
    ioc.clear();
    for _ in 0..3 {
        assert_eq!(ioc.next_frame(T), Some(HB_ACTIVE), "stays alive");
    }
}

/// Arms an RTC wake-up 70000 s ahead: 1166 minutes for any send within a minute.
pub(crate) fn arm_rtc(lcs: &Lcs) {
    let t = i64::try_from(epoch_now()).expect("epoch") + 70_000;
    let ack = lcs.send(Body::RtcTimer {
        vmname: b"vm1".to_vec(),
        t,
    });
    assert_eq!(ack.err(), Some(0));
}

pub(crate) const RTC_1166_MIN: [u8; 4] = [0x05, 0x8e, 0x04, 0x01];

#[test]
fn rtc_goes_out_with_s3_heartbeats_and_before_suspend() {
    let (lcs, mut ioc, _acrnd) = alive("lcs-rtc3", &[]);
    arm_rtc(&lcs);
    ioc.send(&WR_SHUTDOWN);
    ioc.wait_frame(HB_DELAY, T);
    lcs.send(Body::Suspend { err: 0 });
    ioc.wait_frame(RTC_1166_MIN, T);
    assert_eq!(ioc.next_frame(T), Some(HB_S3));
    // Again with the next periodic heartbeat: one lost frame cannot lose the wake-up.
    ioc.wait_frame(RTC_1166_MIN, T);
    assert_eq!(ioc.next_frame(T), Some(HB_S3));
}

#[test]
fn rtc_goes_out_with_s5_too() {
    let (lcs, mut ioc, _acrnd) = alive("lcs-rtc5", &[]);
    arm_rtc(&lcs);
    ioc.send(&WR_FORCE_S5);
    ioc.wait_frame(HB_DELAY, T);
    lcs.send(Body::Shutdown { err: 0 });
    ioc.wait_frame(RTC_1166_MIN, T);
    assert_eq!(ioc.next_frame(T), Some(HB_S5));
    ioc.send(&WR_ZERO);
    // Once more with the IOC's reason 0, before the power-off.
    ioc.wait_frame(RTC_1166_MIN, T);
    let marker = lcs.dir.join("poweroff.ran");
    wait_for(T, "poweroff command", || marker.exists()).expect("poweroff ran");
}

#[test]
fn rtc_in_the_past_is_refused() {
    let (lcs, _ioc, _acrnd) = alive("lcs-rtcpast", &[]);
    let t = i64::try_from(epoch_now()).expect("epoch") - 5;
    let ack = lcs.send(Body::RtcTimer {
        vmname: vec![0xff; 16],
        t,
    });
    assert_eq!(ack.err(), Some(-1));
}

#[test]
fn reboot_over_ipc() {
    let (lcs, mut ioc, _acrnd) = alive("lcs-reboot", &[]);
    assert_eq!(lcs.send(Body::Reboot { err: 0 }).err(), Some(0));
    ioc.wait_frame(HB_REBOOT, T);
    ioc.send(&WR_ZERO);
    let marker = lcs.dir.join("reboot.ran");
    wait_for(T, "reboot command", || marker.exists()).expect("reboot ran");
}

#[test]
fn wakeup_reason_asked_before_the_first_frame_waits_for_it() {
    let (dir, sock, line) = Lcs::dir("lcs-early");
    let mut ioc = FakeIoc::new(&line, false);
    let lcs = Lcs::spawn(dir, sock, line, &["--reason-wait-ms", "1500"], &[]);
    lcs.wait_served();
    ioc.wait_frame(HB_INIT, T);
    let client = lcs.client();
    let asker = std::thread::spawn(move || {
        client
            .send(
                "sos-lcs",
                &Request::now(Body::WakeupReason),
                Duration::from_secs(2),
            )
            .map(|a| a.payload)
    });
    // The C acrnd would have read 0 here and taken an RTC boot for an ignition boot.
    wait_for(T, "the request to be pending", || {
        mngr_ipc::event_log::read_events(&lcs.events)
            .expect("log")
            .iter()
            .any(|e| e.kind == "ipc.request" && e.fields["msg"] == "WAKEUP_REASON")
    })
    .expect("pending");
    ioc.send(&WR_RTC);
    let got = asker.join().expect("asker").expect("acked within 2 s");
    assert_eq!(got, AckPayload::Reason(0x200));
}

#[test]
fn wakeup_reason_without_any_frame_is_answered_before_the_client_gives_up() {
    let (dir, sock, line) = Lcs::dir("lcs-noreason");
    let _ioc = FakeIoc::new(&line, false);
    let lcs = Lcs::spawn(dir, sock, line, &["--reason-wait-ms", "300"], &[]);
    lcs.wait_served();
    let start = Instant::now();
    let ack = lcs
        .client()
        .send(
            "sos-lcs",
            &Request::now(Body::WakeupReason),
            Duration::from_secs(2),
        )
        .expect("answered");
    assert_eq!(ack.payload, AckPayload::Reason(0));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn no_acrnd_mode_serves_a_stand_in() {
    let (dir, sock, line) = Lcs::dir("lcs-noacrnd");
    let mut ioc = FakeIoc::new(&line, false);
    let lcs = Lcs::spawn(dir, sock, line, &["--no-acrnd"], &[]);
    ioc.wait_frame(HB_INIT, T);
    ioc.send(&WR_BUTTON);
    ioc.wait_frame(HB_ACTIVE, T);
    assert!(
        !mngr_ipc::naming::candidates(&lcs.sock, "acrnd")
            .expect("dir")
            .is_empty(),
        "stand-in acrnd served"
    );
    // The stand-in answers ACRND_RESUME (the C one had no handler: 6 x 2 s timeouts).
    let ack = lcs
        .client()
        .send(
            "acrnd",
            &Request::now(Body::AcrndResume {
                force: 0,
                timeout: 0,
            }),
            T,
        )
        .expect("acked");
    assert_eq!(ack.err(), Some(0));
    ioc.send(&WR_FORCE_S5);
    ioc.wait_frame(HB_S5, T);
    ioc.send(&WR_ZERO);
    let marker = lcs.dir.join("poweroff.ran");
    wait_for(T, "poweroff command", || marker.exists()).expect("poweroff ran");
}

#[test]
fn without_no_acrnd_nothing_stands_in() {
    let (dir, sock, line) = Lcs::dir("lcs-nostand");
    let _ioc = FakeIoc::new(&line, false);
    let lcs = Lcs::spawn(dir, sock, line, &[], &[]);
    lcs.wait_served();
    assert!(
        mngr_ipc::naming::candidates(&lcs.sock, "acrnd")
            .expect("dir")
            .is_empty()
    );
}

#[test]
fn undeliverable_stop_is_retried_then_acted_on() {
    // No acrnd at all: 3 attempts, then S5 because the IOC asked for force-S5.
    let (dir, sock, line) = Lcs::dir("lcs-noone");
    let mut ioc = FakeIoc::new(&line, false);
    let lcs = Lcs::spawn(
        dir,
        sock,
        line,
        &["--retries", "3", "--ipc-timeout-ms", "200"],
        &[],
    );
    ioc.wait_frame(HB_INIT, T);
    ioc.send(&WR_BUTTON);
    ioc.wait_frame(HB_ACTIVE, T);
    ioc.send(&WR_FORCE_S5);
    ioc.wait_frame(HB_S5, T);
    let attempts = lcs
        .events()
        .iter()
        .filter(|e| e.kind == "acrnd.send" && e.fields["msg"] == "ACRND_STOP")
        .count();
    assert_eq!(attempts, 3);
}

#[test]
fn waiting_states_are_bounded() {
    let (lcs, mut ioc, _acrnd) = alive("lcs-bound", &["--wait-bound", "1"]);
    ioc.send(&WR_SHUTDOWN);
    ioc.wait_frame(HB_DELAY, T);
    // acrnd never answers: forced to S5 after 1 s, then the IOC never confirms: forced
    // power-off after another second.
    ioc.wait_frame(HB_S5, T);
    let marker = lcs.dir.join("poweroff.ran");
    wait_for(T, "forced poweroff", || marker.exists()).expect("poweroff ran");
    let forced: Vec<_> = lcs
        .events()
        .into_iter()
        .filter(|e| e.kind == "state" && !e.fields["forced"].is_null())
        .collect();
    assert_eq!(forced.len(), 2, "{forced:?}");
}

/// sos-lcs through an S3 cycle up to its suspend command, which runs until the returned
/// flag file exists ("the system resumed").
fn suspending(label: &str) -> (Lcs, FakeIoc, TestAcrnd, PathBuf) {
    let (dir, sock, line) = Lcs::dir(label);
    let acrnd = TestAcrnd::start(&sock);
    let mut ioc = FakeIoc::new(&line, false);
    let resume_flag = dir.join("resume");
    let script = dir.join("suspend.sh");
    std::fs::write(
        &script,
        format!(
            "touch {d}/suspend.ran\ni=0\nwhile [ ! -e {r} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n",
            d = dir.path().display(),
            r = resume_flag.display()
        ),
    )
    .expect("script");
    let cmd = format!("sh {}", script.display());
    let lcs = Lcs::spawn(dir, sock, line, &["--suspend-cmd", &cmd], &[]);
    ioc.wait_frame(HB_INIT, T);
    ioc.send(&WR_BUTTON);
    acrnd.next();
    ioc.send(&WR_SHUTDOWN);
    assert!(matches!(acrnd.next(), Body::AcrndStop { .. }));
    ioc.wait_frame(HB_DELAY, T);
    lcs.send(Body::Suspend { err: 0 });
    ioc.wait_frame(HB_S3, T);
    ioc.send(&WR_ZERO);
    let ran = lcs.dir.join("suspend.ran");
    wait_for(T, "suspend command", || ran.exists()).expect("suspend ran");
    (lcs, ioc, acrnd, resume_flag)
}

#[test]
fn suspend_returns_to_default_and_waits_for_a_fresh_reason() {
    let (lcs, mut ioc, acrnd, resume_flag) = suspending("lcs-s3cycle");
    ioc.clear();
    // While "suspended" nothing goes out.
    assert_eq!(ioc.next_frame(Duration::from_millis(3 * HB_MS)), None);
    std::fs::write(&resume_flag, b"").expect("resume");
    ioc.wait_frame(HB_INIT, T);
    // The reason latched before the suspend is gone: a WAKEUP_REASON now waits for the
    // reason the IOC woke the system with.
    let client = lcs.client();
    let asker = std::thread::spawn(move || {
        client
            .send(
                "sos-lcs",
                &Request::now(Body::WakeupReason),
                Duration::from_secs(2),
            )
            .map(|a| a.payload)
    });
    wait_for(T, "the request to be pending", || {
        lcs.events()
            .iter()
            .filter(|e| e.kind == "ipc.request" && e.fields["msg"] == "WAKEUP_REASON")
            .count()
            == 1
    })
    .expect("pending");
    ioc.send(&WR_RTC);
    assert_eq!(
        asker.join().expect("asker").expect("acked"),
        AckPayload::Reason(0x200)
    );
    assert_eq!(
        acrnd.next(),
        Body::AcrndResume {
            force: 0,
            timeout: 0
        }
    );
}

/// The IOC's wake reason read before the suspend command returned (the system resumed and
/// the IOC spoke first) is acted on when it returns, not one IOC period later.
#[test]
fn a_reason_read_before_the_suspend_command_returned_wakes_at_its_return() {
    let (lcs, mut ioc, acrnd, resume_flag) = suspending("lcs-s3early");
    ioc.send(&WR_RTC);
    wait_for(T, "sos-lcs to read the frame", || {
        lcs.events()
            .iter()
            .any(|e| e.kind == "frame.rx" && e.fields["hex"] == "01000200")
    })
    .expect("read");
    ioc.clear();
    std::fs::write(&resume_flag, b"").expect("resume");
    // No other frame from the IOC: the one it sent is enough.
    ioc.wait_frame(HB_ACTIVE, T);
    assert_eq!(
        acrnd.next(),
        Body::AcrndResume {
            force: 0,
            timeout: 0
        }
    );
    assert_eq!(
        lcs.send(Body::WakeupReason).payload,
        AckPayload::Reason(0x200)
    );
}

#[test]
fn line_absent_at_start_and_yanked_mid_run() {
    let (dir, sock, line) = Lcs::dir("lcs-yank");
    let lcs = Lcs::spawn(dir, sock, line, &["--reopen-max-ms", "100"], &[]);
    lcs.wait_served();
    // The device appears later.
    let mut ioc = FakeIoc::new(&lcs.line, false);
    ioc.wait_frame(HB_INIT, T);
    // It vanishes (the IOC side closes) and comes back at the same path.
    drop(ioc);
    wait_for(T, "line lost", || {
        lcs.events()
            .iter()
            .any(|e| e.kind == "line" && e.fields["state"] == "closed")
    })
    .expect("loss noticed");
    let back = Instant::now();
    let mut ioc = FakeIoc::new(&lcs.line, false);
    ioc.wait_frame(HB_INIT, T);
    assert!(
        back.elapsed() < Duration::from_secs(2),
        "{:?}",
        back.elapsed()
    );
}

#[test]
fn garbage_and_split_frames_in_cdev_mode() {
    let (dir, sock, line) = Lcs::dir("lcs-garbage");
    let acrnd = TestAcrnd::start(&sock);
    let mut ioc = FakeIoc::new(&line, false);
    let _lcs = Lcs::spawn(dir, sock, line, &[], &[]);
    ioc.wait_frame(HB_INIT, T);
    ioc.send(&[0x07, 0x00, 0x00, 0x00]); // unknown header
    ioc.send(&[0x06, 0x01, 0x00, 0x00]); // logic mode: ignored
    ioc.send(&[0x00, 0xff]); // noise
    for b in WR_BUTTON {
        ioc.send(&[b]);
    }
    assert_eq!(
        acrnd.next(),
        Body::AcrndResume {
            force: 0,
            timeout: 0
        }
    );
    ioc.wait_frame(HB_ACTIVE, T);
}

#[test]
fn uart_mode_speaks_link_frames_and_skips_garbage() {
    let (dir, sock, line) = Lcs::dir("lcs-uart");
    let acrnd = TestAcrnd::start(&sock);
    let mut ioc = FakeIoc::new(&line, true);
    let uart = line.display().to_string();
    let _lcs = Lcs::spawn(dir, sock, line, &["--uart", &uart, "--baud", "115200"], &[]);
    // Raw bytes: the init heartbeat in a link frame on the lifecycle channel, sequence 0
    // (the C packer's `05 01 0E 02 03 00 00 E7` at sequence 1).
    let mut raw = Vec::new();
    let deadline = Instant::now() + T;
    while raw.len() < 8 && Instant::now() < deadline {
        let mut b = [0u8; 64];
        if let Ok(n) = ioc.master.read(&mut b) {
            raw.extend_from_slice(&b[..n]);
        }
    }
    assert_eq!(&raw[..8], &[0x05, 0x00, 0x0e, 0x02, 0x03, 0x00, 0x00, 0xe8]);
    // Garbage, a frame of another channel, then the reason split in two writes.
    ioc.send(&[0xaa, 0x05, 0x7c, 0x00, 0x13]);
    ioc.send(&[
        0x05, 0x04, 0x3b, 0x11, 0x22, 0x33, 0x44, 0x55, 0xff, 0xff, 0xff, 0xc0,
    ]);
    let reason = [0x05, 0x00, 0x0e, 0x01, 0x20, 0x00, 0x80, 0x4c];
    ioc.send(&reason[..3]);
    ioc.send(&reason[3..]);
    assert_eq!(
        acrnd.next(),
        Body::AcrndResume {
            force: 0,
            timeout: 0
        }
    );
    ioc.wait_frame(HB_ACTIVE, T);
}

#[test]
fn unauthorized_requests_are_refused() {
    let (lcs, mut ioc, _acrnd) = alive("lcs-auth", &["--allow-uid", "4242"]);
    ioc.send(&WR_SHUTDOWN);
    ioc.wait_frame(HB_DELAY, T);
    let ack = lcs.send(Body::Shutdown { err: 0 });
    assert_eq!(ack.err(), Some(err::NOT_PERMITTED));
    let t = i64::try_from(epoch_now()).expect("epoch") + 100;
    let ack = lcs.send(Body::RtcTimer {
        vmname: Vec::new(),
        t,
    });
    assert_eq!(ack.err(), Some(err::NOT_PERMITTED));
    ioc.clear();
    assert_eq!(ioc.next_frame(T), Some(HB_DELAY), "nothing happened");
    assert!(lcs.events().iter().any(|e| e.kind == "ipc.refused"));
    // WAKEUP_REASON is not privileged.
    assert_eq!(
        lcs.send(Body::WakeupReason).payload,
        AckPayload::Reason(0x20)
    );
}

/// The client half of `a_peer_of_another_uid_is_refused`, run as uid 65534.
#[test]
fn lcs_client_helper() {
    let Ok(dir) = std::env::var("ACRN_LCS_CLIENT_DIR") else {
        return;
    };
    let ack = Client::new(dir, Profile::F)
        .send("sos-lcs", &Request::now(Body::Reboot { err: 0 }), T)
        .expect("acked");
    assert_eq!(ack.err(), Some(err::NOT_PERMITTED));
}

#[test]
fn a_peer_of_another_uid_is_refused() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::getuid().is_root() {
        eprintln!(
            "a_peer_of_another_uid_is_refused: needs root to switch uid; the policy test covers refusals"
        );
        return;
    }
    let (lcs, mut ioc, _acrnd) = alive("lcs-uid", &[]);
    std::fs::set_permissions(lcs.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(&lcs.sock, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for c in mngr_ipc::naming::candidates(&lcs.sock, "sos-lcs").expect("dir") {
        std::fs::set_permissions(&c.path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    }
    let status = Command::new(std::env::current_exe().expect("test exe"))
        .args(["--exact", "lcs::lcs_client_helper", "--test-threads=1"])
        .env("ACRN_LCS_CLIENT_DIR", &lcs.sock)
        .uid(65534)
        .gid(65534)
        .status()
        .expect("client as uid 65534");
    assert!(status.success());
    ioc.clear();
    assert_eq!(ioc.next_frame(T), Some(HB_ACTIVE), "no reboot heartbeat");
    let refused = lcs
        .events()
        .into_iter()
        .find(|e| e.kind == "ipc.refused")
        .expect("logged");
    assert_eq!(refused.fields["uid"], 65534);
}

fn sigterm(lcs: &mut Lcs) -> std::process::ExitStatus {
    lcs.procs
        .signal("sos-lcs", nix::sys::signal::Signal::SIGTERM)
        .expect("signal");
    lcs.procs.wait_exit("sos-lcs", T).expect("exits")
}

#[test]
fn sigterm_during_a_reboot() {
    let (mut lcs, mut ioc, _acrnd) = alive("lcs-term-rb", &[]);
    std::fs::write(lcs.dir.join("intent"), "42 reboot.target start waiting\n").expect("intent");
    ioc.clear();
    let status = sigterm(&mut lcs);
    assert!(status.success(), "{status}");
    ioc.wait_frame(SUPPRESS_5MIN, T);
    assert_eq!(ioc.next_frame(T), Some(HB_REBOOT));
    assert!(
        mngr_ipc::naming::candidates(&lcs.sock, "sos-lcs")
            .expect("dir")
            .is_empty(),
        "socket removed"
    );
}

#[test]
fn sigterm_during_a_poweroff_and_on_a_plain_stop() {
    let (mut lcs, mut ioc, _acrnd) = alive("lcs-term-po", &[]);
    std::fs::write(lcs.dir.join("intent"), "7 poweroff.target start waiting\n").expect("intent");
    ioc.clear();
    assert!(sigterm(&mut lcs).success());
    ioc.wait_frame(SUPPRESS_5MIN, T);
    assert_eq!(ioc.next_frame(T), Some(HB_S5));

    let (mut lcs, mut ioc, _acrnd) = alive("lcs-term-plain", &[]);
    std::fs::write(lcs.dir.join("intent"), "No jobs running.\n").expect("intent");
    ioc.clear();
    assert!(sigterm(&mut lcs).success());
    ioc.wait_frame(SUPPRESS_30MIN, T);
}

#[test]
fn systemd_notifications() {
    let (dir, sock, line) = Lcs::dir("lcs-notify");
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut ioc = FakeIoc::new(&line, false);
    let mut lcs = Lcs::spawn(
        dir,
        sock,
        line,
        &[],
        &[
            ("NOTIFY_SOCKET", notify_path.display().to_string()),
            ("WATCHDOG_USEC", "2000000".into()),
        ],
    );
    let mut got = String::new();
    let recv_until = |want: &str, got: &mut String| {
        wait_until(T, want, || {
            let mut b = [0u8; 512];
            if let Ok(n) = notify.recv(&mut b) {
                got.push_str(&String::from_utf8_lossy(&b[..n]));
            }
            got.contains(want).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}; got {got:?}"));
    };
    recv_until("READY=1", &mut got);
    recv_until("STATUS=IOC line", &mut got);
    recv_until("WATCHDOG=1", &mut got);
    ioc.wait_frame(HB_INIT, T);
    std::fs::write(lcs.dir.join("intent"), "").expect("intent");
    assert!(sigterm(&mut lcs).success());
    recv_until("STOPPING=1", &mut got);
}
