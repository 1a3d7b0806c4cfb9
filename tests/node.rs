//! The Node.js example (clients/node/example.js) against the real server: a client in
//! another language with only the generic gRPC packages and proto/ submits, watches,
//! resumes after a lost stream, and decodes Spindle's errors. Needs node and the
//! example's packages (`npm ci` in clients/node): skips, saying so, without them; fails
//! when CI is set.

mod common;

use std::path::Path;

use common::TestServer;
use tokio::process::Command;

#[tokio::test]
async fn the_node_example_submits_resumes_and_decodes_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/node");
    let node = std::process::Command::new("node").arg("--version").output();
    let ready =
        node.is_ok_and(|o| o.status.success()) && dir.join("node_modules/@grpc/grpc-js").is_dir();
    let need = "node and the example's packages (cd clients/node && npm ci)";
    if !common::outside_tool(ready, "Node.js example test", need) {
        return;
    }
    let server = TestServer::start().await;
    let out = Command::new("node")
        .arg("example.js")
        .arg(server.addr.to_string())
        .current_dir(&dir)
        .output()
        .await
        .expect("run node");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed = text
        .lines()
        .find(|l| l.starts_with("resumed after seq"))
        .expect(&text);
    assert!(resumed.ends_with("ordered=true"), "{text}");
    for expected in [
        "finished: JOB_STATE_SUCCEEDED",
        "refused: code 3 args.seconds: expected a number, got the string \"soon\"",
        "batch[0]: accepted JOB_STATE_QUEUED",
        "batch[1]: refused code 3 args.seconds: holds no value",
    ] {
        assert!(text.contains(expected), "lacks {expected:?}:\n{text}");
    }
}

/// examples/node_worker.js, a worker in another language: it declares a kind with a schema,
/// and runs jobs submitted to it, with progress and a log line, to the right result.
#[tokio::test]
async fn the_node_worker_runs_jobs_of_the_kind_it_declares() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join("clients/node/node_modules");
    let node = std::process::Command::new("node").arg("--version").output();
    let ready = node.is_ok_and(|o| o.status.success()) && modules.join("@grpc/grpc-js").is_dir();
    let need = "node and the example's packages (cd clients/node && npm ci)";
    if !common::outside_tool(ready, "Node.js worker test", need) {
        return;
    }
    let server = TestServer::start().await;
    let mut worker = Command::new("node")
        .arg(root.join("examples/node_worker.js"))
        .arg(server.addr.to_string())
        .arg("node-1")
        .env("NODE_PATH", &modules)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    // Connected once its kind is listed with a worker.
    let mut client = server.client.clone();
    common::eventually("the node worker connects", async || {
        let kinds = client
            .list_kinds(spindle::pb::ListKindsRequest::default())
            .await;
        kinds.is_ok_and(|k| {
            k.into_inner()
                .kinds
                .iter()
                .any(|k| k.name == "text.upper" && k.workers == 1)
        })
    })
    .await;
    let refused = client
        .submit(common::request(
            "text.upper",
            serde_json::json!({"text": 7}),
        ))
        .await
        .expect_err("schema");
    assert!(
        refused.message().contains("args.text"),
        "{}",
        refused.message()
    );
    let mut ids = Vec::new();
    for word in ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"] {
        ids.push((
            word,
            server
                .submit("text.upper", serde_json::json!({"text": word}))
                .await
                .id,
        ));
    }
    for (word, id) in ids {
        let done = server.finish(&id).await;
        assert_eq!(done.state(), spindle::pb::JobState::Succeeded);
        let result = spindle::pb::json::value_to_json(done.result.unwrap(), "r").unwrap();
        assert_eq!(
            result,
            serde_json::json!({"upper": word.to_uppercase(), "worker": "node-1"})
        );
        let events = server.watch_all(&id).await;
        assert!(events.iter().any(|e| matches!(&e.payload, Some(spindle::pb::job_event::Payload::Log(l)) if l.message.contains("characters"))));
    }
    worker.kill().await.ok();
}
