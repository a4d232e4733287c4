//! Bounded polling: wait for a condition with a deadline instead of sleeping
//! for a fixed time.

use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

/// First pause between two polls.
const FIRST_BACKOFF: Duration = Duration::from_millis(1);
/// Longest pause between two polls.
const MAX_BACKOFF: Duration = Duration::from_millis(25);

/// A condition did not hold before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitTimeout {
    what: String,
    timeout: Duration,
}

impl WaitTimeout {
    /// Creates the error for waiting on `what` for `timeout`.
    pub fn new(what: impl Into<String>, timeout: Duration) -> Self {
        Self {
            what: what.into(),
            timeout,
        }
    }

    /// What was being waited for.
    #[must_use]
    pub fn what(&self) -> &str {
        &self.what
    }

    /// How long was waited.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.timeout, self.what
        )
    }
}

impl std::error::Error for WaitTimeout {}

/// Polls `cond` until it returns `Some`, and returns that value.
///
/// `cond` is called at once, then again after pauses starting at 1 ms and
/// doubling up to 25 ms. The pauses never run past the deadline, and `cond`
/// gets a last call at the deadline, so a condition that becomes true just
/// in time is still seen. `what` names the condition in the error.
///
/// # Errors
///
/// [`WaitTimeout`] if `cond` still returned `None` once `timeout` had
/// elapsed.
///
/// # Panics
///
/// If `timeout` is so large that the deadline cannot be represented.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Option<T>,
) -> Result<T, WaitTimeout> {
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| panic!("wait_until({what}): timeout {timeout:?} is too large"));
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Some(value) = cond() {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitTimeout::new(what, timeout));
        }
        thread::sleep(backoff.min(deadline - now));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Polls `cond` until it returns `true`; see [`wait_until`].
///
/// # Errors
///
/// [`WaitTimeout`] if `cond` was still `false` once `timeout` had elapsed.
///
/// # Panics
///
/// If `timeout` is so large that the deadline cannot be represented.
pub fn wait_for(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<(), WaitTimeout> {
    wait_until(timeout, what, || cond().then_some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generous slack over a timeout: CI machines can be slow and loaded.
    const SLACK: Duration = Duration::from_secs(2);

    #[test]
    fn returns_value_once_condition_holds() {
        let mut calls = 0;
        let got = wait_until(Duration::from_secs(10), "fifth call", || {
            calls += 1;
            (calls == 5).then_some(calls * 10)
        });
        assert_eq!(got, Ok(50));
        assert_eq!(calls, 5);
    }

    #[test]
    fn immediate_success_calls_once() {
        let mut calls = 0;
        let got = wait_for(Duration::ZERO, "already true", || {
            calls += 1;
            true
        });
        assert_eq!(got, Ok(()));
        assert_eq!(calls, 1);
    }

    #[test]
    fn times_out_within_bounds() {
        let timeout = Duration::from_millis(200);
        let start = Instant::now();
        let mut calls = 0u32;
        let err = wait_for(timeout, "never", || {
            calls += 1;
            false
        })
        .unwrap_err();
        let elapsed = start.elapsed();
        assert!(elapsed >= timeout, "returned early after {elapsed:?}");
        assert!(elapsed < timeout + SLACK, "returned late after {elapsed:?}");
        // Backoff caps at 25 ms, so 200 ms allows several polls, yet not a busy loop.
        assert!((3..=200).contains(&calls), "{calls} polls");
        assert_eq!(err.what(), "never");
        assert_eq!(err.timeout(), timeout);
        assert_eq!(err.to_string(), "timed out after 200ms waiting for never");
    }

    #[test]
    fn sees_condition_that_becomes_true_later() {
        let start = Instant::now();
        let got = wait_until(Duration::from_secs(10), "100 ms elapsed", || {
            let elapsed = start.elapsed();
            (elapsed >= Duration::from_millis(100)).then_some(elapsed)
        })
        .unwrap();
        assert!(got >= Duration::from_millis(100));
        assert!(got < Duration::from_millis(100) + SLACK);
    }

    #[test]
    fn zero_timeout_fails_fast() {
        let start = Instant::now();
        let err = wait_until(Duration::ZERO, "nothing", || None::<()>).unwrap_err();
        assert_eq!(err.timeout(), Duration::ZERO);
        assert!(start.elapsed() < SLACK);
    }
}
