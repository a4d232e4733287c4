//! The CBC lifecycle protocol between the SoC and the IOC, shared by sos-lcs, ioc-sim and
//! the virtual IOC of the device models.
//!
//! Two layers:
//!
//! * **Service frames** ([`Frame`]): 4 bytes `[header, b0, b1, b2]`, what user space reads
//!   and writes on `/dev/cbc-lifecycle`. [`ServiceStream`] reassembles them from a byte
//!   stream (a pty standing in for the device), resynchronising one byte at a time while
//!   the header is not a known frame type.
//! * **Link frames** ([`LinkFrame`]): what crosses the IOC's UART when no kernel CBC driver
//!   is there to add and strip them:
//!
//!   ```text
//!   byte 0     SOF 0x05
//!   byte 1     E LLLLL SS   extension (0), LEN = (service length - 1) / 4, sequence
//!   byte 2     MMMMM PPP    mux (channel), priority
//!   byte 3..   service header, payload, 0xFF padding: 4 * (LEN + 1) bytes
//!   last       checksum: the 8-bit sum of the whole frame is 0
//!   ```
//!
//!   [`LinkStream`] reassembles them, resynchronising on SOF after garbage, a bad length or
//!   a bad checksum.
//!
//! | header | frame | direction |
//! |---:|---|---|
//! | 1 | wakeup reason `01 r0 r1 r2` (24-bit LE) | IOC → SoC |
//! | 2 | heartbeat `02 command action 00` | SoC → IOC |
//! | 3 | boot selector | SoC → IOC (unused) |
//! | 4 | suppress heartbeat check `04 ms0 ms1 ms2` | SoC → IOC |
//! | 5 | RTC wake-up `05 v0 v1 unit` | SoC → IOC |
//! | 6 | logic mode | IOC → SoC (ignored) |

use thiserror::Error;

/// Bytes of a lifecycle service frame.
pub const SERVICE_FRAME_LEN: usize = 4;

/// Wakeup-reason bits (`CBC_WK_RSN_*`).
pub mod reason {
    /// Ignition / power button.
    pub const BTN: u32 = 1 << 5;
    /// RTC timer expired.
    pub const RTC: u32 = 1 << 9;
    /// Car door.
    pub const DOOR: u32 = 1 << 11;
    /// Force S5: shut down rather than suspend.
    pub const FORCE_S5: u32 = 1 << 22;
    /// The SoC keeps the system on (set while the SoC sends active heartbeats).
    pub const SOC: u32 = 1 << 23;
    /// The 24 bits a reason has.
    pub const MASK: u32 = 0x00FF_FFFF;
    /// Bits the device model passes to guests (`CBC_WK_RSN_ALL`).
    pub const GUEST_MASK: u32 = 0x00C0_0A20;
    /// Bits that alone mean "shutdown requested".
    pub const SHUTDOWN_BITS: u32 = FORCE_S5 | SOC;
    /// The reason guests boot with when none is given (button).
    pub const DEFAULT_BOOT: u32 = BTN;
}

/// What a wakeup reason asks of the SoC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonClass {
    /// Reason 0: the IOC is about to remove power (it confirms a shutdown).
    PowerOff,
    /// Only the SoC / force-S5 bits: the IOC requests a shutdown.
    ShutdownRequest {
        /// Bit 22: power off rather than suspend.
        force_s5: bool,
    },
    /// A real wake source is active: stay on.
    Alive,
}

/// Classifies a wakeup reason as the lifecycle services do.
pub fn classify(reason: u32) -> ReasonClass {
    let r = reason & reason::MASK;
    if r == 0 {
        ReasonClass::PowerOff
    } else if r & !reason::SHUTDOWN_BITS == 0 {
        ReasonClass::ShutdownRequest {
            force_s5: r & reason::FORCE_S5 != 0,
        }
    } else {
        ReasonClass::Alive
    }
}

/// A heartbeat: `02 command action 00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Heartbeat {
    /// 0 shutdown prepared, 1 active, 2 shutdown delay, 3 initial, ...
    pub command: u8,
    /// With command 0: 1 halt (S5), 2 reboot, 7 RAM refresh (S3), ...
    pub action: u8,
}

impl Heartbeat {
    /// `02 03 00 00`: initial.
    pub const INIT: Heartbeat = Heartbeat {
        command: 3,
        action: 0,
    };
    /// `02 01 00 00`: active.
    pub const ACTIVE: Heartbeat = Heartbeat {
        command: 1,
        action: 0,
    };
    /// `02 02 00 00`: shutdown requested, SoC not ready yet.
    pub const SHUTDOWN_DELAY: Heartbeat = Heartbeat {
        command: 2,
        action: 0,
    };
    /// `02 00 01 00`: shutdown prepared, halt (S5).
    pub const S5: Heartbeat = Heartbeat {
        command: 0,
        action: 1,
    };
    /// `02 00 02 00`: shutdown prepared, reboot.
    pub const REBOOT: Heartbeat = Heartbeat {
        command: 0,
        action: 2,
    };
    /// `02 00 07 00`: shutdown prepared, RAM refresh (S3).
    pub const S3: Heartbeat = Heartbeat {
        command: 0,
        action: 7,
    };

    /// A short name for logs (`init`, `active`, `delay`, `s5`, `reboot`, `s3`).
    pub fn name(&self) -> &'static str {
        match *self {
            Heartbeat::INIT => "init",
            Heartbeat::ACTIVE => "active",
            Heartbeat::SHUTDOWN_DELAY => "delay",
            Heartbeat::S5 => "s5",
            Heartbeat::REBOOT => "reboot",
            Heartbeat::S3 => "s3",
            _ => "other",
        }
    }
}

/// Unit of an RTC wake-up value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RtcUnit {
    /// 0.
    Seconds,
    /// 1.
    Minutes,
    /// 2.
    Hours,
    /// 3.
    Days,
    /// 4.
    Weeks,
}

impl RtcUnit {
    const ALL: [RtcUnit; 5] = [
        RtcUnit::Seconds,
        RtcUnit::Minutes,
        RtcUnit::Hours,
        RtcUnit::Days,
        RtcUnit::Weeks,
    ];

    /// Seconds in one unit.
    pub fn seconds(self) -> u64 {
        match self {
            RtcUnit::Seconds => 1,
            RtcUnit::Minutes => 60,
            RtcUnit::Hours => 3600,
            RtcUnit::Days => 86_400,
            RtcUnit::Weeks => 604_800,
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> u8 {
        match self {
            RtcUnit::Seconds => 0,
            RtcUnit::Minutes => 1,
            RtcUnit::Hours => 2,
            RtcUnit::Days => 3,
            RtcUnit::Weeks => 4,
        }
    }

    /// Parses the low 4 bits of the unit byte.
    pub fn from_wire(b: u8) -> Option<RtcUnit> {
        RtcUnit::ALL.get(usize::from(b & 0x0F)).copied()
    }

    /// The next coarser unit and the divisor to reach it.
    fn coarser(self) -> Option<(RtcUnit, u64)> {
        match self {
            RtcUnit::Seconds => Some((RtcUnit::Minutes, 60)),
            RtcUnit::Minutes => Some((RtcUnit::Hours, 60)),
            RtcUnit::Hours => Some((RtcUnit::Days, 24)),
            RtcUnit::Days => Some((RtcUnit::Weeks, 7)),
            RtcUnit::Weeks => None,
        }
    }
}

/// An RTC wake-up: `value` units from the moment the frame is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtcWake {
    /// 16-bit count.
    pub value: u16,
    /// Unit of the count.
    pub unit: RtcUnit,
}

impl RtcWake {
    /// Encodes a delay as the IOC wants it: the finest unit whose count fits 16 bits,
    /// rounding down (the IOC may wake up to one unit early; callers re-arm the rest).
    /// `None` if `delta_s < 1` or beyond 65535 weeks. Unlike the C code, `delta_s` is not
    /// truncated to 32 bits, so weeks are reachable.
    pub fn from_delta(delta_s: i64) -> Option<RtcWake> {
        if delta_s < 1 {
            return None;
        }
        let mut value = u64::try_from(delta_s).ok()?;
        let mut unit = RtcUnit::Seconds;
        loop {
            if let Ok(v) = u16::try_from(value) {
                return Some(RtcWake { value: v, unit });
            }
            let (next, div) = unit.coarser()?;
            value /= div;
            unit = next;
        }
    }

    /// The delay in seconds.
    pub fn seconds(&self) -> u64 {
        u64::from(self.value) * self.unit.seconds()
    }
}

/// A lifecycle service frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frame {
    /// `01`: wakeup reason (24 bits).
    WakeupReason(u32),
    /// `02`: heartbeat.
    Heartbeat(Heartbeat),
    /// `03`: boot selector (unused), raw payload.
    BootSelector([u8; 3]),
    /// `04`: suppress the IOC's heartbeat check for `ms` milliseconds (24 bits).
    SuppressHeartbeat {
        /// Milliseconds.
        ms: u32,
    },
    /// `05`: RTC wake-up.
    Rtc(RtcWake),
    /// `06`: logic mode (ignored by every receiver), raw payload.
    LogicMode([u8; 3]),
}

/// A frame that cannot be encoded or decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CbcError {
    /// Not a lifecycle service header.
    #[error("Unknown service header {0:#04x}")]
    UnknownHeader(u8),
    /// RTC unit beyond weeks.
    #[error("Unknown RTC unit {0}")]
    RtcUnit(u8),
    /// A 24-bit field given a larger value.
    #[error("Value {0:#x} does not fit 24 bits")]
    TooWide(u32),
    /// A service payload too long for a link frame, or empty.
    #[error("Service length {0} does not fit a link frame")]
    ServiceLength(usize),
    /// Mux, priority or sequence out of its bit range.
    #[error("Link field {field} = {value} out of range")]
    LinkField {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u8,
    },
    /// A link frame that fails its checks.
    #[error("Bad link frame: {0}")]
    BadLink(&'static str),
}

fn u24(b: &[u8]) -> u32 {
    u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16
}

fn le24(v: u32) -> Result<[u8; 3], CbcError> {
    if v > reason::MASK {
        return Err(CbcError::TooWide(v));
    }
    let b = v.to_le_bytes();
    Ok([b[0], b[1], b[2]])
}

impl Frame {
    /// The frame's one name, in logs and event logs of every program of the suite:
    /// `reason`, `heartbeat.<name>`, `boot-selector`, `suppress`, `rtc`, `logic-mode`.
    pub fn name(&self) -> String {
        match self {
            Frame::WakeupReason(_) => "reason".to_owned(),
            Frame::Heartbeat(h) => format!("heartbeat.{}", h.name()),
            Frame::BootSelector(_) => "boot-selector".to_owned(),
            Frame::SuppressHeartbeat { .. } => "suppress".to_owned(),
            Frame::Rtc(_) => "rtc".to_owned(),
            Frame::LogicMode(_) => "logic-mode".to_owned(),
        }
    }

    /// The service header byte.
    pub fn header(&self) -> u8 {
        match self {
            Frame::WakeupReason(_) => 1,
            Frame::Heartbeat(_) => 2,
            Frame::BootSelector(_) => 3,
            Frame::SuppressHeartbeat { .. } => 4,
            Frame::Rtc(_) => 5,
            Frame::LogicMode(_) => 6,
        }
    }

    /// The 4 bytes of the frame.
    pub fn encode(&self) -> Result<[u8; SERVICE_FRAME_LEN], CbcError> {
        let p = match self {
            Frame::WakeupReason(r) => le24(*r)?,
            Frame::Heartbeat(h) => [h.command, h.action, 0],
            Frame::BootSelector(p) | Frame::LogicMode(p) => *p,
            Frame::SuppressHeartbeat { ms } => le24(*ms)?,
            Frame::Rtc(w) => {
                let v = w.value.to_le_bytes();
                [v[0], v[1], w.unit.to_wire()]
            }
        };
        Ok([self.header(), p[0], p[1], p[2]])
    }

    /// Parses 4 bytes.
    pub fn decode(b: [u8; SERVICE_FRAME_LEN]) -> Result<Frame, CbcError> {
        let p = [b[1], b[2], b[3]];
        Ok(match b[0] {
            1 => Frame::WakeupReason(u24(&p)),
            2 => Frame::Heartbeat(Heartbeat {
                command: p[0],
                action: p[1],
            }),
            3 => Frame::BootSelector(p),
            4 => Frame::SuppressHeartbeat { ms: u24(&p) },
            5 => Frame::Rtc(RtcWake {
                value: u16::from_le_bytes([p[0], p[1]]),
                unit: RtcUnit::from_wire(p[2]).ok_or(CbcError::RtcUnit(p[2]))?,
            }),
            6 => Frame::LogicMode(p),
            h => return Err(CbcError::UnknownHeader(h)),
        })
    }
}

/// Reassembles service frames from a byte stream.
///
/// While the buffered bytes do not start with a decodable frame, one byte is dropped
/// (counted in [`ServiceStream::dropped`]), so a stream that lost or gained bytes
/// re-aligns on the next frame.
#[derive(Debug, Default)]
pub struct ServiceStream {
    buf: Vec<u8>,
    dropped: u64,
    last: [u8; SERVICE_FRAME_LEN],
}

impl ServiceStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if any.
    pub fn next_frame(&mut self) -> Option<Frame> {
        let mut skipped = 0usize;
        let found = loop {
            if self.buf.len() - skipped < SERVICE_FRAME_LEN {
                break None;
            }
            let b: [u8; SERVICE_FRAME_LEN] = self.buf[skipped..skipped + SERVICE_FRAME_LEN]
                .try_into()
                .expect("checked length");
            match Frame::decode(b) {
                Ok(f) => {
                    skipped += SERVICE_FRAME_LEN;
                    self.last = b;
                    break Some(f);
                }
                Err(e) => {
                    log::debug!("CBC stream: dropping byte {:#04x} ({e})", b[0]);
                    self.dropped += 1;
                    skipped += 1;
                }
            }
        };
        self.buf.drain(..skipped);
        found
    }

    /// Bytes dropped while resynchronising.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The bytes of the last frame returned, as received (decoding ignores some bits, such
    /// as a heartbeat's fourth byte).
    pub fn last_bytes(&self) -> [u8; SERVICE_FRAME_LEN] {
        self.last
    }

    /// Bytes held waiting for the rest of a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Start of a link frame.
pub const SOF: u8 = 0x05;
/// Shortest link frame.
pub const MIN_LINK_FRAME: usize = 8;
/// Longest link frame a receiver accepts.
pub const MAX_LINK_FRAME: usize = 96;

/// CBC mux values (channels).
pub mod mux {
    /// Power management.
    pub const PMT: u8 = 0;
    /// Lifecycle.
    pub const LIFECYCLE: u8 = 1;
    /// Signals.
    pub const SIGNALS: u8 = 2;
    /// Early signals.
    pub const EARLY_SIGNALS: u8 = 3;
    /// Diagnosis.
    pub const DIAGNOSIS: u8 = 4;
    /// DLT.
    pub const DLT: u8 = 5;
    /// LINDA.
    pub const LINDA: u8 = 6;
    /// First raw channel (raw0); raw11 is 18.
    pub const RAW0: u8 = 7;
}

/// Priority of the lifecycle (and PMT, signals, DLT) channels.
pub const PRIO_HIGH: u8 = 6;
/// Priority of the diagnosis channel.
pub const PRIO_LOW: u8 = 2;
/// Priority of every other channel.
pub const PRIO_MEDIUM: u8 = 3;

/// A decoded link frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFrame {
    /// Sequence number (0..=3).
    pub seq: u8,
    /// Channel (0..=31).
    pub mux: u8,
    /// Priority (0..=7).
    pub prio: u8,
    /// Service header, payload and 0xFF padding (the length is not on the wire).
    pub region: Vec<u8>,
}

impl LinkFrame {
    /// The frame's bytes on the wire (SOF, length and sequence, address, region, checksum).
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = u8::try_from((self.region.len() / 4).saturating_sub(1) << 2).unwrap_or(0x7C);
        let mut f = vec![
            SOF,
            len | (self.seq & 0x03),
            self.mux << 3 | (self.prio & 0x07),
        ];
        f.extend_from_slice(&self.region);
        f.push(checksum(&f));
        f
    }

    /// The lifecycle service frame this link frame carries, if it is on the lifecycle
    /// channel and decodes.
    pub fn lifecycle(&self) -> Option<Result<Frame, CbcError>> {
        if self.mux != mux::LIFECYCLE || self.region.len() < SERVICE_FRAME_LEN {
            return None;
        }
        let b: [u8; SERVICE_FRAME_LEN] = self.region[..SERVICE_FRAME_LEN]
            .try_into()
            .expect("checked length");
        Some(Frame::decode(b))
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    let sum = bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    0u8.wrapping_sub(sum)
}

/// Encodes a link frame around `service` (header and payload).
pub fn encode_link(seq: u8, mux: u8, prio: u8, service: &[u8]) -> Result<Vec<u8>, CbcError> {
    for (field, value, max) in [("seq", seq, 3), ("mux", mux, 31), ("prio", prio, 7)] {
        if value > max {
            return Err(CbcError::LinkField { field, value });
        }
    }
    let s = service.len();
    if s == 0 || (s - 1) / 4 > 31 {
        return Err(CbcError::ServiceLength(s));
    }
    let len = (s - 1) / 4;
    let region = 4 * (len + 1);
    let mut f = Vec::with_capacity(4 + region);
    f.push(SOF);
    f.push(u8::try_from(len << 2).expect("len <= 31") | seq);
    f.push(mux << 3 | prio);
    f.extend_from_slice(service);
    f.resize(3 + region, 0xFF);
    f.push(checksum(&f));
    Ok(f)
}

/// The total length of a link frame whose first two bytes are `sof`, `els`.
fn link_len(els: u8) -> Result<usize, CbcError> {
    if els & 0x80 != 0 {
        return Err(CbcError::BadLink("extension bit set"));
    }
    let len = usize::from((els >> 2) & 0x1F);
    let total = 4 + 4 * (len + 1);
    if total > MAX_LINK_FRAME {
        return Err(CbcError::BadLink("longer than 96 bytes"));
    }
    Ok(total)
}

/// Decodes one whole link frame.
pub fn decode_link(f: &[u8]) -> Result<LinkFrame, CbcError> {
    if f.len() < MIN_LINK_FRAME || f[0] != SOF {
        return Err(CbcError::BadLink("no SOF or too short"));
    }
    if link_len(f[1])? != f.len() {
        return Err(CbcError::BadLink("length field disagrees"));
    }
    if f.iter().fold(0u8, |a, &b| a.wrapping_add(b)) != 0 {
        return Err(CbcError::BadLink("checksum"));
    }
    Ok(LinkFrame {
        seq: f[1] & 0x03,
        mux: f[2] >> 3,
        prio: f[2] & 0x07,
        region: f[3..f.len() - 1].to_vec(),
    })
}

/// Reassembles link frames from a UART byte stream: skips to SOF, checks the length and
/// checksum, and on any failure drops one byte and searches again.
#[derive(Debug, Default)]
pub struct LinkStream {
    buf: Vec<u8>,
    dropped: u64,
}

impl LinkStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next valid frame, if one is complete.
    pub fn next_frame(&mut self) -> Option<LinkFrame> {
        let mut start = 0usize;
        loop {
            match self.buf[start..].iter().position(|&b| b == SOF) {
                Some(p) => start += p,
                None => {
                    start = self.buf.len();
                    break;
                }
            }
            let rest = &self.buf[start..];
            if rest.len() < MIN_LINK_FRAME {
                break;
            }
            let total = match link_len(rest[1]) {
                Ok(t) => t,
                Err(e) => {
                    log::debug!("CBC link: {e}; resynchronising");
                    start += 1;
                    continue;
                }
            };
            if rest.len() < total {
                break;
            }
            match decode_link(&rest[..total]) {
                Ok(f) => {
                    self.discard(start);
                    self.buf.drain(..total);
                    return Some(f);
                }
                Err(e) => {
                    log::debug!("CBC link: {e}; resynchronising");
                    start += 1;
                }
            }
        }
        self.discard(start);
        None
    }

    fn discard(&mut self, n: usize) {
        self.buf.drain(..n);
        self.dropped += u64::try_from(n).unwrap_or(u64::MAX);
    }

    /// Bytes dropped while resynchronising.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes held: the start of a frame not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// The transmit sequence counter of a link sender: 0, 1, 2, 3, 0, ...
#[derive(Debug, Default, Clone)]
pub struct SeqCounter(u8);

impl SeqCounter {
    /// Starts at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number for the next frame.
    pub fn next_seq(&mut self) -> u8 {
        let s = self.0;
        self.0 = (self.0 + 1) & 0x03;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(0), ReasonClass::PowerOff);
        assert_eq!(
            classify(reason::SOC),
            ReasonClass::ShutdownRequest { force_s5: false }
        );
        assert_eq!(
            classify(reason::SOC | reason::FORCE_S5),
            ReasonClass::ShutdownRequest { force_s5: true }
        );
        assert_eq!(classify(reason::BTN | reason::SOC), ReasonClass::Alive);
        assert_eq!(
            classify(0x0100_0000),
            ReasonClass::PowerOff,
            "bit 24 is not a CBC bit"
        );
    }

    #[test]
    fn rtc_weeks_are_reachable_and_limits_hold() {
        let w = RtcWake::from_delta(65_535 * 604_800).expect("65535 weeks fit");
        assert_eq!(w.unit, RtcUnit::Weeks);
        assert_eq!(RtcWake::from_delta(65_536 * 604_800), None);
        assert_eq!(RtcWake::from_delta(0), None);
        assert_eq!(RtcWake::from_delta(i64::MAX), None);
        let d = RtcWake::from_delta(70_000).expect("fits");
        assert!(d.seconds() <= 70_000 && 70_000 - d.seconds() < 60);
    }

    #[test]
    fn wide_values_are_errors() {
        assert_eq!(
            Frame::WakeupReason(0x0100_0000).encode(),
            Err(CbcError::TooWide(0x0100_0000))
        );
        assert_eq!(Frame::decode([5, 1, 0, 5]), Err(CbcError::RtcUnit(5)));
        assert_eq!(Frame::decode([7, 0, 0, 0]), Err(CbcError::UnknownHeader(7)));
    }

    #[test]
    fn link_rejects_bad_fields() {
        assert!(encode_link(4, 1, 6, &[1, 2, 3, 4]).is_err());
        assert!(encode_link(0, 32, 6, &[1, 2, 3, 4]).is_err());
        assert!(encode_link(0, 1, 6, &[]).is_err());
        let f = encode_link(0, 1, 6, &[1, 32, 0, 0]).expect("encodes");
        let mut bad = f.clone();
        bad[4] ^= 1;
        assert_eq!(decode_link(&bad), Err(CbcError::BadLink("checksum")));
        assert!(decode_link(&f[..7]).is_err());
    }

    #[test]
    fn seq_wraps_at_four() {
        let mut s = SeqCounter::new();
        let seen: Vec<u8> = (0..6).map(|_| s.next_seq()).collect();
        assert_eq!(seen, [0, 1, 2, 3, 0, 1]);
    }
}
