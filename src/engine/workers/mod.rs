//! Remote workers: processes in any language that connect over the worker protocol, declare
//! the kinds they run, and run jobs of those kinds under leases.
//!
//! A job of a remote kind waits in the remote pool's ready queues (split by kind, so a
//! worker never steps over jobs it cannot run). The assigner (`assign.rs`) hands a job to
//! a connected worker only against a credit the worker granted (no prefetch beyond its free
//! slots), bumping the job's fencing epoch; a driver task (`attend.rs`) then owns the
//! attempt as it does a local one: it records RUNNING before the worker hears of the job,
//! passes the worker's progress and log lines through the same reporter local handlers
//! use, enforces the timeout (Cancel, then after a grace the lease is revoked), and
//! records the outcome.
//!
//! **Invariants:** every write a worker makes names its lease, and is taken only if that
//! lease is the job's current one (same worker, same epoch): the check and the hand-over to
//! the driver happen in one critical section with expiry and revocation, so exactly one
//! end reaches a driver. A lease lives while its worker heartbeats (any message counts);
//! a dropped connection is not a crash: the worker's leases hold until the TTL passes, and
//! a worker that reconnects naming them keeps them. Expiry requeues the job at once.

mod assign;
mod attend;
mod kinds;
mod leases;
mod table;

pub use kinds::RemoteKinds;
pub(crate) use table::WorkerTable;

use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{Engine, EngineError};
use crate::model::job::Progress;
use crate::model::worker::{Lease, WorkerHello, WorkerStatus};
use leases::Refusal;
use table::WorkerKey;

/// The most credits a worker may hold at once.
pub const MAX_CREDITS: u32 = 10_000;
/// Messages waiting to be sent to one worker beyond its credits; a worker that lets more
/// pile up is disconnected (its leases hold for the TTL, as for any dropped connection).
const OUTBOX_SPARE: usize = 1024;

/// What the engine sends a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    Assign(Assignment),
    /// Stop the job; after `grace` the lease is revoked.
    Cancel {
        lease: Lease,
        reason: String,
        grace: Duration,
    },
    /// The lease is not the job's any more: stop, report nothing more for it.
    LeaseLost {
        lease: Lease,
        reason: LostReason,
    },
    /// The outcome reported for this lease is stored.
    Settled(Lease),
    /// Take no more jobs; finish within `grace`, give the rest back, and leave.
    Drain {
        grace: Duration,
    },
}

/// A job given to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub lease: Lease,
    pub kind: String,
    pub queue: String,
    pub args: Value,
    /// When the job's own timeout ends the attempt.
    pub deadline: Option<SystemTime>,
}

/// Why a worker lost a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// Its session did not heartbeat within the TTL.
    Expired,
    /// The job's timeout passed, and the grace after Cancel too.
    TimedOut,
    /// The job was cancelled and the grace passed.
    Cancelled,
    /// Another assignment replaced it, or the job is over.
    Reassigned,
}

/// What a worker reports about a job it holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// `worker_seq` goes up per lease; a resent report (not above the last) is dropped.
    Progress {
        worker_seq: u64,
        progress: Progress,
    },
    Log {
        worker_seq: u64,
        line: String,
    },
    Complete(Value),
    Fail {
        message: String,
        retryable: bool,
    },
    /// The worker will not finish it: requeued, attempt not spent.
    Release,
}

impl Report {
    fn ends_attempt(&self) -> bool {
        matches!(
            self,
            Report::Complete(_) | Report::Fail { .. } | Report::Release
        )
    }
}

/// What a new session learns.
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    pub session_id: String,
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// Of the leases the hello named: those kept, and those lost meanwhile.
    pub reclaimed: Vec<Lease>,
    pub lost: Vec<Lease>,
}

/// One connected session of a worker; dropping it disconnects the session (its leases
/// hold until the TTL passes).
#[derive(Debug)]
pub struct WorkerSession {
    engine: Engine,
    key: WorkerKey,
    session: u64,
}

impl Engine {
    /// Connects a worker: declares its kinds (stored, so they outlive it), replaces an
    /// older session of the same worker id, and keeps the leases it names that are still
    /// its own. Leases the table holds for it that it does not name are revoked at once:
    /// it restarted without them.
    pub async fn connect_worker(
        &self,
        hello: WorkerHello,
    ) -> Result<(WorkerSession, Welcome, mpsc::Receiver<ToWorker>), EngineError> {
        if self.shared.stopping.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        self.shared
            .remote_kinds
            .declare(
                &*self.shared.store,
                &self.shared.registry,
                &hello,
                self.now(),
            )
            .await?;
        let (tx, rx) = mpsc::channel(MAX_CREDITS as usize + OUTBOX_SPARE);
        let ttl = self.shared.config.lease_ttl;
        let key = (hello.namespace.clone(), hello.worker_id.clone());
        let (session, reclaimed, lost) = {
            let mut state = self.lock();
            let now = self.now();
            state.workers.connect(hello, tx, ttl, now)
        };
        tracing::info!(worker = %key.1, namespace = %key.0, session, "worker connected");
        let welcome = Welcome {
            session_id: format!("{}/{session}", key.1),
            lease_ttl: ttl,
            heartbeat_interval: heartbeat_interval(ttl),
            reclaimed,
            lost,
        };
        let session = WorkerSession {
            engine: self.clone(),
            key,
            session,
        };
        Ok((session, welcome, rx))
    }

    /// A worker's report made outside a session (a unary call): taken if `lease` is the
    /// job's current one and `worker_id` holds it. An outcome is awaited until stored.
    pub async fn report_unary(
        &self,
        namespace: &str,
        worker_id: &str,
        lease: Lease,
        report: Report,
    ) -> Result<(), EngineError> {
        let key = (namespace.to_string(), worker_id.to_string());
        let (done, stored) = oneshot::channel();
        let routed = self
            .lock()
            .workers
            .route(&key, None, lease, report, Some(done));
        routed.map_err(|refusal| refusal.into_error(lease))?;
        // The driver answers once the outcome is stored (or drops the sender if the
        // service stops first: the worker should try again).
        stored.await.map_err(|_| EngineError::ShuttingDown)
    }

    /// The workers of a namespace, by id.
    pub fn workers(&self, namespace: &str) -> Vec<WorkerStatus> {
        self.lock().workers.statuses(namespace)
    }

    /// Asks a connected worker to drain: it is given no more jobs from now, and told to
    /// finish within `grace` and leave. Its status as it then is.
    pub fn drain_worker(
        &self,
        namespace: &str,
        worker_id: &str,
        grace: Duration,
    ) -> Result<WorkerStatus, EngineError> {
        let key = (namespace.to_string(), worker_id.to_string());
        let mut state = self.lock();
        if !state.workers.drain_connected(&key) {
            return Err(EngineError::WorkerNotFound(worker_id.to_string()));
        }
        state.workers.send(&key, ToWorker::Drain { grace });
        let status = state.workers.statuses(namespace);
        let found = status.into_iter().find(|w| w.worker_id == worker_id);
        found.ok_or_else(|| EngineError::WorkerNotFound(worker_id.to_string()))
    }
}

/// How often a worker should heartbeat: a third of the TTL, so two may be lost.
pub fn heartbeat_interval(ttl: Duration) -> Duration {
    ttl / 3
}

impl WorkerSession {
    /// More free slots: the worker may be given this many more jobs.
    pub fn credit(&self, slots: u32) -> Result<(), EngineError> {
        let granted = self
            .engine
            .lock()
            .workers
            .credit(&self.key, self.session, slots);
        granted.map_err(|limit| {
            EngineError::Protocol(format!(
                "credit.slots: credits would pass {limit}; grant one per free slot"
            ))
        })?;
        self.engine.shared.remote_wake.notify_one();
        Ok(())
    }

    /// A message came from the worker: its leases live a TTL from now.
    pub fn touch(&self) {
        let ttl = self.engine.shared.config.lease_ttl;
        self.engine
            .lock()
            .workers
            .touch(&self.key, self.session, ttl);
    }

    /// The worker is alive: renews its leases in memory now, and in the store at most a
    /// few times per TTL (one write for all of them).
    pub async fn heartbeat(&self) {
        let ttl = self.engine.shared.config.lease_ttl;
        let store_due = self
            .engine
            .lock()
            .workers
            .heartbeat(&self.key, ttl, self.engine.now());
        if store_due {
            let until = self.engine.now() + ttl;
            let store = &self.engine.shared.store;
            if let Err(e) = store.renew_worker(&self.key.0, &self.key.1, until).await {
                tracing::warn!(worker = %self.key.1, error = %e, "could not record a heartbeat");
            }
        }
    }

    /// A report for a job the worker holds; refused (and the reason given) if `lease` is
    /// not the job's current one.
    pub fn report(&self, lease: Lease, report: Report) -> Result<(), LostReason> {
        let mut state = self.engine.lock();
        let routed = state
            .workers
            .route(&self.key, Some(self.session), lease, report, None);
        routed.map_err(|refusal| refusal.reason())
    }

    /// The worker is shutting down: it gets no more jobs.
    pub fn drain(&self) {
        self.engine.lock().workers.drain(&self.key, self.session);
        tracing::info!(worker = %self.key.1, "worker draining");
    }

    /// Cancelled when the engine stops: the session should end, so its worker reconnects
    /// to the next server.
    pub async fn stopping(&self) {
        self.engine.shared.stopping.cancelled().await;
    }

    /// The worker's id.
    pub fn worker_id(&self) -> &str {
        &self.key.1
    }
}

impl Drop for WorkerSession {
    fn drop(&mut self) {
        let now = tokio::time::Instant::now();
        let gone = (self.engine.lock().workers).disconnect(&self.key, self.session, now);
        if gone {
            tracing::info!(worker = %self.key.1, "worker disconnected; its leases hold until the TTL passes");
        }
    }
}

impl Refusal {
    fn into_error(self, lease: Lease) -> EngineError {
        EngineError::LeaseLost {
            lease,
            why: self.describe(),
        }
    }
}
