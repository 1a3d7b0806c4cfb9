//! Domain -> protobuf: the engine's jobs, events, stats and kinds as the API's messages.

use std::time::SystemTime;

use serde_json::Value as Json;

use crate::engine::Stats;
use crate::jobs::registry::{ArgField, JobKind};
use crate::model::job::{
    AttemptFailure, Event, EventData, Failure, FailureKind, Job, JobId, JobState, Pool, Progress,
    RetryPolicy,
};
use crate::model::worker::{RemoteKind, WorkerStatus};
use crate::pb;
use crate::pb::json::{json_to_struct, json_to_value};

pub(crate) fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    t.into()
}

pub fn state_to_pb(state: JobState) -> pb::JobState {
    match state {
        JobState::Scheduled => pb::JobState::Scheduled,
        JobState::RetryWait => pb::JobState::RetryWait,
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

fn progress_to_pb(p: &Progress) -> pb::Progress {
    pb::Progress {
        fraction: p.fraction,
        done: p.done,
        total: p.total,
        message: p.message.clone(),
    }
}

fn error_to_pb(f: &Failure) -> pb::JobError {
    let kind = match f.kind {
        FailureKind::Handler => pb::ErrorKind::Handler,
        FailureKind::Panic => pb::ErrorKind::Panic,
        FailureKind::Timeout => pb::ErrorKind::Timeout,
        FailureKind::Cancelled => pb::ErrorKind::Cancelled,
        FailureKind::Shutdown => pb::ErrorKind::Shutdown,
        FailureKind::Interrupted => pb::ErrorKind::Interrupted,
        FailureKind::Permanent => pb::ErrorKind::Permanent,
        FailureKind::LeaseExpired => pb::ErrorKind::LeaseExpired,
        FailureKind::Released => pb::ErrorKind::Released,
    };
    pb::JobError {
        kind: kind.into(),
        message: f.message.clone(),
    }
}

/// A job as a client may see it: [`job_to_pb`] with the kind's secret args redacted.
pub fn job_shown(engine: &crate::engine::Engine, job: &Job) -> pb::Job {
    let mut shown = job_to_pb(job);
    let spec = &job.spec;
    if let Some(args) = engine.shown_args(&spec.namespace, &spec.kind, &spec.args) {
        shown.args = args.as_object().map(json_to_struct);
    }
    shown
}

/// A job as a message, its args as stored: only [`job_shown`] goes to clients.
pub fn job_to_pb(job: &Job) -> pb::Job {
    let args = match &job.spec.args {
        Json::Object(map) => Some(json_to_struct(map)),
        _ => None,
    };
    pb::Job {
        id: job.id.to_string(),
        kind: job.spec.kind.clone(),
        args,
        queue: job.spec.queue.clone(),
        priority: job.spec.priority,
        labels: job.spec.labels.clone().into_iter().collect(),
        timeout: job.spec.timeout.and_then(|t| t.try_into().ok()),
        state: state_to_pb(job.state).into(),
        attempt: job.attempt,
        progress: job.progress.as_ref().map(progress_to_pb),
        result: job.result.as_ref().map(json_to_value),
        error: job.error.as_ref().map(error_to_pb),
        created_at: Some(timestamp(job.created_at)),
        started_at: job.started_at.map(timestamp),
        finished_at: job.finished_at.map(timestamp),
        cancel_requested: job.cancel_requested,
        last_seq: job.last_seq,
        run_at: job.run_at.map(timestamp),
        retry: Some(retry_to_pb(&job.retry)),
        attempt_errors: job.errors.iter().map(attempt_error_to_pb).collect(),
        idempotency_key: job.spec.idempotency_key.clone().unwrap_or_default(),
        expires_at: job.expires_at.map(timestamp),
        namespace: job.spec.namespace.clone(),
        worker_id: job.holder.clone().unwrap_or_default(),
        lease_expiries: job.lease_expiries,
        schedule_id: (job.schedule.as_ref()).map_or_else(String::new, |s| s.id.clone()),
        schedule_slot: job.schedule.as_ref().map(|s| timestamp(s.slot)),
    }
}

fn retry_to_pb(r: &RetryPolicy) -> pb::RetryPolicy {
    pb::RetryPolicy {
        max_attempts: r.max_attempts,
        initial_backoff: r.initial_backoff.try_into().ok(),
        max_backoff: r.max_backoff.try_into().ok(),
        multiplier: r.multiplier,
        jitter: r.jitter,
    }
}

fn attempt_error_to_pb(e: &AttemptFailure) -> pb::AttemptError {
    pb::AttemptError {
        attempt: e.attempt,
        error: Some(error_to_pb(&e.failure)),
        at: Some(timestamp(e.at)),
    }
}

pub fn event_to_pb(id: JobId, event: &Event) -> pb::JobEvent {
    use pb::job_event::Payload;
    let payload = match &event.data {
        EventData::State {
            state,
            attempt,
            run_at,
            error,
        } => Payload::StateChanged(pb::StateChanged {
            state: state_to_pb(*state).into(),
            attempt: *attempt,
            run_at: run_at.map(timestamp),
            error: error.as_ref().map(error_to_pb),
        }),
        EventData::Progress(p) => Payload::Progress(progress_to_pb(p)),
        EventData::Log(line) => Payload::Log(pb::LogLine {
            message: line.clone(),
        }),
        EventData::Finished {
            state,
            result,
            error,
            attempt,
        } => Payload::Finished(pb::JobFinished {
            state: state_to_pb(*state).into(),
            result: result.as_ref().map(json_to_value),
            error: error.as_ref().map(error_to_pb),
            attempt: *attempt,
        }),
    };
    pb::JobEvent {
        job_id: id.to_string(),
        seq: event.seq,
        at: Some(timestamp(event.at)),
        payload: Some(payload),
    }
}

pub fn stats_to_pb(stats: &Stats) -> pb::Stats {
    pb::Stats {
        queued: stats.queued,
        delayed: stats.delayed,
        running: stats.running,
        submitted_total: stats.submitted_total,
        succeeded_total: stats.succeeded_total,
        failed_total: stats.failed_total,
        cancelled_total: stats.cancelled_total,
        watchers: stats.watchers,
        started_at: Some(timestamp(stats.started_at)),
        schedules: stats.schedules,
        schedule_fires: stats.fire_lag.fires,
        fire_lag_p50: stats.fire_lag.p50.try_into().ok(),
        fire_lag_p99: stats.fire_lag.p99.try_into().ok(),
        fire_lag_max: stats.fire_lag.max.try_into().ok(),
    }
}

pub fn kind_to_pb(kind: &JobKind) -> pb::JobKind {
    let pool = match kind.pool() {
        Pool::Io => pb::Pool::Io,
        Pool::Cpu => pb::Pool::Cpu,
        Pool::Remote => pb::Pool::Remote,
    };
    let args_schema = match kind.schema() {
        Json::Object(map) => Some(json_to_struct(map)),
        _ => None,
    };
    pb::JobKind {
        name: kind.name().to_string(),
        pool: pool.into(),
        description: kind.description().to_string(),
        args_schema,
        fields: fields_to_pb(kind.fields()),
        workers: 0,
    }
}

fn fields_to_pb(fields: Vec<ArgField>) -> Vec<pb::ArgField> {
    fields
        .into_iter()
        .map(|f| pb::ArgField {
            name: f.name,
            r#type: f.json_type,
            required: f.required,
            description: f.description,
        })
        .collect()
}

/// A remote kind, with the connected workers that run it.
pub fn remote_kind_to_pb(kind: &RemoteKind, workers: usize) -> pb::JobKind {
    let args_schema = match &kind.args_schema {
        Some(Json::Object(map)) => Some(json_to_struct(map)),
        _ => None,
    };
    let fields = match &kind.args_schema {
        Some(schema) => crate::jobs::registry::schema_fields(schema),
        None => Vec::new(),
    };
    pb::JobKind {
        name: kind.name.clone(),
        pool: pb::Pool::Remote.into(),
        description: kind.description.clone(),
        args_schema,
        fields: fields_to_pb(fields),
        workers: u32::try_from(workers).unwrap_or(u32::MAX),
    }
}

pub fn worker_to_pb(w: &WorkerStatus) -> pb::Worker {
    pb::Worker {
        id: w.worker_id.clone(),
        namespace: w.namespace.clone(),
        host: w.host.clone(),
        kinds: w.kinds.clone(),
        queues: w.queues.clone(),
        build: w.build.clone(),
        sdk: w.sdk.clone(),
        free_slots: w.free_slots,
        in_flight: w.in_flight,
        connected: w.connected,
        draining: w.draining,
        connected_at: Some(timestamp(w.connected_at)),
        last_heartbeat: Some(timestamp(w.last_heartbeat)),
    }
}
