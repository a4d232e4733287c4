//! VM names a device model may serve under.
//!
//! The name is the last argument of a device model's command line; the monitor serves
//! `<name>.monitor` and sends the name in the fixed `char[N]` fields of ACRND_TIMER and
//! DM_NOTIFY. A [`VmName`] is checked once, at start, so that nothing later can fail on it:
//!
//! * not empty;
//! * printable ASCII without blanks (`0x21..=0x7E`): it becomes part of a file name, a
//!   launch-script name and the tab-separated timer list of acrnd;
//! * no `/` (a path) and no `.` (`vm1.monitor` would be ambiguous with a VM `vm1.monitor`
//!   and the `NAME.PID.socket` parsing);
//! * not the name of a daemon of the suite ([`DAEMON_NAMES`]): a VM named `acrnd` would
//!   shadow acrnd for every C client that looks servers up by prefix;
//! * shorter than the ABI profile's name field ([`Profile::name_len`], which counts the
//!   terminating NUL): 15 characters in profile F, 127 in E and D.

use std::fmt;

use mngr_ipc::Profile;
use thiserror::Error;

/// Server names of the suite's daemons; no VM may take one.
pub const DAEMON_NAMES: [&str; 3] = ["acrnd", "sos-lcs", "service-vm-lcs"];

/// Why a VM name is refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    #[error("VM name is empty")]
    Empty,
    /// A character outside `0x21..=0x7E`, or `/` or `.`.
    #[error("VM name {name:?} contains {ch:?} (allowed: printable ASCII except blank, '/', '.')")]
    BadChar {
        /// The name.
        name: String,
        /// The first offending character.
        ch: char,
    },
    /// The name of a daemon of the suite.
    #[error("VM name {0:?} is the name of a daemon")]
    Reserved(String),
    /// Longer than the profile's name field allows.
    #[error("VM name {name:?} is {len} bytes; profile {profile} allows at most {max}")]
    TooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The longest allowed (the field length minus the NUL).
        max: usize,
        /// The profile's label.
        profile: &'static str,
    },
}

/// A validated VM name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmName(String);

impl VmName {
    /// Checks `name` against the rules of the module docs for `profile`.
    ///
    /// ```
    /// use acrn_dm_monitor::name::{NameError, VmName};
    /// use mngr_ipc::Profile;
    ///
    /// assert_eq!(VmName::new("vm1", Profile::F).expect("valid").as_str(), "vm1");
    /// assert!(matches!(VmName::new("vm.1", Profile::F), Err(NameError::BadChar { .. })));
    /// assert!(VmName::new("sixteen-chars-xx", Profile::F).is_err());
    /// assert!(VmName::new("sixteen-chars-xx", Profile::E).is_ok());
    /// ```
    pub fn new(name: &str, profile: Profile) -> Result<VmName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !c.is_ascii_graphic() || *c == '/' || *c == '.')
        {
            return Err(NameError::BadChar {
                name: name.to_owned(),
                ch,
            });
        }
        if DAEMON_NAMES.contains(&name) {
            return Err(NameError::Reserved(name.to_owned()));
        }
        let max = profile.name_len().saturating_sub(1);
        if name.len() > max {
            return Err(NameError::TooLong {
                name: name.to_owned(),
                len: name.len(),
                max,
                profile: profile.label(),
            });
        }
        Ok(VmName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The server name of this VM's monitor: `<name>.monitor`.
    pub fn monitor_name(&self) -> String {
        mngr_ipc::naming::monitor_name(&self.0)
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["vm1", "UOS_2", "a", "rt-vm", "x~y@z+1", "fifteen-chars-x"] {
            let v = VmName::new(n, Profile::F).expect(n);
            assert_eq!(v.as_str(), n);
        }
        assert_eq!(
            VmName::new("vm1", Profile::F)
                .expect("valid")
                .monitor_name(),
            "vm1.monitor"
        );
    }

    #[test]
    fn rejects_empty_and_bad_characters() {
        assert_eq!(VmName::new("", Profile::F), Err(NameError::Empty));
        for (n, ch) in [
            ("a/b", '/'),
            ("vm.1", '.'),
            ("vm 1", ' '),
            ("vm\t1", '\t'),
            ("vm\u{0}", '\u{0}'),
            ("vm\u{7f}", '\u{7f}'),
            ("vmé", 'é'),
            ("..", '.'),
        ] {
            assert_eq!(
                VmName::new(n, Profile::F),
                Err(NameError::BadChar {
                    name: n.to_owned(),
                    ch
                }),
                "{n:?}"
            );
        }
    }

    #[test]
    fn rejects_daemon_names() {
        for n in DAEMON_NAMES {
            assert_eq!(
                VmName::new(n, Profile::E),
                Err(NameError::Reserved(n.to_owned()))
            );
        }
        // Only the exact names: a VM may still be called acrnd2.
        assert!(VmName::new("acrnd2", Profile::F).is_ok());
    }

    #[test]
    fn length_follows_the_profile_and_counts_the_nul() {
        let f_max = "x".repeat(15);
        assert!(VmName::new(&f_max, Profile::F).is_ok());
        let f_over = "x".repeat(16);
        assert_eq!(
            VmName::new(&f_over, Profile::F),
            Err(NameError::TooLong {
                name: f_over.clone(),
                len: 16,
                max: 15,
                profile: "F"
            })
        );
        for p in [Profile::E, Profile::D] {
            assert!(VmName::new(&f_over, p).is_ok());
            assert!(VmName::new(&"y".repeat(127), p).is_ok());
            assert!(VmName::new(&"y".repeat(128), p).is_err());
        }
    }
}
