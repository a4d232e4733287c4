//! Requests to acrnd: ACRND_RESUME when the system becomes alive, ACRND_STOP when the IOC
//! asks for a shutdown. One request is delivered at a time, on a worker, with bounded
//! retries; a newer request supersedes an older one (by generation). After acrnd took an
//! ACRND_STOP and no verdict followed, the stop is asked again ([`Timer::Restop`]).

use std::time::Duration;

use mngr_ipc::client::ClientError;
use mngr_ipc::msg::{Ack, Body, Request, StopTarget};
use mngr_ipc::vocabulary::ACRND;
use serde_json::json;

use super::{Core, CoreOps, Done, Lcs, Timer};
use crate::state::{Event, State};

/// A request to acrnd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutKind {
    Resume,
    Stop(StopTarget),
}

impl OutKind {
    fn request(self, stop_timeout: u32) -> Request {
        Request::now(match self {
            OutKind::Resume => Body::AcrndResume {
                force: 0,
                timeout: 0,
            },
            OutKind::Stop(target) => Body::AcrndStop {
                force: 0,
                timeout: stop_timeout,
                target,
            },
        })
    }

    fn name(self) -> &'static str {
        match self {
            OutKind::Resume => "ACRND_RESUME",
            OutKind::Stop(_) => "ACRND_STOP",
        }
    }
}

impl Core {
    /// Starts delivering `kind`, superseding any request in flight.
    pub(super) fn start_request(&mut self, kind: OutKind, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        self.acrnd.generation += 1;
        ops.cancel(&Timer::Retry);
        self.acrnd.outgoing = Some((kind, 0));
        self.attempt(ops, s);
    }

    /// One attempt to deliver the outgoing request, on a worker.
    pub(super) fn attempt(&mut self, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        let Some((kind, attempts)) = self.acrnd.outgoing.as_mut() else {
            return;
        };
        *attempts += 1;
        let (kind, attempt) = (*kind, *attempts);
        let req = kind.request(s.cfg.stop_timeout);
        log::info!("{} to acrnd (attempt {attempt})", kind.name());
        let target = match kind {
            OutKind::Stop(t) => Some(t),
            OutKind::Resume => None,
        };
        s.log.emit(
            "acrnd.send",
            json!({"msg": kind.name(), "attempt": attempt, "target": format!("{target:?}")}),
        );
        let client = self.acrnd.client.clone();
        let timeout = s.cfg.ipc_timeout;
        let generation = self.acrnd.generation;
        let job = move || Done::Acrnd {
            generation,
            result: Box::new(client.send(ACRND, &req, timeout)),
        };
        if let Err(e) = ops.spawn(job) {
            log::error!("Cannot start a worker: {e}");
            self.on_acrnd_result(generation, Err(ClientError::Io(e)), ops, s);
        }
    }

    /// acrnd answered (or did not) the attempt of request `generation`.
    pub(super) fn on_acrnd_result(
        &mut self,
        generation: u64,
        result: Result<Ack, ClientError>,
        ops: &mut CoreOps<'_>,
        s: &mut Lcs,
    ) {
        if generation != self.acrnd.generation {
            return; // superseded by a newer request
        }
        let Some((kind, attempts)) = self.acrnd.outgoing else {
            return;
        };
        match result {
            Ok(ack) => {
                match ack.err() {
                    Some(e) => log::info!("acrnd acked {} with err {e}", kind.name()),
                    None => log::info!("acrnd acked {}", kind.name()),
                }
                s.log.emit(
                    "acrnd.result",
                    json!({"msg": kind.name(), "ok": true, "err": ack.err()}),
                );
                self.acrnd.outgoing = None;
                if let OutKind::Stop(target) = kind {
                    // acrnd answers within its own deadline (the ACRND_STOP timeout); a
                    // period later, ask again: an acrnd restarted meanwhile starts over.
                    let after =
                        Duration::from_secs(u64::from(s.cfg.stop_timeout.max(1))) + s.cfg.heartbeat;
                    self.acrnd.restop = Some((generation, target));
                    ops.arm_after(Timer::Restop, after);
                }
            }
            Err(e) => self.on_undelivered(kind, attempts, &e, ops, s),
        }
    }

    /// An attempt failed: retry, or give up after the configured attempts.
    fn on_undelivered(
        &mut self,
        kind: OutKind,
        attempts: u32,
        e: &ClientError,
        ops: &mut CoreOps<'_>,
        s: &mut Lcs,
    ) {
        s.log.emit(
            "acrnd.result",
            json!({"msg": kind.name(), "ok": false, "error": e.to_string()}),
        );
        if attempts < s.cfg.retries {
            log::warn!("{} not delivered: {e}; retrying", kind.name());
            // Like the original, the second ACRND_STOP follows at once.
            let delay = match (kind, attempts) {
                (OutKind::Stop(_), 1) => Duration::ZERO,
                _ => s.cfg.heartbeat,
            };
            ops.arm_after(Timer::Retry, delay);
        } else {
            log::error!(
                "{} not delivered after {attempts} attempts: {e}",
                kind.name()
            );
            self.acrnd.outgoing = None;
            if matches!(kind, OutKind::Stop(_)) {
                s.dispatch(Event::StopUndeliverable);
            }
        }
    }

    /// No verdict since acrnd took ACRND_STOP: ask again if nothing newer happened.
    pub(super) fn restop_due(&mut self, ops: &mut CoreOps<'_>, s: &mut Lcs) {
        let Some((generation, target)) = self.acrnd.restop.take() else {
            return;
        };
        if generation == self.acrnd.generation && s.machine.state() == State::ShutdownDelay {
            log::warn!("No verdict from acrnd since it took ACRND_STOP: asking again");
            self.start_request(OutKind::Stop(target), ops, s);
        }
    }
}
