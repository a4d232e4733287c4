//! The C-style API of `libacrn-mngr`, for people porting C tools:
//! `mngr_open_un` → [`open`], `mngr_close` → [`close`], `mngr_add_handler` →
//! [`add_handler`], `mngr_send_msg` → [`send_msg`].
//!
//! Differences from the C library, all on the safe side:
//! * descriptors are handles into a table, not raw fds;
//! * a server accepts from [`open`] on, like the C one, but a request whose id has no
//!   handler *yet* gets an immediate `-ENOSYS` ack instead of being dropped;
//! * timeouts are [`Duration`]s and always bounded (C: 0 meant "wait forever");
//! * a missing ack is an error, never a successful return.
//!
//! New code inside the suite uses [`crate::server`] and [`crate::client`] directly.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::client::{self, Client, ClientError};
use crate::msg::{Ack, MsgId, Request, err};
use crate::naming::DEFAULT_SOCKET_DIR;
use crate::profile::Profile;
use crate::server::{
    Access, Call, Handlers, Reply, ServerConfig, ServerError, ServerThread, spawn_server,
};

/// What [`open`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `MNGR_SERVER`: bind `NAME.PID.socket` and serve.
    Server,
    /// `MNGR_CLIENT`: connect to the server `NAME`.
    Client,
}

/// A descriptor returned by [`open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Desc(i32);

/// Why a facade call failed.
#[derive(Debug, Error)]
pub enum FacadeError {
    /// The descriptor is not open.
    #[error("Descriptor {0} is not open")]
    BadDesc(i32),
    /// A client call on a server descriptor or the other way round.
    #[error("Descriptor {0} is not a {1}")]
    WrongMode(i32, &'static str),
    /// The server could not start.
    #[error("Cannot open the server")]
    Server(#[from] ServerError),
    /// The client call failed.
    #[error("Client call failed")]
    Client(#[from] ClientError),
}

/// A handler of the facade: gets the request and answers through the [`Call`].
pub type FacadeHandler = Box<dyn FnMut(&Request, Call<'_>) -> Reply + Send>;

type Table = Arc<Mutex<HashMap<MsgId, FacadeHandler>>>;

enum Entry {
    Server {
        _thread: ServerThread,
        table: Table,
    },
    Client {
        stream: UnixStream,
        profile: Profile,
    },
}

#[derive(Default)]
struct Registry {
    next: i32,
    entries: HashMap<i32, Entry>,
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static REG: OnceLock<Mutex<Registry>> = OnceLock::new();
    REG.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Opens a server or client `name` in the production socket dir with profile F.
///
/// ```no_run
/// use mngr_ipc::facade::{open, close, Mode};
/// let desc = open("acrnd", Mode::Client)?;
/// close(desc);
/// # Ok::<(), mngr_ipc::facade::FacadeError>(())
/// ```
pub fn open(name: &str, mode: Mode) -> Result<Desc, FacadeError> {
    open_in(Path::new(DEFAULT_SOCKET_DIR), Profile::F, name, mode)
}

/// Opens a server or client `name` in socket dir `dir`, speaking `profile`.
///
/// ```
/// use mngr_ipc::facade::{open_in, close, Mode};
/// use mngr_ipc::Profile;
/// let dir = tempfile::tempdir()?;
/// let server = open_in(dir.path(), Profile::F, "demo", Mode::Server)?;
/// let client = open_in(dir.path(), Profile::F, "demo", Mode::Client)?;
/// close(client);
/// close(server);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn open_in(dir: &Path, profile: Profile, name: &str, mode: Mode) -> Result<Desc, FacadeError> {
    let entry = match mode {
        Mode::Server => {
            let table: Table = Arc::default();
            let shared = Arc::clone(&table);
            let handlers = Handlers::<()>::new()
                .fallback(Access::Open, move |req, call, _ctx: &mut ()| {
                    dispatch(&shared, req, call)
                });
            let mut cfg = ServerConfig::new(name, PathBuf::from(dir));
            cfg.profile = profile;
            Entry::Server {
                _thread: spawn_server(cfg, handlers, ())?,
                table,
            }
        }
        Mode::Client => {
            let c = Client::new(dir, profile);
            let stream = c.connect(name, Instant::now() + Duration::from_secs(2))?;
            Entry::Client { stream, profile }
        }
    };
    let mut reg = registry();
    reg.next += 1;
    let d = reg.next;
    reg.entries.insert(d, entry);
    Ok(Desc(d))
}

/// Runs the handler of the request's id without holding the table lock, so a handler may
/// itself call [`add_handler`].
fn dispatch(table: &Table, req: &Request, call: Call<'_>) -> Reply {
    let id = req.id();
    let taken = table
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
    let Some(mut h) = taken else {
        return call.err(err::UNKNOWN_ID);
    };
    let reply = h(req, call);
    table
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id)
        .or_insert(h);
    reply
}

/// Closes a descriptor: a server stops and removes its socket; a client disconnects.
/// Closing an unknown descriptor does nothing.
///
/// ```
/// # use mngr_ipc::facade::{open_in, close, Mode};
/// # let dir = tempfile::tempdir()?;
/// let d = open_in(dir.path(), mngr_ipc::Profile::F, "demo", Mode::Server)?;
/// close(d);
/// assert!(std::fs::read_dir(dir.path())?.next().is_none(), "socket removed");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn close(desc: Desc) {
    let entry = registry().entries.remove(&desc.0);
    drop(entry); // outside the registry lock: stopping a server joins its thread
}

/// Registers `handler` for `id` on a server descriptor (replacing an earlier one).
///
/// ```
/// use mngr_ipc::facade::{open_in, add_handler, send_msg, close, Mode};
/// use mngr_ipc::msg::{AckPayload, Body, Request};
/// use std::time::Duration;
/// # let dir = tempfile::tempdir()?;
/// let server = open_in(dir.path(), mngr_ipc::Profile::F, "vm1.monitor", Mode::Server)?;
/// add_handler(server, mngr_ipc::MsgId::DmQuery, Box::new(|_req, call| call.ack(AckPayload::State(0))))?;
/// let client = open_in(dir.path(), mngr_ipc::Profile::F, "vm1.monitor", Mode::Client)?;
/// let ack = send_msg(client, &Request::now(Body::DmQuery), true, Duration::from_secs(2))?;
/// assert_eq!(ack.map(|a| a.payload), Some(AckPayload::State(0)));
/// close(client);
/// close(server);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn add_handler(desc: Desc, id: MsgId, handler: FacadeHandler) -> Result<(), FacadeError> {
    let reg = registry();
    match reg.entries.get(&desc.0) {
        Some(Entry::Server { table, .. }) => {
            table
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, handler);
            Ok(())
        }
        Some(Entry::Client { .. }) => Err(FacadeError::WrongMode(desc.0, "server")),
        None => Err(FacadeError::BadDesc(desc.0)),
    }
}

/// Sends `req` on a client descriptor; with `want_ack`, waits for the ack (the C `ack`
/// pointer being non-NULL). Everything is bounded by `timeout`.
///
/// ```
/// use mngr_ipc::facade::{open_in, send_msg, close, Mode};
/// use mngr_ipc::msg::{Body, Request};
/// use std::time::Duration;
/// # let dir = tempfile::tempdir()?;
/// let server = open_in(dir.path(), mngr_ipc::Profile::F, "sos-lcs", Mode::Server)?;
/// let client = open_in(dir.path(), mngr_ipc::Profile::F, "sos-lcs", Mode::Client)?;
/// // No handler for WAKEUP_REASON: our server answers -ENOSYS at once.
/// let ack = send_msg(client, &Request::now(Body::WakeupReason), true, Duration::from_secs(2))?
///     .expect("ack wanted");
/// assert_eq!(ack.payload, mngr_ipc::AckPayload::Reason((-38i32).cast_unsigned()));
/// close(client);
/// close(server);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn send_msg(
    desc: Desc,
    req: &Request,
    want_ack: bool,
    timeout: Duration,
) -> Result<Option<Ack>, FacadeError> {
    // Take the connection out of the table so a slow server blocks only this caller.
    let (mut stream, profile) = {
        let reg = registry();
        match reg.entries.get(&desc.0) {
            Some(Entry::Client { stream, profile }) => (
                stream
                    .try_clone()
                    .map_err(|e| FacadeError::Client(ClientError::Io(e)))?,
                *profile,
            ),
            Some(Entry::Server { .. }) => return Err(FacadeError::WrongMode(desc.0, "client")),
            None => return Err(FacadeError::BadDesc(desc.0)),
        }
    };
    let deadline = Instant::now() + timeout;
    if want_ack {
        Ok(Some(client::exchange(
            &mut stream,
            profile,
            req,
            deadline,
            timeout,
        )?))
    } else {
        client::write_request(&mut stream, profile, req, deadline, timeout)?;
        Ok(None)
    }
}
