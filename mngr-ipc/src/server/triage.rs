//! What a server does with one whole message, from its bytes alone.

use crate::codec::{self, CodecError, Header, Wire};
use crate::msg::{MsgId, Request, err};
use crate::profile::Profile;

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
