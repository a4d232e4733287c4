//! The proptest twins of acrnd's fuzz targets (`timer_store`, `launch_dir`): each runs the
//! oracle of its target (`acrnd/tests/oracle/`) on generated inputs, on mutations of the
//! seed corpus, and on every file of the corpus kept in `fuzz/corpus/<target>/` (the seeds
//! and every input a fuzzer ever crashed on), so what the fuzzer found stays fixed without a
//! fuzzer. The twins of the IPC library's targets are in `tests/tests/twins.rs`.
//!
//! `corpus_holds_every_seed` fails if `fuzz/corpus` lacks a seed built here. To write them:
//! `ACRN_WRITE_CORPUS=1 cargo test -p acrnd --test it twins`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::oracle;

/// acrnd's fuzz targets, named as in `fuzz/Cargo.toml`.
const TARGETS: [&str; 2] = ["timer_store", "launch_dir"];

/// A launch-dir input entry (see `oracle::launch_dir`): `how` = kind + 4 × suffix.
fn entry(how: u8, stem: &str, content: &str) -> Vec<u8> {
    [&[how][..], stem.as_bytes(), &[0], content.as_bytes(), &[0]].concat()
}

/// The seed corpus: target → file name → bytes.
fn seeds() -> BTreeMap<&'static str, BTreeMap<String, Vec<u8>>> {
    let mut all: BTreeMap<&str, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut add = |target: &'static str, name: String, bytes: Vec<u8>| {
        all.entry(target).or_default().insert(name, bytes);
    };
    add(
        "timer_store",
        "good".into(),
        b"vm1\t1700000000\nsafety-vm\t1800000000\n".to_vec(),
    );
    add(
        "timer_store",
        "bad-lines".into(),
        b"vm1 1700000000\n\t5\nvm.x\t7\nvm2\t0\nvm3\t18446744073709551615\r\nvm2\t+9\nvm2\t3\n"
            .to_vec(),
    );
    add(
        "launch_dir",
        "vms".into(),
        [
            entry(4, "vm1", "#!/bin/sh\n"),
            entry(8, "vm1", "--rtc 30\n-s 2"),
            entry(6, "vm2", "#!/bin/sh\n"),
            entry(11, "vm2", ""),
            entry(5, "dir", ""),
            entry(7, "gone", ""),
            entry(4, "9bad", ""),
            entry(4, "acrnd", ""),
            entry(0, "notes.txt", "x"),
        ]
        .concat(),
    );
    all
}

fn run(target: &str, data: &[u8]) {
    match target {
        "timer_store" => oracle::timer_store(data),
        "launch_dir" => oracle::launch_dir_in(data, &std::env::temp_dir()).expect("a temp dir"),
        other => panic!("no oracle {other}"),
    }
}

acrn_tests::corpus_tests!(seeds: seeds, targets: TARGETS, run: run);

proptest! {
    #[test]
    fn timer_store_twin(data in inputs("timer_store")) {
        oracle::timer_store(&data);
    }
}

proptest! {
    // Each case builds a directory: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn launch_dir_twin(data in inputs("launch_dir")) {
        let dir = tempfile::tempdir().expect("a temp dir");
        oracle::launch_dir(&data, dir.path());
    }
}
