//! The loop's timers: keyed per subscriber, on a heap of monotonic deadlines.

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::SubscriberId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct TimerId(pub(super) u64);

pub(super) struct TimerEntry {
    pub(super) sub: SubscriberId,
    pub(super) key: Rc<dyn Any>,
    pub(super) deadline: Instant,
    pub(super) period: Option<Duration>,
}

#[derive(Default)]
pub(super) struct Timers {
    pub(super) heap: BinaryHeap<Reverse<(Instant, TimerId)>>,
    pub(super) live: HashMap<TimerId, TimerEntry>,
    /// Popped as due in this turn, not yet fired: cancelling one still stops it.
    pub(super) in_flight: HashMap<TimerId, (SubscriberId, Rc<dyn Any>)>,
    pub(super) next: u64,
}

impl Timers {
    /// The live or in-flight timer of `sub` armed with `key`.
    pub(super) fn find<K: PartialEq + 'static>(
        &self,
        sub: SubscriberId,
        key: &K,
    ) -> Option<TimerId> {
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

    pub(super) fn arm(
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
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
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
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(TimerId, SubscriberId, Rc<dyn Any>)> {
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

    pub(super) fn cancel(&mut self, id: TimerId) -> bool {
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

    pub(super) fn cancel_all(&mut self, sub: SubscriberId) {
        self.live.retain(|_, e| e.sub != sub);
        self.in_flight.retain(|_, (s, _)| *s != sub);
    }

    /// Every timer due at `now`, each fired once this turn: a timer re-armed at a past
    /// deadline by a handler waits for the next turn instead of spinning this one.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<TimerId> {
        let mut due = Vec::new();
        while let Some((id, sub, key)) = self.pop_due(now) {
            self.in_flight.insert(id, (sub, key));
            due.push(id);
        }
        due
    }
}
