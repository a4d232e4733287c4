//! The suite's words, each defined once: server names, the VM-name rule, acrnd's status
//! phase, the default paths the daemons and acrnctl share.
//!
//! Everything here is protocol: a C peer or an operator sees it. Daemons, the device-model
//! monitor, acrnctl and the simulators all take these definitions from here, so that a name
//! one of them accepts is accepted by all of them.

use std::fmt;

use thiserror::Error;

use crate::profile::Profile;

/// The server name of acrnd.
pub const ACRND: &str = "acrnd";
/// The server name of the C `cbc_lifecycle` (and of sos-lcs).
pub const SOS_LCS: &str = "sos-lcs";
/// The server name acrnd ≥ v2.7 looks the lifecycle service up by (sos-lcs serves it too).
pub const SERVICE_VM_LCS: &str = "service-vm-lcs";
/// The names the lifecycle service serves, in the order acrnd tries them.
pub const LCS_NAMES: [&str; 2] = [SOS_LCS, SERVICE_VM_LCS];
/// Server names of the suite's daemons; no VM may take one.
pub const DAEMON_NAMES: [&str; 3] = [ACRND, SOS_LCS, SERVICE_VM_LCS];
/// Words upstream acrnctl refuses as VM names (they are its own keywords).
pub const RESERVED_WORDS: [&str; 2] = ["help", "nothing"];
/// Characters upstream acrnctl refuses in a VM name, beside blanks.
pub const FORBIDDEN_CHARS: &str = "!@#$%^&*,";

/// Where acrnd finds launch scripts (`<vm>.sh`, `<vm>.args`) and acrnctl installs them.
pub const DEFAULT_LAUNCH_DIR: &str = "/usr/share/acrn/conf/add";

/// The server name of VM `vm`'s device-model monitor: `<vm>.monitor`.
pub fn monitor_name(vm: &str) -> String {
    format!("{vm}.monitor")
}

/// Why a VM name is refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    #[error("VM name is empty")]
    Empty,
    /// The first character is not an ASCII letter.
    #[error("VM name {0:?} does not start with a letter")]
    BadStart(String),
    /// A character outside `0x21..=0x7E`, or one of `/ . ! @ # $ % ^ & * ,`.
    #[error(
        "VM name {name:?} contains {ch:?} (allowed: printable ASCII except blank and / . ! @ # $ % ^ & * ,)"
    )]
    BadChar {
        /// The name.
        name: String,
        /// The first offending character.
        ch: char,
    },
    /// The name of a daemon of the suite, or an acrnctl keyword.
    #[error("VM name {0:?} is reserved")]
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

/// A VM name that passed the one rule of the suite.
///
/// The rule is upstream acrnctl's `add` rule, tightened where a name becomes part of a file
/// name or a message field:
///
/// * starts with an ASCII letter;
/// * printable ASCII without blanks (`0x21..=0x7E`): it becomes part of a file name, a
///   launch-script name and the tab-separated timer list of acrnd;
/// * none of `! @ # $ % ^ & * ,` (upstream acrnctl), no `/` (a path) and no `.` (`vm1.monitor`
///   would be ambiguous with a VM `vm1.monitor` and the `NAME.PID.socket` parsing);
/// * not the name of a daemon of the suite ([`DAEMON_NAMES`]): a VM named `acrnd` would
///   shadow acrnd for every C client that looks servers up by prefix; not `help` or
///   `nothing` ([`RESERVED_WORDS`]);
/// * shorter than the ABI profile's name field ([`Profile::name_len`], which counts the
///   terminating NUL): 15 characters in profile F, 127 in E and D.
///
/// acrnd's launch-directory scan, the device-model monitor and acrnctl all check names with
/// it, so a VM one of them accepts is accepted by all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmName(String);

impl VmName {
    /// Checks `name` against the rule for `profile`.
    ///
    /// ```
    /// use mngr_ipc::vocabulary::{NameError, VmName};
    /// use mngr_ipc::Profile;
    ///
    /// assert_eq!(VmName::new("vm1", Profile::F).expect("valid").as_str(), "vm1");
    /// assert!(matches!(VmName::new("vm.1", Profile::F), Err(NameError::BadChar { .. })));
    /// assert!(VmName::new("sixteen-chars-xx", Profile::F).is_err());
    /// assert!(VmName::new("sixteen-chars-xx", Profile::E).is_ok());
    /// ```
    pub fn new(name: &str, profile: Profile) -> Result<VmName, NameError> {
        let Some(first) = name.chars().next() else {
            return Err(NameError::Empty);
        };
        if let Some(ch) = name.chars().find(|c| {
            !c.is_ascii_graphic() || *c == '/' || *c == '.' || FORBIDDEN_CHARS.contains(*c)
        }) {
            return Err(NameError::BadChar {
                name: name.to_owned(),
                ch,
            });
        }
        if !first.is_ascii_alphabetic() {
            return Err(NameError::BadStart(name.to_owned()));
        }
        if DAEMON_NAMES.contains(&name) || RESERVED_WORDS.contains(&name) {
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

    /// Whether `name` passes the rule for `profile`.
    pub fn is_valid(name: &str, profile: Profile) -> bool {
        Self::new(name, profile).is_ok()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The server name of this VM's monitor: `<name>.monitor`.
    pub fn monitor_name(&self) -> String {
        monitor_name(&self.0)
    }
}

impl fmt::Display for VmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What acrnd is doing as a whole, as CTL_STATUS reports it (`phase`, a u32 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    /// Nothing system-wide is under way.
    #[default]
    Idle,
    /// Stopping every VM (the system powers off).
    Stopping,
    /// Suspending every VM (the system sleeps).
    Suspending,
    /// Resuming the VMs after a wake-up.
    Resuming,
}

impl Phase {
    /// Every phase, in wire order.
    pub const ALL: [Phase; 4] = [
        Phase::Idle,
        Phase::Stopping,
        Phase::Suspending,
        Phase::Resuming,
    ];

    /// The wire value.
    pub fn to_wire(self) -> u32 {
        match self {
            Phase::Idle => 0,
            Phase::Stopping => 1,
            Phase::Suspending => 2,
            Phase::Resuming => 3,
        }
    }

    /// The phase of a wire value, if known.
    pub fn from_wire(v: u32) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.to_wire() == v)
    }

    /// The word acrnctl prints.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Stopping => "stopping",
            Phase::Suspending => "suspending",
            Phase::Resuming => "resuming",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "vm1",
            "UOS_2",
            "a",
            "rt-vm",
            "x~y+1",
            "Android-2",
            "a_b",
            "fifteen-chars-x",
            "acrnd2",
        ] {
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
    fn rejects_empty_bad_start_and_bad_characters() {
        assert_eq!(VmName::new("", Profile::F), Err(NameError::Empty));
        for n in ["1vm", "_a", "-x", "~y"] {
            assert_eq!(
                VmName::new(n, Profile::F),
                Err(NameError::BadStart(n.to_owned())),
                "{n:?}"
            );
        }
        for (n, ch) in [
            ("a/b", '/'),
            ("vm.1", '.'),
            ("vm 1", ' '),
            ("vm\t1", '\t'),
            ("vm\u{0}", '\u{0}'),
            ("vm\u{7f}", '\u{7f}'),
            ("vmé", 'é'),
            ("..", '.'),
            ("v$", '$'),
            ("x@y", '@'),
            ("a,b", ','),
            ("a*", '*'),
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
    fn rejects_daemon_names_and_keywords() {
        for n in DAEMON_NAMES.into_iter().chain(RESERVED_WORDS) {
            assert_eq!(
                VmName::new(n, Profile::E),
                Err(NameError::Reserved(n.to_owned()))
            );
        }
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

    #[test]
    fn phases_round_trip_and_are_named() {
        for p in Phase::ALL {
            assert_eq!(Phase::from_wire(p.to_wire()), Some(p));
        }
        assert_eq!(Phase::from_wire(4), None);
        assert_eq!(
            Phase::ALL.map(Phase::name),
            ["idle", "stopping", "suspending", "resuming"]
        );
    }
}
