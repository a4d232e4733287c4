//! The `acrn-scenario` binary: its command line, its output and what it leaves behind.

use std::path::PathBuf;
use std::process::Command;

fn runner(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_acrn-scenario"))
        .args(args)
        .output()
        .expect("acrn-scenario runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lists_every_scenario_and_rejects_unknown_ones() {
    let (code, out, _) = runner(&["--list"]);
    assert_eq!(code, 0);
    for s in acrn_tests::scenarios::SCENARIOS {
        assert!(out.contains(s.name), "{} missing from {out}", s.name);
    }
    assert!(
        out.contains("full-cycle") && out.contains("(default)"),
        "{out}"
    );
    let (code, _, err) = runner(&["--no-build", "--scenario", "no-such-thing"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--list"), "{err}");
    let (code, _, _) = runner(&["--no-build", "--vms", "0"]);
    assert_eq!(code, 2);
}

#[test]
fn plays_a_scenario_prints_the_timeline_and_keeps_the_merged_log() {
    let (code, out, err) = runner(&[
        "--no-build",
        "--fast",
        "--keep",
        "--vms",
        "2",
        "--scenario",
        "power-on",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    // The live timeline: the line's frames with their names, IPC, states, the checks.
    for want in [
        "ioc-sim  SoC → IOC   02 03 00 00  HB-INIT",
        "ioc-sim  IOC → SoC   01 20 00 00  WR(0x000020)",
        "sos-lcs  state default → keep_alive",
        "acrnd    wakeup reason 0x20 (for Boot)",
        "acrnd    vm2: starting → started",
        "runner   ✔ acrnctl list: vm1 started, vm2 started",
        "== scenario power-on: PASS",
        "SoC → IOC:  HB-ACTIVE",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    let dir = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("run dir:"))
        .map(|l| PathBuf::from(l.trim().trim_end_matches(" (kept)")))
        .expect("run dir printed");
    let timeline = std::fs::read_to_string(dir.join("timeline.jsonl")).expect("timeline.jsonl");
    let events: Vec<serde_json::Value> = timeline
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(events.len() > 50, "{} events", events.len());
    let times: Vec<u64> = events
        .iter()
        .map(|e| e["t_ns"].as_u64().expect("t_ns"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "merged in time order"
    );
    for actor in ["ioc-sim", "sos-lcs", "acrnd", "vm1", "vm2", "runner"] {
        assert!(
            events.iter().any(|e| e["actor"] == actor),
            "{actor} in the timeline"
        );
    }
    // Every process it started is gone.
    let sock = dir.join("sos/mngr");
    let live = mngr_ipc::naming::candidates(&sock, "acrnd").expect("socket dir");
    assert!(live.iter().all(|c| !c.alive), "{live:?}");
    std::fs::remove_dir_all(&dir).expect("remove the kept run dir");
}
