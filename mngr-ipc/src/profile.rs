//! ABI profiles: the two things that changed in `struct mngr_msg` between ACRN releases.
//!
//! Every 280-byte profile shares magic @0, msgid @8, timestamp @16 and the 256-byte union @24.
//! What differs is (a) the length of the VM-name arrays, which moves the `t` field of
//! ACRND_TIMER / RTC_TIMER to `24 + name_len`, and (b) the numbering of the ids. A profile is
//! therefore data: a name length and an id table. The codec ([`crate::codec`]) is a function
//! of it.
//!
//! | profile | ACRN releases | name length | `t` @ | ids |
//! |---|---|---:|---:|---|
//! | F (default) | v3.0 – HEAD | 16 | 40 | DM_STOP 3 … REBOOT 20 |
//! | E | v2.0 – v2.7 | 128 | 152 | as F |
//! | D | v1.1 – v1.6 | 128 | 152 | DM_PAUSE 6 / DM_CONTINUE 7 shift the rest: … REBOOT 22 |
//!
//! The suite's acrnctl extension ids ([`EXTENSION_IDS`]) are the same in every profile and
//! lie far above every C table, so no C peer can mistake them for one of its requests.

use std::fmt;

use thiserror::Error;

use crate::msg::{MsgId, UNION_LEN};

/// Wire ids of profiles E and F.
pub const IDS_E_F: &[(MsgId, u32)] = &[
    (MsgId::MsgStr, 1),
    (MsgId::DmStop, 3),
    (MsgId::DmSuspend, 4),
    (MsgId::DmResume, 5),
    (MsgId::DmQuery, 6),
    (MsgId::DmBlkrescan, 7),
    (MsgId::AcrndTimer, 9),
    (MsgId::AcrndReason, 10),
    (MsgId::DmNotify, 11),
    (MsgId::AcrndStop, 12),
    (MsgId::AcrndResume, 13),
    (MsgId::AcrndSuspend, 14),
    (MsgId::WakeupReason, 16),
    (MsgId::RtcTimer, 17),
    (MsgId::Suspend, 18),
    (MsgId::Shutdown, 19),
    (MsgId::Reboot, 20),
];

/// Wire ids of profile D (ACRN v1.1 – v1.6): DM_PAUSE and DM_CONTINUE shift the rest.
pub const IDS_D: &[(MsgId, u32)] = &[
    (MsgId::MsgStr, 1),
    (MsgId::DmStop, 3),
    (MsgId::DmSuspend, 4),
    (MsgId::DmResume, 5),
    (MsgId::DmPause, 6),
    (MsgId::DmContinue, 7),
    (MsgId::DmQuery, 8),
    (MsgId::DmBlkrescan, 9),
    (MsgId::AcrndTimer, 11),
    (MsgId::AcrndReason, 12),
    (MsgId::DmNotify, 13),
    (MsgId::AcrndStop, 14),
    (MsgId::AcrndResume, 15),
    (MsgId::AcrndSuspend, 16),
    (MsgId::WakeupReason, 18),
    (MsgId::RtcTimer, 19),
    (MsgId::Suspend, 20),
    (MsgId::Shutdown, 21),
    (MsgId::Reboot, 22),
];

/// The suite's acrnctl-to-acrnd extension ids, identical in every profile.
///
/// 0x4143_xxxx ("AC") is far outside every C id table (which ends at 22), so a C server
/// that receives one answers nothing (a C server) or `-ENOSYS` (ours).
pub const EXTENSION_IDS: &[(MsgId, u32)] = &[
    (MsgId::CtlList, 0x4143_0001),
    (MsgId::CtlStart, 0x4143_0002),
    (MsgId::CtlStop, 0x4143_0003),
    (MsgId::CtlSuspend, 0x4143_0004),
    (MsgId::CtlResume, 0x4143_0005),
    (MsgId::CtlTimers, 0x4143_0006),
    (MsgId::CtlStatus, 0x4143_0007),
];

/// Bytes of the union before the first entry of a list page (err, total, count, padding).
pub(crate) const PAGE_HEADER_LEN: usize = 16;
/// Bytes of a VM entry after its name (state, pid, next_wake).
pub(crate) const VM_ENTRY_TAIL: usize = 16;
/// Bytes of a timer entry after its name (when).
pub(crate) const TIMER_ENTRY_TAIL: usize = 8;

/// A profile that cannot be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProfileError {
    /// The name field plus the 8-byte `t` slot does not fit in the union.
    #[error("Name length {0} does not fit the {UNION_LEN}-byte union with an 8-byte `t`")]
    NameLength(usize),
    /// Two ids share a wire number, or one id appears twice.
    #[error("Id table maps {0} twice or reuses wire number {1}")]
    DuplicateId(MsgId, u32),
    /// A table entry collides with the extension ids.
    #[error("Wire number {0} is reserved for the suite's extension ids")]
    ReservedId(u32),
    /// No profile has this name.
    #[error("Unknown ABI profile {0:?} (known: F, E, D)")]
    UnknownName(String),
}

/// An ABI profile: the VM-name length and the id table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    label: &'static str,
    name_len: usize,
    ids: &'static [(MsgId, u32)],
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Profile({}, name_len {})", self.label, self.name_len)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label)
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::F
    }
}

impl Profile {
    /// ACRN v3.0 – HEAD: 16-byte names, ids of [`IDS_E_F`]. The default.
    pub const F: Profile = Profile {
        label: "F",
        name_len: 16,
        ids: IDS_E_F,
    };
    /// ACRN v2.0 – v2.7: 128-byte names, ids of [`IDS_E_F`].
    pub const E: Profile = Profile {
        label: "E",
        name_len: 128,
        ids: IDS_E_F,
    };
    /// ACRN v1.1 – v1.6: 128-byte names, ids of [`IDS_D`].
    pub const D: Profile = Profile {
        label: "D",
        name_len: 128,
        ids: IDS_D,
    };

    /// A custom profile (e.g. the unreleased 32-byte-name build of the v1.1 cycle).
    pub fn custom(
        label: &'static str,
        name_len: usize,
        ids: &'static [(MsgId, u32)],
    ) -> Result<Profile, ProfileError> {
        if name_len == 0 || name_len + 8 > UNION_LEN - PAGE_HEADER_LEN - VM_ENTRY_TAIL {
            return Err(ProfileError::NameLength(name_len));
        }
        for (i, &(id, wire)) in ids.iter().enumerate() {
            if EXTENSION_IDS.iter().any(|&(_, w)| w == wire) {
                return Err(ProfileError::ReservedId(wire));
            }
            if ids[..i].iter().any(|&(o, w)| o == id || w == wire) {
                return Err(ProfileError::DuplicateId(id, wire));
            }
        }
        Ok(Profile {
            label,
            name_len,
            ids,
        })
    }

    /// A built-in profile by name (`F`, `E`, `D`, case-insensitive).
    pub fn by_name(name: &str) -> Result<Profile, ProfileError> {
        match name.to_ascii_uppercase().as_str() {
            "F" | "V3" => Ok(Profile::F),
            "E" | "V2" => Ok(Profile::E),
            "D" | "V1" => Ok(Profile::D),
            _ => Err(ProfileError::UnknownName(name.to_owned())),
        }
    }

    /// The profile's name.
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// Length of the VM-name arrays (`MAX_VM_NAME_LEN`), terminating NUL included.
    pub fn name_len(&self) -> usize {
        self.name_len
    }

    /// The wire number of `id`, or `None` if the profile lacks it (DM_PAUSE outside D).
    pub fn wire_id(&self, id: MsgId) -> Option<u32> {
        self.ids
            .iter()
            .chain(EXTENSION_IDS)
            .find(|&&(i, _)| i == id)
            .map(|&(_, w)| w)
    }

    /// The logical id of wire number `wire`, or `None` if unknown in this profile.
    pub fn msg_id(&self, wire: u32) -> Option<MsgId> {
        self.ids
            .iter()
            .chain(EXTENSION_IDS)
            .find(|&&(_, w)| w == wire)
            .map(|&(i, _)| i)
    }

    /// The ids this profile knows.
    pub fn ids(&self) -> impl Iterator<Item = MsgId> + '_ {
        self.ids.iter().chain(EXTENSION_IDS).map(|&(i, _)| i)
    }

    /// How many VM entries fit in one CTL_LIST ack page.
    pub fn vm_page_capacity(&self) -> usize {
        (UNION_LEN - PAGE_HEADER_LEN) / (self.name_len + VM_ENTRY_TAIL)
    }

    /// How many timer entries fit in one CTL_TIMERS ack page.
    pub fn timer_page_capacity(&self) -> usize {
        (UNION_LEN - PAGE_HEADER_LEN) / (self.name_len + TIMER_ENTRY_TAIL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d_shifts_ids_after_dm_resume() {
        assert_eq!(Profile::D.wire_id(MsgId::DmQuery), Some(8));
        assert_eq!(Profile::F.wire_id(MsgId::DmQuery), Some(6));
        assert_eq!(Profile::D.wire_id(MsgId::Reboot), Some(22));
        assert_eq!(Profile::F.wire_id(MsgId::DmPause), None);
        assert_eq!(Profile::F.msg_id(6), Some(MsgId::DmQuery));
        assert_eq!(Profile::D.msg_id(6), Some(MsgId::DmPause));
        assert_eq!(Profile::F.msg_id(0), None);
        assert_eq!(Profile::F.msg_id(15), None, "ACRND_MAX is a sentinel");
    }

    #[test]
    fn every_builtin_table_is_valid() {
        for p in [Profile::F, Profile::E, Profile::D] {
            let rebuilt = Profile::custom(p.label, p.name_len, p.ids).expect("built-in is valid");
            assert_eq!(rebuilt, p);
            for id in p.ids() {
                assert_eq!(p.msg_id(p.wire_id(id).expect("listed")), Some(id));
            }
        }
    }

    #[test]
    fn custom_rejects_bad_tables() {
        static DUP: &[(MsgId, u32)] = &[(MsgId::DmStop, 3), (MsgId::DmQuery, 3)];
        static RESERVED: &[(MsgId, u32)] = &[(MsgId::DmStop, 0x4143_0001)];
        assert_eq!(
            Profile::custom("x", 16, DUP),
            Err(ProfileError::DuplicateId(MsgId::DmQuery, 3))
        );
        assert_eq!(
            Profile::custom("x", 16, RESERVED),
            Err(ProfileError::ReservedId(0x4143_0001))
        );
        assert_eq!(
            Profile::custom("x", 0, IDS_E_F),
            Err(ProfileError::NameLength(0))
        );
        assert_eq!(
            Profile::custom("x", 240, IDS_E_F),
            Err(ProfileError::NameLength(240))
        );
    }

    #[test]
    fn page_capacities() {
        assert_eq!(Profile::F.vm_page_capacity(), 7);
        assert_eq!(Profile::F.timer_page_capacity(), 10);
        assert_eq!(Profile::E.vm_page_capacity(), 1);
        assert_eq!(Profile::E.timer_page_capacity(), 1);
    }

    #[test]
    fn by_name() {
        assert_eq!(Profile::by_name("f"), Ok(Profile::F));
        assert_eq!(Profile::by_name("E"), Ok(Profile::E));
        assert!(Profile::by_name("Z").is_err());
    }
}
