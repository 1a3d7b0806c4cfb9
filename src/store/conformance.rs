//! The same checks against every [`Store`]: seqs, coalescing, paging, idempotency,
//! purging; and, for the SQLite store, what must survive a reopen and what must be refused.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Inserted, ListQuery, MemoryStore, SqliteStore, Store, StoreError};
use crate::model::job::{EventData, Job, JobSpec, JobState, Progress, RetryPolicy};

fn job() -> Job {
    let spec = JobSpec::new("demo.sleep", serde_json::json!({"seconds": 1}));
    Job::new(spec, RetryPolicy::default(), SystemTime::now())
}

fn progress(done: u64) -> EventData {
    EventData::Progress(Progress::counted(done, 10))
}

fn queued(job: &Job) -> EventData {
    EventData::state_of(job)
}

/// Runs `check` against a memory store and a SQLite store in a temporary directory.
pub(super) async fn each_store<F, Fut>(check: F)
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    check(Arc::new(MemoryStore::new())).await;
    let dir = tempfile::tempdir().unwrap();
    check(Arc::new(SqliteStore::open(dir.path()).unwrap())).await;
}

#[tokio::test]
async fn progress_is_coalesced_but_state_changes_are_kept() {
    each_store(|store| async move {
        let job = job();
        let now = SystemTime::now();
        store.insert(&job, &[queued(&job)], now).await.unwrap();
        store
            .append(job.id, 0, &[progress(1), progress(2)], now)
            .await
            .unwrap();
        store
            .append(job.id, 0, &[EventData::Log("hi".into()), progress(3)], now)
            .await
            .unwrap();
        let last = store.append(job.id, 0, &[progress(4)], now).await.unwrap();
        assert_eq!(last, 6);
        let events = store.events_after(job.id, 0, 100).await.unwrap().unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 3, 4, 6], "superseded progress leaves gaps");
        assert_eq!(events[1].data, progress(2));
        let stored = store.get(job.id).await.unwrap().unwrap();
        assert_eq!(stored.progress, Some(Progress::counted(4, 10)));
        assert_eq!(stored.last_seq, 6);
        let tail = store.events_after(job.id, 3, 1).await.unwrap().unwrap();
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
        let unknown = crate::model::job::JobId::new();
        assert!(store.events_after(unknown, 0, 10).await.unwrap().is_none());
        assert!(matches!(
            store.append(unknown, 0, &[progress(1)], now).await,
            Err(StoreError::UnknownJob(_))
        ));
    })
    .await;
}

/// Polls `future` once; true if it finished.
async fn started<F: Future>(future: std::pin::Pin<&mut F>) -> bool {
    let mut future = future;
    std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}

#[tokio::test]
async fn writes_land_in_the_order_they_are_made() {
    each_store(|store| async move {
        let mut job = job();
        let now = SystemTime::now();
        store.insert(&job, &[queued(&job)], now).await.unwrap();
        job.state = JobState::Running;
        let running = job.clone();
        let running_events = [EventData::state_of(&running)];
        let mut first = std::pin::pin!(store.save(&running, &running_events, now));
        let first_done = started(first.as_mut()).await;
        job.state = JobState::Succeeded;
        job.result = Some(serde_json::json!(1));
        let finished = [EventData::finished(&job)];
        let mut second = std::pin::pin!(store.save(&job, &finished, now));
        let second_done = started(second.as_mut()).await;
        // Awaited the other way round: the order they were made in still holds.
        if !second_done {
            assert_eq!(second.await.unwrap(), 3);
        }
        if !first_done {
            assert_eq!(first.await.unwrap(), 2);
        }
        let stored = store.get(job.id).await.unwrap().unwrap();
        assert_eq!(stored.state, JobState::Succeeded);
        assert_eq!(stored.last_seq, 3);
        let events = store.events_after(job.id, 0, 10).await.unwrap().unwrap();
        let kinds: Vec<bool> = events.iter().map(|e| e.data.is_finished()).collect();
        assert_eq!(kinds, [false, false, true]);
    })
    .await;
}

#[tokio::test]
async fn saves_keep_the_stores_seq_and_progress() {
    each_store(|store| async move {
        let mut job = job();
        let now = SystemTime::now();
        store.insert(&job, &[queued(&job)], now).await.unwrap();
        store.append(job.id, 0, &[progress(5)], now).await.unwrap();
        job.state = JobState::Succeeded;
        // A float whose shortest text the default fast parser reads back one ulp off.
        job.result = Some(serde_json::json!({"ok": true, "ns": 1676.7666666666667_f64}));
        let seq = store
            .save(&job, &[EventData::finished(&job)], now)
            .await
            .unwrap();
        assert_eq!(seq, 3);
        let stored = store.get(job.id).await.unwrap().unwrap();
        assert_eq!(stored.state, JobState::Succeeded);
        assert_eq!(stored.progress, Some(Progress::counted(5, 10)));
        assert_eq!(stored.result, job.result);
        assert_eq!(stored.spec, job.spec);
    })
    .await;
}

#[tokio::test]
async fn seqs_the_caller_skips_are_gaps() {
    each_store(|store| async move {
        let mut job = job();
        let now = SystemTime::now();
        store.insert(&job, &[queued(&job)], now).await.unwrap();
        store.append(job.id, 0, &[progress(1)], now).await.unwrap();
        // Progress 2 to 4 went to live watchers only, at seqs 3 to 5.
        let seq = store.append(job.id, 5, &[progress(4)], now).await.unwrap();
        assert_eq!(seq, 5);
        let seq = store
            .append(job.id, 7, &[progress(6), EventData::Log("x".into())], now)
            .await
            .unwrap();
        assert_eq!(seq, 8, "the events after the first follow it");
        let seq = store.append(job.id, 2, &[progress(7)], now).await.unwrap();
        assert_eq!(seq, 9, "a from_seq the log is past gives the next seq");
        // After a restart the engine skips ahead of what live watchers may have seen.
        job.last_seq = 100;
        job.state = JobState::Queued;
        let seq = store.save(&job, &[queued(&job)], now).await.unwrap();
        assert_eq!(seq, 101);
        let events = store.events_after(job.id, 0, 100).await.unwrap().unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 7, 8, 9, 101]);
        assert_eq!(events[1].data, progress(6));
        let stored = store.get(job.id).await.unwrap().unwrap();
        assert_eq!(stored.last_seq, 101);
        assert_eq!(stored.progress, Some(Progress::counted(7, 10)));
    })
    .await;
}

#[tokio::test]
async fn list_pages_newest_first_with_filters() {
    each_store(|store| async move {
        let now = SystemTime::now();
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut job = job();
            job.spec.queue = if i % 2 == 0 { "even" } else { "odd" }.into();
            job.spec.labels.insert("n".into(), i.to_string());
            ids.push(job.id);
            store.insert(&job, &[], now).await.unwrap();
        }
        let mut query = ListQuery {
            limit: 2,
            ..ListQuery::default()
        };
        let page = store.list(&query).await.unwrap().jobs;
        assert_eq!(
            page.iter().map(|j| j.id).collect::<Vec<_>>(),
            [ids[4], ids[3]]
        );
        query.before = Some(ids[3]);
        let page = store.list(&query).await.unwrap().jobs;
        assert_eq!(
            page.iter().map(|j| j.id).collect::<Vec<_>>(),
            [ids[2], ids[1]]
        );
        let filtered = ListQuery {
            queue: Some("even".into()),
            state: Some(JobState::Queued),
            labels: [("n".to_string(), "2".to_string())].into(),
            limit: 10,
            ..ListQuery::default()
        };
        let page = store.list(&filtered).await.unwrap().jobs;
        assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[2]]);
    })
    .await;
}

#[tokio::test]
async fn idempotency_keys_are_unique_until_purged() {
    each_store(|store| async move {
        let now = SystemTime::now();
        let mut first = job();
        first.spec.idempotency_key = Some("k".into());
        assert_eq!(
            store.insert(&first, &[queued(&first)], now).await.unwrap(),
            Inserted::Created(1)
        );
        let mut second = job();
        second.spec.idempotency_key = Some("k".into());
        let Inserted::Existing(existing) = store.insert(&second, &[], now).await.unwrap() else {
            panic!("the key is taken");
        };
        assert_eq!(existing.id, first.id);
        assert!(store.get(second.id).await.unwrap().is_none());
        assert_eq!(store.unfinished().await.unwrap().len(), 1);

        first.state = JobState::Succeeded;
        first.expires_at = Some(now);
        store.save(&first, &[], now).await.unwrap();
        assert_eq!(store.unfinished().await.unwrap().len(), 0);
        assert_eq!(store.purge(now - Duration::from_secs(1)).await.unwrap(), 0);
        assert_eq!(store.purge(now).await.unwrap(), 1);
        assert!(store.get(first.id).await.unwrap().is_none());
        assert!(store.events_after(first.id, 0, 10).await.unwrap().is_none());
        assert!(matches!(
            store.insert(&second, &[], now).await.unwrap(),
            Inserted::Created(_)
        ));
    })
    .await;
}

#[tokio::test]
async fn insert_many_answers_in_order_and_sees_keys_of_the_same_batch() {
    each_store(|store| async move {
        let now = SystemTime::now();
        let (plain, mut keyed, mut again) = (job(), job(), job());
        keyed.spec.idempotency_key = Some("batch".into());
        again.spec.idempotency_key = Some("batch".into());
        let items: Vec<(Job, Vec<EventData>)> = [&plain, &keyed, &again]
            .into_iter()
            .map(|j| (j.clone(), vec![queued(j)]))
            .collect();
        let answers = store.insert_many(&items, now).await.unwrap();
        assert_eq!(answers[..2], [Inserted::Created(1), Inserted::Created(1)]);
        let Inserted::Existing(existing) = &answers[2] else {
            panic!("the key was taken earlier in the batch: {answers:?}");
        };
        assert_eq!(existing.id, keyed.id);
        assert_eq!(store.unfinished().await.unwrap().len(), 2);
        assert_eq!(
            store
                .events_after(plain.id, 0, 10)
                .await
                .unwrap()
                .unwrap()
                .len(),
            1
        );
    })
    .await;
}

#[tokio::test]
async fn sqlite_reads_records_and_schemas_of_the_earlier_format() {
    // Before records left out the id and zeros, and wrote times and durations as
    // {secs, nanos} structs.
    let dir = tempfile::tempdir().unwrap();
    let job = job();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store.insert(&job, &[], SystemTime::now()).await.unwrap();
    }
    let old = serde_json::json!({
        "id": job.id.to_string(),
        "spec": {"kind": job.spec.kind, "args": job.spec.args, "queue": "default",
                 "priority": 0, "timeout": {"secs": 30, "nanos": 0}, "labels": {"team": "a"}},
        "state": "queued", "attempt": 0, "last_seq": 0,
        "created_at": {"secs_since_epoch": 1_795_653_874u64, "nanos_since_epoch": 738_676_367},
        "retry": {"max_attempts": 3, "initial_backoff": {"secs": 1, "nanos": 0},
                  "max_backoff": {"secs": 300, "nanos": 0}, "multiplier": 2.0, "jitter": 0.2},
    });
    let db = dir.path().join(super::sqlite::DB_FILE);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE jobs SET record = ?1",
        [serde_json::to_string(&old).unwrap()],
    )
    .unwrap();
    // And a schema v1 database: its index of unfinished jobs used NOT IN, and it had no
    // label rows (v3 fills them in from the records).
    conn.execute_batch(
        "DROP TABLE job_labels;
         DROP TABLE meta;
         DROP TABLE remote_kinds;
         DROP TABLE workers;
         DROP TABLE schedules;
         DROP INDEX jobs_by_schedule;
         ALTER TABLE jobs DROP COLUMN schedule_id;
         DROP INDEX jobs_unfinished;
         CREATE INDEX jobs_unfinished ON jobs(state)
             WHERE state NOT IN ('succeeded', 'failed', 'cancelled');
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(dir.path()).unwrap();
    let stored = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(stored.id, job.id);
    assert_eq!(
        stored.spec.timeout,
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(
        stored.created_at,
        std::time::UNIX_EPOCH + std::time::Duration::new(1_795_653_874, 738_676_367)
    );
    assert_eq!(
        stored.retry.max_backoff,
        std::time::Duration::from_secs(300)
    );
    assert_eq!(store.unfinished().await.unwrap()[0].id, job.id);
    let by_label = ListQuery {
        labels: [("team".to_string(), "a".to_string())].into(),
        limit: 10,
        ..ListQuery::default()
    };
    let listed = store.list(&by_label).await.unwrap().jobs;
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), [job.id]);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let index: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'jobs_unfinished'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, super::sqlite::SCHEMA_VERSION);
    assert!(!index.contains("NOT IN"), "{index}");
}

#[tokio::test]
async fn sqlite_keeps_everything_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let mut job = job();
    job.spec.labels.insert("team".into(), "a".into());
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store.insert(&job, &[queued(&job)], now).await.unwrap();
        store
            .append(
                job.id,
                0,
                &[progress(1), EventData::Log("x".into()), progress(2)],
                now,
            )
            .await
            .unwrap();
        job.state = JobState::Running;
        job.attempt = 1;
        store.save(&job, &[queued(&job)], now).await.unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let stored = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.attempt, stored.last_seq),
        (JobState::Running, 1, 5)
    );
    assert_eq!(stored.spec.labels["team"], "a");
    assert_eq!(stored.progress, Some(Progress::counted(2, 10)));
    let seqs: Vec<u64> = store
        .events_after(job.id, 0, 10)
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(store.unfinished().await.unwrap()[0].id, job.id);
}

#[tokio::test]
async fn sqlite_allows_one_process_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(dir.path()).unwrap();
    let _ = std::fs::remove_file(dir.path().join("spindle.lock"));
    let err = SqliteStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("in use by another Spindle"), "{err}");
    drop(first);
    assert!(SqliteStore::open(dir.path()).is_ok());
}

#[tokio::test]
async fn sqlite_refuses_foreign_newer_and_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(super::sqlite::DB_FILE);
    std::fs::write(&db, vec![0x42u8; 8192]).unwrap();
    let err = SqliteStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a readable SQLite database"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        vec![0x42u8; 8192],
        "left untouched"
    );

    std::fs::remove_file(&db).unwrap();
    let other = rusqlite::Connection::open(&db).unwrap();
    other
        .execute_batch("CREATE TABLE notes (body TEXT)")
        .unwrap();
    drop(other);
    let err = SqliteStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a Spindle database"), "{err}");

    std::fs::remove_file(&db).unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let newer = rusqlite::Connection::open(&db).unwrap();
    newer.pragma_update(None, "user_version", 99).unwrap();
    drop(newer);
    let err = SqliteStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("newer Spindle"), "{err}");
}

#[tokio::test]
async fn sqlite_write_failures_are_reported_and_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let now = SystemTime::now();
    let first = job();
    store.insert(&first, &[queued(&first)], now).await.unwrap();
    store.set_page_limit(1).await.unwrap();
    let mut refused = None;
    for _ in 0..200 {
        let mut big = job();
        big.spec.args = serde_json::json!({"pad": "x".repeat(8000)});
        if let Err(e) = store.insert(&big, &[queued(&big)], now).await {
            refused = Some((e, big.id));
            break;
        }
    }
    let (error, id) = refused.expect("a full database refuses writes");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(
        store.get(id).await.unwrap().is_none(),
        "nothing half-written"
    );
    assert!(store.get(first.id).await.unwrap().is_some());
    store.set_page_limit(1 << 30).await.unwrap();
    let after = job();
    assert!(
        store.insert(&after, &[queued(&after)], now).await.is_ok(),
        "recovers when space returns"
    );
}

#[tokio::test]
async fn remote_kinds_and_worker_leases_are_kept_per_namespace() {
    each_store(|store| async move {
        let now = SystemTime::now();
        let kind = |name: &str, description: &str| crate::model::worker::RemoteKind {
            name: name.into(),
            description: description.into(),
            args_schema: Some(serde_json::json!({"type": "object"})),
            max_attempts: Some(2),
        };
        store
            .put_remote_kinds("a", &[kind("k", "first")], now)
            .await
            .unwrap();
        store
            .put_remote_kinds("b", &[kind("k", "other team")], now)
            .await
            .unwrap();
        // A later declaration of the same name replaces the earlier one.
        store
            .put_remote_kinds("a", &[kind("k", "second")], now)
            .await
            .unwrap();
        let mut kinds = store.remote_kinds().await.unwrap();
        kinds.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            kinds,
            [
                ("a".into(), kind("k", "second")),
                ("b".into(), kind("k", "other team"))
            ]
        );

        let until = crate::model::job::whole_millis(now + Duration::from_secs(30));
        store.renew_worker("a", "w1", now).await.unwrap();
        store.renew_worker("a", "w1", until).await.unwrap();
        let leases = store.worker_leases().await.unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(
            (leases[0].worker_id.as_str(), leases[0].until),
            ("w1", until)
        );
    })
    .await;
}
