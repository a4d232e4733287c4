//! What must hold for any input to the IPC library's code that reads peer bytes: the bodies
//! of its fuzz targets (`fuzz/fuzz_targets/*.rs`, run by `cargo fuzz`) and of their proptest
//! twins (`tests/tests/twins.rs`, run by `cargo test`), so both check the same things.
//!
//! Each oracle takes arbitrary bytes and panics, with a message naming the broken property,
//! if the code under test misbehaves. The first bytes of some inputs steer the check (an ABI
//! profile, how the stream is cut into reads); the layout is documented per oracle so that a
//! corpus file can be written by hand.
//!
//! | oracle | code under test |
//! |---|---|
//! | [`mngr_msg`] | `Profile::decode_request` / `decode_ack` of every profile |
//! | [`server_stream`] | `FrameReader` and `server::triage`: a server's reassembly and answers |
//! | [`cbc_service`] | `cbc::ServiceStream` (4-byte lifecycle frames, `/dev/cbc-lifecycle`) |
//! | [`cbc_link`] | `cbc::LinkStream` (link frames on the IOC's UART) |
//!
//! The oracles of acrnd's readers (fuzz targets `timer_store`, acrnd's timer store, and
//! `launch_dir`, its launch-dir scanner) are acrnd's own: `acrnd/tests/oracle/`, with their
//! twins in `acrnd/tests/it/twins.rs`. This crate does not depend on acrnd (acrnd's tests
//! depend on it).

use mngr_ipc::cbc::{self, Frame, LinkStream, ServiceStream};
use mngr_ipc::codec::{self, FrameReader};
use mngr_ipc::msg::{MNGR_MSG_MAGIC, err};
use mngr_ipc::profile::IDS_D;
use mngr_ipc::server::{self, Disposition};
use mngr_ipc::{CodecError, MSG_LEN, MsgId, Profile, Wire};

/// The ABI profiles the codec serves: F, E, D and the 32-byte-name build of D.
pub fn profiles() -> [Profile; 4] {
    [
        Profile::F,
        Profile::E,
        Profile::D,
        Profile::custom("D32", 32, IDS_D).expect("a valid profile"),
    ]
}

/// The bytes cut into reads: the sizes cycle through `seeds` (each `seed % max + 1`
/// bytes), so a fuzzer that mutates the seeds explores every way a stream can arrive.
pub fn chunks<'a>(data: &'a [u8], seeds: &[u8], max: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let size = seeds
            .get(i % seeds.len().max(1))
            .map_or(rest.len(), |&s| usize::from(s) % max + 1)
            .min(rest.len());
        let (head, tail) = rest.split_at(size);
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}

/// Splits `data` into `(selector, chunk seeds, rest)`: byte 0 is the selector, byte 1 the
/// number of seeds (1..=16), then the seeds. Short inputs get defaults.
fn steering(data: &[u8]) -> (u8, &[u8], &[u8]) {
    let selector = data.first().copied().unwrap_or(0);
    let n = data.get(1).map_or(1, |&b| usize::from(b) % 16 + 1);
    let rest = data.get(2..).unwrap_or(&[]);
    let n = n.min(rest.len());
    (selector, &rest[..n], &rest[n..])
}

/// Zero-padded or truncated to one message.
fn to_wire(data: &[u8]) -> Wire {
    let mut w = [0u8; MSG_LEN];
    let n = data.len().min(MSG_LEN);
    w[..n].copy_from_slice(&data[..n]);
    w
}

/// Re-encoding what the codec accepted gives back the bytes it read: magic, id, timestamp
/// and the whole union; the C padding (12..16) is written as zero.
fn assert_faithful(what: &str, read: &[u8], written: &Wire) {
    assert_eq!(
        &written[..12],
        &read[..12],
        "{what}: magic and id re-encoded"
    );
    assert_eq!(
        &written[12..16],
        &[0u8; 4],
        "{what}: padding written as zero"
    );
    assert_eq!(
        &written[16..],
        &read[16..],
        "{what}: timestamp and union re-encoded"
    );
}

/// Request and ack decoding of every profile, on the bytes as given and as one message.
///
/// Input: any bytes. What decodes re-encodes to the same bytes and decodes again to the
/// same value; anything not [`MSG_LEN`] long is a length error; nothing panics.
pub fn mngr_msg(data: &[u8]) {
    let wire = to_wire(data);
    for p in profiles() {
        for bytes in [data, &wire[..]] {
            let label = p.label();
            let decoded = p.decode_request(bytes);
            if bytes.len() != MSG_LEN {
                assert_eq!(decoded, Err(CodecError::Length(bytes.len())), "{label}");
                for id in MsgId::ALL {
                    assert_eq!(
                        p.decode_ack(bytes, id),
                        Err(CodecError::Length(bytes.len())),
                        "{label} ack of {id}"
                    );
                }
                continue;
            }
            if let Ok(req) = decoded {
                let again = p
                    .encode_request(&req)
                    .unwrap_or_else(|e| panic!("{label}: decoded request {req:?} re-encodes: {e}"));
                assert_eq!(p.decode_request(&again).as_ref(), Ok(&req), "{label}");
                assert_faithful(label, bytes, &again);
            }
            for id in MsgId::ALL {
                let Ok(ack) = p.decode_ack(bytes, id) else {
                    continue;
                };
                let again = p
                    .encode_ack(&ack)
                    .unwrap_or_else(|e| panic!("{label}: decoded ack {ack:?} re-encodes: {e}"));
                assert_eq!(p.decode_ack(&again, ack.id).as_ref(), Ok(&ack), "{label}");
                assert_faithful(label, bytes, &again);
            }
        }
    }
}

/// A server's reassembly and its answers that need no handler.
///
/// Input: byte 0 picks the profile (`% 4` into [`profiles`]) and, in its high nibble,
/// which ids have handlers (all if 0xF); byte 1 and the seeds cut the rest into reads
/// (see [`chunks`]). The messages come out the same however the stream is cut, in order,
/// with the tail held; each is closed on (no magic: nothing after it is read), answered
/// `-ENOSYS` (unknown or unhandled id), `-EINVAL` (undecodable) or handed to its handler
/// with a request that re-encodes to its bytes.
pub fn server_stream(data: &[u8]) {
    let (selector, seeds, stream) = steering(data);
    let profile = profiles()[usize::from(selector % 4)];
    let mask = selector >> 4;
    let handled = |id: MsgId| {
        let i = MsgId::ALL.iter().position(|&x| x == id).unwrap_or(0);
        mask == 0xF || mask >> (i % 4) & 1 == 1
    };

    let read = |cuts: Vec<&[u8]>| {
        let mut reader = FrameReader::new();
        let mut frames = Vec::new();
        for mut chunk in cuts {
            while !chunk.is_empty() {
                let (frame, rest) = reader.push(chunk);
                assert!(rest.len() < chunk.len(), "push takes at least one byte");
                frames.extend(frame);
                chunk = rest;
            }
        }
        (frames, reader.pending())
    };
    let (frames, pending) = read(chunks(stream, seeds, 2 * MSG_LEN));
    let expected: Vec<&[u8]> = stream.chunks_exact(MSG_LEN).collect();
    assert_eq!(frames.len(), expected.len(), "whole messages out");
    for (f, e) in frames.iter().zip(&expected) {
        assert_eq!(&f[..], *e, "messages come out as they went in");
    }
    assert_eq!(pending, stream.len() % MSG_LEN, "the tail is held");
    assert_eq!(read(vec![stream]), (frames.clone(), pending), "one read");

    for frame in &frames {
        let header = codec::peek_header(frame).expect("a whole message");
        let disposition = server::triage(profile, frame, handled);
        match &disposition {
            Disposition::Close { magic } => {
                assert_ne!(*magic, MNGR_MSG_MAGIC, "closed on a message with magic");
                assert_eq!(disposition.error_ack(), None, "no answer before closing");
                break;
            }
            Disposition::Unknown { header: h, id } => {
                assert_eq!(*h, header);
                assert_eq!(*id, profile.msg_id(header.msgid));
                assert!(id.is_none_or(|id| !handled(id)), "{id:?} has a handler");
                assert_error_ack(&disposition, &header, err::UNKNOWN_ID);
            }
            Disposition::Malformed {
                header: h,
                id,
                error,
            } => {
                assert_eq!(*h, header);
                assert!(handled(*id));
                assert_eq!(profile.decode_request(frame).as_ref(), Err(error));
                assert_error_ack(&disposition, &header, err::INVALID);
            }
            Disposition::Serve {
                header: h,
                id,
                request,
            } => {
                assert_eq!(*h, header);
                assert!(handled(*id));
                assert!(header.has_magic());
                assert_eq!(disposition.error_ack(), None);
                let again = profile
                    .encode_request(request)
                    .unwrap_or_else(|e| panic!("served request {request:?} re-encodes: {e}"));
                assert_faithful("served request", frame, &again);
            }
        }
    }
}

fn assert_error_ack(d: &Disposition, header: &codec::Header, code: i32) {
    let ack = d.error_ack().expect("an error ack");
    let h = codec::peek_header(&ack).expect("a whole message");
    assert!(h.has_magic(), "the ack has magic");
    assert_eq!(
        (h.msgid, h.timestamp),
        (header.msgid, header.timestamp),
        "id and time echoed"
    );
    assert_eq!(ack[24..28], code.to_le_bytes(), "err");
    assert!(
        ack[12..16].iter().chain(&ack[28..]).all(|&b| b == 0),
        "the rest is zero"
    );
}

/// Frames out of a stream, with the count of dropped bytes and of held bytes.
fn service_frames(cuts: Vec<&[u8]>) -> (Vec<(Frame, [u8; 4])>, u64, usize) {
    let mut s = ServiceStream::new();
    let mut out = Vec::new();
    for chunk in cuts {
        s.feed(chunk);
        while let Some(f) = s.next_frame() {
            out.push((f, s.last_bytes()));
        }
    }
    (out, s.dropped(), s.pending())
}

/// The lifecycle service stream of `/dev/cbc-lifecycle`.
///
/// Input: byte 0 unused, byte 1 and the seeds cut the rest into reads. However the bytes
/// arrive the same frames come out, every byte is a frame's, dropped, or held (fewer than
/// a frame's worth), every frame came from its bytes and encodes to bytes that decode to it.
pub fn cbc_service(data: &[u8]) {
    let (_, seeds, stream) = steering(data);
    let (frames, dropped, pending) = service_frames(chunks(stream, seeds, 8));
    assert_eq!(
        service_frames(vec![stream]),
        (frames.clone(), dropped, pending),
        "one read"
    );
    let taken = frames.len() * cbc::SERVICE_FRAME_LEN;
    assert_eq!(
        taken as u64 + dropped + pending as u64,
        stream.len() as u64,
        "every byte accounted for"
    );
    assert!(
        pending < cbc::SERVICE_FRAME_LEN,
        "a decodable frame is held back"
    );
    for (f, raw) in &frames {
        assert_eq!(
            Frame::decode(*raw).as_ref(),
            Ok(f),
            "the frame is its bytes'"
        );
        let bytes = f
            .encode()
            .unwrap_or_else(|e| panic!("decoded {f:?} re-encodes: {e}"));
        assert_eq!(Frame::decode(bytes).as_ref(), Ok(f), "re-encoded {f:?}");
    }
}

fn link_frames(cuts: Vec<&[u8]>) -> (Vec<cbc::LinkFrame>, u64, usize) {
    let mut s = LinkStream::new();
    let mut out = Vec::new();
    for chunk in cuts {
        s.feed(chunk);
        while let Some(f) = s.next_frame() {
            out.push(f);
        }
    }
    (out, s.dropped(), s.pending())
}

/// Link frames on the IOC's UART.
///
/// Input: byte 0 unused, byte 1 and the seeds cut the rest into reads. However the bytes
/// arrive the same frames come out, in the order they were in the stream and byte for byte
/// as they were sent; every byte is a frame's, dropped or held; a held tail is shorter than
/// the longest frame; a lifecycle frame's service bytes decode without panicking.
pub fn cbc_link(data: &[u8]) {
    let (_, seeds, stream) = steering(data);
    let (frames, dropped, pending) = link_frames(chunks(stream, seeds, 24));
    assert_eq!(
        link_frames(vec![stream]),
        (frames.clone(), dropped, pending),
        "one read"
    );
    let mut at = 0usize;
    let mut taken = 0usize;
    for f in &frames {
        let bytes = f.to_bytes();
        assert_eq!(cbc::decode_link(&bytes).as_ref(), Ok(f), "{f:?} round trip");
        let found = stream[at..]
            .windows(bytes.len())
            .position(|w| w == bytes.as_slice())
            .unwrap_or_else(|| panic!("{f:?} is not in the stream after offset {at}"));
        at += found + bytes.len();
        taken += bytes.len();
        let _ = f.lifecycle();
    }
    assert_eq!(
        (taken + pending) as u64 + dropped,
        stream.len() as u64,
        "every byte accounted for"
    );
    assert!(
        pending < cbc::MAX_LINK_FRAME,
        "held tail of {pending} bytes"
    );
    let _ = cbc::decode_link(stream);
}
