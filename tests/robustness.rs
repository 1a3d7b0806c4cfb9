//! One client's bad input, or one failed write, must not hurt anyone else: each test here
//! reproduces a fault found by probing the service from outside.

mod common;

use common::faulty::FaultyStore;
use common::*;
use serde_json::json;
use spindle::pb;
use tonic::Code;
use tonic_types::StatusExt;

fn violation_fields(status: &tonic::Status) -> Vec<String> {
    let bad = status.get_details_bad_request();
    let violations = bad.map(|b| b.field_violations).unwrap_or_default();
    violations.into_iter().map(|v| v.field).collect()
}

fn before_1970() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: -1,
        nanos: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_at_the_store_cannot_keep_is_refused_by_name_and_fails_no_one_else() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = server.client().await;
        clients.push(tokio::spawn(async move {
            let mut failed = 0;
            for _ in 0..100 {
                let req = request("demo.noop", json!({}));
                failed += usize::from(client.submit(req).await.is_err());
            }
            failed
        }));
    }
    let mut client = server.client().await;
    let far_ahead = prost_types::Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    };
    for run_at in [before_1970(), far_ahead].into_iter().cycle().take(40) {
        let req = pb::SubmitRequest {
            run_at: Some(run_at),
            ..request("demo.noop", json!({}))
        };
        let refused = client.submit(req).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert_eq!(violation_fields(&refused), ["run_at"]);
    }
    for task in clients {
        assert_eq!(
            task.await.unwrap(),
            0,
            "valid Submits failed beside a bad one"
        );
    }

    let mut bad = request("demo.noop", json!({}));
    bad.run_at = Some(before_1970());
    let batch = pb::SubmitBatchRequest {
        namespace: String::new(),
        jobs: vec![
            request("demo.noop", json!({})),
            bad,
            request("demo.noop", json!({})),
        ],
    };
    let results = client
        .submit_batch(batch)
        .await
        .expect("SubmitBatch")
        .into_inner();
    let outcomes: Vec<bool> = results
        .results
        .iter()
        .map(|r| {
            matches!(
                r.outcome,
                Some(pb::submit_batch_result::Outcome::Submitted(_))
            )
        })
        .collect();
    assert_eq!(outcomes, [true, false, true]);
}

/// A server on a store whose writes can be made to fail, with queue `one` running one job
/// at a time.
async fn server_on_a_faulty_store() -> (TestServer, std::sync::Arc<FaultyStore>, tempfile::TempDir)
{
    let data = tempfile::tempdir().unwrap();
    let store = FaultyStore::open(data.path());
    let shared = store.clone();
    let server = TestServer::start_with(
        |c| {
            c.engine.queue_limits.insert("one".into(), 1);
        },
        move |s| s.with_store(shared),
    )
    .await;
    (server, store, data)
}

fn in_queue_one(seconds: f64) -> pb::SubmitRequest {
    pb::SubmitRequest {
        queue: "one".into(),
        ..request("demo.sleep", json!({ "seconds": seconds }))
    }
}

async fn cancel(client: &mut Client, id: &str) -> Result<pb::Job, tonic::Status> {
    let req = pb::CancelRequest {
        namespace: String::new(),
        id: id.into(),
    };
    client.cancel(req).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_that_cannot_be_stored_changes_nothing_and_a_retry_tells_the_truth() {
    let (server, store, _data) = server_on_a_faulty_store().await;
    let mut client = server.client.clone();
    let blocker = server.submit_request(in_queue_one(60.0)).await;
    eventually("the blocker runs", async || {
        state(&server.status(&blocker.id).await) == pb::JobState::Running
    })
    .await;
    let waiting = server.submit_request(in_queue_one(0.0)).await;
    let scheduled = server
        .submit_request(pb::SubmitRequest {
            delay: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..request("demo.sleep", json!({"seconds": 0}))
        })
        .await;

    store.fail_writes(true);
    for _ in 0..2 {
        for (job, before) in [
            (&waiting, pb::JobState::Queued),
            (&scheduled, pb::JobState::Scheduled),
        ] {
            let refused = cancel(&mut client, &job.id).await.expect_err("not stored");
            assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
            assert_eq!(state(&server.status(&job.id).await), before);
        }
    }
    store.fail_writes(false);

    // The waiting job is back in line: it runs as soon as the blocker is gone.
    cancel(&mut client, &blocker.id)
        .await
        .expect("cancel the blocker");
    assert_eq!(
        state(&server.finish(&waiting.id).await),
        pb::JobState::Succeeded
    );
    // The scheduled one is still due later, and can be cancelled now.
    let cancelled = cancel(&mut client, &scheduled.id).await.expect("cancel");
    assert_eq!(state(&cancelled), pb::JobState::Cancelled);
}

/// A server on the SQLite store in `data`, which outlives it.
async fn server_on(data: &std::path::Path) -> TestServer {
    let data = data.to_path_buf();
    TestServer::start_with(
        move |c| c.store = spindle::server::StoreConfig::Sqlite { data_dir: data },
        |s| s,
    )
    .await
}

/// Alters a job's stored record behind the server's back (the file stays a sound
/// database: only the JSON in one row is broken).
fn corrupt_record(data: &std::path::Path, id: &str) {
    let conn = rusqlite::Connection::open(data.join("spindle.db")).expect("open");
    let id: uuid::Uuid = id.parse().expect("uuid");
    let changed = conn
        .execute(
            "UPDATE jobs SET record = '{\"spec\": 42' WHERE id = ?1",
            [id.as_bytes().to_vec()],
        )
        .expect("update");
    assert_eq!(changed, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_corrupt_record_affects_only_its_own_job() {
    let data = tempfile::tempdir().unwrap();
    let server = server_on(data.path()).await;
    let bad = server.submit("demo.noop", json!({})).await;
    let good = server.submit("demo.noop", json!({})).await;
    server.finish(&bad.id).await;
    server.finish(&good.id).await;
    server.stop().await.expect("stop");
    corrupt_record(data.path(), &bad.id);

    let server = server_on(data.path()).await;
    let mut client = server.client.clone();
    let read = client
        .get_status(pb::GetStatusRequest {
            namespace: String::new(),
            id: bad.id.clone(),
            wait: None,
        })
        .await
        .expect_err("an unreadable record");
    assert_eq!(read.code(), Code::DataLoss, "{read:?}");
    assert!(read.message().contains(&bad.id), "{read:?}");
    assert_eq!(
        state(&server.status(&good.id).await),
        pb::JobState::Succeeded
    );
    let listed = client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("ListJobs answers for everyone")
        .into_inner();
    let ids: Vec<&str> = listed.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [good.id.as_str()]);
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_unfinished_job_stops_start_up_and_is_named() {
    let data = tempfile::tempdir().unwrap();
    let server = server_on(data.path()).await;
    let waiting = server
        .submit_request(pb::SubmitRequest {
            delay: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..request("demo.noop", json!({}))
        })
        .await;
    server.stop().await.expect("stop");
    corrupt_record(data.path(), &waiting.id);

    let config = spindle::server::ServeConfig {
        store: spindle::server::StoreConfig::Sqlite {
            data_dir: data.path().to_path_buf(),
        },
        files_dir: data.path().join("files"),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Err(refused) = spindle::server::Spindle::new(config)
        .prepare(listener)
        .await
    else {
        panic!("start-up went on past an unreadable unfinished job");
    };
    assert!(refused.to_string().contains(&waiting.id), "{refused}");
}

fn scheduled_noop(payload: serde_json::Value) -> pb::SubmitRequest {
    pb::SubmitRequest {
        delay: Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        ..request("demo.noop", json!({ "payload": payload }))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn args_over_the_limit_are_refused_by_name() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let refused = client
        .submit(scheduled_noop(json!("x".repeat(300 << 10))))
        .await
        .expect_err("300 KiB of args");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(violation_fields(&refused), ["args"]);
    assert!(
        refused.message().contains("--max-args-bytes"),
        "{refused:?}"
    );
    client
        .submit(scheduled_noop(json!("x".repeat(200 << 10))))
        .await
        .expect("200 KiB is under the default limit");

    let small = TestServer::start_with(|c| c.max_args_bytes = 1024, |s| s).await;
    let refused = small
        .client
        .clone()
        .submit(scheduled_noop(json!("x".repeat(2000))))
        .await
        .expect_err("over the configured limit");
    assert_eq!(violation_fields(&refused), ["args"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_pages_are_bounded_by_bytes_and_the_basic_view_leaves_args_out() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let mut submitted = Vec::new();
    for i in 0..30 {
        let payload = json!(format!("{i}{}", "x".repeat(200 << 10)));
        let job = client
            .submit(scheduled_noop(payload))
            .await
            .expect("Submit");
        submitted.push(job.into_inner().job.unwrap().id);
    }
    let (mut seen, mut pages, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("ListJobs")
            .into_inner();
        pages.push(page.jobs.len());
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    submitted.reverse();
    assert_eq!(seen, submitted, "every job once, newest first");
    assert!(pages.len() > 1 && pages[0] < 30, "pages: {pages:?}");

    let basic = client
        .list_jobs(pb::ListJobsRequest {
            view: pb::JobView::Basic as i32,
            ..Default::default()
        })
        .await
        .expect("ListJobs")
        .into_inner();
    assert_eq!(basic.jobs.len(), 30);
    assert!(basic.next_page_token.is_empty());
    assert!(
        basic
            .jobs
            .iter()
            .all(|j| j.args.is_none() && j.kind == "demo.noop")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_quote_at_most_a_short_prefix_of_bad_input() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let mut labels = request("demo.noop", json!({}));
    labels.labels = (0..100_000)
        .map(|i| (format!("bad key {i}"), "v".into()))
        .collect();
    let long_kind = request(&"k".repeat(10_000), json!({}));
    let long_key = request("demo.noop", json!({ "k".repeat(100_000): 1 }));
    for req in [labels, long_kind, long_key] {
        let refused = client.submit(req).await.expect_err("refused");
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{}",
            refused.message().len()
        );
        assert!(
            refused.message().len() <= 1200,
            "message of {} bytes",
            refused.message().len()
        );
        assert!(
            refused.details().len() <= 16 << 10,
            "details of {} bytes",
            refused.details().len()
        );
    }
}
