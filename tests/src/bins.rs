//! Locating the workspace's binaries from a test.

use std::path::{Path, PathBuf};

/// Environment variable naming the directory that holds the binaries under
/// test; when set, it is the only place searched.
pub const BIN_DIR_ENV: &str = "ACRN_BIN_DIR";

/// Path of the workspace binary `name`.
///
/// If the environment variable [`BIN_DIR_ENV`] (`ACRN_BIN_DIR`) is set, the
/// binary must be in that directory. Otherwise it is looked for next to the
/// running executable and one directory up: an integration test runs from
/// `target/<profile>/deps/`, and Cargo puts binaries in `target/<profile>/`.
///
/// Binaries are not built on demand: run `cargo build --workspace --bins`
/// first (integration tests of the crate that owns a binary get it built
/// automatically).
///
/// # Panics
///
/// If the binary is not found; the message says where it was looked for.
#[must_use]
pub fn bin_path(name: &str) -> PathBuf {
    try_bin_path(name).unwrap_or_else(|e| panic!("{e}"))
}

/// A workspace binary that is not where [`bin_path`] looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinNotFound {
    /// The binary's name.
    pub name: String,
    /// The paths tried, in order.
    pub tried: Vec<PathBuf>,
}

impl std::fmt::Display for BinNotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tried: Vec<String> = self.tried.iter().map(|p| p.display().to_string()).collect();
        write!(
            f,
            "Binary {} not found in {}; run `cargo build --workspace --bins` first or set {BIN_DIR_ENV}",
            self.name,
            tried.join(", ")
        )
    }
}

impl std::error::Error for BinNotFound {}

/// Like [`bin_path`], but returns an error instead of panicking.
///
/// # Errors
///
/// [`BinNotFound`] with the candidates tried.
pub fn try_bin_path(name: &str) -> Result<PathBuf, BinNotFound> {
    let bin_dir = std::env::var_os(BIN_DIR_ENV).map(PathBuf::from);
    // Without our own path, nothing can be searched: the error lists no candidate.
    let exe = std::env::current_exe().map_err(|_| BinNotFound {
        name: name.to_owned(),
        tried: Vec::new(),
    })?;
    find_bin(name, bin_dir.as_deref(), &exe).map_err(|tried| BinNotFound {
        name: name.to_owned(),
        tried,
    })
}

/// Looks for `name` in `bin_dir` if given, else next to `exe` and in its
/// parent directory. Returns the candidates tried when none is a file.
fn find_bin(name: &str, bin_dir: Option<&Path>, exe: &Path) -> Result<PathBuf, Vec<PathBuf>> {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let candidates: Vec<PathBuf> = match bin_dir {
        Some(dir) => vec![dir.join(&file)],
        None => exe
            .parent()
            .into_iter()
            .flat_map(|dir| [Some(dir), dir.parent()])
            .flatten()
            .map(|dir| dir.join(&file))
            .collect(),
    };
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(candidates)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::TestDir;

    /// A fake `target/debug` with a test executable in `deps/`.
    fn fake_target() -> (TestDir, PathBuf) {
        let dir = TestDir::new("bins");
        fs::create_dir(dir.join("deps")).unwrap();
        let exe = dir.join("deps/it-0123456789abcdef");
        fs::write(&exe, b"").unwrap();
        (dir, exe)
    }

    #[test]
    fn finds_binary_next_to_exe_then_one_up() {
        let (dir, exe) = fake_target();
        assert_eq!(
            find_bin("daemon", None, &exe),
            Err(vec![dir.join("deps/daemon"), dir.join("daemon")])
        );
        fs::write(dir.join("daemon"), b"").unwrap();
        assert_eq!(find_bin("daemon", None, &exe), Ok(dir.join("daemon")));
        fs::write(dir.join("deps/daemon"), b"").unwrap();
        assert_eq!(find_bin("daemon", None, &exe), Ok(dir.join("deps/daemon")));
    }

    #[test]
    fn bin_dir_is_the_only_place_searched() {
        let (dir, exe) = fake_target();
        fs::write(dir.join("daemon"), b"").unwrap();
        let bin_dir = dir.join("bin");
        fs::create_dir(&bin_dir).unwrap();
        assert_eq!(
            find_bin("daemon", Some(&bin_dir), &exe),
            Err(vec![bin_dir.join("daemon")])
        );
        fs::write(bin_dir.join("daemon"), b"").unwrap();
        assert_eq!(
            find_bin("daemon", Some(&bin_dir), &exe),
            Ok(bin_dir.join("daemon"))
        );
    }

    #[test]
    fn directories_do_not_count() {
        let (dir, exe) = fake_target();
        fs::create_dir(dir.join("daemon")).unwrap();
        assert!(find_bin("daemon", None, &exe).is_err());
    }

    #[test]
    #[should_panic(expected = "Binary acrn-no-such-binary not found in")]
    fn missing_binary_panics_with_hint() {
        let _ = bin_path("acrn-no-such-binary");
    }
}
