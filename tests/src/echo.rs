//! The raw Unix-socket baseline every bench measures against: a one-thread server that
//! accepts, reads one fixed-size message, writes it back and closes, and a client doing one
//! connect + round trip. Nothing cheaper does a request and its answer over a Unix socket.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound of every read of the server and the client.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The echo server; stops on drop.
#[derive(Debug)]
pub struct EchoServer {
    path: PathBuf,
    msg_len: usize,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds `path` and echoes messages of `msg_len` bytes, one per connection.
    ///
    /// # Panics
    /// If the socket cannot be bound or the thread started (a bench cannot go on).
    pub fn start(path: PathBuf, msg_len: usize) -> Self {
        let listener = UnixListener::bind(&path).expect("bind the echo socket");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let join = std::thread::Builder::new()
            .name("echo".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(mut s) = conn else { continue };
                    let _ = s.set_read_timeout(Some(TIMEOUT));
                    let mut buf = vec![0u8; msg_len];
                    if s.read_exact(&mut buf).is_ok() {
                        // A failed write shows up as an error on the client side.
                        let _ = s.write_all(&buf);
                    }
                }
            })
            .expect("spawn the echo thread");
        EchoServer {
            path,
            msg_len,
            stop,
            join: Some(join),
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One connect + round trip of `wire` (which must be `msg_len` bytes).
    ///
    /// # Panics
    /// If the echo fails or differs.
    pub fn round_trip(&self, wire: &[u8]) -> Duration {
        assert_eq!(wire.len(), self.msg_len, "message length");
        let t0 = Instant::now();
        let mut s = UnixStream::connect(&self.path).expect("connect to the echo server");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        s.write_all(wire).expect("write to the echo server");
        let mut back = vec![0u8; self.msg_len];
        s.read_exact(&mut back).expect("echo");
        let dt = t0.elapsed();
        assert_eq!(back, wire, "echo differs");
        dt
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept so the thread sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_and_stops() {
        let dir = crate::TestDir::new("echo");
        let e = EchoServer::start(dir.join("e.sock"), 8);
        let dt = e.round_trip(b"12345678");
        assert!(dt < TIMEOUT);
        drop(e);
        assert!(UnixStream::connect(dir.join("e.sock")).is_err(), "stopped");
    }
}
