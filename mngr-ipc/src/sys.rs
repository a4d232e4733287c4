//! The only `unsafe` of the suite: taking ownership of file descriptors handed over by
//! APIs that only offer raw ones.
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
