//! The event loop every daemon and simulator of the suite runs on.
//!
//! One thread owns the daemon's state `C`; [`Subscriber`]s own their file descriptors and
//! react to readiness, timers, worker results and notifications, each getting `&mut C`.
//! Nothing polls: the loop sleeps in `epoll_wait` until a source is ready, the earliest timer
//! is due, a worker finished, or a thread called [`Notifier::notify`].
//!
//! * **Timers are keyed.** A subscriber arms a timer with a key of its own type
//!   ([`Subscriber::Timer`], usually an enum) and gets that key back in
//!   [`Subscriber::on_timer`]. A key names one timer: arming it again moves it, and
//!   [`Ops::cancel`] / [`Ops::is_armed`] / [`Ops::deadline`] take the key. No subscriber keeps
//!   timer ids.
//! * **Slow work goes to workers.** [`Ops::spawn`] hands a job to the loop's bounded pool of
//!   worker threads; its result ([`Subscriber::Done`]) comes back to the same subscriber in
//!   [`Subscriber::on_done`], on the loop thread, in a later turn. Threads are started when
//!   every started one is busy, up to the pool's bound, and then reused: no thread per job.
//!
//! Invariants:
//! * tokens come from a counter that only goes up and are never reused; an event for an
//!   unknown token is logged at debug and ignored (mio allows stray events);
//! * subscribers added or removed while events are dispatched take effect after the batch;
//! * timers are monotonic [`Instant`]s; a periodic timer re-arms at `deadline + period`
//!   (drift-free), skipping whole periods it missed rather than firing a burst;
//! * in a turn, notifications and worker results are delivered before due timers;
//! * signals arrive through [`SignalSubscriber`] (signal-hook's self-pipe), never in a
//!   signal handler.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mio::event::{Event, Source};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

mod pool;
mod signal;
#[cfg(test)]
mod tests;
mod timers;

use pool::{Pool, PoolState};
pub use signal::SignalSubscriber;
use timers::Timers;

const WAKER_TOKEN: Token = Token(usize::MAX);
const TIMERFD_TOKEN: Token = Token(usize::MAX - 1);
/// Worker threads of a loop's pool unless [`EventLoop::with_workers`] says otherwise.
pub const DEFAULT_WORKERS: usize = 16;

/// Identifies a subscriber within its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(u64);

/// Something the loop drives. It owns its sources and registers them in [`Subscriber::init`].
pub trait Subscriber<C>: Sized + 'static {
    /// The keys its timers are armed with (an enum of the subscriber's timers).
    type Timer: Clone + PartialEq + fmt::Debug + 'static;
    /// What its worker jobs return ([`Ops::spawn`]); `()` if it starts none.
    type Done: Send + 'static;

    /// Called once when the subscriber joins the loop: register sources, arm timers.
    fn init(&mut self, ops: &mut Ops<'_, C, Self>) -> io::Result<()>;

    /// One of the subscriber's sources is ready. Drain it until `WouldBlock`.
    fn on_event(&mut self, event: &Event, ops: &mut Ops<'_, C, Self>, ctx: &mut C);

    /// The timer armed with `key` is due.
    fn on_timer(&mut self, _key: Self::Timer, _ops: &mut Ops<'_, C, Self>, _ctx: &mut C) {}

    /// A job it spawned finished with `done`.
    fn on_done(&mut self, _done: Self::Done, _ops: &mut Ops<'_, C, Self>, _ctx: &mut C) {}

    /// A [`Notifier`] of this subscriber was poked (by another thread, usually).
    fn on_notify(&mut self, _ops: &mut Ops<'_, C, Self>, _ctx: &mut C) {}
}

/// A subscriber with its key and result types erased, as the loop stores it.
trait Erased<C> {
    fn init(&mut self, raw: Raw<'_, C>) -> io::Result<()>;
    fn on_event(&mut self, event: &Event, raw: Raw<'_, C>, ctx: &mut C);
    fn on_timer(&mut self, key: &dyn Any, raw: Raw<'_, C>, ctx: &mut C);
    fn on_done(&mut self, done: Box<dyn Any + Send>, raw: Raw<'_, C>, ctx: &mut C);
    fn on_notify(&mut self, raw: Raw<'_, C>, ctx: &mut C);
}

impl<C, S: Subscriber<C>> Erased<C> for S {
    fn init(&mut self, raw: Raw<'_, C>) -> io::Result<()> {
        Subscriber::init(self, &mut Ops::new(raw))
    }

    fn on_event(&mut self, event: &Event, raw: Raw<'_, C>, ctx: &mut C) {
        Subscriber::on_event(self, event, &mut Ops::new(raw), ctx);
    }

    fn on_timer(&mut self, key: &dyn Any, raw: Raw<'_, C>, ctx: &mut C) {
        match key.downcast_ref::<S::Timer>() {
            Some(k) => Subscriber::on_timer(self, k.clone(), &mut Ops::new(raw), ctx),
            None => log::error!("A timer key of another type reached its subscriber"),
        }
    }

    fn on_done(&mut self, done: Box<dyn Any + Send>, raw: Raw<'_, C>, ctx: &mut C) {
        match done.downcast::<S::Done>() {
            Ok(d) => Subscriber::on_done(self, *d, &mut Ops::new(raw), ctx),
            Err(_) => log::error!("A worker result of another type reached its subscriber"),
        }
    }

    fn on_notify(&mut self, raw: Raw<'_, C>, ctx: &mut C) {
        Subscriber::on_notify(self, &mut Ops::new(raw), ctx);
    }
}
#[derive(Default)]
struct Shared {
    notified: Mutex<Vec<SubscriberId>>,
    done: Mutex<Vec<(SubscriberId, Box<dyn Any + Send>)>>,
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
        wake(&self.waker);
    }
}

fn wake(waker: &Waker) {
    if let Err(e) = waker.wake() {
        log::error!("Cannot wake the event loop: {e}");
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
        wake(&self.waker);
    }
}

enum Change<C> {
    Add(Box<dyn Erased<C>>),
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
    pool: Arc<Pool>,
}

/// The untyped half of [`Ops`].
struct Raw<'a, C> {
    registry: &'a Registry,
    core: &'a mut Core<C>,
    sub: SubscriberId,
}

/// What subscriber `S` may do to the loop: its own sources, timers and jobs, and loop-wide
/// requests.
pub struct Ops<'a, C, S> {
    raw: Raw<'a, C>,
    sub: PhantomData<fn(&S)>,
}

impl<C, S> fmt::Debug for Ops<'_, C, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ops").field("sub", &self.raw.sub).finish()
    }
}

impl<'a, C, S: Subscriber<C>> Ops<'a, C, S> {
    fn new(raw: Raw<'a, C>) -> Self {
        Ops {
            raw,
            sub: PhantomData,
        }
    }

    /// The subscriber these ops act for.
    pub fn id(&self) -> SubscriberId {
        self.raw.sub
    }

    /// Registers a source of this subscriber; returns its (never reused) token.
    pub fn register<Src: Source + ?Sized>(
        &mut self,
        source: &mut Src,
        interest: Interest,
    ) -> io::Result<Token> {
        let core = &mut *self.raw.core;
        let token = Token(core.next_token);
        core.next_token += 1;
        self.raw.registry.register(source, token, interest)?;
        core.tokens.insert(token, self.raw.sub);
        Ok(token)
    }

    /// Changes the interest of a registered source.
    pub fn reregister<Src: Source + ?Sized>(
        &mut self,
        source: &mut Src,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.raw.registry.reregister(source, token, interest)
    }

    /// Deregisters a source; its token is forgotten and never handed out again.
    pub fn deregister<Src: Source + ?Sized>(&mut self, source: &mut Src, token: Token) {
        if let Err(e) = self.raw.registry.deregister(source) {
            log::debug!("Deregistering {token:?}: {e}");
        }
        self.raw.core.tokens.remove(&token);
    }

    fn arm(&mut self, key: S::Timer, deadline: Instant, period: Option<Duration>) {
        self.cancel(&key);
        let sub = self.raw.sub;
        self.raw
            .core
            .timers
            .arm(sub, Rc::new(key), deadline, period);
    }

    /// Arms the one-shot timer `key` at `deadline` (moving it if it was armed).
    pub fn arm_at(&mut self, key: S::Timer, deadline: Instant) {
        self.arm(key, deadline, None);
    }

    /// Arms the one-shot timer `key` `after` from now (moving it if it was armed).
    pub fn arm_after(&mut self, key: S::Timer, after: Duration) {
        self.arm_at(key, Instant::now() + after);
    }

    /// Arms `key` at `deadline` unless it is armed already (then it keeps its deadline).
    pub fn arm_unless_armed(&mut self, key: S::Timer, deadline: Instant) {
        if !self.is_armed(&key) {
            self.arm_at(key, deadline);
        }
    }

    /// Arms the periodic timer `key`: first at `first`, then every `period` on that grid.
    pub fn arm_periodic(&mut self, key: S::Timer, first: Instant, period: Duration) {
        self.arm(key, first, Some(period));
    }

    /// The deadline the timer `key` fires at next, if armed.
    pub fn deadline(&self, key: &S::Timer) -> Option<Instant> {
        let timers = &self.raw.core.timers;
        let id = timers.find(self.raw.sub, key)?;
        timers.live.get(&id).map(|e| e.deadline)
    }

    /// Whether the timer `key` is armed (or due and not fired yet).
    pub fn is_armed(&self, key: &S::Timer) -> bool {
        self.raw.core.timers.find(self.raw.sub, key).is_some()
    }

    /// Cancels the timer `key`; returns whether it was armed.
    pub fn cancel(&mut self, key: &S::Timer) -> bool {
        let timers = &mut self.raw.core.timers;
        match timers.find(self.raw.sub, key) {
            Some(id) => timers.cancel(id),
            None => false,
        }
    }

    /// Runs `job` on a worker thread; its result reaches [`Subscriber::on_done`] of this
    /// subscriber on the loop thread. Fails (dropping the job) only if the loop has no
    /// worker thread and cannot start one.
    pub fn spawn(&mut self, job: impl FnOnce() -> S::Done + Send + 'static) -> io::Result<()> {
        let waker = Arc::clone(&self.raw.core.waker);
        let shared = Arc::clone(&self.raw.core.shared);
        let sub = self.raw.sub;
        let pool = Arc::clone(&self.raw.core.pool);
        pool.submit(Box::new(move || {
            let done: Box<dyn Any + Send> = Box::new(job());
            shared
                .done
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((sub, done));
            wake(&waker);
        }))
    }

    /// A handle that other threads use to get [`Subscriber::on_notify`] called.
    pub fn notifier(&self) -> Notifier {
        Notifier {
            waker: Arc::clone(&self.raw.core.waker),
            shared: Arc::clone(&self.raw.core.shared),
            sub: self.raw.sub,
        }
    }

    /// A handle that stops the loop from anywhere.
    pub fn loop_handle(&self) -> LoopHandle {
        LoopHandle {
            waker: Arc::clone(&self.raw.core.waker),
            shared: Arc::clone(&self.raw.core.shared),
        }
    }

    /// Adds a subscriber after the current batch of events.
    pub fn add_subscriber<T: Subscriber<C>>(&mut self, sub: Box<T>) {
        self.raw.core.pending.push(Change::Add(sub));
    }

    /// Removes this subscriber (dropping it, which closes its sources) after the batch.
    pub fn remove_self(&mut self) {
        let sub = self.raw.sub;
        self.raw.core.pending.push(Change::Remove(sub));
    }

    /// Makes [`EventLoop::run`] return after the current batch.
    pub fn shutdown(&mut self) {
        self.raw.core.shutdown = true;
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
    subs: HashMap<SubscriberId, Box<dyn Erased<C>>>,
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

impl<C> Drop for EventLoop<C> {
    fn drop(&mut self) {
        // Idle workers end; a busy one ends after its job (whose result nobody takes).
        self.core.pool.stop();
    }
}

impl<C> EventLoop<C> {
    /// A new loop with no subscribers and a pool of up to [`DEFAULT_WORKERS`] workers.
    pub fn new() -> io::Result<Self> {
        Self::with_workers(DEFAULT_WORKERS)
    }

    /// A new loop whose pool runs at most `workers` jobs at once (at least one).
    pub fn with_workers(workers: usize) -> io::Result<Self> {
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
                pool: Arc::new(Pool {
                    state: Mutex::new(PoolState::default()),
                    work: Condvar::new(),
                    max: workers.max(1),
                }),
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
    pub fn add<S: Subscriber<C>>(&mut self, sub: Box<S>) -> io::Result<SubscriberId> {
        self.add_erased(sub)
    }

    fn add_erased(&mut self, mut sub: Box<dyn Erased<C>>) -> io::Result<SubscriberId> {
        let id = SubscriberId(self.core.next_sub);
        self.core.next_sub += 1;
        let raw = Raw {
            registry: self.poll.registry(),
            core: &mut self.core,
            sub: id,
        };
        if let Err(e) = sub.init(raw) {
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

    /// Worker threads started so far (they stay for the loop's life).
    pub fn workers(&self) -> usize {
        self.core.pool.lock().threads
    }

    fn forget(&mut self, id: SubscriberId) {
        self.core.tokens.retain(|_, s| *s != id);
        self.core.timers.cancel_all(id);
    }

    fn with_sub(&mut self, id: SubscriberId, f: impl FnOnce(&mut dyn Erased<C>, Raw<'_, C>)) {
        let Some(mut sub) = self.subs.remove(&id) else {
            return;
        };
        let raw = Raw {
            registry: self.poll.registry(),
            core: &mut self.core,
            sub: id,
        };
        f(sub.as_mut(), raw);
        self.subs.insert(id, sub);
    }

    fn apply_pending(&mut self) {
        while !self.core.pending.is_empty() {
            let pending = std::mem::take(&mut self.core.pending);
            for change in pending {
                match change {
                    Change::Add(sub) => {
                        if let Err(e) = self.add_erased(sub) {
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

    /// Worker results, then notifications, each to its subscriber.
    fn deliver_notifications(&mut self, ctx: &mut C) {
        let done = std::mem::take(
            &mut *self
                .core
                .shared
                .done
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (id, result) in done {
            self.with_sub(id, |sub, raw| sub.on_done(result, raw, ctx));
        }
        let notified = std::mem::take(
            &mut *self
                .core
                .shared
                .notified
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for id in notified {
            self.with_sub(id, |sub, raw| sub.on_notify(raw, ctx));
        }
    }

    fn stopping(&self) -> bool {
        self.core.shutdown || self.core.shared.stop.load(Ordering::SeqCst)
    }

    /// Runs one batch: waits (at most `max_wait`, or until the next timer), dispatches the
    /// ready events, the worker results and notifications, and the due timers, then applies
    /// deferred changes.
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
                continue; // the notified and done queues are read below, every turn
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
            self.with_sub(id, |sub, raw| sub.on_event(event, raw, ctx));
        }
        self.events = events;
        // Notifications first, then timers: a notification raised by a handler in this
        // batch (no waker event of its own yet) is not left behind due timers.
        self.deliver_notifications(ctx);
        let now = Instant::now();
        for timer in self.core.timers.take_due(now) {
            // Skipped if a handler of this turn cancelled it after it became due.
            if let Some((id, key)) = self.core.timers.in_flight.remove(&timer) {
                self.with_sub(id, |sub, raw| sub.on_timer(&*key, raw, ctx));
            }
        }
        self.apply_pending();
        Ok(())
    }
}
