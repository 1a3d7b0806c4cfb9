//! The real `spindle` binary: it serves with no subcommand, answers gRPC, and exits 0
//! promptly on SIGTERM and SIGINT.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::process::Process;
use rustix::process::Signal;

type Client = spindle::pb::job_service_client::JobServiceClient<tonic::transport::Channel>;

/// A client of the server at `url`, and how many kinds it lists.
async fn list_kinds(url: &str) -> (Client, usize) {
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = Client::new(channel);
    let kinds = client
        .list_kinds(spindle::pb::ListKindsRequest::default())
        .await
        .unwrap();
    (client, kinds.into_inner().kinds.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_by_default_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Process::start(dir.path(), &[]);
    let serving = server
        .log
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap_or_default();
    let data = std::fs::canonicalize(dir.path().join("data")).unwrap();
    let files = std::fs::canonicalize(dir.path().join("files")).unwrap();
    assert!(
        serving.contains(&format!("data={}", data.display()))
            && serving.contains(&format!("files={}", files.display())),
        "the start-up line names the folders: {serving}"
    );
    let (client, kinds) = list_kinds(&server.url()).await;
    assert_eq!(kinds, 7);
    let started = Instant::now();
    server.signal(Signal::TERM);
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    eprintln!(
        "exited {:?} after SIGTERM with a client connected",
        started.elapsed()
    );
    drop(client);
}

#[test]
fn stops_on_sigint_with_serve_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Process::start(dir.path(), &["serve", "--shutdown-grace", "1s"]);
    server.signal(Signal::INT);
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn bad_flags_exit_with_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["serve", "--cpu-threads", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cpu-threads"));
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Process::start(dir.path(), &[]);
    // The lock is on the database itself: deleting files beside it does not lift it
    // (earlier versions locked a `spindle.lock` that could be deleted).
    let _ = std::fs::remove_file(dir.path().join("data").join("spindle.lock"));
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .env("SPINDLE_ADDR", "127.0.0.1:0")
        .env("SPINDLE_DATA_DIR", dir.path().join("data"))
        .env("SPINDLE_FILES_DIR", dir.path().join("files"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another Spindle"), "{stderr}");
    first.kill();
}

#[test]
fn a_corrupt_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("spindle.db");
    let garbage = b"definitely not a database, but precious to someone".repeat(100);
    std::fs::write(&db, &garbage).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .env("SPINDLE_ADDR", "127.0.0.1:0")
        .env("SPINDLE_DATA_DIR", &data)
        .env("SPINDLE_FILES_DIR", dir.path().join("files"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spindle.db") && stderr.contains("refusing"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "never wiped or recreated"
    );
}

/// Whether the server's log says its write-ahead log went missing.
fn warned_of_a_missing_wal(server: &Process) -> bool {
    let log = server.log.lock().unwrap();
    log.iter()
        .any(|line| line.contains("write-ahead log") && line.contains("missing"))
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_notices_a_write_ahead_log_deleted_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::start(dir.path(), &[]);
    let mut client = common::connect(server.addr.parse().unwrap()).await;
    common::submit(
        &mut client,
        "demo.sleep",
        serde_json::json!({"seconds": 60}),
    )
    .await;
    server.kill();
    let wal = dir.path().join("data").join("spindle.db-wal");
    assert!(wal.exists(), "a crash leaves the WAL");
    std::fs::remove_file(&wal).unwrap();

    let mut server = Process::start(dir.path(), &[]);
    assert!(
        warned_of_a_missing_wal(&server),
        "{:?}",
        server.log.lock().unwrap()
    );
    // A clean stop leaves no WAL, and no reason to warn.
    server.signal(Signal::TERM);
    assert!(server.wait_exit(Duration::from_secs(30)).success());
    let server = Process::start(dir.path(), &[]);
    assert!(!warned_of_a_missing_wal(&server));
}

/// Safe by default: a non-loopback address is refused before anything is bound or
/// created, saying why and what to do; `--insecure` allows it. (Only loopback traffic:
/// the insecure server is reached on 127.0.0.1.)
#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_address_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["serve", "--addr", "0.0.0.0:0"])
        .env("SPINDLE_DATA_DIR", dir.path().join("data"))
        .env("SPINDLE_FILES_DIR", dir.path().join("files"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0") && stderr.contains("--insecure"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");

    let server = Process::start(dir.path(), &["serve", "--insecure", "--addr", "0.0.0.0:0"]);
    let port = server.addr.rsplit(':').next().unwrap();
    let (_client, kinds) = list_kinds(&format!("http://127.0.0.1:{port}")).await;
    assert!(kinds > 0);
    let warned = server
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("--insecure"));
    assert!(warned, "the log says it listens with no authentication");
}
