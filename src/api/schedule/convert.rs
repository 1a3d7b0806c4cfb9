//! ScheduleService messages to domain values and back. Every bad field is named with its
//! path in the request (`spec.interval.every`, `template.args.url`, `policies.catchup_window`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::convert::{check_name, submit_spec};
use crate::api::reply::{job_shown, timestamp};
use crate::engine::Engine;
use crate::engine::schedules::{ScheduleDraft, ScheduleView};
use crate::model::job::{JobId, JobSpec};
use crate::model::schedule::{DEFAULT_CATCHUP, OverlapPolicy, Repeat, Run, RunOutcome, SpecInput};
use crate::model::violation::FieldViolation;
use crate::pb;

/// The longest schedule id.
const MAX_ID: usize = 128;
/// The longest note.
const MAX_NOTE: usize = 1024;
/// The longest catch-up window.
const MAX_CATCHUP: Duration = Duration::from_secs(7 * 86_400);

/// A schedule id: required, a name like a queue's.
pub fn schedule_id(id: &str, bad: &mut Vec<FieldViolation>) {
    if id.is_empty() {
        bad.push(FieldViolation::new("id", "must not be empty"));
    } else if let Err(v) = check_name("id", id, MAX_ID) {
        bad.push(v);
    }
}

pub fn note(note: &str, bad: &mut Vec<FieldViolation>) {
    if note.len() > MAX_NOTE {
        bad.push(FieldViolation::new(
            "note",
            format!("at most {MAX_NOTE} bytes"),
        ));
    }
}

fn time(
    value: prost_types::Timestamp,
    field: &str,
    bad: &mut Vec<FieldViolation>,
) -> Option<SystemTime> {
    match SystemTime::try_from(value) {
        Ok(t) if t >= UNIX_EPOCH => Some(t),
        _ => {
            bad.push(FieldViolation::new(
                field,
                "must be a valid time after 1970-01-01",
            ));
            None
        }
    }
}

fn duration(
    value: prost_types::Duration,
    field: &str,
    bad: &mut Vec<FieldViolation>,
) -> Option<Duration> {
    match Duration::try_from(value) {
        Ok(d) => Some(d),
        Err(_) => {
            bad.push(FieldViolation::new(field, "must not be negative"));
            None
        }
    }
}

/// A spec as the model takes it; the model then checks what the fields mean.
fn spec(spec: Option<pb::ScheduleSpec>, bad: &mut Vec<FieldViolation>) -> Option<SpecInput> {
    let Some(spec) = spec else {
        bad.push(FieldViolation::new(
            "spec",
            "required: give spec.cron, spec.interval or spec.at",
        ));
        return None;
    };
    let repeat = match spec.repeat {
        Some(pb::schedule_spec::Repeat::Cron(cron)) => Some(Repeat::Cron(cron)),
        Some(pb::schedule_spec::Repeat::Interval(interval)) => {
            let every = interval
                .every
                .and_then(|d| duration(d, "spec.interval.every", bad));
            let offset = interval
                .offset
                .and_then(|d| duration(d, "spec.interval.offset", bad));
            Some(Repeat::Every {
                every: every.unwrap_or_default(),
                offset: offset.unwrap_or_default(),
            })
        }
        Some(pb::schedule_spec::Repeat::At(at)) => time(at, "spec.at", bad).map(Repeat::At),
        None => {
            bad.push(FieldViolation::new(
                "spec",
                "give spec.cron, spec.interval or spec.at",
            ));
            None
        }
    };
    let start = spec.start.and_then(|t| time(t, "spec.start", bad));
    let end = spec.end.and_then(|t| time(t, "spec.end", bad));
    let jitter = spec.jitter.and_then(|d| duration(d, "spec.jitter", bad));
    Some(SpecInput {
        repeat: repeat?,
        timezone: spec.timezone,
        start,
        end,
        jitter: jitter.unwrap_or_default(),
    })
}

/// The template: a SubmitRequest, checked as Submit checks one, whose namespace, run_at,
/// delay and idempotency key are the schedule's to set.
fn template(
    template: Option<pb::SubmitRequest>,
    namespace: &str,
    max_args_bytes: usize,
    bad: &mut Vec<FieldViolation>,
) -> Option<JobSpec> {
    let Some(mut template) = template else {
        bad.push(FieldViolation::new(
            "template",
            "required: the job each slot submits (kind, args...)",
        ));
        return None;
    };
    let owned = [
        ("template.run_at", template.run_at.is_some()),
        ("template.delay", template.delay.is_some()),
        (
            "template.idempotency_key",
            !template.idempotency_key.is_empty(),
        ),
        (
            "template.namespace",
            !template.namespace.is_empty() && template.namespace != namespace,
        ),
    ];
    for (field, set) in owned {
        if set {
            bad.push(FieldViolation::new(
                field,
                "set by the schedule; leave it empty",
            ));
        }
    }
    template.namespace = namespace.to_string();
    match submit_spec(template, max_args_bytes) {
        Ok(spec) => Some(spec),
        Err(violations) => {
            let prefixed = violations
                .into_iter()
                .map(|v| FieldViolation::new(format!("template.{}", v.field), v.description));
            bad.extend(prefixed);
            None
        }
    }
}

fn overlap(value: i32, bad: &mut Vec<FieldViolation>) -> OverlapPolicy {
    match pb::OverlapPolicy::try_from(value) {
        Ok(pb::OverlapPolicy::Unspecified | pb::OverlapPolicy::Skip) => OverlapPolicy::Skip,
        Ok(pb::OverlapPolicy::BufferOne) => OverlapPolicy::BufferOne,
        Ok(pb::OverlapPolicy::AllowAll) => OverlapPolicy::AllowAll,
        Ok(pb::OverlapPolicy::CancelOther) => OverlapPolicy::CancelOther,
        Err(_) => {
            bad.push(FieldViolation::new(
                "policies.overlap",
                format!("unknown policy {value}"),
            ));
            OverlapPolicy::Skip
        }
    }
}

fn catchup(value: Option<prost_types::Duration>, bad: &mut Vec<FieldViolation>) -> Duration {
    let Some(value) = value else {
        return DEFAULT_CATCHUP;
    };
    match Duration::try_from(value) {
        Ok(d) if d >= Duration::from_secs(1) && d <= MAX_CATCHUP => d,
        _ => {
            bad.push(FieldViolation::new(
                "policies.catchup_window",
                "must be between 1s and 7 days",
            ));
            DEFAULT_CATCHUP
        }
    }
}

/// A draft from the fields Create and Update share.
pub fn draft(
    spec_pb: Option<pb::ScheduleSpec>,
    template_pb: Option<pb::SubmitRequest>,
    policies: Option<pb::SchedulePolicies>,
    namespace: &str,
    max_args_bytes: usize,
    bad: &mut Vec<FieldViolation>,
) -> Option<ScheduleDraft> {
    let spec = spec(spec_pb, bad);
    let template = template(template_pb, namespace, max_args_bytes, bad);
    let policies = policies.unwrap_or_default();
    let overlap = overlap(policies.overlap, bad);
    let catchup_window = catchup(policies.catchup_window, bad);
    Some(ScheduleDraft {
        spec: spec?,
        template: template?,
        overlap,
        catchup_window,
    })
}

/// A conflict token: the version the client saw.
pub fn conflict_token(token: &str, bad: &mut Vec<FieldViolation>) -> Option<u64> {
    if token.is_empty() {
        return None;
    }
    token
        .parse()
        .map_err(|_| {
            bad.push(FieldViolation::new(
                "conflict_token",
                "not a token from this schedule; pass conflict_token as it came",
            ));
        })
        .ok()
}

fn overlap_to_pb(policy: OverlapPolicy) -> pb::OverlapPolicy {
    match policy {
        OverlapPolicy::Skip => pb::OverlapPolicy::Skip,
        OverlapPolicy::BufferOne => pb::OverlapPolicy::BufferOne,
        OverlapPolicy::AllowAll => pb::OverlapPolicy::AllowAll,
        OverlapPolicy::CancelOther => pb::OverlapPolicy::CancelOther,
    }
}

fn outcome_to_pb(outcome: RunOutcome) -> pb::schedule_run::Outcome {
    use pb::schedule_run::Outcome;
    match outcome {
        RunOutcome::Fired => Outcome::Fired,
        RunOutcome::SkippedOverlap => Outcome::SkippedOverlap,
        RunOutcome::Missed => Outcome::Missed,
        RunOutcome::Triggered => Outcome::Triggered,
        RunOutcome::Backfilled => Outcome::Backfilled,
        RunOutcome::AlreadyFired => Outcome::AlreadyFired,
        RunOutcome::SkippedPaused => Outcome::SkippedPaused,
        RunOutcome::Refused => Outcome::Refused,
    }
}

pub fn run_to_pb(run: &Run) -> pb::ScheduleRun {
    pb::ScheduleRun {
        slot: Some(timestamp(run.slot)),
        outcome: outcome_to_pb(run.outcome).into(),
        job_id: run.job.map(|id: JobId| id.to_string()).unwrap_or_default(),
        fired_at: Some(timestamp(run.at)),
        slots: run.slots,
        error: run.error.clone(),
    }
}

fn spec_to_pb(view: &ScheduleView) -> pb::ScheduleSpec {
    use pb::schedule_spec::Repeat as PbRepeat;
    let spec = &view.schedule.spec;
    let repeat = match (&spec.cron, spec.every, spec.at) {
        (Some(cron), _, _) => Some(PbRepeat::Cron(cron.clone())),
        (None, Some(every), _) => Some(PbRepeat::Interval(pb::Interval {
            every: every.try_into().ok(),
            offset: spec.offset.and_then(|o| o.try_into().ok()),
        })),
        (None, None, Some(at)) => Some(PbRepeat::At(timestamp(at))),
        (None, None, None) => None,
    };
    pb::ScheduleSpec {
        repeat,
        timezone: spec.timezone.clone(),
        start: spec.start.map(timestamp),
        end: spec.end.map(timestamp),
        jitter: spec.jitter.and_then(|j| j.try_into().ok()),
    }
}

/// The template as a SubmitRequest (its args as given, secret ones redacted).
fn template_to_pb(spec: &JobSpec, engine: &Engine) -> pb::SubmitRequest {
    // A job of the template shows every field the way GetStatus would.
    let job = crate::model::job::Job::new(
        spec.clone(),
        spec.retry.clone().unwrap_or_default(),
        UNIX_EPOCH,
    );
    let shown = job_shown(engine, &job);
    pb::SubmitRequest {
        kind: shown.kind,
        args: shown.args,
        queue: shown.queue,
        priority: shown.priority,
        labels: shown.labels,
        timeout: shown.timeout,
        retry: spec.retry.as_ref().and(shown.retry),
        retention: spec.retention.and_then(|r| r.try_into().ok()),
        ..Default::default()
    }
}

pub fn schedule_to_pb(view: &ScheduleView, engine: &Engine) -> pb::Schedule {
    let schedule = &view.schedule;
    pb::Schedule {
        id: schedule.id.clone(),
        namespace: schedule.namespace.clone(),
        spec: Some(spec_to_pb(view)),
        template: Some(template_to_pb(&schedule.template, engine)),
        policies: Some(pb::SchedulePolicies {
            overlap: overlap_to_pb(schedule.overlap).into(),
            catchup_window: schedule.catchup_window.try_into().ok(),
        }),
        paused: schedule.paused,
        note: schedule.note.clone(),
        last_slot: schedule.state.last_slot.map(timestamp),
        next_fires: view.next_fires.iter().copied().map(timestamp).collect(),
        runs: schedule.state.runs,
        skipped: schedule.state.skipped,
        missed: schedule.state.missed,
        recent_runs: schedule.state.recent.iter().rev().map(run_to_pb).collect(),
        conflict_token: schedule.state.version.to_string(),
        created_at: Some(timestamp(schedule.created_at)),
    }
}
