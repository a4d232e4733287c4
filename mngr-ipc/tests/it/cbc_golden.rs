//! CBC lifecycle frames against the bytes captured from the C programs
//! (`tests/fixtures/cbc_lifecycle.json`), and the stream reassemblers under garbage and
//! arbitrary chunking.

use acrn_tests::frames::unhex;
use mngr_ipc::cbc::{
    Frame, Heartbeat, LinkStream, ReasonClass, RtcWake, ServiceStream, classify, decode_link,
    encode_link,
};
use proptest::prelude::*;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("../fixtures/cbc_lifecycle.json")).expect("JSON")
}

fn hex(s: &str) -> Vec<u8> {
    unhex(s).unwrap_or_else(|| panic!("not hex: {s:?}"))
}

fn four(s: &str) -> [u8; 4] {
    hex(s).try_into().expect("4 bytes")
}

fn items<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key].as_array().expect(key)
}

#[test]
fn heartbeats_and_suppress_frames() {
    let f = fixture();
    for e in items(&f, "soc_to_ioc") {
        let hb = match e["frame"].as_str().expect("frame") {
            "heartbeat.init" => Heartbeat::INIT,
            "heartbeat.active" => Heartbeat::ACTIVE,
            "heartbeat.shutdown_delay" => Heartbeat::SHUTDOWN_DELAY,
            "heartbeat.s5" => Heartbeat::S5,
            "heartbeat.reboot" => Heartbeat::REBOOT,
            "heartbeat.s3" => Heartbeat::S3,
            other => panic!("unexpected {other}"),
        };
        let bytes = four(e["hex"].as_str().expect("hex"));
        assert_eq!(Frame::Heartbeat(hb).encode(), Ok(bytes), "{e}");
        assert_eq!(Frame::decode(bytes), Ok(Frame::Heartbeat(hb)), "{e}");
    }
    for e in items(&f, "suppress") {
        let ms = u32::try_from(e["ms"].as_u64().expect("ms")).expect("u32");
        let bytes = four(e["hex"].as_str().expect("hex"));
        assert_eq!(Frame::SuppressHeartbeat { ms }.encode(), Ok(bytes), "{e}");
    }
}

#[test]
fn rtc_frames_follow_the_granularity_rule() {
    let f = fixture();
    let rtc = items(&f, "rtc");
    assert!(rtc.len() >= 15);
    for e in rtc {
        let delta = e["delta_s"].as_i64().expect("delta");
        let got = RtcWake::from_delta(delta).map(|w| Frame::Rtc(w).encode().expect("encodes"));
        let want = e["hex"].as_str().map(four);
        assert_eq!(got, want, "delta {delta}");
        if let Some(bytes) = want {
            let Ok(Frame::Rtc(w)) = Frame::decode(bytes) else {
                panic!("decodes as RTC");
            };
            let back = i64::try_from(w.seconds()).expect("fits");
            assert!(back <= delta, "rounds down: {delta} -> {back}");
        }
    }
}

#[test]
fn wakeup_reasons_decode_and_classify() {
    let f = fixture();
    for e in items(&f, "ioc_to_soc") {
        let bytes = four(e["hex"].as_str().expect("hex"));
        let reason = u32::try_from(e["reason"].as_u64().expect("reason")).expect("u32");
        assert_eq!(Frame::decode(bytes), Ok(Frame::WakeupReason(reason)));
        assert_eq!(Frame::WakeupReason(reason).encode(), Ok(bytes));
        let force = e["force_s5"].as_bool().expect("bool");
        let want = match e["class"].as_str().expect("class") {
            "ioc_shutdown" => ReasonClass::PowerOff,
            "shutdown_request" => ReasonClass::ShutdownRequest { force_s5: force },
            "alive" => ReasonClass::Alive,
            c => panic!("class {c}"),
        };
        assert_eq!(classify(reason), want, "{e}");
    }
}

#[test]
fn ignored_frames_never_reach_the_consumer_as_reasons() {
    let f = fixture();
    let mut s = ServiceStream::new();
    for e in items(&f, "ignored") {
        s.feed(&hex(e.as_str().expect("hex")));
    }
    s.feed(&four("01200000"));
    let mut got = Vec::new();
    while let Some(fr) = s.next_frame() {
        got.push(fr);
    }
    // 06 is a logic-mode frame (receivers ignore it); 07 is garbage, dropped byte by byte.
    assert_eq!(
        got,
        vec![Frame::LogicMode([1, 0, 0]), Frame::WakeupReason(0x20)]
    );
    assert_eq!(s.dropped(), 4);
}

#[test]
fn link_frames_match_the_original_packer() {
    let f = fixture();
    for e in items(&f, "link") {
        let seq = u8::try_from(e["seq"].as_u64().expect("seq")).expect("u8");
        let mux = u8::try_from(e["mux"].as_u64().expect("mux")).expect("u8");
        let prio = u8::try_from(e["prio"].as_u64().expect("prio")).expect("u8");
        let service = hex(e["service"].as_str().expect("service"));
        let wire = hex(e["hex"].as_str().expect("hex"));
        assert_eq!(
            encode_link(seq, mux, prio, &service),
            Ok(wire.clone()),
            "{e}"
        );
        let d = decode_link(&wire).expect("decodes");
        assert_eq!((d.seq, d.mux, d.prio), (seq, mux, prio));
        assert_eq!(&d.region[..service.len()], service.as_slice());
        assert!(
            d.region[service.len()..].iter().all(|&b| b == 0xFF),
            "padding"
        );
        assert_eq!(d.to_bytes(), wire, "{e}: re-framed as received");
    }
}

#[test]
fn received_bytes_are_kept_as_they_came() {
    // A heartbeat whose unused fourth byte is set: decoding ignores it, the log must not.
    let mut c = mngr_ipc::line::LineCodec::new(mngr_ipc::line::LineMode::Cdev);
    c.feed(&[0x02, 0x01, 0x00, 0x5a]);
    assert_eq!(c.next_frame(), Some(Frame::Heartbeat(Heartbeat::ACTIVE)));
    assert_eq!(c.last_service_bytes(), [0x02, 0x01, 0x00, 0x5a]);
    let mut u = mngr_ipc::line::LineCodec::new(mngr_ipc::line::LineMode::Uart);
    let wire = hex("05010e02010000e9");
    u.feed(&wire);
    assert_eq!(u.next_frame(), Some(Frame::Heartbeat(Heartbeat::ACTIVE)));
    assert_eq!(u.last_service_bytes(), [0x02, 0x01, 0x00, 0x00]);
    assert_eq!(u.last_link_bytes(), wire.as_slice());
}

#[test]
fn link_stream_resynchronises_after_garbage_bad_length_and_bad_checksum() {
    let good = hex("05000e012000804c");
    let mut bad_sum = hex("05010e01200000cb");
    bad_sum[7] ^= 0x10;
    let mut s = LinkStream::new();
    let mut input = vec![0x00, 0xFF, 0x05, 0x7C, 0x0E]; // SOF with LEN 31: too long
    input.extend_from_slice(&bad_sum);
    input.extend_from_slice(&[0x05, 0x80, 0x11]); // extension bit set
    input.extend_from_slice(&good);
    for b in &input {
        s.feed(&[*b]);
    }
    let frame = s.next_frame().expect("the good frame");
    assert_eq!(frame.lifecycle(), Some(Ok(Frame::WakeupReason(0x80_0020))));
    assert!(s.next_frame().is_none());
    assert_eq!(
        s.dropped(),
        u64::try_from(input.len() - good.len()).expect("fits")
    );
}

fn frames() -> impl Strategy<Value = Vec<Frame>> {
    let frame = prop_oneof![
        (0u32..=0xFF_FFFF).prop_map(Frame::WakeupReason),
        (any::<u8>(), any::<u8>())
            .prop_map(|(command, action)| Frame::Heartbeat(Heartbeat { command, action })),
        (0u32..=0xFF_FFFF).prop_map(|ms| Frame::SuppressHeartbeat { ms }),
        (1i64..4_000_000_000).prop_map(|d| Frame::Rtc(RtcWake::from_delta(d).expect("valid"))),
    ];
    prop::collection::vec(frame, 0..20)
}

proptest! {
    #[test]
    fn service_stream_survives_any_chunking(fs in frames(), cuts in prop::collection::vec(1usize..9, 0..40)) {
        let bytes: Vec<u8> = fs.iter().flat_map(|f| f.encode().expect("valid")).collect();
        let mut s = ServiceStream::new();
        let mut got = Vec::new();
        let mut rest = bytes.as_slice();
        let mut cuts = cuts.into_iter();
        while !rest.is_empty() {
            let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
            s.feed(&rest[..n]);
            rest = &rest[n..];
            while let Some(f) = s.next_frame() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, fs);
        prop_assert_eq!(s.dropped(), 0);
    }

    #[test]
    fn link_stream_survives_any_chunking(fs in frames(), cuts in prop::collection::vec(1usize..13, 0..40)) {
        let bytes: Vec<u8> = fs
            .iter()
            .enumerate()
            .flat_map(|(i, f)| {
                let seq = u8::try_from(i % 4).expect("small");
                encode_link(seq, 1, 6, &f.encode().expect("valid")).expect("valid")
            })
            .collect();
        let mut s = LinkStream::new();
        let mut got = Vec::new();
        let mut rest = bytes.as_slice();
        let mut cuts = cuts.into_iter();
        while !rest.is_empty() {
            let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
            s.feed(&rest[..n]);
            rest = &rest[n..];
            while let Some(f) = s.next_frame() {
                got.push(f.lifecycle().expect("lifecycle").expect("decodes"));
            }
        }
        prop_assert_eq!(got, fs);
    }

    #[test]
    fn streams_never_panic_on_noise(noise in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut s = ServiceStream::new();
        let mut l = LinkStream::new();
        s.feed(&noise);
        l.feed(&noise);
        while s.next_frame().is_some() {}
        while l.next_frame().is_some() {}
        prop_assert!(s.pending() < 4);
    }

    #[test]
    fn good_frame_after_noise_is_found(noise in prop::collection::vec(any::<u8>(), 0..64)) {
        // Noise is followed by more than a maximal frame's worth of non-SOF filler, so any
        // false start inside the noise is resolved before the real frame arrives.
        let mut l = LinkStream::new();
        l.feed(&noise);
        l.feed(&[0u8; 100]);
        let good = encode_link(2, 1, 6, &[1, 0, 2, 0]).expect("valid");
        l.feed(&good);
        let mut last = None;
        while let Some(f) = l.next_frame() {
            last = Some(f);
        }
        prop_assert_eq!(last.and_then(|f| f.lifecycle()), Some(Ok(Frame::WakeupReason(0x200))));
    }
}
