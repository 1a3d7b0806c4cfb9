//! JobService end to end: submit, status, list, kinds, cancel, priorities, pool slots,
//! failures and panics, and every kind of bad input.

mod common;

use std::time::SystemTime;

use common::*;
use serde_json::json;
use spindle::pb;
use spindle::{HandlerError, JobKind, Spindle};
use tonic::Code;
use tonic_types::StatusExt;

const UNKNOWN_ID: &str = "01939f3a-0000-7000-8000-000000000000";
/// Long enough to keep a CPU slot busy until the test cancels it.
const FOREVER_ROUNDS: u64 = 1_000_000_000;

fn field_violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

async fn cancel(server: &TestServer, id: &str) -> Result<pb::Job, tonic::Status> {
    server
        .client
        .clone()
        .cancel(pb::CancelRequest {
            namespace: String::new(),
            id: id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn submit_returns_a_queued_v7_job_that_runs_to_success() {
    let server = TestServer::start().await;
    let mut req = request("demo.sleep", json!({"seconds": 0.05, "steps": 1}));
    req.queue = "emails".into();
    req.priority = 7;
    req.labels = [("team".to_string(), "growth".to_string())].into();
    req.timeout = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    let job = server.submit_request(req).await;
    let id: uuid::Uuid = job.id.parse().unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(state(&job), pb::JobState::Queued);
    assert_eq!((job.queue.as_str(), job.priority), ("emails", 7));
    assert!(job.created_at.is_some());

    let done = server.finish(&job.id).await;
    assert_eq!(state(&done), pb::JobState::Succeeded);
    assert_eq!(done.attempt, 1);
    assert_eq!(done.labels["team"], "growth");
    assert_eq!(done.timeout.unwrap().seconds, 60);
    assert_eq!(
        to_json(
            done.args
                .as_ref()
                .map(|a| prost_types::Value {
                    kind: Some(prost_types::value::Kind::StructValue(a.clone())),
                })
                .as_ref()
                .unwrap()
        )["steps"],
        json!(1.0)
    );
    assert_eq!(result(&done)["slept_seconds"], json!(0.05));
    assert_eq!(done.progress.unwrap().fraction, 1.0);
    let (created, started, finished) = (
        done.created_at.unwrap(),
        done.started_at.unwrap(),
        done.finished_at.unwrap(),
    );
    let t = |ts: prost_types::Timestamp| SystemTime::try_from(ts).unwrap();
    assert!(t(created) <= t(started) && t(started) <= t(finished));
}

#[tokio::test]
async fn list_kinds_describes_every_builtin_with_its_args() {
    let server = TestServer::start().await;
    let kinds = server
        .client
        .clone()
        .list_kinds(pb::ListKindsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .kinds;
    let names: Vec<&str> = kinds.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "demo.cpu",
            "demo.noop",
            "demo.progress",
            "demo.sleep",
            "file.checksum",
            "http.request",
            "image.thumbnail"
        ]
    );
    let kind = |name: &str| kinds.iter().find(|k| k.name == name).unwrap();
    let sleep = kind("demo.sleep");
    assert_eq!(sleep.pool, pb::Pool::Io as i32);
    assert!(!sleep.description.is_empty());
    let seconds = sleep.fields.iter().find(|f| f.name == "seconds").unwrap();
    assert!(seconds.required);
    assert_eq!(seconds.r#type, "number");
    assert!(
        sleep
            .args_schema
            .as_ref()
            .unwrap()
            .fields
            .contains_key("properties")
    );
    let checksum = kind("file.checksum");
    assert_eq!(checksum.pool, pb::Pool::Cpu as i32);
    let algorithm = checksum
        .fields
        .iter()
        .find(|f| f.name == "algorithm")
        .unwrap();
    assert!(!algorithm.required);
    assert_eq!(algorithm.r#type, "string");
}

#[tokio::test]
async fn bad_submits_name_the_field() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();

    let unknown = client.submit(request("nope", json!({}))).await.unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown.message().contains("demo.sleep"),
        "lists known kinds: {}",
        unknown.message()
    );
    assert_eq!(field_violations(&unknown), ["kind"]);

    let cases = [
        (json!({}), "args.seconds"),
        (json!({"seconds": "x"}), "args.seconds"),
        (json!({"seconds": 1, "steps": 0}), "args.steps"),
        (json!({"seconds": -1}), "args.seconds"),
        (json!({"seconds": 1, "extra": true}), "args.extra"),
    ];
    for (args, field) in cases {
        let err = client
            .submit(request("demo.sleep", args.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{args}");
        assert_eq!(field_violations(&err), [field], "{args}");
    }

    let mut req = request("demo.sleep", json!({"seconds": 1}));
    req.kind = String::new();
    req.queue = "no spaces".into();
    req.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 0,
    });
    let err = client.submit(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&err), ["kind", "queue", "timeout"]);

    let empty = server
        .client
        .clone()
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap();
    assert!(
        empty.into_inner().jobs.is_empty(),
        "refused submits store nothing"
    );
}

#[tokio::test]
async fn bad_ids_and_finished_jobs_get_the_right_codes() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let malformed = client
        .get_status(pb::GetStatusRequest {
            namespace: String::new(),
            id: "123".into(),
            wait: None,
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&malformed), ["id"]);
    let missing = client
        .get_status(pb::GetStatusRequest {
            namespace: String::new(),
            id: UNKNOWN_ID.into(),
            wait: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains(UNKNOWN_ID));
    assert_eq!(
        cancel(&server, UNKNOWN_ID).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        cancel(&server, "").await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let job = server.submit("demo.sleep", json!({"seconds": 0})).await;
    server.finish(&job.id).await;
    let late = cancel(&server, &job.id).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_server_carries_on() {
    let server = TestServer::start().await;
    let huge = "x".repeat(5 << 20);
    let err = server
        .client
        .clone()
        .submit(request("demo.sleep", json!({"seconds": 0, "pad": huge})))
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    let job = server.submit("demo.sleep", json!({"seconds": 0})).await;
    assert_eq!(
        state(&server.finish(&job.id).await),
        pb::JobState::Succeeded
    );
}

#[tokio::test]
async fn cancel_stops_queued_and_running_jobs_of_both_pools() {
    let server = TestServer::start_with(|c| c.engine.cpu_threads = 1, |s| s).await;
    let cpu = server
        .submit("demo.cpu", json!({"rounds": FOREVER_ROUNDS}))
        .await;
    let queued = server.submit("demo.cpu", json!({"rounds": 1})).await;
    let io = server.submit("demo.sleep", json!({"seconds": 3600})).await;
    let engine = server.engine.clone();
    eventually("both jobs run", async || engine.load().2 == 2).await;

    let q = cancel(&server, &queued.id).await.unwrap();
    assert_eq!(state(&q), pb::JobState::Cancelled);
    assert_eq!(q.attempt, 0, "never started");
    assert!(q.cancel_requested);
    for id in [&io.id, &cpu.id] {
        let job = cancel(&server, id).await.unwrap();
        assert_eq!(state(&job), pb::JobState::Cancelled, "{job:?}");
        assert_eq!(job.error.unwrap().kind, pb::ErrorKind::Cancelled as i32);
    }
    let events = server.watch_all(&cpu.id).await;
    assert!(is_finished(events.last().unwrap()));
}

fn with_failing_kinds(spindle: Spindle) -> Spindle {
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    struct NoArgs {}
    spindle
        .with_kind(JobKind::cpu("test.cpu_panic", "panics", |_, _: NoArgs| {
            panic!("cpu boom")
        }))
        .with_kind(JobKind::io(
            "test.io_panic",
            "panics",
            |_, _: NoArgs| async { panic!("io boom") },
        ))
        .with_kind(JobKind::io("test.fail", "fails", |_, _: NoArgs| async {
            Err(HandlerError::failed("disk on fire"))
        }))
}

#[tokio::test]
async fn errors_and_panics_fail_the_job_and_the_service_carries_on() {
    let server = TestServer::start_with(|_| {}, with_failing_kinds).await;
    for (kind, kind_code, message) in [
        ("test.cpu_panic", pb::ErrorKind::Panic, "cpu boom"),
        ("test.io_panic", pb::ErrorKind::Panic, "io boom"),
        ("test.fail", pb::ErrorKind::Handler, "disk on fire"),
    ] {
        let req = request_once(kind, json!({}));
        let job = server.submit_request(req).await;
        let done = server.finish(&job.id).await;
        assert_eq!(state(&done), pb::JobState::Failed);
        let error = done.error.unwrap();
        assert_eq!(
            (error.kind, error.message.as_str()),
            (kind_code as i32, message)
        );
    }
    let job = server.submit("demo.cpu", json!({"rounds": 10})).await;
    assert_eq!(
        state(&server.finish(&job.id).await),
        pb::JobState::Succeeded
    );
}

#[tokio::test]
async fn a_timeout_fails_the_job() {
    let server = TestServer::start().await;
    let mut req = request_once("demo.sleep", json!({"seconds": 3600}));
    req.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 100_000_000,
    });
    let job = server.submit_request(req).await;
    let done = server.finish(&job.id).await;
    assert_eq!(state(&done), pb::JobState::Failed);
    assert_eq!(done.error.unwrap().kind, pb::ErrorKind::Timeout as i32);
}

#[tokio::test]
async fn priorities_hold_and_the_cpu_pool_never_overfills() {
    let server = TestServer::start_with(|c| c.engine.cpu_threads = 1, |s| s).await;
    let blocker = server
        .submit("demo.cpu", json!({"rounds": FOREVER_ROUNDS}))
        .await;
    let engine = server.engine.clone();
    eventually("the blocker runs", async || engine.load().2 == 1).await;
    let mut low = Vec::new();
    for _ in 0..20 {
        low.push(server.submit("demo.cpu", json!({"rounds": 10})).await);
    }
    let mut req = request("demo.cpu", json!({"rounds": 10}));
    req.priority = 10;
    let high = server.submit_request(req).await;
    assert_eq!(
        engine.load(),
        (0, 21, 1),
        "jobs wait in the engine, not in rayon"
    );
    cancel(&server, &blocker.id).await.unwrap();
    let high = server.finish(&high.id).await;
    let started = |j: &pb::Job| SystemTime::try_from(j.started_at.unwrap()).unwrap();
    for job in &low {
        let job = server.finish(&job.id).await;
        assert!(
            started(&high) <= started(&job),
            "high priority starts first"
        );
    }
    let firsts: Vec<SystemTime> = start_times(&server, &low).await;
    assert!(
        firsts.windows(2).all(|w| w[0] <= w[1]),
        "FIFO within a priority"
    );
}

async fn start_times(server: &TestServer, jobs: &[pb::Job]) -> Vec<SystemTime> {
    let mut out = Vec::new();
    for job in jobs {
        let job = server.status(&job.id).await;
        out.push(SystemTime::try_from(job.started_at.unwrap()).unwrap());
    }
    out
}

#[tokio::test]
async fn list_jobs_filters_and_pages_newest_first() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut req = request("demo.sleep", json!({"seconds": 0}));
        req.queue = if i % 2 == 0 { "even" } else { "odd" }.into();
        req.labels = [("n".to_string(), i.to_string())].into();
        let job = server.submit_request(req).await;
        server.finish(&job.id).await;
        ids.push(job.id);
    }
    let mut client = server.client.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.jobs.len() <= 3);
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let filtered = client
        .list_jobs(pb::ListJobsRequest {
            queue: "even".into(),
            state: pb::JobState::Succeeded as i32,
            kind: "demo.sleep".into(),
            labels: [("n".to_string(), "4".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        filtered.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&ids[4]]
    );
    let none = client
        .list_jobs(pb::ListJobsRequest {
            state: pb::JobState::Running as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.jobs.is_empty());
    let bad = client
        .list_jobs(pb::ListJobsRequest {
            page_token: "zzz".into(),
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&bad), ["page_token", "page_size"]);
}

#[tokio::test]
async fn health_reports_serving() {
    let server = TestServer::start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "spindle.v1.JobService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn reflection_v1_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"spindle.v1.JobService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}
