//! The worker protocol against the real server, through real gRPC sessions: remote kinds,
//! credits, fencing, lease expiry, cancellation, timeouts, release, progress, restarts.

mod common;

use std::time::Duration;

use common::worker::{TestWorker, hello, kind_with_schema, worker_client};
use common::{TestServer, request, request_once};
use serde_json::json;
use spindle::pb;
use spindle::pb::worker as pbw;
use spindle::pb::worker::server_message::Message as FromServer;
use spindle::pb::worker::worker_message::Message as ToServer;
use tonic::Code;

fn short_leases(ttl_ms: u64) -> impl FnOnce(&mut spindle::server::ServeConfig) {
    move |c| {
        c.engine.lease_ttl = Duration::from_millis(ttl_ms);
        c.engine.cancel_grace = Duration::from_millis(300);
    }
}

async fn submit_err(server: &TestServer, req: pb::SubmitRequest) -> tonic::Status {
    server
        .client
        .clone()
        .submit(req)
        .await
        .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_kind_is_known_once_declared_and_runs_on_its_worker() {
    let server = TestServer::start().await;
    let refused = submit_err(&server, request("images.resize", json!({}))).await;
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    let mut worker = TestWorker::connect(server.addr, hello("w1", &["images.resize"]))
        .await
        .expect("hello accepted");
    assert!(worker.welcome.lease_ttl.is_some());
    let job = server
        .submit("images.resize", json!({"paths": ["a.png"]}))
        .await;
    worker.credit(1).await;
    let assign = worker.next_assign().await;
    let lease = assign.lease.clone().unwrap();
    assert_eq!((lease.job_id.as_str(), lease.attempt), (job.id.as_str(), 1));
    assert_eq!(assign.kind, "images.resize");

    let running = server.status(&job.id).await;
    assert_eq!(running.state(), pb::JobState::Running);
    assert_eq!(running.worker_id, "w1");
    let mut client = server.client.clone();
    let workers = client.list_workers(pb::ListWorkersRequest::default()).await;
    let workers = workers.unwrap().into_inner().workers;
    assert_eq!(workers.len(), 1);
    assert_eq!((workers[0].id.as_str(), workers[0].in_flight), ("w1", 1));
    let kinds = client.list_kinds(pb::ListKindsRequest::default()).await;
    let kinds = kinds.unwrap().into_inner().kinds;
    let remote = kinds
        .iter()
        .find(|k| k.name == "images.resize")
        .expect("listed");
    assert_eq!((remote.pool(), remote.workers), (pb::Pool::Remote, 1));

    worker.complete(&lease, json!({"resized": 1})).await;
    assert!(matches!(
        worker.next().await.unwrap(),
        Some(FromServer::Settled(_))
    ));
    let done = server.finish(&job.id).await;
    assert_eq!(done.state(), pb::JobState::Succeeded);
    assert_eq!(done.worker_id, "");
    let result = spindle::pb::json::value_to_json(done.result.unwrap(), "r").unwrap();
    assert_eq!(result, json!({"resized": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_checks_args_against_the_schema_a_worker_declared() {
    let server = TestServer::start().await;
    let mut h = hello("w1", &[]);
    h.kinds = vec![kind_with_schema(
        "images.resize",
        json!({"type": "object", "required": ["paths"],
               "properties": {"paths": {"type": "array", "items": {"type": "string"}}}}),
    )];
    h.kinds[0].max_attempts = 5;
    let worker = TestWorker::connect(server.addr, h).await.unwrap();
    let accepted = server
        .submit("images.resize", json!({"paths": ["a.png"]}))
        .await;
    assert_eq!(
        accepted.retry.unwrap().max_attempts,
        5,
        "the kind's default"
    );
    let refused = submit_err(
        &server,
        request("images.resize", json!({"paths": ["a", 3]})),
    )
    .await;
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("args.paths[1]"),
        "{}",
        refused.message()
    );
    // Known with no worker connected, across a restart too.
    drop(worker);
    let server = server.restart(|_| {}, |s| s).await;
    let job = server
        .submit("images.resize", json!({"paths": ["a.png"]}))
        .await;
    assert_eq!(job.state(), pb::JobState::Queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_out_of_order_worker_messages_are_refused_by_name() {
    let server = TestServer::start().await;
    let no_hello = TestWorker::open(server.addr, vec![ToServer::Heartbeat(pbw::Heartbeat {})]);
    let status = no_hello.await.err().expect("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("hello"), "{}", status.message());

    let builtin = TestWorker::connect(server.addr, hello("w1", &["demo.sleep"])).await;
    let status = builtin.err().expect("refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("hello.kinds[0].name"),
        "{}",
        status.message()
    );

    let nameless = TestWorker::connect(server.addr, hello("", &["k"])).await;
    let status = nameless.err().expect("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("hello.worker_id"),
        "{}",
        status.message()
    );

    let mut worker = TestWorker::connect(server.addr, hello("w2", &["k"]))
        .await
        .unwrap();
    worker.credit(0).await;
    let status = worker.next().await.expect_err("session ended");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("credit.slots"),
        "{}",
        status.message()
    );

    let mut worker = TestWorker::connect(server.addr, hello("w3", &["k"]))
        .await
        .unwrap();
    worker.send(ToServer::Hello(hello("w3", &["k"]))).await;
    let status = worker.next().await.expect_err("session ended");
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_is_refused_and_never_overwrites_the_job() {
    let server = TestServer::start_with(short_leases(600), |s| s).await;
    let mut first = TestWorker::connect(server.addr, hello("w1", &["k"]))
        .await
        .unwrap();
    let job = server.submit("k", json!({})).await;
    first.credit(1).await;
    let old = first.next_assign().await.lease.unwrap();
    // w1 goes quiet past the TTL: its lease expires and the job goes to w2.
    match first.next_unsettled().await {
        FromServer::LeaseLost(lost) => assert_eq!(lost.lease.unwrap(), old),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    let mut second = TestWorker::connect(server.addr, hello("w2", &["k"]))
        .await
        .unwrap();
    second.credit(1).await;
    let new = second.next_assign().await.lease.unwrap();
    assert_eq!((new.attempt, new.epoch > old.epoch), (2, true));

    // The old holder's late result: refused on the stream and by the unary call.
    first.heartbeat().await;
    first.complete(&old, json!({"from": "w1"})).await;
    assert!(matches!(
        first.next_unsettled().await,
        FromServer::LeaseLost(_)
    ));
    let mut unary = worker_client(server.addr).await;
    let late = pbw::CompleteRequest {
        namespace: String::new(),
        worker_id: "w1".into(),
        complete: Some(pbw::Complete {
            lease: Some(old.clone()),
            result: None,
        }),
    };
    let refused = unary.complete(late).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    second.complete(&new, json!({"from": "w2"})).await;
    let done = server.finish(&job.id).await;
    assert_eq!(done.state(), pb::JobState::Succeeded);
    let result = spindle::pb::json::value_to_json(done.result.unwrap(), "r").unwrap();
    assert_eq!(result, json!({"from": "w2"}));
    assert_eq!(done.lease_expiries, 1);
    let lost = &done.attempt_errors[0].error.as_ref().unwrap();
    assert_eq!(lost.kind(), pb::ErrorKind::LeaseExpired);
    assert!(lost.message.contains("w1"), "{}", lost.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_loses_every_lease_fails_after_the_limit() {
    let server = TestServer::start_with(
        |c| {
            short_leases(400)(c);
            c.engine.max_lease_expiries = 2;
        },
        |s| s,
    )
    .await;
    let mut job = None;
    for round in 0..2 {
        let mut worker = TestWorker::connect(server.addr, hello(&format!("w{round}"), &["k"]))
            .await
            .unwrap();
        if job.is_none() {
            job = Some(server.submit_request(request_once("k", json!({}))).await);
        }
        worker.credit(1).await;
        worker.next_assign().await;
        assert!(matches!(
            worker.next_unsettled().await,
            FromServer::LeaseLost(_)
        ));
    }
    let done = server.finish(&job.unwrap().id).await;
    assert_eq!(done.state(), pb::JobState::Failed);
    let error = done.error.unwrap();
    assert_eq!(error.kind(), pb::ErrorKind::LeaseExpired);
    assert!(error.message.contains("2 times"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_timeout_reach_the_worker_and_then_revoke_the_lease() {
    let server = TestServer::start_with(short_leases(5_000), |s| s).await;
    let mut worker = TestWorker::connect(server.addr, hello("w1", &["k"]))
        .await
        .unwrap();
    worker.credit(2).await;
    let job = server.submit("k", json!({})).await;
    let lease = worker.next_assign().await.lease.unwrap();
    let mut client = server.client.clone();
    let cancel = pb::CancelRequest {
        id: job.id.clone(),
        ..Default::default()
    };
    let canceller = tokio::spawn(async move { client.cancel(cancel).await });
    match worker.next_unsettled().await {
        FromServer::Cancel(c) => assert_eq!(c.lease.unwrap(), lease),
        other => panic!("expected Cancel, got {other:?}"),
    }
    // The worker ignores it: after the grace, the lease is revoked.
    match worker.next_unsettled().await {
        FromServer::LeaseLost(l) => assert_eq!(l.reason(), pbw::lease_lost::Reason::Cancelled),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    canceller.await.unwrap().unwrap();
    assert_eq!(
        server.finish(&job.id).await.state(),
        pb::JobState::Cancelled
    );

    let mut req = request_once("k", json!({}));
    req.timeout = Some(Duration::from_millis(200).try_into().unwrap());
    let job = server.submit_request(req).await;
    let lease = worker.next_assign().await.lease.unwrap();
    assert!(matches!(
        worker.next_unsettled().await,
        FromServer::Cancel(_)
    ));
    // This time the worker stops within the grace and releases the job.
    worker
        .send(ToServer::Release(pbw::Release {
            lease: Some(lease),
            reason: 2,
        }))
        .await;
    let done = server.finish(&job.id).await;
    assert_eq!(done.state(), pb::JobState::Failed);
    assert_eq!(done.error.unwrap().kind(), pb::ErrorKind::Timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_job_runs_again_without_spending_an_attempt() {
    let server = TestServer::start().await;
    let mut first = TestWorker::connect(server.addr, hello("w1", &["k"]))
        .await
        .unwrap();
    let job = server.submit_request(request_once("k", json!({}))).await;
    first.credit(1).await;
    let lease = first.next_assign().await.lease.unwrap();
    first.send(ToServer::Drain(pbw::Drain {})).await;
    first
        .send(ToServer::Release(pbw::Release {
            lease: Some(lease),
            reason: 1,
        }))
        .await;
    let mut second = TestWorker::connect(server.addr, hello("w2", &["k"]))
        .await
        .unwrap();
    second.credit(1).await;
    let again = second.next_assign().await.lease.unwrap();
    assert_eq!(again.attempt, 1, "the released attempt is not spent");
    second.complete(&again, json!(1)).await;
    assert_eq!(
        server.finish(&job.id).await.state(),
        pb::JobState::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_progress_streams_in_order_and_resumes_without_duplicates() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(server.addr, hello("w1", &["k"]))
        .await
        .unwrap();
    worker.credit(1).await;
    let job = server.submit("k", json!({})).await;
    let lease = worker.next_assign().await.lease.unwrap();
    for seq in 1..=5u64 {
        let log = pbw::Log {
            lease: Some(lease.clone()),
            worker_seq: seq,
            message: format!("line {seq}"),
        };
        worker.send(ToServer::Log(log.clone())).await;
        // A resend after a reconnect: dropped.
        worker.send(ToServer::Log(log)).await;
    }
    let progress = pbw::Progress {
        lease: Some(lease.clone()),
        worker_seq: 6,
        done: 3,
        total: 4,
        ..Default::default()
    };
    worker.send(ToServer::Progress(progress)).await;
    worker.complete(&lease, json!("ok")).await;
    let events = server.watch_all(&job.id).await;
    let lines: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(pb::job_event::Payload::Log(l)) => Some(l.message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines,
        (1..=5).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Resuming after the third event gives exactly the rest.
    let resumed = common::watch_from(&mut server.client.clone(), &job.id, seqs[2]).await;
    assert_eq!(resumed.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs[3..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_its_lease_across_a_server_restart() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(server.addr, hello("w1", &["k"]))
        .await
        .unwrap();
    worker.credit(1).await;
    let job = server.submit("k", json!({})).await;
    let lease = worker.next_assign().await.lease.unwrap();
    let server = server.restart(|_| {}, |s| s).await;
    let status = worker
        .next()
        .await
        .expect_err("the session ends with the server");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(server.status(&job.id).await.state(), pb::JobState::Running);

    let mut again = hello("w1", &["k"]);
    again.held_leases = vec![lease.clone()];
    let worker = TestWorker::connect(server.addr, again).await.unwrap();
    assert_eq!(worker.welcome.reclaimed, std::slice::from_ref(&lease));
    worker.complete(&lease, json!("kept")).await;
    let done = server.finish(&job.id).await;
    assert_eq!((done.state(), done.attempt), (pb::JobState::Succeeded, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_asked_to_drain_is_told_and_given_no_more_jobs() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(server.addr, hello("w1", &["k"]))
        .await
        .unwrap();
    let mut client = server.client.clone();
    let drain = pb::DrainWorkerRequest {
        id: "w1".into(),
        grace: Some(Duration::from_secs(5).try_into().unwrap()),
        ..Default::default()
    };
    let status = client.drain_worker(drain).await.unwrap().into_inner();
    assert!(status.draining);
    match worker.next_unsettled().await {
        FromServer::Drain(d) => assert_eq!(d.grace.unwrap().seconds, 5),
        other => panic!("expected Drain, got {other:?}"),
    }
    worker.credit(1).await;
    let job = server.submit("k", json!({})).await;
    let mut other = TestWorker::connect(server.addr, hello("w2", &["k"]))
        .await
        .unwrap();
    other.credit(1).await;
    let lease = other.next_assign().await.lease.unwrap();
    assert_eq!(lease.job_id, job.id, "the draining worker got nothing");
    let unknown = pb::DrainWorkerRequest {
        id: "nobody".into(),
        ..Default::default()
    };
    let refused = client.drain_worker(unknown).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_only_jobs_of_its_namespace() {
    let server = TestServer::start().await;
    let mut theirs = hello("w-b", &["k"]);
    theirs.namespace = "team-b".into();
    let other_team = TestWorker::connect(server.addr, theirs).await.unwrap();
    other_team.credit(5).await;
    // "k" is declared in team-b only: the default namespace does not know it.
    let refused = submit_err(&server, request("k", json!({}))).await;
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut mine = TestWorker::connect(server.addr, hello("w-a", &["k"]))
        .await
        .unwrap();
    let job = server.submit("k", json!({})).await;
    mine.credit(1).await;
    let lease = mine.next_assign().await.lease.unwrap();
    assert_eq!(lease.job_id, job.id);
    // team-b's worker, credited first, was given nothing of the default namespace.
    let mut client = server.client.clone();
    let listed = client
        .list_workers(pb::ListWorkersRequest {
            namespace: "team-b".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(
        (listed.len(), listed[0].in_flight, listed[0].free_slots),
        (1, 0, 5)
    );
    // A lease of another namespace's job is not its to claim.
    let mut claim = hello("w-b2", &["k"]);
    claim.namespace = "team-b".into();
    claim.held_leases = vec![lease.clone()];
    let claimer = TestWorker::connect(server.addr, claim).await.unwrap();
    assert_eq!(claimer.welcome.lost, std::slice::from_ref(&lease));
    drop(other_team);
}
