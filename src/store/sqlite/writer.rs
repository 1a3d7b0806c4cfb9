//! The writer thread: the one owner of the write connection. Requests arrive on a channel;
//! the thread takes whatever is waiting (up to [`MAX_BATCH`]), applies it in one
//! transaction, commits once (one fsync), and only then answers each request. A storage
//! error rolls the whole batch back (no request is ever half-stored); a refusal (unknown
//! job) is decided before its request writes anything, so it costs the others nothing.
//! Idle, a lone request commits at once; under load, hundreds share a commit. No database
//! work ever runs on a tokio worker thread.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{event_kind, id_blob, ms};
use crate::engine::job::{EventData, Job, JobId, JobState};
use crate::store::{Inserted, StoreError};

/// The most requests one transaction carries.
pub const MAX_BATCH: usize = 2048;

/// A write request.
pub enum Op {
    Insert(Job, Vec<EventData>, SystemTime),
    /// Many inserts, in one request.
    InsertMany(Vec<(Job, Vec<EventData>)>, SystemTime),
    Save(Job, Vec<EventData>, SystemTime),
    Append(JobId, u64, Vec<EventData>, SystemTime),
    Purge(SystemTime),
    /// Caps the database size (`PRAGMA max_page_count`); for tests of a full disk.
    PageLimit(u64),
}

/// What a write request produced.
pub enum Answer {
    Inserted(Inserted),
    InsertedMany(Vec<Inserted>),
    Seq(u64),
    Count(usize),
}

pub type Reply = oneshot::Sender<Result<Answer, StoreError>>;

/// Runs until every sender is gone.
pub fn run(conn: Connection, node: String, requests: mpsc::Receiver<(Op, Reply)>) {
    let writer = Writer { conn, node };
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        writer.commit(batch);
    }
}

struct Writer {
    conn: Connection,
    /// This process's lease owner name.
    node: String,
}

/// What a save whose row update was left to a later save of the same job (in the same
/// batch) hands on to it: the log's new last seq, and whether it made the job RUNNING.
type Carried = HashMap<JobId, (i64, bool)>;

/// Which saves of a batch another save of the same job follows with nothing else touching
/// that job in between: their row update would be overwritten within the same commit, so
/// only their events are written. A short job's RUNNING and outcome often share a batch.
fn superseded(batch: &[(Op, Reply)]) -> Vec<bool> {
    let mut next_is_save: HashMap<JobId, bool> = HashMap::new();
    let mut superseded = vec![false; batch.len()];
    for (i, (op, _)) in batch.iter().enumerate().rev() {
        match op {
            Op::Save(job, ..) => {
                superseded[i] = next_is_save.get(&job.id) == Some(&true);
                next_is_save.insert(job.id, true);
            }
            Op::Insert(job, ..) => drop(next_is_save.insert(job.id, false)),
            Op::InsertMany(items, _) => {
                for (job, _) in items {
                    next_is_save.insert(job.id, false);
                }
            }
            Op::Append(id, ..) => drop(next_is_save.insert(*id, false)),
            Op::Purge(_) => next_is_save.clear(),
            Op::PageLimit(_) => {}
        }
    }
    superseded
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Writer {
    fn commit(&self, batch: Vec<(Op, Reply)>) {
        if let Err(e) = self.cached("BEGIN IMMEDIATE") {
            return answer_all(batch.into_iter().map(|(_, reply)| reply), &unavailable(e));
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let superseded = superseded(&batch);
        let mut carried = Carried::new();
        for ((op, reply), superseded) in batch.into_iter().zip(superseded) {
            let outcome = self.apply(&op, superseded, &mut carried);
            if let Err(StoreError::Unavailable(why)) = &outcome {
                // A storage error may have left this request half-applied: undo the whole
                // batch rather than commit a part of it. (Refusals such as an unknown job
                // are decided before anything is written, so they cost nobody else.)
                let why = why.clone();
                let replies = outcomes.into_iter().map(|(_, r)| r).chain([reply]);
                return self.abandon(replies, "write failed", why);
            }
            outcomes.push((outcome, reply));
        }
        if let Err(e) = self.cached("COMMIT") {
            let replies = outcomes.into_iter().map(|(_, r)| r);
            return self.abandon(replies, "commit failed", e.to_string());
        }
        for (outcome, reply) in outcomes {
            // The requester may have gone (its client hung up); the write stands anyway.
            let _ = reply.send(outcome);
        }
    }

    /// Rolls the open transaction back and tells every request of the batch so.
    fn abandon(&self, replies: impl IntoIterator<Item = Reply>, what: &str, why: String) {
        let _ = self.conn.execute_batch("ROLLBACK");
        tracing::error!(error = %why, "{what}; nothing in this batch was stored");
        answer_all(replies, &unavailable(why));
    }

    /// Runs a parameterless statement through the statement cache (no parsing each time).
    fn cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// Applies one request; `superseded` and `carried` are for folding a job's saves.
    fn apply(
        &self,
        op: &Op,
        superseded: bool,
        carried: &mut Carried,
    ) -> Result<Answer, StoreError> {
        match op {
            Op::Insert(job, events, at) => self.insert(job, events, *at).map(Answer::Inserted),
            Op::InsertMany(items, at) => items
                .iter()
                .map(|(job, events)| self.insert(job, events, *at))
                .collect::<Result<_, _>>()
                .map(Answer::InsertedMany),
            Op::Save(job, events, at) => self
                .save(job, events, *at, superseded, carried)
                .map(Answer::Seq),
            Op::Append(id, from_seq, events, at) => {
                self.append(*id, *from_seq, events, *at).map(Answer::Seq)
            }
            Op::Purge(now) => self.purge(*now).map(Answer::Count),
            Op::PageLimit(pages) => {
                let pages = i64::try_from(*pages).unwrap_or(i64::MAX);
                self.conn
                    .pragma_update(None, "max_page_count", pages)
                    .map_err(unavailable)?;
                Ok(Answer::Count(0))
            }
        }
    }

    fn insert(
        &self,
        job: &Job,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<Inserted, StoreError> {
        if let Some(key) = &job.spec.idempotency_key {
            let sql = format!(
                "SELECT {} FROM jobs WHERE idempotency_key = ?1",
                super::JOB_COLUMNS
            );
            let existing = self
                .conn
                .prepare_cached(&sql)
                .and_then(|mut s| s.query_row([key], super::job_row).optional())
                .map_err(unavailable)?;
            if let Some(row) = existing {
                return Ok(Inserted::Existing(Box::new(super::job_from_row(row)?)));
            }
        }
        self.conn
            .prepare_cached(
                "INSERT INTO jobs (id, state, kind, queue, idempotency_key, expires_at_ms, last_seq, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id_blob(job.id),
                    state_name(job.state),
                    job.spec.kind,
                    job.spec.queue,
                    job.spec.idempotency_key,
                    job.expires_at.map(ms),
                    super::record_json(job)?,
                    events.len() as i64,
                ])
            })
            .map_err(unavailable)?;
        // A new job's log starts at seq 1: no need to read or update last_seq.
        let blob = id_blob(job.id);
        for (seq, data) in (1..).zip(events) {
            self.insert_event(&blob, seq, data, at)?;
        }
        Ok(Inserted::Created(events.len() as u64))
    }

    fn insert_event(
        &self,
        blob: &[u8],
        seq: i64,
        data: &EventData,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(data).map_err(unavailable)?;
        self.conn
            .prepare_cached(
                "INSERT INTO events (job_id, seq, at_ms, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![blob, seq, ms(at), event_kind(data), json]))
            .map(drop)
            .map_err(unavailable)
    }

    /// Writes the job's record and appends its events; the new last seq goes into the same
    /// row update, so the row is rewritten once, not twice. A `superseded` save writes only
    /// its events and carries its seq to the job's next save in the batch.
    fn save(
        &self,
        job: &Job,
        events: &[EventData],
        at: SystemTime,
        superseded: bool,
        carried: &mut Carried,
    ) -> Result<u64, StoreError> {
        let blob = id_blob(job.id);
        let (known_seq, made_running) = carried.remove(&job.id).unzip();
        let seq = self.append_events(job.id, &blob, job.last_seq + 1, events, at, known_seq)?;
        let running = job.state == JobState::Running;
        // (A save that carries progress updates its row: the next one may not carry it.)
        if superseded && job.progress.is_none() {
            carried.insert(job.id, (seq, running || made_running == Some(true)));
            return Ok(seq as u64);
        }
        self.conn
            .prepare_cached(
                "UPDATE jobs SET
                    lease_token = lease_token + (CASE WHEN (?2 = 'running' OR ?8) AND state <> 'running' THEN 1 ELSE 0 END),
                    lease_owner = ?3,
                    state = ?2,
                    expires_at_ms = ?4,
                    record = ?5,
                    progress = COALESCE(?6, progress),
                    last_seq = ?7
                 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    blob,
                    state_name(job.state),
                    running.then_some(&self.node),
                    job.expires_at.map(ms),
                    super::record_json(job)?,
                    job.progress.as_ref().map(serde_json::to_string).transpose().map_err(to_sql_err)?,
                    seq,
                    made_running == Some(true),
                ])
            })
            .map_err(unavailable)?;
        Ok(seq as u64)
    }

    /// Appends events, coalescing a progress event that follows another progress event.
    fn append(
        &self,
        id: JobId,
        from_seq: u64,
        events: &[EventData],
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        let blob = id_blob(id);
        let seq = self.append_events(id, &blob, from_seq, events, at, None)?;
        if !events.is_empty() {
            self.conn
                .prepare_cached("UPDATE jobs SET last_seq = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![blob, seq]))
                .map_err(unavailable)?;
        }
        Ok(seq as u64)
    }

    /// Inserts the events from `from_seq` or after the job's last seq (`known_seq`, else
    /// read from its row), whichever is higher, and returns the new last seq, leaving the
    /// caller to store it. An unknown job is refused before anything is written.
    fn append_events(
        &self,
        id: JobId,
        blob: &[u8],
        from_seq: u64,
        events: &[EventData],
        at: SystemTime,
        known_seq: Option<i64>,
    ) -> Result<i64, StoreError> {
        let last: Option<i64> = match known_seq {
            Some(seq) => Some(seq),
            None => self
                .conn
                .prepare_cached("SELECT last_seq FROM jobs WHERE id = ?1")
                .and_then(|mut s| s.query_row([blob], |r| r.get(0)).optional())
                .map_err(unavailable)?,
        };
        let mut seq = last.ok_or(StoreError::UnknownJob(id))?;
        let from_seq = i64::try_from(from_seq).map_err(unavailable)?;
        for (offset, data) in (0..).zip(events) {
            if let EventData::Progress(progress) = data {
                self.replace_progress(blob, seq, progress)?;
            }
            seq = if from_seq == 0 {
                seq + 1
            } else {
                (seq + 1).max(from_seq + offset)
            };
            self.insert_event(blob, seq, data, at)?;
        }
        Ok(seq)
    }

    /// Makes `progress` the job's latest and drops the log's last event if it was progress.
    fn replace_progress(
        &self,
        blob: &[u8],
        last_seq: i64,
        progress: &crate::engine::job::Progress,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(progress).map_err(unavailable)?;
        self.conn
            .prepare_cached("UPDATE jobs SET progress = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![blob, json]))
            .map_err(unavailable)?;
        self.conn
            .prepare_cached(
                "DELETE FROM events WHERE job_id = ?1 AND seq = ?2 AND kind = 'progress'",
            )
            .and_then(|mut s| s.execute(params![blob, last_seq]))
            .map_err(unavailable)?;
        Ok(())
    }

    fn purge(&self, now: SystemTime) -> Result<usize, StoreError> {
        let expired = "SELECT id FROM jobs WHERE expires_at_ms <= ?1
                       AND (state = 'succeeded' OR state = 'failed' OR state = 'cancelled')";
        self.conn
            .execute(
                &format!("DELETE FROM events WHERE job_id IN ({expired})"),
                [ms(now)],
            )
            .map_err(unavailable)?;
        self.conn
            .execute(
                &format!("DELETE FROM jobs WHERE id IN ({expired})"),
                [ms(now)],
            )
            .map_err(unavailable)
    }
}

fn answer_all(replies: impl IntoIterator<Item = Reply>, error: &StoreError) {
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

fn to_sql_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// The state as stored in the `state` column.
pub fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Scheduled => "scheduled",
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::RetryWait => "retry_wait",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}
