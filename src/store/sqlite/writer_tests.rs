//! The writer folds a job's saves that share a batch into one row update: the result must
//! be exactly what applying them one commit at a time gives. A request that fails in a
//! batch fails alone.

use std::sync::mpsc;
use std::time::SystemTime;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::encode::{self, EncodedJob};
use super::writer::{self, Answer, Op};
use crate::model::job::{EventData, Job, JobSpec, JobState, RetryPolicy};
use crate::store::{Inserted, StoreError};

fn insert(job: &Job, events: &[EventData], at: SystemTime) -> Op {
    let encoded = EncodedJob::new(job).expect("encodes");
    Op::Insert(encoded, encode::events(events).expect("encodes"), at)
}

fn save(job: &Job, events: &[EventData], at: SystemTime) -> Op {
    let encoded = EncodedJob::new(job).expect("encodes");
    Op::Save(encoded, encode::events(events).expect("encodes"), at)
}

/// Runs the writer over `batches`, each queued before the writer takes it, so each is
/// one transaction; returns every request's answer.
fn answers(path: &std::path::Path, batches: Vec<Vec<Op>>) -> Vec<Result<Answer, StoreError>> {
    let mut all = Vec::new();
    for ops in batches {
        let conn = super::schema::open_writer(path).expect("open");
        let (tx, rx) = mpsc::channel();
        let mut answers = Vec::new();
        for op in ops {
            let (reply, answer) = oneshot::channel();
            tx.send((op, reply)).expect("queued");
            answers.push(answer);
        }
        drop(tx);
        writer::run(conn, "node-a".into(), rx);
        for answer in answers {
            all.push(answer.blocking_recv().expect("every request is answered"));
        }
    }
    all
}

/// The seqs the saves of `batches` answered.
fn write(path: &std::path::Path, batches: Vec<Vec<Op>>) -> Vec<u64> {
    let answers = answers(path, batches).into_iter();
    answers
        .filter_map(|a| match a {
            Ok(Answer::Seq(seq)) => Some(seq),
            _ => None,
        })
        .collect()
}

type Row = (String, i64, Option<String>, i64, String);

fn row(path: &std::path::Path, job: &Job) -> (Row, Vec<(i64, String)>) {
    let conn = Connection::open(path).expect("open");
    let id = super::id_blob(job.id);
    let row = conn
        .query_row(
            "SELECT state, lease_token, lease_owner, last_seq, record FROM jobs WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("row");
    let mut events = conn
        .prepare("SELECT seq, data FROM events WHERE job_id = ?1 ORDER BY seq")
        .expect("prepare");
    let events = events
        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("events")
        .collect::<Result<_, _>>()
        .expect("events");
    (row, events)
}

#[test]
fn saves_folded_in_one_batch_store_what_separate_commits_store() {
    let at = SystemTime::now();
    let spec = JobSpec::new("demo.noop", serde_json::json!({}));
    let mut job = Job::new(spec, RetryPolicy::default(), at);
    let queued = job.clone();
    let inserted = || insert(&queued, &[EventData::state_of(&queued)], at);
    job.state = JobState::Running;
    job.attempt = 1;
    let started = job.clone();
    let running = || save(&started, &[EventData::state_of(&started)], at);
    job.state = JobState::Succeeded;
    job.result = Some(serde_json::json!({"ok": true}));
    let finished = || save(&job, &[EventData::finished(&job)], at);

    let separate = tempfile::tempdir().expect("dir");
    let separate = separate.path().join("db");
    let folded = tempfile::tempdir().expect("dir");
    let folded = folded.path().join("db");
    let one_by_one = write(
        &separate,
        vec![vec![inserted()], vec![running()], vec![finished()]],
    );
    let together = write(&folded, vec![vec![inserted()], vec![running(), finished()]]);

    assert_eq!(one_by_one, [2, 3]);
    assert_eq!(together, one_by_one, "the same seqs");
    let (row, events) = row(&folded, &job);
    assert_eq!((row.0.as_str(), row.1, row.3), ("succeeded", 1, 3));
    assert_eq!(events.len(), 3);
    assert_eq!((row, events), self::row(&separate, &job));
}

#[test]
fn a_request_that_fails_in_a_batch_fails_alone() {
    let at = SystemTime::now();
    let job = |n: u32| {
        let spec = JobSpec::new("demo.noop", serde_json::json!({ "n": n }));
        Job::new(spec, RetryPolicy::default(), at)
    };
    let (first, second) = (job(1), job(2));
    let mut running = second.clone();
    running.state = JobState::Running;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("db");
    let first_events = [EventData::state_of(&first)];
    let answers = answers(
        &path,
        vec![
            vec![insert(&first, &first_events, at)],
            // The same id again fails (a primary key conflict) in the middle of a batch
            // whose other requests are good, including one after it.
            vec![
                insert(&second, &[EventData::state_of(&second)], at),
                insert(&first, &first_events, at),
                save(&running, &[EventData::state_of(&running)], at),
            ],
        ],
    );
    let outcomes: Vec<String> = answers
        .into_iter()
        .map(|a| match a {
            Ok(Answer::Inserted(Inserted::Created(seq))) => format!("created {seq}"),
            Ok(Answer::Seq(seq)) => format!("seq {seq}"),
            Ok(_) => "other".into(),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_eq!(outcomes[..2], ["created 1", "created 1"]);
    assert!(
        outcomes[2].contains("write failed") && outcomes[2].contains("UNIQUE"),
        "{}",
        outcomes[2]
    );
    assert_eq!(outcomes[3], "seq 2");
    let (row, events) = row(&path, &second);
    assert_eq!((row.0.as_str(), row.3, events.len()), ("running", 2, 2));
}

#[test]
fn purge_deletes_at_most_its_limit_per_request() {
    let at = SystemTime::now();
    let mut ops = Vec::new();
    let mut jobs = Vec::new();
    for n in 0..5 {
        let spec = JobSpec::new("demo.noop", serde_json::json!({ "n": n }));
        let mut job = Job::new(spec, RetryPolicy::default(), at);
        job.state = JobState::Succeeded;
        job.expires_at = Some(at);
        ops.push(insert(&job, &[EventData::finished(&job)], at));
        jobs.push(job);
    }
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("db");
    let purge = |limit| Op::Purge(at, limit);
    let answers = answers(
        &path,
        vec![ops, vec![purge(2)], vec![purge(2)], vec![purge(2)]],
    );
    let counts: Vec<usize> = answers[5..]
        .iter()
        .map(|a| match a {
            Ok(Answer::Count(n)) => *n,
            _ => usize::MAX,
        })
        .collect();
    assert_eq!(counts, [2, 2, 1]);
    let conn = Connection::open(&path).expect("open");
    let left: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(left, 0, "their logs went with them");
}
