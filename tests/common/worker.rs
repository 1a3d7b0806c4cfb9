//! A worker written against the generated gRPC client, for tests of the worker protocol:
//! it opens a real session, says hello, and sends whatever the test tells it to.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use spindle::pb::json::{json_to_struct, json_to_value};
use spindle::pb::worker as pbw;
use spindle::pb::worker::server_message::Message as FromServer;
use spindle::pb::worker::worker_message::Message as ToServer;
use spindle::pb::worker::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

pub type WorkerClient = WorkerServiceClient<Channel>;

pub async fn worker_client(addr: SocketAddr) -> WorkerClient {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    WorkerServiceClient::new(channel)
}

/// A hello for `id` running `kinds` (no schemas) in the default namespace.
pub fn hello(id: &str, kinds: &[&str]) -> pbw::Hello {
    pbw::Hello {
        worker_id: id.into(),
        kinds: kinds
            .iter()
            .map(|k| pbw::KindDeclaration {
                name: k.to_string(),
                ..Default::default()
            })
            .collect(),
        sdk: "rust-test".into(),
        ..Default::default()
    }
}

pub fn kind_with_schema(name: &str, schema: Value) -> pbw::KindDeclaration {
    pbw::KindDeclaration {
        name: name.into(),
        description: "a test kind".into(),
        args_schema: Some(json_to_struct(schema.as_object().expect("schema object"))),
        ..Default::default()
    }
}

/// One open session.
pub struct TestWorker {
    tx: mpsc::Sender<pbw::WorkerMessage>,
    rx: Streaming<pbw::ServerMessage>,
    /// Messages of a batch not yet taken.
    pending: std::collections::VecDeque<FromServer>,
    pub welcome: pbw::Welcome,
}

impl TestWorker {
    /// Opens a session with `hello`; the server's refusal, if it refuses.
    pub async fn connect(addr: SocketAddr, hello: pbw::Hello) -> Result<Self, Status> {
        Self::open(addr, vec![ToServer::Hello(hello)]).await
    }

    /// Opens a session whose first messages are `first` (a test may start without hello).
    pub async fn open(addr: SocketAddr, first: Vec<ToServer>) -> Result<Self, Status> {
        Self::open_as(addr, None, first).await
    }

    /// Opens a session with `hello`, calling with a bearer token.
    pub async fn connect_as(
        addr: SocketAddr,
        token: &str,
        hello: pbw::Hello,
    ) -> Result<Self, Status> {
        Self::open_as(addr, Some(token), vec![ToServer::Hello(hello)]).await
    }

    async fn open_as(
        addr: SocketAddr,
        token: Option<&str>,
        first: Vec<ToServer>,
    ) -> Result<Self, Status> {
        let (tx, rx) = mpsc::channel(1024);
        for m in first {
            tx.send(pbw::WorkerMessage { message: Some(m) })
                .await
                .expect("queue");
        }
        let mut client = worker_client(addr).await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("metadata");
            request.metadata_mut().insert("authorization", value);
        }
        let mut rx = client.session(request).await?.into_inner();
        let welcome = match rx.message().await? {
            Some(pbw::ServerMessage {
                message: Some(FromServer::Welcome(w)),
            }) => w,
            other => panic!("expected a welcome, got {other:?}"),
        };
        Ok(TestWorker {
            tx,
            rx,
            pending: Default::default(),
            welcome,
        })
    }

    pub async fn send(&self, m: ToServer) {
        let _ = self.tx.send(pbw::WorkerMessage { message: Some(m) }).await;
    }

    pub async fn credit(&self, slots: u32) {
        self.send(ToServer::Credit(pbw::Credit { slots })).await;
    }

    /// The next message from the server (a batch taken apart), or the status that ended
    /// the session.
    pub async fn next(&mut self) -> Result<Option<FromServer>, Status> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(Some(m));
        }
        let m = tokio::time::timeout(Duration::from_secs(20), self.rx.message())
            .await
            .expect("a message within 20 s")?;
        match m.and_then(|m| m.message) {
            Some(FromServer::Batch(batch)) => {
                self.pending
                    .extend(batch.messages.into_iter().filter_map(|m| m.message));
                Ok(self.pending.pop_front())
            }
            other => Ok(other),
        }
    }

    /// The next message that is not `Settled`.
    pub async fn next_unsettled(&mut self) -> FromServer {
        loop {
            match self.next().await.expect("session open").expect("a message") {
                FromServer::Settled(_) => continue,
                other => return other,
            }
        }
    }

    pub async fn next_assign(&mut self) -> pbw::Assign {
        match self.next_unsettled().await {
            FromServer::Assign(a) => a,
            other => panic!("expected an assignment, got {other:?}"),
        }
    }

    pub async fn complete(&self, lease: &pbw::Lease, result: Value) {
        self.send(ToServer::Complete(pbw::Complete {
            lease: Some(lease.clone()),
            result: Some(json_to_value(&result)),
        }))
        .await;
    }

    pub async fn heartbeat(&self) {
        self.send(ToServer::Heartbeat(pbw::Heartbeat {})).await;
    }
}
