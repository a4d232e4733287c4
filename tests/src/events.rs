//! Reading the event logs of a run while its processes write them.
//!
//! Every process of a run appends JSON lines to its own file in one directory (the format
//! is [`mngr_ipc::event_log`]'s: `t_ns` on `CLOCK_MONOTONIC`, `actor`, `kind`, fields). A
//! [`Tail`] reads what was appended since its last call, complete lines only, from every
//! `*.jsonl` file of the directory (files appear as processes start). An [`EventStore`]
//! keeps everything read so far sorted by time: the merged timeline that expectations
//! search.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use mngr_ipc::event_log::LoggedEvent;

/// File name suffix of the event logs a [`Tail`] reads.
pub const EVENT_LOG_SUFFIX: &str = ".jsonl";

/// Longest line kept while waiting for its end (a torn line never grows past this).
const MAX_PARTIAL: usize = 1 << 20;

/// Incremental reader of every event log in a directory.
#[derive(Debug)]
pub struct Tail {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileTail>,
    malformed: u64,
}

#[derive(Debug, Default)]
struct FileTail {
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    /// A reader of the `*.jsonl` files in `dir` (which need not exist yet).
    #[must_use]
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_owned(),
            files: BTreeMap::new(),
            malformed: 0,
        }
    }

    /// Lines that were not JSON events, so far.
    #[must_use]
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The events appended since the last call, in file order (not sorted).
    ///
    /// # Errors
    ///
    /// Reading the directory or a file failed (a missing directory is not an error).
    pub fn read_new(&mut self) -> io::Result<Vec<LoggedEvent>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(EVENT_LOG_SUFFIX))
            })
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for path in paths {
            let state = self.files.entry(path.clone()).or_default();
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            file.seek(SeekFrom::Start(state.offset))?;
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)?;
            state.offset += u64::try_from(buf.len()).unwrap_or(u64::MAX);
            state.partial.extend_from_slice(&buf);
            let Some(end) = state.partial.iter().rposition(|b| *b == b'\n') else {
                if state.partial.len() > MAX_PARTIAL {
                    state.partial.clear();
                    self.malformed += 1;
                }
                continue;
            };
            let complete: Vec<u8> = state.partial.drain(..=end).collect();
            for line in complete.split(|b| *b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<LoggedEvent>(line) {
                    Ok(ev) => out.push(ev),
                    Err(_) => self.malformed += 1,
                }
            }
        }
        Ok(out)
    }
}

/// Every event of a run read so far, sorted by `t_ns` (ties in reading order).
#[derive(Debug)]
pub struct EventStore {
    tail: Tail,
    events: Vec<LoggedEvent>,
}

impl EventStore {
    /// A store over the event logs in `dir`.
    #[must_use]
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            tail: Tail::new(dir),
            events: Vec::new(),
        }
    }

    /// Reads what the processes appended; returns how many events were new.
    ///
    /// # Errors
    ///
    /// See [`Tail::read_new`].
    pub fn refresh(&mut self) -> io::Result<usize> {
        let new = self.tail.read_new()?;
        let n = new.len();
        for ev in new {
            let at = self.events.partition_point(|e| e.t_ns <= ev.t_ns);
            self.events.insert(at, ev);
        }
        Ok(n)
    }

    /// All events, sorted by time.
    #[must_use]
    pub fn all(&self) -> &[LoggedEvent] {
        &self.events
    }

    /// The events at or after `t_ns`.
    #[must_use]
    pub fn since(&self, t_ns: u64) -> &[LoggedEvent] {
        let at = self.events.partition_point(|e| e.t_ns < t_ns);
        &self.events[at..]
    }

    /// The first event at or after `t_ns` for which `pred` holds.
    pub fn find(&self, t_ns: u64, pred: impl Fn(&LoggedEvent) -> bool) -> Option<&LoggedEvent> {
        self.since(t_ns).iter().find(|e| pred(e))
    }

    /// Lines of the logs that were not events.
    #[must_use]
    pub fn malformed(&self) -> u64 {
        self.tail.malformed()
    }
}

/// Whether `ev` is `kind` written by `actor`.
#[must_use]
pub fn is(ev: &LoggedEvent, actor: &str, kind: &str) -> bool {
    ev.actor == actor && ev.kind == kind
}

/// Field `key` of `ev` as a string, if it is one.
#[must_use]
pub fn str_field<'a>(ev: &'a LoggedEvent, key: &str) -> Option<&'a str> {
    ev.fields.get(key).and_then(|v| v.as_str())
}

/// Field `key` of `ev` as an integer, if it is one.
#[must_use]
pub fn int_field(ev: &LoggedEvent, key: &str) -> Option<i64> {
    ev.fields.get(key).and_then(serde_json::Value::as_i64)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::TestDir;

    fn append(path: &Path, text: &str) {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .unwrap();
    }

    #[test]
    fn tails_complete_lines_of_every_log_and_merges_by_time() {
        let dir = TestDir::new("events");
        let mut store = EventStore::new(dir.path());
        assert_eq!(store.refresh().unwrap(), 0, "no file yet");
        let a = dir.join("a.jsonl");
        let b = dir.join("b.jsonl");
        append(
            &a,
            "{\"t_ns\":30,\"actor\":\"a\",\"kind\":\"x\",\"n\":1}\n{\"t_ns\":10,",
        );
        append(&b, "{\"t_ns\":20,\"actor\":\"b\",\"kind\":\"y\"}\n");
        append(&dir.join("ignored.txt"), "not an event\n");
        assert_eq!(store.refresh().unwrap(), 2);
        append(&a, "\"actor\":\"a\",\"kind\":\"z\"}\nnot json\n\n");
        assert_eq!(store.refresh().unwrap(), 1);
        assert_eq!(store.refresh().unwrap(), 0);
        let order: Vec<u64> = store.all().iter().map(|e| e.t_ns).collect();
        assert_eq!(order, vec![10, 20, 30]);
        assert_eq!(store.malformed(), 1);
        assert_eq!(store.since(15).len(), 2);
        assert_eq!(store.since(31).len(), 0);
        let found = store.find(0, |e| is(e, "a", "x")).unwrap();
        assert_eq!(int_field(found, "n"), Some(1));
        assert_eq!(str_field(found, "n"), None);
        assert!(store.find(21, |e| e.actor == "b").is_none());
    }
}
