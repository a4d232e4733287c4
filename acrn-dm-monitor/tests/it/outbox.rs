//! The outbox to acrnd: a slow acrnd never blocks the monitor, gets one message at a time
//! in the order they were made, and every result comes back to the loop; an absent acrnd
//! costs a bounded number of attempts.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use acrn_dm_monitor::monitor::{Monitor, MonitorConfig};
use acrn_dm_monitor::ops::{OpResult, OpsRegistry, VmOps};
use mngr_ipc::Profile;
use mngr_ipc::client::Client;
use mngr_ipc::event_log::{EventLog, read_events};
use mngr_ipc::msg::{AckPayload, Body, MsgId, Request, suspend_mode};
use mngr_ipc::runtime::EventLoop;
use mngr_ipc::server::{Access, Call, DeferredAck, Handlers, ServerConfig, spawn_server};
use mngr_ipc::vocabulary::VmName;

use crate::harness::{Dm, T, config, serve};

/// A provider whose suspend arms a wake-up timer and reports the guest suspended, as a
/// virtual IOC and PMC would.
struct Sleeper;

impl VmOps<Dm> for Sleeper {
    fn label(&self) -> &str {
        "sleeper"
    }
    fn suspend(&mut self, dm: &mut Dm) -> OpResult {
        dm.m.set_wakeup_timer(7);
        dm.m.set_suspend_mode(suspend_mode::SUSPEND);
        OpResult::Done
    }
}

type Held = mpsc::Sender<(Body, DeferredAck)>;

/// A test acrnd that holds every ack until the test releases it.
fn holding_acrnd(
    dir: &std::path::Path,
) -> (
    mngr_ipc::server::ServerThread,
    mpsc::Receiver<(Body, DeferredAck)>,
) {
    let (held_tx, held_rx) = mpsc::channel::<(Body, DeferredAck)>();
    let held: Arc<Mutex<Held>> = Arc::new(Mutex::new(held_tx));
    let hold = |held: Arc<Mutex<Held>>| {
        move |r: &Request, call: Call<'_>, _: &mut ()| {
            let (reply, d) = call.defer();
            let _ = held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send((r.body.clone(), d));
            reply
        }
    };
    let acrnd = spawn_server(
        ServerConfig::new("acrnd", dir),
        Handlers::new()
            .on(MsgId::DmNotify, Access::Open, hold(Arc::clone(&held)))
            .on(MsgId::AcrndTimer, Access::Open, hold(held)),
        (),
    )
    .expect("acrnd");
    (acrnd, held_rx)
}

#[test]
fn a_slow_acrnd_never_blocks_the_monitor_and_gets_messages_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (acrnd, held_rx) = holding_acrnd(dir.path());

    // The device model's loop on its own thread.
    let sock = dir.path().to_owned();
    let (stop_tx, stop_rx) = mpsc::channel();
    let dm_thread = std::thread::spawn(move || {
        let cfg = MonitorConfig::new(VmName::new("vm1", Profile::F).expect("valid"), &sock);
        let monitor = Monitor::bind(cfg, OpsRegistry::new().with(Sleeper)).expect("bind");
        let mut el = EventLoop::new().expect("loop");
        let mut dm = Dm {
            m: monitor.add_to(&mut el).expect("add"),
            calls: Vec::new(),
        };
        stop_tx.send(el.handle()).expect("handle");
        el.run(&mut dm).expect("run");
        // Stopped by the test once acrnd answered everything: let the reports in.
        let deadline = Instant::now() + T;
        while dm.m.pending_to_acrnd() > 0 && Instant::now() < deadline {
            el.turn(&mut dm, Some(Duration::from_millis(10)))
                .expect("turn");
        }
        dm.m.pending_to_acrnd()
    });
    let stop = stop_rx.recv().expect("loop handle");
    let client = Client::new(dir.path(), Profile::F);
    let ask = |body: Body| {
        client
            .send("vm1.monitor", &Request::now(body), T)
            .expect("acked")
            .payload
    };

    // The start-up DM_NOTIFY 0 reaches acrnd, which sits on it.
    let (first, first_ack) = held_rx.recv_timeout(T).expect("DM_NOTIFY 0");
    assert_eq!(
        first,
        Body::DmNotify {
            name: "vm1".into(),
            mode: 0
        }
    );
    // Meanwhile the monitor answers at once, and queues more for acrnd.
    let t0 = Instant::now();
    assert_eq!(ask(Body::DmQuery), AckPayload::State(0));
    assert_eq!(ask(Body::DmSuspend), AckPayload::Err(0));
    assert_eq!(ask(Body::DmQuery), AckPayload::State(4));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(
        held_rx.try_recv().is_err(),
        "one request to acrnd at a time"
    );
    first_ack.complete(AckPayload::Err(0));
    // Then the timer, then the suspend notification: the order they were made in.
    let (second, a2) = held_rx.recv_timeout(T).expect("ACRND_TIMER");
    assert_eq!(
        second,
        Body::AcrndTimer {
            name: "vm1".into(),
            t: 7
        }
    );
    a2.complete(AckPayload::Err(0));
    let (third, a3) = held_rx.recv_timeout(T).expect("DM_NOTIFY 4");
    assert_eq!(
        third,
        Body::DmNotify {
            name: "vm1".into(),
            mode: 4
        }
    );
    a3.complete(AckPayload::Err(0));
    // Every result comes back to the loop.
    stop.shutdown();
    let pending = dm_thread.join().expect("dm thread");
    assert_eq!(pending, 0, "results reach the loop");
    drop(acrnd);
}

#[test]
fn without_acrnd_a_message_is_tried_a_bounded_number_of_times_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let mut cfg = config("vm1", dir.path(), Profile::F, None);
    cfg.announce = true;
    cfg.retry_backoff = Duration::from_millis(10);
    cfg.event_log = EventLog::open(&events, "vm1").expect("event log");
    let ((), dm) = serve(cfg, |a| {
        assert_eq!(a.ask(Body::DmQuery), AckPayload::State(0));
    });
    assert_eq!(dm.m.pending_to_acrnd(), 0);
    let ev = read_events(&events).expect("events");
    let r = ev
        .iter()
        .find(|e| e.kind == "acrnd.result")
        .expect("a result");
    assert_eq!(r.fields["ok"], false);
    assert_eq!(r.fields["msg"], "DM_NOTIFY");
    assert_eq!(r.fields["attempts"], 3);
}
