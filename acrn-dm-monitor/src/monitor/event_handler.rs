//! [`Monitor`] as a subscriber of the device model's event loop: the mngr IPC server's
//! sources, timers and deferred acks, plus the reports of the outbox worker, all on one
//! notifier.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};

use mio::event::Event;
use mngr_ipc::runtime::{Ops, Subscriber, TimerId};
use mngr_ipc::server::IpcServer;

use super::DeviceModel;
use super::outbox::{self, OutboxConfig, Outgoing, Report};

/// The monitor of one VM: serves `<vm>.monitor` on the device model's event loop.
///
/// Made by [`Monitor::bind`]; add it to the loop with
/// [`EventLoop::add`](mngr_ipc::runtime::EventLoop::add). Dropping it (when the loop is
/// dropped on an orderly exit) closes and unlinks the socket.
pub struct Monitor<C> {
    server: IpcServer<C>,
    outbox: Option<(OutboxConfig, Receiver<Outgoing>)>,
    reports_tx: Sender<Report>,
    reports_rx: Receiver<Report>,
}

impl<C> fmt::Debug for Monitor<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("server", &self.server)
            .field("worker_started", &self.outbox.is_none())
            .finish()
    }
}

impl<C> Monitor<C> {
    pub(super) fn new(server: IpcServer<C>, outbox: OutboxConfig, rx: Receiver<Outgoing>) -> Self {
        let (reports_tx, reports_rx) = mpsc::channel();
        Monitor {
            server,
            outbox: Some((outbox, rx)),
            reports_tx,
            reports_rx,
        }
    }

    /// The socket's path (`DIR/<vm>.monitor.<pid>.socket`).
    pub fn socket_path(&self) -> &Path {
        self.server.path()
    }
}

impl<C: DeviceModel> Subscriber<C> for Monitor<C> {
    fn init(&mut self, ops: &mut Ops<'_, C>) -> io::Result<()> {
        self.server.init(ops)?;
        if let Some((cfg, rx)) = self.outbox.take() {
            // Detached: it ends when the MonitorState (the only sender) is dropped.
            drop(outbox::spawn(
                cfg,
                rx,
                self.reports_tx.clone(),
                ops.notifier(),
            )?);
        }
        Ok(())
    }

    fn on_event(&mut self, event: &Event, ops: &mut Ops<'_, C>, ctx: &mut C) {
        self.server.on_event(event, ops, ctx);
    }

    fn on_timer(&mut self, id: TimerId, ops: &mut Ops<'_, C>, ctx: &mut C) {
        self.server.on_timer(id, ops, ctx);
    }

    fn on_notify(&mut self, ops: &mut Ops<'_, C>, ctx: &mut C) {
        self.server.on_notify(ops, ctx);
        while let Ok(r) = self.reports_rx.try_recv() {
            ctx.monitor().delivered(r);
        }
    }
}
