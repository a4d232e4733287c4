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
//!
//! [`LineEndpoint`] is the SoC's end of the line as a subscriber of the runtime holds it:
//! it owns the open device and its registration, reads to `WouldBlock` into the codec,
//! queues output in a bounded queue written as the line takes it (`WRITABLE` registered
//! only while output waits), and when the device is missing or lost, reopens it on a
//! timer of the subscriber's own ([`LineEndpoint::new`] takes its key) with a doubling
//! [`Backoff`]. It logs nothing itself: every operation tells its caller what happened
//! ([`OpenError`], [`Lost`], [`QueueError`]), and the caller logs in its own words.
//!
//! ```text
//!  open(ops) --Ok--> open: on_event(ev, ops) -> Ok | Err(Lost) --+
//!     |                    next_frame() -> frames                 |
//!     |                    queue(frame), flush(ops)               | (closed, reopen armed)
//!     +--Err(OpenError): reopen armed after backoff.next_delay() <+
//!  subscriber's on_timer(reopen key) -> open(ops)      close(ops): closed, nothing armed
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use thiserror::Error;

use crate::runtime::{Ops, Subscriber};

use crate::cbc::{
    CbcError, Frame, LinkStream, PRIO_HIGH, SERVICE_FRAME_LEN, SeqCounter, ServiceStream,
    encode_link, mux,
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

/// Which line to open and how: what [`open_line`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineSpec {
    /// Device path (`/dev/cbc-lifecycle`, `/dev/ttyS1`, or a pty standing in for either).
    pub path: PathBuf,
    /// Framing.
    pub mode: LineMode,
    /// Baud rate (uart mode; ignored in cdev mode).
    pub baud: u32,
}

/// The pauses between attempts to open a line: `first`, then doubled after each attempt up
/// to `max`; back to `first` once the line opened or was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// The first pause of the suite's programs.
    pub const FIRST: Duration = Duration::from_millis(50);

    /// Pauses of `first`, `2 first`, `4 first`, ... capped at `max` (the first pause is
    /// `first` even if `max` is smaller).
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// Takes the pause before the next attempt; the one after it is twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = d.saturating_mul(2).min(self.max);
        d
    }

    /// The pause [`Backoff::next_delay`] returns next.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Starts over at `first`.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Which step of opening a line failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenStep {
    /// Opening the device ([`open_line`]).
    Open,
    /// Registering it with the event loop.
    Watch,
}

/// An attempt to open the line failed; the endpoint armed its reopen timer.
#[derive(Debug, Error)]
#[error("Cannot {} the line", match .step { OpenStep::Open => "open", OpenStep::Watch => "watch" })]
pub struct OpenError {
    /// The step that failed.
    pub step: OpenStep,
    /// Why.
    #[source]
    pub source: io::Error,
    /// Failed attempts in a row, this one included (1: the first since the line was last
    /// open, the one worth a warning).
    pub failures: u32,
    /// The pause before the next attempt; `None` if the reopen timer was armed already.
    pub retry_in: Option<Duration>,
}

/// The line failed (end of file, an I/O error): the endpoint closed it, dropped its queued
/// output and armed its reopen timer.
#[derive(Debug, Error)]
#[error("Line lost")]
pub struct Lost {
    /// What happened (`UnexpectedEof` "end of file" for an end of file).
    #[source]
    pub cause: io::Error,
    /// The pause before the first attempt to reopen; `None` if the reopen timer was armed
    /// already.
    pub retry_in: Option<Duration>,
}

/// A frame not queued.
#[derive(Debug, Error)]
pub enum QueueError {
    /// The line is not open.
    #[error("The line is not open")]
    Down,
    /// The frame would take the queue over its bound (the line does not drain).
    #[error("The line's write queue is full")]
    Full,
    /// The frame cannot be encoded.
    #[error("Cannot encode the frame")]
    Encode(#[from] CbcError),
}

/// Bytes read from the line per `read(2)`.
const READ_CHUNK: usize = 512;

/// The open device and its registration.
#[derive(Debug)]
struct Opened {
    device: LineDevice,
    token: Token,
    writable: bool,
}

/// One end of an IOC lifecycle line as a subscriber of the runtime holds it: the device, its
/// framing, its bounded write queue and its reopen policy. `K` is the subscriber's timer key
/// type ([`Subscriber::Timer`]); the endpoint arms and cancels the one key it was given, and
/// the subscriber calls [`LineEndpoint::open`] when that timer is due.
///
/// Every method that touches the loop takes the subscriber's [`Ops`], so any subscriber can
/// hold an endpoint (sos-lcs's core, a device-model simulator's native channel).
#[derive(Debug)]
pub struct LineEndpoint<K> {
    spec: LineSpec,
    codec: LineCodec,
    open: Option<Opened>,
    out: VecDeque<u8>,
    out_cap: usize,
    backoff: Backoff,
    reopen: K,
    failures: u32,
}

impl<K: Clone + PartialEq + fmt::Debug + 'static> LineEndpoint<K> {
    /// A closed endpoint for `spec` that reopens on timer `reopen` with `backoff` and holds
    /// at most `out_cap` bytes of output. Nothing is opened until [`LineEndpoint::open`].
    pub fn new(spec: LineSpec, reopen: K, backoff: Backoff, out_cap: usize) -> Self {
        LineEndpoint {
            codec: LineCodec::new(spec.mode),
            spec,
            open: None,
            out: VecDeque::new(),
            out_cap,
            backoff,
            reopen,
            failures: 0,
        }
    }

    /// What it opens.
    pub fn spec(&self) -> &LineSpec {
        &self.spec
    }

    /// Whether the device is open (and registered).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The token of the open device.
    pub fn token(&self) -> Option<Token> {
        self.open.as_ref().map(|o| o.token)
    }

    /// Whether `event` is the open device's.
    pub fn owns(&self, event: &Event) -> bool {
        self.token() == Some(event.token())
    }

    /// The framing (e.g. for [`LineCodec::last_service_bytes`] or the drop counters).
    pub fn codec(&self) -> &LineCodec {
        &self.codec
    }

    /// Bytes of output waiting for the line.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// The reopen policy, as it stands.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Makes the next reopen pause the first one again.
    pub fn reset_backoff(&mut self) {
        self.backoff.reset();
    }

    /// Opens and registers the device (readable) unless it is open; a pending reopen is
    /// cancelled. On success the codec starts afresh and the back-off is reset; on failure
    /// the reopen timer is armed after the next back-off pause.
    pub fn open<C, S>(&mut self, ops: &mut Ops<'_, C, S>) -> Result<(), OpenError>
    where
        S: Subscriber<C, Timer = K>,
    {
        if self.open.is_some() {
            return Ok(());
        }
        ops.cancel(&self.reopen);
        let (step, source) = match open_line(&self.spec.path, self.spec.mode, self.spec.baud) {
            Ok(device) => {
                let fd = device.as_raw_fd();
                match ops.register(&mut SourceFd(&fd), Interest::READABLE) {
                    Ok(token) => {
                        self.open = Some(Opened {
                            device,
                            token,
                            writable: false,
                        });
                        self.codec = LineCodec::new(self.spec.mode);
                        self.out.clear();
                        self.backoff.reset();
                        self.failures = 0;
                        return Ok(());
                    }
                    Err(e) => (OpenStep::Watch, e),
                }
            }
            Err(e) => (OpenStep::Open, e),
        };
        self.failures = self.failures.saturating_add(1);
        Err(OpenError {
            step,
            source,
            failures: self.failures,
            retry_in: self.schedule_reopen(ops),
        })
    }

    /// Arms the reopen timer after the next back-off pause unless it is armed already;
    /// returns the pause if it armed it.
    pub fn schedule_reopen<C, S>(&mut self, ops: &mut Ops<'_, C, S>) -> Option<Duration>
    where
        S: Subscriber<C, Timer = K>,
    {
        if ops.is_armed(&self.reopen) {
            return None;
        }
        let pause = self.backoff.next_delay();
        ops.arm_after(self.reopen.clone(), pause);
        Some(pause)
    }

    /// Closes the line on purpose: deregistered, closed, queued output dropped, and no
    /// reopen (a pending one is cancelled). Returns whether it was open.
    pub fn close<C, S>(&mut self, ops: &mut Ops<'_, C, S>) -> bool
    where
        S: Subscriber<C, Timer = K>,
    {
        ops.cancel(&self.reopen);
        self.drop_device(ops)
    }

    fn drop_device<C, S>(&mut self, ops: &mut Ops<'_, C, S>) -> bool
    where
        S: Subscriber<C, Timer = K>,
    {
        let Some(o) = self.open.take() else {
            return false;
        };
        let fd = o.device.as_raw_fd();
        ops.deregister(&mut SourceFd(&fd), o.token);
        self.out.clear();
        true
    }

    /// The line failed: closed, and reopened from the first pause on.
    fn lose<C, S>(&mut self, cause: io::Error, ops: &mut Ops<'_, C, S>) -> Lost
    where
        S: Subscriber<C, Timer = K>,
    {
        self.drop_device(ops);
        self.backoff.reset();
        Lost {
            cause,
            retry_in: self.schedule_reopen(ops),
        }
    }

    /// Handles readiness of the device (other events are ignored): writes queued output if
    /// writable, reads to `WouldBlock` if readable, closed or failed. Take the frames read
    /// with [`LineEndpoint::next_frame`], also after an `Err` (frames that came before the
    /// loss).
    pub fn on_event<C, S>(&mut self, event: &Event, ops: &mut Ops<'_, C, S>) -> Result<(), Lost>
    where
        S: Subscriber<C, Timer = K>,
    {
        if !self.owns(event) {
            return Ok(());
        }
        if event.is_writable() {
            self.flush(ops)?;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read(ops)?;
        }
        Ok(())
    }

    /// Reads until `WouldBlock` (retrying `Interrupted`), feeding the codec. End of file and
    /// errors lose the line.
    pub fn read<C, S>(&mut self, ops: &mut Ops<'_, C, S>) -> Result<(), Lost>
    where
        S: Subscriber<C, Timer = K>,
    {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let Some(o) = self.open.as_mut() else {
                return Ok(());
            };
            match o.device.read(&mut buf) {
                Ok(0) => {
                    let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "end of file");
                    return Err(self.lose(eof, ops));
                }
                Ok(n) => self.codec.feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.lose(e, ops)),
            }
        }
    }

    /// The next complete frame read.
    pub fn next_frame(&mut self) -> Option<Frame> {
        self.codec.next_frame()
    }

    /// Encodes `frame` for the line's mode and queues it whole (call
    /// [`LineEndpoint::flush`] to write it). Returns its service bytes. A frame is refused
    /// while the line is down or if it would take the queue over its bound; in uart mode it
    /// took a sequence number all the same, as on a line that loses it.
    pub fn queue(&mut self, frame: &Frame) -> Result<[u8; SERVICE_FRAME_LEN], QueueError> {
        let service = frame.encode()?;
        let bytes = self.codec.encode(frame)?;
        if self.open.is_none() {
            return Err(QueueError::Down);
        }
        if self.out.len() + bytes.len() > self.out_cap {
            return Err(QueueError::Full);
        }
        self.out.extend(bytes);
        Ok(service)
    }

    /// Writes queued output until the line takes no more; `WRITABLE` is registered while
    /// output is left. A write error loses the line.
    pub fn flush<C, S>(&mut self, ops: &mut Ops<'_, C, S>) -> Result<(), Lost>
    where
        S: Subscriber<C, Timer = K>,
    {
        if let Err(e) = self.write_out() {
            return Err(self.lose(e, ops));
        }
        let want = !self.out.is_empty();
        let Some(o) = self.open.as_mut() else {
            return Ok(());
        };
        if want != o.writable {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let fd = o.device.as_raw_fd();
            if let Err(e) = ops.reregister(&mut SourceFd(&fd), o.token, interest) {
                return Err(self.lose(e, ops));
            }
            o.writable = want;
        }
        Ok(())
    }

    /// Writes as much queued output as the device takes now.
    fn write_out(&mut self) -> io::Result<()> {
        let Some(o) = self.open.as_mut() else {
            return Ok(());
        };
        while !self.out.is_empty() {
            let (front, _) = self.out.as_slices();
            match o.device.write(front) {
                Ok(0) => break,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes the queued output, waiting (in `poll`, at most `within` in all) while the
    /// line is full: for the last frames before the program exits, when the loop will not
    /// run again. Output left after `within` stays queued.
    pub fn flush_blocking(&mut self, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.write_out()?;
            let Some(o) = self.open.as_ref() else {
                return Ok(());
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if self.out.is_empty() || left.is_zero() {
                return Ok(());
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(o.device.as_fd(), PollFlags::POLLOUT)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
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

    mod endpoint {
        use super::super::*;
        use crate::cbc::Heartbeat;
        use crate::runtime::EventLoop;
        use serialport::{SerialPort, TTYPort};
        use std::sync::Mutex;

        /// serialport's `pair()` is not thread-safe (its own test says so).
        static PAIRS: Mutex<()> = Mutex::new(());

        fn pty() -> (TTYPort, PathBuf) {
            let _one = PAIRS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (mut master, slave) = TTYPort::pair().expect("pty pair");
            master.set_timeout(Duration::from_secs(5)).expect("timeout");
            let path = PathBuf::from(slave.name().expect("slave name"));
            (master, path)
        }

        #[derive(Debug, Clone, PartialEq)]
        enum Key {
            Reopen,
            GiveUp,
        }

        /// What the endpoint's owner saw.
        #[derive(Debug, Default)]
        struct Seen {
            attempts: Vec<(Instant, Option<Duration>)>,
            opened: Option<Instant>,
            backoff_after_open: Option<Duration>,
            frames: Vec<Frame>,
            lost: Vec<(Instant, Lost)>,
            full_after: Option<usize>,
        }

        /// Opens the line (on init and on its reopen timer); `link` is created after
        /// `link_after` failed attempts; on open it queues `greeting` frames.
        struct Owner {
            line: LineEndpoint<Key>,
            link: Option<(usize, PathBuf)>,
            greeting: usize,
            stop_on_open: bool,
        }

        impl Owner {
            fn open(&mut self, ops: &mut Ops<'_, Seen, Self>, seen: &mut Seen) {
                match self.line.open(ops) {
                    Ok(()) => {
                        seen.opened = Some(Instant::now());
                        seen.backoff_after_open = Some(self.line.backoff().peek());
                        self.greet(ops, seen);
                        if self.stop_on_open {
                            ops.shutdown();
                        }
                    }
                    Err(e) => {
                        assert_eq!(e.step, OpenStep::Open);
                        assert_eq!(e.failures as usize, seen.attempts.len() + 1);
                        seen.attempts.push((Instant::now(), e.retry_in));
                        if !seen.lost.is_empty() {
                            ops.shutdown();
                        }
                        if let Some((after, target)) = &self.link
                            && seen.attempts.len() == *after
                        {
                            std::os::unix::fs::symlink(target, &self.line.spec().path)
                                .expect("link");
                        }
                    }
                }
            }

            fn greet(&mut self, ops: &mut Ops<'_, Seen, Self>, seen: &mut Seen) {
                for n in 0..self.greeting {
                    match self.line.queue(&Frame::Heartbeat(Heartbeat::ACTIVE)) {
                        Ok(service) => assert_eq!(service, [2, 1, 0, 0]),
                        Err(QueueError::Full) => {
                            seen.full_after = Some(n);
                            return;
                        }
                        Err(e) => panic!("queue: {e}"),
                    }
                    self.line.flush(ops).expect("flush");
                }
            }
        }

        impl Subscriber<Seen> for Owner {
            type Timer = Key;
            type Done = ();

            fn init(&mut self, ops: &mut Ops<'_, Seen, Self>) -> io::Result<()> {
                ops.arm_after(Key::GiveUp, Duration::from_secs(10));
                ops.arm_after(Key::Reopen, Duration::ZERO);
                Ok(())
            }

            fn on_event(&mut self, event: &Event, ops: &mut Ops<'_, Seen, Self>, seen: &mut Seen) {
                let result = self.line.on_event(event, ops);
                while let Some(f) = self.line.next_frame() {
                    seen.frames.push(f);
                }
                if let Err(lost) = result {
                    assert!(!self.line.is_open());
                    assert_eq!(self.line.queued(), 0);
                    seen.lost.push((Instant::now(), lost));
                }
            }

            fn on_timer(&mut self, key: Key, ops: &mut Ops<'_, Seen, Self>, seen: &mut Seen) {
                match key {
                    Key::Reopen => self.open(ops, seen),
                    Key::GiveUp => ops.shutdown(),
                }
            }
        }

        fn owner(path: PathBuf, mode: LineMode, backoff: Backoff, cap: usize) -> Owner {
            let spec = LineSpec {
                path,
                mode,
                baud: 115_200,
            };
            Owner {
                line: LineEndpoint::new(spec, Key::Reopen, backoff, cap),
                link: None,
                greeting: 0,
                stop_on_open: false,
            }
        }

        #[test]
        fn backoff_doubles_up_to_its_cap_and_starts_over() {
            let ms = Duration::from_millis;
            let mut b = Backoff::new(ms(50), ms(300));
            let pauses: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
            assert_eq!(pauses, [ms(50), ms(100), ms(200), ms(300), ms(300)]);
            b.reset();
            assert_eq!(b.next_delay(), ms(50));
            // A cap below the first pause caps every later one.
            let mut b = Backoff::new(ms(50), ms(20));
            assert_eq!([b.next_delay(), b.next_delay()], [ms(50), ms(20)]);
        }

        #[test]
        fn a_missing_line_is_tried_again_with_growing_pauses_until_it_appears() {
            let dir = tempfile::tempdir().expect("dir");
            let (_master, slave) = pty();
            let ms = Duration::from_millis;
            let mut o = owner(
                dir.path().join("lc"),
                LineMode::Cdev,
                Backoff::new(ms(20), ms(100)),
                64,
            );
            o.link = Some((5, slave));
            o.stop_on_open = true;
            let mut el = EventLoop::new().expect("loop");
            el.add(Box::new(o)).expect("add");
            let mut seen = Seen::default();
            el.run(&mut seen).expect("run");
            let opened = seen.opened.expect("opened once the path exists");
            let pauses: Vec<_> = seen.attempts.iter().map(|a| a.1).collect();
            let want = [ms(20), ms(40), ms(80), ms(100), ms(100)].map(Some);
            assert_eq!(pauses, want);
            // Each attempt waited out the pause the one before it announced.
            let times: Vec<_> = seen.attempts.iter().map(|a| a.0).chain([opened]).collect();
            for (i, w) in times.windows(2).enumerate() {
                let pause = want[i].expect("armed");
                assert!(w[1] - w[0] >= pause, "attempt {}: {:?}", i + 1, w[1] - w[0]);
            }
            assert_eq!(seen.backoff_after_open, Some(ms(20)), "reset once open");
        }

        #[test]
        fn frames_cross_the_line_both_ways_in_either_mode_and_a_lost_line_is_reopened() {
            for mode in [LineMode::Cdev, LineMode::Uart] {
                let (mut master, slave) = pty();
                let mut o = owner(
                    slave,
                    mode,
                    Backoff::new(Backoff::FIRST, Duration::from_secs(1)),
                    64,
                );
                o.greeting = 1;
                let mut el = EventLoop::new().expect("loop");
                el.add(Box::new(o)).expect("add");
                let mut seen = Seen::default();
                el.turn(&mut seen, Some(Duration::from_secs(1)))
                    .expect("turn");
                assert!(seen.opened.is_some(), "{mode:?}: {:?}", seen.attempts);
                // The greeting arrives in the mode's framing.
                let mut far = LineCodec::new(mode);
                let mut buf = [0u8; 64];
                let got = loop {
                    let n = master.read(&mut buf).expect("greeting");
                    far.feed(&buf[..n]);
                    if let Some(f) = far.next_frame() {
                        break f;
                    }
                };
                assert_eq!(got, Frame::Heartbeat(Heartbeat::ACTIVE), "{mode:?}");
                // Frames from the far end, split across writes.
                let bytes = far.encode(&Frame::WakeupReason(0x20)).expect("encodes");
                master.write_all(&bytes[..1]).expect("write");
                master.write_all(&bytes[1..]).expect("write");
                let deadline = Instant::now() + Duration::from_secs(5);
                while seen.frames.is_empty() && Instant::now() < deadline {
                    el.turn(&mut seen, Some(Duration::from_millis(100)))
                        .expect("turn");
                }
                assert_eq!(seen.frames, [Frame::WakeupReason(0x20)], "{mode:?}");
                // The far end goes away: the line is lost, and tried again a pause later
                // (in vain: the pty is gone).
                drop(master);
                el.run(&mut seen).expect("run");
                let (at, lost) = seen.lost.first().expect("lost");
                assert_eq!(lost.retry_in, Some(Backoff::FIRST), "{mode:?}");
                let (again, _) = seen.attempts.first().expect("tried again");
                assert!(*again - *at >= Backoff::FIRST, "{mode:?}");
            }
        }

        #[test]
        fn the_write_queue_is_bounded_and_refuses_frames_while_down() {
            let dir = tempfile::tempdir().expect("dir");
            let mut down: LineEndpoint<Key> = LineEndpoint::new(
                LineSpec {
                    path: dir.path().join("none"),
                    mode: LineMode::Cdev,
                    baud: 0,
                },
                Key::Reopen,
                Backoff::new(Backoff::FIRST, Backoff::FIRST),
                64,
            );
            let hb = Frame::Heartbeat(Heartbeat::ACTIVE);
            assert!(matches!(down.queue(&hb), Err(QueueError::Down)));
            // Nobody reads the far end: once the pty is full, 64 bytes (16 frames) queue.
            let (_master, slave) = pty();
            let mut o = owner(
                slave,
                LineMode::Cdev,
                Backoff::new(Backoff::FIRST, Backoff::FIRST),
                64,
            );
            o.greeting = 1_000_000;
            o.stop_on_open = true;
            let mut el = EventLoop::new().expect("loop");
            el.add(Box::new(o)).expect("add");
            let mut seen = Seen::default();
            el.run(&mut seen).expect("run");
            let n = seen.full_after.expect("the queue filled up");
            assert!(n > 16, "{n} frames before the queue was full");
        }
    }
}
