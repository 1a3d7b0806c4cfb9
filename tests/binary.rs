//! The real `spindle` binary: it serves with no subcommand, answers gRPC, and exits 0
//! promptly on SIGTERM and SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the binary on an ephemeral port and returns it with the address it logged.
fn start(extra: &[&str]) -> (Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(extra)
        .env("SPINDLE_ADDR", "127.0.0.1:0")
        .env("SPINDLE_FILES_DIR", dir.path().join("files"))
        .env("SPINDLE_DATA_DIR", dir.path().join("data"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited early").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr, dir)
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_by_default_and_stops_on_sigterm() {
    let (mut child, addr, _dir) = start(&[]);
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = spindle::pb::job_service_client::JobServiceClient::new(channel);
    let kinds = client
        .list_kinds(spindle::pb::ListKindsRequest {})
        .await
        .unwrap();
    assert_eq!(kinds.into_inner().kinds.len(), 5);
    let started = Instant::now();
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    eprintln!(
        "exited {:?} after SIGTERM with a client connected",
        started.elapsed()
    );
    drop(client);
}

#[test]
fn stops_on_sigint_with_serve_subcommand() {
    let (mut child, _addr, _dir) = start(&["serve", "--shutdown-grace", "1s"]);
    signal(&child, rustix::process::Signal::INT);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn bad_flags_exit_with_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["serve", "--cpu-threads", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cpu-threads"));
}
