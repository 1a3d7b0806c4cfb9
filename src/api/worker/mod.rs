//! `spindle.worker.v1.WorkerService`: worker processes, in any language, over one
//! bidirectional session each (plus unary Complete and Fail for a worker between
//! sessions). The session's first message must be a hello; after the welcome, the task
//! here passes each worker message to the engine's [`WorkerSession`] and each engine
//! message to the worker. A malformed or out-of-order message ends the session with a
//! status naming the problem; a write for a lease that is not the job's any more is not
//! an error of the session: the worker is told `LeaseLost` and goes on.

pub mod convert;

use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Error;
use crate::engine::Engine;
use crate::engine::workers::{Report, ToWorker, WorkerSession};
use crate::model::violation::FieldViolation;
use crate::pb::worker as pbw;
use crate::pb::worker::worker_message::Message;
use crate::pb::worker::worker_service_server::WorkerService;

/// Messages to one worker waiting for its connection.
const OUTBOUND: usize = 256;
/// The most messages one batch carries, either way.
const MAX_BATCH: usize = 1024;

/// The WorkerService implementation.
#[derive(Debug, Clone)]
pub struct WorkerApi {
    engine: Engine,
}

impl WorkerApi {
    pub fn new(engine: Engine) -> Self {
        WorkerApi { engine }
    }
}

type Outbound = mpsc::Sender<Result<pbw::ServerMessage, Status>>;

/// The stream a session answers with.
pub type SessionStream = Pin<Box<dyn Stream<Item = Result<pbw::ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pbw::WorkerMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let host = request
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let caller = super::caller::Caller::of(&request);
        let mut inbound = request.into_inner();
        let first = inbound.message().await?;
        let Some(Message::Hello(mut hello)) = first.and_then(|m| m.message) else {
            return Err(Status::invalid_argument(
                "the first message of a session must be hello",
            ));
        };
        // A worker token serves only its namespaces: the hello's is checked like any
        // request's, so the session, its leases and its kinds stay inside them.
        caller.admit(&mut hello.namespace)?;
        let hello = convert::hello(hello, host).map_err(Error::from)?;
        let (session, welcome, outbox) =
            (self.engine.connect_worker(hello).await).map_err(Error::from)?;
        let (tx, rx) = mpsc::channel(OUTBOUND);
        let _ = tx.try_send(Ok(convert::welcome_to_pb(welcome)));
        tokio::spawn(serve(session, inbound, outbox, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn complete(
        &self,
        request: Request<pbw::CompleteRequest>,
    ) -> Result<Response<pbw::CompleteResponse>, Status> {
        let (r, _) = super::admit(request, |r| &mut r.namespace)?;
        let complete = r.complete.ok_or_else(|| missing("complete"))?;
        let lease = convert::lease("complete.lease", complete.lease).map_err(Error::from)?;
        let value = convert::result(complete.result).map_err(Error::from)?;
        self.unary(r.namespace, r.worker_id, lease, Report::Complete(value))
            .await?;
        Ok(Response::new(pbw::CompleteResponse {}))
    }

    async fn fail(
        &self,
        request: Request<pbw::FailRequest>,
    ) -> Result<Response<pbw::FailResponse>, Status> {
        let (r, _) = super::admit(request, |r| &mut r.namespace)?;
        let fail = r.fail.ok_or_else(|| missing("fail"))?;
        let lease = convert::lease("fail.lease", fail.lease).map_err(Error::from)?;
        let report = Report::Fail {
            message: convert::failure_message(fail.message),
            retryable: fail.retryable,
        };
        self.unary(r.namespace, r.worker_id, lease, report).await?;
        Ok(Response::new(pbw::FailResponse {}))
    }
}

impl WorkerApi {
    async fn unary(
        &self,
        namespace: String,
        worker_id: String,
        lease: crate::model::worker::Lease,
        report: Report,
    ) -> Result<(), Error> {
        let namespace = super::convert::namespace(namespace)?;
        if worker_id.is_empty() {
            return Err(FieldViolation::new("worker_id", "must be the worker's id").into());
        }
        let engine = &self.engine;
        Ok(engine
            .report_unary(&namespace, &worker_id, lease, report)
            .await?)
    }
}

fn missing(field: &str) -> Status {
    Status::from(Error::from(FieldViolation::new(field, "must be set")))
}

/// Runs one session until the worker leaves, breaks the protocol, is replaced by a newer
/// session, or the server stops.
async fn serve(
    session: WorkerSession,
    mut inbound: Streaming<pbw::WorkerMessage>,
    mut outbox: mpsc::Receiver<ToWorker>,
    tx: Outbound,
) {
    let end = loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(m)) => {
                    if let Err(status) = handle(&session, m, &tx).await {
                        break Some(status);
                    }
                }
                // The worker closed its side, or its connection broke.
                Ok(None) | Err(_) => break None,
            },
            out = outbox.recv() => match out {
                Some(m) => {
                    if tx.send(Ok(batch_with_queued(m, &mut outbox))).await.is_err() {
                        break None;
                    }
                }
                None => break Some(Status::aborted(
                    "this session was closed: a newer session of the same worker id replaced it, or it did not read its messages",
                )),
            },
            () = session.stopping() => break Some(Status::unavailable("the server is shutting down; reconnect")),
        }
    };
    if let Some(status) = end {
        tracing::debug!(worker = %session.worker_id(), %status, "worker session ended");
        let _ = tx.send(Err(status)).await;
    }
}

/// `first`, with whatever else is queued for the worker right now, as one message.
fn batch_with_queued(first: ToWorker, outbox: &mut mpsc::Receiver<ToWorker>) -> pbw::ServerMessage {
    let mut messages = vec![convert::to_pb(first)];
    while messages.len() < MAX_BATCH {
        match outbox.try_recv() {
            Ok(m) => messages.push(convert::to_pb(m)),
            Err(_) => break,
        }
    }
    if messages.len() == 1 {
        return messages.pop().unwrap_or_default();
    }
    let batch = pbw::ServerBatch { messages };
    pbw::ServerMessage {
        message: Some(pbw::server_message::Message::Batch(batch)),
    }
}

/// Takes one message of an established session: a batch, message by message.
async fn handle(
    session: &WorkerSession,
    m: pbw::WorkerMessage,
    tx: &Outbound,
) -> Result<(), Status> {
    session.touch();
    let Some(Message::Batch(batch)) = m.message else {
        return handle_one(session, m, tx).await;
    };
    if batch.messages.len() > MAX_BATCH {
        return Err(Status::invalid_argument(format!(
            "batch.messages: at most {MAX_BATCH} messages in one batch"
        )));
    }
    for inner in batch.messages {
        if matches!(inner.message, Some(Message::Batch(_))) {
            return Err(Status::invalid_argument(
                "batch.messages: a batch may not hold a batch",
            ));
        }
        handle_one(session, inner, tx).await?;
    }
    Ok(())
}

/// Takes one message that is not a batch.
async fn handle_one(
    session: &WorkerSession,
    m: pbw::WorkerMessage,
    tx: &Outbound,
) -> Result<(), Status> {
    let bad = |v: FieldViolation| Status::from(Error::from(v));
    let (lease, report) = match m.message {
        None => {
            return Err(Status::invalid_argument(
                "message: empty; set one of hello, credit, heartbeat, progress, log, complete, fail, release, drain",
            ));
        }
        Some(Message::Hello(_)) => {
            return Err(Status::failed_precondition(
                "hello: already sent; a session has one hello, its first message",
            ));
        }
        Some(Message::Credit(c)) => {
            if c.slots == 0 {
                return Err(bad(FieldViolation::new(
                    "credit.slots",
                    "must be at least 1",
                )));
            }
            return session
                .credit(c.slots)
                .map_err(|e| Status::from(Error::from(e)));
        }
        Some(Message::Heartbeat(_)) => {
            session.heartbeat().await;
            return Ok(());
        }
        Some(Message::Drain(_)) => {
            session.drain();
            return Ok(());
        }
        Some(Message::Progress(p)) => {
            let progress = convert::progress(&p).map_err(bad)?;
            let lease = convert::lease("progress.lease", p.lease).map_err(bad)?;
            let worker_seq = p.worker_seq;
            (
                lease,
                Report::Progress {
                    worker_seq,
                    progress,
                },
            )
        }
        Some(Message::Log(l)) => {
            let lease = convert::lease("log.lease", l.lease).map_err(bad)?;
            let line = l.message;
            (
                lease,
                Report::Log {
                    worker_seq: l.worker_seq,
                    line,
                },
            )
        }
        Some(Message::Complete(c)) => {
            let lease = convert::lease("complete.lease", c.lease).map_err(bad)?;
            (
                lease,
                Report::Complete(convert::result(c.result).map_err(bad)?),
            )
        }
        Some(Message::Fail(f)) => {
            let lease = convert::lease("fail.lease", f.lease).map_err(bad)?;
            let message = convert::failure_message(f.message);
            (
                lease,
                Report::Fail {
                    message,
                    retryable: f.retryable,
                },
            )
        }
        Some(Message::Release(r)) => (
            convert::lease("release.lease", r.lease).map_err(bad)?,
            Report::Release,
        ),
        Some(Message::Batch(_)) => {
            return Err(Status::invalid_argument(
                "batch.messages: a batch may not hold a batch",
            ));
        }
    };
    if let Err(reason) = session.report(lease, report) {
        let _ = tx.send(Ok(convert::lost_to_pb(lease, reason))).await;
    }
    Ok(())
}
