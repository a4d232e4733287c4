//! The registry of VM-ops providers: the components of a device model that act on DM_STOP,
//! DM_SUSPEND, DM_RESUME, DM_PAUSE, DM_CONTINUE, DM_QUERY and DM_BLKRESCAN (the original's
//! `monitor_vm_ops` list).
//!
//! A provider implements [`VmOps<C>`]: every op is a method with a default that answers
//! [`OpResult::Unsupported`], so a provider implements just the ops it has. Each method gets
//! `&mut C`, the device model's state owned by the event loop, so providers act on it
//! directly (no locks, no globals). Providers run on the loop thread and must not block.
//!
//! How a request's answer is made from the providers' results ([`aggregate`]):
//!
//! * providers are called in registration order, every one that implements the op;
//! * no provider implements the op → `err::UNSUPPORTED` (-95), so "nothing here does that"
//!   is distinct from "it was tried and failed" (the original answered -1 for both);
//! * otherwise the **first** failure's code ([`err::FAILED`] or the provider's own negative
//!   code), every failure being logged with its provider's label; results are never summed
//!   (the original's `-1 + 0 + -1 = -2` hid which component failed);
//! * DM_QUERY asks the first provider that implements `query`.
//!
//! [`OpsRegistry::new`] starts with the monitor's own provider ([`PMC_LABEL`], the
//! original's `PMC_VM_OPs`): `query` answers the DM suspend mode and `resume` sets it back
//! to running, both on the [`MonitorState`] the device model holds.

use std::fmt;

use mngr_ipc::msg::{err, suspend_mode};

use crate::monitor::{DeviceModel, MonitorState};

/// Label of the monitor's own provider (suspend mode: `query` and `resume`).
pub const PMC_LABEL: &str = "PMC_VM_OPs";

/// One kind of VM operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Graceful stop (DM_STOP with `force` 0).
    Stop,
    /// DM_SUSPEND.
    Suspend,
    /// DM_RESUME.
    Resume,
    /// DM_PAUSE (profile D).
    Pause,
    /// DM_CONTINUE (profile D).
    Unpause,
    /// DM_QUERY.
    Query,
    /// DM_BLKRESCAN.
    Rescan,
}

impl Op {
    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Op::Stop => "stop",
            Op::Suspend => "suspend",
            Op::Resume => "resume",
            Op::Pause => "pause",
            Op::Unpause => "unpause",
            Op::Query => "query",
            Op::Rescan => "rescan",
        }
    }
}

/// What one provider did with one op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    /// Done.
    Done,
    /// This provider does not implement the op (the default of every [`VmOps`] method).
    Unsupported,
    /// Tried and failed with this code: negative, e.g. [`err::FAILED`] or an `-errno`
    /// (a code ≥ 0 is reported as [`err::FAILED`]).
    Failed(i32),
}

impl OpResult {
    /// `Done` if `ok`, else `Failed(err::FAILED)`.
    pub fn from_bool(ok: bool) -> OpResult {
        if ok {
            OpResult::Done
        } else {
            OpResult::Failed(err::FAILED)
        }
    }
}

/// The arguments of DM_BLKRESCAN (`devargs` = `slot,path`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkRescan {
    /// The PCI slot of the virtio-blk device.
    pub slot: u32,
    /// The new backend path (may be empty: what that means is the provider's business).
    pub path: String,
}

impl BlkRescan {
    /// Parses `slot,path`: the text before the first `,` must be a decimal number.
    /// `None` for anything else (answered `err::INVALID`).
    pub fn parse(devargs: &str) -> Option<BlkRescan> {
        let (slot, path) = devargs.split_once(',')?;
        if slot.is_empty() || !slot.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(BlkRescan {
            slot: slot.parse().ok()?,
            path: path.to_owned(),
        })
    }
}

/// A VM-ops provider: a component of the device model acting on monitor requests.
///
/// Every op defaults to [`OpResult::Unsupported`] (`query` to `None`). Methods run on the
/// event-loop thread with the device model's state and must not block; slow work is queued
/// in that state for a subscriber of the device model, woken with a
/// [`Notifier`](mngr_ipc::runtime::Notifier), which hands it to the loop's workers
/// ([`Ops::spawn`](mngr_ipc::runtime::Ops::spawn)).
pub trait VmOps<C>: Send {
    /// A short name for logs (the original used 16-character labels such as `ioc_dm`).
    fn label(&self) -> &str;

    /// Graceful stop: ask the guest to power off.
    fn stop(&mut self, _ctx: &mut C) -> OpResult {
        OpResult::Unsupported
    }

    /// Ask the guest to suspend (S3).
    fn suspend(&mut self, _ctx: &mut C) -> OpResult {
        OpResult::Unsupported
    }

    /// Resume the guest with wakeup reason `reason` (already stored in the
    /// [`MonitorState`]).
    fn resume(&mut self, _ctx: &mut C, _reason: u32) -> OpResult {
        OpResult::Unsupported
    }

    /// Pause the VM (profile D's DM_PAUSE).
    fn pause(&mut self, _ctx: &mut C) -> OpResult {
        OpResult::Unsupported
    }

    /// Continue a paused VM (profile D's DM_CONTINUE).
    fn unpause(&mut self, _ctx: &mut C) -> OpResult {
        OpResult::Unsupported
    }

    /// The DM suspend mode ([`suspend_mode`]), or `None` if not implemented.
    fn query(&mut self, _ctx: &mut C) -> Option<i32> {
        None
    }

    /// Re-open the backend of the virtio-blk device in `args.slot`.
    fn rescan(&mut self, _ctx: &mut C, _args: &BlkRescan) -> OpResult {
        OpResult::Unsupported
    }

    /// Not an op: a forced DM_STOP has just set the suspend mode to POWEROFF, the VM is
    /// being torn down at once. Release what you hold and, if you own the VM's life, end
    /// it (the simulator ends its process here).
    fn powered_off(&mut self, _ctx: &mut C) {}
}

/// One provider's result, with its label, as [`aggregate`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The provider's label.
    pub label: String,
    /// What it did.
    pub result: OpResult,
}

/// The `err` of an ack made from the providers' results (see the module docs): 0 if at
/// least one provider did the op and none failed, the first failure's code, or
/// `err::UNSUPPORTED` if none implements it.
pub fn aggregate(outcomes: &[Outcome]) -> i32 {
    let mut any = false;
    for o in outcomes {
        match o.result {
            OpResult::Done => any = true,
            OpResult::Unsupported => {}
            OpResult::Failed(code) => return if code < 0 { code } else { err::FAILED },
        }
    }
    if any { err::OK } else { err::UNSUPPORTED }
}

/// The VM-ops providers of one device model, called in registration order.
pub struct OpsRegistry<C> {
    providers: Vec<Box<dyn VmOps<C>>>,
}

impl<C> fmt::Debug for OpsRegistry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.providers.iter().map(|p| p.label().to_owned()))
            .finish()
    }
}

impl<C: DeviceModel> Default for OpsRegistry<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: DeviceModel> OpsRegistry<C> {
    /// A registry holding the monitor's own provider ([`PMC_LABEL`]) first.
    pub fn new() -> Self {
        OpsRegistry {
            providers: vec![Box::new(Pmc)],
        }
    }
}

impl<C> OpsRegistry<C> {
    /// A registry without the monitor's own provider (DM_QUERY then needs another
    /// provider implementing `query`).
    pub fn empty() -> Self {
        OpsRegistry {
            providers: Vec::new(),
        }
    }

    /// Adds a provider after those registered so far.
    pub fn register(&mut self, provider: Box<dyn VmOps<C>>) {
        self.providers.push(provider);
    }

    /// Adds a provider (builder style).
    pub fn with(mut self, provider: impl VmOps<C> + 'static) -> Self {
        self.register(Box::new(provider));
        self
    }

    /// The labels, in call order.
    pub fn labels(&self) -> Vec<String> {
        self.providers
            .iter()
            .map(|p| p.label().to_owned())
            .collect()
    }

    /// Runs `op` (not [`Op::Query`]) on every provider and returns each one's result.
    /// `rescan` must be given for [`Op::Rescan`]; `reason` is the DM_RESUME reason.
    pub fn run(
        &mut self,
        op: Op,
        ctx: &mut C,
        reason: u32,
        rescan: Option<&BlkRescan>,
    ) -> Vec<Outcome> {
        self.providers
            .iter_mut()
            .map(|p| {
                let result = match op {
                    Op::Stop => p.stop(ctx),
                    Op::Suspend => p.suspend(ctx),
                    Op::Resume => p.resume(ctx, reason),
                    Op::Pause => p.pause(ctx),
                    Op::Unpause => p.unpause(ctx),
                    Op::Query => p
                        .query(ctx)
                        .map_or(OpResult::Unsupported, |_| OpResult::Done),
                    Op::Rescan => match rescan {
                        Some(a) => p.rescan(ctx, a),
                        None => OpResult::Unsupported,
                    },
                };
                Outcome {
                    label: p.label().to_owned(),
                    result,
                }
            })
            .collect()
    }

    /// Runs `op` and makes the ack's `err` ([`aggregate`]), logging every failure.
    pub fn run_aggregated(
        &mut self,
        op: Op,
        ctx: &mut C,
        reason: u32,
        rescan: Option<&BlkRescan>,
    ) -> i32 {
        let outcomes = self.run(op, ctx, reason, rescan);
        for o in &outcomes {
            match o.result {
                OpResult::Failed(code) => {
                    log::warn!("{} of provider {} failed with {code}", op.name(), o.label);
                }
                OpResult::Done => log::debug!("{} done by {}", op.name(), o.label),
                OpResult::Unsupported => {}
            }
        }
        let code = aggregate(&outcomes);
        if code == err::UNSUPPORTED {
            log::info!("No provider implements {}", op.name());
        }
        code
    }

    /// DM_QUERY: the first provider implementing `query`, with its label.
    pub fn query(&mut self, ctx: &mut C) -> Option<(String, i32)> {
        self.providers
            .iter_mut()
            .find_map(|p| p.query(ctx).map(|m| (p.label().to_owned(), m)))
    }

    /// Tells every provider that a forced DM_STOP powered the VM off.
    pub fn powered_off(&mut self, ctx: &mut C) {
        for p in &mut self.providers {
            p.powered_off(ctx);
        }
    }
}

/// The monitor's own provider: the DM suspend mode kept in [`MonitorState`].
#[derive(Debug, Clone, Copy)]
struct Pmc;

impl<C: DeviceModel> VmOps<C> for Pmc {
    fn label(&self) -> &str {
        PMC_LABEL
    }

    fn resume(&mut self, ctx: &mut C, _reason: u32) -> OpResult {
        let m: &mut MonitorState<C> = ctx.monitor();
        if m.suspend_mode() == suspend_mode::POWEROFF {
            // The VM is being torn down; nothing can run it again.
            return OpResult::Failed(err::BUSY);
        }
        m.set_suspend_mode(suspend_mode::NONE);
        OpResult::Done
    }

    fn query(&mut self, ctx: &mut C) -> Option<i32> {
        Some(ctx.monitor().suspend_mode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(label: &str, result: OpResult) -> Outcome {
        Outcome {
            label: label.to_owned(),
            result,
        }
    }

    #[test]
    fn nothing_implemented_is_unsupported_not_failed() {
        assert_eq!(aggregate(&[]), err::UNSUPPORTED);
        assert_eq!(
            aggregate(&[o("a", OpResult::Unsupported), o("b", OpResult::Unsupported)]),
            err::UNSUPPORTED
        );
        assert_ne!(err::UNSUPPORTED, err::FAILED);
    }

    #[test]
    fn done_by_any_is_ok() {
        assert_eq!(
            aggregate(&[o("a", OpResult::Unsupported), o("b", OpResult::Done)]),
            err::OK
        );
        assert_eq!(
            aggregate(&[o("a", OpResult::Done), o("b", OpResult::Done)]),
            err::OK
        );
    }

    #[test]
    fn first_failure_wins_and_nothing_is_summed() {
        let outcomes = [
            o("a", OpResult::Done),
            o("b", OpResult::Failed(-5)),
            o("c", OpResult::Failed(err::FAILED)),
        ];
        assert_eq!(aggregate(&outcomes), -5, "not -6");
        assert_eq!(
            aggregate(&[
                o("a", OpResult::Failed(err::FAILED)),
                o("b", OpResult::Failed(-5))
            ]),
            err::FAILED
        );
        // A failure after an unsupported one is still the answer.
        assert_eq!(
            aggregate(&[o("a", OpResult::Unsupported), o("b", OpResult::Failed(-16))]),
            -16
        );
    }

    #[test]
    fn non_negative_failure_codes_become_failed() {
        assert_eq!(aggregate(&[o("a", OpResult::Failed(0))]), err::FAILED);
        assert_eq!(aggregate(&[o("a", OpResult::Failed(7))]), err::FAILED);
        assert_eq!(OpResult::from_bool(true), OpResult::Done);
        assert_eq!(OpResult::from_bool(false), OpResult::Failed(err::FAILED));
    }

    #[test]
    fn blkrescan_devargs() {
        assert_eq!(
            BlkRescan::parse("3,/var/img.raw"),
            Some(BlkRescan {
                slot: 3,
                path: "/var/img.raw".into()
            })
        );
        assert_eq!(
            BlkRescan::parse("12,"),
            Some(BlkRescan {
                slot: 12,
                path: String::new()
            })
        );
        assert_eq!(
            BlkRescan::parse("4,a,b"),
            Some(BlkRescan {
                slot: 4,
                path: "a,b".into()
            }),
            "only the first comma separates"
        );
        for bad in [
            "",
            "3",
            "/img",
            ",/img",
            "x,/img",
            "-1,/img",
            " 3,/img",
            "3 ,/img",
            "0x3,/img",
            "99999999999,/img",
        ] {
            assert_eq!(BlkRescan::parse(bad), None, "{bad:?}");
        }
    }
}
