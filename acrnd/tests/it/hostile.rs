//! acrnd against hostile and faulty peers: crowds of idle connections, half messages,
//! garbage and connect / close churn on its socket; every request with its fields at their
//! edge values; privileged requests from peers without permission; and timer-store writes
//! that fail. Each test asserts the acks, the VMs' states, the timers (in acrnd and on
//! disk) and what the daemon costs (memory, descriptors).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use acrn_tests::hostile::{
    Victim, abuse_check, closed_by_server, crowd_check, err_of, exchange_raw, footprint,
    idle_crowd, nofile_of, server_socket,
};
use mngr_ipc::client::Client;
use mngr_ipc::limits::{NOFILE_WANTED, raise_nofile};
use mngr_ipc::msg::{
    AckPayload, Body, MNGR_MSG_MAGIC, MsgId, Request, StopTarget, TimerEntry, epoch_now, err,
    suspend_mode, vm_state,
};
use mngr_ipc::server::ServerConfig;
use mngr_ipc::{MSG_LEN, Profile, Wire};

use crate::daemon::{Suite, T, TestLcs, stop_all};

/// A request answered at once must stay well under this, whatever the abuse.
const LATENCY_BOUND: Duration = Duration::from_millis(500);
/// Most resident memory the abuse may leave behind.
const RSS_GROWTH_KIB: u64 = 2048;
/// A valid VM name of 15 bytes, the longest a 16-byte field holds with its NUL.
const NAME15: &str = "abcdefghijklmno";

fn status(s: &Suite) {
    assert!(matches!(s.send(Body::CtlStatus), AckPayload::Status(_)));
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn wire(body: Body, ts: u64) -> Wire {
    Profile::F
        .encode_request(&Request::new(ts, body))
        .expect("encodes")
}

fn timers(s: &Suite) -> Vec<TimerEntry> {
    let AckPayload::TimerPage(p) = s.send(Body::CtlTimers { start: 0 }) else {
        panic!("not a timer page");
    };
    p.entries
}

fn timer(name: &str, t: i64) -> Body {
    Body::AcrndTimer {
        name: name.into(),
        t,
    }
}

/// acrnd with no VM, serving.
fn bare(label: &str) -> (Suite, TestLcs) {
    let mut s = Suite::new(label);
    let lcs = TestLcs::start(&s.sock, 0x20);
    s.start_acrnd(&["--no-autostart"], &[]);
    (s, lcs)
}

#[test]
fn a_thousand_idle_connections_do_not_delay_a_request() {
    raise_nofile(NOFILE_WANTED);
    let (s, _lcs) = bare("acrnd-crowd");
    let pid = s.procs.pid(&s.acrnd_label());
    let (soft, hard) = nofile_of(pid);
    assert_eq!(soft, NOFILE_WANTED.min(hard), "acrnd RLIMIT_NOFILE");
    let path = server_socket(&s.sock, "acrnd");
    let request = || status(&s);
    let victim = Victim {
        name: "acrnd",
        pid,
        path: &path,
        request: &request,
    };
    let cap = ServerConfig::new("x", "/").max_connections;
    crowd_check(victim, cap, LATENCY_BOUND, || {});
}

#[test]
fn half_messages_garbage_and_churn_keep_it_serving_in_bounded_memory() {
    let (s, _lcs) = bare("acrnd-abuse");
    let path = server_socket(&s.sock, "acrnd");
    let request = || status(&s);
    let victim = Victim {
        name: "acrnd",
        pid: s.procs.pid(&s.acrnd_label()),
        path: &path,
        request: &request,
    };
    abuse_check(
        victim,
        &wire(Body::CtlStatus, 1),
        LATENCY_BOUND,
        RSS_GROWTH_KIB,
    );
}

#[test]
fn every_request_with_edge_values_gets_a_sane_ack_and_changes_nothing_else() {
    let mut s = Suite::new("acrnd-edges");
    let lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("vm1", &[]);
    s.add_vm(NAME15, &[]);
    s.start_acrnd(&["--no-autostart"], &[]);
    assert_eq!(
        s.send(Body::CtlStart { name: "vm1".into() }),
        AckPayload::Err(0)
    );
    s.wait_state("vm1", vm_state::STARTED);
    let path = server_socket(&s.sock, "acrnd");
    let raw = |w: &Wire| err_of(&exchange_raw(&path, w, T).expect("acked"));
    let sixteen = |body: Body| {
        // The 16-byte name field full, without its NUL.
        let mut w = wire(body, 1);
        w[24..40].fill(b'v');
        w
    };
    let now = i64::try_from(epoch_now()).expect("epoch");

    // ACRND_TIMER: relative seconds, negative and past the i64 epoch refused; names of 0
    // and 16 bytes refused; year 2106 and beyond taken exactly.
    for t in [-1, i64::MIN, i64::MAX, i64::MAX - now + 1] {
        assert_eq!(
            s.send(timer("vm1", t)),
            AckPayload::Err(err::INVALID),
            "t = {t}"
        );
    }
    assert_eq!(s.send(timer("", 5)), AckPayload::Err(err::NOT_FOUND));
    assert_eq!(raw(&sixteen(timer("vm1", 5))), err::INVALID);
    let y2106 = (1i64 << 32) - now;
    assert_eq!(s.send(timer("vm1", y2106)), AckPayload::Err(0));
    let far = i64::MAX - now - 10;
    assert_eq!(s.send(timer(NAME15, far)), AckPayload::Err(0));
    let got = timers(&s);
    let when = |vm: &str| got.iter().find(|e| e.name == vm).map(|e| e.when);
    assert!(
        when("vm1").is_some_and(|w| (1 << 32..=(1 << 32) + 2).contains(&w)),
        "{got:?}"
    );
    assert!(when(NAME15).is_some_and(|w| w >= i64::MAX - 10), "{got:?}");

    // DM_NOTIFY: modes that mean nothing change nothing; bad names refused.
    for mode in [-1, i32::MIN, i32::MAX, 99, suspend_mode::SYSTEM_RESET] {
        let ack = s.send(Body::DmNotify {
            name: "vm1".into(),
            mode,
        });
        assert_eq!(ack, AckPayload::Err(0), "mode {mode}");
    }
    let notify = |name: &str| Body::DmNotify {
        name: name.into(),
        mode: suspend_mode::POWEROFF,
    };
    assert_eq!(s.send(notify("")), AckPayload::Err(err::NOT_FOUND));
    assert_eq!(raw(&sixteen(notify("vm1"))), err::INVALID);
    assert_eq!(s.state_of("vm1"), Some(vm_state::STARTED));

    // CTL_*: pages past the end are empty; names of 0, 15 (stopped) and 16 bytes.
    let AckPayload::VmPage(p) = s.send(Body::CtlList { start: u32::MAX }) else {
        panic!("not a page");
    };
    assert_eq!((p.total, p.entries.len()), (2, 0));
    let AckPayload::TimerPage(p) = s.send(Body::CtlTimers { start: u32::MAX }) else {
        panic!("not a page");
    };
    assert_eq!((p.total, p.entries.len()), (2, 0));
    assert_eq!(
        s.send(Body::CtlStart {
            name: String::new()
        }),
        AckPayload::Err(err::NOT_FOUND)
    );
    assert_eq!(
        raw(&sixteen(Body::CtlStart { name: "vm1".into() })),
        err::INVALID
    );
    assert_eq!(
        s.send(Body::CtlStop {
            name: "nope".into(),
            force: i32::MIN,
            timeout: u32::MAX
        }),
        AckPayload::Err(err::NOT_FOUND)
    );
    assert_eq!(
        s.send(Body::CtlSuspend {
            name: NAME15.into()
        }),
        AckPayload::Err(err::INVALID),
        "a stopped VM"
    );
    assert_eq!(
        s.send(Body::CtlResume {
            name: "vm1".into(),
            reason: u32::MAX
        }),
        AckPayload::Err(err::INVALID),
        "a running VM"
    );
    assert_eq!(
        s.send(Body::AcrndReason { reason: u32::MAX }),
        AckPayload::Err(0x20),
        "the reason, in the ack's only field"
    );

    // Ids acrnd does not serve, and an ACRND_STOP target out of range.
    for body in [
        Body::DmBlkrescan {
            devargs: "nocomma".into(),
        },
        Body::DmQuery,
        Body::WakeupReason,
        Body::Reboot { err: 0 },
    ] {
        assert_eq!(raw(&wire(body.clone(), 2)), err::UNKNOWN_ID, "{body:?}");
    }
    for id in [0u32, 2, 8, 21, 0x4143_0000, 0x4143_0008, u32::MAX] {
        let mut w = wire(Body::CtlStatus, 3);
        w[8..12].copy_from_slice(&id.to_le_bytes());
        assert_eq!(raw(&w), err::UNKNOWN_ID, "id {id:#x}");
    }
    let mut stop = wire(
        Body::AcrndStop {
            force: 0,
            timeout: 1,
            target: StopTarget::S5,
        },
        4,
    );
    stop[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(raw(&stop), err::INVALID);

    // DM_BLKRESCAN at the device model: devargs without a comma, and the longest there are.
    let monitor = server_socket(&s.sock, "vm1.monitor");
    for devargs in ["nocomma".to_owned(), "d".repeat(255)] {
        let ack = exchange_raw(&monitor, &wire(Body::DmBlkrescan { devargs }, 5), T);
        assert_eq!(ack.map(|a| err_of(&a)), Some(err::INVALID));
    }

    // Nothing happened to the VMs, nothing was sent to them or to the lifecycle service.
    assert_eq!(s.state_of("vm1"), Some(vm_state::STARTED));
    assert_eq!(s.state_of(NAME15), Some(vm_state::STOPPED));
    assert!(
        !s.events().iter().any(|e| e.kind == "dm.send"),
        "no DM request"
    );
    while let Ok(b) = lcs.rx.try_recv() {
        assert_eq!(b, Body::WakeupReason, "nothing but the boot's question");
    }

    // A stop-all with the longest deadline and odd force values still completes; the
    // nearest wake-up, in 2106, goes to the lifecycle service first.
    stop_all(&s, StopTarget::S3, -1, u32::MAX);
    let Body::RtcTimer { t, .. } = lcs.next_report() else {
        panic!("RTC_TIMER first");
    };
    assert!((1 << 32..=(1 << 32) + 2).contains(&t), "{t}");
    assert_eq!(lcs.next_report(), Body::Suspend { err: 0 });
    assert_eq!(s.state_of("vm1"), Some(vm_state::SUSPENDED));
    assert_eq!(
        s.send(Body::AcrndResume {
            force: i32::MIN,
            timeout: u32::MAX
        }),
        AckPayload::Err(0)
    );
    s.wait_state("vm1", vm_state::STARTED);
    assert_eq!(
        s.state_of(NAME15),
        Some(vm_state::STOPPED),
        "no timer fired"
    );
    assert_eq!(timers(&s).len(), 2, "the timers are kept");
}

/// Sends every privileged request of acrnd and asserts each is refused with -EACCES;
/// `who` names the peer in the messages.
fn privileged_requests(dir: &Path, who: &str) {
    let client = Client::new(dir, Profile::F);
    for body in [
        timer("vm1", 100),
        Body::DmNotify {
            name: "vm1".into(),
            mode: suspend_mode::POWEROFF,
        },
        Body::AcrndStop {
            force: 1,
            timeout: 1,
            target: StopTarget::S5,
        },
        Body::AcrndSuspend {
            force: 1,
            timeout: 1,
        },
        Body::AcrndResume {
            force: 0,
            timeout: 0,
        },
        Body::CtlStart { name: "vm2".into() },
        Body::CtlStop {
            name: "vm1".into(),
            force: 1,
            timeout: 0,
        },
        Body::CtlSuspend { name: "vm1".into() },
        Body::CtlResume {
            name: "vm1".into(),
            reason: 0x20,
        },
    ] {
        let ack = client
            .send("acrnd", &Request::now(body.clone()), T)
            .unwrap_or_else(|e| panic!("{who}: {body:?}: {e}"));
        assert_eq!(ack.err(), Some(err::NOT_PERMITTED), "{who}: {body:?}");
    }
}

/// How many requests [`privileged_requests`] sends.
const PRIVILEGED: usize = 9;

/// The client half of `privileged_requests_without_permission_are_refused`, run as uid
/// 65534 by it; does nothing unless it started it.
#[test]
fn privileged_client_helper() {
    let Ok(dir) = std::env::var("ACRN_ACRND_HOSTILE_DIR") else {
        return;
    };
    privileged_requests(Path::new(&dir), "uid 65534");
}

/// acrnd with vm1 running and vm2 stopped, under `policy`.
fn two_vms(label: &str, policy: &[&str]) -> (Suite, TestLcs) {
    let mut s = Suite::new(label);
    let lcs = TestLcs::start(&s.sock, 0x20);
    s.add_vm("vm1", &[]);
    s.add_vm("vm2", &[]);
    let mut extra = vec!["--no-autostart"];
    extra.extend_from_slice(policy);
    s.start_acrnd(&extra, &[]);
    (s, lcs)
}

/// What refused peers must not have caused: every request refused and logged (by `uid`
/// if given), the VMs as they were, no timer, nothing sent to a VM or the lifecycle
/// service.
fn nothing_happened(s: &Suite, lcs: &TestLcs, uid: Option<u32>, vm1: i32) {
    let ev = s.events();
    let refused: Vec<_> = ev.iter().filter(|e| e.kind == "ipc.refused").collect();
    assert_eq!(refused.len(), PRIVILEGED, "{refused:?}");
    if let Some(uid) = uid {
        assert!(
            refused.iter().all(|e| e.fields["uid"] == uid),
            "{refused:?}"
        );
    }
    assert_eq!(s.state_of("vm1"), Some(vm1));
    assert_eq!(s.state_of("vm2"), Some(vm_state::STOPPED));
    assert!(timers(s).is_empty());
    assert!(!s.state.join("timer_list").exists(), "no store written");
    assert!(!ev.iter().any(|e| e.kind == "dm.send"), "no DM request");
    while let Ok(b) = lcs.rx.try_recv() {
        assert_eq!(b, Body::WakeupReason, "nothing but the boot's question");
    }
}

#[test]
fn privileged_requests_without_permission_are_refused() {
    // By policy: the test's uid is not allowed (this works as root and as anyone else).
    // acrnd itself launches nothing then, so vm1 is never started.
    let (s, lcs) = two_vms("acrnd-deny", &["--allow-uid", "4242"]);
    privileged_requests(&s.sock, "policy without the test's uid");
    nothing_happened(&s, &lcs, None, vm_state::STOPPED);
    if !nix::unistd::getuid().is_root() {
        eprintln!("not root: no client of another uid; refusals checked by policy");
        return;
    }
    // By uid: a client running as nobody; vm1 runs, so every request could act.
    use std::os::unix::process::CommandExt;
    let (s, lcs) = two_vms("acrnd-deny-uid", &[]);
    assert_eq!(
        s.send(Body::CtlStart { name: "vm1".into() }),
        AckPayload::Err(0)
    );
    s.wait_state("vm1", vm_state::STARTED);
    // Forget the start's own traffic.
    let dm_before = s.events().iter().filter(|e| e.kind == "dm.send").count();
    assert_eq!(dm_before, 0);
    for d in [s.dir.path(), s.sock.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let path = server_socket(&s.sock, "acrnd");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let status = Command::new(std::env::current_exe().expect("test exe"))
        .args(["--exact", "hostile::privileged_client_helper"])
        .args(["--test-threads=1", "--nocapture"])
        .env("ACRN_ACRND_HOSTILE_DIR", &s.sock)
        .uid(65534)
        .gid(65534)
        .status()
        .expect("client as uid 65534");
    assert!(status.success(), "{status}");
    nothing_happened(&s, &lcs, Some(65534), vm_state::STARTED);
}

/// The store's bytes.
fn store(s: &Suite) -> Vec<u8> {
    std::fs::read(s.state.join("timer_list")).expect("timer store")
}

fn store_errors(s: &Suite) -> usize {
    s.events()
        .iter()
        .filter(|e| e.kind == "store.error")
        .count()
}

#[test]
fn a_failing_store_write_keeps_the_old_store_and_fails_the_ack() {
    let (mut s, _lcs) = two_vms("acrnd-store", &[]);
    let pid = s.procs.pid(&s.acrnd_label());
    assert_eq!(s.send(timer("vm1", 100)), AckPayload::Err(0));
    let old = store(&s);
    let one = timers(&s);
    assert_eq!(one.len(), 1);

    // 1. The file size limit: a store with a second timer no longer fits. The write fails
    // with EFBIG (SIGXFSZ once killed acrnd here).
    let limit = old.len().to_string();
    set_limit(pid, &format!("--fsize={limit}:"));
    assert_eq!(s.send(timer("vm2", 200)), AckPayload::Err(err::FAILED));
    assert_eq!(store(&s), old, "the old store is intact");
    assert_eq!(timers(&s), one, "the refused timer is not kept either");
    // (The event log cannot take the store.error event now: it is past the limit too.)
    set_limit(pid, "--fsize=unlimited:");
    let errors = store_errors(&s);

    // 2. A path component that is a file: the state directory replaced by a file.
    let moved = s.dir.join("state.away");
    std::fs::rename(&s.state, &moved).expect("move the state dir away");
    std::fs::write(&s.state, b"not a directory").expect("a file in its place");
    assert_eq!(s.send(timer("vm2", 200)), AckPayload::Err(err::FAILED));
    assert_eq!(timers(&s), one);
    assert_eq!(store_errors(&s), errors + 1);
    std::fs::remove_file(&s.state).expect("rm");
    std::fs::rename(&moved, &s.state).expect("move back");
    assert_eq!(store(&s), old, "the old store is intact");

    // acrnd serves on, and the next write succeeds.
    let label = s.acrnd_label();
    assert!(s.procs.is_running(&label), "acrnd survived");
    assert_eq!(s.send(timer("vm2", 200)), AckPayload::Err(0));
    assert_eq!(timers(&s).len(), 2);
    let text = String::from_utf8(store(&s)).expect("utf-8");
    assert!(
        text.starts_with("vm1\t") && text.contains("\nvm2\t"),
        "{text:?}"
    );
}

/// Sets a soft limit of `pid` with prlimit(1): `limit` as `--fsize=N:` (the hard limit
/// stays).
fn set_limit(pid: u32, limit: &str) {
    let out = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(limit)
        .output()
        .expect("prlimit runs");
    assert!(
        out.status.success(),
        "prlimit {limit}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Out of descriptors, acrnd's server closes the connection idle the longest to accept a
/// new one (the C server, and ours before, left it in the backlog with no event to come).
#[test]
fn out_of_descriptors_an_idle_connection_makes_room_for_a_request() {
    let (s, _lcs) = bare("acrnd-emfile");
    let pid = s.procs.pid(&s.acrnd_label());
    let path = server_socket(&s.sock, "acrnd");
    status(&s);
    let (soft, _) = nofile_of(pid);
    let open = footprint(pid).fds;
    set_limit(pid, &format!("--nofile={}:", open + 3));
    // Three fit; the rest wait in the backlog until acrnd makes room.
    let crowd = idle_crowd(&path, 12, T);
    let took = timed(|| status(&s));
    assert!(took < LATENCY_BOUND, "served in {took:?} at the limit");
    // (How many of the crowd fit depends on the holes in acrnd's descriptor table: the
    // limit bounds descriptor numbers, not their count.)
    let closed = closed_by_server(&crowd);
    assert!(closed >= 1, "no idle connection was closed to make room");
    set_limit(pid, &format!("--nofile={soft}:"));
    status(&s);
}

/// The CTL_* requests anyone may make: queries. Every other CTL_* id, including one added
/// later, must be refused to a peer the policy does not allow (`Handlers::privileged`):
/// registering a new id `open` means adding it here, on purpose.
const OPEN_CTL: [&str; 3] = ["CTL_LIST", "CTL_TIMERS", "CTL_STATUS"];

#[test]
fn every_ctl_id_is_refused_to_a_peer_without_permission_unless_it_is_a_query() {
    // The policy does not allow the test's uid (this works as root and as anyone else).
    let (s, _lcs) = two_vms("acrnd-ctl-ids", &["--allow-uid", "4242"]);
    let path = server_socket(&s.sock, "acrnd");
    let ctl: Vec<MsgId> = MsgId::ALL
        .into_iter()
        .filter(|id| id.name().starts_with("CTL_"))
        .collect();
    assert!(ctl.len() >= 7, "{ctl:?}");
    for id in ctl {
        // The id with an all-zero union: an empty name, page 0, no force.
        let mut w = [0u8; MSG_LEN];
        w[..8].copy_from_slice(&MNGR_MSG_MAGIC.to_le_bytes());
        let num = Profile::F.wire_id(id).expect("every CTL id has a number");
        w[8..12].copy_from_slice(&num.to_le_bytes());
        let ack = exchange_raw(&path, &w, T).expect("acked");
        let code = err_of(&ack);
        if OPEN_CTL.contains(&id.name()) {
            assert_eq!(code, err::OK, "{id} is a query: open");
        } else {
            assert_eq!(code, err::NOT_PERMITTED, "{id} changes state: privileged");
        }
    }
    let refused = s
        .events()
        .iter()
        .filter(|e| e.kind == "ipc.refused")
        .count();
    assert_eq!(refused, 4, "CTL_START, CTL_STOP, CTL_SUSPEND, CTL_RESUME");
}
