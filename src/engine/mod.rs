//! The engine: the one owner of scheduling decisions. It accepts validated job specs, keeps
//! a ready queue per pool, hands a job to a pool only when that pool has a free slot, drives
//! each running job (state changes, progress, timeout, cancellation) and tells watchers when
//! a job's log grows. It knows nothing about gRPC.
//!
//! Shared state sits behind a cheap-clone [`Engine`] handle; its std mutex is held only for
//! short, await-free sections. Every job record and event goes through the [`Store`].

pub mod error;
pub mod job;
mod queue;
mod run;
mod watch;

pub use error::EngineError;
pub use watch::EventStream;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch as watch_channel};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::exec::{CpuPool, Executor};
use crate::jobs::registry::Registry;
use crate::store::{ListQuery, Store};
use job::{EventData, Failure, FailureKind, Job, JobId, JobSpec, JobState, Pool};
use queue::ReadyQueue;
use run::{RunControl, StopReason};

/// How long Cancel waits for a running job to stop before it answers anyway.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Threads in the CPU pool, and so CPU jobs running at once.
    pub cpu_threads: usize,
    /// How much lower the CPU pool's OS priority is (nice increment, 0 to 19).
    pub cpu_nice: i32,
    /// IO jobs running at once.
    pub io_concurrency: usize,
    /// The shortest time between two progress writes of one job.
    pub progress_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cpu_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            cpu_nice: 10,
            io_concurrency: 256,
            progress_interval: Duration::from_millis(20),
        }
    }
}

/// A cheap-clone handle to the engine.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    registry: Registry,
    executor: Executor,
    pools: [PoolSlots; 2],
    state: Mutex<State>,
    progress_interval: Duration,
    /// Cancelled when shutdown starts: no new submits, no new dispatches.
    stopping: CancellationToken,
    /// Cancelled when shutdown ends: open watch streams end.
    closed: CancellationToken,
    running_tasks: TaskTracker,
    watchers: AtomicUsize,
}

/// A pool's free slots and the signal that work is waiting for one.
struct PoolSlots {
    slots: Arc<Semaphore>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    ready: [ReadyQueue; 2],
    running: HashMap<JobId, Arc<RunControl>>,
    /// One sender per non-terminal job, carrying its latest seq to watchers.
    live: HashMap<JobId, watch_channel::Sender<u64>>,
}

fn pool_index(pool: Pool) -> usize {
    match pool {
        Pool::Io => 0,
        Pool::Cpu => 1,
    }
}

// === impl Engine ===

impl Engine {
    /// Starts the engine and its dispatchers on the current tokio runtime.
    pub fn start(
        config: &EngineConfig,
        registry: Registry,
        store: Arc<dyn Store>,
    ) -> Result<Engine, rayon::ThreadPoolBuildError> {
        let cpu = CpuPool::new(config.cpu_threads, config.cpu_nice)?;
        let slots = |n: usize| PoolSlots {
            slots: Arc::new(Semaphore::new(n.max(1))),
            wake: Notify::new(),
        };
        let shared = Shared {
            store,
            registry,
            pools: [slots(config.io_concurrency), slots(cpu.threads())],
            executor: Executor::new(cpu),
            state: Mutex::new(State::default()),
            progress_interval: config.progress_interval,
            stopping: CancellationToken::new(),
            closed: CancellationToken::new(),
            running_tasks: TaskTracker::new(),
            watchers: AtomicUsize::new(0),
        };
        let engine = Engine {
            shared: Arc::new(shared),
        };
        for pool in [Pool::Io, Pool::Cpu] {
            tokio::spawn(engine.clone().dispatch(pool));
        }
        Ok(engine)
    }

    /// The registered kinds.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Validates the args against the kind, stores the job as QUEUED and queues it.
    pub async fn submit(&self, spec: JobSpec) -> Result<Job, EngineError> {
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
        let pool = kind.pool();
        let mut job = Job::new(spec, SystemTime::now());
        let (tx, _) = watch_channel::channel(0);
        self.lock().live.insert(job.id, tx);
        let queued = EventData::State {
            state: JobState::Queued,
            attempt: 0,
        };
        match self
            .shared
            .store
            .save(&job, &[queued], job.created_at)
            .await
        {
            Ok(seq) => job.last_seq = seq,
            Err(e) => {
                self.lock().live.remove(&job.id);
                return Err(e.into());
            }
        }
        self.lock().ready[pool_index(pool)].push(job.clone());
        self.shared.pools[pool_index(pool)].wake.notify_one();
        Ok(job)
    }

    /// The job as stored, with a pending cancellation request shown.
    pub async fn get(&self, id: JobId) -> Result<Job, EngineError> {
        let mut job = self
            .shared
            .store
            .get(id)
            .await?
            .ok_or(EngineError::NotFound(id))?;
        if let Some(control) = self.lock().running.get(&id) {
            job.cancel_requested |= control.stop_requested();
        }
        Ok(job)
    }

    /// Jobs matching the query, newest first, and the id to continue after if there are more.
    pub async fn list(
        &self,
        mut query: ListQuery,
    ) -> Result<(Vec<Job>, Option<JobId>), EngineError> {
        let page = query.limit;
        query.limit = page + 1;
        let mut jobs = self.shared.store.list(&query).await?;
        let more = jobs.len() > page;
        jobs.truncate(page);
        let next = if more {
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok((jobs, next))
    }

    /// Cancels a job: a queued one at once; a running one by its token, waiting up to
    /// [`CANCEL_WAIT`] for the handler to stop. Returns the job as it then is.
    pub async fn cancel(&self, id: JobId) -> Result<Job, EngineError> {
        for _ in 0..100 {
            let (queued, running) = {
                let mut state = self.lock();
                let queued = state.ready.iter_mut().find_map(|q| q.remove(id));
                (queued, state.running.get(&id).cloned())
            };
            if let Some(job) = queued {
                return self.cancel_queued(job).await;
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
            // Stored but between the store and the queue (a Submit still in flight).
            tokio::task::yield_now().await;
        }
        self.get(id).await
    }

    async fn cancel_queued(&self, mut job: Job) -> Result<Job, EngineError> {
        let now = SystemTime::now();
        job.state = JobState::Cancelled;
        job.cancel_requested = true;
        job.finished_at = Some(now);
        job.error = Some(Failure::new(FailureKind::Cancelled, "cancelled by request"));
        self.finish(&mut job, now).await?;
        Ok(job)
    }

    /// Stores a job that has just reached a terminal state with its terminal event, and
    /// lets its watchers see it; the job then has no live channel any more.
    async fn finish(&self, job: &mut Job, now: SystemTime) -> Result<(), EngineError> {
        let finished = EventData::finished(job);
        let seq = self.shared.store.save(job, &[finished], now).await;
        let tx = self.lock().live.remove(&job.id);
        job.last_seq = seq?;
        if let Some(tx) = tx {
            tx.send_replace(job.last_seq);
        }
        Ok(())
    }

    /// Waits until the job is terminal or `wait` passes, then returns it.
    async fn wait_terminal(&self, id: JobId, wait: Duration) -> Result<Job, EngineError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = self.subscribe(id);
        loop {
            let job = self.get(id).await?;
            let Some(rx) = rx.as_mut().filter(|_| !job.state.is_terminal()) else {
                return Ok(job);
            };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return self.get(id).await,
                Err(_) => return Ok(job),
            }
        }
    }

    /// A receiver of the job's latest seq, if the job is not terminal.
    fn subscribe(&self, id: JobId) -> Option<watch_channel::Receiver<u64>> {
        self.lock().live.get(&id).map(|tx| tx.subscribe())
    }

    /// Tells the job's watchers that its log now ends at `seq`.
    fn publish(&self, id: JobId, seq: u64) {
        if let Some(tx) = self.lock().live.get(&id) {
            tx.send_replace(seq);
        }
    }

    /// Queued jobs per pool (IO, CPU) and running jobs.
    pub fn load(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (
            state.ready[0].len(),
            state.ready[1].len(),
            state.running.len(),
        )
    }

    /// Stops taking work, lets running jobs finish within `grace`, cancels the rest, waits
    /// for them to stop (up to `grace` again: CPU handlers stop only at their next check),
    /// then ends open watch streams. Queued jobs stay queued.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.stopping.cancel();
        self.shared.running_tasks.close();
        let running = self.lock().running.len();
        if running > 0 {
            tracing::info!(running, ?grace, "waiting for running jobs to finish");
        }
        if tokio::time::timeout(grace, self.shared.running_tasks.wait())
            .await
            .is_err()
        {
            let controls: Vec<_> = self.lock().running.values().cloned().collect();
            tracing::warn!(
                jobs = controls.len(),
                "grace period over; cancelling running jobs"
            );
            for control in controls {
                control.stop(StopReason::Shutdown);
            }
            if tokio::time::timeout(grace, self.shared.running_tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!("some CPU jobs did not stop; leaving them behind");
            }
        }
        self.shared.closed.cancel();
    }

    /// Gives jobs of one pool to that pool as slots free up, in queue order.
    async fn dispatch(self, pool: Pool) {
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

    /// Pops the next job of a pool and marks it running, in one critical section so that
    /// Cancel always finds a job in exactly one of the two places.
    fn take_next(&self, pool: Pool) -> Option<(Job, Arc<RunControl>)> {
        let mut state = self.lock();
        let job = state.ready[pool_index(pool)].pop()?;
        let control = Arc::new(RunControl::new());
        state.running.insert(job.id, control.clone());
        Some((job, control))
    }

    fn spawn_run(&self, job: Job, control: Arc<RunControl>, permit: OwnedSemaphorePermit) {
        let engine = self.clone();
        self.shared.running_tasks.spawn(async move {
            let id = job.id;
            run::drive(&engine, job, &control).await;
            engine.lock().running.remove(&id);
            drop(permit);
        });
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections are single map/queue operations; a panic cannot leave them
        // half-done, so a poisoned lock is still consistent.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (io, cpu, running) = self.load();
        f.debug_struct("Engine")
            .field("queued_io", &io)
            .field("queued_cpu", &cpu)
            .field("running", &running)
            .finish()
    }
}
