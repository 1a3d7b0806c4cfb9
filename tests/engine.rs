//! The engine on its own, under paused tokio time: timeouts, delays, retries and backoff,
//! retention, long-polls, queue limits, priorities at depth, recovery and the shutdown
//! grace period, all without real sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use spindle::HandlerError;
use spindle::engine::{Engine, EngineConfig, EngineError};
use spindle::jobs::registry::{JobKind, Registry};
use spindle::model::job::{EventData, FailureKind, Job, JobId, JobSpec, JobState, RetryPolicy};
use spindle::store::{MemoryStore, Store};

/// Args of the test kinds.
#[derive(Deserialize, JsonSchema)]
struct Args {
    /// `test.flaky`: the attempt that succeeds.
    #[serde(default)]
    succeed_on: u32,
    /// `test.count`: how long to run, in ms.
    #[serde(default)]
    ms: u64,
}

struct Fixture {
    engine: Engine,
    store: Arc<MemoryStore>,
    runs: Arc<AtomicU32>,
}

fn registry(runs: Arc<AtomicU32>) -> Registry {
    let mut registry = Registry::new();
    registry.register(spindle::jobs::sleep::kind());
    registry.register(JobKind::io(
        "test.flaky",
        "fails until succeed_on",
        |ctx, a: Args| async move {
            if ctx.attempt() < a.succeed_on {
                return Err(HandlerError::failed(format!(
                    "attempt {} failed",
                    ctx.attempt()
                )));
            }
            Ok(json!(ctx.attempt()))
        },
    ));
    registry.register(JobKind::io(
        "test.permanent",
        "fails for good",
        |_, _: Args| async { Err(HandlerError::permanent("bad input")) },
    ));
    registry.register(JobKind::io(
        "test.count",
        "counts its runs",
        move |_, a: Args| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(a.ms)).await;
                Ok(json!(null))
            }
        },
    ));
    registry
}

async fn fixture_with(config: EngineConfig, store: Arc<MemoryStore>) -> Fixture {
    let runs = Arc::new(AtomicU32::new(0));
    let engine = Engine::start(&config, registry(runs.clone()), store.clone())
        .await
        .unwrap();
    Fixture {
        engine,
        store,
        runs,
    }
}

async fn fixture() -> Fixture {
    let config = EngineConfig {
        cpu_threads: 1,
        ..EngineConfig::default()
    };
    fixture_with(config, Arc::new(MemoryStore::new())).await
}

fn sleep_spec(seconds: f64, timeout: Option<Duration>) -> JobSpec {
    let mut spec = JobSpec::new("demo.sleep", json!({"seconds": seconds, "steps": 1}));
    spec.timeout = timeout;
    spec
}

async fn submit(engine: &Engine, spec: JobSpec) -> Job {
    engine.submit(spec).await.unwrap().job
}

async fn wait_terminal(engine: &Engine, id: JobId) -> Job {
    let mut events = engine.watch("default", id, 0).await.unwrap();
    while let Some(event) = events.next().await {
        if event.unwrap().data.is_finished() {
            break;
        }
    }
    engine.get("default", id).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_timeout_fails_with_a_timeout_error() {
    let f = fixture().await;
    let started = tokio::time::Instant::now();
    let mut spec = sleep_spec(3600.0, Some(Duration::from_secs(5)));
    spec.retry = Some(RetryPolicy::never());
    let job = submit(&f.engine, spec).await;
    let done = wait_terminal(&f.engine, job.id).await;
    assert_eq!(done.state, JobState::Failed);
    let error = done.error.unwrap();
    assert_eq!(error.kind, FailureKind::Timeout);
    assert!(error.message.contains("5s"), "{}", error.message);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_by_policy() {
    let f = fixture().await;
    let job = submit(&f.engine, sleep_spec(3600.0, Some(Duration::from_secs(5)))).await;
    let done = wait_terminal(&f.engine, job.id).await;
    assert_eq!((done.state, done.attempt), (JobState::Failed, 3));
    assert_eq!(done.errors.len(), 3);
    assert!(
        done.errors
            .iter()
            .all(|e| e.failure.kind == FailureKind::Timeout)
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_within_its_timeout_succeeds() {
    let f = fixture().await;
    let job = submit(&f.engine, sleep_spec(4.0, Some(Duration::from_secs(5)))).await;
    assert_eq!(
        wait_terminal(&f.engine, job.id).await.state,
        JobState::Succeeded
    );
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_wait_with_backoff_and_keep_each_error() {
    let f = fixture().await;
    let mut spec = JobSpec::new("test.flaky", json!({"succeed_on": 3}));
    spec.retry = Some(RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(60),
        multiplier: 3.0,
        jitter: 0.0,
    });
    let started = tokio::time::Instant::now();
    let job = submit(&f.engine, spec).await;
    let mut events = f.engine.watch("default", job.id, 0).await.unwrap();
    let mut waits = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        if let EventData::State {
            state: JobState::RetryWait,
            run_at,
            error,
            ..
        } = &event.data
        {
            let run_at = run_at.expect("retry time");
            // Event times are whole milliseconds; the wait is exact to the millisecond.
            let wait = run_at.duration_since(event.at).unwrap();
            waits.push(Duration::from_millis(wait.as_millis() as u64));
            assert!(error.as_ref().unwrap().message.contains("failed"));
            let seen = f.engine.get("default", job.id).await.unwrap();
            assert!(seen.state == JobState::RetryWait || seen.attempt > 1);
        }
    }
    assert_eq!(waits, [Duration::from_secs(10), Duration::from_secs(30)]);
    let done = f.engine.get("default", job.id).await.unwrap();
    assert_eq!((done.state, done.attempt), (JobState::Succeeded, 3));
    let attempts: Vec<u32> = done.errors.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 2]);
    assert!(started.elapsed() >= Duration::from_secs(40));
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_are_not_retried() {
    let f = fixture().await;
    let job = submit(&f.engine, JobSpec::new("test.permanent", json!({}))).await;
    let done = wait_terminal(&f.engine, job.id).await;
    assert_eq!((done.state, done.attempt), (JobState::Failed, 1));
    assert_eq!(done.error.unwrap().kind, FailureKind::Permanent);
}

#[tokio::test(start_paused = true)]
async fn delayed_jobs_are_scheduled_then_run_once_when_due() {
    let f = fixture().await;
    let mut spec = JobSpec::new("test.count", json!({}));
    spec.delay = Some(Duration::from_secs(3 * 24 * 3600));
    let job = submit(&f.engine, spec).await;
    assert_eq!(job.state, JobState::Scheduled);
    let due = job.run_at.unwrap();
    tokio::time::sleep(Duration::from_secs(3 * 24 * 3600 - 1)).await;
    assert_eq!(
        f.engine.get("default", job.id).await.unwrap().state,
        JobState::Scheduled
    );
    assert_eq!(f.runs.load(Ordering::SeqCst), 0);
    let done = wait_terminal(&f.engine, job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert!(done.started_at.unwrap() >= due);
    tokio::time::sleep(Duration::from_secs(7 * 24 * 3600)).await;
    assert_eq!(f.runs.load(Ordering::SeqCst), 1, "ran exactly once");

    let mut spec = JobSpec::new("test.count", json!({}));
    spec.run_at = Some(f.engine.now() + Duration::from_secs(60));
    let at = submit(&f.engine, spec).await;
    assert_eq!(at.state, JobState::Scheduled);
    let cancelled = f.engine.cancel("default", at.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        f.runs.load(Ordering::SeqCst),
        1,
        "a cancelled scheduled job never runs"
    );
}

#[tokio::test(start_paused = true)]
async fn finished_jobs_are_purged_after_their_retention() {
    let config = EngineConfig {
        retention: Duration::from_secs(3600),
        purge_interval: Duration::from_secs(60),
        ..EngineConfig::default()
    };
    let f = fixture_with(config, Arc::new(MemoryStore::new())).await;
    let default_ttl = submit(&f.engine, JobSpec::new("test.count", json!({}))).await;
    let mut spec = JobSpec::new("test.count", json!({}));
    spec.retention = Some(Duration::from_secs(60));
    let short_ttl = submit(&f.engine, spec).await;
    for id in [default_ttl.id, short_ttl.id] {
        let done = wait_terminal(&f.engine, id).await;
        assert!(done.expires_at.unwrap() > done.finished_at.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert!(matches!(
        f.engine.get("default", short_ttl.id).await,
        Err(EngineError::NotFound(_))
    ));
    assert!(f.engine.get("default", default_ttl.id).await.is_ok());
    assert!(matches!(
        f.engine.watch("default", short_ttl.id, 0).await,
        Err(EngineError::NotFound(_))
    ));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(matches!(
        f.engine.get("default", default_ttl.id).await,
        Err(EngineError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn idempotency_keys_return_the_same_job_or_conflict() {
    let f = fixture().await;
    let spec = |ms: u64| {
        let mut spec = JobSpec::new("test.count", json!({"ms": ms}));
        spec.idempotency_key = Some("order-42".into());
        spec
    };
    let first = f.engine.submit(spec(5)).await.unwrap();
    assert!(!first.existing);
    let again = f.engine.submit(spec(5)).await.unwrap();
    assert!(again.existing);
    assert_eq!(again.job.id, first.job.id);
    let conflict = f.engine.submit(spec(6)).await.unwrap_err();
    assert!(
        matches!(conflict, EngineError::IdempotencyConflict { .. }),
        "{conflict:?}"
    );
    wait_terminal(&f.engine, first.job.id).await;
    assert_eq!(f.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn get_wait_long_polls_until_the_end_or_the_wait() {
    let f = fixture().await;
    let job = submit(&f.engine, sleep_spec(10.0, None)).await;
    let early = f
        .engine
        .get_wait("default", job.id, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(!early.state.is_terminal());
    let started = tokio::time::Instant::now();
    let done = f
        .engine
        .get_wait("default", job.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_queue_limit_holds_without_starving_other_queues() {
    let config = EngineConfig {
        queue_limits: [("slow".to_string(), 2)].into(),
        ..EngineConfig::default()
    };
    let f = fixture_with(config, Arc::new(MemoryStore::new())).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut spec = JobSpec::new("test.count", json!({"ms": 1000}));
        spec.queue = "slow".into();
        slow.push(submit(&f.engine, spec).await);
    }
    let other = submit(&f.engine, JobSpec::new("test.count", json!({"ms": 1000}))).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let running = f.engine.load().2;
    assert_eq!(running, 3, "2 of the slow queue + the other queue's job");
    assert_eq!(
        f.engine.get("default", other.id).await.unwrap().state,
        JobState::Running
    );
    let last = wait_terminal(&f.engine, slow.last().unwrap().id).await;
    assert_eq!(last.state, JobState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_high_priority_job_behind_ten_thousand_low_ones_starts_next() {
    let config = EngineConfig {
        io_concurrency: 1,
        ..EngineConfig::default()
    };
    let f = fixture_with(config, Arc::new(MemoryStore::new())).await;
    let blocker = submit(&f.engine, JobSpec::new("test.count", json!({"ms": 1000}))).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut lows = Vec::new();
    for _ in 0..10_000 {
        lows.push(submit(&f.engine, JobSpec::new("test.count", json!({"ms": 1000}))).await);
    }
    let mut spec = JobSpec::new("test.count", json!({"ms": 1}));
    spec.priority = 100;
    let high = submit(&f.engine, spec).await;
    wait_terminal(&f.engine, blocker.id).await;
    let high = wait_terminal(&f.engine, high.id).await;
    assert_eq!(high.state, JobState::Succeeded);
    for low in lows.iter().take(3) {
        let low = f.engine.get("default", low.id).await.unwrap();
        assert!(
            low.started_at
                .is_none_or(|t| t >= high.finished_at.unwrap()),
            "no low-priority job started before the high one finished"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn recovery_requeues_waiting_jobs_and_retries_interrupted_ones() {
    let store = Arc::new(MemoryStore::new());
    let now = std::time::SystemTime::now();
    let mut jobs = Vec::new();
    for (state, attempt, max_attempts) in [
        (JobState::Queued, 0, 3),
        (JobState::Running, 1, 3),
        (JobState::Running, 1, 1),
    ] {
        let retry = RetryPolicy {
            max_attempts,
            ..RetryPolicy::default()
        };
        let mut job = Job::new(JobSpec::new("test.count", json!({})), retry, now);
        job.state = state;
        job.attempt = attempt;
        store
            .insert(&job, &[EventData::state_of(&job)], now)
            .await
            .unwrap();
        jobs.push(job);
    }
    let f = fixture_with(EngineConfig::default(), store).await;
    let queued = wait_terminal(&f.engine, jobs[0].id).await;
    assert_eq!((queued.state, queued.attempt), (JobState::Succeeded, 1));
    let retried = wait_terminal(&f.engine, jobs[1].id).await;
    assert_eq!((retried.state, retried.attempt), (JobState::Succeeded, 2));
    assert_eq!(retried.errors[0].failure.kind, FailureKind::Interrupted);
    let spent = wait_terminal(&f.engine, jobs[2].id).await;
    assert_eq!((spent.state, spent.attempt), (JobState::Failed, 1));
    assert!(spent.error.unwrap().message.contains("stopped while"));
    assert_eq!(f.runs.load(Ordering::SeqCst), 2);
    let _ = f.store;
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_short_jobs_finish_and_requeues_long_ones_after_the_grace() {
    let f = fixture().await;
    let short = submit(&f.engine, sleep_spec(5.0, None)).await;
    let long = submit(&f.engine, sleep_spec(3600.0, None)).await;
    tokio::task::yield_now().await;
    let mut long_events = f.engine.watch("default", long.id, 0).await.unwrap();

    let started = tokio::time::Instant::now();
    f.engine.shutdown(Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(11),
        "{took:?}"
    );

    assert_eq!(
        f.engine.get("default", short.id).await.unwrap().state,
        JobState::Succeeded
    );
    let long = f.engine.get("default", long.id).await.unwrap();
    assert_eq!(
        (long.state, long.attempt),
        (JobState::Queued, 0),
        "back in the queue, attempt not spent"
    );
    let mut last = None;
    while let Some(event) = long_events.next().await {
        last = Some(event);
    }
    assert!(
        matches!(last, Some(Err(EngineError::ShuttingDown))),
        "watchers are told"
    );

    let refused = f.engine.submit(sleep_spec(1.0, None)).await.unwrap_err();
    assert!(matches!(refused, EngineError::ShuttingDown));
}
