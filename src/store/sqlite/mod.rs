//! The durable store: one SQLite database (WAL mode, synchronous=FULL) under the data
//! directory. Writes go through one writer thread with group commit ([`writer`]); reads use
//! a small pool of read-only connections on tokio's blocking pool, beside the writer.
//! A write is acknowledged only after its transaction has committed to disk.

mod checkpoint;
mod encode;
#[cfg(test)]
mod query_tests;
mod remote;
mod schedules;
mod schema;
mod writer;
#[cfg(test)]
mod writer_tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{
    Inserted, ListQuery, Page, ScheduleWrite, ScheduleWritten, Store, StoreError, WorkerLease,
};
use crate::model::job::{Event, EventData, Job, JobId, Progress};
use crate::model::schedule::Schedule;
use crate::model::worker::RemoteKind;
use encode::EncodedJob;
use writer::{Answer, Op, Reply};

pub use schema::SCHEMA_VERSION;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "spindle.db";
/// Expired jobs deleted per transaction: a big purge runs as many small ones, so other
/// writes wait for one batch at most, not for the whole purge.
const PURGE_BATCH: usize = 500;
/// Read-only connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;

/// Jobs and their logs in a SQLite database.
pub struct SqliteStore {
    path: PathBuf,
    /// An OS lock on the database file itself, held until close: one process per
    /// database, or recovery would take another process's running jobs for crashed ones.
    /// (A lock file beside it could be deleted out from under a live server.) This
    /// descriptor is closed only after every SQLite connection: closing a descriptor of
    /// the file would drop SQLite's own POSIX locks.
    lock: Mutex<Option<std::fs::File>>,
    /// `None` once closed.
    requests: Mutex<Option<mpsc::Sender<(Op, Reply)>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/spindle.db`, refusing a file that is corrupt,
    /// not Spindle's, or from a newer schema; starts the writer thread. Blocking: call it
    /// before serving, or from a blocking task.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Refused(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join(DB_FILE);
        let lock = lock_database(&path)?;
        let conn = schema::open_writer(&path)?;
        let node = format!("spindle-{}", JobId::new());
        let (tx, rx) = mpsc::channel();
        let checkpoint_path = path.clone();
        let writer = std::thread::Builder::new()
            .name("spindle-db-writer".into())
            .spawn(move || {
                // Declared first, dropped last: stops after the writer's final commit.
                let _checkpointer = checkpoint::Checkpointer::start(&checkpoint_path);
                writer::run(conn, node, rx);
            })
            .map_err(|e| StoreError::Refused(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            path,
            lock: Mutex::new(Some(lock)),
            requests: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Caps the database at `pages` pages (4 KiB each): writes past it fail as on a full
    /// disk. For tests and emergencies.
    pub async fn set_page_limit(&self, pages: u64) -> Result<(), StoreError> {
        self.write(Op::PageLimit(pages)).await.map(drop)
    }

    async fn write(&self, op: Op) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the database is closed".into());
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .ok_or_else(stopped)?
            .send((op, reply))
            .map_err(|_| stopped())?;
        // Every request is answered unless the writer thread itself has died.
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the database writer has stopped".into(),
            ))
        })
    }

    /// Runs `read` on a pooled read-only connection, on tokio's blocking pool.
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (path, readers) = (self.path.clone(), self.readers.clone());
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => schema::open_reader(&path)?,
            };
            let result = read(&conn);
            let mut idle = readers.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

/// Takes an exclusive `flock` on the database file (creating it empty if need be), or
/// says that another process holds it. `flock` locks are apart from SQLite's POSIX locks.
fn lock_database(path: &Path) -> Result<std::fs::File, StoreError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::Refused(format!("cannot open {}: {e}", path.display())))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            StoreError::Refused(format!(
                "{} is in use by another Spindle process",
                path.display()
            ))
        },
    )?;
    Ok(file)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Milliseconds since the Unix epoch.
fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Ids are stored big-endian, so byte order is UUID v7 order, which is creation order.
fn id_blob(id: JobId) -> Vec<u8> {
    id.as_u128().to_be_bytes().to_vec()
}

fn event_kind(data: &EventData) -> &'static str {
    match data {
        EventData::State { .. } => "state",
        EventData::Progress(_) => "progress",
        EventData::Log(_) => "log",
        EventData::Finished { .. } => "finished",
    }
}

/// A job's columns, as `JOB_COLUMNS` selects them.
type JobRow = (Vec<u8>, String, i64, Option<String>);

const JOB_COLUMNS: &str = "id, record, last_seq, progress";

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn job_from_row((id, record, last_seq, progress): JobRow) -> Result<Job, StoreError> {
    let id: [u8; 16] = id
        .try_into()
        .map_err(|_| unavailable("a job id that is not 16 bytes"))?;
    let id = JobId::from_u128(u128::from_be_bytes(id));
    let corrupt = |e: serde_json::Error| StoreError::Corrupt {
        id,
        why: e.to_string(),
    };
    let mut job: Job = serde_json::from_str(&record).map_err(corrupt)?;
    job.id = id;
    job.last_seq = u64::try_from(last_seq).unwrap_or(0);
    job.progress = progress
        .map(|p| serde_json::from_str::<Progress>(&p))
        .transpose()
        .map_err(corrupt)?;
    Ok(job)
}

/// Which index a ListJobs walk follows.
#[derive(Clone, Copy)]
enum ListBy {
    /// Every job of the namespace.
    Namespace,
    /// The rows of one label (?5 = ?6).
    Label,
    /// The jobs one schedule fired (?8).
    Schedule,
}

/// ListJobs' statement: the jobs `by` walks, newest first, filtered by the rest.
fn list_sql(by: ListBy) -> String {
    let (from, id, extra) = match by {
        ListBy::Label => (
            "job_labels JOIN jobs ON jobs.id = job_labels.job_id",
            "job_labels.job_id",
            "AND job_labels.key = ?5 AND job_labels.value = ?6 AND ?8 IS NULL",
        ),
        ListBy::Schedule => (
            "jobs",
            "jobs.id",
            "AND jobs.schedule_id = ?8 AND ?5 IS NULL AND ?6 IS NULL",
        ),
        ListBy::Namespace => (
            "jobs",
            "jobs.id",
            "AND ?5 IS NULL AND ?6 IS NULL AND ?8 IS NULL",
        ),
    };
    let columns = "jobs.id, jobs.record, jobs.last_seq, jobs.progress";
    format!(
        "SELECT {columns} FROM {from}
         WHERE jobs.namespace = ?7 AND (?1 IS NULL OR {id} < ?1) AND (?2 IS NULL OR jobs.state = ?2)
           AND (?3 IS NULL OR jobs.kind = ?3) AND (?4 IS NULL OR jobs.queue = ?4) {extra}
         ORDER BY {id} DESC"
    )
}

fn job_rows(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Job>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
    let rows = stmt.query_map(args, job_row).map_err(unavailable)?;
    rows.map(|row| job_from_row(row.map_err(unavailable)?))
        .collect()
}

// === impl Store ===

#[async_trait]
impl Store for SqliteStore {
    async fn insert(
        &self,
        job: &Job,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<Inserted, StoreError> {
        match self
            .write(Op::Insert(
                EncodedJob::new(job)?,
                encode::events(events)?,
                at,
            ))
            .await?
        {
            Answer::Inserted(inserted) => Ok(inserted),
            _ => Err(unavailable("unexpected answer from the writer")),
        }
    }

    async fn insert_many(
        &self,
        items: &[(Job, Vec<EventData>)],
        at: SystemTime,
    ) -> Result<Vec<Inserted>, StoreError> {
        let items = items
            .iter()
            .map(|(job, events)| Ok((EncodedJob::new(job)?, encode::events(events)?)))
            .collect::<Result<_, StoreError>>()?;
        match self.write(Op::InsertMany(items, at)).await? {
            Answer::InsertedMany(inserted) => Ok(inserted),
            _ => Err(unavailable("unexpected answer from the writer")),
        }
    }

    async fn save(
        &self,
        job: &Job,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        match self
            .write(Op::Save(EncodedJob::new(job)?, encode::events(events)?, at))
            .await?
        {
            Answer::Seq(seq) => Ok(seq),
            _ => Err(unavailable("unexpected answer from the writer")),
        }
    }

    async fn append(
        &self,
        id: JobId,
        from_seq: u64,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        match self
            .write(Op::Append(id, from_seq, encode::events(events)?, at))
            .await?
        {
            Answer::Seq(seq) => Ok(seq),
            _ => Err(unavailable("unexpected answer from the writer")),
        }
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.read(move |conn| {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
            let row = conn
                .prepare_cached(&sql)
                .and_then(|mut s| s.query_row([id_blob(id)], job_row).optional())
                .map_err(unavailable)?;
            row.map(job_from_row).transpose()
        })
        .await
    }

    async fn events_after(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<Event>>, StoreError> {
        self.read(move |conn| {
            let blob = id_blob(id);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, at_ms, data FROM events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(unavailable)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(params![blob, after, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                })
                .map_err(unavailable)?;
            let mut events = Vec::new();
            for row in rows {
                let (seq, at, data) = row.map_err(unavailable)?;
                let data = serde_json::from_str(&data).map_err(|e| StoreError::Corrupt {
                    id,
                    why: format!("event {seq}: {e}"),
                })?;
                events.push(Event { seq: seq as u64, at: from_ms(at), data });
            }
            if events.is_empty() {
                let exists = conn
                    .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
                    .and_then(|mut s| s.exists([&blob]))
                    .map_err(unavailable)?;
                if !exists {
                    return Ok(None);
                }
            }
            Ok(Some(events))
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let query = query.clone();
        self.read(move |conn| {
            // With a label filter, walk that label's rows (newest first), not every job;
            // `matches` checks the other labels.
            // A schedule filter beats a label one: a schedule's jobs are fewer.
            let by = match (&query.schedule, query.labels.is_empty()) {
                (Some(_), _) => ListBy::Schedule,
                (None, false) => ListBy::Label,
                (None, true) => ListBy::Namespace,
            };
            let label = query
                .labels
                .iter()
                .next()
                .filter(|_| matches!(by, ListBy::Label));
            let sql = list_sql(by);
            let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
            let args = params![
                query.before.map(id_blob),
                query.state.map(writer::state_name),
                query.kind,
                query.queue,
                label.map(|(k, _)| k),
                label.map(|(_, v)| v),
                query.namespace,
                query.schedule,
            ];
            let mut rows = stmt.query(args).map_err(unavailable)?;
            let (mut page, mut spent) = (Page::default(), 0);
            while let Some(row) = rows.next().map_err(unavailable)? {
                let row = job_row(row).map_err(unavailable)?;
                let cost = super::list_cost(&query, row.1.len());
                let job = match job_from_row(row) {
                    Ok(job) => job,
                    // One bad record must not break everyone's list.
                    Err(e) => {
                        tracing::error!(error = %e, "ListJobs skipped a job it cannot read");
                        continue;
                    }
                };
                if query.matches(&job) && !page.offer(&query, job, cost, &mut spent) {
                    break;
                }
            }
            Ok(page)
        })
        .await
    }

    async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE state <> 'succeeded' AND state <> 'failed' AND state <> 'cancelled'
                 ORDER BY id"
            );
            job_rows(conn, &sql, [])
        })
        .await
    }

    async fn purge(&self, now: SystemTime) -> Result<usize, StoreError> {
        let mut purged = 0;
        loop {
            match self.write(Op::Purge(now, PURGE_BATCH)).await? {
                Answer::Count(n) if n < PURGE_BATCH => return Ok(purged + n),
                Answer::Count(n) => purged += n,
                _ => return Err(unavailable("unexpected answer from the writer")),
            }
        }
    }

    async fn put_remote_kinds(
        &self,
        namespace: &str,
        kinds: &[RemoteKind],
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.write_kinds(namespace, kinds, at).await
    }

    async fn remote_kinds(&self) -> Result<Vec<(String, RemoteKind)>, StoreError> {
        self.read_kinds().await
    }

    async fn renew_worker(
        &self,
        namespace: &str,
        worker_id: &str,
        until: SystemTime,
    ) -> Result<(), StoreError> {
        self.write_worker(namespace, worker_id, until).await
    }

    async fn worker_leases(&self) -> Result<Vec<WorkerLease>, StoreError> {
        self.read_workers().await
    }

    async fn write_schedules(
        &self,
        writes: &[ScheduleWrite],
        at: SystemTime,
    ) -> Result<Vec<ScheduleWritten>, StoreError> {
        self.write_schedule_batch(writes, at).await
    }

    async fn delete_schedule(&self, namespace: &str, id: &str) -> Result<bool, StoreError> {
        self.remove_schedule(namespace, id).await
    }

    async fn get_schedule(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<Schedule>, StoreError> {
        self.read_schedule(namespace, id).await
    }

    async fn list_schedules(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        self.read_schedules(Some(namespace), after, limit).await
    }

    async fn all_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.read_schedules(None, None, 0).await
    }

    async fn close(&self) {
        // Dropping the sender lets the writer finish what is queued and exit, closing the
        // write connection (which checkpoints the WAL).
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
