//! Misbehaving device models: a guest that hangs on stop, one that refuses to suspend, and
//! a device model that crashes in the middle of a stop (its socket left behind, stale, and
//! replaced by the next device model of the same name).

use std::os::unix::process::ExitStatusExt;

use acrn_tests::wait_for;
use mngr_ipc::client::ClientError;
use mngr_ipc::msg::Body;

use crate::harness::{Bench, T, is_frame};

/// Waits until the guest sent `n` active heartbeats after it received `reason_hex`.
fn active_heartbeats_after(b: &Bench, reason_hex: &str, n: usize) {
    wait_for(
        T,
        &format!("{n} active heartbeats after {reason_hex}"),
        || {
            let ev = b.events("dm");
            let Some(start) = ev
                .iter()
                .position(|e| is_frame(e, "frame.guest_rx", reason_hex))
            else {
                return false;
            };
            ev[start..]
                .iter()
                .filter(|e| is_frame(e, "frame.guest_tx", "02010000"))
                .count()
                >= n
        },
    )
    .expect("the guest keeps running");
}

#[test]
fn hang_stop_keeps_the_vm_running_after_a_graceful_stop() {
    let mut b = Bench::new("dm-hang");
    b.spawn_running(
        "dm",
        "vm1",
        &["--fault", "hang-stop", "--poweroff-delay-ms", "100"],
    );
    assert_eq!(b.err_of("vm1", Body::DmStop { force: 0 }), 0);
    b.wait_event("dm", "fault hang-stop", |e| {
        e.kind == "fault" && e.fields["point"] == "hang-stop"
    });
    // 8 periods of 50 ms: well past the 100 ms the guest would take to power off.
    active_heartbeats_after(&b, "010000c0", 8);
    let resent = b
        .events("dm")
        .iter()
        .filter(|e| is_frame(e, "frame.guest_rx", "010000c0"))
        .count();
    assert!(
        resent >= 3,
        "the stop request is re-sent every period ({resent})"
    );
    assert!(b.procs.is_running("dm"));
    assert_eq!(b.query("vm1"), Some(0), "its DM still answers running");
    assert_eq!(b.acrnd().modes("vm1"), vec![0]);
    // acrnd's last resort still works.
    assert_eq!(b.err_of("vm1", Body::DmStop { force: 1 }), 0);
    assert!(b.wait_exit("dm").success());
    assert_eq!(b.acrnd().modes("vm1"), vec![0, 3]);
}

#[test]
fn refuse_suspend_keeps_mode_zero() {
    let mut b = Bench::new("dm-refuse");
    b.spawn_running(
        "dm",
        "vm1",
        &["--fault", "refuse-suspend", "--suspend-delay-ms", "100"],
    );
    assert_eq!(b.err_of("vm1", Body::DmSuspend), 0);
    b.wait_event("dm", "fault refuse-suspend", |e| {
        e.kind == "fault" && e.fields["point"] == "refuse-suspend"
    });
    active_heartbeats_after(&b, "01000080", 8);
    assert_eq!(b.query("vm1"), Some(0));
    assert!(b.procs.is_running("dm"));
    assert_eq!(b.acrnd().modes("vm1"), vec![0]);
    // A stop is still obeyed.
    assert_eq!(b.err_of("vm1", Body::DmStop { force: 0 }), 0);
    assert!(b.wait_exit("dm").success());
    assert_eq!(b.acrnd().modes("vm1"), vec![0, 3]);
}

#[test]
fn crash_stop_leaves_a_stale_socket_that_the_next_dm_replaces() {
    let mut b = Bench::new("dm-crash");
    let pid = b.spawn_running(
        "dm",
        "vm1",
        &["--fault", "crash-stop", "--poweroff-delay-ms", "50"],
    );
    let stale = format!("vm1.monitor.{pid}.socket");
    assert_eq!(b.err_of("vm1", Body::DmStop { force: 0 }), 0);
    let status = b.wait_exit("dm");
    assert_eq!(status.signal(), Some(libc_sigabrt()), "{status}");
    assert_eq!(b.sockets("vm1"), vec![stale.clone()], "left behind");
    assert_eq!(
        b.acrnd().modes("vm1"),
        vec![0],
        "no DM_NOTIFY 3 from a crash"
    );
    assert!(
        b.events("dm")
            .iter()
            .any(|e| e.kind == "fault" && e.fields["point"] == "crash-stop")
    );
    assert!(matches!(
        b.send("vm1", Body::DmQuery),
        Err(ClientError::Connect { .. })
    ));

    // A new device model of the same name (crashing on a forced stop this time).
    let pid2 = b.spawn_running("dm2", "vm1", &["--fault", "crash-stop"]);
    assert_eq!(
        b.sockets("vm1"),
        vec![format!("vm1.monitor.{pid2}.socket")],
        "the stale socket was replaced"
    );
    assert_eq!(b.query("vm1"), Some(0));
    assert_eq!(b.err_of("vm1", Body::DmStop { force: 1 }), 0);
    let status = b.wait_exit("dm2");
    assert_eq!(status.signal(), Some(libc_sigabrt()), "{status}");
    assert_eq!(b.sockets("vm1").len(), 1, "left behind again");

    let pid3 = b.spawn_running("dm3", "vm1", &[]);
    assert_eq!(b.sockets("vm1"), vec![format!("vm1.monitor.{pid3}.socket")]);
}

fn libc_sigabrt() -> i32 {
    nix::sys::signal::Signal::SIGABRT as i32
}
