//! Property tests of the codec, run for each built-in ABI profile (F, E, D).
//!
//! * Arbitrary valid requests and acks (every [`Body`] variant the profile has, every ack
//!   payload kind, pages up to capacity, arbitrary raw ack magic) survive encode-then-decode.
//! * Every encoding is 280 bytes with the expected magic, zero padding and wire id.
//! * Decoding never panics on arbitrary bytes, on framed random bytes (valid magic and id
//!   more often than not) or on valid encodings with a few bytes mutated; whatever it
//!   accepts re-encodes to the bytes it came from (padding aside) and decodes again to the
//!   same value.
//! * Strings that do not fit their field, strings with a NUL and over-full pages are
//!   rejected, never truncated.

use mngr_ipc::Profile;
use mngr_ipc::codec::{CodecError, MSG_LEN, Wire};
use mngr_ipc::msg::{
    Ack, AckKind, AckPayload, Body, MNGR_MSG_MAGIC, MsgId, Request, Status, StopTarget, TimerEntry,
    TimerPage, UNION_LEN, VmEntry, VmPage,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};

/// `"vmm msg\0"`, the first 8 bytes of every request.
const REQUEST_MAGIC: [u8; 8] = [0x76, 0x6d, 0x6d, 0x20, 0x6d, 0x73, 0x67, 0x00];

// ---------------------------------------------------------------------------------------
// Value strategies
// ---------------------------------------------------------------------------------------

fn i32s() -> BoxedStrategy<i32> {
    prop_oneof![
        4 => any::<i32>(),
        1 => select(vec![0, 1, -1, i32::MIN, i32::MAX]),
    ]
    .boxed()
}

fn u32s() -> BoxedStrategy<u32> {
    prop_oneof![
        4 => any::<u32>(),
        1 => select(vec![0, 1, u32::MAX]),
    ]
    .boxed()
}

fn i64s() -> BoxedStrategy<i64> {
    prop_oneof![
        4 => any::<i64>(),
        1 => select(vec![0, 1, -1, i64::MIN, i64::MAX]),
    ]
    .boxed()
}

fn u64s() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => any::<u64>(),
        1 => select(vec![0, 1, u64::MAX]),
    ]
    .boxed()
}

/// Packs `chars` (NULs replaced) into a string of at most `max` UTF-8 bytes.
fn pack(chars: Vec<char>, max: usize) -> String {
    let mut s = String::new();
    for c in chars {
        let c = if c == '\0' { '\u{1}' } else { c };
        if s.len() + c.len_utf8() <= max {
            s.push(c);
        }
    }
    s
}

fn ascii(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("bytes 1..0x80 are ASCII")
}

/// A string without NUL that fits a C field of `field` bytes: at most `field - 1` bytes of
/// arbitrary UTF-8, often exactly `field - 1`.
fn fitting(field: usize) -> BoxedStrategy<String> {
    let max = field - 1;
    prop_oneof![
        vec(any::<char>(), 0..field).prop_map(move |cs| pack(cs, max)),
        // More characters than fit: packs up to (or close to) the limit.
        vec(any::<char>(), field..2 * field).prop_map(move |cs| pack(cs, max)),
        vec(1u8..0x80, 0..=max).prop_map(ascii),
        vec(1u8..0x80, max).prop_map(ascii),
    ]
    .boxed()
}

/// A string without NUL of at least `field` bytes: one that does not fit.
fn too_long(field: usize) -> BoxedStrategy<String> {
    (fitting(field), vec(1u8..0x80, 1..=field), 0..32usize)
        .prop_map(move |(s, pad, extra)| {
            let mut s = s;
            s.push_str(&ascii(pad));
            while s.len() < field + extra {
                s.push('x');
            }
            s
        })
        .boxed()
}

/// Arbitrary UTF-8 without NUL of exactly `len` bytes.
fn exact_len(len: usize) -> BoxedStrategy<String> {
    fitting(len)
        .prop_map(move |s| {
            let mut s = s;
            while s.len() < len {
                s.push('x');
            }
            s
        })
        .boxed()
}

/// A string that would fit a field of `field` bytes but contains a NUL.
fn with_nul(field: usize) -> BoxedStrategy<String> {
    (fitting(field - 1), any::<Index>())
        .prop_map(|(s, at)| {
            let mut s = s;
            let mut i = at.index(s.len() + 1);
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            s.insert(i, '\0');
            s
        })
        .boxed()
}

fn stop_target() -> BoxedStrategy<StopTarget> {
    select(vec![
        StopTarget::Unspecified,
        StopTarget::S5,
        StopTarget::S3,
    ])
    .boxed()
}

/// The ids `p` has a wire number for.
fn ids(p: Profile) -> Vec<MsgId> {
    p.ids().collect()
}

/// A valid body of request `id` in profile `p`.
fn body(p: Profile, id: MsgId) -> BoxedStrategy<Body> {
    let n = p.name_len();
    match id {
        MsgId::MsgStr => fitting(UNION_LEN)
            .prop_map(|text| Body::MsgStr { text })
            .boxed(),
        MsgId::DmStop => i32s().prop_map(|force| Body::DmStop { force }).boxed(),
        MsgId::DmSuspend => Just(Body::DmSuspend).boxed(),
        MsgId::DmResume => u32s().prop_map(|reason| Body::DmResume { reason }).boxed(),
        MsgId::DmPause => Just(Body::DmPause).boxed(),
        MsgId::DmContinue => Just(Body::DmContinue).boxed(),
        MsgId::DmQuery => Just(Body::DmQuery).boxed(),
        MsgId::DmBlkrescan => fitting(UNION_LEN)
            .prop_map(|devargs| Body::DmBlkrescan { devargs })
            .boxed(),
        MsgId::AcrndTimer => (fitting(n), i64s())
            .prop_map(|(name, t)| Body::AcrndTimer { name, t })
            .boxed(),
        MsgId::AcrndReason => u32s()
            .prop_map(|reason| Body::AcrndReason { reason })
            .boxed(),
        MsgId::DmNotify => (fitting(n), i32s())
            .prop_map(|(name, mode)| Body::DmNotify { name, mode })
            .boxed(),
        MsgId::AcrndStop => (i32s(), u32s(), stop_target())
            .prop_map(|(force, timeout, target)| Body::AcrndStop {
                force,
                timeout,
                target,
            })
            .boxed(),
        MsgId::AcrndResume => (i32s(), u32s())
            .prop_map(|(force, timeout)| Body::AcrndResume { force, timeout })
            .boxed(),
        MsgId::AcrndSuspend => (i32s(), u32s())
            .prop_map(|(force, timeout)| Body::AcrndSuspend { force, timeout })
            .boxed(),
        MsgId::WakeupReason => Just(Body::WakeupReason).boxed(),
        MsgId::RtcTimer => (
            prop_oneof![vec(1u8..=u8::MAX, 0..=n), vec(1u8..=u8::MAX, n)],
            i64s(),
        )
            .prop_map(|(vmname, t)| Body::RtcTimer { vmname, t })
            .boxed(),
        MsgId::Suspend => i32s().prop_map(|err| Body::Suspend { err }).boxed(),
        MsgId::Shutdown => i32s().prop_map(|err| Body::Shutdown { err }).boxed(),
        MsgId::Reboot => i32s().prop_map(|err| Body::Reboot { err }).boxed(),
        MsgId::CtlList => u32s().prop_map(|start| Body::CtlList { start }).boxed(),
        MsgId::CtlStart => fitting(n).prop_map(|name| Body::CtlStart { name }).boxed(),
        MsgId::CtlStop => (fitting(n), i32s(), u32s())
            .prop_map(|(name, force, timeout)| Body::CtlStop {
                name,
                force,
                timeout,
            })
            .boxed(),
        MsgId::CtlSuspend => fitting(n)
            .prop_map(|name| Body::CtlSuspend { name })
            .boxed(),
        MsgId::CtlResume => (fitting(n), u32s())
            .prop_map(|(name, reason)| Body::CtlResume { name, reason })
            .boxed(),
        MsgId::CtlTimers => u32s().prop_map(|start| Body::CtlTimers { start }).boxed(),
        MsgId::CtlStatus => Just(Body::CtlStatus).boxed(),
    }
}

/// An arbitrary valid request of profile `p` (any id the profile has).
fn request(p: Profile) -> BoxedStrategy<Request> {
    select(ids(p))
        .prop_flat_map(move |id| (u64s(), body(p, id)))
        .prop_map(|(ts, b)| Request::new(ts, b))
        .boxed()
}

fn vm_entry(n: usize) -> BoxedStrategy<VmEntry> {
    (fitting(n), i32s(), i32s(), i64s())
        .prop_map(|(name, state, pid, next_wake)| VmEntry {
            name,
            state,
            pid,
            next_wake,
        })
        .boxed()
}

fn timer_entry(n: usize) -> BoxedStrategy<TimerEntry> {
    (fitting(n), i64s())
        .prop_map(|(name, when)| TimerEntry { name, when })
        .boxed()
}

/// A valid payload for the ack of request `id` in profile `p`.
fn payload(p: Profile, id: MsgId) -> BoxedStrategy<AckPayload> {
    let n = p.name_len();
    match id.ack_kind() {
        AckKind::Err => i32s().prop_map(AckPayload::Err).boxed(),
        AckKind::Reason => u32s().prop_map(AckPayload::Reason).boxed(),
        AckKind::State => i32s().prop_map(AckPayload::State).boxed(),
        AckKind::VmPage => (i32s(), u32s(), vec(vm_entry(n), 0..=p.vm_page_capacity()))
            .prop_map(|(err, total, entries)| {
                AckPayload::VmPage(VmPage {
                    err,
                    total,
                    entries,
                })
            })
            .boxed(),
        AckKind::TimerPage => (
            i32s(),
            u32s(),
            vec(timer_entry(n), 0..=p.timer_page_capacity()),
        )
            .prop_map(|(err, total, entries)| {
                AckPayload::TimerPage(TimerPage {
                    err,
                    total,
                    entries,
                })
            })
            .boxed(),
        AckKind::Status => (i32s(), u32s(), u32s(), u32s(), u32s())
            .prop_map(|(err, wakeup_reason, vms, lcs_reachable, phase)| {
                AckPayload::Status(Status {
                    err,
                    wakeup_reason,
                    vms,
                    lcs_reachable,
                    phase,
                })
            })
            .boxed(),
    }
}

/// The raw magic of an ack: ours, the C acrnd's unset one, or anything.
fn ack_magic() -> BoxedStrategy<u64> {
    prop_oneof![
        2 => Just(MNGR_MSG_MAGIC),
        1 => Just(0u64),
        2 => any::<u64>(),
    ]
    .boxed()
}

/// An arbitrary valid ack of profile `p` (any id the profile has, the matching payload).
fn ack(p: Profile) -> BoxedStrategy<Ack> {
    select(ids(p))
        .prop_flat_map(move |id| (Just(id), u64s(), payload(p, id), ack_magic()))
        .prop_map(|(id, ts, payload, magic)| {
            let mut a = Ack::new(id, ts, payload);
            a.magic = magic;
            a
        })
        .boxed()
}

/// A random union: NULs and letters often, so that strings terminate and are sometimes
/// UTF-8. (One strategy for all 256 bytes: a boxed strategy per byte is slow in debug.)
fn random_union() -> BoxedStrategy<Vec<u8>> {
    vec(any::<[u8; 2]>(), UNION_LEN)
        .prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|[pick, value]| match pick % 6 {
                    0..=2 => 0,
                    3 | 4 => b'a' + value % 26,
                    _ => value,
                })
                .collect()
        })
        .boxed()
}

/// 280 random bytes shaped like a message: mostly valid magic and an id of the profile,
/// arbitrary padding and timestamp, a random union.
fn framed(p: Profile) -> BoxedStrategy<Vec<u8>> {
    let wires: Vec<u32> = p.ids().filter_map(|id| p.wire_id(id)).collect();
    (
        prop_oneof![4 => Just(MNGR_MSG_MAGIC), 1 => any::<u64>()],
        prop_oneof![4 => select(wires), 1 => any::<u32>()],
        any::<[u8; 4]>(),
        any::<u64>(),
        random_union(),
    )
        .prop_map(|(magic, id, pad, ts, union)| {
            let mut b = Vec::with_capacity(MSG_LEN);
            b.extend_from_slice(&magic.to_le_bytes());
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&pad);
            b.extend_from_slice(&ts.to_le_bytes());
            b.extend_from_slice(&union);
            b
        })
        .boxed()
}

/// 1 to 8 byte mutations: a position in the message and a non-zero XOR mask.
fn mutations() -> BoxedStrategy<Vec<(usize, u8)>> {
    vec((0..MSG_LEN, 1u8..=u8::MAX), 1..=8).boxed()
}

fn mutate(wire: &Wire, muts: &[(usize, u8)]) -> Vec<u8> {
    let mut b = wire.to_vec();
    for &(at, mask) in muts {
        b[at] ^= mask;
    }
    b
}

// ---------------------------------------------------------------------------------------
// Checks shared by the per-profile properties
// ---------------------------------------------------------------------------------------

fn encoded(what: &str, r: Result<Wire, CodecError>) -> Result<Wire, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what} failed to encode: {e}")))
}

/// Magic, zero padding, wire id and timestamp of an encoding.
fn check_header(
    p: Profile,
    wire: &Wire,
    magic: [u8; 8],
    id: MsgId,
    timestamp: u64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(wire.as_slice().len(), 280);
    prop_assert_eq!(&wire[0..8], &magic[..]);
    let wire_id = p.wire_id(id);
    prop_assert!(wire_id.is_some(), "{} has no wire id in {}", id, p);
    prop_assert_eq!(&wire[8..12], &wire_id.unwrap_or_default().to_le_bytes()[..]);
    prop_assert_eq!(&wire[12..16], &[0u8; 4][..]);
    prop_assert_eq!(&wire[16..24], &timestamp.to_le_bytes()[..]);
    Ok(())
}

/// Re-encoding what decode accepted gives back `bytes` (the padding, which the codec
/// ignores, written as zero).
fn check_faithful(bytes: &[u8], wire: &Wire) -> Result<(), TestCaseError> {
    prop_assert_eq!(&wire[..12], &bytes[..12], "magic and id");
    prop_assert_eq!(&wire[12..16], &[0u8; 4][..], "padding");
    prop_assert_eq!(&wire[16..24], &bytes[16..24], "timestamp");
    prop_assert_eq!(&wire[24..], &bytes[24..], "union");
    Ok(())
}

/// Decoding `bytes` as a request does not panic; what it accepts is stable.
fn check_request_decode(p: Profile, bytes: &[u8]) -> Result<(), TestCaseError> {
    let decoded = p.decode_request(bytes);
    if bytes.len() != MSG_LEN {
        prop_assert_eq!(decoded, Err(CodecError::Length(bytes.len())));
        return Ok(());
    }
    let Ok(first) = decoded else {
        return Ok(());
    };
    let wire = encoded("decoded request", p.encode_request(&first))?;
    prop_assert_eq!(p.decode_request(&wire), Ok(first));
    check_faithful(bytes, &wire)
}

/// Decoding `bytes` as the ack of every id does not panic; what it accepts is stable.
fn check_ack_decode(p: Profile, bytes: &[u8]) -> Result<(), TestCaseError> {
    for request in MsgId::ALL {
        let decoded = p.decode_ack(bytes, request);
        if bytes.len() != MSG_LEN {
            prop_assert_eq!(decoded, Err(CodecError::Length(bytes.len())));
            continue;
        }
        let Ok(first) = decoded else {
            continue;
        };
        let wire = encoded("decoded ack", p.encode_ack(&first))?;
        prop_assert_eq!(p.decode_ack(&wire, first.id), Ok(first));
        check_faithful(bytes, &wire)?;
    }
    Ok(())
}

/// A request of id `id` whose only string is `name` (other fields zero), and the codec's
/// name of that field.
fn named(id: MsgId, name: String) -> (Body, &'static str) {
    match id {
        MsgId::AcrndTimer => (Body::AcrndTimer { name, t: 0 }, "acrnd_timer.name"),
        MsgId::DmNotify => (Body::DmNotify { name, mode: 0 }, "dm_notify.name"),
        MsgId::CtlStart => (Body::CtlStart { name }, "ctl.name"),
        MsgId::CtlSuspend => (Body::CtlSuspend { name }, "ctl.name"),
        MsgId::CtlStop => (
            Body::CtlStop {
                name,
                force: 0,
                timeout: 0,
            },
            "ctl.name",
        ),
        MsgId::CtlResume => (Body::CtlResume { name, reason: 0 }, "ctl.name"),
        MsgId::MsgStr => (Body::MsgStr { text: name }, "devargs"),
        MsgId::DmBlkrescan => (Body::DmBlkrescan { devargs: name }, "devargs"),
        other => unreachable!("{other} has no NUL-terminated string"),
    }
}

const NAMED_IDS: [MsgId; 6] = [
    MsgId::AcrndTimer,
    MsgId::DmNotify,
    MsgId::CtlStart,
    MsgId::CtlSuspend,
    MsgId::CtlStop,
    MsgId::CtlResume,
];

const DEVARGS_IDS: [MsgId; 2] = [MsgId::MsgStr, MsgId::DmBlkrescan];

fn vm_page(entries: Vec<VmEntry>) -> AckPayload {
    AckPayload::VmPage(VmPage {
        err: 0,
        total: 0,
        entries,
    })
}

fn timer_page(entries: Vec<TimerEntry>) -> AckPayload {
    AckPayload::TimerPage(TimerPage {
        err: 0,
        total: 0,
        entries,
    })
}

// ---------------------------------------------------------------------------------------
// The properties, once per profile
// ---------------------------------------------------------------------------------------

macro_rules! profile_properties {
    ($module:ident, $profile:expr) => {
        mod $module {
            use super::*;

            const P: Profile = $profile;

            proptest! {
                /// 1. Valid requests survive encode-then-decode.
                #[test]
                fn request_round_trip(req in request(P)) {
                    let wire = encoded("request", P.encode_request(&req))?;
                    prop_assert_eq!(P.decode_request(&wire), Ok(req));
                }

                /// 2. Valid acks survive encode-then-decode.
                #[test]
                fn ack_round_trip(a in ack(P)) {
                    let wire = encoded("ack", P.encode_ack(&a))?;
                    prop_assert_eq!(P.decode_ack(&wire, a.id), Ok(a));
                }

                /// 3. Request encodings: 280 bytes, magic, zero padding, wire id.
                #[test]
                fn request_layout(req in request(P)) {
                    let wire = encoded("request", P.encode_request(&req))?;
                    check_header(P, &wire, REQUEST_MAGIC, req.id(), req.timestamp)?;
                }

                /// 3. Ack encodings: 280 bytes, the ack's raw magic, zero padding, wire id.
                #[test]
                fn ack_layout(a in ack(P)) {
                    let wire = encoded("ack", P.encode_ack(&a))?;
                    check_header(P, &wire, a.magic.to_le_bytes(), a.id, a.timestamp)?;
                }

                /// 4. Arbitrary bytes of arbitrary length never make decode panic.
                #[test]
                fn decode_arbitrary_bytes(bytes in prop_oneof![
                    vec(any::<u8>(), 0..600),
                    vec(any::<u8>(), MSG_LEN),
                ]) {
                    check_request_decode(P, &bytes)?;
                    check_ack_decode(P, &bytes)?;
                    let header = mngr_ipc::codec::peek_header(&bytes);
                    prop_assert_eq!(header.is_ok(), bytes.len() == MSG_LEN);
                }

                /// 4. Random unions behind a (mostly) valid header: no panic, stable.
                #[test]
                fn decode_framed_bytes(bytes in framed(P)) {
                    check_request_decode(P, &bytes)?;
                    check_ack_decode(P, &bytes)?;
                }

                /// 4. Valid requests with 1 to 8 bytes mutated: no panic, stable.
                #[test]
                fn decode_mutated_request(req in request(P), muts in mutations()) {
                    let wire = encoded("request", P.encode_request(&req))?;
                    let bytes = mutate(&wire, &muts);
                    check_request_decode(P, &bytes)?;
                    check_ack_decode(P, &bytes)?;
                }

                /// 4. Valid acks with 1 to 8 bytes mutated: no panic, stable.
                #[test]
                fn decode_mutated_ack(a in ack(P), muts in mutations()) {
                    let wire = encoded("ack", P.encode_ack(&a))?;
                    let bytes = mutate(&wire, &muts);
                    check_request_decode(P, &bytes)?;
                    check_ack_decode(P, &bytes)?;
                }

                /// 5. An ACRND_TIMER name of exactly the field's length (no room for the
                /// NUL) is rejected.
                #[test]
                fn acrnd_timer_name_of_field_length_is_rejected(
                    name in exact_len(P.name_len()),
                    t in i64s(),
                    ts in u64s(),
                ) {
                    let n = P.name_len();
                    let req = Request::new(ts, Body::AcrndTimer { name, t });
                    prop_assert_eq!(
                        P.encode_request(&req),
                        Err(CodecError::TooLong { field: "acrnd_timer.name", len: n, max: n - 1 })
                    );
                }

                /// 5. Names that do not fit are rejected, never truncated.
                #[test]
                fn long_names_are_rejected(
                    id in select(NAMED_IDS.to_vec()),
                    name in too_long(P.name_len()),
                ) {
                    let len = name.len();
                    let (body, field) = named(id, name);
                    prop_assert_eq!(
                        P.encode_request(&Request::new(0, body)),
                        Err(CodecError::TooLong { field, len, max: P.name_len() - 1 })
                    );
                }

                /// 5. Device arguments and MSG_STR texts that do not fit are rejected.
                #[test]
                fn long_devargs_are_rejected(
                    id in select(DEVARGS_IDS.to_vec()),
                    text in too_long(UNION_LEN),
                ) {
                    let len = text.len();
                    let (body, field) = named(id, text);
                    prop_assert_eq!(
                        P.encode_request(&Request::new(0, body)),
                        Err(CodecError::TooLong { field, len, max: UNION_LEN - 1 })
                    );
                }

                /// 5. Strings with a NUL are rejected.
                #[test]
                fn strings_with_nul_are_rejected(
                    id in select([NAMED_IDS.as_slice(), DEVARGS_IDS.as_slice()].concat()),
                    name in with_nul(P.name_len()),
                    text in with_nul(UNION_LEN),
                ) {
                    let s = if DEVARGS_IDS.contains(&id) { text } else { name };
                    let (body, field) = named(id, s);
                    prop_assert_eq!(
                        P.encode_request(&Request::new(0, body)),
                        Err(CodecError::InteriorNul(field))
                    );
                }

                /// 5. The raw RTC_TIMER name may fill its field but not overflow it.
                #[test]
                fn long_rtc_vmnames_are_rejected(
                    vmname in vec(1u8..=u8::MAX, P.name_len() + 1..P.name_len() + 40),
                    t in i64s(),
                ) {
                    let len = vmname.len();
                    prop_assert_eq!(
                        P.encode_request(&Request::new(0, Body::RtcTimer { vmname, t })),
                        Err(CodecError::TooLong {
                            field: "rtc_timer.vmname",
                            len,
                            max: P.name_len(),
                        })
                    );
                }

                /// 5. Page entry names that do not fit are rejected.
                #[test]
                fn long_entry_names_are_rejected(
                    name in too_long(P.name_len()),
                    entry in vm_entry(P.name_len()),
                    timer in timer_entry(P.name_len()),
                ) {
                    let len = name.len();
                    let max = P.name_len() - 1;
                    let vm = VmEntry { name: name.clone(), ..entry };
                    prop_assert_eq!(
                        P.encode_ack(&Ack::new(MsgId::CtlList, 0, vm_page(vec![vm]))),
                        Err(CodecError::TooLong { field: "vm_entry.name", len, max })
                    );
                    let timer = TimerEntry { name, ..timer };
                    prop_assert_eq!(
                        P.encode_ack(&Ack::new(MsgId::CtlTimers, 0, timer_page(vec![timer]))),
                        Err(CodecError::TooLong { field: "timer_entry.name", len, max })
                    );
                }

                /// 5. Pages over capacity are rejected, never cut.
                #[test]
                fn full_pages_are_rejected(
                    vms in vec(vm_entry(P.name_len()), P.vm_page_capacity() + 1..P.vm_page_capacity() + 4),
                    timers in vec(
                        timer_entry(P.name_len()),
                        P.timer_page_capacity() + 1..P.timer_page_capacity() + 4,
                    ),
                ) {
                    let (vl, tl) = (vms.len(), timers.len());
                    prop_assert_eq!(
                        P.encode_ack(&Ack::new(MsgId::CtlList, 0, vm_page(vms))),
                        Err(CodecError::PageFull { len: vl, max: P.vm_page_capacity() })
                    );
                    prop_assert_eq!(
                        P.encode_ack(&Ack::new(MsgId::CtlTimers, 0, timer_page(timers))),
                        Err(CodecError::PageFull { len: tl, max: P.timer_page_capacity() })
                    );
                }

                /// DM_PAUSE and DM_CONTINUE exist only in the profiles that number them.
                #[test]
                fn pause_and_continue_need_their_profile(ts in u64s()) {
                    for body in [Body::DmPause, Body::DmContinue] {
                        let id = body.id();
                        let got = P.encode_request(&Request::new(ts, body));
                        if P.wire_id(id).is_some() {
                            prop_assert!(got.is_ok(), "{} encodes in {}", id, P);
                        } else {
                            prop_assert_eq!(
                                got,
                                Err(CodecError::NotInProfile { id, profile: P.label() })
                            );
                        }
                    }
                }
            }
        }
    };
}

profile_properties!(profile_f, Profile::F);
profile_properties!(profile_e, Profile::E);
profile_properties!(profile_d, Profile::D);

/// Profile D is the one with DM_PAUSE / DM_CONTINUE; F and E are not.
#[test]
fn pause_and_continue_belong_to_profile_d_only() {
    for id in [MsgId::DmPause, MsgId::DmContinue] {
        assert!(Profile::D.wire_id(id).is_some());
        assert!(Profile::F.wire_id(id).is_none());
        assert!(Profile::E.wire_id(id).is_none());
    }
}
