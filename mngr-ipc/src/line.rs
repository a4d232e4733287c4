//! The IOC lifecycle line: how lifecycle frames cross a byte stream, in either of the two
//! ways a Service OS reaches its IOC.
//!
//! * [`LineMode::Cdev`]: the kernel CBC driver's character device (`/dev/cbc-lifecycle`)
//!   carries bare 4-byte service frames. It is not a tty: it is opened as a plain file,
//!   without an exclusive lock (the device models' virtual IOCs open it too). A pty
//!   standing in for it is put in raw mode.
//! * [`LineMode::Uart`]: no kernel CBC driver; the IOC's serial line carries CBC link
//!   frames, and only the lifecycle channel's frames are taken.
//!
//! [`LineCodec`] is the framing for both directions (sos-lcs, the virtual IOC and ioc-sim
//! all use it); [`open_line`] opens a device for it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

use crate::cbc::{
    CbcError, Frame, LinkStream, PRIO_HIGH, SeqCounter, ServiceStream, encode_link, mux,
};

/// How frames cross the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineMode {
    /// Bare 4-byte service frames (the CBC character device, or a pty standing in for it).
    Cdev,
    /// CBC link frames on the lifecycle channel (the IOC's UART).
    Uart,
}

/// Frames to bytes and back for one end of a line.
#[derive(Debug)]
pub struct LineCodec {
    mode: LineMode,
    service: ServiceStream,
    link: LinkStream,
    seq: SeqCounter,
    foreign: u64,
    last_service: [u8; 4],
    last_link: Vec<u8>,
}

impl LineCodec {
    /// A codec for `mode`.
    pub fn new(mode: LineMode) -> Self {
        LineCodec {
            mode,
            service: ServiceStream::new(),
            link: LinkStream::new(),
            seq: SeqCounter::new(),
            foreign: 0,
            last_service: [0; 4],
            last_link: Vec::new(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> LineMode {
        self.mode
    }

    /// The bytes that carry `frame` (a link frame with the next sequence number in uart
    /// mode).
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, CbcError> {
        let service = frame.encode()?;
        match self.mode {
            LineMode::Cdev => Ok(service.to_vec()),
            LineMode::Uart => encode_link(self.seq.next_seq(), mux::LIFECYCLE, PRIO_HIGH, &service),
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        match self.mode {
            LineMode::Cdev => self.service.feed(bytes),
            LineMode::Uart => self.link.feed(bytes),
        }
    }

    /// The next lifecycle frame received, if complete. In uart mode, frames of other
    /// channels and undecodable lifecycle frames are skipped (and counted).
    pub fn next_frame(&mut self) -> Option<Frame> {
        match self.mode {
            LineMode::Cdev => {
                let f = self.service.next_frame()?;
                self.last_service = self.service.last_bytes();
                Some(f)
            }
            LineMode::Uart => loop {
                let f = self.link.next_frame()?;
                match f.lifecycle() {
                    Some(Ok(frame)) => {
                        self.last_service.copy_from_slice(&f.region[..4]);
                        self.last_link = f.to_bytes();
                        return Some(frame);
                    }
                    Some(Err(e)) => {
                        log::debug!("CBC link: lifecycle frame skipped: {e}");
                        self.foreign += 1;
                    }
                    None => {
                        log::debug!("CBC link: frame of channel {} ignored", f.mux);
                        self.foreign += 1;
                    }
                }
            },
        }
    }

    /// The service bytes of the last frame returned by [`LineCodec::next_frame`], exactly as
    /// they crossed the line.
    pub fn last_service_bytes(&self) -> [u8; 4] {
        self.last_service
    }

    /// In uart mode, the whole link frame of the last frame returned (empty in cdev mode).
    pub fn last_link_bytes(&self) -> &[u8] {
        &self.last_link
    }

    /// Bytes dropped while resynchronising.
    pub fn dropped(&self) -> u64 {
        self.service.dropped() + self.link.dropped()
    }

    /// Whole frames skipped: other channels, or undecodable lifecycle frames (uart mode).
    pub fn skipped(&self) -> u64 {
        self.foreign
    }
}

/// An open lifecycle line, non-blocking. In uart mode the tty is held exclusively while it
/// is open, and the exclusivity is cleared when it is dropped (the kernel would keep it for
/// as long as anyone else holds the tty, locking out the next opener).
#[derive(Debug)]
pub struct LineDevice {
    file: File,
    exclusive: bool,
}

impl LineDevice {
    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for LineDevice {
    fn drop(&mut self) {
        if self.exclusive
            && let Err(e) = crate::sys::clear_exclusive(self.file.as_fd())
        {
            log::debug!("Cannot clear the tty's exclusive mode: {e}");
        }
    }
}

impl Read for LineDevice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for LineDevice {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl AsRawFd for LineDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for LineDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Opens a lifecycle line for non-blocking use in an event loop.
///
/// * `Cdev`: `O_RDWR | O_NOCTTY | O_NONBLOCK`, no lock; raw mode if it is a tty.
/// * `Uart`: serialport sets raw 8N1 at `baud`, no flow control, exclusive access.
pub fn open_line(path: &Path, mode: LineMode, baud: u32) -> io::Result<LineDevice> {
    let file = match mode {
        LineMode::Cdev => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc_flags())
                .open(path)?;
            if nix::unistd::isatty(&f).unwrap_or(false) {
                let mut t = tcgetattr(&f).map_err(io::Error::from)?;
                cfmakeraw(&mut t);
                tcsetattr(&f, SetArg::TCSANOW, &t).map_err(io::Error::from)?;
            }
            f
        }
        LineMode::Uart => {
            let port = serialport::new(path.to_string_lossy(), baud)
                .data_bits(serialport::DataBits::Eight)
                .parity(serialport::Parity::None)
                .stop_bits(serialport::StopBits::One)
                .flow_control(serialport::FlowControl::None)
                .timeout(Duration::ZERO)
                .open_native()
                .map_err(io::Error::from)?;
            File::from(crate::sys::into_owned_fd(port))
        }
    };
    let device = LineDevice {
        file,
        exclusive: mode == LineMode::Uart,
    };
    let flags = fcntl(&device.file, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(&device.file, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(device)
}

fn libc_flags() -> i32 {
    (OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uart_codec_round_trips_and_skips_other_channels() {
        let mut tx = LineCodec::new(LineMode::Uart);
        let mut rx = LineCodec::new(LineMode::Uart);
        let a = tx.encode(&Frame::WakeupReason(0x20)).expect("encodes");
        let b = tx.encode(&Frame::WakeupReason(0x200)).expect("encodes");
        assert_eq!(a[1] & 3, 0);
        assert_eq!(b[1] & 3, 1, "sequence advances");
        let other = encode_link(0, mux::SIGNALS, 6, &[9, 9, 9, 9]).expect("encodes");
        rx.feed(&a);
        rx.feed(&other);
        rx.feed(&b);
        assert_eq!(rx.next_frame(), Some(Frame::WakeupReason(0x20)));
        assert_eq!(rx.next_frame(), Some(Frame::WakeupReason(0x200)));
        assert_eq!(rx.next_frame(), None);
        assert_eq!(rx.skipped(), 1);
    }

    #[test]
    fn cdev_codec_is_bare_frames() {
        let mut c = LineCodec::new(LineMode::Cdev);
        assert_eq!(
            c.encode(&Frame::WakeupReason(0x80_0020)).expect("encodes"),
            vec![1, 0x20, 0, 0x80]
        );
        c.feed(&[2, 1, 0]);
        assert_eq!(c.next_frame(), None);
        c.feed(&[0]);
        assert_eq!(
            c.next_frame(),
            Some(Frame::Heartbeat(crate::cbc::Heartbeat::ACTIVE))
        );
    }
}
