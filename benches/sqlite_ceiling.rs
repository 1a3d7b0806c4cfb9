//! The ceiling SQLite itself puts on durable batch inserts on this machine: 100 transactions
//! of 1,000 rows shaped like Spindle's (a 16-byte UUID key, a ~385-byte record, and one
//! event row per job), WAL with synchronous=FULL, with nothing else in the process: no
//! gRPC, no JSON, no engine. Then Spindle's own store alone: `SqliteStore::insert_many`
//! with real jobs in calls of 1,000 (its schema and indexes, JSON records, the writer
//! thread), still without gRPC or the engine. BENCHMARKS.md compares W1's SubmitBatch
//! figure with both.
//!
//! Run: `cargo bench --bench sqlite_ceiling`.

use std::time::Instant;

/// 100 calls of `SqliteStore::insert_many` with 1,000 `demo.noop` jobs each.
fn spindle_store() -> f64 {
    use spindle::model::job::{EventData, Job, JobSpec, RetryPolicy};
    use spindle::store::{SqliteStore, Store};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let at = std::time::SystemTime::now();
    let batches: Vec<Vec<(Job, Vec<EventData>)>> = (0..100)
        .map(|_| {
            (0..1000)
                .map(|_| {
                    let spec = JobSpec::new("demo.noop", serde_json::json!({"note": "bench"}));
                    let job = Job::new(spec, RetryPolicy::default(), at);
                    let events = vec![EventData::state_of(&job)];
                    (job, events)
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    runtime.block_on(async {
        for batch in &batches {
            store.insert_many(batch, at).await.expect("insert");
        }
        store.close().await;
    });
    100_000.0 / started.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = rusqlite::Connection::open(dir.path().join("ceiling.db")).expect("open");
    db.pragma_update(None, "journal_mode", "WAL").expect("wal");
    db.pragma_update(None, "synchronous", "FULL").expect("sync");
    db.execute_batch(
        "CREATE TABLE jobs (id BLOB PRIMARY KEY, state TEXT, kind TEXT, queue TEXT, record TEXT) WITHOUT ROWID;
         CREATE TABLE events (job_id BLOB, seq INTEGER, data TEXT, PRIMARY KEY (job_id, seq)) WITHOUT ROWID;",
    )
    .expect("schema");
    let record = "x".repeat(385);
    for with_events in [false, true] {
        let started = Instant::now();
        for _ in 0..100 {
            db.execute_batch("BEGIN").expect("begin");
            for _ in 0..1000 {
                let key = uuid::Uuid::now_v7().as_bytes().to_vec();
                db.prepare_cached(
                    "INSERT INTO jobs VALUES (?1, 'queued', 'demo.noop', 'default', ?2)",
                )
                .and_then(|mut s| s.execute(rusqlite::params![key, record]))
                .expect("insert job");
                if with_events {
                    db.prepare_cached(
                        "INSERT INTO events VALUES (?1, 1, '{\"state\":\"queued\"}')",
                    )
                    .and_then(|mut s| s.execute(rusqlite::params![key]))
                    .expect("insert event");
                }
            }
            db.execute_batch("COMMIT").expect("commit");
        }
        let took = started.elapsed();
        println!(
            "100,000 job rows{}: {took:.2?} = {:.0} rows/s",
            if with_events {
                " + 100,000 event rows"
            } else {
                ""
            },
            100_000.0 / took.as_secs_f64()
        );
    }
    println!(
        "100,000 jobs through SqliteStore::insert_many (its schema, JSON records, writer thread): {:.0} jobs/s",
        spindle_store()
    );
}
