//! sos-lcs against hostile and faulty peers: crowds of idle connections, half messages,
//! garbage and connect / close churn on its socket; every request with its fields at their
//! edge values; privileged requests from peers without permission; and an IOC line that
//! delivers garbage, split and duplicated frames and disappears during a shutdown. Each
//! test asserts what the IOC sees on the line (literal bytes), what the acks say, and what
//! the daemon costs (memory, descriptors).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use acrn_tests::hostile::{
    Victim, abuse_check, crowd_check, err_of, exchange_raw, nofile_of, server_socket,
};
use acrn_tests::wait_for;
use mngr_ipc::client::Client;
use mngr_ipc::limits::{NOFILE_WANTED, raise_nofile};
use mngr_ipc::msg::{AckPayload, Body, Request, StopTarget, epoch_now, err};
use mngr_ipc::server::ServerConfig;
use mngr_ipc::{Profile, Wire};

use crate::lcs::{
    FakeIoc, HB_ACTIVE, HB_DELAY, HB_INIT, HB_S3, HB_S5, Lcs, RTC_1166_MIN, T, TestAcrnd,
    WR_BUTTON, WR_FORCE_S5, WR_SHUTDOWN, WR_ZERO, alive, arm_rtc,
};

/// One request to ioc-sim's control socket; its reply line.
fn request(control: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(control).expect("connect to the control socket");
    s.set_read_timeout(Some(T)).expect("timeout");
    s.write_all(format!("{line}\n").as_bytes()).expect("write");
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).expect("reply");
    assert!(reply.ends_with('\n'), "a whole reply line: {reply:?}");
    reply.trim_end().to_owned()
}

/// `key=value` of an ioc-sim `status` reply.
fn status_field(status: &str, key: &str) -> String {
    status
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {status:?}"))
        .to_owned()
}

/// A request answered at once must stay well under this, whatever the abuse.
const LATENCY_BOUND: Duration = Duration::from_millis(500);
/// Most resident memory the abuse may leave behind.
const RSS_GROWTH_KIB: u64 = 2048;

fn reason(lcs: &Lcs) {
    assert_eq!(
        lcs.send(Body::WakeupReason).payload,
        AckPayload::Reason(0x20)
    );
}

fn wire(body: Body, ts: u64) -> Wire {
    Profile::F
        .encode_request(&Request::new(ts, body))
        .expect("encodes")
}

#[test]
fn a_thousand_idle_connections_do_not_delay_a_request() {
    raise_nofile(NOFILE_WANTED);
    let (lcs, mut ioc, _acrnd) = alive("lcs-crowd", &[]);
    let pid = lcs.procs.pid("sos-lcs");
    // sos-lcs raised its own descriptor limit at start-up.
    let (soft, hard) = nofile_of(pid);
    assert_eq!(soft, NOFILE_WANTED.min(hard), "sos-lcs RLIMIT_NOFILE");
    let path = server_socket(&lcs.sock, "sos-lcs");
    let request = || reason(&lcs);
    let victim = Victim {
        name: "sos-lcs",
        pid,
        path: &path,
        request: &request,
    };
    let cap = ServerConfig::new("x", "/").max_connections;
    crowd_check(victim, cap, LATENCY_BOUND, || {
        // The heartbeat never paused.
        ioc.clear();
        assert_eq!(ioc.next_frame(T), Some(HB_ACTIVE));
    });
}

#[test]
fn half_messages_garbage_and_churn_keep_it_serving_in_bounded_memory() {
    let (lcs, mut ioc, _acrnd) = alive("lcs-abuse", &[]);
    let path = server_socket(&lcs.sock, "sos-lcs");
    let request = || reason(&lcs);
    let victim = Victim {
        name: "sos-lcs",
        pid: lcs.procs.pid("sos-lcs"),
        path: &path,
        request: &request,
    };
    abuse_check(
        victim,
        &wire(Body::WakeupReason, 1),
        LATENCY_BOUND,
        RSS_GROWTH_KIB,
    );
    ioc.clear();
    assert_eq!(ioc.next_frame(T), Some(HB_ACTIVE));
}

#[test]
fn every_request_with_edge_values_gets_a_sane_ack_and_changes_nothing_else() {
    let (lcs, mut ioc, acrnd) = alive("lcs-edges", &[]);
    let now = i64::try_from(epoch_now()).expect("epoch");
    let rtc = |vmname: &[u8], t: i64| {
        lcs.send(Body::RtcTimer {
            vmname: vmname.to_vec(),
            t,
        })
        .err()
    };
    // Year 2106 (u32 max) and beyond it are within the IOC's reach (65535 weeks): armed.
    for t in [i64::from(u32::MAX), 1 << 32] {
        assert_eq!(rtc(b"vm1", t), Some(err::OK), "t = {t}");
        wait_for(T, "rtc.armed", || {
            lcs.events()
                .iter()
                .any(|e| e.kind == "rtc.armed" && e.fields["t"] == t)
        })
        .expect("armed");
    }
    // The wake-up that must survive everything below.
    arm_rtc(&lcs);
    let armed = lcs
        .events()
        .iter()
        .filter(|e| e.kind == "rtc.armed")
        .count();
    // Epoch 0, the past, now, negative, beyond the IOC's reach, i64 extremes; names of 0,
    // 15 and 16 bytes (no NUL) and not UTF-8: refused with -1.
    let names: [&[u8]; 4] = [b"", &[b'n'; 15], &[b'n'; 16], &[0xff, 0xfe, 0x80]];
    for t in [
        0,
        -1,
        now - 5,
        now,
        i64::MIN,
        i64::MAX,
        now + 65536 * 604_800,
    ] {
        for name in names {
            assert_eq!(rtc(name, t), Some(err::FAILED), "t = {t}, name {name:?}");
        }
    }
    // A verdict nobody asked for, whatever its err: refused as not possible now.
    for e in [i32::MIN, -1, 1, i32::MAX] {
        for body in [
            Body::Shutdown { err: e },
            Body::Suspend { err: e },
            Body::Reboot { err: e },
        ] {
            assert_eq!(lcs.send(body.clone()).err(), Some(err::BUSY), "{body:?}");
        }
    }
    // Requests sos-lcs does not serve, known and unknown ids: -ENOSYS.
    let path = server_socket(&lcs.sock, "sos-lcs");
    for body in [
        Body::AcrndStop {
            force: -1,
            timeout: u32::MAX,
            target: StopTarget::S5,
        },
        Body::DmBlkrescan {
            devargs: "nocomma".into(),
        },
        Body::AcrndTimer {
            name: "vm1".into(),
            t: -1,
        },
        Body::CtlStatus,
    ] {
        let ack = exchange_raw(&path, &wire(body.clone(), u64::MAX), T).expect("acked");
        assert_eq!(err_of(&ack), err::UNKNOWN_ID, "{body:?}");
        assert_eq!(&ack[16..24], &u64::MAX.to_le_bytes());
    }
    for id in [0u32, 2, 8, 15, 21, 0x4143_0001, u32::MAX] {
        let mut w = wire(Body::WakeupReason, 3);
        w[8..12].copy_from_slice(&id.to_le_bytes());
        let ack = exchange_raw(&path, &w, T).expect("acked");
        assert_eq!(err_of(&ack), err::UNKNOWN_ID, "id {id}");
    }
    // WAKEUP_REASON with junk in its union and padding: answered as usual.
    let mut w = wire(Body::WakeupReason, 4);
    w[12..].fill(0xee);
    w[16..24].copy_from_slice(&4u64.to_le_bytes());
    let ack = exchange_raw(&path, &w, T).expect("acked");
    assert_eq!(err_of(&ack), 0x20);
    // Nothing else happened: no RTC armed, no message to acrnd, still alive...
    assert_eq!(
        lcs.events()
            .iter()
            .filter(|e| e.kind == "rtc.armed")
            .count(),
        armed
    );
    assert!(acrnd.rx.try_recv().is_err(), "nothing sent to acrnd");
    ioc.clear();
    assert_eq!(ioc.next_frame(T), Some(HB_ACTIVE));
    // ... and the wake-up armed before all that goes out with the S3 heartbeat.
    ioc.send(&WR_SHUTDOWN);
    ioc.wait_frame(HB_DELAY, T);
    assert_eq!(lcs.send(Body::Suspend { err: 0 }).err(), Some(err::OK));
    ioc.wait_frame(RTC_1166_MIN, T);
    assert_eq!(ioc.next_frame(T), Some(HB_S3));
}

/// Sends every privileged request of sos-lcs (and, with `standin`, of its stand-in acrnd)
/// and asserts each is refused with -EACCES; `who` names the peer in the messages.
fn privileged_requests(dir: &Path, who: &str, standin: bool) {
    let client = Client::new(dir, Profile::F);
    let t = i64::try_from(epoch_now()).expect("epoch") + 100;
    let mut requests = vec![
        ("sos-lcs", Body::Shutdown { err: 0 }),
        ("sos-lcs", Body::Suspend { err: 0 }),
        ("sos-lcs", Body::Reboot { err: 0 }),
        (
            "sos-lcs",
            Body::RtcTimer {
                vmname: b"vm1".to_vec(),
                t,
            },
        ),
        ("service-vm-lcs", Body::Shutdown { err: 0 }),
    ];
    if standin {
        requests.push((
            "acrnd",
            Body::AcrndStop {
                force: 1,
                timeout: 1,
                target: StopTarget::S5,
            },
        ));
        requests.push((
            "acrnd",
            Body::AcrndResume {
                force: 0,
                timeout: 0,
            },
        ));
    }
    for (server, body) in requests {
        let ack = client
            .send(server, &Request::now(body.clone()), T)
            .unwrap_or_else(|e| panic!("{who}: {body:?} to {server}: {e}"));
        assert_eq!(
            ack.err(),
            Some(err::NOT_PERMITTED),
            "{who}: {body:?} to {server}"
        );
    }
}

/// The client half of the refusal tests, run as uid 65534 by them; does nothing unless
/// one of them started it.
#[test]
fn privileged_client_helper() {
    let Ok(dir) = std::env::var("ACRN_LCS_HOSTILE_DIR") else {
        return;
    };
    let standin = std::env::var_os("ACRN_LCS_HOSTILE_STANDIN").is_some();
    privileged_requests(Path::new(&dir), "uid 65534", standin);
}

/// Runs [`privileged_requests`] as uid 65534 in a child process (the test must be root).
fn as_nobody(lcs: &Lcs, standin: bool) {
    use std::os::unix::process::CommandExt;
    for d in [lcs.dir.path(), lcs.sock.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for c in mngr_ipc::naming::server_names(&lcs.sock).expect("socket dir") {
        let path = server_socket(&lcs.sock, &c);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    }
    let mut cmd = Command::new(std::env::current_exe().expect("test exe"));
    cmd.args(["--exact", "hostile::privileged_client_helper"])
        .args(["--test-threads=1", "--nocapture"])
        .env("ACRN_LCS_HOSTILE_DIR", &lcs.sock)
        .uid(65534)
        .gid(65534);
    if standin {
        cmd.env("ACRN_LCS_HOSTILE_STANDIN", "1");
    }
    let status = cmd.status().expect("client as uid 65534");
    assert!(status.success(), "{status}");
}

/// What refused peers must not have caused: every request refused and logged (by
/// `uid`, if given), no RTC armed, no power command, and the heartbeat `hb` goes on.
fn nothing_happened(lcs: &Lcs, ioc: &mut FakeIoc, refusals: usize, uid: Option<u32>, hb: [u8; 4]) {
    let ev = lcs.events();
    let refused: Vec<_> = ev.iter().filter(|e| e.kind == "ipc.refused").collect();
    assert_eq!(refused.len(), refusals, "{refused:?}");
    if let Some(uid) = uid {
        assert!(
            refused.iter().all(|e| e.fields["uid"] == uid),
            "{refused:?}"
        );
    }
    assert!(!ev.iter().any(|e| e.kind == "rtc.armed"), "no RTC armed");
    ioc.clear();
    assert_eq!(ioc.next_frame(T), Some(hb));
    assert_eq!(ioc.next_frame(T), Some(hb));
    for marker in ["poweroff.ran", "reboot.ran"] {
        assert!(!lcs.dir.join(marker).exists(), "{marker}");
    }
}

#[test]
fn privileged_requests_without_permission_are_refused_in_the_delay() {
    // In the shutdown delay, where every verdict would act. By policy first: the test's
    // uid is not allowed (this works as root and as anyone else).
    let (lcs, mut ioc, _acrnd) = alive("lcs-deny", &["--allow-uid", "4242"]);
    ioc.send(&WR_SHUTDOWN);
    ioc.wait_frame(HB_DELAY, T);
    privileged_requests(&lcs.sock, "policy without the test's uid", false);
    nothing_happened(&lcs, &mut ioc, 5, None, HB_DELAY);
    if !nix::unistd::getuid().is_root() {
        eprintln!("not root: no client of another uid; refusals checked by policy");
        return;
    }
    // Then by uid: a client running as nobody, against a policy allowing the test's uid.
    let (lcs, mut ioc, _acrnd) = alive("lcs-deny-uid", &[]);
    ioc.send(&WR_SHUTDOWN);
    ioc.wait_frame(HB_DELAY, T);
    as_nobody(&lcs, false);
    nothing_happened(&lcs, &mut ioc, 5, Some(65534), HB_DELAY);
}

#[test]
fn the_stand_in_acrnd_serves_sos_lcs_only_and_refuses_other_peers() {
    for root_variant in [false, true] {
        if root_variant && !nix::unistd::getuid().is_root() {
            eprintln!("not root: no client of another uid; refusals checked by policy");
            break;
        }
        let (dir, sock, line) = Lcs::dir("lcs-standin");
        let mut ioc = FakeIoc::new(&line, false);
        let policy: &[&str] = if root_variant {
            &["--no-acrnd"]
        } else {
            &["--no-acrnd", "--allow-uid", "4242"]
        };
        let lcs = Lcs::spawn(dir, sock, line, policy, &[]);
        ioc.wait_frame(HB_INIT, T);
        // sos-lcs's own ACRND_RESUME to its stand-in is served whatever the policy.
        ioc.send(&WR_BUTTON);
        ioc.wait_frame(HB_ACTIVE, T);
        if root_variant {
            as_nobody(&lcs, true);
            nothing_happened(&lcs, &mut ioc, 7, Some(65534), HB_ACTIVE);
        } else {
            privileged_requests(&lcs.sock, "policy without the test's uid", true);
            nothing_happened(&lcs, &mut ioc, 7, None, HB_ACTIVE);
        }
        // And its own ACRND_STOP too: the IOC's request still ends in S3.
        ioc.send(&WR_SHUTDOWN);
        ioc.wait_frame(HB_S3, T);
    }
}

#[test]
fn a_faulty_line_during_a_shutdown_still_ends_in_s5() {
    let (mut lcs, mut ioc, acrnd) = alive("lcs-faulty", &["--reopen-max-ms", "100"]);
    // Garbage, then the force-S5 request split at odd places across writes, twice more
    // duplicated, and split across the boundary of two frames.
    ioc.send(&[0x07, 0x11, 0x22, 0x33, 0x00, 0xff]);
    ioc.send(&WR_FORCE_S5[..1]);
    ioc.send(&WR_FORCE_S5[1..3]);
    let mut rest = WR_FORCE_S5[3..].to_vec();
    rest.extend_from_slice(&WR_FORCE_S5[..2]);
    ioc.send(&rest);
    ioc.send(&WR_FORCE_S5[2..]);
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
    // Garbage in the delay changes nothing.
    ioc.send(&[0x00, 0x00, 0x00, 0x00, 0x09, 0x09, 0x09, 0x09]);
    assert_eq!(ioc.next_frame(T), Some(HB_DELAY));
    // The line disappears while acrnd stops the VMs...
    drop(ioc);
    wait_for(T, "the line to be lost", || {
        lcs.events()
            .iter()
            .any(|e| e.kind == "line" && e.fields["state"] == "closed")
    })
    .expect("line lost");
    // ... acrnd's verdict arrives meanwhile and is taken ...
    assert_eq!(lcs.send(Body::Shutdown { err: 0 }).err(), Some(err::OK));
    // ... and once the line is back the S5 heartbeat goes out on it.
    let mut ioc = FakeIoc::new(&lcs.line, false);
    ioc.wait_frame(HB_S5, T);
    ioc.send(&WR_ZERO);
    ioc.send(&WR_ZERO);
    let marker = lcs.dir.join("poweroff.ran");
    wait_for(T, "poweroff command", || marker.exists()).expect("poweroff ran");
    // One ACRND_STOP for all the duplicates, nothing else.
    let stops = lcs
        .events()
        .iter()
        .filter(|e| e.kind == "acrnd.send" && e.fields["msg"] == "ACRND_STOP")
        .count();
    assert_eq!(stops, 1);
    assert!(acrnd.rx.try_recv().is_err(), "{:?}", acrnd.rx.try_recv());
    assert!(lcs.procs.is_running("sos-lcs"));
}

#[test]
fn ioc_sim_with_garbage_duplicates_and_a_lost_line_still_powers_off() {
    let (dir, sock, line) = Lcs::dir("lcs-iocsim");
    let acrnd = TestAcrnd::start(&sock);
    let control = dir.join("ioc.sock");
    // ioc-sim is a sibling package's binary: `cargo build -p ioc-sim` (or `cargo build
    // --workspace --bins`) first; the panic names the paths looked at.
    let mut sim = Command::new(acrn_tests::bin_path("ioc-sim"));
    sim.arg("run")
        .arg("--line")
        .arg(&line)
        .arg("--control")
        .arg(&control)
        .arg("--reason-period-ms")
        .arg("100")
        .arg("--reopen-delay-ms")
        .arg("200")
        .args(["--garbage", "1.0", "--dup", "1.0", "--seed", "42"])
        .arg("--event-log")
        .arg(dir.join("ioc.events"));
    let mut lcs = Lcs::spawn(dir, sock, line, &["--reopen-max-ms", "100"], &[]);
    lcs.procs.spawn("ioc-sim", sim).expect("ioc-sim");
    wait_for(T, "ioc-sim's control socket", || {
        std::os::unix::net::UnixStream::connect(&control).is_ok()
    })
    .expect("ioc-sim runs");
    let status = || request(&control, "status");
    // Ignition is on from the start: every reason frame comes with garbage and twice.
    assert_eq!(
        acrnd.next(),
        Body::AcrndResume {
            force: 0,
            timeout: 0
        }
    );
    assert!(request(&control, "ignition off force-s5").starts_with("ok"));
    assert_eq!(
        acrnd.next(),
        Body::AcrndStop {
            force: 0,
            timeout: 20,
            target: StopTarget::S5
        }
    );
    wait_for(T, "the delay heartbeat at the IOC", || {
        status_field(&status(), "hb") == "delay"
    })
    .unwrap_or_else(|e| panic!("{e}: {}", status()));
    // The line goes away during the shutdown and comes back as a new pty.
    assert!(request(&control, "reopen").starts_with("ok"));
    assert_eq!(lcs.send(Body::Shutdown { err: 0 }).err(), Some(err::OK));
    wait_for(T, "the S5 heartbeat at the IOC", || {
        status_field(&status(), "hb") == "s5"
    })
    .unwrap_or_else(|e| panic!("{e}: {}", status()));
    let marker = lcs.dir.join("poweroff.ran");
    wait_for(T, "poweroff command", || marker.exists()).expect("poweroff ran");
    let st = status();
    assert!(
        status_field(&st, "garbage").parse::<u64>().expect("n") > 0,
        "{st}"
    );
    assert!(
        status_field(&st, "dup").parse::<u64>().expect("n") > 0,
        "{st}"
    );
    // One of each request for all the duplicated frames.
    assert!(acrnd.rx.try_recv().is_err());
    assert!(lcs.procs.is_running("sos-lcs"));
}
