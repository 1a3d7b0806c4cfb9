//! Schedules in the engine, under paused tokio time: interval and cron slots, daylight
//! saving in Europe/Berlin and America/New_York, each overlap policy, catch-up after a stop,
//! pause and resume, trigger, backfill, and an update that moves the next fire time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use spindle::engine::schedules::ScheduleDraft;
use spindle::engine::{Engine, EngineConfig, EngineError};
use spindle::jobs::registry::Registry;
use spindle::model::job::{Job, JobSpec, JobState};
use spindle::model::schedule::{OverlapPolicy, Repeat, RunOutcome, Schedule, SpecInput};
use spindle::store::{ListQuery, MemoryStore, Store};

async fn engine(store: Arc<MemoryStore>) -> Engine {
    let mut registry = Registry::new();
    registry.register(spindle::jobs::sleep::kind());
    let config = EngineConfig {
        cpu_threads: 1,
        // Kept past the longest test's span of (paused) time.
        retention: Duration::from_secs(400 * 86_400),
        ..EngineConfig::default()
    };
    Engine::start(&config, registry, store).await.unwrap()
}

fn draft(repeat: &str, timezone: &str, overlap: OverlapPolicy, job_secs: f64) -> ScheduleDraft {
    ScheduleDraft {
        spec: SpecInput {
            repeat: repeat.parse::<Repeat>().unwrap(),
            timezone: timezone.into(),
            start: None,
            end: None,
            jitter: Duration::ZERO,
        },
        template: JobSpec::new("demo.sleep", json!({"seconds": job_secs, "steps": 1})),
        overlap,
        catchup_window: Duration::from_secs(3600),
    }
}

async fn create(engine: &Engine, id: &str, draft: ScheduleDraft) -> Schedule {
    let view = engine
        .create_schedule("default", id, draft, false, String::new(), String::new())
        .await
        .unwrap();
    view.schedule
}

/// The schedule's jobs, oldest first.
async fn jobs_of(store: &MemoryStore, id: &str) -> Vec<Job> {
    let query = ListQuery {
        schedule: Some(id.into()),
        limit: 10_000,
        ..ListQuery::default()
    };
    let mut jobs = store.list(&query).await.unwrap().jobs;
    jobs.reverse();
    jobs
}

fn slots(jobs: &[Job]) -> Vec<SystemTime> {
    jobs.iter()
        .map(|j| j.schedule.as_ref().unwrap().slot)
        .collect()
}

async fn state(engine: &Engine, id: &str) -> Schedule {
    engine.get_schedule("default", id).await.unwrap().schedule
}

/// Sleeps (paused time: advances) to half a second past the next multiple of `every`
/// seconds since the epoch.
async fn to_boundary(every: u64) {
    let secs = spindle_now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let next = ((secs / every as f64).floor() + 1.0) * every as f64 + 0.5;
    tokio::time::sleep(Duration::from_secs_f64(next - secs)).await;
}

/// The engines' wall clock: one anchor per process, moved on by tokio's clock.
fn spindle_now() -> SystemTime {
    spindle::engine::clock::Clock::new().now()
}

#[tokio::test(start_paused = true)]
async fn an_interval_fires_each_slot_once_on_its_boundaries() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(store.clone()).await;
    to_boundary(10).await;
    create(
        &engine,
        "tick",
        draft("every 10s", "", OverlapPolicy::Skip, 0.0),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let jobs = jobs_of(&store, "tick").await;
    let fired = slots(&jobs);
    assert_eq!(fired.len(), 6, "{fired:?}");
    for pair in fired.windows(2) {
        assert_eq!(
            pair[1].duration_since(pair[0]).unwrap(),
            Duration::from_secs(10)
        );
    }
    for slot in &fired {
        let secs = slot.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!((secs.as_secs() % 10, secs.subsec_nanos()), (0, 0));
    }
    let schedule = state(&engine, "tick").await;
    assert_eq!((schedule.state.runs, schedule.state.skipped), (6, 0));
    assert!(jobs.iter().all(|j| j.state == JobState::Succeeded));
    let view = engine.get_schedule("default", "tick").await.unwrap();
    assert_eq!(view.next_fires.len(), 10);
    assert_eq!(
        view.next_fires[0],
        *fired.last().unwrap() + Duration::from_secs(10)
    );
}

#[tokio::test(start_paused = true)]
async fn overlap_policies_skip_buffer_allow_and_cancel() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(store.clone()).await;
    to_boundary(10).await;
    // Each job runs 25 s against a 10 s interval.
    for (id, overlap) in [
        ("skip", OverlapPolicy::Skip),
        ("buffer", OverlapPolicy::BufferOne),
        ("allow", OverlapPolicy::AllowAll),
        ("cancel", OverlapPolicy::CancelOther),
    ] {
        create(&engine, id, draft("every 10s", "", overlap, 25.0)).await;
    }
    let started = spindle_now() - Duration::from_millis(500);
    tokio::time::sleep(Duration::from_secs(60) - Duration::from_millis(600)).await;
    let at = |slot: SystemTime| slot.duration_since(started).unwrap().as_secs_f64().round() as u64;

    // SKIP: 10 fires, 20 and 30 skipped (running until 35), 40 fires, 50 skipped.
    let skip = jobs_of(&store, "skip").await;
    assert_eq!(
        slots(&skip).into_iter().map(at).collect::<Vec<_>>(),
        [10, 40]
    );
    let s = state(&engine, "skip").await.state;
    assert_eq!((s.runs, s.skipped), (2, 3));

    // BUFFER_ONE: 20 waits and fires when the first job ends (35); 30 is skipped (the
    // buffer is full), 40 and 50 while 20's job runs: 40 waits, 50 is skipped.
    let buffer = jobs_of(&store, "buffer").await;
    assert_eq!(
        slots(&buffer).into_iter().map(at).collect::<Vec<_>>(),
        [10, 20]
    );
    let second = buffer[1]
        .created_at
        .duration_since(started)
        .unwrap()
        .as_secs_f64();
    assert!(
        (35.0..35.1).contains(&second),
        "the buffered slot fired at {second}"
    );
    let s = state(&engine, "buffer").await.state;
    assert_eq!((s.skipped, s.buffered.map(at)), (2, Some(40)));

    // ALLOW_ALL: every slot, overlapping.
    let allow = jobs_of(&store, "allow").await;
    assert_eq!(allow.len(), 5);
    let running = allow
        .iter()
        .filter(|j| j.state == JobState::Running)
        .count();
    assert_eq!(running, 2, "slots 40 and 50 run at once");

    // CANCEL_OTHER: each slot cancels the running job, then fires.
    let cancel = jobs_of(&store, "cancel").await;
    assert_eq!(cancel.len(), 5, "{:?}", slots(&cancel));
    let states: Vec<_> = cancel.iter().map(|j| j.state).collect();
    assert_eq!(states[..4], [JobState::Cancelled; 4]);
    assert_eq!(states[4], JobState::Running);
    for pair in cancel.windows(2) {
        assert!(
            pair[1].created_at >= pair[0].finished_at.unwrap(),
            "fired after the cancel"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn after_a_stop_one_coalesced_run_fires_and_the_rest_are_missed() {
    let store = Arc::new(MemoryStore::new());
    let first = engine(store.clone()).await;
    to_boundary(10).await;
    create(
        &first,
        "tick",
        draft("every 10s", "", OverlapPolicy::Skip, 0.0),
    )
    .await;
    let mut nightly = draft("0 3 * * *", "Europe/Berlin", OverlapPolicy::Skip, 0.0);
    nightly.catchup_window = Duration::from_secs(3600);
    create(&first, "nightly", nightly).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(jobs_of(&store, "tick").await.len(), 2);
    first.shutdown(Duration::from_secs(1)).await;

    // Down for 6 minutes: 36 slots pass.
    tokio::time::advance(Duration::from_secs(360)).await;
    let second = engine(store.clone()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let jobs = jobs_of(&store, "tick").await;
    assert_eq!(jobs.len(), 3, "one coalesced run for the outage");
    let s = state(&second, "tick").await.state;
    assert_eq!((s.runs, s.missed), (3, 35));
    let missed = s
        .recent
        .iter()
        .find(|r| r.outcome == RunOutcome::Missed)
        .unwrap();
    assert_eq!(missed.slots, 35);
    second.shutdown(Duration::from_secs(1)).await;

    // Down for two days: the nightly slots are older than its 1 h window when it is back,
    // unless the latest is within it.
    tokio::time::advance(Duration::from_secs(2 * 86_400)).await;
    let third = engine(store.clone()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = state(&third, "nightly").await.state;
    let now = spindle_now();
    let latest = s.last_slot.unwrap();
    let fired = jobs_of(&store, "nightly").await.len() as u64;
    if now.duration_since(latest).unwrap() <= Duration::from_secs(3600) {
        assert_eq!((fired, s.missed), (1, 1));
    } else {
        assert_eq!((fired, s.missed), (0, 2));
    }
    assert_eq!(
        jobs_of(&store, "tick").await.len(),
        4,
        "and the interval once more"
    );
}

/// Seconds since the epoch of a UTC time.
fn utc(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

#[tokio::test(start_paused = true)]
async fn cron_slots_follow_daylight_saving_in_berlin_and_new_york() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(store.clone()).await;
    // 02:30 every day: in the spring-forward gap it fires once right after the gap, in the
    // repeated autumn hour once, at its first occurrence.
    // (New York's gap is 02:00-03:00, its repeated hour 01:00-02:00.)
    let cases = [
        (
            "berlin-spring",
            "30 2 * * *",
            "Europe/Berlin",
            "2027-03-27T12:00:00Z",
            ["2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z"],
        ),
        (
            "berlin-autumn",
            "30 2 * * *",
            "Europe/Berlin",
            "2027-10-30T12:00:00Z",
            ["2027-10-31T00:30:00Z", "2027-11-01T01:30:00Z"],
        ),
        (
            "ny-spring",
            "30 2 * * *",
            "America/New_York",
            "2027-03-13T12:00:00Z",
            ["2027-03-14T07:00:00Z", "2027-03-15T06:30:00Z"],
        ),
        (
            "ny-autumn",
            "30 1 * * *",
            "America/New_York",
            "2027-11-06T12:00:00Z",
            ["2027-11-07T05:30:00Z", "2027-11-08T06:30:00Z"],
        ),
    ];
    for (id, cron, zone, start, _) in &cases {
        let mut d = draft(cron, zone, OverlapPolicy::AllowAll, 0.0);
        d.spec.start = Some(utc(start));
        d.spec.end = Some(utc(start) + Duration::from_secs(2 * 86_400));
        create(&engine, id, d).await;
    }
    // Time jumps to a minute before each expected slot, then runs (paused: each sleep
    // jumps to the next timer) for two minutes: a slot fires only if it is due then.
    let mut expected: Vec<_> = cases
        .iter()
        .flat_map(|(_, _, _, _, want)| want.map(utc))
        .collect();
    expected.sort();
    for slot in expected {
        let ahead = slot.duration_since(spindle_now()).unwrap() - Duration::from_secs(60);
        tokio::time::advance(ahead).await;
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
    for (id, _, _, _, want) in &cases {
        let fired = slots(&jobs_of(&store, id).await);
        assert_eq!(fired, want.map(utc), "{id}");
        let s = state(&engine, id).await.state;
        assert_eq!(s.missed, 0, "{id}: every slot fired on time");
    }
}

#[tokio::test(start_paused = true)]
async fn pause_resume_trigger_backfill_and_update() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine(store.clone()).await;
    to_boundary(60).await;
    create(
        &engine,
        "tick",
        draft("every 10s", "", OverlapPolicy::Skip, 30.0),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(jobs_of(&store, "tick").await.len(), 1);

    // Trigger while the job runs: SKIP refuses; no job is made.
    let refused = engine
        .trigger_schedule("default", "tick")
        .await
        .unwrap_err();
    assert!(
        matches!(refused, EngineError::ScheduleOverlap { .. }),
        "{refused}"
    );

    // Pause: nothing fires for 60 s; resume counts those slots as skipped.
    let paused = engine
        .pause_schedule("default", "tick", "maintenance".into())
        .await
        .unwrap();
    assert!(paused.schedule.paused && paused.next_fires.is_empty());
    assert_eq!(paused.schedule.note, "maintenance");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(jobs_of(&store, "tick").await.len(), 1);
    let resumed = engine.resume_schedule("default", "tick").await.unwrap();
    assert_eq!(resumed.schedule.state.skipped, 6);
    assert!(!resumed.next_fires.is_empty());
    // The first job is done by now: Trigger fires at once, at a slot of now.
    let triggered = engine.trigger_schedule("default", "tick").await.unwrap();
    let slot = triggered.schedule.as_ref().unwrap().slot;
    assert!(spindle_now().duration_since(slot).unwrap() < Duration::from_millis(5));

    // Update: every 10 s becomes every minute at :30; a stale token is refused.
    let version = state(&engine, "tick").await.state.version;
    let stale = engine
        .update_schedule(
            "default",
            "tick",
            draft("every 1m+30s", "", OverlapPolicy::AllowAll, 0.0),
            Some(version - 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(stale, EngineError::ScheduleChanged { .. }),
        "{stale}"
    );
    let updated = engine
        .update_schedule(
            "default",
            "tick",
            draft("every 1m+30s", "", OverlapPolicy::AllowAll, 0.0),
            Some(version),
        )
        .await
        .unwrap();
    let next = updated.next_fires[0]
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(next % 60, 30, "the next fire moved to :30");
    let before = jobs_of(&store, "tick").await.len();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let after = jobs_of(&store, "tick").await;
    assert_eq!(after.len(), before + 1);
    let last = after.last().unwrap().schedule.as_ref().unwrap().slot;
    assert_eq!(last.duration_since(UNIX_EPOCH).unwrap().as_secs() % 60, 30);

    // Backfill the minute-slots of the past 5 minutes: 5 jobs, then none again.
    let now = spindle_now();
    let start = now - Duration::from_secs(300);
    let runs = engine
        .backfill_schedule("default", "tick", start, now)
        .await
        .unwrap();
    assert_eq!(runs.len(), 5);
    let fresh = runs
        .iter()
        .filter(|r| r.outcome == RunOutcome::Backfilled)
        .count();
    assert_eq!(fresh, 4, "the latest slot had fired on its own: {runs:?}");
    let again = engine
        .backfill_schedule("default", "tick", start, now)
        .await
        .unwrap();
    assert!(again.iter().all(|r| r.outcome == RunOutcome::AlreadyFired));
    assert_eq!(
        again.iter().map(|r| r.job).collect::<Vec<_>>(),
        runs.iter().map(|r| r.job).collect::<Vec<_>>()
    );
    let future = engine
        .backfill_schedule("default", "tick", now, now + Duration::from_secs(60))
        .await;
    assert!(matches!(future, Err(EngineError::OutOfRange(_))));

    engine.delete_schedule("default", "tick").await.unwrap();
    let gone = engine.get_schedule("default", "tick").await.unwrap_err();
    assert!(matches!(gone, EngineError::ScheduleNotFound(_)));
    assert!(!jobs_of(&store, "tick").await.is_empty(), "its jobs stay");
}

#[tokio::test(start_paused = true)]
async fn bad_specs_and_templates_are_refused_naming_each_field() {
    let engine = engine(Arc::new(MemoryStore::new())).await;
    let mut bad = draft("61 * * * *", "Mars/Olympus", OverlapPolicy::Skip, 0.0);
    bad.spec.start = Some(utc("2027-01-02T00:00:00Z"));
    bad.spec.end = Some(utc("2027-01-01T00:00:00Z"));
    let err = engine
        .create_schedule("default", "bad", bad, false, String::new(), String::new())
        .await
        .unwrap_err();
    let EngineError::InvalidSpec(violations) = err else {
        panic!("{err}")
    };
    let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["spec.timezone", "spec.cron", "spec.end"]);
    let zero = draft("every 0s", "", OverlapPolicy::Skip, 0.0);
    let err = engine
        .create_schedule("default", "zero", zero, false, String::new(), String::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spec.every"), "{err}");
    let mut unknown = draft("every 1m", "", OverlapPolicy::Skip, 0.0);
    unknown.template.kind = "no.such".into();
    let err = engine
        .create_schedule(
            "default",
            "unknown",
            unknown,
            false,
            String::new(),
            String::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Template(_)), "{err}");

    // A retried create (same request id) gets the schedule; another create is refused.
    let ok = draft("every 1m", "", OverlapPolicy::Skip, 0.0);
    let first = engine
        .create_schedule(
            "default",
            "once",
            ok.clone(),
            false,
            String::new(),
            "r-1".into(),
        )
        .await
        .unwrap();
    let retry = engine
        .create_schedule(
            "default",
            "once",
            ok.clone(),
            false,
            String::new(),
            "r-1".into(),
        )
        .await
        .unwrap();
    assert_eq!(retry.schedule.created_at, first.schedule.created_at);
    let other = engine
        .create_schedule("default", "once", ok, false, String::new(), "r-2".into())
        .await
        .unwrap_err();
    assert!(matches!(other, EngineError::ScheduleExists(_)), "{other}");
}
