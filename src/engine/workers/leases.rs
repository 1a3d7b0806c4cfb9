//! Leases in the worker table: routing a worker's report to the job's driver if its lease
//! is the job's current one, ending a lease (outcome, revocation, expiry), and expiring
//! workers that went quiet. Each is one critical section under the engine's state mutex,
//! so exactly one end of a lease reaches its driver.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::table::{WorkerKey, WorkerTable};
use super::{LostReason, Report, ToWorker};
use crate::model::job::JobId;
use crate::model::worker::Lease;

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

impl WorkerTable {
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
    pub(super) fn expire_lease(&mut self, id: JobId, why: &str) {
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
}
