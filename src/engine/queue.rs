//! The ready queue of one pool: jobs waiting for a slot, highest priority first and, within a
//! priority, in submission order. Any job can be taken out by id (for Cancel).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use crate::engine::job::{Job, JobId};

/// Orders by priority (higher first), then by arrival.
type Key = (Reverse<i32>, u64);

/// Waiting jobs of one pool.
#[derive(Debug, Default)]
pub struct ReadyQueue {
    order: BTreeMap<Key, Job>,
    keys: HashMap<JobId, Key>,
    arrivals: u64,
}

impl ReadyQueue {
    /// Adds a job behind every job of the same or higher priority.
    pub fn push(&mut self, job: Job) {
        self.arrivals += 1;
        let key = (Reverse(job.spec.priority), self.arrivals);
        self.keys.insert(job.id, key);
        self.order.insert(key, job);
    }

    /// Takes the job that should run next.
    pub fn pop(&mut self) -> Option<Job> {
        let (_, job) = self.order.pop_first()?;
        self.keys.remove(&job.id);
        Some(job)
    }

    /// Takes a specific job out, if it is waiting here.
    pub fn remove(&mut self, id: JobId) -> Option<Job> {
        let key = self.keys.remove(&id)?;
        self.order.remove(&key)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::job::JobSpec;
    use std::time::SystemTime;

    fn job(priority: i32) -> Job {
        let spec = JobSpec {
            kind: "k".into(),
            args: serde_json::json!({}),
            queue: "default".into(),
            priority,
            labels: Default::default(),
            timeout: None,
        };
        Job::new(spec, SystemTime::now())
    }

    #[test]
    fn higher_priority_first_then_fifo() {
        let mut q = ReadyQueue::default();
        let jobs = [job(0), job(5), job(0), job(5), job(-1)];
        for j in &jobs {
            q.push(j.clone());
        }
        let order: Vec<JobId> = std::iter::from_fn(|| q.pop()).map(|j| j.id).collect();
        let expected = [1, 3, 0, 2, 4].map(|i| jobs[i].id);
        assert_eq!(order, expected);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn remove_by_id() {
        let mut q = ReadyQueue::default();
        let (a, b) = (job(0), job(0));
        q.push(a.clone());
        q.push(b.clone());
        assert_eq!(q.remove(a.id).map(|j| j.id), Some(a.id));
        assert!(q.remove(a.id).is_none());
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop().map(|j| j.id), Some(b.id));
    }
}
