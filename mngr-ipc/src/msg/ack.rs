//! Acks: what answers a request, and the payloads its id decides.

use super::{AckKind, MNGR_MSG_MAGIC, MsgId, Residue};

/// An ack: echoes the request's id and timestamp and carries one payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The id of the request answered.
    pub id: MsgId,
    /// The request's timestamp, echoed.
    pub timestamp: u64,
    /// The raw magic field. Our acks set [`MNGR_MSG_MAGIC`]; the C acrnd leaves it unset.
    pub magic: u64,
    /// The answer.
    pub payload: AckPayload,
    pub(crate) residue: Residue,
}

impl Ack {
    /// An ack with magic set and zeroed unused bytes.
    pub fn new(id: MsgId, timestamp: u64, payload: AckPayload) -> Ack {
        Ack {
            id,
            timestamp,
            magic: MNGR_MSG_MAGIC,
            payload,
            residue: Residue::ZERO,
        }
    }

    /// Union bytes the payload does not interpret (zero unless decoded from a peer).
    pub fn residue(&self) -> &Residue {
        &self.residue
    }

    /// The `err` of the ack: the err payload, or the `err` header of a page or status.
    /// `None` for reason and state acks, which carry no error field.
    pub fn err(&self) -> Option<i32> {
        self.payload.err()
    }
}

impl AckPayload {
    /// The `err` the payload carries: the err payload, or the `err` header of a page or
    /// status. `None` for reason and state payloads, which carry no error field.
    pub fn err(&self) -> Option<i32> {
        match self {
            AckPayload::Err(e) => Some(*e),
            AckPayload::VmPage(p) => Some(p.err),
            AckPayload::TimerPage(p) => Some(p.err),
            AckPayload::Status(s) => Some(s.err),
            AckPayload::Reason(_) | AckPayload::State(_) => None,
        }
    }
}

/// The payload of an ack; which one is decided by the request's id ([`MsgId::ack_kind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckPayload {
    /// `data.err`.
    Err(i32),
    /// `data.reason` (WAKEUP_REASON).
    Reason(u32),
    /// `data.state` (DM_QUERY).
    State(i32),
    /// A page of the VM list (CTL_LIST).
    VmPage(VmPage),
    /// A page of the timer list (CTL_TIMERS).
    TimerPage(TimerPage),
    /// acrnd's status (CTL_STATUS).
    Status(Status),
}

impl AckPayload {
    /// The kind of this payload.
    pub fn kind(&self) -> AckKind {
        match self {
            AckPayload::Err(_) => AckKind::Err,
            AckPayload::Reason(_) => AckKind::Reason,
            AckPayload::State(_) => AckKind::State,
            AckPayload::VmPage(_) => AckKind::VmPage,
            AckPayload::TimerPage(_) => AckKind::TimerPage,
            AckPayload::Status(_) => AckKind::Status,
        }
    }
}

/// One VM in a CTL_LIST page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEntry {
    /// VM name.
    pub name: String,
    /// State ([`vm_state`](super::vm_state)).
    pub state: i32,
    /// Device-model pid, 0 if none.
    pub pid: i32,
    /// Next RTC wake-up, epoch seconds; 0 if none.
    pub next_wake: i64,
}

/// A page of the VM list: `total` VMs exist, `entries` starts at the requested index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmPage {
    /// 0, or an [`err`](super::err) value.
    pub err: i32,
    /// How many VMs exist in all.
    pub total: u32,
    /// The entries of this page (at most [`crate::Profile::vm_page_capacity`]).
    pub entries: Vec<VmEntry>,
}

/// One pending RTC wake-up in a CTL_TIMERS page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerEntry {
    /// VM name.
    pub name: String,
    /// Wake-up time, epoch seconds.
    pub when: i64,
}

/// A page of the timer list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimerPage {
    /// 0, or an [`err`](super::err) value.
    pub err: i32,
    /// How many timers exist in all.
    pub total: u32,
    /// The entries of this page (at most [`crate::Profile::timer_page_capacity`]).
    pub entries: Vec<TimerEntry>,
}

/// acrnd's status (CTL_STATUS ack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// 0, or an [`err`](super::err) value.
    pub err: i32,
    /// The wakeup reason acrnd last learned.
    pub wakeup_reason: u32,
    /// Number of known VMs.
    pub vms: u32,
    /// 1 if the lifecycle service answered acrnd's last request, else 0.
    pub lcs_reachable: u32,
    /// acrnd's power phase (0 idle, 1 stopping all, 2 suspending all, 3 resuming).
    pub phase: u32,
}
