//! Calling Spindle from Rust with the generated tonic client (`spindle::pb`): submit a
//! job, follow its event stream to the end, print the result, then show the error a bad
//! argument gets.
//!
//! Run, with a server up: `cargo run --example client` (SPINDLE_SERVER picks another server).

use serde_json::json;
use spindle::pb::job_event::Payload;
use spindle::pb::job_service_client::JobServiceClient;
use spindle::pb::json::{json_to_struct, value_to_json};
use spindle::pb::{SubmitRequest, WatchProgressRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server =
        std::env::var("SPINDLE_SERVER").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let mut client = JobServiceClient::connect(server).await?;

    let args = json!({ "seconds": 0.5, "steps": 5 });
    let submit = SubmitRequest {
        kind: "demo.sleep".into(),
        args: Some(json_to_struct(args.as_object().expect("an object"))),
        ..Default::default()
    };
    let job = client
        .submit(submit)
        .await?
        .into_inner()
        .job
        .expect("a job");
    println!("submitted {}", job.id);

    let watch = WatchProgressRequest {
        namespace: String::new(),
        id: job.id.clone(),
        after_seq: 0,
    };
    let mut events = client.watch_progress(watch).await?.into_inner();
    while let Some(event) = events.message().await? {
        match event.payload {
            Some(Payload::Progress(p)) => {
                println!("#{} {:>3.0}% {}", event.seq, p.fraction * 100.0, p.message)
            }
            Some(Payload::Finished(end)) => {
                let state = end.state();
                let result = end.result.and_then(|v| value_to_json(v, "result").ok());
                println!("#{} finished: {state:?} {}", event.seq, json!(result));
            }
            other => println!("#{} {other:?}", event.seq),
        }
    }

    // Bad input: INVALID_ARGUMENT, with a google.rpc.BadRequest naming the field.
    let bad = SubmitRequest {
        kind: "demo.sleep".into(),
        args: Some(json_to_struct(
            json!({ "seconds": "soon" }).as_object().expect("an object"),
        )),
        ..Default::default()
    };
    let status = client.submit(bad).await.expect_err("refused");
    println!("refused: {:?}: {}", status.code(), status.message());
    Ok(())
}
