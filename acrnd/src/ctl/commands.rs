//! What acrnctl does: requests to acrnd (paging through the lists, reset's wait for the
//! stop), requests to a VM's device-model monitor, and the launch scripts it adds and
//! deletes. Every wait is bounded by the session's timeout; every failure is an
//! [`Outcome`] whose text [`render`] words.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mngr_ipc::Profile;
use mngr_ipc::client::{Client, ClientError};
use mngr_ipc::msg::{AckPayload, Body, Request, Status, TimerEntry, VmEntry, err, vm_state};
use mngr_ipc::naming::candidates;
use mngr_ipc::vocabulary::{ACRND, LCS_NAMES, VmName, monitor_name};

use super::{Outcome, render, stop_body};

/// How often reset asks whether the VM has stopped.
const RESET_POLL: Duration = Duration::from_millis(50);

/// acrnctl's connection to the suite: the socket directory, the ABI profile and the bound
/// of every request and wait.
#[derive(Debug)]
pub struct Session {
    client: Client,
    socket_dir: PathBuf,
    profile: Profile,
    timeout: Duration,
}

impl Session {
    /// A session with the servers in `socket_dir`, speaking `profile`; every request and
    /// wait is bounded by `timeout`.
    pub fn new(socket_dir: &Path, profile: Profile, timeout: Duration) -> Self {
        Session {
            client: Client::new(socket_dir, profile),
            socket_dir: socket_dir.to_owned(),
            profile,
            timeout,
        }
    }

    /// Sends `body` to acrnd. Not reachable (no socket, refused, no answer in time) is
    /// [`Outcome::Unreachable`]; any other failure [`Outcome::Failed`].
    pub fn ask(&self, body: Body) -> Result<AckPayload, Outcome> {
        match self.client.send(ACRND, &Request::now(body), self.timeout) {
            Ok(ack) => Ok(ack.payload),
            Err(
                e @ (ClientError::NotFound { .. }
                | ClientError::Connect { .. }
                | ClientError::Timeout { .. }),
            ) => Err(Outcome::Unreachable(format!(
                "{ACRND} is not reachable: {}",
                mngr_ipc::error_chain(&e)
            ))),
            Err(e) => Err(Outcome::Failed(mngr_ipc::error_chain(&e))),
        }
    }

    /// Every entry of a paged list: asks `request(start)` from index 0 until acrnd has
    /// given `total` entries or an empty page. `page` takes a page apart into its entries
    /// and total, or gives the answer back if it is not a good page.
    fn all_pages<T>(
        &self,
        request: impl Fn(u32) -> Body,
        page: impl Fn(AckPayload) -> Result<(Vec<T>, u32), AckPayload>,
    ) -> Result<Vec<T>, Outcome> {
        let mut all = Vec::new();
        loop {
            let start = u32::try_from(all.len()).unwrap_or(u32::MAX);
            match page(self.ask(request(start))?) {
                Ok((entries, total)) => {
                    let n = entries.len();
                    all.extend(entries);
                    if n == 0 || all.len() >= usize::try_from(total).unwrap_or(usize::MAX) {
                        return Ok(all);
                    }
                }
                Err(other) => {
                    return Err(Outcome::Failed(format!(
                        "{ACRND} refused the listing: {}",
                        render::answer(&other)
                    )));
                }
            }
        }
    }

    /// Every VM acrnd knows (CTL_LIST, page by page).
    pub fn list(&self) -> Result<Vec<VmEntry>, Outcome> {
        self.all_pages(
            |start| Body::CtlList { start },
            |ack| match ack {
                AckPayload::VmPage(p) if p.err == err::OK => Ok((p.entries, p.total)),
                other => Err(other),
            },
        )
    }

    /// Every pending RTC wake-up (CTL_TIMERS, page by page).
    pub fn timers(&self) -> Result<Vec<TimerEntry>, Outcome> {
        self.all_pages(
            |start| Body::CtlTimers { start },
            |ack| match ack {
                AckPayload::TimerPage(p) if p.err == err::OK => Ok((p.entries, p.total)),
                other => Err(other),
            },
        )
    }

    /// acrnd's status (CTL_STATUS).
    pub fn status(&self) -> Result<Status, Outcome> {
        match self.ask(Body::CtlStatus)? {
            AckPayload::Status(s) => Ok(s),
            other => Err(Outcome::Failed(format!(
                "{ACRND} did not give its status: {}",
                render::answer(&other)
            ))),
        }
    }

    /// Whether a live process serves one of the lifecycle service's names here.
    pub fn lcs_socket_alive(&self) -> bool {
        LCS_NAMES.iter().any(|n| self.serves(n))
    }

    /// Whether a live process serves `name` in the socket directory.
    fn serves(&self, name: &str) -> bool {
        candidates(&self.socket_dir, name).is_ok_and(|c| c.iter().any(|c| c.alive))
    }

    /// Operation `what` (start, stop, ...) on `vm` through acrnd, `body` the request.
    pub fn op(&self, what: &str, vm: &str, body: Body) -> Outcome {
        match self.ask(body) {
            Ok(AckPayload::Err(0)) => Outcome::Ok(format!("{vm}: {what} done")),
            Ok(other) => {
                Outcome::Failed(format!("{vm}: {what} failed: {}", render::answer(&other)))
            }
            Err(o) => o,
        }
    }

    /// Stops `vm` (asking the guest), waits until acrnd lists it stopped, starts it again.
    pub fn reset(&self, vm: &str) -> Outcome {
        let stopped = self.op("stop", vm, stop_body(vm, false));
        if !matches!(stopped, Outcome::Ok(_)) {
            return stopped;
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.list() {
                Ok(vms)
                    if vms
                        .iter()
                        .any(|v| v.name == vm && v.state == vm_state::STOPPED) =>
                {
                    break;
                }
                Ok(_) if Instant::now() >= deadline => {
                    return Outcome::Failed(format!(
                        "{vm} did not stop within {} ms",
                        self.timeout.as_millis()
                    ));
                }
                Ok(_) => std::thread::sleep(RESET_POLL),
                Err(o) => return o,
            }
        }
        self.op(
            "start",
            vm,
            Body::CtlStart {
                name: vm.to_owned(),
            },
        )
    }

    /// Asks `vm`'s device-model monitor to re-open a virtio-blk image; `devargs` is
    /// `SLOT,PATH`.
    pub fn blkrescan(&self, vm: &str, devargs: &str) -> Outcome {
        let Some((slot, path)) = devargs.split_once(',') else {
            return Outcome::Usage("devargs must be SLOT,PATH".into());
        };
        if slot.parse::<u32>().is_err() || path.is_empty() {
            return Outcome::Usage("devargs must be SLOT,PATH with a numeric slot".into());
        }
        let body = Body::DmBlkrescan {
            devargs: devargs.to_owned(),
        };
        match self
            .client
            .send(&monitor_name(vm), &Request::now(body), self.timeout)
        {
            Ok(ack) if ack.err() == Some(0) => Outcome::Ok(format!("{vm}: rescan done")),
            Ok(ack) => Outcome::Failed(format!(
                "{vm}: rescan failed: {}",
                render::describe(ack.err().unwrap_or(err::FAILED))
            )),
            Err(e) => Outcome::Unreachable(format!(
                "{vm}'s device model is not reachable: {}",
                mngr_ipc::error_chain(&e)
            )),
        }
    }

    /// Removes the launch script of `vm` (and its `.args`) from `launch_dir`, unless the
    /// VM runs: as acrnd lists it, or, without acrnd, as a live device-model socket tells.
    pub fn del(&self, launch_dir: &Path, vm: &str) -> Outcome {
        if let Err(e) = VmName::new(vm, self.profile) {
            return Outcome::Usage(e.to_string());
        }
        let script = launch_dir.join(format!("{vm}.sh"));
        if !script.exists() {
            return Outcome::Failed(format!("No launch script for {vm}"));
        }
        let running = match self.list() {
            Ok(vms) => vms
                .iter()
                .any(|v| v.name == vm && v.state != vm_state::STOPPED),
            Err(_) => self.serves(&monitor_name(vm)),
        };
        if running {
            return Outcome::Failed(format!("{vm} is running: stop it first"));
        }
        let _ = fs::remove_file(launch_dir.join(format!("{vm}.args")));
        match fs::remove_file(&script) {
            Ok(()) => Outcome::Ok(format!("{vm} deleted")),
            Err(e) => Outcome::Failed(format!("Cannot remove {}: {e}", script.display())),
        }
    }
}

/// The VM name of a launch script: the last word of its device-model line.
pub fn name_from_script(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| {
            l.split_whitespace()
                .take(2)
                .any(|w| w.ends_with("acrn-dm") || w.ends_with("acrn-dm-sim"))
        })
        .find_map(|l| l.split_whitespace().next_back().map(str::to_owned))
}

/// Installs `script` into `launch_dir` as `<vm>.sh`, with `args` in `<vm>.args` if any.
/// The VM is `name`, else the one the script launches ([`name_from_script`]); it must pass
/// the suite's VM-name rule for `profile` ([`VmName`]) and not be installed already.
pub fn add(
    launch_dir: &Path,
    script: &Path,
    args: &[String],
    name: Option<String>,
    profile: Profile,
) -> Outcome {
    let text = match fs::read_to_string(script) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("Cannot read {}: {e}", script.display())),
    };
    let Some(vm) = name.or_else(|| name_from_script(&text)) else {
        return Outcome::Usage("Cannot read the VM name from the script; give --name".into());
    };
    let vm = match VmName::new(&vm, profile) {
        Ok(vm) => vm,
        Err(e) => return Outcome::Usage(e.to_string()),
    };
    let dest = launch_dir.join(format!("{vm}.sh"));
    if dest.exists() {
        return Outcome::Failed(format!("VM {vm} exists already"));
    }
    if let Err(e) = fs::create_dir_all(launch_dir) {
        return Outcome::Failed(format!("Cannot create {}: {e}", launch_dir.display()));
    }
    if let Err(e) = fs::copy(script, &dest) {
        return Outcome::Failed(format!("Cannot install the script: {e}"));
    }
    if !args.is_empty()
        && let Err(e) = fs::write(
            launch_dir.join(format!("{vm}.args")),
            format!("{}\n", args.join(" ")),
        )
    {
        let _ = fs::remove_file(&dest);
        return Outcome::Failed(format!("Cannot write the arguments: {e}"));
    }
    Outcome::Ok(format!("{vm} added"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names() {
        let s = "#!/bin/bash\n# comment acrn-dm x\nexec acrn-dm -A -m 2G vm1\n";
        assert_eq!(name_from_script(s).as_deref(), Some("vm1"));
        let s = "exec /usr/bin/acrn-dm-sim --socket-dir /tmp/x android # tail\n";
        assert_eq!(name_from_script(s).as_deref(), Some("android"));
        assert_eq!(name_from_script("echo hi\n"), None);
    }

    /// A launch dir (not created yet) and a script launching `vm`, in a temp dir.
    fn setup(vm: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let script = tmp.path().join("new.sh");
        fs::write(&script, format!("#!/bin/sh\nexec acrn-dm -A {vm}\n")).expect("script");
        let launch = tmp.path().join("launch");
        (tmp, launch, script)
    }

    #[test]
    fn add_installs_the_script_and_its_arguments() {
        let (_tmp, launch, script) = setup("vm1");
        let args = ["-x".to_owned(), "1".to_owned()];
        assert_eq!(
            add(&launch, &script, &args, None, Profile::F),
            Outcome::Ok("vm1 added".into())
        );
        assert!(launch.join("vm1.sh").is_file());
        let saved = fs::read_to_string(launch.join("vm1.args")).expect("args");
        assert_eq!(saved, "-x 1\n");
        assert!(matches!(
            add(&launch, &script, &[], None, Profile::F),
            Outcome::Failed(t) if t.contains("exists already")
        ));
    }

    #[test]
    fn add_checks_the_name_with_the_suite_rule() {
        let (_tmp, launch, script) = setup("vm1");
        for bad in ["9bad", "vm.1", "acrnd", "sos-lcs", "a/b", ""] {
            let expected = VmName::new(bad, Profile::F).expect_err(bad).to_string();
            assert_eq!(
                add(&launch, &script, &[], Some(bad.to_owned()), Profile::F),
                Outcome::Usage(expected),
                "{bad}"
            );
        }
        assert!(!launch.exists(), "nothing installed");
        // From the script too: the name read from it follows the same rule.
        let (_tmp2, launch2, script2) = setup("1vm");
        assert!(matches!(
            add(&launch2, &script2, &[], None, Profile::F),
            Outcome::Usage(t) if t.contains("does not start with a letter")
        ));
    }

    #[test]
    fn add_allows_the_names_length_the_profile_allows() {
        let (_tmp, launch, script) = setup("vm1");
        let long = "a-name-of-20-chars-x".to_owned();
        assert!(matches!(
            add(&launch, &script, &[], Some(long.clone()), Profile::F),
            Outcome::Usage(t) if t.contains("at most 15")
        ));
        assert_eq!(
            add(&launch, &script, &[], Some(long.clone()), Profile::E),
            Outcome::Ok(format!("{long} added"))
        );
    }

    #[test]
    fn del_checks_the_name_before_anything_else() {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let session = Session::new(tmp.path(), Profile::F, Duration::from_millis(100));
        let expected = VmName::new("vm.1", Profile::F)
            .expect_err("bad")
            .to_string();
        assert_eq!(session.del(tmp.path(), "vm.1"), Outcome::Usage(expected));
        assert!(matches!(
            session.del(tmp.path(), "vm1"),
            Outcome::Failed(t) if t == "No launch script for vm1"
        ));
    }
}
