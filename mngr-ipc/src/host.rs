//! What the host is doing when a daemon is asked to stop: a reboot, a power-off, or a plain
//! service stop. Asked of systemd (`systemctl list-jobs`) or of an injected command, on a
//! worker thread, bounded.

use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// The systemd query for queued jobs.
pub const DEFAULT_INTENT_CMD: &str = "systemctl list-jobs --no-legend --no-pager";

/// What the host is doing when a daemon is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostIntent {
    /// A reboot job is queued.
    Reboot,
    /// A power-off (or halt) job is queued.
    Poweroff,
    /// Neither: a plain stop or restart of the service.
    None,
}

impl HostIntent {
    /// Reads the output of `systemctl list-jobs` (or an injected command printing the
    /// same kind of lines).
    pub fn from_jobs(output: &str) -> HostIntent {
        let has = |unit: &str| {
            output
                .lines()
                .any(|l| l.split_whitespace().any(|w| w == unit))
        };
        if has("reboot.target") || has("kexec.target") {
            HostIntent::Reboot
        } else if has("poweroff.target") || has("halt.target") {
            HostIntent::Poweroff
        } else {
            HostIntent::None
        }
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            HostIntent::Reboot => "reboot",
            HostIntent::Poweroff => "poweroff",
            HostIntent::None => "none",
        }
    }
}

/// Runs the intent command and reads its output, giving up after `timeout` (the answer
/// is then [`HostIntent::None`]).
pub fn host_intent(argv: &[String], timeout: Duration) -> HostIntent {
    let argv = argv.to_vec();
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("intent".into())
        .spawn(move || {
            let out = argv.split_first().map(|(prog, args)| {
                Command::new(prog)
                    .args(args)
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
            });
            let _ = tx.send(out);
        });
    if let Err(e) = spawned {
        log::warn!("Cannot ask for the host's intent: {e}");
        return HostIntent::None;
    }
    match rx.recv_timeout(timeout) {
        Ok(Some(Ok(out))) => HostIntent::from_jobs(&String::from_utf8_lossy(&out.stdout)),
        Ok(Some(Err(e))) => {
            log::warn!("Intent command failed: {e}");
            HostIntent::None
        }
        Ok(None) => HostIntent::None,
        Err(RecvTimeoutError::Timeout) => {
            log::warn!("Intent command did not answer within {timeout:?}");
            HostIntent::None
        }
        Err(RecvTimeoutError::Disconnected) => HostIntent::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_output_is_read() {
        let jobs = "123 reboot.target start waiting\n124 systemd-reboot.service start waiting\n";
        assert_eq!(HostIntent::from_jobs(jobs), HostIntent::Reboot);
        assert_eq!(
            HostIntent::from_jobs("9 poweroff.target start waiting"),
            HostIntent::Poweroff
        );
        assert_eq!(HostIntent::from_jobs("No jobs running."), HostIntent::None);
        assert_eq!(
            HostIntent::from_jobs("1 myreboot.targetx start"),
            HostIntent::None
        );
    }

    #[test]
    fn intent_is_bounded() {
        let slow: Vec<String> = ["sleep", "5"].map(String::from).to_vec();
        let t = std::time::Instant::now();
        assert_eq!(
            host_intent(&slow, Duration::from_millis(100)),
            HostIntent::None
        );
        assert!(t.elapsed() < Duration::from_secs(4));
        let cat: Vec<String> = ["echo", "7", "poweroff.target", "start"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            host_intent(&cat, Duration::from_secs(5)),
            HostIntent::Poweroff
        );
    }
}
