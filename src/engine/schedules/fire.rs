//! Firing: the scheduler loop sleeps until the earliest schedule's next fire time, works
//! out what each due schedule does (the catch-up rule, then the overlap policy), and
//! commits the lot in one store call: per schedule, its jobs and its advanced record in one
//! atomic write at the version it read. Only after that commit are the jobs queued. A
//! crash before the commit leaves the slot to fire after the restart (within the catch-up
//! window); after it, the slot is handled and its job stored: never lost, never twice.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::sleep_until;

use std::collections::HashSet;

use super::table::{Entry, Handle, Key, Table};
use crate::engine::{Engine, EngineError, Submitted};
use crate::model::job::{EventData, Job, JobId, ScheduleSlot};
use crate::model::schedule::{OverlapPolicy, Run, RunOutcome, Schedule, slot_key};
use crate::store::{Expect, Inserted, ScheduleWrite, ScheduleWritten};

/// The most schedules one store call fires.
const FIRE_BATCH: usize = 1024;
/// How soon a schedule whose write failed is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A schedule's write, and for each of its jobs, the outcome it records.
pub(super) struct Planned {
    pub write: ScheduleWrite,
    /// The schedule's table handle, when the write only advances its state (its spec
    /// unchanged).
    pub handle: Option<Handle>,
    /// Fire times of the jobs that are due slots (for the fire lag); `None` for triggers
    /// and backfills.
    pub fire_times: Vec<Option<SystemTime>>,
}

impl Engine {
    /// Fires schedules as they come due, and buffered slots as the jobs they wait for end.
    pub(in crate::engine) async fn schedules_loop(self, mut ended: mpsc::UnboundedReceiver<Key>) {
        let stopping = self.shared.stopping.clone();
        loop {
            let next = self.shared.schedules.lock().await.next_wake();
            let due = async {
                match next {
                    Some(at) => sleep_until(self.shared.clock.instant_at(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = due => self.fire_due().await,
                Some(key) = ended.recv() => {
                    let mut keys = vec![key];
                    while let Ok(key) = ended.try_recv() {
                        keys.push(key);
                    }
                    self.fire_buffered(keys).await;
                }
                () = self.shared.schedules_wake.notified() => {}
                () = stopping.cancelled() => return,
            }
        }
    }

    /// Fires every schedule due now, a batch per store call.
    async fn fire_due(&self) {
        let now = self.now();
        let mut table = self.shared.schedules.lock().await;
        loop {
            let handles = table.due(now, FIRE_BATCH);
            if handles.is_empty() {
                return;
            }
            let running = self.unfinished_of(handles.iter().filter_map(|h| table.at(*h)));
            let mut planned = Vec::with_capacity(handles.len());
            for handle in handles {
                let Some(entry) = table.at(handle) else {
                    continue;
                };
                let running = (entry.schedule.state.running_job).filter(|j| running.contains(j));
                match self.plan_due(entry, running, now).await {
                    Ok(Some(mut plan)) => {
                        plan.handle = Some(handle);
                        planned.push(plan);
                    }
                    // Nothing due after all: time it again from its record.
                    Ok(None) => {
                        let schedule = entry.schedule.clone();
                        table.advance(handle, schedule);
                    }
                    Err(_) => return, // shutting down
                }
            }
            // A failed write has been logged and its schedules put off; nothing to add.
            let _ = self.commit(&mut table, planned).await;
        }
    }

    /// Which of these schedules' latest jobs have not finished: one look under the
    /// engine's lock for a whole batch.
    fn unfinished_of<'a>(&self, entries: impl Iterator<Item = &'a Entry>) -> HashSet<JobId> {
        let jobs: Vec<JobId> = entries
            .filter_map(|e| e.schedule.state.running_job)
            .collect();
        let state = self.lock();
        jobs.into_iter()
            .filter(|j| state.live.contains_key(j))
            .collect()
    }

    /// Fires the buffered slot of each schedule whose job just ended.
    async fn fire_buffered(&self, keys: Vec<Key>) {
        let now = self.now();
        let mut table = self.shared.schedules.lock().await;
        let mut planned = Vec::new();
        for key in keys {
            let Some(entry) = table.get(&key) else {
                continue;
            };
            let schedule = &entry.schedule;
            let Some(slot) = schedule.state.buffered else {
                continue;
            };
            if schedule.paused || self.still_running(schedule).is_some() {
                continue;
            }
            let mut next = schedule.clone();
            next.state.buffered = None;
            let mut plan = Planned::new(next);
            // (Its wait was the overlap policy's, not fire lag: it is not counted.)
            match self
                .fire_into(&mut plan, slot, RunOutcome::Fired, now)
                .await
            {
                Ok(()) => planned.push(plan),
                Err(_) => return,
            }
        }
        let _ = self.commit(&mut table, planned).await;
    }

    /// What a due schedule does at `now`: the catch-up rule picks the slot to fire (if
    /// any) and counts the missed ones, then the overlap policy decides. `None` if no slot
    /// is due after all. `running` is the schedule's latest job if it has not finished.
    async fn plan_due(
        &self,
        entry: &Entry,
        running: Option<JobId>,
        now: SystemTime,
    ) -> Result<Option<Planned>, EngineError> {
        let schedule = &entry.schedule;
        let last = schedule.state.last_slot.unwrap_or(schedule.created_at);
        let due = entry.spec.due(last, now, schedule.catchup_window);
        let Some(latest) = due.latest else {
            return Ok(None);
        };
        let mut next = schedule.clone();
        next.state.last_slot = Some(latest);
        if due.missed > 0 {
            let first = entry.spec.next_after(last).unwrap_or(latest);
            let mut run = Run::new(first, RunOutcome::Missed, None, now);
            run.slots = due.missed;
            next.record(run);
        }
        let mut plan = Planned::new(next);
        let Some(slot) = due.fire else {
            return Ok(Some(plan));
        };
        let state = &mut plan.write.schedule.state;
        let fire = match (plan.write.schedule.overlap, running) {
            (_, None) | (OverlapPolicy::AllowAll, _) => true,
            (OverlapPolicy::BufferOne, Some(_)) if state.buffered.is_none() => {
                state.buffered = Some(slot);
                false
            }
            (OverlapPolicy::CancelOther, Some(job)) => {
                // The slot waits for the cancelled job to end, then fires.
                if let Some(older) = state.buffered.replace(slot) {
                    plan.write.schedule.record(Run::new(
                        older,
                        RunOutcome::SkippedOverlap,
                        None,
                        now,
                    ));
                }
                self.cancel_in_background(&plan.write.schedule.namespace, job);
                false
            }
            (OverlapPolicy::Skip | OverlapPolicy::BufferOne, Some(_)) => {
                plan.write
                    .schedule
                    .record(Run::new(slot, RunOutcome::SkippedOverlap, None, now));
                false
            }
        };
        if fire {
            self.fire_into(&mut plan, slot, RunOutcome::Fired, now)
                .await?;
            if let Some(last) = plan.fire_times.last_mut() {
                *last = plan_fire_time(entry, slot);
            }
        }
        Ok(Some(plan))
    }

    /// The schedule's latest job, if it has not finished.
    pub(super) fn still_running(&self, schedule: &Schedule) -> Option<JobId> {
        let job = schedule.state.running_job?;
        self.lock().live.contains_key(&job).then_some(job)
    }

    fn cancel_in_background(&self, namespace: &str, job: JobId) {
        let (engine, namespace) = (self.clone(), namespace.to_string());
        tokio::spawn(async move {
            if let Err(e) = engine.cancel(&namespace, job).await {
                tracing::info!(%job, error = %e, "a schedule's cancel-other could not cancel the previous job");
            }
        });
    }

    /// Adds a slot's job to a plan and records it as the schedule's running job; a
    /// template the engine refuses is recorded as a refused run instead.
    pub(super) async fn fire_into(
        &self,
        plan: &mut Planned,
        slot: SystemTime,
        outcome: RunOutcome,
        now: SystemTime,
    ) -> Result<(), EngineError> {
        let schedule = &mut plan.write.schedule;
        match self.slot_job(schedule, slot).await {
            Ok(job) => {
                schedule.state.running_job = Some(job.id);
                schedule.record(Run::new(slot, outcome, Some(job.id), now));
                let events = vec![EventData::state_of(&job)];
                plan.write.jobs.push((job, events));
                plan.fire_times.push(None);
                Ok(())
            }
            Err(EngineError::ShuttingDown) => Err(EngineError::ShuttingDown),
            Err(e) => {
                tracing::warn!(schedule = %schedule.id, error = %e, "a schedule's template was refused");
                let mut run = Run::new(slot, RunOutcome::Refused, None, now);
                run.error = crate::model::text::truncated(e.to_string(), 512);
                schedule.record(run);
                Ok(())
            }
        }
    }

    /// The job a slot submits: the template, in the schedule's namespace, under the
    /// slot's idempotency key.
    pub(super) async fn slot_job(
        &self,
        schedule: &Schedule,
        slot: SystemTime,
    ) -> Result<Job, EngineError> {
        let mut spec = schedule.template.clone();
        spec.namespace = schedule.namespace.clone();
        spec.idempotency_key = Some(slot_key(&schedule.id, slot));
        let mut job = self.prepare(spec).await?;
        job.schedule = Some(ScheduleSlot {
            id: schedule.id.clone(),
            slot,
        });
        Ok(job)
    }

    /// Stores the planned writes in one call, then queues the jobs of those that landed
    /// and puts every schedule's new record in the table. A write that found the
    /// schedule changed takes the stored record instead; one that failed is retried soon.
    /// Returns each write's jobs as they are now (queued, or the earlier job of a slot;
    /// none for a write that found the schedule changed).
    pub(super) async fn commit(
        &self,
        table: &mut Table,
        planned: Vec<Planned>,
    ) -> Result<Vec<Vec<Submitted>>, EngineError> {
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let (writes, rest): (Vec<_>, Vec<_>) = (planned.into_iter())
            .map(|p| (p.write, (p.fire_times, p.handle)))
            .unzip();
        for (job, _) in writes.iter().flat_map(|w| &w.jobs) {
            self.go_live(job.id, 0);
        }
        let now = self.now();
        let answers = match self.shared.store.write_schedules(&writes, now).await {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!(error = %e, schedules = writes.len(), "could not store schedule fires; will retry");
                for write in &writes {
                    self.forget(&write.jobs);
                    let key = (write.schedule.namespace.clone(), write.schedule.id.clone());
                    if let Some(handle) = table.handle(&key) {
                        table.defer(handle, now + RETRY_AFTER);
                    }
                }
                return Err(e.into());
            }
        };
        let mut results = Vec::with_capacity(writes.len());
        let mut created = Vec::new();
        let mut lags = Vec::new();
        for ((write, answer), (fire_times, handle)) in writes.into_iter().zip(answers).zip(rest) {
            let before = created.len();
            results.push(self.settle_write(table, write, answer, handle, &mut created));
            // (A slot's job that existed already was no fire of ours: no lag.)
            if created.len() > before {
                lags.extend(fire_times.into_iter().flatten());
            }
        }
        // Queue every new job under one lock, then count their lag.
        self.accept_stored(created, self.now());
        let at = self.now();
        for fire_time in lags {
            (self.shared.fire_lag).record(at.duration_since(fire_time).unwrap_or_default());
        }
        self.shared.schedules_wake.notify_one();
        Ok(results)
    }

    /// Takes one write's answer: its new jobs go to `created` (to be queued together),
    /// the table gets the record that is now stored. Returns the write's jobs for a
    /// caller that asked (a trigger, a backfill: writes without a table `handle`); the
    /// loop's own fires copy nothing.
    fn settle_write(
        &self,
        table: &mut Table,
        write: ScheduleWrite,
        answer: ScheduleWritten,
        handle: Option<Handle>,
        created: &mut Vec<(Job, u64)>,
    ) -> Vec<Submitted> {
        let key = (write.schedule.namespace.clone(), write.schedule.id.clone());
        match answer {
            ScheduleWritten::Written(inserted) => {
                let mut jobs = Vec::with_capacity(inserted.len());
                for ((job, _), inserted) in write.jobs.into_iter().zip(inserted) {
                    match inserted {
                        Inserted::Created(seq) => {
                            if handle.is_none() {
                                let mut shown = job.clone();
                                shown.last_seq = seq;
                                jobs.push(Submitted {
                                    job: shown,
                                    existing: false,
                                });
                            }
                            created.push((job, seq));
                        }
                        // The slot fired before (maybe under an older template): its job
                        // is that one, whatever it was made of.
                        Inserted::Existing(earlier) => {
                            self.lock().live.remove(&job.id);
                            jobs.push(Submitted {
                                job: *earlier,
                                existing: true,
                            });
                        }
                    }
                }
                match handle {
                    Some(handle) => table.advance(handle, write.schedule),
                    None => table.update(write.schedule),
                }
                jobs
            }
            ScheduleWritten::Conflict(current) => {
                self.forget(&write.jobs);
                match current {
                    Some(current) => table.update(*current),
                    None => drop(table.remove(&key)),
                }
                Vec::new()
            }
        }
    }

    /// Drops the live entries made for jobs that were not stored.
    fn forget(&self, jobs: &[(Job, Vec<EventData>)]) {
        let mut state = self.lock();
        for (job, _) in jobs {
            state.live.remove(&job.id);
        }
    }
}

impl Planned {
    /// A write of `schedule` at the next version, expecting the one it has now.
    pub(super) fn new(mut schedule: Schedule) -> Self {
        let expect = Expect::Version(schedule.state.version);
        schedule.state.version += 1;
        Planned {
            write: ScheduleWrite {
                schedule,
                expect,
                jobs: Vec::new(),
            },
            fire_times: Vec::new(),
            handle: None,
        }
    }
}

/// When a slot of this schedule was meant to fire (the slot plus its jitter).
fn plan_fire_time(entry: &Entry, slot: SystemTime) -> Option<SystemTime> {
    Some(entry.spec.fire_time(&entry.seed(), slot))
}
