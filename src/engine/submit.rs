//! Accepting and cancelling jobs: the two operations that put a job into, or take it out
//! of, the engine's waiting structures on a client's request.

use std::time::Duration;

use super::job::{Failure, FailureKind, Job, JobId, JobSpec, JobState};
use super::run::StopReason;
use super::{Engine, EngineError};
use crate::store::Inserted;

/// How long Cancel waits for a running job to stop before it answers anyway.
const CANCEL_WAIT: Duration = Duration::from_secs(2);
/// How long Cancel waits for a job that is between two places (being stored as QUEUED).
const TRANSIT_WAIT: Duration = Duration::from_secs(2);

/// What Submit did.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub job: Job,
    /// The job already existed under the request's idempotency key.
    pub existing: bool,
}

impl Engine {
    /// Validates the args against the kind, stores the job (QUEUED, or SCHEDULED if it has
    /// a future `run_at`) and queues it; answers only once the store has it. A repeated
    /// idempotency key returns the existing job, or fails if the request differs.
    pub async fn submit(&self, spec: JobSpec) -> Result<Submitted, EngineError> {
        let kind =
            self.shared
                .registry
                .get(&spec.kind)
                .ok_or_else(|| EngineError::UnknownKind {
                    kind: spec.kind.clone(),
                    known: self.shared.registry.names(),
                })?;
        kind.validate(&spec.args).await?;
        if self.shared.stopping.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let retry = spec.retry.clone().unwrap_or_else(|| kind.retry().clone());
        let now = self.now();
        let mut job = Job::new(spec, retry, now);
        let (tx, _) = tokio::sync::watch::channel(0);
        self.lock().live.insert(job.id, tx);
        let first = super::job::EventData::state_of(&job);
        let inserted = self.shared.store.insert(&job, &[first], now).await;
        match inserted {
            Ok(Inserted::Created(seq)) => {
                job.last_seq = seq;
                self.enqueue(job.clone());
                Ok(Submitted {
                    job,
                    existing: false,
                })
            }
            Ok(Inserted::Existing(existing)) => {
                self.lock().live.remove(&job.id);
                same_request(&job, *existing)
            }
            Err(e) => {
                self.lock().live.remove(&job.id);
                Err(e.into())
            }
        }
    }

    /// Cancels a job: a waiting one at once; a running one by its token, waiting up to
    /// [`CANCEL_WAIT`] for the handler to stop. Returns the job as it then is.
    pub async fn cancel(&self, id: JobId) -> Result<Job, EngineError> {
        let deadline = tokio::time::Instant::now() + TRANSIT_WAIT;
        loop {
            let (waiting, running) = {
                let mut state = self.lock();
                let waiting = state
                    .ready
                    .iter_mut()
                    .find_map(|q| q.remove(id))
                    .or_else(|| state.delayed.remove(id));
                (waiting, state.running.get(&id).cloned())
            };
            if let Some(job) = waiting {
                return self.cancel_waiting(job).await;
            }
            if let Some(control) = running {
                control.stop(StopReason::Client);
                return self.wait_terminal(id, CANCEL_WAIT).await;
            }
            let job = self.get(id).await?;
            if job.state.is_terminal() {
                return Err(EngineError::AlreadyFinished {
                    id,
                    state: job.state,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            // Stored but between two places (a Submit or a promotion still storing it).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn cancel_waiting(&self, mut job: Job) -> Result<Job, EngineError> {
        job.state = JobState::Cancelled;
        job.cancel_requested = true;
        job.run_at = None;
        job.error = Some(Failure::new(FailureKind::Cancelled, "cancelled by request"));
        self.finish(&mut job).await?;
        Ok(job)
    }
}

/// A repeated idempotency key: the existing job if the request is the same one.
fn same_request(new: &Job, existing: Job) -> Result<Submitted, EngineError> {
    if existing.spec.kind == new.spec.kind && existing.spec.args == new.spec.args {
        Ok(Submitted {
            job: existing,
            existing: true,
        })
    } else {
        Err(EngineError::IdempotencyConflict {
            key: new.spec.idempotency_key.clone().unwrap_or_default(),
            id: existing.id,
        })
    }
}
