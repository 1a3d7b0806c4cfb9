//! A store that fails on demand: the real SQLite store behind a switch that makes its
//! writes fail as a full disk would, for tests of what a failed write must not change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use spindle::model::job::{Event, EventData, Job, JobId};
use spindle::model::schedule::Schedule;
use spindle::model::worker::RemoteKind;
use spindle::store::{
    Inserted, ListQuery, Page, ScheduleWrite, ScheduleWritten, SqliteStore, Store, StoreError,
    WorkerLease,
};

pub struct FaultyStore {
    inner: SqliteStore,
    failing: AtomicBool,
}

impl FaultyStore {
    pub fn open(dir: &std::path::Path) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner: SqliteStore::open(dir).expect("open the store"),
            failing: AtomicBool::new(false),
        })
    }

    /// While set, every write fails and changes nothing.
    pub fn fail_writes(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "write failed: disk full (injected)".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn insert(
        &self,
        job: &Job,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<Inserted, StoreError> {
        self.check()?;
        self.inner.insert(job, events, at).await
    }

    async fn insert_many(
        &self,
        items: &[(Job, Vec<EventData>)],
        at: SystemTime,
    ) -> Result<Vec<Inserted>, StoreError> {
        self.check()?;
        self.inner.insert_many(items, at).await
    }

    async fn save(
        &self,
        job: &Job,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.save(job, events, at).await
    }

    async fn append(
        &self,
        id: JobId,
        from_seq: u64,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.append(id, from_seq, events, at).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get(id).await
    }

    async fn events_after(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Event>>, StoreError> {
        self.inner.events_after(id, after, limit).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.inner.list(query).await
    }

    async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        self.inner.unfinished().await
    }

    async fn purge(&self, now: SystemTime) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.purge(now).await
    }

    async fn put_remote_kinds(
        &self,
        namespace: &str,
        kinds: &[RemoteKind],
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_remote_kinds(namespace, kinds, at).await
    }

    async fn remote_kinds(&self) -> Result<Vec<(String, RemoteKind)>, StoreError> {
        self.inner.remote_kinds().await
    }

    async fn renew_worker(
        &self,
        namespace: &str,
        worker_id: &str,
        until: SystemTime,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.renew_worker(namespace, worker_id, until).await
    }

    async fn worker_leases(&self) -> Result<Vec<WorkerLease>, StoreError> {
        self.inner.worker_leases().await
    }

    async fn write_schedules(
        &self,
        writes: &[ScheduleWrite],
        at: SystemTime,
    ) -> Result<Vec<ScheduleWritten>, StoreError> {
        self.check()?;
        self.inner.write_schedules(writes, at).await
    }

    async fn delete_schedule(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete_schedule(namespace, id).await
    }

    async fn get_schedule(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<Schedule>, StoreError> {
        self.inner.get_schedule(namespace, id).await
    }

    async fn list_schedules(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        self.inner.list_schedules(namespace, after, limit).await
    }

    async fn all_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.inner.all_schedules().await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}
