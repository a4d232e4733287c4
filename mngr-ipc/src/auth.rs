//! Who may make privileged requests: a policy over the peer credentials every server
//! handler receives (`SO_PEERCRED`).
//!
//! The C daemons checked nothing: any local process able to open the socket directory
//! could stop VMs or fake lifecycle events. A [`Policy`] allows a set of uids and a set of
//! groups; a group matches the peer's primary gid or one of its supplementary groups (read
//! from `/proc/<pid>/status`).

use std::fs;

use crate::server::PeerCred;

/// The peers allowed to make privileged requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Default for Policy {
    /// Root only.
    fn default() -> Self {
        Policy {
            uids: vec![0],
            gids: Vec::new(),
        }
    }
}

impl Policy {
    /// Allows exactly these uids and groups.
    pub fn new(uids: Vec<u32>, gids: Vec<u32>) -> Self {
        Policy { uids, gids }
    }

    /// The allowed uids.
    pub fn uids(&self) -> &[u32] {
        &self.uids
    }

    /// The allowed groups.
    pub fn gids(&self) -> &[u32] {
        &self.gids
    }

    /// Whether `peer` may make privileged requests.
    pub fn allows(&self, peer: &PeerCred) -> bool {
        if self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid) {
            return true;
        }
        !self.gids.is_empty()
            && supplementary_groups(peer.pid)
                .iter()
                .any(|g| self.gids.contains(g))
    }
}

/// A group by name or number (`27`, `acrn`); `None` if no such group exists.
pub fn resolve_group(group: &str) -> Option<u32> {
    if let Ok(n) = group.parse() {
        return Some(n);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => None,
    }
}

/// The supplementary groups of process `pid` (empty if it is gone or unreadable).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    if pid <= 0 {
        return Vec::new();
    }
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    parse_groups(&status)
}

fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerCred {
        PeerCred { pid: 0, uid, gid }
    }

    #[test]
    fn groups_resolve_by_number_and_name() {
        assert_eq!(resolve_group("27"), Some(27));
        assert_eq!(resolve_group("root"), Some(0));
        assert_eq!(resolve_group("no-such-group-here"), None);
    }

    #[test]
    fn uids_and_primary_groups() {
        let p = Policy::default();
        assert!(p.allows(&peer(0, 0)));
        assert!(!p.allows(&peer(1000, 1000)));
        let p = Policy::new(vec![0], vec![27]);
        assert!(p.allows(&peer(1000, 27)));
        assert!(!p.allows(&peer(1000, 28)));
    }

    #[test]
    fn supplementary_groups_are_read_from_proc() {
        assert_eq!(
            parse_groups("Name:\tx\nGroups:\t4 24 27 \nNgid:\t0\n"),
            vec![4, 24, 27]
        );
        assert!(parse_groups("Name:\tx\n").is_empty());
        let me = PeerCred {
            pid: i32::try_from(std::process::id()).expect("pid fits"),
            uid: u32::MAX,
            gid: u32::MAX,
        };
        let mine = supplementary_groups(me.pid);
        if let Some(&g) = mine.first() {
            assert!(Policy::new(Vec::new(), vec![g]).allows(&me));
        }
        assert!(!Policy::new(Vec::new(), vec![u32::MAX - 1]).allows(&me));
    }
}
