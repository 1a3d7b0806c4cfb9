//! The live log of a job that has not finished: the newest events of its log, kept in
//! memory beside the store's copy, in the watch channel that wakes its watchers. A watcher
//! whose cursor the tail covers reads from memory (no store read per watcher per event);
//! one that is further behind reads the store, as a replay does.
//!
//! The tail mirrors the store's log exactly: the same seqs, and the same coalescing (a
//! progress event appended right after a progress event replaces it). If the engine ever
//! learns of a seq it did not see appended (a gap), the tail restarts from there, so it
//! can be short but never wrong.

use std::collections::VecDeque;
use std::time::SystemTime;

use super::job::{Event, EventData, whole_millis};

/// The most events a tail keeps; older ones are read from the store.
const TAIL: usize = 256;

/// The newest part of one job's log.
#[derive(Debug, Clone, Default)]
pub struct LiveLog {
    /// The seq of the job's newest event.
    pub last_seq: u64,
    /// Every surviving event with a seq above `covered_after`, oldest first.
    tail: VecDeque<Event>,
    covered_after: u64,
}

impl LiveLog {
    /// A log whose first `last_seq` events are only in the store.
    pub fn starting_at(last_seq: u64) -> Self {
        LiveLog {
            last_seq,
            tail: VecDeque::new(),
            covered_after: last_seq,
        }
    }

    /// Records that `events` were appended, the last one getting seq `last_seq`.
    pub fn appended(&mut self, events: &[EventData], last_seq: u64, at: SystemTime) {
        let first = last_seq + 1 - events.len() as u64;
        if first != self.last_seq + 1 {
            // Appended without us seeing it: start over after what we missed.
            *self = LiveLog::starting_at(first - 1);
        }
        for (seq, data) in (first..).zip(events) {
            let superseded = matches!(data, EventData::Progress(_))
                && self.tail.back().is_some_and(|last| {
                    last.seq == self.last_seq && matches!(last.data, EventData::Progress(_))
                });
            if superseded {
                self.tail.pop_back();
            }
            self.tail.push_back(Event {
                seq,
                at: whole_millis(at),
                data: data.clone(),
            });
            self.last_seq = seq;
        }
        while self.tail.len() > TAIL {
            if let Some(dropped) = self.tail.pop_front() {
                self.covered_after = dropped.seq;
            }
        }
    }

    /// As `appended`, but with no one watching (`watchers` is 0) the tail is dropped
    /// instead: most jobs are never watched, and a queue of a million jobs should not
    /// hold a million copies of their first event. A watcher who comes later reads those
    /// events from the store.
    pub fn appended_for(
        &mut self,
        watchers: usize,
        events: &[EventData],
        last_seq: u64,
        at: SystemTime,
    ) {
        if watchers == 0 {
            *self = LiveLog::starting_at(last_seq);
        } else {
            self.appended(events, last_seq, at);
        }
    }

    /// Up to `limit` events after `cursor`, if the tail covers them (None: read the store).
    pub fn after(&self, cursor: u64, limit: usize) -> Option<Vec<Event>> {
        if cursor < self.covered_after {
            return None;
        }
        let start = self.tail.partition_point(|e| e.seq <= cursor);
        Some(self.tail.iter().skip(start).take(limit).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::job::{JobState, Progress};

    fn progress(done: u64) -> EventData {
        EventData::Progress(Progress::counted(done, 10))
    }

    fn state() -> EventData {
        EventData::State {
            state: JobState::Running,
            attempt: 1,
            run_at: None,
            error: None,
        }
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn coalesces_progress_like_the_store_and_serves_what_it_covers() {
        let now = SystemTime::now();
        let mut log = LiveLog::starting_at(0);
        log.appended(&[state()], 1, now);
        log.appended(&[progress(1)], 2, now);
        log.appended(&[progress(2), progress(3)], 4, now);
        log.appended(&[state()], 5, now);
        assert_eq!(seqs(&log.after(0, 10).unwrap()), [1, 4, 5]);
        assert_eq!(seqs(&log.after(4, 10).unwrap()), [5]);
        assert_eq!(seqs(&log.after(1, 1).unwrap()), [4]);
    }

    #[test]
    fn a_gap_or_an_overflow_sends_older_cursors_to_the_store() {
        let now = SystemTime::now();
        let mut log = LiveLog::starting_at(3);
        assert!(log.after(2, 10).is_none());
        assert!(log.after(3, 10).unwrap().is_empty());
        log.appended(&[state()], 7, now); // seqs 4 to 6 were never seen here
        assert!(log.after(5, 10).is_none());
        assert_eq!(seqs(&log.after(6, 10).unwrap()), [7]);
        for seq in 8..8 + TAIL as u64 {
            log.appended(&[state()], seq, now);
        }
        assert!(log.after(6, 10).is_none(), "seq 7 has left the tail");
        assert_eq!(log.after(7, TAIL).unwrap().len(), TAIL);
    }
}
