//! Recovery, printed, never asserted: how long a restart takes to recover 100,000 queued
//! jobs from the SQLite store (opening and checking the file, then rebuilding the queues).
//! It drives the store and the engine directly, with no server: there is nothing to
//! boot. (Submit throughput durable against memory, which this bench measured once, is
//! `spindle bench --only W1` now.)
//!
//! Run: `cargo bench --bench durability` (SPINDLE_BENCH_RUNS=N repeats; medians).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use spindle::engine::{Engine, EngineConfig};
use spindle::model::job::{EventData, Job, JobSpec, RetryPolicy};
use spindle::store::{SqliteStore, Store};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Fills a SQLite store with `count` queued jobs; returns its directory.
async fn fill(count: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let now = SystemTime::now();
    let mut tasks = Vec::new();
    for worker in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (worker..count).step_by(64) {
                let spec = JobSpec::new("demo.sleep", json!({"seconds": 0}));
                let job = Job::new(spec, RetryPolicy::default(), now);
                store
                    .insert(&job, &[EventData::state_of(&job)], now)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    dir
}

/// Opens the store and starts an engine on it; (open, recover) seconds.
async fn recover(dir: &std::path::Path) -> (f64, f64) {
    let started = Instant::now();
    let path = dir.to_path_buf();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .unwrap()
        .unwrap();
    let opened = started.elapsed().as_secs_f64();
    let files = tempfile::tempdir().unwrap();
    let files = spindle::jobs::files::FilesDir::open(files.path()).unwrap();
    let registry = spindle::jobs::builtins(files, Default::default());
    // No pool slots free, so the measure is the recovery itself, not running the jobs.
    let config = EngineConfig {
        io_concurrency: 1,
        ..EngineConfig::default()
    };
    let engine = Engine::start(&config, registry, Arc::new(store))
        .await
        .unwrap();
    let recovered = started.elapsed().as_secs_f64() - opened;
    let (io, _, running) = engine.load();
    assert!(
        io + running >= 99_000,
        "recovered {io} queued + {running} running"
    );
    engine.shutdown(Duration::ZERO).await;
    drop(engine);
    (opened, recovered)
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("SPINDLE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("machine: {cores} cores; {runs} runs per figure, medians (min..max)\n");
    let count = 100_000;
    let dir = fill(count).await;
    let (mut opens, mut recoveries) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (open, recovered) = recover(dir.path()).await;
        opens.push(open * 1e3);
        recoveries.push(recovered * 1e3);
    }
    println!("\n| restart with {count} queued jobs | open + check | rebuild queues | total |");
    println!("| --- | ---: | ---: | ---: |");
    let (o, r) = (median(opens), median(recoveries));
    println!("| ms | {o:.0} | {r:.0} | {:.0} |", o + r);
}
