//! Driving one remote attempt: the driver of a job a worker runs. It records RUNNING (with
//! the worker and the new epoch) before the worker hears of the job, so a fencing epoch
//! that a worker has seen is always durable; then it passes the worker's progress and log
//! lines through the same reporter local handlers use, pushes Cancel when the job is
//! cancelled or times out and revokes the lease after the grace, and records the outcome.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

use super::assign::Taken;
use super::leases::LeaseEvent;
use super::table::WorkerKey;
use super::{Assignment, LostReason, Report, ToWorker};
use crate::engine::Engine;
use crate::engine::run::{self, Fuse, RunControl, StopReason};
use crate::exec::{HandlerError, JobContext, RunOutcome};
use crate::model::job::{Failure, FailureKind, Job, JobState};
use crate::model::worker::Lease;

/// How an attempt's driver begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// A fresh assignment: record RUNNING, then send it to the worker.
    Assign,
    /// A lease found RUNNING at start-up: wait for its worker to reconnect.
    Restored,
}

/// How a remote attempt ended, as the driver saw it.
enum End {
    /// The worker reported an outcome (or the lease was revoked: `Aborted`).
    Outcome(RunOutcome, Option<oneshot::Sender<()>>),
    /// The worker gave the job back.
    Released(Option<oneshot::Sender<()>>),
    /// The worker's lease ran out.
    Expired(String),
    /// The engine is stopping: the job stays RUNNING under its lease in the store, for
    /// the worker to name after the restart.
    Detached,
}

pub(super) async fn drive(engine: &Engine, taken: Taken, start: Start) {
    let span = tracing::info_span!("job", id = %taken.job.id, kind = %taken.job.spec.kind, worker = %taken.worker.1);
    drive_attempt(engine, taken, start).instrument(span).await
}

async fn drive_attempt(engine: &Engine, taken: Taken, start: Start) {
    let Taken {
        mut job,
        worker,
        control,
        mut events,
    } = taken;
    let lease = Lease {
        job_id: job.id,
        attempt: job.attempt,
        epoch: job.epoch,
    };
    if start == Start::Assign && !begin(engine, &mut job, &worker, lease).await {
        return;
    }
    let ctx = JobContext::new(job.id, job.attempt, Value::Null, control.signal().clone());
    let mut recorded = Fuse::finished();
    let attending = attend(engine, &worker, lease, &mut events, &ctx, &control);
    let end = run::supervise(engine, &job, &ctx, &control, attending, &mut recorded).await;
    let stop = control.reason();
    job.holder = None;
    let (settled, notify) = match end {
        End::Detached => return,
        End::Outcome(outcome, notify) => (run::settle(&job, outcome, stop), Some(notify)),
        // Given back after a Cancel: the stop's own outcome (cancelled, timed out).
        End::Released(notify) if stop.is_some() => {
            (run::settle(&job, RunOutcome::Aborted, stop), Some(notify))
        }
        End::Released(notify) => {
            let why = format!("worker {} gave the job back unfinished", worker.1);
            (Err(Failure::new(FailureKind::Released, why)), Some(notify))
        }
        End::Expired(why) => (Err(Failure::new(FailureKind::LeaseExpired, why)), None),
    };
    run::record_outcome(engine, &job, settled, stop).await;
    match notify {
        Some(Some(unary)) => drop(unary.send(())),
        Some(None) => drop(
            engine
                .lock()
                .workers
                .send(&worker, ToWorker::Settled(lease)),
        ),
        None => {}
    }
}

/// Records the attempt RUNNING under its lease, then sends the assignment. If either
/// fails, the job goes back to its queue, the attempt not spent; false then.
async fn begin(engine: &Engine, job: &mut Job, worker: &WorkerKey, lease: Lease) -> bool {
    job.state = JobState::Running;
    job.started_at = Some(engine.now());
    job.run_at = None;
    let recorded = engine.record_state(job).await;
    let assignment = Assignment {
        lease,
        kind: job.spec.kind.clone(),
        queue: job.spec.queue.clone(),
        args: job.spec.args.clone(),
        deadline: job
            .spec
            .timeout
            .and_then(|t| job.started_at?.checked_add(t)),
    };
    let sent = match &recorded {
        Ok(()) => engine
            .lock()
            .workers
            .send(worker, ToWorker::Assign(assignment)),
        Err(e) => {
            tracing::error!(error = %e, "could not record the job as running; requeueing it");
            false
        }
    };
    if sent {
        tracing::debug!(attempt = job.attempt, epoch = job.epoch, "assigned");
        return true;
    }
    engine.lock().workers.end_lease_of(job.id, job.epoch);
    job.holder = None;
    let why = format!("worker {} went away before it was given the job", worker.1);
    let failure = Failure::new(FailureKind::Released, why);
    run::record_outcome(engine, job, Err(failure), None).await;
    false
}

/// Waits for the worker's end of the attempt, passing its reports on, pushing Cancel once
/// a stop is asked for and revoking the lease after the grace.
async fn attend(
    engine: &Engine,
    worker: &WorkerKey,
    lease: Lease,
    events: &mut mpsc::UnboundedReceiver<LeaseEvent>,
    ctx: &JobContext,
    control: &RunControl,
) -> End {
    let grace = engine.shared.config.cancel_grace;
    // Cancel is sent once (again after a reconnect); the lease is revoked at `revoke_at`
    // unless an outcome comes first.
    let mut cancel_sent = false;
    let mut revoke_at: Option<Instant> = None;
    let mut last_seq = 0;
    let stopping = engine.shared.stopping.clone();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(LeaseEvent::Report(report, stored)) => match report {
                    Report::Progress { worker_seq, progress } => {
                        if fresh(&mut last_seq, worker_seq) {
                            ctx.progress(progress);
                        }
                    }
                    Report::Log { worker_seq, line } => {
                        if fresh(&mut last_seq, worker_seq) {
                            ctx.log(line);
                        }
                    }
                    Report::Complete(value) => return End::Outcome(RunOutcome::Returned(Ok(value)), stored),
                    Report::Fail { message, retryable } => {
                        let error = if retryable {
                            HandlerError::Failed(message)
                        } else {
                            HandlerError::Permanent(message)
                        };
                        return End::Outcome(RunOutcome::Returned(Err(error)), stored);
                    }
                    Report::Release => return End::Released(stored),
                },
                Some(LeaseEvent::Expired(why)) => return End::Expired(why),
                Some(LeaseEvent::Reattached) => {
                    if cancel_sent {
                        send_cancel(engine, worker, lease, control, grace);
                    }
                }
                None => return End::Expired("the lease ended without a word".into()),
            },
            () = ctx.cancelled(), if !cancel_sent => {
                send_cancel(engine, worker, lease, control, grace);
                cancel_sent = true;
                revoke_at = Some(Instant::now() + grace);
            }
            () = sleep_until(revoke_at.unwrap_or_else(Instant::now)), if revoke_at.is_some() => {
                let reason = match control.reason() {
                    Some(StopReason::Timeout) => LostReason::TimedOut,
                    _ => LostReason::Cancelled,
                };
                if engine.lock().workers.revoke(lease, reason) {
                    tracing::info!(?grace, "the worker did not stop within the grace; lease revoked");
                    return End::Outcome(RunOutcome::Aborted, None);
                }
                // An outcome got there first: it is in `events`.
                revoke_at = None;
            }
            () = stopping.cancelled() => return End::Detached,
        }
    }
}

/// Whether a report numbered `seq` is new (0: unnumbered, always taken).
fn fresh(last: &mut u64, seq: u64) -> bool {
    if seq != 0 && seq <= *last {
        return false;
    }
    *last = (*last).max(seq);
    true
}

fn send_cancel(
    engine: &Engine,
    worker: &WorkerKey,
    lease: Lease,
    control: &RunControl,
    grace: Duration,
) {
    let reason = match control.reason() {
        Some(StopReason::Timeout) => "the job timed out",
        Some(StopReason::Shutdown) => "the server is shutting down",
        _ => "cancelled by request",
    };
    let cancel = ToWorker::Cancel {
        lease,
        reason: reason.to_string(),
        grace,
    };
    engine.lock().workers.send(worker, cancel);
}
