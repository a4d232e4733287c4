//! The outbox to acrnd: DM_NOTIFY and ACRND_TIMER requests, sent by one worker thread so
//! the event loop never blocks on acrnd.
//!
//! The loop queues [`Outgoing`] messages on a channel; the worker sends them **in order**,
//! one at a time, with the blocking [`Client`], and reports each one's fate ([`Report`])
//! back through a channel and the monitor's [`Notifier`], where it is logged.
//!
//! * Order: one worker, FIFO. An ACRND_TIMER queued before a DM_NOTIFY reaches acrnd first
//!   (a guest arms its wake-up before it reports itself suspended or off).
//! * Coalescing ([`coalesce`]): messages that queue up while acrnd is slow are sent in order,
//!   except that a DM_NOTIFY equal to the one just before it in the queue is dropped, and
//!   beyond [`MAX_QUEUED`] the oldest DM_NOTIFY is dropped (the latest state always goes
//!   out). ACRND_TIMER requests are never dropped.
//! * Retries: only when the request certainly did not reach acrnd (no socket, connection
//!   refused), up to the configured attempts with a doubling pause. A timeout or a closed
//!   connection may mean acrnd got it, so it is not repeated (a second ACRND_TIMER would
//!   arm a second timer). An ack with a non-zero `err` is acrnd's answer, not retried.

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mngr_ipc::client::{Client, ClientError};
use mngr_ipc::msg::{Body, Request};
use mngr_ipc::runtime::Notifier;

/// Most messages waiting in the worker before DM_NOTIFYs are dropped (oldest first).
pub const MAX_QUEUED: usize = 32;

/// A message for acrnd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// DM_NOTIFY with this suspend mode.
    Notify {
        /// DM suspend mode.
        mode: i32,
    },
    /// ACRND_TIMER in this many seconds.
    Timer {
        /// Relative seconds.
        secs: i64,
    },
}

impl Outgoing {
    pub(crate) fn msg_name(self) -> &'static str {
        match self {
            Outgoing::Notify { .. } => "DM_NOTIFY",
            Outgoing::Timer { .. } => "ACRND_TIMER",
        }
    }

    fn request(self, vm: &str) -> Request {
        Request::now(match self {
            Outgoing::Notify { mode } => Body::DmNotify {
                name: vm.to_owned(),
                mode,
            },
            Outgoing::Timer { secs } => Body::AcrndTimer {
                name: vm.to_owned(),
                t: secs,
            },
        })
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// acrnd answered; `err` is the ack's `err`.
    Acked {
        /// The ack's `err`.
        err: Option<i32>,
        /// Attempts made.
        attempts: u32,
    },
    /// Not delivered.
    Failed {
        /// The error chain of the last attempt.
        error: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Dropped by [`coalesce`] before it was sent.
    Coalesced,
}

/// One message's fate, for the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) msg: Outgoing,
    pub(crate) delivery: Delivery,
}

/// How the worker reaches acrnd.
#[derive(Debug, Clone)]
pub(crate) struct OutboxConfig {
    pub(crate) client: Client,
    pub(crate) acrnd: String,
    pub(crate) vm: String,
    pub(crate) timeout: Duration,
    pub(crate) attempts: u32,
    pub(crate) backoff: Duration,
}

/// Drops redundant messages from `queue` (see the module docs); returns the dropped ones.
pub(crate) fn coalesce(queue: &mut VecDeque<Outgoing>, cap: usize) -> Vec<Outgoing> {
    let mut dropped = Vec::new();
    let mut kept: VecDeque<Outgoing> = VecDeque::with_capacity(queue.len());
    for m in queue.drain(..) {
        let repeat = matches!(m, Outgoing::Notify { .. }) && kept.back() == Some(&m);
        if repeat {
            dropped.push(m);
        } else {
            kept.push_back(m);
        }
    }
    while kept.len() > cap {
        // The oldest DM_NOTIFY that is not the last one queued.
        let last = kept.len() - 1;
        match kept
            .iter()
            .take(last)
            .position(|m| matches!(m, Outgoing::Notify { .. }))
        {
            Some(i) => {
                if let Some(m) = kept.remove(i) {
                    dropped.push(m);
                }
            }
            None => break,
        }
    }
    *queue = kept;
    dropped
}

fn retryable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::NotFound { .. } | ClientError::Connect { .. } | ClientError::Lookup(_)
    )
}

/// Starts the worker. It ends when every sender of `rx` is gone.
pub(crate) fn spawn(
    cfg: OutboxConfig,
    rx: Receiver<Outgoing>,
    reports: Sender<Report>,
    notifier: Notifier,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("{}-to-acrnd", cfg.vm))
        .spawn(move || {
            Worker {
                cfg,
                rx,
                reports,
                notifier,
                queue: VecDeque::new(),
            }
            .run()
        })
}

struct Worker {
    cfg: OutboxConfig,
    rx: Receiver<Outgoing>,
    reports: Sender<Report>,
    notifier: Notifier,
    queue: VecDeque<Outgoing>,
}

impl Worker {
    fn run(mut self) {
        loop {
            if self.queue.is_empty() {
                match self.rx.recv() {
                    Ok(m) => self.queue.push_back(m),
                    Err(_) => return,
                }
            }
            while let Ok(m) = self.rx.try_recv() {
                self.queue.push_back(m);
            }
            for m in coalesce(&mut self.queue, MAX_QUEUED) {
                log::debug!("{} to acrnd coalesced: {m:?}", m.msg_name());
                self.report(m, Delivery::Coalesced);
            }
            let Some(msg) = self.queue.pop_front() else {
                continue;
            };
            let delivery = self.deliver(msg);
            self.report(msg, delivery);
        }
    }

    fn deliver(&mut self, msg: Outgoing) -> Delivery {
        let req = msg.request(&self.cfg.vm);
        let attempts = self.cfg.attempts.max(1);
        let mut pause = self.cfg.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let e = match self
                .cfg
                .client
                .send(&self.cfg.acrnd, &req, self.cfg.timeout)
            {
                Ok(ack) => {
                    return Delivery::Acked {
                        err: ack.err(),
                        attempts: attempt,
                    };
                }
                Err(e) => e,
            };
            let error = mngr_ipc::error_chain(&e);
            if !retryable(&e) || attempt >= attempts {
                return Delivery::Failed {
                    error,
                    attempts: attempt,
                };
            }
            log::debug!(
                "{} to {} not delivered ({error}); retrying in {pause:?}",
                msg.msg_name(),
                self.cfg.acrnd,
            );
            if !self.pause(pause) {
                return Delivery::Failed {
                    error,
                    attempts: attempt,
                };
            }
            pause = pause.saturating_mul(2);
        }
    }

    /// Waits `d` while collecting new messages (no sleep: the channel is the clock).
    /// Returns false if the loop side is gone.
    fn pause(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            match self.rx.recv_timeout(left) {
                Ok(m) => self.queue.push_back(m),
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    fn report(&self, msg: Outgoing, delivery: Delivery) {
        // The loop is gone when the receiver is: nobody is left to tell.
        if self.reports.send(Report { msg, delivery }).is_ok() {
            self.notifier.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(mode: i32) -> Outgoing {
        Outgoing::Notify { mode }
    }

    fn t(secs: i64) -> Outgoing {
        Outgoing::Timer { secs }
    }

    #[test]
    fn repeated_notifies_collapse_and_order_is_kept() {
        let mut q: VecDeque<_> = [n(0), n(0), n(4), n(4), n(0), t(7), t(7), n(3)].into();
        let dropped = coalesce(&mut q, MAX_QUEUED);
        assert_eq!(
            q.into_iter().collect::<Vec<_>>(),
            vec![n(0), n(4), n(0), t(7), t(7), n(3)]
        );
        assert_eq!(dropped, vec![n(0), n(4)]);
    }

    #[test]
    fn over_the_cap_the_oldest_notifies_go_but_never_timers_or_the_latest() {
        let mut q: VecDeque<_> = [t(1), n(0), n(4), t(2), n(0), n(3)].into();
        let dropped = coalesce(&mut q, 4);
        assert_eq!(dropped, vec![n(0), n(4)]);
        assert_eq!(
            q.into_iter().collect::<Vec<_>>(),
            vec![t(1), t(2), n(0), n(3)]
        );

        let mut q: VecDeque<_> = [t(1), t(2), t(3), n(0)].into();
        let dropped = coalesce(&mut q, 2);
        assert!(dropped.is_empty(), "timers and the latest state stay");
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn only_undelivered_requests_are_retried() {
        assert!(retryable(&ClientError::NotFound {
            name: "acrnd".into(),
            dir: "/x".into()
        }));
        assert!(retryable(&ClientError::Connect {
            name: "acrnd".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused)
        }));
        assert!(!retryable(&ClientError::Timeout {
            id: mngr_ipc::MsgId::AcrndTimer,
            timeout: Duration::from_secs(2)
        }));
        assert!(!retryable(&ClientError::Closed {
            id: mngr_ipc::MsgId::DmNotify,
            got: 0
        }));
    }
}
