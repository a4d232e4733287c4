//! Hostile and faulty peers of a mngr IPC server, and what they cost it: the clients the
//! hostile-peer tests of every daemon play (idle crowds, half messages, garbage, connect /
//! close churn, raw frames with edge values) and readings of a process's footprint
//! (resident memory, open descriptors) from `/proc`.
//!
//! Every operation is bounded by a deadline; none sleeps for a fixed time.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mngr_ipc::client::connect_bounded;
use mngr_ipc::{MSG_LEN, Wire};

use crate::wait::wait_until;

/// What a process holds: resident memory and open descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: usize,
}

/// The footprint of `pid`.
///
/// # Panics
///
/// If the process is gone or its `/proc` entries cannot be read.
#[must_use]
pub fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count();
    Footprint { rss_kib, fds }
}

/// The soft and hard `RLIMIT_NOFILE` of `pid` (`u64::MAX` for unlimited).
///
/// # Panics
///
/// If `/proc/<pid>/limits` cannot be read or has no such line.
#[must_use]
pub fn nofile_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/limits: {e}"));
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .unwrap_or_else(|| panic!("no open-files limit for pid {pid}"));
    let mut values = line
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    let soft = values.next().expect("soft limit");
    let hard = values.next().expect("hard limit");
    (soft, hard)
}

/// The socket of the live server `name` in the socket directory `dir`.
///
/// # Panics
///
/// If no live server of that name is there.
#[must_use]
pub fn server_socket(dir: &Path, name: &str) -> PathBuf {
    mngr_ipc::naming::candidates(dir, name)
        .ok()
        .and_then(|c| c.into_iter().find(|c| c.alive))
        .map(|c| c.path)
        .unwrap_or_else(|| panic!("no live server {name} in {}", dir.display()))
}

/// A connection in blocking mode with read and write timeouts of `timeout`.
///
/// # Panics
///
/// If the server does not accept it within `timeout`.
#[must_use]
pub fn connect(path: &Path, timeout: Duration) -> UnixStream {
    let s = connect_bounded(path, Instant::now() + timeout)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    s.set_nonblocking(false).expect("blocking mode");
    s.set_read_timeout(Some(timeout)).expect("read timeout");
    s.set_write_timeout(Some(timeout)).expect("write timeout");
    s
}

/// Opens `n` connections to `path` and leaves them idle (nothing written).
///
/// # Panics
///
/// If one is not accepted within `timeout` (the descriptor limit of the test process
/// must allow `n` more: see [`mngr_ipc::limits::raise_nofile`]).
#[must_use]
pub fn idle_crowd(path: &Path, n: usize, timeout: Duration) -> Vec<UnixStream> {
    let deadline = Instant::now() + timeout;
    (0..n)
        .map(|i| {
            connect_bounded(path, deadline)
                .unwrap_or_else(|e| panic!("idle connection {i} of {n} to {}: {e}", path.display()))
        })
        .collect()
}

/// How many of `conns` the server has closed (a read returns end of file or an error);
/// the streams must be non-blocking, as [`idle_crowd`] returns them.
#[must_use]
pub fn closed_by_server(conns: &[UnixStream]) -> usize {
    conns
        .iter()
        .filter(|s| {
            let mut b = [0u8; 1];
            let mut r: &UnixStream = s;
            match r.read(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            }
        })
        .count()
}

/// Writes the first half of `frame` and returns the connection, open and silent.
///
/// # Panics
///
/// If the connection or the write fails.
#[must_use]
pub fn half_message(path: &Path, frame: &Wire, timeout: Duration) -> UnixStream {
    let mut s = connect(path, timeout);
    s.write_all(&frame[..MSG_LEN / 2])
        .expect("write half a message");
    s
}

/// Writes `len` bytes of garbage (a byte pattern without the magic) in one go and reads
/// until the server closes; returns how many bytes the server took before it closed.
///
/// # Panics
///
/// If the server neither closes the connection nor takes every byte within `timeout`.
#[must_use]
pub fn garbage(path: &Path, len: usize, timeout: Duration) -> usize {
    let mut s = connect(path, timeout);
    let junk: Vec<u8> = (0..len)
        .map(|i| u8::try_from(i % 251).expect("below 251") ^ 0xA5)
        .collect();
    let mut sent = 0;
    while sent < len {
        match s.write(&junk[sent..]) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EPIPE / ECONNRESET: the server closed, as it should.
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("garbage write to {} stalled: {e}", path.display()),
        }
    }
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return sent,
            Ok(n) => panic!("the server answered garbage with {n} bytes"),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                panic!("{} kept a garbage connection open: {e}", path.display())
            }
            Err(_) => return sent, // ECONNRESET
        }
    }
}

/// Connects to `path` and closes at once, `n` times.
///
/// # Panics
///
/// If a connection is not accepted within `timeout`.
pub fn churn(path: &Path, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for i in 0..n {
        drop(
            connect_bounded(path, deadline).unwrap_or_else(|e| {
                panic!("churn connection {i} of {n} to {}: {e}", path.display())
            }),
        );
    }
}

/// Sends one raw frame on a fresh connection and reads the answer: `Some(ack)`, or `None`
/// if the server closed the connection without one.
///
/// # Panics
///
/// If the connection fails, or the server neither answers nor closes within `timeout`.
#[must_use]
pub fn exchange_raw(path: &Path, frame: &Wire, timeout: Duration) -> Option<Wire> {
    let mut s = connect(path, timeout);
    s.write_all(frame).expect("write a frame");
    let mut ack = [0u8; MSG_LEN];
    let mut got = 0;
    while got < MSG_LEN {
        match s.read(&mut ack[got..]) {
            Ok(0) => {
                assert_eq!(got, 0, "the server closed after {got} bytes of an ack");
                return None;
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("no ack from {} within {timeout:?}: {e}", path.display()),
        }
    }
    Some(ack)
}

/// `data.err` (the first 4 bytes of the union) of an ack.
#[must_use]
pub fn err_of(ack: &Wire) -> i32 {
    i32::from_le_bytes(ack[24..28].try_into().expect("4 bytes"))
}

/// The median of `n` runs of `request`, each timed.
///
/// # Panics
///
/// If `n` is 0.
pub fn median_latency(n: usize, mut request: impl FnMut()) -> Duration {
    assert!(n > 0, "no sample");
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            request();
            start.elapsed()
        })
        .collect();
    samples.sort_unstable();
    samples[n / 2]
}

/// Waits until the descriptor count of `pid` is at most `fds`, and returns it.
///
/// # Panics
///
/// If it stays above `fds` for `timeout`.
pub fn wait_fds_at_most(pid: u32, fds: usize, timeout: Duration) -> usize {
    let mut last = 0;
    wait_until(timeout, "descriptors back to the baseline", || {
        last = footprint(pid).fds;
        (last <= fds).then_some(last)
    })
    .unwrap_or_else(|e| panic!("{e}: pid {pid} holds {last} descriptors, baseline {fds}"))
}

/// A daemon under attack: its name (for messages), pid and socket, and a request that must
/// stay answered at once (it panics if it is not answered).
#[derive(Clone, Copy)]
pub struct Victim<'a> {
    /// The daemon's name.
    pub name: &'a str,
    /// Its pid.
    pub pid: u32,
    /// Its socket.
    pub path: &'a Path,
    /// A legitimate request, sent and checked.
    pub request: &'a (dyn Fn() + Sync),
}

impl std::fmt::Debug for Victim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Victim")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Victim<'_> {
    fn timed(&self) -> Duration {
        let start = Instant::now();
        (self.request)();
        start.elapsed()
    }
}

/// Opens 1000 idle connections to `v` and checks that its request is still answered within
/// `bound`, and at most ten times (+ 20 ms) as slow as before; that the server's connection
/// cap `cap` holds (the longest idle ones were closed to admit the rest); runs `while_held`
/// while the crowd is there, and checks that the descriptors return to their baseline once
/// the crowd leaves. The test process's descriptor limit must allow 1000 more.
///
/// # Panics
///
/// On any of those failures.
pub fn crowd_check(v: Victim<'_>, cap: usize, bound: Duration, while_held: impl FnOnce()) {
    let before = median_latency(9, || (v.request)());
    let base = footprint(v.pid);
    let crowd = idle_crowd(v.path, 1000, Duration::from_secs(10));
    let after = median_latency(9, || (v.request)());
    let held = footprint(v.pid);
    eprintln!(
        "{} request median: {before:?} before, {after:?} with 1000 idle connections; \
         fds {} -> {}, VmRSS {} -> {} KiB",
        v.name, base.fds, held.fds, base.rss_kib, held.rss_kib
    );
    assert!(after < bound, "{after:?}");
    assert!(
        after <= before * 10 + Duration::from_millis(20),
        "{after:?} vs {before:?} before"
    );
    assert!(held.fds <= base.fds + cap + 2, "{} fds", held.fds);
    let closed = closed_by_server(&crowd);
    assert!(closed >= crowd.len() - cap, "{closed} closed, cap {cap}");
    while_held();
    drop(crowd);
    wait_fds_at_most(v.pid, base.fds, Duration::from_secs(10));
}

/// Half a message (of `frame`) left stalled, 1 MiB of garbage, 3000 connect / close cycles
/// (while `v`'s request is sent over and over): the request is answered within `bound`
/// throughout; afterwards the descriptors return to their baseline and the resident memory
/// grew by at most `rss_growth_kib`. Warms the paths up first, so the baseline counts
/// what they allocate once.
///
/// # Panics
///
/// On any of those failures.
pub fn abuse_check(v: Victim<'_>, frame: &Wire, bound: Duration, rss_growth_kib: u64) {
    let t = Duration::from_secs(10);
    let _ = garbage(v.path, 4096, t);
    churn(v.path, 100, t);
    (v.request)();
    let base = footprint(v.pid);
    let stalled = half_message(v.path, frame, t);
    assert!(v.timed() < bound, "with a half message");
    let took = garbage(v.path, 1 << 20, t);
    assert!(took < 1 << 20, "{} read a whole MiB of garbage", v.name);
    assert!(v.timed() < bound, "after garbage");
    std::thread::scope(|sc| {
        let churner = sc.spawn(|| churn(v.path, 3000, t));
        while !churner.is_finished() {
            assert!(v.timed() < bound, "during churn");
        }
        churner.join().expect("churn");
    });
    assert!(v.timed() < bound, "after churn");
    drop(stalled);
    let fds = wait_fds_at_most(v.pid, base.fds, t);
    let end = footprint(v.pid);
    eprintln!(
        "{} after abuse: VmRSS {} -> {} KiB, fds {} -> {fds}",
        v.name, base.rss_kib, end.rss_kib, base.fds
    );
    assert!(
        end.rss_kib <= base.rss_kib + rss_growth_kib,
        "VmRSS {} -> {} KiB",
        base.rss_kib,
        end.rss_kib
    );
}
