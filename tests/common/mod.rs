//! The one test helper: boots the real server on 127.0.0.1:0 with
//! `Spindle::start_local` (the boot `spindle bench` uses too; bound before it is spawned,
//! so no sleep is needed before connecting) with the durable store in a temporary
//! directory, and talks to it with the generated tonic client.

#![allow(dead_code)]

pub mod faulty;
pub mod process;
pub mod worker;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use spindle::engine::Engine;
use spindle::pb;
use spindle::pb::job_service_client::JobServiceClient;
use spindle::pb::json::json_to_struct;
use spindle::server::{LocalServer, ServeConfig, ServeError, Spindle, StoreConfig};
use tonic::transport::Channel;

pub type Client = JobServiceClient<Channel>;

/// For tests that need a tool from outside the project (grpcurl, Python packages): true
/// when it is `available`; otherwise the test says why it skips, or fails when CI is set,
/// so CI can never skip it silently.
pub fn outside_tool(available: bool, test: &str, need: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs {need}, and CI is set");
    }
    // Straight to the process's stderr, not through eprintln!, which the test harness
    // captures and shows only for failures: a skip must show where people look.
    static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let count = SKIPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let line = format!(
        "SKIPPED {test}: needs {need} (skipped in this test binary so far: {count}; it \
         reports ok)\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    false
}

/// A running server and a client connected to it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: Client,
    pub engine: Engine,
    pub files: tempfile::TempDir,
    /// The durable store's directory.
    pub data: tempfile::TempDir,
    server: LocalServer,
}

impl TestServer {
    /// A server with default settings and the built-in kinds.
    pub async fn start() -> Self {
        Self::start_with(|_| {}, |s| s).await
    }

    /// A server whose config and kinds the test adjusts.
    pub async fn start_with(
        configure: impl FnOnce(&mut ServeConfig),
        kinds: impl FnOnce(Spindle) -> Spindle,
    ) -> Self {
        let files = tempfile::tempdir().expect("temp dir");
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = ServeConfig {
            store: StoreConfig::Sqlite {
                data_dir: data.path().to_path_buf(),
            },
            files_dir: files.path().to_path_buf(),
            ..ServeConfig::default()
        };
        config.shutdown_grace = Duration::from_secs(5);
        configure(&mut config);
        let server = kinds(Spindle::new(config))
            .start_local()
            .await
            .expect("start");
        let addr = server.addr();
        let client = connect(addr).await;
        TestServer {
            addr,
            client,
            engine: server.engine().clone(),
            files,
            data,
            server,
        }
    }

    /// Stops the server gracefully and starts a new one on the same data and files
    /// directories, as a restart would.
    pub async fn restart(
        self,
        configure: impl FnOnce(&mut ServeConfig),
        kinds: impl FnOnce(Spindle) -> Spindle,
    ) -> Self {
        self.server.stop().await.expect("clean stop");
        let (files, data) = (self.files, self.data);
        let (files_dir, data_dir) = (files.path().to_path_buf(), data.path().to_path_buf());
        let mut next = Self::start_with(
            move |c| {
                c.files_dir = files_dir;
                c.store = StoreConfig::Sqlite { data_dir };
                configure(c);
            },
            kinds,
        )
        .await;
        next.files = files;
        next.data = data;
        next
    }

    /// A fresh client (its own connection).
    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.server.stop().await
    }

    pub async fn submit(&self, kind: &str, args: Value) -> pb::Job {
        submit(&mut self.client.clone(), kind, args).await
    }

    /// Submits a full request (queue, priority, labels, timeout) and returns the job.
    pub async fn submit_request(&self, request: pb::SubmitRequest) -> pb::Job {
        self.client
            .clone()
            .submit(request)
            .await
            .expect("Submit")
            .into_inner()
            .job
            .expect("job")
    }

    pub async fn status(&self, id: &str) -> pb::Job {
        self.client
            .clone()
            .get_status(pb::GetStatusRequest {
                namespace: String::new(),
                id: id.into(),
                wait: None,
            })
            .await
            .expect("GetStatus")
            .into_inner()
    }

    /// Watches the job from the start to its end and returns every event.
    pub async fn watch_all(&self, id: &str) -> Vec<pb::JobEvent> {
        watch_from(&mut self.client.clone(), id, 0).await
    }

    /// Watches the job to its end and returns it.
    pub async fn finish(&self, id: &str) -> pb::Job {
        let events = self.watch_all(id).await;
        assert!(matches!(
            events.last().and_then(|e| e.payload.as_ref()),
            Some(pb::job_event::Payload::Finished(_))
        ));
        self.status(id).await
    }
}

pub async fn connect(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    JobServiceClient::new(channel)
}

pub fn request(kind: &str, args: Value) -> pb::SubmitRequest {
    pb::SubmitRequest {
        kind: kind.into(),
        args: Some(json_to_struct(args.as_object().expect("args object"))),
        ..Default::default()
    }
}

/// A request whose job gets one attempt only (no retry).
pub fn request_once(kind: &str, args: Value) -> pb::SubmitRequest {
    pb::SubmitRequest {
        retry: Some(pb::RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }),
        ..request(kind, args)
    }
}

pub async fn submit(client: &mut Client, kind: &str, args: Value) -> pb::Job {
    client
        .submit(request(kind, args))
        .await
        .expect("Submit")
        .into_inner()
        .job
        .expect("job")
}

/// One namespace's GetStats.
pub async fn stats(client: &mut Client, namespace: &str) -> pb::Stats {
    let request = pb::GetStatsRequest {
        namespace: namespace.into(),
    };
    let answer = client.get_stats(request).await.expect("GetStats");
    answer.into_inner()
}

/// Opens a WatchProgress stream without reading it.
pub async fn open_watch(
    client: &mut Client,
    id: &str,
    after_seq: u64,
) -> tonic::Streaming<pb::JobEvent> {
    client
        .watch_progress(pb::WatchProgressRequest {
            namespace: String::new(),
            id: id.into(),
            after_seq,
        })
        .await
        .expect("WatchProgress")
        .into_inner()
}

/// The states of the state-change events, in order.
pub fn state_changes(events: &[pb::JobEvent]) -> Vec<i32> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(pb::job_event::Payload::StateChanged(s)) => Some(s.state),
            _ => None,
        })
        .collect()
}

pub async fn watch_from(client: &mut Client, id: &str, after_seq: u64) -> Vec<pb::JobEvent> {
    let mut stream = open_watch(client, id, after_seq).await;
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.expect("stream item") {
        events.push(event);
    }
    events
}

pub fn state(job: &pb::Job) -> pb::JobState {
    pb::JobState::try_from(job.state).expect("known state")
}

pub fn is_finished(event: &pb::JobEvent) -> bool {
    matches!(event.payload, Some(pb::job_event::Payload::Finished(_)))
}

/// Polls `check` every 10 ms for up to 10 s; for effects that happen on the server's own
/// schedule (a dropped stream noticed, a job picked up).
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A JSON value from a protobuf Value.
pub fn to_json(value: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
    }
}

/// The job's result as JSON.
pub fn result(job: &pb::Job) -> Value {
    to_json(job.result.as_ref().expect("result"))
}
