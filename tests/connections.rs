//! What a connection may cost: a cap on how many are open, a handshake timeout for those
//! that never speak HTTP/2, MAX_CONCURRENT_STREAMS advertised, and an accept loop that
//! backs off and logs when the process runs out of file descriptors instead of spinning.

mod common;

use std::time::Duration;

use common::process::Process;
use common::*;
use spindle::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the peer closes the connection, or `limit` passes.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(limit, read_to_end).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_never_sends_the_preface_is_closed() {
    let server = TestServer::start_with(
        |c| c.connections.handshake_timeout = Duration::from_millis(300),
        |s| s,
    )
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "still open"
    );
    // A client that speaks HTTP/2 is not cut off, however long it then stays quiet.
    let mut client = server.client().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    client
        .get_stats(pb::GetStatsRequest {
            namespace: String::new(),
        })
        .await
        .expect("GetStats");
}

/// The server's first SETTINGS frame, as (identifier, value) pairs.
async fn server_settings(stream: &mut TcpStream) -> Vec<(u16, u32)> {
    stream.write_all(PREFACE).await.unwrap();
    // An empty SETTINGS frame of our own.
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 4, "the server starts with SETTINGS");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.unwrap();
    payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrent_streams_is_advertised_and_connections_are_capped() {
    let server = TestServer::start_with(
        |c| {
            c.max_streams_per_connection = 64;
            c.connections.max_connections = 3;
        },
        |s| s,
    )
    .await;
    // The test server's own client holds one connection.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let settings = server_settings(&mut stream).await;
        assert!(
            settings.contains(&(3, 64)),
            "MAX_CONCURRENT_STREAMS: {settings:?}"
        );
        held.push(stream);
    }
    // The cap is reached: a fourth client waits in the backlog.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_millis(500));
    let waiting = async {
        let channel = endpoint.connect().await?;
        let mut client = pb::job_service_client::JobServiceClient::new(channel);
        client
            .get_stats(pb::GetStatsRequest {
                namespace: String::new(),
            })
            .await
            .map_err(Into::into)
    };
    let result: Result<_, Box<dyn std::error::Error>> = waiting.await;
    assert!(result.is_err(), "a connection past the cap was served");
    drop(held.pop());
    let channel = endpoint
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10));
    let mut client =
        pb::job_service_client::JobServiceClient::new(channel.connect().await.unwrap());
    client
        .get_stats(pb::GetStatsRequest {
            namespace: String::new(),
        })
        .await
        .expect("served once a slot is free");
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // The binary under a limit of 64 descriptors, with the connection cap set above it.
    let mut command = std::process::Command::new("sh");
    command
        .args([
            "-c",
            "ulimit -n 64 && exec \"$0\" serve --max-connections 1000",
        ])
        .arg(env!("CARGO_BIN_EXE_spindle"))
        .env("SPINDLE_ADDR", "127.0.0.1:0")
        .env("SPINDLE_FILES_DIR", dir.path().join("files"))
        .env("SPINDLE_DATA_DIR", dir.path().join("data"));
    let server = Process::spawn(command);
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(stream) = TcpStream::connect(&server.addr).await {
            held.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.child.id();
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - before;
    let logged = server
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("cannot accept connections"));
    eprintln!("{used} ticks of CPU in 2 s while out of descriptors; logged: {logged}");
    assert!(logged, "nothing was logged");
    // A spinning loop burns ~200 ticks (2 s of a core); backing off, a handful.
    assert!(used < 50, "{used} ticks: the accept loop spins");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_with_no_call_in_flight_is_closed_but_a_quiet_watch_is_not() {
    let server = TestServer::start_with(
        |c| c.connections.idle_timeout = Duration::from_millis(300),
        |s| s,
    )
    .await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    server_settings(&mut idle).await;
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)).await,
        "an idle connection stayed open"
    );

    // A watch on a job due in an hour sends nothing for longer than the idle timeout.
    let mut client = server.client().await;
    let job = client
        .submit(pb::SubmitRequest {
            delay: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..request("demo.sleep", serde_json::json!({"seconds": 0}))
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let mut watch = open_watch(&mut client, &job.id, 0).await;
    let first = watch.message().await.expect("first event");
    assert!(first.is_some());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server
        .client
        .clone()
        .cancel(pb::CancelRequest {
            namespace: String::new(),
            id: job.id.clone(),
        })
        .await
        .expect("Cancel");
    let mut last = None;
    while let Some(event) = watch.message().await.expect("the quiet watch was not cut") {
        last = Some(event);
    }
    assert!(last.as_ref().is_some_and(is_finished), "{last:?}");
}
