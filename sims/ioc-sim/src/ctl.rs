//! The client side of the control socket (`ioc-sim ctl`): one request line, one reply line,
//! every step bounded by one deadline (connect included).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, connect, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use thiserror::Error;

/// Longest reply accepted.
pub const MAX_REPLY: usize = 4096;

/// Default timeout of `suspend`, which is answered only when the system wakes.
pub const SUSPEND_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default timeout of every other request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit status of `ioc-sim ctl` for an `ok` reply.
pub const EXIT_OK: u8 = 0;
/// Exit status for an `err` reply, or no reply.
pub const EXIT_ERR: u8 = 1;
/// Exit status when the control socket is unreachable.
pub const EXIT_UNREACHABLE: u8 = 3;

/// A request without a reply.
#[derive(Debug, Error)]
pub enum CtlError {
    /// The request contains a line break or is empty.
    #[error("A request is one non-empty line")]
    BadRequest,
    /// No ioc-sim listens at the path.
    #[error("Cannot reach the control socket {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No complete reply within the timeout.
    #[error("No reply within {0:?}")]
    Timeout(Duration),
    /// The simulator closed the connection before a complete reply.
    #[error("The simulator closed the connection without a reply")]
    Closed,
    /// The reply is longer than [`MAX_REPLY`].
    #[error("Reply longer than {MAX_REPLY} bytes")]
    TooLong,
    /// Reading or writing failed.
    #[error("I/O on the control socket failed")]
    Io(#[source] io::Error),
}

impl CtlError {
    /// The exit status `ioc-sim ctl` uses for this error.
    pub fn exit_status(&self) -> u8 {
        match self {
            CtlError::Connect { .. } => EXIT_UNREACHABLE,
            _ => EXIT_ERR,
        }
    }
}

/// The exit status for a reply: [`EXIT_OK`] if it starts with `ok`, else [`EXIT_ERR`].
pub fn reply_status(reply: &str) -> u8 {
    if reply == "ok" || reply.starts_with("ok ") {
        EXIT_OK
    } else {
        EXIT_ERR
    }
}

/// The default timeout of `request`.
pub fn default_timeout(request: &str) -> Duration {
    if request.split_whitespace().next() == Some("suspend") {
        SUSPEND_TIMEOUT
    } else {
        DEFAULT_TIMEOUT
    }
}

fn timeval(d: Duration) -> TimeVal {
    let us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1);
    TimeVal::new(us / 1_000_000, us % 1_000_000)
}

/// Connects, bounded by `timeout` (`SO_SNDTIMEO` bounds a blocking Unix connect whose
/// listen backlog is full).
pub(crate) fn connect_within(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    setsockopt(&fd, sockopt::SendTimeout, &timeval(timeout)).map_err(io::Error::from)?;
    connect(fd.as_raw_fd(), &addr).map_err(io::Error::from)?;
    Ok(UnixStream::from(fd))
}

fn left(deadline: Instant, timeout: Duration) -> Result<Duration, CtlError> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(CtlError::Timeout(timeout))
    } else {
        Ok(d)
    }
}

fn io_err(e: io::Error, timeout: Duration) -> CtlError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CtlError::Timeout(timeout),
        _ => CtlError::Io(e),
    }
}

/// Sends `request` to the simulator at `control` and returns its reply line (without the
/// line break), all within `timeout`.
pub fn request(control: &Path, request: &str, timeout: Duration) -> Result<String, CtlError> {
    let request = request.trim();
    if request.is_empty() || request.contains(['\n', '\r']) {
        return Err(CtlError::BadRequest);
    }
    let deadline = Instant::now() + timeout;
    let mut stream = connect_within(control, timeout).map_err(|source| CtlError::Connect {
        path: control.to_owned(),
        source,
    })?;
    stream
        .set_write_timeout(Some(left(deadline, timeout)?))
        .map_err(CtlError::Io)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(|e| io_err(e, timeout))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        stream
            .set_read_timeout(Some(left(deadline, timeout)?))
            .map_err(CtlError::Io)?;
        match stream.read(&mut buf) {
            Ok(0) => return Err(CtlError::Closed),
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if let Some(end) = reply.iter().position(|&b| b == b'\n') {
                    reply.truncate(end);
                    return Ok(String::from_utf8_lossy(&reply).trim_end().to_owned());
                }
                if reply.len() > MAX_REPLY {
                    return Err(CtlError::TooLong);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(CtlError::Closed),
            Err(e) => return Err(io_err(e, timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    #[test]
    fn statuses() {
        assert_eq!(reply_status("ok"), EXIT_OK);
        assert_eq!(reply_status("ok resumed reason=0x200"), EXIT_OK);
        assert_eq!(reply_status("okay"), EXIT_ERR);
        assert_eq!(reply_status("err Unknown command"), EXIT_ERR);
        assert_eq!(reply_status(""), EXIT_ERR);
        assert_eq!(default_timeout("suspend"), SUSPEND_TIMEOUT);
        assert_eq!(default_timeout(" suspend "), SUSPEND_TIMEOUT);
        assert_eq!(default_timeout("status"), DEFAULT_TIMEOUT);
    }

    #[test]
    fn unreachable_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = request(&dir.path().join("none.sock"), "status", DEFAULT_TIMEOUT)
            .expect_err("nobody listens");
        assert_eq!(e.exit_status(), EXIT_UNREACHABLE);
        // A socket file nobody accepts on any more.
        let path = dir.path().join("stale.sock");
        drop(UnixListener::bind(&path).expect("bind"));
        let e = request(&path, "status", DEFAULT_TIMEOUT).expect_err("refused");
        assert_eq!(e.exit_status(), EXIT_UNREACHABLE);
    }

    #[test]
    fn request_and_reply_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().expect("accept");
            let mut r = io::BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).expect("read");
            r.get_mut()
                .write_all(format!("ok got {}", line).as_bytes())
                .expect("write");
            // A second connection that never answers, held until the client gave up.
            let (_silent, _) = listener.accept().expect("accept");
            let _ = done_rx.recv();
        });
        assert_eq!(
            request(&path, " door open ", DEFAULT_TIMEOUT).expect("reply"),
            "ok got door open"
        );
        let e = request(&path, "status", Duration::from_millis(200)).expect_err("no reply");
        assert!(matches!(e, CtlError::Timeout(_)), "{e:?}");
        assert_eq!(e.exit_status(), EXIT_ERR);
        drop(done_tx);
        assert!(matches!(
            request(&path, "a\nb", DEFAULT_TIMEOUT),
            Err(CtlError::BadRequest)
        ));
        server.join().expect("server");
    }
}
