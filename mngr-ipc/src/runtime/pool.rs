//! The loop's bounded pool of worker threads.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

pub(super) type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub(super) struct PoolState {
    queue: VecDeque<Job>,
    pub(super) threads: usize,
    idle: usize,
    stop: bool,
}

/// The loop's worker threads: started on demand up to `max`, then reused.
pub(super) struct Pool {
    pub(super) state: Mutex<PoolState>,
    pub(super) work: Condvar,
    pub(super) max: usize,
}

impl Pool {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, starting a thread if every started one is busy. Fails (and drops the
    /// job) only if no worker thread exists and none can be started.
    pub(super) fn submit(self: &Arc<Self>, job: Job) -> io::Result<()> {
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
            // A panicking job is a bug (release builds abort on it); in other builds the
            // worker survives it, so the pool keeps its threads. The job's result is lost.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                log::error!("A worker job panicked; its result is lost");
            }
        }
    }

    pub(super) fn stop(&self) {
        self.lock().stop = true;
        self.work.notify_all();
    }
}
