//! The server library against hostile peers: crowds of idle connections, connections that
//! hold half a message, garbage, connect / close churn, and every request id of every ABI
//! profile with its fields at their edge values. The daemons' own hostile tests repeat the
//! process-level part against sos-lcs and acrnd.

use std::time::{Duration, Instant};

use acrn_tests::hostile::{
    churn, closed_by_server, err_of, exchange_raw, garbage, half_message, idle_crowd,
    median_latency,
};
use acrn_tests::{TestDir, wait_for};
use mngr_ipc::client::Client;
use mngr_ipc::limits::{NOFILE_WANTED, raise_nofile};
use mngr_ipc::msg::{AckPayload, Body, MsgId, Request, StopTarget, err};
use mngr_ipc::server::{Access, Handlers, ServerConfig, ServerThread, spawn_server};
use mngr_ipc::{Profile, Wire};

const T: Duration = Duration::from_secs(10);
/// A request answered at once must stay well under this, whatever the crowd.
const LATENCY_BOUND: Duration = Duration::from_millis(500);

fn query_server(dir: &TestDir, cfg: impl FnOnce(&mut ServerConfig)) -> ServerThread {
    let h = Handlers::new().on(MsgId::DmQuery, Access::Open, |_r, call, _: &mut ()| {
        call.ack(AckPayload::State(7))
    });
    let mut c = ServerConfig::new("acrnd", dir.path());
    cfg(&mut c);
    spawn_server(c, h, ()).expect("server starts")
}

fn query(dir: &TestDir) {
    let ack = Client::new(dir.path(), Profile::F)
        .send("acrnd", &Request::now(Body::DmQuery), T)
        .expect("served");
    assert_eq!(ack.payload, AckPayload::State(7));
}

fn wire(profile: Profile, body: Body, ts: u64) -> Wire {
    profile
        .encode_request(&Request::new(ts, body))
        .expect("encodes")
}

#[test]
fn a_thousand_idle_connections_do_not_delay_a_request() {
    raise_nofile(NOFILE_WANTED);
    let dir = TestDir::new("ipc-crowd");
    let server = query_server(&dir, |_| {});
    let cap = ServerConfig::new("x", "/").max_connections;
    let before = median_latency(9, || query(&dir));
    let crowd = idle_crowd(server.path(), 1000, T);
    let after = median_latency(9, || query(&dir));
    eprintln!("DM_QUERY median latency: {before:?} before, {after:?} with 1000 idle connections");
    assert!(after < LATENCY_BOUND, "{after:?}");
    assert!(
        after <= before * 10 + Duration::from_millis(20),
        "{after:?} vs {before:?} before"
    );
    // At the cap the server dropped the longest idle ones to admit the others.
    let closed = closed_by_server(&crowd);
    assert!(
        closed >= crowd.len() - cap,
        "{closed} of {} idle connections closed, cap {cap}",
        crowd.len()
    );
}

#[test]
fn connections_holding_half_a_message_do_not_lock_out_a_request() {
    // More peers than the cap, each stalled in the middle of a message: the server must
    // still admit a client with a whole request (it once refused every newcomer until the
    // idle timeout, 30 s by default, and a peer trickling a byte now and then never expires).
    let dir = TestDir::new("ipc-halves");
    let server = query_server(&dir, |c| c.max_connections = 8);
    let frame = wire(Profile::F, Body::DmQuery, 1);
    let stalled: Vec<_> = (0..12)
        .map(|_| half_message(server.path(), &frame, T))
        .collect();
    let start = Instant::now();
    query(&dir);
    assert!(start.elapsed() < LATENCY_BOUND, "{:?}", start.elapsed());
    // The oldest stalled peers were the ones dropped.
    wait_for(T, "the oldest stalled peers to be dropped", || {
        closed_by_server_blocking(&stalled[..4]) == 4
    })
    .expect("dropped");
}

/// Like [`closed_by_server`], for blocking streams.
fn closed_by_server_blocking(conns: &[std::os::unix::net::UnixStream]) -> usize {
    for c in conns {
        c.set_nonblocking(true).expect("non-blocking");
    }
    let n = closed_by_server(conns);
    for c in conns {
        c.set_nonblocking(false).expect("blocking");
    }
    n
}

#[test]
fn half_messages_garbage_and_churn_leave_the_server_serving() {
    let dir = TestDir::new("ipc-abuse");
    let server = query_server(&dir, |_| {});
    let frame = wire(Profile::F, Body::DmQuery, 1);
    let _stalled = half_message(server.path(), &frame, T);
    let took = garbage(server.path(), 1 << 20, T);
    assert!(took < 1 << 20, "the server read all of the garbage");
    query(&dir);
    churn(server.path(), 3000, T);
    let start = Instant::now();
    query(&dir);
    assert!(start.elapsed() < LATENCY_BOUND, "{:?}", start.elapsed());
}

/// A request of `id` with its numeric fields at edge values.
fn sample(id: MsgId) -> Body {
    match id {
        MsgId::MsgStr => Body::MsgStr { text: "hi".into() },
        MsgId::DmStop => Body::DmStop { force: i32::MIN },
        MsgId::DmSuspend => Body::DmSuspend,
        MsgId::DmResume => Body::DmResume { reason: u32::MAX },
        MsgId::DmPause => Body::DmPause,
        MsgId::DmContinue => Body::DmContinue,
        MsgId::DmQuery => Body::DmQuery,
        MsgId::DmBlkrescan => Body::DmBlkrescan {
            devargs: "nocomma".into(),
        },
        MsgId::AcrndTimer => Body::AcrndTimer {
            name: String::new(),
            t: i64::MIN,
        },
        MsgId::AcrndReason => Body::AcrndReason { reason: u32::MAX },
        MsgId::DmNotify => Body::DmNotify {
            name: "vm1".into(),
            mode: i32::MIN,
        },
        MsgId::AcrndStop => Body::AcrndStop {
            force: -1,
            timeout: u32::MAX,
            target: StopTarget::S3,
        },
        MsgId::AcrndResume => Body::AcrndResume {
            force: i32::MAX,
            timeout: u32::MAX,
        },
        MsgId::AcrndSuspend => Body::AcrndSuspend {
            force: -1,
            timeout: 0,
        },
        MsgId::WakeupReason => Body::WakeupReason,
        MsgId::RtcTimer => Body::RtcTimer {
            vmname: Vec::new(),
            t: i64::MAX,
        },
        MsgId::Suspend => Body::Suspend { err: i32::MIN },
        MsgId::Shutdown => Body::Shutdown { err: i32::MAX },
        MsgId::Reboot => Body::Reboot { err: -1 },
        MsgId::CtlList => Body::CtlList { start: u32::MAX },
        MsgId::CtlStart => Body::CtlStart {
            name: String::new(),
        },
        MsgId::CtlStop => Body::CtlStop {
            name: "vm1".into(),
            force: i32::MIN,
            timeout: u32::MAX,
        },
        MsgId::CtlSuspend => Body::CtlSuspend { name: "vm1".into() },
        MsgId::CtlResume => Body::CtlResume {
            name: "vm1".into(),
            reason: u32::MAX,
        },
        MsgId::CtlTimers => Body::CtlTimers { start: u32::MAX },
        MsgId::CtlStatus => Body::CtlStatus,
    }
}

/// The name field of ids whose union starts with a VM name the receiver acts on.
fn name_field(id: MsgId) -> Option<&'static str> {
    match id {
        MsgId::AcrndTimer => Some("acrnd_timer.name"),
        MsgId::DmNotify => Some("dm_notify.name"),
        MsgId::CtlStart | MsgId::CtlStop | MsgId::CtlSuspend | MsgId::CtlResume => Some("ctl.name"),
        _ => None,
    }
}

#[test]
fn every_id_of_every_profile_with_edge_values_gets_a_sane_ack() {
    for profile in [Profile::F, Profile::E, Profile::D] {
        let dir = TestDir::new("ipc-edges");
        // Every id handled: whatever decodes is answered 0.
        let h = Handlers::new().fallback(Access::Open, |_r, call, _: &mut ()| call.err(0));
        let mut cfg = ServerConfig::new("edge", dir.path());
        cfg.profile = profile;
        let server = spawn_server(cfg, h, ()).expect("start");
        let path = server.path();
        let ask = |w: &Wire| exchange_raw(path, w, T);
        let n = profile.name_len();
        for id in MsgId::ALL {
            let what = format!("profile {profile}, {id}");
            let body = sample(id);
            let Some(wire_id) = profile.wire_id(id) else {
                // Not in this profile (DM_PAUSE outside D): the number of another
                // profile gets -ENOSYS or, if it means something else here, is served.
                assert!(matches!(id, MsgId::DmPause | MsgId::DmContinue), "{what}");
                continue;
            };
            let w = wire(profile, body.clone(), u64::MAX);
            let ack = ask(&w).unwrap_or_else(|| panic!("{what}: closed"));
            assert_eq!(&ack[8..12], &wire_id.to_le_bytes(), "{what}: id echoed");
            assert_eq!(&ack[16..24], &u64::MAX.to_le_bytes(), "{what}: ts echoed");
            assert_eq!(err_of(&ack), 0, "{what}: served");
            // Non-zero C padding is ignored.
            let mut padded = w;
            padded[12..16].fill(0xff);
            assert_eq!(ask(&padded).map(|a| err_of(&a)), Some(0), "{what}: padding");
            if name_field(id).is_some() {
                // The longest name that fits, then a full field without its NUL.
                let mut longest = w;
                longest[24..24 + n - 1].fill(b'v');
                longest[24 + n - 1] = 0;
                assert_eq!(ask(&longest).map(|a| err_of(&a)), Some(0), "{what}: N-1");
                let mut full = longest;
                full[24 + n - 1] = b'v';
                assert_eq!(
                    ask(&full).map(|a| err_of(&a)),
                    Some(err::INVALID),
                    "{what}: {n} bytes without NUL"
                );
            }
        }
        // RTC_TIMER's name is informational: a full field without NUL is taken as is.
        let mut rtc = wire(
            profile,
            Body::RtcTimer {
                vmname: vec![b'v'; n],
                t: 0,
            },
            1,
        );
        assert_eq!(
            ask(&rtc).map(|a| err_of(&a)),
            Some(0),
            "{profile}: RTC name"
        );
        // devargs: 255 bytes without a comma are served; 256 without NUL are not.
        let long = wire(
            profile,
            Body::DmBlkrescan {
                devargs: "d".repeat(255),
            },
            1,
        );
        assert_eq!(
            ask(&long).map(|a| err_of(&a)),
            Some(0),
            "{profile}: devargs"
        );
        let mut full = long;
        full[24 + 255] = b'd';
        assert_eq!(ask(&full).map(|a| err_of(&a)), Some(err::INVALID));
        // Out-of-range extension fields: ACRND_STOP target 3, DM_NOTIFY mode beyond i32.
        let mut stop = wire(profile, sample(MsgId::AcrndStop), 1);
        stop[32..36].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(ask(&stop).map(|a| err_of(&a)), Some(err::INVALID));
        let mut notify = wire(profile, sample(MsgId::DmNotify), 1);
        notify[24 + n..24 + n + 8].copy_from_slice(&(i64::from(i32::MAX) + 1).to_le_bytes());
        assert_eq!(ask(&notify).map(|a| err_of(&a)), Some(err::INVALID));
        // Ids no profile knows: -ENOSYS, id echoed.
        for unknown in [0, 2, 23, 0x4143_0000, 0x4143_0008, u32::MAX] {
            let mut w = wire(profile, Body::DmQuery, 5);
            w[8..12].copy_from_slice(&unknown.to_le_bytes());
            let ack = ask(&w).unwrap_or_else(|| panic!("{profile}: id {unknown:#x}: closed"));
            assert_eq!(&ack[8..12], &unknown.to_le_bytes());
            assert_eq!(err_of(&ack), err::UNKNOWN_ID, "{profile}: id {unknown:#x}");
        }
        // No magic: closed without an answer.
        rtc[0..8].fill(0);
        assert_eq!(ask(&rtc), None, "{profile}: no magic");
        // And the server still serves.
        let ok = wire(profile, Body::DmQuery, 9);
        assert_eq!(
            ask(&ok).map(|a| err_of(&a)),
            Some(0),
            "{profile}: after all"
        );
        drop(server);
    }
}

/// Voluntary context switches of this process's thread named `comm`, if there is one.
fn thread_switches(comm: &str) -> Option<u64> {
    acrn_tests::measure::switches(std::process::id())
        .into_values()
        .find(|(c, _, _)| c == comm)
        .map(|(_, voluntary, _)| voluntary)
}

/// Once its last connection has closed, an idle server sleeps until the next peer: its idle
/// timer, armed while connections were open, does not stay armed to wake it for nothing.
#[test]
fn an_idle_server_does_not_wake_after_its_connections_close() {
    let dir = TestDir::new("ipc-quiet");
    let idle = Duration::from_millis(500);
    let h = Handlers::new().on(MsgId::DmQuery, Access::Open, |_r, call, _: &mut ()| {
        call.ack(AckPayload::State(7))
    });
    let mut cfg = ServerConfig::new("quiet", dir.path());
    cfg.idle_timeout = idle;
    let _server = spawn_server(cfg, h, ()).expect("server starts");
    let thread = "mngr-quiet";
    Client::new(dir.path(), Profile::F)
        .send("quiet", &Request::now(Body::DmQuery), T)
        .expect("served");
    // The server reads the connection's end of file; then it has nothing to do.
    let mut last = thread_switches(thread).expect("the server thread");
    let mut since = Instant::now();
    wait_for(T, "the server thread to settle", || {
        let now = thread_switches(thread).expect("the server thread");
        if now != last {
            (last, since) = (now, Instant::now());
        }
        since.elapsed() >= Duration::from_millis(100)
    })
    .expect("settles");
    // Watch it for well past the idle timeout of the closed connection.
    let settled = last;
    let watch_until = Instant::now() + idle * 2;
    while Instant::now() < watch_until {
        let now = thread_switches(thread).expect("the server thread");
        assert_eq!(now, settled, "the idle server woke up");
        std::thread::sleep(Duration::from_millis(10)); // the polling interval
    }
}
