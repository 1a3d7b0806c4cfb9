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
