//! The requests sos-lcs serves, one typed handler each, registered with their access class:
//!
//! | server | id | access |
//! |---|---|---|
//! | `sos-lcs`, `service-vm-lcs` | WAKEUP_REASON | open |
//! | `sos-lcs`, `service-vm-lcs` | RTC_TIMER, SHUTDOWN, SUSPEND, REBOOT | privileged |
//! | stand-in `acrnd` (`--no-acrnd`) | ACRND_STOP, ACRND_RESUME | privileged, and sos-lcs itself |
//!
//! The server refuses a peer its policy does not allow (-EACCES, `ipc.refused`) before any
//! handler runs, and notes every request (`ipc.request`).

use std::time::Instant;

use mngr_ipc::cbc::RtcWake;
use mngr_ipc::msg::{AckPayload, body, epoch_now, err};
use mngr_ipc::server::{Call, Handlers, PeerCred, Reply};
use serde_json::json;

use super::{Lcs, Work};
use crate::state::{Event, Verdict};

/// The handlers of the lifecycle service's names.
pub(super) fn lcs_handlers() -> Handlers<Lcs> {
    Handlers::new()
        .open(|_: body::WakeupReason, call, s: &mut Lcs| s.on_wakeup_reason(call))
        .privileged(|b: body::RtcTimer, call, s: &mut Lcs| s.on_rtc_timer(&b, call))
        .privileged(|b: body::Shutdown, call, s: &mut Lcs| {
            s.on_verdict(Verdict::Shutdown, b.err, call)
        })
        .privileged(|b: body::Suspend, call, s: &mut Lcs| {
            s.on_verdict(Verdict::Suspend, b.err, call)
        })
        .privileged(|b: body::Reboot, call, s: &mut Lcs| s.on_verdict(Verdict::Reboot, b.err, call))
}

/// The handlers of the stand-in acrnd (no-acrnd mode). sos-lcs's own requests (its acrnd
/// client runs in this process) are served whatever the policy; anyone else needs what
/// acrnd would require.
pub(super) fn standin_handlers() -> Handlers<Lcs> {
    Handlers::new()
        .privileged_unless(
            |_: &body::AcrndStop, peer, _: &Lcs| is_this_process(peer),
            |_, call, s: &mut Lcs| s.on_standin_stop(call),
        )
        .privileged_unless(
            |_: &body::AcrndResume, peer, _: &Lcs| is_this_process(peer),
            |_, call, _: &mut Lcs| call.ack(AckPayload::Err(err::OK)),
        )
}

/// Whether the peer is sos-lcs itself.
fn is_this_process(peer: &PeerCred) -> bool {
    u32::try_from(peer.pid).is_ok_and(|p| p == std::process::id())
}

fn now_epoch() -> i64 {
    i64::try_from(epoch_now()).unwrap_or(i64::MAX)
}

impl Lcs {
    fn on_wakeup_reason(&mut self, call: Call<'_>) -> Reply {
        if let Some(r) = self.machine.latched_reason() {
            return call.ack(AckPayload::Reason(r));
        }
        // No reason yet (boot, or just after S3): answer when the first one comes, so that
        // acrnd does not take an RTC boot for an ignition boot.
        let (reply, d) = call.defer();
        self.reason_waiters
            .push((d, Instant::now() + self.cfg.reason_wait));
        self.work.push_back(Work::ReasonWait);
        self.wake_core();
        reply
    }

    fn on_rtc_timer(&mut self, b: &body::RtcTimer, call: Call<'_>) -> Reply {
        let who: String = String::from_utf8_lossy(&b.vmname)
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(32)
            .collect();
        let t = b.t;
        let delta = t.saturating_sub(now_epoch());
        match RtcWake::from_delta(delta) {
            Some(w) => {
                log::info!("RTC wake-up armed for epoch {t} ({delta} s, {w:?}) for {who:?}");
                self.rtc_at = Some(t);
                self.log
                    .emit("rtc.armed", json!({"t": t, "delta": delta, "vm": who}));
                call.ack(AckPayload::Err(err::OK))
            }
            None => {
                log::warn!("RTC wake-up at epoch {t} refused: {delta} s from now is out of range");
                call.ack(AckPayload::Err(err::FAILED))
            }
        }
    }

    fn on_verdict(&mut self, kind: Verdict, e: i32, call: Call<'_>) -> Reply {
        if self.dispatch(Event::Verdict { kind, err: e }) {
            call.ack(AckPayload::Err(err::OK))
        } else {
            log::info!(
                "{} (err {e}) not possible in state {}",
                call.id(),
                self.machine.state().name()
            );
            call.ack(AckPayload::Err(err::BUSY))
        }
    }

    /// The stand-in acrnd of no-acrnd mode: agree at once, S5 if the IOC asked for it.
    fn on_standin_stop(&mut self, call: Call<'_>) -> Reply {
        let kind = if self.machine.force_s5() {
            Verdict::Shutdown
        } else {
            Verdict::Suspend
        };
        self.dispatch(Event::Verdict { kind, err: 0 });
        call.ack(AckPayload::Err(err::OK))
    }
}
