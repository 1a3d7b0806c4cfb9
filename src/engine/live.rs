//! The live log of a job that has not finished: the newest events of its log, kept in
//! memory beside the store's copy, in the watch channel that wakes its watchers. A watcher
//! whose cursor the tail covers reads from memory (no store read per watcher per event);
//! one that is further behind reads the store, as a replay does.
//!
//! The tail mirrors the store's log exactly: the same seqs, and the same coalescing (a
//! progress event appended right after a progress event replaces it). If the engine ever
//! learns of a seq it did not see appended (a gap), the tail restarts from there, so it
//! can be short but never wrong.
//!
//! A job nobody watches has no channel, only its last seq: a million queued jobs should
//! not hold a million channels. The first watcher makes one; the first event after the
//! last watcher has gone drops it.

use std::collections::VecDeque;
use std::time::SystemTime;

use tokio::sync::watch;

use super::Engine;
use crate::model::job::{Event, EventData, JobId, whole_millis};

/// A non-terminal job as its watchers see it.
#[derive(Debug)]
pub enum Live {
    /// Nobody watches: only the seq of the job's newest event.
    Unwatched(u64),
    /// Watched: the channel carrying the job's live log.
    Watched(watch::Sender<LiveLog>),
}

impl Engine {
    /// Makes a job's live entry (its log ends at `last_seq`) before anything can watch it.
    pub(super) fn go_live(&self, id: JobId, last_seq: u64) {
        self.lock().live.insert(id, Live::Unwatched(last_seq));
    }

    /// A receiver of the job's live log, if the job is not terminal.
    pub(super) fn subscribe(&self, id: JobId) -> Option<watch::Receiver<LiveLog>> {
        let mut state = self.lock();
        let live = state.live.get_mut(&id)?;
        Some(match live {
            Live::Watched(tx) => tx.subscribe(),
            Live::Unwatched(last_seq) => {
                let (tx, rx) = watch::channel(LiveLog::starting_at(*last_seq));
                *live = Live::Watched(tx);
                rx
            }
        })
    }

    /// Whether anyone is watching the job's live log right now.
    pub(super) fn watched(&self, id: JobId) -> bool {
        matches!(self.lock().live.get(&id), Some(Live::Watched(tx)) if tx.receiver_count() > 0)
    }

    /// Adds events to the job's live log before the store has them, numbered as the store
    /// will number them (the next seqs: each job's log has one writer at a time). If the
    /// write then fails, the live log notices the gap at the next append and starts over.
    /// Returns the seq the last event got (0 if the job is terminal).
    pub(super) fn publish_next(&self, id: JobId, events: &[EventData], at: SystemTime) -> u64 {
        self.append_live(id, events, None, at)
    }

    /// Adds events the store has just appended (the last one at `seq`) to the job's live
    /// log and wakes its watchers.
    pub(super) fn publish(&self, id: JobId, events: &[EventData], seq: u64, at: SystemTime) {
        self.append_live(id, events, Some(seq), at);
    }

    /// Appends to the live entry; the last event gets `seq`, or the next seqs if None.
    /// The channel is sent to outside the engine's lock, so waking watchers never holds
    /// it; a channel whose watchers have all gone is dropped here.
    fn append_live(
        &self,
        id: JobId,
        events: &[EventData],
        seq: Option<u64>,
        at: SystemTime,
    ) -> u64 {
        let next = |last: u64| seq.unwrap_or(last + events.len() as u64);
        let tx = {
            let mut state = self.lock();
            let Some(live) = state.live.get_mut(&id) else {
                return 0;
            };
            match live {
                Live::Unwatched(last) => {
                    *last = next(*last);
                    return *last;
                }
                Live::Watched(tx) if tx.receiver_count() == 0 => {
                    let last = next(tx.borrow().last_seq);
                    *live = Live::Unwatched(last);
                    return last;
                }
                Live::Watched(tx) => tx.clone(),
            }
        };
        let mut last = 0;
        tx.send_modify(|log| {
            last = next(log.last_seq);
            log.appended_for(tx.receiver_count(), events, last, at);
        });
        last
    }
}

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
    use crate::model::job::{JobState, Progress};

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
