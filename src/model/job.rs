//! The job as every layer sees it: ids, states, the validated spec a client submitted, the
//! record the store keeps, and the events of a job's log. Nothing here knows about protobuf.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::compact;

/// A job's id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

/// The text given as a job id is not a UUID.
#[derive(Debug, thiserror::Error)]
#[error("not a job id (expected a UUID such as 0193e4a2-7c1f-7d3e-9a55-3f1c2b4d5e6f)")]
pub struct ParseJobIdError;

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }

    /// The id's 128 bits.
    pub fn as_u128(self) -> u128 {
        self.0.as_u128()
    }

    pub fn from_u128(bits: u128) -> Self {
        JobId(Uuid::from_u128(bits))
    }

    /// The all-zero id: a record read without its id, until the store fills it in.
    fn unset() -> Self {
        JobId(Uuid::nil())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for JobId {
    type Err = ParseJobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s.trim())
            .map(JobId)
            .map_err(|_| ParseJobIdError)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its `run_at`.
    Scheduled,
    Queued,
    Running,
    /// Waiting for its next attempt at `run_at`.
    RetryWait,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Which executor runs a kind's handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pool {
    /// Async handlers on the tokio runtime.
    Io,
    /// Blocking handlers on the rayon pool.
    Cpu,
    /// Worker processes connected over the worker protocol.
    Remote,
}

/// What a client asked for, already checked field by field at the API edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The namespace the job belongs to: its queues, idempotency keys, lists and stats are
    /// its namespace's, and it is not found from any other.
    #[serde(
        default = "default_namespace",
        skip_serializing_if = "is_default_namespace"
    )]
    pub namespace: String,
    pub kind: String,
    /// Always a JSON object.
    pub args: Value,
    #[serde(default = "default_queue", skip_serializing_if = "is_default_queue")]
    pub queue: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(
        with = "compact::opt_duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Not before this time (SCHEDULED until then).
    #[serde(
        with = "compact::opt_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub run_at: Option<SystemTime>,
    /// Not before this long after submission; the engine turns it into `run_at`.
    #[serde(
        with = "compact::opt_duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub delay: Option<Duration>,
    /// `None`: the kind's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// How long to keep the job once finished; `None`: the server's default.
    #[serde(
        with = "compact::opt_duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub retention: Option<Duration>,
}

/// The queue a job goes to when it names none.
pub const DEFAULT_QUEUE: &str = "default";

/// The namespace of a request that names none; records leave it out.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The longest namespace name.
pub const MAX_NAMESPACE_NAME: usize = 64;

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.into()
}

fn is_default_namespace(namespace: &str) -> bool {
    namespace == DEFAULT_NAMESPACE
}

fn default_queue() -> String {
    DEFAULT_QUEUE.into()
}

fn is_default_queue(queue: &str) -> bool {
    queue == DEFAULT_QUEUE
}

/// Records leave out zeros, the common case, to keep them small.
fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

impl JobSpec {
    /// A spec with defaults for everything but the kind and args.
    pub fn new(kind: impl Into<String>, args: Value) -> Self {
        JobSpec {
            namespace: DEFAULT_NAMESPACE.into(),
            kind: kind.into(),
            args,
            queue: default_queue(),
            priority: 0,
            labels: BTreeMap::new(),
            timeout: None,
            run_at: None,
            delay: None,
            retry: None,
            idempotency_key: None,
            retention: None,
        }
    }
}

/// How failed attempts are retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    #[serde(with = "compact::duration")]
    pub initial_backoff: Duration,
    #[serde(with = "compact::duration")]
    pub max_backoff: Duration,
    /// At least 1.
    pub multiplier: f64,
    /// 0 to 1: the delay is spread by up to this fraction either way.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// Three attempts, 1 s then 2 s apart (at most 5 minutes), +/-20 % jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// One attempt only.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The delay after failed attempt `attempt` (from 1). `spread` in [0, 1) picks where in
    /// the jitter band the delay falls; the engine derives it from the job id, so retries of
    /// many jobs that failed together do not all come back at once.
    pub fn backoff(&self, attempt: u32, spread: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * (2.0 * spread.clamp(0.0, 1.0) - 1.0);
        Duration::try_from_secs_f64((capped * (1.0 + jitter)).max(0.0)).unwrap_or(self.max_backoff)
    }
}

/// How far a handler has come.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0.0 to 1.0.
    pub fraction: f64,
    pub done: u64,
    pub total: u64,
    pub message: String,
}

impl Progress {
    /// Progress as a fraction (clamped to 0..=1).
    pub fn fraction(fraction: f64) -> Self {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        Progress {
            fraction,
            ..Progress::default()
        }
    }

    /// Progress as units done out of a total; the fraction follows from them.
    pub fn counted(done: u64, total: u64) -> Self {
        let fraction = if total == 0 {
            0.0
        } else {
            (done as f64 / total as f64).min(1.0)
        };
        Progress {
            fraction,
            done,
            total,
            message: String::new(),
        }
    }

    /// Adds a human-readable note.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

/// The class of a failure, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Handler,
    Panic,
    Timeout,
    Cancelled,
    Shutdown,
    Interrupted,
    Permanent,
    /// The worker running the attempt stopped heartbeating for longer than the lease TTL.
    LeaseExpired,
    /// The worker gave the job back unfinished (it is draining): requeued at once, the
    /// attempt not spent.
    Released,
}

impl FailureKind {
    /// Whether another attempt may help.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureKind::Handler
                | FailureKind::Panic
                | FailureKind::Timeout
                | FailureKind::Interrupted
                | FailureKind::LeaseExpired
        )
    }
}

/// Why a job did not succeed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// The error of one failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptFailure {
    pub attempt: u32,
    pub failure: Failure,
    #[serde(with = "compact::time")]
    pub at: SystemTime,
}

/// A job and everything known about it; what the store keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Not in the record: the stores key records by id, and fill it in when reading.
    #[serde(skip_serializing, default = "JobId::unset")]
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    #[serde(with = "compact::time")]
    pub created_at: SystemTime,
    #[serde(
        with = "compact::opt_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub started_at: Option<SystemTime>,
    #[serde(
        with = "compact::opt_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// The seq of the latest event in the job's log; the store keeps it current.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_seq: u64,
    /// When a SCHEDULED or RETRY_WAIT job is due.
    #[serde(
        with = "compact::opt_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub run_at: Option<SystemTime>,
    /// The policy in force.
    pub retry: RetryPolicy,
    /// Every failed attempt, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<AttemptFailure>,
    /// When a finished job will be purged.
    #[serde(
        with = "compact::opt_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<SystemTime>,
    /// The worker holding the running attempt of a remote job (its id), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// The fencing epoch: goes up with every assignment to a worker, and a worker's write
    /// must carry the current one. Kept after the attempt, so the next one goes higher.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// Attempts that ended because their worker's lease expired; they have a limit of their
    /// own and do not count against the retry policy's attempts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_expiries: u32,
    /// The schedule slot that fired this job, if a schedule did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSlot>,
}

/// Which schedule fired a job, and for which slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSlot {
    pub id: String,
    #[serde(with = "compact::time")]
    pub slot: SystemTime,
}

impl Job {
    /// A freshly accepted job, not yet stored: SCHEDULED if it has a future `run_at`.
    pub fn new(spec: JobSpec, retry: RetryPolicy, now: SystemTime) -> Self {
        let delayed = spec.delay.and_then(|d| now.checked_add(d));
        let run_at = spec.run_at.or(delayed).filter(|t| *t > now);
        Job {
            id: JobId::new(),
            state: if run_at.is_some() {
                JobState::Scheduled
            } else {
                JobState::Queued
            },
            run_at,
            retry,
            errors: Vec::new(),
            expires_at: None,
            holder: None,
            epoch: 0,
            lease_expiries: 0,
            schedule: None,
            spec,
            attempt: 0,
            progress: None,
            result: None,
            error: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            cancel_requested: false,
            last_seq: 0,
        }
    }
}

/// An event's time as every store keeps it: whole milliseconds since the Unix epoch.
pub fn whole_millis(t: SystemTime) -> SystemTime {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let millis = Duration::from_millis(since.as_millis() as u64);
    std::time::UNIX_EPOCH + millis
}

/// One entry of a job's event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Strictly increasing per job, from 1.
    pub seq: u64,
    pub at: SystemTime,
    pub data: EventData,
}

/// What an event says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventData {
    /// A move to a non-terminal state; `run_at` for SCHEDULED and RETRY_WAIT, `error` for
    /// RETRY_WAIT.
    State {
        state: JobState,
        attempt: u32,
        #[serde(with = "compact::opt_time", default)]
        run_at: Option<SystemTime>,
        error: Option<Failure>,
    },
    /// The handler's latest progress; a later one may supersede it in the log.
    Progress(Progress),
    /// A line the handler logged.
    Log(String),
    /// The terminal event, always last.
    Finished {
        state: JobState,
        result: Option<Value>,
        error: Option<Failure>,
        attempt: u32,
    },
}

impl EventData {
    /// The state-change event for the job's current (non-terminal) state.
    pub fn state_of(job: &Job) -> Self {
        EventData::State {
            state: job.state,
            attempt: job.attempt,
            run_at: job.run_at,
            error: (job.state == JobState::RetryWait)
                .then(|| job.errors.last().map(|e| e.failure.clone()))
                .flatten(),
        }
    }

    /// The terminal event for a job that has just reached its terminal state.
    pub fn finished(job: &Job) -> Self {
        EventData::Finished {
            state: job.state,
            result: job.result.clone(),
            error: job.error.clone(),
            attempt: job.attempt,
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, EventData::Finished { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_back_and_sort_by_time() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<JobId>().unwrap(), a);
        assert!("nope".parse::<JobId>().is_err());
    }

    #[test]
    fn backoff_grows_caps_and_spreads() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.backoff(1, 0.5), Duration::from_secs(1));
        assert_eq!(policy.backoff(3, 0.5), Duration::from_secs(4));
        assert_eq!(policy.backoff(30, 0.5), Duration::from_secs(300));
        let jittered = RetryPolicy::default();
        assert_eq!(jittered.backoff(1, 0.0), Duration::from_millis(800));
        assert_eq!(jittered.backoff(1, 1.0), Duration::from_millis(1200));
    }

    #[test]
    fn counted_progress_derives_its_fraction() {
        let p = Progress::counted(25, 100);
        assert_eq!(p.fraction, 0.25);
        assert_eq!(Progress::counted(5, 0).fraction, 0.0);
        assert_eq!(Progress::fraction(7.0).fraction, 1.0);
        assert_eq!(Progress::fraction(f64::NAN).fraction, 0.0);
    }
}
