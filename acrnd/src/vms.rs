//! VM discovery and launch.
//!
//! A VM is registered by a launch script `<vm>.sh` in the launch-script directory, with an
//! optional `<vm>.args` whose content is split on whitespace (as upstream). Device models
//! started by hand appear through their live `<vm>.monitor` sockets.
//!
//! Launching runs `bash <vm>.sh <args...>` directly (no shell string is built from file
//! contents), with `ACRN_WAKEUP_REASON` in its environment, in a session of its own (a
//! device model outlives acrnd), stdin from `/dev/null`, stdout and stderr inherited (to
//! the journal). The script `exec`s the device model, so the child's pid is the DM's.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use mngr_ipc::Profile;
use mngr_ipc::naming;
use mngr_ipc::vocabulary::VmName;

/// What launches a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// `<vm>.sh`.
    pub script: PathBuf,
    /// The words of `<vm>.args`.
    pub args: Vec<String>,
}

/// The VMs registered in `dir`: `<vm>.sh` (exactly that suffix) with a name the suite's
/// one VM-name rule ([`VmName`]) accepts in `profile`. A missing directory registers
/// nothing.
pub fn scan_launch_dir(dir: &Path, profile: Profile) -> io::Result<BTreeMap<String, LaunchSpec>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let mut vms = BTreeMap::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some(name) = file.strip_suffix(".sh") else {
            continue;
        };
        if let Err(e) = VmName::new(name, profile) {
            log::warn!("Launch script {file:?} ignored: {e}");
            continue;
        }
        if !entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink())
        {
            continue;
        }
        let args = match fs::read_to_string(dir.join(format!("{name}.args"))) {
            Ok(text) => text.split_whitespace().map(str::to_owned).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                log::warn!("{name}.args unreadable ({e}); launching without arguments");
                Vec::new()
            }
        };
        vms.insert(
            name.to_owned(),
            LaunchSpec {
                script: entry.path(),
                args,
            },
        );
    }
    Ok(vms)
}

/// The device models serving a live `<vm>.monitor` socket: VM name → pid. A socket counts
/// only if it accepts a connection: a crashed DM's stale socket names a pid that may belong
/// to another process by now.
pub fn live_monitors(socket_dir: &Path) -> BTreeMap<String, u32> {
    let mut found = BTreeMap::new();
    let names = naming::server_names(socket_dir).unwrap_or_default();
    for server in names {
        let Some(vm) = server.strip_suffix(".monitor") else {
            continue;
        };
        if let Ok(cands) = naming::candidates(socket_dir, &server)
            && let Some(c) = cands.iter().find(|c| {
                c.alive
                    && mngr_ipc::client::connect_bounded(
                        &c.path,
                        std::time::Instant::now() + std::time::Duration::from_millis(500),
                    )
                    .is_ok()
            })
        {
            found.insert(vm.to_owned(), c.pid);
        }
    }
    found
}

/// Starts a VM: `bash <script> <args...>` with `ACRN_WAKEUP_REASON=<reason>`.
pub fn launch(spec: &LaunchSpec, reason: u32) -> io::Result<Child> {
    let mut cmd = Command::new("bash");
    cmd.arg(&spec.script)
        .args(&spec.args)
        .env("ACRN_WAKEUP_REASON", format!("{reason:#x}"))
        .stdin(Stdio::null());
    mngr_ipc::sys::new_session(&mut cmd);
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_uses_the_one_name_rule() {
        for ok in ["vm1", "Android-2", "a_b", "fifteen-chars-x"] {
            assert!(VmName::is_valid(ok, Profile::F), "{ok}");
        }
        for bad in [
            "",
            "1vm",
            "vm.1",
            "vm 1",
            "vm/1",
            "sixteen-chars-xx",
            "acrnd",
            "sos-lcs",
            "help",
            "v$",
        ] {
            assert!(!VmName::is_valid(bad, Profile::F), "{bad}");
        }
        // A name only a longer profile accepts is registered only in that profile, and a
        // name the device-model monitor accepts is registered too.
        let dir = tempfile::tempdir().expect("dir");
        for n in ["sixteen-chars-xx", "x~y+1"] {
            fs::write(dir.path().join(format!("{n}.sh")), "").expect("write");
        }
        let f = scan_launch_dir(dir.path(), Profile::F).expect("scan");
        assert_eq!(f.keys().collect::<Vec<_>>(), ["x~y+1"]);
        let e = scan_launch_dir(dir.path(), Profile::E).expect("scan");
        assert_eq!(e.keys().collect::<Vec<_>>(), ["sixteen-chars-xx", "x~y+1"]);
    }

    #[test]
    fn scan_takes_exact_sh_scripts_and_splits_args() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        fs::write(d.join("vm1.sh"), "exec true\n").expect("write");
        fs::write(d.join("vm1.args"), "  -a  1\n--b\n").expect("write");
        fs::write(d.join("vm2.sh"), "").expect("write");
        fs::write(d.join("vm3.sh.bak"), "").expect("write");
        fs::write(d.join("vm4.shell"), "").expect("write");
        fs::write(d.join("bad.name.sh"), "").expect("write");
        let vms = scan_launch_dir(d, Profile::F).expect("scan");
        assert_eq!(vms.keys().collect::<Vec<_>>(), vec!["vm1", "vm2"]);
        assert_eq!(vms["vm1"].args, vec!["-a", "1", "--b"]);
        assert!(vms["vm2"].args.is_empty());
        assert!(
            scan_launch_dir(&d.join("missing"), Profile::F)
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn launch_passes_the_reason_and_makes_a_session() {
        let dir = tempfile::tempdir().expect("dir");
        let script = dir.path().join("vm1.sh");
        let out = dir.path().join("out");
        fs::write(
            &script,
            format!(
                "echo \"$ACRN_WAKEUP_REASON $1 $2\" > {}\ncut -d' ' -f6 /proc/$$/stat >> {}\n",
                out.display(),
                out.display()
            ),
        )
        .expect("script");
        let spec = LaunchSpec {
            script,
            args: vec!["a;b".into(), "$(x)".into()],
        };
        let mut child = launch(&spec, 0x200).expect("launch");
        let pid = child.id();
        assert!(child.wait().expect("wait").success());
        let text = fs::read_to_string(&out).expect("out");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("0x200 a;b $(x)"),
            "arguments are not shell-parsed"
        );
        assert_eq!(
            lines.next().map(str::trim),
            Some(pid.to_string().as_str()),
            "own session"
        );
    }
}
