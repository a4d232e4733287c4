//! The only `unsafe` of the suite: taking ownership of file descriptors handed over by
//! APIs that only offer raw ones (or borrowing them for a call).
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

/// Takes ownership of the descriptor of `owner` (e.g. a `serialport::TTYPort` after it
/// configured the line), so it can be used as a `File` and closed exactly once.
pub fn into_owned_fd(owner: impl IntoRawFd) -> OwnedFd {
    let raw = owner.into_raw_fd();
    // SAFETY: `IntoRawFd::into_raw_fd` transfers ownership of an open descriptor to the
    // caller and the owner no longer closes it, so `raw` is open and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Sets `FD_CLOEXEC` on the descriptor of `owner`, for APIs that open descriptors without
/// it and offer only [`AsRawFd`](std::os::fd::AsRawFd) (serialport's pty pair), so that
/// processes started later do not inherit them.
pub fn set_cloexec(owner: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: `owner` is borrowed for the whole call, so its descriptor stays open while the
    // borrowed descriptor, which does not outlive this function, is in use.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(owner.as_raw_fd()) };
    let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD)?);
    fcntl(fd, FcntlArg::F_SETFD(flags | FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Makes a child started by `cmd` the leader of a new session (and process group), so it
/// survives its parent and receives no signals meant for the parent's terminal or group.
pub fn new_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec; it calls only setsid(2),
    // which is async-signal-safe, and touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

/// A descriptor that becomes readable when process `pid` exits (`pidfd_open(2)`, Linux
/// 5.3+): lets an event loop watch processes that are not its children, without polling.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = nix::libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new descriptor or -1;
    // no memory is shared with the kernel.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = std::os::fd::RawFd::try_from(fd)
        .map_err(|_| std::io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn pidfd_becomes_readable_when_the_process_exits() {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let fd = pidfd_open(child.id()).expect("pidfd");
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::ZERO).expect("poll"), 0, "alive");
        child.kill().expect("kill");
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        assert_eq!(
            poll(&mut fds, PollTimeout::from(5000u16)).expect("poll"),
            1,
            "exited"
        );
        child.wait().expect("reaped");
        assert!(pidfd_open(u32::MAX).is_err());
    }
}

mod ioctls {
    nix::ioctl_none_bad!(
        /// `TIOCNXCL`: leave exclusive mode.
        tiocnxcl,
        nix::libc::TIOCNXCL
    );
}
use ioctls::tiocnxcl;

/// Clears a tty's exclusive mode (`TIOCNXCL`), which outlives the descriptor that set it
/// for as long as anyone else holds the tty open.
pub fn clear_exclusive(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCNXCL takes no argument; `fd` is a valid open descriptor for the duration
    // of the call (it is borrowed).
    unsafe { tiocnxcl(fd.as_raw_fd()) }
        .map(|_| ())
        .map_err(std::io::Error::from)
}
