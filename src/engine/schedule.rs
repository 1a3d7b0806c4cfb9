//! Time-driven work: promoting SCHEDULED and RETRY_WAIT jobs when they come due, purging
//! finished jobs past their retention, and rebuilding the queues from the store at start-up
//! (where a job left RUNNING by a crash counts that attempt as interrupted).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio::time::sleep_until;

use super::report::LIVE_AHEAD;
use super::{Engine, EngineError, interrupted};
use crate::model::job::{AttemptFailure, Job, JobState};

/// How soon a promotion that failed to store is tried again.
const PROMOTE_RETRY: Duration = Duration::from_secs(1);

impl Engine {
    /// Sleeps until the earliest delayed job is due, then queues every due job.
    pub(super) async fn schedule_loop(self) {
        let stopping = self.shared.stopping.clone();
        loop {
            let next = self.lock().delayed.next_due();
            let due = async {
                match next {
                    Some(at) => sleep_until(self.shared.clock.instant_at(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = due => self.promote_due().await,
                () = self.shared.scheduler_wake.notified() => {}
                () = stopping.cancelled() => return,
            }
        }
    }

    async fn promote_due(&self) {
        let now = self.now();
        loop {
            let Some((id, due, namespace)) = self.lock().delayed.pop_due(now) else {
                return;
            };
            let mut job = match self.shared.store.get(id).await {
                Ok(Some(job)) if matches!(job.state, JobState::Scheduled | JobState::RetryWait) => {
                    job
                }
                Ok(_) => continue, // finished or purged meanwhile
                Err(e) => {
                    tracing::warn!(%id, error = %e, "could not read a due job; will retry");
                    let retry_at = due.max(now) + PROMOTE_RETRY;
                    self.lock().delayed.push(id, retry_at, &namespace);
                    continue;
                }
            };
            job.state = JobState::Queued;
            job.run_at = None;
            if let Err(e) = self.record_state(&mut job).await {
                tracing::warn!(id = %job.id, error = %e, "could not queue a due job; will retry");
                job.state = JobState::Scheduled;
                job.run_at = Some(now + PROMOTE_RETRY);
            }
            self.enqueue(job);
        }
    }

    /// Deletes expired finished jobs every `purge_interval`.
    pub(super) async fn purge_loop(self) {
        let stopping = self.shared.stopping.clone();
        let mut tick = tokio::time::interval(self.shared.config.purge_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stopping.cancelled() => return,
            }
            match self.shared.store.purge(self.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "purged expired jobs"),
                Err(e) => tracing::warn!(error = %e, "could not purge expired jobs"),
            }
        }
    }

    /// Rebuilds the waiting structures from the store's unfinished jobs. A job a worker
    /// held keeps its lease: the worker may still be running it, and reconnects.
    pub(super) async fn recover(&self) -> Result<(), EngineError> {
        let jobs = self.shared.store.unfinished().await?;
        let heartbeats: HashMap<(String, String), SystemTime> = (self.shared.store)
            .worker_leases()
            .await?
            .into_iter()
            .map(|w| ((w.namespace, w.worker_id), w.until))
            .collect();
        let (mut requeued, mut interrupted_jobs, mut held) = (0usize, 0usize, 0usize);
        for mut job in jobs {
            if job.state == JobState::Running {
                // Watchers may have seen up to LIVE_AHEAD + 1 progress seqs that never
                // reached the store: number what follows past them.
                job.last_seq += LIVE_AHEAD + 1;
            }
            self.go_live(job.id, job.last_seq);
            // Counted as submitted, so the totals never show more finished than came in.
            self.shared.totals.submitted(&job.spec.namespace);
            let bytes = crate::access::quota::args_bytes(&job.spec.args);
            self.shared.quotas.charge(&job.spec.namespace, 1, bytes);
            if job.state == JobState::Running && job.holder.is_some() {
                held += 1;
                let key = (
                    job.spec.namespace.clone(),
                    job.holder.clone().unwrap_or_default(),
                );
                let until = heartbeats.get(&key).copied();
                self.restore_remote(job, until);
                continue;
            }
            if job.state == JobState::Running {
                interrupted_jobs += 1;
                self.recover_interrupted(&mut job).await?;
                if job.state.is_terminal() {
                    continue;
                }
            }
            requeued += 1;
            self.enqueue(job);
        }
        if requeued + interrupted_jobs + held > 0 {
            tracing::info!(
                requeued,
                interrupted = interrupted_jobs,
                held_by_workers = held,
                "recovered jobs from the store"
            );
        }
        Ok(())
    }

    /// A job that was RUNNING when the service stopped: that attempt failed; retry it now
    /// if attempts remain, else it FAILED.
    async fn recover_interrupted(&self, job: &mut Job) -> Result<(), EngineError> {
        let failure = interrupted(job.attempt);
        job.errors.push(AttemptFailure {
            attempt: job.attempt,
            failure: failure.clone(),
            at: self.now(),
        });
        if job.attempt < job.retry.max_attempts {
            job.state = JobState::Queued;
            return self.record_state(job).await;
        }
        job.state = JobState::Failed;
        job.error = Some(failure);
        self.finish(job).await
    }
}
