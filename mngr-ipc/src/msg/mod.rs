//! Typed acrn-manager messages: what a `struct mngr_msg` means, with no byte offsets.
//!
//! Only [`crate::codec`] turns these values into the 280 bytes on the wire (and back). The
//! rest of the suite handles [`Request`] and [`Ack`] values.
//!
//! Two details keep a decoded message faithful to its bytes, so that decode-then-encode
//! reproduces what a C peer sent:
//!
//! * an [`Ack`] keeps its raw `magic` (the C acrnd never sets it in its acks);
//! * every message keeps the bytes of the 256-byte data union that its type does not
//!   interpret (the C `cbc_lifecycle` echoes a whole request in its ack, C senders leave
//!   stack contents there). Messages built with the constructors here carry zeroes there.
//!
//! Ids are logical ([`MsgId`]); the number each one has on the wire depends on the ABI
//! profile ([`crate::Profile`]).

use std::fmt;

mod ack;
pub use ack::{Ack, AckPayload, Status, TimerEntry, TimerPage, VmEntry, VmPage};

/// `MNGR_MSG_MAGIC`: the first 8 bytes of every request, `"vmm msg\0"` on the wire.
pub const MNGR_MSG_MAGIC: u64 = 0x0067_736D_206D_6D76;

/// Size of the data union of `struct mngr_msg` in every 280-byte profile.
pub const UNION_LEN: usize = 256;

/// Error values carried in `data.err` of acks.
///
/// The C programs use `0` and `-1` only (DM acks sum per-component results). The suite keeps
/// both and adds negative errno values for outcomes the originals could not express, so a C
/// peer still reads "non-zero = failed" while our tools tell the causes apart.
pub mod err {
    /// Success.
    pub const OK: i32 = 0;
    /// The operation was tried and failed (the C value).
    pub const FAILED: i32 = -1;
    /// No such VM or object (`-ENOENT`).
    pub const NOT_FOUND: i32 = -2;
    /// The peer is not allowed to make this request (`-EACCES`).
    pub const NOT_PERMITTED: i32 = -13;
    /// Another operation on the same object is in progress (`-EBUSY`).
    pub const BUSY: i32 = -16;
    /// The request was malformed or a field is out of range (`-EINVAL`).
    pub const INVALID: i32 = -22;
    /// The server has no handler for this message id (`-ENOSYS`).
    pub const UNKNOWN_ID: i32 = -38;
    /// The operation exists but nothing on this server implements it (`-EOPNOTSUPP`).
    pub const UNSUPPORTED: i32 = -95;
    /// The operation did not complete within its deadline (`-ETIMEDOUT`).
    pub const TIMED_OUT: i32 = -110;
}

/// Device-model suspend modes (`enum vm_suspend_how` of acrn-dm), as carried by DM_QUERY
/// acks and the DM_NOTIFY extension.
pub mod suspend_mode {
    /// Running.
    pub const NONE: i32 = 0;
    /// Guest requested a system reset.
    pub const SYSTEM_RESET: i32 = 1;
    /// Guest requested a full reset.
    pub const FULL_RESET: i32 = 2;
    /// Powered off.
    pub const POWEROFF: i32 = 3;
    /// Suspended (S3).
    pub const SUSPEND: i32 = 4;
    /// Halted.
    pub const HALT: i32 = 5;
    /// Triple fault.
    pub const TRIPLEFAULT: i32 = 6;
}

/// VM states reported by acrnd (the upstream acrnctl numbers, plus the suite's own).
pub mod vm_state {
    /// A launch script exists, no device model runs (`VM_CREATED`, shown as "stopped").
    pub const STOPPED: i32 = 1;
    /// The device model runs and the guest is up (`VM_STARTED`).
    pub const STARTED: i32 = 2;
    /// Paused (`VM_PAUSED`, never assigned upstream).
    pub const PAUSED: i32 = 3;
    /// Suspended (`VM_SUSPENDED`).
    pub const SUSPENDED: i32 = 4;
    /// Untracked (`VM_UNTRACKED`).
    pub const UNTRACKED: i32 = 5;
    /// Suite extension: launched, not yet confirmed running by its device model.
    pub const STARTING: i32 = 6;
    /// Suite extension: a stop is in progress.
    pub const STOPPING: i32 = 7;
    /// Suite extension: a suspend is in progress.
    pub const SUSPENDING: i32 = 8;
}

/// Defines [`MsgId`], its [`MsgId::ALL`] and its names from one list, so that an id cannot
/// be left out of `ALL` (the hostile and property tests iterate it).
macro_rules! msg_ids {
    ($($(#[$doc:meta])* $id:ident => $name:literal,)+) => {
        /// Logical message ids. The wire number of each depends on the ABI profile.
        ///
        /// Not `#[repr(u32)]`: the C enum was renumbered between releases, so the numbers live in
        /// each profile's id table ([`crate::Profile`]), not here.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum MsgId {
            $($(#[$doc])* $id,)+
        }

        impl MsgId {
            /// Every logical id, in wire order of profile D (the most complete C table), then
            /// the extensions. Made from the same list as the enum: it cannot miss one.
            pub const ALL: [MsgId; MsgId::COUNT] = [$(MsgId::$id,)+];

            /// How many ids there are.
            pub const COUNT: usize = [$(stringify!($id),)+].len();

            /// The C name of the id (`DM_STOP`), or the suite's name for an extension.
            pub fn name(self) -> &'static str {
                match self {
                    $(MsgId::$id => $name,)+
                }
            }
        }
    };
}

msg_ids! {
    /// `MSG_STR`: a string in the union; no C program uses it.
    MsgStr => "MSG_STR",
    /// `DM_STOP`: stop a VM (acrnd / acrnctl to a device model).
    DmStop => "DM_STOP",
    /// `DM_SUSPEND`: suspend a VM.
    DmSuspend => "DM_SUSPEND",
    /// `DM_RESUME`: resume a VM with a wakeup reason.
    DmResume => "DM_RESUME",
    /// `DM_PAUSE` (profiles A to D only; never implemented by any device model).
    DmPause => "DM_PAUSE",
    /// `DM_CONTINUE` (profiles A to D only; never implemented by any device model).
    DmContinue => "DM_CONTINUE",
    /// `DM_QUERY`: ask a device model for its suspend mode.
    DmQuery => "DM_QUERY",
    /// `DM_BLKRESCAN`: rescan a virtio-blk backend (`slot,path`).
    DmBlkrescan => "DM_BLKRESCAN",
    /// `ACRND_TIMER`: a device model asks acrnd to wake its VM in `t` seconds.
    AcrndTimer => "ACRND_TIMER",
    /// `ACRND_REASON`: ask acrnd for the current wakeup reason (no C handler existed).
    AcrndReason => "ACRND_REASON",
    /// `DM_NOTIFY`: a device model tells acrnd its state changed (suite-defined payload).
    DmNotify => "DM_NOTIFY",
    /// `ACRND_STOP`: the lifecycle service asks acrnd to stop or suspend all VMs.
    AcrndStop => "ACRND_STOP",
    /// `ACRND_RESUME`: the lifecycle service tells acrnd the system is alive again.
    AcrndResume => "ACRND_RESUME",
    /// `ACRND_SUSPEND`: suspend all VMs (no C sender or handler existed).
    AcrndSuspend => "ACRND_SUSPEND",
    /// `WAKEUP_REASON`: ask the lifecycle service for the latched wakeup reason.
    WakeupReason => "WAKEUP_REASON",
    /// `RTC_TIMER`: program the IOC's RTC wake-up (absolute epoch seconds).
    RtcTimer => "RTC_TIMER",
    /// `SUSPEND`: acrnd reports that all VMs are suspended (or refuses with `err != 0`).
    Suspend => "SUSPEND",
    /// `SHUTDOWN`: acrnd reports that all VMs are stopped (or refuses with `err != 0`).
    Shutdown => "SHUTDOWN",
    /// `REBOOT`: reboot the system (or refuse with `err != 0`).
    Reboot => "REBOOT",
    /// Suite extension: list VMs with their states (paged).
    CtlList => "CTL_LIST",
    /// Suite extension: start a VM.
    CtlStart => "CTL_START",
    /// Suite extension: stop a VM.
    CtlStop => "CTL_STOP",
    /// Suite extension: suspend a VM.
    CtlSuspend => "CTL_SUSPEND",
    /// Suite extension: resume a VM.
    CtlResume => "CTL_RESUME",
    /// Suite extension: list the pending RTC wake-up timers (paged).
    CtlTimers => "CTL_TIMERS",
    /// Suite extension: acrnd's status.
    CtlStatus => "CTL_STATUS",
}

impl MsgId {
    /// Looks an id up by its C (or extension) name.
    pub fn from_name(name: &str) -> Option<MsgId> {
        MsgId::ALL.into_iter().find(|id| id.name() == name)
    }

    /// Which payload the ack of a request with this id carries.
    pub fn ack_kind(self) -> AckKind {
        match self {
            MsgId::WakeupReason => AckKind::Reason,
            MsgId::DmQuery => AckKind::State,
            MsgId::CtlList => AckKind::VmPage,
            MsgId::CtlTimers => AckKind::TimerPage,
            MsgId::CtlStatus => AckKind::Status,
            _ => AckKind::Err,
        }
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which union member an ack's payload is, decided by the request's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// `data.err`.
    Err,
    /// `data.reason` (WAKEUP_REASON).
    Reason,
    /// `data.state` (DM_QUERY).
    State,
    /// A page of the VM list (CTL_LIST).
    VmPage,
    /// A page of the timer list (CTL_TIMERS).
    TimerPage,
    /// acrnd's status (CTL_STATUS).
    Status,
}

/// The shutdown target of the ACRND_STOP extension (a u32 after `timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StopTarget {
    /// 0: not given, as every C sender sends. acrnd waits for the guests to act on their own.
    #[default]
    Unspecified,
    /// 1: the system powers off: stop every VM.
    S5,
    /// 2: the system suspends to RAM: suspend every VM.
    S3,
}

impl StopTarget {
    /// `none`, `S5` or `S3`.
    pub fn name(self) -> &'static str {
        match self {
            StopTarget::Unspecified => "none",
            StopTarget::S5 => "S5",
            StopTarget::S3 => "S3",
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> u32 {
        match self {
            StopTarget::Unspecified => 0,
            StopTarget::S5 => 1,
            StopTarget::S3 => 2,
        }
    }

    /// Parses the wire value.
    pub fn from_wire(v: u32) -> Option<StopTarget> {
        match v {
            0 => Some(StopTarget::Unspecified),
            1 => Some(StopTarget::S5),
            2 => Some(StopTarget::S3),
            _ => None,
        }
    }
}

/// Defines [`Body`] (one variant per id, with the fields its receiver reads), the typed body
/// of each id in [`body`] and the conversions between them, from one list.
macro_rules! bodies {
    ($(
        $(#[$doc:meta])*
        $id:ident $({ $($(#[$fdoc:meta])* $field:ident : $ty:ty,)* })?,
    )+) => {
        /// The meaning of a request: one variant per id, with the fields its receiver reads.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Body {
            $($(#[$doc])* $id $({ $($(#[$fdoc])* $field: $ty,)* })?,)+
        }

        impl Body {
            /// The id of this request.
            pub fn id(&self) -> MsgId {
                match self {
                    $(Body::$id { .. } => MsgId::$id,)+
                }
            }

            /// The request as logs and event logs show it: its C name, then its fields
            /// (`ACRND_STOP force: 0, timeout: 20, target: S3`).
            pub fn describe(&self) -> String {
                let (id, fields): (MsgId, Vec<String>) = match self {
                    $(Body::$id $({ $($field,)* })? => (
                        MsgId::$id,
                        vec![$($(format!("{}: {}", stringify!($field), FieldText::text($field)),)*)?],
                    ),)+
                };
                if fields.is_empty() {
                    id.name().to_owned()
                } else {
                    format!("{} {}", id.name(), fields.join(", "))
                }
            }
        }

        /// The typed body of each id: what a handler registered for that id receives
        /// ([`crate::server::Handlers`]), so no handler matches on [`Body`].
        pub mod body {
            use super::{Body, MsgId, StopTarget, TypedBody};
            $(
                $(#[$doc])*
                #[derive(Debug, Clone, PartialEq, Eq)]
                pub struct $id { $($($(#[$fdoc])* pub $field: $ty,)*)? }

                impl TypedBody for $id {
                    const ID: MsgId = MsgId::$id;

                    fn from_body(body: Body) -> Result<Self, Body> {
                        match body {
                            Body::$id $({ $($field,)* })? => Ok($id { $($($field,)*)? }),
                            other => Err(other),
                        }
                    }
                }

                impl From<$id> for Body {
                    fn from(b: $id) -> Body {
                        let $id { $($($field,)*)? } = b;
                        Body::$id $({ $($field,)* })?
                    }
                }
            )+
        }
    };
}

/// How a body field reads in [`Body::describe`].
trait FieldText {
    fn text(&self) -> String;
}

impl FieldText for String {
    fn text(&self) -> String {
        self.clone()
    }
}

impl FieldText for Vec<u8> {
    fn text(&self) -> String {
        String::from_utf8_lossy(self).into_owned()
    }
}

impl FieldText for StopTarget {
    fn text(&self) -> String {
        self.name().to_owned()
    }
}

macro_rules! field_text_by_display {
    ($($t:ty),+) => {
        $(impl FieldText for $t {
            fn text(&self) -> String {
                self.to_string()
            }
        })+
    };
}

field_text_by_display!(i32, u32, i64);

/// The typed body of one id (a struct of [`body`]).
pub trait TypedBody: Sized + Into<Body> {
    /// The id whose body this is.
    const ID: MsgId;

    /// The typed body, or the body back if it is another id's.
    fn from_body(body: Body) -> Result<Self, Body>;
}

bodies! {
    /// `MSG_STR`: a NUL-terminated string in the union.
    MsgStr {
        /// The string (at most 255 bytes).
        text: String,
    },
    /// `DM_STOP`: `force` != 0 powers the VM off at once, 0 asks the guest to shut down.
    DmStop {
        /// `data.acrnd_stop.force`.
        force: i32,
    },
    /// `DM_SUSPEND`.
    DmSuspend,
    /// `DM_RESUME` with the wakeup reason handed to the guest.
    DmResume {
        /// `data.reason`.
        reason: u32,
    },
    /// `DM_PAUSE` (profile D).
    DmPause,
    /// `DM_CONTINUE` (profile D).
    DmContinue,
    /// `DM_QUERY`.
    DmQuery,
    /// `DM_BLKRESCAN` with `slot,path`.
    DmBlkrescan {
        /// `data.devargs` (at most 255 bytes).
        devargs: String,
    },
    /// `ACRND_TIMER`: wake VM `name` in `t` seconds (relative).
    AcrndTimer {
        /// `data.acrnd_timer.name`, NUL-terminated within the profile's name field.
        name: String,
        /// `data.acrnd_timer.t`: relative seconds.
        t: i64,
    },
    /// `ACRND_REASON`.
    AcrndReason {
        /// `data.reason` (informational; acrnd answers with its own reason).
        reason: u32,
    },
    /// `DM_NOTIFY` (suite-defined payload): VM `name` is now in suspend mode `mode`.
    DmNotify {
        /// The VM name, in the name field.
        name: String,
        /// The DM suspend mode (one of [the suspend modes](crate::msg::suspend_mode)), in the `t` slot.
        mode: i32,
    },
    /// `ACRND_STOP`: stop or suspend all VMs within `timeout` seconds.
    AcrndStop {
        /// `data.acrnd_stop.force` (C acrnd ignores it; ours hard-stops stragglers).
        force: i32,
        /// `data.acrnd_stop.timeout`, seconds.
        timeout: u32,
        /// Suite extension: what the system will do next.
        target: StopTarget,
    },
    /// `ACRND_RESUME`.
    AcrndResume {
        /// `data.acrnd_resume.force` (unused by every receiver).
        force: i32,
        /// `data.acrnd_resume.timeout` (unused by every receiver).
        timeout: u32,
    },
    /// `ACRND_SUSPEND`.
    AcrndSuspend {
        /// `data.acrnd_suspend.force`.
        force: i32,
        /// `data.acrnd_suspend.timeout`, seconds.
        timeout: u32,
    },
    /// `WAKEUP_REASON`.
    WakeupReason,
    /// `RTC_TIMER`: wake the system at epoch second `t`.
    RtcTimer {
        /// `data.rtc_timer.vmname`, informational: the raw bytes up to the first NUL (or the
        /// whole field when the sender did not terminate it, as the C acrnd does).
        vmname: Vec<u8>,
        /// `data.rtc_timer.t`: absolute epoch seconds.
        t: i64,
    },
    /// `SUSPEND`: 0 = acrnd agrees (all VMs suspended), else refusal.
    Suspend {
        /// `data.err`.
        err: i32,
    },
    /// `SHUTDOWN`: 0 = acrnd agrees (all VMs stopped), else refusal.
    Shutdown {
        /// `data.err`.
        err: i32,
    },
    /// `REBOOT`: 0 = agreed, else refusal.
    Reboot {
        /// `data.err`.
        err: i32,
    },
    /// Extension `CTL_LIST`: the page of the VM list starting at entry `start`.
    CtlList {
        /// First entry wanted.
        start: u32,
    },
    /// Extension `CTL_START`.
    CtlStart {
        /// VM name.
        name: String,
    },
    /// Extension `CTL_STOP`.
    CtlStop {
        /// VM name.
        name: String,
        /// Non-zero: power off at once.
        force: i32,
        /// Seconds to wait before acrnd reports failure (0: acrnd's default).
        timeout: u32,
    },
    /// Extension `CTL_SUSPEND`.
    CtlSuspend {
        /// VM name.
        name: String,
    },
    /// Extension `CTL_RESUME`.
    CtlResume {
        /// VM name.
        name: String,
        /// Wakeup reason for the guest (0: acrnd chooses).
        reason: u32,
    },
    /// Extension `CTL_TIMERS`: the page of the timer list starting at entry `start`.
    CtlTimers {
        /// First entry wanted.
        start: u32,
    },
    /// Extension `CTL_STATUS`.
    CtlStatus,
}

/// Union bytes a message does not interpret, kept so that re-encoding is faithful.
///
/// Private on purpose: only the codec fills it (from received bytes); constructed messages
/// carry zeroes, which is what our senders put on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Residue(pub(crate) [u8; UNION_LEN]);

impl Residue {
    /// All zero.
    pub const ZERO: Residue = Residue([0; UNION_LEN]);

    /// The bytes, indexed by union offset (0 = message offset 24).
    pub fn bytes(&self) -> &[u8; UNION_LEN] {
        &self.0
    }

    /// Whether every byte is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
}

impl Default for Residue {
    fn default() -> Self {
        Residue::ZERO
    }
}

impl fmt::Debug for Residue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("Residue(zero)");
        }
        let nonzero: Vec<usize> = (0..UNION_LEN).filter(|&i| self.0[i] != 0).collect();
        write!(f, "Residue(non-zero at union offsets {nonzero:?})")
    }
}

/// A request: timestamp and body (magic is always [`MNGR_MSG_MAGIC`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `timestamp`: seconds since the epoch when the sender made it; echoed in the ack.
    pub timestamp: u64,
    /// What is asked.
    pub body: Body,
    pub(crate) residue: Residue,
}

impl Request {
    /// A request with the given timestamp and zeroed unused bytes.
    pub fn new(timestamp: u64, body: Body) -> Request {
        Request {
            timestamp,
            body,
            residue: Residue::ZERO,
        }
    }

    /// A request stamped with the current wall-clock second (what the C senders do).
    pub fn now(body: Body) -> Request {
        Request::new(epoch_now(), body)
    }

    /// The id of this request.
    pub fn id(&self) -> MsgId {
        self.body.id()
    }

    /// Union bytes the body does not interpret (zero unless decoded from a peer).
    pub fn residue(&self) -> &Residue {
        &self.residue
    }

    /// The ack that answers this request, with `payload`.
    pub fn ack(&self, payload: AckPayload) -> Ack {
        Ack::new(self.id(), self.timestamp, payload)
    }
}

/// Current wall-clock time in whole seconds since the epoch (0 if the clock is before it).
pub fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
