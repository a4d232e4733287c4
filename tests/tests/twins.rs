//! The proptest twins of the IPC library's fuzz targets: each runs the oracle of its target
//! (`acrn_tests::oracle`) on generated inputs, on mutations of the seed corpus, and on every
//! file of the corpus kept in `fuzz/corpus/<target>/` (the seeds and every input a fuzzer
//! ever crashed on), so what the fuzzer found stays fixed without a fuzzer. The twins of
//! acrnd's targets (`timer_store`, `launch_dir`) are in `acrnd/tests/it/twins.rs`.
//!
//! The seeds are built here from the golden vectors captured from the C programs
//! (`mngr-ipc/tests/fixtures/`); `corpus_holds_every_seed` fails if `fuzz/corpus` lacks one.
//! To write them: `ACRN_WRITE_CORPUS=1 cargo test -p acrn-tests --test twins`.

#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;

use acrn_tests::frames::unhex;
use acrn_tests::oracle;
use proptest::prelude::*;
use serde_json::Value;

/// The fuzz targets of the IPC library, named as in `fuzz/Cargo.toml`.
const TARGETS: [&str; 4] = ["mngr_msg", "server_stream", "cbc_service", "cbc_link"];

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("a fixture is JSON")
}

fn hex_of(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex is a string");
    unhex(s).unwrap_or_else(|| panic!("not hex: {s:?}"))
}

/// The cases of one `struct mngr_msg` capture: (name, bytes).
type Cases = Vec<(String, Vec<u8>)>;

/// The `struct mngr_msg` captures: (fixture label, profile index in `oracle::profiles`,
/// cases).
fn msg_captures() -> Vec<(&'static str, u8, Cases)> {
    let fixtures = [
        (
            "f",
            0u8,
            include_str!("../../mngr-ipc/tests/fixtures/mngr_msg_profile_f.json"),
        ),
        (
            "e",
            1,
            include_str!("../../mngr-ipc/tests/fixtures/mngr_msg_profile_e.json"),
        ),
        (
            "d32",
            3,
            include_str!("../../mngr-ipc/tests/fixtures/mngr_msg_name32_d_ids.json"),
        ),
    ];
    fixtures
        .into_iter()
        .map(|(label, profile, text)| {
            let cases = json(text)["cases"]
                .as_array()
                .expect("cases")
                .iter()
                .map(|c| {
                    let kind = c["kind"].as_str().expect("kind");
                    let name = c["case"].as_str().expect("case");
                    let name = if name.starts_with(kind) {
                        name.to_owned()
                    } else {
                        format!("{kind}.{name}")
                    };
                    (name, hex_of(&c["hex"]))
                })
                .collect();
            (label, profile, cases)
        })
        .collect()
}

/// Every hex frame of one list of the CBC fixture, concatenated.
fn cbc_stream(list: &str) -> Vec<u8> {
    let cbc = json(include_str!(
        "../../mngr-ipc/tests/fixtures/cbc_lifecycle.json"
    ));
    cbc[list]
        .as_array()
        .expect("a list")
        .iter()
        // RTC deltas the C code refuses to encode have no bytes.
        .filter_map(|e| match e.get("hex") {
            Some(Value::Null) => None,
            Some(h) => Some(hex_of(h)),
            None => Some(hex_of(e)),
        })
        .flatten()
        .collect()
}

/// The seed corpus: target → file name → bytes.
fn seeds() -> BTreeMap<&'static str, BTreeMap<String, Vec<u8>>> {
    let mut all: BTreeMap<&str, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut add = |target: &'static str, name: String, bytes: Vec<u8>| {
        all.entry(target).or_default().insert(name, bytes);
    };
    for (label, profile, cases) in msg_captures() {
        let mut requests = Vec::new();
        for (name, bytes) in &cases {
            add("mngr_msg", format!("{label}-{name}"), bytes.clone());
            if name.starts_with("request") {
                requests.extend_from_slice(bytes);
            }
        }
        // Every handler, reads of 1..=97 and 113..=209 bytes, every request in a row.
        let head = [0xF0 | profile, 3, 96, 0, 208];
        add(
            "server_stream",
            format!("{label}-requests"),
            [&head[..], &requests].concat(),
        );
        // Half the ids handled, a message without magic after the first.
        let mut broken = requests[..2 * mngr_ipc::MSG_LEN].to_vec();
        broken[mngr_ipc::MSG_LEN] ^= 0xFF;
        add(
            "server_stream",
            format!("{label}-no-magic"),
            [&[0x50 | profile, 0, 6][..], &broken].concat(),
        );
    }
    let to_ioc = cbc_stream("soc_to_ioc");
    let from_ioc = cbc_stream("ioc_to_soc");
    let rtc = cbc_stream("rtc");
    let suppress = cbc_stream("suppress");
    let link = cbc_stream("link");
    add(
        "cbc_service",
        "to-ioc".into(),
        [&[0, 0, 3][..], &to_ioc].concat(),
    );
    add(
        "cbc_service",
        "from-ioc".into(),
        [&[0, 1, 1, 6][..], &from_ioc].concat(),
    );
    add(
        "cbc_service",
        "rtc-suppress-garbage".into(),
        [&[0, 0, 2][..], &rtc, &[0xFF, 0x07, 0x00], &suppress].concat(),
    );
    add("cbc_link", "link".into(), [&[0, 0, 7][..], &link].concat());
    add(
        "cbc_link",
        "link-garbage".into(),
        [
            &[0, 1, 1, 11][..],
            &[0x05, 0xFF][..],
            &link,
            &[0x05, 0x00, 0x0E],
        ]
        .concat(),
    );
    all
}

fn run(target: &str, data: &[u8]) {
    match target {
        "mngr_msg" => oracle::mngr_msg(data),
        "server_stream" => oracle::server_stream(data),
        "cbc_service" => oracle::cbc_service(data),
        "cbc_link" => oracle::cbc_link(data),
        other => panic!("no oracle {other}"),
    }
}

acrn_tests::corpus_tests!(seeds: seeds, targets: TARGETS, run: run);

proptest! {
    #[test]
    fn mngr_msg_twin(data in inputs("mngr_msg")) {
        oracle::mngr_msg(&data);
    }

    #[test]
    fn server_stream_twin(data in inputs("server_stream")) {
        oracle::server_stream(&data);
    }

    #[test]
    fn cbc_service_twin(data in inputs("cbc_service")) {
        oracle::cbc_service(&data);
    }

    #[test]
    fn cbc_link_twin(data in inputs("cbc_link")) {
        oracle::cbc_link(&data);
    }
}

/// How the oracles cut a stream into reads.
#[test]
fn chunks_cover_the_input_with_sizes_from_the_seeds() {
    assert_eq!(
        oracle::chunks(&[1, 2, 3, 4, 5], &[1, 0], 8),
        vec![&[1, 2][..], &[3][..], &[4, 5][..]]
    );
    assert_eq!(
        oracle::chunks(&[1, 2, 3], &[], 8),
        vec![&[1, 2, 3][..]],
        "no seed: one read"
    );
    assert_eq!(
        oracle::chunks(&[1, 2, 3], &[9], 2),
        vec![&[1, 2][..], &[3][..]],
        "9 % 2 + 1"
    );
    assert!(oracle::chunks(&[], &[4], 8).is_empty());
}
