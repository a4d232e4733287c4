//! The outbox to acrnd: DM_NOTIFY and ACRND_TIMER requests, sent one at a time from the
//! loop's worker pool so the event loop never blocks on acrnd.
//!
//! The device model's handlers and subscribers queue [`Outgoing`] messages in the
//! [`MonitorState`](super::MonitorState); the monitor's outbox subscriber sends them **in
//! order**, one at a time, each as a worker job ([`send`]) with the blocking [`Client`], and
//! logs each one's fate ([`Report`]) when the job's result comes back to the loop.
//!
//! * Order: one message in flight, FIFO. An ACRND_TIMER queued before a DM_NOTIFY reaches
//!   acrnd first (a guest arms its wake-up before it reports itself suspended or off).
//! * Coalescing ([`coalesce`]): messages that queue up while acrnd is slow are sent in order,
//!   except that a DM_NOTIFY equal to the one just before it in the queue is dropped, and
//!   beyond [`MAX_QUEUED`] the oldest DM_NOTIFY is dropped (the latest state always goes
//!   out). ACRND_TIMER requests are never dropped.
//! * Retries ([`Attempt::settle`]): only when the request certainly did not reach acrnd (no
//!   socket, connection refused), up to the configured attempts with a doubling pause (a
//!   timer of the loop, not a sleep). A timeout or a closed connection may mean acrnd got
//!   it, so it is not repeated (a second ACRND_TIMER would arm a second timer). An ack with
//!   a non-zero `err` is acrnd's answer, not retried.

use std::collections::VecDeque;
use std::time::Duration;

use mngr_ipc::client::{Client, ClientError};
use mngr_ipc::msg::{Body, Request};

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

/// What a send job returns: the ack's `err`, or why no ack came.
pub(crate) type SendResult = Result<Option<i32>, ClientError>;

/// Sends `msg` once to acrnd (a worker job: it blocks up to the configured timeout).
pub(crate) fn send(cfg: &OutboxConfig, msg: Outgoing) -> SendResult {
    cfg.client
        .send(&cfg.acrnd, &msg.request(&cfg.vm), cfg.timeout)
        .map(|ack| ack.err())
}

/// The message being sent: how many attempts so far, and the pause before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    pub(crate) msg: Outgoing,
    pub(crate) attempts: u32,
    pub(crate) pause: Duration,
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// The message's fate is known.
    Done(Delivery),
    /// Try again after this pause.
    Retry(Duration),
}

impl Attempt {
    /// The first attempt at `msg`.
    pub(crate) fn first(msg: Outgoing, backoff: Duration) -> Self {
        Attempt {
            msg,
            attempts: 1,
            pause: backoff,
        }
    }

    /// Decides after the attempt that gave `result`, out of at most `max` attempts; on a
    /// retry, counts the next attempt and doubles the pause after it.
    pub(crate) fn settle(&mut self, result: SendResult, max: u32) -> Next {
        let e = match result {
            Ok(err) => {
                return Next::Done(Delivery::Acked {
                    err,
                    attempts: self.attempts,
                });
            }
            Err(e) => e,
        };
        let error = mngr_ipc::error_chain(&e);
        if !retryable(&e) || self.attempts >= max.max(1) {
            return Next::Done(Delivery::Failed {
                error,
                attempts: self.attempts,
            });
        }
        log::debug!(
            "{} to acrnd not delivered ({error}); retrying in {:?}",
            self.msg.msg_name(),
            self.pause
        );
        let pause = self.pause;
        self.attempts += 1;
        self.pause = self.pause.saturating_mul(2);
        Next::Retry(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

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
    fn attempts_retry_with_a_doubling_pause_up_to_the_limit() {
        let refused = || {
            Err(ClientError::Connect {
                name: "acrnd".into(),
                source: io::Error::from(io::ErrorKind::ConnectionRefused),
            })
        };
        let mut a = Attempt::first(n(0), Duration::from_millis(100));
        assert_eq!(
            a.settle(refused(), 3),
            Next::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            a.settle(refused(), 3),
            Next::Retry(Duration::from_millis(200))
        );
        assert!(matches!(
            a.settle(refused(), 3),
            Next::Done(Delivery::Failed { attempts: 3, .. })
        ));
        let mut a = Attempt::first(t(7), Duration::from_millis(100));
        assert_eq!(
            a.settle(Ok(Some(-1)), 3),
            Next::Done(Delivery::Acked {
                err: Some(-1),
                attempts: 1
            }),
            "acrnd's answer is not retried"
        );
        let mut a = Attempt::first(t(7), Duration::from_millis(100));
        let timeout = Err(ClientError::Timeout {
            id: mngr_ipc::MsgId::AcrndTimer,
            timeout: Duration::from_secs(2),
        });
        assert!(
            matches!(
                a.settle(timeout, 3),
                Next::Done(Delivery::Failed { attempts: 1, .. })
            ),
            "acrnd may have got it"
        );
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
