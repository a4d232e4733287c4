//! The mngr IPC server: a [`Subscriber`] that a daemon adds to its own [`EventLoop`], or
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
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Token};
use nix::sys::socket::{getsockopt, sockopt};
use thiserror::Error;

use serde_json::json;

use crate::auth::Policy;
use crate::codec::{self, CodecError, FrameReader, Header, MSG_LEN, Wire};
use crate::event_log::EventLog;
use crate::msg::{Ack, AckPayload, MsgId, Request, TypedBody, err};
use crate::naming::{self, NamingError};
use crate::profile::Profile;
use crate::runtime::{EventLoop, LoopHandle, Notifier, Ops, Subscriber};

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

/// Credentials of the process at the other end of a connection (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id (as seen from our pid namespace; 0 if unknown).
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
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

/// The answer a handler gives: made only by [`Call::ack`], [`Call::err`] or [`Call::defer`],
/// so every handled request gets exactly one ack.
#[derive(Debug)]
#[must_use = "return the Reply from the handler"]
pub struct Reply(ReplyKind);

#[derive(Debug)]
enum ReplyKind {
    Now(Box<Wire>),
    Deferred,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnId(u64);

#[derive(Debug)]
struct Completion {
    conn: ConnId,
    wire: Box<Wire>,
}

/// One request being handled: who asked, and how to answer.
#[derive(Debug)]
pub struct Call<'a> {
    stream: &'a UnixStream,
    id: MsgId,
    header: Header,
    conn: ConnId,
    profile: Profile,
    completions: &'a Sender<Completion>,
    notifier: &'a Notifier,
    gate: &'a Gate,
}

/// What the server knows to admit or refuse a request: its name, its policy, its log.
#[derive(Debug)]
struct Gate {
    name: String,
    policy: Policy,
    log: EventLog,
}

impl Gate {
    /// Records a request about to be served.
    fn note(&self, request: &Request, peer: &PeerCred) {
        log::debug!(
            "{}: {} from pid {} uid {}",
            self.name,
            request.id(),
            peer.pid,
            peer.uid
        );
        if self.log.is_enabled() {
            self.log.emit(
                "ipc.request",
                json!({"msg": request.id().name(), "pid": peer.pid, "uid": peer.uid, "body": request.body.describe()}),
            );
        }
    }

    /// The one refusal of the suite: a log line, an event, `-EACCES`.
    fn refuse(&self, call: Call<'_>, peer: &PeerCred) -> Reply {
        let id = call.id();
        log::warn!(
            "{}: {id} from pid {} uid {} refused by policy",
            self.name,
            peer.pid,
            peer.uid
        );
        self.log.emit(
            "ipc.refused",
            json!({"msg": id.name(), "pid": peer.pid, "uid": peer.uid}),
        );
        call.err(err::NOT_PERMITTED)
    }
}

impl Call<'_> {
    /// The requesting process (`SO_PEERCRED`, read when asked: most requests never need
    /// it). A peer whose credentials cannot be read is pid 0, uid and gid `u32::MAX`, which
    /// no policy allows.
    pub fn peer(&self) -> PeerCred {
        peer_of(self.stream)
    }

    /// The request's id.
    pub fn id(&self) -> MsgId {
        self.id
    }

    /// Answers now with `payload`.
    pub fn ack(self, payload: AckPayload) -> Reply {
        Reply(ReplyKind::Now(Box::new(encode_ack(
            self.profile,
            self.id,
            &self.header,
            payload,
        ))))
    }

    /// Answers now with `data.err = code` (whatever the id's usual payload).
    pub fn err(self, code: i32) -> Reply {
        Reply(ReplyKind::Now(Box::new(codec::error_ack(
            &self.header,
            code,
        ))))
    }

    /// Answers later: the returned [`DeferredAck`] may move to a worker thread.
    pub fn defer(self) -> (Reply, DeferredAck) {
        let d = DeferredAck {
            conn: self.conn,
            id: self.id,
            header: self.header,
            profile: self.profile,
            completions: self.completions.clone(),
            notifier: self.notifier.clone(),
            done: false,
        };
        (Reply(ReplyKind::Deferred), d)
    }
}

fn peer_of(stream: &UnixStream) -> PeerCred {
    match getsockopt(stream, sockopt::PeerCredentials) {
        Ok(c) => PeerCred {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        },
        Err(e) => {
            log::warn!("No peer credentials: {e}");
            PeerCred {
                pid: 0,
                uid: u32::MAX,
                gid: u32::MAX,
            }
        }
    }
}

fn encode_ack(profile: Profile, id: MsgId, header: &Header, payload: AckPayload) -> Wire {
    match profile.encode_ack(&Ack::new(id, header.timestamp, payload)) {
        Ok(w) => w,
        Err(e) => {
            log::error!("Cannot encode the ack of {id}: {e}; answering -1");
            codec::error_ack(header, err::FAILED)
        }
    }
}

/// An ack to send later, from any thread. Dropping it unanswered sends `err = -1`.
#[derive(Debug)]
pub struct DeferredAck {
    conn: ConnId,
    id: MsgId,
    header: Header,
    profile: Profile,
    completions: Sender<Completion>,
    notifier: Notifier,
    done: bool,
}

impl DeferredAck {
    /// The request's id.
    pub fn id(&self) -> MsgId {
        self.id
    }

    /// Sends the ack with `payload`.
    pub fn complete(mut self, payload: AckPayload) {
        let wire = encode_ack(self.profile, self.id, &self.header, payload);
        self.send(wire);
    }

    /// Sends the ack with `data.err = code`.
    pub fn fail(mut self, code: i32) {
        let wire = codec::error_ack(&self.header, code);
        self.send(wire);
    }

    fn send(&mut self, wire: Wire) {
        self.done = true;
        let c = Completion {
            conn: self.conn,
            wire: Box::new(wire),
        };
        // The server is gone when the receiver is: nobody is left to answer.
        if self.completions.send(c).is_ok() {
            self.notifier.notify();
        }
    }
}

impl Drop for DeferredAck {
    fn drop(&mut self) {
        if !self.done {
            log::warn!(
                "Deferred ack of {} dropped unanswered; answering -1",
                self.id
            );
            let wire = codec::error_ack(&self.header, err::FAILED);
            self.send(wire);
        }
    }
}

/// Who may make a request: stated when its handler is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can open the socket (queries).
    Open,
    /// Only peers the server's [`Policy`] allows (anything that changes state); others get
    /// `-EACCES`, a log line and an `ipc.refused` event, and the handler is not called.
    Privileged,
}

type HandlerFn<C> = Box<dyn FnMut(Request, Call<'_>, &mut C) -> Reply + Send>;

/// The handlers of a server, one per id, fixed before the socket is bound. Every
/// registration states who may make the request ([`Access`]); the server checks it, so no
/// handler does.
pub struct Handlers<C> {
    by_id: HashMap<MsgId, HandlerFn<C>>,
    fallback: Option<HandlerFn<C>>,
}

impl<C> fmt::Debug for Handlers<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&MsgId> = self.by_id.keys().collect();
        ids.sort();
        f.debug_struct("Handlers")
            .field("ids", &ids)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl<C> Default for Handlers<C> {
    fn default() -> Self {
        Handlers {
            by_id: HashMap::new(),
            fallback: None,
        }
    }
}

/// Admits or refuses the caller by `access`, notes the request, calls `f`.
fn guarded<C>(
    access: Access,
    exempt: impl Fn(&Request, &PeerCred, &C) -> bool + Send + 'static,
    mut f: impl FnMut(Request, Call<'_>, &mut C) -> Reply + Send + 'static,
) -> HandlerFn<C> {
    Box::new(move |request, call, ctx| {
        let peer = call.peer();
        call.gate.note(&request, &peer);
        let admitted = match access {
            Access::Open => true,
            Access::Privileged => call.gate.policy.allows(&peer) || exempt(&request, &peer, ctx),
        };
        if !admitted {
            let gate = call.gate;
            return gate.refuse(call, &peer);
        }
        f(request, call, ctx)
    })
}

/// The typed body of `request`, which triage decoded for `T::ID`.
fn typed<T: TypedBody>(request: Request) -> Result<T, MsgId> {
    T::from_body(request.body).map_err(|other| other.id())
}

/// Calls `f` with the typed body; a body of another id (a bug of the registration) is
/// answered `-EINVAL` with an error log line.
fn typed_handler<C, T: TypedBody>(
    mut f: impl FnMut(T, Call<'_>, &mut C) -> Reply + Send + 'static,
) -> impl FnMut(Request, Call<'_>, &mut C) -> Reply + Send + 'static {
    move |request, call, ctx| match typed::<T>(request) {
        Ok(body) => f(body, call, ctx),
        Err(other) => {
            log::error!("The handler of {} was given a {other} request", T::ID);
            call.err(err::INVALID)
        }
    }
}

impl<C: 'static> Handlers<C> {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles `T`'s id with `f`, for anyone (queries).
    pub fn open<T: TypedBody + 'static>(
        mut self,
        f: impl FnMut(T, Call<'_>, &mut C) -> Reply + Send + 'static,
    ) -> Self {
        let h = guarded(Access::Open, |_, _, _| false, typed_handler(f));
        self.by_id.insert(T::ID, h);
        self
    }

    /// Handles `T`'s id with `f`, for the peers the policy allows.
    pub fn privileged<T: TypedBody + 'static>(
        mut self,
        f: impl FnMut(T, Call<'_>, &mut C) -> Reply + Send + 'static,
    ) -> Self {
        let h = guarded(Access::Privileged, |_, _, _| false, typed_handler(f));
        self.by_id.insert(T::ID, h);
        self
    }

    /// Handles `T`'s id with `f`, for the peers the policy allows and those `exempt`
    /// admits (acrnd: a device model asking for its own VM).
    pub fn privileged_unless<T: TypedBody + 'static>(
        mut self,
        exempt: impl Fn(&T, &PeerCred, &C) -> bool + Send + 'static,
        f: impl FnMut(T, Call<'_>, &mut C) -> Reply + Send + 'static,
    ) -> Self {
        let exempt = move |r: &Request, p: &PeerCred, c: &C| {
            T::from_body(r.body.clone()).is_ok_and(|b| exempt(&b, p, c))
        };
        let h = guarded(Access::Privileged, exempt, typed_handler(f));
        self.by_id.insert(T::ID, h);
        self
    }

    /// Handles `id` with `f` on the whole request (for peers that answer every id alike:
    /// the C-style facade, test peers).
    pub fn on(
        mut self,
        id: MsgId,
        access: Access,
        f: impl FnMut(&Request, Call<'_>, &mut C) -> Reply + Send + 'static,
    ) -> Self {
        let mut f = f;
        let h = guarded(access, |_, _, _| false, move |r, c, ctx| f(&r, c, ctx));
        self.by_id.insert(id, h);
        self
    }

    /// Handles every id of the profile that has no handler of its own.
    pub fn fallback(
        mut self,
        access: Access,
        f: impl FnMut(&Request, Call<'_>, &mut C) -> Reply + Send + 'static,
    ) -> Self {
        let mut f = f;
        self.fallback = Some(guarded(
            access,
            |_, _, _| false,
            move |r, c, ctx| f(&r, c, ctx),
        ));
        self
    }
}

impl<C> Handlers<C> {
    fn has(&self, id: MsgId) -> bool {
        self.by_id.contains_key(&id) || self.fallback.is_some()
    }

    fn get(&mut self, id: MsgId) -> Option<&mut HandlerFn<C>> {
        match self.by_id.get_mut(&id) {
            Some(h) => Some(h),
            None => self.fallback.as_mut(),
        }
    }
}

/// What a server does with one whole message, decided from its bytes alone.
#[derive(Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "made and matched at once on the stack; boxing would allocate per message"
)]
pub enum Disposition {
    /// No magic: the peer does not speak `struct mngr_msg`. The connection is closed
    /// without an answer (the C server did the same).
    Close {
        /// The bytes where the magic belongs.
        magic: u64,
    },
    /// An id the profile does not know, or one without a handler: answered `-ENOSYS`.
    Unknown {
        /// The message's header, echoed in the ack.
        header: Header,
        /// The id, when the profile knows the number.
        id: Option<MsgId>,
    },
    /// A known, handled id whose body does not decode: answered `-EINVAL`.
    Malformed {
        /// The message's header, echoed in the ack.
        header: Header,
        /// The id.
        id: MsgId,
        /// Why the body does not decode.
        error: CodecError,
    },
    /// A request for the id's handler.
    Serve {
        /// The message's header, echoed in the ack.
        header: Header,
        /// The id.
        id: MsgId,
        /// The decoded request.
        request: Request,
    },
}

impl Disposition {
    /// The ack the server sends at once without calling a handler, if any.
    pub fn error_ack(&self) -> Option<Wire> {
        match self {
            Disposition::Unknown { header, .. } => Some(codec::error_ack(header, err::UNKNOWN_ID)),
            Disposition::Malformed { header, .. } => Some(codec::error_ack(header, err::INVALID)),
            Disposition::Close { .. } | Disposition::Serve { .. } => None,
        }
    }
}

/// What a server of `profile` does with `frame`, `handled` telling which ids have a
/// handler. Pure: every answer the server gives without a handler comes from here.
pub fn triage(profile: Profile, frame: &Wire, handled: impl Fn(MsgId) -> bool) -> Disposition {
    let header = codec::peek_header(frame).expect("a Wire is MSG_LEN bytes");
    if !header.has_magic() {
        return Disposition::Close {
            magic: header.magic,
        };
    }
    let id = match profile.msg_id(header.msgid) {
        Some(id) if handled(id) => id,
        id => return Disposition::Unknown { header, id },
    };
    match profile.decode_request(frame) {
        Ok(request) => Disposition::Serve {
            header,
            id,
            request,
        },
        Err(error) => Disposition::Malformed { header, id, error },
    }
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

/// A server running an event loop of its own on a thread; stops (and unlinks its socket)
/// on [`ServerThread::stop`] or drop.
#[derive(Debug)]
pub struct ServerThread {
    path: PathBuf,
    handle: LoopHandle,
    join: Option<JoinHandle<()>>,
}

/// Binds a server on the calling thread (so errors are returned here), then serves it on a
/// new thread with state `ctx`.
pub fn spawn_server<C: Send + 'static>(
    cfg: ServerConfig,
    handlers: Handlers<C>,
    ctx: C,
) -> Result<ServerThread, ServerError> {
    let name = cfg.name.clone();
    let server = IpcServer::bind(cfg, handlers)?;
    let path = server.path().to_owned();
    let (tx, rx) = mpsc::sync_channel(1);
    let join = std::thread::Builder::new()
        .name(format!("mngr-{name}"))
        .spawn(move || {
            let mut ctx = ctx;
            let mut el = match EventLoop::new() {
                Ok(el) => el,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = el.add(Box::new(server)) {
                let _ = tx.send(Err(e));
                return;
            }
            let _ = tx.send(Ok(el.handle()));
            if let Err(e) = el.run(&mut ctx) {
                log::error!("Server {name} stopped: {e}");
            }
        })
        .map_err(ServerError::Thread)?;
    let handle = match rx.recv() {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(ServerError::Thread(e)),
        Err(_) => {
            return Err(ServerError::Thread(io::Error::other(
                "server thread ended before starting",
            )));
        }
    };
    Ok(ServerThread {
        path,
        handle,
        join: Some(join),
    })
}

impl ServerThread {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving, waits for the thread, and removes the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.handle.shutdown();
        if let Some(j) = self.join.take()
            && j.join().is_err()
        {
            log::error!("Server thread for {} panicked", self.path.display());
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}
