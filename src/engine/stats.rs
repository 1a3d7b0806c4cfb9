//! The engine's counters, per namespace: gauges read from its waiting structures (which
//! count their jobs per namespace), and totals counted as jobs are accepted and finish.
//! Reading them takes two short in-memory locks and no store read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::Engine;
use crate::model::job::JobState;

/// One namespace's totals since the engine started.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    submitted: u64,
    succeeded: u64,
    failed: u64,
    cancelled: u64,
}

/// Totals since the engine started, per namespace. One short lock per count: a map of a
/// few namespaces, no store involved.
#[derive(Debug, Default)]
pub(super) struct Totals {
    by_namespace: Mutex<HashMap<String, Counts>>,
}

impl Totals {
    fn count(&self, namespace: &str, bump: impl FnOnce(&mut Counts)) {
        let mut map = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(namespace) {
            Some(counts) => bump(counts),
            None => bump(map.entry(namespace.to_string()).or_default()),
        }
    }

    /// Counts a job accepted, or recovered unfinished at start-up.
    pub(super) fn submitted(&self, namespace: &str) {
        self.submitted_many(namespace, 1);
    }

    /// Counts `n` jobs of a namespace accepted together (one lock, not `n`).
    pub(super) fn submitted_many(&self, namespace: &str, n: u64) {
        self.count(namespace, |c| c.submitted += n);
    }

    /// Counts a job that has just reached `state` (a terminal state).
    pub(super) fn finished(&self, namespace: &str, state: JobState) {
        self.count(namespace, |c| match state {
            JobState::Succeeded => c.succeeded += 1,
            JobState::Failed => c.failed += 1,
            JobState::Cancelled => c.cancelled += 1,
            _ => {}
        });
    }

    fn of(&self, namespace: &str) -> Counts {
        let map = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
        map.get(namespace).copied().unwrap_or_default()
    }
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub queued: u64,
    pub delayed: u64,
    pub running: u64,
    pub submitted_total: u64,
    pub succeeded_total: u64,
    pub failed_total: u64,
    pub cancelled_total: u64,
    pub watchers: u64,
    pub started_at: SystemTime,
    /// Schedules of every namespace.
    pub schedules: u64,
    /// Slots fired since start and how late.
    pub fire_lag: super::schedules::lag::LagSummary,
}

impl Engine {
    /// One namespace's counters now. `submitted_total` counts jobs accepted since the
    /// engine started and the unfinished ones it recovered at start-up, so it is never
    /// below the finished totals. `watchers` counts open streams of every namespace.
    pub fn stats(&self, namespace: &str) -> Stats {
        let (queued, delayed, running) = {
            let state = self.lock();
            let queued: usize = state.ready.iter().map(|q| q.len_in(namespace)).sum();
            let running: usize = (state.running_per_queue.iter())
                .filter(|((ns, _), _)| ns == namespace)
                .map(|(_, n)| n)
                .sum();
            (queued, state.delayed.len_in(namespace), running)
        };
        let totals = self.shared.totals.of(namespace);
        Stats {
            queued: queued as u64,
            delayed: delayed as u64,
            running: running as u64,
            submitted_total: totals.submitted,
            succeeded_total: totals.succeeded,
            failed_total: totals.failed,
            cancelled_total: totals.cancelled,
            watchers: self.watchers() as u64,
            started_at: self.shared.started_at,
            schedules: self.shared.schedule_count.load(Ordering::Relaxed) as u64,
            fire_lag: self.fire_lag(),
        }
    }
}
