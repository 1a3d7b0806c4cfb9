//! Persistence behind one trait. The engine keeps its scheduling state in memory and writes
//! every job record and event through a [`Store`]; reads for clients come from the store.
//!
//! Invariants every implementation keeps:
//! - `insert`, `save` and `append` assign sequence numbers, strictly increasing per job from 1, and
//!   keep `Job::last_seq` equal to the newest one. The caller may skip seqs (`save` continues
//!   after the larger of the stored `last_seq` and the one it passes, `append` from the
//!   `from_seq` it passes): the engine numbers progress that only live watchers saw, and a
//!   skipped seq is a gap in the stored log, like a superseded progress event.
//! - Event times are kept in whole milliseconds.
//! - A progress event appended right after another progress event supersedes it: the older
//!   one leaves the log (its seq becomes a gap) so a fast reporter cannot grow the log.
//! - Every other event is kept, in order.

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod conformance_schedules;
mod memory;
pub mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::model::job::{Event, EventData, Job, JobId, JobState};
use crate::model::schedule::Schedule;
use crate::model::worker::RemoteKind;

/// What a store can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The job is not in the store.
    #[error("job {0} is not in the store")]
    UnknownJob(JobId),
    /// The backing storage could not do what was asked; nothing was changed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The job's stored record (or one of its events) cannot be decoded. Only that job is
    /// affected: lists skip it, and reading it fails with this error.
    #[error("job {id}'s stored record cannot be read: {why}")]
    Corrupt { id: JobId, why: String },
    /// The store will not open: the data is corrupt, not Spindle's, or from a newer
    /// schema. Nothing was changed.
    #[error("{0}")]
    Refused(String),
}

/// Filters for listing jobs; `None` and empty maps match everything in the namespace.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only jobs of this namespace (required: a list never spans namespaces).
    pub namespace: String,
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Only jobs this schedule fired.
    pub schedule: Option<String>,
    /// Only jobs older than this one (the previous page's last id).
    pub before: Option<JobId>,
    pub limit: usize,
    /// The most bytes of stored records a page may gather (0: no bound). A page always
    /// has one job if one matches; it ends before the job that would pass the bound.
    pub max_bytes: usize,
    /// Leave out each job's args and result (they may be large), and count only the rest
    /// against `max_bytes`.
    pub basic: bool,
}

impl Default for ListQuery {
    /// Everything of the default namespace, no page bound.
    fn default() -> Self {
        ListQuery {
            namespace: crate::model::job::DEFAULT_NAMESPACE.to_string(),
            state: None,
            kind: None,
            queue: None,
            labels: BTreeMap::new(),
            schedule: None,
            before: None,
            limit: 0,
            max_bytes: 0,
            basic: false,
        }
    }
}

/// What [`Store::list`] found.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// More jobs match after the last one.
    pub more: bool,
}

/// What a job costs against [`ListQuery::max_bytes`]: its stored record, or in a basic
/// list, a fixed share for what is left of it.
pub fn list_cost(query: &ListQuery, record_bytes: usize) -> usize {
    if query.basic {
        BASIC_JOB_BYTES
    } else {
        record_bytes
    }
}

/// What a job without its args and result is counted as.
const BASIC_JOB_BYTES: usize = 2048;

impl Page {
    /// Adds a matching job unless the page is full (by count or bytes); says whether
    /// the walk should go on. `spent` carries the bytes gathered so far.
    pub fn offer(
        &mut self,
        query: &ListQuery,
        mut job: Job,
        cost: usize,
        spent: &mut usize,
    ) -> bool {
        let over_bytes = query.max_bytes > 0 && *spent + cost > query.max_bytes;
        if self.jobs.len() >= query.limit || (over_bytes && !self.jobs.is_empty()) {
            self.more = true;
            return false;
        }
        if query.basic {
            job.spec.args = serde_json::Value::Null;
            job.result = None;
        }
        *spent += cost;
        self.jobs.push(job);
        true
    }
}

impl ListQuery {
    /// Whether a job passes the filters (not the paging).
    pub fn matches(&self, job: &Job) -> bool {
        self.namespace == job.spec.namespace
            && self.state.is_none_or(|s| s == job.state)
            && self.kind.as_ref().is_none_or(|k| *k == job.spec.kind)
            && self.queue.as_ref().is_none_or(|q| *q == job.spec.queue)
            && (self.schedule.as_ref())
                .is_none_or(|s| job.schedule.as_ref().is_some_and(|f| f.id == *s))
            && self
                .labels
                .iter()
                .all(|(k, v)| job.spec.labels.get(k) == Some(v))
    }
}

/// What [`Store::insert`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// The job was stored; its log ends at this seq.
    Created(u64),
    /// A job with the same idempotency key already exists; nothing was written.
    Existing(Box<Job>),
}

/// What a schedule write expects the stored schedule to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No schedule of that namespace and id.
    Absent,
    /// The schedule at this version.
    Version(u64),
}

/// One schedule change, applied as one atomic step: the record replaces the stored one if
/// that is what `expect` says, and the jobs it fires are inserted with it (each under its
/// slot's idempotency key). A crash leaves either all of it or none of it, and a second
/// writer that read the same version (another node) is refused.
#[derive(Debug, Clone)]
pub struct ScheduleWrite {
    pub schedule: Schedule,
    pub expect: Expect,
    pub jobs: Vec<(Job, Vec<EventData>)>,
}

/// What a [`ScheduleWrite`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleWritten {
    /// Written; one answer per job, in order.
    Written(Vec<Inserted>),
    /// The stored schedule was not as expected (it is this one, or none); nothing was
    /// written.
    Conflict(Option<Box<Schedule>>),
}

/// A worker's recorded lease expiry (see [`Store::renew_worker`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLease {
    pub namespace: String,
    pub worker_id: String,
    pub until: SystemTime,
}

/// Where jobs and their event logs live.
///
/// Writes land in the order they are made: a write whose future was first polled after
/// another's is never applied before it, even if the two are awaited in another order. The
/// engine relies on this to send a job's outcome right behind its RUNNING write.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new job with its first events, unless its idempotency key is taken: the
    /// check and the insert are one atomic step.
    async fn insert(
        &self,
        job: &Job,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<Inserted, StoreError>;

    /// Inserts many jobs with their first events, all or nothing: the answers are in the
    /// order of `items`. A repeated idempotency key (also within the batch) answers
    /// `Existing`, as `insert` does.
    async fn insert_many(
        &self,
        items: &[(Job, Vec<EventData>)],
        at: SystemTime,
    ) -> Result<Vec<Inserted>, StoreError>;

    /// Writes the whole job record (inserting it if new) and appends `events`, stamped
    /// `at`, in one step, numbered after the larger of the stored last seq and
    /// `job.last_seq`. Returns the seq of the last event (or the current one if none).
    async fn save(
        &self,
        job: &Job,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<u64, StoreError>;

    /// Appends events to a stored job, numbered from `from_seq`, or from the next seq if
    /// the log is already past it (0: always the next). Progress events also become the
    /// job's latest progress. Returns the seq of the last event.
    async fn append(
        &self,
        id: JobId,
        from_seq: u64,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<u64, StoreError>;

    /// The job, if stored.
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Up to `limit` events with seq greater than `after`, oldest first; `None` if the job
    /// is not stored.
    async fn events_after(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Event>>, StoreError>;

    /// Jobs that match the query, newest first, at most `query.limit` and about
    /// `query.max_bytes`. A job that cannot be read is skipped (and logged).
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;

    /// Every job not in a terminal state, oldest first; read once at start-up.
    async fn unfinished(&self) -> Result<Vec<Job>, StoreError>;

    /// Deletes finished jobs (and their logs and idempotency keys) whose `expires_at` has
    /// passed. Returns how many went.
    async fn purge(&self, now: SystemTime) -> Result<usize, StoreError>;

    /// Keeps the kinds a worker declared in `namespace`, replacing earlier declarations of
    /// the same names: a kind stays known (Submit accepts it) across restarts and while
    /// no worker is connected.
    async fn put_remote_kinds(
        &self,
        namespace: &str,
        kinds: &[RemoteKind],
        at: SystemTime,
    ) -> Result<(), StoreError>;

    /// Every declared remote kind with its namespace; read once at start-up.
    async fn remote_kinds(&self) -> Result<Vec<(String, RemoteKind)>, StoreError>;

    /// A worker's heartbeat: every lease it holds (jobs whose `holder` it is) lives until
    /// `until`. One small write, however many jobs the worker runs.
    async fn renew_worker(
        &self,
        namespace: &str,
        worker_id: &str,
        until: SystemTime,
    ) -> Result<(), StoreError>;

    /// The lease expiry each worker last recorded, by namespace and worker id.
    async fn worker_leases(&self) -> Result<Vec<WorkerLease>, StoreError>;

    /// Applies schedule writes, each atomically and on its own: one's conflict does not
    /// stop the others. Answers in order.
    async fn write_schedules(
        &self,
        writes: &[ScheduleWrite],
        at: SystemTime,
    ) -> Result<Vec<ScheduleWritten>, StoreError>;

    /// Deletes a schedule (the jobs it fired stay); says whether it existed.
    async fn delete_schedule(&self, namespace: &str, id: &str) -> Result<bool, StoreError>;

    /// The schedule, if stored.
    async fn get_schedule(&self, namespace: &str, id: &str)
    -> Result<Option<Schedule>, StoreError>;

    /// Up to `limit` schedules of a namespace with ids after `after`, in id order.
    async fn list_schedules(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError>;

    /// Every schedule of every namespace; read once at start-up.
    async fn all_schedules(&self) -> Result<Vec<Schedule>, StoreError>;

    /// Finishes pending writes and releases the storage (files, locks); later calls fail
    /// with `Unavailable`. The engine calls it last thing at shutdown.
    async fn close(&self) {}
}
