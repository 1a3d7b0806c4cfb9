//! The job as the engine sees it: ids, states, the validated spec a client submitted, the
//! record the store keeps, and the events of a job's log. Nothing here knows about protobuf.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use uuid::Uuid;

/// A job's id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Running,
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
}

/// What a client asked for, already checked field by field at the API edge.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub kind: String,
    /// Always a JSON object.
    pub args: Value,
    pub queue: String,
    pub priority: i32,
    pub labels: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
}

/// How far a handler has come.
#[derive(Debug, Clone, Default, PartialEq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Handler,
    Panic,
    Timeout,
    Cancelled,
    Shutdown,
}

/// Why a job did not succeed.
#[derive(Debug, Clone, PartialEq)]
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

/// A job and everything known about it; what the store keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    pub attempt: u32,
    pub progress: Option<Progress>,
    pub result: Option<Value>,
    pub error: Option<Failure>,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub cancel_requested: bool,
    /// The seq of the latest event in the job's log; the store keeps it current.
    pub last_seq: u64,
}

impl Job {
    /// A freshly accepted job, not yet stored.
    pub fn new(spec: JobSpec, now: SystemTime) -> Self {
        Job {
            id: JobId::new(),
            spec,
            state: JobState::Queued,
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

/// One entry of a job's event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Strictly increasing per job, from 1.
    pub seq: u64,
    pub at: SystemTime,
    pub data: EventData,
}

/// What an event says.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    /// A move to a non-terminal state.
    State { state: JobState, attempt: u32 },
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
    fn counted_progress_derives_its_fraction() {
        let p = Progress::counted(25, 100);
        assert_eq!(p.fraction, 0.25);
        assert_eq!(Progress::counted(5, 0).fraction, 0.0);
        assert_eq!(Progress::fraction(7.0).fraction, 1.0);
        assert_eq!(Progress::fraction(f64::NAN).fraction, 0.0);
    }
}
