//! Watching a job: a cursor over its event log. A watcher reads the events after its
//! cursor (replay and live reading are the same operation) from the job's live log in
//! memory when that covers the cursor, else from the store; hands them out; and waits on
//! the live log's channel for more. There is no per-watcher queue, so the job never waits
//! for a watcher and a slow watcher only reads a bigger batch next time (in which
//! superseded progress has already been coalesced away).
//!
//! No gap and no duplicate: the watcher subscribes to the channel *before* its first
//! read, so every append after that read wakes it, and it only ever asks for seq > cursor.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use futures_util::Stream;
use tokio::sync::watch;

use super::live::LiveLog;
use super::{Engine, EngineError};
use crate::model::job::{Event, JobId};

/// Events read from the store per batch; bounds a watcher's memory.
const BATCH: usize = 256;

/// A job's events, replayed then live, ending after the terminal event.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, EngineError>> + Send>>;

struct Watcher {
    engine: Engine,
    id: JobId,
    cursor: u64,
    /// `None` once the job is terminal (its channel is gone).
    /// The job's live log while it runs; None if it had finished when the watch began.
    seqs: Option<watch::Receiver<LiveLog>>,
    /// The job finished (its live log will not grow): once drained, the stream ends.
    ended: bool,
    buffer: VecDeque<Event>,
    done: bool,
    _count: WatcherCount,
}

/// Counts open watchers; the count drops the moment a stream is dropped (client gone).
struct WatcherCount(Engine);

impl WatcherCount {
    fn new(engine: &Engine) -> Self {
        engine.shared.watchers.fetch_add(1, Ordering::Relaxed);
        WatcherCount(engine.clone())
    }
}

impl Drop for WatcherCount {
    fn drop(&mut self) {
        self.0.shared.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Engine {
    /// The job's events with seq greater than `after_seq`, then live ones.
    /// Fails with NotFound at once for an unknown job, or one of another namespace.
    pub async fn watch(
        &self,
        namespace: &str,
        id: JobId,
        after_seq: u64,
    ) -> Result<EventStream, EngineError> {
        self.get(namespace, id).await?;
        let seqs = self.subscribe(id);
        let first = self
            .shared
            .store
            .events_after(id, after_seq, BATCH)
            .await?
            .ok_or(EngineError::NotFound(id))?;
        let watcher = Watcher {
            engine: self.clone(),
            id,
            cursor: after_seq,
            seqs,
            ended: false,
            buffer: first.into(),
            done: false,
            _count: WatcherCount::new(self),
        };
        Ok(Box::pin(futures_util::stream::unfold(
            watcher,
            |mut w| async move {
                let next = w.next().await?;
                Some((next, w))
            },
        )))
    }

    /// Watch streams open right now.
    pub fn watchers(&self) -> usize {
        self.shared.watchers.load(Ordering::Relaxed)
    }
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<Event, EngineError>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.cursor = event.seq;
                self.done = event.data.is_finished();
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            match self.refill().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return self.fail(e),
            }
            // Nothing new: wait for the job's log to grow.
            let Some(seqs) = self.seqs.as_mut().filter(|_| !self.ended) else {
                // Terminal and everything after the cursor already sent.
                return None;
            };
            let closed = self.engine.shared.closed.clone();
            tokio::select! {
                changed = seqs.changed() => if changed.is_err() {
                    // The job reached its terminal state; one more read gets the rest.
                    self.ended = true;
                },
                _ = closed.cancelled() => return self.fail(EngineError::ShuttingDown),
            }
        }
    }

    /// Reads the next batch; `Ok(false)` when there is nothing after the cursor.
    async fn refill(&mut self) -> Result<bool, EngineError> {
        if let Some(seqs) = self.seqs.as_mut() {
            // Mark the current log seen (what this read returns must not wake us again),
            // and read from it when it covers the cursor.
            if let Some(events) = seqs.borrow_and_update().after(self.cursor, BATCH) {
                let found = !events.is_empty();
                self.buffer.extend(events);
                return Ok(found);
            }
        }
        let events = self
            .engine
            .shared
            .store
            .events_after(self.id, self.cursor, BATCH)
            .await?
            .ok_or(EngineError::NotFound(self.id))?;
        let found = !events.is_empty();
        self.buffer.extend(events);
        Ok(found)
    }

    fn fail(&mut self, error: EngineError) -> Option<Result<Event, EngineError>> {
        self.done = true;
        Some(Err(error))
    }
}
