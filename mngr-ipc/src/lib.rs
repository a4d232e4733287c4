//! acrn-manager IPC for the ACRN lifecycle suite, wire-compatible with the C `libacrn-mngr`.
//!
//! * [`msg`]: typed requests and acks; [`codec`]: the only code that knows the 280-byte
//!   `struct mngr_msg` layout, parameterised by an ABI [`Profile`] ([`profile`]).
//! * [`naming`]: the socket directory, `NAME.PID.socket` files, exact-name lookup and
//!   stale-socket cleanup.
//! * [`server`] and [`client`]: request/ack over Unix stream sockets.
//! * [`auth`]: who may make privileged requests (a policy over `SO_PEERCRED`).
//! * [`facade`]: the C-style `open` / `close` / `add_handler` / `send_msg` API.
//! * [`runtime`]: the event loop every daemon and simulator of the suite runs on.
//! * [`cbc`]: the CBC lifecycle frames (service and link layer) between SoC and IOC.
//! * [`host`]: whether the host is rebooting or powering off (asked at SIGTERM).
//! * [`limits`]: the resource limits a daemon raises at start-up (open files).
//! * [`line`](mod@line): the IOC lifecycle line (CBC char device or UART) and its framing.
//! * [`event_log`]: the JSON-lines event log every binary offers with `--event-log`.
//! * [`daemon`]: what every binary shares: logging setup, common options, `RunError`.
//! * [`vocabulary`]: the suite's words, once: server names, the VM-name rule, status phases.
//!
//! A daemon serves requests from its own loop:
//!
//! ```
//! use mngr_ipc::msg::{AckPayload, Body, Request, body};
//! use mngr_ipc::server::{Handlers, ServerConfig, spawn_server};
//! use mngr_ipc::{client::Client, Profile};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! // Each handler gets its typed body; `open` admits anyone, `privileged` only the policy's
//! // peers (the server refuses the others with -EACCES and a log line).
//! let handlers = Handlers::new().open(|_: body::WakeupReason, call, reason: &mut u32| {
//!     call.ack(AckPayload::Reason(*reason))
//! });
//! let server = spawn_server(ServerConfig::new("sos-lcs", dir.path()), handlers, 0x20u32)?;
//! let ack = Client::new(dir.path(), Profile::F)
//!     .send("sos-lcs", &Request::now(Body::WakeupReason), Duration::from_secs(2))?;
//! assert_eq!(ack.payload, AckPayload::Reason(0x20));
//! server.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod auth;
pub mod cbc;
pub mod client;
pub mod codec;
pub mod daemon;
pub mod event_log;
pub mod facade;
pub mod host;
pub mod limits;
pub mod line;
pub mod msg;
pub mod naming;
pub mod profile;
pub mod runtime;
pub mod server;
pub mod sys;
pub mod vocabulary;

pub use codec::{CodecError, MSG_LEN, Wire};
pub use msg::{Ack, AckPayload, Body, MsgId, Request, StopTarget};
pub use profile::Profile;

/// An error and each of its sources, once, joined with `": "` (what binaries print).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
