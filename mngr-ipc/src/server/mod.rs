//! The mngr IPC server: a [`Subscriber`] that a daemon adds to its own [`EventLoop`](crate::runtime::EventLoop), or
//! runs on a thread of its own with [`spawn_server`].
//!
//! Behaviour (and where it deliberately differs from the C `libacrn-mngr`):
//! * handlers are registered per id *before* the socket is bound (C: after, losing early
//!   requests);
//! * stream reads are reassembled: a message split over many reads, several in one read;
//! * any number of concurrent connections up to [`ServerConfig::max_connections`] (C: 4);
//!   at the cap the connection idle the longest is dropped to admit the new one, and a
//!   connection idle for [`ServerConfig::idle_timeout`] is closed;
//! * a message without magic closes its connection (C: silently ignored the buffer);
//! * an id the profile or the handler table does not know gets an error ack with
//!   `err = -ENOSYS`, id and timestamp echoed (C: no answer, the client waits out its
//!   timeout); a request that fails to decode gets `-EINVAL`;
//! * every handler sees the peer's `SO_PEERCRED` ([`PeerCred`]);
//! * a handler may [`Call::defer`] its ack and complete it from a worker thread, so slow
//!   work never blocks the loop. A deferred ack dropped without an answer sends `-1`.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Token};
use thiserror::Error;

use crate::auth::Policy;
use crate::codec::{self, FrameReader, MSG_LEN, Wire};
use crate::event_log::EventLog;
use crate::msg::err;
use crate::naming::{self, NamingError};
use crate::profile::Profile;
use crate::runtime::{Notifier, Ops, Subscriber};

mod call;
mod handlers;
mod thread;
mod triage;

pub use call::{Call, DeferredAck, PeerCred, Reply};
use call::{Completion, ConnId, Gate, ReplyKind, peer_of};
pub use handlers::{Access, Handlers};
pub use thread::{ServerThread, spawn_server};
pub use triage::{Disposition, triage};

/// Connections accepted per readiness event of the listener.
const ACCEPT_BATCH: usize = 32;
/// Reads of one connection per readiness event.
const READ_BUDGET: usize = 16;
/// When accept fails (out of descriptors with no connection to close, out of memory), the
/// next try: the connections left in the backlog raise no new event.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Whether an accept error means the process (or system) is out of descriptors.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE
    )
}

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The server's name (`acrnd`, `sos-lcs`, `vm1.monitor`).
    pub name: String,
    /// The socket directory.
    pub dir: PathBuf,
    /// ABI profile of the wire format.
    pub profile: Profile,
    /// Most connections served at once.
    pub max_connections: usize,
    /// A connection with nothing in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Most acks queued for a peer that does not read them before it is dropped.
    pub max_queued_acks: usize,
    /// Who may make the requests registered [`Access::Privileged`] (default: root only).
    pub policy: Policy,
    /// Where served and refused requests are recorded (`ipc.request`, `ipc.refused`).
    pub log: EventLog,
}

impl ServerConfig {
    /// Defaults: profile F, 256 connections, 30 s idle timeout, 64 queued acks, root-only
    /// policy, no event log.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            name: name.into(),
            dir: dir.into(),
            profile: Profile::F,
            max_connections: 256,
            idle_timeout: Duration::from_secs(30),
            max_queued_acks: 64,
            policy: Policy::default(),
            log: EventLog::disabled(""),
        }
    }
}

/// A server that cannot start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Bad name, path too long, or the directory cannot be made.
    #[error("Cannot name the server socket")]
    Naming(#[from] NamingError),
    /// `bind` failed.
    #[error("Cannot bind {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The server thread could not start.
    #[error("Cannot start the server thread")]
    Thread(#[source] io::Error),
}

struct Conn {
    stream: UnixStream,
    token: Token,
    id: ConnId,
    inbuf: FrameReader,
    outbuf: Vec<u8>,
    last_active: Instant,
    deferred: usize,
    writable: bool,
    eof: bool,
}

impl Conn {
    /// Whether the server still owes this peer something (a deferred ack, queued output),
    /// so that it must not be dropped to make room. Half a message is no such debt: a peer
    /// that stalls mid-message could otherwise hold its slot until the idle timeout, and one
    /// trickling a byte now and then forever.
    fn busy(&self) -> bool {
        self.deferred > 0 || !self.outbuf.is_empty()
    }
}

/// A bound mngr IPC server, ready to join an event loop.
pub struct IpcServer<C> {
    cfg: ServerConfig,
    path: PathBuf,
    listener: UnixListener,
    listener_token: Option<Token>,
    handlers: Handlers<C>,
    conns: HashMap<Token, Conn>,
    by_id: HashMap<ConnId, Token>,
    next_conn: u64,
    completions_tx: Sender<Completion>,
    completions_rx: Receiver<Completion>,
    notifier: Option<Notifier>,
    gate: Gate,
}

impl<C> fmt::Debug for IpcServer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpcServer")
            .field("path", &self.path)
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl<C: 'static> IpcServer<C> {
    /// Creates the directory if needed, removes stale sockets of this name, and binds
    /// `DIR/NAME.PID.socket` with mode 0660.
    pub fn bind(cfg: ServerConfig, handlers: Handlers<C>) -> Result<Self, ServerError> {
        let path = naming::socket_path(&cfg.dir, &cfg.name, std::process::id())?;
        naming::ensure_dir(&cfg.dir)?;
        naming::remove_stale(&cfg.dir, &cfg.name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => log::info!("Removed leftover socket {} of this process", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("Cannot remove {}: {e}", path.display()),
        }
        let listener = UnixListener::bind(&path).map_err(|source| ServerError::Bind {
            path: path.clone(),
            source,
        })?;
        naming::set_socket_mode(&path).map_err(|source| ServerError::Bind {
            path: path.clone(),
            source,
        })?;
        log::info!("Serving {} on {}", cfg.name, path.display());
        let (completions_tx, completions_rx) = mpsc::channel();
        let gate = Gate {
            name: cfg.name.clone(),
            policy: cfg.policy.clone(),
            log: cfg.log.clone(),
        };
        Ok(IpcServer {
            gate,
            cfg,
            path,
            listener,
            listener_token: None,
            handlers,
            conns: HashMap::new(),
            by_id: HashMap::new(),
            next_conn: 0,
            completions_tx,
            completions_rx,
            notifier: None,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Accepts up to [`ACCEPT_BATCH`] connections, serving each one's request at once (it
    /// usually came with the connection). A full batch re-arms the listener instead of
    /// draining it, so that clients reconnecting as fast as they are served cannot starve
    /// the events of other connections.
    fn accept_batch(&mut self, ops: &mut Ops<'_, C, Self>, ctx: &mut C) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(token) = self.admit(stream, ops) {
                        self.read_conn(token, true, ops, ctx);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Interrupted, or a peer that gave up before we accepted: go on.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) if out_of_descriptors(&e) && self.evict_idlest(ops) => {
                    log::warn!(
                        "{}: accept failed ({e}); closed the connection idle the longest to make room",
                        self.cfg.name
                    );
                }
                Err(e) => {
                    // Connections are left in the backlog, and no new edge will come for
                    // them: look again soon.
                    if !ops.is_armed(&ServerTimer::AcceptRetry) {
                        log::warn!(
                            "{}: accept failed ({e}); retrying in {} ms",
                            self.cfg.name,
                            ACCEPT_RETRY.as_millis()
                        );
                        ops.arm_after(ServerTimer::AcceptRetry, ACCEPT_RETRY);
                    }
                    return;
                }
            }
        }
        // More may be waiting: EPOLL_CTL_MOD re-arms the edge if the backlog is not empty.
        if let Some(t) = self.listener_token
            && let Err(e) = ops.reregister(&mut self.listener, t, Interest::READABLE)
        {
            log::error!("{}: cannot re-arm the listener: {e}", self.cfg.name);
        }
    }

    /// Closes the connection idle the longest that the server owes nothing. Returns false
    /// if there is none.
    fn evict_idlest(&mut self, ops: &mut Ops<'_, C, Self>) -> bool {
        let idlest = self
            .conns
            .values()
            .filter(|c| !c.busy())
            .min_by_key(|c| c.last_active)
            .map(|c| c.token);
        match idlest {
            Some(token) => {
                self.close(token, ops);
                true
            }
            None => false,
        }
    }

    fn admit(&mut self, mut stream: UnixStream, ops: &mut Ops<'_, C, Self>) -> Option<Token> {
        if self.conns.len() >= self.cfg.max_connections {
            let open = self.conns.len();
            if !self.evict_idlest(ops) {
                log::warn!(
                    "{}: {open} connections, all busy; refusing a new one",
                    self.cfg.name
                );
                return None;
            }
            log::info!(
                "{}: {open} connections open; dropped the longest idle one",
                self.cfg.name
            );
        }
        let token = match ops.register(&mut stream, Interest::READABLE) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("{}: cannot register a connection: {e}", self.cfg.name);
                return None;
            }
        };
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.by_id.insert(id, token);
        self.conns.insert(
            token,
            Conn {
                stream,
                token,
                id,
                inbuf: FrameReader::new(),
                outbuf: Vec::new(),
                last_active: Instant::now(),
                deferred: 0,
                writable: false,
                eof: false,
            },
        );
        self.arm_idle_timer(ops);
        Some(token)
    }

    fn close(&mut self, token: Token, ops: &mut Ops<'_, C, Self>) {
        if let Some(mut c) = self.conns.remove(&token) {
            ops.deregister(&mut c.stream, token);
            self.by_id.remove(&c.id);
            if c.deferred > 0 {
                log::debug!(
                    "{}: closing a connection with {} deferred ack(s) pending",
                    self.cfg.name,
                    c.deferred
                );
            }
        }
        // No connection left that can expire: an armed idle timer would only wake the
        // process for nothing (acrnd idle must not wake at all).
        if self.conns.values().all(|c| c.deferred > 0) {
            ops.cancel(&ServerTimer::Idle);
        }
    }

    fn on_conn_event(
        &mut self,
        token: Token,
        event: &Event,
        ops: &mut Ops<'_, C, Self>,
        ctx: &mut C,
    ) {
        if event.is_writable() && !self.flush(token, ops) {
            return;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_conn(token, !event.is_read_closed(), ops, ctx);
        }
    }

    /// Reads until `WouldBlock`, or EOF. With `short_read_drains`, a read that returns
    /// less than asked ends the drain: the queue was empty then, and more data raises a new
    /// edge (not so once the peer has shut down: the EOF must still be read).
    fn read_conn(
        &mut self,
        token: Token,
        short_read_drains: bool,
        ops: &mut Ops<'_, C, Self>,
        ctx: &mut C,
    ) {
        let mut buf = [0u8; 4096];
        for round in 0.. {
            if round == READ_BUDGET {
                // A peer streaming requests gets a turn, not the loop: re-arm its edge.
                if let Some(c) = self.conns.get_mut(&token) {
                    let interest = if c.writable {
                        Interest::READABLE | Interest::WRITABLE
                    } else {
                        Interest::READABLE
                    };
                    if let Err(e) = ops.reregister(&mut c.stream, token, interest) {
                        log::warn!("{}: re-arm failed: {e}; closing", self.cfg.name);
                        self.close(token, ops);
                        return;
                    }
                }
                break;
            }
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            if conn.eof {
                break;
            }
            match conn.stream.read(&mut buf) {
                Ok(0) => conn.eof = true,
                Ok(n) => {
                    conn.last_active = Instant::now();
                    if !self.take_bytes(token, &buf[..n], ops, ctx) {
                        return;
                    }
                    if short_read_drains && n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("{}: read failed: {e}; closing", self.cfg.name);
                    self.close(token, ops);
                    return;
                }
            }
        }
        if !self.flush(token, ops) {
            return;
        }
        self.close_if_done(token, ops);
    }

    /// Feeds bytes to the connection's reassembly buffer and serves each complete message.
    /// Returns false if the connection was closed.
    fn take_bytes(
        &mut self,
        token: Token,
        mut bytes: &[u8],
        ops: &mut Ops<'_, C, Self>,
        ctx: &mut C,
    ) -> bool {
        while !bytes.is_empty() {
            let Some(conn) = self.conns.get_mut(&token) else {
                return false;
            };
            let (frame, rest) = conn.inbuf.push(bytes);
            bytes = rest;
            let Some(frame) = frame else { break };
            if !self.serve(token, &frame, ctx) {
                self.close(token, ops);
                return false;
            }
        }
        true
    }

    /// Serves one message. Returns false if the connection must be closed.
    fn serve(&mut self, token: Token, frame: &Wire, ctx: &mut C) -> bool {
        let conn = self
            .conns
            .get(&token)
            .expect("caller checked the connection");
        let name = &self.cfg.name;
        let profile = self.cfg.profile;
        let handlers = &self.handlers;
        let (header, id, request) = match triage(profile, frame, |id| handlers.has(id)) {
            Disposition::Serve {
                header,
                id,
                request,
            } => (header, id, request),
            Disposition::Close { magic } => {
                let p = peer_of(&conn.stream);
                log::warn!(
                    "{name}: message without magic ({magic:#018x}) from pid {} uid {}; closing the connection",
                    p.pid,
                    p.uid
                );
                return false;
            }
            Disposition::Unknown { header, id } => {
                let p = peer_of(&conn.stream);
                match id {
                    Some(id) => log::info!(
                        "{name}: no handler for {id} (from pid {}); answering -ENOSYS",
                        p.pid
                    ),
                    None => log::warn!(
                        "{name}: unknown message id {} from pid {}; answering -ENOSYS",
                        header.msgid,
                        p.pid
                    ),
                }
                return self.queue(token, &codec::error_ack(&header, err::UNKNOWN_ID));
            }
            Disposition::Malformed { header, id, error } => {
                let p = peer_of(&conn.stream);
                log::warn!(
                    "{name}: malformed {id} from pid {} uid {}: {error}; answering -EINVAL",
                    p.pid,
                    p.uid
                );
                return self.queue(token, &codec::error_ack(&header, err::INVALID));
            }
        };
        let handler = self
            .handlers
            .get(id)
            .expect("triage served only ids with a handler");
        let call = Call {
            stream: &conn.stream,
            id,
            header,
            conn: conn.id,
            profile,
            completions: &self.completions_tx,
            notifier: self.notifier.as_ref().expect("set in init"),
            gate: &self.gate,
        };
        match handler(request, call, ctx).0 {
            ReplyKind::Now(wire) => self.queue(token, &wire),
            ReplyKind::Deferred => {
                if let Some(c) = self.conns.get_mut(&token) {
                    c.deferred += 1;
                }
                true
            }
        }
    }

    /// Queues an ack. Returns false if the peer has too many unread acks.
    fn queue(&mut self, token: Token, wire: &Wire) -> bool {
        let Some(conn) = self.conns.get_mut(&token) else {
            return false;
        };
        if conn.outbuf.len() >= self.cfg.max_queued_acks * MSG_LEN {
            log::warn!(
                "{}: pid {} does not read its acks; closing the connection",
                self.cfg.name,
                peer_of(&conn.stream).pid
            );
            return false;
        }
        conn.outbuf.extend_from_slice(wire);
        true
    }

    /// Writes queued acks until done or `WouldBlock`. Returns false if it closed the
    /// connection.
    fn flush(&mut self, token: Token, ops: &mut Ops<'_, C, Self>) -> bool {
        let Some(conn) = self.conns.get_mut(&token) else {
            return false;
        };
        while !conn.outbuf.is_empty() {
            match conn.stream.write(&conn.outbuf) {
                Ok(0) => {
                    self.close(token, ops);
                    return false;
                }
                Ok(n) => {
                    conn.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("{}: write failed: {e}; closing", self.cfg.name);
                    self.close(token, ops);
                    return false;
                }
            }
        }
        let want_writable = !conn.outbuf.is_empty();
        if want_writable != conn.writable {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = ops.reregister(&mut conn.stream, token, interest) {
                log::warn!("{}: reregister failed: {e}; closing", self.cfg.name);
                self.close(token, ops);
                return false;
            }
            conn.writable = want_writable;
        }
        true
    }

    /// Closes a connection whose peer finished sending once nothing is left to answer.
    fn close_if_done(&mut self, token: Token, ops: &mut Ops<'_, C, Self>) {
        let Some(c) = self.conns.get(&token) else {
            return;
        };
        if !(c.eof && c.deferred == 0 && c.outbuf.is_empty()) {
            return;
        }
        if c.inbuf.pending() > 0 {
            log::debug!(
                "{}: peer pid {} closed with {} bytes of a partial message",
                self.cfg.name,
                peer_of(&c.stream).pid,
                c.inbuf.pending()
            );
        }
        self.close(token, ops);
    }

    fn deliver_completions(&mut self, ops: &mut Ops<'_, C, Self>) {
        while let Ok(c) = self.completions_rx.try_recv() {
            let Some(&token) = self.by_id.get(&c.conn) else {
                log::debug!(
                    "{}: deferred ack for a closed connection dropped",
                    self.cfg.name
                );
                continue;
            };
            if let Some(conn) = self.conns.get_mut(&token) {
                conn.deferred = conn.deferred.saturating_sub(1);
                conn.last_active = Instant::now();
            }
            if self.queue(token, &c.wire) {
                if self.flush(token, ops) {
                    self.close_if_done(token, ops);
                }
            } else {
                self.close(token, ops);
            }
        }
        // A connection whose deferred ack went out can expire again.
        self.arm_idle_timer(ops);
    }

    /// Arms the idle timer for the connection idle the longest among those that can expire
    /// (a connection waiting for a deferred ack cannot: counting it would re-arm the timer
    /// at a deadline already past, again and again).
    fn arm_idle_timer(&mut self, ops: &mut Ops<'_, C, Self>) {
        if let Some(oldest) = self
            .conns
            .values()
            .filter(|c| c.deferred == 0)
            .map(|c| c.last_active)
            .min()
        {
            ops.arm_unless_armed(ServerTimer::Idle, oldest + self.cfg.idle_timeout);
        }
    }

    fn expire_idle(&mut self, ops: &mut Ops<'_, C, Self>) {
        let now = Instant::now();
        let idle: Vec<Token> = self
            .conns
            .values()
            .filter(|c| {
                c.deferred == 0 && now.duration_since(c.last_active) >= self.cfg.idle_timeout
            })
            .map(|c| c.token)
            .collect();
        for t in idle {
            log::debug!("{}: closing an idle connection", self.cfg.name);
            self.close(t, ops);
        }
    }
}

impl<C> Drop for IpcServer<C> {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => log::debug!("Removed {}", self.path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("Cannot remove {}: {e}", self.path.display()),
        }
    }
}

/// The timers of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTimer {
    /// The connection idle the longest may have expired.
    Idle,
    /// Accept again after a failed accept.
    AcceptRetry,
}

impl<C: 'static> Subscriber<C> for IpcServer<C> {
    type Timer = ServerTimer;
    type Done = ();

    fn init(&mut self, ops: &mut Ops<'_, C, Self>) -> io::Result<()> {
        self.listener_token = Some(ops.register(&mut self.listener, Interest::READABLE)?);
        self.notifier = Some(ops.notifier());
        Ok(())
    }

    fn on_event(&mut self, event: &Event, ops: &mut Ops<'_, C, Self>, ctx: &mut C) {
        if Some(event.token()) == self.listener_token {
            self.accept_batch(ops, ctx);
        } else {
            self.on_conn_event(event.token(), event, ops, ctx);
        }
    }

    fn on_timer(&mut self, key: ServerTimer, ops: &mut Ops<'_, C, Self>, ctx: &mut C) {
        match key {
            ServerTimer::AcceptRetry => self.accept_batch(ops, ctx),
            ServerTimer::Idle => {
                self.expire_idle(ops);
                self.arm_idle_timer(ops);
            }
        }
    }

    fn on_notify(&mut self, ops: &mut Ops<'_, C, Self>, _ctx: &mut C) {
        self.deliver_completions(ops);
    }
}
