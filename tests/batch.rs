//! SubmitBatch over gRPC with the durable store: one result per job in order, each job
//! checked on its own, idempotency inside a batch, the limits of a batch, and jobs that
//! survive a restart like any other.

mod common;

use common::{TestServer, request, state};
use prost::Message;
use serde_json::json;
use spindle::pb;
use spindle::pb::submit_batch_result::Outcome;
use tonic::Code;

async fn submit_batch(
    server: &TestServer,
    jobs: Vec<pb::SubmitRequest>,
) -> Result<Vec<Outcome>, tonic::Status> {
    let mut client = server.client().await;
    let answer = client
        .submit_batch(pb::SubmitBatchRequest {
            namespace: String::new(),
            jobs,
        })
        .await?
        .into_inner();
    Ok(answer
        .results
        .into_iter()
        .map(|r| r.outcome.expect("an outcome"))
        .collect())
}

fn submitted(outcome: &Outcome) -> &pb::SubmittedJob {
    match outcome {
        Outcome::Submitted(s) => s,
        Outcome::Error(e) => panic!("refused: {e:?}"),
    }
}

/// A refused job's google.rpc.Status, with the BadRequest violations decoded from its
/// details as any gRPC library would.
struct Refusal {
    code: i32,
    violations: Vec<tonic_types::pb::bad_request::FieldViolation>,
}

fn refused(outcome: &Outcome) -> Refusal {
    let status = match outcome {
        Outcome::Error(e) => e,
        Outcome::Submitted(s) => panic!("accepted: {s:?}"),
    };
    let mut violations = Vec::new();
    for any in &status.details {
        assert_eq!(any.type_url, "type.googleapis.com/google.rpc.BadRequest");
        let bad = tonic_types::pb::BadRequest::decode(any.value.as_slice()).expect("BadRequest");
        violations.extend(bad.field_violations);
    }
    Refusal {
        code: status.code,
        violations,
    }
}

#[tokio::test]
async fn each_job_gets_its_own_result_in_order_and_refusals_do_not_stop_the_rest() {
    let server = TestServer::start().await;
    let mut outside = request("file.checksum", json!({"path": "/etc/passwd"}));
    outside.queue = "reports".into();
    let mut bad_queue = request("demo.sleep", json!({"seconds": 0}));
    bad_queue.queue = "no spaces".into();
    let jobs = vec![
        request("demo.sleep", json!({"seconds": 0.05, "steps": 1})),
        request("demo.sleep", json!({"seconds": "soon"})),
        request("no.such.kind", json!({})),
        outside,
        bad_queue,
        request("demo.cpu", json!({"rounds": 10})),
    ];
    let outcomes = submit_batch(&server, jobs).await.expect("batch");
    assert_eq!(outcomes.len(), 6);

    let bad_args = refused(&outcomes[1]);
    assert_eq!(bad_args.code, Code::InvalidArgument as i32);
    assert_eq!(bad_args.violations[0].field, "args.seconds");
    assert_eq!(refused(&outcomes[2]).violations[0].field, "kind");
    assert_eq!(refused(&outcomes[3]).code, Code::PermissionDenied as i32);
    assert_eq!(refused(&outcomes[4]).violations[0].field, "queue");

    for accepted in [&outcomes[0], &outcomes[5]] {
        let job = submitted(accepted);
        assert_eq!(job.state(), pb::JobState::Queued);
        let done = server.finish(&job.id).await;
        assert_eq!(state(&done), pb::JobState::Succeeded, "{done:?}");
        assert_eq!(
            done.last_seq,
            server.watch_all(&job.id).await.last().unwrap().seq
        );
    }
}

#[tokio::test]
async fn a_repeated_idempotency_key_inside_a_batch_returns_the_first_job() {
    let server = TestServer::start().await;
    let mut first = request("demo.sleep", json!({"seconds": 0}));
    first.idempotency_key = "order-1".into();
    let mut conflicting = first.clone();
    conflicting.args = request("demo.sleep", json!({"seconds": 1})).args;
    let outcomes = submit_batch(&server, vec![first.clone(), first, conflicting])
        .await
        .expect("batch");
    let (a, b) = (submitted(&outcomes[0]), submitted(&outcomes[1]));
    assert!(!a.existing && b.existing);
    assert_eq!(a.id, b.id);
    assert_eq!(refused(&outcomes[2]).code, Code::AlreadyExists as i32);
}

#[tokio::test]
async fn empty_and_oversized_batches_are_refused_naming_jobs() {
    let server = TestServer::start().await;
    for size in [0, 1001] {
        let jobs = vec![request("demo.sleep", json!({"seconds": 0})); size];
        let status = submit_batch(&server, jobs).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{size}");
        assert!(status.message().contains("jobs"), "{}", status.message());
    }
    let listed = server
        .client()
        .await
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty(), "nothing stored");
}

#[tokio::test]
async fn a_full_batch_of_1000_is_stored_and_survives_a_restart() {
    let mut server = TestServer::start().await;
    let mut one = request("demo.sleep", json!({"seconds": 0}));
    one.delay = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    let outcomes = submit_batch(&server, vec![one; 1000]).await.expect("batch");
    let ids: Vec<String> = outcomes.iter().map(|o| submitted(o).id.clone()).collect();
    server = server.restart(|_| {}, |s| s).await;
    for id in [&ids[0], &ids[499], &ids[999]] {
        assert_eq!(state(&server.status(id).await), pb::JobState::Scheduled);
    }
}
