//! The `spindle` CLI as a user runs it: the real binary against a real server, checking
//! output, `--json` shapes, exit codes, and that `watch` resumes across a server restart.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::Process;
use common::{TestServer, request};
use serde_json::{Value, json};
use spindle::pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn spindle(server: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(args)
        .env("SPINDLE_SERVER", server)
        .output()
        .await
        .expect("run spindle");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn url(server: &TestServer) -> String {
    format!("http://{}", server.addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_watch_status_jobs_and_kinds() {
    let server = TestServer::start().await;
    let url = url(&server);
    let submitted = spindle(
        &url,
        &[
            "submit",
            "demo.sleep",
            "--arg",
            "seconds=0.2",
            "--arg",
            "steps=2",
        ],
    )
    .await;
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let id = submitted.stdout.trim().to_string();
    assert!(
        id.parse::<uuid::Uuid>().is_ok(),
        "prints the id alone: {id:?}"
    );

    let watched = spindle(&url, &["watch", &id]).await;
    assert_eq!(watched.code, 0);
    let lines: Vec<&str> = watched.stdout.lines().collect();
    assert!(lines[0].starts_with("[1] queued"), "{lines:?}");
    assert!(lines.last().unwrap().contains("succeeded"), "{lines:?}");

    let status = spindle(&url, &["status", &id, "--json"]).await;
    let job = &json_lines(&status.stdout)[0];
    assert_eq!(
        (job["id"].as_str(), job["state"].as_str()),
        (Some(id.as_str()), Some("succeeded"))
    );
    assert_eq!(job["result"]["steps"], 2.0);
    let text = spindle(&url, &["status", &id]).await.stdout;
    assert!(text.contains("state:     succeeded"), "{text}");

    let json_submit = spindle(
        &url,
        &[
            "--json",
            "submit",
            "demo.cpu",
            "--args",
            r#"{"rounds": 10}"#,
            "--priority",
            "-3",
        ],
    )
    .await;
    let job = &json_lines(&json_submit.stdout)[0];
    assert!(job["id"].is_string());
    assert_eq!(job["priority"], -3);
    // The CPU pool runs at idle priority: on a busy machine the job may take a while.
    let cpu_id = job["id"].as_str().unwrap().to_string();
    let waited = spindle(&url, &["status", "--wait", "60s", &cpu_id])
        .await
        .stdout;
    assert!(waited.contains("state:     succeeded"), "{waited}");

    let table = spindle(&url, &["jobs", "--limit", "5"]).await.stdout;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "KIND", "STATE", "PROGRESS", "ATTEMPT", "AGE"]
    );
    assert_eq!(table.lines().count(), 3);
    let listed = json_lines(
        &spindle(&url, &["jobs", "--kind", "demo.sleep", "--json"])
            .await
            .stdout,
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());

    let kinds = spindle(&url, &["kinds"]).await.stdout;
    assert!(
        kinds.contains("demo.sleep  (io)") && kinds.contains("seconds (number, required)"),
        "{kinds}"
    );
    let kinds = json_lines(&spindle(&url, &["kinds", "--json"]).await.stdout);
    assert_eq!(kinds.len(), 7);

    let stats = spindle(&url, &["stats", "--json"]).await;
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let stats = &json_lines(&stats.stdout)[0];
    assert_eq!(
        (&stats["submitted_total"], &stats["succeeded_total"]),
        (&json!(2), &json!(2)),
        "{stats}"
    );
    assert_eq!(
        (&stats["queued"], &stats["running"]),
        (&json!(0), &json!(0))
    );
    let text = spindle(&url, &["stats"]).await.stdout;
    assert!(
        text.contains("2 submitted, 2 succeeded, 0 failed"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_exit_codes_follow_the_job() {
    let server = TestServer::start().await;
    let url = url(&server);
    let failed = spindle(
        &url,
        &[
            "submit",
            "demo.sleep",
            "--arg",
            "seconds=30",
            "--timeout",
            "100ms",
            "--max-attempts",
            "1",
            "--watch",
        ],
    )
    .await;
    assert_eq!(failed.code, 1, "{}", failed.stdout);
    assert!(
        failed.stdout.contains("failed: timed out"),
        "{}",
        failed.stdout
    );

    let long = spindle(&url, &["submit", "demo.sleep", "--arg", "seconds=60"])
        .await
        .stdout;
    let id = long.trim().to_string();
    let watcher = {
        let (url, id) = (url.clone(), id.clone());
        tokio::spawn(async move { spindle(&url, &["watch", &id, "--json"]).await })
    };
    let cancelled = spindle(&url, &["cancel", &id]).await;
    assert_eq!(cancelled.code, 0, "{}", cancelled.stderr);
    let watched = watcher.await.unwrap();
    assert_eq!(watched.code, 2);
    let events = json_lines(&watched.stdout);
    let last = events.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["finished"]["state"].as_str()),
        (Some("finished"), Some("cancelled"))
    );
    let again = spindle(&url, &["cancel", &id]).await;
    assert_eq!(again.code, 3, "cancelling a finished job is refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_read_like_a_person_wrote_them() {
    let server = TestServer::start().await;
    let url = url(&server);
    let missing = "01939f3a-0000-7000-8000-000000000000";
    let out = spindle(&url, &["status", missing]).await;
    assert_eq!(out.code, 3);
    assert_eq!(
        out.stderr.trim(),
        format!("spindle: no job {missing} on {url}")
    );
    let out = spindle(&url, &["status", missing, "--json"]).await;
    assert_eq!(json_lines(&out.stdout)[0]["error"]["code"], "NotFound");

    let out = spindle(&url, &["submit", "demo.sleep", "--arg", "seconds=soon"]).await;
    assert_eq!(out.code, 3);
    assert_eq!(
        out.stderr.trim(),
        "spindle: invalid args: args.seconds: expected a number, got the string \"soon\"",
        "said once, in plain words"
    );
    let json = spindle(
        &url,
        &["submit", "demo.sleep", "--arg", "seconds=soon", "--json"],
    )
    .await;
    let message = json_lines(&json.stdout)[0]["error"]["message"].clone();
    assert_eq!(
        message.as_str().unwrap().matches("args.seconds").count(),
        1,
        "{message}"
    );

    // host:port, as grpcurl takes it, works as well as a URL.
    let host_port = url.trim_start_matches("http://");
    let out = spindle(host_port, &["jobs"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let out = spindle("http://127.0.0.1:1", &["kinds"]).await;
    assert_eq!(out.code, 69);
    assert_eq!(
        out.stderr.trim(),
        "spindle: cannot reach http://127.0.0.1:1: nothing answers there. Start a server with \
         `spindle serve` (or point --server or SPINDLE_SERVER at one)"
    );

    for bad in [
        &["submit"][..],
        &["jobs", "--limit", "0"],
        &["nope"],
        &["submit", "demo.sleep", "--arg", "novalue"],
        &["jobs", "--state", "done"],
        &["submit", "demo.sleep", "--delay", "-5s"],
    ] {
        let out = spindle(&url, bad).await;
        assert_eq!(out.code, 64, "{bad:?}: {}", out.stderr);
    }
    let out = spindle(&url, &["kinds", "--server", "not a url"]).await;
    assert_eq!(out.code, 64, "{}", out.stderr);
}

/// A port that was free a moment ago, so a restarted server can come back on it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_resumes_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let args = [
        "serve",
        "--addr",
        addr.as_str(),
        "--shutdown-grace",
        "100ms",
    ];
    let mut server = Process::start(dir.path(), &args);
    let url = server.url();
    let id = spindle(
        &url,
        &[
            "submit",
            "demo.sleep",
            "--arg",
            "seconds=2",
            "--arg",
            "steps=20",
        ],
    )
    .await
    .stdout
    .trim()
    .to_string();
    let mut watch = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["watch", &id, "--json", "--server", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    while events.len() < 4 {
        let line = lines.next_line().await.unwrap().expect("an event");
        events.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    server.signal(rustix::process::Signal::TERM);
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    // An outage long enough for several attempts to resume (200, 400, 800 ms apart).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _restarted = Process::start(dir.path(), &args);
    while let Some(line) = lines.next_line().await.unwrap() {
        events.push(serde_json::from_str(&line).unwrap());
    }
    let mut told = String::new();
    let mut stderr = watch.stderr.take().unwrap();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut told)
        .await
        .unwrap();
    assert_eq!(
        told.matches("connection lost").count(),
        1,
        "said once per outage: {told}"
    );
    let status = watch.wait().await.unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "the job succeeded after the restart"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "no duplicate, in order: {seqs:?}"
    );
    let runs = events
        .iter()
        .filter(|e| e["state"]["state"] == "running")
        .count();
    assert_eq!(
        runs, 2,
        "ran, was requeued at shutdown, ran again: {events:?}"
    );
    assert_eq!(events.last().unwrap()["finished"]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_follows_pages_that_end_early_for_their_size() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    for i in 0..20 {
        let payload = format!("{i}{}", "x".repeat(250_000));
        let req = pb::SubmitRequest {
            delay: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..request("demo.noop", serde_json::json!({ "payload": payload }))
        };
        client.submit(req).await.expect("Submit");
    }
    let first = client
        .list_jobs(pb::ListJobsRequest {
            page_size: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.jobs.len() < 20, "the first page is cut by size");
    let out = spindle(&url(&server), &["jobs", "--limit", "20", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(json_lines(&out.stdout).len(), 20);
}

/// `spindle schedule preview` prints the server's own fire times, locally: Berlin's
/// spring-forward gap fires once right after it, and a bad spec names its field.
#[test]
fn schedule_preview_prints_fire_times_and_names_bad_fields() {
    let spindle = env!("CARGO_BIN_EXE_spindle");
    let out = std::process::Command::new(spindle)
        .args([
            "--json",
            "schedule",
            "preview",
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
        ])
        .args(["--after", "2026-03-28T00:00:00Z", "--count", "3"])
        .output()
        .expect("run spindle");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let times: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["at"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        times,
        [
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z"
        ]
    );
    let bad = std::process::Command::new(spindle)
        .args(["schedule", "preview", "--every", "0s"])
        .output()
        .expect("run spindle");
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("spec.every"));
}

/// `spindle schedule` against a real server: create (with args, overlap and catch-up),
/// list, get, pause with a note, resume, trigger, backfill, delete, and a bad cron refused
/// naming its field.
#[tokio::test(flavor = "multi_thread")]
async fn schedule_commands_manage_a_schedule_on_the_server() {
    let server = TestServer::start().await;
    let url = url(&server);
    let bad = spindle(
        &url,
        &[
            "schedule",
            "create",
            "bad",
            "demo.noop",
            "--cron",
            "61 * * * *",
        ],
    )
    .await;
    assert_eq!(bad.code, 3, "{}", bad.stderr);
    assert!(bad.stderr.contains("spec.cron"), "{}", bad.stderr);
    let create = [
        "--json",
        "schedule",
        "create",
        "nightly",
        "demo.noop",
        "--cron",
        "0 3 * * *",
        "--tz",
        "Europe/Berlin",
        "--overlap",
        "buffer-one",
        "--catchup-window",
        "30m",
        "--arg",
        "payload=hello",
    ];
    let created = spindle(&url, &create).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let created = &json_lines(&created.stdout)[0];
    assert_eq!(created["overlap"], "buffer-one");
    assert_eq!(created["catchup_window"], 1800.0);
    assert_eq!(created["args"]["payload"], "hello");
    assert_eq!(created["next_fires"].as_array().unwrap().len(), 10);

    let listed = spindle(&url, &["schedule", "list"]).await;
    assert!(
        listed.stdout.contains("nightly")
            && listed.stdout.contains("cron 0 3 * * * (Europe/Berlin)"),
        "{}",
        listed.stdout
    );
    let paused = spindle(
        &url,
        &[
            "--json",
            "schedule",
            "pause",
            "nightly",
            "--note",
            "migrating",
        ],
    )
    .await;
    let paused = &json_lines(&paused.stdout)[0];
    assert_eq!(
        (paused["paused"].as_bool(), paused["note"].as_str()),
        (Some(true), Some("migrating"))
    );
    let got = spindle(&url, &["schedule", "get", "nightly"]).await;
    assert!(got.stdout.contains("paused (migrating)"), "{}", got.stdout);
    let resumed = spindle(&url, &["--json", "schedule", "resume", "nightly"]).await;
    assert_eq!(json_lines(&resumed.stdout)[0]["paused"], false);

    let triggered = spindle(&url, &["--json", "schedule", "trigger", "nightly"]).await;
    assert_eq!(triggered.code, 0, "{}", triggered.stderr);
    let job = &json_lines(&triggered.stdout)[0];
    assert_eq!(job["schedule_id"], "nightly");
    let backfill = [
        "--json",
        "schedule",
        "backfill",
        "nightly",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-03T12:00:00Z",
    ];
    let runs = json_lines(&spindle(&url, &backfill).await.stdout);
    let slots: Vec<_> = runs
        .iter()
        .map(|r| r["slot"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        slots,
        [
            "2026-01-01T02:00:00Z",
            "2026-01-02T02:00:00Z",
            "2026-01-03T02:00:00Z"
        ]
    );
    assert!(runs.iter().all(|r| r["outcome"] == "backfilled"));

    let deleted = spindle(&url, &["schedule", "delete", "nightly"]).await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    let missing = spindle(&url, &["schedule", "get", "nightly"]).await;
    assert_eq!(missing.code, 3);
    assert!(
        missing.stderr.contains("no schedule \"nightly\""),
        "{}",
        missing.stderr
    );
}
