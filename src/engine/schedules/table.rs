//! The schedules this engine fires, in memory: each with its checked spec and the time it
//! next needs looking at, and a timer index ordered by that time. The store is the truth;
//! this is what the last write left there (or what start-up read).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use crate::model::schedule::{Schedule, Spec};

/// A schedule's key: (namespace, id).
pub(crate) type Key = (String, String);

pub(super) fn key_of(schedule: &Schedule) -> Key {
    (schedule.namespace.clone(), schedule.id.clone())
}

/// One schedule and when it next fires.
pub(crate) struct Entry {
    pub schedule: Schedule,
    pub spec: Spec,
    /// When its next slot fires (the slot plus its jitter); `None` while paused or when no
    /// slot is left.
    pub wake: Option<SystemTime>,
}

impl Entry {
    /// The jitter seed: the same slot of the same schedule always gets the same jitter.
    pub fn seed(&self) -> String {
        format!("{}/{}", self.schedule.namespace, self.schedule.id)
    }

    /// The slot after the last one handled (or after creation), as its fire time.
    fn next_wake(&self) -> Option<SystemTime> {
        if self.schedule.paused {
            return None;
        }
        let last = (self.schedule.state.last_slot).unwrap_or(self.schedule.created_at);
        let slot = self.spec.next_after(last)?;
        Some(self.spec.fire_time(&self.seed(), slot))
    }
}

/// A schedule's handle in the table: timer entries and due lists carry this number, not
/// the two strings of its key, so the hot path neither hashes nor compares strings.
pub(crate) type Handle = u64;

/// Every schedule, and a timer over their wake times.
#[derive(Default)]
pub(crate) struct Table {
    entries: HashMap<Handle, Entry>,
    handles: HashMap<Key, Handle>,
    timer: BTreeSet<(SystemTime, Handle)>,
    next_handle: Handle,
    /// How many entries, readable without the table's lock (for GetStats).
    count: Arc<AtomicUsize>,
}

impl Table {
    /// Adds or replaces a schedule (whose spec is already checked) and times it.
    pub fn put(&mut self, schedule: Schedule, spec: Spec) {
        let key = key_of(&schedule);
        self.remove(&key);
        self.next_handle += 1;
        let handle = self.next_handle;
        self.handles.insert(key, handle);
        self.entries.insert(
            handle,
            Entry {
                schedule,
                spec,
                wake: None,
            },
        );
        self.retime(handle);
        self.count.store(self.entries.len(), Ordering::Relaxed);
    }

    /// Replaces a schedule's record, keeping its spec if the record's spec is the same.
    pub fn update(&mut self, schedule: Schedule) {
        let key = key_of(&schedule);
        let handle = self.handles.get(&key).copied();
        match handle.and_then(|h| self.entries.get(&h)) {
            Some(entry) if entry.schedule.spec == schedule.spec => {
                self.advance(handle.unwrap_or_default(), schedule);
            }
            _ => match spec_of(&schedule) {
                Some(spec) => self.put(schedule, spec),
                None => drop(self.remove(&key)),
            },
        }
    }

    /// Replaces the record of the schedule at `handle` (its spec unchanged, as firing
    /// leaves it) and times it again.
    pub fn advance(&mut self, handle: Handle, schedule: Schedule) {
        if let Some(entry) = self.entries.get_mut(&handle) {
            entry.schedule = schedule;
            self.retime(handle);
        }
    }

    /// Takes the entry's old wake time off the timer and puts its new one on.
    fn retime(&mut self, handle: Handle) {
        let Some(entry) = self.entries.get_mut(&handle) else {
            return;
        };
        if let Some(wake) = entry.wake {
            self.timer.remove(&(wake, handle));
        }
        entry.wake = entry.next_wake();
        if let Some(wake) = entry.wake {
            self.timer.insert((wake, handle));
        }
    }

    pub fn remove(&mut self, key: &Key) -> Option<Entry> {
        let handle = self.handles.remove(key)?;
        let entry = self.entries.remove(&handle)?;
        if let Some(wake) = entry.wake {
            self.timer.remove(&(wake, handle));
        }
        self.count.store(self.entries.len(), Ordering::Relaxed);
        Some(entry)
    }

    /// How many schedules a namespace has (a walk over every key: only a create under a
    /// schedule quota asks).
    pub fn count_in(&self, namespace: &str) -> u64 {
        self.handles
            .keys()
            .filter(|(ns, _)| ns == namespace)
            .count() as u64
    }

    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(self.handles.get(key)?)
    }

    pub fn handle(&self, key: &Key) -> Option<Handle> {
        self.handles.get(key).copied()
    }

    pub fn at(&self, handle: Handle) -> Option<&Entry> {
        self.entries.get(&handle)
    }

    /// The earliest wake time.
    pub fn next_wake(&self) -> Option<SystemTime> {
        self.timer.first().map(|(at, _)| *at)
    }

    /// The schedules due at `now`, earliest first, at most `limit`.
    pub fn due(&self, now: SystemTime, limit: usize) -> Vec<Handle> {
        (self.timer.iter())
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, handle)| *handle)
            .collect()
    }

    /// Puts a schedule's wake time off to `at` (a write that failed is tried again then).
    pub fn defer(&mut self, handle: Handle, at: SystemTime) {
        if let Some(entry) = self.entries.get_mut(&handle) {
            if let Some(wake) = entry.wake {
                self.timer.remove(&(wake, handle));
            }
            entry.wake = Some(at);
            self.timer.insert((at, handle));
        }
    }

    /// The entry count, shared: it follows the table.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.count.clone()
    }
}

/// A stored schedule's spec, checked; `None` (and logged) if it no longer checks out,
/// e.g. a time zone the system's database has dropped.
pub(crate) fn spec_of(schedule: &Schedule) -> Option<Spec> {
    let input = schedule.spec.input()?;
    match Spec::new(input) {
        Ok(spec) => Some(spec),
        Err(violations) => {
            tracing::error!(
                namespace = %schedule.namespace,
                id = %schedule.id,
                ?violations,
                "a stored schedule's spec no longer checks out; it will not fire"
            );
            None
        }
    }
}
