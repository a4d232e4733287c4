//! Playing a scenario against a [`Rig`]: steps, and expectations checked against the merged
//! event logs with bounded waits.
//!
//! A [`Run`] owns the run directory, the rig, the merged [`EventStore`] and the list of
//! [`Check`]s. Every step and every expectation is also written to the runner's own event
//! log (actor `runner`), so they appear in the timeline between the events that caused and
//! satisfied them. An expectation waits (polling, with a deadline) for the first event at or
//! after a given time that matches a predicate; the first failed expectation ends the
//! scenario. The [`matchers`] build the predicates the scenarios use.
//!
//! While a run goes, a [`Printer`] thread may print the timeline as it grows (events are
//! held back for a short settle time so that the logs of all processes merge in order).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mngr_ipc::event_log::{EventLog, LoggedEvent, monotonic_ns};
use serde_json::json;

use crate::dir::TestDir;
use crate::events::{EventStore, Tail};
use crate::rig::{Rig, RigConfig, RigError};
use crate::timeline::{Counts, Renderer};

/// How long the printer holds events back so that every process's lines are in.
const SETTLE: Duration = Duration::from_millis(300);
/// How often the printer and the expectations read the logs.
const POLL: Duration = Duration::from_millis(20);

/// The outcome of one expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// It held.
    Pass,
    /// It did not hold; the scenario stopped there.
    Fail,
    /// It did not hold because of a known daemon gap (its id); the scenario worked around
    /// it.
    KnownGap(&'static str),
}

/// One expectation and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was expected.
    pub what: String,
    /// How it went.
    pub status: Status,
    /// When it was decided, ms since the start of the run.
    pub at_ms: u64,
    /// Why it failed (or the gap's note).
    pub detail: String,
}

/// Why a scenario stopped early.
#[derive(Debug)]
pub enum Abort {
    /// An expectation failed (already recorded as a [`Check`]).
    Failed(String),
    /// The run was interrupted (Ctrl-C).
    Interrupted,
    /// The rig failed.
    Rig(RigError),
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Abort::Failed(what) => write!(f, "expectation failed: {what}"),
            Abort::Interrupted => write!(f, "interrupted"),
            Abort::Rig(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Abort {}

impl From<RigError> for Abort {
    fn from(e: RigError) -> Self {
        Abort::Rig(e)
    }
}

/// How a run is set up and shown.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of VMs (scenarios that need a given number ignore it).
    pub vms: usize,
    /// Periods and bounds.
    pub timing: crate::rig::Timing,
    /// Seed for the line faults (default: from the clock).
    pub seed: Option<u64>,
    /// Cycles of the soak scenario.
    pub cycles: u32,
    /// Print the timeline while the run goes.
    pub live: bool,
    /// Show every event, repeats and copies included.
    pub verbose: bool,
    /// Keep the run directory even if the run passed.
    pub keep: bool,
    /// Set when the run must stop (Ctrl-C).
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Options {
    /// Quiet options for tests: fast timing, `vms` VMs, nothing printed.
    #[must_use]
    pub fn test(vms: usize) -> Self {
        Self {
            vms,
            timing: crate::rig::Timing::fast(),
            seed: None,
            cycles: 1,
            live: false,
            verbose: false,
            keep: false,
            interrupt: None,
        }
    }
}

/// A scenario being played.
#[derive(Debug)]
pub struct Run {
    name: String,
    opts: Options,
    dir: Option<TestDir>,
    path: PathBuf,
    rig: Option<Rig>,
    store: EventStore,
    log: EventLog,
    checks: Vec<Check>,
    start_ns: u64,
    printer: Option<Printer>,
}

impl Run {
    /// A run of scenario `name` in a fresh temporary directory (`acrn-<name>-XXXXXX`), with
    /// no rig yet.
    ///
    /// # Errors
    ///
    /// The runner's event log cannot be created.
    pub fn new(name: &str, opts: Options) -> Result<Self, Abort> {
        let dir = TestDir::new(name);
        let path = dir.path().to_owned();
        let events = path.join("events");
        fs::create_dir_all(&events).map_err(|e| rig_io("create the events dir", e))?;
        let log = EventLog::open(&events.join("runner.jsonl"), "runner")
            .map_err(|e| rig_io("open the runner's event log", e))?;
        let start_ns = monotonic_ns();
        let printer = opts
            .live
            .then(|| Printer::start(&events, start_ns, opts.verbose));
        Ok(Self {
            name: name.to_owned(),
            store: EventStore::new(&events),
            opts,
            dir: Some(dir),
            path,
            rig: None,
            log,
            checks: Vec::new(),
            start_ns,
            printer,
        })
    }

    /// The scenario's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The options.
    #[must_use]
    pub fn opts(&self) -> &Options {
        &self.opts
    }

    /// The run directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `CLOCK_MONOTONIC` of the start, in ns.
    #[must_use]
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// Creates a rig in the run directory (tearing down the previous one, if any).
    ///
    /// # Errors
    ///
    /// See [`Rig::create`].
    pub fn new_rig(&mut self, cfg: RigConfig) -> Result<&mut Rig, Abort> {
        if let Some(mut old) = self.rig.take() {
            old.teardown();
        }
        let rig = Rig::create(cfg, &self.path)?;
        Ok(self.rig.insert(rig))
    }

    /// The rig.
    ///
    /// # Panics
    ///
    /// If no rig was created (a bug in the scenario).
    pub fn rig(&mut self) -> &mut Rig {
        self.rig
            .as_mut()
            .expect("the scenario creates its rig before using it")
    }

    /// Now, as a mark for expectations about what happens next.
    #[must_use]
    pub fn mark(&self) -> u64 {
        monotonic_ns()
    }

    /// Announces a step in the timeline; returns a mark taken just before it.
    pub fn step(&mut self, text: &str) -> u64 {
        let mark = self.mark();
        self.log.emit("step", json!({ "text": text }));
        mark
    }

    /// Adds a remark to the timeline.
    pub fn note(&mut self, text: &str) {
        self.log.emit("note", json!({ "text": text }));
    }

    fn interrupted(&self) -> bool {
        self.opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    fn ms(&self, t_ns: u64) -> u64 {
        t_ns.saturating_sub(self.start_ns) / 1_000_000
    }

    fn refresh(&mut self) {
        if let Err(e) = self.store.refresh() {
            self.log.emit(
                "note",
                json!({ "text": format!("cannot read the event logs: {e}") }),
            );
        }
    }

    fn record(&mut self, what: &str, status: Status, detail: &str) {
        let kind = match &status {
            Status::Pass => "expect.pass",
            Status::Fail => "expect.fail",
            Status::KnownGap(_) => "expect.gap",
        };
        let gap = match &status {
            Status::KnownGap(id) => *id,
            _ => "",
        };
        self.log
            .emit(kind, json!({ "what": what, "detail": detail, "gap": gap }));
        let at_ms = self.ms(self.mark());
        self.checks.push(Check {
            what: what.to_owned(),
            status,
            at_ms,
            detail: detail.to_owned(),
        });
    }

    /// Waits at most the default bound for the first event at or after `since` that
    /// matches `pred`; records the expectation `what` and returns the event.
    ///
    /// # Errors
    ///
    /// [`Abort::Failed`] if none came in time (recorded as failed), or
    /// [`Abort::Interrupted`].
    pub fn expect(
        &mut self,
        what: &str,
        since: u64,
        pred: impl Fn(&LoggedEvent) -> bool,
    ) -> Result<LoggedEvent, Abort> {
        let timeout = self.opts.timing.expect;
        self.expect_within(what, since, timeout, pred)
    }

    /// [`Run::expect`] with an explicit bound.
    ///
    /// # Errors
    ///
    /// See [`Run::expect`].
    pub fn expect_within(
        &mut self,
        what: &str,
        since: u64,
        timeout: Duration,
        pred: impl Fn(&LoggedEvent) -> bool,
    ) -> Result<LoggedEvent, Abort> {
        match self.wait_event(since, timeout, &pred)? {
            Some(ev) => {
                self.record(what, Status::Pass, "");
                Ok(ev)
            }
            None => {
                let detail = format!("no such event within {timeout:?}");
                self.record(what, Status::Fail, &detail);
                Err(Abort::Failed(what.to_owned()))
            }
        }
    }

    /// Waits at most `timeout` for an event at or after `since` matching `pred`, without
    /// recording anything.
    ///
    /// # Errors
    ///
    /// [`Abort::Interrupted`].
    pub fn wait_event(
        &mut self,
        since: u64,
        timeout: Duration,
        pred: impl Fn(&LoggedEvent) -> bool,
    ) -> Result<Option<LoggedEvent>, Abort> {
        let deadline = Instant::now() + timeout;
        loop {
            self.refresh();
            if let Some(ev) = self.store.find(since, &pred) {
                return Ok(Some(ev.clone()));
            }
            if self.interrupted() {
                return Err(Abort::Interrupted);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            thread::sleep(POLL.min(deadline - now));
        }
    }

    /// Polls `cond` for at most `timeout`; returns whether it held. Records nothing.
    ///
    /// # Errors
    ///
    /// [`Abort::Interrupted`].
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut cond: impl FnMut(&mut Self) -> bool,
    ) -> Result<bool, Abort> {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return Ok(true);
            }
            if self.interrupted() {
                return Err(Abort::Interrupted);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            thread::sleep(POLL.min(deadline - now));
        }
    }

    /// Waits at most the default bound for `cond` (polled), recording `what`.
    ///
    /// # Errors
    ///
    /// See [`Run::expect`].
    pub fn expect_cond(
        &mut self,
        what: &str,
        mut cond: impl FnMut(&mut Self) -> bool,
    ) -> Result<(), Abort> {
        let timeout = self.opts.timing.expect;
        let deadline = Instant::now() + timeout;
        loop {
            self.refresh();
            if cond(self) {
                self.record(what, Status::Pass, "");
                return Ok(());
            }
            if self.interrupted() {
                return Err(Abort::Interrupted);
            }
            let now = Instant::now();
            if now >= deadline {
                let detail = format!("did not hold within {timeout:?}");
                self.record(what, Status::Fail, &detail);
                return Err(Abort::Failed(what.to_owned()));
            }
            thread::sleep(POLL.min(deadline - now));
        }
    }

    /// Expects that no event in `[since, now]` matches `pred` (the logs are read first).
    ///
    /// # Errors
    ///
    /// [`Abort::Failed`] naming the offending event.
    pub fn expect_none(
        &mut self,
        what: &str,
        since: u64,
        pred: impl Fn(&LoggedEvent) -> bool,
    ) -> Result<(), Abort> {
        self.refresh();
        let found = self.store.find(since, &pred).cloned();
        match found {
            None => {
                self.record(what, Status::Pass, "");
                Ok(())
            }
            Some(ev) => {
                let detail = format!(
                    "at {} ms: {} {}",
                    self.ms(ev.t_ns),
                    ev.actor,
                    crate::timeline::describe(&ev)
                );
                self.record(what, Status::Fail, &detail);
                Err(Abort::Failed(what.to_owned()))
            }
        }
    }

    /// Records `what` as passed if `ok`, else as failed with `detail`.
    ///
    /// # Errors
    ///
    /// [`Abort::Failed`] if not `ok`.
    pub fn check(&mut self, what: &str, ok: bool, detail: &str) -> Result<(), Abort> {
        if ok {
            self.record(what, Status::Pass, "");
            Ok(())
        } else {
            self.record(what, Status::Fail, detail);
            Err(Abort::Failed(what.to_owned()))
        }
    }

    /// Records `what` as not holding because of the known daemon gap `id`, described by
    /// `note` (what the daemons do instead, and the workaround the scenario takes).
    pub fn known_gap(&mut self, id: &'static str, what: &str, note: &str) {
        self.record(what, Status::KnownGap(id), note);
    }

    /// Every event read so far at or after `since` (the logs are read first).
    pub fn events_since(&mut self, since: u64) -> Vec<LoggedEvent> {
        self.refresh();
        self.store.since(since).to_vec()
    }

    /// The checks so far.
    #[must_use]
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// Ends the run: stops every process, writes the merged timeline to `timeline.jsonl`,
    /// stops the printer, and returns the report. The run directory is kept if the run
    /// failed or `keep` was asked for.
    #[must_use]
    pub fn finish(mut self, result: Result<(), Abort>) -> Report {
        let error = match result {
            Ok(()) => None,
            Err(Abort::Failed(_)) => Some("an expectation failed".to_owned()),
            Err(e) => {
                let text = e.to_string();
                self.record(
                    &format!("scenario runs to its end ({text})"),
                    Status::Fail,
                    &text,
                );
                Some(text)
            }
        };
        let mut stderr_tails = Vec::new();
        let failed = error.is_some() || self.checks.iter().any(|c| c.status == Status::Fail);
        if let Some(rig) = self.rig.as_mut() {
            if failed {
                for label in rig.labels() {
                    stderr_tails.push((label.clone(), rig.stderr_tail(&label, 25)));
                }
            }
            rig.teardown();
        }
        self.rig = None;
        self.log.emit("note", json!({ "text": "end of the run" }));
        self.refresh();
        if let Some(p) = self.printer.take() {
            p.stop();
        }
        let events = self.store.all().to_vec();
        let timeline = self.path.join("timeline.jsonl");
        let mut text = String::new();
        for ev in &events {
            if let Ok(line) = serde_json::to_string(ev) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        let written = fs::write(&timeline, text).is_ok();
        let kept = if failed || self.opts.keep {
            self.dir.take().map(TestDir::persist)
        } else {
            None
        };
        Report {
            name: self.name.clone(),
            checks: std::mem::take(&mut self.checks),
            error,
            counts: Counts::of(&events),
            start_ns: self.start_ns,
            events,
            dir: self.path.clone(),
            kept,
            timeline: written.then_some(timeline),
            stderr_tails,
            verbose: self.opts.verbose,
        }
    }
}

fn rig_io(what: &str, e: io::Error) -> Abort {
    Abort::Rig(RigError::Io {
        what: what.to_owned(),
        source: e,
    })
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// The scenario.
    pub name: String,
    /// Every expectation, in order.
    pub checks: Vec<Check>,
    /// Why the scenario stopped early, if it did.
    pub error: Option<String>,
    /// Counts over the timeline.
    pub counts: Counts,
    /// `CLOCK_MONOTONIC` of the start, ns.
    pub start_ns: u64,
    /// The merged timeline.
    pub events: Vec<LoggedEvent>,
    /// The run directory (removed unless [`Report::kept`]).
    pub dir: PathBuf,
    /// The run directory, if kept.
    pub kept: Option<PathBuf>,
    /// `timeline.jsonl`, if written.
    pub timeline: Option<PathBuf>,
    /// For a failed run: the tail of every process's stderr.
    pub stderr_tails: Vec<(String, String)>,
    verbose: bool,
}

impl Report {
    /// Whether every expectation held (known gaps included) and the scenario ran to its end.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The expectations that hit a known gap.
    #[must_use]
    pub fn gaps(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| matches!(c.status, Status::KnownGap(_)))
            .collect()
    }

    /// The ids of the known gaps hit, in order, without repeats.
    #[must_use]
    pub fn gap_ids(&self) -> Vec<&'static str> {
        let mut ids: Vec<&'static str> = Vec::new();
        for c in &self.checks {
            if let Status::KnownGap(id) = c.status
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
        ids
    }

    /// The rendered timeline (at most the last `max` lines).
    #[must_use]
    pub fn timeline_text(&self, max: usize) -> String {
        let mut r = Renderer::new(self.start_ns, self.verbose);
        let lines: Vec<String> = self.events.iter().filter_map(|e| r.render(e)).collect();
        lines[lines.len().saturating_sub(max)..].join("\n")
    }

    /// The summary: scenario, every expectation with its outcome, counts, where things are.
    #[must_use]
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let pass = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Pass)
            .count();
        let gaps = self.gaps().len();
        let fail = self.checks.len() - pass - gaps;
        let _ = writeln!(
            out,
            "== scenario {}: {} ({pass} passed, {gaps} known gaps, {fail} failed)",
            self.name,
            if self.passed() { "PASS" } else { "FAIL" }
        );
        for c in &self.checks {
            let (mark, extra) = match &c.status {
                Status::Pass => ("pass", String::new()),
                Status::Fail => ("FAIL", format!(" — {}", c.detail)),
                Status::KnownGap(id) => ("GAP ", format!(" — known gap {id}: {}", c.detail)),
            };
            let _ = writeln!(out, "  [{mark}] {:>7} ms  {}{extra}", c.at_ms, c.what);
        }
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  stopped early: {e}");
        }
        out.push_str(&self.counts.render());
        if let Some(t) = &self.timeline {
            let _ = writeln!(out, "  timeline:   {}", t.display());
        }
        match &self.kept {
            Some(d) => {
                let _ = writeln!(out, "  run dir:    {} (kept)", d.display());
            }
            None => {
                let _ = writeln!(
                    out,
                    "  run dir:    {} (removed; --keep keeps it)",
                    self.dir.display()
                );
            }
        }
        out
    }

    /// Panics with the summary, the last 150 timeline lines and the processes' stderr tails
    /// unless the run passed without hitting any known gap.
    ///
    /// # Panics
    ///
    /// If the run did not pass, or hit a known gap.
    pub fn assert_passed(&self) {
        self.assert_passed_with_gaps(&[]);
    }

    /// Like [`Report::assert_passed`], but the run must hit exactly the known gaps `gaps`
    /// (strictly: once a daemon is fixed, the test says so and the gap must be removed).
    ///
    /// # Panics
    ///
    /// If the run did not pass, or hit other gaps than `gaps`.
    pub fn assert_passed_with_gaps(&self, gaps: &[&str]) {
        self.assert_passed_allowing(gaps, &[]);
    }

    /// Like [`Report::assert_passed_with_gaps`], and the racy gaps `may` may or may not
    /// be hit.
    ///
    /// # Panics
    ///
    /// If the run did not pass, or hit other gaps than `gaps` and `may`, or did not hit one
    /// of `gaps`.
    pub fn assert_passed_allowing(&self, gaps: &[&str], may: &[&str]) {
        let hit = self.gap_ids();
        let mut problems = Vec::new();
        for id in &hit {
            if !gaps.contains(id) && !may.contains(id) {
                problems.push(format!(
                    "hit the known gap {id}, which this test does not expect"
                ));
            }
        }
        for id in gaps {
            if !hit.contains(id) {
                problems.push(format!(
                    "the known gap {id} did not happen: the daemons were fixed? remove the workaround and the gap"
                ));
            }
        }
        if self.passed() && problems.is_empty() {
            return;
        }
        let mut tails = String::new();
        for (label, text) in &self.stderr_tails {
            tails.push_str(&format!("---- {label} stderr (tail):\n{text}\n"));
        }
        panic!(
            "scenario {} failed {}\n{}\n---- timeline (tail):\n{}\n{tails}",
            self.name,
            problems.join("; "),
            self.summary(),
            self.timeline_text(150)
        );
    }
}

/// Prints the timeline while a run goes, from its own tail of the event logs.
#[derive(Debug)]
pub struct Printer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Printer {
    /// Starts printing the events of `events_dir` to stdout.
    #[must_use]
    pub fn start(events_dir: &Path, start_ns: u64, verbose: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let dir = events_dir.to_owned();
        let handle = thread::Builder::new()
            .name("timeline".into())
            .spawn(move || print_loop(&dir, start_ns, verbose, &flag))
            .ok();
        Self { stop, handle }
    }

    /// Prints what is left and stops.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An event ordered by time, then by arrival.
struct Pending(u64, u64, LoggedEvent);

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

fn print_loop(dir: &Path, start_ns: u64, verbose: bool, stop: &AtomicBool) {
    let mut tail = Tail::new(dir);
    let mut renderer = Renderer::new(start_ns, verbose);
    let mut pending: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut seq = 0u64;
    let settle = u64::try_from(SETTLE.as_nanos()).unwrap_or(u64::MAX);
    loop {
        let last = stop.load(Ordering::Relaxed);
        if let Ok(new) = tail.read_new() {
            for ev in new {
                seq += 1;
                pending.push(Reverse(Pending(ev.t_ns, seq, ev)));
            }
        }
        let horizon = if last {
            u64::MAX
        } else {
            monotonic_ns().saturating_sub(settle)
        };
        let mut out = io::stdout().lock();
        while pending.peek().is_some_and(|Reverse(p)| p.0 <= horizon) {
            let Some(Reverse(Pending(_, _, ev))) = pending.pop() else {
                break;
            };
            if let Some(line) = renderer.render(&ev) {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
        drop(out);
        if last {
            return;
        }
        thread::sleep(POLL * 5);
    }
}

/// Predicates over events, for [`Run::expect`].
pub mod matchers {
    use mngr_ipc::event_log::LoggedEvent;
    use serde_json::Value;

    use crate::events::{int_field, str_field};
    use crate::frames::hex;

    /// ioc-sim received `frame` from the SoC on the lifecycle line.
    pub fn soc_sends(frame: [u8; 4]) -> impl Fn(&LoggedEvent) -> bool {
        let want = hex(&frame);
        move |e| {
            e.actor == "ioc-sim"
                && e.kind == "frame.rx"
                && str_field(e, "line") == Some("lifecycle")
                && str_field(e, "hex") == Some(want.as_str())
        }
    }

    /// ioc-sim received any of `frames` from the SoC.
    pub fn soc_sends_any(frames: Vec<[u8; 4]>) -> impl Fn(&LoggedEvent) -> bool {
        let want: Vec<String> = frames.iter().map(|f| hex(f)).collect();
        move |e| {
            e.actor == "ioc-sim"
                && e.kind == "frame.rx"
                && str_field(e, "hex").is_some_and(|h| want.iter().any(|w| w == h))
        }
    }

    /// ioc-sim sent `frame` to the SoC on the lifecycle line.
    pub fn ioc_sends(frame: [u8; 4]) -> impl Fn(&LoggedEvent) -> bool {
        let want = hex(&frame);
        move |e| {
            e.actor == "ioc-sim"
                && e.kind == "frame.tx"
                && str_field(e, "line") == Some("lifecycle")
                && str_field(e, "hex") == Some(want.as_str())
        }
    }

    /// sos-lcs received `frame` from the IOC.
    pub fn lcs_receives(frame: [u8; 4]) -> impl Fn(&LoggedEvent) -> bool {
        let want = hex(&frame);
        move |e| {
            e.actor == "sos-lcs"
                && e.kind == "frame.rx"
                && str_field(e, "hex") == Some(want.as_str())
        }
    }

    /// The IOC's power state became `to` (`running`, `prepared`, `off`, `suspended`).
    pub fn ioc_state(to: &str) -> impl Fn(&LoggedEvent) -> bool {
        let to = to.to_owned();
        move |e| e.actor == "ioc-sim" && e.kind == "ioc.state" && str_field(e, "to") == Some(&to)
    }

    /// The IOC's RTC event `what` (`armed`, `fired`, ...).
    pub fn ioc_rtc(what: &str) -> impl Fn(&LoggedEvent) -> bool {
        let what = what.to_owned();
        move |e| e.actor == "ioc-sim" && e.kind == "ioc.rtc" && str_field(e, "event") == Some(&what)
    }

    /// sos-lcs entered state `to` (C names: `keep_alive`, `shutdown_delay`, ...).
    pub fn lcs_state(to: &str) -> impl Fn(&LoggedEvent) -> bool {
        let to = to.to_owned();
        move |e| e.actor == "sos-lcs" && e.kind == "state" && str_field(e, "to") == Some(&to)
    }

    /// sos-lcs sent `msg` to acrnd (`ACRND_RESUME`, `ACRND_STOP`).
    pub fn lcs_sends(msg: &str) -> impl Fn(&LoggedEvent) -> bool {
        let msg = msg.to_owned();
        move |e| e.actor == "sos-lcs" && e.kind == "acrnd.send" && str_field(e, "msg") == Some(&msg)
    }

    /// acrnd (or the stand-in) acked sos-lcs's `msg` with `err`.
    pub fn lcs_acked(msg: &str, err: i64) -> impl Fn(&LoggedEvent) -> bool {
        let msg = msg.to_owned();
        move |e| {
            e.actor == "sos-lcs"
                && e.kind == "acrnd.result"
                && str_field(e, "msg") == Some(&msg)
                && e.fields.get("ok") == Some(&Value::Bool(true))
                && int_field(e, "err") == Some(err)
        }
    }

    /// `actor` served an IPC request `msg`.
    pub fn request(actor: &str, msg: &str) -> impl Fn(&LoggedEvent) -> bool {
        let (actor, msg) = (actor.to_owned(), msg.to_owned());
        move |e| e.actor == actor && e.kind == "ipc.request" && str_field(e, "msg") == Some(&msg)
    }

    /// sos-lcs served `msg` whose body (its debug text) contains `body`.
    pub fn request_with(actor: &str, msg: &str, body: &str) -> impl Fn(&LoggedEvent) -> bool {
        let (actor, msg, body) = (actor.to_owned(), msg.to_owned(), body.to_owned());
        move |e| {
            e.actor == actor
                && e.kind == "ipc.request"
                && str_field(e, "msg") == Some(&msg)
                && str_field(e, "body").is_some_and(|b| b.contains(&body))
        }
    }

    /// acrnd reported `msg` (`SHUTDOWN`, `SUSPEND`) with `err` to the lifecycle service.
    pub fn acrnd_reports(msg: &str, err: i64) -> impl Fn(&LoggedEvent) -> bool {
        let msg = msg.to_owned();
        move |e| {
            e.actor == "acrnd"
                && e.kind == "lcs.report"
                && str_field(e, "msg") == Some(&msg)
                && int_field(e, "err") == Some(err)
        }
    }

    /// The lifecycle service acked acrnd's `msg` with `err`.
    pub fn acrnd_acked(msg: &str, err: i64) -> impl Fn(&LoggedEvent) -> bool {
        let msg = msg.to_owned();
        move |e| {
            e.actor == "acrnd"
                && e.kind == "lcs.result"
                && str_field(e, "msg") == Some(&msg)
                && e.fields.get("ok") == Some(&Value::Bool(true))
                && int_field(e, "err") == Some(err)
        }
    }

    /// acrnd saw `vm` enter `to` (`started`, `suspended`, `stopped`, ...).
    pub fn vm_state(vm: &str, to: &str) -> impl Fn(&LoggedEvent) -> bool {
        let (vm, to) = (vm.to_owned(), to.to_owned());
        move |e| {
            e.actor == "acrnd"
                && e.kind == "vm.state"
                && str_field(e, "vm") == Some(&vm)
                && str_field(e, "to") == Some(&to)
        }
    }

    /// acrnd launched `vm` with wakeup reason `reason`.
    pub fn vm_launched(vm: &str, reason: u64) -> impl Fn(&LoggedEvent) -> bool {
        let vm = vm.to_owned();
        move |e| {
            e.actor == "acrnd"
                && e.kind == "vm.launch"
                && str_field(e, "vm") == Some(&vm)
                && e.fields.get("reason").and_then(Value::as_u64) == Some(reason)
        }
    }

    /// `vm`'s guest woke with a reason having every bit of `bits`.
    pub fn guest_wakes(vm: &str, bits: u64) -> impl Fn(&LoggedEvent) -> bool {
        let vm = vm.to_owned();
        move |e| {
            e.actor == vm
                && e.kind == "guest.wake"
                && e.fields
                    .get("reason")
                    .and_then(Value::as_u64)
                    .is_some_and(|r| r & bits == bits)
        }
    }

    /// `vm`'s device model mode became `name` (`running`, `suspend`, `poweroff`).
    pub fn dm_mode(vm: &str, name: &str) -> impl Fn(&LoggedEvent) -> bool {
        let (vm, name) = (vm.to_owned(), name.to_owned());
        move |e| e.actor == vm && e.kind == "dm.state" && str_field(e, "name") == Some(&name)
    }

    /// sos-lcs ran its `action` power command.
    pub fn power_run(action: &str) -> impl Fn(&LoggedEvent) -> bool {
        let action = action.to_owned();
        move |e| {
            e.actor == "sos-lcs" && e.kind == "power.run" && str_field(e, "action") == Some(&action)
        }
    }

    /// Event `kind` from `actor`.
    pub fn kind(actor: &str, kind: &str) -> impl Fn(&LoggedEvent) -> bool {
        let (actor, kind) = (actor.to_owned(), kind.to_owned());
        move |e| e.actor == actor && e.kind == kind
    }

    /// Event `kind` from `actor` whose field `key` is the string `value`.
    pub fn kind_with(
        actor: &str,
        kind: &str,
        key: &str,
        value: &str,
    ) -> impl Fn(&LoggedEvent) -> bool {
        let (actor, kind, key, value) = (
            actor.to_owned(),
            kind.to_owned(),
            key.to_owned(),
            value.to_owned(),
        );
        move |e| e.actor == actor && e.kind == kind && str_field(e, &key) == Some(&value)
    }
}
