//! The only code that knows the byte layout of `struct mngr_msg`.
//!
//! ```text
//! struct mngr_msg {                  // x86_64 LP64, 280 bytes, alignment 8
//!     unsigned long long magic;      //   0..8    "vmm msg\0" = 0x0067736D206D6D76 LE
//!     unsigned int msgid;            //   8..12   profile-dependent number
//!                                    //  12..16   padding: written 0, ignored on read
//!     unsigned long timestamp;       //  16..24   epoch seconds, echoed in acks
//!     union {                        //  24..280
//!         char devargs[256];         //  24       DM_BLKRESCAN, MSG_STR
//!         int err;                   //  24       most acks; SUSPEND/SHUTDOWN/REBOOT requests
//!         unsigned reason;           //  24       WAKEUP_REASON ack, DM_RESUME request
//!         int state;                 //  24       DM_QUERY ack
//!         struct { char name[N];     //  24       ACRND_TIMER (N = profile name length)
//!                  time_t t; }       //  24+N     relative seconds
//!             acrnd_timer;
//!         struct { int force;        //  24
//!                  unsigned timeout; //  28
//!         } acrnd_stop, acrnd_suspend, acrnd_resume;
//!         struct { char vmname[N];   //  24       RTC_TIMER, informational
//!                  time_t t; }       //  24+N     absolute epoch seconds
//!             rtc_timer;
//!     } data;
//! };
//! ```
//!
//! Suite extensions (bytes every C receiver ignores):
//!
//! | message | field | offset | meaning |
//! |---|---|---:|---|
//! | ACRND_STOP | `target` u32 | 32 | 0 not given (all C senders), 1 S5, 2 S3 |
//! | DM_NOTIFY | `name` `char[N]` | 24 | the VM whose device model sends it |
//! | DM_NOTIFY | `mode` i64 (an i32 value) | 24+N | DM suspend mode (0 running, 3 off, 4 suspended) |
//! | CTL_LIST / CTL_TIMERS | `start` u32 | 24 | first entry wanted |
//! | CTL_START / CTL_SUSPEND | `name` `char[N]` | 24 | VM |
//! | CTL_STOP | `name`, `force` i32, `timeout` u32 | 24, 24+N, 28+N | |
//! | CTL_RESUME | `name`, `reason` u32 | 24, 24+N | |
//! | list ack | `err` i32, `total` u32, `count` u32 | 24, 28, 32 | entries from 40 |
//! | VM entry | `name` `char[N]`, `state` i32, `pid` i32, `next_wake` i64 | +0, +N, +N+4, +N+8 | N+16 bytes |
//! | timer entry | `name` `char[N]`, `when` i64 | +0, +N | N+8 bytes |
//! | status ack | `err`, `wakeup_reason`, `vms`, `lcs_reachable`, `phase` (u32s) | 24, 28, 32, 36, 40 | |
//!
//! A request/ack exchange (one connection per request, as every C peer does):
//!
//! ```text
//! client                                   server (NAME.PID.socket)
//!   | connect                                  |
//!   | ---- request: magic, id, ts, union ----> |  decode; unknown id -> ack err -ENOSYS
//!   | <--- ack: magic, same id, same ts, ----- |
//!   |           err / reason / state           |
//!   | close                                    |
//! ```
//!
//! Decoding never panics: wrong length, a request without magic, an unknown id, a name
//! that the receiver acts on without its NUL, or a field out of range are typed
//! [`CodecError`]s. Encoding a string that does not fit is an error, never a truncation;
//! every byte a message does not set is written as zero.

use std::ops::Range;

use thiserror::Error;

use crate::msg::{
    Ack, AckKind, AckPayload, Body, MNGR_MSG_MAGIC, MsgId, Request, Status, StopTarget, TimerEntry,
    TimerPage, UNION_LEN, VmEntry, VmPage,
};
use crate::profile::{PAGE_HEADER_LEN, Profile, TIMER_ENTRY_TAIL, VM_ENTRY_TAIL};

mod union;
use union::{UnionReader, UnionWriter};

/// `sizeof(struct mngr_msg)` in every profile since ACRN v1.1.
pub const MSG_LEN: usize = 280;

/// One message as it crosses the socket.
pub type Wire = [u8; MSG_LEN];

const MAGIC: Range<usize> = 0..8;
const MSGID: Range<usize> = 8..12; // 12..16 is C padding
const TIMESTAMP: Range<usize> = 16..24;
const UNION: usize = 24;

// Union offsets, relative to the start of the union.
const U_ERR: usize = 0; // err / reason / state / force / start
const U_TIMEOUT: usize = 4; // acrnd_stop.timeout, list `total`
const U_TARGET: usize = 8; // extension: ACRND_STOP target, list `count`
const U_STATUS_LCS: usize = 12;
const U_STATUS_PHASE: usize = 16;
const U_NAME: usize = 0;

/// Why bytes could not be decoded or a message could not be encoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    /// Not exactly [`MSG_LEN`] bytes.
    #[error("Message is {0} bytes, expected {MSG_LEN}")]
    Length(usize),
    /// A request without `MNGR_MSG_MAGIC`.
    #[error("Bad magic {0:#018x}")]
    BadMagic(u64),
    /// The id is not in the profile's table.
    #[error("Unknown message id {id} in ABI profile {profile}")]
    UnknownId {
        /// The wire number.
        id: u32,
        /// The profile's name.
        profile: &'static str,
    },
    /// The message exists, but not in this profile (DM_PAUSE outside profile D).
    #[error("{id} has no wire number in ABI profile {profile}")]
    NotInProfile {
        /// The id.
        id: MsgId,
        /// The profile's name.
        profile: &'static str,
    },
    /// A string field has no NUL within its bytes.
    #[error("Field {0} is not NUL-terminated")]
    Unterminated(&'static str),
    /// A string field is not UTF-8.
    #[error("Field {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A string to encode does not fit its field (the NUL included).
    #[error("Field {field} holds at most {max} bytes, got {len}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The string's length.
        len: usize,
        /// The most that fits.
        max: usize,
    },
    /// A string to encode contains a NUL byte.
    #[error("Field {0} contains a NUL byte")]
    InteriorNul(&'static str),
    /// A numeric field holds a value its type does not allow.
    #[error("Field {field} has value {value} out of range")]
    Range {
        /// The field.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// A list page has more entries than fit in one ack.
    #[error("Page holds at most {max} entries, got {len}")]
    PageFull {
        /// Entries given.
        len: usize,
        /// Capacity of the profile.
        max: usize,
    },
}

/// The fixed header of any 280-byte message, read without interpreting the union.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Raw `magic`.
    pub magic: u64,
    /// Raw `msgid`.
    pub msgid: u32,
    /// `timestamp`.
    pub timestamp: u64,
}

impl Header {
    /// Whether the magic is `MNGR_MSG_MAGIC`.
    pub fn has_magic(&self) -> bool {
        self.magic == MNGR_MSG_MAGIC
    }
}

fn as_wire(bytes: &[u8]) -> Result<&Wire, CodecError> {
    bytes
        .try_into()
        .map_err(|_| CodecError::Length(bytes.len()))
}

fn u64_at(b: &Wire, r: Range<usize>) -> u64 {
    u64::from_le_bytes(b[r].try_into().expect("constant 8-byte range"))
}

fn u32_at(b: &Wire, r: Range<usize>) -> u32 {
    u32::from_le_bytes(b[r].try_into().expect("constant 4-byte range"))
}

/// Reads the header of exactly [`MSG_LEN`] bytes; checks nothing but the length.
pub fn peek_header(bytes: &[u8]) -> Result<Header, CodecError> {
    let b = as_wire(bytes)?;
    Ok(Header {
        magic: u64_at(b, MAGIC),
        msgid: u32_at(b, MSGID),
        timestamp: u64_at(b, TIMESTAMP),
    })
}

/// Cuts a byte stream into whole messages, however the bytes arrive: a message split over
/// many reads, several in one read, or both. Holds at most one partial message.
#[derive(Debug, Clone)]
pub struct FrameReader {
    buf: Wire,
    len: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new()
    }
}

impl FrameReader {
    /// A reader with nothing buffered.
    pub fn new() -> Self {
        FrameReader {
            buf: [0u8; MSG_LEN],
            len: 0,
        }
    }

    /// Takes bytes from the front of `bytes` until a message is complete. Returns that
    /// message, if one completed, and the bytes not taken (the start of the next one).
    pub fn push<'a>(&mut self, bytes: &'a [u8]) -> (Option<Wire>, &'a [u8]) {
        let n = (MSG_LEN - self.len).min(bytes.len());
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if self.len < MSG_LEN {
            return (None, &bytes[n..]);
        }
        self.len = 0;
        (Some(self.buf), &bytes[n..])
    }

    /// Bytes of an incomplete message held.
    pub fn pending(&self) -> usize {
        self.len
    }
}

/// The suite's reply to a request it cannot serve: id and timestamp echoed, magic set,
/// `err` as given, every other byte zero. Works for ids no profile knows.
pub fn error_ack(header: &Header, err: i32) -> Wire {
    let mut w = [0u8; MSG_LEN];
    w[MAGIC].copy_from_slice(&MNGR_MSG_MAGIC.to_le_bytes());
    w[MSGID].copy_from_slice(&header.msgid.to_le_bytes());
    w[TIMESTAMP].copy_from_slice(&header.timestamp.to_le_bytes());
    w[UNION + U_ERR..UNION + U_ERR + 4].copy_from_slice(&err.to_le_bytes());
    w
}

fn header_bytes(magic: u64, wire_id: u32, timestamp: u64, union: &[u8; UNION_LEN]) -> Wire {
    let mut w = [0u8; MSG_LEN];
    w[MAGIC].copy_from_slice(&magic.to_le_bytes());
    w[MSGID].copy_from_slice(&wire_id.to_le_bytes());
    w[TIMESTAMP].copy_from_slice(&timestamp.to_le_bytes());
    w[UNION..].copy_from_slice(union);
    w
}

fn mode_from_slot(v: i64) -> Result<i32, CodecError> {
    i32::try_from(v).map_err(|_| CodecError::Range {
        field: "dm_notify.mode",
        value: v,
    })
}

impl Profile {
    fn t_off(&self) -> usize {
        U_NAME + self.name_len()
    }

    fn known_id(&self, wire: u32) -> Result<MsgId, CodecError> {
        self.msg_id(wire).ok_or(CodecError::UnknownId {
            id: wire,
            profile: self.label(),
        })
    }

    fn wire_id_of(&self, id: MsgId) -> Result<u32, CodecError> {
        self.wire_id(id).ok_or(CodecError::NotInProfile {
            id,
            profile: self.label(),
        })
    }

    /// Encodes a request. Fails on a string that does not fit or an id the profile lacks.
    pub fn encode_request(&self, req: &Request) -> Result<Wire, CodecError> {
        let n = self.name_len();
        let t = self.t_off();
        let mut u = UnionWriter::new(&req.residue);
        match &req.body {
            Body::MsgStr { text } => u.cstr(0, UNION_LEN, text.as_bytes(), "devargs")?,
            Body::DmBlkrescan { devargs } => u.cstr(0, UNION_LEN, devargs.as_bytes(), "devargs")?,
            Body::DmStop { force } => u.i32(U_ERR, *force),
            Body::DmResume { reason } | Body::AcrndReason { reason } => u.u32(U_ERR, *reason),
            Body::DmSuspend
            | Body::DmPause
            | Body::DmContinue
            | Body::DmQuery
            | Body::WakeupReason
            | Body::CtlStatus => {}
            Body::AcrndTimer { name, t: secs } => {
                u.cstr(U_NAME, n, name.as_bytes(), "acrnd_timer.name")?;
                u.i64(t, *secs);
            }
            Body::DmNotify { name, mode } => {
                u.cstr(U_NAME, n, name.as_bytes(), "dm_notify.name")?;
                u.i64(t, i64::from(*mode));
            }
            Body::AcrndStop {
                force,
                timeout,
                target,
            } => {
                u.i32(U_ERR, *force);
                u.u32(U_TIMEOUT, *timeout);
                u.u32(U_TARGET, target.to_wire());
            }
            Body::AcrndResume { force, timeout } | Body::AcrndSuspend { force, timeout } => {
                u.i32(U_ERR, *force);
                u.u32(U_TIMEOUT, *timeout);
            }
            Body::RtcTimer { vmname, t: when } => {
                u.raw_name(U_NAME, n, vmname, "rtc_timer.vmname")?;
                u.i64(t, *when);
            }
            Body::Suspend { err } | Body::Shutdown { err } | Body::Reboot { err } => {
                u.i32(U_ERR, *err);
            }
            Body::CtlList { start } | Body::CtlTimers { start } => u.u32(U_ERR, *start),
            Body::CtlStart { name } | Body::CtlSuspend { name } => {
                u.cstr(U_NAME, n, name.as_bytes(), "ctl.name")?;
            }
            Body::CtlStop {
                name,
                force,
                timeout,
            } => {
                u.cstr(U_NAME, n, name.as_bytes(), "ctl.name")?;
                u.i32(t, *force);
                u.u32(t + 4, *timeout);
            }
            Body::CtlResume { name, reason } => {
                u.cstr(U_NAME, n, name.as_bytes(), "ctl.name")?;
                u.u32(t, *reason);
            }
        }
        let wire_id = self.wire_id_of(req.id())?;
        Ok(header_bytes(
            MNGR_MSG_MAGIC,
            wire_id,
            req.timestamp,
            &u.bytes,
        ))
    }

    /// Decodes a request: exactly [`MSG_LEN`] bytes, magic set, an id of this profile.
    pub fn decode_request(&self, bytes: &[u8]) -> Result<Request, CodecError> {
        let header = peek_header(bytes)?;
        if !header.has_magic() {
            return Err(CodecError::BadMagic(header.magic));
        }
        let id = self.known_id(header.msgid)?;
        let w = as_wire(bytes)?;
        let mut r = UnionReader::new(w);
        let body = self.decode_body(id, &mut r)?;
        Ok(Request {
            timestamp: header.timestamp,
            body,
            residue: r.residue(),
        })
    }

    /// The body of a request of `id`, read from its union.
    fn decode_body(&self, id: MsgId, r: &mut UnionReader) -> Result<Body, CodecError> {
        let n = self.name_len();
        let t = self.t_off();
        Ok(match id {
            MsgId::MsgStr => Body::MsgStr {
                text: r.cstr(0, UNION_LEN, "devargs")?,
            },
            MsgId::DmBlkrescan => Body::DmBlkrescan {
                devargs: r.cstr(0, UNION_LEN, "devargs")?,
            },
            MsgId::DmStop => Body::DmStop {
                force: r.i32(U_ERR),
            },
            MsgId::DmSuspend => Body::DmSuspend,
            MsgId::DmResume => Body::DmResume {
                reason: r.u32(U_ERR),
            },
            MsgId::DmPause => Body::DmPause,
            MsgId::DmContinue => Body::DmContinue,
            MsgId::DmQuery => Body::DmQuery,
            MsgId::AcrndTimer => Body::AcrndTimer {
                name: r.cstr(U_NAME, n, "acrnd_timer.name")?,
                t: r.i64(t),
            },
            MsgId::AcrndReason => Body::AcrndReason {
                reason: r.u32(U_ERR),
            },
            MsgId::DmNotify => Body::DmNotify {
                name: r.cstr(U_NAME, n, "dm_notify.name")?,
                mode: mode_from_slot(r.i64(t))?,
            },
            MsgId::AcrndStop => {
                let force = r.i32(U_ERR);
                let timeout = r.u32(U_TIMEOUT);
                let raw = r.u32(U_TARGET);
                let target = StopTarget::from_wire(raw).ok_or(CodecError::Range {
                    field: "acrnd_stop.target",
                    value: i64::from(raw),
                })?;
                Body::AcrndStop {
                    force,
                    timeout,
                    target,
                }
            }
            MsgId::AcrndResume => Body::AcrndResume {
                force: r.i32(U_ERR),
                timeout: r.u32(U_TIMEOUT),
            },
            MsgId::AcrndSuspend => Body::AcrndSuspend {
                force: r.i32(U_ERR),
                timeout: r.u32(U_TIMEOUT),
            },
            MsgId::WakeupReason => Body::WakeupReason,
            MsgId::RtcTimer => Body::RtcTimer {
                vmname: r.raw_cstr(U_NAME, n).0,
                t: r.i64(t),
            },
            MsgId::Suspend => Body::Suspend { err: r.i32(U_ERR) },
            MsgId::Shutdown => Body::Shutdown { err: r.i32(U_ERR) },
            MsgId::Reboot => Body::Reboot { err: r.i32(U_ERR) },
            MsgId::CtlList
            | MsgId::CtlTimers
            | MsgId::CtlStart
            | MsgId::CtlSuspend
            | MsgId::CtlStop
            | MsgId::CtlResume
            | MsgId::CtlStatus => return self.decode_ctl_body(id, r),
        })
    }

    /// The body of one of the suite's acrnctl-to-acrnd requests.
    fn decode_ctl_body(&self, id: MsgId, r: &mut UnionReader) -> Result<Body, CodecError> {
        let n = self.name_len();
        let t = self.t_off();
        Ok(match id {
            MsgId::CtlList => Body::CtlList {
                start: r.u32(U_ERR),
            },
            MsgId::CtlTimers => Body::CtlTimers {
                start: r.u32(U_ERR),
            },
            MsgId::CtlStart => Body::CtlStart {
                name: r.cstr(U_NAME, n, "ctl.name")?,
            },
            MsgId::CtlSuspend => Body::CtlSuspend {
                name: r.cstr(U_NAME, n, "ctl.name")?,
            },
            MsgId::CtlStop => Body::CtlStop {
                name: r.cstr(U_NAME, n, "ctl.name")?,
                force: r.i32(t),
                timeout: r.u32(t + 4),
            },
            MsgId::CtlResume => Body::CtlResume {
                name: r.cstr(U_NAME, n, "ctl.name")?,
                reason: r.u32(t),
            },
            _ => Body::CtlStatus,
        })
    }

    /// Encodes an ack. The payload must be of the kind the id's ack carries.
    pub fn encode_ack(&self, ack: &Ack) -> Result<Wire, CodecError> {
        let n = self.name_len();
        let mut u = UnionWriter::new(&ack.residue);
        match &ack.payload {
            AckPayload::Err(e) | AckPayload::State(e) => u.i32(U_ERR, *e),
            AckPayload::Reason(r) => u.u32(U_ERR, *r),
            AckPayload::VmPage(page) => {
                let cap = self.vm_page_capacity();
                self.page_header(&mut u, page.err, page.total, page.entries.len(), cap)?;
                for (i, e) in page.entries.iter().enumerate() {
                    let off = PAGE_HEADER_LEN + i * (n + VM_ENTRY_TAIL);
                    u.cstr(off, n, e.name.as_bytes(), "vm_entry.name")?;
                    u.i32(off + n, e.state);
                    u.i32(off + n + 4, e.pid);
                    u.i64(off + n + 8, e.next_wake);
                }
            }
            AckPayload::TimerPage(page) => {
                let cap = self.timer_page_capacity();
                self.page_header(&mut u, page.err, page.total, page.entries.len(), cap)?;
                for (i, e) in page.entries.iter().enumerate() {
                    let off = PAGE_HEADER_LEN + i * (n + TIMER_ENTRY_TAIL);
                    u.cstr(off, n, e.name.as_bytes(), "timer_entry.name")?;
                    u.i64(off + n, e.when);
                }
            }
            AckPayload::Status(s) => {
                u.i32(U_ERR, s.err);
                u.u32(U_TIMEOUT, s.wakeup_reason);
                u.u32(U_TARGET, s.vms);
                u.u32(U_STATUS_LCS, s.lcs_reachable);
                u.u32(U_STATUS_PHASE, s.phase);
            }
        }
        let wire_id = self.wire_id_of(ack.id)?;
        Ok(header_bytes(ack.magic, wire_id, ack.timestamp, &u.bytes))
    }

    fn page_header(
        &self,
        u: &mut UnionWriter,
        err: i32,
        total: u32,
        len: usize,
        cap: usize,
    ) -> Result<(), CodecError> {
        if len > cap {
            return Err(CodecError::PageFull { len, max: cap });
        }
        u.i32(U_ERR, err);
        u.u32(U_TIMEOUT, total);
        u.u32(U_TARGET, u32::try_from(len).expect("len <= capacity < 256"));
        Ok(())
    }

    /// Decodes the ack of a request with id `request`. The magic is not checked (the C
    /// acrnd does not set it); the id must be `request`'s wire number in this profile.
    pub fn decode_ack(&self, bytes: &[u8], request: MsgId) -> Result<Ack, CodecError> {
        let header = peek_header(bytes)?;
        let id = self.known_id(header.msgid)?;
        let w = as_wire(bytes)?;
        let n = self.name_len();
        let mut r = UnionReader::new(w);
        // The payload is chosen by the request the client sent: an ack whose id differs is
        // still decoded by its own id so the caller can report the mismatch.
        let kind = if id == request {
            request.ack_kind()
        } else {
            id.ack_kind()
        };
        let payload = match kind {
            AckKind::Err => AckPayload::Err(r.i32(U_ERR)),
            AckKind::Reason => AckPayload::Reason(r.u32(U_ERR)),
            AckKind::State => AckPayload::State(r.i32(U_ERR)),
            AckKind::VmPage => {
                let (err, total, count) = self.read_page_header(&mut r, self.vm_page_capacity())?;
                let mut entries = Vec::with_capacity(count);
                for i in 0..count {
                    let off = PAGE_HEADER_LEN + i * (n + VM_ENTRY_TAIL);
                    entries.push(VmEntry {
                        name: r.cstr(off, n, "vm_entry.name")?,
                        state: r.i32(off + n),
                        pid: r.i32(off + n + 4),
                        next_wake: r.i64(off + n + 8),
                    });
                }
                AckPayload::VmPage(VmPage {
                    err,
                    total,
                    entries,
                })
            }
            AckKind::TimerPage => {
                let (err, total, count) =
                    self.read_page_header(&mut r, self.timer_page_capacity())?;
                let mut entries = Vec::with_capacity(count);
                for i in 0..count {
                    let off = PAGE_HEADER_LEN + i * (n + TIMER_ENTRY_TAIL);
                    entries.push(TimerEntry {
                        name: r.cstr(off, n, "timer_entry.name")?,
                        when: r.i64(off + n),
                    });
                }
                AckPayload::TimerPage(TimerPage {
                    err,
                    total,
                    entries,
                })
            }
            AckKind::Status => AckPayload::Status(Status {
                err: r.i32(U_ERR),
                wakeup_reason: r.u32(U_TIMEOUT),
                vms: r.u32(U_TARGET),
                lcs_reachable: r.u32(U_STATUS_LCS),
                phase: r.u32(U_STATUS_PHASE),
            }),
        };
        Ok(Ack {
            id,
            timestamp: header.timestamp,
            magic: header.magic,
            payload,
            residue: r.residue(),
        })
    }

    fn read_page_header(
        &self,
        r: &mut UnionReader,
        cap: usize,
    ) -> Result<(i32, u32, usize), CodecError> {
        let err = r.i32(U_ERR);
        let total = r.u32(U_TIMEOUT);
        let count = r.u32(U_TARGET);
        let count_usize = usize::try_from(count).unwrap_or(usize::MAX);
        if count_usize > cap {
            return Err(CodecError::Range {
                field: "page.count",
                value: i64::from(count),
            });
        }
        Ok((err, total, count_usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(body: Body) -> Request {
        Request::new(1_712_345_678, body)
    }

    #[test]
    fn rejects_wrong_length_bad_magic_unknown_id() {
        let p = Profile::F;
        assert_eq!(p.decode_request(&[0u8; 279]), Err(CodecError::Length(279)));
        assert_eq!(p.decode_request(&[0u8; 281]), Err(CodecError::Length(281)));
        let mut w = p.encode_request(&req(Body::DmQuery)).expect("encodes");
        w[0] ^= 1;
        assert!(matches!(p.decode_request(&w), Err(CodecError::BadMagic(_))));
        w[0] ^= 1;
        w[8] = 15; // ACRND_MAX sentinel
        assert_eq!(
            p.decode_request(&w),
            Err(CodecError::UnknownId {
                id: 15,
                profile: "F"
            })
        );
    }

    #[test]
    fn names_the_receiver_acts_on_must_be_terminated() {
        let p = Profile::F;
        let mut w = p
            .encode_request(&req(Body::AcrndTimer {
                name: "vm1".into(),
                t: 5,
            }))
            .expect("encodes");
        w[24..40].fill(b'a');
        assert_eq!(
            p.decode_request(&w),
            Err(CodecError::Unterminated("acrnd_timer.name"))
        );
        // The informational RTC_TIMER name is read as it is.
        w[8] = 17;
        let r = p.decode_request(&w).expect("lenient");
        assert_eq!(
            r.body,
            Body::RtcTimer {
                vmname: vec![b'a'; 16],
                t: 5
            }
        );
        assert_eq!(p.encode_request(&r).expect("re-encodes"), w);
    }

    #[test]
    fn encoding_never_truncates() {
        let p = Profile::F;
        let long = req(Body::AcrndTimer {
            name: "sixteen-bytes-xx".into(),
            t: 1,
        });
        assert_eq!(
            p.encode_request(&long),
            Err(CodecError::TooLong {
                field: "acrnd_timer.name",
                len: 16,
                max: 15
            })
        );
        let fits = req(Body::AcrndTimer {
            name: "fifteen-bytes-x".into(),
            t: 1,
        });
        assert!(p.encode_request(&fits).is_ok());
        assert!(Profile::E.encode_request(&long).is_ok());
        let nul = req(Body::DmBlkrescan {
            devargs: "1,\0x".into(),
        });
        assert_eq!(
            p.encode_request(&nul),
            Err(CodecError::InteriorNul("devargs"))
        );
    }

    #[test]
    fn pause_exists_only_in_profile_d() {
        let r = req(Body::DmPause);
        assert_eq!(
            Profile::F.encode_request(&r),
            Err(CodecError::NotInProfile {
                id: MsgId::DmPause,
                profile: "F"
            })
        );
        let w = Profile::D.encode_request(&r).expect("D has DM_PAUSE");
        assert_eq!(w[8], 6);
    }

    #[test]
    fn stop_target_extension_sits_after_timeout() {
        let p = Profile::F;
        let w = p
            .encode_request(&req(Body::AcrndStop {
                force: 0,
                timeout: 20,
                target: StopTarget::S3,
            }))
            .expect("encodes");
        assert_eq!(&w[24..36], &[0, 0, 0, 0, 20, 0, 0, 0, 2, 0, 0, 0]);
        let mut bad = w;
        bad[32] = 9;
        assert_eq!(
            p.decode_request(&bad),
            Err(CodecError::Range {
                field: "acrnd_stop.target",
                value: 9
            })
        );
    }

    #[test]
    fn dm_notify_puts_mode_in_the_t_slot() {
        for p in [Profile::F, Profile::E] {
            let w = p
                .encode_request(&req(Body::DmNotify {
                    name: "vm2".into(),
                    mode: 4,
                }))
                .expect("encodes");
            let t = 24 + p.name_len();
            assert_eq!(&w[24..28], b"vm2\0");
            assert_eq!(&w[t..t + 8], &4i64.to_le_bytes());
        }
        let mut w = Profile::F
            .encode_request(&req(Body::DmNotify {
                name: "vm2".into(),
                mode: 4,
            }))
            .expect("encodes");
        w[44] = 1; // 2^32 + 4: not an i32
        assert!(matches!(
            Profile::F.decode_request(&w),
            Err(CodecError::Range { .. })
        ));
    }

    #[test]
    fn pages_round_trip_and_are_bounded() {
        let p = Profile::F;
        let entries: Vec<VmEntry> = (0..7)
            .map(|i| VmEntry {
                name: format!("vm{i}"),
                state: 2,
                pid: 100 + i,
                next_wake: 0,
            })
            .collect();
        let ack = Ack::new(
            MsgId::CtlList,
            9,
            AckPayload::VmPage(VmPage {
                err: 0,
                total: 9,
                entries: entries.clone(),
            }),
        );
        let w = p.encode_ack(&ack).expect("7 fit");
        assert_eq!(p.decode_ack(&w, MsgId::CtlList), Ok(ack));
        let mut too_many = entries;
        too_many.push(too_many[0].clone());
        let over = Ack::new(
            MsgId::CtlList,
            9,
            AckPayload::VmPage(VmPage {
                err: 0,
                total: 9,
                entries: too_many,
            }),
        );
        assert_eq!(
            p.encode_ack(&over),
            Err(CodecError::PageFull { len: 8, max: 7 })
        );
        let mut forged = w;
        forged[32] = 200;
        assert!(p.decode_ack(&forged, MsgId::CtlList).is_err());
    }

    #[test]
    fn error_ack_echoes_unknown_ids() {
        let h = Header {
            magic: MNGR_MSG_MAGIC,
            msgid: 999,
            timestamp: 77,
        };
        let w = error_ack(&h, crate::msg::err::UNKNOWN_ID);
        let back = peek_header(&w).expect("280 bytes");
        assert_eq!(back, h);
        assert_eq!(&w[24..28], &(-38i32).to_le_bytes());
        assert!(w[28..].iter().all(|&b| b == 0));
    }
}
