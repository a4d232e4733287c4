//! One request being handled ([`Call`]), its answer ([`Reply`], [`DeferredAck`]), and the
//! gate every request passes: the note of who asked, and the one refusal of the suite.

use std::sync::mpsc::Sender;

use mio::net::UnixStream;
use nix::sys::socket::{getsockopt, sockopt};

use serde_json::json;

use crate::auth::Policy;
use crate::codec::{self, Header, Wire};
use crate::event_log::EventLog;
use crate::msg::{Ack, AckPayload, MsgId, Request, err};
use crate::profile::Profile;
use crate::runtime::Notifier;

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

/// The answer a handler gives: made only by [`Call::ack`], [`Call::err`] or [`Call::defer`],
/// so every handled request gets exactly one ack.
#[derive(Debug)]
#[must_use = "return the Reply from the handler"]
pub struct Reply(pub(super) ReplyKind);

#[derive(Debug)]
pub(super) enum ReplyKind {
    Now(Box<Wire>),
    Deferred,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ConnId(pub(super) u64);

#[derive(Debug)]
pub(super) struct Completion {
    pub(super) conn: ConnId,
    pub(super) wire: Box<Wire>,
}

/// One request being handled: who asked, and how to answer.
#[derive(Debug)]
pub struct Call<'a> {
    pub(super) stream: &'a UnixStream,
    pub(super) id: MsgId,
    pub(super) header: Header,
    pub(super) conn: ConnId,
    pub(super) profile: Profile,
    pub(super) completions: &'a Sender<Completion>,
    pub(super) notifier: &'a Notifier,
    pub(super) gate: &'a Gate,
}

/// What the server knows to admit or refuse a request: its name, its policy, its log.
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) name: String,
    pub(super) policy: Policy,
    pub(super) log: EventLog,
}

impl Gate {
    /// Records a request about to be served.
    pub(super) fn note(&self, request: &Request, peer: &PeerCred) {
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
    pub(super) fn refuse(&self, call: Call<'_>, peer: &PeerCred) -> Reply {
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

pub(super) fn peer_of(stream: &UnixStream) -> PeerCred {
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

pub(super) fn encode_ack(
    profile: Profile,
    id: MsgId,
    header: &Header,
    payload: AckPayload,
) -> Wire {
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
