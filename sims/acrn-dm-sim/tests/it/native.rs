//! A native lifecycle channel (an ioc-sim mirror: a pty carrying 4-byte frames): its
//! wakeup reasons reach the guest per the SoC-bit rules, and ignition-off with force-S5
//! powers the guest off without any DM_* request.

use crate::harness::{Bench, NativeLine, frames, is_frame};

#[test]
fn ignition_off_with_force_s5_powers_the_guest_off_without_a_request() {
    let mut b = Bench::new("dm-native");
    let link = b.path("cbc-lifecycle");
    let mut ioc = NativeLine::new(&link);
    let link_arg = link.display().to_string();
    b.spawn_running(
        "dm",
        "vm1",
        &["--native", &link_arg, "--poweroff-delay-ms", "100"],
    );
    b.wait_event("dm", "native line open", |e| {
        e.kind == "native.line" && e.fields["state"] == "open"
    });
    // Ignition on with an RTC bit: the guest (active) gets it with SoC set and RTC cleared.
    ioc.send([0x01, 0x20, 0x02, 0x00]);
    b.wait_event("dm", "forwarded reason", |e| {
        is_frame(e, "frame.guest_rx", "01200080")
            && b.events("dm")
                .iter()
                .any(|n| is_frame(n, "frame.native_rx", "01200200"))
    });
    // Ignition off, force S5, as an ioc-sim mirror would write it.
    ioc.send([0x01, 0x00, 0x00, 0xc0]);
    let status = b.wait_exit("dm");
    assert!(status.success(), "{status}");
    assert_eq!(b.acrnd().modes("vm1"), vec![0, 3]);
    assert_eq!(b.sockets("vm1"), Vec::<String>::new());
    let ev = b.events("dm");
    assert!(frames(&ev, "frame.native_rx").contains(&"010000c0".to_owned()));
    assert!(frames(&ev, "frame.guest_rx").contains(&"010000c0".to_owned()));
    assert!(frames(&ev, "frame.guest_tx").contains(&"02000100".to_owned()));
    assert!(
        !ev.iter()
            .any(|e| e.kind == "ipc.request" && e.fields["msg"] != "DM_QUERY"),
        "no DM_* request but queries was involved"
    );
    assert_eq!(
        ioc.written(),
        0,
        "the DM never writes to the native channel"
    );
}

#[test]
fn ignition_off_from_the_native_channel_suspends_and_the_channel_follows_s3() {
    let mut b = Bench::new("dm-native-s3");
    let link = b.path("cbc-lifecycle");
    let mut ioc = NativeLine::new(&link);
    let link_arg = link.display().to_string();
    b.spawn_running(
        "dm",
        "vm1",
        &["--native", &link_arg, "--suspend-delay-ms", "50"],
    );
    b.wait_event("dm", "native line open", |e| {
        e.kind == "native.line" && e.fields["state"] == "open"
    });
    ioc.send([0x01, 0x00, 0x00, 0x80]);
    b.wait_query("vm1", 4);
    b.acrnd().wait_modes("vm1", &[0, 4]);
    // In S3 the native channel is closed, and reopened by the resume.
    b.wait_event("dm", "native line closed", |e| {
        e.kind == "native.line" && e.fields["state"] == "closed"
    });
    assert_eq!(
        b.err_of("vm1", mngr_ipc::msg::Body::DmResume { reason: 0x20 }),
        0
    );
    b.wait_query("vm1", 0);
    acrn_tests::wait_for(crate::harness::T, "native line reopened", || {
        b.events("dm")
            .iter()
            .filter(|x| x.kind == "native.line" && x.fields["state"] == "open")
            .count()
            == 2
    })
    .expect("reopened");
}

#[test]
fn a_channel_missing_at_start_or_lost_is_reopened_once_it_is_there() {
    let mut b = Bench::new("dm-native-reopen");
    let link = b.path("cbc-lifecycle");
    let link_arg = link.display().to_string();
    let opened = |b: &Bench| {
        b.events("dm")
            .iter()
            .filter(|e| e.kind == "native.line" && e.fields["state"] == "open")
            .count()
    };
    // Nothing at the path yet: the DM runs all the same and keeps trying.
    b.spawn_running("dm", "vm1", &["--native", &link_arg]);
    assert_eq!(opened(&b), 0);
    let mut ioc = NativeLine::new(&link);
    b.wait_event("dm", "native line open", |e| {
        e.kind == "native.line" && e.fields["state"] == "open"
    });
    ioc.send([0x01, 0x20, 0x02, 0x00]);
    b.wait_event("dm", "native frame", |e| {
        is_frame(e, "frame.native_rx", "01200200")
    });
    // The far end goes away (the path first, so that no other pty is found there): the
    // channel is lost, and opened again once a new one is at the path.
    std::fs::remove_file(&link).expect("unlink");
    drop(ioc);
    b.wait_event("dm", "native line closed", |e| {
        e.kind == "native.line" && e.fields["state"] == "closed"
    });
    let mut ioc = NativeLine::new(&link);
    acrn_tests::wait_for(crate::harness::T, "native line reopened", || {
        opened(&b) == 2
    })
    .expect("reopened");
    ioc.send([0x01, 0x20, 0x02, 0x00]);
    acrn_tests::wait_for(crate::harness::T, "a frame on the reopened line", || {
        frames(&b.events("dm"), "frame.native_rx").len() == 2
    })
    .expect("read");
}
