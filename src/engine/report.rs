//! What a running handler reports, on its way out. Progress reaches the job's watchers as
//! soon as it is reported (a bounded number of times per progress interval), and the store
//! at most once per interval; log lines are stored before anyone sees them.
//!
//! Progress that only watchers saw still takes a seq: the engine numbers it, and the next
//! store write skips to the seq of the newest progress, leaving a gap where the store log
//! would have coalesced the older ones anyway. So a replay from the store and a live
//! stream agree on every seq they both show.

use std::time::{Duration, SystemTime};

use super::Engine;
use crate::exec::JobContext;
use crate::model::job::{EventData, JobId, Progress};

/// How many progress seqs shown to watchers may wait for a store write (one more is
/// shown as a write starts). It bounds how far the live log can run ahead of the
/// stored one, counting a write in flight as not landed: after a crash, recovery numbers a job's
/// next events past that margin, so no seq a watcher saw is ever reused.
pub(crate) const LIVE_AHEAD: u64 = 64;

/// Carries one running job's reports to its watchers and to the store.
pub(super) struct Reporter<'a> {
    engine: &'a Engine,
    id: JobId,
    ctx: &'a JobContext,
    /// The newest progress only watchers have seen: its seq, time and value.
    unstored: Option<(u64, SystemTime, Progress)>,
    /// Progress seqs shown to watchers so far, and how many of them a finished store
    /// write covers: the difference is how far the live log runs ahead of the store.
    shown: u64,
    stored: u64,
    /// No deliveries until the next store write: nobody watches, or log lines wait.
    held: bool,
}

impl<'a> Reporter<'a> {
    pub(super) fn new(engine: &'a Engine, id: JobId, ctx: &'a JobContext) -> Self {
        Reporter {
            engine,
            id,
            ctx,
            unstored: None,
            shown: 0,
            stored: 0,
            held: false,
        }
    }

    /// Whether a report between two store writes may still go to watchers at once: the
    /// live log stays within `LIVE_AHEAD` seqs of what the store holds, counting a write
    /// in flight as not yet stored.
    pub(super) fn live_open(&self) -> bool {
        !self.held && self.shown - self.stored < LIVE_AHEAD
    }

    /// Records that a store write returned by `flush` has landed; `covers` is its output.
    pub(super) fn written(&mut self, covers: u64) {
        self.stored = self.stored.max(covers);
    }

    /// Shows the newest progress to the job's watchers now, if someone watches and
    /// nothing but progress is waiting. Otherwise it waits for the next store write, and
    /// so do later reports until then (no wake-ups for nothing).
    pub(super) fn deliver(&mut self) {
        if !self.live_open() {
            return;
        }
        if !self.engine.watched(self.id) {
            self.held = true;
            return;
        }
        let progress = match self.ctx.take_progress_only() {
            Ok(Some(progress)) => progress,
            // A wake-up for reports a store write has taken already.
            Ok(None) => return,
            Err(()) => {
                self.held = true;
                return;
            }
        };
        let now = self.engine.now();
        let events = [EventData::Progress(progress.clone())];
        let seq = self.engine.publish_next(self.id, &events, now);
        self.unstored = Some((seq, now, progress));
        self.shown += 1;
    }

    /// Whether nothing waits to be written: no report since the last write, and no
    /// progress shown to watchers but not stored.
    pub(super) fn idle(&self) -> bool {
        self.unstored.is_none() && !self.ctx.has_pending()
    }

    /// Takes what was reported since the last store write, with the newest progress
    /// watchers saw (unless a newer one supersedes it), shows pending progress to
    /// watchers now, and returns the store write. The driver keeps delivering progress
    /// while that write is in flight and starts no other before it is done, so the store
    /// gets the job's events in order.
    /// The write resolves to the count of shown seqs it covers, for [`Self::written`].
    pub(super) fn flush(&mut self) -> impl Future<Output = u64> + Send + use<'a> {
        self.held = false;
        let pending = self.ctx.take_pending();
        let progress_only = pending.iter().all(|e| matches!(e, EventData::Progress(_)));
        let superseded = progress_only && !pending.is_empty();
        let unstored = self.unstored.take().filter(|_| !superseded);
        let now = self.engine.now();
        // Progress alone may be shown before it is durable: it is coalesced anyway, and a
        // crash may lose the latest of it (the guarantees say so).
        let shown_at = superseded.then(|| self.engine.publish_next(self.id, &pending, now));
        self.shown += u64::from(superseded);
        let covers = self.shown;
        let (engine, id) = (self.engine, self.id);
        async move {
            if let Some((seq, at, progress)) = unstored {
                store_ahead(engine, id, seq, &[EventData::Progress(progress)], at).await;
            }
            if let Some(seq) = shown_at {
                store_ahead(engine, id, seq, &pending, now).await;
            } else if !pending.is_empty() {
                // Log lines wait for the store: they are never shown and then lost.
                match engine.shared.store.append(id, 0, &pending, now).await {
                    Ok(seq) => engine.publish(id, &pending, seq, now),
                    Err(e) => tracing::warn!(error = %e, "could not record the job's log lines"),
                }
            }
            covers
        }
    }
}

/// Stores progress watchers have already seen, the last event at `seq`. Watchers have
/// seen that seq, so the store must give it the same one: the write is retried until
/// storage is back rather than skipped.
async fn store_ahead(engine: &Engine, id: JobId, seq: u64, events: &[EventData], at: SystemTime) {
    let from_seq = (seq + 1).saturating_sub(events.len() as u64);
    let mut pause = Duration::from_millis(10);
    while let Err(e) = engine.shared.store.append(id, from_seq, events, at).await {
        if engine.shared.stopping.is_cancelled() {
            tracing::warn!(error = %e, "could not record progress before shutdown");
            return;
        }
        tracing::warn!(error = %e, "could not record progress; retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
