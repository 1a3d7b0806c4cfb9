//! Crash recovery with the real binary: submit 1,200 jobs of mixed kinds, SIGKILL the
//! server mid-run, restart it on the same data directory, and repeat; then check that
//! every acknowledged job reached a terminal state, that no job ran again after it had
//! SUCCEEDED, and that interrupted attempts were retried (attempt 2 or more).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::process::Process;
use common::{Client, request};
use serde_json::json;
use spindle::pb;

const KILLS: usize = 3;

async fn connect(server: &Process) -> Client {
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::job_service_client::JobServiceClient::new(channel)
}

/// Every job in `state`, with all pages.
async fn all_in_state(client: &mut Client, state: pb::JobState) -> Vec<pb::Job> {
    let mut jobs = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                state: state as i32,
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return jobs;
        }
        token = page.next_page_token;
    }
}

fn mixed_request(i: usize) -> pb::SubmitRequest {
    match i % 3 {
        0 => request(
            "demo.sleep",
            json!({"seconds": 0.05 + (i % 5) as f64 * 0.05, "steps": 2}),
        ),
        1 => request("demo.cpu", json!({"rounds": 5_000 + (i % 7) * 5_000})),
        _ => request(
            "file.checksum",
            json!({"path": "data.bin", "algorithm": if i.is_multiple_of(2) { "sha256" } else { "blake3" }}),
        ),
    }
}

/// Submits `count` jobs from 16 concurrent clients; returns the acknowledged ids.
async fn submit_all(server: &Process, count: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let mut client = connect(server).await;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..count).step_by(16) {
                let job = client
                    .submit(mixed_request(i))
                    .await
                    .unwrap()
                    .into_inner()
                    .job
                    .unwrap();
                ids.push(job.id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    ids
}

/// Waits until jobs are running and at least `done` have succeeded; returns the succeeded
/// jobs as seen just before the caller kills the server.
async fn run_a_while(client: &mut Client, done: usize) -> Vec<pb::Job> {
    for _ in 0..600 {
        let running = all_in_state(client, pb::JobState::Running).await;
        let succeeded = all_in_state(client, pb::JobState::Succeeded).await;
        if !running.is_empty() && succeeded.len() >= done {
            return succeeded;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server made no progress");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_job_survives_repeated_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("files/data.bin"), vec![7u8; 256 * 1024]).unwrap();
    let args = ["serve", "--cpu-threads", "2", "--io-concurrency", "32"];

    let server = Process::start(dir.path(), &args);
    let ids = submit_all(&server, 1200).await;
    assert_eq!(ids.len(), 1200);
    let mut finished_before: HashMap<String, pb::Job> = HashMap::new();
    let mut server = Some(server);
    for round in 0..KILLS {
        let running = server
            .take()
            .unwrap_or_else(|| Process::start(dir.path(), &args));
        let mut client = connect(&running).await;
        let succeeded = run_a_while(&mut client, finished_before.len() + 20).await;
        running.kill();
        eprintln!("kill {}: {} jobs had succeeded", round + 1, succeeded.len());
        for job in succeeded {
            finished_before.entry(job.id.clone()).or_insert(job);
        }
    }

    let server = Process::start(dir.path(), &args);
    let mut client = connect(&server).await;
    let mut interrupted = 0;
    for id in &ids {
        let job = client
            .get_status(pb::GetStatusRequest {
                namespace: String::new(),
                id: id.clone(),
                wait: Some(prost_types::Duration {
                    seconds: 120,
                    nanos: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let state = pb::JobState::try_from(job.state).unwrap();
        assert!(
            matches!(state, pb::JobState::Succeeded | pb::JobState::Failed),
            "job {id} ended {state:?}"
        );
        if let Some(before) = finished_before.get(id) {
            assert_eq!(state, pb::JobState::Succeeded);
            assert_eq!(
                (job.attempt, job.finished_at),
                (before.attempt, before.finished_at),
                "job {id} ran again after it had succeeded"
            );
        }
        let interruptions = job
            .attempt_errors
            .iter()
            .filter(|e| {
                e.error
                    .as_ref()
                    .is_some_and(|e| e.kind == pb::ErrorKind::Interrupted as i32)
            })
            .count();
        if interruptions > 0 {
            interrupted += 1;
            assert!(
                job.attempt >= 2,
                "job {id} was interrupted but shows attempt {}",
                job.attempt
            );
            assert_eq!(
                job.attempt as usize,
                job.attempt_errors.len() + usize::from(state == pb::JobState::Succeeded)
            );
        }
        let events = common::watch_from(&mut client, id, 0).await;
        let finished: Vec<_> = events.iter().filter(|e| common::is_finished(e)).collect();
        assert_eq!(finished.len(), 1, "job {id} has one terminal event");
        assert!(
            common::is_finished(events.last().unwrap()),
            "nothing after the terminal event of {id}"
        );
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
        if interruptions > 0 {
            // Recovery numbers the events after a crash past the progress seqs that only
            // live watchers may have seen (the engine's LIVE_AHEAD, 64).
            assert!(
                events.windows(2).any(|w| w[1].seq > w[0].seq + 64),
                "job {id}: no seq gap after its interruption: {:?}",
                events.iter().map(|e| e.seq).collect::<Vec<_>>()
            );
        }
    }
    eprintln!(
        "{} jobs, {} killed mid-run and retried, {} seen succeeded before a kill",
        ids.len(),
        interrupted,
        finished_before.len()
    );
    assert!(
        interrupted > 0,
        "the kills interrupted no job; the test proves nothing"
    );
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    server.kill();
}
