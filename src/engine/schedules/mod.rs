//! Schedules: periodic jobs the engine fires itself, stored with the jobs. This module is
//! what clients ask of them (create, read, change, pause, trigger, backfill, delete);
//! `fire.rs` is the loop that fires them; `manual.rs` fires them on request (trigger,
//! backfill); `table.rs` keeps them in memory with their next
//! fire times; `lag.rs` measures how late fires land.
//!
//! Every change is a [`ScheduleWrite`](crate::store::ScheduleWrite) at the version the
//! engine last saw, made under one async lock (the table's): requests and the loop never
//! interleave their writes, and a version check in the store still refuses a writer that
//! read an older record (another node, later).

mod fire;
pub mod lag;
mod manual;
mod table;

use std::time::{Duration, SystemTime};

use fire::Planned;
use table::spec_of;
pub(super) use table::{Key, Table};

use super::{Engine, EngineError};
use crate::model::job::JobSpec;
use crate::model::schedule::{
    OverlapPolicy, Run, RunOutcome, Schedule, ScheduleState, Spec, SpecInput, StoredSpec,
};
use crate::store::{Expect, ScheduleWritten};

/// The most slots one Backfill may fire.
pub const MAX_BACKFILL: usize = 1000;
/// How many next fire times a schedule is shown with.
pub const NEXT_FIRES: usize = 10;

/// What Create and Update set.
#[derive(Debug, Clone)]
pub struct ScheduleDraft {
    pub spec: SpecInput,
    pub template: JobSpec,
    pub overlap: OverlapPolicy,
    pub catchup_window: Duration,
}

/// A schedule with its next fire times.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub schedule: Schedule,
    pub next_fires: Vec<SystemTime>,
}

impl Engine {
    /// Creates a schedule. A retry of the same request (same `request_id`) gets the
    /// schedule back; any other create of a taken id is refused.
    pub async fn create_schedule(
        &self,
        namespace: &str,
        id: &str,
        draft: ScheduleDraft,
        paused: bool,
        note: String,
        request_id: String,
    ) -> Result<ScheduleView, EngineError> {
        let spec = self.check_draft(namespace, &draft).await?;
        let schedule = Schedule {
            id: id.to_string(),
            namespace: namespace.to_string(),
            spec: StoredSpec::from(spec.input()),
            template: draft.template,
            overlap: draft.overlap,
            catchup_window: draft.catchup_window,
            paused,
            note,
            state: ScheduleState::default(),
            created_at: self.now(),
            request_id,
        };
        let mut table = self.shared.schedules.lock().await;
        let max = self.shared.quotas.of(namespace).and_then(|q| q.schedules);
        let exists = table
            .get(&(namespace.to_string(), id.to_string()))
            .is_some();
        if let Some(max) = max.filter(|max| !exists && table.count_in(namespace) >= *max) {
            return Err(EngineError::QuotaExceeded {
                namespace: namespace.to_string(),
                what: format!("{max} schedules (schedules=)"),
                retry_after: std::time::Duration::from_secs(60),
            });
        }
        let plan = Planned {
            write: crate::store::ScheduleWrite {
                schedule: schedule.clone(),
                expect: Expect::Absent,
                jobs: Vec::new(),
            },
            fire_times: Vec::new(),
            handle: None,
        };
        match self.write_one(plan).await? {
            ScheduleWritten::Written(_) => {
                table.put(schedule.clone(), spec);
                self.shared.schedules_wake.notify_one();
                Ok(self.view(schedule, &table))
            }
            ScheduleWritten::Conflict(Some(existing))
                if !existing.request_id.is_empty()
                    && existing.request_id == schedule.request_id =>
            {
                Ok(self.view(*existing, &table))
            }
            ScheduleWritten::Conflict(_) => Err(EngineError::ScheduleExists(id.to_string())),
        }
    }

    /// The schedule with its next fire times (none while paused).
    pub async fn get_schedule(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<ScheduleView, EngineError> {
        let schedule = (self.shared.store.get_schedule(namespace, id).await?)
            .ok_or_else(|| EngineError::ScheduleNotFound(id.to_string()))?;
        let table = self.shared.schedules.lock().await;
        Ok(self.view(schedule, &table))
    }

    /// Up to `limit` schedules of a namespace after `after`, in id order, and the id to go
    /// on after if there may be more.
    pub async fn list_schedules(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ScheduleView>, Option<String>), EngineError> {
        let listed = self
            .shared
            .store
            .list_schedules(namespace, after, limit + 1)
            .await?;
        let more = listed.len() > limit;
        let table = self.shared.schedules.lock().await;
        let views: Vec<_> = (listed.into_iter().take(limit))
            .map(|s| self.view(s, &table))
            .collect();
        let next = views.last().filter(|_| more).map(|v| v.schedule.id.clone());
        Ok((views, next))
    }

    /// Replaces spec, template and policies. `expected` is the version the caller saw
    /// (`None`: whatever is current); a stale one is refused. A new spec's slots before now
    /// do not fire.
    pub async fn update_schedule(
        &self,
        namespace: &str,
        id: &str,
        draft: ScheduleDraft,
        expected: Option<u64>,
    ) -> Result<ScheduleView, EngineError> {
        let spec = self.check_draft(namespace, &draft).await?;
        let now = self.now();
        self.modify(namespace, id, expected, |schedule, _| {
            let stored = StoredSpec::from(spec.input());
            if stored != schedule.spec {
                let last = schedule.state.last_slot.unwrap_or(schedule.created_at);
                schedule.state.last_slot = Some(last.max(now));
            }
            schedule.spec = stored;
            let mut template = draft.template;
            if template.kind == schedule.template.kind {
                let old = &schedule.template.args;
                self.with_secrets(namespace, &template.kind, |secrets| {
                    secrets.restore(&mut template.args, old);
                });
            }
            schedule.template = template;
            schedule.overlap = draft.overlap;
            schedule.catchup_window = draft.catchup_window;
            Ok(())
        })
        .await
    }

    /// Pauses a schedule: its slots stop firing until it is resumed.
    pub async fn pause_schedule(
        &self,
        namespace: &str,
        id: &str,
        note: String,
    ) -> Result<ScheduleView, EngineError> {
        self.modify(namespace, id, None, |schedule, _| {
            schedule.paused = true;
            schedule.note = note;
            Ok(())
        })
        .await
    }

    /// Resumes a paused schedule. The slots that came while it was paused do not fire;
    /// they are counted as skipped.
    pub async fn resume_schedule(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<ScheduleView, EngineError> {
        let now = self.now();
        self.modify(namespace, id, None, |schedule, spec| {
            if !schedule.paused {
                return Ok(());
            }
            schedule.paused = false;
            schedule.note.clear();
            let last = schedule.state.last_slot.unwrap_or(schedule.created_at);
            let due = spec.due(last, now, Duration::ZERO);
            if let Some(latest) = due.latest {
                let first = spec.next_after(last).unwrap_or(latest);
                let mut run = Run::new(first, RunOutcome::SkippedPaused, None, now);
                run.slots = due.missed + u64::from(due.fire.is_some());
                schedule.record(run);
                schedule.state.last_slot = Some(latest);
            }
            Ok(())
        })
        .await
    }

    /// Deletes a schedule; the jobs it fired stay.
    pub async fn delete_schedule(&self, namespace: &str, id: &str) -> Result<(), EngineError> {
        let mut table = self.shared.schedules.lock().await;
        if !self.shared.store.delete_schedule(namespace, id).await? {
            return Err(EngineError::ScheduleNotFound(id.to_string()));
        }
        table.remove(&(namespace.to_string(), id.to_string()));
        Ok(())
    }

    /// Applies `change` to the current record (it also gets the record's checked spec), at
    /// `expected` if given, and stores it. The table's lock is held throughout, so the
    /// record and spec `change` sees are the ones it replaces.
    async fn modify(
        &self,
        namespace: &str,
        id: &str,
        expected: Option<u64>,
        change: impl FnOnce(&mut Schedule, &Spec) -> Result<(), EngineError>,
    ) -> Result<ScheduleView, EngineError> {
        let key = (namespace.to_string(), id.to_string());
        let mut table = self.shared.schedules.lock().await;
        let entry =
            (table.get(&key)).ok_or_else(|| EngineError::ScheduleNotFound(id.to_string()))?;
        let (current, spec) = (entry.schedule.clone(), entry.spec.clone());
        if let Some(expected) = expected.filter(|v| *v != current.state.version) {
            return Err(EngineError::ScheduleChanged {
                id: id.to_string(),
                expected,
                current: current.state.version,
            });
        }
        let mut plan = Planned::new(current);
        change(&mut plan.write.schedule, &spec)?;
        let schedule = plan.write.schedule.clone();
        match self.write_one(plan).await? {
            ScheduleWritten::Written(_) => {
                table.update(schedule.clone());
                self.shared.schedules_wake.notify_one();
                Ok(self.view(schedule, &table))
            }
            ScheduleWritten::Conflict(current) => {
                let version = current.as_ref().map_or(0, |s| s.state.version);
                match current {
                    Some(current) => table.update(*current),
                    None => drop(table.remove(&key)),
                }
                Err(EngineError::ScheduleChanged {
                    id: id.to_string(),
                    expected: schedule.state.version - 1,
                    current: version,
                })
            }
        }
    }

    async fn write_one(&self, plan: Planned) -> Result<ScheduleWritten, EngineError> {
        let mut answers = self
            .shared
            .store
            .write_schedules(&[plan.write], self.now())
            .await?;
        answers
            .pop()
            .ok_or_else(|| EngineError::Busy("the store gave no answer".into()))
    }

    /// Checks a draft: its spec field by field, and its template as Submit would (the
    /// kind known in the namespace, the args valid).
    async fn check_draft(
        &self,
        namespace: &str,
        draft: &ScheduleDraft,
    ) -> Result<Spec, EngineError> {
        let spec = Spec::new(draft.spec.clone()).map_err(EngineError::InvalidSpec)?;
        let mut template = draft.template.clone();
        template.namespace = namespace.to_string();
        self.prepare(template)
            .await
            .map_err(|e| EngineError::Template(Box::new(e)))?;
        Ok(spec)
    }

    fn view(&self, schedule: Schedule, table: &Table) -> ScheduleView {
        let key = (schedule.namespace.clone(), schedule.id.clone());
        let next_fires = match table.get(&key) {
            Some(entry) if !schedule.paused => {
                let after = schedule
                    .state
                    .last_slot
                    .unwrap_or(schedule.created_at)
                    .max(self.now());
                let seed = entry.seed();
                (entry.spec.next_n(after, NEXT_FIRES).into_iter())
                    .map(|slot| entry.spec.fire_time(&seed, slot))
                    .collect()
            }
            _ => Vec::new(),
        };
        ScheduleView {
            schedule,
            next_fires,
        }
    }

    /// Fire lag since start.
    pub fn fire_lag(&self) -> lag::LagSummary {
        self.shared.fire_lag.summary()
    }
}

impl Engine {
    /// Reads every schedule at start-up. A schedule whose buffered slot's job ended while
    /// the service was down is looked at at once.
    pub(super) async fn load_schedules(&self) -> Result<(), EngineError> {
        let stored = self.shared.store.all_schedules().await?;
        let mut table = self.shared.schedules.lock().await;
        for schedule in stored {
            let Some(spec) = spec_of(&schedule) else {
                continue;
            };
            if schedule.state.buffered.is_some() {
                let key = (schedule.namespace.clone(), schedule.id.clone());
                let _ = self.shared.schedule_ended.send(key);
            }
            table.put(schedule, spec);
        }
        Ok(())
    }
}
