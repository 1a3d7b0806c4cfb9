//! Tokens, roles, namespaces and quotas over gRPC against the real server (`--auth`): a
//! role-by-method matrix, namespace isolation (get, watch, cancel, list, idempotency keys,
//! the worker protocol), per-principal limits and per-namespace quotas with their retry
//! delays.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::worker::{TestWorker, hello};
use common::{Client, TestServer, request};
use serde_json::json;
use spindle::access::token::TokenHash;
use spindle::pb;
use spindle::pb::schedule_service_client::ScheduleServiceClient;
use spindle::pb::worker as pbw;
use spindle::pb::worker::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// A server with this auth file (each principal's token is `tok-NAME`).
async fn serve(lines: &[String]) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("spindle.auth");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let server = TestServer::start_with(|c| c.auth = Some(path), |s| s).await;
    (server, dir)
}

/// An auth file line for `name`, whose token is `tok-NAME`.
fn principal(name: &str, role: &str, namespaces: &str, extra: &str) -> String {
    let hash = TokenHash::of(&format!("tok-{name}")).to_hex();
    format!("principal {name} role={role} namespaces={namespaces} sha256={hash} {extra}")
}

/// `message` as a request carrying `token` (none: no metadata at all).
fn as_<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

const JOB_SERVICE: [&str; 10] = [
    "Submit",
    "SubmitBatch",
    "GetStatus",
    "WatchProgress",
    "Cancel",
    "ListJobs",
    "ListKinds",
    "GetStats",
    "ListWorkers",
    "DrainWorker",
];
const SCHEDULE_SERVICE: [&str; 9] = [
    "CreateSchedule",
    "GetSchedule",
    "ListSchedules",
    "UpdateSchedule",
    "DeleteSchedule",
    "PauseSchedule",
    "ResumeSchedule",
    "TriggerSchedule",
    "BackfillSchedule",
];
const WORKER_SERVICE: [&str; 3] = ["Session", "Complete", "Fail"];

/// A schedule at 03:00 every night that submits demo.noop.
fn nightly(id: &str) -> pb::CreateScheduleRequest {
    let cron = pb::schedule_spec::Repeat::Cron("0 3 * * *".into());
    pb::CreateScheduleRequest {
        id: id.into(),
        spec: Some(pb::ScheduleSpec {
            repeat: Some(cron),
            ..Default::default()
        }),
        template: Some(request("demo.noop", json!({}))),
        ..Default::default()
    }
}

/// Calls one method with a minimal request; what matters is whether the server let the
/// call through (any answer but UNAUTHENTICATED and PERMISSION_DENIED) or not.
async fn call(channel: &Channel, method: &str, t: Option<&str>) -> Result<(), Status> {
    let mut jobs = pb::job_service_client::JobServiceClient::new(channel.clone());
    let mut schedules = ScheduleServiceClient::new(channel.clone());
    let mut workers = WorkerServiceClient::new(channel.clone());
    let id = "01a23fbe-ca34-75fb-a7c4-e51b57690f58".to_string();
    let name = || "nightly".to_string();
    let batch = || vec![request("demo.noop", json!({}))];
    macro_rules! rpc {
        ($client:ident.$method:ident($message:expr)) => {
            $client.$method(as_(t, $message)).await.map(drop)
        };
    }
    macro_rules! named {
        ($message:ident) => {
            $message {
                id: name(),
                ..Default::default()
            }
        };
    }
    use pb::{ScheduleRef as Ref, *};
    match method {
        "Submit" => rpc!(jobs.submit(request("demo.noop", json!({})))),
        "SubmitBatch" => rpc!(jobs.submit_batch(SubmitBatchRequest {
            jobs: batch(),
            ..Default::default()
        })),
        "GetStatus" => rpc!(jobs.get_status(GetStatusRequest {
            id,
            ..Default::default()
        })),
        "WatchProgress" => rpc!(jobs.watch_progress(WatchProgressRequest {
            id,
            ..Default::default()
        })),
        "Cancel" => rpc!(jobs.cancel(CancelRequest {
            id,
            ..Default::default()
        })),
        "ListJobs" => rpc!(jobs.list_jobs(ListJobsRequest::default())),
        "ListKinds" => rpc!(jobs.list_kinds(ListKindsRequest::default())),
        "GetStats" => rpc!(jobs.get_stats(GetStatsRequest::default())),
        "ListWorkers" => rpc!(jobs.list_workers(ListWorkersRequest::default())),
        "DrainWorker" => rpc!(jobs.drain_worker(named!(DrainWorkerRequest))),
        "CreateSchedule" => rpc!(schedules.create_schedule(nightly("nightly"))),
        "GetSchedule" => rpc!(schedules.get_schedule(named!(GetScheduleRequest))),
        "ListSchedules" => rpc!(schedules.list_schedules(ListSchedulesRequest::default())),
        "UpdateSchedule" => rpc!(schedules.update_schedule(named!(UpdateScheduleRequest))),
        "DeleteSchedule" => rpc!(schedules.delete_schedule(named!(Ref))),
        "PauseSchedule" => rpc!(schedules.pause_schedule(named!(PauseScheduleRequest))),
        "ResumeSchedule" => rpc!(schedules.resume_schedule(named!(Ref))),
        "TriggerSchedule" => rpc!(schedules.trigger_schedule(named!(Ref))),
        "BackfillSchedule" => rpc!(schedules.backfill_schedule(named!(BackfillScheduleRequest))),
        // A session that ends at once: a call let through answers "first message must be
        // hello".
        "Session" => rpc!(workers.session(tokio_stream::empty::<pbw::WorkerMessage>())),
        "Complete" => rpc!(workers.complete(pbw::CompleteRequest::default())),
        "Fail" => rpc!(workers.fail(pbw::FailRequest::default())),
        other => panic!("no call for {other}"),
    }
}

/// The table: what each role may call, beyond which it is PERMISSION_DENIED.
fn allowed(role: &str, service: &str, method: &str) -> bool {
    let read = [
        "GetStatus",
        "WatchProgress",
        "ListJobs",
        "ListKinds",
        "GetStats",
    ];
    let submit = ["Submit", "SubmitBatch", "Cancel"];
    match role {
        "admin" => true,
        "reader" => service == "job" && read.contains(&method),
        "submitter" => service == "job" && (read.contains(&method) || submit.contains(&method)),
        "worker" => service == "worker",
        _ => false,
    }
}

#[tokio::test]
async fn every_role_reaches_exactly_its_methods_and_no_token_reaches_none() {
    let roles = ["reader", "submitter", "worker", "admin"];
    let lines: Vec<String> = roles.iter().map(|r| principal(r, r, "*", "")).collect();
    let (server, _dir) = serve(&lines).await;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let methods = (JOB_SERVICE.iter().map(|m| ("job", *m)))
        .chain(SCHEDULE_SERVICE.iter().map(|m| ("schedule", *m)))
        .chain(WORKER_SERVICE.iter().map(|m| ("worker", *m)));
    let mut checked = 0;
    for (service, method) in methods {
        for role in roles {
            let token = format!("tok-{role}");
            let outcome = call(&channel, method, Some(&token)).await;
            let code = outcome.as_ref().err().map(Status::code);
            if allowed(role, service, method) {
                assert!(
                    !matches!(code, Some(Code::PermissionDenied | Code::Unauthenticated)),
                    "{role} should reach {method}: {outcome:?}"
                );
            } else {
                let status = outcome.expect_err(method);
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{role} {method}: {status:?}"
                );
                assert!(
                    status.message().contains(role) && status.message().contains(method),
                    "{}",
                    status.message()
                );
            }
            checked += 1;
        }
        for (token, why) in [(None, "no token"), (Some("tok-nobody"), "unknown token")] {
            let status = call(&channel, method, token).await.expect_err(method);
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{method} without a token"
            );
            assert!(status.message().starts_with(why), "{}", status.message());
        }
        let mut malformed = as_(None, pb::ListKindsRequest::default());
        malformed
            .metadata_mut()
            .insert("authorization", "Basic dG9rLWFkbWlu".parse().unwrap());
        let mut jobs = pb::job_service_client::JobServiceClient::new(channel.clone());
        let status = jobs.list_kinds(malformed).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    assert_eq!(checked, 22 * 4);
    // Health and reflection stay open without a token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let check = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    health.check(check).await.expect("health without a token");
}

/// Submits `kind` as `token` in `namespace` (empty: the token's own).
async fn submit_as(
    client: &mut Client,
    token: &str,
    namespace: &str,
    key: &str,
) -> Result<pb::Job, Status> {
    let mut req = request("demo.sleep", json!({"seconds": 30}));
    req.namespace = namespace.into();
    req.idempotency_key = key.into();
    Ok(client
        .submit(as_(Some(token), req))
        .await?
        .into_inner()
        .job
        .unwrap())
}

#[tokio::test]
async fn a_principal_sees_and_touches_only_its_namespaces() {
    let lines = [
        principal("a", "submitter", "team-a", ""),
        principal("b", "submitter", "team-b", ""),
        principal("wa", "worker", "team-a", ""),
        principal("ops", "admin", "*", ""),
    ];
    let (server, _dir) = serve(&lines).await;
    let mut c = server.client().await;
    // An empty namespace is the token's only one.
    let job = submit_as(&mut c, "tok-a", "", "k1").await.unwrap();
    assert_eq!(job.namespace, "team-a");
    let id = job.id.clone();

    // b: another namespace's job is NOT_FOUND in its own, and its namespace is denied.
    let get = |token: &'static str, ns: &'static str| {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            let req = pb::GetStatusRequest {
                id,
                namespace: ns.into(),
                wait: None,
            };
            c.get_status(as_(Some(token), req)).await
        }
    };
    assert_eq!(get("tok-b", "").await.unwrap_err().code(), Code::NotFound);
    let denied = get("tok-b", "team-a").await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "principal \"b\" may not use namespace \"team-a\""
    );
    assert_eq!(get("tok-a", "").await.unwrap().into_inner().id, id);
    assert_eq!(get("tok-ops", "team-a").await.unwrap().into_inner().id, id);
    for (ns, expected) in [("", Code::NotFound), ("team-a", Code::PermissionDenied)] {
        let watch = pb::WatchProgressRequest {
            id: id.clone(),
            namespace: ns.into(),
            after_seq: 0,
        };
        let watched = c.watch_progress(as_(Some("tok-b"), watch)).await;
        let cancel = pb::CancelRequest {
            id: id.clone(),
            namespace: ns.into(),
        };
        let cancelled = c.cancel(as_(Some("tok-b"), cancel)).await;
        let codes = (
            watched.err().map(|s| s.code()),
            cancelled.err().map(|s| s.code()),
        );
        assert_eq!(codes, (Some(expected), Some(expected)), "in {ns:?}");
    }
    // Lists: b's list holds none of a's jobs; a list of team-a is denied to b.
    let list = |token: &'static str, ns: &'static str| {
        let mut c = c.clone();
        async move {
            let req = pb::ListJobsRequest {
                namespace: ns.into(),
                ..Default::default()
            };
            c.list_jobs(as_(Some(token), req))
                .await
                .map(|r| r.into_inner().jobs)
        }
    };
    assert!(list("tok-b", "").await.unwrap().is_empty());
    assert_eq!(
        list("tok-b", "team-a").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(list("tok-a", "").await.unwrap().len(), 1);
    // The same idempotency key in each namespace makes two jobs; a's key stays a's.
    let theirs = submit_as(&mut c, "tok-b", "", "k1").await.unwrap();
    assert_ne!(theirs.id, id);
    assert_eq!(theirs.namespace, "team-b");
    let again = c
        .submit(as_(Some("tok-a"), {
            let mut r = request("demo.sleep", json!({"seconds": 30}));
            r.idempotency_key = "k1".into();
            r
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(again.existing && again.job.unwrap().id == id);
    // The worker protocol: a worker token serves only its namespaces.
    let mut elsewhere = hello("w-b", &["team.report"]);
    elsewhere.namespace = "team-b".into();
    let refused = TestWorker::connect_as(server.addr, "tok-wa", elsewhere)
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut worker = TestWorker::connect_as(server.addr, "tok-wa", hello("w-a", &["team.report"]))
        .await
        .unwrap();
    worker.credit(1).await;
    let remote = c
        .submit(as_(Some("tok-a"), request("team.report", json!({}))))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let assign = worker.next_assign().await;
    assert_eq!(assign.lease.unwrap().job_id, remote.id);
    // b cannot submit to a's remote kind: in team-b it does not exist.
    let unknown = c
        .submit(as_(Some("tok-b"), request("team.report", json!({}))))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    // A worker token is not a submitter's, nor a reader's.
    let code = c
        .list_jobs(as_(Some("tok-wa"), pb::ListJobsRequest::default()))
        .await
        .unwrap_err()
        .code();
    assert_eq!(code, Code::PermissionDenied);
    // Unary Complete in another namespace is denied before any lease is looked at.
    let complete = pbw::CompleteRequest {
        namespace: "team-b".into(),
        worker_id: "w-a".into(),
        complete: None,
    };
    let mut wc = WorkerServiceClient::new(
        Channel::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    assert_eq!(
        wc.complete(as_(Some("tok-wa"), complete))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
}

fn retry_after(status: &Status) -> Duration {
    let details = status.get_error_details();
    details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a RetryInfo with a delay")
}

#[tokio::test]
async fn quotas_refuse_with_a_retry_delay_and_free_up_as_jobs_finish() {
    let lines = [
        principal("a", "admin", "team-a", ""),
        principal("b", "admin", "team-b", ""),
        principal("c", "admin", "team-c", ""),
        "quota team-a queued=2 schedules=1".into(),
        "quota team-b args-bytes=100".into(),
        "quota team-c submits=2/min submits-burst=2".into(),
    ];
    let (server, _dir) = serve(&lines).await;
    let mut c = server.client().await;
    // team-a: two unfinished jobs, then RESOURCE_EXHAUSTED with a retry delay.
    let first = submit_as(&mut c, "tok-a", "", "").await.unwrap();
    submit_as(&mut c, "tok-a", "", "").await.unwrap();
    let full = submit_as(&mut c, "tok-a", "", "").await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert!(
        full.message().contains("2 unfinished jobs"),
        "{}",
        full.message()
    );
    assert_eq!(retry_after(&full), Duration::from_secs(1));
    let quota = full
        .get_error_details()
        .quota_failure()
        .cloned()
        .expect("QuotaFailure");
    assert_eq!(quota.violations[0].subject, "namespace:team-a");
    // A repeated idempotency key is not a new job, but a refused one was not stored.
    assert_eq!(server.engine.quota_usage("team-a"), (2, 2 * 14));
    // A batch: each job over the quota refused on its own.
    let cancel = pb::CancelRequest {
        id: first.id.clone(),
        namespace: String::new(),
    };
    c.cancel(as_(Some("tok-a"), cancel)).await.unwrap();
    let batch = pb::SubmitBatchRequest {
        jobs: vec![
            request("demo.sleep", json!({"seconds": 30})),
            request("demo.sleep", json!({"seconds": 30})),
        ],
        ..Default::default()
    };
    let results = c
        .submit_batch(as_(Some("tok-a"), batch))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(matches!(
        results[0].outcome,
        Some(pb::submit_batch_result::Outcome::Submitted(_))
    ));
    match &results[1].outcome {
        Some(pb::submit_batch_result::Outcome::Error(e)) => {
            assert_eq!(e.code, Code::ResourceExhausted as i32)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Schedules: one.
    let mut schedules = ScheduleServiceClient::new(
        Channel::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    schedules
        .create_schedule(as_(Some("tok-a"), nightly("one")))
        .await
        .unwrap();
    let over = schedules
        .create_schedule(as_(Some("tok-a"), nightly("two")))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted);
    assert!(over.message().contains("1 schedules"), "{}", over.message());
    // team-b: args bytes. {"seconds":30} is 14 bytes, so 7 fit in 100 and the 8th does not.
    for _ in 0..7 {
        submit_as(&mut c, "tok-b", "", "").await.unwrap();
    }
    let bytes = submit_as(&mut c, "tok-b", "", "").await.unwrap_err();
    assert_eq!(bytes.code(), Code::ResourceExhausted);
    assert!(
        bytes.message().contains("100 bytes of args"),
        "{}",
        bytes.message()
    );
    // team-c: 2 a minute, so the third is told to wait about 30 s.
    let quick = |n: u64| {
        let mut c = c.clone();
        async move {
            let mut req = request("demo.noop", json!({}));
            req.idempotency_key = format!("n{n}");
            c.submit(as_(Some("tok-c"), req)).await
        }
    };
    quick(1).await.unwrap();
    quick(2).await.unwrap();
    let rate = quick(3).await.unwrap_err();
    assert_eq!(rate.code(), Code::ResourceExhausted);
    let wait = retry_after(&rate);
    assert!(
        wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_principals_own_rate_and_args_limits_hold() {
    let lines = [
        principal("slow", "submitter", "*", "rate=3/min burst=3 max-args=64"),
        principal("eyes", "submitter", "*", "watchers=1"),
    ];
    let (server, _dir) = serve(&lines).await;
    let mut c = server.client().await;
    let big = request("demo.noop", json!({"pad": "x".repeat(100)}));
    let status = c.submit(as_(Some("tok-slow"), big)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("args"), "{}", status.message());
    c.get_stats(as_(Some("tok-slow"), pb::GetStatsRequest::default()))
        .await
        .unwrap();
    c.get_stats(as_(Some("tok-slow"), pb::GetStatsRequest::default()))
        .await
        .unwrap();
    let limited = c
        .get_stats(as_(Some("tok-slow"), pb::GetStatsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(
        limited
            .message()
            .contains("\"slow\" is over its rate limit"),
        "{}",
        limited.message()
    );
    let wait = retry_after(&limited);
    assert!(
        wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    // watchers=1: a second open stream is refused until the first is dropped.
    let job = submit_as(&mut c, "tok-eyes", "", "").await.unwrap();
    let watch = || pb::WatchProgressRequest {
        id: job.id.clone(),
        ..Default::default()
    };
    let first = c
        .watch_progress(as_(Some("tok-eyes"), watch()))
        .await
        .unwrap();
    let second = c
        .watch_progress(as_(Some("tok-eyes"), watch()))
        .await
        .unwrap_err();
    assert_eq!(second.code(), Code::ResourceExhausted);
    assert!(
        second.message().contains("1 watch streams open"),
        "{}",
        second.message()
    );
    assert_eq!(retry_after(&second), Duration::from_secs(1));
    drop(first);
    // The server sees the stream end when the client's drop reaches it.
    let mut reopened = None;
    for _ in 0..200 {
        match c.watch_progress(as_(Some("tok-eyes"), watch())).await {
            Ok(stream) => {
                reopened = Some(stream);
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        reopened.is_some(),
        "the dropped stream's place was never freed"
    );
}
