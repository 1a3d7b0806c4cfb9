//! Job semantics end to end over gRPC with the durable store: delays, retries, permanent
//! failures, idempotency keys, long-polls, retention, queue limits, a full disk, and what a
//! restart keeps. (The engine tests cover the same rules under paused time.)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use spindle::pb::job_event::Payload;
use spindle::store::SqliteStore;
use spindle::{HandlerError, JobKind, Spindle, pb};
use tonic::Code;

/// Args of `test.flaky`.
#[derive(Deserialize, JsonSchema)]
struct Flaky {
    /// The attempt that succeeds.
    succeed_on: u32,
}

fn with_flaky(spindle: Spindle) -> Spindle {
    spindle.with_kind(JobKind::io(
        "test.flaky",
        "fails until succeed_on",
        |ctx, a: Flaky| async move {
            if ctx.attempt() < a.succeed_on {
                return Err(HandlerError::failed(format!(
                    "attempt {} failed",
                    ctx.attempt()
                )));
            }
            Ok(json!(ctx.attempt()))
        },
    ))
}

fn millis(ms: u64) -> Option<prost_types::Duration> {
    Some(Duration::from_millis(ms).try_into().unwrap())
}

fn violations(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_delayed_job_is_scheduled_until_due() {
    let server = TestServer::start().await;
    let mut req = request("demo.sleep", json!({"seconds": 0}));
    req.delay = millis(300);
    let job = server.submit_request(req).await;
    assert_eq!(state(&job), pb::JobState::Scheduled);
    let run_at = SystemTime::try_from(job.run_at.unwrap()).unwrap();
    assert_eq!(
        state(&server.status(&job.id).await),
        pb::JobState::Scheduled
    );
    let done = server.finish(&job.id).await;
    assert_eq!(state(&done), pb::JobState::Succeeded);
    assert!(SystemTime::try_from(done.started_at.unwrap()).unwrap() >= run_at);

    let mut both = request("demo.sleep", json!({"seconds": 0}));
    both.delay = millis(10);
    both.run_at = Some(SystemTime::now().into());
    let err = server.client.clone().submit(both).await.unwrap_err();
    assert_eq!(
        (err.code(), violations(&err)),
        (Code::InvalidArgument, vec!["delay".to_string()])
    );
}

#[tokio::test]
async fn failed_attempts_are_retried_with_their_errors_kept() {
    let server = TestServer::start_with(|_| {}, with_flaky).await;
    let mut req = request("test.flaky", json!({"succeed_on": 3}));
    req.retry = Some(pb::RetryPolicy {
        max_attempts: 4,
        initial_backoff: millis(50),
        ..Default::default()
    });
    let job = server.submit_request(req).await;
    let events = server.watch_all(&job.id).await;
    let waits: Vec<&pb::StateChanged> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::StateChanged(s)) if s.state == pb::JobState::RetryWait as i32 => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 2);
    assert!(
        waits
            .iter()
            .all(|w| w.run_at.is_some() && w.error.is_some())
    );
    let done = server.status(&job.id).await;
    assert_eq!((state(&done), done.attempt), (pb::JobState::Succeeded, 3));
    let messages: Vec<String> = done
        .attempt_errors
        .iter()
        .map(|e| e.error.as_ref().unwrap().message.clone())
        .collect();
    assert_eq!(messages, ["attempt 1 failed", "attempt 2 failed"]);
    assert_eq!(done.retry.unwrap().max_attempts, 4);

    let mut bad = request("test.flaky", json!({"succeed_on": 1}));
    bad.retry = Some(pb::RetryPolicy {
        max_attempts: 1000,
        jitter: 2.0,
        ..Default::default()
    });
    let err = server.client.clone().submit(bad).await.unwrap_err();
    assert_eq!(violations(&err), ["retry.max_attempts", "retry.jitter"]);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_job_or_already_exists() {
    let server = TestServer::start().await;
    let keyed = |seconds: f64| {
        let mut req = request("demo.sleep", json!({ "seconds": seconds }));
        req.idempotency_key = "invoice-7".into();
        req
    };
    let mut client = server.client.clone();
    let first = client.submit(keyed(0.0)).await.unwrap().into_inner();
    assert!(!first.existing);
    let again = client.submit(keyed(0.0)).await.unwrap().into_inner();
    assert!(again.existing);
    assert_eq!(
        again.job.as_ref().unwrap().id,
        first.job.as_ref().unwrap().id
    );
    assert_eq!(again.job.unwrap().idempotency_key, "invoice-7");
    let other = client.submit(keyed(1.0)).await.unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists);
    let listed = client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.into_inner().jobs.len(), 1);
}

#[tokio::test]
async fn get_status_long_polls() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let job = server
        .submit("demo.sleep", json!({"seconds": 0.3, "steps": 1}))
        .await;
    let started = Instant::now();
    let done = client
        .get_status(pb::GetStatusRequest {
            namespace: String::new(),
            id: job.id.clone(),
            wait: millis(30_000),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&done), pb::JobState::Succeeded);
    assert!(started.elapsed() < Duration::from_secs(10));

    let long = server
        .submit("demo.sleep", json!({"seconds": 60, "steps": 1}))
        .await;
    let started = Instant::now();
    let still = client
        .get_status(pb::GetStatusRequest {
            namespace: String::new(),
            id: long.id.clone(),
            wait: millis(200),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!matches!(
        state(&still),
        pb::JobState::Succeeded | pb::JobState::Failed
    ));
    assert!(started.elapsed() >= Duration::from_millis(200));
    // A wait over the documented maximum waits the maximum (a unit test in api::convert
    // checks the cap; waiting 5 minutes here would prove nothing more); a negative one is
    // refused.
    let negative = client
        .get_status(pb::GetStatusRequest {
            namespace: String::new(),
            id: long.id.clone(),
            wait: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&negative), ["wait"]);
}

#[tokio::test]
async fn finished_jobs_are_purged_after_their_retention() {
    let server = TestServer::start_with(
        |c| c.engine.purge_interval = Duration::from_millis(50),
        |s| s,
    )
    .await;
    let mut req = request("demo.sleep", json!({"seconds": 0}));
    req.retention = millis(100);
    let short = server.submit_request(req).await;
    let kept = server.submit("demo.sleep", json!({"seconds": 0})).await;
    let done = server.finish(&short.id).await;
    assert!(done.expires_at.is_some());
    let kept_done = server.finish(&kept.id).await;
    let ttl = SystemTime::try_from(kept_done.expires_at.unwrap())
        .unwrap()
        .duration_since(SystemTime::try_from(kept_done.finished_at.unwrap()).unwrap())
        .unwrap();
    assert_eq!(
        ttl,
        Duration::from_secs(7 * 24 * 3600),
        "the default retention is 7 days"
    );
    let mut client = server.client.clone();
    let id = short.id.clone();
    eventually("the short-lived job is purged", async || {
        let status = client
            .get_status(pb::GetStatusRequest {
                namespace: String::new(),
                id: id.clone(),
                wait: None,
            })
            .await;
        matches!(status, Err(e) if e.code() == Code::NotFound)
    })
    .await;
    assert_eq!(
        state(&server.status(&kept.id).await),
        pb::JobState::Succeeded
    );
}

#[tokio::test]
async fn a_queue_limit_holds_while_other_queues_run() {
    let server = TestServer::start_with(
        |c| c.engine.queue_limits = [("slow".to_string(), 1)].into(),
        |s| s,
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut req = request("demo.sleep", json!({"seconds": 0.3, "steps": 1}));
        req.queue = "slow".into();
        slow.push(server.submit_request(req).await);
    }
    let other = server
        .submit("demo.sleep", json!({"seconds": 0.3, "steps": 1}))
        .await;
    let mut client = server.client.clone();
    let other_id = other.id.clone();
    eventually("the other queue's job runs", async || {
        let job = client
            .get_status(pb::GetStatusRequest {
                namespace: String::new(),
                id: other_id.clone(),
                wait: None,
            })
            .await
            .unwrap();
        job.into_inner().state != pb::JobState::Queued as i32
    })
    .await;
    let running = client
        .list_jobs(pb::ListJobsRequest {
            queue: "slow".into(),
            state: pb::JobState::Running as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(
        running.len() <= 1,
        "{} slow jobs run at once",
        running.len()
    );
    let mut spans = Vec::new();
    for job in &slow {
        let job = server.finish(&job.id).await;
        let t = |ts: Option<prost_types::Timestamp>| SystemTime::try_from(ts.unwrap()).unwrap();
        spans.push((t(job.started_at), t(job.finished_at)));
    }
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[1].0 >= w[0].1),
        "the slow queue ran one at a time: {spans:?}"
    );
}

#[tokio::test]
async fn a_full_disk_refuses_submits_with_unavailable_and_recovers() {
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(data.path()).unwrap());
    let shared = store.clone();
    let server = TestServer::start_with(|_| {}, move |s| s.with_store(shared)).await;
    let before = server.submit("demo.sleep", json!({"seconds": 0})).await;
    server.finish(&before.id).await;
    // This one finishes while the disk is full: its outcome is stored once space returns.
    let during = server
        .submit("demo.sleep", json!({"seconds": 0.3, "steps": 1}))
        .await;
    store.set_page_limit(1).await.unwrap();
    // 32 labels of 256 bytes: about 8 KiB a job, so the database must grow.
    let mut refused = None;
    for i in 0..100 {
        let mut req = request("demo.sleep", json!({"seconds": 0}));
        req.labels = (0..32)
            .map(|k| (format!("k{k}"), format!("{i}{}", "v".repeat(250))))
            .collect();
        if let Err(status) = server.client.clone().submit(req).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("a full disk refuses a submit");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let listed = server
        .client
        .clone()
        .list_jobs(pb::ListJobsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let acknowledged = listed.into_inner().jobs.len();
    assert!(acknowledged >= 1);
    assert_eq!(
        state(&server.status(&before.id).await),
        pb::JobState::Succeeded
    );
    store.set_page_limit(1 << 30).await.unwrap();
    assert_eq!(
        state(&server.finish(&during.id).await),
        pb::JobState::Succeeded
    );
    let after = server.submit("demo.sleep", json!({"seconds": 0})).await;
    assert_eq!(
        state(&server.finish(&after.id).await),
        pb::JobState::Succeeded,
        "recovers when space returns"
    );
}

#[tokio::test]
async fn a_restart_keeps_jobs_logs_and_seqs_and_requeues_what_ran() {
    let server =
        TestServer::start_with(|c| c.shutdown_grace = Duration::from_millis(200), |s| s).await;
    let done = server
        .submit("demo.sleep", json!({"seconds": 0.1, "steps": 2}))
        .await;
    server.finish(&done.id).await;
    // A replay of the finished log (a live watch may also have seen progress that a later
    // report then superseded).
    let done_events = server.watch_all(&done.id).await;
    let long = server
        .submit("demo.sleep", json!({"seconds": 3600, "steps": 1}))
        .await;
    let mut client = server.client.clone();
    let long_id = long.id.clone();
    eventually("the long job runs", async || {
        let job = client
            .get_status(pb::GetStatusRequest {
                namespace: String::new(),
                id: long_id.clone(),
                wait: None,
            })
            .await
            .unwrap();
        job.into_inner().state == pb::JobState::Running as i32
    })
    .await;

    let server = server.restart(|_| {}, |s| s).await;
    assert_eq!(
        server.watch_all(&done.id).await,
        done_events,
        "the same log, the same seqs"
    );
    let long = server.status(&long.id).await;
    assert!(
        long.attempt_errors.is_empty(),
        "a graceful stop does not spend an attempt"
    );
    let mut client = server.client.clone();
    let events = watch_until_running(&mut client, &long.id).await;
    let states = state_changes(&events);
    let (q, r) = (pb::JobState::Queued as i32, pb::JobState::Running as i32);
    assert_eq!(
        states,
        [q, r, q, r],
        "queued, ran, put back at shutdown, ran again"
    );
    let cancelled = client
        .cancel(pb::CancelRequest {
            namespace: String::new(),
            id: long.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (state(&cancelled), cancelled.attempt),
        (pb::JobState::Cancelled, 1)
    );
}

/// Reads the job's events until its second RUNNING state change.
async fn watch_until_running(client: &mut Client, id: &str) -> Vec<pb::JobEvent> {
    let mut stream = open_watch(client, id, 0).await;
    let mut events = Vec::new();
    let mut runs = 0;
    while let Some(event) = stream.message().await.unwrap() {
        if matches!(&event.payload, Some(Payload::StateChanged(s)) if s.state == pb::JobState::Running as i32)
        {
            runs += 1;
        }
        events.push(event);
        if runs == 2 {
            break;
        }
    }
    events
}
