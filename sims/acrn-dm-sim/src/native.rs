//! The native lifecycle channel (`--native`): a CBC char device or an ioc-sim mirror pty
//! carrying 4-byte service frames, read-only. Opened when the virtual IOC wants it,
//! re-opened with a doubling back-off when it is missing or lost, read until `WouldBlock`.
//!
//! All the reading of the IOC line lives here, behind [`NativeLine`], so that the shared
//! line endpoint of `mngr_ipc::line` can replace it in one place.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use mngr_ipc::cbc::Frame;
use mngr_ipc::event_log::EventLog;
use mngr_ipc::line::{LineCodec, LineDevice, LineMode, open_line};
use mngr_ipc::runtime::Ops;
use serde_json::json;

use crate::dm::Dm;
use crate::event_handler::{Core, SimTimer};

const REOPEN_FIRST: Duration = Duration::from_millis(50);
const REOPEN_MAX: Duration = Duration::from_secs(1);

struct Open {
    file: LineDevice,
    token: Token,
}

/// The native channel of the simulated VM, if it has one.
pub(crate) struct NativeLine {
    path: Option<PathBuf>,
    open: Option<Open>,
    /// The virtual IOC wants it open (not in S3), and the DM is not exiting.
    wanted: bool,
    ended: bool,
    codec: LineCodec,
    failures: u32,
    backoff: Duration,
}

impl NativeLine {
    pub(crate) fn new(path: Option<PathBuf>) -> Self {
        NativeLine {
            path,
            open: None,
            wanted: true,
            ended: false,
            codec: LineCodec::new(LineMode::Cdev),
            failures: 0,
            backoff: REOPEN_FIRST,
        }
    }

    /// Whether `token` is the channel's.
    pub(crate) fn owns(&self, token: Token) -> bool {
        self.open.as_ref().map(|o| o.token) == Some(token)
    }

    /// The virtual IOC wants the channel again: opens it now; returns the frames already
    /// waiting on it.
    pub(crate) fn want(&mut self, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) -> Vec<Frame> {
        self.wanted = true;
        self.backoff = REOPEN_FIRST;
        self.open(ops, log)
    }

    /// The virtual IOC closes the channel (`why`) until it wants it again.
    pub(crate) fn unwant(&mut self, why: &str, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) {
        self.wanted = false;
        self.close(why, ops, log);
        ops.cancel(&SimTimer::Reopen);
    }

    /// The DM exits: closes the channel for good.
    pub(crate) fn end(&mut self, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) {
        self.ended = true;
        self.close("exiting", ops, log);
        ops.cancel(&SimTimer::Reopen);
    }

    /// Opens the channel if it is wanted and closed (the boot, the re-open timer); returns
    /// the frames already waiting on it (written before it was watched: no edge).
    pub(crate) fn open(&mut self, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) -> Vec<Frame> {
        let Some(path) = self.path.clone() else {
            return Vec::new();
        };
        if self.open.is_some() || !self.wanted || self.ended {
            return Vec::new();
        }
        let file = match open_line(&path, LineMode::Cdev, 0) {
            Ok(file) => file,
            Err(e) => {
                if self.failures == 0 {
                    log::warn!(
                        "Native lifecycle channel {} not available ({e}); retrying",
                        path.display()
                    );
                } else {
                    log::debug!("Native lifecycle channel still not available: {e}");
                }
                self.failures = self.failures.saturating_add(1);
                self.schedule_reopen(ops);
                return Vec::new();
            }
        };
        let fd = file.as_raw_fd();
        match ops.register(&mut SourceFd(&fd), Interest::READABLE) {
            Ok(token) => {
                log::info!("Native lifecycle channel {} open", path.display());
                log.emit(
                    "native.line",
                    json!({"state": "open", "path": path.display().to_string()}),
                );
                self.open = Some(Open { file, token });
                self.codec = LineCodec::new(LineMode::Cdev);
                self.failures = 0;
                self.backoff = REOPEN_FIRST;
                self.read(ops, log)
            }
            Err(e) => {
                log::error!("Cannot watch {}: {e}", path.display());
                self.schedule_reopen(ops);
                Vec::new()
            }
        }
    }

    /// Reads until `WouldBlock`; returns the complete frames. End of file or an error
    /// closes the channel and schedules a re-open (what was read of it is dropped: the
    /// codec starts afresh on the re-opened channel).
    pub(crate) fn read(&mut self, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) -> Vec<Frame> {
        let mut buf = [0u8; 256];
        while let Some(o) = self.open.as_mut() {
            match o.file.read(&mut buf) {
                Ok(0) => return self.lost("end of file", ops, log),
                Ok(k) => self.codec.feed(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.lost(&e.to_string(), ops, log),
            }
        }
        std::iter::from_fn(|| self.codec.next_frame()).collect()
    }

    fn lost(&mut self, why: &str, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) -> Vec<Frame> {
        self.close(why, ops, log);
        self.schedule_reopen(ops);
        Vec::new()
    }

    fn schedule_reopen(&mut self, ops: &mut Ops<'_, Dm, Core>) {
        if !ops.is_armed(&SimTimer::Reopen) && self.wanted && !self.ended {
            ops.arm_after(SimTimer::Reopen, self.backoff);
            self.backoff = (self.backoff * 2).min(REOPEN_MAX);
        }
    }

    fn close(&mut self, why: &str, ops: &mut Ops<'_, Dm, Core>, log: &EventLog) {
        if let Some(o) = self.open.take() {
            let fd = o.file.as_raw_fd();
            ops.deregister(&mut SourceFd(&fd), o.token);
            log::info!("Native lifecycle channel closed ({why})");
            log.emit("native.line", json!({"state": "closed", "why": why}));
        }
    }
}
