//! A schedule as the store keeps it: its spec, the job template each slot submits, its
//! policies, and the state that firing advances. `version` goes up with every change, so a
//! write that expects an older one (a lost update, or a second node firing the same slot)
//! is refused; each slot's job carries an idempotency key made of the schedule and the slot,
//! so the slot can never make two jobs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::super::compact;
use super::super::job::{JobId, JobSpec};
use super::{Repeat, SpecInput};

/// What to do with a slot while the schedule's previous job has not finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Record the slot as skipped.
    #[default]
    Skip,
    /// Fire once the previous job ends; at most one slot waits.
    BufferOne,
    /// Fire anyway.
    AllowAll,
    /// Cancel the previous job, then fire.
    CancelOther,
}

/// The default catch-up window.
pub const DEFAULT_CATCHUP: Duration = Duration::from_secs(3600);

/// A schedule's stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: String,
    pub namespace: String,
    pub spec: StoredSpec,
    /// The job each slot submits.
    pub template: JobSpec,
    #[serde(default)]
    pub overlap: OverlapPolicy,
    #[serde(with = "compact::duration")]
    pub catchup_window: Duration,
    #[serde(default)]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    #[serde(default)]
    pub state: ScheduleState,
    #[serde(with = "compact::time")]
    pub created_at: SystemTime,
    /// The CreateSchedule request that made it: a retry of that request gets this schedule
    /// back instead of a conflict.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
}

/// How many runs a schedule remembers.
pub const RECENT_RUNS: usize = 10;

/// What became of a slot (or of a Trigger or a Backfill).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Fired,
    /// Not fired: the previous job was still running (SKIP, or BUFFER_ONE with a slot
    /// already waiting).
    SkippedOverlap,
    /// Not fired: older than the catch-up window when the service got to it.
    Missed,
    Triggered,
    Backfilled,
    /// A backfilled slot that had fired before: its job is the earlier one.
    AlreadyFired,
    /// Not fired: slots that came while the schedule was paused (counted as skipped).
    SkippedPaused,
    /// Not fired: the template was refused (its kind is gone, its args no longer valid);
    /// `error` says why.
    Refused,
}

/// One entry of a schedule's recent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    #[serde(with = "compact::time")]
    pub slot: SystemTime,
    pub outcome: RunOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    #[serde(with = "compact::time")]
    pub at: SystemTime,
    /// How many slots the entry stands for (missed slots are recorded as one entry, the
    /// latest of them); 1 otherwise.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub slots: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl Run {
    /// A run of one slot.
    pub fn new(slot: SystemTime, outcome: RunOutcome, job: Option<JobId>, at: SystemTime) -> Self {
        Run {
            slot,
            outcome,
            job,
            at,
            slots: 1,
            error: String::new(),
        }
    }
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

impl Schedule {
    /// Records a run, keeping the newest [`RECENT_RUNS`] and counting it.
    pub fn record(&mut self, run: Run) {
        let state = &mut self.state;
        match run.outcome {
            RunOutcome::Fired | RunOutcome::Triggered | RunOutcome::Backfilled => state.runs += 1,
            RunOutcome::SkippedOverlap | RunOutcome::SkippedPaused => state.skipped += run.slots,
            RunOutcome::Missed | RunOutcome::Refused => state.missed += run.slots,
            RunOutcome::AlreadyFired => {}
        }
        if state.recent.len() >= RECENT_RUNS {
            state.recent.remove(0);
        }
        state.recent.push(run);
    }
}

/// What firing advances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The latest slot handled (fired, skipped or missed).
    #[serde(
        with = "compact::opt_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_slot: Option<SystemTime>,
    /// The job of the latest fire while it has not finished (for the overlap policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_job: Option<JobId>,
    /// A slot waiting for the running job to end (BUFFER_ONE).
    #[serde(
        with = "compact::opt_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub buffered: Option<SystemTime>,
    #[serde(default)]
    pub runs: u64,
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub missed: u64,
    /// Goes up with every change of the record.
    #[serde(default)]
    pub version: u64,
    /// The newest runs, oldest first (at most [`RECENT_RUNS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<Run>,
}

/// A spec as stored: [`SpecInput`] in a serde form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(
        with = "compact::opt_duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub every: Option<Duration>,
    #[serde(
        with = "compact::opt_duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub offset: Option<Duration>,
    #[serde(
        with = "compact::opt_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timezone: String,
    #[serde(
        with = "compact::opt_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub start: Option<SystemTime>,
    #[serde(
        with = "compact::opt_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub end: Option<SystemTime>,
    #[serde(
        with = "compact::opt_duration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub jitter: Option<Duration>,
}

impl From<&SpecInput> for StoredSpec {
    fn from(input: &SpecInput) -> Self {
        let (mut cron, mut every, mut offset, mut at) = (None, None, None, None);
        match &input.repeat {
            Repeat::Cron(expr) => cron = Some(expr.clone()),
            Repeat::Every {
                every: e,
                offset: o,
            } => (every, offset) = (Some(*e), Some(*o)),
            Repeat::At(t) => at = Some(*t),
        }
        StoredSpec {
            cron,
            every,
            offset: offset.filter(|o| !o.is_zero()),
            at,
            timezone: input.timezone.clone(),
            start: input.start,
            end: input.end,
            jitter: Some(input.jitter).filter(|j| !j.is_zero()),
        }
    }
}

impl StoredSpec {
    /// The spec this record holds (`None` if it holds no repeat: a corrupt record).
    pub fn input(&self) -> Option<SpecInput> {
        let repeat = match (&self.cron, self.every, self.at) {
            (Some(cron), _, _) => Repeat::Cron(cron.clone()),
            (None, Some(every), _) => Repeat::Every {
                every,
                offset: self.offset.unwrap_or_default(),
            },
            (None, None, Some(at)) => Repeat::At(at),
            (None, None, None) => return None,
        };
        Some(SpecInput {
            repeat,
            timezone: self.timezone.clone(),
            start: self.start,
            end: self.end,
            jitter: self.jitter.unwrap_or_default(),
        })
    }
}

/// The idempotency key of a slot's job: the schedule and the slot, so a slot fired twice
/// (a retry after a crash, a second node) finds the job the first made.
pub fn slot_key(schedule_id: &str, slot: SystemTime) -> String {
    let nanos = slot
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("schedule/{schedule_id}/{nanos}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::job::JobSpec;

    #[test]
    fn a_schedule_record_round_trips_and_its_spec_too() {
        let input: SpecInput = SpecInput {
            repeat: "every 90s + 30s".parse().unwrap(),
            timezone: "Europe/Berlin".into(),
            start: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            end: None,
            jitter: Duration::from_secs(5),
        };
        let schedule = Schedule {
            id: "nightly".into(),
            namespace: "default".into(),
            spec: StoredSpec::from(&input),
            template: JobSpec::new("demo.noop", serde_json::json!({"payload": "x"})),
            overlap: OverlapPolicy::BufferOne,
            catchup_window: DEFAULT_CATCHUP,
            paused: false,
            note: String::new(),
            state: ScheduleState::default(),
            created_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            request_id: "r1".into(),
        };
        let json = serde_json::to_string(&schedule).unwrap();
        let back: Schedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, schedule);
        assert_eq!(back.spec.input(), Some(input));
        assert!(json.contains("\"overlap\":\"buffer_one\""), "{json}");
    }

    #[test]
    fn a_slot_key_names_the_schedule_and_the_slot() {
        let slot = UNIX_EPOCH + Duration::from_millis(1_796_000_000_500);
        assert_eq!(
            slot_key("nightly", slot),
            "schedule/nightly/1796000000500000000"
        );
        assert_ne!(slot_key("nightly", slot), slot_key("hourly", slot));
    }
}
