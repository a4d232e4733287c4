//! The `acrnd` server's handlers. Each is registered with its access class (the server
//! refuses and logs peers the policy does not allow; a device model may always speak for
//! its own VM) and receives its typed body: state changes go to the orchestrator, queries
//! are answered from its state.

use mngr_ipc::msg::{AckPayload, Status, TimerEntry, TimerPage, VmEntry, VmPage, body, err};
use mngr_ipc::server::{Call, Handlers, PeerCred, Reply};

use super::{Acrnd, now};
use crate::orchestrator::{Answer, ReplyId, Req};

/// Every request acrnd serves, with who may make it.
pub(super) fn handlers() -> Handlers<Acrnd> {
    Handlers::new()
        .open(|_: body::AcrndReason, call, s: &mut Acrnd| {
            call.ack(AckPayload::Reason(s.orch.reason()))
        })
        .open(|b: body::CtlList, call, s: &mut Acrnd| s.list_page(b.start, call))
        .open(|b: body::CtlTimers, call, s: &mut Acrnd| s.timer_page(b.start, call))
        .open(|_: body::CtlStatus, call, s: &mut Acrnd| s.status(call))
        .privileged_unless(
            // A VM's own device model may; an unknown VM is answered -ENOENT for anyone.
            |b: &body::AcrndTimer, peer: &PeerCred, s: &Acrnd| s.speaks_for(&b.name, peer),
            |b, call, s| {
                s.submit(
                    Req::Timer {
                        name: b.name,
                        t: b.t,
                    },
                    call,
                )
            },
        )
        .privileged_unless(
            |b: &body::DmNotify, peer: &PeerCred, s: &Acrnd| s.speaks_for(&b.name, peer),
            |b, call, s| {
                let req = Req::Notify {
                    name: b.name,
                    mode: b.mode,
                };
                s.submit(req, call)
            },
        )
        .privileged(|b: body::AcrndStop, call, s: &mut Acrnd| {
            let req = Req::StopAll {
                target: b.target,
                force: b.force != 0,
                timeout: b.timeout,
            };
            s.submit(req, call)
        })
        .privileged(|_: body::AcrndSuspend, call, s: &mut Acrnd| s.submit(Req::SuspendAll, call))
        .privileged(|_: body::AcrndResume, call, s: &mut Acrnd| s.submit(Req::ResumeAll, call))
        .privileged(|b: body::CtlStart, call, s: &mut Acrnd| {
            s.submit(Req::Start { name: b.name }, call)
        })
        .privileged(|b: body::CtlStop, call, s: &mut Acrnd| {
            let req = Req::Stop {
                name: b.name,
                force: b.force != 0,
            };
            s.submit(req, call)
        })
        .privileged(|b: body::CtlSuspend, call, s: &mut Acrnd| {
            s.submit(Req::Suspend { name: b.name }, call)
        })
        .privileged(|b: body::CtlResume, call, s: &mut Acrnd| {
            let req = Req::Resume {
                name: b.name,
                reason: b.reason,
            };
            s.submit(req, call)
        })
}

impl Acrnd {
    /// Whether `peer` may speak for `vm` without the policy: it is the VM's device model,
    /// or no such VM exists (the request is answered -ENOENT, changing nothing).
    fn speaks_for(&self, vm: &str, peer: &PeerCred) -> bool {
        !self.orch.knows(vm) || self.orch.is_dm_of(vm, peer.pid)
    }

    /// Gives `req` to the orchestrator; answers now or defers the ack under a reply id.
    fn submit(&mut self, req: Req, call: Call<'_>) -> Reply {
        let id = ReplyId(self.next_reply);
        self.next_reply += 1;
        let (answer, commands) = self.orch.request(req, id, now());
        let reply = match answer {
            Answer::Now(code) => call.ack(AckPayload::Err(code)),
            Answer::Later => {
                let (reply, deferred) = call.defer();
                self.replies.insert(id, deferred);
                reply
            }
        };
        self.queue(commands);
        reply
    }

    fn list_page(&self, start: u32, call: Call<'_>) -> Reply {
        let cap = self.cfg.profile.vm_page_capacity();
        let timers = self.orch.timers();
        let entries = self
            .orch
            .vms()
            .iter()
            .skip(usize::try_from(start).unwrap_or(usize::MAX))
            .take(cap)
            .map(|(n, v)| VmEntry {
                name: n.clone(),
                state: v.state.wire(),
                pid: v.pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0),
                next_wake: timers
                    .get(n)
                    .and_then(|w| i64::try_from(*w).ok())
                    .unwrap_or(0),
            })
            .collect();
        call.ack(AckPayload::VmPage(VmPage {
            err: err::OK,
            total: u32::try_from(self.orch.vms().len()).unwrap_or(u32::MAX),
            entries,
        }))
    }

    fn timer_page(&self, start: u32, call: Call<'_>) -> Reply {
        let cap = self.cfg.profile.timer_page_capacity();
        let mut all: Vec<(&String, &u64)> = self.orch.timers().iter().collect();
        all.sort_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)));
        let entries = all
            .into_iter()
            .skip(usize::try_from(start).unwrap_or(usize::MAX))
            .take(cap)
            .map(|(n, w)| TimerEntry {
                name: n.clone(),
                when: i64::try_from(*w).unwrap_or(i64::MAX),
            })
            .collect();
        call.ack(AckPayload::TimerPage(TimerPage {
            err: err::OK,
            total: u32::try_from(self.orch.timers().len()).unwrap_or(u32::MAX),
            entries,
        }))
    }

    fn status(&self, call: Call<'_>) -> Reply {
        call.ack(AckPayload::Status(Status {
            err: err::OK,
            wakeup_reason: self.orch.reason(),
            vms: u32::try_from(self.orch.vms().len()).unwrap_or(u32::MAX),
            lcs_reachable: u32::from(self.orch.lcs_reachable()),
            phase: self.orch.phase().to_wire(),
        }))
    }
}
