//! The engine: the one owner of scheduling decisions. It accepts validated job specs, keeps
//! the waiting jobs (ready queues per pool and queue, a delay set for scheduled and
//! retry-waiting jobs), hands a job to a pool only when the pool and the job's queue have a
//! free slot, drives each running job (state changes, progress, timeout, retries,
//! cancellation) and tells watchers when a job's log grows. It knows nothing about gRPC.
//!
//! Shared state sits behind a cheap-clone [`Engine`] handle; its std mutex is held only for
//! short, await-free sections. Every job record and event goes through the [`Store`]; at
//! start-up the engine rebuilds its queues from the store's unfinished jobs.

pub mod clock;
mod dispatch;
pub mod error;
mod live;
mod queue;
mod quota;
mod report;
mod run;
mod schedule;
pub mod schedules;
mod stats;
mod submit;
mod watch;
pub mod workers;

pub use error::EngineError;
pub use stats::Stats;
pub use submit::Submitted;
pub use watch::EventStream;

use crate::access::quota::args_bytes;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::exec::{CpuPool, CpuPriority, Executor};
use crate::jobs::registry::Registry;
use crate::model;
use crate::model::job::{EventData, Failure, FailureKind, Job, JobId, JobState, Pool};
use crate::store::{ListQuery, Store};
use clock::Clock;
use live::Live;
use queue::{DelaySet, PoolQueues, QueueId};
use run::{RunControl, StopReason};

/// The longest a GetStatus long-poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Threads in the CPU pool, and so CPU jobs running at once.
    pub cpu_threads: usize,
    /// The OS priority of the CPU pool's threads.
    pub cpu_priority: CpuPriority,
    /// IO jobs running at once.
    pub io_concurrency: usize,
    /// Jobs of a named queue running at once, across both pools; unlisted queues are
    /// bounded by the pools only.
    pub queue_limits: BTreeMap<String, usize>,
    /// The shortest time between two progress writes of one job.
    pub progress_interval: Duration,
    /// How long finished jobs are kept unless their submission said otherwise.
    pub retention: Duration,
    /// How often expired jobs are purged.
    pub purge_interval: Duration,
    /// How long a remote worker's leases live without a heartbeat.
    pub lease_ttl: Duration,
    /// How long a remote worker has to stop a job after Cancel before its lease is revoked.
    pub cancel_grace: Duration,
    /// Lease expiries after which a remote job fails instead of being requeued.
    pub max_lease_expiries: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cpu_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            cpu_priority: CpuPriority::Idle,
            io_concurrency: 256,
            queue_limits: BTreeMap::new(),
            progress_interval: Duration::from_millis(20),
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(10),
            max_lease_expiries: 3,
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
    /// Kinds remote workers declared.
    remote_kinds: workers::RemoteKinds,
    /// Wakes the remote assigner: a remote job is waiting, or a worker has credits.
    remote_wake: Notify,
    executor: Executor,
    clock: Clock,
    config: EngineConfig,
    pools: [PoolSlots; 2],
    state: Mutex<State>,
    /// Wakes the scheduler when a job with an earlier due time arrives.
    scheduler_wake: Notify,
    /// Schedules with their next fire times; every schedule change holds this lock.
    schedules: tokio::sync::Mutex<schedules::Table>,
    /// Wakes the schedules loop: a schedule was created or changed.
    schedules_wake: Notify,
    /// Tells the schedules loop that a job a schedule fired has finished (a buffered slot
    /// may fire now).
    schedule_ended: tokio::sync::mpsc::UnboundedSender<schedules::Key>,
    fire_lag: schedules::lag::FireLag,
    /// How many schedules the table holds.
    schedule_count: Arc<AtomicUsize>,
    /// Cancelled when shutdown starts: no new submits, no new dispatches.
    stopping: CancellationToken,
    /// Cancelled when shutdown ends: open watch streams end.
    closed: CancellationToken,
    running_tasks: TaskTracker,
    /// Dispatchers, scheduler, purger: they end when `stopping` is cancelled.
    background: TaskTracker,
    watchers: AtomicUsize,
    totals: stats::Totals,
    /// Per-namespace quotas and usage.
    quotas: quota::Quotas,
    started_at: SystemTime,
}

/// A pool's free slots and the signal that work is waiting for one.
struct PoolSlots {
    slots: Arc<Semaphore>,
    wake: Notify,
}

struct State {
    /// IO, CPU, and remote (split by kind: workers run only the kinds they declared).
    ready: [PoolQueues; 3],
    delayed: DelaySet,
    running: HashMap<JobId, Arc<RunControl>>,
    running_per_queue: HashMap<QueueId, usize>,
    /// Every non-terminal job: its last seq, or, while watched, the channel carrying the
    /// newest part of its log to watchers.
    live: HashMap<JobId, Live>,
    workers: workers::WorkerTable,
}

impl Default for State {
    fn default() -> Self {
        State {
            ready: [
                PoolQueues::default(),
                PoolQueues::default(),
                PoolQueues::by_kind(),
            ],
            delayed: DelaySet::default(),
            running: HashMap::new(),
            running_per_queue: HashMap::new(),
            live: HashMap::new(),
            workers: workers::WorkerTable::default(),
        }
    }
}

fn pool_index(pool: Pool) -> usize {
    match pool {
        Pool::Io => 0,
        Pool::Cpu => 1,
        Pool::Remote => 2,
    }
}

// === impl Engine ===

impl Engine {
    /// Starts the engine on the current tokio runtime: rebuilds the queues from the store
    /// (recovering jobs a crash left RUNNING), then starts the dispatchers, the scheduler
    /// and the retention purger.
    pub async fn start(
        config: &EngineConfig,
        registry: Registry,
        store: Arc<dyn Store>,
    ) -> Result<Engine, EngineError> {
        let cpu = CpuPool::new(config.cpu_threads, config.cpu_priority)
            .map_err(|e| EngineError::CpuPool(e.to_string()))?;
        let slots = |n: usize| PoolSlots {
            slots: Arc::new(Semaphore::new(n.max(1))),
            wake: Notify::new(),
        };
        let remote_kinds = workers::RemoteKinds::load(&*store).await?;
        let (schedule_ended, ended) = tokio::sync::mpsc::unbounded_channel();
        let schedule_table = schedules::Table::default();
        let shared = Shared {
            store,
            registry,
            remote_kinds,
            remote_wake: Notify::new(),
            pools: [slots(config.io_concurrency), slots(cpu.threads())],
            executor: Executor::new(cpu),
            clock: Clock::new(),
            config: config.clone(),
            state: Mutex::new(State::default()),
            scheduler_wake: Notify::new(),
            schedule_count: schedule_table.counter(),
            schedules: tokio::sync::Mutex::new(schedule_table),
            schedules_wake: Notify::new(),
            schedule_ended,
            fire_lag: Default::default(),
            stopping: CancellationToken::new(),
            closed: CancellationToken::new(),
            running_tasks: TaskTracker::new(),
            background: TaskTracker::new(),
            watchers: AtomicUsize::new(0),
            totals: stats::Totals::default(),
            quotas: quota::Quotas::default(),
            started_at: SystemTime::now(),
        };
        let engine = Engine {
            shared: Arc::new(shared),
        };
        engine.recover().await?;
        engine.load_schedules().await?;
        let background = &engine.shared.background;
        for pool in [Pool::Io, Pool::Cpu] {
            background.spawn(engine.clone().dispatch(pool));
        }
        background.spawn(engine.clone().assign_loop());
        background.spawn(engine.clone().expiry_loop());
        background.spawn(engine.clone().schedule_loop());
        background.spawn(engine.clone().schedules_loop(ended));
        background.spawn(engine.clone().purge_loop());
        background.close();
        Ok(engine)
    }

    /// The registered kinds.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// `args` as a client may see them: a kind's secret fields (`writeOnly` in its schema,
    /// built in or declared by a worker in `namespace`) replaced by a redaction mark.
    /// `None` when the kind has no secrets (show the args as they are).
    pub fn shown_args(&self, namespace: &str, kind: &str, args: &Value) -> Option<Value> {
        self.with_secrets(namespace, kind, |secrets| {
            let mut shown = args.clone();
            secrets.redact(&mut shown);
            shown
        })
    }

    /// Runs `f` on a kind's secrets, if it has any.
    pub(crate) fn with_secrets<R>(
        &self,
        namespace: &str,
        kind: &str,
        f: impl FnOnce(&crate::model::secret::Secrets) -> R,
    ) -> Option<R> {
        match self.shared.registry.get(kind) {
            Some(builtin) => builtin.secrets().map(f),
            None => {
                let declared = self.shared.remote_kinds.get(namespace, kind)?;
                declared.secrets.as_ref().map(f)
            }
        }
    }

    /// The engine's wall clock (follows tokio's clock; see [`clock`]).
    pub fn now(&self) -> SystemTime {
        self.shared.clock.now()
    }

    /// The job as stored, with a pending cancellation request shown. A job of another
    /// namespace is not found: its existence is not revealed.
    pub async fn get(&self, namespace: &str, id: JobId) -> Result<Job, EngineError> {
        let job = self.current(id).await?;
        if job.spec.namespace != namespace {
            return Err(EngineError::NotFound(id));
        }
        Ok(job)
    }

    /// The job as stored, whatever its namespace, with a pending cancellation shown.
    async fn current(&self, id: JobId) -> Result<Job, EngineError> {
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

    /// The job once it is terminal or `wait` (at most [`MAX_WAIT`]) has passed.
    pub async fn get_wait(
        &self,
        namespace: &str,
        id: JobId,
        wait: Duration,
    ) -> Result<Job, EngineError> {
        self.wait_terminal(namespace, id, wait.min(MAX_WAIT)).await
    }

    /// Jobs matching the query, newest first, and the id to continue after if there are more.
    pub async fn list(&self, query: ListQuery) -> Result<(Vec<Job>, Option<JobId>), EngineError> {
        let page = self.shared.store.list(&query).await?;
        let next = page.jobs.last().map(|j| j.id).filter(|_| page.more);
        Ok((page.jobs, next))
    }

    /// Waits until the job is terminal or `wait` passes, then returns it.
    /// Each read checks the namespace (a string compare): no extra store read for it.
    async fn wait_terminal(
        &self,
        namespace: &str,
        id: JobId,
        wait: Duration,
    ) -> Result<Job, EngineError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = self.subscribe(id);
        loop {
            let job = self.get(namespace, id).await?;
            let Some(rx) = rx.as_mut().filter(|_| !job.state.is_terminal()) else {
                return Ok(job);
            };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return self.get(namespace, id).await,
                Err(_) => return Ok(job),
            }
        }
    }

    /// Puts a waiting job where it belongs: a ready queue (QUEUED) or the delay set. A
    /// kind not built in is a remote one: its jobs wait for a worker.
    fn enqueue(&self, job: Job) {
        let woken = self.place(&mut self.lock(), job);
        self.wake(woken);
    }

    /// [`enqueue`](Self::enqueue)'s placing, under a lock the caller holds; says whom to
    /// wake: a pool's taker (its index) or, for a delayed job, the scheduler (`None`).
    fn place(&self, state: &mut State, job: Job) -> Option<usize> {
        let pool = self
            .shared
            .registry
            .get(&job.spec.kind)
            .map_or(Pool::Remote, |k| k.pool());
        if job.state == JobState::Queued {
            state.ready[pool_index(pool)].push(job);
            Some(pool_index(pool))
        } else {
            let due = job.run_at.unwrap_or(SystemTime::UNIX_EPOCH);
            state.delayed.push(job.id, due, &job.spec.namespace);
            None
        }
    }

    /// Wakes whom [`place`](Self::place) said to.
    fn wake(&self, woken: Option<usize>) {
        match woken {
            Some(index) => self.wake_pool(index),
            None => self.shared.scheduler_wake.notify_one(),
        }
    }

    /// Tells a pool's taker (its dispatcher, or the remote assigner) that a job waits.
    fn wake_pool(&self, index: usize) {
        match self.shared.pools.get(index) {
            Some(slots) => slots.wake.notify_one(),
            None => self.shared.remote_wake.notify_one(),
        }
    }

    /// A running job's task is over: it leaves the running set (unless a new attempt,
    /// with another control, already took its place there: a requeued remote job can be
    /// given out again before its last driver is done) and its queue's count, and every
    /// taker hears that a queue slot came free.
    fn job_left(&self, id: JobId, queue: &QueueId, control: &Arc<RunControl>) {
        {
            let mut state = self.lock();
            if state
                .running
                .get(&id)
                .is_some_and(|c| Arc::ptr_eq(c, control))
            {
                state.running.remove(&id);
            }
            if let Some(n) = state.running_per_queue.get_mut(queue) {
                *n -= 1;
                if *n == 0 {
                    state.running_per_queue.remove(queue);
                }
            }
        }
        for slots in &self.shared.pools {
            slots.wake.notify_one();
        }
        self.shared.remote_wake.notify_one();
    }

    /// The remote kinds declared in a namespace, each with the connected workers that run
    /// it now.
    pub fn remote_kinds(&self, namespace: &str) -> Vec<(model::worker::RemoteKind, usize)> {
        let declared = self.shared.remote_kinds.of(namespace);
        let state = self.lock();
        declared
            .into_iter()
            .map(|d| {
                let serving = state.workers.serving(namespace, &d.kind.name);
                (d.kind.clone(), serving)
            })
            .collect()
    }

    /// Stores a job with the event of its new non-terminal state and tells its watchers.
    async fn record_state(&self, job: &mut Job) -> Result<(), EngineError> {
        let events = [EventData::state_of(job)];
        let now = self.now();
        job.last_seq = self.shared.store.save(job, &events, now).await?;
        self.publish(job.id, &events, job.last_seq, now);
        Ok(())
    }

    /// Stores a job that has just reached a terminal state with its terminal event, and
    /// lets its watchers see it; the job then has no live channel any more.
    async fn finish(&self, job: &mut Job) -> Result<(), EngineError> {
        let now = self.now();
        job.finished_at = Some(now);
        let retention = job.spec.retention.unwrap_or(self.shared.config.retention);
        job.expires_at = now.checked_add(retention);
        let events = [EventData::finished(job)];
        // A failed write changes nothing: the job keeps its live log and stays unfinished.
        job.last_seq = self.shared.store.save(job, &events, now).await?;
        let live = self.lock().live.remove(&job.id);
        (self.shared.totals).finished(&job.spec.namespace, job.state);
        (self.shared.quotas).release(&job.spec.namespace, args_bytes(&job.spec.args));
        if let Some(fired_by) = &job.schedule {
            let key = (job.spec.namespace.clone(), fired_by.id.clone());
            let _ = self.shared.schedule_ended.send(key);
        }
        if let Some(Live::Watched(tx)) = live {
            // The last value stays readable after the sender is gone: watchers take the
            // terminal event from memory too.
            tx.send_modify(|log| log.appended(&events, job.last_seq, now));
        }
        Ok(())
    }

    /// Puts per-namespace quotas in force (replacing all earlier ones) for submits from now
    /// on; jobs already accepted stay.
    pub fn set_quotas(
        &self,
        quotas: std::collections::BTreeMap<String, crate::access::quota::Quota>,
    ) {
        self.shared.quotas.set(quotas);
    }

    /// A namespace's unfinished jobs and the bytes of args they carry, as quotas count them.
    pub fn quota_usage(&self, namespace: &str) -> (u64, u64) {
        self.shared.quotas.usage(namespace)
    }

    /// Waiting jobs per local pool (IO, CPU) and running jobs (remote ones included).
    pub fn load(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (
            state.ready[0].len(),
            state.ready[1].len(),
            state.running.len(),
        )
    }

    /// Jobs of remote kinds waiting for a worker.
    pub fn waiting_for_workers(&self) -> usize {
        self.lock().ready[2].len()
    }

    /// Jobs waiting for a due time (SCHEDULED or RETRY_WAIT).
    pub fn delayed(&self) -> usize {
        self.lock().delayed.len()
    }

    /// Stops taking work, lets running jobs finish within `grace`, then stops the rest and
    /// puts them back to QUEUED without counting the attempt; waits for them (up to `grace`
    /// again: CPU handlers stop only at their next check), then ends open watch streams and
    /// closes the store.
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
                "grace period over; stopping running jobs and requeueing them"
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
        self.shared.background.wait().await;
        self.shared.closed.cancel();
        self.shared.store.close().await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections are single map/queue operations; a panic cannot leave them
        // half-done, so a poisoned lock is still consistent.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The failure recorded for an attempt that was running when the service stopped.
fn interrupted(attempt: u32) -> Failure {
    Failure::new(
        FailureKind::Interrupted,
        format!("the service stopped while attempt {attempt} was running"),
    )
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (io, cpu, running) = self.load();
        let remote = self.waiting_for_workers();
        f.debug_struct("Engine")
            .field("queued_io", &io)
            .field("queued_cpu", &cpu)
            .field("queued_remote", &remote)
            .field("running", &running)
            .finish()
    }
}
