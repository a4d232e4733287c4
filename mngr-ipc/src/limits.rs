//! Process resource limits a daemon of the suite adjusts at start-up.
//!
//! A server holds one descriptor per client connection (up to
//! [`ServerConfig::max_connections`](crate::server::ServerConfig::max_connections)), acrnd
//! one pidfd and a few sockets per device model: the common soft `RLIMIT_NOFILE` of 1024
//! leaves little room. [`raise_nofile`] lifts the soft limit towards the hard one. It never
//! fails the start-up: a limit that cannot be raised is logged and kept.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The soft `RLIMIT_NOFILE` the daemons ask for (capped by the hard limit).
pub const NOFILE_WANTED: u64 = 65536;

/// What [`raise_nofile`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NofileOutcome {
    /// The soft limit was raised from `from` to `to`.
    Raised {
        /// The soft limit before.
        from: u64,
        /// The soft limit now.
        to: u64,
    },
    /// The soft limit already was at least the target (or at the hard limit): kept.
    Kept {
        /// The soft limit.
        soft: u64,
    },
    /// The limit could not be read or set; `soft` is the limit in effect, if known.
    Failed {
        /// The soft limit in effect, if it could be read.
        soft: Option<u64>,
    },
}

impl NofileOutcome {
    /// The soft limit in effect afterwards, if known.
    pub fn soft(&self) -> Option<u64> {
        match *self {
            NofileOutcome::Raised { to, .. } => Some(to),
            NofileOutcome::Kept { soft } => Some(soft),
            NofileOutcome::Failed { soft } => soft,
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to `min(hard, want)` if it is lower, and logs what it
/// did (`info` when raised, `debug` when kept, `warn` on failure). Never lowers a limit.
pub fn raise_nofile(want: u64) -> NofileOutcome {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("Cannot read RLIMIT_NOFILE: {e}; keeping it");
            return NofileOutcome::Failed { soft: None };
        }
    };
    let to = want.min(hard);
    if soft >= to {
        log::debug!("RLIMIT_NOFILE soft {soft} (hard {hard}) kept");
        return NofileOutcome::Kept { soft };
    }
    match setrlimit(Resource::RLIMIT_NOFILE, to, hard) {
        Ok(()) => {
            log::info!("RLIMIT_NOFILE soft limit raised from {soft} to {to} (hard {hard})");
            NofileOutcome::Raised { from: soft, to }
        }
        Err(e) => {
            log::warn!("Cannot raise RLIMIT_NOFILE from {soft} to {to}: {e}; keeping {soft}");
            NofileOutcome::Failed { soft: Some(soft) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_lowers_and_ends_at_least_at_the_target_or_the_hard_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("readable");
        // Asking for less than what is in effect keeps it.
        let before = getrlimit(Resource::RLIMIT_NOFILE).expect("readable").0;
        assert_eq!(raise_nofile(1), NofileOutcome::Kept { soft: before });
        let out = raise_nofile(NOFILE_WANTED);
        let soft = getrlimit(Resource::RLIMIT_NOFILE).expect("readable").0;
        assert_eq!(out.soft(), Some(soft));
        assert!(soft >= before, "lowered from {before} to {soft}");
        assert!(soft >= NOFILE_WANTED.min(hard), "{out:?}");
        // A second call finds nothing to do.
        assert_eq!(raise_nofile(NOFILE_WANTED), NofileOutcome::Kept { soft });
    }
}
