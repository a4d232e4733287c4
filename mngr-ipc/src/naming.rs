//! Socket directory, `NAME.PID.socket` files, lookup by exact name, stale-socket cleanup.
//!
//! A server named `NAME` in process `PID` listens on `DIR/NAME.PID.socket`, the file name
//! C clients expect. Unlike the C library, lookup is by the *exact* name (the file name
//! minus `.PID.socket`): `vm1` never answers for `vm10`. Device models are named
//! `<vm>.monitor` ([`monitor_name`]).
//!
//! Nothing but sockets is ever created in the socket dir: C clients prefix-match every
//! entry, so a lock file there could be taken for a server.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use thiserror::Error;

/// The production socket directory (`ACRN_DM_SOCK_PATH`).
pub const DEFAULT_SOCKET_DIR: &str = "/run/acrn/mngr";

/// Mode of the socket directory when we create it (the C code used 0666 minus umask,
/// which lacks the search bit).
pub const DIR_MODE: u32 = 0o755;

/// Mode of every socket we bind.
pub const SOCKET_MODE: u32 = 0o660;

/// Longest socket path `sockaddr_un` holds (108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

const SUFFIX: &str = ".socket";

/// A name or path that cannot be used.
#[derive(Debug, Error)]
pub enum NamingError {
    /// Empty, or contains `/` or NUL.
    #[error("Invalid server name {0:?}")]
    InvalidName(String),
    /// The socket path would not fit `sockaddr_un`.
    #[error(
        "Socket path {path} is {len} bytes, longer than the {MAX_SOCKET_PATH} a Unix socket allows"
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The socket directory could not be created or read.
    #[error("Socket directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

pub use crate::vocabulary::monitor_name;

/// Checks a server name: non-empty, no `/`, no NUL.
pub fn validate_name(name: &str) -> Result<(), NamingError> {
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(NamingError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// `NAME.PID.socket`.
pub fn socket_file_name(name: &str, pid: u32) -> String {
    format!("{name}.{pid}{SUFFIX}")
}

/// Splits `NAME.PID.socket` into `(NAME, PID)`; `None` for any other file name.
pub fn parse_socket_file_name(file: &str) -> Option<(&str, u32)> {
    let stem = file.strip_suffix(SUFFIX)?;
    let (name, pid) = stem.rsplit_once('.')?;
    if name.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((name, pid.parse().ok()?))
}

/// The path a server `name` of process `pid` binds, checked against `sockaddr_un`.
pub fn socket_path(dir: &Path, name: &str, pid: u32) -> Result<PathBuf, NamingError> {
    validate_name(name)?;
    let path = dir.join(socket_file_name(name, pid));
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(NamingError::PathTooLong { path, len });
    }
    Ok(path)
}

/// Creates the socket directory (and parents) with [`DIR_MODE`] if it is missing.
pub fn ensure_dir(dir: &Path) -> Result<(), NamingError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| NamingError::Dir {
            path: dir.to_owned(),
            source,
        })
}

/// Sets [`SOCKET_MODE`] on a bound socket.
pub fn set_socket_mode(path: &Path) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE))
}

/// Whether a process with this pid exists (ours to signal or not).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    matches!(kill(Pid::from_raw(raw), None), Ok(()) | Err(Errno::EPERM))
}

/// A socket file of the requested name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its path.
    pub path: PathBuf,
    /// The pid in its name.
    pub pid: u32,
    /// Whether that pid is alive.
    pub alive: bool,
    /// Modification time (seconds), for ordering.
    pub mtime: i64,
}

/// Every socket in `dir` whose name is exactly `name`: live pids first, newest first.
/// A missing directory has no candidates.
pub fn candidates(dir: &Path, name: &str) -> Result<Vec<Candidate>, NamingError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NamingError::Dir {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some((n, pid)) = parse_socket_file_name(file) else {
            continue;
        };
        if n != name {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_socket() {
            continue;
        }
        found.push(Candidate {
            path: entry.path(),
            pid,
            alive: pid_alive(pid),
            mtime: meta.mtime(),
        });
    }
    found.sort_by(|a, b| {
        b.alive
            .cmp(&a.alive)
            .then(b.mtime.cmp(&a.mtime))
            .then(b.pid.cmp(&a.pid))
    });
    Ok(found)
}

/// Every distinct server name with at least one socket in `dir` (for discovery, e.g. of
/// `<vm>.monitor` sockets).
pub fn server_names(dir: &Path) -> Result<Vec<String>, NamingError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NamingError::Dir {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let f = e.file_name();
            parse_socket_file_name(f.to_str()?).map(|(n, _)| n.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Removes the sockets of `name` that no server answers any more: those of dead pids, and
/// those of live pids (a reused pid) whose socket refuses connections. Returns how many.
pub fn remove_stale(dir: &Path, name: &str) -> Result<usize, NamingError> {
    let mut removed = 0;
    for c in candidates(dir, name)? {
        let stale = !c.alive
            || matches!(UnixStream::connect(&c.path), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused);
        if !stale {
            continue;
        }
        match fs::remove_file(&c.path) {
            Ok(()) => {
                log::info!(
                    "Removed stale socket {} (pid {} gone)",
                    c.path.display(),
                    c.pid
                );
                removed += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("Cannot remove stale socket {}: {e}", c.path.display()),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(socket_file_name("vm1.monitor", 42), "vm1.monitor.42.socket");
        assert_eq!(
            parse_socket_file_name("vm1.monitor.42.socket"),
            Some(("vm1.monitor", 42))
        );
        assert_eq!(parse_socket_file_name("acrnd.7.socket"), Some(("acrnd", 7)));
        for bad in [
            "acrnd.socket",
            "acrnd.x1.socket",
            ".1.socket",
            "acrnd.1",
            "acrnd.1.sock",
            "a..socket",
        ] {
            assert_eq!(parse_socket_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_validated_and_paths_bounded() {
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("sos-lcs").is_ok());
        let long = "x".repeat(100);
        assert!(matches!(
            socket_path(Path::new("/run/acrn/mngr"), &long, 1),
            Err(NamingError::PathTooLong { .. })
        ));
        assert!(socket_path(Path::new("/run/acrn/mngr"), "acrnd", 1).is_ok());
    }

    #[test]
    fn own_pid_is_alive_and_absurd_pids_are_not() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
    }
}
