//! A pseudo-terminal standing in for an IOC line: ioc-sim owns the master, a symlink at the
//! user's path points at the raw slave that the SoC side opens.
//!
//! Invariants:
//! * ioc-sim keeps its own slave descriptor open (never read), so the master never sees
//!   `EIO` while the SoC side closes and reopens the path;
//! * the master is non-blocking; output waits in an [`OutQueue`] of whole chunks and the
//!   caller registers `WRITABLE` only while the queue is not empty;
//! * input nobody reads is discarded ([`PtyLine::discard_stale_input`]), as a fresh open of
//!   the CBC device would not see old frames either;
//! * the symlink is replaced atomically (rename) and removed on drop if it still points at
//!   this pty.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use mngr_ipc::sys::into_owned_fd;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use serialport::{ClearBuffer, SerialPort, TTYPort};
use thiserror::Error;

/// Bytes of output a line holds while the far end does not read; older chunks go first.
pub const OUT_QUEUE_CAP: usize = 16 * 1024;

/// A pty line that cannot be created.
#[derive(Debug, Error)]
pub enum PtyError {
    /// `posix_openpt` and friends failed.
    #[error("Cannot create a pty pair")]
    Pair(#[source] serialport::Error),
    /// The slave has no name.
    #[error("The pty slave has no name")]
    NoName,
    /// Setting the master non-blocking failed.
    #[error("Cannot make the pty master non-blocking")]
    NonBlocking(#[source] nix::Error),
    /// The link path exists and is not a symlink.
    #[error("{} exists and is not a symlink", .0.display())]
    PathTaken(PathBuf),
    /// Creating the symlink failed.
    #[error("Cannot create the symlink {}", path.display())]
    Link {
        /// The link.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Output chunks waiting for the far end; a chunk is never split by dropping.
#[derive(Debug)]
pub struct OutQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    offset: usize,
    bytes: usize,
    cap: usize,
    overflow: u64,
}

impl OutQueue {
    /// An empty queue holding at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        OutQueue {
            chunks: VecDeque::new(),
            offset: 0,
            bytes: 0,
            cap,
            overflow: 0,
        }
    }

    /// Queues a chunk, dropping the oldest chunks not yet started if the queue is full (or
    /// this chunk, if it cannot fit at all).
    pub fn push(&mut self, chunk: &[u8]) {
        let first_droppable = usize::from(self.offset > 0);
        let pinned = if self.offset > 0 {
            self.chunks.front().map_or(0, Vec::len)
        } else {
            0
        };
        if pinned + chunk.len() > self.cap {
            // Would not fit even in an otherwise empty queue: keep what is queued.
            self.overflow += 1;
            return;
        }
        while self.bytes + chunk.len() > self.cap && self.chunks.len() > first_droppable {
            let dropped = self
                .chunks
                .remove(first_droppable)
                .expect("index checked against the length");
            self.bytes -= dropped.len();
            self.overflow += 1;
        }
        self.bytes += chunk.len();
        self.chunks.push_back(chunk.to_vec());
    }

    /// Writes as much as `w` takes. `Ok(true)`: the queue is empty.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<bool> {
        while let Some(front) = self.chunks.front() {
            match w.write(&front[self.offset..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.offset += n;
                    if self.offset == front.len() {
                        self.bytes -= front.len();
                        self.offset = 0;
                        self.chunks.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Bytes waiting (whole chunks and the unwritten rest of the front one).
    pub fn queued_bytes(&self) -> usize {
        self.bytes - self.offset
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Whether a chunk is partly written.
    pub fn mid_chunk(&self) -> bool {
        self.offset > 0
    }

    /// Chunks dropped because the queue was full.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Forgets everything queued.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.offset = 0;
        self.bytes = 0;
    }
}

/// Points `link` at `target`, replacing an older symlink atomically.
fn install_link(link: &Path, target: &Path) -> Result<(), PtyError> {
    if let Ok(meta) = fs::symlink_metadata(link)
        && !meta.file_type().is_symlink()
    {
        return Err(PtyError::PathTaken(link.to_owned()));
    }
    let link_err = |source| PtyError::Link {
        path: link.to_owned(),
        source,
    };
    let name = link
        .file_name()
        .ok_or_else(|| link_err(io::ErrorKind::InvalidInput.into()))?;
    let tmp = link.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A leftover of a crashed run of this pid; harmless if missing.
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(link_err)?;
    fs::rename(&tmp, link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        link_err(e)
    })
}

/// One pty with its symlink.
#[derive(Debug)]
pub struct PtyLine {
    link: PathBuf,
    slave_path: PathBuf,
    master: File,
    /// Held open, never read (see the module docs).
    slave: TTYPort,
    out: OutQueue,
    /// Input was pending at the last [`PtyLine::discard_stale_input`].
    last_pending: u32,
    written_since_check: usize,
}

impl PtyLine {
    /// Creates a raw pty pair and points `link` at its slave.
    pub fn create(link: &Path) -> Result<PtyLine, PtyError> {
        let (master, slave) = TTYPort::pair().map_err(PtyError::Pair)?;
        let slave_path = PathBuf::from(slave.name().ok_or(PtyError::NoName)?);
        let master = File::from(into_owned_fd(master));
        let flags = fcntl(&master, FcntlArg::F_GETFL).map_err(PtyError::NonBlocking)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&master, FcntlArg::F_SETFL(flags)).map_err(PtyError::NonBlocking)?;
        install_link(link, &slave_path)?;
        Ok(PtyLine {
            link: link.to_owned(),
            slave_path,
            master,
            slave,
            out: OutQueue::new(OUT_QUEUE_CAP),
            last_pending: 0,
            written_since_check: 0,
        })
    }

    /// The master's descriptor, to register with the event loop.
    pub fn master_fd(&self) -> RawFd {
        self.master.as_raw_fd()
    }

    /// The slave device (`/dev/pts/N`).
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// The symlink.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// Reads everything available into `buf`. `Ok(false)`: the master reported end of file
    /// (it cannot while ioc-sim holds the slave, but a line is never trusted).
    pub fn drain_input(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        let mut chunk = [0u8; 1024];
        loop {
            match self.master.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues `bytes` as one chunk (call [`PtyLine::flush`] after).
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.push(bytes);
    }

    /// Writes queued output. `Ok(true)`: all written; `Ok(false)`: register `WRITABLE`.
    pub fn flush(&mut self) -> io::Result<bool> {
        let before = self.out.queued_bytes();
        let res = self.out.write_to(&mut self.master);
        self.written_since_check += before.saturating_sub(self.out.queued_bytes());
        if res.is_err() {
            self.out.clear();
        }
        res
    }

    /// Whether output waits.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Output chunks dropped because the far end did not read.
    pub fn overflow(&self) -> u64 {
        self.out.overflow()
    }

    /// Called once per reason period: if nothing written to the slave since the previous
    /// call was read (the input waiting grew by exactly what was written), nobody has the
    /// line open; discard what waits so that the next opener starts with fresh frames. A
    /// reader that is merely slow has taken something meanwhile and loses nothing; and
    /// nothing is discarded while a chunk is half written. Returns the bytes discarded.
    pub fn discard_stale_input(&mut self) -> u32 {
        let pending = self.slave.bytes_to_read().unwrap_or(0);
        let written = std::mem::take(&mut self.written_since_check);
        let last = std::mem::replace(&mut self.last_pending, pending);
        let untouched =
            u64::from(pending) == u64::from(last) + u64::try_from(written).unwrap_or(u64::MAX);
        if pending == 0 || !untouched || last == 0 || self.out.mid_chunk() {
            return 0;
        }
        match self.slave.clear(ClearBuffer::Input) {
            Ok(()) => {
                self.last_pending = 0;
                pending
            }
            Err(e) => {
                log::debug!("Cannot flush {}: {e}", self.slave_path.display());
                0
            }
        }
    }
}

impl Drop for PtyLine {
    fn drop(&mut self) {
        if fs::read_link(&self.link).is_ok_and(|t| t == self.slave_path)
            && let Err(e) = fs::remove_file(&self.link)
        {
            log::warn!("Cannot remove {}: {e}", self.link.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts `room` bytes, then would block.
    struct Sink {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queue_handles_partial_writes() {
        let mut q = OutQueue::new(100);
        q.push(&[1, 2, 3, 4]);
        q.push(&[5, 6, 7, 8]);
        let mut sink = Sink {
            got: Vec::new(),
            room: 6,
        };
        assert!(!q.write_to(&mut sink).expect("writes"));
        assert!(q.mid_chunk());
        sink.room = 100;
        assert!(q.write_to(&mut sink).expect("writes"));
        assert_eq!(sink.got, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(q.is_empty());
    }

    #[test]
    fn full_queue_drops_the_oldest_whole_chunks() {
        let mut q = OutQueue::new(8);
        q.push(&[1; 4]);
        q.push(&[2; 4]);
        let mut sink = Sink {
            got: Vec::new(),
            room: 1,
        };
        assert!(!q.write_to(&mut sink).expect("writes"));
        // [1;4] is started: [2;4] goes to make room for [3;4], and so on.
        q.push(&[3; 4]);
        q.push(&[4; 4]);
        assert_eq!(q.overflow(), 2);
        q.push(&[9; 20]);
        assert_eq!(q.overflow(), 3, "a chunk larger than the room is dropped");
        sink.room = 100;
        assert!(q.write_to(&mut sink).expect("writes"));
        assert_eq!(sink.got, [1, 1, 1, 1, 4, 4, 4, 4]);
    }

    #[test]
    fn pty_line_links_reads_writes_and_cleans_up() {
        use std::os::unix::fs::OpenOptionsExt;
        use std::time::Duration;

        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("lc");
        let mut line = PtyLine::create(&link).expect("pty");
        assert_eq!(fs::read_link(&link).expect("link"), line.slave_path());
        let mut soc = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NOCTTY | OFlag::O_NONBLOCK).bits())
            .open(&link)
            .expect("open slave");
        line.queue(&[0x01, 0x20, 0x00, 0x00]);
        assert!(line.flush().expect("flush"));
        let mut got = Vec::new();
        acrn_tests::wait_for(Duration::from_secs(5), "frame on the slave", || {
            let mut b = [0u8; 16];
            if let Ok(n) = soc.read(&mut b) {
                got.extend_from_slice(&b[..n]);
            }
            got.len() >= 4
        })
        .expect("frame crosses the pty");
        assert_eq!(got, [0x01, 0x20, 0x00, 0x00]);
        soc.write_all(&[0x02, 0x01, 0x00, 0x00]).expect("write");
        let mut input = Vec::new();
        acrn_tests::wait_for(Duration::from_secs(5), "frame on the master", || {
            assert!(line.drain_input(&mut input).expect("drain"));
            input.len() >= 4
        })
        .expect("frame crosses the pty");
        assert_eq!(input, [0x02, 0x01, 0x00, 0x00]);
        drop(line);
        assert!(fs::symlink_metadata(&link).is_err(), "symlink removed");
    }

    #[test]
    fn stale_input_goes_after_two_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut line = PtyLine::create(&dir.path().join("lc")).expect("pty");
        assert_eq!(line.discard_stale_input(), 0);
        line.queue(&[0x01, 0x20, 0x00, 0x00]);
        assert!(line.flush().expect("flush"));
        acrn_tests::wait_for(
            std::time::Duration::from_secs(5),
            "bytes in the slave",
            || line.slave.bytes_to_read().unwrap_or(0) == 4,
        )
        .expect("the frame reaches the slave's input queue");
        assert_eq!(
            line.discard_stale_input(),
            0,
            "first sight: maybe a slow reader"
        );
        assert_eq!(line.discard_stale_input(), 4, "unread for a whole period");
        assert_eq!(line.discard_stale_input(), 0);
    }

    #[test]
    fn link_path_must_be_free_or_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        fs::write(&file, b"x").expect("write");
        assert!(matches!(
            PtyLine::create(&file),
            Err(PtyError::PathTaken(_))
        ));
        let link = dir.path().join("old");
        std::os::unix::fs::symlink("/nonexistent", &link).expect("symlink");
        let line = PtyLine::create(&link).expect("replaces a stale symlink");
        assert_eq!(fs::read_link(&link).expect("link"), line.slave_path());
    }
}
