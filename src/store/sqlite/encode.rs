//! Jobs and events turned into the text the database keeps, in the caller's task, before a
//! write joins the writer's batch. Whatever can fail for one request (a value that does not
//! serialize) fails there, for that request alone, and the one writer thread spends its
//! time on SQLite, not on JSON.

use super::ms;
use crate::model::job::{EventData, Job, JobId, JobState};
use crate::store::StoreError;

/// A job as its row holds it.
pub struct EncodedJob {
    pub id: JobId,
    pub namespace: String,
    pub state: JobState,
    pub kind: String,
    pub queue: String,
    pub idempotency_key: Option<String>,
    pub labels: Vec<(String, String)>,
    pub expires_at_ms: Option<i64>,
    pub last_seq: u64,
    /// The record column: the job as JSON.
    pub record: String,
    /// The progress column, if the job has progress.
    pub progress: Option<String>,
    /// The worker running it, for a remote job (the `lease_owner` column).
    pub holder: Option<String>,
    /// The schedule that fired it.
    pub schedule_id: Option<String>,
}

/// An event as its row holds it.
pub struct EncodedEvent {
    pub kind: &'static str,
    pub data: String,
    /// For a progress event, the job's new progress column.
    pub progress: Option<String>,
}

fn refused(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Unavailable(format!("{what} cannot be stored: {e}"))
}

impl EncodedJob {
    pub fn new(job: &Job) -> Result<Self, StoreError> {
        let what = || format!("job {}", job.id);
        Ok(EncodedJob {
            id: job.id,
            namespace: job.spec.namespace.clone(),
            state: job.state,
            kind: job.spec.kind.clone(),
            queue: job.spec.queue.clone(),
            idempotency_key: job.spec.idempotency_key.clone(),
            labels: job.spec.labels.clone().into_iter().collect(),
            expires_at_ms: job.expires_at.map(ms),
            holder: job.holder.clone(),
            schedule_id: job.schedule.as_ref().map(|s| s.id.clone()),
            last_seq: job.last_seq,
            // Its seq and progress have columns of their own, which win when it is read
            // back; serializing the job as it is saves a clone of the whole job per write.
            record: serde_json::to_string(job).map_err(|e| refused(&what(), e))?,
            progress: job
                .progress
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| refused(&what(), e))?,
        })
    }
}

/// Encodes events.
pub fn events(events: &[EventData]) -> Result<Vec<EncodedEvent>, StoreError> {
    events
        .iter()
        .map(|data| {
            let progress = match data {
                EventData::Progress(p) => Some(serde_json::to_string(p)),
                _ => None,
            };
            Ok(EncodedEvent {
                kind: super::event_kind(data),
                data: serde_json::to_string(data).map_err(|e| refused("an event", e))?,
                progress: progress.transpose().map_err(|e| refused("progress", e))?,
            })
        })
        .collect()
}
