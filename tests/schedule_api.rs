//! ScheduleService end to end: the real server on 127.0.0.1:0 and a gRPC client. Bad
//! requests are refused naming each field; a schedule fires every second into jobs that
//! carry it and that ListJobs finds by it; get, update with a conflict token, pause,
//! resume, trigger, backfill, list and delete answer as the contract says.

mod common;

use std::time::{Duration, SystemTime};

use common::TestServer;
use spindle::pb;
use spindle::pb::schedule_service_client::ScheduleServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

type Schedules = ScheduleServiceClient<Channel>;

fn every(secs: u64) -> pb::ScheduleSpec {
    pb::ScheduleSpec {
        repeat: Some(pb::schedule_spec::Repeat::Interval(pb::Interval {
            every: Some(prost_types::Duration {
                seconds: secs as i64,
                nanos: 0,
            }),
            offset: None,
        })),
        ..Default::default()
    }
}

fn create(id: &str, spec: pb::ScheduleSpec) -> pb::CreateScheduleRequest {
    pb::CreateScheduleRequest {
        id: id.into(),
        spec: Some(spec),
        template: Some(common::request("demo.noop", serde_json::json!({}))),
        ..Default::default()
    }
}

fn fields(status: &tonic::Status) -> Vec<String> {
    let bad = status.get_details_bad_request().expect("BadRequest");
    bad.field_violations.into_iter().map(|v| v.field).collect()
}

async fn get(schedules: &mut Schedules, id: &str) -> pb::Schedule {
    let request = pb::GetScheduleRequest {
        id: id.into(),
        ..Default::default()
    };
    schedules.get_schedule(request).await.unwrap().into_inner()
}

async fn jobs_of(server: &TestServer, id: &str) -> Vec<pb::Job> {
    let mut client = server.client().await;
    let request = pb::ListJobsRequest {
        schedule_id: id.into(),
        page_size: 1000,
        ..Default::default()
    };
    client.list_jobs(request).await.unwrap().into_inner().jobs
}

#[tokio::test]
async fn bad_schedules_are_refused_naming_each_field() {
    let server = TestServer::start().await;
    let mut schedules = Schedules::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let cases = [
        ("61 * * * *", "", "spec.cron"),
        ("* * * *", "", "spec.cron"),
        ("0 3 * * *", "Mars/Olympus", "spec.timezone"),
    ];
    for (cron, zone, field) in cases {
        let spec = pb::ScheduleSpec {
            repeat: Some(pb::schedule_spec::Repeat::Cron(cron.into())),
            timezone: zone.into(),
            ..Default::default()
        };
        let status = schedules
            .create_schedule(create("bad", spec))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{cron} {zone}: {status:?}"
        );
        assert_eq!(fields(&status), [field], "{cron} {zone}");
    }
    let status = schedules
        .create_schedule(create("bad", every(0)))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["spec.interval.every"]);
    let mut reversed = every(60);
    reversed.start = Some(prost_types::Timestamp {
        seconds: 2_000_000_000,
        nanos: 0,
    });
    reversed.end = Some(prost_types::Timestamp {
        seconds: 1_900_000_000,
        nanos: 0,
    });
    let status = schedules
        .create_schedule(create("bad", reversed))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["spec.end"]);
    let mut wrong = create("", every(60));
    wrong.template = Some(pb::SubmitRequest {
        kind: "http.request".into(),
        idempotency_key: "mine".into(),
        ..Default::default()
    });
    let status = schedules.create_schedule(wrong).await.unwrap_err();
    let named = fields(&status);
    assert!(named.contains(&"id".to_string()), "{named:?}");
    assert!(
        named.contains(&"template.idempotency_key".to_string()),
        "{named:?}"
    );
    let mut unknown = create("unknown", every(60));
    unknown.template = Some(common::request("no.such", serde_json::json!({})));
    let status = schedules.create_schedule(unknown).await.unwrap_err();
    assert_eq!(
        (status.code(), fields(&status)),
        (Code::InvalidArgument, vec!["template.kind".to_string()])
    );
    let missing = schedules
        .get_schedule(pb::GetScheduleRequest {
            id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn a_schedule_fires_every_second_and_answers_every_call() {
    let server = TestServer::start().await;
    let mut schedules = Schedules::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let mut request = create("tick", every(1));
    request.request_id = "req-1".into();
    let created = schedules
        .create_schedule(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.next_fires.len(), 10);
    assert_eq!(
        created.policies.unwrap().overlap,
        pb::OverlapPolicy::Skip as i32
    );
    // A retried create gets the same schedule; another create of the id is refused.
    let again = schedules
        .create_schedule(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.created_at, created.created_at);
    request.request_id = "req-2".into();
    let taken = schedules.create_schedule(request).await.unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);

    // Wait (by polling the store through the API) for three fires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while jobs_of(&server, "tick").await.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "three fires in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = jobs_of(&server, "tick").await;
    let mut slots: Vec<i64> = jobs
        .iter()
        .map(|j| j.schedule_slot.unwrap().seconds)
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), jobs.len(), "one job per slot");
    assert!(
        jobs.iter()
            .all(|j| j.schedule_id == "tick" && j.idempotency_key.starts_with("schedule/tick/"))
    );

    let reference = || pb::ScheduleRef {
        id: "tick".into(),
        ..Default::default()
    };
    let got = get(&mut schedules, "tick").await;
    assert!(got.runs >= 3 && !got.recent_runs.is_empty());
    assert_eq!(
        got.recent_runs[0].outcome,
        pb::schedule_run::Outcome::Fired as i32
    );

    // Update with a stale token is refused; with the current one it lands.
    let update = |token: &str| pb::UpdateScheduleRequest {
        id: "tick".into(),
        spec: Some(every(3600)),
        template: Some(common::request("demo.noop", serde_json::json!({}))),
        conflict_token: token.into(),
        ..Default::default()
    };
    let stale = schedules.update_schedule(update("0")).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let current = get(&mut schedules, "tick").await;
    let updated = schedules
        .update_schedule(update(&current.conflict_token))
        .await
        .unwrap()
        .into_inner();
    let next = SystemTime::try_from(updated.next_fires[0]).unwrap();
    let ahead = next.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(
        ahead > Duration::from_secs(2),
        "the next fire moved out: {ahead:?}"
    );

    let paused = schedules
        .pause_schedule(pb::PauseScheduleRequest {
            id: "tick".into(),
            note: "deploy".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paused.paused && paused.next_fires.is_empty() && paused.note == "deploy");
    let resumed = schedules
        .resume_schedule(reference())
        .await
        .unwrap()
        .into_inner();
    assert!(!resumed.paused);
    let before = jobs_of(&server, "tick").await.len();
    let triggered = schedules
        .trigger_schedule(reference())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(triggered.schedule_id, "tick");
    assert_eq!(jobs_of(&server, "tick").await.len(), before + 1);

    let now = SystemTime::now();
    let backfill = pb::BackfillScheduleRequest {
        id: "tick".into(),
        start: Some((now - Duration::from_secs(3 * 3600)).into()),
        end: Some(now.into()),
        ..Default::default()
    };
    let runs = schedules
        .backfill_schedule(backfill.clone())
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 3);
    assert!(
        runs.iter()
            .all(|r| r.outcome == pb::schedule_run::Outcome::Backfilled as i32)
    );
    let again = schedules
        .backfill_schedule(backfill)
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(
        again
            .iter()
            .all(|r| r.outcome == pb::schedule_run::Outcome::AlreadyFired as i32)
    );

    let listed = schedules
        .list_schedules(pb::ListSchedulesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .schedules
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["tick"]
    );
    schedules.delete_schedule(reference()).await.unwrap();
    let gone = schedules.delete_schedule(reference()).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert!(!jobs_of(&server, "tick").await.is_empty(), "its jobs stay");
}

#[tokio::test]
async fn a_templates_secret_args_are_redacted_and_survive_an_update_that_sends_them_back() {
    let allow = vec!["127.0.0.1".parse().unwrap()];
    let egress = spindle::jobs::egress::EgressPolicy::new(allow);
    let server = TestServer::start_with(|c| c.http.egress = egress, |s| s).await;
    let mut schedules = Schedules::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let args = serde_json::json!({
        "url": "http://127.0.0.1:9/hook",
        "headers": {"Authorization": "Bearer s3cret"}
    });
    let create = pb::CreateScheduleRequest {
        id: "hook".into(),
        spec: Some(every(3600)),
        template: Some(common::request("http.request", args)),
        // Paused: it never fires, so nothing connects anywhere.
        paused: true,
        ..Default::default()
    };
    let created = schedules
        .create_schedule(create)
        .await
        .unwrap()
        .into_inner();
    let headers = |schedule: &pb::Schedule| {
        let args = schedule.template.clone().unwrap().args.unwrap();
        let args = spindle::pb::json::struct_to_json(args, "args").unwrap();
        args["headers"]["Authorization"].clone()
    };
    assert_eq!(headers(&created), "[redacted]");
    let stored = |server: &TestServer| {
        let engine = server.engine.clone();
        async move {
            let view = engine.get_schedule("default", "hook").await.unwrap();
            view.schedule.template.args["headers"]["Authorization"].clone()
        }
    };
    assert_eq!(stored(&server).await, "Bearer s3cret");
    // Sent back as read (redacted), with another URL: the secret stays.
    let mut template = created.template.clone().unwrap();
    let mut args = spindle::pb::json::struct_to_json(template.args.unwrap(), "args").unwrap();
    args.insert("url".into(), "http://127.0.0.1:9/other".into());
    template.args = Some(spindle::pb::json::json_to_struct(&args));
    let update = pb::UpdateScheduleRequest {
        id: "hook".into(),
        spec: Some(every(3600)),
        template: Some(template.clone()),
        conflict_token: created.conflict_token.clone(),
        ..Default::default()
    };
    let updated = schedules
        .update_schedule(update)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(headers(&updated), "[redacted]");
    assert_eq!(stored(&server).await, "Bearer s3cret");
    // A new value replaces it.
    args.insert(
        "headers".into(),
        serde_json::json!({"Authorization": "Bearer n3w"}),
    );
    template.args = Some(spindle::pb::json::json_to_struct(&args));
    let update = pb::UpdateScheduleRequest {
        id: "hook".into(),
        spec: Some(every(3600)),
        template: Some(template),
        conflict_token: updated.conflict_token,
        ..Default::default()
    };
    schedules.update_schedule(update).await.unwrap();
    assert_eq!(stored(&server).await, "Bearer n3w");
}
