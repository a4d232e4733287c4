//! Stop-all bookkeeping, pure: when is a stop or suspend of every VM complete, and what is
//! reported to the lifecycle service.
//!
//! The C acrnd accepted only "all stopped" (SHUTDOWN) or "all suspended" (SUSPEND): a mix
//! of stopped and suspended VMs never completed and ended in a refusal. Here a mix is a
//! SUSPEND (the system sleeps; the stopped VMs stay stopped), and completion is checked on
//! every VM state change instead of once a second.

use std::collections::BTreeMap;

/// What acrnd knows of a VM's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmState {
    /// No device model runs.
    Stopped,
    /// Launched; its device model has not confirmed yet.
    Starting,
    /// Running.
    Started,
    /// A stop is in progress.
    Stopping,
    /// A suspend is in progress.
    Suspending,
    /// Suspended (S3).
    Suspended,
}

impl VmState {
    /// The number acrnctl shows (upstream's, plus the suite's for transitions).
    pub fn wire(self) -> i32 {
        use mngr_ipc::msg::vm_state;
        match self {
            VmState::Stopped => vm_state::STOPPED,
            VmState::Starting => vm_state::STARTING,
            VmState::Started => vm_state::STARTED,
            VmState::Stopping => vm_state::STOPPING,
            VmState::Suspending => vm_state::SUSPENDING,
            VmState::Suspended => vm_state::SUSPENDED,
        }
    }

    /// The text acrnctl prints.
    pub fn name(self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Starting => "starting",
            VmState::Started => "started",
            VmState::Stopping => "stopping",
            VmState::Suspending => "suspending",
            VmState::Suspended => "suspended",
        }
    }

    /// Whether no operation is under way (stopped, started or suspended).
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            VmState::Stopped | VmState::Started | VmState::Suspended
        )
    }
}

/// What a finished stop-all reports to the lifecycle service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Every VM is stopped: SHUTDOWN err 0.
    Shutdown,
    /// Every VM is suspended or stopped, at least one suspended: SUSPEND err 0.
    Suspend,
}

impl Report {
    /// `Shutdown` or `Suspend` (the event log's word).
    pub fn name(self) -> &'static str {
        match self {
            Report::Shutdown => "Shutdown",
            Report::Suspend => "Suspend",
        }
    }
}

/// The report if every VM has reached a final state, else `None`.
pub fn completion<'a>(states: impl IntoIterator<Item = &'a VmState>) -> Option<Report> {
    let mut any_suspended = false;
    for s in states {
        match s {
            VmState::Stopped => {}
            VmState::Suspended => any_suspended = true,
            _ => return None,
        }
    }
    Some(if any_suspended {
        Report::Suspend
    } else {
        Report::Shutdown
    })
}

/// The VMs that keep a stop-all from completing, by name.
pub fn blockers(states: &BTreeMap<String, VmState>) -> Vec<&str> {
    states
        .iter()
        .filter(|(_, s)| !matches!(s, VmState::Stopped | VmState::Suspended))
        .map(|(n, _)| n.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::VmState::*;
    use super::*;

    #[test]
    fn completion_rules() {
        assert_eq!(completion(&[]), Some(Report::Shutdown), "no VMs: shutdown");
        assert_eq!(completion(&[Stopped, Stopped]), Some(Report::Shutdown));
        assert_eq!(completion(&[Suspended, Suspended]), Some(Report::Suspend));
        assert_eq!(
            completion(&[Stopped, Suspended]),
            Some(Report::Suspend),
            "mixed"
        );
        for busy in [Starting, Started, Stopping, Suspending] {
            assert_eq!(completion(&[Stopped, busy]), None, "{busy:?}");
        }
    }

    #[test]
    fn blockers_are_named() {
        let m: BTreeMap<String, VmState> = [("a", Stopped), ("b", Started), ("c", Suspending)]
            .into_iter()
            .map(|(n, s)| (n.to_owned(), s))
            .collect();
        assert_eq!(blockers(&m), vec!["b", "c"]);
    }
}
