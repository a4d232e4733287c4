//! Owning the processes a test starts.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::wait::{WaitTimeout, wait_until};

/// How long [`Procs::kill`] and the drop of [`Procs`] (for all children
/// together) wait for SIGKILLed processes to be reaped.
pub const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// How many trailing lines of a child's stderr a failing test prints.
const STDERR_TAIL_LINES: usize = 200;

/// Guard owning the child processes of a test.
///
/// Each child is registered under a label, which names it in the methods
/// and in its log files: its stdout and stderr go to `<label>.stdout` and
/// `<label>.stderr` in the log directory, its stdin is `/dev/null`. Each
/// child leads its own process group, so the guard can kill everything it
/// started, grandchildren included (unless they leave the group, e.g. with
/// `setsid`).
///
/// On drop, every child's process group is sent SIGKILL and the children
/// are reaped, waiting at most [`REAP_TIMEOUT`] in total. If the thread is
/// panicking (a failing test), each child's label, pid, fate and the last
/// 200 lines of its stderr are printed to stderr.
///
/// Methods taking a label panic if no child has that label.
///
/// The log directory must outlive the guard: declare the [`TestDir`] before
/// the `Procs`.
///
/// [`TestDir`]: crate::TestDir
#[derive(Debug)]
pub struct Procs {
    log_dir: PathBuf,
    procs: Vec<Proc>,
}

/// One child process.
#[derive(Debug)]
struct Proc {
    label: String,
    /// The child's pid, which is also its process group id.
    pid: Pid,
    child: Child,
}

/// What became of a child when the guard tore its processes down.
#[derive(Debug)]
enum Fate {
    /// It had exited on its own (or by an earlier signal or `kill`).
    Exited(ExitStatus),
    /// It was still running, and was killed and reaped.
    Killed,
    /// It was still running and could not be reaped in time.
    NotReaped,
    /// Waiting for it failed (it was reaped behind the guard's back).
    WaitFailed(io::Error),
}

impl Procs {
    /// Creates a guard writing the children's output into `log_dir`, which
    /// must exist when [`spawn`](Self::spawn) is called.
    #[must_use]
    pub fn new(log_dir: impl AsRef<Path>) -> Self {
        Self {
            log_dir: log_dir.as_ref().to_owned(),
            procs: Vec::new(),
        }
    }

    /// The directory holding the children's output files.
    #[must_use]
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Starts `cmd` under `label` and returns its pid.
    ///
    /// The child's stdin is `/dev/null`, its stdout and stderr are
    /// redirected to `<label>.stdout` and `<label>.stderr` in the log
    /// directory (overriding what `cmd` set), and it is started in a new
    /// process group whose id is its pid.
    ///
    /// # Errors
    ///
    /// - [`io::ErrorKind::InvalidInput`] if `label` is empty, starts with
    ///   `.` or contains `/` or NUL;
    /// - [`io::ErrorKind::AlreadyExists`] if `label` is already taken;
    /// - any error creating the log files or spawning the command.
    pub fn spawn(&mut self, label: &str, mut cmd: Command) -> io::Result<u32> {
        if label.is_empty() || label.starts_with('.') || label.contains(['/', '\0']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid process label {label:?}"),
            ));
        }
        if self.procs.iter().any(|p| p.label == label) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("process label {label:?} already used"),
            ));
        }
        let stdout = File::create(self.log_path(label, "stdout"))?;
        let stderr = File::create(self.log_path(label, "stderr"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("spawning {label} ({}): {e}", cmd.get_program().display()),
                )
            })?;
        let id = child.id();
        let pid = Pid::from_raw(i32::try_from(id).expect("pid fits in pid_t"));
        self.procs.push(Proc {
            label: label.to_owned(),
            pid,
            child,
        });
        Ok(id)
    }

    /// The pid (and process group id) of the child `label`.
    #[must_use]
    pub fn pid(&self, label: &str) -> u32 {
        self.get(label).child.id()
    }

    /// Sends `sig` to the child `label` only (not to its process group).
    ///
    /// # Errors
    ///
    /// [`Errno::ESRCH`] if the child has already been reaped (so that a
    /// recycled pid is never signalled), or the error of `kill(2)`.
    pub fn signal(&mut self, label: &str, sig: Signal) -> nix::Result<()> {
        let proc = self.get_mut(label);
        if proc.try_wait().is_some() {
            return Err(Errno::ESRCH);
        }
        signal::kill(proc.pid, sig)
    }

    /// Whether the child `label` has not exited yet.
    ///
    /// A child that has exited is reaped by this call.
    pub fn is_running(&mut self, label: &str) -> bool {
        self.get_mut(label).try_wait().is_none()
    }

    /// Waits at most `timeout` for the child `label` to exit, reaps it and
    /// returns its exit status (at once if it already exited).
    ///
    /// # Errors
    ///
    /// [`WaitTimeout`] if the child is still running after `timeout`.
    pub fn wait_exit(&mut self, label: &str, timeout: Duration) -> Result<ExitStatus, WaitTimeout> {
        let proc = self.get_mut(label);
        let what = format!("process {label} (pid {}) to exit", proc.pid);
        wait_until(timeout, &what, || proc.try_wait())
    }

    /// Sends SIGKILL to the process group of the child `label` and waits at
    /// most [`REAP_TIMEOUT`] to reap the child.
    ///
    /// Grandchildren in the group are killed too, but not waited for: their
    /// parent (or init) reaps them. Killing an already reaped child is not
    /// an error: its leftover group members are killed and the status it
    /// exited with is returned.
    ///
    /// # Errors
    ///
    /// [`WaitTimeout`] if the child could not be reaped in time.
    ///
    /// # Panics
    ///
    /// If the group cannot be signalled for another reason than it having
    /// no members left.
    pub fn kill(&mut self, label: &str) -> Result<ExitStatus, WaitTimeout> {
        let pid = self.get(label).pid;
        if let Err(e) = kill_group(pid) {
            panic!("cannot SIGKILL process group of {label} (pgid {pid}): {e}");
        }
        self.wait_exit(label, REAP_TIMEOUT)
    }

    /// Everything the child `label` has written to stdout so far.
    ///
    /// Invalid UTF-8 is replaced; a missing file reads as empty.
    #[must_use]
    pub fn stdout(&self, label: &str) -> String {
        self.read_log(label, "stdout")
    }

    /// Everything the child `label` has written to stderr so far.
    ///
    /// Invalid UTF-8 is replaced; a missing file reads as empty.
    #[must_use]
    pub fn stderr(&self, label: &str) -> String {
        self.read_log(label, "stderr")
    }

    fn get(&self, label: &str) -> &Proc {
        match self.procs.iter().position(|p| p.label == label) {
            Some(i) => &self.procs[i],
            None => self.unknown(label),
        }
    }

    fn get_mut(&mut self, label: &str) -> &mut Proc {
        match self.procs.iter().position(|p| p.label == label) {
            Some(i) => &mut self.procs[i],
            None => self.unknown(label),
        }
    }

    fn unknown(&self, label: &str) -> ! {
        let known: Vec<&str> = self.procs.iter().map(|p| p.label.as_str()).collect();
        panic!("no process labelled {label:?} (known: {known:?})")
    }

    fn log_path(&self, label: &str, stream: &str) -> PathBuf {
        self.log_dir.join(format!("{label}.{stream}"))
    }

    fn read_log(&self, label: &str, stream: &str) -> String {
        self.get(label); // Reject unknown labels.
        match fs::read(self.log_path(label, stream)) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => format!("<cannot read {label}.{stream}: {e}>"),
        }
    }

    /// Kills every child's process group and reaps the children, waiting at
    /// most [`REAP_TIMEOUT`] in total. Returns each child's fate, in spawn
    /// order.
    fn teardown(&mut self) -> Vec<Fate> {
        // No panics here: this runs in drop, possibly while unwinding.
        let exited: Vec<io::Result<Option<ExitStatus>>> =
            self.procs.iter_mut().map(|p| p.child.try_wait()).collect();
        // Groups of exited children too: they may have left grandchildren.
        for proc in &self.procs {
            if let Err(e) = kill_group(proc.pid) {
                eprintln!(
                    "cannot SIGKILL process group of {} (pgid {}): {e}",
                    proc.label, proc.pid
                );
            }
        }
        let deadline = Instant::now() + REAP_TIMEOUT;
        self.procs
            .iter_mut()
            .zip(exited)
            .map(|(proc, exited)| match exited {
                Ok(Some(status)) => Fate::Exited(status),
                Err(e) => Fate::WaitFailed(e),
                Ok(None) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match wait_until(left, "reaping", || proc.child.try_wait().transpose()) {
                        Ok(Ok(_)) => Fate::Killed,
                        Ok(Err(e)) => Fate::WaitFailed(e),
                        Err(_) => Fate::NotReaped,
                    }
                }
            })
            .collect()
    }

    /// Describes each child's fate and the tail of its stderr.
    fn report(&self, fates: &[Fate]) -> String {
        let mut out = String::new();
        for (proc, fate) in self.procs.iter().zip(fates) {
            let fate = match fate {
                Fate::Exited(status) => format!("exited ({status})"),
                Fate::Killed => "still running at end of test; killed".to_owned(),
                Fate::NotReaped => format!(
                    "still running at end of test; not reaped {REAP_TIMEOUT:?} after SIGKILL"
                ),
                Fate::WaitFailed(e) => format!("unknown (waiting failed: {e})"),
            };
            let stderr = self.read_log(&proc.label, "stderr");
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
            let _ = writeln!(
                out,
                "---- process {} (pid {}): {fate}; stderr ({}, last {} of {} lines):",
                proc.label,
                proc.pid,
                self.log_path(&proc.label, "stderr").display(),
                tail.len(),
                lines.len(),
            );
            for line in tail {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        let fates = self.teardown();
        if thread::panicking() {
            eprint!("{}", self.report(&fates));
        } else {
            for (proc, fate) in self.procs.iter().zip(&fates) {
                match fate {
                    Fate::NotReaped => eprintln!(
                        "process {} (pid {}) not reaped {REAP_TIMEOUT:?} after SIGKILL",
                        proc.label, proc.pid
                    ),
                    Fate::WaitFailed(e) => {
                        eprintln!("waiting for {} (pid {}): {e}", proc.label, proc.pid);
                    }
                    Fate::Exited(_) | Fate::Killed => {}
                }
            }
        }
    }
}

impl Proc {
    /// The child's exit status if it has exited (reaping it), else `None`.
    ///
    /// # Panics
    ///
    /// If waiting fails, which means the child was reaped behind our back.
    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for {} (pid {}): {e}", self.label, self.pid))
    }
}

/// Sends SIGKILL to process group `pgid`; a group with no members left is
/// not an error.
fn kill_group(pgid: Pid) -> nix::Result<()> {
    match signal::killpg(pgid, Signal::SIGKILL) {
        Err(Errno::ESRCH) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use nix::unistd::getpgid;

    use super::*;
    use crate::TestDir;
    use crate::wait::wait_for;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    fn sleeper() -> Command {
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        cmd
    }

    fn to_pid(id: u32) -> Pid {
        Pid::from_raw(i32::try_from(id).unwrap())
    }

    /// Whether `pid` no longer runs: it does not exist, or is a zombie (an
    /// orphan whose reaping is up to init, which may not be a real init in
    /// a container).
    fn is_gone(pid: Pid) -> bool {
        match signal::kill(pid, None) {
            Err(Errno::ESRCH) => true,
            _ => fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            }),
        }
    }

    #[test]
    fn drop_kills_and_reaps_child() {
        let dir = TestDir::new("procs-drop");
        let mut procs = Procs::new(dir.path());
        let pid = to_pid(procs.spawn("sleeper", sleeper()).unwrap());
        assert!(procs.is_running("sleeper"));
        assert_eq!(getpgid(Some(pid)), Ok(pid), "child leads its own group");
        drop(procs);
        // Reaping in drop is synchronous, so the pid is gone at once.
        wait_for(TIMEOUT, "sleeper pid to vanish", || {
            signal::kill(pid, None) == Err(Errno::ESRCH)
        })
        .unwrap();
    }

    #[test]
    fn drop_kills_grandchildren_in_group() {
        let dir = TestDir::new("procs-group");
        let mut procs = Procs::new(dir.path());
        let pid = to_pid(
            procs
                .spawn("parent", sh("sleep 1000 & echo $!; wait"))
                .unwrap(),
        );
        let grandchild = wait_until(TIMEOUT, "grandchild pid on stdout", || {
            procs.stdout("parent").trim().parse::<u32>().ok()
        })
        .map(to_pid)
        .unwrap();
        assert_ne!(grandchild, pid);
        assert_eq!(getpgid(Some(grandchild)), Ok(pid));
        drop(procs);
        assert_eq!(signal::kill(pid, None), Err(Errno::ESRCH));
        wait_for(TIMEOUT, "grandchild to die", || is_gone(grandchild)).unwrap();
    }

    #[test]
    fn kill_reaches_group_after_leader_exited() {
        let dir = TestDir::new("procs-orphan");
        let mut procs = Procs::new(dir.path());
        let pid = procs.spawn("leader", sh("sleep 1000 & echo $!")).unwrap();
        let status = procs.wait_exit("leader", TIMEOUT).unwrap();
        assert_eq!(status.code(), Some(0));
        let orphan = to_pid(procs.stdout("leader").trim().parse().unwrap());
        assert_eq!(getpgid(Some(orphan)), Ok(to_pid(pid)));
        assert!(!is_gone(orphan));
        // The leader's status is kept; its leftover group is killed.
        assert_eq!(procs.kill("leader").unwrap().code(), Some(0));
        wait_for(TIMEOUT, "orphan to die", || is_gone(orphan)).unwrap();
    }

    #[test]
    fn captures_output_and_exit_status() {
        let dir = TestDir::new("procs-output");
        let mut procs = Procs::new(dir.path());
        procs
            .spawn("talker", sh("echo out; echo hi >&2; exit 3"))
            .unwrap();
        let status = procs.wait_exit("talker", TIMEOUT).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(!procs.is_running("talker"));
        assert_eq!(procs.stdout("talker"), "out\n");
        assert_eq!(procs.stderr("talker"), "hi\n");
        assert_eq!(
            fs::read_to_string(dir.join("talker.stderr")).unwrap(),
            "hi\n"
        );
        // Waiting again returns the same status at once.
        assert_eq!(procs.wait_exit("talker", Duration::ZERO), Ok(status));
    }

    #[test]
    fn stdin_is_null() {
        let dir = TestDir::new("procs-stdin");
        let mut procs = Procs::new(dir.path());
        procs.spawn("cat", Command::new("cat")).unwrap();
        assert!(procs.wait_exit("cat", TIMEOUT).unwrap().success());
    }

    #[test]
    fn signal_and_kill() {
        let dir = TestDir::new("procs-signal");
        let mut procs = Procs::new(dir.path());
        let pid = procs.spawn("a", sleeper()).unwrap();
        procs.spawn("b", sleeper()).unwrap();
        assert_eq!(procs.pid("a"), pid);

        let err = procs.wait_exit("a", Duration::from_millis(50)).unwrap_err();
        assert!(err.what().contains(&format!("pid {pid}")), "{err}");
        assert!(procs.is_running("a"));

        procs.signal("a", Signal::SIGTERM).unwrap();
        let status = procs.wait_exit("a", TIMEOUT).unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
        // A reaped child is never signalled: its pid may be reused.
        assert_eq!(procs.signal("a", Signal::SIGTERM), Err(Errno::ESRCH));

        let status = procs.kill("b").unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        assert!(!procs.is_running("b"));
    }

    #[test]
    fn rejects_bad_and_duplicate_labels() {
        let dir = TestDir::new("procs-labels");
        let mut procs = Procs::new(dir.path());
        for label in ["", "a/b", ".hidden", "..", "nul\0"] {
            let err = procs.spawn(label, sleeper()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{label:?}");
        }
        procs.spawn("x", sh("exit 0")).unwrap();
        let err = procs.spawn("x", sleeper()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        // The failed spawns started nothing.
        assert_eq!(procs.procs.len(), 1);
    }

    #[test]
    fn spawn_failure_registers_nothing() {
        let dir = TestDir::new("procs-enoent");
        let mut procs = Procs::new(dir.path());
        let err = procs
            .spawn("ghost", Command::new("/nonexistent/acrn-ghost"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("acrn-ghost"), "{err}");
        assert!(procs.procs.is_empty());
        // The label is still free.
        procs.spawn("ghost", sh("exit 0")).unwrap();
    }

    #[test]
    #[should_panic(expected = "no process labelled \"nope\"")]
    fn unknown_label_panics() {
        // No TestDir: it would be kept, as the test panics.
        let procs = Procs::new("/nonexistent");
        let _ = procs.stderr("nope");
    }

    #[test]
    fn report_shows_fates_and_stderr_tail() {
        let dir = TestDir::new("procs-report");
        let mut procs = Procs::new(dir.path());
        procs
            .spawn(
                "crasher",
                sh("for i in $(seq 1 250); do echo line$i >&2; done; exit 2"),
            )
            .unwrap();
        procs.wait_exit("crasher", TIMEOUT).unwrap();
        let pid = procs
            .spawn("daemon", sh("echo started >&2; exec sleep 1000"))
            .unwrap();
        wait_for(TIMEOUT, "daemon to start", || {
            procs.stderr("daemon") == "started\n"
        })
        .unwrap();

        let fates = procs.teardown();
        let report = procs.report(&fates);
        assert!(
            report.contains("process crasher (pid ") && report.contains("exit status: 2"),
            "{report}"
        );
        assert!(report.contains("last 200 of 250 lines"), "{report}");
        assert!(
            !report.contains("line50\n") && report.contains("\nline51\n"),
            "{report}"
        );
        assert!(report.contains("line250\n"), "{report}");
        assert!(
            report.contains(&format!(
                "process daemon (pid {pid}): still running at end of test; killed"
            )),
            "{report}"
        );
        assert!(report.ends_with("started\n"), "{report}");
        assert!(!procs.is_running("daemon"));
    }

    #[test]
    fn drop_while_panicking_still_kills() {
        let dir = TestDir::new("procs-panic");
        let log_dir = dir.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        let result = thread::spawn(move || {
            let mut procs = Procs::new(log_dir);
            tx.send(procs.spawn("sleeper", sleeper()).unwrap()).unwrap();
            panic!("simulated test failure");
        })
        .join();
        assert!(result.is_err());
        let pid = to_pid(rx.recv().unwrap());
        assert_eq!(signal::kill(pid, None), Err(Errno::ESRCH));
    }
}
