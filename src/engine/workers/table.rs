//! The worker table: every worker connected or holding leases, and every lease. It lives
//! inside the engine's state mutex, so assigning a job, taking a worker's report, revoking
//! a lease and expiring a worker never interleave: each is one critical section.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::leases::LeaseEvent;
use super::{MAX_CREDITS, ToWorker};
use crate::model::job::JobId;
use crate::model::worker::{Lease, WorkerHello, WorkerStatus};

/// A worker: its namespace and id.
pub(crate) type WorkerKey = (String, String);

/// A worker's open session.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) session: u64,
    pub(super) tx: mpsc::Sender<ToWorker>,
    credits: u32,
    draining: bool,
}

#[derive(Debug)]
pub(super) struct Worker {
    pub(super) hello: WorkerHello,
    pub(super) link: Option<Link>,
    /// Its leases expire when this passes without a message from it.
    pub(super) alive_until: Instant,
    /// When its heartbeat was last written to the store.
    stored_at: Option<Instant>,
    connected_at: SystemTime,
    last_heartbeat: SystemTime,
    pub(super) leases: HashSet<JobId>,
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
pub(super) struct Held {
    pub(super) worker: WorkerKey,
    pub(super) lease: Lease,
    pub(super) driver: mpsc::UnboundedSender<LeaseEvent>,
}

/// Every worker and every lease.
#[derive(Debug, Default)]
pub struct WorkerTable {
    pub(super) workers: BTreeMap<WorkerKey, Worker>,
    pub(super) leases: HashMap<JobId, Held>,
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
