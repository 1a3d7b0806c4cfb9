//! The auth file with the real binary: `spindle auth add` makes a token that the server
//! takes on SIGHUP, without dropping an open stream; a removed principal's token stops
//! working; a broken file leaves the old policy in force; refusals are logged with the
//! principal and the method, never a token; and a server with tokens may listen beyond
//! loopback.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::process::Process;
use serde_json::json;
use spindle::pb;
use tonic::{Code, Request};

fn spindle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(args)
        .env_remove("SPINDLE_TOKEN")
        .env_remove("SPINDLE_AUTH")
        .env_remove("SPINDLE_NAMESPACE")
        .output()
        .expect("run spindle")
}

/// `spindle auth add NAME --role ROLE --namespace NS --file FILE`: the token it printed.
fn add(file: &Path, name: &str, role: &str, namespace: &str) -> String {
    let file = file.to_str().unwrap();
    let out = spindle(&[
        "auth",
        "add",
        name,
        "--role",
        role,
        "--namespace",
        namespace,
        "--file",
        file,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("spk_") && token.len() == 68, "{token}");
    token
}

/// Waits until the server's log has a line with `text` (after `from` lines).
fn wait_for_log(server: &Process, from: usize, text: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if server
            .log
            .lock()
            .unwrap()
            .iter()
            .skip(from)
            .any(|l| l.contains(text))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no log line with {text:?}: {:?}",
        server.log.lock().unwrap()
    );
}

fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test]
async fn sighup_reloads_the_auth_file_without_dropping_streams() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spindle.auth");
    let ops = add(&file, "ops", "admin", "*");
    let listing = spindle(&["auth", "list", "--file", file.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout).trim(),
        "ops  admin  *"
    );
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("quota team-z queued=1\n");
    std::fs::write(&file, text).unwrap();
    let server = Process::start(dir.path(), &["serve", "--auth", file.to_str().unwrap()]);
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("auth=\"tokens\""))
    );
    let url = server.url();
    let cli = |token: &str, args: &[&str]| {
        let mut all = vec!["--server", &url, "--token", token];
        all.extend_from_slice(args);
        spindle(&all)
    };
    assert!(cli(&ops, &["stats"]).status.success());
    // A quota refusal is logged with the principal and the method too.
    let in_z = |args: &[&str]| cli(&ops, &[&["--namespace", "team-z"][..], args].concat());
    assert!(
        in_z(&["submit", "demo.sleep", "--arg", "seconds=30"])
            .status
            .success()
    );
    let over = in_z(&["submit", "demo.noop"]);
    assert_eq!(over.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&over.stderr).contains("quota of 1 unfinished jobs"));
    wait_for_log(
        &server,
        0,
        "refused: quota principal=\"ops\" method=\"/spindle.v1.JobService/Submit\" namespace=team-z",
    );
    let no_token = spindle(&["--server", &url, "stats"]);
    assert_eq!(no_token.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("no token"));

    // A watch stream opened with ops' token, on a job that runs 3 s.
    let mut client = common::connect(server.addr.parse().unwrap()).await;
    let mut job = common::request("demo.sleep", json!({"seconds": 3}));
    job.namespace = "team-a".into();
    let job = client
        .submit(with_token(&ops, job))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let watch = pb::WatchProgressRequest {
        id: job.id.clone(),
        namespace: "team-a".into(),
        after_seq: 0,
    };
    let mut events = client
        .watch_progress(with_token(&ops, watch))
        .await
        .unwrap()
        .into_inner();

    // A principal added to the file counts only after SIGHUP.
    let ci = add(&file, "ci", "submitter", "team-a");
    let early = cli(&ci, &["submit", "demo.noop"]);
    assert_eq!(early.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&early.stderr).contains("unknown token"));
    let removed = spindle(&["auth", "remove", "ops", "--file", file.to_str().unwrap()]);
    assert!(removed.status.success());
    let lines = server.log.lock().unwrap().len();
    server.signal(rustix::process::Signal::HUP);
    wait_for_log(&server, lines, "auth file reloaded");
    let submitted = cli(&ci, &["--json", "submit", "demo.noop"]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&submitted.stdout).unwrap();
    assert_eq!(shown["namespace"], "team-a");
    assert_eq!(cli(&ops, &["stats"]).status.code(), Some(3));
    // The stream opened before the reload, by a principal since removed, goes on to the end.
    let mut last = None;
    while let Some(event) = events.message().await.expect("the stream stays open") {
        last = event.payload;
    }
    assert!(
        matches!(last, Some(pb::job_event::Payload::Finished(_))),
        "{last:?}"
    );

    // A role refusal is logged with the principal and the method.
    assert_eq!(cli(&ci, &["schedule", "list"]).status.code(), Some(3));
    wait_for_log(
        &server,
        0,
        "refused: role does not allow the method principal=\"ci\" role=\"submitter\" method=\"/spindle.v1.ScheduleService/ListSchedules\"",
    );

    // A file that does not parse leaves the policy in force.
    std::fs::write(&file, "principal broken role=king\n").unwrap();
    let lines = server.log.lock().unwrap().len();
    server.signal(rustix::process::Signal::HUP);
    wait_for_log(&server, lines, "auth file not reloaded");
    assert!(cli(&ci, &["submit", "demo.noop"]).status.success());
    let status = client
        .get_stats(with_token("spk_nope", pb::GetStatsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    wait_for_log(
        &server,
        0,
        "refused: unauthenticated method=\"/spindle.v1.JobService/GetStats\"",
    );
    let log = server.log.lock().unwrap().join("\n");
    for token in [ops.as_str(), ci.as_str(), "spk_nope"] {
        assert!(!log.contains(token), "a token reached the log");
    }
}

#[test]
fn tokens_let_a_server_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spindle.auth");
    add(&file, "ops", "admin", "*");
    // Only listening: nothing connects to it but over loopback.
    let server = Process::start(
        dir.path(),
        &[
            "serve",
            "--addr",
            "0.0.0.0:0",
            "--auth",
            file.to_str().unwrap(),
        ],
    );
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("tokens travel in plaintext beyond loopback"),
        "{log}"
    );
    // And a bad auth file stops it before it serves, naming the line.
    std::fs::write(&file, "principal x role=admin namespaces=* sha256=12\n").unwrap();
    let out = spindle(&[
        "serve",
        "--store",
        "memory",
        "--addr",
        "127.0.0.1:0",
        "--auth",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot load the auth file")
            && stderr.contains("line 1: sha256 must be 64 hex digits"),
        "{stderr}"
    );
}
