//! Signals delivered on the loop thread.

use std::fmt;
use std::io;

use mio::event::Event;
use mio::{Interest, Token};
use signal_hook_mio::v1_0::Signals;

use super::{Ops, Subscriber};

type SignalFn<C> = Box<dyn FnMut(i32, &mut Ops<'_, C, SignalSubscriber<C>>, &mut C)>;

/// Delivers signals to a callback on the loop thread (signal-hook's self-pipe underneath).
pub struct SignalSubscriber<C> {
    signals: Signals,
    token: Option<Token>,
    on_signal: SignalFn<C>,
}

impl<C> fmt::Debug for SignalSubscriber<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalSubscriber").finish_non_exhaustive()
    }
}

impl<C> SignalSubscriber<C> {
    /// Catches `signals` (e.g. `signal_hook::consts::SIGTERM`) and calls `on_signal` for
    /// each one received. The default action of those signals no longer applies.
    pub fn new(
        signals: &[i32],
        on_signal: impl FnMut(i32, &mut Ops<'_, C, Self>, &mut C) + 'static,
    ) -> io::Result<Self> {
        Ok(SignalSubscriber {
            signals: Signals::new(signals)?,
            token: None,
            on_signal: Box::new(on_signal),
        })
    }
}

impl<C: 'static> Subscriber<C> for SignalSubscriber<C> {
    type Timer = ();
    type Done = ();

    fn init(&mut self, ops: &mut Ops<'_, C, Self>) -> io::Result<()> {
        self.token = Some(ops.register(&mut self.signals, Interest::READABLE)?);
        Ok(())
    }

    fn on_event(&mut self, _event: &Event, ops: &mut Ops<'_, C, Self>, ctx: &mut C) {
        // Empty the pipe first, then act (signal-hook's documented order).
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            (self.on_signal)(sig, ops, ctx);
        }
    }
}
