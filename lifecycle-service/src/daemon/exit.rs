//! The exit path: at SIGTERM, ask what the host is doing (on a worker, the loop keeps
//! heartbeating meanwhile), then tell the IOC with the last frames and stop.

use std::time::Duration;

use mngr_ipc::cbc::{Frame, Heartbeat};
use mngr_ipc::host::{self, HostIntent};
use mngr_ipc::msg::AckPayload;
use serde_json::json;

use super::{Core, CoreOps, Done, Lcs, SUPPRESS_SHUTDOWN_MS, SUPPRESS_STOP_MS};

/// Longest the host-intent command may take.
const INTENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the last frames may wait for room on the line.
const LAST_FRAMES_WAIT: Duration = Duration::from_millis(200);

impl Core {
    /// SIGTERM: asks what the host is doing on a worker, then [`Core::finish`] writes the
    /// last frames. If no worker can run it, a plain stop is assumed.
    pub(super) fn terminate(&mut self, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        if self.terminating {
            return;
        }
        self.terminating = true;
        let argv = s.cfg.intent_cmd.clone();
        let job = move || Done::Intent(host::host_intent(&argv, INTENT_TIMEOUT));
        if let Err(e) = ops.spawn(job) {
            log::warn!("Cannot ask for the host's intent ({e}): assuming a plain stop");
            self.finish(HostIntent::None, ops, s);
        }
    }

    /// The last frames for `intent`, the deferred answers, and the end of the loop.
    pub(super) fn finish(&mut self, intent: HostIntent, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        log::info!("Stopping; host intent: {}", intent.name());
        s.log.emit("exit", json!({"intent": intent.name()}));
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        let suppress = |ms| Frame::SuppressHeartbeat { ms };
        match intent {
            HostIntent::Reboot => {
                self.send(suppress(SUPPRESS_SHUTDOWN_MS), ops, s);
                self.send(Frame::Heartbeat(Heartbeat::REBOOT), ops, s);
            }
            HostIntent::Poweroff => {
                self.send_rtc(ops, s);
                self.send(suppress(SUPPRESS_SHUTDOWN_MS), ops, s);
                self.send(Frame::Heartbeat(Heartbeat::S5), ops, s);
            }
            HostIntent::None => self.send(suppress(SUPPRESS_STOP_MS), ops, s),
        }
        // A few bounded waits if the line is momentarily full: the loop does not run again.
        if let Err(e) = self.line.flush_blocking(LAST_FRAMES_WAIT) {
            log::warn!("Last frames not written: {e}");
        }
        for (d, _) in s.reason_waiters.drain(..) {
            d.complete(AckPayload::Reason(0));
        }
        ops.shutdown();
    }
}
