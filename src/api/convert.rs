//! Conversions between protobuf messages and the engine's domain types, and between
//! `google.protobuf.Struct`/`Value` and JSON. Requests become validated domain values here,
//! with every bad field named; the engine never sees a raw request.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use prost_types::value::Kind;
use serde_json::{Map, Number, Value as Json};

use crate::engine::Stats;
use crate::engine::job::{
    AttemptFailure, Event, EventData, Failure, FailureKind, Job, JobId, JobSpec, JobState, Pool,
    Progress, RetryPolicy,
};
use crate::jobs::registry::{FieldViolation, JobKind};
use crate::pb;
use crate::store::ListQuery;

const MAX_QUEUE_NAME: usize = 64;
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 256;
/// The longest job timeout accepted: a week.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest delay or retention accepted: a year.
const MAX_HORIZON: Duration = Duration::from_secs(366 * 24 * 3600);
const MAX_IDEMPOTENCY_KEY: usize = 256;
const MAX_ATTEMPTS: u32 = 100;
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;
/// Integers up to 2^53 are exact in a protobuf `double`; show them as JSON integers.
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

fn violation(field: &str, description: impl Into<String>) -> FieldViolation {
    FieldViolation {
        field: field.to_string(),
        description: description.into(),
    }
}

/// Checks a SubmitRequest field by field and builds the spec.
pub fn submit_spec(req: pb::SubmitRequest) -> Result<JobSpec, Vec<FieldViolation>> {
    let mut bad = Vec::new();
    if req.kind.trim().is_empty() {
        bad.push(violation("kind", "must name a job kind (see ListKinds)"));
    }
    let args = match req.args.map(|s| struct_to_json(s, "args")).transpose() {
        Ok(args) => Json::Object(args.unwrap_or_default()),
        Err(v) => {
            bad.push(v);
            Json::Null
        }
    };
    let queue = if req.queue.is_empty() {
        crate::engine::job::DEFAULT_QUEUE.to_string()
    } else {
        req.queue
    };
    if let Err(v) = check_name("queue", &queue, MAX_QUEUE_NAME) {
        bad.push(v);
    }
    check_labels(&req.labels, &mut bad);
    let timeout = match req.timeout.map(Duration::try_from) {
        None => None,
        Some(Ok(t)) if !t.is_zero() && t <= MAX_TIMEOUT => Some(t),
        Some(_) => {
            bad.push(violation(
                "timeout",
                "must be positive and at most 7 days (604800s)",
            ));
            None
        }
    };
    let delay = duration_field(req.delay, "delay", MAX_HORIZON, &mut bad);
    let run_at = req.run_at.and_then(|t| match SystemTime::try_from(t) {
        Ok(t) => Some(t),
        Err(_) => {
            bad.push(violation("run_at", "not a valid timestamp"));
            None
        }
    });
    if run_at.is_some() && delay.is_some() {
        bad.push(violation("delay", "give run_at or delay, not both"));
    }
    let retry = req.retry.and_then(|r| retry_policy(r, &mut bad));
    let retention = duration_field(req.retention, "retention", MAX_HORIZON, &mut bad);
    if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
        bad.push(violation("idempotency_key", "at most 256 bytes"));
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    Ok(JobSpec {
        kind: req.kind,
        args,
        queue,
        priority: req.priority,
        labels: req.labels.into_iter().collect(),
        timeout,
        run_at,
        delay,
        retry,
        idempotency_key: (!req.idempotency_key.is_empty()).then_some(req.idempotency_key),
        retention,
    })
}

/// A non-negative duration no longer than `max`, or a violation.
fn duration_field(
    value: Option<prost_types::Duration>,
    field: &str,
    max: Duration,
    bad: &mut Vec<FieldViolation>,
) -> Option<Duration> {
    match Duration::try_from(value?) {
        Ok(d) if d <= max => Some(d),
        _ => {
            let days = max.as_secs() / 86_400;
            bad.push(violation(
                field,
                format!("must be between 0 and {days} days"),
            ));
            None
        }
    }
}

/// A retry policy from a request; unset fields take [`RetryPolicy::default`]'s values.
fn retry_policy(r: pb::RetryPolicy, bad: &mut Vec<FieldViolation>) -> Option<RetryPolicy> {
    let defaults = RetryPolicy::default();
    let before = bad.len();
    let max_attempts = match r.max_attempts {
        0 => defaults.max_attempts,
        n if n <= MAX_ATTEMPTS => n,
        _ => {
            bad.push(violation("retry.max_attempts", "must be at most 100"));
            0
        }
    };
    let day = Duration::from_secs(86_400);
    let initial_backoff = duration_field(r.initial_backoff, "retry.initial_backoff", day, bad)
        .unwrap_or(defaults.initial_backoff);
    let max_backoff = duration_field(r.max_backoff, "retry.max_backoff", day, bad)
        .unwrap_or(defaults.max_backoff.max(initial_backoff));
    if max_backoff < initial_backoff {
        bad.push(violation(
            "retry.max_backoff",
            "must not be below initial_backoff",
        ));
    }
    let multiplier = if r.multiplier == 0.0 {
        defaults.multiplier
    } else {
        r.multiplier
    };
    if !(1.0..=100.0).contains(&multiplier) {
        bad.push(violation("retry.multiplier", "must be between 1 and 100"));
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        bad.push(violation("retry.jitter", "must be between 0 and 1"));
    }
    (bad.len() == before).then_some(RetryPolicy {
        max_attempts,
        initial_backoff,
        max_backoff,
        multiplier,
        jitter: r.jitter,
    })
}

fn check_name(field: &str, name: &str, max: usize) -> Result<(), FieldViolation> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > max || !valid_chars {
        return Err(violation(
            field,
            format!("must be 1 to {max} letters, digits, '.', '_' or '-'"),
        ));
    }
    Ok(())
}

fn check_labels(labels: &HashMap<String, String>, bad: &mut Vec<FieldViolation>) {
    if labels.len() > MAX_LABELS {
        bad.push(violation("labels", format!("at most {MAX_LABELS} labels")));
    }
    for (key, value) in labels {
        if let Err(v) = check_name(&format!("labels.{key}"), key, MAX_LABEL_KEY) {
            bad.push(v);
        } else if value.len() > MAX_LABEL_VALUE {
            bad.push(violation(
                &format!("labels.{key}"),
                format!("value longer than {MAX_LABEL_VALUE} bytes"),
            ));
        }
    }
}

/// A GetStatus long-poll wait: 0 to 5 minutes.
pub fn wait(value: prost_types::Duration) -> Result<Duration, FieldViolation> {
    match Duration::try_from(value) {
        Ok(d) if d <= crate::engine::MAX_WAIT => Ok(d),
        _ => Err(violation("wait", "must be between 0 and 300 seconds")),
    }
}

/// Parses a job id, naming `field` if it is malformed.
pub fn job_id(field: &str, text: &str) -> Result<JobId, FieldViolation> {
    if text.is_empty() {
        return Err(violation(field, "must not be empty"));
    }
    text.parse().map_err(|e| violation(field, format!("{e}")))
}

/// Checks a ListJobsRequest and builds the query.
pub fn list_query(req: pb::ListJobsRequest) -> Result<ListQuery, Vec<FieldViolation>> {
    let mut bad = Vec::new();
    let state = match pb::JobState::try_from(req.state) {
        Ok(pb::JobState::Unspecified) => None,
        Ok(state) => Some(state_from_pb(state)),
        Err(_) => {
            bad.push(violation("state", format!("unknown state {}", req.state)));
            None
        }
    };
    let before = match req.page_token.as_str() {
        "" => None,
        token => job_id("page_token", token).map_err(|v| bad.push(v)).ok(),
    };
    let limit = match req.page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n if n <= MAX_PAGE_SIZE => n,
        _ => {
            bad.push(violation(
                "page_size",
                format!("must be at most {MAX_PAGE_SIZE}"),
            ));
            0
        }
    };
    if !bad.is_empty() {
        return Err(bad);
    }
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(ListQuery {
        state,
        kind: non_empty(req.kind),
        queue: non_empty(req.queue),
        labels: req.labels.into_iter().collect(),
        before,
        limit,
    })
}

// --- JSON <-> google.protobuf.Struct ---

/// A Struct as a JSON object; numbers that are not finite are refused (JSON has none).
pub fn struct_to_json(
    s: prost_types::Struct,
    field: &str,
) -> Result<Map<String, Json>, FieldViolation> {
    s.fields
        .into_iter()
        .map(|(k, v)| {
            let path = format!("{field}.{k}");
            Ok((k, value_to_json(v, &path)?))
        })
        .collect()
}

pub fn value_to_json(v: prost_types::Value, field: &str) -> Result<Json, FieldViolation> {
    Ok(match v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::NumberValue(n)) => {
            number_to_json(n).ok_or_else(|| violation(field, "numbers must be finite"))?
        }
        Some(Kind::StructValue(s)) => Json::Object(struct_to_json(s, field)?),
        Some(Kind::ListValue(list)) => Json::Array(
            list.values
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn number_to_json(n: f64) -> Option<Json> {
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT_INT {
        // Exact: the cast cannot lose anything, and typed args see an integer.
        return Some(Json::Number(Number::from(n as i64)));
    }
    Number::from_f64(n).map(Json::Number)
}

/// JSON as a protobuf Value.
pub fn json_to_value(json: &Json) -> prost_types::Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf Struct.
pub fn json_to_struct(map: &Map<String, Json>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect::<BTreeMap<_, _>>(),
    }
}

// --- domain -> protobuf ---

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
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

fn state_from_pb(state: pb::JobState) -> JobState {
    match state {
        pb::JobState::Unspecified | pb::JobState::Queued => JobState::Queued,
        pb::JobState::Scheduled => JobState::Scheduled,
        pb::JobState::RetryWait => JobState::RetryWait,
        pb::JobState::Running => JobState::Running,
        pb::JobState::Succeeded => JobState::Succeeded,
        pb::JobState::Failed => JobState::Failed,
        pb::JobState::Cancelled => JobState::Cancelled,
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
    };
    pb::JobError {
        kind: kind.into(),
        message: f.message.clone(),
    }
}

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
    }
}

pub fn kind_to_pb(kind: &JobKind) -> pb::JobKind {
    let pool = match kind.pool() {
        Pool::Io => pb::Pool::Io,
        Pool::Cpu => pb::Pool::Cpu,
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
        fields: kind
            .fields()
            .into_iter()
            .map(|f| pb::ArgField {
                name: f.name,
                r#type: f.json_type,
                required: f.required,
                description: f.description,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_struct() {
        let original =
            json!({"n": 3, "x": 1.5, "s": "a", "b": true, "z": null, "l": [1, {"k": "v"}]});
        let map = original.as_object().unwrap();
        let back = struct_to_json(json_to_struct(map), "args").unwrap();
        assert_eq!(Json::Object(back), original);
    }

    #[test]
    fn non_finite_numbers_are_refused_with_their_path() {
        let mut s = prost_types::Struct::default();
        s.fields.insert(
            "n".into(),
            prost_types::Value {
                kind: Some(Kind::NumberValue(f64::NAN)),
            },
        );
        assert_eq!(struct_to_json(s, "args").unwrap_err().field, "args.n");
    }

    #[test]
    fn bad_submit_fields_are_all_named() {
        let req = pb::SubmitRequest {
            kind: "".into(),
            queue: "bad queue!".into(),
            labels: [("ok".to_string(), "x".repeat(300))].into(),
            timeout: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..Default::default()
        };
        let fields: Vec<String> = submit_spec(req)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["kind", "queue", "labels.ok", "timeout"]);
    }
}
