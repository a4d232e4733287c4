//! A server on a thread of its own, for tools and tests that have no loop.

use super::{Handlers, IpcServer, ServerConfig, ServerError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::runtime::{EventLoop, LoopHandle};

/// A server running an event loop of its own on a thread; stops (and unlinks its socket)
/// on [`ServerThread::stop`] or drop.
#[derive(Debug)]
pub struct ServerThread {
    path: PathBuf,
    handle: LoopHandle,
    join: Option<JoinHandle<()>>,
}

/// Binds a server on the calling thread (so errors are returned here), then serves it on a
/// new thread with state `ctx`.
pub fn spawn_server<C: Send + 'static>(
    cfg: ServerConfig,
    handlers: Handlers<C>,
    ctx: C,
) -> Result<ServerThread, ServerError> {
    let name = cfg.name.clone();
    let server = IpcServer::bind(cfg, handlers)?;
    let path = server.path().to_owned();
    let (tx, rx) = mpsc::sync_channel(1);
    let join = std::thread::Builder::new()
        .name(format!("mngr-{name}"))
        .spawn(move || {
            let mut ctx = ctx;
            let mut el = match EventLoop::new() {
                Ok(el) => el,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = el.add(Box::new(server)) {
                let _ = tx.send(Err(e));
                return;
            }
            let _ = tx.send(Ok(el.handle()));
            if let Err(e) = el.run(&mut ctx) {
                log::error!("Server {name} stopped: {e}");
            }
        })
        .map_err(ServerError::Thread)?;
    let handle = match rx.recv() {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(ServerError::Thread(e)),
        Err(_) => {
            return Err(ServerError::Thread(io::Error::other(
                "server thread ended before starting",
            )));
        }
    };
    Ok(ServerThread {
        path,
        handle,
        join: Some(join),
    })
}

impl ServerThread {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving, waits for the thread, and removes the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.handle.shutdown();
        if let Some(j) = self.join.take()
            && j.join().is_err()
        {
            log::error!("Server thread for {} panicked", self.path.display());
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}
