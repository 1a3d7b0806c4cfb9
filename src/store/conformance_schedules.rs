//! The schedule half of the store conformance checks, against every [`Store`]: a write
//! lands only at the version it expects, a slot's job is made once, and ListJobs finds a
//! schedule's jobs.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::conformance::each_store;
use super::{Expect, Inserted, ListQuery, ScheduleWrite, ScheduleWritten, SqliteStore, Store};
use crate::model::job::{EventData, Job, JobSpec, RetryPolicy, ScheduleSlot};
use crate::model::schedule::{
    DEFAULT_CATCHUP, OverlapPolicy, Schedule, ScheduleState, SpecInput, StoredSpec, slot_key,
};

fn schedule(id: &str) -> Schedule {
    let input = SpecInput {
        repeat: "every 1s".parse().unwrap(),
        timezone: String::new(),
        start: None,
        end: None,
        jitter: Duration::ZERO,
    };
    Schedule {
        id: id.into(),
        namespace: "default".into(),
        spec: StoredSpec::from(&input),
        template: JobSpec::new("demo.noop", serde_json::json!({})),
        overlap: OverlapPolicy::Skip,
        catchup_window: DEFAULT_CATCHUP,
        paused: false,
        note: String::new(),
        state: ScheduleState::default(),
        created_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        request_id: String::new(),
    }
}

fn slot_job(schedule: &Schedule, slot: SystemTime) -> (Job, Vec<EventData>) {
    let mut spec = schedule.template.clone();
    spec.idempotency_key = Some(slot_key(&schedule.id, slot));
    let mut job = Job::new(spec, RetryPolicy::default(), slot);
    job.schedule = Some(ScheduleSlot {
        id: schedule.id.clone(),
        slot,
    });
    let events = vec![EventData::state_of(&job)];
    (job, events)
}

fn write(schedule: &Schedule, expect: Expect, jobs: Vec<(Job, Vec<EventData>)>) -> ScheduleWrite {
    ScheduleWrite {
        schedule: schedule.clone(),
        expect,
        jobs,
    }
}

#[tokio::test]
async fn schedule_writes_land_only_at_the_expected_version_and_slots_make_one_job() {
    each_store(|store| async move {
        let now = SystemTime::now();
        let mut nightly = schedule("nightly");
        let created = store
            .write_schedules(&[write(&nightly, Expect::Absent, vec![])], now)
            .await
            .unwrap();
        assert_eq!(created, [ScheduleWritten::Written(vec![])]);
        let again = store
            .write_schedules(&[write(&nightly, Expect::Absent, vec![])], now)
            .await
            .unwrap();
        assert_eq!(
            again,
            [ScheduleWritten::Conflict(Some(Box::new(nightly.clone())))]
        );

        // Fire a slot: the job and the advanced schedule in one write.
        let slot = UNIX_EPOCH + Duration::from_secs(1_800_000_001);
        let (job, events) = slot_job(&nightly, slot);
        nightly.state.version = 1;
        nightly.state.runs = 1;
        nightly.state.last_slot = Some(slot);
        let fired = write(&nightly, Expect::Version(0), vec![(job.clone(), events)]);
        let stale = write(&nightly, Expect::Version(0), vec![slot_job(&nightly, slot)]);
        let answers = store.write_schedules(&[fired, stale], now).await.unwrap();
        assert_eq!(
            answers[0],
            ScheduleWritten::Written(vec![Inserted::Created(1)])
        );
        assert!(
            matches!(&answers[1], ScheduleWritten::Conflict(Some(s)) if s.state.version == 1),
            "a second writer of the same version is refused: {answers:?}"
        );
        // The same slot again (a retry after a crash) finds the first job.
        nightly.state.version = 2;
        let retry = write(&nightly, Expect::Version(1), vec![slot_job(&nightly, slot)]);
        let answers = store.write_schedules(&[retry], now).await.unwrap();
        let ScheduleWritten::Written(inserted) = &answers[0] else {
            panic!("{answers:?}")
        };
        assert!(matches!(&inserted[..], [Inserted::Existing(j)] if j.id == job.id));

        let stored = store.get_schedule("default", "nightly").await.unwrap();
        assert_eq!(stored.as_ref().map(|s| s.state.version), Some(2));
        let query = ListQuery {
            schedule: Some("nightly".into()),
            limit: 10,
            ..ListQuery::default()
        };
        let page = store.list(&query).await.unwrap();
        assert_eq!(page.jobs.len(), 1);
        assert_eq!(page.jobs[0].schedule.as_ref().map(|s| s.slot), Some(slot));
        let other = ListQuery {
            schedule: Some("hourly".into()),
            ..query
        };
        assert!(store.list(&other).await.unwrap().jobs.is_empty());
    })
    .await;
}

#[tokio::test]
async fn schedules_list_by_namespace_in_id_order_and_delete() {
    each_store(|store| async move {
        let now = SystemTime::now();
        let mut writes: Vec<_> = ["c", "a", "b"]
            .iter()
            .map(|id| write(&schedule(id), Expect::Absent, vec![]))
            .collect();
        let mut elsewhere = schedule("a");
        elsewhere.namespace = "team-x".into();
        writes.push(write(&elsewhere, Expect::Absent, vec![]));
        store.write_schedules(&writes, now).await.unwrap();
        let ids = |list: Vec<Schedule>| list.into_iter().map(|s| s.id).collect::<Vec<_>>();
        let first = store.list_schedules("default", None, 2).await.unwrap();
        assert_eq!(ids(first), ["a", "b"]);
        let rest = store.list_schedules("default", Some("b"), 2).await.unwrap();
        assert_eq!(ids(rest), ["c"]);
        assert_eq!(store.all_schedules().await.unwrap().len(), 4);
        assert!(store.delete_schedule("default", "a").await.unwrap());
        assert!(!store.delete_schedule("default", "a").await.unwrap());
        assert!(store.get_schedule("team-x", "a").await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn sqlite_keeps_schedules_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let nightly = schedule("nightly");
    let at = SystemTime::now();
    (store
        .write_schedules(&[write(&nightly, Expect::Absent, vec![])], at)
        .await)
        .unwrap();
    store.close().await;
    let store = SqliteStore::open(dir.path()).unwrap();
    let stored = store.get_schedule("default", "nightly").await.unwrap();
    assert_eq!(stored, Some(nightly));
    store.close().await;
}
