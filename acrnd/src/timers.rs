//! The RTC timer store: one pending wake-up per VM, kept on disk so that it survives S3,
//! S5 and crashes.
//!
//! Format (upstream's): one line per timer, `<vm>\t<epoch>\n`, `<epoch>` the absolute
//! wake-up time in seconds, unsigned decimal. Lines are written sorted by time, then name.
//!
//! Every change is written atomically: a temp file in the same directory, `fsync`,
//! `rename` over the store, `fsync` of the directory. A crash at any point leaves either
//! the old store or the new one, never a torn file; a failed write (disk full, read-only)
//! leaves the old store and returns the error. Reading is lenient: a malformed line is
//! reported and skipped, never fatal, and never costs the good lines.
//!
//! Differences from the C acrnd: the latest request for a VM replaces its earlier one (C:
//! duplicates piled up); timers are not deleted because a wake was not by RTC, nor because
//! a stop flow failed, nor on exit.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The pending wake-ups: VM name → absolute epoch seconds.
pub type Timers = BTreeMap<String, u64>;

/// Longest VM name a line may hold (profile F: 15 bytes plus the NUL).
pub const MAX_NAME: usize = 15;

/// A line of the store that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// Why it was skipped.
    pub why: &'static str,
}

/// Parses the store. Duplicate names keep the earliest wake-up (waking early and re-arming
/// is safe; waking late is not).
pub fn parse(text: &str) -> (Timers, Vec<BadLine>) {
    let mut timers = Timers::new();
    let mut bad = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let Some((name, epoch)) = raw.split_once('\t') else {
            bad.push(BadLine {
                line,
                why: "no TAB between name and time",
            });
            continue;
        };
        if name.is_empty() || name.len() > MAX_NAME || !valid_name(name) {
            bad.push(BadLine {
                line,
                why: "bad VM name",
            });
            continue;
        }
        let epoch = epoch.trim_end_matches('\r');
        let when = match epoch.parse::<u64>() {
            Ok(0) | Err(_) => {
                bad.push(BadLine {
                    line,
                    why: "time is not a positive decimal",
                });
                continue;
            }
            Ok(w) if i64::try_from(w).is_err() => {
                bad.push(BadLine {
                    line,
                    why: "time out of range",
                });
                continue;
            }
            Ok(w) => w,
        };
        timers
            .entry(name.to_owned())
            .and_modify(|t| *t = (*t).min(when))
            .or_insert(when);
    }
    (timers, bad)
}

/// Whether `name` can be a VM name in the store: printable ASCII, no `/`, `.` or spaces.
pub fn valid_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'.')
}

/// Renders the store, sorted by time then name.
pub fn render(timers: &Timers) -> String {
    let mut v: Vec<(&String, &u64)> = timers.iter().collect();
    v.sort_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)));
    v.into_iter().map(|(n, t)| format!("{n}\t{t}\n")).collect()
}

/// The nearest wake-up.
pub fn nearest(timers: &Timers) -> Option<(&str, u64)> {
    timers
        .iter()
        .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
        .map(|(n, t)| (n.as_str(), *t))
}

/// A point of the write path where a test can make the process crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The temp file is written and synced; the store is not yet replaced.
    BeforeRename,
    /// The store is replaced; the directory is not yet synced.
    AfterRename,
}

impl FaultPoint {
    /// The name used to select it (`store.before-rename`, `store.after-rename`).
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::BeforeRename => "store.before-rename",
            FaultPoint::AfterRename => "store.after-rename",
        }
    }

    /// Parses a name.
    pub fn from_name(s: &str) -> Option<FaultPoint> {
        [FaultPoint::BeforeRename, FaultPoint::AfterRename]
            .into_iter()
            .find(|p| p.name() == s)
    }
}

/// A store that could not be written (the previous one is intact).
#[derive(Debug, Error)]
pub enum StoreError {
    /// Creating or writing the temp file failed.
    #[error("Cannot write {path}")]
    Write {
        /// The temp file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Replacing the store failed.
    #[error("Cannot replace {path}")]
    Rename {
        /// The store.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// The file holding the timers.
#[derive(Debug, Clone)]
pub struct TimerStore {
    path: PathBuf,
    fault: Option<FaultPoint>,
}

impl TimerStore {
    /// A store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TimerStore {
            path: path.into(),
            fault: None,
        }
    }

    /// Crash (abort the process) when the write path reaches `point`. The `hit` callback
    /// of [`TimerStore::save`] runs first, so a test can record that the point was reached.
    pub fn with_fault(mut self, point: Option<FaultPoint>) -> Self {
        self.fault = point;
        self
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the store. A missing file is an empty store; bad lines are returned, not fatal.
    pub fn load(&self) -> io::Result<(Timers, Vec<BadLine>)> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(parse(&String::from_utf8_lossy(&bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((Timers::new(), Vec::new())),
            Err(e) => Err(e),
        }
    }

    fn temp_path(&self) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(format!(".tmp.{}", std::process::id()));
        self.path.with_file_name(name)
    }

    /// Replaces the store with `timers` atomically and durably. `hit` is called with the
    /// fault point just before the process aborts there.
    pub fn save(&self, timers: &Timers, hit: impl FnOnce(FaultPoint)) -> Result<(), StoreError> {
        let tmp = self.temp_path();
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(render(timers).as_bytes())?;
            f.sync_all()
        };
        if let Err(source) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Write { path: tmp, source });
        }
        let mut hit = Some(hit);
        let mut crash_at = |p: FaultPoint| {
            if self.fault == Some(p) {
                if let Some(h) = hit.take() {
                    h(p);
                }
                log::error!("Fault injection: crashing at {}", p.name());
                std::process::abort();
            }
        };
        crash_at(FaultPoint::BeforeRename);
        if let Err(source) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Rename {
                path: self.path.clone(),
                source,
            });
        }
        crash_at(FaultPoint::AfterRename);
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            // The rename happened; only its durability across a power cut is in doubt.
            log::warn!("Cannot sync {}: {e}", dir.display());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn upstream_format_round_trips() {
        let (t, bad) = parse("vm1\t1700000000\nvm2\t1600000000\n");
        assert!(bad.is_empty());
        assert_eq!(t.len(), 2);
        assert_eq!(render(&t), "vm2\t1600000000\nvm1\t1700000000\n");
        assert_eq!(nearest(&t), Some(("vm2", 1_600_000_000)));
    }

    #[test]
    fn malformed_lines_are_skipped_and_good_ones_kept() {
        let text = "vm1\t100\nno-tab 5\n\t7\nvm2\t0\nvm3\tx\nsixteen-chars-xx\t9\nvm.4\t9\nvm5\t200\r\nvm1\t50\n";
        let (t, bad) = parse(text);
        assert_eq!(t.get("vm1"), Some(&50), "duplicates keep the earliest");
        assert_eq!(t.get("vm5"), Some(&200));
        assert_eq!(t.len(), 2);
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn save_replaces_atomically_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("dir");
        let store = TimerStore::new(dir.path().join("timer_list"));
        let mut t = Timers::new();
        t.insert("vm1".into(), 42);
        store.save(&t, |_| {}).expect("saved");
        assert_eq!(fs::read_to_string(store.path()).expect("read"), "vm1\t42\n");
        t.clear();
        store.save(&t, |_| {}).expect("saved");
        assert_eq!(fs::read_to_string(store.path()).expect("read"), "");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn failed_write_keeps_the_old_store() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("timer_list");
        fs::write(&path, "vm1\t42\n").expect("old store");
        // A path component that is a file: the temp file cannot be created.
        let blocked = TimerStore::new(path.join("sub").join("timer_list"));
        let mut t = Timers::new();
        t.insert("vm2".into(), 7);
        assert!(matches!(
            blocked.save(&t, |_| {}),
            Err(StoreError::Write { .. })
        ));
        assert_eq!(fs::read_to_string(&path).expect("read"), "vm1\t42\n");
    }

    #[test]
    fn fault_points_have_names() {
        for p in [FaultPoint::BeforeRename, FaultPoint::AfterRename] {
            assert_eq!(FaultPoint::from_name(p.name()), Some(p));
        }
        assert_eq!(FaultPoint::from_name("nope"), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,400}") {
            let _ = parse(&text);
        }

        #[test]
        fn render_then_parse_is_identity(
            t in prop::collection::btree_map("[a-zA-Z][a-zA-Z0-9_-]{0,14}", 1u64..=u64::try_from(i64::MAX).expect("fits"), 0..20)
        ) {
            let (back, bad) = parse(&render(&t));
            prop_assert!(bad.is_empty());
            prop_assert_eq!(back, t);
        }
    }
}
