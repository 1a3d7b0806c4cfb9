//! Accepting and cancelling jobs: the two operations that put a job into, or take it out
//! of, the engine's waiting structures on a client's request.

use std::time::{Duration, SystemTime};

use super::queue::Place;
use super::run::StopReason;
use super::{Engine, EngineError};
use crate::access::quota::args_bytes;
use crate::model::job::{
    EventData, Failure, FailureKind, Job, JobId, JobSpec, JobState, RetryPolicy,
};
use crate::model::violation::FieldViolation;
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
        let job = self.prepare(spec).await?;
        self.reserve(&job)?;
        self.go_live(job.id, 0);
        let first = EventData::state_of(&job);
        let at = job.created_at;
        let inserted = self.shared.store.insert(&job, &[first], at).await;
        self.accept(job, inserted.map_err(EngineError::from), at)
    }

    /// Checks a client's job against its namespace's quota and charges it.
    fn reserve(&self, job: &Job) -> Result<(), EngineError> {
        let bytes = args_bytes(&job.spec.args);
        let now = tokio::time::Instant::now();
        self.shared.quotas.reserve(&job.spec.namespace, bytes, now)
    }

    /// Gives back a reserved job that was not created after all.
    fn unreserve(&self, job: &Job) {
        (self.shared.quotas).release(&job.spec.namespace, args_bytes(&job.spec.args));
    }

    /// Submits many jobs in one store commit. Each spec is checked on its own and gets its
    /// own result, in order; the call as a whole fails (nothing stored) only if the store
    /// does or the engine is shutting down.
    pub async fn submit_many(
        &self,
        specs: Vec<JobSpec>,
    ) -> Result<Vec<Result<Submitted, EngineError>>, EngineError> {
        let mut results: Vec<Option<Result<Submitted, EngineError>>> = Vec::new();
        let mut jobs = Vec::with_capacity(specs.len());
        for spec in specs {
            match self.prepare(spec).await.and_then(|job| {
                self.reserve(&job)?;
                Ok(job)
            }) {
                Ok(job) => {
                    jobs.push((results.len(), job));
                    results.push(None);
                }
                Err(EngineError::ShuttingDown) => {
                    jobs.iter().for_each(|(_, job)| self.unreserve(job));
                    return Err(EngineError::ShuttingDown);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let items: Vec<(Job, Vec<EventData>)> = jobs
            .iter()
            .map(|(_, job)| {
                self.go_live(job.id, 0);
                (job.clone(), vec![EventData::state_of(job)])
            })
            .collect();
        let now = self.now();
        let inserted = match self.shared.store.insert_many(&items, now).await {
            Ok(inserted) => inserted,
            Err(e) => {
                let mut state = self.lock();
                for (_, job) in &jobs {
                    state.live.remove(&job.id);
                }
                drop(state);
                jobs.iter().for_each(|(_, job)| self.unreserve(job));
                return Err(e.into());
            }
        };
        for ((slot, job), inserted) in jobs.into_iter().zip(inserted) {
            results[slot] = Some(self.accept(job, Ok(inserted), now));
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Checks a spec against its kind and makes the job it describes (not stored yet).
    pub(super) async fn prepare(&self, spec: JobSpec) -> Result<Job, EngineError> {
        let retry = match self.shared.registry.get(&spec.kind) {
            Some(kind) => {
                kind.validate(&spec.args).await?;
                kind.retry().clone()
            }
            None => {
                let remote = (self.shared.remote_kinds)
                    .get(&spec.namespace, &spec.kind)
                    .ok_or_else(|| self.unknown_kind(&spec))?;
                remote.validate(&spec.args)?;
                let default = RetryPolicy::default();
                RetryPolicy {
                    max_attempts: remote.kind.max_attempts.unwrap_or(default.max_attempts),
                    ..default
                }
            }
        };
        if spec.run_at.is_some_and(|t| t < SystemTime::UNIX_EPOCH) {
            // The store keeps times as time since 1970; the API refuses these first.
            return Err(EngineError::OutOfRange(FieldViolation::new(
                "run_at",
                "must be after 1970-01-01",
            )));
        }
        if self.shared.stopping.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let retry = spec.retry.clone().unwrap_or(retry);
        Ok(Job::new(spec, retry, self.now()))
    }

    /// The error for a kind neither built in nor declared in the job's namespace, listing
    /// both.
    fn unknown_kind(&self, spec: &JobSpec) -> EngineError {
        let mut known = self.shared.registry.names();
        let remote = self.shared.remote_kinds.of(&spec.namespace);
        known.extend(remote.iter().map(|d| d.kind.name.clone()));
        known.sort();
        EngineError::UnknownKind {
            kind: spec.kind.clone(),
            known,
        }
    }

    /// Queues a stored job, or resolves a repeated idempotency key.
    pub(super) fn accept(
        &self,
        mut job: Job,
        inserted: Result<Inserted, EngineError>,
        at: SystemTime,
    ) -> Result<Submitted, EngineError> {
        match inserted {
            Ok(Inserted::Created(seq)) => {
                job.last_seq = seq;
                self.publish(job.id, &[EventData::state_of(&job)], seq, at);
                self.shared.totals.submitted(&job.spec.namespace);
                self.enqueue(job.clone());
                Ok(Submitted {
                    job,
                    existing: false,
                })
            }
            Ok(Inserted::Existing(existing)) => {
                self.lock().live.remove(&job.id);
                self.unreserve(&job);
                same_request(&job, *existing)
            }
            Err(e) => {
                self.lock().live.remove(&job.id);
                self.unreserve(&job);
                Err(e)
            }
        }
    }

    /// Queues many newly stored jobs (each with the seq its log ends at) under one lock:
    /// what [`accept`](Self::accept) does for one, for a batch of schedule fires.
    pub(super) fn accept_stored(&self, jobs: Vec<(Job, u64)>, at: SystemTime) {
        let mut woken = std::collections::BTreeSet::new();
        let mut watched = Vec::new();
        let mut namespaces: Vec<(String, u64, u64)> = Vec::new();
        {
            let mut state = self.lock();
            for (mut job, seq) in jobs {
                job.last_seq = seq;
                match state.live.get_mut(&job.id) {
                    Some(super::live::Live::Unwatched(last)) => *last = seq,
                    Some(super::live::Live::Watched(_)) => {
                        watched.push((job.id, EventData::state_of(&job), seq));
                    }
                    None => {}
                }
                let bytes = args_bytes(&job.spec.args);
                match namespaces
                    .iter_mut()
                    .find(|(ns, _, _)| *ns == job.spec.namespace)
                {
                    Some((_, n, b)) => (*n, *b) = (*n + 1, *b + bytes),
                    None => namespaces.push((job.spec.namespace.clone(), 1, bytes)),
                }
                woken.insert(self.place(&mut state, job));
            }
        }
        for (id, event, seq) in watched {
            self.publish(id, &[event], seq, at);
        }
        for (namespace, n, bytes) in namespaces {
            self.shared.totals.submitted_many(&namespace, n);
            self.shared.quotas.charge(&namespace, n, bytes);
        }
        woken.into_iter().for_each(|w| self.wake(w));
    }

    /// Cancels a job: a waiting one at once; a running one by its token, waiting up to
    /// [`CANCEL_WAIT`] for the handler to stop. Returns the job as it then is. A cancel
    /// that cannot be stored changes nothing: the job waits where it was, and the error
    /// says so.
    pub async fn cancel(&self, namespace: &str, id: JobId) -> Result<Job, EngineError> {
        // A job never changes namespace: one check first holds wherever it moves after.
        self.get(namespace, id).await?;
        let deadline = tokio::time::Instant::now() + TRANSIT_WAIT;
        loop {
            let (ready, delayed, running) = {
                let mut state = self.lock();
                let ready = (state.ready.iter_mut().enumerate())
                    .find_map(|(pool, q)| q.remove(id).map(|(job, place)| (pool, job, place)));
                let delayed = state.delayed.remove(id);
                (ready, delayed, state.running.get(&id).cloned())
            };
            if let Some((pool, job, place)) = ready {
                return self.cancel_ready(pool, job, place).await;
            }
            if let Some((due, _)) = delayed {
                return self.cancel_delayed(namespace, id, due).await;
            }
            if let Some(control) = running {
                control.stop(StopReason::Client);
                return self.wait_terminal(namespace, id, CANCEL_WAIT).await;
            }
            let job = self.get(namespace, id).await?;
            if job.state.is_terminal() {
                return Err(EngineError::AlreadyFinished {
                    id,
                    state: job.state,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Busy(format!(
                    "job {id} is {:?} but not yet where Cancel can take it; nothing was changed, retry",
                    job.state
                )));
            }
            // Stored but between two places (a Submit or a promotion still storing it).
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Cancels a job taken out of a ready queue; if that cannot be stored, the job goes
    /// back to its place in line.
    async fn cancel_ready(&self, pool: usize, job: Job, place: Place) -> Result<Job, EngineError> {
        let waiting = job.clone();
        match self.cancel_waiting(job).await {
            Ok(job) => Ok(job),
            Err(e) => {
                self.lock().ready[pool].put_back(waiting, place);
                self.wake_pool(pool);
                Err(e)
            }
        }
    }

    /// Cancels a job taken out of the delay set (which holds ids only): its record comes
    /// from the store. If that read or the cancel's write fails, the job goes back to wait
    /// as before.
    async fn cancel_delayed(
        &self,
        namespace: &str,
        id: JobId,
        due: SystemTime,
    ) -> Result<Job, EngineError> {
        let cancelled = match self.shared.store.get(id).await {
            Ok(Some(job)) => self.cancel_waiting(job).await,
            Ok(None) => return Err(EngineError::NotFound(id)),
            Err(e) => Err(e.into()),
        };
        if cancelled.is_err() {
            self.lock().delayed.push(id, due, namespace);
            self.shared.scheduler_wake.notify_one();
        }
        cancelled
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
