//! The engine's errors. The API edge maps each to a gRPC status, once.

use crate::jobs::registry::ArgsError;
use crate::model::job::{JobId, JobState};
use crate::model::violation::FieldViolation;
use crate::model::worker::Lease;
use crate::store::StoreError;

/// What an engine operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No kind of that name is registered.
    #[error("unknown job kind {kind:?}; known kinds: {}", known.join(", "))]
    UnknownKind { kind: String, known: Vec<String> },
    /// A value the model cannot hold (a time before 1970, which the store cannot keep).
    #[error("{}: {}", .0.field, .0.description)]
    OutOfRange(FieldViolation),
    /// The kind refused the args.
    #[error("invalid args: {0}")]
    InvalidArgs(#[from] ArgsError),
    /// No such job.
    #[error("no job {0}")]
    NotFound(JobId),
    /// The job is already in a terminal state.
    #[error("job {id} already finished ({state:?})")]
    AlreadyFinished { id: JobId, state: JobState },
    /// The idempotency key belongs to a job submitted with other kind or args.
    #[error(
        "idempotency key {key:?} is already used by job {id}, submitted with other kind or args"
    )]
    IdempotencyConflict { key: String, id: JobId },
    /// The CPU pool could not be started.
    #[error("cannot start the CPU pool: {0}")]
    CpuPool(String),
    /// The service is shutting down and takes no new work.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The job cannot be acted on at this moment; nothing was changed, and a retry may
    /// succeed.
    #[error("{0}")]
    Busy(String),
    /// A worker's write named a lease that is not the job's any more.
    #[error("the lease of job {} (attempt {}, epoch {}) is no longer valid: {why}", lease.job_id, lease.attempt, lease.epoch)]
    LeaseLost { lease: Lease, why: &'static str },
    /// A worker declared a kind it may not run.
    #[error("{}: {}", .0.field, .0.description)]
    KindNotAllowed(FieldViolation),
    /// No worker of that id is connected in the namespace.
    #[error("no worker {0:?} is connected in this namespace")]
    WorkerNotFound(String),
    /// A worker's message broke the protocol (the text names the field).
    #[error("{0}")]
    Protocol(String),
    /// A schedule's spec has bad fields (each named).
    #[error("invalid schedule spec: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    InvalidSpec(Vec<FieldViolation>),
    /// A schedule's job template was refused as a Submit would be.
    #[error("template: {0}")]
    Template(Box<EngineError>),
    /// No schedule of that id in the namespace.
    #[error("no schedule {0:?} in this namespace")]
    ScheduleNotFound(String),
    /// A schedule of that id already exists (and the create was not a retry of the one
    /// that made it).
    #[error("schedule {0:?} already exists")]
    ScheduleExists(String),
    /// The schedule changed since the caller read it; nothing was changed.
    #[error(
        "schedule {id:?} changed since it was read (conflict token {expected}, now {current}); read it again and retry"
    )]
    ScheduleChanged {
        id: String,
        expected: u64,
        current: u64,
    },
    /// A trigger refused by the overlap policy: the previous job still runs.
    #[error(
        "schedule {id:?}'s previous job {running} is still running and its overlap policy does not allow another; nothing fired"
    )]
    ScheduleOverlap { id: String, running: JobId },
    /// The namespace is at a quota; nothing was stored. Retry after the delay.
    #[error("namespace {namespace:?} is at its quota of {what}; retry in {retry_after:?}")]
    QuotaExceeded {
        namespace: String,
        what: String,
        retry_after: std::time::Duration,
    },
    /// The store failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
}
