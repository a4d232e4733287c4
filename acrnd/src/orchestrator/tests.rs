//! The rules, one test each (or more), without sockets, processes or clocks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mngr_ipc::cbc::reason as wake;
use mngr_ipc::host::HostIntent;
use mngr_ipc::msg::{Body, StopTarget, err, suspend_mode};
use mngr_ipc::vocabulary::Phase;

use super::*;

const POLL: Duration = Duration::from_millis(500);
const KILL_GRACE: Duration = Duration::from_secs(2);
const EPOCH: u64 = 1_800_000_000;

fn rules() -> Rules {
    Rules {
        autostart: true,
        start_parallel: 4,
        start_delay: Duration::ZERO,
        poll: POLL,
        force_on_deadline: false,
        kill_grace: KILL_GRACE,
        shutdown_budget: Duration::from_secs(20),
    }
}

/// A test bench: the orchestrator, a clock, and every command it gave so far.
struct Bench {
    o: Orchestrator,
    t0: Instant,
    now: Now,
    next_reply: u64,
}

impl Bench {
    /// VMs by name and state (running ones get a pid), all launchable.
    fn new(vms: &[(&str, VmState)]) -> Self {
        Self::with(rules(), vms, Timers::new())
    }

    fn with(rules: Rules, vms: &[(&str, VmState)], timers: Timers) -> Self {
        let table: BTreeMap<String, Vm> = vms
            .iter()
            .enumerate()
            .map(|(i, (n, st))| {
                let mut v = Vm::new(true);
                v.state = *st;
                if *st != VmState::Stopped {
                    v.pid = Some(100 + u32::try_from(i).expect("few"));
                }
                ((*n).to_owned(), v)
            })
            .collect();
        let t0 = Instant::now();
        Bench {
            o: Orchestrator::new(rules, table, timers),
            t0,
            now: Now {
                mono: t0,
                epoch: EPOCH,
            },
            next_reply: 0,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now.mono += d;
        self.now.epoch += d.as_secs();
    }

    fn on(&mut self, e: Event) -> Vec<Command> {
        self.o.handle(e, self.now)
    }

    fn req(&mut self, r: Req) -> (Answer, Vec<Command>, ReplyId) {
        let id = ReplyId(self.next_reply);
        self.next_reply += 1;
        let (a, c) = self.o.request(r, id, self.now);
        (a, c, id)
    }

    fn state(&self, vm: &str) -> VmState {
        self.o.vms()[vm].state
    }

    /// The device model of `vm` acks `kind` with `err`.
    fn dm_ack(&mut self, vm: &str, kind: DmKind, err: i32) -> Vec<Command> {
        self.on(Event::Dm {
            vm: vm.into(),
            kind,
            reply: None,
            answer: DmAnswer::Ack { err, state: None },
        })
    }

    fn notify(&mut self, vm: &str, mode: i32) -> Answer {
        self.req(Req::Notify {
            name: vm.into(),
            mode,
        })
        .0
    }

    /// A stop-all to `target` (no force, 10 s).
    fn stop_all(&mut self, target: StopTarget) -> Vec<Command> {
        let (a, c, _) = self.req(Req::StopAll {
            target,
            force: false,
            timeout: 10,
        });
        assert_eq!(a, Answer::Now(err::OK));
        c
    }
}

fn dms(c: &[Command]) -> Vec<(String, DmKind)> {
    c.iter()
        .filter_map(|c| match c {
            Command::Dm { vm, kind, .. } => Some((vm.clone(), *kind)),
            _ => None,
        })
        .collect()
}

fn launches(c: &[Command]) -> Vec<(String, u32)> {
    c.iter()
        .filter_map(|c| match c {
            Command::Launch { vm, reason, .. } => Some((vm.clone(), *reason)),
            _ => None,
        })
        .collect()
}

fn reports(c: &[Command]) -> Vec<Vec<(&'static str, Body)>> {
    c.iter()
        .filter_map(|c| match c {
            Command::Report { requests, .. } => {
                Some(requests.iter().map(|(w, r)| (*w, r.body.clone())).collect())
            }
            _ => None,
        })
        .collect()
}

fn answers(c: &[Command]) -> Vec<(ReplyId, i32)> {
    c.iter()
        .filter_map(|c| match c {
            Command::Answer(id, code) => Some((*id, *code)),
            _ => None,
        })
        .collect()
}

fn armed(c: &[Command], t: Timer) -> Option<Instant> {
    c.iter().rev().find_map(|c| match c {
        Command::Arm(k, at) if *k == t => Some(*at),
        _ => None,
    })
}

fn q(vm: &str) -> (String, DmKind) {
    (vm.to_owned(), DmKind::Query)
}

use VmState::*;

#[test]
fn boot_reattaches_running_device_models_and_asks_the_reason() {
    let mut b = Bench::new(&[("vm1", Starting), ("vm2", Stopped)]);
    let c = b.on(Event::Boot);
    assert!(c.contains(&Command::Watch {
        vm: "vm1".into(),
        pid: 100
    }));
    assert_eq!(dms(&c), [q("vm1")]);
    assert!(c.contains(&Command::AskReason(ReasonFor::Boot)));
    assert!(launches(&c).is_empty(), "nothing starts before the reason");
}

#[test]
fn boot_by_an_ignition_reason_starts_every_stopped_vm_and_resumes_the_suspended() {
    let mut b = Bench::new(&[("a", Stopped), ("b", Stopped), ("c", Suspended)]);
    let c = b.on(Event::Reason {
        why: ReasonFor::Boot,
        reason: Some(0x20),
    });
    assert_eq!(launches(&c), [("a".into(), 0x20), ("b".into(), 0x20)]);
    assert_eq!(dms(&c), [("c".into(), DmKind::Resume { reason: 0x20 })]);
    assert_eq!(b.state("c"), Starting);
    assert!(b.o.lcs_reachable());
    assert_eq!(b.o.reason(), 0x20);
}

#[test]
fn boot_without_a_lifecycle_service_uses_the_default_reason() {
    let mut b = Bench::new(&[("a", Stopped)]);
    let c = b.on(Event::Reason {
        why: ReasonFor::Boot,
        reason: None,
    });
    assert_eq!(launches(&c), [("a".into(), wake::DEFAULT_BOOT)]);
    assert!(!b.o.lcs_reachable());
}

#[test]
fn boot_by_rtc_launches_only_the_vms_whose_timers_are_due() {
    let timers: Timers = [
        ("due".to_owned(), EPOCH - 1),
        ("later".to_owned(), EPOCH + 60),
    ]
    .into_iter()
    .collect();
    let mut b = Bench::with(
        rules(),
        &[("due", Stopped), ("later", Stopped), ("plain", Stopped)],
        timers,
    );
    let c = b.on(Event::Reason {
        why: ReasonFor::Boot,
        reason: Some(wake::RTC),
    });
    assert_eq!(launches(&c), [("due".into(), wake::RTC)]);
    assert!(!b.o.timers().contains_key("due"), "a fired timer is gone");
    assert!(c.iter().any(|c| matches!(
        c,
        Command::Persist {
            reply: None,
            undo: None
        }
    )));
    // The next timer is armed for when it is due.
    assert_eq!(
        armed(&c, Timer::Wake),
        Some(b.now.mono + Duration::from_secs(60))
    );
}

#[test]
fn boot_starts_at_most_start_parallel_at_once_and_the_next_when_one_is_up() {
    let mut r = rules();
    r.start_parallel = 2;
    let mut b = Bench::with(
        r,
        &[("a", Stopped), ("b", Stopped), ("c", Stopped)],
        Timers::new(),
    );
    let c = b.on(Event::Reason {
        why: ReasonFor::Boot,
        reason: Some(0x20),
    });
    assert_eq!(launches(&c).len(), 2);
    let c = b.on(Event::Launched {
        vm: "a".into(),
        pid: 7,
        reason: 0x20,
        reply: None,
    });
    assert!(launches(&c).is_empty(), "a and b are still starting");
    assert_eq!(b.state("a"), Starting);
    let c = b.notify_cmds("a", suspend_mode::NONE);
    assert_eq!(b.state("a"), Started);
    assert_eq!(launches(&c), [("c".into(), 0x20)]);
}

#[test]
fn boot_starts_are_spaced_by_start_delay() {
    let mut r = rules();
    r.start_delay = Duration::from_millis(300);
    let mut b = Bench::with(r, &[("a", Stopped), ("b", Stopped)], Timers::new());
    let c = b.on(Event::Reason {
        why: ReasonFor::Boot,
        reason: Some(0x20),
    });
    assert_eq!(launches(&c), [("a".into(), 0x20)]);
    assert_eq!(
        armed(&c, Timer::Start),
        Some(b.now.mono + Duration::from_millis(300))
    );
    b.advance(Duration::from_millis(300));
    let c = b.on(Event::Timer(Timer::Start));
    assert_eq!(launches(&c), [("b".into(), 0x20)]);
}

#[test]
fn per_vm_operations_are_serialized_with_ebusy() {
    let mut b = Bench::new(&[("vm1", Started), ("vm2", Stopped)]);
    let stop = |force| Req::Stop {
        name: "vm1".into(),
        force,
    };
    let (a, c, id) = b.req(stop(false));
    assert_eq!(a, Answer::Later);
    assert_eq!(dms(&c), [("vm1".into(), DmKind::Stop { force: 0 })]);
    assert_eq!(b.state("vm1"), Stopping);
    // A second operation while the first is in flight.
    assert_eq!(
        b.req(Req::Suspend { name: "vm1".into() }).0,
        Answer::Now(err::BUSY)
    );
    // A stop while stopping is no new operation: only a forced one may overtake it.
    assert_eq!(b.req(stop(false)).0, Answer::Now(err::INVALID));
    let (a, c, _) = b.req(stop(true));
    assert_eq!(a, Answer::Later);
    assert_eq!(dms(&c), [("vm1".into(), DmKind::Stop { force: 1 })]);
    // The first one's answer completes its ack and frees the VM.
    let c = b.on(Event::Dm {
        vm: "vm1".into(),
        kind: DmKind::Stop { force: 0 },
        reply: Some(id),
        answer: DmAnswer::Ack {
            err: 0,
            state: None,
        },
    });
    assert_eq!(answers(&c), [(id, err::OK)]);
    // Unknown VMs and wrong states.
    assert_eq!(
        b.req(Req::Start {
            name: "nope".into()
        })
        .0,
        Answer::Now(err::NOT_FOUND)
    );
    assert_eq!(
        b.req(Req::Resume {
            name: "vm2".into(),
            reason: 0
        })
        .0,
        Answer::Now(err::INVALID)
    );
}

#[test]
fn no_vm_starts_while_a_stop_all_runs() {
    let mut b = Bench::new(&[("vm1", Started), ("vm2", Stopped)]);
    b.stop_all(StopTarget::S5);
    assert_eq!(
        b.req(Req::Start { name: "vm2".into() }).0,
        Answer::Now(err::BUSY)
    );
}

#[test]
fn a_refused_request_restores_the_state_and_asks_the_vm() {
    let mut b = Bench::new(&[("vm1", Started)]);
    let (_, _, id) = b.req(Req::Suspend { name: "vm1".into() });
    assert_eq!(b.state("vm1"), Suspending);
    let c = b.on(Event::Dm {
        vm: "vm1".into(),
        kind: DmKind::Suspend,
        reply: Some(id),
        answer: DmAnswer::Ack {
            err: err::FAILED,
            state: None,
        },
    });
    assert_eq!(b.state("vm1"), Started);
    assert_eq!(dms(&c), [q("vm1")]);
    assert_eq!(answers(&c), [(id, err::FAILED)]);
}

#[test]
fn start_answers_when_launched_and_fails_when_the_launch_does() {
    let mut b = Bench::new(&[("vm1", Stopped)]);
    let (a, c, id) = b.req(Req::Start { name: "vm1".into() });
    assert_eq!(a, Answer::Later);
    assert_eq!(launches(&c), [("vm1".into(), wake::DEFAULT_BOOT)]);
    let c = b.on(Event::LaunchFailed {
        vm: "vm1".into(),
        reply: Some(id),
    });
    assert_eq!(answers(&c), [(id, err::FAILED)]);
    assert_eq!(b.state("vm1"), Stopped);
    let (_, _, id) = b.req(Req::Start { name: "vm1".into() });
    let c = b.on(Event::Launched {
        vm: "vm1".into(),
        pid: 9,
        reason: 0x20,
        reply: Some(id),
    });
    assert_eq!(answers(&c), [(id, err::OK)]);
    assert!(c.contains(&Command::Watch {
        vm: "vm1".into(),
        pid: 9
    }));
    assert!(b.o.is_dm_of("vm1", 9));
}

#[test]
fn a_stale_query_answer_overtaken_by_a_notify_is_ignored() {
    let mut b = Bench::new(&[("vm1", Started)]);
    b.stop_all(StopTarget::S3);
    assert_eq!(b.state("vm1"), Suspending);
    // acrnd polls; the guest suspends and notifies before the query's answer arrives.
    b.advance(POLL);
    let c = b.on(Event::Timer(Timer::Poll));
    assert_eq!(dms(&c), [q("vm1")]);
    assert_eq!(b.notify("vm1", suspend_mode::SUSPEND), Answer::Now(err::OK));
    assert_eq!(b.state("vm1"), Suspended);
    // The query was answered while the guest still ran: that answer is stale.
    b.on(Event::Dm {
        vm: "vm1".into(),
        kind: DmKind::Query,
        reply: None,
        answer: DmAnswer::Ack {
            err: 0,
            state: Some(suspend_mode::NONE),
        },
    });
    assert_eq!(
        b.state("vm1"),
        Suspended,
        "the stale answer changed the state"
    );
    // A fresh query's answer counts.
    b.o.vms.get_mut("vm1").expect("vm1").state = Suspending;
    b.advance(POLL);
    b.on(Event::Timer(Timer::Poll));
    b.on(Event::Dm {
        vm: "vm1".into(),
        kind: DmKind::Query,
        reply: None,
        answer: DmAnswer::Ack {
            err: 0,
            state: Some(suspend_mode::SUSPEND),
        },
    });
    assert_eq!(b.state("vm1"), Suspended);
}

#[test]
fn a_stop_all_completes_on_the_last_state_change_and_reports() {
    let timers: Timers = [("vm2".to_owned(), EPOCH + 3600)].into_iter().collect();
    let mut b = Bench::with(rules(), &[("vm1", Started), ("vm2", Started)], timers);
    let c = b.stop_all(StopTarget::S5);
    assert_eq!(
        dms(&c),
        [
            ("vm1".into(), DmKind::Stop { force: 0 }),
            ("vm2".into(), DmKind::Stop { force: 0 })
        ]
    );
    assert_eq!(b.o.phase(), Phase::Stopping);
    let c = b.on(Event::Exited { vm: "vm1".into() });
    assert!(reports(&c).is_empty(), "vm2 still runs");
    let c = b.notify_cmds("vm2", suspend_mode::POWEROFF);
    assert_eq!(
        reports(&c),
        [vec![
            (
                "RTC_TIMER",
                Body::RtcTimer {
                    vmname: Vec::new(),
                    t: i64::try_from(EPOCH + 3600).expect("fits")
                }
            ),
            ("SHUTDOWN", Body::Shutdown { err: 0 })
        ]]
    );
    assert!(c.contains(&Command::Cancel(Timer::Deadline)));
    assert_eq!(b.o.phase(), Phase::Idle);
}

impl Bench {
    fn notify_cmds(&mut self, vm: &str, mode: i32) -> Vec<Command> {
        self.req(Req::Notify {
            name: vm.into(),
            mode,
        })
        .1
    }
}

#[test]
fn a_mix_of_stopped_and_suspended_vms_reports_suspend() {
    let mut b = Bench::new(&[("vm1", Started), ("vm2", Started)]);
    b.stop_all(StopTarget::S3);
    b.notify("vm1", suspend_mode::SUSPEND);
    let c = b.on(Event::Exited { vm: "vm2".into() });
    assert_eq!(reports(&c), [vec![("SUSPEND", Body::Suspend { err: 0 })]]);
}

#[test]
fn a_stop_all_without_a_target_only_waits_for_the_guests() {
    let mut b = Bench::new(&[("vm1", Started)]);
    let c = b.stop_all(StopTarget::Unspecified);
    assert!(
        dms(&c).is_empty(),
        "the C cbc_lifecycle's guests act themselves"
    );
    assert!(armed(&c, Timer::Deadline).is_some());
}

#[test]
fn the_deadline_without_force_refuses_and_lets_due_timers_fire() {
    let timers: Timers = [("vm2".to_owned(), EPOCH + 5)].into_iter().collect();
    let mut b = Bench::with(rules(), &[("vm1", Started), ("vm2", Stopped)], timers);
    b.stop_all(StopTarget::S3);
    b.advance(Duration::from_secs(10));
    let c = b.on(Event::Timer(Timer::Deadline));
    assert_eq!(
        reports(&c),
        [vec![("SUSPEND", Body::Suspend { err: err::FAILED })]]
    );
    assert!(
        !dms(&c)
            .iter()
            .any(|(_, k)| matches!(k, DmKind::Stop { .. })),
        "nothing forced"
    );
    // The transition is abandoned: vm2's timer (due meanwhile) fires.
    assert_eq!(launches(&c), [("vm2".into(), wake::RTC)]);
}

#[test]
fn the_deadline_with_force_stops_the_blockers_then_kills_the_stragglers() {
    let mut b = Bench::new(&[("vm1", Started), ("vm2", Started), ("vm3", Stopped)]);
    let (_, _, _) = b.req(Req::StopAll {
        target: StopTarget::S5,
        force: true,
        timeout: 10,
    });
    b.on(Event::Exited { vm: "vm1".into() });
    b.advance(Duration::from_secs(10));
    let c = b.on(Event::Timer(Timer::Deadline));
    assert_eq!(dms(&c), [("vm2".into(), DmKind::Stop { force: 1 })]);
    assert_eq!(armed(&c, Timer::Kill), Some(b.now.mono + KILL_GRACE));
    b.advance(KILL_GRACE);
    let c = b.on(Event::Timer(Timer::Kill));
    assert_eq!(
        c.iter()
            .filter(|c| matches!(c, Command::Kill { .. }))
            .collect::<Vec<_>>(),
        [&Command::Kill {
            vm: "vm2".into(),
            pid: 101
        }],
        "only the straggler"
    );
}

#[test]
fn force_on_deadline_forces_even_when_not_asked() {
    let mut r = rules();
    r.force_on_deadline = true;
    let mut b = Bench::with(r, &[("vm1", Started)], Timers::new());
    b.stop_all(StopTarget::S3);
    let c = b.on(Event::Timer(Timer::Deadline));
    assert_eq!(dms(&c), [("vm1".into(), DmKind::Stop { force: 1 })]);
    assert!(reports(&c).is_empty());
}

#[test]
fn an_abandoned_stop_all_kills_nothing_and_resumes_the_vms_on_their_way_down() {
    let mut b = Bench::new(&[("vm1", Started), ("vm2", Started)]);
    b.req(Req::StopAll {
        target: StopTarget::S3,
        force: true,
        timeout: 10,
    });
    b.dm_ack("vm1", DmKind::Suspend, 0);
    b.notify("vm1", suspend_mode::SUSPEND);
    b.on(Event::Timer(Timer::Deadline));
    // Ignition comes back before the kill: the stop-all is abandoned.
    let (a, c, _) = b.req(Req::ResumeAll);
    assert_eq!(a, Answer::Now(err::OK));
    assert!(c.contains(&Command::AskReason(ReasonFor::Resume)));
    assert_eq!(b.o.phase(), Phase::Resuming);
    let c = b.on(Event::Timer(Timer::Kill));
    assert!(
        !c.iter().any(|c| matches!(c, Command::Kill { .. })),
        "{c:?}"
    );
    // The DM_STOP in flight is refused by vm2 (it was told to stop, it is still up).
    b.dm_ack("vm2", DmKind::Stop { force: 1 }, 0);
    let c = b.on(Event::Reason {
        why: ReasonFor::Resume,
        reason: Some(0x20),
    });
    let resumed: Vec<String> = dms(&c)
        .into_iter()
        .filter(|(_, k)| matches!(k, DmKind::Resume { .. }))
        .map(|(v, _)| v)
        .collect();
    assert_eq!(
        resumed,
        ["vm1", "vm2"],
        "the suspended one and the one left stopping"
    );
    assert_eq!(b.o.phase(), Phase::Idle);
}

#[test]
fn timers_are_held_from_the_report_until_the_resume() {
    let timers: Timers = [("vm1".to_owned(), EPOCH + 5)].into_iter().collect();
    let mut b = Bench::with(rules(), &[("vm1", Started)], timers);
    b.stop_all(StopTarget::S3);
    b.dm_ack("vm1", DmKind::Suspend, 0);
    let c = b.notify_cmds("vm1", suspend_mode::SUSPEND);
    assert_eq!(reports(&c).len(), 1, "reported");
    // The system sleeps; acrnd's clock passes the timer before the resume.
    b.advance(Duration::from_secs(10));
    let c = b.on(Event::Timer(Timer::Wake));
    assert!(dms(&c).is_empty() && launches(&c).is_empty(), "held: {c:?}");
    assert!(b.o.timers().contains_key("vm1"), "kept for the resume");
    assert_eq!(
        armed(&c, Timer::Wake),
        None,
        "a held, due timer is not re-armed"
    );
    let c = b.on(Event::Reason {
        why: ReasonFor::Resume,
        reason: Some(wake::RTC),
    });
    assert_eq!(
        dms(&c),
        [("vm1".into(), DmKind::Resume { reason: wake::RTC })]
    );
}

#[test]
fn an_ignition_resume_resumes_every_suspended_vm_with_its_reason() {
    let mut b = Bench::new(&[("vm1", Suspended), ("vm2", Stopped)]);
    b.req(Req::ResumeAll);
    let c = b.on(Event::Reason {
        why: ReasonFor::Resume,
        reason: Some(0x20),
    });
    assert_eq!(dms(&c), [("vm1".into(), DmKind::Resume { reason: 0x20 })]);
    assert!(launches(&c).is_empty(), "a resume starts nothing");
}

#[test]
fn a_timer_request_is_answered_once_stored_and_taken_back_if_the_write_fails() {
    let mut b = Bench::new(&[("vm1", Started)]);
    assert_eq!(
        b.req(Req::Timer {
            name: "x".into(),
            t: 5
        })
        .0,
        Answer::Now(err::NOT_FOUND)
    );
    assert_eq!(
        b.req(Req::Timer {
            name: "vm1".into(),
            t: -1
        })
        .0,
        Answer::Now(err::INVALID)
    );
    let (a, c, id) = b.req(Req::Timer {
        name: "vm1".into(),
        t: 30,
    });
    assert_eq!(a, Answer::Later);
    let undo = c.iter().find_map(|c| match c {
        Command::Persist { reply, undo } => {
            assert_eq!(*reply, Some(id));
            undo.clone()
        }
        _ => None,
    });
    let undo = undo.expect("an insertion to take back");
    assert_eq!(undo.vm, "vm1");
    assert_eq!(b.o.timers().get("vm1"), Some(&(EPOCH + 30)));
    assert_eq!(
        armed(&c, Timer::Wake),
        Some(b.now.mono + Duration::from_secs(30))
    );
    b.on(Event::Persisted {
        undo: vec![undo],
        written: b.o.timers().clone(),
        error: Some("disk full".into()),
    });
    assert!(b.o.timers().is_empty(), "the failed timer is taken back");
}

#[test]
fn sigterm_for_a_host_poweroff_stops_every_vm_and_exits_when_done() {
    let mut b = Bench::new(&[("vm1", Started)]);
    let c = b.on(Event::Terminate);
    assert_eq!(c.iter().filter(|c| **c == Command::AskIntent).count(), 1);
    assert!(
        b.on(Event::Terminate)
            .iter()
            .all(|c| *c != Command::AskIntent),
        "asked once"
    );
    let c = b.on(Event::Intent(HostIntent::Poweroff));
    assert_eq!(dms(&c), [("vm1".into(), DmKind::Stop { force: 0 })]);
    assert_eq!(
        b.req(Req::ResumeAll).0,
        Answer::Now(err::BUSY),
        "no resume during a host shutdown"
    );
    let c = b.on(Event::Exited { vm: "vm1".into() });
    assert!(c.contains(&Command::Exit));
    assert!(
        reports(&c).is_empty(),
        "the host goes down: nothing to report"
    );
}

#[test]
fn sigterm_for_a_plain_stop_leaves_the_vms_running() {
    let mut b = Bench::new(&[("vm1", Started)]);
    b.on(Event::Terminate);
    let c = b.on(Event::Intent(HostIntent::None));
    assert!(c.contains(&Command::Exit));
    assert!(dms(&c).is_empty());
}

#[test]
fn a_vm_whose_device_model_is_gone_is_stopped() {
    let mut b = Bench::new(&[("vm1", Started)]);
    b.on(Event::Dm {
        vm: "vm1".into(),
        kind: DmKind::Query,
        reply: None,
        answer: DmAnswer::NotFound,
    });
    assert_eq!(b.state("vm1"), Stopped, "not ours, no socket: gone");
    let mut b = Bench::new(&[("vm1", Stopped)]);
    b.req(Req::Start { name: "vm1".into() });
    b.on(Event::Launched {
        vm: "vm1".into(),
        pid: 5,
        reason: 0x20,
        reply: None,
    });
    b.on(Event::Dm {
        vm: "vm1".into(),
        kind: DmKind::Query,
        reply: None,
        answer: DmAnswer::NotFound,
    });
    assert_eq!(
        b.state("vm1"),
        Starting,
        "our child, still starting: not yet"
    );
    let _ = b.t0;
}

#[test]
fn transitions_are_polled_until_they_settle() {
    let mut b = Bench::new(&[("vm1", Started)]);
    let (_, c, _) = b.req(Req::Suspend { name: "vm1".into() });
    assert_eq!(armed(&c, Timer::Poll), Some(b.now.mono + POLL));
    b.advance(POLL);
    let c = b.on(Event::Timer(Timer::Poll));
    assert_eq!(dms(&c), [q("vm1")]);
    // One query at a time per VM.
    b.advance(POLL);
    let c = b.on(Event::Timer(Timer::Poll));
    assert!(dms(&c).is_empty(), "{c:?}");
    b.notify("vm1", suspend_mode::SUSPEND);
    b.advance(POLL);
    let c = b.on(Event::Timer(Timer::Poll));
    assert_eq!(
        armed(&c, Timer::Poll),
        None,
        "nothing in transition: no more polling"
    );
}

#[test]
fn a_failed_write_does_not_take_back_a_later_request_for_the_same_timer() {
    let mut b = Bench::new(&[("vm1", Started)]);
    let timer = |t| Req::Timer {
        name: "vm1".into(),
        t,
    };
    let undo_of = |c: &[Command]| {
        c.iter()
            .find_map(|c| match c {
                Command::Persist { undo, .. } => undo.clone(),
                _ => None,
            })
            .expect("an insertion")
    };
    // The same wake-up asked twice in the same second: the second write waits for the
    // first, which fails.
    let first = undo_of(&b.req(timer(100)).1);
    let second = undo_of(&b.req(timer(100)).1);
    b.on(Event::Persisted {
        undo: vec![first],
        written: b.o.timers().clone(),
        error: Some("disk full".into()),
    });
    assert_eq!(
        b.o.timers().get("vm1"),
        Some(&(EPOCH + 100)),
        "the second request's timer stays for its own write"
    );
    // Its own write fails too: now it goes.
    b.on(Event::Persisted {
        undo: vec![second],
        written: b.o.timers().clone(),
        error: Some("disk full".into()),
    });
    assert!(
        b.o.timers().is_empty(),
        "back to what the store holds: nothing"
    );
}

#[test]
fn a_failed_write_restores_what_the_store_holds() {
    let stored: Timers = [("vm1".to_owned(), EPOCH + 50)].into_iter().collect();
    let mut b = Bench::with(rules(), &[("vm1", Started)], stored);
    let (_, c, _) = b.req(Req::Timer {
        name: "vm1".into(),
        t: 500,
    });
    let undo = c
        .iter()
        .find_map(|c| match c {
            Command::Persist { undo, .. } => undo.clone(),
            _ => None,
        })
        .expect("an insertion");
    b.on(Event::Persisted {
        undo: vec![undo],
        written: b.o.timers().clone(),
        error: Some("disk full".into()),
    });
    assert_eq!(b.o.timers().get("vm1"), Some(&(EPOCH + 50)));
}
