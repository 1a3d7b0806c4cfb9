//! Opening a Spindle database safely: a file that is corrupt, belongs to something else, or
//! comes from a newer Spindle is refused with a clear message and never touched; an older
//! schema is migrated step by step, each step in its own transaction.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::store::StoreError;

/// "SPND": marks a SQLite file as a Spindle database (`PRAGMA application_id`).
pub const APPLICATION_ID: i32 = 0x5350_4E44;
/// The schema this build reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 6;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // v0 -> v1: jobs (the record as JSON, plus the columns queries filter on, and the lease
    // a node holds while it runs the job) and their event logs.
    r#"
    CREATE TABLE jobs (
        id               BLOB PRIMARY KEY,
        state            TEXT NOT NULL,
        kind             TEXT NOT NULL,
        queue            TEXT NOT NULL,
        idempotency_key  TEXT UNIQUE,
        expires_at_ms    INTEGER,
        lease_owner      TEXT,
        lease_token      INTEGER NOT NULL DEFAULT 0,
        last_seq         INTEGER NOT NULL,
        progress         TEXT,
        record           TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX jobs_unfinished ON jobs(state)
        WHERE state NOT IN ('succeeded', 'failed', 'cancelled');
    CREATE INDEX jobs_expiry ON jobs(expires_at_ms) WHERE expires_at_ms IS NOT NULL;
    CREATE TABLE events (
        job_id  BLOB NOT NULL,
        seq     INTEGER NOT NULL,
        at_ms   INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        data    TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID;
    "#,
    // v1 -> v2: the same index without `NOT IN`: SQLite evaluates an IN list in an index's
    // WHERE through a temporary B-tree, opened and freed by every insert and update of a
    // job (a sixth of the writer thread's time under load, much of it in page faults).
    r#"
    DROP INDEX jobs_unfinished;
    CREATE INDEX jobs_unfinished ON jobs(state)
        WHERE state <> 'succeeded' AND state <> 'failed' AND state <> 'cancelled';
    "#,
    // v2 -> v3: labels as rows, so a ListJobs label filter reads only the jobs that carry
    // the label (it decoded every job before); and `meta`, which says whether the last
    // process closed the database cleanly.
    r#"
    CREATE TABLE job_labels (
        key     TEXT NOT NULL,
        value   TEXT NOT NULL,
        job_id  BLOB NOT NULL,
        PRIMARY KEY (key, value, job_id)
    ) WITHOUT ROWID;
    CREATE INDEX job_labels_by_job ON job_labels(job_id);
    INSERT INTO job_labels (key, value, job_id)
        SELECT label.key, label.value, jobs.id
        FROM jobs, json_each(jobs.record, '$.spec.labels') AS label;
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    "#,
    // v4, namespaces: idempotency keys become unique per namespace, which SQLite can only
    // do by rebuilding the table. Existing jobs go to "default" (their records, which
    // leave the default out, already read so).
    r#"
    CREATE TABLE jobs_v4 (
        id               BLOB PRIMARY KEY,
        namespace        TEXT NOT NULL DEFAULT 'default',
        state            TEXT NOT NULL,
        kind             TEXT NOT NULL,
        queue            TEXT NOT NULL,
        idempotency_key  TEXT,
        expires_at_ms    INTEGER,
        lease_owner      TEXT,
        lease_token      INTEGER NOT NULL DEFAULT 0,
        last_seq         INTEGER NOT NULL,
        progress         TEXT,
        record           TEXT NOT NULL,
        UNIQUE (namespace, idempotency_key)
    ) WITHOUT ROWID;
    INSERT INTO jobs_v4 (id, namespace, state, kind, queue, idempotency_key, expires_at_ms,
                         lease_owner, lease_token, last_seq, progress, record)
        SELECT id, 'default', state, kind, queue, idempotency_key, expires_at_ms,
               lease_owner, lease_token, last_seq, progress, record
        FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_v4 RENAME TO jobs;
    CREATE INDEX jobs_unfinished ON jobs(state)
        WHERE state <> 'succeeded' AND state <> 'failed' AND state <> 'cancelled';
    CREATE INDEX jobs_expiry ON jobs(expires_at_ms) WHERE expires_at_ms IS NOT NULL;
    CREATE INDEX jobs_by_namespace ON jobs(namespace, id);
    "#,
    // v4 -> v5: the kinds remote workers declared (so Submit knows them across restarts)
    // and each worker's lease expiry, renewed by its heartbeat.
    r#"
    CREATE TABLE remote_kinds (
        namespace     TEXT NOT NULL,
        name          TEXT NOT NULL,
        record        TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
    ) WITHOUT ROWID;
    CREATE TABLE workers (
        namespace      TEXT NOT NULL,
        worker_id      TEXT NOT NULL,
        lease_until_ms INTEGER NOT NULL,
        PRIMARY KEY (namespace, worker_id)
    ) WITHOUT ROWID;
    "#,
    // v5 -> v6: schedules (the record as JSON, its version beside it so a stale write is
    // refused in SQL), and the schedule that fired a job, so ListJobs can filter by it.
    r#"
    CREATE TABLE schedules (
        namespace TEXT NOT NULL,
        id        TEXT NOT NULL,
        version   INTEGER NOT NULL,
        record    TEXT NOT NULL,
        PRIMARY KEY (namespace, id)
    ) WITHOUT ROWID;
    ALTER TABLE jobs ADD COLUMN schedule_id TEXT;
    CREATE INDEX jobs_by_schedule ON jobs(namespace, schedule_id, id)
        WHERE schedule_id IS NOT NULL;
    "#,
];

fn refuse(path: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::Refused(format!("{}: {why}", path.display()))
}

/// Opens (creating if needed) the database for writing, checks that it is a healthy
/// Spindle database of a known schema version, migrates it, and sets the pragmas that make
/// commits durable (WAL, synchronous=FULL).
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    // Looked at before anything opens the database, which creates the WAL anew.
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::path::PathBuf::from(wal);
    let had_wal = wal.exists();
    let conn = Connection::open(path).map_err(|e| refuse(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| refuse(path, e))?;
    let (app_id, version) = identify(&conn).map_err(|e| {
        refuse(
            path,
            format!("not a readable SQLite database ({e}); refusing to touch it"),
        )
    })?;
    let empty = table_count(&conn).map_err(|e| refuse(path, e))? == 0;
    if app_id != APPLICATION_ID && !(app_id == 0 && empty) {
        return Err(refuse(path, "not a Spindle database; refusing to touch it"));
    }
    if version > SCHEMA_VERSION {
        return Err(refuse(
            path,
            format!(
                "written by a newer Spindle (schema v{version}); this build knows up to v{SCHEMA_VERSION}"
            ),
        ));
    }
    check_integrity(&conn).map_err(|why| refuse(path, why))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| refuse(path, e))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| refuse(path, e))?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        super::checkpoint::WRITER_AUTOCHECKPOINT_PAGES,
    )
    .map_err(|e| refuse(path, e))?;
    migrate(&conn, version).map_err(|e| refuse(path, format!("migration failed: {e}")))?;
    mark_open(&conn, path, &wal, had_wal).map_err(|e| refuse(path, e))?;
    Ok(conn)
}

/// The `meta` row that says whether a process has the database open.
const OPEN_MARK: &str = "open";

/// Notices a write-ahead log that went missing, then marks the database open. A process
/// that stops cleanly marks it closed and SQLite deletes the WAL after copying it into the
/// database; one that crashes leaves the mark and the WAL. The mark without a WAL means
/// the WAL was deleted or lost: the transactions it held since the last checkpoint (every
/// 100 ms) are gone, and nothing in the database can say which.
fn mark_open(conn: &Connection, path: &Path, wal: &Path, had_wal: bool) -> rusqlite::Result<()> {
    let previous: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE name = ?1", [OPEN_MARK], |r| {
            r.get(0)
        })
        .optional()?;
    if previous.as_deref() == Some("yes") && !had_wal {
        tracing::error!(
            database = %path.display(),
            "the last process did not close the database and its write-ahead log ({}) is missing: \
             jobs acknowledged in the last moments before it stopped may be lost. The data \
             directory is one unit: back it up and move it whole, WAL included",
            wal.display()
        );
    }
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, 'yes')
         ON CONFLICT (name) DO UPDATE SET value = 'yes'",
        [OPEN_MARK],
    )?;
    // Into the database file at once: a WAL lost later must not take the mark with it.
    conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))
}

/// Marks the database closed; the writer's last act.
pub fn mark_closed(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("UPDATE meta SET value = 'no' WHERE name = ?1", [OPEN_MARK])
        .map(drop)
}

/// Opens a read-only connection to a database the writer has already checked.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| refuse(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| refuse(path, e))?;
    Ok(conn)
}

fn identify(conn: &Connection) -> rusqlite::Result<(i32, i32)> {
    let app_id = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok((app_id, version))
}

fn table_count(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
}

fn check_integrity(conn: &Connection) -> Result<(), String> {
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| format!("integrity check failed: {e}"))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(format!(
            "the database is corrupt ({verdict}); refusing to start"
        ))
    }
}

fn migrate(conn: &Connection, from: i32) -> rusqlite::Result<()> {
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(from.max(0) as usize) {
        let next = version as i32 + 1;
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", next)?;
        tx.commit()?;
        tracing::info!(version = next, "database schema migrated");
    }
    Ok(())
}
