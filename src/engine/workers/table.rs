//! The worker table: every worker connected or holding leases, and every lease. It lives
//! inside the engine's state mutex, so assigning a job, taking a worker's report, revoking
//! a lease and expiring a worker never interleave: each is one critical section.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{LostReason, MAX_CREDITS, Report, ToWorker};
use crate::model::job::JobId;
use crate::model::worker::{Lease, WorkerHello, WorkerStatus};

/// A worker: its namespace and id.
pub(crate) type WorkerKey = (String, String);

/// What the driver of a remote attempt hears about its lease.
#[derive(Debug)]
pub(crate) enum LeaseEvent {
    /// A report from the worker; an outcome carries who to tell once it is stored (a
    /// unary call waiting), else the worker hears `Settled` on its session.
    Report(Report, Option<oneshot::Sender<()>>),
    /// The worker's lease ran out; the message says whose and why.
    Expired(String),
    /// The worker reconnected and kept the lease (a pending Cancel must be sent again).
    Reattached,
}

/// Why a worker's write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The job has no lease (it ended, or its lease expired).
    NoLease,
    /// The job's lease is another worker's or a later epoch.
    Replaced,
    /// The session is not this worker's current one.
    OldSession,
}

impl Refusal {
    pub(crate) fn reason(self) -> LostReason {
        match self {
            Refusal::NoLease | Refusal::OldSession => LostReason::Expired,
            Refusal::Replaced => LostReason::Reassigned,
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Refusal::NoLease => "the job holds no lease any more (it ended, or the lease expired)",
            Refusal::Replaced => "another assignment of the job replaced it",
            Refusal::OldSession => "a newer session of this worker replaced this one",
        }
    }
}

/// A worker's open session.
#[derive(Debug)]
struct Link {
    session: u64,
    tx: mpsc::Sender<ToWorker>,
    credits: u32,
    draining: bool,
}

#[derive(Debug)]
struct Worker {
    hello: WorkerHello,
    link: Option<Link>,
    /// Its leases expire when this passes without a message from it.
    alive_until: Instant,
    /// When its heartbeat was last written to the store.
    stored_at: Option<Instant>,
    connected_at: SystemTime,
    last_heartbeat: SystemTime,
    leases: HashSet<JobId>,
}

impl Worker {
    fn new(hello: WorkerHello, alive_until: Instant, now: SystemTime) -> Self {
        Worker {
            hello,
            link: None,
            alive_until,
            stored_at: None,
            connected_at: now,
            last_heartbeat: now,
            leases: HashSet::new(),
        }
    }
}

/// A job's current lease and its driver.
#[derive(Debug)]
struct Held {
    worker: WorkerKey,
    lease: Lease,
    driver: mpsc::UnboundedSender<LeaseEvent>,
}

/// Every worker and every lease.
#[derive(Debug, Default)]
pub struct WorkerTable {
    workers: BTreeMap<WorkerKey, Worker>,
    leases: HashMap<JobId, Held>,
    sessions: u64,
    /// Where the last assignment round stopped, so workers take turns.
    cursor: Option<WorkerKey>,
}

impl WorkerTable {
    /// Registers a session (replacing an older one of the same worker); returns its number
    /// and, of the leases the hello named, those kept and those lost. The worker's other
    /// leases are revoked now.
    pub(crate) fn connect(
        &mut self,
        hello: WorkerHello,
        tx: mpsc::Sender<ToWorker>,
        ttl: Duration,
        now: SystemTime,
    ) -> (u64, Vec<Lease>, Vec<Lease>) {
        self.sessions += 1;
        let session = self.sessions;
        let key = (hello.namespace.clone(), hello.worker_id.clone());
        let held = hello.held.clone();
        let link = Link {
            session,
            tx,
            credits: 0,
            draining: false,
        };
        let alive_until = Instant::now() + ttl;
        let worker = (self.workers.entry(key.clone()))
            .or_insert_with(|| Worker::new(hello.clone(), alive_until, now));
        worker.hello = hello;
        worker.link = Some(link);
        worker.alive_until = Instant::now() + ttl;
        worker.connected_at = now;
        worker.last_heartbeat = now;
        let (mut reclaimed, mut lost) = (Vec::new(), Vec::new());
        let mut named = HashSet::new();
        for lease in held {
            let current = self.leases.get(&lease.job_id);
            if current.is_some_and(|h| h.worker == key && h.lease == lease) {
                named.insert(lease.job_id);
                reclaimed.push(lease);
                if let Some(held) = current {
                    let _ = held.driver.send(LeaseEvent::Reattached);
                }
            } else {
                lost.push(lease);
            }
        }
        let orphans: Vec<JobId> = (self.workers[&key].leases.iter())
            .filter(|id| !named.contains(id))
            .copied()
            .collect();
        for id in orphans {
            let why = format!(
                "worker {} reconnected without the job (it restarted)",
                key.1
            );
            self.expire_lease(id, &why);
        }
        (session, reclaimed, lost)
    }

    /// Ends a session; the worker stays (disconnected) while it holds leases. True if the
    /// session was the worker's current one.
    pub(crate) fn disconnect(&mut self, key: &WorkerKey, session: u64, now: Instant) -> bool {
        let Some(worker) = self.workers.get_mut(key) else {
            return false;
        };
        if worker.link.as_ref().is_none_or(|l| l.session != session) {
            return false;
        }
        worker.link = None;
        if worker.leases.is_empty() || worker.alive_until <= now {
            self.forget(key);
        }
        true
    }

    fn forget(&mut self, key: &WorkerKey) {
        if let Some(worker) = self.workers.remove(key) {
            for id in worker.leases {
                self.expire_lease(id, &format!("worker {} is gone", key.1));
            }
        }
    }

    /// Adds credits to a session; `Err(limit)` if that would pass [`MAX_CREDITS`].
    pub(crate) fn credit(&mut self, key: &WorkerKey, session: u64, slots: u32) -> Result<(), u32> {
        if let Some(link) = self.link_mut(key, session) {
            let credits = link.credits.saturating_add(slots);
            if credits > MAX_CREDITS {
                return Err(MAX_CREDITS);
            }
            link.credits = credits;
        }
        Ok(())
    }

    /// Renews a worker's leases; true if the heartbeat is due to be stored.
    pub(crate) fn heartbeat(&mut self, key: &WorkerKey, ttl: Duration, now: SystemTime) -> bool {
        let Some(worker) = self.workers.get_mut(key) else {
            return false;
        };
        let instant = Instant::now();
        worker.alive_until = instant + ttl;
        worker.last_heartbeat = now;
        let due = worker.stored_at.is_none_or(|at| instant >= at + ttl / 3);
        if due {
            worker.stored_at = Some(instant);
        }
        due
    }

    /// Any message of a worker's current session shows it alive: its leases live a TTL
    /// from now (in memory; only heartbeats are stored).
    pub(crate) fn touch(&mut self, key: &WorkerKey, session: u64, ttl: Duration) {
        if let Some(worker) = self.workers.get_mut(key)
            && worker.link.as_ref().is_some_and(|l| l.session == session)
        {
            worker.alive_until = Instant::now() + ttl;
        }
    }

    /// Marks a session draining: it gets no more jobs.
    pub(crate) fn drain(&mut self, key: &WorkerKey, session: u64) {
        if let Some(link) = self.link_mut(key, session) {
            link.draining = true;
        }
    }

    /// Marks a worker's current session draining; false if it has none.
    pub(crate) fn drain_connected(&mut self, key: &WorkerKey) -> bool {
        let link = self.workers.get_mut(key).and_then(|w| w.link.as_mut());
        link.map(|l| l.draining = true).is_some()
    }

    fn link_mut(&mut self, key: &WorkerKey, session: u64) -> Option<&mut Link> {
        let worker = self.workers.get_mut(key)?;
        worker.link.as_mut().filter(|l| l.session == session)
    }

    /// Hands a worker's report to the job's driver if `lease` is the job's current lease
    /// and the worker's (and, given a session, that session is its current one). An
    /// outcome ends the lease here, so nothing else (expiry, revocation) can also end it.
    pub(crate) fn route(
        &mut self,
        key: &WorkerKey,
        session: Option<u64>,
        lease: Lease,
        report: Report,
        stored: Option<oneshot::Sender<()>>,
    ) -> Result<(), Refusal> {
        let worker = self.workers.get_mut(key).ok_or(Refusal::NoLease)?;
        if let Some(session) = session
            && worker.link.as_ref().is_none_or(|l| l.session != session)
        {
            return Err(Refusal::OldSession);
        }
        let held = self.leases.get(&lease.job_id).ok_or(Refusal::NoLease)?;
        if held.worker != *key || held.lease != lease {
            return Err(Refusal::Replaced);
        }
        let ends = report.ends_attempt();
        let sent = held.driver.send(LeaseEvent::Report(report, stored));
        if ends || sent.is_err() {
            self.end_lease(lease.job_id);
        }
        sent.map_err(|_| Refusal::NoLease)
    }

    /// Removes a job's lease if it is still the one of `epoch`.
    pub(crate) fn end_lease_of(&mut self, id: JobId, epoch: u64) {
        if self.leases.get(&id).is_some_and(|h| h.lease.epoch == epoch) {
            self.end_lease(id);
        }
    }

    /// Removes a job's lease (its attempt is over); returns it if there was one.
    pub(crate) fn end_lease(&mut self, id: JobId) -> Option<(WorkerKey, Lease)> {
        let held = self.leases.remove(&id)?;
        if let Some(worker) = self.workers.get_mut(&held.worker) {
            worker.leases.remove(&id);
            if worker.link.is_none() && worker.leases.is_empty() {
                self.workers.remove(&held.worker);
            }
        }
        Some((held.worker, held.lease))
    }

    /// Revokes `lease` if it is still the job's and tells its worker; false if an outcome
    /// got there first (it is on its way to the driver).
    pub(crate) fn revoke(&mut self, lease: Lease, reason: LostReason) -> bool {
        if self
            .leases
            .get(&lease.job_id)
            .is_none_or(|h| h.lease != lease)
        {
            return false;
        }
        if let Some((worker, lease)) = self.end_lease(lease.job_id) {
            self.send(&worker, ToWorker::LeaseLost { lease, reason });
        }
        true
    }

    /// Ends a lease because its worker's time ran out: the driver hears why, and the worker
    /// (if it is still connected, say it was paused) that the lease is lost.
    fn expire_lease(&mut self, id: JobId, why: &str) {
        let Some(held) = self.leases.get(&id) else {
            return;
        };
        let _ = held.driver.send(LeaseEvent::Expired(why.to_string()));
        if let Some((worker, lease)) = self.end_lease(id) {
            let reason = LostReason::Expired;
            self.send(&worker, ToWorker::LeaseLost { lease, reason });
        }
    }

    /// Expires every worker whose time has passed: their leases end, and workers that are
    /// not connected are forgotten. Returns how many leases expired.
    pub(crate) fn expire_due(&mut self, now: Instant, ttl: Duration) -> usize {
        let due: Vec<WorkerKey> = (self.workers.iter())
            .filter(|(_, w)| w.alive_until <= now && (!w.leases.is_empty() || w.link.is_none()))
            .map(|(key, _)| key.clone())
            .collect();
        let mut expired = 0;
        for key in due {
            let worker = &self.workers[&key];
            let ids: Vec<JobId> = worker.leases.iter().copied().collect();
            let why = format!(
                "worker {} sent no heartbeat for {ttl:?} (the lease TTL): it died, hung or was cut off",
                key.1
            );
            for id in ids {
                self.expire_lease(id, &why);
                expired += 1;
            }
            if self.workers.get(&key).is_some_and(|w| w.link.is_none()) {
                self.workers.remove(&key);
            }
        }
        expired
    }

    /// Sends to a worker's session; a session that cannot keep up is dropped (its
    /// worker reconnects; its leases hold for the TTL). False if nothing was sent.
    pub(crate) fn send(&mut self, key: &WorkerKey, message: ToWorker) -> bool {
        let Some(worker) = self.workers.get_mut(key) else {
            return false;
        };
        let Some(link) = worker.link.as_ref() else {
            return false;
        };
        if link.tx.try_send(message).is_ok() {
            return true;
        }
        tracing::warn!(worker = %key.1, "worker does not read its session; disconnecting it");
        worker.link = None;
        false
    }

    /// Workers that may take a job now (connected, credited, not draining, alive), in
    /// turn from where the last round stopped.
    pub(crate) fn takers(&self) -> Vec<WorkerKey> {
        let now = Instant::now();
        let ready = |w: &Worker| {
            w.alive_until > now
                && w.link
                    .as_ref()
                    .is_some_and(|l| l.credits > 0 && !l.draining)
        };
        let mut keys: Vec<WorkerKey> = (self.workers.iter())
            .filter(|(_, w)| ready(w))
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(cursor) = &self.cursor {
            let split = keys.partition_point(|k| k <= cursor);
            keys.rotate_left(split);
        }
        keys
    }

    /// What a worker runs: its kinds and queues.
    pub(crate) fn serves(
        &self,
        key: &WorkerKey,
    ) -> Option<(&[crate::model::worker::RemoteKind], &[String])> {
        let hello = &self.workers.get(key)?.hello;
        Some((&hello.kinds, &hello.queues))
    }

    /// Records an assignment: spends a credit and makes `lease` the job's.
    pub(crate) fn assign(
        &mut self,
        key: &WorkerKey,
        lease: Lease,
        driver: mpsc::UnboundedSender<LeaseEvent>,
    ) {
        if let Some(worker) = self.workers.get_mut(key) {
            if let Some(link) = worker.link.as_mut() {
                link.credits = link.credits.saturating_sub(1);
            }
            worker.leases.insert(lease.job_id);
        }
        self.cursor = Some(key.clone());
        let worker = key.clone();
        self.leases.insert(
            lease.job_id,
            Held {
                worker,
                lease,
                driver,
            },
        );
    }

    /// Restores a lease found RUNNING in the store at start-up: its worker is
    /// disconnected until it reconnects, and has until `alive_until` to do so.
    pub(crate) fn restore(
        &mut self,
        key: &WorkerKey,
        lease: Lease,
        alive_until: Instant,
        now: SystemTime,
        driver: mpsc::UnboundedSender<LeaseEvent>,
    ) {
        let worker = self.workers.entry(key.clone()).or_insert_with(|| {
            let hello = WorkerHello {
                worker_id: key.1.clone(),
                namespace: key.0.clone(),
                kinds: Vec::new(),
                queues: Vec::new(),
                build: String::new(),
                sdk: String::new(),
                host: String::new(),
                held: Vec::new(),
            };
            Worker::new(hello, alive_until, now)
        });
        worker.leases.insert(lease.job_id);
        let worker = key.clone();
        self.leases.insert(
            lease.job_id,
            Held {
                worker,
                lease,
                driver,
            },
        );
    }

    /// Connected workers of `namespace` that run `kind`.
    pub(crate) fn serving(&self, namespace: &str, kind: &str) -> usize {
        (self.workers.iter())
            .filter(|((ns, _), w)| ns == namespace && w.link.is_some())
            .filter(|(_, w)| w.hello.kinds.iter().any(|k| k.name == kind))
            .count()
    }

    /// The workers of a namespace, as ListWorkers shows them.
    pub(crate) fn statuses(&self, namespace: &str) -> Vec<WorkerStatus> {
        let workers = self.workers.iter().filter(|((ns, _), _)| ns == namespace);
        workers
            .map(|((ns, id), w)| WorkerStatus {
                worker_id: id.clone(),
                namespace: ns.clone(),
                host: w.hello.host.clone(),
                kinds: w.hello.kinds.iter().map(|k| k.name.clone()).collect(),
                queues: w.hello.queues.clone(),
                build: w.hello.build.clone(),
                sdk: w.hello.sdk.clone(),
                free_slots: w.link.as_ref().map_or(0, |l| l.credits),
                in_flight: w.leases.len() as u32,
                connected: w.link.is_some(),
                draining: w.link.as_ref().is_some_and(|l| l.draining),
                connected_at: w.connected_at,
                last_heartbeat: w.last_heartbeat,
            })
            .collect()
    }
}
