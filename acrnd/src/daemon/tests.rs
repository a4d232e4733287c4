//! The core's order: what was decided first is carried out first.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use clap::Parser;
use mngr_ipc::event_log::{EventLog, read_events};
use mngr_ipc::runtime::EventLoop;
use serde_json::json;

use super::{Acrnd, effects, rules};
use crate::config::Args;
use crate::orchestrator::{Command, Orchestrator};
use crate::timers::{TimerStore, Timers};

#[test]
fn commands_a_request_queued_run_before_those_of_a_later_event() {
    let dir = tempfile::tempdir().expect("dir");
    let events = dir.path().join("events.jsonl");
    let cfg = Args::try_parse_from([
        "acrnd".as_ref(),
        "--socket-dir".as_ref(),
        dir.path().join("mngr").as_os_str(),
        "--state-dir".as_ref(),
        dir.path().join("state").as_os_str(),
        "--launch-dir".as_ref(),
        dir.path().join("add").as_os_str(),
    ])
    .expect("parses")
    .into_config(None, None)
    .expect("valid");
    let log = EventLog::open(&events, "acrnd").expect("event log");
    let mut el: EventLoop<Acrnd> = EventLoop::new().expect("loop");
    let store = TimerStore::new(dir.path().join("state/timer_list"));
    // The core boots at once: its first turn feeds the orchestrator an event.
    el.add(Box::new(effects::Core::new(&cfg, store, log.clone())))
        .expect("core");
    let mut s = Acrnd {
        orch: Orchestrator::new(rules(&cfg), BTreeMap::new(), Timers::new()),
        cfg,
        log,
        specs: BTreeMap::new(),
        replies: HashMap::new(),
        next_reply: 0,
        // A request handled earlier in the turn left a command, its notification not yet
        // delivered.
        outbox: vec![Command::Log("decided.first", json!({}))],
        inbox: Vec::new(),
        core: None,
    };
    el.turn(&mut s, Some(Duration::from_secs(5))).expect("turn");
    let kinds: Vec<String> = read_events(&events)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k == "decided.first" || k == "boot")
        .collect();
    assert_eq!(kinds, ["decided.first", "boot"]);
}
