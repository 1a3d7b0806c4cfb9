//! Namespaces end to end: a job belongs to one, and every RPC that names or lists jobs is
//! confined to the namespace it names. Another namespace gets NOT_FOUND for the job's id
//! (never a hint that it exists), its own lists, stats and idempotency keys; a bad name is
//! INVALID_ARGUMENT naming the field. Also the CLI's --namespace.

mod common;

use common::{Client, TestServer, request, stats};
use serde_json::json;
use spindle::pb;
use tonic::Code;

fn in_namespace(namespace: &str, mut req: pb::SubmitRequest) -> pb::SubmitRequest {
    req.namespace = namespace.into();
    req
}

async fn submit_in(client: &mut Client, namespace: &str, req: pb::SubmitRequest) -> pb::Job {
    let response = client
        .submit(in_namespace(namespace, req))
        .await
        .expect("Submit");
    response.into_inner().job.expect("job")
}

async fn status_code(client: &mut Client, namespace: &str, id: &str) -> Code {
    let request = pb::GetStatusRequest {
        id: id.into(),
        namespace: namespace.into(),
        wait: None,
    };
    match client.get_status(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn another_namespace_cannot_see_touch_or_count_a_job() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let far = request("demo.sleep", json!({"seconds": 60}));
    let mut delayed = far.clone();
    delayed.delay = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    let job = submit_in(&mut c, "team-a", delayed).await;
    assert_eq!(job.namespace, "team-a");

    assert_eq!(status_code(&mut c, "team-a", &job.id).await, Code::Ok);
    for other in ["team-b", "", "default"] {
        assert_eq!(
            status_code(&mut c, other, &job.id).await,
            Code::NotFound,
            "{other:?}"
        );
    }
    let watch = pb::WatchProgressRequest {
        id: job.id.clone(),
        after_seq: 0,
        namespace: "team-b".into(),
    };
    let refused = c.watch_progress(watch).await.expect_err("not found");
    assert_eq!(refused.code(), Code::NotFound);
    let cancel = |namespace: &str| pb::CancelRequest {
        id: job.id.clone(),
        namespace: namespace.into(),
    };
    let refused = c.cancel(cancel("team-b")).await.expect_err("not found");
    assert_eq!(refused.code(), Code::NotFound);
    // The refusal changed nothing: the job still waits, and its own namespace cancels it.
    assert_eq!(status_code(&mut c, "team-a", &job.id).await, Code::Ok);
    let list = |namespace: &str| pb::ListJobsRequest {
        namespace: namespace.into(),
        ..Default::default()
    };
    let mine = c.list_jobs(list("team-a")).await.unwrap().into_inner().jobs;
    assert_eq!(mine.iter().map(|j| &j.id).collect::<Vec<_>>(), [&job.id]);
    let theirs = c.list_jobs(list("team-b")).await.unwrap().into_inner().jobs;
    assert!(theirs.is_empty(), "{theirs:?}");
    let (a, b) = (stats(&mut c, "team-a").await, stats(&mut c, "team-b").await);
    assert_eq!((a.delayed, a.submitted_total), (1, 1));
    assert_eq!((b.delayed, b.submitted_total), (0, 0));

    let cancelled = c
        .cancel(cancel("team-a"))
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.state(), pb::JobState::Cancelled);
    assert_eq!(stats(&mut c, "team-a").await.cancelled_total, 1);
    assert_eq!(stats(&mut c, "team-b").await.cancelled_total, 0);
}

#[tokio::test]
async fn idempotency_keys_are_per_namespace() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut keyed = request("demo.sleep", json!({"seconds": 0}));
    keyed.idempotency_key = "order-7".into();
    let a = submit_in(&mut c, "team-a", keyed.clone()).await;
    let again = c
        .submit(in_namespace("team-a", keyed.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(again.existing);
    assert_eq!(again.job.unwrap().id, a.id);
    // The same key in another namespace is another job, even with other args.
    let mut other_args = keyed.clone();
    other_args.args = request("demo.sleep", json!({"seconds": 0.01})).args;
    let b = c
        .submit(in_namespace("team-b", other_args))
        .await
        .unwrap()
        .into_inner();
    assert!(!b.existing);
    assert_ne!(b.job.unwrap().id, a.id);
}

#[tokio::test]
async fn bad_namespaces_are_refused_naming_the_field() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for bad in ["no spaces", "a/b", &"x".repeat(65)] {
        let refused = c
            .submit(in_namespace(
                bad,
                request("demo.sleep", json!({"seconds": 0})),
            ))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
        assert!(
            refused.message().starts_with("namespace:"),
            "{}",
            refused.message()
        );
        let refused = c
            .get_stats(pb::GetStatsRequest {
                namespace: bad.to_string(),
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
    }
    // A batch names its namespace once; a job that names another is refused alone.
    let batch = pb::SubmitBatchRequest {
        namespace: "team-a".into(),
        jobs: vec![
            request("demo.sleep", json!({"seconds": 0})),
            in_namespace("team-b", request("demo.sleep", json!({"seconds": 0}))),
        ],
    };
    let results = c.submit_batch(batch).await.unwrap().into_inner().results;
    use pb::submit_batch_result::Outcome;
    let Some(Outcome::Submitted(ok)) = &results[0].outcome else {
        panic!("{results:?}")
    };
    assert_eq!(status_code(&mut c, "team-a", &ok.id).await, Code::Ok);
    let Some(Outcome::Error(refused)) = &results[1].outcome else {
        panic!("{results:?}")
    };
    assert_eq!(refused.code, Code::InvalidArgument as i32);
    assert!(refused.message.contains("namespace"), "{}", refused.message);
}

#[tokio::test]
async fn the_cli_acts_in_its_namespace() {
    let server = TestServer::start().await;
    let url = format!("http://{}", server.addr);
    // tokio's Command: a blocking wait would stall the server in this very runtime.
    let spindle = async |args: &[&str], namespace: Option<&str>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_spindle"));
        command.args(["--server", &url]).args(args);
        command.env_remove("SPINDLE_NAMESPACE");
        if let Some(ns) = namespace {
            command.env("SPINDLE_NAMESPACE", ns);
        }
        command.output().await.expect("run spindle")
    };
    let out = spindle(&["--namespace", "team-a", "submit", "demo.noop"], None).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = spindle(&["status", &id], Some("team-a")).await;
    assert!(
        out.status.success(),
        "from SPINDLE_NAMESPACE: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = spindle(&["status", &id], None).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "the default namespace has no such job"
    );
    let out = spindle(&["--namespace", "bad name", "jobs"], None).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("namespace"));
}

#[tokio::test]
async fn a_queue_limit_holds_for_each_namespace_queue_of_that_name() {
    let server = TestServer::start_with(
        |c| {
            c.engine.queue_limits.insert("reports".into(), 1);
        },
        |s| s,
    )
    .await;
    let mut c = server.client().await;
    let mut report = request("demo.sleep", json!({"seconds": 30}));
    report.queue = "reports".into();
    for namespace in ["team-a", "team-a", "team-b"] {
        submit_in(&mut c, namespace, report.clone()).await;
    }
    // One of team-a's runs and one waits; team-b's own "reports" is not held up by it.
    let running = |namespace: &'static str| {
        let mut c = c.clone();
        async move { stats(&mut c, namespace).await.running }
    };
    common::eventually("each namespace's queue runs one job", async || {
        running("team-a").await == 1 && running("team-b").await == 1
    })
    .await;
    assert_eq!(stats(&mut c, "team-a").await.queued, 1);
}
