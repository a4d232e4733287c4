//! A test device model: the monitor with a recording provider on an event loop that the
//! test drives while a client thread asks.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use acrn_dm_monitor::monitor::{DeviceModel, Monitor, MonitorConfig, MonitorState};
use acrn_dm_monitor::ops::{BlkRescan, OpResult, OpsRegistry, VmOps};
use mngr_ipc::client::Client;
use mngr_ipc::msg::{AckPayload, Body, Request};
use mngr_ipc::runtime::EventLoop;
use mngr_ipc::vocabulary::VmName;
use mngr_ipc::{Profile, auth::Policy};

/// Bound of every wait.
pub const T: Duration = Duration::from_secs(5);

/// The device model's state.
pub struct Dm {
    pub m: MonitorState<Dm>,
    /// The ops the recording provider was asked for, in order.
    pub calls: Vec<String>,
}

impl DeviceModel for Dm {
    fn monitor(&mut self) -> &mut MonitorState<Dm> {
        &mut self.m
    }
}

/// A provider that does every op and records it.
pub struct Rec;

impl Rec {
    fn done(dm: &mut Dm, op: &str) -> OpResult {
        dm.calls.push(op.to_owned());
        OpResult::Done
    }
}

impl VmOps<Dm> for Rec {
    fn label(&self) -> &str {
        "rec"
    }
    fn stop(&mut self, dm: &mut Dm) -> OpResult {
        Rec::done(dm, "stop")
    }
    fn suspend(&mut self, dm: &mut Dm) -> OpResult {
        Rec::done(dm, "suspend")
    }
    fn resume(&mut self, dm: &mut Dm, _reason: u32) -> OpResult {
        Rec::done(dm, "resume")
    }
    fn pause(&mut self, dm: &mut Dm) -> OpResult {
        Rec::done(dm, "pause")
    }
    fn unpause(&mut self, dm: &mut Dm) -> OpResult {
        Rec::done(dm, "unpause")
    }
    fn rescan(&mut self, dm: &mut Dm, _args: &BlkRescan) -> OpResult {
        Rec::done(dm, "rescan")
    }
    fn powered_off(&mut self, dm: &mut Dm) {
        dm.calls.push("powered_off".to_owned());
    }
}

/// A config for `vm` in `dir` with `policy`, without the start-up DM_NOTIFY (no acrnd
/// serves in these tests unless one is started).
pub fn config(vm: &str, dir: &Path, profile: Profile, policy: Option<Policy>) -> MonitorConfig {
    let mut cfg = MonitorConfig::new(VmName::new(vm, profile).expect("valid name"), dir);
    cfg.profile = profile;
    cfg.policy = policy;
    cfg.announce = false;
    cfg
}

/// Serves `cfg` with [`Rec`] on a loop driven here while `ask` runs on a thread with a
/// client of the socket directory, then until nothing is pending for acrnd (bounded);
/// returns what `ask` returned and the device model.
pub fn serve<R: Send + 'static>(
    cfg: MonitorConfig,
    ask: impl FnOnce(Asker) -> R + Send + 'static,
) -> (R, Dm) {
    let asker = Asker {
        client: Client::new(&cfg.socket_dir, cfg.profile),
        monitor: cfg.vm.monitor_name(),
    };
    let monitor = Monitor::bind(cfg, OpsRegistry::new().with(Rec)).expect("bind");
    let mut el = EventLoop::new().expect("loop");
    let mut dm = Dm {
        m: monitor.add_to(&mut el).expect("add"),
        calls: Vec::new(),
    };
    let t = thread::spawn(move || ask(asker));
    while !t.is_finished() {
        el.turn(&mut dm, Some(Duration::from_millis(10)))
            .expect("turn");
    }
    let until = Instant::now() + T;
    while dm.m.pending_to_acrnd() > 0 && Instant::now() < until {
        el.turn(&mut dm, Some(Duration::from_millis(10)))
            .expect("turn");
    }
    (t.join().expect("asker"), dm)
}

/// A client of one monitor.
pub struct Asker {
    pub client: Client,
    pub monitor: String,
}

impl Asker {
    /// The ack's payload to `body`.
    pub fn ask(&self, body: Body) -> AckPayload {
        self.client
            .send(&self.monitor, &Request::now(body), T)
            .expect("acked")
            .payload
    }
}
