//! The IOC line as sos-lcs uses it: opened at start and reopened with back-off by the
//! [`LineEndpoint`](mngr_ipc::line::LineEndpoint), wakeup reasons in, heartbeats and the
//! other SoC frames out, each logged (`frame.rx`, `frame.tx`, `line`).

use mngr_ipc::cbc::{Frame, RtcWake};
use mngr_ipc::event_log::hex;
use mngr_ipc::line::{Lost, OpenStep, QueueError};
use mngr_ipc::msg::epoch_now;
use serde_json::json;

use super::{Core, CoreOps, Lcs};
use crate::state::Event;

pub(super) fn notify_status(status: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(status)]);
}

impl Core {
    /// Opens the line; on success the IOC hears the current heartbeat at once, not a period
    /// later. On failure the endpoint has armed the next attempt.
    pub(super) fn open_line(&mut self, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        let lc = &s.cfg.line;
        match self.line.open(ops) {
            Ok(()) => {
                log::info!("IOC line {} open ({:?} mode)", lc.path.display(), lc.mode);
                s.log.emit(
                    "line",
                    json!({"state": "open", "path": lc.path.display().to_string()}),
                );
                notify_status(&format!("IOC line {} open", lc.path.display()));
                let now = s.machine.tick();
                self.perform(now, ops, s);
            }
            Err(e) if e.step == OpenStep::Watch => {
                log::error!("Cannot watch {}: {}", lc.path.display(), e.source);
            }
            Err(e) if e.failures == 1 => {
                log::warn!(
                    "IOC line {} not available ({}); retrying with back-off up to {:?}",
                    lc.path.display(),
                    e.source,
                    s.cfg.reopen_max
                );
                notify_status(&format!("waiting for IOC line {}", lc.path.display()));
            }
            Err(e) => {
                log::debug!(
                    "IOC line {} still not available: {}",
                    lc.path.display(),
                    e.source
                );
            }
        }
    }

    /// The endpoint closed the lost line and armed its reopening.
    pub(super) fn line_lost(&mut self, lost: &Lost, s: &mut Lcs) {
        let why = lost.cause.to_string();
        let path = s.cfg.line.path.display();
        log::warn!("IOC line {path} lost ({why}); reopening");
        s.log.emit("line", json!({"state": "closed", "why": why}));
        notify_status(&format!("IOC line {path} lost"));
    }

    /// Feeds the frames read to the machine.
    pub(super) fn take_frames(&mut self, s: &mut Lcs) {
        while let Some(frame) = self.line.next_frame() {
            let bytes = frame.encode().unwrap_or_default();
            s.log.emit(
                "frame.rx",
                json!({"hex": hex(&bytes), "frame": frame.name()}),
            );
            match frame {
                Frame::WakeupReason(r) => {
                    log::trace!("Wakeup reason {r:#08x}");
                    s.dispatch(Event::Reason(r));
                }
                Frame::LogicMode(_) => log::debug!("Logic-mode frame ignored"),
                other => log::debug!("Unexpected frame from the IOC ignored: {other:?}"),
            }
        }
    }

    /// Queues `frame` and writes what the line takes.
    pub(super) fn send(&mut self, frame: Frame, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        let service = match self.line.queue(&frame) {
            Ok(service) => service,
            Err(QueueError::Encode(e)) => {
                log::error!("Cannot encode the {} frame: {e}", frame.name());
                return;
            }
            Err(QueueError::Down) => {
                log::debug!("IOC line down: {} frame not sent", frame.name());
                return;
            }
            Err(QueueError::Full) => {
                log::warn!("IOC line not draining: dropping the {} frame", frame.name());
                return;
            }
        };
        if matches!(frame, Frame::Heartbeat(_)) {
            log::trace!("Heartbeat {}", hex(&service));
        } else {
            log::debug!("Frame {} to the IOC", hex(&service));
        }
        s.log.emit(
            "frame.tx",
            json!({"hex": hex(&service), "frame": frame.name()}),
        );
        if !self.first_frame_logged {
            self.first_frame_logged = true;
            log::debug!("First frame {:?} after start", self.started.elapsed());
        }
        if let Err(lost) = self.line.flush(ops) {
            self.line_lost(&lost, s);
        }
    }

    /// Sends the armed RTC wake-up, unless its time has passed.
    pub(super) fn send_rtc(&mut self, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        let Some(t) = s.rtc_at else { return };
        let now = i64::try_from(epoch_now()).unwrap_or(i64::MAX);
        let delta = t.saturating_sub(now);
        match RtcWake::from_delta(delta) {
            Some(w) => self.send(Frame::Rtc(w), ops, s),
            None => {
                log::warn!("RTC wake-up at epoch {t} has passed; dropped");
                s.rtc_at = None;
            }
        }
    }
}
