//! `api::Error`, the API edge's one error type, and the one place a `tonic::Status` is
//! built (`From<Error> for Status`). Client faults carry google.rpc.BadRequest field
//! violations and are not logged; internal faults get a generic message and are logged
//! once, here.

use prost::Message;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::access::Refusal;
use crate::engine::EngineError;
use crate::jobs::registry::ArgsErrorKind;
use crate::model::violation::{FieldViolation, describe};
use crate::pb;
use crate::store::StoreError;

/// Why an RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request's fields are malformed; nothing reached the engine.
    #[error("invalid request: {}", describe(.0))]
    InvalidRequest(Vec<FieldViolation>),
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The caller may not do this (a namespace its principal does not have).
    #[error("{0}")]
    Denied(String),
    /// The caller is over one of its limits; retry after the delay.
    #[error("{message}")]
    Exhausted {
        message: String,
        retry_after: std::time::Duration,
    },
    /// A fault of the service itself.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<FieldViolation> for Error {
    fn from(violation: FieldViolation) -> Self {
        Error::InvalidRequest(vec![violation])
    }
}

impl From<Vec<FieldViolation>> for Error {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Error::InvalidRequest(violations)
    }
}

/// The longest message an error carries; longer ones are cut (they quote client input).
const MAX_MESSAGE: usize = 1024;
/// The longest field path or description a violation carries.
const MAX_VIOLATION_TEXT: usize = 256;
/// The most violations an error lists; the rest are counted in one more.
const MAX_VIOLATIONS: usize = 20;

/// `text` cut to at most `max` bytes (on a character boundary), marked if it was cut. An
/// error must not grow with the request it answers: clients reject large trailers.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len())
}

/// INVALID_ARGUMENT (or another code) with field violations attached, all bounded.
fn bad_request(code: Code, message: impl Into<String>, violations: &[FieldViolation]) -> Status {
    let mut details = ErrorDetails::new();
    for v in violations.iter().take(MAX_VIOLATIONS) {
        details.add_bad_request_violation(
            bounded(&v.field, MAX_VIOLATION_TEXT),
            bounded(&v.description, MAX_VIOLATION_TEXT),
        );
    }
    if violations.len() > MAX_VIOLATIONS {
        let more = violations.len() - MAX_VIOLATIONS;
        details.add_bad_request_violation("", format!("and {more} more"));
    }
    let message = bounded(&message.into(), MAX_MESSAGE);
    Status::with_error_details(code, message, details)
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidRequest(ref violations) => {
                let message = match violations.as_slice() {
                    [one] => format!("{}: {}", one.field, one.description),
                    _ => e.to_string(),
                };
                bad_request(Code::InvalidArgument, message, violations)
            }
            Error::Engine(e) => engine_status(e),
            Error::Denied(why) => Status::permission_denied(bounded(&why, MAX_MESSAGE)),
            Error::Exhausted {
                message,
                retry_after,
            } => exhausted(message, retry_after),
            Error::Internal(why) => {
                tracing::error!(error = %why, "internal error");
                Status::internal("internal error; see the server's log")
            }
        }
    }
}

fn engine_status(e: EngineError) -> Status {
    let message = bounded(&e.to_string(), MAX_MESSAGE);
    match e {
        EngineError::UnknownKind { .. } => bad_request(
            Code::InvalidArgument,
            message.clone(),
            &[FieldViolation {
                field: "kind".into(),
                description: message,
            }],
        ),
        EngineError::OutOfRange(violation) => {
            bad_request(Code::InvalidArgument, message, &[violation])
        }
        EngineError::InvalidArgs(args) => {
            let code = match args.kind {
                ArgsErrorKind::Invalid => Code::InvalidArgument,
                ArgsErrorKind::PermissionDenied => Code::PermissionDenied,
            };
            bad_request(code, message, &args.violations)
        }
        EngineError::KindNotAllowed(violation) => {
            bad_request(Code::PermissionDenied, message, &[violation])
        }
        EngineError::LeaseLost { .. } => Status::failed_precondition(message),
        EngineError::Protocol(_) => Status::invalid_argument(message),
        EngineError::NotFound(_) | EngineError::WorkerNotFound(_) => Status::not_found(message),
        EngineError::AlreadyFinished { .. } => Status::failed_precondition(message),
        EngineError::ShuttingDown | EngineError::Busy(_) => Status::unavailable(message),
        EngineError::IdempotencyConflict { .. } => Status::already_exists(message),
        EngineError::CpuPool(_) => Status::internal(message),
        EngineError::InvalidSpec(violations) => {
            // The model names an interval's fields as it holds them; the request nests them.
            let named: Vec<_> = violations
                .into_iter()
                .map(|v| match v.field.as_str() {
                    "spec.every" | "spec.offset" => FieldViolation::new(
                        v.field.replace("spec.", "spec.interval."),
                        v.description,
                    ),
                    _ => v,
                })
                .collect();
            let message = match named.as_slice() {
                [one] => format!("{}: {}", one.field, one.description),
                _ => message,
            };
            bad_request(Code::InvalidArgument, message, &named)
        }
        EngineError::Template(inner) => template_status(*inner, message),
        EngineError::QuotaExceeded {
            namespace,
            retry_after,
            ..
        } => {
            let mut details = ErrorDetails::with_retry_info(Some(retry_after));
            details.add_quota_failure_violation(format!("namespace:{namespace}"), message.clone());
            Status::with_error_details(Code::ResourceExhausted, message, details)
        }
        EngineError::ScheduleNotFound(_) => Status::not_found(message),
        EngineError::ScheduleExists(_) => Status::already_exists(message),
        EngineError::ScheduleChanged { .. } | EngineError::ScheduleOverlap { .. } => {
            Status::failed_precondition(message)
        }
        EngineError::Store(StoreError::UnknownJob(_)) => Status::not_found(message),
        EngineError::Store(e @ StoreError::Corrupt { .. }) => {
            tracing::error!(error = %e, "a stored record cannot be read");
            Status::data_loss(message)
        }
        EngineError::Store(e @ (StoreError::Unavailable(_) | StoreError::Refused(_))) => {
            tracing::error!(error = %e, "store failure");
            Status::unavailable("storage failed; nothing was changed, retry later")
        }
    }
}

/// A schedule's template refused as a Submit would be, its fields named under `template.`.
fn template_status(inner: EngineError, message: String) -> Status {
    let (code, violations) = match inner {
        EngineError::UnknownKind { .. } => (
            Code::InvalidArgument,
            vec![FieldViolation::new("kind", message.clone())],
        ),
        EngineError::OutOfRange(violation) => (Code::InvalidArgument, vec![violation]),
        EngineError::InvalidArgs(args) => {
            let code = match args.kind {
                ArgsErrorKind::Invalid => Code::InvalidArgument,
                ArgsErrorKind::PermissionDenied => Code::PermissionDenied,
            };
            (code, args.violations)
        }
        other => return engine_status(other),
    };
    let prefixed: Vec<_> = violations
        .into_iter()
        .map(|v| FieldViolation::new(format!("template.{}", v.field), v.description))
        .collect();
    bad_request(code, message, &prefixed)
}

/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` saying when to try again.
fn exhausted(message: String, retry_after: std::time::Duration) -> Status {
    let details = ErrorDetails::with_retry_info(Some(retry_after));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

/// The status a call refused by the access gate gets, before any service sees it.
pub fn refusal_status(refusal: &Refusal, method: &str) -> Status {
    match refusal {
        Refusal::Unauthenticated(why) => Status::unauthenticated(*why),
        Refusal::Denied { principal, role } => Status::permission_denied(format!(
            "principal {principal:?} (role {}) may not call {}",
            role.name(),
            bounded(method, 128)
        )),
        Refusal::Limited {
            principal,
            retry_after,
        } => exhausted(
            format!("principal {principal:?} is over its rate limit; retry in {retry_after:?}"),
            *retry_after,
        ),
    }
}

/// One job's outcome in a SubmitBatch answer: the job, or the status Submit would have
/// failed with, as a message.
pub fn batch_result(outcome: Result<crate::engine::Submitted, Error>) -> pb::SubmitBatchResult {
    match outcome {
        Ok(submitted) => pb::SubmitBatchResult {
            outcome: Some(pb::submit_batch_result::Outcome::Submitted(
                pb::SubmittedJob {
                    id: submitted.job.id.to_string(),
                    state: super::reply::state_to_pb(submitted.job.state) as i32,
                    existing: submitted.existing,
                },
            )),
        },
        Err(e) => batch_error(e),
    }
}

/// A refused job of a batch, mapped exactly as a refused Submit is, as the google.rpc.Status
/// the refusal would have carried in its trailer.
pub fn batch_error(error: Error) -> pb::SubmitBatchResult {
    let status = Status::from(error);
    let details = tonic_types::pb::Status::decode(status.details()).unwrap_or_default();
    pb::SubmitBatchResult {
        outcome: Some(pb::submit_batch_result::Outcome::Error(
            tonic_types::pb::Status {
                code: status.code() as i32,
                message: status.message().to_string(),
                details: details.details,
            },
        )),
    }
}
