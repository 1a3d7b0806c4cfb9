//! GetStats across a restart: jobs recovered from the store count as submitted, so the
//! totals never show more jobs finished than came in.

mod common;

use common::{TestServer, request, stats};
use serde_json::json;
use spindle::pb;

#[tokio::test]
async fn recovered_jobs_count_as_submitted_after_a_restart() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut later = request("demo.sleep", json!({"seconds": 0}));
        later.delay = Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        });
        let job = client.submit(later).await.expect("Submit").into_inner().job;
        ids.push(job.expect("job").id);
    }
    let server = server.restart(|_| {}, |s| s).await;
    let after = stats(&mut server.client().await, "default").await;
    assert_eq!((after.delayed, after.submitted_total), (3, 3), "{after:?}");
    let mut client = server.client().await;
    for id in ids {
        let cancel = pb::CancelRequest {
            id,
            ..Default::default()
        };
        client.cancel(cancel).await.expect("Cancel");
    }
    let after = stats(&mut server.client().await, "default").await;
    assert_eq!(
        (after.cancelled_total, after.submitted_total),
        (3, 3),
        "{after:?}"
    );
}
