//! Driving one attempt of a job: mark it RUNNING, run its handler on the right executor,
//! write what the handler reports at a bounded rate, enforce its timeout, and record how it
//! ended. One driver task per running job; it is the only writer of that job meanwhile.

use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use serde_json::Value;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

use super::report::Reporter;
use super::{Engine, EngineError};
use crate::exec::{HandlerError, JobContext, RunOutcome, StopSignal};
use crate::model::job::{AttemptFailure, Failure, FailureKind, Job, JobId, JobState};

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
    signal: StopSignal,
    reason: Mutex<Option<StopReason>>,
}

impl RunControl {
    pub(crate) fn new() -> Self {
        RunControl {
            signal: StopSignal::default(),
            reason: Mutex::new(None),
        }
    }

    /// Asks the handler to stop; the first reason given is the one recorded.
    pub(crate) fn stop(&self, reason: StopReason) {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        self.signal.stop();
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.reason().is_some()
    }

    /// What handlers (or a remote attempt's driver) watch to learn of a stop.
    pub(crate) fn signal(&self) -> &StopSignal {
        &self.signal
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs one attempt of `job` to its end and records the outcome. `slot` is the job's pool
/// slot: it is given back as soon as the handler returns, so the pool does not sit idle
/// while the outcome is being committed.
pub(crate) async fn drive(
    engine: &Engine,
    job: Job,
    control: &RunControl,
    slot: OwnedSemaphorePermit,
) {
    let span = tracing::info_span!("job", id = %job.id, kind = %job.spec.kind);
    drive_attempt(engine, job, control, slot)
        .instrument(span)
        .await
}

async fn drive_attempt(
    engine: &Engine,
    mut job: Job,
    control: &RunControl,
    slot: OwnedSemaphorePermit,
) {
    job.state = JobState::Running;
    job.attempt += 1;
    job.started_at = Some(engine.now());
    job.run_at = None;
    tracing::debug!(attempt = job.attempt, "started");
    // The handler starts while RUNNING is being committed, so the pool slot does not sit
    // idle for an fsync; reports are held back until that write is done, which keeps the
    // job's log in order. A crash before the commit leaves the job QUEUED: it runs again,
    // as at-least-once allows.
    let mut running = job.clone();
    let record_running = pin!(async move {
        if let Err(e) = engine.record_state(&mut running).await {
            tracing::error!(error = %e, "could not record the job as running");
        }
    });
    let mut record_running = Fuse::new(record_running);
    let outcome = match engine.shared.registry.get(&job.spec.kind).cloned() {
        Some(kind) => {
            let ctx = JobContext::new(
                job.id,
                job.attempt,
                job.spec.args.clone(),
                control.signal.clone(),
            );
            let run = engine.shared.executor.run(kind.handler(), ctx.clone());
            supervise(engine, &job, &ctx, control, run, &mut record_running).await
        }
        None => RunOutcome::Returned(Err(HandlerError::permanent(
            "job kind is no longer registered",
        ))),
    };
    drop(slot);
    let stop = control.reason();
    let settled = settle(&job, outcome, stop);
    // A short job often ends before RUNNING is committed. Its outcome is written right
    // behind it (the store applies writes in the order they are made, and often commits
    // both at once) instead of one fsync later; the two are then awaited in that order,
    // so watchers see RUNNING first.
    let mut record_outcome = pin!(record_outcome(engine, &job, settled, stop));
    if !record_running.poll_once().await {
        let outcome_done = poll_once(record_outcome.as_mut()).await;
        record_running.wait().await;
        if outcome_done {
            return;
        }
    }
    record_outcome.await;
}

/// The RUNNING write, which may be started, finished or neither. Waiting for it can be
/// given up (a `select!` branch) without losing it.
pub(crate) struct Fuse<'a, T> {
    write: Option<Pin<&'a mut T>>,
}

impl Fuse<'static, std::future::Ready<()>> {
    /// A write already done (a remote attempt records RUNNING before it starts).
    pub(crate) fn finished() -> Self {
        Fuse { write: None }
    }
}

impl<'a, T: Future<Output = ()>> Fuse<'a, T> {
    fn new(write: Pin<&'a mut T>) -> Self {
        Fuse { write: Some(write) }
    }

    fn done(&self) -> bool {
        self.write.is_none()
    }

    /// Polls the write once (starting it); true if it has finished.
    async fn poll_once(&mut self) -> bool {
        let Some(write) = self.write.as_mut() else {
            return true;
        };
        let finished = poll_once(write.as_mut()).await;
        if finished {
            self.write = None;
        }
        finished
    }

    /// Waits for the write to finish.
    async fn wait(&mut self) {
        if let Some(write) = self.write.as_mut() {
            write.as_mut().await;
            self.write = None;
        }
    }
}

/// Polls `future` once from the current task; true if it finished.
async fn poll_once<F: Future + ?Sized>(mut future: Pin<&mut F>) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}

/// Stores the attempt's outcome. It must reach the store, or the job would stay RUNNING
/// until a restart: keep trying while storage is unavailable (a full disk), for as long as
/// the engine runs. Each try starts from the same pre-outcome record.
pub(crate) async fn record_outcome(
    engine: &Engine,
    job: &Job,
    settled: Result<Value, Failure>,
    stop: Option<StopReason>,
) {
    let mut delay = Duration::from_millis(50);
    loop {
        let mut attempt_job = job.clone();
        let concluded = match settled.clone() {
            Ok(value) => {
                attempt_job.state = JobState::Succeeded;
                attempt_job.result = Some(value);
                engine.finish(&mut attempt_job).await
            }
            Err(failure) => conclude_failure(engine, &mut attempt_job, failure, stop).await,
        };
        match concluded {
            Ok(()) => {
                tracing::debug!(state = ?attempt_job.state, "attempt over");
                return;
            }
            Err(e) if engine.shared.stopping.is_cancelled() => {
                tracing::error!(error = %e, "could not record the attempt's outcome before shutdown; recovery will retry the job");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, ?delay, "could not record the attempt's outcome; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// After a failed attempt: back to QUEUED if the service is shutting down or a worker gave
/// the job back (the attempt does not count); back to QUEUED at once after a lease expiry
/// while expiries remain (they have their own limit); RETRY_WAIT if the failure is
/// retryable and attempts remain, else FAILED (or CANCELLED).
async fn conclude_failure(
    engine: &Engine,
    job: &mut Job,
    failure: Failure,
    stop: Option<StopReason>,
) -> Result<(), EngineError> {
    let now = engine.now();
    if matches!(failure.kind, FailureKind::Shutdown | FailureKind::Released) {
        job.attempt -= 1;
        job.state = JobState::Queued;
        engine.record_state(job).await?;
        if failure.kind == FailureKind::Released {
            engine.enqueue(job.clone());
        }
        return Ok(());
    }
    job.cancel_requested = stop == Some(StopReason::Client);
    job.errors.push(AttemptFailure {
        attempt: job.attempt,
        failure: failure.clone(),
        at: now,
    });
    if failure.kind == FailureKind::LeaseExpired {
        return conclude_expiry(engine, job, failure).await;
    }
    // Attempts lost with a worker's lease have their own limit.
    let spent = job.attempt.saturating_sub(job.lease_expiries);
    if failure.kind.is_retryable() && spent < job.retry.max_attempts {
        let delay = job.retry.backoff(job.attempt, spread(job.id, job.attempt));
        job.state = JobState::RetryWait;
        job.run_at = Some(now + delay);
        tracing::info!(attempt = job.attempt, ?delay, error = %failure.message, "attempt failed; will retry");
        engine.record_state(job).await?;
        engine.enqueue(job.clone());
        return Ok(());
    }
    job.state = match failure.kind {
        FailureKind::Cancelled => JobState::Cancelled,
        _ => JobState::Failed,
    };
    job.error = Some(failure);
    engine.finish(job).await
}

/// After a worker's lease expired: requeued at once while the job has lost fewer leases
/// than the limit, else FAILED, saying so.
async fn conclude_expiry(
    engine: &Engine,
    job: &mut Job,
    failure: Failure,
) -> Result<(), EngineError> {
    job.lease_expiries += 1;
    let limit = engine.shared.config.max_lease_expiries;
    tracing::warn!(expiries = job.lease_expiries, limit, error = %failure.message, "lease expired");
    if job.lease_expiries < limit {
        job.state = JobState::Queued;
        engine.record_state(job).await?;
        engine.enqueue(job.clone());
        return Ok(());
    }
    job.state = JobState::Failed;
    let message = format!(
        "lost its worker's lease {} times, the limit (--max-lease-expiries); the last time: {}",
        job.lease_expiries, failure.message
    );
    job.error = Some(Failure::new(FailureKind::LeaseExpired, message));
    engine.finish(job).await
}

/// A number in [0, 1) that differs between jobs and attempts but is stable for each:
/// where in its jitter band a retry delay falls (splitmix64 of the id and attempt).
fn spread(id: JobId, attempt: u32) -> f64 {
    let bits = id.as_u128();
    let mut z = (bits as u64) ^ ((bits >> 64) as u64) ^ u64::from(attempt).rotate_left(32);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Waits for the handler while passing on its reports (to watchers at once, to the store
/// at most once per progress interval, the first write at once; nothing before
/// `first_write` is done) and stopping it when its timeout passes.
pub(crate) async fn supervise<O>(
    engine: &Engine,
    job: &Job,
    ctx: &JobContext,
    control: &RunControl,
    run: impl Future<Output = O>,
    first_write: &mut Fuse<'_, impl Future<Output = ()>>,
) -> O {
    tokio::pin!(run);
    let mut reporter = Reporter::new(engine, job.id, ctx);
    let mut writing: Option<Pin<Box<dyn Future<Output = u64> + Send + '_>>> = None;
    let interval = engine.shared.config.progress_interval;
    let deadline = job.spec.timeout.map(|t| Instant::now() + t);
    let mut flush_at: Option<Instant> = None;
    let mut next_allowed = Instant::now();
    let mut timed_out = false;
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            () = first_write.wait(), if !first_write.done() => {}
            covers = finish_write(&mut writing), if writing.is_some() => {
                writing = None;
                reporter.written(covers);
            }
            _ = ctx.reported(), if first_write.done() && (flush_at.is_none() || reporter.live_open()) => {
                if next_allowed <= Instant::now() && writing.is_none() {
                    // Due already: write now, not at the timer's next millisecond tick.
                    next_allowed = Instant::now() + interval;
                    flush_at = None;
                    writing = Some(Box::pin(reporter.flush()));
                } else {
                    reporter.deliver();
                    flush_at.get_or_insert(next_allowed);
                }
            }
            _ = sleep_until(flush_at.unwrap_or(next_allowed)), if flush_at.is_some() && writing.is_none() => {
                flush_at = None;
                next_allowed = Instant::now() + interval;
                writing = Some(Box::pin(reporter.flush()));
            }
            _ = sleep_until(deadline.unwrap_or(next_allowed)), if deadline.is_some() && !timed_out => {
                timed_out = true;
                tracing::info!("timed out; cancelling");
                control.stop(StopReason::Timeout);
            }
        }
    };
    if let Some(write) = writing.take() {
        write.await;
    }
    if !first_write.done() {
        if reporter.idle() {
            // Nothing to write after RUNNING: the caller writes the outcome behind it.
            return outcome;
        }
        first_write.wait().await;
    }
    reporter.flush().await;
    outcome
}

/// Waits for the store write in flight (never resolves if there is none).
async fn finish_write(writing: &mut Option<Pin<Box<dyn Future<Output = u64> + Send + '_>>>) -> u64 {
    match writing.as_mut() {
        Some(write) => write.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Turns how the handler ended, and why it was stopped if it was, into a result or the
/// attempt's failure. A handler that returned a result is a success even if a stop came
/// too late to matter: the work was done.
pub(crate) fn settle(
    job: &Job,
    outcome: RunOutcome,
    stop: Option<StopReason>,
) -> Result<Value, Failure> {
    let failure = match (outcome, stop) {
        (RunOutcome::Returned(Ok(value)), _) => return Ok(value),
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
        (RunOutcome::Returned(Err(HandlerError::Permanent(message))), None) => {
            Failure::new(FailureKind::Permanent, message)
        }
        (RunOutcome::Returned(Err(HandlerError::Cancelled)) | RunOutcome::Aborted, None) => {
            Failure::new(FailureKind::Handler, "the handler stopped without a result")
        }
    };
    Err(failure)
}
