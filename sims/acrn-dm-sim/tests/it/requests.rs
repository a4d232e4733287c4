//! The monitor socket of acrn-dm-sim: each DM_* request and its ack, bad requests, the
//! launch line and the start-up announcement.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use mngr_ipc::msg::{AckPayload, Body, err};
use mngr_ipc::{MSG_LEN, Profile, Request};

use crate::harness::{Bench, T};

#[test]
fn every_request_gets_its_ack_and_query_says_running() {
    let mut b = Bench::new("dm-acks");
    b.spawn_running("dm", "vm1", &[]);
    let ack = b.send("vm1", Body::DmQuery).expect("acked");
    assert_eq!(ack.payload, AckPayload::State(0));
    // No virtio-blk device: nothing implements a rescan, but the devargs are checked first.
    let rescan = |d: &str| Body::DmBlkrescan { devargs: d.into() };
    assert_eq!(b.err_of("vm1", rescan("3,/var/img.raw")), err::UNSUPPORTED);
    for bad in ["", "3", "x,/img", ",/img", "/img,3"] {
        assert_eq!(b.err_of("vm1", rescan(bad)), err::INVALID, "{bad:?}");
    }
    // A resume of a running VM is harmless.
    assert_eq!(b.err_of("vm1", Body::DmResume { reason: 0x20 }), 0);
    // Not a monitor request: -ENOSYS, promptly.
    let timer = Body::AcrndTimer {
        name: "vm1".into(),
        t: 5,
    };
    assert_eq!(b.err_of("vm1", timer), err::UNKNOWN_ID);
    // Profile F has no DM_PAUSE: the server answers -ENOSYS for the unknown wire id.
    let mut s = UnixStream::connect(b.sock.join(&b.sockets("vm1")[0])).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    let mut raw = Profile::F
        .encode_request(&Request::new(77, Body::DmQuery))
        .expect("encodes");
    raw[8..12].copy_from_slice(&99u32.to_le_bytes());
    s.write_all(&raw).expect("write");
    let mut ack = [0u8; MSG_LEN];
    s.read_exact(&mut ack).expect("ack to an unknown id");
    assert_eq!(&ack[8..12], &99u32.to_le_bytes(), "id echoed");
    assert_eq!(&ack[16..24], &77u64.to_le_bytes(), "timestamp echoed");
    assert_eq!(
        i32::from_le_bytes(ack[24..28].try_into().expect("4 bytes")),
        err::UNKNOWN_ID
    );
    assert_eq!(b.query("vm1"), Some(0));
    let ev = b.events("dm");
    let acks: Vec<_> = ev.iter().filter(|e| e.kind == "ipc.ack").collect();
    assert!(
        acks.iter()
            .any(|e| e.fields["msg"] == "DM_BLKRESCAN" && e.fields["err"] == err::INVALID),
        "{acks:?}"
    );
}

#[test]
fn profile_d_has_pause_and_continue_but_nothing_implements_them() {
    let mut b = Bench::with_profile("dm-prof-d", Profile::D);
    b.spawn("dm", "a-long-vm-name-17", &["--abi", "D"]);
    let vm = "a-long-vm-name-17";
    let state = || {
        b.send_as(Profile::D, vm, Body::DmQuery)
            .ok()
            .map(|a| a.payload)
    };
    acrn_tests::wait_for(T, "DM_QUERY over profile D", || {
        state() == Some(AckPayload::State(0))
    })
    .expect("serves profile D");
    for body in [Body::DmPause, Body::DmContinue] {
        let ack = b.send_as(Profile::D, vm, body).expect("acked");
        assert_eq!(ack.payload, AckPayload::Err(err::UNSUPPORTED));
    }
    // DM_NOTIFY carries the long name in profile D's 128-byte field.
    b.acrnd().wait_modes(vm, &[0]);
}

#[test]
fn garbage_and_short_messages_do_not_stop_the_monitor() {
    let mut b = Bench::new("dm-garbage");
    b.spawn_running("dm", "vm1", &[]);
    let path = b.sock.join(&b.sockets("vm1")[0]);
    // A short message, then close.
    let mut s = UnixStream::connect(&path).expect("connect");
    s.write_all(&[0x76; 100]).expect("write");
    drop(s);
    // A message without magic: the server closes the connection.
    let mut s = UnixStream::connect(&path).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    s.write_all(&[0u8; MSG_LEN]).expect("write");
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).expect("closed, not timed out"), 0);
    // Half a request, then the other half in a later write: reassembled.
    let mut s = UnixStream::connect(&path).expect("connect");
    s.set_read_timeout(Some(T)).expect("timeout");
    let raw = Profile::F
        .encode_request(&Request::new(5, Body::DmQuery))
        .expect("encodes");
    s.write_all(&raw[..100]).expect("write");
    s.flush().expect("flush");
    assert_eq!(
        b.query("vm1"),
        Some(0),
        "other clients are served meanwhile"
    );
    s.write_all(&raw[100..]).expect("write");
    let mut ack = [0u8; MSG_LEN];
    s.read_exact(&mut ack).expect("ack");
    assert_eq!(i32::from_le_bytes(ack[24..28].try_into().expect("4")), 0);
    // Many clients that connect and vanish.
    for _ in 0..50 {
        let _ = UnixStream::connect(&path).expect("connect");
    }
    assert_eq!(b.query("vm1"), Some(0));
    assert!(b.procs.is_running("dm"));
}

#[test]
fn launched_by_a_script_the_dm_is_the_scripts_pid_and_announces_itself() {
    let mut b = Bench::new("dm-launch");
    let pid = b.spawn_running("dm", "vm1", &[]);
    assert_eq!(
        b.sockets("vm1"),
        vec![format!("vm1.monitor.{pid}.socket")],
        "socket named with the pid of the launch script, which exec'd the DM"
    );
    b.acrnd().wait_modes("vm1", &[0]);
    let pid = i32::try_from(pid).expect("pid");
    assert_eq!(
        b.acrnd().notifies("vm1"),
        vec![(0, pid)],
        "from the DM's pid"
    );
    let start = b.wait_event("dm", "dm.start", |e| e.kind == "dm.start");
    assert_eq!(start.fields["pid"], pid);
    assert_eq!(start.fields["vm"], "vm1");
}

#[test]
fn bad_vm_names_fail_at_start_without_a_socket() {
    let mut b = Bench::new("dm-badname");
    for (label, vm) in [
        ("dot", "vm.1"),
        ("daemon", "acrnd"),
        ("long", "sixteen-chars-xx"),
    ] {
        b.spawn(label, vm, &[]);
        let status = b.wait_exit(label);
        assert_eq!(status.code(), Some(2), "{vm:?}");
        assert!(b.procs.stderr(label).contains("Bad VM name"), "{vm:?}");
    }
    for vm in ["vm.1", "acrnd", "sixteen-chars-xx"] {
        assert_eq!(b.sockets(vm), Vec::<String>::new(), "{vm:?}");
    }
}

#[test]
fn boot_reason_comes_from_acrnds_environment_unless_given() {
    let mut b = Bench::new("dm-bootreason");
    let mut cmd = b.command("env", "vm1", &[]);
    cmd.env("ACRN_WAKEUP_REASON", "0x200");
    b.procs.spawn("env", cmd).expect("spawn");
    let wake = b.wait_event("env", "guest.wake", |e| e.kind == "guest.wake");
    assert_eq!(wake.fields["reason"], 0x80_0200, "RTC boot: 0x200 | SoC");
    b.procs.kill("env").expect("killed");

    let mut cmd = b.command("flag", "vm2", &["--boot-reason", "0x800"]);
    cmd.env("ACRN_WAKEUP_REASON", "0x200");
    b.procs.spawn("flag", cmd).expect("spawn");
    let wake = b.wait_event("flag", "guest.wake", |e| e.kind == "guest.wake");
    assert_eq!(wake.fields["reason"], 0x80_0800, "the flag wins");

    let mut cmd = b.command("bad", "vm3", &[]);
    cmd.env("ACRN_WAKEUP_REASON", "soon");
    b.procs.spawn("bad", cmd).expect("spawn");
    assert_eq!(b.wait_exit("bad").code(), Some(2));
}

#[test]
fn without_acrnd_the_dm_runs_and_reports_undelivered_notifications() {
    let mut b = Bench::without_acrnd("dm-noacrnd");
    b.spawn_running("dm", "vm1", &[]);
    let r = b.wait_event("dm", "acrnd.result", |e| e.kind == "acrnd.result");
    assert_eq!(r.fields["ok"], false);
    assert_eq!(r.fields["msg"], "DM_NOTIFY");
    assert_eq!(r.fields["attempts"], 3);
    assert_eq!(b.query("vm1"), Some(0));
    // The loop was never blocked meanwhile: the guest kept its heartbeat.
    let hb = b
        .events("dm")
        .iter()
        .filter(|e| e.kind == "frame.guest_tx")
        .count();
    assert!(hb >= 2, "{hb} heartbeats");
}

#[test]
fn allow_options_guard_state_changes_but_not_queries() {
    let mut b = Bench::new("dm-policy");
    let other = nix::unistd::getuid().as_raw().wrapping_add(1).to_string();
    b.spawn_running("dm", "vm1", &["--allow-uid", &other]);
    assert_eq!(b.query("vm1"), Some(0));
    assert_eq!(
        b.err_of("vm1", Body::DmStop { force: 1 }),
        err::NOT_PERMITTED
    );
    assert_eq!(b.err_of("vm1", Body::DmSuspend), err::NOT_PERMITTED);
    assert_eq!(b.query("vm1"), Some(0), "nothing changed");
    assert!(b.procs.is_running("dm"));
    let refused = b
        .events("dm")
        .iter()
        .filter(|e| e.kind == "ipc.refused")
        .count();
    assert_eq!(refused, 2);
}
