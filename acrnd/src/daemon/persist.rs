//! The timer store: loading it at start (importing upstream's list once), and writing it
//! on a worker, one write at a time. Writes asked for while one runs are coalesced into
//! the next: it carries the timers as they are then, and completes every ack that waited.

use mngr_ipc::event_log::EventLog;
use serde_json::json;

use crate::config::Config;
use crate::orchestrator::{ReplyId, Undo};
use crate::timers::{self, TimerStore, Timers};

/// The acks and insertions one write carries.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// The deferred acks completed by the write.
    pub replies: Vec<ReplyId>,
    /// The insertions to take back if it fails.
    pub undo: Vec<Undo>,
}

impl Batch {
    fn add(&mut self, reply: Option<ReplyId>, undo: Option<Undo>) {
        self.replies.extend(reply);
        self.undo.extend(undo);
    }
}

/// At most one write in flight; the rest waits in one batch.
#[derive(Debug, Default)]
pub(super) struct Writer {
    in_flight: bool,
    waiting: Option<Batch>,
}

impl Writer {
    /// A write is wanted: the batch to write now, or `None` if it joins the waiting one.
    pub fn want(&mut self, reply: Option<ReplyId>, undo: Option<Undo>) -> Option<Batch> {
        let mut batch = Batch::default();
        batch.add(reply, undo);
        if self.in_flight {
            let waiting = self.waiting.get_or_insert_with(Batch::default);
            waiting.replies.extend(batch.replies);
            waiting.undo.extend(batch.undo);
            return None;
        }
        self.in_flight = true;
        Some(batch)
    }

    /// The write in flight finished: the waiting batch to write next, if any.
    pub fn done(&mut self) -> Option<Batch> {
        self.in_flight = false;
        let next = self.waiting.take()?;
        self.in_flight = true;
        Some(next)
    }
}

/// Loads the timer store, importing upstream's list once.
pub(super) fn load(cfg: &Config, store: &TimerStore, log: &EventLog) -> Timers {
    let mut timers = match store.load() {
        Ok((t, bad)) => {
            for b in bad {
                log::warn!("{}:{}: skipped: {}", store.path().display(), b.line, b.why);
            }
            t
        }
        Err(e) => {
            log::error!("Cannot read {}: {e}", store.path().display());
            Timers::new()
        }
    };
    let marker = cfg.state_dir.join("timer_list.imported");
    if !marker.exists()
        && cfg.upstream_timers.exists()
        && import_upstream(cfg, store, log, &mut timers)
        && let Err(e) = std::fs::write(&marker, cfg.upstream_timers.display().to_string())
    {
        log::warn!("Cannot record the import: {e}");
    }
    timers
}

/// Merges upstream's timer list into `timers` (the earlier time wins) and saves them;
/// returns whether both worked (else the import is tried again at the next start).
fn import_upstream(cfg: &Config, store: &TimerStore, log: &EventLog, timers: &mut Timers) -> bool {
    let path = &cfg.upstream_timers;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("Cannot read {}: {e}", path.display());
            return false;
        }
    };
    let (up, bad) = timers::parse(&text);
    for b in bad {
        log::warn!("{}:{}: skipped: {}", path.display(), b.line, b.why);
    }
    log::info!("Imported {} timer(s) from {}", up.len(), path.display());
    log.emit("timers.imported", json!({"count": up.len()}));
    for (vm, when) in up {
        timers
            .entry(vm)
            .and_modify(|t| *t = (*t).min(when))
            .or_insert(when);
    }
    match store.save(timers, |_| {}) {
        Ok(()) => true,
        Err(e) => {
            log::error!("Cannot write the imported timers: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_write_at_a_time_and_waiting_writes_coalesce() {
        let mut w = Writer::default();
        let first = w.want(Some(ReplyId(1)), None).expect("writes at once");
        assert_eq!(first.replies, [ReplyId(1)]);
        let undo = Undo {
            vm: "a".into(),
            change: 5,
        };
        assert!(w.want(Some(ReplyId(2)), Some(undo.clone())).is_none());
        assert!(w.want(None, None).is_none());
        assert!(w.want(Some(ReplyId(3)), None).is_none());
        let next = w.done().expect("the waiting batch");
        assert_eq!(next.replies, [ReplyId(2), ReplyId(3)]);
        assert_eq!(next.undo, [undo]);
        assert!(w.done().is_none(), "nothing waits");
        assert!(w.want(None, None).is_some(), "idle again: writes at once");
    }

    #[test]
    fn upstream_timers_are_imported_once_and_only_once_it_worked() {
        use clap::Parser;
        let dir = tempfile::tempdir().expect("dir");
        let state = dir.path().join("state");
        let upstream = dir.path().join("timer_list");
        std::fs::create_dir_all(&state).expect("state dir");
        // Unreadable (a directory): nothing imported, tried again next time.
        std::fs::create_dir(&upstream).expect("a directory in its place");
        let cfg = crate::config::Args::try_parse_from([
            "acrnd".as_ref(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--upstream-timers".as_ref(),
            upstream.as_os_str(),
        ])
        .expect("parses")
        .into_config(None, None)
        .expect("valid");
        let store = TimerStore::new(state.join("timer_list"));
        let log = EventLog::disabled("acrnd");
        assert!(load(&cfg, &store, &log).is_empty());
        assert!(!state.join("timer_list.imported").exists(), "not marked");
        std::fs::remove_dir(&upstream).expect("rmdir");
        std::fs::write(&upstream, "vm1\t1800000000\n").expect("upstream list");
        assert_eq!(load(&cfg, &store, &log).get("vm1"), Some(&1_800_000_000));
        assert!(state.join("timer_list.imported").exists(), "marked");
        // Once: a later upstream list is not read again.
        std::fs::write(&upstream, "vm2\t1800000000\n").expect("upstream list");
        assert!(!load(&cfg, &store, &log).contains_key("vm2"));
    }
}
