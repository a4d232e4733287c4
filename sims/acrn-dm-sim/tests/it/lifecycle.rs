//! Stop, suspend, resume and RTC wake-ups through acrn-dm-sim, with what acrnd receives.
//! Frames are asserted with literal bytes (service frames as logged by the simulator).

use std::time::{Duration, Instant};

use mngr_ipc::msg::{Body, suspend_mode};
use nix::sys::signal::Signal;

use crate::harness::{Bench, frames, is_frame, position};

const WR_STOP: &str = "010000c0";
const WR_SUSPEND: &str = "01000080";
const WR_ZERO: &str = "01000000";
const HB_INIT: &str = "02030000";
const HB_S5: &str = "02000100";
const HB_S3: &str = "02000700";
const RTC_7S: &str = "05070000";

#[test]
fn graceful_stop_ends_the_process_after_the_guests_delay() {
    let mut b = Bench::new("dm-stop");
    let pid = b.spawn_running("dm", "vm1", &["--poweroff-delay-ms", "400"]);
    let asked = Instant::now();
    assert_eq!(b.err_of("vm1", Body::DmStop { force: 0 }), 0);
    let status = b.wait_exit("dm");
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() >= Duration::from_millis(400),
        "exited before the guest's delay: {:?}",
        asked.elapsed()
    );
    let pid = i32::try_from(pid).expect("pid");
    assert_eq!(
        b.acrnd().notifies("vm1"),
        vec![(0, pid), (3, pid)],
        "DM_NOTIFY 3 arrived before the exit"
    );
    assert_eq!(b.sockets("vm1"), Vec::<String>::new(), "socket unlinked");
    // The guest heard the emulated ignition-off with force-S5, prepared S5, got reason 0.
    let ev = b.events("dm");
    let stop = position(&ev, |e| is_frame(e, "frame.guest_rx", WR_STOP)).expect("stop reason");
    let s5 = position(&ev, |e| is_frame(e, "frame.guest_tx", HB_S5)).expect("S5 heartbeat");
    let zero = position(&ev, |e| is_frame(e, "frame.guest_rx", WR_ZERO)).expect("reason 0");
    let off = position(&ev, |e| e.kind == "dm.state" && e.fields["mode"] == 3).expect("mode 3");
    assert!(
        stop < s5 && s5 < zero && zero < off,
        "{stop} {s5} {zero} {off}"
    );
    let exit = ev.iter().find(|e| e.kind == "dm.exit").expect("dm.exit");
    assert_eq!(exit.fields["cause"], "guest_poweroff");
}

#[test]
fn forced_stop_ends_the_process_at_once_without_the_guest() {
    let mut b = Bench::new("dm-force");
    b.spawn_running("dm", "vm1", &["--poweroff-delay-ms", "60000"]);
    let asked = Instant::now();
    assert_eq!(b.err_of("vm1", Body::DmStop { force: 1 }), 0);
    let status = b.wait_exit("dm");
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "a forced stop waits for nobody: {:?}",
        asked.elapsed()
    );
    assert_eq!(b.acrnd().modes("vm1"), vec![0, 3]);
    assert_eq!(b.sockets("vm1"), Vec::<String>::new());
    let ev = b.events("dm");
    assert!(
        !ev.iter()
            .any(|e| is_frame(e, "frame.guest_rx", WR_STOP) || is_frame(e, "frame.guest_tx", HB_S5)),
        "the guest was not involved"
    );
    assert_eq!(
        ev.iter()
            .find(|e| e.kind == "dm.exit")
            .expect("exit")
            .fields["cause"],
        "forced_stop"
    );
}

#[test]
fn suspend_then_resume_with_an_rtc_reason() {
    let mut b = Bench::new("dm-s3");
    let pid = b.spawn_running("dm", "vm1", &["--suspend-delay-ms", "100"]);
    assert_eq!(b.err_of("vm1", Body::DmSuspend), 0);
    b.wait_query("vm1", suspend_mode::SUSPEND);
    b.acrnd().wait_modes("vm1", &[0, 4]);
    assert!(b.procs.is_running("dm"));

    assert_eq!(b.err_of("vm1", Body::DmResume { reason: 0x200 }), 0);
    // After resume the guest's initial heartbeat gets reason | SoC, masked with 0xC00A20.
    let wake = b.wait_event("dm", "wake after resume", |e| {
        e.kind == "guest.wake" && e.fields["reason"] != 0x80_0020
    });
    assert_eq!(wake.fields["reason"], 0x80_0200);
    assert_eq!(wake.fields["hex"], "0x800200");
    b.wait_query("vm1", 0);
    b.acrnd().wait_modes("vm1", &[0, 4, 0]);
    let pid = i32::try_from(pid).expect("pid");
    assert!(b.acrnd().notifies("vm1").iter().all(|&(_, p)| p == pid));

    let ev = b.events("dm");
    // The guest heard ignition-off, prepared S3, got reason 0, went silent in S3, and
    // announced itself again after the resume.
    let off = position(&ev, |e| is_frame(e, "frame.guest_rx", WR_SUSPEND)).expect("0x800000");
    let s3 = position(&ev, |e| is_frame(e, "frame.guest_tx", HB_S3)).expect("S3 heartbeat");
    let zero = position(&ev, |e| is_frame(e, "frame.guest_rx", WR_ZERO)).expect("reason 0");
    let susp = position(&ev, |e| e.kind == "dm.state" && e.fields["mode"] == 4).expect("mode 4");
    let resumed = position(&ev, |e| e.kind == "dm.state" && e.fields["mode"] == 0).expect("0");
    assert!(off < s3 && s3 < zero && zero < susp && susp < resumed);
    let sent_while_suspended: Vec<_> = ev[susp..resumed]
        .iter()
        .filter(|e| e.kind == "frame.guest_tx")
        .collect();
    assert!(
        sent_while_suspended.is_empty(),
        "no heartbeats in S3: {sent_while_suspended:?}"
    );
    assert_eq!(
        frames(&ev[resumed..], "frame.guest_tx")
            .first()
            .map(String::as_str),
        Some(HB_INIT)
    );
    assert!(frames(&ev[resumed..], "frame.guest_rx").contains(&"01000280".to_owned()));
    let vioc: Vec<(String, String)> = ev
        .iter()
        .filter(|e| e.kind == "vioc.state")
        .map(|e| {
            (
                e.fields["from"].as_str().unwrap_or_default().to_owned(),
                e.fields["to"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = vioc.iter().map(|(a, z)| (a.as_str(), z.as_str())).collect();
    assert_eq!(
        pairs,
        vec![
            ("init", "active"),
            ("active", "suspending"),
            ("suspending", "suspended"),
            ("suspended", "init"),
            ("init", "active")
        ]
    );
}

#[test]
fn resume_with_reason_zero_wakes_with_the_ignition_reason() {
    let mut b = Bench::new("dm-resume0");
    b.spawn_running("dm", "vm1", &["--suspend-delay-ms", "50"]);
    assert_eq!(b.err_of("vm1", Body::DmSuspend), 0);
    b.wait_query("vm1", suspend_mode::SUSPEND);
    assert_eq!(b.err_of("vm1", Body::DmResume { reason: 0 }), 0);
    b.wait_query("vm1", 0);
    let n = b
        .wait_event("dm", "second wake", |e| {
            e.kind == "vioc.state" && e.fields["from"] == "suspended"
        })
        .fields["to"]
        .clone();
    assert_eq!(n, "init", "the virtual IOC is not left suspended");
    acrn_tests::wait_for(crate::harness::T, "two wakes", || {
        b.events("dm")
            .iter()
            .filter(|e| e.kind == "guest.wake")
            .count()
            == 2
    })
    .expect("woke twice");
    let wakes: Vec<_> = b
        .events("dm")
        .into_iter()
        .filter(|e| e.kind == "guest.wake")
        .map(|e| e.fields["reason"].clone())
        .collect();
    assert_eq!(wakes, vec![0x80_0020, 0x80_0020]);
}

#[test]
fn a_guest_rtc_request_reaches_acrnd_before_the_suspend_notification() {
    let mut b = Bench::new("dm-rtc");
    let pid = b.spawn_running(
        "dm",
        "vm1",
        &["--rtc-secs", "7", "--suspend-delay-ms", "50"],
    );
    assert_eq!(b.err_of("vm1", Body::DmSuspend), 0);
    b.acrnd().wait_modes("vm1", &[0, 4]);
    let got = b.acrnd().all();
    let timer = got
        .iter()
        .position(|r| {
            r.body
                == Body::AcrndTimer {
                    name: "vm1".into(),
                    t: 7,
                }
        })
        .unwrap_or_else(|| panic!("no ACRND_TIMER {{vm1, 7}}: {got:?}"));
    assert_eq!(got[timer].peer.pid, i32::try_from(pid).expect("pid"));
    let suspended = got
        .iter()
        .position(|r| matches!(r.body, Body::DmNotify { mode: 4, .. }))
        .expect("DM_NOTIFY 4");
    assert!(timer < suspended, "{got:?}");
    let ev = b.events("dm");
    let rtc = position(&ev, |e| is_frame(e, "frame.guest_tx", RTC_7S)).expect("RTC frame");
    let s3 = position(&ev, |e| is_frame(e, "frame.guest_tx", HB_S3)).expect("S3");
    assert!(
        rtc < s3,
        "the RTC frame goes right before the shutdown-prepared heartbeat"
    );
}

#[test]
fn an_rtc_request_after_shutdown_prepared_still_reaches_acrnd() {
    let mut b = Bench::new("dm-rtc-after");
    b.spawn_running(
        "dm",
        "vm1",
        &[
            "--rtc-secs",
            "7",
            "--rtc-after",
            "--poweroff-delay-ms",
            "50",
        ],
    );
    assert_eq!(b.err_of("vm1", Body::DmStop { force: 0 }), 0);
    assert!(b.wait_exit("dm").success());
    let got = b.acrnd().all();
    assert!(
        got.iter().any(|r| r.body
            == Body::AcrndTimer {
                name: "vm1".into(),
                t: 7
            }),
        "{got:?}"
    );
    assert_eq!(b.acrnd().modes("vm1"), vec![0, 3]);
    let ev = b.events("dm");
    let s5 = position(&ev, |e| is_frame(e, "frame.guest_tx", HB_S5)).expect("S5");
    let rtc = position(&ev, |e| is_frame(e, "frame.guest_tx", RTC_7S)).expect("RTC frame");
    assert!(s5 < rtc, "this guest arms its RTC after shutdown prepared");
    let susp = position(&ev, |e| {
        e.kind == "vioc.state" && e.fields["to"] == "suspending"
    })
    .expect("suspending");
    let fwd = position(&ev, |e| e.kind == "vioc.rtc" && e.fields["secs"] == 7).expect("rtc");
    assert!(susp < fwd, "forwarded while suspending");
}

#[test]
fn sigterm_exits_cleanly_and_tells_acrnd() {
    let mut b = Bench::new("dm-sigterm");
    b.spawn_running("dm", "vm1", &[]);
    b.acrnd().wait_modes("vm1", &[0]);
    b.procs.signal("dm", Signal::SIGTERM).expect("signal");
    let status = b.wait_exit("dm");
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(b.acrnd().modes("vm1"), vec![0, 3]);
    assert_eq!(b.sockets("vm1"), Vec::<String>::new());
}

#[test]
fn graceful_stop_of_a_suspended_guest_is_refused() {
    let mut b = Bench::new("dm-stop-s3");
    b.spawn_running("dm", "vm1", &["--suspend-delay-ms", "50"]);
    assert_eq!(b.err_of("vm1", Body::DmSuspend), 0);
    b.wait_query("vm1", suspend_mode::SUSPEND);
    assert_eq!(
        b.err_of("vm1", Body::DmStop { force: 0 }),
        mngr_ipc::msg::err::BUSY,
        "no frame reaches a guest in S3"
    );
    assert_eq!(b.err_of("vm1", Body::DmStop { force: 1 }), 0);
    assert!(b.wait_exit("dm").success());
    assert_eq!(b.acrnd().modes("vm1"), vec![0, 4, 3]);
}

/// The (from, to) pairs of `kind` state events, in order.
fn transitions(ev: &[mngr_ipc::event_log::LoggedEvent], kind: &str) -> Vec<(String, String)> {
    ev.iter()
        .filter(|e| e.kind == kind)
        .map(|e| {
            (
                e.fields["from"].as_str().unwrap_or_default().to_owned(),
                e.fields["to"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn op_actions_keep_their_order_with_a_fast_heartbeat() {
    // With a 1 ms period a heartbeat is due in nearly every turn of the loop, also in the
    // turn that serves DM_RESUME: the resume's actions must still come first.
    let mut b = Bench::new("dm-order");
    b.spawn_running(
        "dm",
        "vm1",
        &["--heartbeat-ms", "1", "--suspend-delay-ms", "20"],
    );
    for round in 0..3 {
        assert_eq!(b.err_of("vm1", Body::DmSuspend), 0);
        b.wait_query("vm1", suspend_mode::SUSPEND);
        assert_eq!(b.err_of("vm1", Body::DmResume { reason: 0x200 }), 0);
        b.wait_query("vm1", 0);
        let want = 2 + round;
        acrn_tests::wait_for(crate::harness::T, "guest woke", || {
            b.events("dm")
                .iter()
                .filter(|e| e.kind == "guest.wake")
                .count()
                == want
        })
        .expect("woke");
    }
    let ev = b.events("dm");
    let pairs = transitions(&ev, "vioc.state");
    let cycle = [
        ("active", "suspending"),
        ("suspending", "suspended"),
        ("suspended", "init"),
        ("init", "active"),
    ];
    let mut want = vec![("init".to_owned(), "active".to_owned())];
    for _ in 0..3 {
        want.extend(
            cycle
                .iter()
                .map(|(a, z)| ((*a).to_owned(), (*z).to_owned())),
        );
    }
    assert_eq!(pairs, want);
    // Every logged guest transition starts where the previous one ended.
    let g = transitions(&ev, "guest.state");
    assert!(
        g.windows(2).all(|w| w[0].1 == w[1].0),
        "guest transitions out of order: {g:?}"
    );
}
