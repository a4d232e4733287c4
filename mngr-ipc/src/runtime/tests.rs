//! The loop's behaviour with real sources, timers, workers and threads.

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
    fn on_event(&mut self, _: &Event, _: &mut Ops<'_, Vec<Instant>, Self>, _: &mut Vec<Instant>) {}
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

struct Panicky;

impl Subscriber<u32> for Panicky {
    type Timer = ();
    type Done = u32;

    fn init(&mut self, ops: &mut Ops<'_, u32, Self>) -> io::Result<()> {
        // One worker: it must survive the panicking job to run the next one.
        ops.spawn(|| panic!("a bug in a job"))?;
        ops.spawn(|| 7)?;
        // The bound of the test: a dead worker would leave the loop waiting forever.
        ops.arm_after((), Duration::from_secs(10));
        Ok(())
    }
    fn on_event(&mut self, _: &Event, _: &mut Ops<'_, u32, Self>, _: &mut u32) {}
    fn on_done(&mut self, done: u32, ops: &mut Ops<'_, u32, Self>, ctx: &mut u32) {
        *ctx = done;
        ops.shutdown();
    }
    fn on_timer(&mut self, _: (), ops: &mut Ops<'_, u32, Self>, _: &mut u32) {
        ops.shutdown();
    }
}

#[test]
fn a_panicking_job_does_not_take_its_worker_down() {
    let mut el = EventLoop::with_workers(1).expect("loop");
    el.add(Box::new(Panicky)).expect("add");
    let mut done = 0;
    el.run(&mut done).expect("run");
    assert_eq!(done, 7, "the job after the panicking one ran");
    assert_eq!(el.workers(), 1);
}
