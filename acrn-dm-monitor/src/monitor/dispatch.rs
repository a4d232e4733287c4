//! The monitor's requests: one typed handler per id, registered with its access class, and
//! the answer of each request made from the providers' results (no I/O: the `answer`
//! functions are tested without sockets).
//!
//! Who may ask is the server's business ([`Handlers::open`] / [`Handlers::privileged`]):
//! DM_QUERY is open; every request that changes the VM's state is privileged when the
//! monitor has a policy, open when it has none.

use mngr_ipc::msg::{AckPayload, Request, body, err, suspend_mode};
use mngr_ipc::server::{Access, Call, Handlers, Reply};
use serde_json::json;

use super::DeviceModel;
use crate::ops::{BlkRescan, Op, OpsRegistry};

/// A request's answer, before it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `data.err`.
    Err(i32),
    /// `data.state` (DM_QUERY).
    State(i32),
}

/// The handlers of a monitor. With `guarded`, state changes are privileged (the server's
/// policy decides), else open to whoever can open the socket.
pub(crate) fn handlers<C: DeviceModel>(guarded: bool) -> Handlers<C> {
    let h = Handlers::new().open(|_: body::DmQuery, call, ctx: &mut C| {
        let a = query(ctx);
        reply(call, ctx, a)
    });
    let h = state_change(h, guarded, |b: body::DmStop, ctx| stop(b.force, ctx));
    let h = state_change(h, guarded, |_: body::DmSuspend, ctx| suspend(ctx));
    let h = state_change(h, guarded, |b: body::DmResume, ctx| resume(b.reason, ctx));
    let h = state_change(h, guarded, |_: body::DmPause, ctx| pause(ctx));
    let h = state_change(h, guarded, |_: body::DmContinue, ctx| unpause(ctx));
    let h = state_change(h, guarded, |b: body::DmBlkrescan, ctx| {
        rescan(&b.devargs, ctx)
    });
    // Every other id the profile knows: -ENOSYS, logged like a request (the server would
    // answer -ENOSYS too, but -EINVAL to a malformed body, and without an event).
    h.fallback(Access::Open, |req: &Request, call, ctx: &mut C| {
        log::info!("{} is not a monitor request; answering -ENOSYS", req.id());
        reply(call, ctx, Answer::Err(err::UNKNOWN_ID))
    })
}

/// Registers `answer` for `T`'s id: privileged if `guarded`, else open.
fn state_change<C: DeviceModel, T: mngr_ipc::msg::TypedBody + 'static>(
    h: Handlers<C>,
    guarded: bool,
    answer: fn(T, &mut C) -> Answer,
) -> Handlers<C> {
    let f = move |b: T, call: Call<'_>, ctx: &mut C| {
        let a = answer(b, ctx);
        reply(call, ctx, a)
    };
    if guarded { h.privileged(f) } else { h.open(f) }
}

/// Logs the answer (`ipc.ack`) and makes the ack.
fn reply<C: DeviceModel>(call: Call<'_>, ctx: &mut C, a: Answer) -> Reply {
    let name = call.id().name();
    let log = ctx.monitor().event_log();
    match a {
        Answer::State(s) => {
            log.emit("ipc.ack", json!({"msg": name, "state": s}));
            call.ack(AckPayload::State(s))
        }
        Answer::Err(e) => {
            log.emit("ipc.ack", json!({"msg": name, "err": e}));
            call.err(e)
        }
    }
}

/// Runs `f` with the providers, lent out of the monitor's state for the call.
fn with_ops<C: DeviceModel, R>(ctx: &mut C, f: impl FnOnce(&mut OpsRegistry<C>, &mut C) -> R) -> R {
    let mut ops = ctx.monitor().take_ops();
    let r = f(&mut ops, ctx);
    ctx.monitor().put_ops(ops);
    r
}

fn run<C: DeviceModel>(op: Op, ctx: &mut C, reason: u32, args: Option<&BlkRescan>) -> Answer {
    Answer::Err(with_ops(ctx, |ops, ctx| {
        ops.run_aggregated(op, ctx, reason, args)
    }))
}

/// DM_QUERY: the first provider's `query`.
pub(crate) fn query<C: DeviceModel>(ctx: &mut C) -> Answer {
    match with_ops(ctx, |ops, ctx| ops.query(ctx)) {
        Some((_, mode)) => Answer::State(mode),
        None => Answer::Err(err::UNSUPPORTED),
    }
}

/// DM_STOP: forced, the VM is powered off at once (providers are told); else every `stop`.
pub(crate) fn stop<C: DeviceModel>(force: i32, ctx: &mut C) -> Answer {
    if force == 0 {
        return run(Op::Stop, ctx, 0, None);
    }
    let m = ctx.monitor();
    log::info!("{}: forced stop: powering off at once", m.vm());
    if m.set_suspend_mode(suspend_mode::POWEROFF) {
        with_ops(ctx, |ops, ctx| ops.powered_off(ctx));
    }
    Answer::Err(err::OK)
}

/// DM_SUSPEND: every `suspend`.
pub(crate) fn suspend<C: DeviceModel>(ctx: &mut C) -> Answer {
    run(Op::Suspend, ctx, 0, None)
}

/// DM_RESUME: stores the wakeup reason, then every `resume`.
pub(crate) fn resume<C: DeviceModel>(reason: u32, ctx: &mut C) -> Answer {
    ctx.monitor().set_wakeup_reason(reason);
    run(Op::Resume, ctx, reason, None)
}

/// DM_PAUSE: every `pause`.
pub(crate) fn pause<C: DeviceModel>(ctx: &mut C) -> Answer {
    run(Op::Pause, ctx, 0, None)
}

/// DM_CONTINUE: every `unpause`.
pub(crate) fn unpause<C: DeviceModel>(ctx: &mut C) -> Answer {
    run(Op::Unpause, ctx, 0, None)
}

/// DM_BLKRESCAN: devargs checked, then every `rescan`.
pub(crate) fn rescan<C: DeviceModel>(devargs: &str, ctx: &mut C) -> Answer {
    match BlkRescan::parse(devargs) {
        Some(args) => run(Op::Rescan, ctx, 0, Some(&args)),
        None => {
            log::warn!("DM_BLKRESCAN with malformed devargs {devargs:?}");
            Answer::Err(err::INVALID)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::MonitorState;
    use crate::monitor::outbox::Outgoing;
    use crate::monitor::state::tests::detached;
    use crate::ops::{OpResult, VmOps};

    struct Dm {
        m: MonitorState<Dm>,
        calls: Vec<String>,
    }

    impl DeviceModel for Dm {
        fn monitor(&mut self) -> &mut MonitorState<Dm> {
            &mut self.m
        }
    }

    impl Dm {
        fn new(ops: OpsRegistry<Dm>) -> Self {
            Dm {
                m: detached(ops),
                calls: Vec::new(),
            }
        }
    }

    /// A provider that records its calls and answers as told.
    struct Rec {
        label: &'static str,
        stop: OpResult,
        rescan: OpResult,
    }

    impl VmOps<Dm> for Rec {
        fn label(&self) -> &str {
            self.label
        }
        fn stop(&mut self, dm: &mut Dm) -> OpResult {
            dm.calls.push(format!("{}.stop", self.label));
            self.stop
        }
        fn resume(&mut self, dm: &mut Dm, reason: u32) -> OpResult {
            dm.calls.push(format!(
                "{}.resume({reason:#x}) mode={}",
                self.label,
                dm.m.suspend_mode()
            ));
            OpResult::Done
        }
        fn rescan(&mut self, dm: &mut Dm, a: &BlkRescan) -> OpResult {
            dm.calls
                .push(format!("{}.rescan({},{})", self.label, a.slot, a.path));
            self.rescan
        }
        fn powered_off(&mut self, dm: &mut Dm) {
            dm.calls.push(format!("{}.powered_off", self.label));
        }
    }

    fn rec(label: &'static str, stop: OpResult) -> Rec {
        Rec {
            label,
            stop,
            rescan: OpResult::Unsupported,
        }
    }

    #[test]
    fn query_answers_the_suspend_mode_from_the_builtin_provider() {
        let mut dm = Dm::new(OpsRegistry::new());
        assert_eq!(query(&mut dm), Answer::State(0));
        dm.m.set_suspend_mode(suspend_mode::SUSPEND);
        assert_eq!(query(&mut dm), Answer::State(4));
        let mut none = Dm::new(OpsRegistry::empty());
        assert_eq!(query(&mut none), Answer::Err(err::UNSUPPORTED));
    }

    #[test]
    fn forced_stop_powers_off_once_and_tells_providers() {
        let mut dm = Dm::new(OpsRegistry::new().with(rec("a", OpResult::Failed(-5))));
        assert_eq!(stop(1, &mut dm), Answer::Err(0));
        assert_eq!(dm.m.suspend_mode(), suspend_mode::POWEROFF);
        assert_eq!(dm.calls, vec!["a.powered_off"], "no graceful stop op");
        assert_eq!(stop(1, &mut dm), Answer::Err(0));
        assert_eq!(dm.calls.len(), 1, "a second forced stop changes nothing");
        assert_eq!(dm.m.sent(), vec![Outgoing::Notify { mode: 3 }]);
        assert_eq!(dm.m.pending_to_acrnd(), 1);
        // A VM being torn down cannot be resumed.
        assert_eq!(resume(0x20, &mut dm), Answer::Err(err::BUSY));
        assert_eq!(query(&mut dm), Answer::State(3));
    }

    #[test]
    fn graceful_stop_reports_the_first_failure_or_unsupported() {
        let mut only_pmc = Dm::new(OpsRegistry::new());
        assert_eq!(stop(0, &mut only_pmc), Answer::Err(err::UNSUPPORTED));
        let mut dm = Dm::new(
            OpsRegistry::new()
                .with(rec("a", OpResult::Done))
                .with(rec("b", OpResult::Failed(-5)))
                .with(rec("c", OpResult::Failed(err::FAILED))),
        );
        assert_eq!(stop(0, &mut dm), Answer::Err(-5));
        assert_eq!(
            dm.calls,
            vec!["a.stop", "b.stop", "c.stop"],
            "all are called"
        );
        assert_eq!(dm.m.suspend_mode(), suspend_mode::NONE);
    }

    #[test]
    fn resume_stores_the_reason_and_runs_the_builtin_provider_first() {
        let mut dm = Dm::new(OpsRegistry::new().with(rec("ioc", OpResult::Done)));
        dm.m.set_suspend_mode(suspend_mode::SUSPEND);
        let _ = dm.m.sent();
        assert_eq!(resume(0x200, &mut dm), Answer::Err(0));
        assert_eq!(dm.m.wakeup_reason(), 0x200);
        assert_eq!(
            dm.calls,
            vec!["ioc.resume(0x200) mode=0"],
            "mode is running before the next provider runs"
        );
        assert_eq!(dm.m.sent(), vec![Outgoing::Notify { mode: 0 }]);
    }

    #[test]
    fn blkrescan_validates_and_never_touches_the_wakeup_reason() {
        let mut dm = Dm::new(OpsRegistry::new());
        resume(0x200, &mut dm);
        assert_eq!(rescan("nocomma", &mut dm), Answer::Err(err::INVALID));
        assert_eq!(
            rescan("3,/img", &mut dm),
            Answer::Err(err::UNSUPPORTED),
            "no virtio-blk provider"
        );
        assert_eq!(dm.m.wakeup_reason(), 0x200);
        let mut with_blk = Dm::new(OpsRegistry::new().with(Rec {
            label: "virtio_blk_rescan",
            stop: OpResult::Unsupported,
            rescan: OpResult::Done,
        }));
        resume(0x200, &mut with_blk);
        with_blk.calls.clear();
        assert_eq!(rescan("3,/img", &mut with_blk), Answer::Err(0));
        assert_eq!(with_blk.calls, vec!["virtio_blk_rescan.rescan(3,/img)"]);
        assert_eq!(with_blk.m.wakeup_reason(), 0x200);
    }

    #[test]
    fn pause_and_continue_without_a_provider() {
        let mut dm = Dm::new(OpsRegistry::new());
        assert_eq!(pause(&mut dm), Answer::Err(err::UNSUPPORTED));
        assert_eq!(unpause(&mut dm), Answer::Err(err::UNSUPPORTED));
    }

    #[test]
    fn providers_are_back_in_the_state_after_a_request() {
        let mut dm = Dm::new(OpsRegistry::new().with(rec("a", OpResult::Done)));
        assert_eq!(stop(0, &mut dm), Answer::Err(0));
        assert_eq!(
            dm.m.take_ops().labels(),
            vec![crate::ops::PMC_LABEL, "a"],
            "lent out for the call only"
        );
    }
}
