//! Firing on request: Trigger (the template now, outside the spec) and Backfill (each
//! slot of a past range, once). Both go through the same atomic write as the loop's fires.

use std::time::{Duration, SystemTime};

use super::MAX_BACKFILL;
use super::fire::Planned;
use crate::engine::{Engine, EngineError};
use crate::model::job::{EventData, Job};
use crate::model::schedule::{OverlapPolicy, Run, RunOutcome};
use crate::model::violation::FieldViolation;

impl Engine {
    /// Fires the template now, outside the spec. The overlap policy applies: with SKIP or
    /// BUFFER_ONE and the previous job still running, nothing fires and the call is
    /// refused; CANCEL_OTHER cancels it first.
    pub async fn trigger_schedule(&self, namespace: &str, id: &str) -> Result<Job, EngineError> {
        let key = (namespace.to_string(), id.to_string());
        let mut table = self.shared.schedules.lock().await;
        let entry = table
            .get(&key)
            .ok_or_else(|| EngineError::ScheduleNotFound(id.to_string()))?;
        let schedule = entry.schedule.clone();
        if let Some(running) = self.still_running(&schedule) {
            match schedule.overlap {
                OverlapPolicy::AllowAll => {}
                OverlapPolicy::CancelOther => drop(self.cancel(namespace, running).await),
                OverlapPolicy::Skip | OverlapPolicy::BufferOne => {
                    return Err(EngineError::ScheduleOverlap {
                        id: id.to_string(),
                        running,
                    });
                }
            }
        }
        let now = self.now();
        let slot = crate::model::job::whole_millis(now);
        let mut plan = Planned::new(schedule);
        self.fire_into(&mut plan, slot, RunOutcome::Triggered, now)
            .await?;
        if plan.write.jobs.is_empty() {
            let why = plan
                .write
                .schedule
                .state
                .recent
                .last()
                .map(|r| r.error.clone());
            return Err(EngineError::Busy(why.unwrap_or_default()));
        }
        let mut written = self.commit(&mut table, vec![plan]).await?;
        (written.pop().and_then(|mut jobs| jobs.pop()))
            .map(|submitted| submitted.job)
            .ok_or_else(|| {
                EngineError::Busy("the schedule changed meanwhile; nothing fired, retry".into())
            })
    }

    /// Fires each slot of the spec in [start, end] (a past range), once: a slot that
    /// fired before keeps its job. The overlap policy does not apply, and backfilled jobs
    /// do not become the schedule's running job.
    pub async fn backfill_schedule(
        &self,
        namespace: &str,
        id: &str,
        start: SystemTime,
        end: SystemTime,
    ) -> Result<Vec<Run>, EngineError> {
        let now = self.now();
        if end > now || end < start {
            return Err(EngineError::OutOfRange(FieldViolation::new(
                "end",
                "must be in the past and not before start",
            )));
        }
        let key = (namespace.to_string(), id.to_string());
        let mut table = self.shared.schedules.lock().await;
        let entry = table
            .get(&key)
            .ok_or_else(|| EngineError::ScheduleNotFound(id.to_string()))?;
        let from = start.checked_sub(Duration::from_nanos(1)).unwrap_or(start);
        let slots: Vec<_> = (entry.spec.next_n(from, MAX_BACKFILL + 1).into_iter())
            .filter(|slot| *slot <= end)
            .collect();
        if slots.len() > MAX_BACKFILL {
            return Err(EngineError::OutOfRange(FieldViolation::new(
                "end",
                format!("the range holds more than {MAX_BACKFILL} slots; backfill it in parts"),
            )));
        }
        let mut plan = Planned::new(entry.schedule.clone());
        for slot in &slots {
            let job = (self.slot_job(&plan.write.schedule, *slot).await)
                .map_err(|e| EngineError::Template(Box::new(e)))?;
            let events = vec![EventData::state_of(&job)];
            plan.write.jobs.push((job, events));
            plan.fire_times.push(None);
        }
        let submitted = self
            .commit(&mut table, vec![plan])
            .await?
            .pop()
            .unwrap_or_default();
        if submitted.len() != slots.len() {
            return Err(EngineError::Busy(
                "the schedule changed meanwhile; nothing was backfilled, retry".into(),
            ));
        }
        let runs: Vec<Run> = (slots.iter().zip(&submitted))
            .map(|(slot, s)| {
                let outcome = if s.existing {
                    RunOutcome::AlreadyFired
                } else {
                    RunOutcome::Backfilled
                };
                Run::new(*slot, outcome, Some(s.job.id), now)
            })
            .collect();
        // The runs are recorded in a second write: the jobs above are what must be exact.
        if let Some(entry) = table.get(&key) {
            let mut plan = Planned::new(entry.schedule.clone());
            for run in &runs {
                plan.write.schedule.record(run.clone());
            }
            if let Err(e) = self.commit(&mut table, vec![plan]).await {
                tracing::warn!(schedule = %id, error = %e, "could not record a backfill's runs");
            }
        }
        Ok(runs)
    }
}
