//! The writer thread: the one owner of the write connection. Requests arrive on a channel,
//! already encoded ([`super::encode`]); the thread takes whatever is waiting (up to
//! [`MAX_BATCH`]), applies it in one transaction, commits once (one fsync), and only then
//! answers each request. Idle, a lone request commits at once; under load, hundreds share a
//! commit. No database work ever runs on a tokio worker thread.
//!
//! One request never fails another: if a request fails while the batch is applied, the
//! batch is rolled back and applied again with each request in a savepoint of its own, so
//! the failing one is undone and refused alone while the rest commit. Only a failed BEGIN
//! or COMMIT, which no single request causes, fails the whole batch.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::encode::{EncodedEvent, EncodedJob};
use super::schedules::EncodedScheduleWrite;
use super::{id_blob, ms};
use crate::model::job::{JobId, JobState};
use crate::store::{Inserted, ScheduleWritten, StoreError};

/// The most requests one transaction carries.
pub const MAX_BATCH: usize = 2048;

/// A write request.
pub enum Op {
    Insert(EncodedJob, Vec<EncodedEvent>, SystemTime),
    /// Many inserts, in one request: all or nothing.
    InsertMany(Vec<(EncodedJob, Vec<EncodedEvent>)>, SystemTime),
    Save(EncodedJob, Vec<EncodedEvent>, SystemTime),
    Append(JobId, u64, Vec<EncodedEvent>, SystemTime),
    /// Deletes up to this many expired finished jobs.
    Purge(SystemTime, usize),
    /// Caps the database size (`PRAGMA max_page_count`); for tests of a full disk.
    PageLimit(u64),
    /// Remote kinds of a namespace (name, record JSON), declared at this time.
    PutKinds(String, Vec<(String, String)>, SystemTime),
    /// A worker's lease expiry: namespace, worker id, until.
    RenewWorker(String, String, SystemTime),
    /// Schedule writes, each atomic on its own.
    WriteSchedules(Vec<EncodedScheduleWrite>, SystemTime),
    /// Deletes a schedule: namespace, id.
    DeleteSchedule(String, String),
}

/// What a write request produced.
pub enum Answer {
    Inserted(Inserted),
    InsertedMany(Vec<Inserted>),
    Seq(u64),
    Count(usize),
    Schedules(Vec<ScheduleWritten>),
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
        let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().unzip();
        for (outcome, reply) in writer.commit(&ops).into_iter().zip(replies) {
            // The requester may have gone (its client hung up); the write stands anyway.
            let _ = reply.send(outcome);
        }
    }
    if let Err(e) = super::schema::mark_closed(&writer.conn) {
        tracing::warn!(error = %e, "could not mark the database closed");
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
fn superseded(batch: &[Op]) -> Vec<bool> {
    let mut next_is_save: HashMap<JobId, bool> = HashMap::new();
    let mut superseded = vec![false; batch.len()];
    for (i, op) in batch.iter().enumerate().rev() {
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
            Op::WriteSchedules(writes, _) => {
                for (job, _) in writes.iter().flat_map(|w| &w.jobs) {
                    next_is_save.insert(job.id, false);
                }
            }
            Op::Append(id, ..) => drop(next_is_save.insert(*id, false)),
            Op::Purge(..) => next_is_save.clear(),
            Op::PageLimit(_) | Op::PutKinds(..) | Op::RenewWorker(..) | Op::DeleteSchedule(..) => {}
        }
    }
    superseded
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// `requests` answers of one failure: nothing in the batch was stored.
fn all_failed(requests: usize, why: String) -> Vec<Result<Answer, StoreError>> {
    tracing::error!(error = %why, "nothing in this batch was stored");
    let failed = StoreError::Unavailable(why);
    (0..requests).map(|_| Err(failed.clone())).collect()
}

/// A request's failure, worded as what happened.
pub(super) fn write_failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("write failed: {e}"))
}

impl Writer {
    /// Applies a batch and says how each request went, in order.
    fn commit(&self, ops: &[Op]) -> Vec<Result<Answer, StoreError>> {
        if let Err(e) = self.cached("BEGIN IMMEDIATE") {
            return all_failed(ops.len(), format!("cannot begin a transaction: {e}"));
        }
        let superseded = superseded(ops);
        let mut carried = Carried::new();
        let mut outcomes = Vec::with_capacity(ops.len());
        for (op, superseded) in ops.iter().zip(superseded) {
            let outcome = self.apply(op, superseded, &mut carried);
            if let Err(StoreError::Unavailable(why)) = &outcome {
                // This request may be half-applied: undo the batch and apply it again,
                // each request alone in a savepoint. (Refusals such as an unknown job are
                // decided before anything is written, and cost nobody else.)
                let _ = self.conn.execute_batch("ROLLBACK");
                tracing::warn!(error = %why, "a write failed; applying its batch one request at a time");
                return self.commit_one_by_one(ops);
            }
            outcomes.push(outcome);
        }
        self.finish(outcomes)
    }

    /// The slow path: each request in a savepoint, so a failing one is undone and refused
    /// alone. Saves are not folded here: each writes its own row update.
    fn commit_one_by_one(&self, ops: &[Op]) -> Vec<Result<Answer, StoreError>> {
        if let Err(e) = self.cached("BEGIN IMMEDIATE") {
            return all_failed(ops.len(), format!("cannot begin a transaction: {e}"));
        }
        let mut carried = Carried::new();
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            let outcome = self.cached("SAVEPOINT request").map_err(write_failed);
            let outcome = outcome.and_then(|()| self.apply(op, false, &mut carried));
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "a write failed; only its request was refused");
                let _ = self.cached("ROLLBACK TO request");
            }
            let _ = self.cached("RELEASE request");
            outcomes.push(outcome);
        }
        self.finish(outcomes)
    }

    /// Commits; if that fails, nothing of the batch was stored and every request hears so.
    fn finish(&self, outcomes: Vec<Result<Answer, StoreError>>) -> Vec<Result<Answer, StoreError>> {
        match self.cached("COMMIT") {
            Ok(()) => outcomes,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                all_failed(outcomes.len(), format!("commit failed: {e}"))
            }
        }
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
            Op::Purge(now, limit) => self.purge(*now, *limit).map(Answer::Count),
            Op::PageLimit(pages) => {
                let pages = i64::try_from(*pages).unwrap_or(i64::MAX);
                self.conn
                    .pragma_update(None, "max_page_count", pages)
                    .map_err(write_failed)?;
                Ok(Answer::Count(0))
            }
            Op::PutKinds(namespace, kinds, at) => {
                super::remote::put_kinds(&self.conn, namespace, kinds, *at).map(Answer::Count)
            }
            Op::RenewWorker(namespace, worker, until) => {
                super::remote::renew_worker(&self.conn, namespace, worker, *until)
                    .map(Answer::Count)
            }
            Op::WriteSchedules(writes, at) => writes
                .iter()
                .map(|write| self.write_schedule(write, *at))
                .collect::<Result<_, _>>()
                .map(Answer::Schedules),
            Op::DeleteSchedule(namespace, id) => {
                super::schedules::delete(&self.conn, namespace, id).map(Answer::Count)
            }
        }
    }

    /// One schedule write: the record if it is at the expected version, and its jobs.
    fn write_schedule(
        &self,
        write: &EncodedScheduleWrite,
        at: SystemTime,
    ) -> Result<ScheduleWritten, StoreError> {
        if let Some(conflict) = super::schedules::put(&self.conn, write)? {
            return Ok(conflict);
        }
        let inserted = (write.jobs.iter())
            .map(|(job, events)| self.insert(job, events, at))
            .collect::<Result<_, _>>()?;
        Ok(ScheduleWritten::Written(inserted))
    }

    fn insert(
        &self,
        job: &EncodedJob,
        events: &[EncodedEvent],
        at: SystemTime,
    ) -> Result<Inserted, StoreError> {
        if let Some(key) = &job.idempotency_key {
            let sql = format!(
                "SELECT {} FROM jobs WHERE namespace = ?1 AND idempotency_key = ?2",
                super::JOB_COLUMNS
            );
            let existing = self
                .conn
                .prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_row([&job.namespace, key], super::job_row)
                        .optional()
                })
                .map_err(unavailable)?;
            if let Some(row) = existing {
                return Ok(Inserted::Existing(Box::new(super::job_from_row(row)?)));
            }
        }
        self.conn
            .prepare_cached(
                "INSERT INTO jobs (id, state, kind, queue, idempotency_key, expires_at_ms, last_seq, record, namespace, schedule_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8, ?7, ?9, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id_blob(job.id),
                    state_name(job.state),
                    job.kind,
                    job.queue,
                    job.idempotency_key,
                    job.expires_at_ms,
                    job.record,
                    events.len() as i64,
                    job.namespace,
                    job.schedule_id,
                ])
            })
            .map_err(write_failed)?;
        let blob = id_blob(job.id);
        for (key, value) in &job.labels {
            self.conn
                .prepare_cached("INSERT INTO job_labels (key, value, job_id) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| s.execute(params![key, value, blob]))
                .map_err(write_failed)?;
        }
        // A new job's log starts at seq 1: no need to read or update last_seq.
        for (seq, event) in (1..).zip(events) {
            self.insert_event(&blob, seq, event, at)?;
        }
        Ok(Inserted::Created(events.len() as u64))
    }

    fn insert_event(
        &self,
        blob: &[u8],
        seq: i64,
        event: &EncodedEvent,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO events (job_id, seq, at_ms, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![blob, seq, ms(at), event.kind, event.data]))
            .map(drop)
            .map_err(write_failed)
    }

    /// Writes the job's record and appends its events; the new last seq goes into the same
    /// row update, so the row is rewritten once, not twice. A `superseded` save writes only
    /// its events and carries its seq to the job's next save in the batch.
    fn save(
        &self,
        job: &EncodedJob,
        events: &[EncodedEvent],
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
                    job.holder.as_ref().or(running.then_some(&self.node)),
                    job.expires_at_ms,
                    job.record,
                    job.progress,
                    seq,
                    made_running == Some(true),
                ])
            })
            .map_err(write_failed)?;
        Ok(seq as u64)
    }

    /// Appends events, coalescing a progress event that follows another progress event.
    fn append(
        &self,
        id: JobId,
        from_seq: u64,
        events: &[EncodedEvent],
        at: SystemTime,
    ) -> Result<u64, StoreError> {
        let blob = id_blob(id);
        let seq = self.append_events(id, &blob, from_seq, events, at, None)?;
        if !events.is_empty() {
            self.conn
                .prepare_cached("UPDATE jobs SET last_seq = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![blob, seq]))
                .map_err(write_failed)?;
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
        events: &[EncodedEvent],
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
        for (offset, event) in (0..).zip(events) {
            if let Some(progress) = &event.progress {
                self.replace_progress(blob, seq, progress)?;
            }
            seq = if from_seq == 0 {
                seq + 1
            } else {
                (seq + 1).max(from_seq + offset)
            };
            self.insert_event(blob, seq, event, at)?;
        }
        Ok(seq)
    }

    /// Makes `progress` the job's latest and drops the log's last event if it was progress.
    fn replace_progress(
        &self,
        blob: &[u8],
        last_seq: i64,
        progress: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE jobs SET progress = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![blob, progress]))
            .map_err(write_failed)?;
        self.conn
            .prepare_cached(
                "DELETE FROM events WHERE job_id = ?1 AND seq = ?2 AND kind = 'progress'",
            )
            .and_then(|mut s| s.execute(params![blob, last_seq]))
            .map_err(write_failed)?;
        Ok(())
    }

    /// Deletes up to `limit` expired finished jobs, with their logs.
    fn purge(&self, now: SystemTime, limit: usize) -> Result<usize, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ids: Vec<Vec<u8>> = self
            .conn
            .prepare_cached(
                "DELETE FROM jobs WHERE id IN (
                    SELECT id FROM jobs WHERE expires_at_ms <= ?1
                      AND (state = 'succeeded' OR state = 'failed' OR state = 'cancelled')
                    LIMIT ?2)
                 RETURNING id",
            )
            .and_then(|mut s| {
                s.query_map(params![ms(now), limit], |r| r.get(0))?
                    .collect()
            })
            .map_err(write_failed)?;
        for sql in [
            "DELETE FROM events WHERE job_id = ?1",
            "DELETE FROM job_labels WHERE job_id = ?1",
        ] {
            let mut delete = self.conn.prepare_cached(sql).map_err(write_failed)?;
            for id in &ids {
                delete.execute([id]).map_err(write_failed)?;
            }
        }
        Ok(ids.len())
    }
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
