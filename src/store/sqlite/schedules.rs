//! What the SQLite store keeps for schedules: one row per schedule (the record as JSON and
//! its version beside it). A write names the version it expects, and the row is updated
//! only `WHERE version = ?`: a stale writer (a lost update, or later a second node firing
//! the same slot) changes nothing and gets the current record back. The jobs a write fires
//! are inserted by the writer in the same transaction.

use rusqlite::{Connection, OptionalExtension, params};

use super::encode::{EncodedEvent, EncodedJob};
use super::writer::{Answer, Op, write_failed};
use super::{SqliteStore, unavailable};
use crate::model::schedule::Schedule;
use crate::store::{Expect, ScheduleWrite, ScheduleWritten, StoreError};

/// A schedule write as the writer thread takes it.
pub struct EncodedScheduleWrite {
    namespace: String,
    id: String,
    expect: Expect,
    version: u64,
    record: String,
    pub jobs: Vec<(EncodedJob, Vec<EncodedEvent>)>,
}

impl EncodedScheduleWrite {
    fn new(write: &ScheduleWrite) -> Result<Self, StoreError> {
        let schedule = &write.schedule;
        let jobs = (write.jobs.iter())
            .map(|(job, events)| Ok((EncodedJob::new(job)?, super::encode::events(events)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(EncodedScheduleWrite {
            namespace: schedule.namespace.clone(),
            id: schedule.id.clone(),
            expect: write.expect,
            version: schedule.state.version,
            record: serde_json::to_string(schedule).map_err(unavailable)?,
            jobs,
        })
    }
}

fn decode(record: &str) -> Result<Schedule, StoreError> {
    serde_json::from_str(record)
        .map_err(|e| StoreError::Unavailable(format!("a stored schedule cannot be read: {e}")))
}

fn version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes the record if the stored one is as expected; otherwise answers the conflict
/// (with the stored record) and writes nothing. The writer thread's side.
pub(super) fn put(
    conn: &Connection,
    write: &EncodedScheduleWrite,
) -> Result<Option<ScheduleWritten>, StoreError> {
    let changed = match write.expect {
        Expect::Absent => conn
            .prepare_cached(
                "INSERT INTO schedules (namespace, id, version, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, id) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    write.namespace,
                    write.id,
                    version(write.version),
                    write.record
                ])
            }),
        Expect::Version(expected) => conn
            .prepare_cached(
                "UPDATE schedules SET version = ?3, record = ?4
                 WHERE namespace = ?1 AND id = ?2 AND version = ?5",
            )
            .and_then(|mut s| {
                s.execute(params![
                    write.namespace,
                    write.id,
                    version(write.version),
                    write.record,
                    version(expected)
                ])
            }),
    }
    .map_err(write_failed)?;
    if changed == 1 {
        return Ok(None);
    }
    let stored = read_one(conn, &write.namespace, &write.id)?;
    Ok(Some(ScheduleWritten::Conflict(stored.map(Box::new))))
}

/// Deletes a schedule's row; the writer thread's side.
pub(super) fn delete(conn: &Connection, namespace: &str, id: &str) -> Result<usize, StoreError> {
    conn.prepare_cached("DELETE FROM schedules WHERE namespace = ?1 AND id = ?2")
        .and_then(|mut s| s.execute(params![namespace, id]))
        .map_err(write_failed)
}

fn read_one(conn: &Connection, namespace: &str, id: &str) -> Result<Option<Schedule>, StoreError> {
    let record: Option<String> = conn
        .prepare_cached("SELECT record FROM schedules WHERE namespace = ?1 AND id = ?2")
        .and_then(|mut s| s.query_row(params![namespace, id], |r| r.get(0)).optional())
        .map_err(unavailable)?;
    record.as_deref().map(decode).transpose()
}

fn read_many(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Schedule>, StoreError> {
    let mut select = conn.prepare_cached(sql).map_err(unavailable)?;
    let rows = select
        .query_map(args, |r| r.get::<_, String>(0))
        .map_err(unavailable)?;
    let mut schedules = Vec::new();
    for row in rows {
        match decode(&row.map_err(unavailable)?) {
            Ok(schedule) => schedules.push(schedule),
            // One bad record must not hide every other schedule.
            Err(e) => tracing::error!(error = %e, "skipping a schedule that cannot be read"),
        }
    }
    Ok(schedules)
}

impl SqliteStore {
    pub(super) async fn write_schedule_batch(
        &self,
        writes: &[ScheduleWrite],
        at: std::time::SystemTime,
    ) -> Result<Vec<ScheduleWritten>, StoreError> {
        let encoded = writes
            .iter()
            .map(EncodedScheduleWrite::new)
            .collect::<Result<_, _>>()?;
        match self.write(Op::WriteSchedules(encoded, at)).await? {
            Answer::Schedules(written) => Ok(written),
            _ => Err(unavailable("unexpected answer from the writer")),
        }
    }

    pub(super) async fn remove_schedule(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let op = Op::DeleteSchedule(namespace.to_string(), id.to_string());
        match self.write(op).await? {
            Answer::Count(n) => Ok(n > 0),
            _ => Err(unavailable("unexpected answer from the writer")),
        }
    }

    pub(super) async fn read_schedule(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<Schedule>, StoreError> {
        let (namespace, id) = (namespace.to_string(), id.to_string());
        self.read(move |conn| read_one(conn, &namespace, &id)).await
    }

    pub(super) async fn read_schedules(
        &self,
        namespace: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        let (namespace, after) = (namespace.map(str::to_string), after.map(str::to_string));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| match namespace {
            Some(ns) => read_many(
                conn,
                "SELECT record FROM schedules WHERE namespace = ?1 AND (?2 IS NULL OR id > ?2)
                 ORDER BY id LIMIT ?3",
                params![ns, after, limit],
            ),
            None => read_many(
                conn,
                "SELECT record FROM schedules ORDER BY namespace, id",
                [],
            ),
        })
        .await
    }
}
