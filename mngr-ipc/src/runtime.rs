//! The event loop every daemon and simulator of the suite runs on.
//!
//! One thread owns the daemon's state `C`; [`Subscriber`]s own their file descriptors and
//! react to readiness, timers and notifications, each getting `&mut C`. Nothing polls: the
//! loop sleeps in `epoll_wait` until a source is ready, the earliest timer is due, or a
//! worker thread calls [`Notifier::notify`].
//!
//! Invariants:
//! * tokens come from a counter that only goes up and are never reused; an event for an
//!   unknown token is logged at debug and ignored (mio allows stray events);
//! * subscribers added or removed while events are dispatched take effect after the batch;
//! * timers are monotonic [`Instant`]s; a periodic timer re-arms at `deadline + period`
//!   (drift-free), skipping whole periods it missed rather than firing a burst;
//! * signals arrive through [`SignalSubscriber`] (signal-hook's self-pipe), never in a
//!   signal handler.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, AsRawFd};

use mio::event::{Event, Source};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use signal_hook_mio::v1_0::Signals;

const WAKER_TOKEN: Token = Token(usize::MAX);
const TIMERFD_TOKEN: Token = Token(usize::MAX - 1);

/// Identifies a subscriber within its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(u64);

/// Identifies an armed timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

/// Something the loop drives. It owns its sources and registers them in [`Subscriber::init`].
pub trait Subscriber<C> {
    /// Called once when the subscriber joins the loop: register sources, arm timers.
    fn init(&mut self, ops: &mut Ops<'_, C>) -> io::Result<()>;

    /// One of the subscriber's sources is ready. Drain it until `WouldBlock`.
    fn on_event(&mut self, event: &Event, ops: &mut Ops<'_, C>, ctx: &mut C);

    /// A timer the subscriber armed is due.
    fn on_timer(&mut self, _id: TimerId, _ops: &mut Ops<'_, C>, _ctx: &mut C) {}

    /// A [`Notifier`] of this subscriber was poked (by a worker thread, usually).
    fn on_notify(&mut self, _ops: &mut Ops<'_, C>, _ctx: &mut C) {}
}

#[derive(Debug)]
struct TimerEntry {
    sub: SubscriberId,
    deadline: Instant,
    period: Option<Duration>,
}

#[derive(Debug, Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerId)>>,
    live: HashMap<TimerId, TimerEntry>,
    /// Popped as due in this turn, not yet fired: cancelling one still stops it.
    in_flight: std::collections::HashSet<TimerId>,
    next: u64,
}

impl Timers {
    fn arm(&mut self, sub: SubscriberId, deadline: Instant, period: Option<Duration>) -> TimerId {
        let id = TimerId(self.next);
        self.next += 1;
        self.live.insert(
            id,
            TimerEntry {
                sub,
                deadline,
                period,
            },
        );
        self.heap.push(Reverse((deadline, id)));
        id
    }

    /// The earliest live deadline, dropping cancelled heap entries on the way.
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, id))) = self.heap.peek().copied() {
            match self.live.get(&id) {
                Some(e) if e.deadline == deadline => return Some(deadline),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    /// Pops one timer due at or before `now`, re-arming it if periodic.
    fn pop_due(&mut self, now: Instant) -> Option<(TimerId, SubscriberId)> {
        let deadline = self.next_deadline()?;
        if deadline > now {
            return None;
        }
        let Reverse((_, id)) = self.heap.pop().expect("peeked above");
        let entry = self.live.get_mut(&id).expect("checked live above");
        let sub = entry.sub;
        match entry.period {
            Some(period) => {
                let mut next = entry.deadline + period;
                if next <= now {
                    // Late by more than a period: skip the missed beats, stay on the grid.
                    let behind = now.duration_since(entry.deadline).as_nanos();
                    let periods = behind / period.as_nanos().max(1);
                    let skip = u32::try_from(periods).unwrap_or(u32::MAX);
                    log::debug!("Periodic timer {id:?} missed {skip} period(s)");
                    next = entry.deadline + period.saturating_mul(skip.saturating_add(1));
                }
                entry.deadline = next;
                self.heap.push(Reverse((next, id)));
            }
            None => {
                self.live.remove(&id);
            }
        }
        Some((id, sub))
    }

    fn cancel(&mut self, id: TimerId) -> bool {
        let was = self.live.remove(&id).is_some() | self.in_flight.remove(&id);
        // Cancelled entries stay in the heap until they surface: rebuild it before they
        // pile up (a far-future timer re-armed on every request would never surface).
        if self.heap.len() > 2 * self.live.len() + 64 {
            self.heap = self
                .live
                .iter()
                .map(|(id, e)| Reverse((e.deadline, *id)))
                .collect();
        }
        was
    }

    fn cancel_all(&mut self, sub: SubscriberId) {
        self.live.retain(|_, e| e.sub != sub);
    }

    /// Every timer due at `now`, each fired once this turn: a timer re-armed at a past
    /// deadline by a handler waits for the next turn instead of spinning this one.
    fn take_due(&mut self, now: Instant) -> Vec<(TimerId, SubscriberId)> {
        let mut due = Vec::new();
        while let Some(t) = self.pop_due(now) {
            self.in_flight.insert(t.0);
            due.push(t);
        }
        due
    }
}

#[derive(Debug, Default)]
struct Shared {
    notified: Mutex<Vec<SubscriberId>>,
    stop: AtomicBool,
}

/// Wakes the loop from any thread and calls [`Subscriber::on_notify`] of one subscriber.
#[derive(Clone)]
pub struct Notifier {
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    sub: SubscriberId,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier").field("sub", &self.sub).finish()
    }
}

impl Notifier {
    /// Schedules `on_notify` of the subscriber on the loop thread. Cheap; never blocks
    /// for long; notifications before the loop gets to run coalesce.
    pub fn notify(&self) {
        {
            let mut q = self
                .shared
                .notified
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !q.contains(&self.sub) {
                q.push(self.sub);
            }
        }
        if let Err(e) = self.waker.wake() {
            log::error!("Cannot wake the event loop: {e}");
        }
    }
}

/// Stops a loop from another thread.
#[derive(Clone)]
pub struct LoopHandle {
    waker: Arc<Waker>,
    shared: Arc<Shared>,
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoopHandle")
    }
}

impl LoopHandle {
    /// Asks the loop to return from [`EventLoop::run`] after the current batch.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            log::error!("Cannot wake the event loop: {e}");
        }
    }
}

enum Change<C> {
    Add(Box<dyn Subscriber<C>>),
    Remove(SubscriberId),
}

struct Core<C> {
    next_token: usize,
    next_sub: u64,
    tokens: HashMap<Token, SubscriberId>,
    timers: Timers,
    pending: Vec<Change<C>>,
    shutdown: bool,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
}

/// What a subscriber may do to the loop: its own sources, timers, and loop-wide requests.
pub struct Ops<'a, C> {
    registry: &'a Registry,
    core: &'a mut Core<C>,
    sub: SubscriberId,
}

impl<C> fmt::Debug for Ops<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ops").field("sub", &self.sub).finish()
    }
}

impl<C> Ops<'_, C> {
    /// The subscriber these ops act for.
    pub fn id(&self) -> SubscriberId {
        self.sub
    }

    /// Registers a source of this subscriber; returns its (never reused) token.
    pub fn register<S: Source + ?Sized>(
        &mut self,
        source: &mut S,
        interest: Interest,
    ) -> io::Result<Token> {
        let token = Token(self.core.next_token);
        self.core.next_token += 1;
        self.registry.register(source, token, interest)?;
        self.core.tokens.insert(token, self.sub);
        Ok(token)
    }

    /// Changes the interest of a registered source.
    pub fn reregister<S: Source + ?Sized>(
        &mut self,
        source: &mut S,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.registry.reregister(source, token, interest)
    }

    /// Deregisters a source; its token is forgotten and never handed out again.
    pub fn deregister<S: Source + ?Sized>(&mut self, source: &mut S, token: Token) {
        if let Err(e) = self.registry.deregister(source) {
            log::debug!("Deregistering {token:?}: {e}");
        }
        self.core.tokens.remove(&token);
    }

    /// Arms a one-shot timer at `deadline`.
    pub fn arm_at(&mut self, deadline: Instant) -> TimerId {
        self.core.timers.arm(self.sub, deadline, None)
    }

    /// Arms a one-shot timer `after` from now.
    pub fn arm_after(&mut self, after: Duration) -> TimerId {
        self.arm_at(Instant::now() + after)
    }

    /// Arms a periodic timer: first at `first`, then every `period` on that grid.
    pub fn arm_periodic(&mut self, first: Instant, period: Duration) -> TimerId {
        self.core.timers.arm(self.sub, first, Some(period))
    }

    /// The deadline a live timer will fire at next.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.core.timers.live.get(&id).map(|e| e.deadline)
    }

    /// Cancels a timer; returns whether it was still armed.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        self.core.timers.cancel(id)
    }

    /// A handle that worker threads use to get [`Subscriber::on_notify`] called.
    pub fn notifier(&self) -> Notifier {
        Notifier {
            waker: Arc::clone(&self.core.waker),
            shared: Arc::clone(&self.core.shared),
            sub: self.sub,
        }
    }

    /// A handle that stops the loop from anywhere.
    pub fn loop_handle(&self) -> LoopHandle {
        LoopHandle {
            waker: Arc::clone(&self.core.waker),
            shared: Arc::clone(&self.core.shared),
        }
    }

    /// Adds a subscriber after the current batch of events.
    pub fn add_subscriber(&mut self, sub: Box<dyn Subscriber<C>>) {
        self.core.pending.push(Change::Add(sub));
    }

    /// Removes this subscriber (dropping it, which closes its sources) after the batch.
    pub fn remove_self(&mut self) {
        self.core.pending.push(Change::Remove(self.sub));
    }

    /// Makes [`EventLoop::run`] return after the current batch.
    pub fn shutdown(&mut self) {
        self.core.shutdown = true;
    }
}

/// The loop's precise clock: a `timerfd` armed at the earliest deadline. `epoll_wait` only
/// takes whole milliseconds (mio rounds up), which would make every timer up to 1 ms late.
struct PreciseWake {
    fd: TimerFd,
    armed: Option<Instant>,
}

impl PreciseWake {
    /// Arms the timerfd at `deadline` (or disarms it). Returns false if the kernel refused,
    /// in which case the poll timeout is the fallback.
    fn arm(&mut self, deadline: Option<Instant>) -> bool {
        if self.armed == deadline {
            return true;
        }
        let result = match deadline {
            Some(d) => {
                // A zero value would disarm the timer: wait at least a nanosecond.
                let left = d
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                self.fd.set(
                    Expiration::OneShot(TimeSpec::from_duration(left)),
                    TimerSetTimeFlags::empty(),
                )
            }
            None => self.fd.unset(),
        };
        match result {
            Ok(()) => {
                self.armed = deadline;
                true
            }
            Err(e) => {
                log::warn!("timerfd: {e}; timers fall back to millisecond precision");
                self.armed = None;
                false
            }
        }
    }
}

/// A mio-based loop owning subscribers that act on a state `C`.
pub struct EventLoop<C> {
    poll: Poll,
    wake: PreciseWake,
    events: Events,
    subs: HashMap<SubscriberId, Box<dyn Subscriber<C>>>,
    core: Core<C>,
}

impl<C> fmt::Debug for EventLoop<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("subscribers", &self.subs.len())
            .field("timers", &self.core.timers.live.len())
            .finish()
    }
}

impl<C> EventLoop<C> {
    /// A new loop with no subscribers.
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        poll.registry().register(
            &mut SourceFd(&fd.as_fd().as_raw_fd()),
            TIMERFD_TOKEN,
            Interest::READABLE,
        )?;
        Ok(EventLoop {
            poll,
            wake: PreciseWake { fd, armed: None },
            events: Events::with_capacity(256),
            subs: HashMap::new(),
            core: Core {
                next_token: 0,
                next_sub: 0,
                tokens: HashMap::new(),
                timers: Timers::default(),
                pending: Vec::new(),
                shutdown: false,
                waker,
                shared: Arc::new(Shared::default()),
            },
        })
    }

    /// A handle that stops the loop from anywhere.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle {
            waker: Arc::clone(&self.core.waker),
            shared: Arc::clone(&self.core.shared),
        }
    }

    /// Adds a subscriber now and runs its `init`.
    pub fn add(&mut self, sub: Box<dyn Subscriber<C>>) -> io::Result<SubscriberId> {
        let id = SubscriberId(self.core.next_sub);
        self.core.next_sub += 1;
        let mut sub = sub;
        let mut ops = Ops {
            registry: self.poll.registry(),
            core: &mut self.core,
            sub: id,
        };
        if let Err(e) = sub.init(&mut ops) {
            self.forget(id);
            return Err(e);
        }
        self.subs.insert(id, sub);
        Ok(id)
    }

    /// A notifier that calls [`Subscriber::on_notify`] of subscriber `id` (e.g. so that
    /// state shared through `C` can wake the subscriber owning the I/O).
    pub fn notifier(&self, id: SubscriberId) -> Notifier {
        Notifier {
            waker: Arc::clone(&self.core.waker),
            shared: Arc::clone(&self.core.shared),
            sub: id,
        }
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether the loop has no subscribers.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    fn forget(&mut self, id: SubscriberId) {
        self.core.tokens.retain(|_, s| *s != id);
        self.core.timers.cancel_all(id);
    }

    fn with_sub(
        &mut self,
        id: SubscriberId,
        f: impl FnOnce(&mut dyn Subscriber<C>, &mut Ops<'_, C>),
    ) {
        let Some(mut sub) = self.subs.remove(&id) else {
            return;
        };
        let mut ops = Ops {
            registry: self.poll.registry(),
            core: &mut self.core,
            sub: id,
        };
        f(sub.as_mut(), &mut ops);
        self.subs.insert(id, sub);
    }

    fn apply_pending(&mut self) {
        while !self.core.pending.is_empty() {
            let pending = std::mem::take(&mut self.core.pending);
            for change in pending {
                match change {
                    Change::Add(sub) => {
                        if let Err(e) = self.add(sub) {
                            log::error!("A subscriber failed to start: {e}");
                        }
                    }
                    Change::Remove(id) => {
                        self.subs.remove(&id);
                        self.forget(id);
                    }
                }
            }
        }
    }

    /// Runs until a subscriber or a [`LoopHandle`] asks for shutdown.
    pub fn run(&mut self, ctx: &mut C) -> io::Result<()> {
        self.apply_pending();
        while !self.stopping() {
            self.turn(ctx, None)?;
        }
        // Work handed to a subscriber in the last turn (e.g. acks completed just before
        // shutdown) still goes out.
        self.deliver_notifications(ctx);
        Ok(())
    }

    fn deliver_notifications(&mut self, ctx: &mut C) {
        let notified = std::mem::take(
            &mut *self
                .core
                .shared
                .notified
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for id in notified {
            self.with_sub(id, |sub, ops| sub.on_notify(ops, ctx));
        }
    }

    fn stopping(&self) -> bool {
        self.core.shutdown || self.core.shared.stop.load(Ordering::SeqCst)
    }

    /// Runs one batch: waits (at most `max_wait`, or until the next timer), dispatches the
    /// ready events, the due timers and the notifications, then applies deferred changes.
    pub fn turn(&mut self, ctx: &mut C, max_wait: Option<Duration>) -> io::Result<()> {
        let now = Instant::now();
        let next = self.core.timers.next_deadline();
        // The timerfd wakes the loop on the deadline itself; the poll timeout only backs it
        // up (a few ms later) in case the timerfd could not be armed.
        let precise = self.wake.arm(next);
        let timer_wait = next.map(|d| {
            let left = d.saturating_duration_since(now);
            if precise {
                left + Duration::from_millis(5)
            } else {
                left
            }
        });
        let wait = match (timer_wait, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match self.poll.poll(&mut self.events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in &events {
            if event.token() == WAKER_TOKEN {
                continue; // the notified queue is read below, every turn
            }
            if event.token() == TIMERFD_TOKEN {
                // Expired: consume the count (EAGAIN if another wake-up raced it).
                let _ = self.wake.fd.wait();
                self.wake.armed = None;
                continue;
            }
            let Some(&id) = self.core.tokens.get(&event.token()) else {
                log::debug!("Event for unknown token {:?} ignored", event.token());
                continue;
            };
            self.with_sub(id, |sub, ops| sub.on_event(event, ops, ctx));
        }
        self.events = events;
        // Notifications first, then timers: a notification raised by a handler in this
        // batch (no waker event of its own yet) is not left behind due timers.
        self.deliver_notifications(ctx);
        let now = Instant::now();
        for (timer, id) in self.core.timers.take_due(now) {
            // Skipped if a handler of this turn cancelled it after it became due.
            if self.core.timers.in_flight.remove(&timer) {
                self.with_sub(id, |sub, ops| sub.on_timer(timer, ops, ctx));
            }
        }
        self.apply_pending();
        Ok(())
    }
}

type SignalFn<C> = Box<dyn FnMut(i32, &mut Ops<'_, C>, &mut C)>;

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
        on_signal: impl FnMut(i32, &mut Ops<'_, C>, &mut C) + 'static,
    ) -> io::Result<Self> {
        Ok(SignalSubscriber {
            signals: Signals::new(signals)?,
            token: None,
            on_signal: Box::new(on_signal),
        })
    }
}

impl<C> Subscriber<C> for SignalSubscriber<C> {
    fn init(&mut self, ops: &mut Ops<'_, C>) -> io::Result<()> {
        self.token = Some(ops.register(&mut self.signals, Interest::READABLE)?);
        Ok(())
    }

    fn on_event(&mut self, _event: &Event, ops: &mut Ops<'_, C>, ctx: &mut C) {
        // Empty the pipe first, then act (signal-hook's documented order).
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            (self.on_signal)(sig, ops, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream as StdStream;

    #[derive(Default)]
    struct Log(Vec<String>);

    struct Echo {
        stream: mio::net::UnixStream,
        token: Option<Token>,
    }

    impl Subscriber<Log> for Echo {
        fn init(&mut self, ops: &mut Ops<'_, Log>) -> io::Result<()> {
            self.token = Some(ops.register(&mut self.stream, Interest::READABLE)?);
            Ok(())
        }
        fn on_event(&mut self, _event: &Event, ops: &mut Ops<'_, Log>, ctx: &mut Log) {
            let mut buf = [0u8; 64];
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => {
                        ctx.0.push("eof".into());
                        ops.shutdown();
                        return;
                    }
                    Ok(n) => {
                        ctx.0.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                        self.stream.write_all(&buf[..n]).expect("echo");
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
    }

    #[test]
    fn dispatches_readiness_to_the_owner() {
        let (a, b) = StdStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let mut el = EventLoop::new().expect("loop");
        el.add(Box::new(Echo {
            stream: mio::net::UnixStream::from_std(a),
            token: None,
        }))
        .expect("add");
        let mut b = b;
        b.write_all(b"ping").expect("write");
        let mut ctx = Log::default();
        el.turn(&mut ctx, Some(Duration::from_secs(5)))
            .expect("turn");
        let mut back = [0u8; 4];
        b.read_exact(&mut back).expect("echoed");
        assert_eq!(&back, b"ping");
        drop(b);
        el.run(&mut ctx).expect("runs to eof");
        assert_eq!(ctx.0, vec!["ping".to_owned(), "eof".to_owned()]);
    }

    struct Ticker {
        period: Duration,
        fired: Vec<Instant>,
        one_shot: Option<TimerId>,
        cancelled: Option<TimerId>,
    }

    impl Subscriber<Vec<Instant>> for Ticker {
        fn init(&mut self, ops: &mut Ops<'_, Vec<Instant>>) -> io::Result<()> {
            let start = Instant::now();
            ops.arm_periodic(start + self.period, self.period);
            self.one_shot = Some(ops.arm_after(self.period * 2));
            let c = ops.arm_after(self.period);
            assert!(ops.cancel(c));
            self.cancelled = Some(c);
            Ok(())
        }
        fn on_event(&mut self, _: &Event, _: &mut Ops<'_, Vec<Instant>>, _: &mut Vec<Instant>) {}
        fn on_timer(
            &mut self,
            id: TimerId,
            ops: &mut Ops<'_, Vec<Instant>>,
            ctx: &mut Vec<Instant>,
        ) {
            assert_ne!(Some(id), self.cancelled, "a cancelled timer fired");
            if Some(id) == self.one_shot {
                return;
            }
            self.fired.push(Instant::now());
            let scheduled = ops.deadline(id).expect("periodic stays armed");
            ctx.push(scheduled);
            if ctx.len() == 5 {
                ops.shutdown();
            }
        }
    }

    #[test]
    fn periodic_timer_stays_on_its_grid() {
        let period = Duration::from_millis(20);
        let mut el = EventLoop::new().expect("loop");
        el.add(Box::new(Ticker {
            period,
            fired: Vec::new(),
            one_shot: None,
            cancelled: None,
        }))
        .expect("add");
        let mut next_deadlines = Vec::new();
        el.run(&mut next_deadlines).expect("run");
        // Each re-armed deadline is exactly one period after the previous one.
        for w in next_deadlines.windows(2) {
            assert_eq!(w[1] - w[0], period);
        }
    }

    #[test]
    fn late_periodic_timer_skips_missed_beats() {
        let mut t = Timers::default();
        let s = SubscriberId(0);
        let start = Instant::now();
        let p = Duration::from_millis(10);
        let id = t.arm(s, start, Some(p));
        // The loop got to it 35 ms late: it fires once, then resumes at start + 40 ms.
        assert_eq!(t.pop_due(start + Duration::from_millis(35)), Some((id, s)));
        assert_eq!(t.pop_due(start + Duration::from_millis(35)), None);
        assert_eq!(t.next_deadline(), Some(start + Duration::from_millis(40)));
    }

    struct Notified(Option<Notifier>);

    impl Subscriber<u32> for Notified {
        fn init(&mut self, ops: &mut Ops<'_, u32>) -> io::Result<()> {
            self.0 = Some(ops.notifier());
            let n = ops.notifier();
            std::thread::spawn(move || n.notify());
            Ok(())
        }
        fn on_event(&mut self, _: &Event, _: &mut Ops<'_, u32>, _: &mut u32) {}
        fn on_notify(&mut self, ops: &mut Ops<'_, u32>, ctx: &mut u32) {
            *ctx += 1;
            ops.shutdown();
        }
    }

    #[test]
    fn worker_notification_wakes_the_loop() {
        let mut el = EventLoop::new().expect("loop");
        el.add(Box::new(Notified(None))).expect("add");
        let mut count = 0;
        // No timer is armed: only the worker's notification can end this run.
        el.run(&mut count).expect("run");
        assert_eq!(count, 1);
    }

    #[test]
    fn loop_handle_stops_from_another_thread() {
        let mut el: EventLoop<()> = EventLoop::new().expect("loop");
        let h = el.handle();
        let t = std::thread::spawn(move || h.shutdown());
        el.run(&mut ()).expect("run");
        t.join().expect("joined");
    }
}
