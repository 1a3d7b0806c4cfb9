//! Dispatch: one task per pool hands waiting jobs to the pool as slots free up. It takes a
//! pool slot (a semaphore permit) *before* it takes a job, so jobs wait in the engine, in
//! priority order, and never in rayon's own queue.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::queue::QueueId;
use super::run::{self, RunControl};
use super::{Engine, pool_index};
use crate::model::job::{Job, Pool};

impl Engine {
    /// Gives jobs of one pool to that pool as slots free up, in queue order.
    pub(super) async fn dispatch(self, pool: Pool) {
        let slots = &self.shared.pools[pool_index(pool)];
        let stopping = self.shared.stopping.clone();
        loop {
            let permit = tokio::select! {
                permit = slots.slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                _ = stopping.cancelled() => return,
            };
            let (job, control) = loop {
                if let Some(next) = self.take_next(pool) {
                    break next;
                }
                tokio::select! {
                    _ = slots.wake.notified() => {}
                    _ = stopping.cancelled() => return,
                }
            };
            self.spawn_run(job, control, permit);
        }
    }

    /// Pops the next job of a pool whose queue is under its limit and marks it running, in
    /// one critical section, so Cancel always finds a job in exactly one place.
    fn take_next(&self, pool: Pool) -> Option<(Job, Arc<RunControl>)> {
        let limits = &self.shared.config.queue_limits;
        let mut guard = self.lock();
        let state = &mut *guard;
        let per_queue = &state.running_per_queue;
        // A limit names a queue; each namespace's queue of that name has the limit.
        let may_run = |queue: &QueueId| {
            limits
                .get(&queue.1)
                .is_none_or(|limit| per_queue.get(queue).copied().unwrap_or(0) < *limit)
        };
        let job = state.ready[pool_index(pool)].pop(may_run)?;
        let queue = (job.spec.namespace.clone(), job.spec.queue.clone());
        *state.running_per_queue.entry(queue).or_default() += 1;
        let control = Arc::new(RunControl::new());
        state.running.insert(job.id, control.clone());
        Some((job, control))
    }

    fn spawn_run(&self, job: Job, control: Arc<RunControl>, permit: OwnedSemaphorePermit) {
        let engine = self.clone();
        self.shared.running_tasks.spawn(async move {
            let (id, queue) = (job.id, (job.spec.namespace.clone(), job.spec.queue.clone()));
            run::drive(&engine, job, &control, permit).await;
            // A queue slot came free: jobs of that queue may now run in any pool.
            engine.job_left(id, &queue, &control);
        });
    }
}
