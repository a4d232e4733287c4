//! The monitor's outbox as a subscriber of the device model's event loop: it takes the
//! messages queued in the [`MonitorState`](super::MonitorState), sends them one at a time
//! as worker jobs, retries on a timer, and hands each result back to the state (see
//! `outbox.rs` for the rules).

use std::fmt;
use std::io;

use mio::event::Event;
use mngr_ipc::runtime::{Ops, Subscriber};

use super::DeviceModel;
use super::outbox::{self, Attempt, Delivery, MAX_QUEUED, Next, OutboxConfig, Report, SendResult};

/// The timers of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutboxTimer {
    /// Send the current message again.
    Retry,
}

/// A finished send job.
#[derive(Debug)]
pub(crate) struct Sent(SendResult);

/// Sends the monitor's messages to acrnd, in order, one in flight at a time.
pub(crate) struct Outbox {
    cfg: OutboxConfig,
    /// The message being sent or waiting to be retried.
    current: Option<Attempt>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("acrnd", &self.cfg.acrnd)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    pub(crate) fn new(cfg: OutboxConfig) -> Self {
        Outbox { cfg, current: None }
    }

    /// Starts the next message unless one is in flight.
    fn pump<C: DeviceModel>(&mut self, ops: &mut Ops<'_, C, Self>, ctx: &mut C) {
        while self.current.is_none() {
            let m = ctx.monitor();
            let queue = m.outbox();
            let dropped = outbox::coalesce(queue, MAX_QUEUED);
            let next = queue.pop_front();
            for msg in dropped {
                m.delivered(Report {
                    msg,
                    delivery: Delivery::Coalesced,
                });
            }
            let Some(msg) = next else {
                return;
            };
            self.current = Some(Attempt::first(msg, self.cfg.backoff));
            self.send(ops, ctx);
        }
    }

    /// Hands the current message to a worker; a job that cannot start fails the message.
    fn send<C: DeviceModel>(&mut self, ops: &mut Ops<'_, C, Self>, ctx: &mut C) {
        let Some(a) = self.current else {
            return;
        };
        let cfg = self.cfg.clone();
        if let Err(e) = ops.spawn(move || Sent(outbox::send(&cfg, a.msg))) {
            self.current = None;
            ctx.monitor().delivered(Report {
                msg: a.msg,
                delivery: Delivery::Failed {
                    error: format!("Cannot start a worker: {e}"),
                    attempts: a.attempts,
                },
            });
        }
    }
}

impl<C: DeviceModel> Subscriber<C> for Outbox {
    type Timer = OutboxTimer;
    type Done = Sent;

    fn init(&mut self, _ops: &mut Ops<'_, C, Self>) -> io::Result<()> {
        Ok(())
    }

    fn on_event(&mut self, _event: &Event, _ops: &mut Ops<'_, C, Self>, _ctx: &mut C) {}

    fn on_timer(&mut self, key: OutboxTimer, ops: &mut Ops<'_, C, Self>, ctx: &mut C) {
        match key {
            OutboxTimer::Retry => self.send(ops, ctx),
        }
    }

    fn on_done(&mut self, done: Sent, ops: &mut Ops<'_, C, Self>, ctx: &mut C) {
        let Some(mut a) = self.current else {
            log::error!("A send to acrnd finished with no message in flight");
            return;
        };
        match a.settle(done.0, self.cfg.attempts) {
            Next::Retry(pause) => {
                self.current = Some(a);
                ops.arm_after(OutboxTimer::Retry, pause);
            }
            Next::Done(delivery) => {
                self.current = None;
                ctx.monitor().delivered(Report {
                    msg: a.msg,
                    delivery,
                });
                self.pump(ops, ctx);
            }
        }
    }

    fn on_notify(&mut self, ops: &mut Ops<'_, C, Self>, ctx: &mut C) {
        self.pump(ops, ctx);
    }
}
