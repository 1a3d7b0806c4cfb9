//! What the SQLite store keeps for remote workers: the kinds they declared (one row per
//! namespace and name, the kind as JSON) and each worker's lease expiry (one row per
//! worker, rewritten by its heartbeat: the jobs table gets no write for it).

use std::time::SystemTime;

use rusqlite::{Connection, params};

use super::writer::{Answer, Op, write_failed};
use super::{SqliteStore, from_ms, ms, unavailable};
use crate::model::worker::RemoteKind;
use crate::store::{StoreError, WorkerLease};

/// Upserts each kind's row; the writer thread's side of `put_remote_kinds`.
pub(super) fn put_kinds(
    conn: &Connection,
    namespace: &str,
    kinds: &[(String, String)],
    at: SystemTime,
) -> Result<usize, StoreError> {
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO remote_kinds (namespace, name, record, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (namespace, name) DO UPDATE SET
                record = excluded.record, updated_at_ms = excluded.updated_at_ms",
        )
        .map_err(write_failed)?;
    for (name, record) in kinds {
        upsert
            .execute(params![namespace, name, record, ms(at)])
            .map_err(write_failed)?;
    }
    Ok(kinds.len())
}

/// Upserts a worker's lease expiry; the writer thread's side of `renew_worker`.
pub(super) fn renew_worker(
    conn: &Connection,
    namespace: &str,
    worker_id: &str,
    until: SystemTime,
) -> Result<usize, StoreError> {
    conn.prepare_cached(
        "INSERT INTO workers (namespace, worker_id, lease_until_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (namespace, worker_id) DO UPDATE SET lease_until_ms = excluded.lease_until_ms",
    )
    .and_then(|mut s| s.execute(params![namespace, worker_id, ms(until)]))
    .map_err(write_failed)
}

impl SqliteStore {
    pub(super) async fn write_kinds(
        &self,
        namespace: &str,
        kinds: &[RemoteKind],
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let rows = kinds
            .iter()
            .map(|k| {
                Ok((
                    k.name.clone(),
                    serde_json::to_string(k).map_err(unavailable)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write(Op::PutKinds(namespace.to_string(), rows, at))
            .await
            .map(drop)
    }

    pub(super) async fn read_kinds(&self) -> Result<Vec<(String, RemoteKind)>, StoreError> {
        self.read(|conn| {
            let mut select = conn
                .prepare_cached("SELECT namespace, record FROM remote_kinds ORDER BY namespace, name")
                .map_err(unavailable)?;
            let rows = select
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(unavailable)?;
            let mut kinds = Vec::new();
            for row in rows {
                let (namespace, record) = row.map_err(unavailable)?;
                match serde_json::from_str::<RemoteKind>(&record) {
                    Ok(kind) => kinds.push((namespace, kind)),
                    Err(e) => tracing::warn!(%namespace, error = %e, "skipping a remote kind that cannot be read"),
                }
            }
            Ok(kinds)
        })
        .await
    }

    pub(super) async fn write_worker(
        &self,
        namespace: &str,
        worker_id: &str,
        until: SystemTime,
    ) -> Result<(), StoreError> {
        let op = Op::RenewWorker(namespace.to_string(), worker_id.to_string(), until);
        match self.write(op).await? {
            Answer::Count(_) => Ok(()),
            _ => Err(unavailable("unexpected answer from the writer")),
        }
    }

    pub(super) async fn read_workers(&self) -> Result<Vec<WorkerLease>, StoreError> {
        self.read(|conn| {
            let mut select = conn
                .prepare_cached("SELECT namespace, worker_id, lease_until_ms FROM workers")
                .map_err(unavailable)?;
            let rows = select
                .query_map([], |r| {
                    Ok(WorkerLease {
                        namespace: r.get(0)?,
                        worker_id: r.get(1)?,
                        until: from_ms(r.get(2)?),
                    })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<_, _>>().map_err(unavailable)
        })
        .await
    }
}
