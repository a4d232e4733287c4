//! The oracle of the launch-dir scanner (fuzz target `launch_dir`), on real directories
//! built from the input.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use acrnd::vms::{self, LaunchSpec};
use mngr_ipc::Profile;
use mngr_ipc::vocabulary::VmName;

/// What a directory entry of a launch-dir input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    LinkToFile,
    Dangling,
}

/// Entries a launch-dir input makes at most (the rest is ignored): files cost time.
pub const MAX_ENTRIES: usize = 32;

/// The launch-dir scanner on a real directory built from the input.
///
/// Input: entries separated by NUL bytes, alternately a name and a content. A name's first
/// byte picks the kind (`% 4`: file with the content, directory, symlink to a file with
/// the content, dangling symlink) and the suffix (`/ 4 % 4`: none, `.sh`, `.args`, none);
/// its other bytes (no `/`) are the name. At most [`MAX_ENTRIES`] entries. The scan registers exactly the entries named
/// `<valid VM name>.sh` that are files or symlinks, each with the words of its `.args`
/// when that reads as UTF-8, else none. `dir` must be an empty, writable directory.
pub fn launch_dir(data: &[u8], dir: &Path) {
    let launch = dir.join("launch");
    let elsewhere = dir.join("targets");
    fs::create_dir(&launch).expect("create the launch dir");
    fs::create_dir(&elsewhere).expect("create the targets dir");

    let mut made: BTreeMap<Vec<u8>, (Kind, Vec<u8>)> = BTreeMap::new();
    let mut parts = data.split(|&b| b == 0);
    while let Some(raw) = parts.next() {
        if made.len() == MAX_ENTRIES {
            break;
        }
        let content = parts.next().unwrap_or(&[]);
        let Some((&how, stem)) = raw.split_first() else {
            continue;
        };
        let kind = [Kind::File, Kind::Dir, Kind::LinkToFile, Kind::Dangling][usize::from(how % 4)];
        let suffix: &[u8] = [&b""[..], b".sh", b".args", b""][usize::from(how / 4 % 4)];
        let name = [stem, suffix].concat();
        if name.is_empty()
            || name.len() > 200
            || name.contains(&b'/')
            || name == b"."
            || name == b".."
            || made.contains_key(&name)
        {
            continue;
        }
        let path = launch.join(std::ffi::OsStr::from_bytes(&name));
        let target = elsewhere.join(made.len().to_string());
        let result = match kind {
            Kind::File => fs::write(&path, content),
            Kind::Dir => fs::create_dir(&path),
            Kind::LinkToFile => fs::write(&target, content)
                .and_then(|()| std::os::unix::fs::symlink(&target, &path)),
            Kind::Dangling => std::os::unix::fs::symlink(&target, &path),
        };
        result.unwrap_or_else(|e| panic!("create {path:?}: {e}"));
        made.insert(name, (kind, content.to_vec()));
    }

    let mut expected = BTreeMap::new();
    for (name, (kind, _)) in &made {
        let Some(vm) = std::str::from_utf8(name)
            .ok()
            .and_then(|n| n.strip_suffix(".sh"))
        else {
            continue;
        };
        if !VmName::is_valid(vm, Profile::F) || *kind == Kind::Dir {
            continue;
        }
        let args = match made.get(format!("{vm}.args").as_bytes()) {
            Some((Kind::File | Kind::LinkToFile, text)) => std::str::from_utf8(text)
                .map(|t| t.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let script = launch.join(format!("{vm}.sh"));
        expected.insert(vm.to_owned(), LaunchSpec { script, args });
    }
    let scanned = vms::scan_launch_dir(&launch, Profile::F).expect("scan a readable directory");
    assert_eq!(scanned, expected, "made {made:?}");
    assert!(
        vms::scan_launch_dir(&dir.join("missing"), Profile::F).is_ok_and(|v| v.is_empty()),
        "a missing directory registers nothing"
    );
}

/// [`launch_dir`] in a fresh directory under `parent` (created, then removed).
pub fn launch_dir_in(data: &[u8], parent: &Path) -> io::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("launch-fuzz")
        .tempdir_in(parent)?;
    launch_dir(data, dir.path());
    Ok(())
}
