//! Jobs waiting to run. Each pool has named queues, one set per namespace (a queue is a
//! namespace and a name: "reports" of one team is not another's); the next job of a pool is the one with
//! the highest priority (then the earliest arrival) among the heads of the queues that are
//! below their concurrency limit, so a flood in one queue cannot starve another and a full
//! queue never blocks the others. Scheduled and retry-waiting jobs wait in a [`DelaySet`]
//! ordered by due time. Any job can be taken out by id (for Cancel).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use crate::model::job::{Job, JobId};

/// Orders by priority (higher first), then by arrival.
type Key = (Reverse<i32>, u64);

/// A queue: its namespace and its name.
pub type QueueId = (String, String);

fn queue_of(job: &Job) -> QueueId {
    (job.spec.namespace.clone(), job.spec.queue.clone())
}

/// Where a job waits inside a pool: its queue and, in a pool whose takers run only some
/// kinds (remote workers), its kind; elsewhere the kind is empty. A worker then finds the
/// jobs it can run at the heads of lanes, without stepping over jobs it cannot.
type Lane = (QueueId, String);

/// Adds `delta` to a namespace's count, forgetting namespaces that reach zero.
fn count<K: std::borrow::Borrow<str> + std::hash::Hash + Eq>(
    counts: &mut HashMap<K, usize>,
    namespace: &str,
    new_key: impl FnOnce() -> K,
    up: bool,
) {
    if up {
        match counts.get_mut(namespace) {
            Some(n) => *n += 1,
            None => {
                counts.insert(new_key(), 1);
            }
        }
    } else if let Some(n) = counts.get_mut(namespace) {
        *n -= 1;
        if *n == 0 {
            counts.remove(namespace);
        }
    }
}

/// Where a removed job stood in line, to put it back there.
#[derive(Debug, Clone, Copy)]
pub struct Place(Key);

/// The waiting jobs of one queue.
#[derive(Debug, Default)]
struct ReadyQueue {
    order: BTreeMap<Key, Job>,
}

/// The waiting jobs of one pool, by queue.
#[derive(Debug, Default)]
pub struct PoolQueues {
    queues: HashMap<Lane, ReadyQueue>,
    /// Where each waiting job is.
    index: HashMap<JobId, (Lane, Key)>,
    /// Lanes are split by kind.
    by_kind: bool,
    /// Waiting jobs per namespace.
    per_namespace: HashMap<String, usize>,
    arrivals: u64,
}

impl PoolQueues {
    /// Queues whose jobs are taken by kind as well as by queue (remote workers').
    pub fn by_kind() -> Self {
        PoolQueues {
            by_kind: true,
            ..PoolQueues::default()
        }
    }

    fn lane_of(&self, job: &Job) -> Lane {
        let kind = if self.by_kind {
            job.spec.kind.clone()
        } else {
            String::new()
        };
        (queue_of(job), kind)
    }

    /// Adds a job behind every job of the same or higher priority.
    pub fn push(&mut self, job: Job) {
        self.arrivals += 1;
        let key = (Reverse(job.spec.priority), self.arrivals);
        self.put_back(job, Place(key));
    }

    /// Takes the job that should run next among the queues `may_run` allows.
    pub fn pop(&mut self, may_run: impl Fn(&QueueId) -> bool) -> Option<Job> {
        self.pop_kind(|queue, _| may_run(queue))
    }

    /// Takes the job that should run next among the queues and kinds `may_run` allows
    /// (the kind is empty unless the lanes are split [`by_kind`](Self::by_kind)).
    pub fn pop_kind(&mut self, may_run: impl Fn(&QueueId, &str) -> bool) -> Option<Job> {
        let (lane, key) = self
            .queues
            .iter()
            .filter(|((queue, kind), _)| may_run(queue, kind))
            .filter_map(|(lane, q)| q.order.first_key_value().map(|(key, _)| (lane, *key)))
            .min_by_key(|(_, key)| *key)
            .map(|(lane, key)| (lane.clone(), key))?;
        self.take(&lane, key)
    }

    /// Takes a specific job out, if it is waiting here, with its place in line.
    pub fn remove(&mut self, id: JobId) -> Option<(Job, Place)> {
        let (lane, key) = self.index.get(&id)?.clone();
        self.take(&lane, key).map(|job| (job, Place(key)))
    }

    /// Puts a removed job back where it was (a Cancel that could not be stored).
    pub fn put_back(&mut self, job: Job, Place(key): Place) {
        let lane = self.lane_of(&job);
        let namespace = &job.spec.namespace;
        count(
            &mut self.per_namespace,
            namespace,
            || namespace.clone(),
            true,
        );
        self.index.insert(job.id, (lane.clone(), key));
        self.queues.entry(lane).or_default().order.insert(key, job);
    }

    fn take(&mut self, lane: &Lane, key: Key) -> Option<Job> {
        let ready = self.queues.get_mut(lane)?;
        let job = ready.order.remove(&key)?;
        if ready.order.is_empty() {
            self.queues.remove(lane);
        }
        self.index.remove(&job.id);
        count(&mut self.per_namespace, &lane.0.0, String::new, false);
        Some(job)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Waiting jobs of one namespace.
    pub fn len_in(&self, namespace: &str) -> usize {
        self.per_namespace.get(namespace).copied().unwrap_or(0)
    }
}

/// Jobs waiting for a point in time, by id only: their records stay in the store (a
/// million scheduled jobs should not be a million jobs in memory), and the scheduler
/// reads each one back when it comes due.
#[derive(Debug, Default)]
pub struct DelaySet {
    order: BTreeSet<(SystemTime, JobId)>,
    /// Each job's due time and namespace (shared with `per_namespace`'s key, so a million
    /// jobs of one namespace hold one copy of its name).
    index: HashMap<JobId, (SystemTime, Arc<str>)>,
    per_namespace: HashMap<Arc<str>, usize>,
}

impl DelaySet {
    /// Adds a job of `namespace` due at `due`.
    pub fn push(&mut self, id: JobId, due: SystemTime, namespace: &str) {
        self.remove(id);
        let shared = match self.per_namespace.get_key_value(namespace) {
            Some((name, _)) => name.clone(),
            None => Arc::from(namespace),
        };
        count(&mut self.per_namespace, namespace, || shared.clone(), true);
        self.index.insert(id, (due, shared));
        self.order.insert((due, id));
    }

    /// The earliest due time.
    pub fn next_due(&self) -> Option<SystemTime> {
        self.order.first().map(|(due, _)| *due)
    }

    /// Takes the earliest job if it is due at `now`: its id, due time and namespace.
    pub fn pop_due(&mut self, now: SystemTime) -> Option<(JobId, SystemTime, Arc<str>)> {
        if self.next_due()? > now {
            return None;
        }
        let (_, id) = *self.order.first()?;
        let (due, namespace) = self.remove(id)?;
        Some((id, due, namespace))
    }

    /// Takes a specific job out, if it is waiting here; returns when it was due, and its
    /// namespace.
    pub fn remove(&mut self, id: JobId) -> Option<(SystemTime, Arc<str>)> {
        let (due, namespace) = self.index.remove(&id)?;
        self.order.remove(&(due, id));
        count(
            &mut self.per_namespace,
            &namespace,
            || namespace.clone(),
            false,
        );
        Some((due, namespace))
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Waiting jobs of one namespace.
    pub fn len_in(&self, namespace: &str) -> usize {
        self.per_namespace.get(namespace).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::job::{JobSpec, RetryPolicy};
    use std::time::Duration;

    fn job(queue: &str, priority: i32) -> Job {
        let mut spec = JobSpec::new("k", serde_json::json!({}));
        spec.queue = queue.into();
        spec.priority = priority;
        Job::new(spec, RetryPolicy::default(), SystemTime::now())
    }

    fn drain(q: &mut PoolQueues, may_run: impl Fn(&QueueId) -> bool + Copy) -> Vec<JobId> {
        std::iter::from_fn(|| q.pop(may_run))
            .map(|j| j.id)
            .collect()
    }

    #[test]
    fn higher_priority_first_then_fifo_across_queues() {
        let mut q = PoolQueues::default();
        let jobs = [
            job("a", 0),
            job("b", 5),
            job("a", 0),
            job("a", 5),
            job("b", -1),
        ];
        for j in &jobs {
            q.push(j.clone());
        }
        let expected = [1, 3, 0, 2, 4].map(|i| jobs[i].id);
        assert_eq!(drain(&mut q, |_| true), expected);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_queue_at_its_limit_is_skipped_not_blocking() {
        let mut q = PoolQueues::default();
        let (busy, free) = (job("busy", 9), job("free", 0));
        q.push(busy.clone());
        q.push(free.clone());
        assert_eq!(drain(&mut q, |(_, name)| name != "busy"), [free.id]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.remove(busy.id).map(|(j, _)| j.id), Some(busy.id));
        assert!(q.remove(busy.id).is_none());
    }

    #[test]
    fn delayed_jobs_come_due_in_time_order() {
        let now = SystemTime::now();
        let mut set = DelaySet::default();
        let mut late = job("a", 0);
        late.run_at = Some(now + Duration::from_secs(20));
        let mut soon = job("a", 0);
        soon.run_at = Some(now + Duration::from_secs(10));
        set.push(late.id, late.run_at.unwrap(), "default");
        set.push(soon.id, soon.run_at.unwrap(), "default");
        assert_eq!((set.len_in("default"), set.len_in("other")), (2, 0));
        assert_eq!(set.next_due(), soon.run_at);
        assert!(set.pop_due(now).is_none());
        let at = now + Duration::from_secs(15);
        assert_eq!(set.pop_due(at).map(|(id, _, _)| id), Some(soon.id));
        assert!(set.pop_due(at).is_none());
        assert_eq!(set.remove(late.id).map(|(due, _)| due), late.run_at);
        assert_eq!((set.len(), set.len_in("default")), (0, 0));
    }

    #[test]
    fn lanes_by_kind_let_a_taker_skip_kinds_it_cannot_run() {
        let mut q = PoolQueues::by_kind();
        let mut other = job("a", 9);
        other.spec.kind = "other".into();
        let (mine, later) = (job("a", 0), job("a", 0));
        for j in [&other, &mine, &later] {
            q.push(j.clone());
        }
        let only_k = |_: &QueueId, kind: &str| kind == "k";
        let taken: Vec<_> = std::iter::from_fn(|| q.pop_kind(only_k))
            .map(|j| j.id)
            .collect();
        assert_eq!(taken, [mine.id, later.id]);
        assert_eq!(q.pop_kind(|_, _| true).map(|j| j.id), Some(other.id));
    }

    #[test]
    fn namespaces_have_queues_and_counts_of_their_own() {
        let mut q = PoolQueues::default();
        let mine = job("reports", 0);
        let mut theirs = job("reports", 9);
        theirs.spec.namespace = "team-b".into();
        q.push(mine.clone());
        q.push(theirs.clone());
        assert_eq!((q.len_in("default"), q.len_in("team-b")), (1, 1));
        let only_default = |(ns, _): &QueueId| ns == "default";
        assert_eq!(drain(&mut q, only_default), [mine.id]);
        assert_eq!((q.len_in("default"), q.len_in("team-b")), (0, 1));
    }
}
