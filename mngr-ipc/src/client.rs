//! The mngr IPC client: one connection per request, as every C peer does.
//!
//! [`Client::send`] returns the ack or a typed reason why there is none; a missing ack is
//! never success (the C library returned 0 when the server closed without answering). Every
//! call is bounded by its timeout, connection included.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use thiserror::Error;

use crate::codec::{self, CodecError, MSG_LEN};
use crate::msg::{Ack, MsgId, Request};
use crate::naming::{self, NamingError};
use crate::profile::Profile;

/// Why a request got no usable ack.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No socket of that name in the directory.
    #[error("No server {name:?} in {dir}")]
    NotFound {
        /// The name looked up.
        name: String,
        /// The socket directory.
        dir: PathBuf,
    },
    /// Sockets exist but none accepted the connection.
    #[error("Cannot connect to {name:?}")]
    Connect {
        /// The name looked up.
        name: String,
        /// The last failure.
        #[source]
        source: io::Error,
    },
    /// No complete ack within the timeout.
    #[error("No ack to {id} within {timeout:?}")]
    Timeout {
        /// The request's id.
        id: MsgId,
        /// The budget.
        timeout: Duration,
    },
    /// The server closed the connection before a complete ack.
    #[error("Connection closed without an ack to {id} ({got} of {MSG_LEN} bytes)")]
    Closed {
        /// The request's id.
        id: MsgId,
        /// Bytes of an ack received before the close.
        got: usize,
    },
    /// The ack answers another request.
    #[error(
        "Ack does not match: expected id {expected_id} ts {expected_ts}, got id {got_id} ts {got_ts}"
    )]
    WrongAck {
        /// The wire id sent.
        expected_id: u32,
        /// The timestamp sent.
        expected_ts: u64,
        /// The wire id received.
        got_id: u32,
        /// The timestamp received.
        got_ts: u64,
    },
    /// The request could not be encoded.
    #[error("Cannot encode the request")]
    Encode(#[source] CodecError),
    /// The ack could not be decoded.
    #[error("Cannot decode the ack")]
    Decode(#[source] CodecError),
    /// The socket directory could not be read.
    #[error("Cannot look the server up")]
    Lookup(#[from] NamingError),
    /// Writing or reading failed.
    #[error("I/O with the server failed")]
    Io(#[source] io::Error),
}

/// Sends requests to named servers in one socket directory.
///
/// The socket that last answered for a name is remembered (shared by clones), so a
/// request costs a connect, not a directory scan; a remembered socket that refuses or has
/// vanished sends the next request back to the scan.
#[derive(Debug, Clone)]
pub struct Client {
    dir: PathBuf,
    profile: Profile,
    known: Arc<Mutex<HashMap<String, PathBuf>>>,
}

impl Client {
    /// A client of the servers in `dir`, speaking `profile`.
    pub fn new(dir: impl Into<PathBuf>, profile: Profile) -> Self {
        Client {
            dir: dir.into(),
            profile,
            known: Arc::default(),
        }
    }

    /// The socket directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ABI profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Connects to server `name`: the socket that answered last time, else the live
    /// candidates first, then any other; the first that accepts wins. Bounded by
    /// `deadline`. The stream is non-blocking; [`exchange`] and [`write_request`] wait on it
    /// with `poll`.
    pub fn connect(&self, name: &str, deadline: Instant) -> Result<UnixStream, ClientError> {
        let cached = self.known_path(name);
        if let Some(path) = &cached {
            match connect_bounded(path, deadline) {
                Ok(s) => return Ok(s),
                Err(e) => {
                    log::debug!(
                        "Remembered socket {} failed: {e}; looking up again",
                        path.display()
                    );
                    self.forget(name);
                }
            }
        }
        let found = naming::candidates(&self.dir, name)?;
        if found.is_empty() {
            return Err(ClientError::NotFound {
                name: name.to_owned(),
                dir: self.dir.clone(),
            });
        }
        let mut last = None;
        for c in found.iter().filter(|c| Some(&c.path) != cached.as_ref()) {
            match connect_bounded(&c.path, deadline) {
                Ok(s) => {
                    self.remember(name, &c.path);
                    return Ok(s);
                }
                Err(e) => {
                    log::debug!("Connecting to {}: {e}", c.path.display());
                    last = Some(e);
                }
            }
        }
        Err(ClientError::Connect {
            name: name.to_owned(),
            source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::ConnectionRefused)),
        })
    }

    fn known_path(&self, name: &str) -> Option<PathBuf> {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn remember(&self, name: &str, path: &Path) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), path.to_owned());
    }

    fn forget(&self, name: &str) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// Sends `req` to server `name` and waits for its ack, all within `timeout`.
    pub fn send(&self, name: &str, req: &Request, timeout: Duration) -> Result<Ack, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut stream = self.connect(name, deadline)?;
        exchange(&mut stream, self.profile, req, deadline, timeout)
    }

    /// Sends `req` to server `name` without waiting for an ack (what acrnd does for
    /// SUSPEND / SHUTDOWN). Success means the whole message was written.
    pub fn send_no_ack(
        &self,
        name: &str,
        req: &Request,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        let mut stream = self.connect(name, deadline)?;
        write_request(&mut stream, self.profile, req, deadline, timeout)
    }
}

/// Connects to the socket at `path` without ever blocking past `deadline`: a blocking
/// `connect` to a server whose listen backlog is full would wait indefinitely, so connect
/// non-blocking and retry `EAGAIN` with a short back-off. The stream is non-blocking.
pub fn connect_bounded(path: &Path, deadline: Instant) -> io::Result<UnixStream> {
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    let mut pause = Duration::from_micros(100);
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(UnixStream::from(fd)),
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(Errno::EAGAIN) => return Err(io::Error::from(io::ErrorKind::TimedOut)),
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

/// Waits until `stream` is ready for `flags` or `deadline` passes; false on timeout.
fn wait_ready(stream: &UnixStream, flags: PollFlags, deadline: Instant) -> io::Result<bool> {
    loop {
        let Some(left) = remaining(deadline) else {
            return Ok(false);
        };
        // Round up so that a sub-millisecond remainder still waits.
        let ms = u16::try_from(left.as_millis().saturating_add(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stream.as_fd(), flags)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Writes `req` on a connected stream as one message, before `deadline`. The stream must
/// be non-blocking, as [`Client::connect`] returns it.
pub fn write_request(
    stream: &mut UnixStream,
    profile: Profile,
    req: &Request,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), ClientError> {
    let wire = profile.encode_request(req).map_err(ClientError::Encode)?;
    let timed_out = || ClientError::Timeout {
        id: req.id(),
        timeout,
    };
    // The whole struct in one write when the socket has room (it nearly always has):
    // C servers need it in a single read.
    let mut sent = 0;
    while sent < MSG_LEN {
        match stream.write(&wire[sent..]) {
            Ok(0) => {
                return Err(ClientError::Closed {
                    id: req.id(),
                    got: 0,
                });
            }
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_ready(stream, PollFlags::POLLOUT, deadline).map_err(ClientError::Io)? {
                    return Err(timed_out());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ClientError::Io(e)),
        }
    }
    Ok(())
}

/// Sends `req` on a connected, non-blocking stream and reads its ack before `deadline`;
/// checks that the ack echoes the request's id and timestamp.
pub fn exchange(
    stream: &mut UnixStream,
    profile: Profile,
    req: &Request,
    deadline: Instant,
    timeout: Duration,
) -> Result<Ack, ClientError> {
    write_request(stream, profile, req, deadline, timeout)?;
    let timed_out = || ClientError::Timeout {
        id: req.id(),
        timeout,
    };
    let mut buf = [0u8; MSG_LEN];
    let mut got = 0;
    while got < MSG_LEN {
        // The ack cannot be there yet right after the request: wait first, then read.
        if !wait_ready(stream, PollFlags::POLLIN, deadline).map_err(ClientError::Io)? {
            return Err(timed_out());
        }
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(ClientError::Closed { id: req.id(), got }),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ClientError::Closed { id: req.id(), got });
            }
            Err(e) => return Err(ClientError::Io(e)),
        }
    }
    let header = codec::peek_header(&buf).map_err(ClientError::Decode)?;
    let expected_id = profile
        .wire_id(req.id())
        .expect("encode_request succeeded, so the profile has this id");
    if header.msgid != expected_id || header.timestamp != req.timestamp {
        return Err(ClientError::WrongAck {
            expected_id,
            expected_ts: req.timestamp,
            got_id: header.msgid,
            got_ts: header.timestamp,
        });
    }
    profile
        .decode_ack(&buf, req.id())
        .map_err(ClientError::Decode)
}
