//! An in-memory [`Store`]: a map ordered by job id (ids are UUID v7, so the order is
//! creation order) behind one std mutex, held only for short, await-free sections.
//! Nothing survives a restart; it is for tests and throwaway use.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use super::{Inserted, ListQuery, Store, StoreError};
use crate::engine::job::{Event, EventData, Job, JobId};

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

// === impl Entry ===

impl Entry {
    fn push(&mut self, data: &EventData, at: SystemTime) {
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
        self.job.last_seq += 1;
        self.events.push(Event {
            seq: self.job.last_seq,
            at,
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
        let mut inner = self.lock();
        if let Some(key) = &job.spec.idempotency_key {
            if let Some(existing) = inner.keys.get(key).and_then(|id| inner.jobs.get(id)) {
                return Ok(Inserted::Existing(Box::new(existing.job.clone())));
            }
            inner.keys.insert(key.clone(), job.id);
        }
        let mut entry = Entry {
            job: job.clone(),
            events: Vec::new(),
        };
        entry.job.last_seq = 0;
        for data in events {
            entry.push(data, at);
        }
        let seq = entry.job.last_seq;
        inner.jobs.insert(job.id, entry);
        Ok(Inserted::Created(seq))
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
        // the record may be older on both.
        entry.job.last_seq = last_seq;
        entry.job.progress = job.progress.clone().or(progress);
        for data in events {
            entry.push(data, at);
        }
        Ok(entry.job.last_seq)
    }

    async fn append(
        &self,
        id: JobId,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let entry = inner.jobs.get_mut(&id).ok_or(StoreError::UnknownJob(id))?;
        for data in events {
            entry.push(data, at);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::job::{JobSpec, JobState, Progress, RetryPolicy};

    fn job() -> Job {
        let spec = JobSpec::new("demo.sleep", serde_json::json!({}));
        Job::new(spec, RetryPolicy::default(), SystemTime::now())
    }

    fn progress(done: u64) -> EventData {
        EventData::Progress(Progress::counted(done, 10))
    }

    #[tokio::test]
    async fn progress_is_coalesced_but_state_changes_are_kept() {
        let store = MemoryStore::new();
        let job = job();
        let now = SystemTime::now();
        let queued = EventData::State {
            state: JobState::Queued,
            attempt: 0,
            run_at: None,
            error: None,
        };
        store.insert(&job, &[queued], now).await.unwrap();
        store
            .append(job.id, &[progress(1), progress(2)], now)
            .await
            .unwrap();
        store
            .append(job.id, &[EventData::Log("hi".into()), progress(3)], now)
            .await
            .unwrap();
        let last = store.append(job.id, &[progress(4)], now).await.unwrap();
        assert_eq!(last, 6);
        let events = store.events_after(job.id, 0, 100).await.unwrap().unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 3, 4, 6], "superseded progress leaves gaps");
        assert_eq!(events[1].data, progress(2));
        let stored = store.get(job.id).await.unwrap().unwrap();
        assert_eq!(stored.progress, Some(Progress::counted(4, 10)));
        assert_eq!(stored.last_seq, 6);
        let tail = store.events_after(job.id, 3, 1).await.unwrap().unwrap();
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].seq, 4);
    }

    #[tokio::test]
    async fn list_pages_newest_first() {
        let store = MemoryStore::new();
        let now = SystemTime::now();
        let mut ids = Vec::new();
        for _ in 0..5 {
            let job = job();
            ids.push(job.id);
            store.insert(&job, &[], now).await.unwrap();
        }
        let mut query = ListQuery {
            limit: 2,
            ..ListQuery::default()
        };
        let page = store.list(&query).await.unwrap();
        assert_eq!(
            page.iter().map(|j| j.id).collect::<Vec<_>>(),
            [ids[4], ids[3]]
        );
        query.before = Some(ids[3]);
        let page = store.list(&query).await.unwrap();
        assert_eq!(
            page.iter().map(|j| j.id).collect::<Vec<_>>(),
            [ids[2], ids[1]]
        );
    }

    #[tokio::test]
    async fn idempotency_keys_are_unique_until_purged() {
        let store = MemoryStore::new();
        let now = SystemTime::now();
        let mut first = job();
        first.spec.idempotency_key = Some("k".into());
        assert_eq!(
            store.insert(&first, &[], now).await.unwrap(),
            Inserted::Created(0)
        );
        let mut second = job();
        second.spec.idempotency_key = Some("k".into());
        let Inserted::Existing(existing) = store.insert(&second, &[], now).await.unwrap() else {
            panic!("the key is taken");
        };
        assert_eq!(existing.id, first.id);
        assert!(store.get(second.id).await.unwrap().is_none());

        first.state = JobState::Succeeded;
        first.expires_at = Some(now);
        store.save(&first, &[], now).await.unwrap();
        assert_eq!(store.unfinished().await.unwrap().len(), 0);
        assert_eq!(store.purge(now).await.unwrap(), 1);
        assert!(store.get(first.id).await.unwrap().is_none());
        assert!(matches!(
            store.insert(&second, &[], now).await.unwrap(),
            Inserted::Created(_)
        ));
    }
}
