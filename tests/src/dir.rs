//! Per-test temporary directories.

use std::path::{Path, PathBuf};
use std::thread;

use tempfile::TempDir;

/// Environment variable that, when set to a non-empty value, keeps every
/// [`TestDir`] after the test.
pub const KEEP_ENV: &str = "ACRN_KEEP_TEST_DIRS";

/// Longest part of the caller's label that goes into a directory name.
const MAX_LABEL_CHARS: usize = 16;

/// A unique temporary directory for one test.
///
/// It is created directly under [`std::env::temp_dir`] with a short name
/// (`acrn-<label>-XXXXXX`), so that unix socket paths inside it stay well
/// under the 107-byte limit when `TMPDIR` is short (e.g. `/tmp`).
///
/// The directory and its contents are removed on drop, unless the
/// environment variable [`KEEP_ENV`] (`ACRN_KEEP_TEST_DIRS`) is set to a
/// non-empty value or the thread is panicking (a failing test): then it is
/// kept and its path is printed to stderr.
#[derive(Debug)]
pub struct TestDir {
    /// `None` only while dropping.
    dir: Option<TempDir>,
}

impl TestDir {
    /// Creates a fresh directory whose name starts with `acrn-<label>-`.
    ///
    /// The label is shortened to 16 characters and characters other than
    /// ASCII letters, digits, `-` and `_` are replaced by `_`.
    ///
    /// # Panics
    ///
    /// If the directory cannot be created.
    #[must_use]
    pub fn new(label: &str) -> Self {
        let prefix = format!("acrn-{}-", sanitize(label));
        let base = std::env::temp_dir();
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(6)
            .tempdir_in(&base)
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create test dir {prefix}* in {}: {e}",
                    base.display()
                )
            });
        Self { dir: Some(dir) }
    }

    /// The directory's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("TestDir is only emptied while dropping")
            .path()
    }

    /// Keeps the directory after the guard is gone and returns its path.
    #[must_use]
    pub fn persist(mut self) -> PathBuf {
        self.dir
            .take()
            .expect("TestDir is only emptied while dropping")
            .keep()
    }

    /// `rel` resolved inside the directory.
    #[must_use]
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path().join(rel)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        if thread::panicking() {
            eprintln!("test failed; keeping test dir {}", dir.keep().display());
        } else if keep_requested() {
            eprintln!("{KEEP_ENV} set; keeping test dir {}", dir.keep().display());
        }
        // Otherwise `dir` is dropped here, which removes it.
    }
}

/// Whether [`KEEP_ENV`] asks to keep test directories.
fn keep_requested() -> bool {
    std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty())
}

/// The part of `label` used in a directory name.
fn sanitize(label: &str) -> String {
    let short: String = label
        .chars()
        .take(MAX_LABEL_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if short.is_empty() {
        "test".to_owned()
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::fs;

    use super::*;

    #[test]
    fn sanitizes_and_truncates_labels() {
        assert_eq!(sanitize("ipc-split"), "ipc-split");
        assert_eq!(sanitize("a/b c.é"), "a_b_c__");
        assert_eq!(sanitize("a-very-long-label-indeed"), "a-very-long-labe");
        assert_eq!(sanitize(""), "test");
    }

    #[test]
    fn name_is_short_and_prefixed() {
        let dir = TestDir::new("a label that is far too long for a socket path");
        let name = dir.path().file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("acrn-a_label_that_is_-"), "{name}");
        assert_eq!(name.len(), "acrn-".len() + MAX_LABEL_CHARS + 1 + 6);
        assert_eq!(dir.path().parent(), Some(std::env::temp_dir().as_path()));
        assert!(dir.path().is_dir());
        assert_eq!(dir.join("x.sock"), dir.path().join("x.sock"));
    }

    #[test]
    fn parallel_creations_are_unique() {
        let dirs: Vec<TestDir> = thread::scope(|s| {
            let handles: Vec<_> = (0..50)
                .map(|_| s.spawn(|| TestDir::new("unique")))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let paths: HashSet<PathBuf> = dirs.iter().map(|d| d.path().to_owned()).collect();
        assert_eq!(paths.len(), 50);
        assert!(paths.iter().all(|p| p.is_dir()));
        drop(dirs);
        if !keep_requested() {
            assert!(paths.iter().all(|p| !p.exists()));
        }
    }

    #[test]
    fn removed_on_drop_with_contents() {
        let dir = TestDir::new("drop");
        let path = dir.path().to_owned();
        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/file"), b"data").unwrap();
        drop(dir);
        if keep_requested() {
            assert!(path.is_dir());
            fs::remove_dir_all(&path).unwrap();
        } else {
            assert!(!path.exists(), "{} still exists", path.display());
        }
    }

    #[test]
    fn kept_when_dropped_while_panicking() {
        let (tx, rx) = std::sync::mpsc::channel();
        let result = thread::spawn(move || {
            let dir = TestDir::new("panic");
            tx.send(dir.path().to_owned()).unwrap();
            panic!("simulated test failure");
        })
        .join();
        assert!(result.is_err());
        let path = rx.recv().unwrap();
        assert!(path.is_dir(), "{} was removed", path.display());
        fs::remove_dir_all(&path).unwrap();
    }
}
