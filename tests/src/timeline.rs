//! The merged timeline of a run, for people: one line per event, `time since start`,
//! `actor`, and what happened (frames on the line as hex with their names, IPC requests and
//! acks, VM, IOC and service states), with periodic repeats folded; and the counts of the
//! summary.
//!
//! Without `verbose`, events that repeat what another line already shows are left out:
//! sos-lcs's own copies of the lifecycle frames (ioc-sim shows every frame on the line), the
//! copies of the IOC frames on the mirror channels, and DM_QUERY polls. The JSON timeline
//! (`timeline.jsonl`) keeps everything.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use mngr_ipc::event_log::LoggedEvent;
use serde_json::Value;

use crate::frames::{name_of, spaced_hex};

/// Turns events into timeline lines, folding repeated periodic frames.
#[derive(Debug)]
pub struct Renderer {
    start_ns: u64,
    verbose: bool,
    /// Per frame stream (actor, kind, line): the last frame shown and how often it repeated.
    streams: HashMap<(String, String, String), (String, u64)>,
}

impl Renderer {
    /// Times are shown relative to `start_ns` (`CLOCK_MONOTONIC`).
    #[must_use]
    pub fn new(start_ns: u64, verbose: bool) -> Self {
        Self {
            start_ns,
            verbose,
            streams: HashMap::new(),
        }
    }

    /// The line for `ev`, or `None` if it is hidden or a repeat.
    pub fn render(&mut self, ev: &LoggedEvent) -> Option<String> {
        if !self.verbose && hidden(ev) {
            return None;
        }
        let mut text = describe(ev);
        if let Some(hex) = frame_hex(ev) {
            let line = s(ev, "line").unwrap_or("").to_owned();
            let key = (ev.actor.clone(), ev.kind.clone(), line);
            match self.streams.get_mut(&key) {
                Some((last, n)) if *last == hex => {
                    *n += 1;
                    return None;
                }
                Some((last, n)) => {
                    if *n > 0 {
                        let _ = write!(text, "   [after {} ×{n}]", spaced_hex(last));
                    }
                    *last = hex;
                    *n = 0;
                }
                None => {
                    self.streams.insert(key, (hex, 0));
                }
            }
        }
        let ms = ev.t_ns.saturating_sub(self.start_ns) / 1_000_000;
        Some(format!("{ms:>8} ms  {:<8} {text}", ev.actor))
    }
}

/// Whether `ev` is left out of the timeline unless verbose.
fn hidden(ev: &LoggedEvent) -> bool {
    let msg = s(ev, "msg").unwrap_or("");
    match (ev.actor.as_str(), ev.kind.as_str()) {
        ("sos-lcs", "frame.tx" | "frame.rx") => true,
        ("ioc-sim", "frame.tx") => s(ev, "line") != Some("lifecycle"),
        ("ioc-sim", "ioc.reply" | "ioc.line") => true,
        (_, "frame.native_rx" | "native.line") => true,
        (_, "ipc.request" | "ipc.ack") => {
            matches!(msg, "DM_QUERY" | "CTL_LIST" | "CTL_TIMERS" | "CTL_STATUS")
        }
        _ => false,
    }
}

/// The service frame of a frame event, as lower-case hex.
fn frame_hex(ev: &LoggedEvent) -> Option<String> {
    ev.kind
        .starts_with("frame.")
        .then(|| s(ev, "hex").map(str::to_owned))
        .flatten()
}

fn s<'a>(ev: &'a LoggedEvent, key: &str) -> Option<&'a str> {
    ev.fields.get(key).and_then(Value::as_str)
}

fn field(ev: &LoggedEvent, key: &str) -> String {
    match ev.fields.get(key) {
        Some(Value::String(v)) => v.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(v) => v.to_string(),
    }
}

fn reason_hex(ev: &LoggedEvent, key: &str) -> String {
    ev.fields
        .get(key)
        .and_then(Value::as_u64)
        .map_or_else(|| field(ev, key), |r| format!("{r:#x}"))
}

fn frame_text(ev: &LoggedEvent) -> String {
    let hex = s(ev, "hex").unwrap_or("");
    let name = name_of(hex).unwrap_or_else(|| s(ev, "frame").unwrap_or("?").to_owned());
    format!("{}  {name}", spaced_hex(hex))
}

/// One event in words.
#[must_use]
pub fn describe(ev: &LoggedEvent) -> String {
    let f = |k: &str| field(ev, k);
    match (ev.actor.as_str(), ev.kind.as_str()) {
        ("runner", "step") => format!("▶ {}", f("text")),
        ("runner", "note") => format!("  {}", f("text")),
        ("runner", "expect.pass") => format!("✔ {}", f("what")),
        ("runner", "expect.gap") => {
            format!("⚠ {} — known gap {}: {}", f("what"), f("gap"), f("detail"))
        }
        ("runner", "expect.fail") => format!("✘ {} — {}", f("what"), f("detail")),
        ("ioc-sim", "frame.rx") => format!("SoC → IOC   {}", frame_text(ev)),
        ("ioc-sim", "frame.tx") => format!("IOC → SoC   {} ({})", frame_text(ev), f("line")),
        ("ioc-sim", "ioc.state") => format!(
            "IOC {} → {} (reason {})",
            f("from"),
            f("to"),
            reason_hex(ev, "reason")
        ),
        ("ioc-sim", "ioc.rtc") => match ev.fields.get("after_ms") {
            Some(ms) => format!("IOC RTC {} ({ms} ms)", f("event")),
            None => format!("IOC RTC {}", f("event")),
        },
        ("ioc-sim", "ioc.command") => format!("IOC ← {} ({})", f("command"), f("source")),
        ("ioc-sim", "ioc.power_cut") => {
            format!("IOC WATCHDOG: power cut after {} ms", f("silent_ms"))
        }
        ("ioc-sim", "ioc.start") => {
            format!("IOC simulator up ({} line, seed {})", f("mode"), f("seed"))
        }
        (_, "fault") => {
            let what = ["hex", "raw", "line"]
                .iter()
                .filter_map(|k| s(ev, k).map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(" ");
            format!("FAULT {} {what}", f("point"))
        }
        (_, "state") => format!("state {} → {}", f("from"), f("to")),
        ("sos-lcs", "acrnd.send") => {
            let target = f("target");
            let target = target.trim_start_matches("Some(").trim_end_matches(')');
            let target = if target == "None" {
                String::new()
            } else {
                format!(" {{target {target}}}")
            };
            format!("→ acrnd {}{target} (attempt {})", f("msg"), f("attempt"))
        }
        ("sos-lcs", "acrnd.result") => match ev.fields.get("ok").and_then(Value::as_bool) {
            Some(true) => format!("← acrnd acks {} err {}", f("msg"), f("err")),
            _ => format!("✗ acrnd did not take {}: {}", f("msg"), f("error")),
        },
        ("sos-lcs", "rtc.armed") => {
            format!("RTC wake-up armed in {} s (for {})", f("delta"), f("vm"))
        }
        ("sos-lcs", "power.run") => format!("runs the {} command", f("action")),
        ("sos-lcs", "power.done") => format!("{} command done (ok {})", f("action"), f("ok")),
        ("sos-lcs", "line") => format!("IOC line {}", f("state")),
        (_, "ipc.request") => {
            let body = f("body");
            match body.split_once(' ') {
                Some((_, fields)) => format!("← {} {fields}", f("msg")),
                None => format!("← {}", f("msg")),
            }
        }
        (_, "ipc.ack") => match ev.fields.get("state") {
            Some(st) => format!("→ ack {} state {st}", f("msg")),
            None => format!("→ ack {} err {}", f("msg"), f("err")),
        },
        (_, "ipc.refused") => format!("refused {} from uid {}", f("msg"), f("uid")),
        ("acrnd", "reason") => format!(
            "wakeup reason {} (for {})",
            reason_hex(ev, "reason"),
            f("for")
        ),
        ("acrnd", "vm.state") => format!("{}: {} → {} ({})", f("vm"), f("from"), f("to"), f("why")),
        ("acrnd", "vm.launch") => format!(
            "launches {} (pid {}, reason {})",
            f("vm"),
            f("pid"),
            reason_hex(ev, "reason")
        ),
        ("acrnd", "vm.exit") => format!("{}: device model exited (code {})", f("vm"), f("code")),
        ("acrnd", "dm.send") => format!("→ {} {}", f("vm"), f("msg")),
        ("acrnd", "dm.result") => format!("← {} answers {} with {}", f("vm"), f("msg"), f("err")),
        ("acrnd", "lcs.report") => format!("→ lifecycle service: {} err {}", f("msg"), f("err")),
        ("acrnd", "lcs.result") => match ev.fields.get("ok").and_then(Value::as_bool) {
            Some(true) if f("err") == "-" => format!("← {} answers {}", f("to"), f("msg")),
            Some(true) => format!("← {} acks {} err {}", f("to"), f("msg"), f("err")),
            _ => format!("✗ {} failed: {}", f("msg"), f("error")),
        },
        ("acrnd", "timer") => format!(
            "RTC timer of {} in {} s (epoch {})",
            f("vm"),
            f("delay"),
            f("when")
        ),
        ("acrnd", "timer.fire") => format!("RTC timer of {} is due", f("vm")),
        ("acrnd", "store.saved") => format!("timer store written ({} timers)", f("timers")),
        ("acrnd", "stop_all.start") => format!(
            "stop-all: target {} force {} within {} ms",
            f("target"),
            f("force"),
            f("timeout_ms")
        ),
        ("acrnd", "stop_all.done") => {
            format!("stop-all done: {} after {} ms", f("report"), f("ms"))
        }
        ("acrnd", "stop_all.deadline") => format!("stop-all deadline: blocking {}", f("blocking")),
        ("acrnd", "boot") => format!("boot: VMs {} timers {}", f("vms"), f("timers")),
        (_, "exit") => format!("exits (host intent: {})", f("intent")),
        (_, "start") => format!("starts (pid {})", f("pid")),
        (_, "dm.start") => format!(
            "device model up (pid {}, boot reason {})",
            f("pid"),
            reason_hex(ev, "boot_reason")
        ),
        (_, "dm.state") => format!("DM mode → {} ({})", f("name"), f("mode")),
        (_, "dm.exit") => format!("device model exits ({})", f("cause")),
        (_, "vioc.state") => format!("vIOC {} → {} on {}", f("from"), f("to"), f("event")),
        (_, "vioc.rtc") => format!("vIOC: guest RTC request {} s → ACRND_TIMER", f("secs")),
        (_, "guest.state") => format!("guest {} → {}", f("from"), f("to")),
        (_, "guest.wake") => format!("guest wakes with reason {}", f("hex")),
        (_, "frame.guest_tx") => format!("guest → vIOC {}", frame_text(ev)),
        (_, "frame.guest_rx") => format!("vIOC → guest {}", frame_text(ev)),
        (_, "frame.native_rx") => format!("native channel {}", frame_text(ev)),
        (_, "frame.tx") => format!("sends {}", frame_text(ev)),
        (_, "frame.rx") => format!("receives {}", frame_text(ev)),
        (_, "acrnd.send") => format!(
            "→ acrnd {} {}",
            f("msg"),
            ev.fields
                .get("mode")
                .or(ev.fields.get("t"))
                .map_or(String::new(), Value::to_string)
        ),
        (_, "acrnd.result") => format!("← acrnd {} ok {}", f("msg"), f("ok")),
        _ => {
            let rest: Vec<String> = ev.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{} {}", ev.kind, rest.join(" "))
        }
    }
}

/// Counts for the summary of a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Events per actor.
    pub per_actor: BTreeMap<String, u64>,
    /// Frames the SoC sent the IOC, by name.
    pub soc_to_ioc: BTreeMap<String, u64>,
    /// Frames the IOC sent on the lifecycle line, by name.
    pub ioc_to_soc: BTreeMap<String, u64>,
    /// IPC requests served, by message.
    pub ipc: BTreeMap<String, u64>,
    /// VM state changes acrnd saw.
    pub vm_states: u64,
    /// IOC power state changes.
    pub ioc_states: u64,
    /// Faults (injected or hit).
    pub faults: u64,
}

impl Counts {
    /// Counts over `events`.
    #[must_use]
    pub fn of(events: &[LoggedEvent]) -> Self {
        let mut c = Self::default();
        for ev in events {
            *c.per_actor.entry(ev.actor.clone()).or_default() += 1;
            let name = || {
                let hex = s(ev, "hex").unwrap_or("");
                name_of(hex).unwrap_or_else(|| s(ev, "frame").unwrap_or("?").to_owned())
            };
            match (ev.actor.as_str(), ev.kind.as_str()) {
                ("ioc-sim", "frame.rx") => *c.soc_to_ioc.entry(name()).or_default() += 1,
                ("ioc-sim", "frame.tx") if s(ev, "line") == Some("lifecycle") => {
                    *c.ioc_to_soc.entry(name()).or_default() += 1;
                }
                (_, "ipc.request") => {
                    *c.ipc
                        .entry(s(ev, "msg").unwrap_or("?").to_owned())
                        .or_default() += 1;
                }
                ("acrnd", "vm.state") => c.vm_states += 1,
                ("ioc-sim", "ioc.state") => c.ioc_states += 1,
                (_, "fault") => c.faults += 1,
                _ => {}
            }
        }
        c
    }

    /// The counts as indented lines.
    #[must_use]
    pub fn render(&self) -> String {
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::new();
        let _ = writeln!(out, "  events:     {}", join(&self.per_actor));
        let _ = writeln!(out, "  SoC → IOC:  {}", join(&self.soc_to_ioc));
        let _ = writeln!(out, "  IOC → SoC:  {}", join(&self.ioc_to_soc));
        let _ = writeln!(out, "  IPC:        {}", join(&self.ipc));
        let _ = writeln!(
            out,
            "  states:     {} VM state changes, {} IOC state changes, {} faults",
            self.vm_states, self.ioc_states, self.faults
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ev(t_ms: u64, actor: &str, kind: &str, fields: Value) -> LoggedEvent {
        let Value::Object(fields) = fields else {
            panic!("object")
        };
        LoggedEvent {
            t_ns: t_ms * 1_000_000,
            actor: actor.to_owned(),
            kind: kind.to_owned(),
            fields,
        }
    }

    #[test]
    fn frames_are_named_and_repeats_folded() {
        let mut r = Renderer::new(0, false);
        let hb = |t| {
            ev(
                t,
                "ioc-sim",
                "frame.rx",
                json!({"line": "lifecycle", "hex": "02010000", "frame": "heartbeat.active"}),
            )
        };
        assert_eq!(
            r.render(&hb(5)).as_deref(),
            Some("       5 ms  ioc-sim  SoC → IOC   02 01 00 00  HB-ACTIVE")
        );
        assert_eq!(r.render(&hb(6)), None);
        assert_eq!(r.render(&hb(7)), None);
        let delay = ev(
            1234,
            "ioc-sim",
            "frame.rx",
            json!({"line": "lifecycle", "hex": "02020000", "frame": "heartbeat.delay"}),
        );
        assert_eq!(
            r.render(&delay).as_deref(),
            Some(
                "    1234 ms  ioc-sim  SoC → IOC   02 02 00 00  HB-DELAY   [after 02 01 00 00 ×2]"
            )
        );
        let copy = ev(
            8,
            "sos-lcs",
            "frame.tx",
            json!({"hex": "02010000", "frame": "heartbeat.active"}),
        );
        assert_eq!(r.render(&copy), None, "sos-lcs's copy is hidden");
        assert!(Renderer::new(0, true).render(&copy).is_some());
        let reason = ev(
            9,
            "acrnd",
            "reason",
            json!({"for": "Boot", "reason": 32, "lcs": true}),
        );
        assert_eq!(
            r.render(&reason).as_deref(),
            Some("       9 ms  acrnd    wakeup reason 0x20 (for Boot)")
        );
        let other = ev(10, "vm1", "mystery", json!({"a": 1}));
        assert!(r.render(&other).unwrap().ends_with("mystery a=1"));
    }

    #[test]
    fn counts() {
        let events = vec![
            ev(
                1,
                "ioc-sim",
                "frame.rx",
                json!({"line": "lifecycle", "hex": "02030000"}),
            ),
            ev(
                2,
                "ioc-sim",
                "frame.tx",
                json!({"line": "lifecycle", "hex": "01200000"}),
            ),
            ev(
                3,
                "ioc-sim",
                "frame.tx",
                json!({"line": "mirror0", "hex": "01200000"}),
            ),
            ev(4, "acrnd", "ipc.request", json!({"msg": "ACRND_STOP"})),
            ev(5, "acrnd", "vm.state", json!({})),
            ev(6, "ioc-sim", "fault", json!({"point": "drop"})),
        ];
        let c = Counts::of(&events);
        assert_eq!(c.soc_to_ioc.get("HB-INIT"), Some(&1));
        assert_eq!(c.ioc_to_soc.get("WR(0x000020)"), Some(&1));
        assert_eq!(c.ipc.get("ACRND_STOP"), Some(&1));
        assert_eq!((c.vm_states, c.faults), (1, 1));
        assert_eq!(c.per_actor.get("ioc-sim"), Some(&4));
        assert!(c.render().contains("HB-INIT ×1"));
    }
}
