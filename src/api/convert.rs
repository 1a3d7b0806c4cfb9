//! Requests -> domain: protobuf requests become validated domain values here, with every
//! bad field named; the engine never sees a raw request. The other directions live in
//! [`super::json`] (Struct <-> JSON) and [`super::reply`] (domain -> protobuf), re-exported
//! here so callers have one place to look.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;

use crate::model::job::{JobId, JobSpec, JobState, MAX_NAMESPACE_NAME, RetryPolicy};
use crate::model::violation::FieldViolation;
pub(crate) use crate::model::violation::check_name;
use crate::pb;
use crate::store::ListQuery;

pub use super::reply::{event_to_pb, job_shown, job_to_pb, kind_to_pb, state_to_pb, stats_to_pb};
pub use crate::pb::json::{json_to_struct, json_to_value, struct_to_json, value_to_json};

const MAX_QUEUE_NAME: usize = 64;
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 256;
/// The longest job timeout accepted: a week.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest delay or retention accepted: a year.
const MAX_HORIZON: Duration = Duration::from_secs(366 * 24 * 3600);
const MAX_IDEMPOTENCY_KEY: usize = 256;
pub(crate) const MAX_ATTEMPTS: u32 = 100;
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;
/// About how many bytes of jobs one ListJobs page gathers (the response limit is 16 MiB).
pub const LIST_PAGE_BYTES: usize = 4 << 20;
/// The longest kind name looked up.
const MAX_KIND_NAME: usize = 128;
/// The default `--max-args-bytes`.
pub const DEFAULT_MAX_ARGS_BYTES: usize = 256 << 10;

/// Checks a SubmitRequest field by field and builds the spec; `max_args_bytes` bounds the
/// args as encoded in the request.
pub fn submit_spec(
    req: pb::SubmitRequest,
    max_args_bytes: usize,
) -> Result<JobSpec, Vec<FieldViolation>> {
    let mut bad = Vec::new();
    if req.kind.trim().is_empty() {
        bad.push(FieldViolation::new(
            "kind",
            "must name a job kind (see ListKinds)",
        ));
    } else if req.kind.len() > MAX_KIND_NAME {
        bad.push(FieldViolation::new(
            "kind",
            format!("longer than {MAX_KIND_NAME} bytes"),
        ));
    }
    let args_bytes = req.args.as_ref().map_or(0, prost::Message::encoded_len);
    if args_bytes > max_args_bytes {
        let why =
            format!("{args_bytes} bytes; at most {max_args_bytes} (the server's --max-args-bytes)");
        bad.push(FieldViolation::new("args", why));
        return Err(bad);
    }
    let args = match req.args.map(|s| struct_to_json(s, "args")).transpose() {
        Ok(args) => Json::Object(args.unwrap_or_default()),
        Err(v) => {
            bad.push(v);
            Json::Null
        }
    };
    let queue = if req.queue.is_empty() {
        crate::model::job::DEFAULT_QUEUE.to_string()
    } else {
        req.queue
    };
    if let Err(v) = check_name("queue", &queue, MAX_QUEUE_NAME) {
        bad.push(v);
    }
    let namespace = namespace(req.namespace)
        .map_err(|v| bad.push(v))
        .unwrap_or_default();
    check_labels(&req.labels, &mut bad);
    let timeout = match req.timeout.map(Duration::try_from) {
        None => None,
        Some(Ok(t)) if !t.is_zero() && t <= MAX_TIMEOUT => Some(t),
        Some(_) => {
            bad.push(FieldViolation::new(
                "timeout",
                "must be positive and at most 7 days (604800s)",
            ));
            None
        }
    };
    let delay = duration_field(req.delay, "delay", MAX_HORIZON, &mut bad);
    let run_at = req.run_at.and_then(|t| run_at(t, &mut bad));
    if run_at.is_some() && delay.is_some() {
        bad.push(FieldViolation::new(
            "delay",
            "give run_at or delay, not both",
        ));
    }
    let retry = req.retry.and_then(|r| retry_policy(r, &mut bad));
    let retention = duration_field(req.retention, "retention", MAX_HORIZON, &mut bad);
    if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
        bad.push(FieldViolation::new("idempotency_key", "at most 256 bytes"));
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    Ok(JobSpec {
        namespace,
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
            bad.push(FieldViolation::new(
                field,
                format!("must be between 0 and {days} days"),
            ));
            None
        }
    }
}

/// A start time the store can keep: after 1970, and at most [`MAX_HORIZON`] ahead, as a
/// delay is.
fn run_at(value: prost_types::Timestamp, bad: &mut Vec<FieldViolation>) -> Option<SystemTime> {
    let latest = SystemTime::now() + MAX_HORIZON;
    match SystemTime::try_from(value) {
        Ok(t) if t >= UNIX_EPOCH && t <= latest => Some(t),
        Ok(_) => {
            let days = MAX_HORIZON.as_secs() / 86_400;
            let why = format!("must be after 1970-01-01 and at most {days} days from now");
            bad.push(FieldViolation::new("run_at", why));
            None
        }
        Err(_) => {
            bad.push(FieldViolation::new("run_at", "not a valid timestamp"));
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
            bad.push(FieldViolation::new(
                "retry.max_attempts",
                "must be at most 100",
            ));
            0
        }
    };
    let day = Duration::from_secs(86_400);
    let initial_backoff = duration_field(r.initial_backoff, "retry.initial_backoff", day, bad)
        .unwrap_or(defaults.initial_backoff);
    let max_backoff = duration_field(r.max_backoff, "retry.max_backoff", day, bad)
        .unwrap_or(defaults.max_backoff.max(initial_backoff));
    if max_backoff < initial_backoff {
        bad.push(FieldViolation::new(
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
        bad.push(FieldViolation::new(
            "retry.multiplier",
            "must be between 1 and 100",
        ));
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        bad.push(FieldViolation::new(
            "retry.jitter",
            "must be between 0 and 1",
        ));
    }
    (bad.len() == before).then_some(RetryPolicy {
        max_attempts,
        initial_backoff,
        max_backoff,
        multiplier,
        jitter: r.jitter,
    })
}

fn check_labels(labels: &HashMap<String, String>, bad: &mut Vec<FieldViolation>) {
    if labels.len() > MAX_LABELS {
        // One violation, not one per label: the answer must not grow with the request.
        bad.push(FieldViolation::new(
            "labels",
            format!("at most {MAX_LABELS} labels, not {}", labels.len()),
        ));
        return;
    }
    for (key, value) in labels {
        if let Err(v) = check_name(&format!("labels.{key}"), key, MAX_LABEL_KEY) {
            bad.push(v);
        } else if value.len() > MAX_LABEL_VALUE {
            bad.push(FieldViolation::new(
                format!("labels.{key}"),
                format!("value longer than {MAX_LABEL_VALUE} bytes"),
            ));
        }
    }
}

/// A GetStatus long-poll wait: not negative; longer than 5 minutes waits 5 minutes (the
/// documented maximum), as a long-poll client expects, rather than failing.
pub fn wait(value: prost_types::Duration) -> Result<Duration, FieldViolation> {
    match Duration::try_from(value) {
        Ok(d) => Ok(d.min(crate::engine::MAX_WAIT)),
        Err(_) => Err(FieldViolation::new("wait", "must not be negative")),
    }
}

/// The namespace a request names: empty means `default`; otherwise a name like a queue's.
pub fn namespace(name: String) -> Result<String, FieldViolation> {
    if name.is_empty() {
        return Ok(crate::model::job::DEFAULT_NAMESPACE.to_string());
    }
    check_name("namespace", &name, MAX_NAMESPACE_NAME)?;
    Ok(name)
}

/// Parses a job id, naming `field` if it is malformed.
pub fn job_id(field: &str, text: &str) -> Result<JobId, FieldViolation> {
    if text.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    text.parse()
        .map_err(|e| FieldViolation::new(field, format!("{e}")))
}

/// Checks a ListJobsRequest and builds the query.
pub fn list_query(req: pb::ListJobsRequest) -> Result<ListQuery, Vec<FieldViolation>> {
    let mut bad = Vec::new();
    let state = match pb::JobState::try_from(req.state) {
        Ok(pb::JobState::Unspecified) => None,
        Ok(state) => Some(state_from_pb(state)),
        Err(_) => {
            bad.push(FieldViolation::new(
                "state",
                format!("unknown state {}", req.state),
            ));
            None
        }
    };
    if req.labels.len() > MAX_LABELS {
        bad.push(FieldViolation::new(
            "labels",
            format!("at most {MAX_LABELS} labels, not {}", req.labels.len()),
        ));
    }
    if pb::JobView::try_from(req.view).is_err() {
        bad.push(FieldViolation::new(
            "view",
            format!("unknown view {}", req.view),
        ));
    }
    let before = match req.page_token.as_str() {
        "" => None,
        token => token.parse().ok().or_else(|| {
            let why = "not a token from a ListJobs answer; pass next_page_token as it came";
            bad.push(FieldViolation::new("page_token", why));
            None
        }),
    };
    let namespace = namespace(req.namespace)
        .map_err(|v| bad.push(v))
        .unwrap_or_default();
    let limit = match req.page_size as usize {
        0 => DEFAULT_PAGE_SIZE,
        n if n <= MAX_PAGE_SIZE => n,
        _ => {
            bad.push(FieldViolation::new(
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
        namespace,
        state,
        kind: non_empty(req.kind),
        queue: non_empty(req.queue),
        labels: req.labels.into_iter().collect(),
        schedule: non_empty(req.schedule_id),
        before,
        limit,
        max_bytes: LIST_PAGE_BYTES,
        basic: req.view == pb::JobView::Basic as i32,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let fields: Vec<String> = submit_spec(req, DEFAULT_MAX_ARGS_BYTES)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["kind", "queue", "labels.ok", "timeout"]);
    }
}
