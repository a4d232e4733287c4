//! The server and client over real Unix sockets in temp dirs.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use acrn_tests::{TestDir, wait_for, wait_until};
use mngr_ipc::client::{Client, ClientError};
use mngr_ipc::msg::{AckPayload, Body, MsgId, Request, err};
use mngr_ipc::naming::{self, socket_file_name};
use mngr_ipc::server::{
    Access, DeferredAck, Handlers, PeerCred, ServerConfig, ServerThread, spawn_server,
};
use mngr_ipc::{MSG_LEN, Profile, Wire};

const T: Duration = Duration::from_secs(5);

fn query_server(dir: &Path, name: &str, state: i32) -> ServerThread {
    let h = Handlers::new().on(MsgId::DmQuery, Access::Open, move |_r, call, _: &mut ()| {
        call.ack(AckPayload::State(state))
    });
    spawn_server(ServerConfig::new(name, dir), h, ()).expect("server starts")
}

fn wire(body: Body, ts: u64) -> Wire {
    Profile::F
        .encode_request(&Request::new(ts, body))
        .expect("encodes")
}

fn connect(dir: &Path, name: &str) -> UnixStream {
    let s = Client::new(dir, Profile::F)
        .connect(name, Instant::now() + T)
        .expect("connects");
    // Raw blocking I/O with timeouts from here on (Client streams are non-blocking).
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(T)).expect("timeout");
    s
}

fn read_ack(s: &mut UnixStream) -> Wire {
    let mut buf = [0u8; MSG_LEN];
    s.read_exact(&mut buf).expect("a whole ack");
    buf
}

/// Reads until EOF (the server closed) within the timeout.
fn wait_closed(s: &mut UnixStream) {
    s.set_read_timeout(Some(T)).expect("timeout");
    let mut sink = Vec::new();
    s.read_to_end(&mut sink).expect("EOF, not a timeout");
}

fn state_of(w: &Wire) -> i32 {
    match Profile::F
        .decode_ack(w, MsgId::DmQuery)
        .expect("ack")
        .payload
    {
        AckPayload::State(s) => s,
        p => panic!("not a state: {p:?}"),
    }
}

#[test]
fn request_written_one_byte_at_a_time() {
    let dir = TestDir::new("ipc-bytes");
    let _server = query_server(dir.path(), "vm1.monitor", 4);
    let mut s = connect(dir.path(), "vm1.monitor");
    for b in wire(Body::DmQuery, 7) {
        s.write_all(&[b]).expect("write one byte");
        s.flush().expect("flush");
    }
    let ack = read_ack(&mut s);
    assert_eq!(state_of(&ack), 4);
    assert_eq!(&ack[16..24], &7u64.to_le_bytes(), "timestamp echoed");
}

#[test]
fn two_requests_in_one_write_get_two_acks() {
    let dir = TestDir::new("ipc-two");
    let _server = query_server(dir.path(), "vm1.monitor", 0);
    let mut s = connect(dir.path(), "vm1.monitor");
    let mut both = wire(Body::DmQuery, 1).to_vec();
    both.extend_from_slice(&wire(Body::DmQuery, 2));
    s.write_all(&both).expect("write");
    let a = read_ack(&mut s);
    let b = read_ack(&mut s);
    assert_eq!(&a[16..24], &1u64.to_le_bytes());
    assert_eq!(&b[16..24], &2u64.to_le_bytes());
}

#[test]
fn garbage_closes_its_connection_and_the_server_serves_on() {
    let dir = TestDir::new("ipc-garbage");
    let _server = query_server(dir.path(), "vm1.monitor", 0);
    let mut bad = connect(dir.path(), "vm1.monitor");
    bad.write_all(&[0xA5; 2 * MSG_LEN]).expect("write garbage");
    wait_closed(&mut bad);
    let ack = Client::new(dir.path(), Profile::F)
        .send("vm1.monitor", &Request::new(3, Body::DmQuery), T)
        .expect("served after garbage");
    assert_eq!(ack.payload, AckPayload::State(0));
}

#[test]
fn hundred_clients_connected_at_once_are_all_acked() {
    let dir = TestDir::new("ipc-hundred");
    let _server = query_server(dir.path(), "acrnd", 2);
    let n = 100;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let mut s = connect(dir.path(), "acrnd");
            std::thread::spawn(move || {
                // Every client holds its connection open before any sends.
                barrier.wait();
                let ts = u64::try_from(i).expect("small");
                s.write_all(&wire(Body::DmQuery, ts)).expect("write");
                let ack = read_ack(&mut s);
                assert_eq!(&ack[16..24], &ts.to_le_bytes());
                state_of(&ack)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("client thread"), 2);
    }
}

#[test]
fn stale_sockets_are_removed_and_never_answer() {
    let dir = TestDir::new("ipc-stale");
    // A dead pid: a child that has exited and been reaped.
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let dead = child.id();
    child.wait().expect("reaped");
    assert!(!naming::pid_alive(dead));
    let dead_path = dir.join(socket_file_name("sos-lcs", dead));
    drop(UnixListener::bind(&dead_path).expect("bind"));
    // A live pid whose socket refuses connections (the pid was reused).
    let reused_path = dir.join(socket_file_name("sos-lcs", 1));
    drop(UnixListener::bind(&reused_path).expect("bind"));
    // A client ignores both and reports that nobody serves.
    let err = Client::new(dir.path(), Profile::F)
        .send("sos-lcs", &Request::now(Body::DmQuery), T)
        .expect_err("no live server");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");

    let _server = query_server(dir.path(), "sos-lcs", 0);
    assert!(!dead_path.exists(), "dead pid's socket removed");
    assert!(!reused_path.exists(), "refusing socket removed");
    let own = dir.join(socket_file_name("sos-lcs", std::process::id()));
    assert!(own.exists());
}

#[test]
fn lookup_is_by_exact_name() {
    let dir = TestDir::new("ipc-exact");
    let _vm1 = query_server(dir.path(), "vm1", 1);
    let client = Client::new(dir.path(), Profile::F);
    // The C library's prefix match would let `vm1` answer for `vm10`.
    let err = client
        .send("vm10", &Request::now(Body::DmQuery), T)
        .expect_err("vm10 does not exist");
    assert!(matches!(err, ClientError::NotFound { .. }), "{err:?}");
    let _vm10 = query_server(dir.path(), "vm10", 10);
    let ask = |name: &str| match client
        .send(name, &Request::now(Body::DmQuery), T)
        .expect("acked")
        .payload
    {
        AckPayload::State(s) => s,
        p => panic!("{p:?}"),
    };
    assert_eq!(ask("vm10"), 10);
    assert_eq!(ask("vm1"), 1);
    assert!(matches!(
        client.send("vm", &Request::now(Body::DmQuery), T),
        Err(ClientError::NotFound { .. })
    ));
}

#[test]
fn unknown_ids_and_malformed_requests_get_error_acks() {
    let dir = TestDir::new("ipc-unknown");
    let _server = query_server(dir.path(), "acrnd", 0);
    let mut s = connect(dir.path(), "acrnd");
    // An id no profile knows: -ENOSYS, id and timestamp echoed.
    let mut unknown = wire(Body::DmQuery, 0x1122);
    unknown[8..12].copy_from_slice(&99u32.to_le_bytes());
    s.write_all(&unknown).expect("write");
    let ack = read_ack(&mut s);
    assert_eq!(
        &ack[0..8],
        &[0x76, 0x6d, 0x6d, 0x20, 0x6d, 0x73, 0x67, 0x00]
    );
    assert_eq!(&ack[8..12], &99u32.to_le_bytes());
    assert_eq!(&ack[16..24], &0x1122u64.to_le_bytes());
    assert_eq!(&ack[24..28], &(-38i32).to_le_bytes());
    // A known id without a handler: the same.
    s.write_all(&wire(Body::DmSuspend, 5)).expect("write");
    let ack = read_ack(&mut s);
    assert_eq!(&ack[8..12], &4u32.to_le_bytes());
    assert_eq!(&ack[24..28], &err::UNKNOWN_ID.to_le_bytes());
    // A malformed DM_QUERY cannot exist (no payload); use a handled id with a bad name.
    drop(s);
    let h = Handlers::new().on(MsgId::AcrndTimer, Access::Open, |_r, call, _: &mut ()| {
        call.err(0)
    });
    let _acrnd2 = spawn_server(ServerConfig::new("acrnd2", dir.path()), h, ()).expect("start");
    let mut s = connect(dir.path(), "acrnd2");
    let mut bad = wire(
        Body::AcrndTimer {
            name: "vm1".into(),
            t: 3,
        },
        9,
    );
    bad[24..40].fill(b'x'); // no NUL within the 16-byte name
    s.write_all(&bad).expect("write");
    let ack = read_ack(&mut s);
    assert_eq!(&ack[24..28], &err::INVALID.to_le_bytes());
    // The same connection keeps being served.
    s.write_all(&wire(
        Body::AcrndTimer {
            name: "vm1".into(),
            t: 3,
        },
        10,
    ))
    .expect("write");
    let ack = read_ack(&mut s);
    assert_eq!(&ack[16..24], &10u64.to_le_bytes());
    assert_eq!(&ack[24..28], &0i32.to_le_bytes());
}

#[test]
fn missing_acks_are_errors_within_the_deadline() {
    let dir = TestDir::new("ipc-timeout");
    // A server that defers and never answers.
    let h = Handlers::new().on(
        MsgId::DmStop,
        Access::Open,
        |_r, call, held: &mut Vec<DeferredAck>| {
            let (reply, d) = call.defer();
            held.push(d);
            reply
        },
    );
    let _server =
        spawn_server(ServerConfig::new("hang", dir.path()), h, Vec::new()).expect("start");
    let client = Client::new(dir.path(), Profile::F);
    let budget = Duration::from_millis(300);
    let start = Instant::now();
    let e = client
        .send("hang", &Request::now(Body::DmStop { force: 0 }), budget)
        .expect_err("no ack");
    let took = start.elapsed();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    assert!(
        took >= budget && took < budget + Duration::from_secs(2),
        "{took:?}"
    );

    // A peer that closes without answering, and one answering another request.
    let close_path = dir.join(socket_file_name("closer", std::process::id()));
    let closer = UnixListener::bind(&close_path).expect("bind");
    let wrong_path = dir.join(socket_file_name("liar", std::process::id()));
    let liar = UnixListener::bind(&wrong_path).expect("bind");
    let peers = std::thread::spawn(move || {
        let (mut s, _) = closer.accept().expect("accept");
        let mut buf = [0u8; MSG_LEN];
        s.read_exact(&mut buf).expect("request");
        drop(s);
        let (mut s, _) = liar.accept().expect("accept");
        s.read_exact(&mut buf).expect("request");
        buf[16] ^= 0xFF; // another timestamp
        s.write_all(&buf).expect("reply");
    });
    let e = client
        .send("closer", &Request::now(Body::DmQuery), T)
        .expect_err("closed");
    assert!(matches!(e, ClientError::Closed { got: 0, .. }), "{e:?}");
    let e = client
        .send("liar", &Request::now(Body::DmQuery), T)
        .expect_err("wrong ack");
    assert!(matches!(e, ClientError::WrongAck { .. }), "{e:?}");
    peers.join().expect("peers");
}

#[test]
fn peer_credentials_reach_the_handler() {
    let dir = TestDir::new("ipc-creds");
    let (tx, rx) = mpsc::channel::<PeerCred>();
    let tx = Mutex::new(tx);
    let h = Handlers::new().on(MsgId::DmQuery, Access::Open, move |_r, call, _: &mut ()| {
        tx.lock().expect("lock").send(call.peer()).expect("send");
        call.ack(AckPayload::State(0))
    });
    let _server = spawn_server(ServerConfig::new("creds", dir.path()), h, ()).expect("start");
    Client::new(dir.path(), Profile::F)
        .send("creds", &Request::now(Body::DmQuery), T)
        .expect("acked");
    let peer = rx.recv_timeout(T).expect("handler ran");
    assert_eq!(
        peer.pid,
        i32::try_from(std::process::id()).expect("pid fits")
    );
    assert_eq!(peer.uid, nix::unistd::getuid().as_raw());
    assert_eq!(peer.gid, nix::unistd::getgid().as_raw());
}

/// Not a test of its own: the client half of `peer_credentials_of_another_user`, run in a
/// child process under another uid. Does nothing unless that test started it.
#[test]
fn cred_client_helper() {
    let Ok(dir) = std::env::var("ACRN_CRED_CLIENT_DIR") else {
        return;
    };
    Client::new(dir, Profile::F)
        .send("creds", &Request::now(Body::DmQuery), T)
        .expect("acked");
}

#[test]
fn peer_credentials_of_another_user() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::getuid().is_root() {
        // An ordinary user cannot start a process of another uid; the same-uid case is
        // covered by peer_credentials_reach_the_handler.
        eprintln!(
            "peer_credentials_of_another_user: needs root to switch uid; checked own uid only"
        );
        return;
    }
    let dir = TestDir::new("ipc-creds2");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (tx, rx) = mpsc::channel::<PeerCred>();
    let tx = Mutex::new(tx);
    let h = Handlers::new().on(MsgId::DmQuery, Access::Open, move |_r, call, _: &mut ()| {
        tx.lock().expect("lock").send(call.peer()).expect("send");
        call.ack(AckPayload::State(0))
    });
    let server = spawn_server(ServerConfig::new("creds", dir.path()), h, ()).expect("start");
    // Sockets are 0660: let the unprivileged test client in.
    std::fs::set_permissions(server.path(), std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let status = std::process::Command::new(std::env::current_exe().expect("test exe"))
        .args(["--exact", "sockets::cred_client_helper", "--test-threads=1"])
        .env("ACRN_CRED_CLIENT_DIR", dir.path())
        .uid(65534)
        .gid(65534)
        .status()
        .expect("run the client as uid 65534");
    assert!(status.success(), "client under uid 65534 failed: {status}");
    let peer = rx.recv_timeout(T).expect("handler ran");
    assert_eq!((peer.uid, peer.gid), (65534, 65534));
    assert_ne!(
        peer.pid,
        i32::try_from(std::process::id()).expect("pid fits")
    );
}

#[test]
fn deferred_ack_arrives_while_the_loop_serves_others() {
    let dir = TestDir::new("ipc-defer");
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let h = Handlers::new()
        .on(
            MsgId::DmSuspend,
            Access::Open,
            move |_r, call, _: &mut ()| {
                let (reply, d) = call.defer();
                let rx = Arc::clone(&release_rx);
                std::thread::spawn(move || {
                    // Slow work on a worker: wait until the test says so.
                    rx.lock().expect("lock").recv_timeout(T).expect("released");
                    d.complete(AckPayload::Err(0));
                });
                reply
            },
        )
        .on(MsgId::DmQuery, Access::Open, |_r, call, _: &mut ()| {
            call.ack(AckPayload::State(0))
        });
    let _server = spawn_server(ServerConfig::new("vm1.monitor", dir.path()), h, ()).expect("start");
    let mut slow = connect(dir.path(), "vm1.monitor");
    slow.write_all(&wire(Body::DmSuspend, 1)).expect("write");
    // While the suspend is pending, another client is served at once.
    let ack = Client::new(dir.path(), Profile::F)
        .send("vm1.monitor", &Request::now(Body::DmQuery), T)
        .expect("served meanwhile");
    assert_eq!(ack.payload, AckPayload::State(0));
    slow.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut probe = [0u8; 1];
    assert!(
        slow.read(&mut probe).is_err(),
        "no ack before the work is done"
    );
    release_tx.send(()).expect("release");
    slow.set_read_timeout(Some(T)).expect("timeout");
    let ack = read_ack(&mut slow);
    assert_eq!(&ack[8..12], &4u32.to_le_bytes());
    assert_eq!(&ack[24..28], &0i32.to_le_bytes());
}

#[test]
fn dropped_deferred_ack_answers_failure() {
    let dir = TestDir::new("ipc-dropdef");
    let h = Handlers::new().on(MsgId::DmResume, Access::Open, |_r, call, _: &mut ()| {
        let (reply, d) = call.defer();
        drop(d);
        reply
    });
    let _server = spawn_server(ServerConfig::new("vm1.monitor", dir.path()), h, ()).expect("start");
    let ack = Client::new(dir.path(), Profile::F)
        .send(
            "vm1.monitor",
            &Request::now(Body::DmResume { reason: 0x20 }),
            T,
        )
        .expect("acked");
    assert_eq!(ack.err(), Some(err::FAILED));
}

#[test]
fn idle_connections_never_lock_out_a_request() {
    let dir = TestDir::new("ipc-idle");
    let h = Handlers::new().on(MsgId::DmQuery, Access::Open, |_r, call, _: &mut ()| {
        call.ack(AckPayload::State(0))
    });
    let mut cfg = ServerConfig::new("acrnd", dir.path());
    cfg.max_connections = 4;
    cfg.idle_timeout = Duration::from_secs(60);
    let _server = spawn_server(cfg, h, ()).expect("start");
    let mut idle: Vec<UnixStream> = (0..4).map(|_| connect(dir.path(), "acrnd")).collect();
    // Make sure the server has accepted all four before the fifth arrives.
    for s in &mut idle {
        s.write_all(&wire(Body::DmQuery, 1)).expect("write");
        read_ack(s);
    }
    let ack = Client::new(dir.path(), Profile::F)
        .send("acrnd", &Request::now(Body::DmQuery), T)
        .expect("served at the cap");
    assert_eq!(ack.payload, AckPayload::State(0));
    // The longest idle connection made room.
    wait_closed(&mut idle[0]);
}

#[test]
fn idle_timeout_closes_silent_connections() {
    let dir = TestDir::new("ipc-idlet");
    let h = Handlers::new().on(MsgId::DmQuery, Access::Open, |_r, call, _: &mut ()| {
        call.ack(AckPayload::State(0))
    });
    let mut cfg = ServerConfig::new("acrnd", dir.path());
    cfg.idle_timeout = Duration::from_millis(100);
    let _server = spawn_server(cfg, h, ()).expect("start");
    let mut s = connect(dir.path(), "acrnd");
    let mut half = wire(Body::DmQuery, 1);
    half[100..].fill(0);
    s.write_all(&half[..100])
        .expect("half a message, then silence");
    wait_closed(&mut s);
}

#[test]
fn directory_and_socket_modes_and_cleanup() {
    let dir = TestDir::new("ipc-modes");
    let sock_dir = dir.join("run/acrn/mngr");
    let server = query_server(&sock_dir, "acrnd", 0);
    let path = server.path().to_owned();
    let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o7777;
    assert_eq!(mode(&sock_dir), 0o755);
    assert_eq!(mode(&path), 0o660);
    let names: Vec<_> = std::fs::read_dir(&sock_dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "nothing but the socket: {names:?}");
    server.stop();
    wait_for(T, "socket removed on stop", || !path.exists()).expect("removed");
}

#[test]
fn names_too_long_for_a_socket_path_fail_at_bind() {
    let dir = TestDir::new("ipc-long");
    let name = "n".repeat(120);
    let h: Handlers<()> = Handlers::new();
    let e = spawn_server(ServerConfig::new(name, dir.path()), h, ()).expect_err("too long");
    assert!(e.to_string().contains("name"), "{e}");
    assert!(format!("{:?}", e).contains("PathTooLong"), "{e:?}");
}

#[test]
fn no_ack_sends_complete_messages() {
    let dir = TestDir::new("ipc-noack");
    let (tx, rx) = mpsc::channel::<i32>();
    let tx = Mutex::new(tx);
    let h = Handlers::new().on(MsgId::Shutdown, Access::Open, move |r, call, _: &mut ()| {
        if let Body::Shutdown { err } = r.body {
            tx.lock().expect("lock").send(err).expect("send");
        }
        call.ack(AckPayload::Err(0))
    });
    let _server = spawn_server(ServerConfig::new("sos-lcs", dir.path()), h, ()).expect("start");
    Client::new(dir.path(), Profile::F)
        .send_no_ack("sos-lcs", &Request::now(Body::Shutdown { err: -1 }), T)
        .expect("written");
    let got = wait_until(T, "SHUTDOWN handled", || rx.try_recv().ok()).expect("handled");
    assert_eq!(got, -1);
}

#[test]
fn remembered_socket_is_dropped_when_its_server_goes() {
    let dir = TestDir::new("ipc-cache");
    let client = Client::new(dir.path(), Profile::F);
    let server = query_server(dir.path(), "acrnd", 1);
    client
        .send("acrnd", &Request::now(Body::DmQuery), T)
        .expect("first request looks the server up");
    server.stop();
    let e = client
        .send("acrnd", &Request::now(Body::DmQuery), T)
        .expect_err("gone");
    assert!(matches!(e, ClientError::NotFound { .. }), "{e:?}");
    let _again = query_server(dir.path(), "acrnd", 2);
    let ack = client
        .send("acrnd", &Request::now(Body::DmQuery), T)
        .expect("found again");
    assert_eq!(ack.payload, AckPayload::State(2));
}

#[test]
fn a_deferred_ack_outliving_the_idle_timeout_does_not_stall_the_server() {
    // The idle timer once counted connections waiting for a deferred ack, re-armed itself at
    // a deadline already past, and fired forever within one turn: the server stopped serving.
    let dir = TestDir::new("ipc-stall");
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let h = Handlers::new()
        .on(
            MsgId::DmSuspend,
            Access::Open,
            move |_r, call, _: &mut ()| {
                let (reply, d) = call.defer();
                let rx = Arc::clone(&release_rx);
                std::thread::spawn(move || {
                    rx.lock().expect("lock").recv_timeout(T).expect("released");
                    d.complete(AckPayload::Err(0));
                });
                reply
            },
        )
        .on(MsgId::DmQuery, Access::Open, |_r, call, _: &mut ()| {
            call.ack(AckPayload::State(0))
        });
    let mut cfg = ServerConfig::new("vm1.monitor", dir.path());
    cfg.idle_timeout = Duration::from_millis(50);
    let _server = spawn_server(cfg, h, ()).expect("start");
    let mut slow = connect(dir.path(), "vm1.monitor");
    slow.write_all(&wire(Body::DmSuspend, 1)).expect("write");
    let client = Client::new(dir.path(), Profile::F);
    // Well past the idle timeout, while the suspend is still deferred.
    let past = Instant::now() + Duration::from_millis(300);
    wait_for(T, "the idle timeout to pass", || Instant::now() >= past).expect("time passes");
    let ack = client
        .send(
            "vm1.monitor",
            &Request::now(Body::DmQuery),
            Duration::from_secs(2),
        )
        .expect("still served");
    assert_eq!(ack.payload, AckPayload::State(0));
    release_tx.send(()).expect("release");
    let ack = read_ack(&mut slow);
    assert_eq!(&ack[24..28], &0i32.to_le_bytes());
}

/// A server with one handler of each access class; its context counts the calls that got
/// through. `allowed` is the policy's only uid.
fn access_server(dir: &Path, allowed: u32, log: &Path) -> (ServerThread, Arc<Mutex<Vec<MsgId>>>) {
    use mngr_ipc::auth::Policy;
    use mngr_ipc::event_log::EventLog;
    use mngr_ipc::msg::body;
    let called = Arc::new(Mutex::new(Vec::new()));
    let h = Handlers::new()
        .open(|_: body::CtlList, call, c: &mut Arc<Mutex<Vec<MsgId>>>| {
            c.lock().expect("lock").push(MsgId::CtlList);
            call.ack(AckPayload::Err(err::OK))
        })
        .privileged(|b: body::CtlStop, call, c: &mut Arc<Mutex<Vec<MsgId>>>| {
            assert_eq!(b.name, "vm1", "the typed body carries the fields");
            c.lock().expect("lock").push(MsgId::CtlStop);
            call.ack(AckPayload::Err(err::OK))
        })
        .privileged_unless(
            |b: &body::AcrndTimer, _peer, _c: &Arc<Mutex<Vec<MsgId>>>| b.name == "own",
            |_: body::AcrndTimer, call, c: &mut Arc<Mutex<Vec<MsgId>>>| {
                c.lock().expect("lock").push(MsgId::AcrndTimer);
                call.ack(AckPayload::Err(err::OK))
            },
        );
    let mut cfg = ServerConfig::new("acrnd", dir);
    cfg.policy = Policy::new(vec![allowed], Vec::new());
    cfg.log = EventLog::open(log, "acrnd").expect("event log");
    let server = spawn_server(cfg, h, Arc::clone(&called)).expect("server starts");
    (server, called)
}

fn err_of(dir: &Path, body: Body) -> i32 {
    Client::new(dir, Profile::F)
        .send("acrnd", &Request::now(body), T)
        .expect("answered")
        .err()
        .expect("an err payload")
}

#[test]
fn registration_states_who_may_ask_and_the_server_refuses_the_others() {
    let dir = TestDir::new("ipc-access");
    let log = dir.path().join("events.jsonl");
    let me = nix::unistd::getuid().as_raw();
    // A policy that does not allow this process: only open handlers and exemptions run.
    let (server, called) = access_server(dir.path(), me.wrapping_add(1), &log);
    let stop = Body::CtlStop {
        name: "vm1".into(),
        force: 0,
        timeout: 0,
    };
    let timer = |name: &str| Body::AcrndTimer {
        name: name.into(),
        t: 1,
    };
    assert_eq!(err_of(dir.path(), Body::CtlList { start: 0 }), err::OK);
    assert_eq!(err_of(dir.path(), stop.clone()), err::NOT_PERMITTED);
    assert_eq!(err_of(dir.path(), timer("other")), err::NOT_PERMITTED);
    assert_eq!(err_of(dir.path(), timer("own")), err::OK, "exempted");
    assert_eq!(
        *called.lock().expect("lock"),
        vec![MsgId::CtlList, MsgId::AcrndTimer],
        "a refused request never reaches its handler"
    );
    server.stop();
    let events = mngr_ipc::event_log::read_events(&log).expect("events");
    let refused: Vec<String> = events
        .iter()
        .filter(|e| e.kind == "ipc.refused")
        .map(|e| e.fields["msg"].as_str().expect("msg").to_owned())
        .collect();
    assert_eq!(refused, ["CTL_STOP", "ACRND_TIMER"]);
    let described = events
        .iter()
        .find(|e| e.kind == "ipc.request" && e.fields["msg"] == "CTL_STOP")
        .expect("the request is noted");
    assert_eq!(
        described.fields["body"],
        "CTL_STOP name: vm1, force: 0, timeout: 0"
    );

    // The same server allowing this process serves everything.
    let dir = TestDir::new("ipc-access-allowed");
    let (server, called) = access_server(dir.path(), me, &dir.path().join("events.jsonl"));
    assert_eq!(err_of(dir.path(), stop), err::OK);
    assert_eq!(err_of(dir.path(), timer("other")), err::OK);
    assert_eq!(
        *called.lock().expect("lock"),
        vec![MsgId::CtlStop, MsgId::AcrndTimer]
    );
    server.stop();
}
