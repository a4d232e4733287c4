//! The native lifecycle channel (`--native`): a CBC char device or an ioc-sim mirror pty
//! carrying 4-byte service frames, read-only.
//!
//! The line itself is the shared [`LineEndpoint`] of `mngr_ipc::line`: it opens the
//! device, reopens it on [`SimTimer::Reopen`] with a doubling back-off (50 ms up to 1 s)
//! when it is missing or lost, and reads it until `WouldBlock`. [`NativeLine`] adds what is
//! the simulator's own: the channel is wanted only while the virtual IOC is not in S3 and
//! the DM is not exiting, and every change is logged (`native.line`).

use std::path::PathBuf;
use std::time::Duration;

use mio::event::Event;
use mngr_ipc::cbc::Frame;
use mngr_ipc::event_log::EventLog;
use mngr_ipc::line::{Backoff, LineEndpoint, LineMode, LineSpec, Lost, OpenStep};
use mngr_ipc::runtime::Ops;
use serde_json::json;

use crate::dm::Dm;
use crate::event_handler::{Core, SimTimer};

/// The longest pause between attempts to open the channel.
const REOPEN_MAX: Duration = Duration::from_secs(1);

/// The native channel of the simulated VM, if it has one.
pub(crate) struct NativeLine {
    /// `None` without `--native`.
    line: Option<LineEndpoint<SimTimer>>,
    /// The virtual IOC wants it open (not in S3).
    wanted: bool,
    /// The DM is exiting.
    ended: bool,
}

impl NativeLine {
    pub(crate) fn new(path: Option<PathBuf>) -> Self {
        let line = path.map(|path| {
            let spec = LineSpec {
                path,
                mode: LineMode::Cdev,
                baud: 0,
            };
            let backoff = Backoff::new(Backoff::FIRST, REOPEN_MAX);
            // Read-only: nothing is ever queued.
            LineEndpoint::new(spec, SimTimer::Reopen, backoff, 0)
        });
        NativeLine {
            line,
            wanted: true,
            ended: false,
        }
    }

    /// Whether `event` is the channel's.
    pub(crate) fn owns(&self, event: &Event) -> bool {
        self.line.as_ref().is_some_and(|l| l.owns(event))
    }

    /// The virtual IOC wants the channel again: opens it now (the back-off starts over);
    /// returns the frames already waiting on it.
    pub(crate) fn want(&mut self, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) -> Vec<Frame> {
        self.wanted = true;
        if let Some(line) = self.line.as_mut() {
            line.reset_backoff();
        }
        self.open(ops, log)
    }

    /// The virtual IOC closes the channel (`why`) until it wants it again.
    pub(crate) fn unwant(&mut self, why: &str, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) {
        self.wanted = false;
        self.close(why, ops, log);
    }

    /// The DM exits: closes the channel for good.
    pub(crate) fn end(&mut self, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) {
        self.ended = true;
        self.close("exiting", ops, log);
    }

    /// Opens the channel if it is wanted and closed (the boot, the reopen timer); returns
    /// the frames already waiting on it (written before it was watched: no edge). On
    /// failure the endpoint has armed the next attempt.
    pub(crate) fn open(&mut self, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) -> Vec<Frame> {
        let Some(line) = self.line.as_mut() else {
            return Vec::new();
        };
        if line.is_open() || !self.wanted || self.ended {
            return Vec::new();
        }
        match line.open(ops) {
            Ok(()) => {
                let path = line.spec().path.display();
                log::info!("Native lifecycle channel {path} open");
                log.emit(
                    "native.line",
                    json!({"state": "open", "path": path.to_string()}),
                );
                let read = line.read(ops);
                self.frames(read, log)
            }
            Err(e) => {
                let path = line.spec().path.display();
                if e.step == OpenStep::Watch {
                    log::error!("Cannot watch {path}: {}", e.source);
                } else if e.failures == 1 {
                    log::warn!(
                        "Native lifecycle channel {path} not available ({}); retrying",
                        e.source
                    );
                } else {
                    log::debug!("Native lifecycle channel still not available: {}", e.source);
                }
                Vec::new()
            }
        }
    }

    /// Handles readiness of the channel; returns the complete frames read.
    pub(crate) fn on_event(
        &mut self,
        event: &Event,
        ops: &mut Ops<'_, Dm, Core>,
        log: &EventLog,
    ) -> Vec<Frame> {
        let Some(line) = self.line.as_mut() else {
            return Vec::new();
        };
        let read = line.on_event(event, ops);
        self.frames(read, log)
    }

    /// The complete frames read, unless the channel was lost: the endpoint closed it and
    /// armed its reopening, and what was read of it is dropped (the endpoint's codec starts
    /// afresh on the reopened channel).
    fn frames(&mut self, read: Result<(), Lost>, log: &EventLog) -> Vec<Frame> {
        let Some(line) = self.line.as_mut() else {
            return Vec::new();
        };
        match read {
            Ok(()) => std::iter::from_fn(|| line.next_frame()).collect(),
            Err(lost) => {
                closed(&lost.cause.to_string(), log);
                Vec::new()
            }
        }
    }

    /// Closes the channel on purpose (`why`); no reopen is armed.
    fn close(&mut self, why: &str, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) {
        if let Some(line) = self.line.as_mut()
            && line.close(ops)
        {
            closed(why, log);
        }
    }
}

fn closed(why: &str, log: &EventLog) {
    log::info!("Native lifecycle channel closed ({why})");
    log.emit("native.line", json!({"state": "closed", "why": why}));
}
