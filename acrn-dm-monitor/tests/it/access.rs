//! Who may ask what: DM_QUERY is open; with a policy, every state change is refused to the
//! peers it does not allow (by the server: no provider runs), allowed to the others;
//! without a policy everything is open.

use mngr_ipc::Profile;
use mngr_ipc::auth::Policy;
use mngr_ipc::event_log::{EventLog, read_events};
use mngr_ipc::msg::{AckPayload, Body, err, suspend_mode};

use crate::harness::{config, serve};

fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// A policy that allows one uid, not ours, and no group.
fn not_me() -> Policy {
    Policy::new(vec![my_uid().wrapping_add(1)], Vec::new())
}

fn state_changes() -> Vec<Body> {
    vec![
        Body::DmStop { force: 0 },
        Body::DmStop { force: 1 },
        Body::DmSuspend,
        Body::DmResume { reason: 0x20 },
        Body::DmBlkrescan {
            devargs: "3,/img".into(),
        },
    ]
}

#[test]
fn with_a_policy_a_peer_it_does_not_allow_may_query_but_not_change_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let mut cfg = config("vm1", dir.path(), Profile::F, Some(not_me()));
    cfg.event_log = EventLog::open(&events, "vm1").expect("event log");
    let (answers, dm) = serve(cfg, |a| {
        let mut answers = vec![("DM_QUERY", a.ask(Body::DmQuery))];
        for body in state_changes() {
            answers.push((body.id().name(), a.ask(body)));
        }
        // Not a monitor request: -ENOSYS for anyone.
        let timer = Body::AcrndTimer {
            name: "vm1".into(),
            t: 5,
        };
        answers.push(("ACRND_TIMER", a.ask(timer)));
        answers.push(("DM_QUERY", a.ask(Body::DmQuery)));
        answers
    });
    let refused = AckPayload::Err(err::NOT_PERMITTED);
    assert_eq!(
        answers,
        vec![
            ("DM_QUERY", AckPayload::State(0)),
            ("DM_STOP", refused.clone()),
            ("DM_STOP", refused.clone()),
            ("DM_SUSPEND", refused.clone()),
            ("DM_RESUME", refused.clone()),
            ("DM_BLKRESCAN", refused),
            ("ACRND_TIMER", AckPayload::Err(err::UNKNOWN_ID)),
            ("DM_QUERY", AckPayload::State(0)),
        ]
    );
    assert!(dm.calls.is_empty(), "no provider ran: {:?}", dm.calls);
    assert_eq!(dm.m.suspend_mode(), suspend_mode::NONE);
    assert_eq!(
        dm.m.wakeup_reason(),
        0,
        "a refused DM_RESUME stores nothing"
    );
    assert_eq!(dm.m.pending_to_acrnd(), 0, "nothing for acrnd");
    let ev = read_events(&events).expect("events");
    let refusals: Vec<_> = ev
        .iter()
        .filter(|e| e.kind == "ipc.refused")
        .map(|e| e.fields["msg"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        refusals,
        [
            "DM_STOP",
            "DM_STOP",
            "DM_SUSPEND",
            "DM_RESUME",
            "DM_BLKRESCAN"
        ]
    );
    assert!(
        ev.iter()
            .any(|e| e.kind == "ipc.ack" && e.fields["msg"] == "DM_QUERY"),
        "answered queries are logged"
    );
}

#[test]
fn with_a_policy_pause_and_continue_are_privileged_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config("vm1", dir.path(), Profile::D, Some(not_me()));
    let (answers, dm) = serve(cfg, |a| {
        [Body::DmPause, Body::DmContinue, Body::DmQuery].map(|b| a.ask(b))
    });
    assert_eq!(
        answers,
        [
            AckPayload::Err(err::NOT_PERMITTED),
            AckPayload::Err(err::NOT_PERMITTED),
            AckPayload::State(0)
        ]
    );
    assert!(dm.calls.is_empty(), "{:?}", dm.calls);
}

#[test]
fn a_peer_the_policy_allows_changes_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Policy::new(vec![my_uid()], Vec::new());
    let cfg = config("vm1", dir.path(), Profile::F, Some(me));
    let (answers, dm) = serve(cfg, |a| {
        state_changes()
            .into_iter()
            .map(|b| a.ask(b))
            .collect::<Vec<_>>()
    });
    assert_eq!(
        answers,
        vec![
            AckPayload::Err(0),
            AckPayload::Err(0),
            AckPayload::Err(0),
            AckPayload::Err(err::BUSY),
            AckPayload::Err(0),
        ],
        "the resume after a forced stop is refused by the monitor, not the policy"
    );
    assert_eq!(
        dm.calls,
        ["stop", "powered_off", "suspend", "resume", "rescan"],
        "providers ran"
    );
    assert_eq!(dm.m.suspend_mode(), suspend_mode::POWEROFF);
}

#[test]
fn without_a_policy_everything_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config("vm1", dir.path(), Profile::D, None);
    let (answers, dm) = serve(cfg, |a| {
        [
            Body::DmStop { force: 0 },
            Body::DmSuspend,
            Body::DmResume { reason: 0x200 },
            Body::DmPause,
            Body::DmContinue,
            Body::DmQuery,
        ]
        .map(|b| a.ask(b))
    });
    assert_eq!(
        answers,
        [
            AckPayload::Err(0),
            AckPayload::Err(0),
            AckPayload::Err(0),
            AckPayload::Err(0),
            AckPayload::Err(0),
            AckPayload::State(0)
        ]
    );
    assert_eq!(dm.calls, ["stop", "suspend", "resume", "pause", "unpause"]);
    assert_eq!(dm.m.wakeup_reason(), 0x200);
}
