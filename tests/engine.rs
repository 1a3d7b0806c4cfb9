//! The engine on its own, under paused tokio time: timeouts and the shutdown grace period
//! are checked without real sleeps.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use spindle::engine::job::{FailureKind, JobSpec, JobState};
use spindle::engine::{Engine, EngineConfig, EngineError};
use spindle::jobs::registry::Registry;
use spindle::store::MemoryStore;

fn engine() -> Engine {
    let mut registry = Registry::new();
    registry.register(spindle::jobs::sleep::kind());
    let config = EngineConfig {
        cpu_threads: 1,
        ..EngineConfig::default()
    };
    Engine::start(&config, registry, Arc::new(MemoryStore::new())).unwrap()
}

fn sleep_spec(seconds: f64, timeout: Option<Duration>) -> JobSpec {
    JobSpec {
        kind: "demo.sleep".into(),
        args: json!({"seconds": seconds, "steps": 1}),
        queue: "default".into(),
        priority: 0,
        labels: Default::default(),
        timeout,
    }
}

async fn wait_terminal(engine: &Engine, id: spindle::JobId) -> spindle::engine::job::Job {
    let mut events = engine.watch(id, 0).await.unwrap();
    while let Some(event) = events.next().await {
        if event.unwrap().data.is_finished() {
            break;
        }
    }
    engine.get(id).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_timeout_fails_with_a_timeout_error() {
    let engine = engine();
    let started = tokio::time::Instant::now();
    let job = engine
        .submit(sleep_spec(3600.0, Some(Duration::from_secs(5))))
        .await
        .unwrap();
    let done = wait_terminal(&engine, job.id).await;
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
async fn a_job_within_its_timeout_succeeds() {
    let engine = engine();
    let job = engine
        .submit(sleep_spec(4.0, Some(Duration::from_secs(5))))
        .await
        .unwrap();
    assert_eq!(
        wait_terminal(&engine, job.id).await.state,
        JobState::Succeeded
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_short_jobs_finish_and_cancels_long_ones_after_the_grace() {
    let engine = engine();
    let short = engine.submit(sleep_spec(5.0, None)).await.unwrap();
    let long = engine.submit(sleep_spec(3600.0, None)).await.unwrap();
    tokio::task::yield_now().await;
    let mut long_events = engine.watch(long.id, 0).await.unwrap();

    let started = tokio::time::Instant::now();
    engine.shutdown(Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(11),
        "{took:?}"
    );

    assert_eq!(
        engine.get(short.id).await.unwrap().state,
        JobState::Succeeded
    );
    let long = engine.get(long.id).await.unwrap();
    assert_eq!(long.state, JobState::Cancelled);
    assert_eq!(long.error.unwrap().kind, FailureKind::Shutdown);
    let mut last = None;
    while let Some(event) = long_events.next().await {
        last = Some(event.unwrap());
    }
    assert!(last.unwrap().data.is_finished(), "watchers see the end");

    let refused = engine.submit(sleep_spec(1.0, None)).await.unwrap_err();
    assert!(matches!(refused, EngineError::ShuttingDown));
}

#[tokio::test(start_paused = true)]
async fn watchers_of_jobs_still_queued_at_shutdown_end_with_unavailable() {
    let mut registry = Registry::new();
    registry.register(spindle::jobs::sleep::kind());
    let config = EngineConfig {
        io_concurrency: 1,
        ..EngineConfig::default()
    };
    let engine = Engine::start(&config, registry, Arc::new(MemoryStore::new())).unwrap();
    let _running = engine.submit(sleep_spec(1.0, None)).await.unwrap();
    let queued = engine.submit(sleep_spec(1.0, None)).await.unwrap();
    let mut events = engine.watch(queued.id, 0).await.unwrap();
    engine.shutdown(Duration::from_secs(5)).await;
    let mut outcome = None;
    while let Some(event) = events.next().await {
        outcome = Some(event);
    }
    assert!(matches!(outcome, Some(Err(EngineError::ShuttingDown))));
    assert_eq!(engine.get(queued.id).await.unwrap().state, JobState::Queued);
}
