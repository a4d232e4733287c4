//! The control socket: one request per line, one reply line per request, in order; a
//! connection waits while its request is served later (`suspend`, `reboot-request`).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::event::Event;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Token};
use mngr_ipc::daemon::RunError;
use serde_json::json;

use super::{
    MAX_CONN_BUFFER, MAX_CONNECTIONS, MAX_REQUEST, Outcome, Requester, SimOps, Simulator, interest,
};
use crate::command::Command;
use crate::ctl;

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    writable: bool,
    /// A request is being served; later lines wait.
    awaiting: bool,
    /// The peer will send nothing more.
    eof: bool,
    /// Close once the output is written.
    closing: bool,
    /// Unusable: close now.
    broken: bool,
}

/// The control socket; its file is removed on drop.
#[derive(Debug)]
pub(super) struct ControlSocket {
    pub(super) listener: UnixListener,
    path: PathBuf,
    pub(super) token: Option<Token>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket())
            && let Err(e) = fs::remove_file(&self.path)
        {
            log::warn!("Cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Binds the control socket, replacing a stale socket file (nobody accepts on it).
pub(super) fn bind_control(path: &Path) -> Result<ControlSocket, RunError> {
    let err = |source| RunError::Setup {
        what: format!("the control socket {}", path.display()),
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if ctl::connect_within(path, Duration::from_secs(1)).is_ok() {
                return Err(err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another simulator accepts on it",
                )));
            }
            log::info!("Removing the stale control socket {}", path.display());
            fs::remove_file(path).map_err(err)?;
        }
        Ok(_) => {
            return Err(err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    let socket = ControlSocket {
        listener,
        path: path.to_owned(),
        token: None,
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(socket)
}

impl Simulator {
    pub(super) fn reply(&mut self, to: Requester, text: String, ops: &mut SimOps<'_>) {
        match to {
            Requester::Scenario { line } => {
                log::info!("Scenario line {line}: {text}");
                self.log.emit(
                    "ioc.reply",
                    json!({"source": format!("scenario:{line}"), "reply": text}),
                );
            }
            Requester::Conn(token) => {
                let Some(conn) = self.conns.get_mut(&token) else {
                    log::debug!("Reply to a closed connection dropped: {text}");
                    return;
                };
                conn.out.extend_from_slice(text.as_bytes());
                conn.out.push(b'\n');
                conn.awaiting = false;
                self.flush_conn(token, ops);
                self.resume.push(token);
            }
        }
    }

    pub(super) fn accept(&mut self, ops: &mut SimOps<'_>) {
        loop {
            match self.control.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        log::warn!("Control: {MAX_CONNECTIONS} connections open, refusing one");
                        let _ = stream.write(b"err too many connections\n");
                        continue;
                    }
                    match ops.register(&mut stream, Interest::READABLE) {
                        Ok(token) => {
                            self.conns.insert(
                                token,
                                Conn {
                                    stream,
                                    inbuf: Vec::new(),
                                    out: Vec::new(),
                                    writable: false,
                                    awaiting: false,
                                    eof: false,
                                    closing: false,
                                    broken: false,
                                },
                            );
                            // Data may have arrived before the registration.
                            self.read_conn(token);
                            self.serve_conn(token, ops);
                            self.maybe_close(token, ops);
                        }
                        Err(e) => log::warn!("Control: cannot register a connection: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("Control: accept failed: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn read_conn(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let mut buf = [0u8; 1024];
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    conn.eof = true;
                    return;
                }
                Ok(n) => {
                    conn.inbuf.extend_from_slice(&buf[..n]);
                    if conn.inbuf.len() > MAX_CONN_BUFFER {
                        log::warn!("Control: a client floods requests; closing it");
                        conn.broken = true;
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("Control: read failed: {e}");
                    conn.broken = true;
                    return;
                }
            }
        }
    }

    /// Serves the complete request lines of a connection, one at a time.
    pub(super) fn serve_conn(&mut self, token: Token, ops: &mut SimOps<'_>) {
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            if conn.awaiting || conn.broken || conn.closing {
                return;
            }
            let line = match conn.inbuf.iter().position(|&b| b == b'\n') {
                Some(end) if end <= MAX_REQUEST => {
                    let line: Vec<u8> = conn.inbuf.drain(..=end).collect();
                    line
                }
                Some(_) => {
                    conn.inbuf.clear();
                    conn.closing = true;
                    self.reply(
                        Requester::Conn(token),
                        format!("err request longer than {MAX_REQUEST} bytes"),
                        ops,
                    );
                    return;
                }
                None if conn.inbuf.len() > MAX_REQUEST => {
                    conn.inbuf.clear();
                    conn.closing = true;
                    self.reply(
                        Requester::Conn(token),
                        format!("err request longer than {MAX_REQUEST} bytes"),
                        ops,
                    );
                    return;
                }
                None => return,
            };
            conn.awaiting = true;
            let outcome = match std::str::from_utf8(&line) {
                Err(_) => Outcome::Reply("err request is not UTF-8".to_owned()),
                Ok(text) => match Command::parse(text) {
                    Ok(cmd) => self.execute(cmd, Requester::Conn(token), ops),
                    Err(e) => Outcome::Reply(format!("err {e}")),
                },
            };
            match outcome {
                Outcome::Reply(text) => self.reply(Requester::Conn(token), text, ops),
                Outcome::Later => {}
            }
        }
    }

    pub(super) fn flush_conn(&mut self, token: Token, ops: &mut SimOps<'_>) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        while !conn.out.is_empty() {
            match conn.stream.write(&conn.out) {
                Ok(0) => {
                    conn.broken = true;
                    break;
                }
                Ok(n) => {
                    conn.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("Control: write failed: {e}");
                    conn.broken = true;
                    break;
                }
            }
        }
        let want = !conn.out.is_empty() && !conn.broken;
        if want != conn.writable {
            match ops.reregister(&mut conn.stream, token, interest(want)) {
                Ok(()) => conn.writable = want,
                Err(e) => {
                    log::debug!("Control: cannot reregister: {e}");
                    conn.broken = true;
                }
            }
        }
    }

    pub(super) fn maybe_close(&mut self, token: Token, ops: &mut SimOps<'_>) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        let done = (conn.eof || conn.closing) && !conn.awaiting && conn.out.is_empty();
        if (conn.broken || done)
            && let Some(mut conn) = self.conns.remove(&token)
        {
            ops.deregister(&mut conn.stream, token);
        }
    }

    pub(super) fn on_conn_event(&mut self, token: Token, event: &Event, ops: &mut SimOps<'_>) {
        if event.is_writable() {
            self.flush_conn(token, ops);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_conn(token);
        }
        self.serve_conn(token, ops);
        self.maybe_close(token, ops);
    }

    /// Serves the connections whose deferred replies went out during this callback.
    pub(super) fn resume_conns(&mut self, ops: &mut SimOps<'_>) {
        while let Some(token) = self.resume.pop() {
            self.serve_conn(token, ops);
            self.maybe_close(token, ops);
        }
    }
}
