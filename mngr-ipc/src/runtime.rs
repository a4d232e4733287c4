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
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
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
use signal_hook_mio::v1_0::Signals;

const WAKER_TOKEN: Token = Token(usize::MAX);
const TIMERFD_TOKEN: Token = Token(usize::MAX - 1);
/// Worker threads of a loop's pool unless [`EventLoop::with_workers`] says otherwise.
pub const DEFAULT_WORKERS: usize = 16;

/// Identifies a subscriber within its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct TimerId(u64);

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

struct TimerEntry {
    sub: SubscriberId,
    key: Rc<dyn Any>,
    deadline: Instant,
    period: Option<Duration>,
}

#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerId)>>,
    live: HashMap<TimerId, TimerEntry>,
    /// Popped as due in this turn, not yet fired: cancelling one still stops it.
    in_flight: HashMap<TimerId, (SubscriberId, Rc<dyn Any>)>,
    next: u64,
}

impl Timers {
    /// The live or in-flight timer of `sub` armed with `key`.
    fn find<K: PartialEq + 'static>(&self, sub: SubscriberId, key: &K) -> Option<TimerId> {
        let same =
            |s: SubscriberId, k: &Rc<dyn Any>| s == sub && k.downcast_ref::<K>() == Some(key);
        self.live
            .iter()
            .find(|(_, e)| same(e.sub, &e.key))
            .map(|(id, _)| *id)
            .or_else(|| {
                self.in_flight
                    .iter()
                    .find(|(_, (s, k))| same(*s, k))
                    .map(|(id, _)| *id)
            })
    }

    fn arm(
        &mut self,
        sub: SubscriberId,
        key: Rc<dyn Any>,
        deadline: Instant,
        period: Option<Duration>,
    ) -> TimerId {
        let id = TimerId(self.next);
        self.next += 1;
        self.live.insert(
            id,
            TimerEntry {
                sub,
                key,
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
    fn pop_due(&mut self, now: Instant) -> Option<(TimerId, SubscriberId, Rc<dyn Any>)> {
        let deadline = self.next_deadline()?;
        if deadline > now {
            return None;
        }
        let Reverse((_, id)) = self.heap.pop().expect("peeked above");
        let entry = self.live.get_mut(&id).expect("checked live above");
        let fired = (id, entry.sub, Rc::clone(&entry.key));
        match entry.period {
            Some(period) => {
                let mut next = entry.deadline + period;
                if next <= now {
                    // Late by more than a period: skip the missed beats, stay on the grid.
                    let behind = now.duration_since(entry.deadline).as_nanos();
                    let periods = behind / period.as_nanos().max(1);
                    let skip = u32::try_from(periods).unwrap_or(u32::MAX);
                    log::debug!("A periodic timer missed {skip} period(s)");
                    next = entry.deadline + period.saturating_mul(skip.saturating_add(1));
                }
                entry.deadline = next;
                self.heap.push(Reverse((next, id)));
            }
            None => {
                self.live.remove(&id);
            }
        }
        Some(fired)
    }

    fn cancel(&mut self, id: TimerId) -> bool {
        let was = self.live.remove(&id).is_some() | self.in_flight.remove(&id).is_some();
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
        self.in_flight.retain(|_, (s, _)| *s != sub);
    }

    /// Every timer due at `now`, each fired once this turn: a timer re-armed at a past
    /// deadline by a handler waits for the next turn instead of spinning this one.
    fn take_due(&mut self, now: Instant) -> Vec<TimerId> {
        let mut due = Vec::new();
        while let Some((id, sub, key)) = self.pop_due(now) {
            self.in_flight.insert(id, (sub, key));
            due.push(id);
        }
        due
    }
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    stop: bool,
}

/// The loop's worker threads: started on demand up to `max`, then reused.
struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
    max: usize,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, starting a thread if every started one is busy. Fails (and drops the
    /// job) only if no worker thread exists and none can be started.
    fn submit(self: &Arc<Self>, job: Job) -> io::Result<()> {
        let mut st = self.lock();
        st.queue.push_back(job);
        if st.idle < st.queue.len() && st.threads < self.max {
            st.threads += 1;
            let pool = Arc::clone(self);
            let started = std::thread::Builder::new()
                .name("worker".into())
                .spawn(move || pool.work_loop());
            if let Err(e) = started {
                st.threads -= 1;
                if st.threads == 0 {
                    st.queue.pop_back();
                    return Err(e);
                }
                log::warn!("Cannot start another worker ({e}); the job waits for a free one");
            }
        }
        drop(st);
        self.work.notify_one();
        Ok(())
    }

    fn work_loop(&self) {
        loop {
            let mut st = self.lock();
            let job = loop {
                if let Some(job) = st.queue.pop_front() {
                    break job;
                }
                if st.stop {
                    st.threads -= 1;
                    return;
                }
                st.idle += 1;
                st = self.work.wait(st).unwrap_or_else(PoisonError::into_inner);
                st.idle -= 1;
            };
            drop(st);
            job();
        }
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.work.notify_all();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream as StdStream;

    #[derive(Default)]
    struct Log(Vec<String>);

    struct Echo {
        stream: mio::net::UnixStream,
        token: Option<Token>,
    }

    impl Subscriber<Log> for Echo {
        type Timer = ();
        type Done = ();

        fn init(&mut self, ops: &mut Ops<'_, Log, Self>) -> io::Result<()> {
            self.token = Some(ops.register(&mut self.stream, Interest::READABLE)?);
            Ok(())
        }
        fn on_event(&mut self, _event: &Event, ops: &mut Ops<'_, Log, Self>, ctx: &mut Log) {
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

    #[derive(Debug, Clone, PartialEq)]
    enum Tick {
        Beat,
        Once,
        Cancelled,
        Moved(u32),
    }

    struct Ticker {
        period: Duration,
        fired: Vec<Tick>,
    }

    impl Subscriber<Vec<Instant>> for Ticker {
        type Timer = Tick;
        type Done = ();

        fn init(&mut self, ops: &mut Ops<'_, Vec<Instant>, Self>) -> io::Result<()> {
            let start = Instant::now();
            ops.arm_periodic(Tick::Beat, start + self.period, self.period);
            ops.arm_after(Tick::Once, self.period * 2);
            ops.arm_after(Tick::Cancelled, self.period);
            assert!(ops.cancel(&Tick::Cancelled));
            assert!(!ops.cancel(&Tick::Cancelled), "cancelled once");
            // Arming a key again moves its one timer: it fires once, at the later time.
            ops.arm_after(Tick::Moved(1), self.period);
            ops.arm_after(Tick::Moved(1), self.period * 3);
            assert!(ops.deadline(&Tick::Moved(1)) > Some(start + self.period * 2));
            assert!(!ops.is_armed(&Tick::Moved(2)), "keys compare by value");
            Ok(())
        }
        fn on_event(
            &mut self,
            _: &Event,
            _: &mut Ops<'_, Vec<Instant>, Self>,
            _: &mut Vec<Instant>,
        ) {
        }
        fn on_timer(
            &mut self,
            key: Tick,
            ops: &mut Ops<'_, Vec<Instant>, Self>,
            ctx: &mut Vec<Instant>,
        ) {
            assert_ne!(key, Tick::Cancelled, "a cancelled timer fired");
            self.fired.push(key.clone());
            if key != Tick::Beat {
                return;
            }
            let scheduled = ops.deadline(&Tick::Beat).expect("periodic stays armed");
            ctx.push(scheduled);
            if ctx.len() == 5 {
                assert_eq!(
                    self.fired.iter().filter(|k| **k == Tick::Moved(1)).count(),
                    1,
                    "{:?}",
                    self.fired
                );
                assert!(self.fired.contains(&Tick::Once));
                ops.shutdown();
            }
        }
    }

    #[test]
    fn keyed_timers_fire_with_their_keys_and_periodic_ones_stay_on_their_grid() {
        let period = Duration::from_millis(20);
        let mut el = EventLoop::new().expect("loop");
        el.add(Box::new(Ticker {
            period,
            fired: Vec::new(),
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
        let id = t.arm(s, Rc::new(()), start, Some(p));
        // The loop got to it 35 ms late: it fires once, then resumes at start + 40 ms.
        assert_eq!(
            t.pop_due(start + Duration::from_millis(35))
                .map(|f| (f.0, f.1)),
            Some((id, s))
        );
        assert!(t.pop_due(start + Duration::from_millis(35)).is_none());
        assert_eq!(t.next_deadline(), Some(start + Duration::from_millis(40)));
    }

    struct Notified(Option<Notifier>);

    impl Subscriber<u32> for Notified {
        type Timer = ();
        type Done = ();

        fn init(&mut self, ops: &mut Ops<'_, u32, Self>) -> io::Result<()> {
            self.0 = Some(ops.notifier());
            let n = ops.notifier();
            std::thread::spawn(move || n.notify());
            Ok(())
        }
        fn on_event(&mut self, _: &Event, _: &mut Ops<'_, u32, Self>, _: &mut u32) {}
        fn on_notify(&mut self, ops: &mut Ops<'_, u32, Self>, ctx: &mut u32) {
            *ctx += 1;
            ops.shutdown();
        }
    }

    #[test]
    fn notification_from_another_thread_wakes_the_loop() {
        let mut el = EventLoop::new().expect("loop");
        el.add(Box::new(Notified(None))).expect("add");
        let mut count = 0;
        // No timer is armed: only the thread's notification can end this run.
        el.run(&mut count).expect("run");
        assert_eq!(count, 1);
    }

    /// Spawns `jobs` jobs that each wait for a gate, then report their number.
    struct Jobs {
        jobs: u32,
        gate: Arc<(Mutex<bool>, Condvar)>,
        seen: Vec<u32>,
        threads: Vec<std::thread::ThreadId>,
    }

    impl Subscriber<()> for Jobs {
        type Timer = ();
        type Done = (u32, std::thread::ThreadId);

        fn init(&mut self, ops: &mut Ops<'_, (), Self>) -> io::Result<()> {
            for n in 0..self.jobs {
                let gate = Arc::clone(&self.gate);
                ops.spawn(move || {
                    let (open, cv) = &*gate;
                    let mut o = open.lock().expect("gate");
                    while !*o {
                        o = cv.wait(o).expect("gate");
                    }
                    (n, std::thread::current().id())
                })?;
            }
            let (open, cv) = &*self.gate;
            *open.lock().expect("gate") = true;
            cv.notify_all();
            Ok(())
        }
        fn on_event(&mut self, _: &Event, _: &mut Ops<'_, (), Self>, _: &mut ()) {}
        fn on_done(&mut self, done: Self::Done, ops: &mut Ops<'_, (), Self>, _: &mut ()) {
            self.seen.push(done.0);
            self.threads.push(done.1);
            if self.seen.len() == usize::try_from(self.jobs).expect("small") {
                let mut seen = self.seen.clone();
                seen.sort_unstable();
                assert_eq!(seen, (0..self.jobs).collect::<Vec<_>>());
                let distinct: HashSet<_> = self.threads.iter().collect();
                assert!(distinct.len() <= 3, "more threads than the pool allows");
                assert_ne!(
                    std::thread::current().id(),
                    self.threads[0],
                    "results arrive on the loop thread"
                );
                ops.shutdown();
            }
        }
    }

    #[test]
    fn jobs_run_on_a_bounded_pool_and_results_come_back_to_the_subscriber() {
        let mut el = EventLoop::with_workers(3).expect("loop");
        el.add(Box::new(Jobs {
            jobs: 20,
            gate: Arc::new((Mutex::new(false), Condvar::new())),
            seen: Vec::new(),
            threads: Vec::new(),
        }))
        .expect("add");
        el.run(&mut ()).expect("run");
        assert!(el.workers() <= 3, "{} workers", el.workers());
        assert!(el.workers() >= 1);
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
