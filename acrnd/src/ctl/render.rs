//! What acrnctl prints, for humans or, with `--json`, for scripts: the VM list, the timer
//! list, acrnd's status, and errors, states and answers in words. Nothing here talks to a
//! daemon; nothing printed uses Rust's `Debug` formatting.

use mngr_ipc::msg::{AckPayload, Status, TimerEntry, VmEntry, err, vm_state};
use mngr_ipc::vocabulary::{ACRND, Phase};
use serde_json::{Value, json};

/// A human reading of an `err` value.
pub fn describe(e: i32) -> String {
    let what = match e {
        err::NOT_FOUND => "no such VM",
        err::NOT_PERMITTED => "not permitted",
        err::BUSY => "another operation is in progress",
        err::INVALID => "not possible in the VM's state",
        err::UNKNOWN_ID => "not supported by this acrnd",
        err::UNSUPPORTED => "not supported by this VM",
        err::TIMED_OUT => "timed out",
        _ => "failed",
    };
    format!("{what} ({e})")
}

/// The text of a VM state number.
pub fn state_name(s: i32) -> &'static str {
    match s {
        vm_state::STOPPED => "stopped",
        vm_state::STARTED => "started",
        vm_state::PAUSED => "paused",
        vm_state::SUSPENDED => "suspended",
        vm_state::UNTRACKED => "untracked",
        vm_state::STARTING => "starting",
        vm_state::STOPPING => "stopping",
        vm_state::SUSPENDING => "suspending",
        _ => "unknown",
    }
}

/// The word of a CTL_STATUS phase ([`Phase::name`]), `unknown` for a value this acrnctl
/// does not know.
pub fn phase_name(phase: u32) -> &'static str {
    Phase::from_wire(phase).map_or("unknown", Phase::name)
}

/// An epoch time as UTC date and time; `-` for none (0 or less).
pub fn when(epoch: i64) -> String {
    if epoch <= 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp(epoch, 0).map_or_else(
        || epoch.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// In words, what went wrong with an answer: the error it carries, or else what kind of
/// answer it was (one the request did not call for).
pub fn answer(payload: &AckPayload) -> String {
    let (kind, error) = match payload {
        AckPayload::Err(e) => ("an error code", Some(*e)),
        AckPayload::Reason(_) => ("a wakeup reason", None),
        AckPayload::State(_) => ("a VM state", None),
        AckPayload::VmPage(p) => ("a page of the VM list", Some(p.err)),
        AckPayload::TimerPage(p) => ("a page of the timer list", Some(p.err)),
        AckPayload::Status(s) => ("a status", Some(s.err)),
    };
    match error {
        Some(e) if e != err::OK => describe(e),
        _ => format!("an unexpected answer ({kind})"),
    }
}

/// The VM list as a table: name, state, device-model pid (`-` for none), next wake-up.
pub fn list_table(vms: &[VmEntry]) -> String {
    if vms.is_empty() {
        return "There are no VMs".into();
    }
    let mut out = format!(
        "{:<16} {:<11} {:>8}  {}",
        "NAME", "STATE", "PID", "NEXT WAKE-UP"
    );
    for v in vms {
        let pid = if v.pid > 0 {
            v.pid.to_string()
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "\n{:<16} {:<11} {:>8}  {}",
            v.name,
            state_name(v.state),
            pid,
            when(v.next_wake)
        ));
    }
    out
}

/// The VM list as a JSON array of `{name, state, pid, next_wake}` (`next_wake` epoch
/// seconds, null for none).
pub fn list_json(vms: &[VmEntry]) -> String {
    let all: Vec<Value> = vms
        .iter()
        .map(|v| {
            json!({
                "name": v.name, "state": state_name(v.state), "pid": v.pid,
                "next_wake": (v.next_wake > 0).then_some(v.next_wake),
            })
        })
        .collect();
    serde_json::to_string_pretty(&all).unwrap_or_default()
}

/// The pending wake-ups, one per line: VM name and time.
pub fn timers_text(timers: &[TimerEntry]) -> String {
    if timers.is_empty() {
        return "No pending wake-ups".into();
    }
    timers
        .iter()
        .map(|e| format!("{:<16} {}", e.name, when(e.when)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The pending wake-ups as a JSON array of `{name, when}` (epoch seconds).
pub fn timers_json(timers: &[TimerEntry]) -> String {
    let all: Vec<Value> = timers
        .iter()
        .map(|e| json!({"name": e.name, "when": e.when}))
        .collect();
    serde_json::to_string_pretty(&all).unwrap_or_default()
}

/// acrnd's status and whether a lifecycle service's socket is alive (`lcs_socket`), as
/// two lines of text.
pub fn status_text(s: &Status, lcs_socket: bool) -> String {
    format!(
        "{ACRND}: running ({}), {} VM(s), wakeup reason {:#x}\nlifecycle service: {}",
        phase_name(s.phase),
        s.vms,
        s.wakeup_reason,
        if lcs_socket {
            "reachable"
        } else {
            "not reachable"
        }
    )
}

/// acrnd's status as one JSON object: `acrnd` ("running"), `phase`, `vms`,
/// `wakeup_reason`, `lcs_reachable_by_acrnd` and `lcs_socket`.
pub fn status_json(s: &Status, lcs_socket: bool) -> String {
    json!({
        ACRND: "running", "phase": phase_name(s.phase), "vms": s.vms,
        "wakeup_reason": s.wakeup_reason, "lcs_reachable_by_acrnd": s.lcs_reachable == 1,
        "lcs_socket": lcs_socket,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mngr_ipc::msg::{TimerPage, VmPage};

    fn vm(name: &str, state: i32, pid: i32, next_wake: i64) -> VmEntry {
        VmEntry {
            name: name.into(),
            state,
            pid,
            next_wake,
        }
    }

    fn status(phase: u32) -> Status {
        Status {
            err: 0,
            wakeup_reason: 0x20,
            vms: 2,
            lcs_reachable: 1,
            phase,
        }
    }

    #[test]
    fn list_table_has_a_header_and_a_row_per_vm() {
        let vms = [
            vm("vm1", vm_state::STARTED, 4242, 1_700_000_000),
            vm("rt-vm", vm_state::STOPPED, 0, 0),
        ];
        let expected = "\
NAME             STATE            PID  NEXT WAKE-UP
vm1              started         4242  2023-11-14 22:13:20 UTC
rt-vm            stopped            -  -";
        assert_eq!(list_table(&vms), expected);
        assert_eq!(list_table(&[]), "There are no VMs");
    }

    #[test]
    fn list_json_shape() {
        let vms = [
            vm("vm1", vm_state::SUSPENDED, 7, 1_700_000_000),
            vm("vm2", 99, 0, 0),
        ];
        let v: Value = serde_json::from_str(&list_json(&vms)).expect("JSON");
        assert_eq!(
            v,
            json!([
                {"name": "vm1", "state": "suspended", "pid": 7, "next_wake": 1_700_000_000},
                {"name": "vm2", "state": "unknown", "pid": 0, "next_wake": null},
            ])
        );
        assert_eq!(list_json(&[]), "[]");
    }

    #[test]
    fn timers_text_and_json() {
        let t = [TimerEntry {
            name: "vm1".into(),
            when: 1_700_000_000,
        }];
        assert_eq!(timers_text(&t), "vm1              2023-11-14 22:13:20 UTC");
        assert_eq!(timers_text(&[]), "No pending wake-ups");
        let v: Value = serde_json::from_str(&timers_json(&t)).expect("JSON");
        assert_eq!(v, json!([{"name": "vm1", "when": 1_700_000_000}]));
    }

    #[test]
    fn status_text_names_every_phase() {
        for (phase, word) in [
            (0, "idle"),
            (1, "stopping"),
            (2, "suspending"),
            (3, "resuming"),
        ] {
            assert_eq!(
                status_text(&status(phase), true),
                format!(
                    "acrnd: running ({word}), 2 VM(s), wakeup reason 0x20\n\
                     lifecycle service: reachable"
                )
            );
        }
        assert_eq!(
            status_text(&status(4), false),
            "acrnd: running (unknown), 2 VM(s), wakeup reason 0x20\n\
             lifecycle service: not reachable"
        );
        assert_eq!(phase_name(u32::MAX), "unknown");
    }

    #[test]
    fn status_json_shape() {
        let v: Value = serde_json::from_str(&status_json(&status(2), false)).expect("JSON");
        assert_eq!(
            v,
            json!({
                "acrnd": "running", "phase": "suspending", "vms": 2, "wakeup_reason": 32,
                "lcs_reachable_by_acrnd": true, "lcs_socket": false,
            })
        );
        let mut s = status(9);
        s.lcs_reachable = 0;
        let v: Value = serde_json::from_str(&status_json(&s, true)).expect("JSON");
        assert_eq!(v["phase"], "unknown");
        assert_eq!(v["lcs_reachable_by_acrnd"], false);
    }

    #[test]
    fn answers_in_words() {
        assert_eq!(
            answer(&AckPayload::Err(err::NOT_PERMITTED)),
            "not permitted (-13)"
        );
        let refused = VmPage {
            err: err::BUSY,
            ..VmPage::default()
        };
        assert_eq!(
            answer(&AckPayload::VmPage(refused)),
            "another operation is in progress (-16)"
        );
        assert_eq!(
            answer(&AckPayload::TimerPage(TimerPage::default())),
            "an unexpected answer (a page of the timer list)"
        );
        assert_eq!(
            answer(&AckPayload::Reason(0x20)),
            "an unexpected answer (a wakeup reason)"
        );
        assert_eq!(
            answer(&AckPayload::Status(status(0))),
            "an unexpected answer (a status)"
        );
        for a in [AckPayload::State(1), AckPayload::Err(0)] {
            assert!(!answer(&a).contains('{'), "no Debug text");
        }
    }

    #[test]
    fn errors_states_and_times_in_words() {
        assert_eq!(describe(err::NOT_FOUND), "no such VM (-2)");
        assert_eq!(describe(-7), "failed (-7)");
        assert_eq!(state_name(vm_state::STARTED), "started");
        assert_eq!(state_name(1234), "unknown");
        assert_eq!(when(0), "-");
        assert_eq!(when(-5), "-");
        assert_eq!(when(86_400), "1970-01-02 00:00:00 UTC");
    }
}
