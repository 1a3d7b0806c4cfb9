//! Handing remote jobs to workers, and expiring workers that went quiet. The assigner
//! wakes when a remote job is queued, a worker grants credits, or a queue slot frees; each
//! round gives at most one job to each worker that can take one, in turn, so a worker
//! with many free slots does not take everything while another idles.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::attend::{self, Start};
use super::leases::LeaseEvent;
use super::table::WorkerKey;
use crate::engine::Engine;
use crate::engine::run::RunControl;
use crate::model::job::{Job, JobState};
use crate::model::worker::Lease;

/// Jobs assigned in one critical section; the assigner goes round again for more.
const ROUND_LIMIT: usize = 64;
/// How often workers' leases are checked for expiry, at most.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// A job taken for a worker, ready for its driver.
pub(super) struct Taken {
    pub job: Job,
    pub worker: WorkerKey,
    pub control: Arc<RunControl>,
    pub events: mpsc::UnboundedReceiver<LeaseEvent>,
}

impl Engine {
    /// Assigns remote jobs as workers have credits, until the engine stops.
    pub(crate) async fn assign_loop(self) {
        let stopping = self.shared.stopping.clone();
        loop {
            loop {
                let taken = self.take_for_workers();
                let more = taken.len() >= ROUND_LIMIT;
                for taken in taken {
                    self.spawn_remote(taken, Start::Assign);
                }
                if !more {
                    break;
                }
            }
            tokio::select! {
                () = self.shared.remote_wake.notified() => {}
                () = stopping.cancelled() => return,
            }
        }
    }

    /// Takes up to [`ROUND_LIMIT`] jobs for workers, one per worker per round, marking
    /// each running under a new lease (attempt and epoch bumped) in one critical section.
    fn take_for_workers(&self) -> Vec<Taken> {
        let limits = &self.shared.config.queue_limits;
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut taken = Vec::new();
        loop {
            let mut round = 0;
            for key in state.workers.takers() {
                let Some((kinds, queues)) = state.workers.serves(&key) else {
                    continue;
                };
                let per_queue = &state.running_per_queue;
                let may_run = |queue: &(String, String), kind: &str| {
                    queue.0 == key.0
                        && (queues.is_empty() || queues.contains(&queue.1))
                        && kinds.iter().any(|k| k.name == kind)
                        && limits
                            .get(&queue.1)
                            .is_none_or(|limit| per_queue.get(queue).copied().unwrap_or(0) < *limit)
                };
                let Some(mut job) = state.ready[2].pop_kind(may_run) else {
                    continue;
                };
                job.attempt += 1;
                job.epoch += 1;
                job.holder = Some(key.1.clone());
                let lease = Lease {
                    job_id: job.id,
                    attempt: job.attempt,
                    epoch: job.epoch,
                };
                let (tx, events) = mpsc::unbounded_channel();
                state.workers.assign(&key, lease, tx);
                let queue = (job.spec.namespace.clone(), job.spec.queue.clone());
                *state.running_per_queue.entry(queue).or_default() += 1;
                let control = Arc::new(RunControl::new());
                state.running.insert(job.id, control.clone());
                taken.push(Taken {
                    job,
                    worker: key,
                    control,
                    events,
                });
                round += 1;
                if taken.len() >= ROUND_LIMIT {
                    return taken;
                }
            }
            if round == 0 {
                return taken;
            }
        }
    }

    /// Runs a remote attempt's driver as a running task; when it ends, the job's queue
    /// slot frees.
    pub(super) fn spawn_remote(&self, taken: Taken, start: Start) {
        let engine = self.clone();
        self.shared.running_tasks.spawn(async move {
            let job = &taken.job;
            let (id, epoch) = (job.id, job.epoch);
            let queue = (job.spec.namespace.clone(), job.spec.queue.clone());
            let control = taken.control.clone();
            attend::drive(&engine, taken, start).await;
            // The job may be running again under a newer lease by now: end only this one.
            engine.lock().workers.end_lease_of(id, epoch);
            engine.job_left(id, &queue, &control);
        });
    }

    /// Expires the leases of workers that sent nothing for a TTL, until the engine stops.
    pub(crate) async fn expiry_loop(self) {
        let ttl = self.shared.config.lease_ttl;
        let mut tick =
            tokio::time::interval(EXPIRY_TICK.min(ttl / 4).max(Duration::from_millis(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopping = self.shared.stopping.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stopping.cancelled() => return,
            }
            let now = tokio::time::Instant::now();
            let expired = self.lock().workers.expire_due(now, ttl);
            if expired > 0 {
                tracing::warn!(
                    leases = expired,
                    "worker leases expired; their jobs are requeued"
                );
            }
        }
    }

    /// Restores the lease of a remote job found RUNNING at start-up: its worker gets a
    /// lease TTL from now (or its stored heartbeat's expiry, if later) to reconnect and
    /// name it; the job's driver waits for that or for expiry.
    pub(crate) fn restore_remote(&self, job: Job, until: Option<std::time::SystemTime>) {
        let Some(holder) = job.holder.clone() else {
            return;
        };
        debug_assert_eq!(job.state, JobState::Running);
        let key = (job.spec.namespace.clone(), holder);
        let lease = Lease {
            job_id: job.id,
            attempt: job.attempt,
            epoch: job.epoch,
        };
        let ttl = self.shared.config.lease_ttl;
        let now = self.now();
        let left = until
            .and_then(|t| t.duration_since(now).ok())
            .unwrap_or_default()
            .max(ttl);
        let alive_until = tokio::time::Instant::now() + left;
        let (tx, events) = mpsc::unbounded_channel();
        let control = Arc::new(RunControl::new());
        {
            let mut state = self.lock();
            state.workers.restore(&key, lease, alive_until, now, tx);
            let queue = (job.spec.namespace.clone(), job.spec.queue.clone());
            *state.running_per_queue.entry(queue).or_default() += 1;
            state.running.insert(job.id, control.clone());
        }
        let taken = Taken {
            job,
            worker: key,
            control,
            events,
        };
        self.spawn_remote(taken, Start::Restored);
    }
}
