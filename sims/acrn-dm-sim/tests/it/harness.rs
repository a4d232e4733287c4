//! The test bench: acrn-dm-sim processes launched as acrnd launches acrn-dm (a launch
//! script that `exec`s it, the VM name last), a test `acrnd` recording what the device
//! models send it, mngr clients, event-log helpers and a pty standing in for a native
//! lifecycle channel.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use acrn_tests::{Procs, TestDir, wait_for, wait_until};
use mngr_ipc::client::{Client, ClientError};
use mngr_ipc::event_log::{LoggedEvent, read_events};
use mngr_ipc::msg::{AckPayload, Body, MsgId, Request};
use mngr_ipc::server::{
    Access, Call, Handlers, PeerCred, ServerConfig, ServerThread, spawn_server,
};
use mngr_ipc::{Ack, Profile};
use serialport::{SerialPort, TTYPort};

/// Bound of every wait.
pub const T: Duration = Duration::from_secs(10);
/// Guest heartbeat period in the tests.
pub const HB_MS: &str = "50";

/// What the test acrnd received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub body: Body,
    pub peer: PeerCred,
}

type Record = Arc<Mutex<Vec<Received>>>;

/// A test acrnd: records ACRND_TIMER and DM_NOTIFY with the sender's credentials and acks 0.
pub struct TestAcrnd {
    _server: ServerThread,
    got: Record,
}

impl TestAcrnd {
    pub fn start(dir: &Path, profile: Profile) -> Self {
        let got: Record = Arc::default();
        let rec = |got: Record| {
            move |r: &Request, call: Call<'_>, _: &mut ()| {
                let peer = call.peer();
                got.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Received {
                        body: r.body.clone(),
                        peer,
                    });
                call.ack(AckPayload::Err(0))
            }
        };
        let h = Handlers::new()
            .on(MsgId::AcrndTimer, Access::Open, rec(Arc::clone(&got)))
            .on(MsgId::DmNotify, Access::Open, rec(Arc::clone(&got)));
        let mut cfg = ServerConfig::new("acrnd", dir);
        cfg.profile = profile;
        let server = spawn_server(cfg, h, ()).expect("test acrnd");
        TestAcrnd {
            _server: server,
            got,
        }
    }

    pub fn all(&self) -> Vec<Received> {
        self.got
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The DM_NOTIFY modes received from `vm`, in order, with the sender's pid.
    pub fn notifies(&self, vm: &str) -> Vec<(i32, i32)> {
        self.all()
            .into_iter()
            .filter_map(|r| match r.body {
                Body::DmNotify { name, mode } if name == vm => Some((mode, r.peer.pid)),
                _ => None,
            })
            .collect()
    }

    /// The DM_NOTIFY modes received from `vm`, in order.
    pub fn modes(&self, vm: &str) -> Vec<i32> {
        self.notifies(vm).into_iter().map(|(m, _)| m).collect()
    }

    /// Waits until the modes received from `vm` are exactly `want`.
    pub fn wait_modes(&self, vm: &str, want: &[i32]) {
        wait_for(T, &format!("DM_NOTIFY modes {want:?} from {vm}"), || {
            self.modes(vm) == want
        })
        .unwrap_or_else(|e| panic!("{e}; got {:?}", self.modes(vm)));
    }
}

/// A test's device models, test acrnd, socket directory and event logs.
pub struct Bench {
    pub acrnd: Option<TestAcrnd>,
    pub procs: Procs,
    pub sock: PathBuf,
    dir: TestDir,
}

impl Bench {
    /// A bench with a test acrnd.
    pub fn new(label: &str) -> Self {
        Bench::with_profile(label, Profile::F)
    }

    /// A bench with a test acrnd speaking `profile`.
    pub fn with_profile(label: &str, profile: Profile) -> Self {
        let mut b = Bench::without_acrnd(label);
        b.acrnd = Some(TestAcrnd::start(&b.sock, profile));
        b
    }

    /// A bench where no acrnd serves.
    pub fn without_acrnd(label: &str) -> Self {
        let dir = TestDir::new(label);
        let sock = dir.join("mngr");
        Bench {
            acrnd: None,
            procs: Procs::new(dir.path()),
            sock,
            dir,
        }
    }

    pub fn acrnd(&self) -> &TestAcrnd {
        self.acrnd.as_ref().expect("this bench has a test acrnd")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The event log of the process `label`.
    pub fn event_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.events.jsonl"))
    }

    /// A launch script like acrnd's `<vm>.sh`: it `exec`s the device model.
    fn launch_script(&self) -> PathBuf {
        let path = self.dir.join("launch.sh");
        if !path.exists() {
            let bin = env!("CARGO_BIN_EXE_acrn-dm-sim");
            fs::write(&path, format!("#!/bin/sh\nexec '{bin}' \"$@\"\n")).expect("script");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        path
    }

    /// The command acrnd would run for `vm` with `extra` flags (the VM name last).
    pub fn command(&self, label: &str, vm: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg(self.launch_script())
            .arg("--socket-dir")
            .arg(&self.sock)
            .arg("--event-log")
            .arg(self.event_path(label));
        if !extra.contains(&"--heartbeat-ms") {
            cmd.args(["--heartbeat-ms", HB_MS]);
        }
        cmd.args(extra).arg("-vv").arg(vm);
        cmd.env_remove("ACRN_WAKEUP_REASON").env_remove("RUST_LOG");
        cmd
    }

    /// Launches `vm` as process `label`; returns its pid.
    pub fn spawn(&mut self, label: &str, vm: &str, extra: &[&str]) -> u32 {
        let cmd = self.command(label, vm, extra);
        self.procs.spawn(label, cmd).expect("spawn acrn-dm-sim")
    }

    /// Launches `vm` and waits until it answers DM_QUERY with 0 and its guest is active.
    pub fn spawn_running(&mut self, label: &str, vm: &str, extra: &[&str]) -> u32 {
        let pid = self.spawn(label, vm, extra);
        self.wait_query(vm, 0);
        self.wait_event(label, "guest active", |e| {
            e.kind == "guest.state" && e.fields["to"] == "active"
        });
        pid
    }

    pub fn client(&self, profile: Profile) -> Client {
        Client::new(&self.sock, profile)
    }

    /// Sends `body` to `<vm>.monitor` (profile F).
    pub fn send(&self, vm: &str, body: Body) -> Result<Ack, ClientError> {
        self.send_as(Profile::F, vm, body)
    }

    pub fn send_as(&self, profile: Profile, vm: &str, body: Body) -> Result<Ack, ClientError> {
        self.client(profile)
            .send(&format!("{vm}.monitor"), &Request::now(body), T)
    }

    /// Sends `body` and returns the ack's `err`.
    pub fn err_of(&self, vm: &str, body: Body) -> i32 {
        let ack = self.send(vm, body).expect("acked");
        match ack.payload {
            AckPayload::Err(e) => e,
            other => panic!("expected an err ack, got {other:?}"),
        }
    }

    /// DM_QUERY's answer.
    pub fn query(&self, vm: &str) -> Option<i32> {
        match self.send(vm, Body::DmQuery).ok()?.payload {
            AckPayload::State(s) => Some(s),
            _ => None,
        }
    }

    pub fn wait_query(&self, vm: &str, want: i32) {
        wait_for(T, &format!("DM_QUERY of {vm} = {want}"), || {
            self.query(vm) == Some(want)
        })
        .unwrap_or_else(|e| panic!("{e}; last {:?}", self.query(vm)));
    }

    pub fn events(&self, label: &str) -> Vec<LoggedEvent> {
        read_events(&self.event_path(label)).expect("event log")
    }

    /// Waits for an event of `label` matching `pred`; returns it.
    pub fn wait_event(
        &self,
        label: &str,
        what: &str,
        pred: impl Fn(&LoggedEvent) -> bool,
    ) -> LoggedEvent {
        wait_until(T, what, || self.events(label).into_iter().find(|e| pred(e)))
            .unwrap_or_else(|e| panic!("{e}; events: {:#?}", self.tail(label)))
    }

    fn tail(&self, label: &str) -> Vec<String> {
        let ev = self.events(label);
        ev[ev.len().saturating_sub(40)..]
            .iter()
            .map(|e| format!("{} {:?}", e.kind, e.fields))
            .collect()
    }

    pub fn wait_exit(&mut self, label: &str) -> ExitStatus {
        self.procs.wait_exit(label, T).expect("exits")
    }

    /// The monitor sockets of `vm` in the socket directory.
    pub fn sockets(&self, vm: &str) -> Vec<String> {
        let prefix = format!("{vm}.monitor.");
        let mut v: Vec<String> = fs::read_dir(&self.sock)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// The service-frame hexes of `kind` events, in order.
pub fn frames(events: &[LoggedEvent], kind: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.fields["hex"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Index of the first event matching `pred`.
pub fn position(events: &[LoggedEvent], pred: impl Fn(&LoggedEvent) -> bool) -> Option<usize> {
    events.iter().position(pred)
}

pub fn is_frame(e: &LoggedEvent, kind: &str, hex: &str) -> bool {
    e.kind == kind && e.fields["hex"] == hex
}

/// A native lifecycle channel as an ioc-sim mirror provides it: a pty whose slave is
/// symlinked where the device model opens it; the test writes 4-byte frames on the master.
pub struct NativeLine {
    master: TTYPort,
    _slave: TTYPort,
}

impl NativeLine {
    pub fn new(link: &Path) -> Self {
        // serialport's pair() is not thread-safe: one at a time.
        static PTY: OnceLock<Mutex<()>> = OnceLock::new();
        let _g = PTY
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (mut master, slave) = TTYPort::pair().expect("pty pair");
        // pair() opens both ends without O_CLOEXEC: processes that parallel tests start
        // would inherit them and keep the line up after this end drops it.
        mngr_ipc::sys::set_cloexec(&master).expect("FD_CLOEXEC");
        mngr_ipc::sys::set_cloexec(&slave).expect("FD_CLOEXEC");
        master
            .set_timeout(Duration::from_millis(20))
            .expect("timeout");
        let name = slave.name().expect("slave name");
        std::os::unix::fs::symlink(name, link).expect("symlink");
        NativeLine {
            master,
            _slave: slave,
        }
    }

    pub fn send(&mut self, frame: [u8; 4]) {
        self.master.write_all(&frame).expect("write to the pty");
        self.master.flush().expect("flush");
    }

    /// Reads (and discards) what the device model wrote, if anything: it must write nothing.
    pub fn written(&mut self) -> usize {
        let mut b = [0u8; 64];
        self.master.read(&mut b).unwrap_or(0)
    }
}
