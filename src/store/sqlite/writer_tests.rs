//! The writer folds a job's saves that share a batch into one row update: the result must
//! be exactly what applying them one commit at a time gives.

use std::sync::mpsc;
use std::time::SystemTime;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::writer::{self, Answer, Op};
use crate::engine::job::{EventData, Job, JobSpec, JobState, RetryPolicy};

/// Runs the writer over `batches`, each queued before the writer takes it, so each is
/// one transaction; returns the seqs the saves answered.
fn write(path: &std::path::Path, batches: Vec<Vec<Op>>) -> Vec<u64> {
    let mut seqs = Vec::new();
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
            if let Ok(Ok(Answer::Seq(seq))) = answer.blocking_recv() {
                seqs.push(seq);
            }
        }
    }
    seqs
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
    let inserted = Op::Insert(job.clone(), vec![EventData::state_of(&job)], at);
    job.state = JobState::Running;
    job.attempt = 1;
    let running = Op::Save(job.clone(), vec![EventData::state_of(&job)], at);
    job.state = JobState::Succeeded;
    job.result = Some(serde_json::json!({"ok": true}));
    let finished = Op::Save(job.clone(), vec![EventData::finished(&job)], at);
    let clone = |op: &Op| match op {
        Op::Insert(j, e, at) => Op::Insert(j.clone(), e.clone(), *at),
        Op::Save(j, e, at) => Op::Save(j.clone(), e.clone(), *at),
        _ => unreachable!("only inserts and saves here"),
    };

    let separate = tempfile::tempdir().expect("dir");
    let separate = separate.path().join("db");
    let folded = tempfile::tempdir().expect("dir");
    let folded = folded.path().join("db");
    let one_by_one = write(
        &separate,
        vec![
            vec![clone(&inserted)],
            vec![clone(&running)],
            vec![clone(&finished)],
        ],
    );
    let together = write(&folded, vec![vec![inserted], vec![running, finished]]);

    assert_eq!(one_by_one, [2, 3]);
    assert_eq!(together, one_by_one, "the same seqs");
    let (row, events) = row(&folded, &job);
    assert_eq!((row.0.as_str(), row.1, row.3), ("succeeded", 1, 3));
    assert_eq!(events.len(), 3);
    assert_eq!((row, events), self::row(&separate, &job));
}
