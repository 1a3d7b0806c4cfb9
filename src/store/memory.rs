//! An in-memory [`Store`]: a map ordered by job id (ids are UUID v7, so the order is
//! creation order) behind one std mutex, held only for short, await-free sections.
//! Nothing survives a restart; it is for tests and throwaway use.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use super::{Inserted, ListQuery, Store, StoreError};
use crate::engine::job::{Event, EventData, Job, JobId, whole_millis};

/// Jobs and their logs in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: BTreeMap<JobId, Entry>,
    /// Idempotency key -> job.
    keys: HashMap<String, JobId>,
}

#[derive(Debug)]
struct Entry {
    job: Job,
    events: Vec<Event>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave an entry half-written (every
        // mutation is a single push or assignment), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn insert(&mut self, job: &Job, events: &[EventData], at: SystemTime) -> Inserted {
        if let Some(key) = &job.spec.idempotency_key {
            if let Some(existing) = self.keys.get(key).and_then(|id| self.jobs.get(id)) {
                return Inserted::Existing(Box::new(existing.job.clone()));
            }
            self.keys.insert(key.clone(), job.id);
        }
        let mut entry = Entry {
            job: job.clone(),
            events: Vec::new(),
        };
        entry.job.last_seq = 0;
        for data in events {
            entry.push(data, 0, at);
        }
        let seq = entry.job.last_seq;
        self.jobs.insert(job.id, entry);
        Inserted::Created(seq)
    }
}

// === impl Entry ===

impl Entry {
    /// Appends one event at `from_seq` or the next seq, whichever is higher.
    fn push(&mut self, data: &EventData, from_seq: u64, at: SystemTime) {
        if let EventData::Progress(p) = data {
            self.job.progress = Some(p.clone());
            // Coalesce: the newer progress supersedes an immediately preceding one.
            if matches!(
                self.events.last(),
                Some(Event {
                    data: EventData::Progress(_),
                    ..
                })
            ) {
                self.events.pop();
            }
        }
        self.job.last_seq = (self.job.last_seq + 1).max(from_seq);
        self.events.push(Event {
            seq: self.job.last_seq,
            at: whole_millis(at),
            data: data.clone(),
        });
    }
}

// === impl MemoryStore ===

#[async_trait]
impl Store for MemoryStore {
    async fn insert(
        &self,
        job: &Job,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<Inserted, StoreError> {
        Ok(self.lock().insert(job, events, at))
    }

    async fn insert_many(
        &self,
        items: &[(Job, Vec<EventData>)],
        at: SystemTime,
    ) -> Result<Vec<Inserted>, StoreError> {
        let mut inner = self.lock();
        Ok(items
            .iter()
            .map(|(job, events)| inner.insert(job, events, at))
            .collect())
    }

    async fn save(
        &self,
        job: &Job,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let entry = inner.jobs.entry(job.id).or_insert_with(|| Entry {
            job: job.clone(),
            events: Vec::new(),
        });
        let last_seq = entry.job.last_seq;
        let progress = entry.job.progress.take();
        entry.job = job.clone();
        // The store owns the seq counter and the latest progress; the caller's copy of
        // the record may be older on both, or skip seqs ahead.
        entry.job.last_seq = last_seq;
        entry.job.progress = job.progress.clone().or(progress);
        for data in events {
            entry.push(data, job.last_seq + 1, at);
        }
        Ok(entry.job.last_seq)
    }

    async fn append(
        &self,
        id: JobId,
        from_seq: u64,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let entry = inner.jobs.get_mut(&id).ok_or(StoreError::UnknownJob(id))?;
        for data in events {
            // Only the first event can land past the next seq; the rest follow it.
            entry.push(data, from_seq, at);
        }
        Ok(entry.job.last_seq)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self.lock().jobs.get(&id).map(|e| e.job.clone()))
    }

    async fn events_after(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Event>>, StoreError> {
        let inner = self.lock();
        let Some(entry) = inner.jobs.get(&id) else {
            return Ok(None);
        };
        let start = entry.events.partition_point(|e| e.seq <= after);
        let end = entry.events.len().min(start.saturating_add(limit));
        Ok(Some(entry.events[start..end].to_vec()))
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>, StoreError> {
        let inner = self.lock();
        let range = match query.before {
            Some(before) => inner.jobs.range(..before),
            None => inner.jobs.range(..),
        };
        Ok(range
            .rev()
            .map(|(_, e)| &e.job)
            .filter(|job| query.matches(job))
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        Ok(self
            .lock()
            .jobs
            .values()
            .filter(|e| !e.job.state.is_terminal())
            .map(|e| e.job.clone())
            .collect())
    }

    async fn purge(&self, now: SystemTime) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let expired: Vec<JobId> = inner
            .jobs
            .values()
            .filter(|e| e.job.state.is_terminal() && e.job.expires_at.is_some_and(|t| t <= now))
            .map(|e| e.job.id)
            .collect();
        for id in &expired {
            if let Some(entry) = inner.jobs.remove(id)
                && let Some(key) = &entry.job.spec.idempotency_key
            {
                inner.keys.remove(key);
            }
        }
        Ok(expired.len())
    }
}
