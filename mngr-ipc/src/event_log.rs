//! The event log every binary of the suite offers with `--event-log PATH`.
//!
//! One JSON object per line, appended with a single `write` per line (so the lines of
//! several processes sharing a file never interleave), with at least these keys:
//!
//! ```json
//! {"t_ns": 123456789, "actor": "sos-lcs", "kind": "frame.tx", "...": "kind-specific fields"}
//! ```
//!
//! * `t_ns`: `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine,
//!   so the logs of all processes merge into one timeline by sorting on it;
//! * `actor`: who writes (`sos-lcs`, `acrnd`, `ioc-sim`, `vm1`, ...);
//! * `kind`: a dotted event name. The suite uses these families:
//!   `frame.rx` / `frame.tx` (bytes on the IOC line, `hex`), `ipc.request` / `ipc.ack`
//!   (`msg`, `peer`, `err`), `state` (`from`, `to`), `vm.state` (`vm`, `state`), `power`
//!   (`action`), `timer` (`vm`, `when`), `fault` (`point`), `error` (`what`);
//! * the remaining keys are the fields of the event. They never override the three above.
//!
//! Writing never fails the caller: a write error is logged once and the event dropped.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => {
            let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
            secs.saturating_mul(1_000_000_000).saturating_add(nanos)
        }
        Err(_) => 0,
    }
}

struct Sink {
    file: Mutex<File>,
    failed: AtomicBool,
}

/// A handle on an event log; cheap to clone, shareable with worker threads.
#[derive(Clone)]
pub struct EventLog {
    actor: Arc<str>,
    sink: Option<Arc<Sink>>,
}

impl fmt::Debug for EventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLog")
            .field("actor", &self.actor)
            .field("enabled", &self.sink.is_some())
            .finish()
    }
}

impl EventLog {
    /// Appends to `path` (created if missing) as `actor`.
    pub fn open(path: &Path, actor: &str) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            actor: actor.into(),
            sink: Some(Arc::new(Sink {
                file: Mutex::new(file),
                failed: AtomicBool::new(false),
            })),
        })
    }

    /// Opens `path` if given, else a log that records nothing.
    pub fn open_optional(path: Option<&Path>, actor: &str) -> io::Result<Self> {
        match path {
            Some(p) => EventLog::open(p, actor),
            None => Ok(EventLog::disabled(actor)),
        }
    }

    /// A log that records nothing.
    pub fn disabled(actor: &str) -> Self {
        EventLog {
            actor: actor.into(),
            sink: None,
        }
    }

    /// The same log under another actor name (e.g. one per simulated VM).
    pub fn with_actor(&self, actor: &str) -> Self {
        EventLog {
            actor: actor.into(),
            sink: self.sink.clone(),
        }
    }

    /// Whether events are recorded.
    pub fn is_enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Records an event `kind` with `fields` (a JSON object; anything else is stored under
    /// `"value"`).
    pub fn emit(&self, kind: &str, fields: Value) {
        let Some(sink) = &self.sink else { return };
        let mut obj = Map::new();
        obj.insert("t_ns".into(), Value::from(monotonic_ns()));
        obj.insert("actor".into(), Value::from(&*self.actor));
        obj.insert("kind".into(), Value::from(kind));
        match fields {
            Value::Object(m) => {
                for (k, v) in m {
                    if !matches!(k.as_str(), "t_ns" | "actor" | "kind") {
                        obj.insert(k, v);
                    }
                }
            }
            Value::Null => {}
            other => {
                obj.insert("value".into(), other);
            }
        }
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        let mut f = sink.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = f.write_all(line.as_bytes())
            && !sink.failed.swap(true, Ordering::Relaxed)
        {
            log::warn!("Event log write failed ({e}); further failures are not logged");
        }
    }
}

/// One parsed event-log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// `CLOCK_MONOTONIC` ns.
    pub t_ns: u64,
    /// Who wrote it.
    pub actor: String,
    /// The event name.
    pub kind: String,
    /// The other fields.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// Reads an event log; malformed lines (a torn last line after a crash) are skipped with a
/// warning. A missing file is an empty log.
pub fn read_events(path: &Path) -> io::Result<Vec<LoggedEvent>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<LoggedEvent>(&line) {
            Ok(ev) => out.push(ev),
            Err(e) => log::warn!(
                "{}:{}: skipping malformed event: {e}",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(out)
}

/// Bytes as the event logs write them: lower-case hex without separators (`012000c0`).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_without_separators() {
        assert_eq!(hex(&[0x01, 0x20, 0x00, 0xc0]), "012000c0");
        assert_eq!(hex(&[]), "");
    }
    use serde_json::json;

    #[test]
    fn lines_carry_the_schema_and_merge_by_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let a = EventLog::open(&path, "sos-lcs").expect("open");
        let b = EventLog::open(&path, "acrnd").expect("open");
        a.emit("frame.tx", json!({"hex": "02010000", "kind": "ignored"}));
        b.emit("ipc.request", json!({"msg": "SHUTDOWN"}));
        a.with_actor("vm1").emit("vm.state", Value::Null);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"torn\": \n"))
            .expect("append garbage");
        let events = read_events(&path).expect("read");
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].actor, "sos-lcs");
        assert_eq!(events[0].kind, "frame.tx", "fields never override kind");
        assert_eq!(events[0].fields["hex"], "02010000");
        assert_eq!(events[1].fields["msg"], "SHUTDOWN");
        assert_eq!(events[2].actor, "vm1");
        assert!(events.windows(2).all(|w| w[0].t_ns <= w[1].t_ns));
    }

    #[test]
    fn disabled_log_writes_nothing() {
        let log = EventLog::disabled("x");
        assert!(!log.is_enabled());
        log.emit("anything", json!({}));
    }
}
