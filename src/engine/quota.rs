//! Per-namespace quotas, enforced as clients submit: unfinished jobs, the bytes of args
//! they carry, and submits per second ([`crate::access::quota::Quota`]). Usage is counted
//! for every namespace whether or not it has a quota, so a quota added by a reload sees
//! the true figures at once.
//!
//! **Invariant:** a job is charged once, when it is accepted (a client's job is charged
//! before it is stored, and released if it is not created after all: refused, an
//! existing idempotency key, a failed write), and released once, when it finishes. A
//! schedule's fires and recovered jobs are charged without a check: they were allowed
//! when the schedule was made, or before the restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::EngineError;
use crate::access::limit::TokenBucket;
use crate::access::quota::Quota;

/// How long a client over a job or byte quota is told to wait: until some jobs finish,
/// which the engine cannot foresee; a second is a polite poll.
const FULL_RETRY: Duration = Duration::from_secs(1);

/// One namespace's unfinished jobs and their args bytes.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    jobs: u64,
    args_bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    limits: BTreeMap<String, Quota>,
    usage: HashMap<String, Usage>,
    buckets: HashMap<String, TokenBucket>,
}

/// The quotas in force and every namespace's usage.
#[derive(Debug, Default)]
pub(super) struct Quotas {
    state: Mutex<State>,
}

impl Quotas {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts new limits in force; usage is kept, and so are the submit buckets of
    /// namespaces that still have a rate.
    pub(super) fn set(&self, limits: BTreeMap<String, Quota>) {
        let mut state = self.lock();
        state
            .buckets
            .retain(|ns, _| limits.get(ns).is_some_and(|q| q.submits.is_some()));
        state.limits = limits;
    }

    /// The quota of a namespace, if it has one.
    pub(super) fn of(&self, namespace: &str) -> Option<Quota> {
        self.lock().limits.get(namespace).cloned()
    }

    /// Checks a client's new job against its namespace's quota and charges it, in one
    /// step (concurrent submits cannot both take the last place).
    pub(super) fn reserve(
        &self,
        namespace: &str,
        args_bytes: u64,
        now: Instant,
    ) -> Result<(), EngineError> {
        let mut state = self.lock();
        let State {
            limits,
            usage,
            buckets,
        } = &mut *state;
        let used = usage.get(namespace).copied().unwrap_or_default();
        if let Some(quota) = limits.get(namespace) {
            let over = |what: String, retry_after| EngineError::QuotaExceeded {
                namespace: namespace.to_string(),
                what,
                retry_after,
            };
            if let Some(max) = quota.queued.filter(|max| used.jobs >= *max) {
                return Err(over(format!("{max} unfinished jobs (queued=)"), FULL_RETRY));
            }
            if let Some(max) = quota
                .args_bytes
                .filter(|max| used.args_bytes + args_bytes > *max)
            {
                let what = format!(
                    "{max} bytes of args in unfinished jobs (args-bytes=; {} in use, this job {args_bytes})",
                    used.args_bytes
                );
                return Err(over(what, FULL_RETRY));
            }
            if let Some(rate) = &quota.submits {
                let bucket = (buckets.entry(namespace.to_string()))
                    .or_insert_with(|| TokenBucket::full(rate, now));
                let per_second = rate.per_second;
                bucket.take(rate, 1.0, now).map_err(|wait| {
                    over(format!("{per_second} submits a second (submits=)"), wait)
                })?;
            }
        }
        Self::add(usage, namespace, 1, args_bytes);
        Ok(())
    }

    /// Charges jobs without a check (a schedule's fires, recovered jobs).
    pub(super) fn charge(&self, namespace: &str, jobs: u64, args_bytes: u64) {
        Self::add(&mut self.lock().usage, namespace, jobs, args_bytes);
    }

    fn add(usage: &mut HashMap<String, Usage>, namespace: &str, jobs: u64, args_bytes: u64) {
        let entry = match usage.get_mut(namespace) {
            Some(entry) => entry,
            None => usage.entry(namespace.to_string()).or_default(),
        };
        entry.jobs += jobs;
        entry.args_bytes += args_bytes;
    }

    /// Releases a job: it finished, or was not created after all.
    pub(super) fn release(&self, namespace: &str, args_bytes: u64) {
        let mut state = self.lock();
        if let Some(entry) = state.usage.get_mut(namespace) {
            entry.jobs = entry.jobs.saturating_sub(1);
            entry.args_bytes = entry.args_bytes.saturating_sub(args_bytes);
        }
    }

    /// A namespace's unfinished jobs and their args bytes.
    pub(super) fn usage(&self, namespace: &str) -> (u64, u64) {
        let usage = self
            .lock()
            .usage
            .get(namespace)
            .copied()
            .unwrap_or_default();
        (usage.jobs, usage.args_bytes)
    }
}
