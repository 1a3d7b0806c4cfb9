//! An in-memory [`Store`]: a map ordered by job id (ids are UUID v7, so the order is
//! creation order) behind one std mutex, held only for short, await-free sections.
//! Nothing survives a restart; it is for tests and throwaway use.
//!
//! A job is kept encoded (its record as JSON, about 260-270 bytes for a small job) with the
//! few fields the store reads often beside it, not as a `Job` (560 bytes before its heap
//! parts: the arguments' map alone takes a 600-byte node). A queue of a million jobs
//! then fits in well under a gigabyte. Records are encoded outside the lock.

use std::collections::{BTreeMap, HashMap, btree_map};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use super::{
    Expect, Inserted, ListQuery, Page, ScheduleWrite, ScheduleWritten, Store, StoreError,
    WorkerLease,
};
use crate::model::job::{Event, EventData, Job, JobId, JobState, Progress, whole_millis};
use crate::model::schedule::Schedule;
use crate::model::worker::RemoteKind;

/// Jobs and their logs in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Boxed: a B-tree node keeps room for 11 values and is half full when keys come
    /// in order, so small values pay off.
    jobs: BTreeMap<JobId, Box<Entry>>,
    /// Idempotency key -> job.
    /// Idempotency keys by (namespace, key): each namespace has its own.
    keys: HashMap<(String, String), JobId>,
    /// Declared remote kinds by (namespace, name).
    remote_kinds: BTreeMap<(String, String), RemoteKind>,
    /// Workers' lease expiries by (namespace, worker id).
    workers: BTreeMap<(String, String), SystemTime>,
    /// Schedules by (namespace, id).
    schedules: BTreeMap<(String, String), Schedule>,
}

/// One stored job.
#[derive(Debug)]
struct Entry {
    record: Record,
    /// The job's seq counter and latest progress live here, not in the record: they
    /// change at every append.
    last_seq: u64,
    progress: Option<Box<Progress>>,
    events: Vec<Event>,
}

/// A job's record, encoded, with what purging and listing by state need.
#[derive(Debug)]
struct Record {
    json: Box<[u8]>,
    state: JobState,
    expires_at: Option<SystemTime>,
}

impl Record {
    fn encode(job: &Job) -> Result<Self, StoreError> {
        let json = serde_json::to_vec(job)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode job {}: {e}", job.id)))?;
        Ok(Record {
            // A copy, not `into_boxed_slice`: shrinking in place can keep the grown
            // buffer's whole block (mimalloc does when at least half is used).
            json: Box::from(json.as_slice()),
            state: job.state,
            expires_at: job.expires_at,
        })
    }
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
    fn insert(
        &mut self,
        job: &Job,
        record: Record,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<Inserted, StoreError> {
        if let Some(key) = &job.spec.idempotency_key {
            let key = (job.spec.namespace.clone(), key.clone());
            if let Some((id, existing)) = self
                .keys
                .get(&key)
                .and_then(|id| self.jobs.get_key_value(id))
            {
                return Ok(Inserted::Existing(Box::new(existing.job(*id)?)));
            }
            self.keys.insert(key, job.id);
        }
        let mut entry = Entry::new(record, events.len());
        entry.progress = job.progress.clone().map(Box::new);
        for data in events {
            entry.push(data, 0, at);
        }
        let seq = entry.last_seq;
        self.jobs.insert(job.id, Box::new(entry));
        Ok(Inserted::Created(seq))
    }

    /// One schedule write, all or nothing (the caller holds the lock throughout).
    fn write_schedule(
        &mut self,
        write: &ScheduleWrite,
        records: Vec<Record>,
        at: SystemTime,
    ) -> Result<ScheduleWritten, StoreError> {
        let key = (write.schedule.namespace.clone(), write.schedule.id.clone());
        let stored = self.schedules.get(&key);
        let as_expected = match write.expect {
            Expect::Absent => stored.is_none(),
            Expect::Version(v) => stored.is_some_and(|s| s.state.version == v),
        };
        if !as_expected {
            return Ok(ScheduleWritten::Conflict(stored.cloned().map(Box::new)));
        }
        let inserted = (write.jobs.iter().zip(records))
            .map(|((job, events), record)| self.insert(job, record, events, at))
            .collect::<Result<_, _>>()?;
        self.schedules.insert(key, write.schedule.clone());
        Ok(ScheduleWritten::Written(inserted))
    }
}

// === impl Entry ===

impl Entry {
    /// A job with an empty log, room for `events` events.
    fn new(record: Record, events: usize) -> Self {
        Entry {
            record,
            last_seq: 0,
            progress: None,
            events: Vec::with_capacity(events),
        }
    }

    /// The job, decoded, with the store's seq and progress.
    fn job(&self, id: JobId) -> Result<Job, StoreError> {
        let mut job: Job =
            serde_json::from_slice(&self.record.json).map_err(|e| StoreError::Corrupt {
                id,
                why: e.to_string(),
            })?;
        job.id = id;
        job.last_seq = self.last_seq;
        job.progress = self.progress.as_deref().cloned();
        Ok(job)
    }

    /// Appends one event at `from_seq` or the next seq, whichever is higher.
    fn push(&mut self, data: &EventData, from_seq: u64, at: SystemTime) {
        if let EventData::Progress(p) = data {
            self.progress = Some(Box::new(p.clone()));
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
        self.last_seq = (self.last_seq + 1).max(from_seq);
        self.events.push(Event {
            seq: self.last_seq,
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
        let record = Record::encode(job)?;
        self.lock().insert(job, record, events, at)
    }

    async fn insert_many(
        &self,
        items: &[(Job, Vec<EventData>)],
        at: SystemTime,
    ) -> Result<Vec<Inserted>, StoreError> {
        let records = items
            .iter()
            .map(|(job, _)| Record::encode(job))
            .collect::<Result<Vec<_>, _>>()?;
        let mut inner = self.lock();
        items
            .iter()
            .zip(records)
            .map(|((job, events), record)| inner.insert(job, record, events, at))
            .collect()
    }

    async fn save(
        &self,
        job: &Job,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        let record = Record::encode(job)?;
        let mut inner = self.lock();
        let entry = match inner.jobs.entry(job.id) {
            btree_map::Entry::Vacant(vacant) => vacant.insert(Box::new(Entry::new(record, 0))),
            btree_map::Entry::Occupied(occupied) => {
                let entry = occupied.into_mut();
                entry.record = record;
                entry
            }
        };
        // The store owns the seq counter and the latest progress; the caller's copy of
        // the record may be older on both, or skip seqs ahead.
        if let Some(progress) = &job.progress {
            entry.progress = Some(Box::new(progress.clone()));
        }
        for data in events {
            entry.push(data, job.last_seq + 1, at);
        }
        Ok(entry.last_seq)
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
        Ok(entry.last_seq)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.lock().jobs.get(&id).map(|e| e.job(id)).transpose()
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

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let inner = self.lock();
        let range = match query.before {
            Some(before) => inner.jobs.range(..before),
            None => inner.jobs.range(..),
        };
        let (mut page, mut spent) = (Page::default(), 0);
        for (id, entry) in range.rev() {
            if query.state.is_some_and(|s| s != entry.record.state) {
                continue;
            }
            let job = match entry.job(*id) {
                Ok(job) => job,
                Err(e) => {
                    tracing::error!(error = %e, "ListJobs skipped a job it cannot read");
                    continue;
                }
            };
            let cost = super::list_cost(query, entry.record.json.len());
            if query.matches(&job) && !page.offer(query, job, cost, &mut spent) {
                break;
            }
        }
        Ok(page)
    }

    async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        self.lock()
            .jobs
            .iter()
            .filter(|(_, e)| !e.record.state.is_terminal())
            .map(|(id, e)| e.job(*id))
            .collect()
    }

    async fn purge(&self, now: SystemTime) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let expired: Vec<JobId> = inner
            .jobs
            .iter()
            .filter(|(_, e)| {
                e.record.state.is_terminal() && e.record.expires_at.is_some_and(|t| t <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            if let Some(entry) = inner.jobs.remove(id)
                && let Ok(job) = entry.job(*id)
                && let Some(key) = job.spec.idempotency_key
            {
                inner.keys.remove(&(job.spec.namespace, key));
            }
        }
        Ok(expired.len())
    }

    async fn put_remote_kinds(
        &self,
        namespace: &str,
        kinds: &[RemoteKind],
        _at: SystemTime,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for kind in kinds {
            let key = (namespace.to_string(), kind.name.clone());
            inner.remote_kinds.insert(key, kind.clone());
        }
        Ok(())
    }

    async fn remote_kinds(&self) -> Result<Vec<(String, RemoteKind)>, StoreError> {
        let inner = self.lock();
        let kinds = inner.remote_kinds.iter();
        Ok(kinds.map(|((ns, _), k)| (ns.clone(), k.clone())).collect())
    }

    async fn renew_worker(
        &self,
        namespace: &str,
        worker_id: &str,
        until: SystemTime,
    ) -> Result<(), StoreError> {
        let key = (namespace.to_string(), worker_id.to_string());
        self.lock().workers.insert(key, until);
        Ok(())
    }

    async fn worker_leases(&self) -> Result<Vec<WorkerLease>, StoreError> {
        let inner = self.lock();
        let leases = inner.workers.iter().map(|((ns, id), until)| WorkerLease {
            namespace: ns.clone(),
            worker_id: id.clone(),
            until: *until,
        });
        Ok(leases.collect())
    }

    async fn write_schedules(
        &self,
        writes: &[ScheduleWrite],
        at: SystemTime,
    ) -> Result<Vec<ScheduleWritten>, StoreError> {
        let records = (writes.iter())
            .map(|w| w.jobs.iter().map(|(job, _)| Record::encode(job)).collect())
            .collect::<Result<Vec<Vec<_>>, _>>()?;
        let mut inner = self.lock();
        (writes.iter().zip(records))
            .map(|(write, records)| inner.write_schedule(write, records, at))
            .collect()
    }

    async fn delete_schedule(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        let key = (namespace.to_string(), id.to_string());
        Ok(self.lock().schedules.remove(&key).is_some())
    }

    async fn get_schedule(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<Schedule>, StoreError> {
        let key = (namespace.to_string(), id.to_string());
        Ok(self.lock().schedules.get(&key).cloned())
    }

    async fn list_schedules(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        let inner = self.lock();
        let from = (namespace.to_string(), after.unwrap_or_default().to_string());
        let listed = (inner.schedules.range(from..))
            .take_while(|((ns, _), _)| ns == namespace)
            .filter(|((_, id), _)| after.is_none_or(|a| id.as_str() > a))
            .take(limit)
            .map(|(_, s)| s.clone());
        Ok(listed.collect())
    }

    async fn all_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        Ok(self.lock().schedules.values().cloned().collect())
    }
}
