//! The engine's counters: gauges read from its waiting structures, and totals counted as
//! jobs are accepted and finish. Atomics only, so reading them costs no lock on the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::Engine;
use crate::model::job::JobState;

/// Totals since the engine started.
#[derive(Debug, Default)]
pub(super) struct Totals {
    submitted: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
}

impl Totals {
    pub(super) fn submitted(&self) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a job that has just reached `state` (a terminal state).
    pub(super) fn finished(&self, state: JobState) {
        let counter = match state {
            JobState::Succeeded => &self.succeeded,
            JobState::Failed => &self.failed,
            JobState::Cancelled => &self.cancelled,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
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
}

impl Engine {
    /// The counters now.
    pub fn stats(&self) -> Stats {
        let (io, cpu, running) = self.load();
        let totals = &self.shared.totals;
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            queued: (io + cpu) as u64,
            delayed: self.delayed() as u64,
            running: running as u64,
            submitted_total: read(&totals.submitted),
            succeeded_total: read(&totals.succeeded),
            failed_total: read(&totals.failed),
            cancelled_total: read(&totals.cancelled),
            watchers: self.watchers() as u64,
            started_at: self.shared.started_at,
        }
    }
}
