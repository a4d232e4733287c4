//! acrnd as a real process, with acrn-dm-sim VMs launched from a temp launch directory and
//! a test lifecycle service in the test process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acrn_tests::{Procs, TestDir, bin_path, wait_for};
use mngr_ipc::Profile;
use mngr_ipc::client::Client;
use mngr_ipc::event_log::{LoggedEvent, read_events};
use mngr_ipc::msg::{
    AckPayload, Body, MsgId, Request, StopTarget, VmEntry, epoch_now, err, vm_state,
};
use mngr_ipc::server::{Access, Handlers, ServerConfig, ServerThread, spawn_server};

pub(crate) const T: Duration = Duration::from_secs(15);

/// A test lifecycle service: answers WAKEUP_REASON with a settable reason and records what
/// acrnd sends.
pub(crate) struct TestLcs {
    _server: ServerThread,
    pub(crate) rx: Receiver<Body>,
    pub(crate) reason: Arc<AtomicU32>,
}

impl TestLcs {
    pub(crate) fn start(sock: &Path, reason: u32) -> Self {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let r = Arc::new(AtomicU32::new(reason));
        let r2 = Arc::clone(&r);
        let h = Handlers::new().fallback(Access::Open, move |req: &Request, call, _: &mut ()| {
            let _ = tx.lock().expect("lock").send(req.body.clone());
            match req.id() {
                MsgId::WakeupReason => call.ack(AckPayload::Reason(r2.load(Ordering::SeqCst))),
                _ => call.ack(AckPayload::Err(0)),
            }
        });
        TestLcs {
            _server: spawn_server(ServerConfig::new("sos-lcs", sock), h, ()).expect("test lcs"),
            rx,
            reason: r,
        }
    }

    /// The next request other than WAKEUP_REASON.
    pub(crate) fn next_report(&self) -> Body {
        loop {
            match self.rx.recv_timeout(T).expect("a request from acrnd") {
                Body::WakeupReason => continue,
                b => return b,
            }
        }
    }
}

pub(crate) struct Suite {
    // Fields drop in order: the processes go before their directory.
    pub(crate) procs: Procs,
    pub(crate) dir: TestDir,
    pub(crate) sock: PathBuf,
    pub(crate) launch: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) events: PathBuf,
    acrnd_runs: u32,
}

impl Suite {
    pub(crate) fn new(label: &str) -> Self {
        let dir = TestDir::new(label);
        let sock = dir.join("mngr");
        let launch = dir.join("add");
        let state = dir.join("state");
        std::fs::create_dir_all(&launch).expect("launch dir");
        let events = dir.join("acrnd.events");
        let procs = Procs::new(dir.path());
        Suite {
            procs,
            dir,
            sock,
            launch,
            state,
            events,
            acrnd_runs: 0,
        }
    }

    /// A launch script that records the wakeup reason it got and execs acrn-dm-sim.
    pub(crate) fn add_vm(&self, vm: &str, sim_args: &[&str]) {
        let mut flags: Vec<&str> = Vec::new();
        for (flag, value) in [
            ("--heartbeat-ms", "100"),
            ("--poweroff-delay-ms", "50"),
            ("--suspend-delay-ms", "50"),
        ] {
            if !sim_args.contains(&flag) {
                flags.extend([flag, value]);
            }
        }
        flags.extend_from_slice(sim_args);
        let script = format!(
            "#!/bin/bash\necho \"$ACRN_WAKEUP_REASON\" > {dir}/{vm}.reason\nexec {sim} --socket-dir {sock} --event-log {dir}/{vm}.events {extra} {vm}\n",
            dir = self.dir.path().display(),
            sim = bin_path("acrn-dm-sim").display(),
            sock = self.sock.display(),
            extra = flags.join(" "),
        );
        std::fs::write(self.launch.join(format!("{vm}.sh")), script).expect("script");
    }

    pub(crate) fn start_acrnd(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        self.acrnd_runs += 1;
        let mut cmd = Command::new(bin_path("acrnd"));
        cmd.arg("--launch-dir")
            .arg(&self.launch)
            .arg("--socket-dir")
            .arg(&self.sock)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--upstream-timers")
            .arg(self.dir.join("upstream_timer_list"))
            .arg("--intent-cmd")
            .arg(format!("cat {}", self.dir.join("intent").display()))
            .arg("--event-log")
            .arg(&self.events)
            .arg("--poll-ms")
            .arg("100")
            .arg("--lcs-timeout-ms")
            .arg("1000")
            .arg("-vv")
            .args(extra)
            .env_remove("NOTIFY_SOCKET");
        // The test process is the privileged client: allow its uid (root in CI, anyone else
        // on a developer's machine), unless the test sets its own policy.
        if !extra.contains(&"--allow-uid") {
            cmd.arg("--allow-uid")
                .arg(nix::unistd::getuid().as_raw().to_string());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        std::fs::write(self.dir.join("intent"), "").expect("intent");
        self.procs
            .spawn(&format!("acrnd{}", self.acrnd_runs), cmd)
            .expect("spawn acrnd");
        // Until it accepts: the socket file exists between bind and listen, and a
        // connection then is refused.
        wait_for(T, "acrnd socket", || {
            mngr_ipc::naming::candidates(&self.sock, "acrnd").is_ok_and(|c| {
                c.iter()
                    .any(|c| c.alive && std::os::unix::net::UnixStream::connect(&c.path).is_ok())
            })
        })
        .expect("acrnd serves");
    }

    pub(crate) fn acrnd_label(&self) -> String {
        format!("acrnd{}", self.acrnd_runs)
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(&self.sock, Profile::F)
    }

    pub(crate) fn send(&self, body: Body) -> AckPayload {
        self.client()
            .send("acrnd", &Request::now(body), T)
            .expect("acrnd answers")
            .payload
    }

    pub(crate) fn list(&self) -> Vec<VmEntry> {
        let mut all = Vec::new();
        loop {
            let start = u32::try_from(all.len()).expect("small");
            let AckPayload::VmPage(p) = self.send(Body::CtlList { start }) else {
                panic!("not a page");
            };
            let n = p.entries.len();
            all.extend(p.entries);
            if n == 0 || all.len() >= usize::try_from(p.total).expect("fits") {
                return all;
            }
        }
    }

    pub(crate) fn state_of(&self, vm: &str) -> Option<i32> {
        self.list()
            .into_iter()
            .find(|e| e.name == vm)
            .map(|e| e.state)
    }

    pub(crate) fn wait_state(&self, vm: &str, state: i32) {
        wait_for(T, &format!("{vm} in state {state}"), || {
            self.state_of(vm) == Some(state)
        })
        .unwrap_or_else(|e| panic!("{e}; list: {:?}", self.list()));
    }

    pub(crate) fn events(&self) -> Vec<LoggedEvent> {
        read_events(&self.events).expect("events")
    }

    pub(crate) fn vm_events(&self, vm: &str) -> Vec<LoggedEvent> {
        read_events(&self.dir.join(format!("{vm}.events"))).expect("vm events")
    }

    pub(crate) fn acrnctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin_path("acrnctl"))
            .arg("--socket-dir")
            .arg(&self.sock)
            .arg("--launch-dir")
            .arg(&self.launch)
            .arg("--timeout-ms")
            .arg("3000")
            .args(args)
            .output()
            .expect("acrnctl runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Suite {
    /// The device models acrnd launched live in sessions of their own (they must survive
    /// acrnd): the process guard does not reach them, so kill them here.
    fn drop(&mut self) {
        for server in mngr_ipc::naming::server_names(&self.sock).unwrap_or_default() {
            for c in mngr_ipc::naming::candidates(&self.sock, &server).unwrap_or_default() {
                // Only a process of this test: a stale socket's pid may belong to another
                // process by now (pids wrap around at pid_max).
                let ours = std::fs::read(format!("/proc/{}/cmdline", c.pid)).is_ok_and(|cmd| {
                    String::from_utf8_lossy(&cmd).contains(&*self.sock.to_string_lossy())
                });
                if server.ends_with(".monitor")
                    && ours
                    && let Ok(pid) = i32::try_from(c.pid)
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

pub(crate) fn stop_all(s: &Suite, target: StopTarget, force: i32, timeout: u32) {
    let ack = s.send(Body::AcrndStop {
        force,
        timeout,
        target,
    });
    assert_eq!(ack, AckPayload::Err(0), "ACRND_STOP acked at once");
}

#[test]
fn autostart_three_vms_with_the_wakeup_reason() {
    let mut s = Suite::new("acrnd-auto");
    let _lcs = TestLcs::start(&s.sock, 0x80_0020);
    for vm in ["vm1", "vm2", "vm3"] {
        s.add_vm(vm, &[]);
    }
    s.start_acrnd(&[], &[]);
    for vm in ["vm1", "vm2", "vm3"] {
        s.wait_state(vm, vm_state::STARTED);
        let got = std::fs::read_to_string(s.dir.join(format!("{vm}.reason"))).expect("reason file");
        assert_eq!(got.trim(), "0x800020", "{vm} saw ACRN_WAKEUP_REASON");
    }
    let list = s.list();
    assert!(list.iter().all(|e| e.pid > 0), "{list:?}");
}

#[test]
fn stop_all_s5_then_shutdown_reaches_the_lcs() {
    let mut s = Suite::new("acrnd-s5");
    let lcs = TestLcs::start(&s.sock, 0x20);
    for vm in ["vm1", "vm2", "vm3"] {
        s.add_vm(vm, &[]);
    }
    s.start_acrnd(&[], &[]);
    for vm in ["vm1", "vm2", "vm3"] {
        s.wait_state(vm, vm_state::STARTED);
    }
    stop_all(&s, StopTarget::S5, 0, 20);
    assert_eq!(lcs.next_report(), Body::Shutdown { err: 0 });
    for vm in ["vm1", "vm2", "vm3"] {
        assert_eq!(s.state_of(vm), Some(vm_state::STOPPED));
    }
}

#[test]
fn stop_all_s3_suspends_and_an_ignition_resume_wakes_everyone() {
    let mut s = Suite::new("acrnd-s3");
    let lcs = TestLcs::start(&s.sock, 0x20);
    for vm in ["vm1", "vm2"] {
        s.add_vm(vm, &[]);
    }
    s.start_acrnd(&[], &[]);
    for vm in ["vm1", "vm2"] {
        s.wait_state(vm, vm_state::STARTED);
    }
    stop_all(&s, StopTarget::S3, 0, 20);
    assert_eq!(lcs.next_report(), Body::Suspend { err: 0 });
    for vm in ["vm1", "vm2"] {
        assert_eq!(s.state_of(vm), Some(vm_state::SUSPENDED));
    }
    lcs.reason.store(0x20, Ordering::SeqCst);
    assert_eq!(
        s.send(Body::AcrndResume {
            force: 0,
            timeout: 0
        }),
        AckPayload::Err(0)
    );
    for vm in ["vm1", "vm2"] {
        s.wait_state(vm, vm_state::STARTED);
        wait_for(T, "the guest learns its wakeup reason", || {
            s.vm_events(vm).iter().any(|e| {
                e.kind == "guest.wake" && e.fields["reason"].as_u64().is_some_and(|r| r & 0x20 != 0)
            })
        })
        .expect("woken with the ignition reason");
    }
}

#[test]
fn mixed_stopped_and_suspended_reports_suspend() {
    let mut s = Suite::new("acrnd-mixed");
    let lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("vm1", &[]);
    s.add_vm("vm2", &[]);
    s.start_acrnd(&[], &[]);
    s.wait_state("vm1", vm_state::STARTED);
    s.wait_state("vm2", vm_state::STARTED);
    let (code, _, e) = s.acrnctl(&["stop", "vm1"]);
    assert_eq!(code, 0, "{e}");
    s.wait_state("vm1", vm_state::STOPPED);
    stop_all(&s, StopTarget::S3, 0, 20);
    assert_eq!(lcs.next_report(), Body::Suspend { err: 0 });
}

#[test]
fn a_hung_vm_is_named_refused_or_forced() {
    let mut s = Suite::new("acrnd-hang");
    let lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("good", &[]);
    s.add_vm("hung", &["--fault", "hang-stop"]);
    s.start_acrnd(&["--kill-grace-ms", "500"], &[]);
    s.wait_state("good", vm_state::STARTED);
    s.wait_state("hung", vm_state::STARTED);
    // Without force: the deadline passes, acrnd refuses and names the blocker.
    stop_all(&s, StopTarget::S5, 0, 1);
    assert_eq!(lcs.next_report(), Body::Suspend { err: -1 });
    let deadline = s
        .events()
        .into_iter()
        .find(|e| e.kind == "stop_all.deadline")
        .expect("deadline logged");
    assert_eq!(deadline.fields["blocking"], serde_json::json!(["hung"]));
    assert_eq!(
        s.state_of("hung").map(|st| st != vm_state::STOPPED),
        Some(true)
    );
    // With force: the straggler is powered off, and the flow completes.
    stop_all(&s, StopTarget::S5, 1, 1);
    assert_eq!(lcs.next_report(), Body::Shutdown { err: 0 });
    assert_eq!(s.state_of("hung"), Some(vm_state::STOPPED));
}

#[test]
fn guest_rtc_timers_are_stored_sent_and_honoured() {
    let mut s = Suite::new("acrnd-rtc");
    let lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("early", &["--rtc-secs", "3"]);
    s.add_vm("late", &["--rtc-secs", "3600"]);
    s.add_vm("plain", &[]);
    s.start_acrnd(&[], &[]);
    for vm in ["early", "late", "plain"] {
        s.wait_state(vm, vm_state::STARTED);
    }
    let before = epoch_now();
    stop_all(&s, StopTarget::S3, 0, 20);
    // The nearest wake-up goes to the LCS before the verdict.
    let Body::RtcTimer { t, .. } = lcs.next_report() else {
        panic!("RTC_TIMER first");
    };
    let t = u64::try_from(t).expect("positive");
    assert!(
        t >= before + 2 && t <= epoch_now() + 3,
        "early's timer: {t}"
    );
    assert_eq!(lcs.next_report(), Body::Suspend { err: 0 });
    // Both timers are on disk, in the upstream format.
    let store = std::fs::read_to_string(s.state.join("timer_list")).expect("store");
    let lines: Vec<&str> = store.lines().collect();
    assert_eq!(lines.len(), 2, "{store}");
    assert!(
        lines[0].starts_with("early\t") && lines[1].starts_with("late\t"),
        "{store}"
    );
    // A wake by ignition resumes everyone and keeps the timers.
    lcs.reason.store(0x20, Ordering::SeqCst);
    s.send(Body::AcrndResume {
        force: 0,
        timeout: 0,
    });
    for vm in ["early", "late", "plain"] {
        s.wait_state(vm, vm_state::STARTED);
    }
    let AckPayload::TimerPage(p) = s.send(Body::CtlTimers { start: 0 }) else {
        panic!("timer page");
    };
    assert_eq!(p.total, 2, "a non-RTC wake keeps the timers");
}

#[test]
fn an_rtc_wake_resumes_only_the_due_vm() {
    let mut s = Suite::new("acrnd-rtcwake");
    let lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("early", &["--rtc-secs", "2"]);
    s.add_vm("late", &["--rtc-secs", "3600"]);
    s.add_vm("plain", &[]);
    s.start_acrnd(&[], &[]);
    for vm in ["early", "late", "plain"] {
        s.wait_state(vm, vm_state::STARTED);
    }
    stop_all(&s, StopTarget::S3, 0, 20);
    let Body::RtcTimer { t, .. } = lcs.next_report() else {
        panic!("RTC_TIMER first");
    };
    assert_eq!(lcs.next_report(), Body::Suspend { err: 0 });
    // The IOC wakes the system by RTC once early's time has come.
    let t = u64::try_from(t).expect("positive");
    wait_for(T, "early's wake-up time", || epoch_now() >= t).expect("time passes");
    lcs.reason.store(0x200, Ordering::SeqCst);
    s.send(Body::AcrndResume {
        force: 0,
        timeout: 0,
    });
    s.wait_state("early", vm_state::STARTED);
    wait_for(T, "early learns it was woken by RTC", || {
        s.vm_events("early").iter().any(|e| {
            e.kind == "guest.wake" && e.fields["reason"].as_u64().is_some_and(|r| r & 0x200 != 0)
        })
    })
    .expect("RTC reason");
    assert_eq!(s.state_of("late"), Some(vm_state::SUSPENDED), "not due yet");
    assert_eq!(s.state_of("plain"), Some(vm_state::SUSPENDED), "no timer");
    let AckPayload::TimerPage(p) = s.send(Body::CtlTimers { start: 0 }) else {
        panic!("timer page");
    };
    assert_eq!(
        p.entries
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        vec!["late"]
    );
}

#[test]
fn a_crash_while_writing_the_store_loses_no_acked_timer() {
    for point in ["store.before-rename", "store.after-rename"] {
        let mut s = Suite::new("acrnd-crash");
        let _lcs = TestLcs::start(&s.sock, 0x20);
        s.add_vm("vm1", &[]);
        s.add_vm("vm2", &[]);
        s.start_acrnd(&["--no-autostart"], &[]);
        // A first timer, acked, then a second whose write crashes acrnd.
        let c = s.client();
        let ack = c
            .send(
                "acrnd",
                &Request::now(Body::AcrndTimer {
                    name: "vm1".into(),
                    t: 100,
                }),
                T,
            )
            .expect("acked");
        assert_eq!(ack.err(), Some(0));
        let first = s.acrnd_label();
        s.procs
            .signal(&first, nix::sys::signal::Signal::SIGTERM)
            .expect("stop acrnd");
        s.procs.wait_exit(&first, T).expect("exits");
        s.start_acrnd(&["--no-autostart"], &[("ACRND_FAULT", point)]);
        let crashing = s.acrnd_label();
        let r = c.send(
            "acrnd",
            &Request::now(Body::AcrndTimer {
                name: "vm2".into(),
                t: 200,
            }),
            T,
        );
        assert!(
            r.is_err() || r.as_ref().is_ok_and(|a| a.err() != Some(0)),
            "{point}: no success ack: {r:?}"
        );
        let status = s.procs.wait_exit(&crashing, T).expect("crashed");
        assert!(!status.success(), "{point}: aborted");
        assert!(
            s.events()
                .iter()
                .any(|e| e.kind == "fault" && e.fields["point"] == point),
            "{point} was reached"
        );
        // Restart: the store parses and holds every acked timer.
        s.start_acrnd(&["--no-autostart"], &[]);
        let AckPayload::TimerPage(p) = s.send(Body::CtlTimers { start: 0 }) else {
            panic!("timer page");
        };
        let names: Vec<&str> = p.entries.iter().map(|e| e.name.as_str()).collect();
        assert!(
            names.contains(&"vm1"),
            "{point}: acked timer kept: {names:?}"
        );
        let text = std::fs::read_to_string(s.state.join("timer_list")).expect("store");
        let (_, bad) = acrnd::timers::parse(&text);
        assert!(bad.is_empty(), "{point}: store parses: {text:?}");
    }
}

#[test]
fn a_restart_leaves_vms_running_and_reattaches() {
    let mut s = Suite::new("acrnd-restart");
    let _lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("vm1", &[]);
    s.start_acrnd(&[], &[]);
    s.wait_state("vm1", vm_state::STARTED);
    let pid = s.list()[0].pid;
    let first = s.acrnd_label();
    s.procs
        .signal(&first, nix::sys::signal::Signal::SIGTERM)
        .expect("stop");
    s.procs.wait_exit(&first, T).expect("exits");
    assert!(
        mngr_ipc::naming::pid_alive(u32::try_from(pid).expect("pid")),
        "the VM survives"
    );
    s.start_acrnd(&[], &[]);
    s.wait_state("vm1", vm_state::STARTED);
    assert_eq!(s.list()[0].pid, pid, "same device model, not a second one");
    // The second acrnd has its boot reason (both have logged one): a DM exit from now on
    // cannot race the boot's starts.
    wait_for(T, "the second boot's reason", || {
        s.events().iter().filter(|e| e.kind == "reason").count() == 2
    })
    .expect("the restarted acrnd learns the reason");
    // And it still watches it: the DM's exit is seen at once.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    s.wait_state("vm1", vm_state::STOPPED);
}

#[test]
fn host_poweroff_stops_every_vm() {
    let mut s = Suite::new("acrnd-hostoff");
    let _lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("vm1", &[]);
    s.add_vm("vm2", &[]);
    s.start_acrnd(&[], &[]);
    s.wait_state("vm1", vm_state::STARTED);
    s.wait_state("vm2", vm_state::STARTED);
    let pids: Vec<i32> = s.list().iter().map(|e| e.pid).collect();
    std::fs::write(s.dir.join("intent"), "1 poweroff.target start waiting\n").expect("intent");
    let label = s.acrnd_label();
    s.procs
        .signal(&label, nix::sys::signal::Signal::SIGTERM)
        .expect("stop");
    assert!(s.procs.wait_exit(&label, T).expect("exits").success());
    for pid in pids {
        wait_for(T, "the DM to exit", || {
            !mngr_ipc::naming::pid_alive(u32::try_from(pid).expect("pid"))
        })
        .expect("stopped");
    }
}

#[test]
fn conflicting_operations_are_refused() {
    let mut s = Suite::new("acrnd-conflict");
    let _lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("vm1", &["--poweroff-delay-ms", "2000"]);
    s.start_acrnd(&[], &[]);
    s.wait_state("vm1", vm_state::STARTED);
    // Resume while running, suspend of an unknown VM.
    assert_eq!(
        s.send(Body::CtlResume {
            name: "vm1".into(),
            reason: 0
        }),
        AckPayload::Err(err::INVALID)
    );
    assert_eq!(
        s.send(Body::CtlSuspend {
            name: "nope".into()
        }),
        AckPayload::Err(err::NOT_FOUND)
    );
    // Start while stopping.
    assert_eq!(
        s.send(Body::CtlStop {
            name: "vm1".into(),
            force: 0,
            timeout: 0
        }),
        AckPayload::Err(0)
    );
    let during = s.send(Body::CtlStart { name: "vm1".into() });
    assert!(
        matches!(during, AckPayload::Err(e) if e == err::INVALID || e == err::BUSY),
        "{during:?}"
    );
    s.wait_state("vm1", vm_state::STOPPED);
    // Resume while stopped; then a start works.
    assert_eq!(
        s.send(Body::CtlResume {
            name: "vm1".into(),
            reason: 0
        }),
        AckPayload::Err(err::INVALID)
    );
    assert_eq!(
        s.send(Body::CtlStart { name: "vm1".into() }),
        AckPayload::Err(0)
    );
    s.wait_state("vm1", vm_state::STARTED);
}

#[test]
fn unauthorized_peers_are_refused() {
    let mut s = Suite::new("acrnd-auth");
    let _lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("vm1", &[]);
    s.start_acrnd(&["--allow-uid", "4242"], &[]);
    s.wait_state("vm1", vm_state::STARTED);
    let refused = s.send(Body::AcrndStop {
        force: 0,
        timeout: 5,
        target: StopTarget::S5,
    });
    assert_eq!(refused, AckPayload::Err(err::NOT_PERMITTED));
    assert_eq!(
        s.send(Body::CtlStop {
            name: "vm1".into(),
            force: 1,
            timeout: 0
        }),
        AckPayload::Err(err::NOT_PERMITTED)
    );
    assert_eq!(
        s.state_of("vm1"),
        Some(vm_state::STARTED),
        "nothing happened"
    );
    assert!(s.events().iter().any(|e| e.kind == "ipc.refused"));
    // Reading is not privileged.
    assert!(matches!(s.send(Body::CtlStatus), AckPayload::Status(_)));
}

#[test]
fn acrnctl_commands_and_exit_codes() {
    let mut s = Suite::new("acrnd-ctl");
    let _lcs = TestLcs::start(&s.sock, 0x20);
    // acrnd not running: exit 3, quickly.
    let t0 = Instant::now();
    let (code, _, e) = s.acrnctl(&["list"]);
    assert_eq!(code, 3, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // add: the name comes from the script; a taken or invalid name is refused.
    let script = s.dir.join("new.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\nexec {} --socket-dir {} --heartbeat-ms 100 vm9\n",
            bin_path("acrn-dm-sim").display(),
            s.sock.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (code, out, e) = s.acrnctl(&["add", script.to_str().expect("utf-8"), "--", "-x", "1"]);
    assert_eq!(code, 0, "{e}");
    assert!(out.contains("vm9 added"), "{out}");
    assert_eq!(
        std::fs::read_to_string(s.launch.join("vm9.args"))
            .expect("args")
            .trim(),
        "-x 1"
    );
    let (code, _, _) = s.acrnctl(&["add", script.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "name taken");
    let (code, _, _) = s.acrnctl(&["add", script.to_str().expect("utf-8"), "--name", "9bad"]);
    assert_eq!(code, 2, "invalid name");
    std::fs::remove_file(s.launch.join("vm9.args")).expect("rm");
    s.start_acrnd(&["--no-autostart"], &[]);
    let (code, out, _) = s.acrnctl(&["list"]);
    assert_eq!(code, 0);
    assert!(out.contains("vm9") && out.contains("stopped"), "{out}");
    let (code, _, e) = s.acrnctl(&["start", "vm9"]);
    assert_eq!(code, 0, "{e}");
    s.wait_state("vm9", vm_state::STARTED);
    let (code, _, _) = s.acrnctl(&["del", "vm9"]);
    assert_eq!(code, 1, "refused while running");
    let (code, _, e) = s.acrnctl(&["suspend", "vm9"]);
    assert_eq!(code, 0, "{e}");
    s.wait_state("vm9", vm_state::SUSPENDED);
    let (code, _, e) = s.acrnctl(&["resume", "vm9", "--reason", "0x800"]);
    assert_eq!(code, 0, "{e}");
    s.wait_state("vm9", vm_state::STARTED);
    let (code, out, _) = s.acrnctl(&["--json", "list"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v[0]["name"], "vm9");
    assert_eq!(v[0]["state"], "started");
    let (code, out, _) = s.acrnctl(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("lifecycle service: reachable"), "{out}");
    let (code, out, _) = s.acrnctl(&["timers"]);
    assert_eq!(code, 0);
    assert!(out.contains("No pending"), "{out}");
    let (code, _, _) = s.acrnctl(&["blkrescan", "vm9", "nocomma"]);
    assert_eq!(code, 2);
    // The simulated device model has no virtio-blk: its monitor says so, distinctly.
    let (code, _, e) = s.acrnctl(&["blkrescan", "vm9", "1,/data/disk.img"]);
    assert_eq!(code, 1, "{e}");
    assert!(e.contains("not supported"), "{e}");
    // reset: stop, wait until stopped, start again (a new device model).
    let before = s.list()[0].pid;
    let (code, _, e) = s.acrnctl(&["reset", "vm9"]);
    assert_eq!(code, 0, "{e}");
    s.wait_state("vm9", vm_state::STARTED);
    assert_ne!(s.list()[0].pid, before, "a new device model");
    let (code, _, e) = s.acrnctl(&["stop", "--force", "vm9"]);
    assert_eq!(code, 0, "{e}");
    s.wait_state("vm9", vm_state::STOPPED);
    let (code, _, _) = s.acrnctl(&["resume", "vm9"]);
    assert_eq!(code, 1, "resume while stopped fails");
    let (code, out, _) = s.acrnctl(&["del", "vm9"]);
    assert_eq!(code, 0, "{out}");
    assert!(!s.launch.join("vm9.sh").exists());
    let (code, _, _) = s.acrnctl(&["frobnicate"]);
    assert_eq!(code, 2, "usage");
}

#[test]
fn systemd_notifications_while_stopping_vms() {
    let mut s = Suite::new("acrnd-notify");
    let _lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("vm1", &[]);
    let path = s.dir.join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let p = path.display().to_string();
    s.start_acrnd(&[], &[("NOTIFY_SOCKET", &p), ("WATCHDOG_USEC", "1000000")]);
    s.wait_state("vm1", vm_state::STARTED);
    let mut got = String::new();
    let recv_until = |want: &str, got: &mut String| {
        wait_for(T, want, || {
            let mut b = [0u8; 512];
            if let Ok(n) = sock.recv(&mut b) {
                got.push_str(&String::from_utf8_lossy(&b[..n]));
            }
            got.contains(want)
        })
        .unwrap_or_else(|e| panic!("{e}; got {got:?}"));
    };
    recv_until("READY=1", &mut got);
    recv_until("WATCHDOG=1", &mut got);
    std::fs::write(s.dir.join("intent"), "5 reboot.target start waiting\n").expect("intent");
    let label = s.acrnd_label();
    s.procs
        .signal(&label, nix::sys::signal::Signal::SIGTERM)
        .expect("stop");
    recv_until("STOPPING=1", &mut got);
    recv_until("EXTEND_TIMEOUT_USEC=", &mut got);
    assert!(s.procs.wait_exit(&label, T).expect("exits").success());
}

#[test]
fn upstream_timers_are_imported_once() {
    let mut s = Suite::new("acrnd-import");
    let _lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("vm1", &[]);
    let later = epoch_now() + 7200;
    std::fs::write(
        s.dir.join("upstream_timer_list"),
        format!("vm1\t{later}\nbroken line\nvm2\t{}\n", later + 5),
    )
    .expect("upstream list");
    s.start_acrnd(&["--no-autostart"], &[]);
    let AckPayload::TimerPage(p) = s.send(Body::CtlTimers { start: 0 }) else {
        panic!("page");
    };
    assert_eq!(p.total, 2, "malformed line skipped, good ones kept");
    assert!(
        s.state.join("timer_list.imported").exists(),
        "import recorded"
    );
    assert!(s.events().iter().any(|e| e.kind == "timers.imported"));
    // A second start does not import again (a timer consumed meanwhile stays consumed).
    std::fs::write(s.state.join("timer_list"), format!("vm1\t{later}\n")).expect("store");
    let label = s.acrnd_label();
    s.procs
        .signal(&label, nix::sys::signal::Signal::SIGTERM)
        .expect("stop");
    s.procs.wait_exit(&label, T).expect("exits");
    s.start_acrnd(&["--no-autostart"], &[]);
    let AckPayload::TimerPage(p) = s.send(Body::CtlTimers { start: 0 }) else {
        panic!("page");
    };
    assert_eq!(p.total, 1);
}

#[test]
fn no_target_waits_for_guests_driven_by_the_ioc() {
    // The C cbc_lifecycle names no target: acrnd sends nothing and waits while the guests
    // act on the IOC's request, which reaches them through ioc-sim's mirror channels.
    let mut s = Suite::new("acrnd-mirror");
    let lcs = TestLcs::start(&s.sock, 0x20);
    let control = s.dir.join("ioc.sock");
    let mut sim = Command::new(bin_path("ioc-sim"));
    sim.arg("run")
        .arg("--line")
        .arg(s.dir.join("cbc-lifecycle"))
        .arg("--control")
        .arg(&control)
        .arg("--reason-period-ms")
        .arg("100")
        .arg("--socket-dir")
        .arg(&s.sock);
    for vm in ["vm1", "vm2"] {
        sim.arg("--mirror").arg(s.dir.join(format!("{vm}.mirror")));
    }
    s.procs.spawn("ioc-sim", sim).expect("ioc-sim");
    for vm in ["vm1", "vm2"] {
        let mirror = s.dir.join(format!("{vm}.mirror"));
        wait_for(T, "mirror channel", || mirror.exists()).expect("mirror");
        s.add_vm(vm, &["--native", mirror.to_str().expect("utf-8")]);
    }
    s.start_acrnd(&[], &[]);
    s.wait_state("vm1", vm_state::STARTED);
    s.wait_state("vm2", vm_state::STARTED);
    stop_all(&s, StopTarget::Unspecified, 0, 20);
    let ctl = |words: &[&str]| {
        let out = Command::new(bin_path("ioc-sim"))
            .arg("ctl")
            .arg("--control")
            .arg(&control)
            .args(words)
            .output()
            .expect("ioc-sim ctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ctl(&["ignition", "off"]);
    assert_eq!(lcs.next_report(), Body::Suspend { err: 0 });
    assert_eq!(s.state_of("vm1"), Some(vm_state::SUSPENDED));
    assert_eq!(s.state_of("vm2"), Some(vm_state::SUSPENDED));
    let dm_requests = s.events().iter().filter(|e| e.kind == "dm.send").count();
    assert_eq!(dm_requests, 0, "acrnd sent no DM request for the stop");
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

#[test]
fn a_timer_due_during_a_stop_all_waits_without_spinning() {
    let mut s = Suite::new("acrnd-held");
    let lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("vm1", &["--fault", "hang-stop"]);
    s.add_vm("vm2", &[]);
    s.start_acrnd(&["--no-autostart"], &[]);
    assert_eq!(
        s.send(Body::CtlStart { name: "vm1".into() }),
        AckPayload::Err(0)
    );
    s.wait_state("vm1", vm_state::STARTED);
    // vm1 never stops: the stop-all stays open for 3 s; vm2's timer is due meanwhile.
    stop_all(&s, StopTarget::S5, 0, 3);
    let ack = s.send(Body::AcrndTimer {
        name: "vm2".into(),
        t: 0,
    });
    assert_eq!(ack, AckPayload::Err(0));
    let pid = s.procs.pid(&s.acrnd_label());
    let before = cpu_ticks(pid);
    let window = Instant::now() + Duration::from_secs(1);
    wait_for(T, "a second to pass", || Instant::now() >= window).expect("time");
    let spent = cpu_ticks(pid) - before;
    assert!(
        spent < 30,
        "acrnd used {spent} ticks of CPU in 1 s of waiting"
    );
    assert_eq!(
        s.state_of("vm2"),
        Some(vm_state::STOPPED),
        "not launched during the stop-all"
    );
    // The stop-all is refused at its deadline; the transition is over and the timer fires.
    assert_eq!(lcs.next_report(), Body::Suspend { err: -1 });
    s.wait_state("vm2", vm_state::STARTED);
}
