//! Driving one attempt of a job: mark it RUNNING, run its handler on the right executor,
//! write what the handler reports at a bounded rate, enforce its timeout, and record how it
//! ended. One driver task per running job; it is the only writer of that job meanwhile.

use std::sync::Mutex;
use std::time::SystemTime;

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Engine;
use super::job::{EventData, Failure, FailureKind, Job, JobState};
use crate::exec::{HandlerError, JobContext, RunOutcome};

/// Why a running job was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    Client,
    Timeout,
    Shutdown,
}

/// The handle others use to stop a running job.
#[derive(Debug)]
pub(crate) struct RunControl {
    token: CancellationToken,
    reason: Mutex<Option<StopReason>>,
}

impl RunControl {
    pub(crate) fn new() -> Self {
        RunControl {
            token: CancellationToken::new(),
            reason: Mutex::new(None),
        }
    }

    /// Asks the handler to stop; the first reason given is the one recorded.
    pub(crate) fn stop(&self, reason: StopReason) {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        self.token.cancel();
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.reason().is_some()
    }

    fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs one attempt of `job` to its end and records the outcome.
pub(crate) async fn drive(engine: &Engine, job: Job, control: &RunControl) {
    let span = tracing::info_span!("job", id = %job.id, kind = %job.spec.kind);
    drive_attempt(engine, job, control).instrument(span).await
}

async fn drive_attempt(engine: &Engine, mut job: Job, control: &RunControl) {
    let now = SystemTime::now();
    job.state = JobState::Running;
    job.attempt += 1;
    job.started_at = Some(now);
    let running = EventData::State {
        state: JobState::Running,
        attempt: job.attempt,
    };
    match engine.shared.store.save(&job, &[running], now).await {
        Ok(seq) => engine.publish(job.id, seq),
        Err(e) => tracing::error!(error = %e, "could not record the job as running"),
    }
    tracing::debug!(attempt = job.attempt, "started");
    let outcome = match engine.shared.registry.get(&job.spec.kind).cloned() {
        Some(kind) => {
            let ctx = JobContext::new(
                job.id,
                job.attempt,
                job.spec.args.clone(),
                control.token.clone(),
            );
            let run = engine.shared.executor.run(kind.handler(), ctx.clone());
            supervise(engine, &job, &ctx, control, run).await
        }
        None => RunOutcome::Returned(Err(HandlerError::failed(
            "job kind is no longer registered",
        ))),
    };
    settle(&mut job, outcome, control.reason());
    tracing::debug!(state = ?job.state, "finished");
    if let Err(e) = engine.finish(&mut job, SystemTime::now()).await {
        tracing::error!(error = %e, "could not record the job's outcome");
    }
}

/// Waits for the handler while writing its reports (at most one write per progress
/// interval, the first one at once) and stopping it when its timeout passes.
async fn supervise(
    engine: &Engine,
    job: &Job,
    ctx: &JobContext,
    control: &RunControl,
    run: impl Future<Output = RunOutcome>,
) -> RunOutcome {
    tokio::pin!(run);
    let interval = engine.shared.progress_interval;
    let deadline = job.spec.timeout.map(|t| Instant::now() + t);
    let mut flush_at: Option<Instant> = None;
    let mut next_allowed = Instant::now();
    let mut timed_out = false;
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            _ = ctx.reported(), if flush_at.is_none() => {
                flush_at = Some(next_allowed.max(Instant::now()));
            }
            _ = sleep_until(flush_at.unwrap_or(next_allowed)), if flush_at.is_some() => {
                flush_at = None;
                next_allowed = Instant::now() + interval;
                flush(engine, job, ctx).await;
            }
            _ = sleep_until(deadline.unwrap_or(next_allowed)), if deadline.is_some() && !timed_out => {
                timed_out = true;
                tracing::info!("timed out; cancelling");
                control.stop(super::StopReason::Timeout);
            }
        }
    };
    flush(engine, job, ctx).await;
    outcome
}

/// Writes what the handler reported since the last flush.
async fn flush(engine: &Engine, job: &Job, ctx: &JobContext) {
    let events = ctx.take_pending();
    if events.is_empty() {
        return;
    }
    match engine
        .shared
        .store
        .append(job.id, &events, SystemTime::now())
        .await
    {
        Ok(seq) => engine.publish(job.id, seq),
        Err(e) => tracing::warn!(error = %e, "could not record progress"),
    }
}

/// Turns how the handler ended, and why it was stopped if it was, into the job's
/// terminal state. A handler that returned a result is SUCCEEDED even if a stop came too
/// late to matter: the work was done.
fn settle(job: &mut Job, outcome: RunOutcome, stop: Option<StopReason>) {
    job.finished_at = Some(SystemTime::now());
    job.cancel_requested = stop == Some(StopReason::Client);
    let failure = match (outcome, stop) {
        (RunOutcome::Returned(Ok(value)), _) => {
            job.state = JobState::Succeeded;
            job.result = Some(value);
            return;
        }
        (RunOutcome::Panicked(message), _) => Failure::new(FailureKind::Panic, message),
        (_, Some(StopReason::Client)) => {
            Failure::new(FailureKind::Cancelled, "cancelled by request")
        }
        (_, Some(StopReason::Timeout)) => {
            let limit = job.spec.timeout.unwrap_or_default();
            Failure::new(FailureKind::Timeout, format!("timed out after {limit:?}"))
        }
        (_, Some(StopReason::Shutdown)) => Failure::new(
            FailureKind::Shutdown,
            "the service shut down while the job was running",
        ),
        (RunOutcome::Returned(Err(HandlerError::Failed(message))), None) => {
            Failure::new(FailureKind::Handler, message)
        }
        (RunOutcome::Returned(Err(HandlerError::Cancelled)) | RunOutcome::Aborted, None) => {
            Failure::new(FailureKind::Handler, "the handler stopped without a result")
        }
    };
    job.state = match failure.kind {
        FailureKind::Cancelled | FailureKind::Shutdown => JobState::Cancelled,
        _ => JobState::Failed,
    };
    job.error = Some(failure);
}
