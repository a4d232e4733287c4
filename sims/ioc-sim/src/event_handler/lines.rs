//! The pty lines: registering, writing what waits, reading what the SoC sends, recreating a
//! line that failed, and the reason frames the IOC sends on every line.

use std::io;
use std::time::Instant;

use mio::Interest;
use mio::event::Event;
use mio::unix::SourceFd;
use mngr_ipc::cbc::Frame;
use mngr_ipc::error_chain;
use mngr_ipc::event_log::hex;
use mngr_ipc::line::{LineCodec, LineMode};
use serde_json::json;

use super::{LIFECYCLE, SimOps, Simulator, Timer, frame_fields, interest};
use crate::pty::PtyLine;

impl Simulator {
    pub(super) fn register_slot(&mut self, i: usize, ops: &mut SimOps<'_>) -> io::Result<()> {
        let slot = &mut self.slots[i];
        if let Some(line) = &slot.line {
            let fd = line.master_fd();
            slot.token = Some(ops.register(&mut SourceFd(&fd), Interest::READABLE)?);
            slot.writable = false;
        }
        Ok(())
    }

    pub(super) fn close_slot(&mut self, i: usize, ops: &mut SimOps<'_>) {
        let slot = &mut self.slots[i];
        if let Some(line) = slot.line.take() {
            if let Some(token) = slot.token.take() {
                let fd = line.master_fd();
                ops.deregister(&mut SourceFd(&fd), token);
            }
            // Dropping the line closes both pty ends and removes the symlink.
            drop(line);
        }
        slot.writable = false;
    }

    /// Closes a line that failed and recreates it after the reopen delay.
    pub(super) fn fail_slot(&mut self, i: usize, why: &str, ops: &mut SimOps<'_>) {
        log::warn!("{}: {why}; recreating the pty", self.slots[i].label);
        self.log.emit(
            "ioc.line",
            json!({"line": self.slots[i].label, "action": "failed", "error": why}),
        );
        self.close_slot(i, ops);
        ops.arm_unless_armed(Timer::Reopen(i), Instant::now() + self.reopen_delay);
    }

    pub(super) fn reopen_slot(&mut self, i: usize, ops: &mut SimOps<'_>) {
        match PtyLine::create(&self.slots[i].link) {
            Ok(line) => {
                let pty = line.slave_path().to_owned();
                self.slots[i].line = Some(line);
                self.slots[i].failures = 0;
                if let Err(e) = self.register_slot(i, ops) {
                    self.fail_slot(i, &format!("cannot register: {e}"), ops);
                    return;
                }
                if i == LIFECYCLE {
                    self.codec = LineCodec::new(self.mode);
                    self.codec_dropped = 0;
                }
                log::info!(
                    "{}: reopened {} -> {}",
                    self.slots[i].label,
                    self.slots[i].link.display(),
                    pty.display()
                );
                self.log.emit(
                    "ioc.line",
                    json!({"line": self.slots[i].label, "action": "opened", "pty": pty}),
                );
            }
            Err(e) => {
                let slot = &mut self.slots[i];
                let level = if slot.failures == 0 {
                    log::Level::Warn
                } else {
                    log::Level::Debug
                };
                log::log!(
                    level,
                    "{}: cannot recreate the pty (attempt {}): {}; retrying every {:?}",
                    slot.label,
                    slot.failures + 1,
                    error_chain(&e),
                    self.reopen_delay
                );
                slot.failures = slot.failures.saturating_add(1);
                ops.arm_after(Timer::Reopen(i), self.reopen_delay);
            }
        }
    }

    pub(super) fn flush_slot(&mut self, i: usize, ops: &mut SimOps<'_>) {
        let slot = &mut self.slots[i];
        let Some(line) = slot.line.as_mut() else {
            return;
        };
        match line.flush() {
            Ok(done) => {
                let want = !done;
                if want != slot.writable
                    && let Some(token) = slot.token
                {
                    let fd = line.master_fd();
                    match ops.reregister(&mut SourceFd(&fd), token, interest(want)) {
                        Ok(()) => slot.writable = want,
                        Err(e) => log::warn!("{}: cannot reregister: {e}", slot.label),
                    }
                }
            }
            Err(e) => self.fail_slot(i, &format!("write failed: {e}"), ops),
        }
    }

    pub(super) fn on_line_event(&mut self, i: usize, event: &Event, ops: &mut SimOps<'_>) {
        if event.is_writable() {
            self.flush_slot(i, ops);
        }
        let Some(line) = self.slots[i].line.as_mut() else {
            return;
        };
        let mut buf = Vec::new();
        let res = line.drain_input(&mut buf);
        if !buf.is_empty() {
            if i == LIFECYCLE {
                self.on_lifecycle_bytes(&buf, ops);
            } else {
                log::debug!(
                    "{}: discarding {} byte(s) from the far end: {}",
                    self.slots[i].label,
                    buf.len(),
                    hex(&buf[..buf.len().min(64)])
                );
            }
        }
        match res {
            Ok(true) => {}
            Ok(false) => self.fail_slot(i, "end of file on the pty master", ops),
            Err(e) => self.fail_slot(i, &format!("read failed: {e}"), ops),
        }
    }

    pub(super) fn on_lifecycle_bytes(&mut self, bytes: &[u8], ops: &mut SimOps<'_>) {
        log::trace!("lifecycle: {} byte(s) in: {}", bytes.len(), hex(bytes));
        self.codec.feed(bytes);
        while let Some(frame) = self.codec.next_frame() {
            self.frames_rx += 1;
            log::trace!("lifecycle: rx {frame:?}");
            // The bytes exactly as the SoC sent them (decoding ignores some bits).
            let mut fields = frame_fields(&frame, "lifecycle", None);
            fields["hex"] = json!(hex(&self.codec.last_service_bytes()));
            if !self.codec.last_link_bytes().is_empty() {
                fields["raw"] = json!(hex(self.codec.last_link_bytes()));
            }
            self.log.emit("frame.rx", fields);
            let fx = self.ioc.on_frame(&frame, Instant::now());
            self.apply(fx, ops);
        }
        let dropped = self.codec.dropped() + self.codec.skipped();
        if dropped != self.codec_dropped {
            log::debug!(
                "lifecycle: skipped {} garbage byte(s)/frame(s) from the SoC",
                dropped - self.codec_dropped
            );
            self.codec_dropped = dropped;
        }
    }

    /// Sends a reason frame on every line: faults apply to the lifecycle line only.
    pub(super) fn send_reason(&mut self, reason: u32, ops: &mut SimOps<'_>) {
        let frame = Frame::WakeupReason(reason);
        let service = match frame.encode() {
            Ok(b) => b,
            Err(e) => {
                log::error!("Cannot encode reason {reason:#x}: {e}");
                return;
            }
        };
        for i in LIFECYCLE + 1..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(line) = slot.line.as_mut() else {
                continue;
            };
            line.queue(&service);
            self.log
                .emit("frame.tx", frame_fields(&frame, &slot.label, None));
            self.flush_slot(i, ops);
        }
        let Some(line) = self.slots[LIFECYCLE].line.as_mut() else {
            log::debug!("lifecycle: line closed, reason {reason:#x} not sent");
            return;
        };
        let bytes = match self.codec.encode(&frame) {
            Ok(b) => b,
            Err(e) => {
                log::error!("Cannot encode reason {reason:#x}: {e}");
                return;
            }
        };
        log::trace!("lifecycle: tx reason {reason:#x}: {}", hex(&bytes));
        let inj = self.faults.inject(self.mode, &bytes);
        let counts = self.faults.counts();
        if let Some(g) = &inj.garbage {
            line.queue(g);
            self.log.emit(
                "fault",
                json!({"point": "garbage", "line": "lifecycle", "raw": hex(g), "count": counts.garbage}),
            );
        }
        if inj.dropped {
            self.log.emit(
                "fault",
                json!({"point": "drop", "line": "lifecycle", "hex": hex(&service), "count": counts.drop}),
            );
        } else {
            if let Some(bit) = inj.corrupted_bit {
                self.log.emit(
                    "fault",
                    json!({"point": "corrupt", "line": "lifecycle", "hex": hex(&service),
                           "raw": hex(&inj.bytes), "bit": bit, "count": counts.corrupt}),
                );
            }
            let raw_differs = self.mode == LineMode::Uart || inj.corrupted_bit.is_some();
            let copies = if inj.duplicated { 2 } else { 1 };
            for _ in 0..copies {
                line.queue(&inj.bytes);
                self.frames_tx += 1;
                self.log.emit(
                    "frame.tx",
                    frame_fields(&frame, "lifecycle", raw_differs.then_some(&inj.bytes[..])),
                );
            }
            if inj.duplicated {
                self.log.emit(
                    "fault",
                    json!({"point": "dup", "line": "lifecycle", "hex": hex(&service), "count": counts.dup}),
                );
            }
        }
        self.flush_slot(LIFECYCLE, ops);
    }
}
